"""Every public method answers in its object's face: a value on a sync object, an
awaitable on an async one. Nothing returns a coroutine that a sync caller would drop."""
from __future__ import annotations

import traceback
import asyncio
import inspect

import pytest

from actorrt import (Client, Condition, Event, LocalCluster, Lock, Pub, Queue, Semaphore, Sub,
                     Variable, as_completed, wait)
from actorrt.testing import gen_cluster


def inc(x):
    return x + 1


def boom():
    raise ValueError("boom")


class Counter:
    def __init__(self):
        self.n = 0

    def increment(self):
        self.n += 1
        return self.n


def _sync_value(result):
    assert not inspect.isawaitable(result) or hasattr(result, "key"), \
        f"a sync object answered with an awaitable: {result!r}"
    return result


async def _async_value(result):
    assert inspect.isawaitable(result), f"an async object answered with a value: {result!r}"
    return await result


def test_a_sync_clients_cluster_scales_for_real():
    """Client() builds its own cluster: on a sync client that cluster's face is sync
    too, so ``client.cluster.scale(2)`` adds a worker rather than returning a
    coroutine nobody runs."""
    with Client(n_workers=1, processes=False, dashboard_address=None) as client:
        assert not client.cluster.asynchronous
        assert client.cluster.scale(2) is None
        client.wait_for_workers(2, timeout=20)
        assert len(client.scheduler_info()["workers"]) == 2
        address = client.cluster.start_worker()
        assert isinstance(address, str) and address in client.scheduler_info()["workers"]
        assert client.submit(inc, 1).result() == 2
    assert client.cluster.status == "closed"


def test_sync_faces_answer_with_values():
    with Client(n_workers=1, processes=False, dashboard_address=None) as client:
        f = client.submit(inc, 1)
        bad = client.submit(boom)
        assert _sync_value(f.result()) == 2
        assert isinstance(_sync_value(bad.exception()), ValueError)
        assert "boom" in [fr.name for fr in traceback.extract_tb(_sync_value(bad.traceback()))]
        assert _sync_value(client.gather([f])) == [2]
        [s] = _sync_value(client.scatter([5]))
        assert _sync_value(client.who_has([f]))[f.key]
        assert _sync_value(client.nthreads())
        assert _sync_value(client.has_what())
        assert _sync_value(client.processing()) is not None
        assert _sync_value(client.scheduler_info())["workers"]
        assert _sync_value(client.run(inc, 1))
        assert _sync_value(client.run_on_scheduler(inc, 1)) == 2
        assert _sync_value(client.story(f.key))
        assert _sync_value(client.wait_for_workers(1)) is not None
        _sync_value(client.publish_dataset(s=s))
        assert _sync_value(client.list_datasets()) == ("s",)
        assert _sync_value(client.get_dataset("s")).key == s.key
        _sync_value(client.unpublish_dataset("s"))
        assert _sync_value(client.cancel([s])) is None and s.cancelled()
        assert _sync_value(client.retry([bad])) is None
        assert _sync_value(wait([f])).done
        assert [x.key for x in as_completed([f])] == [f.key]

        counter = client.submit(Counter, actor=True).result()
        assert _sync_value(counter.increment().result()) == 1
        assert _sync_value(counter.n) == 1

        q = Queue("faces-q")
        assert _sync_value(q.put(1)) is None
        assert _sync_value(q.qsize()) == 1
        assert _sync_value(q.get()) == 1
        lock = Lock("faces-lock")
        assert _sync_value(lock.acquire()) is True
        assert _sync_value(lock.locked()) is True
        assert _sync_value(lock.release()) is None
        sem = Semaphore(2, name="faces-sem")
        assert _sync_value(sem.acquire()) is True
        assert _sync_value(sem.release()) in (None, True)
        ev = Event("faces-ev")
        assert _sync_value(ev.set()) is None
        assert _sync_value(ev.is_set()) is True
        assert _sync_value(ev.wait(1)) is True
        assert _sync_value(ev.clear()) is None
        var = Variable("faces-var")
        assert _sync_value(var.set(3)) is None
        assert _sync_value(var.get()) == 3
        assert _sync_value(var.delete()) is None
        sub = Sub("faces-topic")
        pub = Pub("faces-topic")
        _sync_value(pub.put("hello"))
        assert _sync_value(sub.get(timeout=10)) == "hello"
        cond = Condition("faces-cond")
        with cond:
            assert _sync_value(cond.notify_all()) == 0  # (no one waited)
        assert _sync_value(client.close()) is None


@gen_cluster(n_workers=1)
async def test_async_faces_answer_with_awaitables(client, cluster):
    f = client.submit(inc, 1)
    bad = client.submit(boom)
    assert await _async_value(f.result()) == 2
    assert isinstance(await _async_value(bad.exception()), ValueError)
    assert "boom" in [fr.name for fr in traceback.extract_tb(await _async_value(bad.traceback()))]
    assert await _async_value(client.gather([f])) == [2]
    [s] = await _async_value(client.scatter([5]))
    assert (await _async_value(client.who_has([f])))[f.key]
    assert await _async_value(client.nthreads())
    assert await _async_value(client.has_what())
    assert await _async_value(client.processing()) is not None
    assert (await _async_value(client.scheduler_info()))["workers"]
    assert await _async_value(client.run(inc, 1))
    assert await _async_value(client.run_on_scheduler(inc, 1)) == 2
    assert await _async_value(client.story(f.key))
    assert await _async_value(client.wait_for_workers(1)) is not None
    await _async_value(client.publish_dataset(s=s))
    assert await _async_value(client.list_datasets()) == ("s",)
    assert (await _async_value(client.get_dataset("s"))).key == s.key
    await _async_value(client.unpublish_dataset("s"))
    assert await _async_value(client.cancel([s])) is None and s.cancelled()
    assert await _async_value(client.retry([bad])) is None
    assert (await _async_value(wait([f]))).done
    assert [x.key async for x in as_completed([f])] == [f.key]

    counter = await client.submit(Counter, actor=True)
    assert await _async_value(counter.increment().result()) == 1
    assert await _async_value(counter.n) == 1

    q = Queue("faces-q", client=client)
    assert await _async_value(q.put(1)) is None
    assert await _async_value(q.qsize()) == 1
    assert await _async_value(q.get()) == 1
    lock = Lock("faces-lock", client=client)
    assert await _async_value(lock.acquire()) is True
    assert await _async_value(lock.locked()) is True
    assert await _async_value(lock.release()) is None
    ev = Event("faces-ev", client=client)
    assert await _async_value(ev.set()) is None
    assert await _async_value(ev.is_set()) is True
    assert await _async_value(ev.wait(1)) is True
    var = Variable("faces-var", client=client)
    assert await _async_value(var.set(3)) is None
    assert await _async_value(var.get()) == 3

    assert await _async_value(cluster.scale(2)) is None
    assert await _async_value(client.wait_for_workers(2)) is not None


def test_an_async_object_in_a_sync_with_is_refused():
    """``with`` on an async client would drop its close coroutine: refused, with a hint."""
    async def main():
        async with LocalCluster(1, processes=False, asynchronous=True, dashboard_address=None) as lc:
            client = Client(lc, asynchronous=True)
            await client
            with pytest.raises(TypeError, match="async with"):
                with client:
                    pass
            await client.close()
    asyncio.run(main())
