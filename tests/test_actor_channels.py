"""A thread's own connection to an actor's worker (client/actor_calls.py ``Route``,
core/thread_channel.py): a thread calling one worker again and again reads its replies
itself, so a sequential call needs no wake-up of its loop; whoever else needs a reply
(``done()``, callbacks, ``gather``, another thread) still gets it, through the loop.

Over real worker processes (the channel is plain TCP). A test that proves the thread
read a reply itself holds the client's or the worker's loop while it waits: the reply
comes anyway. Synchronised on replies and gates, never on sleeps.
"""
import os
import queue
import signal
import socket
import threading

import pytest

from actorrt import ActorDeadError, Client
from actorrt.client.routes import routes_of
from actorrt.testing import wait_until

from loop_gates import hold_this_workers_loop, while_held

pytestmark = pytest.mark.timeout(90)


class Counter:
    def __init__(self):
        self.n = 0
        self.seen = []

    def increment(self):
        self.n += 1
        return self.n

    def record(self, item):
        self.seen.append(item)
        return len(self.seen)

    def items(self):
        return list(self.seen)

    def wait_for_gate(self, port):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as gate:
            gate.settimeout(60)
            return gate.recv(1)

    def fail(self):
        raise ValueError("from the method")

    def blob(self, n):
        return bytes(range(256)) * (n // 256)


def _route(client, actor):
    """This thread's route to ``actor``'s worker, once its channel is open."""
    address = actor._ref.address
    routes = routes_of(client)
    wait_until(lambda: getattr(routes.known(address), "channel", None) is not None, timeout=20)
    return routes.known(address)


def _holding(loop):
    """Hold ``loop`` still until the returned event is set; return once it is held."""
    held, release = threading.Event(), threading.Event()
    loop.call_soon_threadsafe(lambda: (held.set(), release.wait(30)))
    assert held.wait(20)
    return release


@pytest.fixture
def counter(pclient):
    actor = pclient.submit(Counter, actor=True, pure=False).result()
    actor.increment().result()
    actor.increment().result()  # (the second call opens this thread's channel)
    return actor


def test_a_sequential_call_is_answered_while_the_clients_loop_is_held(pclient, counter):
    route = _route(pclient, counter)
    counter.increment().result()  # (no call sent another way is unanswered)
    release = _holding(pclient.loop)
    try:
        assert [counter.increment().result() for _ in range(3)] == [4, 5, 6]
    finally:
        release.set()
    assert not route.channel.closed


def test_calls_keep_their_order_across_the_channel_and_the_loop(pclient, counter):
    _route(pclient, counter)
    expected = []
    for burst in range(4):
        for i in range(30):  # made faster than replies come: the loop reads them
            counter.record((burst, "piped", i))
        for i in range(4):   # each waited for: read by this thread
            counter.record((burst, "waited", i)).result()
        expected += [(burst, "piped", i) for i in range(30)] + [(burst, "waited", i) for i in range(4)]
    assert counter.items().result() == expected


def test_done_callbacks_gather_and_as_completed_see_a_channel_calls_reply(pclient, counter):
    from actorrt import as_completed
    _route(pclient, counter)
    polled = counter.increment()
    wait_until(polled.done, timeout=20)  # nobody waits: done() has the loop read it
    assert polled.result() == 3
    called = queue.SimpleQueue()
    counter.increment().add_done_callback(lambda f: called.put(f.result()))
    assert called.get(timeout=20) == 4
    assert pclient.gather([counter.increment(), counter.increment()]) == [5, 6]
    assert sorted(f.result() for f in as_completed([counter.increment(), counter.increment()])) == [7, 8]
    assert counter.increment().result() == 9  # and back to this thread


def test_a_large_reply_streams_in_on_the_channel_in_many_reads(pclient, counter):
    route = _route(pclient, counter)
    counter.increment().result()  # (no call sent another way is unanswered)
    big = counter.blob(8 << 20).result()  # (frames far larger than one read)
    assert len(big) == 8 << 20 and big[:512] == bytes(range(256)) * 2 and big[-1] == 255
    assert counter.increment().result() == 4
    assert not route.channel.closed


def test_a_method_error_on_the_channel_raises_in_the_caller(pclient, counter):
    _route(pclient, counter)
    with pytest.raises(ValueError, match="from the method"):
        counter.fail().result()
    assert counter.increment().result() == 3


def test_a_wait_that_times_out_leaves_the_channel_working(pclient, counter):
    _route(pclient, counter)
    assert counter.increment().result(timeout=20) == 3  # (a timed wait: the loop's)
    with socket.create_server(("127.0.0.1", 0)) as gate:
        gate.settimeout(30)
        slow = counter.wait_for_gate(gate.getsockname()[1])
        conn, _ = gate.accept()
        with conn:
            with pytest.raises(TimeoutError):
                slow.result(timeout=0.05)
            conn.sendall(b"g")
            assert slow.result(timeout=20) == b"g"
    assert [counter.increment().result() for _ in range(3)] == [4, 5, 6]


def test_another_thread_can_wait_for_a_call_made_on_this_ones_channel(pclient, counter):
    _route(pclient, counter)
    future = counter.increment()
    out = []
    t = threading.Thread(target=lambda: out.append(future.result(timeout=30)))
    t.start()
    t.join(60)
    assert out == [3]


def test_a_thread_that_ends_with_a_call_out_leaves_its_reply_to_the_loop(pclient, counter):
    out = {}

    def calls_then_ends():
        counter.increment().result()
        counter.increment().result()
        out["route"] = _route(pclient, counter)
        out["future"] = counter.increment()  # not waited for by this thread

    t = threading.Thread(target=calls_then_ends)
    t.start()
    t.join(60)
    assert out["future"].result(timeout=30) == 5
    channel = out.pop("route").channel
    wait_until(lambda: channel.closed, timeout=20)  # the thread's channel goes with it


def calls_while_its_loop_is_held(actor, port):
    for _ in range(3):
        actor.increment().result()  # (the first wait gives the slot back; the channel opens)
    from actorrt import get_client
    _route(get_client(), actor)
    actor.increment().result()
    hold_this_workers_loop(port)
    return [actor.increment().result() for _ in range(3)]


def test_a_tasks_sequential_call_is_answered_while_its_workers_loop_is_held(pclient):
    a, b = sorted(pclient.scheduler_info()["workers"])
    actor = pclient.submit(Counter, actor=True, workers=[b], pure=False).result()
    with socket.create_server(("127.0.0.1", 0)) as gate:
        gate.settimeout(30)
        task = pclient.submit(calls_while_its_loop_is_held, actor, gate.getsockname()[1],
                              workers=[a], pure=False)
        # The calls are answered while the loop is held, and the task finishes once let go.
        while_held(gate, lambda: task.result(timeout=5), lambda: None)
        assert task.result(timeout=30) == [5, 6, 7]


def test_a_worker_killed_under_a_channel_call_fails_it_as_the_actors_death():
    with Client(n_workers=1, threads_per_worker=1, processes=True) as c:
        actor = c.submit(Counter, actor=True, pure=False).result()
        for _ in range(3):
            actor.increment().result()
        route = _route(c, actor)
        (pid,) = c.run(os.getpid).values()
        with socket.create_server(("127.0.0.1", 0)) as gate:
            gate.settimeout(30)
            call = actor.wait_for_gate(gate.getsockname()[1])
            conn, _ = gate.accept()  # (the method runs)
            with conn:
                os.kill(pid, signal.SIGKILL)
                with pytest.raises(ActorDeadError):
                    call.result(timeout=30)
        wait_until(lambda: route.channel.closed, timeout=20)
