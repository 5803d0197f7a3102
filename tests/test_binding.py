"""Which client a Future or actor handle belongs to once it has travelled: returned by
an actor method, given to an actor, fetched as part of a result, taken from a Queue,
hidden in a task's arguments. Each binds to the client of the process (and task) it
lands in, and the key lives as long as any copy says it wants it."""
import threading

import pytest

from actorrt import Client
from actorrt.testing import wait_until


def inc(x):
    return x + 1


def congest(nbytes):
    """A large message from this worker to the scheduler, sent and not waited for:
    what this worker sends the scheduler next waits behind it."""
    from actorrt import Pub
    Pub("congestion").put(b"x" * nbytes)


# --- Futures returned by actor methods -------------------------------------------------
_gate = threading.Event()


def wait_gate(x):
    _gate.wait(10)
    return x + 1


class FutureMaker:
    """An actor whose methods return Futures it does not keep."""

    def __init__(self):
        from actorrt import get_client
        self.client = get_client()  # (async methods run on the loop: no get_client there)

    def pending(self, x):
        from actorrt import get_client
        return get_client().submit(wait_gate, x, pure=False)

    def finished_in_list(self, x):
        from actorrt import get_client
        f = get_client().submit(inc, x, pure=False)
        f.result()
        return [f]

    async def from_async(self, x):
        return self.client.submit(inc, x, pure=False)

    def congest(self, nbytes):
        congest(nbytes)


def test_future_returned_by_an_actor_method_resolves(client):
    # The actor's own Future is dropped once the reply is pickled: the key must pass to
    # the caller (as a Queue passes its items' keys), not be forgotten before it arrives.
    maker = client.submit(FutureMaker, actor=True).result()
    f = maker.pending(1).result()
    [g] = maker.finished_in_list(10).result()
    h = maker.from_async(20).result()
    _gate.set()
    assert (f.result(timeout=10), g.result(timeout=10), h.result(timeout=10)) == (2, 11, 21)


def test_future_returned_by_an_actor_method_resolves_across_processes(pclient):
    maker = pclient.submit(FutureMaker, actor=True).result()
    [g] = maker.finished_in_list(10).result()
    h = maker.from_async(20).result()
    assert (g.result(timeout=10), h.result(timeout=10)) == (11, 21)


@pytest.mark.parametrize("method", ["finished_in_list", "from_async"])
def test_a_returned_future_is_forgotten_once_the_caller_lets_go_when_the_claim_is_slow(pclient, method):
    """Once the caller lets go of a Future an actor method returned, the key is
    forgotten: nothing on the actor's side keeps it (the lane thread that ran a sync
    call used to hold its result until the next call), and the claim the actor's
    worker makes for the caller, slowed here by 64 MB ahead of it on its connection, is
    in before the answer, so it cannot arrive after the caller's release and hold the
    key for a client that let go of it."""
    maker = pclient.submit(FutureMaker, actor=True).result()
    maker.congest(64 * 2**20).result()
    got = getattr(maker, method)(30).result()
    key = (got[0] if isinstance(got, list) else got).key
    del got  # let go at once: the release leaves while the claim may still be queued
    tasks = pclient.cluster.scheduler.state.tasks
    wait_until(lambda: key not in tasks, timeout=10)


class Keeper:
    """An actor that keeps the Futures it is given."""

    def __init__(self):
        self.futures = []

    def keep(self, fs):
        self.futures.extend(fs)
        return len(self.futures)

    async def keep_on_the_loop(self, fs):
        self.futures.extend(fs)
        return len(self.futures)

    def results(self):
        return [f.result(timeout=10) for f in self.futures]

    def congest(self, nbytes):
        congest(nbytes)

    def open_missing(self):
        open("/nonexistent/review/file")

    def time_out(self):
        raise TimeoutError("the method's own timeout")


def _keeper_roundtrip(c):
    k = c.submit(Keeper, actor=True).result()
    for i in range(3):
        # The caller's Futures are temporaries, dropped as soon as the call is sent.
        k.keep([c.submit(inc, i, pure=False)]).result()
    return k.results().result(timeout=30)


def test_futures_given_to_an_actor_outlive_the_callers_copy(client):
    assert _keeper_roundtrip(client) == [1, 2, 3]


def test_futures_given_to_an_actor_outlive_the_callers_copy_across_processes(pclient):
    assert _keeper_roundtrip(pclient) == [1, 2, 3]


@pytest.mark.parametrize("method", ["keep", "keep_on_the_loop"])
def test_a_future_given_to_an_actor_outlives_the_callers_copy_when_the_claim_is_slow(pclient, method):
    """The actor's worker claims the key on its own connection to the scheduler, and
    the caller lets go on another as soon as the answer comes. With the actor's
    connection busy (64 MB ahead of the claim), the answer must still wait for the
    claim to be in, or the caller's release forgets the key first."""
    k = pclient.submit(Keeper, actor=True).result()
    k.congest(64 * 2**20).result()
    assert getattr(k, method)([pclient.submit(inc, 41, pure=False)]).result() == 1
    assert k.results().result(timeout=30) == [42]


def test_an_oserror_raised_by_an_actor_method_is_the_methods_own(pclient):
    import pytest
    k = pclient.submit(Keeper, actor=True).result()
    with pytest.raises(FileNotFoundError):
        k.open_missing().result()
    with pytest.raises(TimeoutError, match="the method's own timeout"):
        k.time_out().result()
    assert k.keep([]).result() == 0  # the actor is fine, and the handle still works


def make_futures(n):
    from actorrt import get_client
    c = get_client()
    return [c.submit(inc, i, pure=False) for i in range(n)]


def test_futures_in_a_fetched_result_bind_to_the_fetching_client():
    # Two clients, two clusters: the Futures inside a's result belong to a (and its
    # cluster), not to the default client b.
    with Client(n_workers=1, threads_per_worker=1, processes=False, set_as_default=False) as a, \
            Client(n_workers=1, threads_per_worker=1, processes=False) as b:
        fs = a.submit(make_futures, 3).result()
        assert all(f.client is a for f in fs)
        assert a.gather(fs) == [1, 2, 3]
        assert b.table.held() == 0


def test_futures_in_a_fetched_result_with_no_default_client():
    import asyncio

    async def main():
        async with Client(n_workers=1, threads_per_worker=1, processes=False, asynchronous=True,
                          set_as_default=False) as c:
            fs = await c.submit(make_futures, 2)
            return await c.gather(fs)
    assert asyncio.run(main()) == [1, 2]


def test_futures_in_an_actor_reply_bind_to_the_calling_client():
    import asyncio

    from actorrt import as_completed

    with Client(n_workers=1, threads_per_worker=1, processes=False, set_as_default=False) as a, \
            Client(n_workers=1, threads_per_worker=1, processes=False):
        maker = a.submit(FutureMaker, actor=True).result()
        [g] = maker.finished_in_list(1).result()
        assert g.client is a and g.result(timeout=10) == 2
        [(_, [h])] = list(as_completed([maker.finished_in_list(2)], with_results=True))
        assert h.client is a and h.result(timeout=10) == 3

    async def main():
        async with Client(n_workers=1, threads_per_worker=1, processes=False, asynchronous=True,
                          set_as_default=False) as c:
            maker = await c.submit(FutureMaker, actor=True)
            [[f]] = await c.gather([maker.finished_in_list(3)])
            return f.client is c, await f
    assert asyncio.run(main()) == (True, 4)


def test_actor_handle_from_a_queue_binds_to_an_async_receiver():
    import asyncio

    from actorrt import Queue

    async def main():
        async with Client(n_workers=1, threads_per_worker=1, processes=False, asynchronous=True,
                          set_as_default=False) as c:
            keeper = await c.submit(Keeper, actor=True)
            q = Queue("review-handles", client=c)
            await q.put(keeper)
            got = await q.get(timeout=10)
            return await got.keep([])
    assert asyncio.run(main()) == 0


class Box:
    """Hides a Future from submit's dependency search (it looks in lists, tuples, dicts)."""

    def __init__(self, future):
        self.future = future


def unbox(box):
    return box.future.result(timeout=10)


def _boxed_roundtrip(c):
    # The inner Future is a temporary: the caller drops it as soon as submit returns.
    return [c.submit(unbox, Box(c.submit(inc, i, pure=False)), pure=False).result(timeout=30)
            for i in range(3)]


def test_future_hidden_in_a_task_argument_outlives_the_callers_copy(client):
    assert _boxed_roundtrip(client) == [1, 2, 3]


def test_future_hidden_in_a_task_argument_outlives_the_callers_copy_across_processes(pclient):
    assert _boxed_roundtrip(pclient) == [1, 2, 3]
    assert wait_until_released(pclient)


def wait_until_released(c):
    import gc

    from actorrt.testing import wait_until
    gc.collect()
    wait_until(lambda: c.table.held() == 0, timeout=10)  # nothing pinned for ever
    return True
