"""Leases follow the holder's life: released when its worker dies or its client
disconnects, and only then. Waiters of a lost host are dropped, never served."""
import asyncio
import os
import signal

import pytest

from actorrt import Client, Condition, Event, Lock, MultiLock, Queue, Semaphore, Variable
from actorrt.testing import gen_cluster, poll_for, wait_until

KINDS = ["lock", "semaphore", "multilock", "condition"]


def make(kind, name, client=None):
    return {"lock": lambda: Lock(name, client), "semaphore": lambda: Semaphore(1, name, client),
            "multilock": lambda: MultiLock([name], client),
            "condition": lambda: Condition(name, client)}[kind]()


def hold_forever(kind, name):
    """Take the lock, say so, and block until the worker is gone."""
    lk = make(kind, name)
    lk.acquire()
    Variable(f"{name}-holder").set(os.getpid())
    Event(f"{name}-never").wait()


def try_then_wait(kind, name):
    lk = make(kind, name)
    first = lk.acquire(blocking=False)
    Event(f"{name}-tried").set()
    got = lk.acquire(timeout=30)
    if got:
        lk.release()
    return first, got


@pytest.mark.parametrize("kind", KINDS)
@gen_cluster()
async def test_lease_released_when_holding_worker_leaves(c, cluster, kind):
    doomed = cluster.workers["1"][0].address
    survivor = cluster.workers["0"][0].address
    holder = c.submit(hold_forever, kind, "w", workers=[doomed], pure=False)
    await Variable("w-holder").get(timeout=10)
    waiter = c.submit(try_then_wait, kind, "w", workers=[survivor], pure=False)
    assert await Event("w-tried").wait(timeout=10)
    await cluster.scale(1)  # worker "1" closes: its host's connections go
    assert await waiter == (False, True)
    del holder


@pytest.mark.parametrize("kind", KINDS)
@gen_cluster()
async def test_lease_released_when_holding_client_disconnects(c, cluster, kind):
    other = await Client(cluster, asynchronous=True, set_as_default=False)
    lk = make(kind, "cl", client=other)
    assert await lk.acquire()
    mine = make(kind, "cl")
    assert await mine.acquire(timeout=0.05) is False  # a living holder keeps it
    waiting = asyncio.ensure_future(mine.acquire(timeout=10))
    await other.close()
    assert await waiting is True
    await mine.release()


@gen_cluster()
async def test_slow_living_holder_keeps_its_lease(c, cluster):
    a, b = Lock("slow"), Lock("slow")
    await a.acquire()
    for _ in range(3):  # no lease expires under a living holder, however long it takes
        assert await b.acquire(timeout=0.1) is False
    await a.release()
    assert await b.acquire(timeout=1)


@gen_cluster()
async def test_getter_of_a_lost_client_does_not_swallow_items(c, cluster):
    other = await Client(cluster, asynchronous=True, set_as_default=False)
    lost = Queue("items", client=other)
    pending = asyncio.ensure_future(lost.get())
    actor = None

    def queued():
        nonlocal actor
        actor = cluster.scheduler_host.actors.get("queue/items")
        return actor is not None and len(actor.getters) == 1
    await poll_for(queued)
    await other.close()
    await asyncio.gather(pending, return_exceptions=True)
    await poll_for(lambda: not actor.getters)
    q = Queue("items")
    await q.put("precious")
    assert await q.get(timeout=5) == "precious"


@gen_cluster()
async def test_waiters_of_a_lost_client_are_dropped(c, cluster):
    other = await Client(cluster, asynchronous=True, set_as_default=False)
    ev, sem = Event("ev", client=other), Semaphore(1, "sem", client=other)
    mine = Semaphore(1, "sem")
    await mine.acquire()
    pending = [asyncio.ensure_future(ev.wait()), asyncio.ensure_future(sem.acquire())]
    host = cluster.scheduler_host
    await poll_for(lambda: "event/ev" in host.actors and host.actors["event/ev"].waiters
                   and host.actors["semaphore/sem"].line)
    await other.close()
    await asyncio.gather(*pending, return_exceptions=True)
    # The event, its waiter dropped and its only proxies' host gone, is reclaimed; the
    # semaphore, still held here, stays.
    await poll_for(lambda: "event/ev" not in host.actors and not host.actors["semaphore/sem"].line)
    await mine.release()
    assert await mine.get_value() == 0  # the lost waiter was not granted a lease


def test_lock_freed_when_its_worker_process_is_killed():
    with Client(n_workers=2, threads_per_worker=1, processes=True) as client:
        doomed, survivor = sorted(client.cluster.scheduler.worker_info)
        holder = client.submit(hold_forever, "lock", "k", workers=[doomed], pure=False)
        pid = Variable("k-holder").get(timeout=20)
        assert pid == client.cluster.scheduler.worker_info[doomed]["pid"]
        assert Lock("k").locked()
        waiter = client.submit(try_then_wait, "lock", "k", workers=[survivor], pure=False)
        assert Event("k-tried").wait(timeout=20)
        os.kill(pid, signal.SIGKILL)
        assert waiter.result(timeout=30) == (False, True)
        wait_until(lambda: doomed not in client.cluster.scheduler.worker_info, timeout=10)
        assert not Lock("k").locked()
        del holder
