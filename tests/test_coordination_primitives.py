"""Event, Variable and Condition; names, the registry, and the public names."""
import asyncio
import gc
import pickle

import pytest

import actorrt
from actorrt import (Condition, Event, Future, Lock, MultiLock, Pub, Queue, Semaphore,
                     SerializationError, Sub, Variable, get_client)
from actorrt.testing import gen_cluster, poll_for

ALL = [Queue, Lock, Semaphore, Event, Variable, Pub, Sub, Condition]


def inc(x):
    return x + 1


# --- Event ---------------------------------------------------------------------------
def test_event_set_clear_wait(client):
    e = Event("e")
    assert e.is_set() is False
    assert e.wait(timeout=0.02) is False
    assert e.wait(timeout=0) is False
    e.set()
    assert e.is_set() and e.wait() is True and e.wait(timeout=0) is True
    e.clear()
    assert e.is_set() is False


def wait_for_event(name, timeout):
    return Event(name).wait(timeout=timeout)


def test_event_wakes_waiting_tasks(client):
    fs = client.map(wait_for_event, ["go"] * 3, [30] * 3, pure=False)
    host = client.cluster.scheduler_host
    from actorrt.testing import wait_until
    wait_until(lambda: "event/go" in host.actors and len(host.actors["event/go"].waiters) == 3)
    Event("go").set()
    assert client.gather(fs) == [True] * 3


@gen_cluster()
async def test_event_async_face_and_cancelled_wait(c, cluster):
    e = await Event("ae")
    t = asyncio.ensure_future(e.wait())
    actor = cluster.scheduler_host.actors["event/ae"]
    await poll_for(lambda: actor.waiters)
    t.cancel()
    await asyncio.gather(t, return_exceptions=True)
    await poll_for(lambda: not actor.waiters)  # withdrawn, not left behind
    await e.set()
    assert await e.is_set() and await e.wait(timeout=1)


# --- Variable -------------------------------------------------------------------------
def test_variable_set_get_delete(client):
    v = Variable("v")
    with pytest.raises(TimeoutError, match="no value"):
        v.get(timeout=0.02)
    v.set({"a": 1})
    assert v.get() == {"a": 1}
    v.set([1, 2])
    assert v.get(timeout=0) == [1, 2]
    v.delete()
    with pytest.raises(TimeoutError):
        v.get(timeout=0.02)


def test_variable_get_waits_for_a_first_value(client):
    f = client.submit(lambda: Variable("later").get(timeout=30), pure=False)
    host = client.cluster.scheduler_host
    from actorrt.testing import wait_until
    wait_until(lambda: "variable/later" in host.actors and host.actors["variable/later"].waiters)
    Variable("later").set("now")
    assert f.result() == "now"


def test_unpicklable_value_leaves_the_variable_unchanged(client):
    v = Variable("keep")
    v.set(1)
    with pytest.raises(SerializationError, match="lambda|local"):
        v.set(_Unpicklable())
    assert v.get() == 1


class _Unpicklable:
    def __reduce__(self):
        raise TypeError("not this one (a local lambda inside)")


def test_future_in_a_variable_stays_alive_and_is_let_go(client):
    state = client.cluster.scheduler.state
    v = Variable("fut")
    f = client.submit(inc, 1)
    key = f.key
    v.set(f)
    del f
    gc.collect()
    assert client.submit(inc, 0).result() == 1  # a round trip: any release has arrived
    assert state.tasks[key].state == "memory"
    assert client.submit(lambda: Variable("fut").get().result(), pure=False).result() == 2
    g = v.get()
    assert isinstance(g, Future) and g.result() == 2
    del g
    v.set("something else")  # the variable lets go of the key...
    from actorrt.testing import wait_until
    wait_until(lambda: key not in state.tasks or "variable/fut" not in state.tasks[key].who_wants)


def test_variable_across_worker_processes(pclient):
    v = Variable("pv", client=pclient)
    v.set(pclient.submit(inc, 10))
    assert pclient.submit(lambda: Variable("pv").get().result() + 1, pure=False).result() == 12
    assert v.get().result() == 11


# --- Condition -------------------------------------------------------------------------
def test_condition_needs_its_lock(client):
    cond = Condition("needs")
    with pytest.raises(RuntimeError, match="without holding"):
        cond.wait(timeout=0.01)
    with pytest.raises(RuntimeError, match="without holding"):
        cond.notify()
    with pytest.raises(RuntimeError, match="without holding"):
        cond.notify_all()
    with pytest.raises(ValueError):
        with cond:
            cond.notify(-1)


def test_condition_wait_times_out_holding_the_lock(client):
    cond, other = Condition("to"), Condition("to")
    with cond:
        assert cond.wait(timeout=0.02) is False
        assert cond.locked() and other.acquire(blocking=False) is False
    assert other.acquire(blocking=False) is True
    other.release()


def consume_when_ready(name, state_name):
    cond, stock = Condition(name), Variable(state_name)
    with cond:
        ok = cond.wait_for(lambda: stock.get() > 0, timeout=30)
        n = stock.get()
        stock.set(n - 1)
    return ok


def test_condition_producer_consumers(client):
    stock = Variable("stock")
    stock.set(0)
    cond = Condition("shop")
    fs = client.map(consume_when_ready, ["shop"] * 3, ["stock"] * 3, pure=False)
    host = client.cluster.scheduler_host
    from actorrt.testing import wait_until
    wait_until(lambda: "condition/shop" in host.actors and len(host.actors["condition/shop"].waiting) == 3)
    with cond:
        stock.set(1)
        assert cond.notify() == 1
    # One consumer runs; its stock goes back to 0 and the others wait on.
    with cond:
        stock.set(stock.get() + 2)
        assert cond.notify_all() >= 1
    assert client.gather(fs) == [True] * 3
    assert stock.get() == 0


@gen_cluster()
async def test_condition_async_face(c, cluster):
    cond = await Condition("ac")
    woke = []

    async def waiter():
        async with cond:
            woke.append(await cond.wait(timeout=10))
    t = asyncio.ensure_future(waiter())
    actor = cluster.scheduler_host.actors["condition/ac"]
    await poll_for(lambda: actor.waiting)
    other = Condition("ac")
    async with other:
        assert await other.notify() == 1
    await t
    assert woke == [True] and not await cond.locked()


# --- names and the registry --------------------------------------------------------------
@pytest.mark.parametrize("cls", ALL)
def test_non_string_names_raise_type_error(client, cls):
    with pytest.raises(TypeError, match="name must be a string"):
        cls(name=b"bytes") if cls is not Semaphore else cls(1, name=b"bytes")


def test_kinds_are_separate_namespaces(client):
    Queue("same").put(1)
    Variable("same").set(2)
    Event("same").set()
    assert Queue("same").get() == 1 and Variable("same").get() == 2
    # Lock and MultiLock share theirs, so they exclude each other.
    with Lock("same"):
        assert MultiLock(["same", "other"]).acquire(blocking=False) is False


def test_same_name_from_task_and_client_is_one_actor(client):
    def task():
        Queue("meet").put("from task")
        return Queue("meet").get(timeout=10)
    f = client.submit(task, pure=False)
    meet = Queue("meet")  # (held: an idle queue nobody holds would be reclaimed)
    meet.put("from client")
    got = {f.result(), meet.get(timeout=10)}
    assert got == {"from task", "from client"}
    assert sorted(n for k, n in client.sync(_names, client) if k == "queue") == ["meet"]


async def _names(client):
    ref = actorrt.core.ActorRef(client.scheduler.address, "registry")
    return await client.host.ask(ref, "names")


@pytest.mark.parametrize("cls", [Queue, Lock, Event, Variable, Pub, Condition])
def test_unnamed_proxies_are_unique_and_pickle_by_name(client, cls):
    a, b = cls(), cls()
    assert a.name != b.name
    assert pickle.loads(pickle.dumps(a)).name == a.name


def test_public_names_exported():
    for name in ["Queue", "Lock", "MultiLock", "Semaphore", "Event", "Variable", "Pub", "Sub",
                 "Condition"]:
        assert name in actorrt.__all__
        assert getattr(actorrt, name).__module__ == "actorrt"


def test_get_client_in_task_binds_proxies(client):
    def task():
        q = Queue("bound")
        q.put(1)
        return q.client is get_client()
    assert client.submit(task, pure=False).result() is True
