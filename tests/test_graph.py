"""Task graphs: client.get on dask-style dicts, and dask collections through
client.compute / client.persist / dask.compute(scheduler=client.get)."""
from operator import add

import pytest

from actorrt import Future, futures_of
from actorrt.client.graph import GraphError, flatten_keys, key_name, stringify
from actorrt.testing import gen_cluster, wait_until


def inc(x):
    return x + 1


def bad(x):
    raise ValueError(f"bad {x}")


GRAPH = {
    "x": 1,
    "y": (inc, "x"),
    "z": (add, "y", (inc, "x")),          # a nested task
    "w": ["x", "y", (inc, "z")],           # a list of inputs and tasks
    "alias": "z",
    ("t", 0): (sum, "w"),                  # a tuple key
    "literal-tuple": (1, "x"),             # not a task: data
    "d": (dict, [["a", "x"], ["b", "y"]]),
    "kw": (lambda d: d["p"] + d["q"][0], {"p": "x", "q": ["y"]}),
}


# --- client.get -----------------------------------------------------------------------
def test_get_dask_style_graph(any_client):
    c = any_client
    assert c.get(GRAPH, "z") == 4
    assert c.get(GRAPH, ["w", ["alias", ("t", 0)]]) == [[1, 2, 5], [4, 8]]
    assert c.get(GRAPH, "literal-tuple") == (1, "x")
    assert c.get(GRAPH, "d") == {"a": 1, "b": 2}
    assert c.get(GRAPH, "kw") == 3


def test_get_releases_everything_afterwards(client):
    client.get(GRAPH, ["w", ("t", 0)])
    state = client.cluster.scheduler.state
    wait_until(lambda: not state.tasks)


def test_get_runs_only_what_the_keys_need(client):
    graph = {"a": (inc, 1), "never": (bad, 0)}
    assert client.get(graph, "a") == 2


def test_get_raises_task_errors(any_client):
    with pytest.raises(ValueError, match="bad 2"):
        any_client.get({"x": 2, "y": (bad, "x"), "z": (inc, "y")}, "z")


def test_get_with_future_inputs(any_client):
    c = any_client
    f = c.submit(inc, 10)
    assert c.get({"a": (add, f, 1), "b": [f, "a"]}, "b") == [11, 12]
    assert c.get({"f": f}, "f") == 11


def test_get_sync_false_returns_futures(client):
    futures = client.get(GRAPH, ["y", "z"], sync=False)
    assert all(isinstance(f, Future) for f in futures)
    assert client.gather(futures) == [2, 4]


def test_large_fan_in_graph(client):
    graph = {("leaf", i): (inc, i) for i in range(300)}
    graph["total"] = (sum, [("leaf", i) for i in range(300)])
    assert client.get(graph, "total") == sum(range(1, 301))


def test_get_bad_input_clear_errors(client):
    with pytest.raises(GraphError, match="'nope' is not in the graph"):
        client.get(GRAPH, "nope")
    with pytest.raises(GraphError, match="cycle"):
        client.get({"a": (inc, "b"), "b": (inc, "a")}, "a")
    with pytest.raises(TypeError, match="expected a task graph"):
        client.get(42, "a")
    assert client.get(GRAPH, "y") == 2  # the client still works


@gen_cluster()
async def test_get_async(c, cluster):
    assert await c.get(GRAPH, ["y", "alias"]) == [2, 4]


def test_keys_helpers():
    assert stringify(("x", 1)) == "('x', 1)" and stringify("a") == "a"
    assert key_name(("sum-aggregate-0123456789abcdef", 0)) == "sum-aggregate"
    assert key_name("add-1cedbaa0-72b3-44c7-be45-0ed423413267") == "add"
    assert flatten_keys([["a", ["b"]], "c"]) == ["a", "b", "c"] and flatten_keys("k") == ["k"]


# --- dask collections -------------------------------------------------------------------
@pytest.fixture
def dask():
    # Imported when a test runs, not at collection: importing dask installs tblib's
    # exception pickling for every exception class defined so far, which would change
    # other modules' tests.
    return pytest.importorskip("dask")


def test_compute_delayed(any_client, dask):
    c = any_client
    x = dask.delayed(add)(1, 2)
    y = dask.delayed(add)(x, 10)
    f = c.compute(y)
    assert isinstance(f, Future) and f.result() == 13
    assert c.compute([x, y, 5], sync=True) == [3, 13, 5]


def test_dask_compute_with_client_get(any_client, dask):
    da = pytest.importorskip("dask.array")
    a = da.arange(100, chunks=10)
    assert dask.compute(a.sum(), scheduler=any_client.get) == (4950,)
    y = dask.delayed(inc)(dask.delayed(inc)(1))
    assert y.compute(scheduler=any_client.get) == 3


def test_compute_and_persist_dask_array(any_client, dask):
    da = pytest.importorskip("dask.array")
    c = any_client
    a = da.ones((20, 20), chunks=(5, 5))
    assert c.compute(a.sum()).result() == 400
    p = c.persist(a + 1)
    futures = futures_of(p)
    assert len(futures) == 16 and all(isinstance(f, Future) for f in futures)
    assert c.compute(p.sum()).result() == 800
    assert p.sum().compute(scheduler=c.get) == 800


def test_persist_delayed_and_list(client, dask):
    x = dask.delayed(add)(1, 2)
    y = dask.delayed(inc)(x)
    px, py = client.persist([x, y])
    assert futures_of(px)[0].result() == 3
    assert client.compute(py).result() == 4
    assert py.compute(scheduler=client.get) == 4


def test_delayed_with_future_argument(any_client, dask):
    c = any_client
    f = c.submit(inc, 5)
    assert c.compute(dask.delayed(inc)(f)).result() == 7
    assert c.compute(dask.delayed(sum)([f, f, 1])).result() == 13


def test_compute_errors_and_non_collections(client, dask):
    assert client.compute(5) == 5
    f = client.compute(dask.delayed(bad)(1))
    with pytest.raises(ValueError, match="bad 1"):
        f.result()


@gen_cluster()
async def test_compute_async(c, cluster):
    dask = pytest.importorskip("dask")
    y = dask.delayed(inc)(1)
    assert await c.compute(y) == 2
    assert await c.compute([y], sync=True) == [2]
