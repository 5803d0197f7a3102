"""dask's collections on actorrt: a Client is dask's scheduler while it runs, and
dask.dataframe, dask.array, dask.bag and dask.delayed go through ``compute``,
``persist`` and ``get`` by dask's own lowering. In-process clusters, and worker
processes where values cross a process boundary."""
import operator
import os

import pytest

from actorrt import Client, Future, futures_of, get_worker
from actorrt.deploy.local import start_worker
from actorrt.testing import gen_cluster, poll_for

dask = pytest.importorskip("dask", reason="dask collections need the dask extra")


def where():
    """The worker that ran this: raises outside a task (dask's local schedulers)."""
    return get_worker().address


def inc(x):
    return x + 1


def nested_compute(x):
    """A task that computes a dask collection itself: its worker's client runs it."""
    return dask.delayed(where)().compute(), dask.delayed(inc)(x).compute()


@pytest.fixture
def pd():
    return pytest.importorskip("pandas", reason="dask.dataframe needs pandas (the test extra)")


@pytest.fixture
def dd(pd):
    return pytest.importorskip("dask.dataframe", reason="dask.dataframe needs pandas and pyarrow")


@pytest.fixture
def frame(pd):
    return pd.DataFrame({"k": [i % 5 for i in range(200)], "v": [float(i) for i in range(200)],
                         "w": range(200)})


# --- the default scheduler -------------------------------------------------------------------
def test_a_client_is_dasks_scheduler_while_it_runs():
    before = dask.config.get("scheduler", None)
    with Client(n_workers=1, processes=False) as client:
        workers = set(client.scheduler_info()["workers"])
        assert dask.delayed(where)().compute() in workers
        assert dask.compute(dask.delayed(inc)(1), dask.delayed(where)())[1] in workers
    assert dask.config.get("scheduler", None) is before
    with pytest.raises(ValueError, match="get_worker"):
        dask.delayed(where)().compute()  # back on dask's local threads


def test_set_as_default_false_leaves_dask_alone():
    before = dask.config.get("scheduler", None)
    with Client(n_workers=1, processes=False, set_as_default=False):
        assert dask.config.get("scheduler", None) is before


def test_the_newest_client_is_the_scheduler_and_the_older_comes_back():
    with Client(n_workers=1, processes=False) as first:
        first_workers = set(first.scheduler_info()["workers"])
        with Client(n_workers=1, processes=False) as second:
            assert dask.delayed(where)().compute() in set(second.scheduler_info()["workers"])
        assert dask.delayed(where)().compute() in first_workers


def test_dask_compute_inside_a_task_uses_that_workers_client(client):
    workers = set(client.scheduler_info()["workers"])
    ran_on, value = client.submit(nested_compute, 41).result()
    assert ran_on in workers and value == 42


def test_collection_methods_route_through_the_client(client):
    da = pytest.importorskip("dask.array")
    x = da.ones((40, 40), chunks=10)
    y = x.persist()                    # dask's persist -> client.persist: Futures inside
    assert all(isinstance(f, Future) for f in futures_of(y)) and len(futures_of(y)) == 16
    assert (y + 1).sum().compute() == 3200
    assert client.compute(y.sum()).result() == 1600


@gen_cluster()
async def test_an_asynchronous_default_client_asks_to_be_awaited(c, cluster):
    # gen_cluster's client is not the default; an async client that is says how to wait.
    from actorrt import Client as C
    async with C(cluster.scheduler_address, asynchronous=True) as ac:
        with pytest.raises(RuntimeError, match="asynchronous"):
            dask.delayed(inc)(1).compute()
        assert await ac.compute(dask.delayed(inc)(1)) == 2


# --- dask.dataframe (expression collections) -------------------------------------------------
def test_dataframe_reductions_groupby_and_merge(pclient, dd, frame):
    ddf = dd.from_pandas(frame, npartitions=4)
    assert pclient.compute(ddf.v.sum()).result() == frame.v.sum()
    got = ddf.groupby("k").v.mean().compute().sort_index()
    assert got.equals(frame.groupby("k").v.mean().sort_index())
    other = dd.from_pandas(frame[["k", "w"]].drop_duplicates("k"), npartitions=2)
    merged = ddf.merge(other, on="k").compute().sort_values("v").reset_index(drop=True)
    expected = frame.merge(frame[["k", "w"]].drop_duplicates("k"), on="k").sort_values("v")
    assert merged.equals(expected.reset_index(drop=True))


def test_dataframe_persist_then_compute_and_persist_again(pclient, dd, frame):
    ddf = dd.from_pandas(frame, npartitions=4)
    kept = pclient.persist(ddf[ddf.v > 10])
    assert len(futures_of(kept)) >= 1
    assert kept.v.sum().compute() == frame.v[frame.v > 10].sum()
    again = pclient.persist(kept.assign(z=kept.v * 2))
    assert again.z.max().compute() == 2 * frame.v.max()
    assert pclient.compute([kept.w.count(), again.k.nunique()], sync=True) == [189, 5]


def test_parquet_round_trip_through_the_workers(pclient, dd, frame, tmp_path):
    pytest.importorskip("pyarrow", reason="parquet needs pyarrow (the test extra)")
    path = str(tmp_path / "data")
    dd.from_pandas(frame, npartitions=3).to_parquet(path)
    assert sorted(os.listdir(path))  # the workers wrote the files
    back = dd.read_parquet(path)
    assert back.groupby("k").w.sum().compute().sort_index().tolist() == \
        frame.groupby("k").w.sum().sort_index().tolist()


# --- dask.array, bag, delayed ----------------------------------------------------------------
def test_array_reduction_and_persisted_array_resubmitted(any_client):
    da = pytest.importorskip("dask.array")
    np = pytest.importorskip("numpy")
    x = da.arange(400, chunks=50).reshape(20, 20).rechunk(5)
    assert any_client.compute((x + x.T).mean(axis=0).sum()).result() == \
        (np.arange(400).reshape(20, 20) * 2).mean(axis=0).sum()
    p = any_client.persist(x)
    assert any_client.compute(p + 1).result().sum() == np.arange(400).sum() + 400
    assert any_client.persist(p * 2).sum().compute() == 2 * np.arange(400).sum()


def test_bag_pipeline(client):
    db = pytest.importorskip("dask.bag")
    b = db.from_sequence(range(20), npartitions=4).map(inc).filter(lambda v: v % 2 == 0)
    assert client.compute(b.sum()).result() == sum(v + 1 for v in range(20) if (v + 1) % 2 == 0)
    assert sorted(b.compute()) == [v for v in range(1, 21) if v % 2 == 0]


def test_futures_nested_with_delayeds_anywhere_in_arguments(any_client):
    f = any_client.submit(inc, 4)
    d = dask.delayed(inc)(1)
    total = dask.delayed(sum)([f, d, 10])
    assert any_client.compute(total).result() == 5 + 2 + 10
    pairs = dask.delayed(lambda m: m["a"] + m["b"][0])({"a": f, "b": (d,)})
    assert any_client.compute(pairs).result() == 7
    assert dask.delayed(operator.add)(f, d).compute() == 7


def test_compute_traverses_python_containers(client):
    d = dask.delayed(inc)(1)
    assert client.compute([[d, 5], {"x": d}], sync=True) == [[2, 5], {"x": 2}]
    assert client.compute([[d, 5]], sync=True, traverse=False) == [[d, 5]]


def test_tuple_keys_in_submit_and_graphs(client):
    f = client.submit(inc, 1, key=("x", 0, 1))
    assert f.result() == 2 and f.key == str(("x", 0, 1))
    graph = {("y", 0): (inc, ("z", 0)), ("z", 0): (inc, f)}
    assert client.get(graph, ("y", 0)) == 4
    futures = client.map(inc, [1, 2], key=[("m", 0), ("m", 1)])
    assert client.gather(futures) == [2, 3]


def test_a_collection_needing_a_key_nobody_provides_is_refused_before_sending(client):
    from dask._task_spec import Task, TaskRef
    from dask.delayed import Delayed

    from actorrt.client.graph import GraphError
    orphan = Delayed("needs-orphan", {"needs-orphan": Task("needs-orphan", inc, TaskRef("orphan-key"))})
    with pytest.raises(GraphError, match="orphan-key"):
        client.compute(orphan)
    with pytest.raises(GraphError, match="orphan-key"):
        orphan.compute()
    assert not [k for k in client.who_has() if "orphan" in str(k)]
    assert client.submit(inc, 1).result() == 2


# --- resources through collections --------------------------------------------------------
@gen_cluster(n_workers=1)
async def test_compute_persist_and_annotate_hold_tasks_for_resources(c, cluster):
    state = cluster.scheduler.state

    def unrunnable():
        return sorted(ts.key for ts in state.placement.unrunnable)

    with_tpu = c.compute(dask.delayed(inc)(1, dask_key_name="asks-tpu"), resources={"TPU": 1})
    with dask.annotate(resources={"TPU": 2}):
        annotated = dask.delayed(inc)(2, dask_key_name="annotated-tpu")
    kept = c.persist(annotated)
    await poll_for(lambda: {"asks-tpu", "annotated-tpu"} <= set(unrunnable()))
    assert with_tpu.status == "pending"
    assert state.tasks["annotated-tpu"].resources == {"TPU": 2.0}
    assert await c.compute(dask.delayed(inc)(3)) == 4  # other work goes on
    host, _ = await start_worker(cluster.scheduler_address, address="inproc://", secret=cluster.secret,
                                 name="tpu", death_timeout=0, resources={"TPU": 2})
    try:
        assert await with_tpu == 2
        assert await c.compute(kept) == 3
        assert (await c.who_has(with_tpu))[with_tpu.key] == [host.address]
    finally:
        await host.close()


def test_bad_resources_in_compute_are_refused_before_sending(client):
    with pytest.raises(ValueError, match="amount of 'GPU' must be a finite number >= 0"):
        client.compute(dask.delayed(inc)(1), resources={"GPU": -1})
    with dask.annotate(resources={"GPU": "one"}):
        bad = dask.delayed(inc)(1)
    with pytest.raises(TypeError, match="amount of 'GPU' must be a number"):
        client.compute(bad)
    assert client.submit(inc, 1).result() == 2


# --- the examples ------------------------------------------------------------------------------
EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


def run_example(name):
    import subprocess
    import sys
    out = subprocess.run([sys.executable, os.path.join(EXAMPLES, name)], capture_output=True,
                         text=True, timeout=100)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.timeout(120)
def test_array_example_runs():
    pytest.importorskip("numpy", reason="dask.array needs numpy")
    out = run_example("dask_array_reduction.py")
    assert "16 chunks on 2 workers" in out and "sum of column means" in out


@pytest.mark.timeout(120)
def test_dataframe_example_writes_reads_and_groups(dd):
    pytest.importorskip("pyarrow", reason="parquet needs pyarrow (the test extra)")
    out = run_example("dask_dataframe_groupby.py")
    assert "rows: 8000" in out and "north" in out


_WITHOUT_DASK = """
import sys
sys.modules["dask"] = None            # as if dask were not installed
from actorrt import Client

class Collection:                     # what a dask collection looks like from outside
    def __dask_graph__(self):
        return {"k": 1}

with Client(n_workers=1, processes=False) as client:
    for call in (client.compute, client.persist):
        try:
            call(Collection())
        except ImportError as e:
            print("ImportError:", e)
    print("still works:", client.submit(abs, -3).result(), client.get({"x": (abs, -4)}, "x"))
"""


@pytest.mark.timeout(60)
def test_without_dask_collections_name_the_extra_and_nothing_else_breaks():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", _WITHOUT_DASK], capture_output=True, text=True,
                         timeout=50)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("pip install 'actorrt[dask]'") == 2
    assert "still works: 3 4" in out.stdout


_IMPORTED_AFTER = """
import sys
assert "dask" not in sys.modules and "joblib" not in sys.modules
from actorrt import Client, get_worker

def where():
    return get_worker().address

with Client(n_workers=1, processes=False) as client:
    assert "dask" not in sys.modules and "joblib" not in sys.modules  # a Client costs no import
    import dask
    print("dask on the cluster:", dask.delayed(where)().compute() in client.scheduler_info()["workers"])
    import joblib
    with joblib.parallel_backend("dask"):
        print("joblib on the cluster:", set(joblib.Parallel()(joblib.delayed(where)() for _ in range(2)))
              <= set(client.scheduler_info()["workers"]))
print("after close:", dask.config.get("scheduler", None))
"""


@pytest.mark.timeout(60)
def test_dask_and_joblib_imported_after_the_client_still_use_it():
    pytest.importorskip("joblib", reason="the joblib backend's test needs joblib (the test extra)")
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", _IMPORTED_AFTER], capture_output=True, text=True,
                         timeout=50)
    assert out.returncode == 0, out.stderr
    assert "dask on the cluster: True" in out.stdout
    assert "joblib on the cluster: True" in out.stdout
    assert "after close: None" in out.stdout
