"""One contract for everything lock-like: Lock, Semaphore(1), MultiLock([name]), Condition.

Plus what is particular to each (Semaphore's count, MultiLock's several names), and
stress tests where many tasks contend and the invariant -- never more holders than
allowed -- is measured, not assumed.
"""
import asyncio
import pickle
import threading
import uuid

import pytest
from interrupts import CtrlCWhen

from actorrt import Condition, Event, Lock, MultiLock, Queue, Semaphore
from actorrt.testing import gen_cluster, poll_for

KINDS = ["lock", "semaphore", "multilock", "condition"]


def make(kind, name):
    """A fresh lock-like object of ``kind`` for ``name`` (usable in tasks too)."""
    if kind == "lock":
        return Lock(name)
    if kind == "semaphore":
        return Semaphore(1, name)
    if kind == "multilock":  # names are required: make one up for "unnamed"
        return MultiLock([name if name is not None else f"ml-{uuid.uuid4().hex}"])
    return Condition(name)


# --- the contract, sync face --------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_acquire_excludes_until_release(client, kind):
    a, b = make(kind, "x"), make(kind, "x")
    assert a.acquire() is True
    assert b.acquire(blocking=False) is False
    assert b.acquire(timeout=0.05) is False
    a.release()
    assert b.acquire(blocking=False) is True
    b.release()


@pytest.mark.parametrize("kind", KINDS)
def test_context_manager(client, kind):
    a, b = make(kind, "cm"), make(kind, "cm")
    with a:
        assert b.acquire(blocking=False) is False
    with b:
        pass


@pytest.mark.parametrize("kind", KINDS)
def test_release_unheld_raises_and_cluster_keeps_working(client, kind):
    a, b = make(kind, "r"), make(kind, "r")
    with pytest.raises(RuntimeError, match="r"):
        a.release()
    assert a.acquire()
    with pytest.raises(RuntimeError):
        b.release()  # held, but not by b
    a.release()
    with pytest.raises(RuntimeError):
        a.release()  # released twice
    assert client.submit(lambda: 1).result() == 1


@pytest.mark.parametrize("kind", KINDS)
def test_timed_out_acquire_leaves_no_waiter(client, kind):
    a, b, c = make(kind, "t"), make(kind, "t"), make(kind, "t")
    a.acquire()
    assert b.acquire(timeout=0.02) is False
    a.release()
    # Had b's request stayed in line, the lock would now be b's.
    assert c.acquire(blocking=False) is True
    c.release()


@pytest.mark.parametrize("kind", KINDS)
def test_an_acquire_interrupted_as_it_is_granted_holds_nothing(client, kind):
    """Ctrl-C lands while a sync acquire's grant is on its way: the acquire raises
    KeyboardInterrupt, so its caller believes it holds nothing, and the lease is given
    back rather than held for ever. (interrupt_main trips the flag while the main
    thread is parked; it raises once the grant wakes the thread.)"""
    a, b = make(kind, "interrupted"), make(kind, "interrupted")
    a.acquire()
    b.locked() if kind != "semaphore" else b.get_value()  # (resolve b's actor now)
    actor = client.cluster.scheduler_host.actors[b._ref.id]
    # Once b's request waits behind a's lease, a lets go: the lease goes to b, whose
    # caller has just been interrupted.
    with CtrlCWhen(lambda: len(actor.calls) == 2, a.release), pytest.raises(KeyboardInterrupt):
        b.acquire()
    c = make(kind, "interrupted")
    assert c.acquire(timeout=5) is True
    c.release()


@pytest.mark.parametrize("kind", KINDS)
def test_bad_arguments(client, kind):
    with pytest.raises(TypeError, match="name must be a string"):
        make(kind, 123)
    lk = make(kind, "bad")
    with pytest.raises(ValueError, match="non-blocking"):
        lk.acquire(blocking=False, timeout=1)
    with pytest.raises(ValueError, match="timeout"):
        lk.acquire(timeout=-1)
    with pytest.raises(ValueError, match="timeout"):  # (a string is a duration: "2s")
        lk.acquire(timeout="soon")
    with pytest.raises(TypeError, match="timeout"):
        lk.acquire(timeout=[1])


def acquire_in_task(kind, name, timeout):
    lk = make(kind, name)
    got = lk.acquire(timeout=timeout)
    if got:
        lk.release()
    return got


def release_in_task(lk):
    try:
        lk.release()
    except RuntimeError as e:
        return str(e)
    return "released"


@pytest.mark.parametrize("kind", KINDS)
def test_tasks_and_client_exclude_each_other(client, kind):
    lk = make(kind, "shared")
    lk.acquire()
    assert client.submit(acquire_in_task, kind, "shared", 0.05, pure=False).result() is False
    # A pickled copy is another holder: it cannot release the client's lease.
    assert "released" in client.submit(release_in_task, lk, pure=False).result() != "released"
    f = client.submit(acquire_in_task, kind, "shared", 10, pure=False)
    lk.release()
    assert f.result() is True


@pytest.mark.parametrize("kind", KINDS)
def test_proxy_pickles_by_name(client, kind):
    lk = make(kind, None)  # unnamed: a unique name, kept across pickling
    twin = pickle.loads(pickle.dumps(lk))
    assert type(twin) is type(lk) and twin.name == lk.name
    lk.acquire()
    assert twin.acquire(blocking=False) is False
    lk.release()


# --- the contract, async face -------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@gen_cluster()
async def test_async_face_and_fifo_fairness(c, cluster, kind):
    holder = make(kind, "fifo")
    waiters = [make(kind, "fifo") for _ in range(4)]
    for w in [holder, *waiters]:
        await w  # resolve up front, so each acquire is one message in send order
    async with holder:
        order = []

        async def take(i, w):
            await w.acquire()
            order.append(i)
            await w.release()
        tasks = [asyncio.ensure_future(take(i, w)) for i, w in enumerate(waiters)]
        # Wait until all four requests stand in line behind the holder.
        line = await _line(c, kind, "fifo")
        await poll_for(lambda: line() >= 4)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3]


async def _line(client, kind, name):
    """How many acquires wait in line, read from the actor (the test's sync point)."""
    ref = await make(kind, name)._resolve()
    actor = client.cluster.scheduler_host.actors[ref.id]
    if kind in ("lock", "multilock"):
        return lambda: len(actor.lines.get(name, ()))
    return lambda: len(actor.line)


@pytest.mark.parametrize("kind", KINDS)
@gen_cluster()
async def test_cancelled_acquire_leaves_no_waiter_and_no_lease(c, cluster, kind):
    a, b, d = make(kind, "cancel"), make(kind, "cancel"), make(kind, "cancel")
    await a.acquire()
    t = asyncio.ensure_future(b.acquire())
    line = await _line(c, kind, "cancel")
    await poll_for(lambda: line() >= 1)
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t
    await a.release()
    # b's request was withdrawn: the lock is free for d (retry: the withdrawal is a tell).
    for _ in range(200):
        if await d.acquire(blocking=False):
            break
        await asyncio.sleep(0.005)
    else:
        raise AssertionError("the cancelled acquire kept the lock")
    await d.release()


@gen_cluster()
async def test_cancelled_acquire_that_was_granted_gives_the_lease_back(c, cluster):
    a, b = Lock("late"), Lock("late")
    await a
    await b
    t = asyncio.ensure_future(b.acquire())
    await asyncio.sleep(0)  # the ask is sent, the grant is on its way
    t.cancel()
    await asyncio.gather(t, return_exceptions=True)
    # Whether b's acquire was granted before the cancel or not, the lease is not stuck.
    assert await a.acquire(timeout=5) is True
    await a.release()


# --- particulars ----------------------------------------------------------------------
def test_semaphore_counts_leases(client):
    s = Semaphore(max_leases=2, name="db")
    assert s.acquire() and s.acquire()
    assert s.get_value() == 2
    assert Semaphore(2, "db").acquire(blocking=False) is False
    s.release()
    assert s.get_value() == 1
    s.release()
    with pytest.raises(RuntimeError, match="released too often"):
        s.release()


def test_semaphore_bad_max_leases(client):
    for bad in (0, -1):
        with pytest.raises(ValueError, match="max_leases"):
            Semaphore(max_leases=bad)
    with pytest.raises(TypeError):
        Semaphore(max_leases=1.5)
    Semaphore(max_leases=2, name="fixed").acquire()
    with pytest.raises(ValueError, match="max_leases=2"):
        Semaphore(max_leases=3, name="fixed").acquire()


def test_multilock_takes_all_names_or_none(client):
    ab = MultiLock(["a", "b"])
    assert ab.acquire()
    assert Lock("a").acquire(blocking=False) is False
    assert MultiLock(["b", "c"]).acquire(blocking=False) is False
    c = Lock("c")
    assert c.acquire(blocking=False) is True  # "c" was not taken by the failed attempt
    c.release()
    ab.release()
    assert MultiLock(["b", "c"]).acquire(blocking=False) is True


def test_multilock_bad_names(client):
    with pytest.raises(ValueError):
        MultiLock([])
    with pytest.raises(TypeError):
        MultiLock("ab")
    with pytest.raises(TypeError):
        MultiLock(["a", 1])


def transfer(names, n):
    """Take the locks of ``names`` (in the given order) ``n`` times."""
    lk = MultiLock(names)
    for _ in range(n):
        with lk:
            pass
    return n


def test_multilock_opposite_orders_do_not_deadlock(client):
    fs = client.map(transfer, [["p", "q"], ["q", "p"]] * 4, [10] * 8, pure=False)
    assert sum(client.gather(fs)) == 80


def test_lock_locked(client):
    lk = Lock("l")
    assert lk.locked() is False
    with lk:
        assert lk.locked() is True
        assert Lock("l").locked() is True
    assert MultiLock(["l", "m"]).locked() is False


# --- stress: many tasks contending ------------------------------------------------------
_guard = threading.Lock()
_holders: dict = {}


def contend(kind, name, rounds, max_leases=1):
    """Hold the lock ``rounds`` times, recording how many hold it at once.

    The cluster is in-process, so every task shares this module's counters: the count
    is exact, not inferred.
    """
    lk = Semaphore(max_leases, name) if max_leases > 1 else make(kind, name)
    probe = Event(f"{name}-probe")
    for _ in range(rounds):
        with lk:
            with _guard:
                now, most = _holders.get(name, (0, 0))
                _holders[name] = (now + 1, max(most, now + 1))
            probe.is_set()  # a round trip while holding: a window for an intruder
            with _guard:
                now, most = _holders[name]
                _holders[name] = (now - 1, most)
    return rounds


@pytest.mark.parametrize("kind", KINDS)
@gen_cluster(n_workers=2, threads_per_worker=4)
async def test_stress_at_most_one_holder(c, cluster, kind):
    name = f"stress-{kind}"
    fs = c.map(contend, [kind] * 16, [name] * 16, [6] * 16, pure=False)
    assert sum(await c.gather(fs)) == 96
    assert _holders[name] == (0, 1)


@gen_cluster(n_workers=2, threads_per_worker=4)
async def test_stress_semaphore_at_most_n_holders(c, cluster):
    fs = c.map(contend, ["semaphore"] * 16, ["stress-sem3"] * 16, [6] * 16, [3] * 16, pure=False)
    assert sum(await c.gather(fs)) == 96
    now, most = _holders["stress-sem3"]
    assert now == 0 and 1 <= most <= 3


def record_holding(name, me, rounds, max_leases):
    """Log enter/exit to a Queue while holding: a process cluster shares no memory.

    'enter' is queued after the grant and 'exit' before the release, so each logged
    interval lies inside a real holding interval: overlaps in the log are real.
    """
    sem, log = Semaphore(max_leases, name), Queue(f"{name}-log")
    for _ in range(rounds):
        with sem:
            log.put(("enter", me))
            log.put(("exit", me))
    return rounds


def test_stress_semaphore_over_worker_processes(pclient):
    fs = pclient.map(record_holding, ["psem"] * 6, range(6), [5] * 6, [2] * 6, pure=False)
    assert sum(pclient.gather(fs)) == 30
    events = Queue("psem-log", client=pclient).get(batch=True)
    assert len(events) == 60
    now = most = 0
    for what, _ in events:
        now += 1 if what == "enter" else -1
        most = max(most, now)
    assert now == 0 and most <= 2
