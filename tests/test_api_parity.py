"""dask.distributed's Client API beyond submit/gather: run, who_has, datasets, restart, ...

Each test names the dask behaviour it checks. In-process clusters (`client`,
`gen_cluster`) and real worker processes (`pclient`, or a cluster of one's own where
the test disrupts it).
"""
import traceback
import asyncio
import os
import sys
import textwrap
import threading
import uuid

import pytest

import actorrt
from actorrt import CancelledError, Client, LocalCluster, default_client, get_client, get_worker
from actorrt.testing import gen_cluster, wait_until

_gates: dict = {}


def inc(x):
    return x + 1


def gate(name):
    _gates.setdefault(name, threading.Event()).wait(30)
    return name


def open_gate(name):
    _gates.setdefault(name, threading.Event()).set()


def fail(x):
    raise ValueError(f"no {x}")


def worker_facts(dask_worker):
    return dask_worker.address, dask_worker.name, dask_worker.nthreads, sorted(dask_worker.data)


def worker_facts_from_task():
    w = get_worker()
    from collections.abc import MutableMapping
    # dask's worker.data is a mapping of key -> value (a SpillBuffer when it spills)
    return w.address, w.name, w.nthreads, isinstance(w.data, MutableMapping)


def count_tasks(dask_scheduler):
    return len(dask_scheduler.state.tasks)


async def mark_later(value, dask_worker):
    await asyncio.sleep(0)
    dask_worker.mark = value


def read_mark(dask_worker):
    return getattr(dask_worker, "mark", None)


async def async_add(x, y=0):
    await asyncio.sleep(0)
    return x + y


def submit_from_current_client(x):
    return Client.current().submit(inc, x).result()


# --- run ----------------------------------------------------------------------------
def test_run_returns_each_workers_result(client):
    addresses = sorted(client.nthreads())
    assert client.run(os.getpid) == {a: os.getpid() for a in addresses}
    assert client.run(async_add, 1, y=2) == {a: 3 for a in addresses}


def test_run_passes_the_worker_as_dask_worker(client):
    x = client.submit(inc, 1)
    x.result()
    facts = client.run(worker_facts)
    [holder] = client.who_has([x])[x.key]
    assert facts[holder][3] == [x.key]
    assert {a: f[:3] for a, f in facts.items()} == {
        a: (a, i["name"], 1) for a, i in client.scheduler_info()["workers"].items()}


def test_run_on_some_workers_by_address_or_name(client):
    info = client.scheduler_info()["workers"]
    first, second = sorted(info)
    assert list(client.run(os.getpid, workers=[first])) == [first]
    assert list(client.run(os.getpid, workers=info[second]["name"])) == [second]
    with pytest.raises(ValueError, match="no worker 'tcp://nowhere:1'"):
        client.run(os.getpid, workers=["tcp://nowhere:1"])


def test_run_on_error_raise_return_ignore(client):
    with pytest.raises(ValueError, match="no 1"):
        client.run(fail, 1)
    got = client.run(fail, 2, on_error="return")
    assert len(got) == 2 and all(isinstance(e, ValueError) and "no 2" in str(e) for e in got.values())
    assert client.run(fail, 3, on_error="ignore") == {}
    assert client.submit(inc, 1).result() == 2  # the cluster is fine


def test_run_bad_arguments_fail_at_once(client):
    with pytest.raises(ValueError, match="on_error"):
        client.run(os.getpid, on_error="explode")
    with pytest.raises(ValueError, match="nanny"):
        client.run(os.getpid, nanny=True)
    with pytest.raises(ValueError, match="coroutine function"):
        client.run(os.getpid, wait=False)
    with pytest.raises(TypeError, match="callable"):
        client.run(42)
    with pytest.raises(actorrt.SerializationError):
        client.run(inc, threading.Lock())
    assert len(client.run(os.getpid)) == 2


def test_run_wait_false_starts_a_coroutine_and_returns_none(client):
    assert client.run(mark_later, "set", wait=False) is None
    wait_until(lambda: set(client.run(read_mark).values()) == {"set"})


def test_run_on_scheduler(client):
    x = client.submit(inc, 10)
    x.result()
    assert client.run_on_scheduler(count_tasks) >= 1
    assert client.run_on_scheduler(async_add, 2, y=3) == 5
    with pytest.raises(ValueError, match="no 4"):
        client.run_on_scheduler(fail, 4)


# --- where things are --------------------------------------------------------------
def test_who_has_has_what_processing_nthreads(client):
    x, y = client.submit(inc, 1), client.submit(inc, 2)
    client.gather([x, y])
    who = client.who_has([x, y])
    assert set(who) == {x.key, y.key} and all(len(v) == 1 for v in who.values())
    assert {x.key, y.key} <= set(client.who_has())
    has = client.has_what()
    assert sorted(has) == sorted(client.nthreads())
    assert {k for keys in has.values() for k in keys} >= {x.key, y.key}
    [holder] = who[x.key]
    assert x.key in client.has_what(workers=[holder])[holder]
    assert client.nthreads(workers=[holder]) == {holder: 1}
    assert client.ncores() == client.nthreads()
    assert client.processing() == {a: [] for a in has}


def test_processing_shows_running_tasks(client):
    name = f"processing-{uuid.uuid4().hex}"
    f = client.submit(gate, name)
    try:
        wait_until(lambda: any(f.key in keys for keys in client.processing().values()))
    finally:
        open_gate(name)
    assert f.result() == name


def test_who_has_sees_futures_submitted_just_before(client):
    x = client.submit(inc, 100, pure=False)
    assert x.key in client.who_has([x])  # reached the scheduler first (the outbox is flushed)


def test_scheduler_info_is_shaped_like_dasks(client):
    info = client.scheduler_info()
    assert info["type"] == "Scheduler" and info["address"] == client.scheduler_address
    assert info["n_workers"] == 2 and info["total_threads"] == 2
    assert sorted(info["workers"]) == sorted(client.nthreads())
    for address, w in info["workers"].items():
        assert w["type"] == "Worker" and w["nthreads"] == 1 and w["address"] == address
        assert {"name", "id", "host", "status", "memory_limit", "resources"} <= set(w)
    assert len(client.scheduler_info(n_workers=1)["workers"]) == 1


# --- published datasets ------------------------------------------------------------------
def test_publish_get_list_unpublish(client):
    x = client.submit(inc, 1)
    client.publish_dataset(x=x, plain=[1, 2])
    client.publish_dataset({"nested": x}, name="named")
    assert sorted(client.list_datasets()) == ["named", "plain", "x"]
    got = client.get_dataset("x")
    assert got.key == x.key and got.result() == 2
    assert client.get_dataset("named")["nested"].result() == 2
    assert client.get_dataset("plain") == [1, 2]
    for name in ("x", "named", "plain"):
        client.unpublish_dataset(name)
    assert client.list_datasets() == ()


def test_dataset_names_and_override(client):
    client.publish_dataset(a=1)
    with pytest.raises(KeyError, match="already exists"):
        client.publish_dataset(a=2)
    client.publish_dataset(a=3, override=True)
    assert client.get_dataset("a") == 3
    with pytest.raises(KeyError, match="'missing' not found"):
        client.get_dataset("missing")
    assert client.get_dataset("missing", default=None) is None
    with pytest.raises(TypeError, match="must be a str"):
        client.get_dataset(("tuple", "name"))
    with pytest.raises(ValueError, match="needs a name"):
        client.publish_dataset([1, 2])
    with pytest.raises(actorrt.SerializationError):
        client.publish_dataset(lock=threading.Lock())
    assert client.list_datasets() == ("a",)
    client.unpublish_dataset("a")
    client.unpublish_dataset("a")  # absent: nothing to do (as dask)


def test_a_dataset_keeps_its_data_alive(client):
    x = client.submit(inc, 41, pure=False)
    key = x.key
    x.result()
    client.publish_dataset(kept=x)
    del x
    got = client.get_dataset("kept")
    assert got.result() == 42
    del got
    client.unpublish_dataset("kept")
    wait_until(lambda: key not in client.who_has())


def test_datasets_mapping(client):
    client.datasets["m"] = client.submit(inc, 5)
    assert "m" in client.datasets and len(client.datasets) == 1 and list(client.datasets) == ["m"]
    assert client.datasets["m"].result() == 6
    del client.datasets["m"]
    with pytest.raises(KeyError):
        del client.datasets["m"]


def test_datasets_across_clients_with_worker_processes(pclient):
    x = pclient.submit(inc, 1, pure=False)
    pclient.publish_dataset(shared=x)
    with Client(pclient.scheduler_address, secret=pclient.cluster.secret, set_as_default=False) as other:
        got = other.get_dataset("shared")
        assert got.result() == 2 and got.client is other
        pclient.unpublish_dataset("shared")
        del x
        assert got.result() == 2  # the other client's Future holds it now
    assert pclient.list_datasets() == ()


@gen_cluster()
async def test_async_face(c, cluster):
    x = c.submit(inc, 1)
    assert await x == 2
    runs = await c.run(worker_facts)
    assert len(runs) == 2
    assert (await c.who_has([x]))[x.key]
    assert await c.run_on_scheduler(count_tasks) >= 1
    await c.publish_dataset(x=x)
    assert await c.list_datasets() == ("x",)
    assert await (await c.get_dataset("x")) == 2
    await c.unpublish_dataset("x")
    info = await c.scheduler_info()
    assert info["n_workers"] == 2


# --- restart -------------------------------------------------------------------------------
def test_restart_cancels_futures_and_replaces_in_process_workers(client):
    name = f"restart-{uuid.uuid4().hex}"
    done, running = client.submit(inc, 1), client.submit(gate, name)
    done.result()
    client.publish_dataset(d=done)
    before = set(client.nthreads())
    try:
        client.restart()
    finally:
        open_gate(name)  # the in-process thread finishes unseen
    assert done.cancelled() and running.cancelled()
    with pytest.raises(CancelledError, match="restart"):
        done.result()
    after = client.nthreads()
    assert len(after) == 2 and not set(after) & before
    assert client.list_datasets() == ()
    again = client.submit(inc, 1)  # the same key, afresh
    assert again.key == done.key and again.result() == 2


def test_restart_without_waiting_replaces_in_process_workers_behind_the_call(client):
    f = client.submit(inc, 1)
    f.result()
    before = set(client.nthreads())
    client.restart(wait_for_workers=False)
    assert f.cancelled()
    wait_until(lambda: len(client.nthreads()) == 2 and not set(client.nthreads()) & before, timeout=20)
    assert client.submit(inc, 2).result(timeout=20) == 3


def test_restart_worker_processes():
    with Client(n_workers=1, threads_per_worker=1, processes=True, set_as_default=False) as c:
        [pid] = c.run(os.getpid).values()
        f = c.submit(inc, 1)
        f.result()
        c.restart()
        with pytest.raises(CancelledError):
            f.result()
        [new_pid] = c.run(os.getpid).values()
        assert new_pid != pid
        assert c.submit(inc, 2).result() == 3


@gen_cluster()
async def test_restart_needs_the_cluster_object(c, cluster):
    other = Client(cluster.scheduler_address, asynchronous=True, set_as_default=False)
    await other
    try:
        with pytest.raises(RuntimeError, match="cluster object"):
            await other.restart()
    finally:
        await other.close()


# --- upload_file ----------------------------------------------------------------------------
def import_value(module):
    import importlib
    return importlib.import_module(module).VALUE


def test_upload_file_to_worker_processes(pclient, tmp_path):
    module = f"uploaded_{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{module}.py"
    path.write_text(textwrap.dedent("VALUE = 'first'\n"))
    pclient.upload_file(str(path))
    assert set(pclient.run(import_value, module).values()) == {"first"}
    assert pclient.submit(import_value, module).result() == "first"
    path.write_text("VALUE = 'second'\n")
    pclient.upload_file(str(path))  # reloaded
    assert set(pclient.run(import_value, module).values()) == {"second"}
    assert module not in sys.modules  # not imported by the client
    other = tmp_path / "data.txt"  # any other file is placed beside them, not imported
    other.write_text("x")
    pclient.upload_file(str(other))
    assert pclient.submit(_read_uploaded, "data.txt", pure=False).result() == "x"


def _read_uploaded(name):
    from actorrt import UploadFile
    with open(os.path.join(UploadFile.directory(), name)) as f:
        return f.read()


# --- submit/map options, Client options --------------------------------------------------
def test_resources_and_fifo_timeout_are_taken_by_submit_and_map(client):
    # An empty dict or None asks for nothing; fifo_timeout and batch_size mean nothing here.
    f = client.submit(inc, 1, resources={}, fifo_timeout="100 ms")
    assert f.result() == 2
    fs = client.map(inc, range(3), resources=None, batch_size=2, fifo_timeout="1s")
    assert client.gather(fs) == [1, 2, 3]


def test_dask_only_cluster_options_are_accepted():
    with Client(n_workers=1, threads_per_worker=1, processes=False, memory_limit="1GB",
                dashboard_address=":0", silence_logs=40, set_as_default=False) as c:
        assert c.submit(inc, 1).result() == 2
        assert c.dashboard_link is None or c.dashboard_link.startswith("http")


# --- the current client, the worker, futures -------------------------------------------------
def test_default_and_current_client(client):
    assert default_client() is client and Client.current() is client and get_client() is client
    assert default_client(client) is client
    assert client.submit(submit_from_current_client, 1).result() == 2


@gen_cluster()
async def test_as_current(c, cluster):
    assert default_client() is c
    other = await Client(cluster, asynchronous=True, set_as_default=False)
    try:
        assert default_client() is c
        with other.as_current():
            assert default_client() is other and get_client() is other
        assert default_client() is c
    finally:
        await other.close()


def test_get_worker_has_dasks_common_attributes(any_client):
    address, name, nthreads, data_is_mapping = any_client.submit(worker_facts_from_task, pure=False).result()
    info = any_client.scheduler_info()["workers"]
    assert address in info and info[address]["name"] == name and nthreads == 1
    assert data_is_mapping


def test_future_parity(client):
    f = client.submit(fail, 5)
    assert f.exception().args == ("no 5",) and isinstance(f.exception(), ValueError)
    assert "fail" in [fr.name for fr in traceback.extract_tb(f.traceback())]  # a traceback object, as dask
    assert f.status == "error" and f.done() and not f.cancelled()
    g = client.submit(inc, 1)
    seen = threading.Event()
    g.add_done_callback(lambda fut: seen.set())
    assert g.result() == 2 and g.type is int and g.key.startswith("inc-")
    assert seen.wait(5)
    assert client.futures_of([g, {"x": f}]) == [g, f]


def test_get_versions(client):
    v = client.get_versions(check=True)
    assert set(v) == {"scheduler", "workers", "client"}
    assert len(v["workers"]) == 2
    assert v["client"]["packages"]["actorrt"] == actorrt.__version__
    assert v["scheduler"]["packages"]["python"] == v["client"]["packages"]["python"]


def test_get_versions_with_worker_processes(pclient):
    v = pclient.get_versions(check=True, packages=["pytest"])
    assert all(w["packages"]["pytest"] == v["client"]["packages"]["pytest"] for w in v["workers"].values())


def test_run_with_worker_processes(pclient):
    pids = pclient.run(os.getpid)
    assert len(pids) == 2 and os.getpid() not in pids.values() and len(set(pids.values())) == 2
    facts = pclient.run(worker_facts)
    assert all(f[0] == a for a, f in facts.items())
    with pytest.raises(ValueError, match="no 7"):
        pclient.run(fail, 7)
    assert pclient.run_on_scheduler(os.getpid) == os.getpid()  # the scheduler is in this process


def test_shutdown_closes_the_client_and_its_cluster():
    from actorrt import LocalCluster
    with LocalCluster(1, 1, processes=False) as cluster:
        c = Client(cluster, set_as_default=False)
        c.shutdown()
        assert c.status == "closed" and cluster.status == "closed"


@gen_cluster()
async def test_shutdown_async_and_without_cluster_object(c, cluster):
    other = await Client(cluster.scheduler_address, asynchronous=True, set_as_default=False)
    try:
        with pytest.raises(RuntimeError, match="cluster object"):
            other.shutdown()
    finally:
        await other.close()
    await c.shutdown()
    assert c.status == "closed" and cluster.status == "closed"


def run_from_a_task():
    return sorted(get_client().run(worker_facts))


def test_run_from_inside_a_task(any_client):
    addresses = sorted(any_client.nthreads())
    assert any_client.submit(run_from_a_task, pure=False).result() == addresses


def test_future_cancel_takes_a_reason(client):
    import time
    f = client.submit(time.sleep, 0.3, pure=False)
    f.cancel(reason="no longer needed")
    with pytest.raises(CancelledError, match="no longer needed"):
        f.result(timeout=5)


def test_positional_arguments_follow_dask(client):
    """dask's Future.cancel(reason) and Semaphore.acquire(timeout) take those first."""
    import time
    from actorrt import Semaphore
    f = client.submit(time.sleep, 0.3, pure=False)
    f.cancel("stop it")
    with pytest.raises(CancelledError, match="stop it"):
        f.result(timeout=5)
    sem = Semaphore(1, "positional")
    assert sem.acquire(1) is True
    assert sem.acquire(0.05) is False  # a timeout, not 'blocking'
    sem.release()


def test_a_closing_cluster_starts_no_worker():
    async def main():
        cluster = await LocalCluster(1, 1, processes=False, asynchronous=True, dashboard_address=None)
        await cluster._close_async()
        with pytest.raises(RuntimeError, match="cluster is closed"):
            await cluster._scale_async(2)
        assert not cluster.workers
    asyncio.run(main())
