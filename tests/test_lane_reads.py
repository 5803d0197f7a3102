"""A user actor's lane reads its callers' own connections (worker/lane_reads.py): a
thread's sequential calls run on the lane without the worker's loop, and whatever the
lane cannot run there (another actor's ask, an attribute read, an error, keys changing
hands, a caller's next ask while a method blocks) is still served, in order.

Over real worker processes (a thread's own connection is plain TCP). Proof that the
lane read a call itself: the worker's loop is held while the call is answered.
Synchronised on replies, gates and ``wait_until``, never on sleeps.
"""
import asyncio
import os
import select
import socket
import threading

import pytest

import actorrt
from actorrt import Client
from actorrt.core.spin import SpinPolicy
from actorrt.core.tcp import TCPComm
from actorrt.testing import wait_until
from actorrt.worker import lane_reads

from loop_gates import hold_this_workers_loop, while_held

pytestmark = pytest.mark.timeout(90)

#: A lane reads its callers' connections only where ``os.eventfd`` exists (Linux).
needs_eventfd = pytest.mark.skipif(not hasattr(os, "eventfd"),
                                   reason="a lane reads its callers' connections only on Linux (os.eventfd)")


class Counter:
    def __init__(self):
        self.n = 0

    def increment(self):
        self.n += 1
        return self.n

    def fail(self):
        raise ValueError("raised on the lane")

    def hold_the_loop(self, port):
        # (Not waiting until held: a lane busy that long could hand its connections back.)
        hold_this_workers_loop(port, wait=False)

    def wait_for_opening(self):
        """Block until another actor of this worker opens the worker's gate."""
        gate = _worker_gate()
        if not gate.wait(60):
            raise TimeoutError("never opened")
        return "opened"

    def echo(self, value):
        return value

    def submit_double(self, x):
        return actorrt.get_client().submit(double, x, pure=False)

    def total(self, futures):
        return sum(f.result() for f in futures)


class Opener:
    def open(self):
        _worker_gate().set()
        return "set"


class AsyncCounter:
    def __init__(self):
        self.n = 0

    def increment(self):
        self.n += 1
        return self.n

    async def later(self):
        return self.n


def double(x):
    return 2 * x


def _worker_gate():
    """One event per worker process, shared by its actors."""
    worker = actorrt.get_worker()
    return worker.__dict__.setdefault("lane_reads_test_gate", threading.Event())


def _lane_state(key, dask_worker):
    ua = dask_worker.user_actors.get(key)
    if ua is None:
        return None
    reads = ua.lane.reads
    return {"reads": reads is not None, "direct": reads.calls if reads else 0,
            "holds": reads.holds if reads else 0, "received": ua.calls_received(),
            "eventfd": reads is not None and reads.eventfd_open}


def lane_state(client, actor):
    states = [s for s in client.run(_lane_state, actor._key).values() if s is not None]
    assert len(states) == 1
    return states[0]


def _sequential(actor, n):
    return [actor.increment().result() for _ in range(n)]


def lend(client, actor):
    """Call ``actor`` until its lane reads this thread's connection (the client opens
    the connection after a thread's second call to a host, the first call on it lends
    it); the count reached."""
    for _ in range(200):
        n = actor.increment().result(timeout=30)
        if lane_state(client, actor)["holds"] == 1:
            return n
    raise AssertionError(f"the lane of {actor} never read this thread's connection")


def skip_without_eventfd():
    if not hasattr(os, "eventfd"):
        pytest.skip(needs_eventfd.kwargs["reason"])


def until_direct(client, actor, call):
    """``call()`` again until the lane ran one itself (a method's first call goes
    through the loop, which learns its kind; a machine pausing the lane past
    STUCK_AFTER sends the next one there too)."""
    for _ in range(20):
        before = lane_state(client, actor)["direct"]
        call()
        if lane_state(client, actor)["direct"] > before:
            return
    raise AssertionError(f"the lane of {actor} never ran a call itself")


@pytest.fixture
def counter(pclient):
    """A Counter whose lane reads this thread's connection, and its count."""
    skip_without_eventfd()
    actor = pclient.submit(Counter, actor=True, pure=False).result()
    return actor, lend(pclient, actor)


def test_sequential_calls_run_on_the_lane_while_the_workers_loop_is_held(pclient, counter):
    counter, n = counter
    for _ in range(5):
        got = calls_while_the_loop_is_held(counter)
        if got:
            break
        n = lend(pclient, counter)  # (the lane had given the connection back: again)
    else:
        raise AssertionError("no call was answered while the worker's loop was held")
    assert got == [n + 1, n + 2, n + 3]
    assert lane_state(pclient, counter)["direct"] >= 3


def calls_while_the_loop_is_held(counter):
    """Three calls of ``counter`` made while its worker's loop is held; none if the
    first is not answered then (the lane may hand its connections back before the loop
    holds, if a loaded machine pauses it past STUCK_AFTER: then the test tries again)."""
    got = []

    def calls():
        assert held.result(timeout=10) is None
        first = counter.increment()
        try:
            got.append(first.result(timeout=2))
        except TimeoutError:
            return  # (answered once the loop is let go)
        got.extend(counter.increment().result(timeout=10) for _ in range(2))

    with socket.create_server(("127.0.0.1", 0)) as gate:
        gate.settimeout(30)
        held = counter.hold_the_loop(gate.getsockname()[1])
        while_held(gate, lambda: held.result(timeout=5), calls)
    return got


def test_a_method_error_on_the_lane_raises_in_the_caller_and_the_lane_goes_on(pclient, counter):
    counter, n = counter

    def fails():
        with pytest.raises(ValueError, match="raised on the lane"):
            counter.fail().result(timeout=30)

    until_direct(pclient, counter, fails)
    assert _sequential(counter, 2) == [n + 1, n + 2]


def test_futures_pass_both_ways_through_calls_the_lane_ran(pclient, counter):
    counter, _ = counter
    xs = iter(range(100))

    def result_holds_a_future():  # (answered by the loop, once the caller holds its key)
        x = next(xs)
        assert counter.submit_double(x).result(timeout=30).result(timeout=30) == 2 * x

    def arguments_hold_futures():  # (answered by the loop, once the actor's worker holds them)
        x = next(xs)
        inputs = pclient.map(double, [1, 2, x], pure=False)
        assert counter.total(inputs).result(timeout=30) == 2 * (3 + x)

    until_direct(pclient, counter, result_holds_a_future)
    until_direct(pclient, counter, arguments_hold_futures)


def test_large_arguments_and_answers_pass_through_calls_the_lane_ran(pclient, counter):
    counter, _ = counter
    blob = bytes(range(256)) * (32 * 1024)  # 8 MiB: read by the lane in many pieces

    def echoes():  # (the answer is too large to leave from the lane: the loop sends it)
        assert counter.echo(blob).result(timeout=60) == blob

    until_direct(pclient, counter, echoes)


def test_what_the_lane_cannot_run_goes_to_the_loop_in_order(pclient, counter):
    counter, n = counter
    # An attribute read, an unknown method and plain calls, one after the other.
    assert counter.n == n
    assert counter.increment().result() == n + 1
    with pytest.raises(AttributeError, match="no method 'missing'"):
        counter._send("call", "missing", (), {}).result(timeout=30)
    assert counter.increment().result() == n + 2
    assert counter.n == n + 2
    # Pipelined calls: those that arrive together go to the loop, all in the order sent.
    futures = [counter.increment() for _ in range(20)]
    assert [f.result(timeout=30) for f in futures] == list(range(n + 3, n + 23))
    assert lend(pclient, counter) > n + 22


@needs_eventfd
def test_a_method_blocked_until_the_same_threads_next_ask_still_gets_it(pclient):
    waiter = pclient.submit(Counter, actor=True, pure=False).result()
    worker = waiter._ref.address
    opener = pclient.submit(Opener, actor=True, workers=[worker], pure=False).result()
    assert opener._ref.address == worker
    n = lend(pclient, waiter)
    blocked = waiter.wait_for_opening()
    # The lane runs wait_for_opening and reads nothing meanwhile: the loop takes the
    # connection back (STUCK_AFTER) and hands the opener this thread's next ask.
    assert opener.open().result(timeout=30) == "set"
    assert blocked.result(timeout=30) == "opened"
    assert _sequential(waiter, 1) == [n + 1]


def test_two_threads_calling_one_actor_each_keep_their_order(pclient, counter):
    counter, n = counter
    results = {}

    def calls(name):
        results[name] = _sequential(counter, 40)

    threads = [threading.Thread(target=calls, args=(name,)) for name in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    a, b = results["a"], results["b"]
    assert a == sorted(a) and b == sorted(b)
    assert sorted(a + b) == list(range(n + 1, n + 81))


def test_an_idle_lane_gives_its_connection_back_and_borrows_it_again(pclient, counter):
    counter, n = counter
    assert lane_state(pclient, counter)["eventfd"]
    # Unused, the connection goes back to the loop, and the lane's eventfd is closed.
    wait_until(lambda: lane_state(pclient, counter)["holds"] == 0, timeout=20, interval=0.05)
    wait_until(lambda: not lane_state(pclient, counter)["eventfd"], timeout=20, interval=0.05)
    assert lend(pclient, counter) == n + 1  # (the first call after lends it again)
    assert lane_state(pclient, counter)["eventfd"]


@needs_eventfd
def test_a_released_actor_gives_its_connections_back(pclient):
    actor = pclient.submit(Counter, actor=True, pure=False).result()
    key, worker = actor._key, actor._ref.address
    lend(pclient, actor)
    del actor
    wait_until(lambda: pclient.run(_lane_state, key, workers=[worker])[worker] is None, timeout=20, interval=0.05)
    # The worker's loop reads the thread's connection again: a new actor there is served.
    again = pclient.submit(Counter, actor=True, workers=[worker], pure=False).result()
    assert _sequential(again, 3) == [1, 2, 3]


def test_an_actor_with_an_async_method_is_served_by_the_loop(pclient):
    actor = pclient.submit(AsyncCounter, actor=True, pure=False).result()
    assert _sequential(actor, 4) == [1, 2, 3, 4]
    assert actor.later().result(timeout=30) == 4
    state = lane_state(pclient, actor)
    assert state == {"reads": False, "direct": 0, "holds": 0, "received": 5, "eventfd": False}


def test_the_lane_reads_nothing_when_switched_off(monkeypatch):
    monkeypatch.setenv("ACTORRT_LANE_READS", "0")
    with Client(n_workers=1, threads_per_worker=1, processes=True) as c:
        actor = c.submit(Counter, actor=True, pure=False).result()
        assert _sequential(actor, 5) == [1, 2, 3, 4, 5]
        assert lane_state(c, actor) == {"reads": False, "direct": 0, "holds": 0, "received": 5,
                                        "eventfd": False}


def test_a_malformed_switch_is_refused_by_name(monkeypatch):
    monkeypatch.setenv("ACTORRT_LANE_READS", "maybe")
    with pytest.raises(ValueError, match="ACTORRT_LANE_READS"):
        lane_reads.lane_reads_enabled()


# --- the rules, unit by unit (no cluster: an actor, a lane and a connection of stand-ins) ---

class _Lane:
    def __init__(self, loop):
        self.loop = loop
        self.queued = False
        self.roused = 0

    def rouse(self):
        self.roused += 1

    def has_work(self):
        return self.queued


class _Host:
    def __init__(self):
        self.backlog = False

    def backlogged(self, comm):
        return self.backlog


class _Actor:
    id = "actor-k"
    label = "K"

    def __init__(self):
        self.host = _Host()
        self.sync = {"increment"}

    def runs_on_lane(self, method):
        return method in self.sync


@pytest.fixture
def reads():
    skip_without_eventfd()
    loop = asyncio.new_event_loop()
    errors = []
    loop.set_exception_handler(lambda _, context: errors.append(context))
    r = lane_reads.LaneReads(_Actor(), _Lane(loop))
    yield r
    r.exited()
    loop.close()
    assert not errors  # (a callback that raised)


CALL = ["actor-k", "call", 7, {"method": "increment", "args": None, "holder": "client-1"}]


def test_one_plain_call_to_its_actor_runs_on_the_lane(reads):
    assert reads._plain_call([CALL]) == (7, "increment", None, "client-1")


@pytest.mark.parametrize("messages", [
    [CALL, CALL],                                                      # several at once: a pipeline
    [["actor-other", "call", 7, CALL[3]]],                              # another actor's
    [["actor-k", "getattr", 7, {"name": "n", "holder": None}]],         # an attribute read
    [["actor-k", "call", 0, CALL[3]]],                                  # a tell, no answer wanted
    [["actor-k", "call", "7", CALL[3]]],                                # a request id that is no int
    [["actor-k", "call", 7, {"method": "increment", "extra": 1}]],      # an unknown field
    [["actor-k", "call", 7, {"method": 3}]],                            # a method name that is no str
    [["actor-k", "call", 7, {"method": "increment", "args": b"raw"}]],  # args that are not pickled
    [["actor-k", "call", 7, {"method": "later"}]],                      # a method the loop has not seen
    [["actor-k", "call", 7]],                                           # malformed
    ["garbage"],
])
def test_anything_else_goes_to_the_loop(reads, messages):
    assert reads._plain_call(messages) is None


def test_a_call_waits_behind_what_the_loop_queued_for_the_lane(reads):
    reads.lane.queued = True
    assert reads._plain_call([CALL]) is None


class _Comm(TCPComm):
    """Just what lending looks at (never connected)."""

    def __init__(self):
        self.channel = "thread"
        self.threads_may_send = True
        self.closed = False
        self.lent = False

    def lend_reading(self):
        self.lent = True

    def take_reading_back(self):
        self.lent = False
        self.taken_back = True

    def fileno(self):
        return 99


def test_a_connection_is_lent_on_the_next_turn_unless_messages_wait_before(reads):
    loop = reads.loop
    lent, waiting = _Comm(), _Comm()
    reads.offer(lent)
    assert lent.lent_to is reads and not lent.lent  # (the read in progress is the loop's)
    loop.run_until_complete(asyncio.sleep(0))
    assert lent.lent and reads.holds == 1
    assert reads.lane.roused == 1  # (its thread, maybe waiting on its queue alone, now polls)
    reads.actor.host.backlog = True
    waiting.lend_reading()  # (as the lane had it: given back, and offered again meanwhile)
    reads.offer(waiting)
    loop.run_until_complete(asyncio.sleep(0))
    assert not waiting.lent and waiting.lent_to is None and waiting.taken_back  # (the loop reads it)


def test_a_lane_stuck_in_a_call_or_idle_gives_its_connections_back(reads):
    comm = _Comm()
    comm.lent_to = reads
    reads._comms[99], comm.lent = comm, True
    now = reads._last_used
    assert reads.reclaim(now + 0.01) and comm.lent  # (busy with nothing, used just now)
    reads.running(True)
    assert reads.reclaim(reads._busy_since + lane_reads.STUCK_AFTER / 2)
    assert not reads.reclaim(reads._busy_since + lane_reads.STUCK_AFTER + 0.001)
    assert not comm.lent and comm.lent_to is None and reads.holds == 0
    reads.running(False)
    reads._comms[99], comm.lent_to, comm.lent = comm, reads, True
    assert not reads.reclaim(reads._last_used + lane_reads.IDLE_RETURN + 0.001)
    assert not comm.lent


def test_a_pipelined_batch_handed_back_lends_nothing(reads):
    comm = _Comm()
    comm.lent_to = reads
    offered = []
    comm.on_messages = lambda messages, c: offered.extend(reads.offer(c) for _ in messages)
    reads.give_back(comm, [CALL, CALL])
    assert comm.lent_to is None  # (offers during the hand-back are ignored)
    reads.give_back(comm, [CALL])
    assert comm.lent_to is reads


def test_without_a_file_descriptor_to_spare_the_loop_reads_as_before(reads, monkeypatch):
    def no_descriptor(*args):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(lane_reads.os, "eventfd", no_descriptor)
    comm = _Comm()
    comm.lend_reading()  # (as after a hand-back)
    reads.offer(comm)
    reads.loop.run_until_complete(asyncio.sleep(0))
    assert comm.lent_to is None and comm.taken_back and reads.holds == 0
    assert not reads.eventfd_open and reads.lane.roused == 0


def test_the_lanes_thread_polls_before_it_sleeps_and_counts_what_its_polls_find(reads, monkeypatch):
    """The lane's wait (``_wait_for_events``) polls for up to its budget first, as a
    caller waiting for its answer does (core/spin.py): what comes meanwhile is caught;
    what comes later is still waited for, asleep, and the poll counts as a miss."""
    r, w = os.pipe()
    try:
        reads._poller.register(r, select.POLLIN)
        reads._spin = SpinPolicy(30.0)  # (30 s: what is there already is surely caught)
        os.write(w, b"x")
        assert [fd for fd, _ in reads._wait_for_events()] == [r]
        assert reads._spin.misses == 0.0
        os.read(r, 1)

        poll_for = lane_reads.poll_for

        def then_write(poll, budget):  # (the bytes come only once the poll gave up)
            found = poll_for(poll, budget)
            if not found:
                os.write(w, b"y")
            return found
        monkeypatch.setattr(lane_reads, "poll_for", then_write)
        reads._spin = SpinPolicy(0.001)
        assert [fd for fd, _ in reads._wait_for_events()] == [r]  # (asleep in poll, woken)
        assert reads._spin.misses > 0.0
    finally:
        os.close(r)
        os.close(w)
