"""The foundation's user-facing behaviour, over in-process and process clusters."""
import traceback
import asyncio
import gc
import pickle
import threading
import time

import pytest

import actorrt
from actorrt import CancelledError, Client, SerializationError, wait
from actorrt.testing import gen_cluster, wait_until


def inc(x):
    return x + 1


def add(x, y):
    return x + y


def double(x):
    return 2 * x


def bad(x):
    raise ValueError(f"bad input {x}")


def test_submit_dependencies_and_result(any_client):
    c = any_client
    x = c.submit(inc, 1)
    y = c.submit(inc, x)
    z = c.submit(add, x, y)
    assert z.result() == 5
    assert x.done() and x.status == "finished"
    assert repr(x).startswith("<Future: inc status: finished, type: int, key: inc-")


def test_map_and_gather(any_client):
    futures = any_client.map(inc, range(1000))
    assert any_client.gather(futures) == list(range(1, 1001))


def test_map_many_iterables_and_kwargs(client):
    assert client.gather(client.map(add, [1, 2], [10, 20])) == [11, 22]
    assert client.gather(client.map(add, [1, 2], y=5)) == [6, 7]


def test_futures_nested_in_arguments_are_dependencies(any_client):
    c = any_client
    a, b = c.submit(inc, 1), c.submit(inc, 2)
    total = c.submit(sum, [a, b, 10])
    assert total.result() == 15
    d = c.submit(lambda d: d["x"] + d["y"][0], {"x": a, "y": (b,)})
    assert d.result() == 5


def test_gather_nested_structures(client):
    a, b = client.submit(inc, 1), client.submit(inc, 2)
    assert client.gather({"a": a, "bs": [b, (a, 7)]}) == {"a": 2, "bs": [3, (2, 7)]}


def test_pure_keys_are_deterministic_and_impure_unique(client):
    assert client.submit(inc, 1).key == client.submit(inc, 1).key
    assert client.submit(inc, 1).key != client.submit(inc, 2).key
    assert client.submit(inc, 1, pure=False).key != client.submit(inc, 1, pure=False).key
    assert client.submit(inc, 1, key="mine").key == "mine"


def test_exception_keeps_type_message_and_user_frame(any_client):
    f = any_client.submit(bad, 3)
    with pytest.raises(ValueError, match="bad input 3") as info:
        f.result()
    assert "in bad" in "".join(traceback.format_exception(info.value))
    assert isinstance(f.exception(), ValueError)
    assert "bad" in [fr.name for fr in traceback.extract_tb(f.traceback())]
    assert f.status == "error"


def test_dependents_of_erred_task_err_and_skip(client):
    f = client.submit(bad, 1)
    g = client.submit(inc, f)
    ok = client.submit(inc, 1)
    with pytest.raises(ValueError, match="bad input 1"):
        g.result()
    assert client.gather([f, ok, g], errors="skip") == [2]
    with pytest.raises(ValueError):
        client.gather([ok, g])


def test_non_callable_raises_type_error_at_once(client):
    with pytest.raises(TypeError, match="callable"):
        client.submit(42)
    with pytest.raises(TypeError, match="callable"):
        client.map("not callable", [1])


def test_unpicklable_argument_raises_naming_it(any_client):
    lock = threading.Lock()
    with pytest.raises(SerializationError, match="lock"):
        any_client.submit(inc, lock)
    assert any_client.submit(inc, 1).result() == 2  # the cluster is fine


def test_unpicklable_result_errs_the_task_not_the_worker(any_client):
    f = any_client.submit(lambda: threading.Lock())
    with pytest.raises(Exception, match="lock"):
        f.result()
    assert any_client.submit(inc, 41).result() == 42


def test_result_timeout_leaves_task_running(client):
    ev = client.submit(time.sleep, 0.5, pure=False)
    with pytest.raises(TimeoutError):
        ev.result(timeout=0.01)
    assert ev.result(timeout=10) is None


def test_releasing_futures_frees_worker_data(client):
    futures = client.map(inc, range(50))
    client.gather(futures)
    workers = [w for _, w in client.cluster.workers.values()]
    assert sum(len(w.data) for w in workers) == 50
    del futures
    wait_until(lambda: sum(len(w.data) for w in workers) == 0)
    wait_until(lambda: not client.cluster.scheduler.state.tasks)


def test_scatter_and_use(any_client):
    c = any_client
    [d] = c.scatter([10])
    assert d.result() == 10
    assert c.submit(inc, d).result() == 11
    m = c.scatter({"k1": 1, "k2": 2})
    assert c.gather(m) == {"k1": 1, "k2": 2}
    b = c.scatter(5, broadcast=True)
    assert c.submit(double, b).result() == 10


def test_cancel_future(client):
    # (1 s: a started task's thread cannot be killed, and the fixture checks for threads left)
    f = client.submit(time.sleep, 1, pure=False)
    f.cancel()
    with pytest.raises(actorrt.CancelledError):
        f.result(timeout=5)
    assert f.cancelled()


def test_add_done_callback(client):
    got = []
    done = threading.Event()
    f = client.submit(inc, 1)
    f.add_done_callback(lambda fut: (got.append(fut.result()), done.set()))
    assert done.wait(10)
    assert got == [2]


def test_large_buffers_round_trip(pclient):
    np = pytest.importorskip("numpy")
    x = np.arange(1_000_000, dtype="f8")
    f = pclient.submit(lambda a: a * 2, x)
    assert float(f.result().sum()) == float(x.sum() * 2)


def test_future_pickles_by_key(client):
    f = client.submit(inc, 1)
    g = pickle.loads(pickle.dumps(f))
    assert g.key == f.key and g.result() == 2


@gen_cluster()
async def test_async_client(c, cluster):
    x = c.submit(inc, 1)
    y = c.submit(inc, x)
    assert await y == 3
    assert await c.gather(c.map(inc, range(10))) == list(range(1, 11))
    with pytest.raises(ValueError):
        await c.submit(bad, 1)


def test_async_client_context_manager_with_processes():
    async def main():
        async with Client(asynchronous=True, n_workers=1, threads_per_worker=1) as c:
            return await c.submit(add, 1, 2)
    assert asyncio.run(main()) == 3


# --- bookkeeping under concurrency and misuse -----------------------------------------
class _Cycle:
    """An object in a reference cycle: only the cyclic garbage collector frees it."""


def test_future_collected_while_client_lock_held_does_not_deadlock(client):
    # The garbage collector may run on any allocation, e.g. inside submit/map while they
    # hold the client's lock; a Future in cyclic garbage is then released right there,
    # on the same thread. That must not deadlock on the client's own lock.
    gc.disable()
    try:
        node = _Cycle()
        node.me, node.future = node, client.submit(inc, 1)
        del node
        finished = threading.Event()

        def collect_inside_client():
            with client.table.lock:
                gc.collect()
            finished.set()

        t = threading.Thread(target=collect_inside_client, daemon=True)
        t.start()
        assert finished.wait(10), "releasing a Future inside the client's lock deadlocked"
    finally:
        gc.enable()
    assert client.submit(inc, 2).result() == 3


def test_sync_cancel_has_cancelled_the_future_when_it_returns(client):
    # dask's sync cancel() returns once the Futures are cancelled; code checks at once.
    for i in range(20):
        f = client.submit(inc, i, pure=False)
        client.cancel([f])
        assert f.cancelled() and f.status == "cancelled"
        g = client.submit(inc, i, pure=False)
        g.cancel()
        assert g.cancelled()


_attempts: dict = {}


def fail_once(tag):
    _attempts[tag] = _attempts.get(tag, 0) + 1
    if _attempts[tag] == 1:
        raise ValueError("first attempt fails")
    return tag


def test_sync_retry_has_reset_the_future_when_it_returns(client):
    f = client.submit(fail_once, "retry-review")
    assert f.exception() is not None
    client.retry([f])
    assert f.status != "error"  # pending again (or already finished), not the old failure
    assert f.result() == "retry-review"


def where_client_is(address):
    from actorrt import get_client
    return get_client(address=address, timeout=5, resolve_address=False).id


def test_get_client_accepts_dask_keywords(client):
    # dask's signature is get_client(address=None, timeout=None, resolve_address=True);
    # docs/api.md promises the address is accepted (and ignored).
    from actorrt import get_client
    assert get_client(address=client.scheduler_address, timeout=1) is client
    assert client.submit(where_client_is, client.scheduler_address).result().startswith("client-")


def test_gather_of_a_released_future_raises_instead_of_hanging(client):
    import pytest
    f = client.submit(inc, 1, pure=False)
    f.release()
    with pytest.raises(CancelledError, match="released"):  # (as dask)
        client.gather([f])
    with pytest.raises(CancelledError, match="released"):
        f.result()
    assert client.submit(inc, 2).result() == 3


def test_coordination_call_through_a_closed_client_says_so():
    import pytest
    from actorrt import Event, Queue
    c = Client(n_workers=1, threads_per_worker=1, processes=False, set_as_default=False)
    q = Queue("review-closed", client=c)
    q.put(1)
    c.close()
    with pytest.raises(RuntimeError, match="client is closed"):
        q.put(2)
    with pytest.raises(RuntimeError, match="client is closed"):
        Event("review-closed", client=c).set()  # (not yet resolved: no coroutine left behind)


def test_gather_of_an_iterator_yields_values_as_dask_does(client):
    from actorrt import as_completed
    futures = client.map(inc, range(5))
    assert list(client.gather(iter(futures))) == [1, 2, 3, 4, 5]
    assert sorted(client.gather(as_completed(futures))) == [1, 2, 3, 4, 5]


# --- small results ride with the report ------------------------------------------------
def big_list(n):
    return list(range(n))


class Unpicklable:
    def __reduce__(self):
        raise TypeError("not today")


def make_unpicklable():
    return Unpicklable()


@gen_cluster(n_workers=1)
async def test_a_small_result_comes_with_the_news_it_finished(c, lc):
    fetched = []
    ask_bulk = c.host.ask_bulk

    def counting(ref, op, **fields):
        fetched.append(op)
        return ask_bulk(ref, op, **fields)
    c.host.ask_bulk = counting
    try:
        small = c.submit(inc, 1)
        assert await small == 2
        assert fetched == []  # no round trip to the worker for it
        big = c.submit(big_list, 1_000)
        assert await big == list(range(1_000))
        assert fetched == ["get_data"]  # too big to inline: fetched from its holder
    finally:
        del c.host.ask_bulk
    assert small._state.inline is not None and big._state.inline is None


@gen_cluster(n_workers=1)
async def test_a_result_that_cannot_pickle_still_fails_the_usual_way(c, lc):
    f = c.submit(make_unpicklable)
    await wait(f)
    assert f._state.inline is None
    with pytest.raises(Exception, match="not today"):
        await f


# --- fresh keys ---------------------------------------------------------------------
def test_fresh_ids_are_unique_across_threads_a_new_prefix_and_a_fork():
    import os
    import re
    import threading
    import warnings

    from actorrt.utils import FreshIds
    ids = FreshIds()
    made: list[list[str]] = [[] for _ in range(4)]

    def draw(out):
        out.extend(ids.next() for _ in range(5000))
    threads = [threading.Thread(target=draw, args=(out,)) for out in made]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for out in made for i in out]
    assert len(set(every)) == len(every) == 20_000
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in every)  # uuid4().hex's shape
    ids._SPAN = 20_003  # (past the span, a new prefix: the old numbers never come back)
    more = [ids.next() for _ in range(10)]
    assert len({i[:24] for i in more}) == 2 and not set(more) & set(every)
    read, write = os.pipe()
    with warnings.catch_warnings():  # (3.12+ warns of forking a threaded process: the child only writes)
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # a forked child draws from a prefix of its own
        os.write(write, ids.next().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    assert child[:24] != ids.next()[:24]


def test_submitted_keys_without_pure_are_fresh_and_named(client):
    a, b = client.submit(inc, 1, pure=False), client.submit(inc, 1, pure=False)
    assert a.key != b.key and a.key.startswith("inc-") and len(a.key) == len("inc-") + 32
    assert len({f.key for f in client.map(inc, range(100), pure=False)}) == 100
