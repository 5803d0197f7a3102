"""Where actorrt follows dask.distributed's observable behaviour (client/semantics.py)."""
from __future__ import annotations

import asyncio
import threading

import pytest

import actorrt
from actorrt import (
    CancelledError, Client, Event, LocalCluster, Queue, Semaphore, Variable, as_completed,
    get_client, wait, worker_client,
)
from actorrt.client.semantics import FuturesCancelledError, resolve_type
from actorrt.testing import gen_cluster


def inc(x):
    return x + 1


def fail(x):
    raise ValueError(f"no {x}")


def held(name, value):
    Event(name).wait(10)
    return value


def fail_after(name, x):
    Event(name).wait(10)
    raise ValueError(f"late {x}")


class Point:  # importable by the client: Future.type resolves to it
    def __init__(self, x):
        self.x = x


def make_point(x):
    return Point(x)


def make_local(x):
    class Local:
        pass
    return Local()


# --- Future.type ---------------------------------------------------------------------------

def test_future_type_is_the_type(any_client):
    c = any_client
    assert c.submit(inc, 1).result() == 2
    f, g, p = c.submit(inc, 1), c.submit(str, 1), c.submit(make_point, 3)
    wait([f, g, p])
    assert f.type is int and g.type is str and p.type is Point
    assert c.scatter([1.5])[0].type is float
    assert "type: int" in repr(f)


def test_a_type_the_client_cannot_import_stays_its_name(any_client):
    f = any_client.submit(make_local, 1)
    f.result()
    assert isinstance(f.type, str) and f.type.endswith("make_local.<locals>.Local")


def test_resolve_type_names():
    assert resolve_type("int") is int and resolve_type(None) is None
    assert resolve_type("collections.OrderedDict").__name__ == "OrderedDict"
    assert resolve_type("no_such_module_xyz.Thing") == "no_such_module_xyz.Thing"
    assert resolve_type("not_a_builtin") == "not_a_builtin"
    assert resolve_type("Actor") is actorrt.Actor


# --- Semaphore.release ---------------------------------------------------------------------

def test_semaphore_release_returns_true(client):
    sem = Semaphore(2, "sem-true", client=client)
    assert sem.acquire() is True
    assert sem.release() is True
    with pytest.raises(RuntimeError, match="released too often"):
        sem.release()


@gen_cluster()
async def test_semaphore_release_returns_true_asynchronously(c, cluster):
    sem = Semaphore(1, "sem-async", client=c)
    assert await sem.acquire() is True
    assert await sem.release() is True


# --- wait and cancelled futures -------------------------------------------------------------

def test_wait_raises_cancelled_error_naming_the_cancelled(client):
    ev = Event("wait-cancel", client=client)
    a, b = client.submit(held, "wait-cancel", 1), client.submit(inc, 1)
    a.cancel(reason="not needed")
    with pytest.raises(CancelledError) as info:
        wait([a, b])
    assert isinstance(info.value, FuturesCancelledError)
    assert info.value.keys_by_reason == {"not needed": [a.key]}
    assert a.key in str(info.value) and "not needed" in str(info.value)
    ev.set()
    assert wait([b]).done == {b}  # no cancelled one: returns as before


def test_wait_first_completed_looks_only_at_done_futures(client):
    ev = Event("wait-first", client=client)
    pending = client.submit(held, "wait-first", 1)
    done, not_done = wait([pending, client.submit(inc, 1)], return_when="FIRST_COMPLETED")
    assert pending in not_done and len(done) == 1
    ev.set()
    pending.result()


# --- as_completed with results ----------------------------------------------------------------

def test_as_completed_with_results_raises_in_completion_order(client):
    # The large value is fetched; the error that finishes after it must not overtake it.
    first = client.submit(bytes, 10_000_000)
    first.result()
    ev = Event("late-fail", client=client)
    late = client.submit(fail_after, "late-fail", 1)
    seq = as_completed([first], with_results=True)
    seq.add(late)
    ev.set()
    future, value = next(seq)
    assert future is first and len(value) == 10_000_000
    with pytest.raises(ValueError, match="late 1"):
        next(seq)
    assert seq.is_empty()


def test_an_error_never_overtakes_a_value_still_being_fetched(client, monkeypatch):
    from actorrt.client import transfer
    ok, bad = client.submit(inc, 1), client.submit(fail, 1)
    assert ok.result() == 2 and isinstance(bad.exception(), ValueError)

    async def make_gate():
        return asyncio.Event()
    gate = client.sync(make_gate)
    real = transfer.gather_keys

    async def held_gather(*args, **kwargs):  # the fetch of ok's value waits for the gate
        await gate.wait()
        return await real(*args, **kwargs)
    monkeypatch.setattr(transfer, "gather_keys", held_gather)

    seq = as_completed([ok], with_results=True)
    seq.add(bad)  # done already, after ok
    client.sync(asyncio.sleep, 0)  # (a trip through the loop: both callbacks have run)
    assert not seq.has_ready()  # the error waits for the value before it
    client.loop.call_soon_threadsafe(gate.set)
    assert next(seq) == (ok, 2)
    with pytest.raises(ValueError, match="no 1"):
        next(seq)


def test_as_completed_with_results_yields_cancelled_with_its_error(client):
    ev = Event("ac-cancel", client=client)
    c = client.submit(held, "ac-cancel", 1)
    c.cancel(reason="changed plans")
    [(future, value)] = list(as_completed([c], with_results=True))
    assert future is c and isinstance(value, CancelledError)
    ev.set()


def test_as_completed_raise_errors_false_yields_the_exception(client):
    pairs = dict(as_completed([client.submit(fail, 2)], with_results=True, raise_errors=False))
    [exc] = pairs.values()
    assert isinstance(exc, ValueError)


# --- released and cancelled futures --------------------------------------------------------------

def test_result_of_a_released_future_is_cancelled_error(client):
    f = client.submit(inc, 1)
    f.result()
    f.release()
    with pytest.raises(CancelledError, match=f"{f.key}.*released"):
        f.result()


def test_submit_on_a_cancelled_future_raises_at_the_call(client):
    ev = Event("dep-cancel", client=client)
    dep = client.submit(held, "dep-cancel", 1)
    dep.cancel()
    with pytest.raises(CancelledError, match=dep.key):
        client.submit(inc, dep)
    with pytest.raises(CancelledError, match=dep.key):
        client.map(inc, [dep])
    ev.set()
    assert client.submit(inc, 1).result() == 2  # the client goes on


# --- wait_for_workers and scatter -------------------------------------------------------------

def test_wait_for_workers_needs_a_positive_count(client):
    with pytest.raises(TypeError):
        client.wait_for_workers()
    for n in (None, 0, -2):
        with pytest.raises(ValueError, match="n_workers must be a positive integer"):
            client.wait_for_workers(n)
    with pytest.raises(TypeError, match="n_workers must be an int"):
        client.wait_for_workers(1.5)
    with pytest.raises(TimeoutError, match="2 of 3 workers"):
        client.wait_for_workers(3, timeout=0)  # (0: look once; dask would wait for ever)


def test_scatter_waits_for_a_worker_to_join():
    with LocalCluster(0, processes=False) as cluster, Client(cluster) as client:
        with pytest.raises(TimeoutError, match="no workers to scatter to"):
            client.scatter(1, timeout="50ms")
        got: list = []
        t = threading.Thread(target=lambda: got.append(client.scatter([5], timeout="30s")))
        t.start()
        cluster.scale(1)  # the waiting scatter goes on once the worker is in
        t.join(30)
        [[f]] = got
        assert f.result() == 5


# --- get_client / worker_client ---------------------------------------------------------------

def in_task_with_timeout(timeout):
    with worker_client(timeout=timeout) as c:
        return c.submit(inc, 1).result()


def test_worker_client_in_a_task_needs_no_connection(any_client):
    # The task's client shares its worker's connection: nothing to wait for, even at 0 s.
    assert any_client.submit(in_task_with_timeout, 0).result() == 2
    assert any_client.submit(in_task_with_timeout, "2s").result() == 2


def test_get_client_connects_within_its_timeout(monkeypatch):
    monkeypatch.setattr(actorrt.runtime, "_default", None)
    with pytest.raises(ValueError, match="timeout"):
        get_client("tcp://127.0.0.1:1", timeout="soon")
    with pytest.raises(OSError):  # (TimeoutError or a refused connection: both OSError)
        get_client("tcp://127.0.0.1:1", timeout=0)
    with pytest.raises(ValueError, match="no Client is running"):
        get_client()


def test_get_client_with_an_address_connects_a_new_client(monkeypatch):
    monkeypatch.setattr(actorrt.runtime, "_default", None)
    monkeypatch.setenv("ACTORRT_SECRET", "durations-secret")
    # (a TCP scheduler: in-process addresses are reachable from their own loop only)
    with LocalCluster(0, processes=True, secret=b"durations-secret") as cluster:
        c = get_client(cluster.scheduler_address, timeout="10s")
        try:
            assert c.status == "running" and c.scheduler_address == cluster.scheduler_address
            assert get_client() is c  # (it is the default now, as in dask)
        finally:
            c.close()


# --- as_current is context-local -----------------------------------------------------------------

def test_as_current_is_local_to_the_thread(client):
    other = Client(client.cluster, set_as_default=False)
    try:
        inside = threading.Event()
        release = threading.Event()
        seen: dict = {}

        def use_other():
            with other.as_current():
                seen["thread"] = get_client()
                inside.set()
                release.wait(10)

        t = threading.Thread(target=use_other)
        t.start()
        assert inside.wait(10)
        assert get_client() is client  # this thread never entered other.as_current()
        with client.as_current():
            assert get_client() is client
        release.set()
        t.join(10)
        assert seen["thread"] is other
        with other.as_current():
            assert Client.current() is other
        assert get_client() is client
    finally:
        other.close()


# --- a Future handed to a second client ----------------------------------------------------------

def _second_client(first):
    return Client(first.cluster, set_as_default=False)


def test_future_through_queue_and_variable_binds_to_the_second_client(any_client):
    first = any_client
    ev = Event("hand-over", client=first)
    pending = first.submit(held, "hand-over", 7, pure=False)
    done = first.submit(inc, 1, pure=False)
    erred = first.submit(fail, 3, pure=False)
    wait([done, erred])
    q = Queue("hand-over-q", client=first)
    q.put(pending)
    q.put(erred)
    Variable("hand-over-v", client=first).set(done)
    keys = pending.key, done.key, erred.key
    del pending, done, erred  # the queue and the variable keep the keys alive
    with _second_client(first) as second:
        got = Queue("hand-over-q", client=second).get(timeout="5s")
        bad = Queue("hand-over-q", client=second).get(timeout="5s")
        fin = Variable("hand-over-v", client=second).get(timeout="5s")
        assert (got.key, fin.key, bad.key) == keys
        assert got.client is second and fin.client is second and bad.client is second
        assert fin.result(timeout="5s") == 2
        with pytest.raises(ValueError, match="no 3"):
            bad.result(timeout="5s")
        ev.set()
        assert got.result(timeout="5s") == 7  # pending when handed over: resolves here


@gen_cluster()
async def test_future_through_queue_binds_to_an_asynchronous_second_client(c, cluster):
    second = await Client(cluster, asynchronous=True, set_as_default=False)
    try:
        ev = Event("hand-over-async", client=c)
        f = c.submit(held, "hand-over-async", 3)
        await Queue("ho-async", client=c).put(f)
        g = await Queue("ho-async", client=second).get(timeout="5s")
        assert g.client is second
        await ev.set()
        assert await g.result(timeout="5s") == 3
    finally:
        await second.close()
