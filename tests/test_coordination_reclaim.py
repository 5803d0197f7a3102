"""Named primitives are reclaimed once no proxy holds them and they hold nothing (no
items, value, flag, lease or waiter), and only then: a cluster that names primitives
per job for hours stays flat, and no state anyone could still read is ever dropped."""
import gc

import pytest

from actorrt import Client, Condition, Event, Lock, Pub, Queue, Semaphore, Sub, Variable
from actorrt.coordination import registry as registry_module
from actorrt.core import ActorRef
from actorrt.protocol import REGISTRY_ID
from actorrt.testing import wait_until


def names(client):
    """The registry's live (kind, name) pairs, asked after everything this client's
    loop has queued so far (a dropped proxy's release goes out before this ask, on
    the same connection, so the answer already reflects it)."""
    registry = ActorRef(client.scheduler.address, REGISTRY_ID)

    async def ask():
        return {tuple(pair) for pair in await client.host.ask(registry, "names")}
    return client.sync(ask)


def collected():
    """Collect now (a proxy in a reference cycle would otherwise wait for the GC)."""
    gc.collect()


def use_idly(kind, name):
    """A proxy of ``kind`` that has talked to its actor and left it idle."""
    if kind == "queue":
        q = Queue(name)
        q.put(1)
        assert q.get(timeout=5) == 1
        return q
    if kind == "event":
        e = Event(name)
        e.set()
        e.clear()
        return e
    if kind == "variable":
        v = Variable(name)
        v.set(1)
        v.delete()
        return v
    if kind == "semaphore":
        s = Semaphore(2, name)
        assert s.acquire(timeout=5)
        s.release()
        return s
    if kind == "condition":
        c = Condition(name)
        with c:
            c.notify_all()
        return c
    assert kind == "pubsub"
    sub = Sub(name)
    Pub(name).put("m")
    assert sub.get(timeout=5) == "m"
    sub.close()
    return sub


KINDS = ["queue", "event", "variable", "semaphore", "condition", "pubsub"]


@pytest.mark.parametrize("kind", KINDS)
def test_an_idle_primitive_nobody_holds_is_stopped_and_its_name_starts_afresh(client, kind):
    proxy = use_idly(kind, "r")
    assert (kind, "r") in names(client)  # held by a live proxy
    del proxy
    collected()
    assert (kind, "r") not in names(client)
    assert f"{kind}/r" not in client.cluster.scheduler_host.actors
    use_idly(kind, "r")  # the name works again, from a fresh actor
    collected()
    assert (kind, "r") not in names(client)


def test_state_outlives_its_proxies_until_it_is_taken(client):
    q, e, v = Queue("keep-q"), Event("keep-e"), Variable("keep-v")
    q.put("item")
    e.set()
    v.set("value")
    s = Semaphore(1, "keep-s")
    assert s.acquire(timeout=5)
    del q, e, v
    collected()
    kept = {("queue", "keep-q"), ("event", "keep-e"), ("variable", "keep-v"), ("semaphore", "keep-s")}
    assert kept <= names(client)
    assert Queue("keep-q").get(timeout=5) == "item"
    assert Event("keep-e").is_set() and Variable("keep-v").get(timeout=5) == "value"
    Event("keep-e").clear()
    Variable("keep-v").delete()
    s.release()
    del s
    collected()
    gc.collect()
    assert not kept & names(client)


def test_a_put_sent_just_before_the_last_proxy_goes_is_not_lost(client):
    for i in range(20):
        q = Queue(f"last-{i}")
        q.put(i)  # sent without waiting for the queue's answer
        del q
        collected()
        assert Queue(f"last-{i}").get(timeout=5) == i


def test_a_live_proxy_keeps_its_actor_and_its_options(client):
    held = Queue("opts", maxsize=1)
    held.put(1)
    assert held.get(timeout=5) == 1
    other = Queue("opts", maxsize=1)
    assert other.qsize() == 0
    del other
    collected()
    assert ("queue", "opts") in names(client)
    held.put(1)
    with pytest.raises(Exception, match="[Ff]ull|[Tt]ime"):
        held.put(2, timeout=0.05)  # still the queue of maxsize 1
    assert held.get(timeout=5) == 1


def test_locks_share_one_table_that_keeps_no_names(client):
    lock = Lock("l")
    with lock:
        pass
    del lock
    collected()
    table = client.cluster.scheduler_host.actors["lock"]
    assert not table.owner and not table.lines and not table.held and ("lock", "") in names(client)


def test_an_actor_its_last_proxy_left_busy_is_reclaimed_once_idle(client, monkeypatch):
    monkeypatch.setattr(registry_module, "RECHECK_SECONDS", 0.02)
    e = Event("busy")
    ref = client.sync(e._resolve)

    async def wait_briefly():  # a waiter that no proxy stands for
        return client.host.ask(ref, "wait", call="raw-wait", timeout=0.3)
    waited = client.sync(wait_briefly)
    actors = client.cluster.scheduler_host.actors
    wait_until(lambda: actors["event/busy"].waiters)
    del e
    collected()
    assert ("event", "busy") in names(client)  # nobody holds it, but it has a waiter
    async def outcome():
        return await waited
    assert client.sync(outcome) is False  # its wait timed out (on the loop, not polled from here)
    wait_until(lambda: ("event", "busy") not in names(client))


def test_a_lost_hosts_holds_go_with_it(client):
    other = Client(client.cluster, set_as_default=False)
    theirs = Queue("lost", client=other)
    assert theirs.qsize() == 0
    ours = Queue("lost")
    assert ours.qsize() == 0
    del ours
    collected()
    assert ("queue", "lost") in names(client)  # the other client still holds it
    other.close()  # its host's connection goes: the registry drops its holds
    wait_until(lambda: ("queue", "lost") not in names(client))
    del theirs


def test_many_rounds_of_named_primitives_leave_nothing_behind(client):
    baseline = names(client)
    for i in range(100):
        for kind in ("queue", "event", "variable", "semaphore"):
            use_idly(kind, f"round-{i}")
        collected()
    assert names(client) == baseline
    registry = client.cluster.scheduler_host.actors[REGISTRY_ID]
    assert not registry.holds.keys() - baseline and not registry._unheld


def test_a_release_that_matches_no_hold_changes_nothing(client):
    q = Queue("unmatched")
    assert q.qsize() == 0
    registry = ActorRef(client.scheduler.address, REGISTRY_ID)

    async def stray():
        for kind, name, holder in (("queue", "unmatched", "not-a-token"), ("queue", "never-made", q._token),
                                   ("lock", "", q._token), ("queue", "unmatched", "")):
            client.host.tell(registry, "release", kind=kind, name=name, holder=holder)
    client.sync(stray)
    assert ("queue", "unmatched") in names(client)
    q.put(1)
    assert q.get(timeout=5) == 1
