"""User actors on real worker processes: pickling, calls across hosts, worker death."""
import traceback
import asyncio
import gc
import os
import socket
import subprocess
import sys
import threading

import pytest

import actorrt
from actorrt import ActorDeadError, Client
from actorrt.testing import wait_until

from loop_gates import hold_this_workers_loop, while_held


class Counter:
    def __init__(self, start=0):
        self.n = start
        self.pid = os.getpid()

    def increment(self, by=1):
        self.n += by
        return self.n

    def where(self):
        return actorrt.get_worker().host.address

    def fail(self, message):
        raise KeyError(message)

    async def slow_read(self):
        await asyncio.sleep(0.001)
        return self.n

    def block(self, seconds):
        import time
        time.sleep(seconds)  # stands for a long computation; the worker is killed under it
        return "done"


class Forwarder:
    def forward(self, other, by):
        return other.increment(by).result()

    async def forward_async(self, other, by):
        return await other.increment(by)


def use(counter, by):
    return counter.increment(by).result()


def where_am_i():
    return actorrt.get_worker().host.address


def test_issue_example_over_processes(pclient):
    counter = pclient.submit(Counter, 10, actor=True).result()
    assert counter.increment().result() == 11
    assert counter.n == 11
    assert pclient.gather([counter.increment() for _ in range(3)]) == [12, 13, 14]
    assert pclient.submit(use, counter, 5).result() == 19
    assert counter.slow_read().result() == 19
    assert counter.pid != os.getpid()


def test_task_on_other_worker_calls_actor(pclient):
    counter = pclient.submit(Counter, actor=True).result()
    home = counter.where().result()
    other = next(a for a in pclient.nthreads() if a != home)
    task = pclient.submit(use, counter, 3, workers=[other], pure=False)
    assert task.result() == 3
    assert pclient.submit(where_am_i, workers=[other], pure=False).result() == other


def test_actor_calls_actor_across_and_within_workers(pclient):
    addresses = sorted(pclient.nthreads())
    target = pclient.submit(Counter, actor=True, workers=[addresses[0]]).result()
    near = pclient.submit(Forwarder, actor=True, workers=[addresses[0]]).result()
    far = pclient.submit(Forwarder, actor=True, workers=[addresses[1]]).result()
    assert near.forward(target, 1).result(timeout=10) == 1
    assert far.forward(target, 2).result(timeout=10) == 3
    assert far.forward_async(target, 3).result(timeout=10) == 6


class Peer:
    def __init__(self):
        self.hits = 0

    def hit(self):
        self.hits += 1
        return self.hits

    async def hit_other(self, other):
        return await other.hit()


def test_two_actors_calling_each_other_on_one_worker(pclient):
    w = sorted(pclient.nthreads())[0]
    a, b = (pclient.submit(Peer, actor=True, workers=[w]).result() for _ in range(2))
    pclient.gather([(a.hit_other(b), b.hit_other(a)) for _ in range(20)])
    assert (a.hits, b.hits) == (20, 20)


def test_errors_keep_type_and_remote_traceback(pclient):
    counter = pclient.submit(Counter, actor=True).result()
    f = counter.fail("missing")
    with pytest.raises(KeyError, match="missing") as info:
        f.result()
    assert "fail" in [fr.name for fr in traceback.extract_tb(f.traceback())]
    assert "raise KeyError" in "".join(traceback.format_exception(info.value))
    assert counter.increment().result() == 1


def test_ordering_and_pipelining_over_tcp(pclient):
    counter = pclient.submit(Counter, actor=True).result()
    futures = [counter.increment() for _ in range(2000)]
    assert [f.result() for f in futures] == list(range(1, 2001))


class Recorder:
    def __init__(self):
        self.log = []

    def add(self, tag, i):
        self.log.append((tag, i))


def test_calls_from_many_threads_keep_each_threads_order(pclient):
    # The threads' calls share one outbox and one connection, a call may leave from its
    # own thread (one every third call is waited for: the next goes that way) or from
    # the client's loop, and the answers from the actor's thread or from its worker's
    # loop: each thread's calls still run in the order it made them.
    recorder = pclient.submit(Recorder, actor=True).result()

    def fire(tag):
        return [recorder.add(tag, i).result() if i % 3 == 0 else recorder.add(tag, i)
                for i in range(500)]

    threads = [threading.Thread(target=fire, args=(tag,)) for tag in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log = recorder.log  # (read after every call: one connection, one order)
    assert len(log) == 2000
    for tag in range(4):
        assert [i for t, i in log if t == tag] == list(range(500))


class LoopHolder:
    def hold_the_loop_then_answer(self, port):
        """Hold this worker's event loop (until the test lets go), then answer."""
        hold_this_workers_loop(port)
        return "answered"

    def ping(self):
        return "pong"


def test_an_actors_answer_does_not_wait_for_its_workers_loop(pclient):
    # A sync method's answer leaves from the actor's own thread: a worker loop busy
    # with something else (here: held still) does not delay it.
    holder = pclient.submit(LoopHolder, actor=True).result()
    with socket.create_server(("127.0.0.1", 0)) as gate:
        gate.settimeout(30)
        answer = holder.hold_the_loop_then_answer(gate.getsockname()[1])

        def answered_while_held():
            assert answer.result(timeout=20) == "answered"
        while_held(gate, lambda: answer.result(timeout=5), answered_while_held)
    assert holder.ping().result(timeout=20) == "pong"


def test_released_actor_stops_in_its_process(pclient):
    future = pclient.submit(Counter, actor=True)
    handle = future.result()
    key = future.key
    copy = pclient.submit(lambda c: c, handle, pure=False).result()  # a handle back from a task
    del future, handle
    gc.collect()
    assert copy.increment().result() == 1  # the copy holds the actor too
    del copy
    gc.collect()

    def gone():
        states = pclient.sync(pclient._ask_scheduler, "key_states", keys=[key])
        return states[key] == "forgotten"
    wait_until(gone, timeout=10)


def test_handle_from_another_client_and_names(pclient):
    cache = pclient.submit(Counter, 1, actor=True, name="proc-cache").result()
    with Client(pclient.scheduler.address, secret=pclient.cluster.secret, set_as_default=False) as other:
        theirs = other.get_actor("proc-cache")
        assert theirs.increment().result() == 2
        with pytest.raises(ValueError, match="already exists"):
            other.submit(Counter, actor=True, name="proc-cache").result()
    assert cache.increment().result() == 3


# --- worker death ---------------------------------------------------------------------------


def _kill_worker(client, address):
    cluster = client.cluster
    name = cluster.scheduler.worker_info[address]["name"]
    cluster.workers[name].kill()


@pytest.fixture
def fresh():
    """A cluster of its own: these tests kill workers."""
    with Client(n_workers=2, threads_per_worker=1) as c:
        yield c


def test_killed_worker_fails_pending_and_later_calls(fresh):
    counter = fresh.submit(Counter, actor=True).result()
    assert counter.increment().result() == 1
    pending = counter.block(30)
    _kill_worker(fresh, counter._ref.address)
    with pytest.raises(ActorDeadError, match="Counter"):
        pending.result(timeout=20)
    with pytest.raises(ActorDeadError, match="Counter"):
        counter.increment().result(timeout=20)
    # The cluster keeps working.
    assert fresh.submit(sum, [1, 2]).result(timeout=20) == 3


def test_killed_worker_restarts_actor(fresh):
    future = fresh.submit(Counter, 100, actor=True, max_restarts=1)
    counter = future.result()
    home = counter._ref.address
    assert counter.increment().result() == 101
    pending = counter.block(30)
    _kill_worker(fresh, home)
    with pytest.raises(ActorDeadError):
        pending.result(timeout=20)
    # Calls made while it restarts wait for it; its state starts over from the constructor.
    later = [counter.increment() for _ in range(3)]
    assert [f.result(timeout=20) for f in later] == [101, 102, 103]
    assert counter.where().result(timeout=20) != home
    assert future.result(timeout=20) == counter


def test_example_script_runs():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, os.path.join(root, "examples", "actor_counter.py")],
                         capture_output=True, text=True, timeout=120, cwd=root)
    assert out.returncode == 0, out.stderr
    assert "counter: 14" in out.stdout
