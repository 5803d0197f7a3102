"""One contract for everything queue-like (Queue, and Pub -> Sub), then Queue's own
features: bounds, batches, Futures kept alive while queued, exactly-once delivery
under many producers and consumers, and cancelled gets that lose nothing."""
import asyncio
import gc
import pickle
import threading

import numpy as np
import pytest
from interrupts import CtrlCWhen

from actorrt import Event, Future, Pub, Queue, SerializationError, Sub, get_client
from actorrt.testing import gen_cluster, poll_for, wait_until

KINDS = ["queue", "pubsub"]


class Channel:
    """put on one end, get on the other: a Queue, or a Pub and a Sub of one topic."""

    def __init__(self, kind, name, client=None):
        self.kind = kind
        if kind == "queue":
            q = Queue(name, client=client)
            self.put, self.get = q.put, q.get
        else:
            self.sub = Sub(name, client=client)  # subscribe first: it gets what follows
            pub = Pub(name, client=client)
            self.put, self.get = pub.put, self.sub.get


def produce(kind, name, items):
    out = Queue(name) if kind == "queue" else Pub(name)
    for x in items:
        out.put(x)
    return len(items)


class Unpicklable:
    def __reduce__(self):
        raise TypeError("no pickling me")


# --- the contract --------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_fifo_order(client, kind):
    ch = Channel(kind, "fifo")
    for i in range(100):
        ch.put(i)
    assert [ch.get(timeout=5) for _ in range(100)] == list(range(100))


@pytest.mark.parametrize("kind", KINDS)
def test_get_timeout_raises_and_leaves_no_waiter(client, kind):
    ch = Channel(kind, "empty")
    with pytest.raises(TimeoutError, match="empty"):
        ch.get(timeout=0.05)
    with pytest.raises(TimeoutError):
        ch.get(timeout=0)
    ch.put("next")
    assert ch.get(timeout=5) == "next"  # not swallowed by the timed-out get


@pytest.mark.parametrize("kind", KINDS)
def test_unpicklable_value_raises_at_put_and_changes_nothing(client, kind):
    ch = Channel(kind, "bad")
    ch.put(1)
    with pytest.raises(SerializationError, match="Unpicklable"):
        ch.put(Unpicklable())
    ch.put(2)
    assert [ch.get(timeout=5), ch.get(timeout=5)] == [1, 2]
    with pytest.raises(TimeoutError):
        ch.get(timeout=0.02)


@pytest.mark.parametrize("kind", KINDS)
def test_values_of_many_shapes(client, kind):
    ch = Channel(kind, "shapes")
    values = [None, "text", {"a": [1, (2, 3)]}, np.arange(10), b"x" * (1 << 20), np.zeros(300_000)]
    for v in values:
        ch.put(v)
    for v in values:
        got = ch.get(timeout=5)
        if isinstance(v, np.ndarray):
            assert np.array_equal(got, v)
        else:
            assert got == v


@pytest.mark.parametrize("kind", KINDS)
def test_task_produces_client_consumes(client, kind):
    ch = Channel(kind, "t2c")
    assert client.submit(produce, kind, "t2c", list(range(50)), pure=False).result() == 50
    assert [ch.get(timeout=5) for _ in range(50)] == list(range(50))


@pytest.mark.parametrize("kind", KINDS)
def test_across_worker_processes(pclient, kind):
    ch = Channel(kind, f"proc-{kind}", client=pclient)
    items = [np.full(3, i) for i in range(20)]
    assert pclient.submit(produce, kind, f"proc-{kind}", items, pure=False).result() == 20
    got = [ch.get(timeout=10) for _ in range(20)]
    assert all(np.array_equal(a, b) for a, b in zip(got, items))


@pytest.mark.parametrize("kind", KINDS)
@gen_cluster()
async def test_async_face(c, cluster, kind):
    if kind == "queue":
        q = Queue("aq")
        await q.put(1)
        await q.put(2)
        assert [await q.get(), await q.get(timeout=1)] == [1, 2]
        with pytest.raises(TimeoutError):
            await q.get(timeout=0.02)
    else:
        sub = await Sub("atopic")
        pub = Pub("atopic")
        for i in range(3):
            await pub.put(i)
        got = []
        async for msg in sub:
            got.append(msg)
            if len(got) == 3:
                break
        assert got == [0, 1, 2]
        with pytest.raises(TimeoutError):
            await sub.get(timeout=0.02)


def test_bad_names_and_timeouts(client):
    for cls in (Queue, Pub, Sub):
        with pytest.raises(TypeError, match="name must be a string"):
            cls(name=3)
    with pytest.raises(ValueError, match="timeout"):
        Queue("q").get(timeout=-1)


# --- Queue in particular ----------------------------------------------------------------
def test_bounded_queue_put_waits_and_times_out(client):
    q = Queue("bounded", maxsize=2)
    q.put(1)
    q.put(2)
    with pytest.raises(TimeoutError, match="full"):
        q.put(3, timeout=0.05)
    assert q.qsize() == 2  # the timed-out put left nothing behind
    f = client.submit(produce, "queue", "bounded", [3, 4], pure=False)  # blocks in the task
    assert [q.get(timeout=5) for _ in range(4)] == [1, 2, 3, 4]
    assert f.result() == 2


def test_queue_bad_maxsize_and_conflicts(client):
    with pytest.raises(ValueError, match="maxsize"):
        Queue(maxsize=-1)
    with pytest.raises(TypeError):
        Queue(maxsize=1.5)
    Queue("sized", maxsize=2).put(1)
    with pytest.raises(ValueError, match="maxsize=2"):
        Queue("sized", maxsize=3).qsize()
    assert Queue("sized").qsize() == 1  # maxsize=0 attaches to a queue of any size
    with pytest.raises(ValueError, match="batch"):
        Queue("sized", maxsize=2).get(batch=3)
    with pytest.raises(ValueError, match="batch"):
        Queue("sized").get(batch=0)


def test_batches_and_qsize(client):
    q = Queue("batch")
    assert q.get(batch=True) == []
    for i in range(5):
        q.put(i)
    assert q.qsize() == 5
    assert q.get(batch=2) == [0, 1]
    assert q.get(batch=True) == [2, 3, 4]
    assert q.qsize() == 0
    f = client.submit(consume_batch, "batch", 3, pure=False)
    for i in range(3):
        q.put(i)
    assert f.result() == [0, 1, 2]


def consume_batch(name, n):
    return Queue(name).get(batch=n, timeout=10)


def inc(x):
    return x + 1


def submit_and_put(name):
    f = get_client().submit(inc, 41, pure=False)
    Queue(name).put(f)
    return f.key


def get_future_and_result(name):
    f = Queue(name).get(timeout=10)
    assert isinstance(f, Future)
    return f.result()


def test_futures_stay_alive_while_queued(client):
    state = client.cluster.scheduler.state
    q = Queue("futs")
    f = client.submit(inc, 1)
    key = f.key
    f.result()
    q.put(f)
    del f
    gc.collect()
    client.table.flush()  # make sure a release from this client would have been sent
    assert client.submit(inc, 0).result() == 1  # one round trip later...
    assert state.tasks[key].state == "memory"  # ...the queue still holds it
    g = q.get()
    assert isinstance(g, Future) and g.result() == 2
    assert "queue/futs" not in state.tasks[key].who_wants


def test_a_future_dropped_and_got_back_at_once_keeps_its_value(any_client):
    """The client lets go of its Future while the queue holds the key, and gets it back
    before its release left (releases wait up to 2 ms for company). The release must
    reach the queue's host first: after the get, it would take the key from the very
    client the queue just handed it to, and the value would be freed under it."""
    c = any_client
    q = Queue("dropped-and-got-back", client=c)
    for i in range(30):
        f = c.submit(inc, i, pure=False)
        f.result()
        q.put(f)
        del f
        g = q.get(timeout=10)
        assert g.result(timeout=10) == i + 1
        del g


@gen_cluster()
async def test_a_future_dropped_and_got_back_at_once_keeps_its_value_async(c, cluster):
    q = Queue("dropped-and-got-back-async")
    for i in range(30):
        f = c.submit(inc, i, pure=False)
        await f
        await q.put(f)
        del f
        g = await q.get(timeout=10)
        assert await asyncio.wait_for(g, 10) == i + 1
        del g


def test_future_from_a_task_to_the_client_and_back(client):
    key = client.submit(submit_and_put, "fq", pure=False).result()
    f = Queue("fq").get(timeout=5)
    assert f.key == key and f.result() == 42
    Queue("fq").put(f)
    del f
    assert client.submit(get_future_and_result, "fq", pure=False).result() == 42


def test_futures_through_a_queue_across_processes(pclient):
    key = pclient.submit(submit_and_put, "pfq", pure=False).result()
    f = Queue("pfq", client=pclient).get(timeout=10)
    assert f.key == key and f.result() == 42
    Queue("pfq", client=pclient).put(f)
    del f
    assert pclient.submit(get_future_and_result, "pfq", pure=False).result() == 42


def test_queue_proxy_pickles_and_unnamed_ones_are_unique(client):
    a, b = Queue(), Queue()
    assert a.name != b.name
    a2 = pickle.loads(pickle.dumps(a))
    assert a2.name == a.name
    assert client.submit(produce_into, a, "hi", pure=False).result()
    assert a.get(timeout=5) == "hi" and b.qsize() == 0


def produce_into(q, value):
    q.put(value)
    return True


# --- exactly once, under contention ----------------------------------------------------------
def producer(name, first, n):
    q = Queue(name)
    for i in range(first, first + n):
        q.put(i)
    return n


def consumer(name, n):
    q = Queue(name)
    return [q.get(timeout=20) for _ in range(n)]


@gen_cluster(n_workers=2, threads_per_worker=4)
async def test_stress_every_item_delivered_exactly_once(c, cluster):
    # 6 producers x 50 items, 4 consumers x 75 items, all running at once.
    consumers = c.map(consumer, ["once"] * 4, [75] * 4, pure=False)
    producers = c.map(producer, ["once"] * 6, range(0, 300, 50), [50] * 6, pure=False)
    assert sum(await c.gather(producers)) == 300
    got = [x for batch in await c.gather(consumers) for x in batch]
    assert sorted(got) == list(range(300))
    for batch in await c.gather(consumers):
        # each producer's items reach any one consumer in the order they were put
        for p in range(6):
            mine = [x for x in batch if p * 50 <= x < (p + 1) * 50]
            assert mine == sorted(mine)
    assert await Queue("once").qsize() == 0


def test_stress_exactly_once_across_processes(pclient):
    consumers = pclient.map(consumer, ["ponce"] * 2, [100] * 2, pure=False)
    producers = pclient.map(producer, ["ponce"] * 2, [0, 100], [100] * 2, pure=False)
    assert sum(pclient.gather(producers)) == 200
    got = [x for batch in pclient.gather(consumers) for x in batch]
    assert sorted(got) == list(range(200))


@gen_cluster()
async def test_cancelled_get_loses_no_item(c, cluster):
    q = await Queue("cancel")
    actor = cluster.scheduler_host.actors["queue/cancel"]
    for put_first in (False, True):
        t = asyncio.ensure_future(q.get())
        await poll_for(lambda: len(actor.getters) == 1)
        if put_first:
            # The item may already be on its way to the cancelled get: it comes back.
            await Queue("cancel").put("item")
        t.cancel()
        await asyncio.gather(t, return_exceptions=True)
        if not put_first:
            await Queue("cancel").put("item")
        if t.cancelled():
            assert await q.get(timeout=5) == "item"
        else:
            assert t.result() == "item"
        await poll_for(lambda: not actor.getters and not actor.calls)
        assert await q.qsize() == 0


@gen_cluster()
async def test_a_threads_cancelled_get_loses_no_item(c, cluster):
    """The sync face waits on a bare loop future (coordination._proxy._withdrawable_future);
    cancelled (the waiting thread interrupted), it withdraws the get the same way, and an
    item already on its way to it comes back to the queue."""
    from actorrt.coordination._proxy import _withdrawable_future
    q = await Queue("cancel-sync")
    actor = cluster.scheduler_host.actors["queue/cancel-sync"]
    for i, put_first in enumerate((False, True)):
        fields = {"client": c.id, "timeout": None, "count": 1, "call": f"{q._token}-sync-{i}"}
        fut = _withdrawable_future(c.host, q._ref, "get", fields, q._unget)
        await poll_for(lambda: len(actor.getters) == 1)
        if put_first:
            q.put("item")  # (a tell, sent this turn: the queue answers the get before it hears of the cancel)
        assert fut.cancel()
        if not put_first:
            await q.put("item")
        assert await q.get(timeout=5) == "item"
        await poll_for(lambda: not actor.getters and not actor.calls)
        assert await q.qsize() == 0



def test_an_interrupted_sync_get_loses_no_item(client):
    """Ctrl-C lands while a sync get's item is on its way: the get raises
    KeyboardInterrupt, and the item, which its caller will never see, goes back to
    the queue. (interrupt_main trips the flag while the main thread is parked; it
    raises once the reply wakes the thread: the window where the item had arrived.)"""
    get_interrupted_as_its_item_comes(client, client, "interrupted-get")


def get_interrupted_as_its_item_comes(getter, owner, name):
    """``getter``'s sync get on Queue ``name`` is interrupted as its item arrives; the
    item goes back. ``owner``: the client whose cluster object holds the queue actor."""
    q = Queue(name, client=getter)
    q.qsize()  # (resolve the actor now: its getters are what the helper waits on)
    actor = owner.cluster.scheduler_host.actors[f"queue/{name}"]
    put = lambda: Queue(name, client=owner).put("item")  # noqa: E731
    with CtrlCWhen(lambda: len(actor.getters) == 1, put), pytest.raises(KeyboardInterrupt):
        q.get()
    assert q.get(timeout=5) == "item"
    assert q.qsize() == 0


def test_an_interrupted_sync_sub_get_loses_no_message(client):
    """As a Queue's: a message taken for a Sub.get whose caller is interrupted as it
    arrives goes back to the front of the subscriber's buffer."""
    sub = Sub("interrupted-sub", client=client)
    inbox = sub._inbox
    put = lambda: Pub("interrupted-sub", client=client).put("message")  # noqa: E731
    with CtrlCWhen(lambda: len(inbox._wakeups) == 1, put), pytest.raises(KeyboardInterrupt):
        sub.get()
    assert sub.get(timeout=5) == "message"

# --- Pub/Sub in particular ------------------------------------------------------------------
def publish_range(name, start, stop, go):
    if go is not None:
        Event(go).wait(timeout=10)
    pub = Pub(name)
    for i in range(start, stop):
        pub.put(i)
    return stop - start


def test_every_subscriber_gets_every_message_after_it_subscribed(client):
    early = Sub("news")
    pub = Pub("news")
    for i in range(10):
        pub.put(i)
    late = Sub("news")  # subscribed after 0..9 were sent from this thread
    for i in range(10, 20):
        pub.put(i)
    assert [early.get(timeout=5) for _ in range(20)] == list(range(20))
    got = [late.get(timeout=5) for _ in range(10)]
    assert got == list(range(10, 20))
    with pytest.raises(TimeoutError):
        late.get(timeout=0.02)


def drain_until_end(sub):
    got = []
    while (msg := sub.get(timeout=10)) != "END":
        got.append(msg)
    return got


def test_subscribers_come_and_go_while_publishers_publish(client):
    """Two task publishers; subscribers join and leave meanwhile. The steady subscriber
    sees every message once, in each publisher's order; each joiner sees, per
    publisher, a gap-free run up to that publisher's last message."""
    steady = Sub("busy")
    fs = client.map(publish_range, ["busy"] * 2, [0, 1000], [300, 1300], ["busy-go"] * 2, pure=False)
    Event("busy-go").set()
    seen, joiners = [], []
    for _ in range(3):
        seen.append(steady.get(timeout=10))  # let some traffic pass...
        joiners.append(Sub("busy"))          # ...then one subscriber joins
        Sub("busy").close()                  # and another comes and goes
    assert sum(client.gather(fs)) == 600
    # The publishers' messages reached the topic before their tasks finished, so
    # this marker comes after all of them, for every subscriber.
    Pub("busy").put("END")
    seen += drain_until_end(steady)
    assert sorted(seen) == list(range(300)) + list(range(1000, 1300))
    for lo in (0, 1000):
        assert [m for m in seen if lo <= m < lo + 300] == list(range(lo, lo + 300))
    for sub in joiners:
        got = drain_until_end(sub)
        for lo in (0, 1000):
            run = [m for m in got if lo <= m < lo + 300]
            if run:
                assert run == list(range(run[0], lo + 300))


def test_sub_iterates(client):
    sub = Sub("iter")
    pub = Pub("iter")
    for i in range(3):
        pub.put(i)
    got = []
    for msg in sub:
        got.append(msg)
        if len(got) == 3:
            break
    assert got == [0, 1, 2]


def test_closed_sub_is_dropped_by_the_topic(client):
    sub = Sub("bye")
    host = client.cluster.scheduler_host
    assert len(host.actors["pubsub/bye"].subscribers) == 1
    sub.close()
    wait_until(lambda: not host.actors["pubsub/bye"].subscribers)
    Pub("bye").put("nobody listens")
    with pytest.raises(RuntimeError, match="closed"):
        sub.get(timeout=0.01)
    sub2 = Sub("bye")
    del sub2
    gc.collect()
    wait_until(lambda: not host.actors["pubsub/bye"].subscribers)


def subscribe_in_task(name, n, ready):
    sub = Sub(name)
    Event(ready).set()
    return [sub.get(timeout=10) for _ in range(n)]


def test_sub_in_a_task_across_processes(pclient):
    f = pclient.submit(subscribe_in_task, "ptopic", 5, "ptopic-ready", pure=False)
    assert Event("ptopic-ready", client=pclient).wait(timeout=10)
    pub = Pub("ptopic", client=pclient)
    for i in range(5):
        pub.put({"i": i})
    assert f.result(timeout=10) == [{"i": i} for i in range(5)]


def test_sync_calls_from_many_threads(client):
    q = Queue("threads")
    errors = []

    def work(i):
        try:
            for j in range(20):
                q.put((i, j))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    got = q.get(batch=True)
    assert sorted(got) == sorted((i, j) for i in range(4) for j in range(20))
    for i in range(4):
        assert [j for k, j in got if k == i] == list(range(20))


def put_many(name, n):
    q = Queue(name)
    for i in range(n):
        q.put(i)  # after the first, each is sent without waiting for a reply
    return n


@pytest.mark.parametrize("fixture", ["client", "pclient"])
def test_items_put_by_a_finished_task_are_all_there(request, fixture):
    """A put on an unbounded queue does not wait for the queue's answer, yet when the
    task is seen finished every item is in: one host's messages arrive in order."""
    c = request.getfixturevalue(fixture)
    name = f"finished-{fixture}"
    assert c.submit(put_many, name, 200, pure=False).result() == 200
    assert Queue(name, client=c).get(batch=True) == list(range(200))
