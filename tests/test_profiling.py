"""The workers' sampler and client.profile: in-process workers and a real worker process."""
import inspect
import os
import sys
import threading
import time

import pytest

from actorrt import Client, LocalCluster, get_worker
from actorrt.core import ActorRef
from actorrt.core.errors import BadMessageError
from actorrt.protocol import WORKER_ID
from actorrt.testing import gen_cluster, wait_until
from actorrt.worker.profiler import INTERVAL_ENV, RunningThreads, Sampler, check_interval, interval_from_environ
from actorrt.worker.task import ActorCall, call_task


@pytest.fixture(autouse=True)
def _profiler_on(monkeypatch):
    """Whatever the environment says, these tests sample at the default 10 ms."""
    monkeypatch.setenv("ACTORRT_PROFILE_INTERVAL", "0.01")



def crunch_numbers(samples=3):
    """CPU-bound until this worker's sampler has seen it ``samples`` times (or 20 s)."""
    profiler = get_worker().profiler
    seen = profiler.history.samples
    deadline = time.monotonic() + 20
    total = 0
    while profiler.history.samples < seen + samples and time.monotonic() < deadline:
        total += sum(i * i for i in range(1000))
    return total


def other_work(samples=3):
    return crunch_numbers(samples)


# The runtime's frames between a pool or lane thread's start and the task's function.
RUNTIME_FRAMES = {"_bootstrap", "_bootstrap_inner", "run", "_thread_main", "_main", "run_job", "__call__", "_run_sync"}


def outer_names(tree):
    return {c["description"]["name"] for c in tree["children"].values()}


def top_name(tree):
    """The outermost function with most samples (a sample may land while the task's
    inputs are unpickled: the function's own frames are most, not all)."""
    by_name = {}
    for c in tree["children"].values():
        by_name[c["description"]["name"]] = by_name.get(c["description"]["name"], 0) + c["count"]
    return max(by_name, key=by_name.get)


def names_in(tree):
    out = set()
    for c in tree["children"].values():
        out.add(c["description"]["name"])
        out |= names_in(c)
    return out


@gen_cluster(n_workers=2)
async def test_profile_contains_the_running_function(client, cluster):
    t0 = time.time()
    await client.gather(client.map(crunch_numbers, [3, 4]))
    tree = await client.profile()
    assert tree["count"] >= 6
    assert top_name(tree) == "crunch_numbers"
    assert not outer_names(tree) & RUNTIME_FRAMES  # the runtime's frames below the task are cut
    assert "<genexpr>" in names_in(tree)
    child = max(tree["children"].values(), key=lambda c: c["count"])
    assert child["description"]["filename"] == __file__
    assert (await client.profile(start=t0, stop=time.time() + 1))["count"] == tree["count"]
    assert (await client.profile(start=time.time() + 5))["count"] == 0
    [address, _] = cluster.worker_addresses()
    small = await client.host.ask(ActorRef(address, WORKER_ID), "profile", max_nodes=1)
    assert len(small["tree"]["children"]) == 1 and not next(iter(small["tree"]["children"].values()))["children"]


@gen_cluster(n_workers=1)
async def test_profile_by_key_and_by_worker(client, cluster):
    a = client.submit(crunch_numbers, 3)
    b = client.submit(other_work, 3)
    await client.gather([a, b])
    assert "other_work" not in names_in(await client.profile(key="crunch_numbers"))
    assert "other_work" in names_in(await client.profile(key="other_work"))
    assert "other_work" in names_in(await client.profile(key=b.key))  # a key stands for its name
    assert (await client.profile(key="never_ran"))["count"] == 0
    [address] = cluster.worker_addresses()
    per_worker = await client.profile(merge_workers=False)
    assert list(per_worker) == [address] and per_worker[address]["count"] > 0
    assert (await client.profile(workers=[address]))["count"] == per_worker[address]["count"]


@gen_cluster(n_workers=1)
async def test_profile_writes_a_flame_graph(client, cluster, tmp_path):
    await client.submit(crunch_numbers, 3)
    path = tmp_path / "profile.html"
    tree = await client.profile(filename=path)
    page = path.read_text()
    assert tree["count"] > 0 and "crunch_numbers" in page and "<svg" in page
    assert "<script" not in page


@gen_cluster(n_workers=1)
async def test_bad_profile_arguments_are_refused_and_the_cluster_goes_on(client, cluster):
    for kwargs, kind, match in [
        ({"plot": True}, ValueError, "plot"), ({"server": True}, ValueError, "server=True"),
        ({"scheduler": True}, ValueError, "scheduler=True"), ({"key": 3}, TypeError, "key"),
        ({"start": "yesterday"}, TypeError, "start"), ({"start": 10, "stop": 5}, ValueError, "after stop"),
    ]:
        with pytest.raises(kind, match=match):
            client.profile(**kwargs)
    with pytest.raises(ValueError, match="no worker 'nope'"):
        await client.profile(workers=["nope"])
    [address] = cluster.worker_addresses()
    with pytest.raises(BadMessageError, match="start"):
        await client.host.ask(ActorRef(address, WORKER_ID), "profile", start="x")
    with pytest.raises(BadMessageError, match="stop must be finite"):
        await client.host.ask(ActorRef(address, WORKER_ID), "profile", stop=float("nan"))
    with pytest.raises(BadMessageError, match="max_nodes must be at least 1"):
        await client.host.ask(ActorRef(address, WORKER_ID), "profile", max_nodes=0)
    assert await client.submit(sum, [1, 2]) == 3


def test_profile_sync_face_in_a_worker_process(monkeypatch):
    # A real worker process: its sampler thread sees its own pool thread.
    monkeypatch.delenv(INTERVAL_ENV, raising=False)  # (the default: the worker process inherits the env)
    with LocalCluster(1, 1, processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
        pid = client.submit(os.getpid).result()
        assert pid != os.getpid()
        client.submit(crunch_numbers, 3).result()
        tree = client.profile(key="crunch_numbers")
        assert tree["count"] >= 3 and "crunch_numbers" in names_in(tree)


def test_interval_zero_starts_no_thread_and_records_nothing(monkeypatch):
    monkeypatch.setenv(INTERVAL_ENV, "0")
    before = {t.name for t in threading.enumerate()}
    with Client(processes=False, n_workers=1, dashboard_address=None) as client:
        assert not any(t.name.startswith("actorrt-profiler") for t in threading.enumerate()
                       if t.name not in before)
        client.submit(sum, [1]).result()
        assert client.profile()["count"] == 0


def test_interval_is_checked():
    assert check_interval("0.005") == 0.005 and check_interval(0) == 0
    for bad, match in [("fast", "number of seconds"), (-1, ">= 0"), (float("nan"), ">= 0"),
                       (0.0001, "at least 0.001")]:
        with pytest.raises(ValueError, match=match):
            check_interval(bad)


def test_interval_from_environ(monkeypatch):
    monkeypatch.setenv(INTERVAL_ENV, "0.02")
    assert interval_from_environ() == 0.02
    monkeypatch.setenv(INTERVAL_ENV, "often")
    with pytest.raises(ValueError, match=INTERVAL_ENV):
        interval_from_environ()


def test_sampler_sleeps_while_no_task_runs_and_stops():
    running = RunningThreads()
    sampler = Sampler(running, interval=0.001, name="actorrt-profiler-test")
    sampler.start()
    thread = sampler._thread
    assert thread is not None and thread.is_alive()
    wait_until(lambda: running._idle)  # asleep, waiting for a task
    assert sampler.wakeups == 0
    running.enter(threading.get_ident(), ActorCall("k", "k"))  # (this thread "runs a task")
    wait_until(lambda: sampler.wakeups >= 3)
    running.leave(threading.get_ident())
    wait_until(lambda: running._idle)
    woke = sampler.wakeups
    assert not running._work.wait(0.05) and sampler.wakeups == woke  # asleep again
    sampler.stop()
    assert not thread.is_alive()


class Payload:
    """Stands for a task's big value: weakly referenceable, so its death can be seen."""


def test_a_sample_keeps_no_task_frame_alive_without_the_garbage_collector():
    # The whole frames dict once held the sampler's own frame, whose locals held the dict:
    # a cycle that kept each sampled task's frame (and its arrays) until a collection,
    # and a worker paused for memory, idle, never ran one (it stayed paused for good).
    import gc
    import weakref
    running = RunningThreads()
    sampler = Sampler(running, interval=0.001, name="actorrt-profiler-test")
    sampled, done = threading.Event(), threading.Event()
    refs = []

    def task():
        value = Payload()
        refs.append(weakref.ref(value))
        running.enter(threading.get_ident(), ActorCall("k", "k"))
        sampled.wait(10)
        running.leave(threading.get_ident())
        done.set()  # (returns still holding ``value``: the frame's locals go with it)

    gc.disable()
    try:
        t = threading.Thread(target=task)
        t.start()
        wait_until(lambda: running.items)
        sampler.sample()  # (records nothing: no call_task below; the frames were taken all the same)
        sampled.set()
        assert done.wait(10)
        t.join(10)
        assert refs[0]() is None  # freed when the task let it go, with no collection
    finally:
        gc.enable()


class Cruncher:
    def crunch(self, samples):
        return crunch_numbers(samples)


@gen_cluster(n_workers=1)
async def test_sync_actor_methods_are_sampled_under_class_dot_method(client, cluster):
    actor = await client.submit(Cruncher, actor=True)
    await actor.crunch(3)
    tree = await client.profile(key="Cruncher.crunch")
    assert tree["count"] >= 3
    assert top_name(tree) == "crunch" and not outer_names(tree) & RUNTIME_FRAMES  # the method first
    assert "crunch_numbers" in names_in(tree)


def test_a_stop_before_the_sampler_falls_asleep_is_not_lost():
    # The stop's wake-up may come before the sampler clears its event (and is erased by
    # it): the sampler must see the stop itself. (A sampler left waiting: a thread leak.)
    running, stopped = RunningThreads(), threading.Event()
    stopped.set()
    running.wake()
    sleeper = threading.Thread(target=running.wait_for_work, args=(stopped,))
    sleeper.start()
    sleeper.join(5)
    assert not sleeper.is_alive()
    sampler = Sampler(running, interval=0.001, name="actorrt-profiler-test")
    sampler.start()
    thread = sampler._thread
    sampler.stop()
    assert not thread.is_alive()


# --- what a sample costs where threads wait (fib by tasks from tasks: hundreds) -------
class Unpickled:
    """A task's arguments as call_task reads them, unpickled already (locks do not pickle)."""

    def __init__(self, *args):
        self.args = args

    def loads(self):
        return self.args, {}


def run_as_task(fn, *args):
    """``fn(*args)`` below call_task, as a pool thread runs a task: the sampler's paths
    start at the frame call_task calls."""
    return call_task(lambda blob: blob, (fn, Unpickled(*args)), {})


def start_task_threads(running, n, fn, *args, name="fib"):
    def main():
        running.enter(threading.get_ident(), ActorCall("k", name))
        try:
            run_as_task(fn, *args)
        finally:
            running.leave(threading.get_ident())
    threads = [threading.Thread(target=main) for _ in range(n)]
    for t in threads:
        t.start()
    return threads


def innermost(thread):
    return sys._current_frames().get(thread.ident)


def at_line(thread, code, line):
    """Whether ``thread``'s innermost frame runs ``code`` at ``line`` (a thread blocked
    in a C call made on that line is there from the moment it starts the line)."""
    frame = innermost(thread)
    return frame is not None and frame.f_code is code and frame.f_lineno == line


def line_of(fn, text):
    lines, first = inspect.getsourcelines(fn)
    return first + next(i for i, line in enumerate(lines) if text in line)


def wait_on(lock):
    lock.acquire()  # every thread waits here
    lock.release()


def test_threads_in_one_wait_are_walked_once_and_counted_together(monkeypatch):
    import actorrt.worker.profiler as profiler
    running, lock = RunningThreads(), threading.Lock()
    sampler = Sampler(running, interval=0.01)
    walks, adds = [], []
    walk, add = profiler.frame_path, sampler.history.add
    monkeypatch.setattr(profiler, "frame_path", lambda *a, **k: walks.append(1) or walk(*a, **k))
    monkeypatch.setattr(sampler.history, "add", lambda *a, **k: adds.append(a) or add(*a, **k))
    lock.acquire()
    threads = start_task_threads(running, 40, wait_on, lock)
    try:
        line = line_of(wait_on, "lock.acquire()")
        wait_until(lambda: all(at_line(t, wait_on.__code__, line) for t in threads))
        assert sampler.sample() == 40 and len(walks) == 40
        assert len(adds) == 1 and adds[0][1] == "fib" and adds[0][3] == 40  # one path, 40 threads
        assert sampler.sample() == 40 and len(walks) == 40  # nobody moved: no stack walked again
        tree = sampler.history.get()
        assert tree["count"] == 80 == sampler.history.samples
        (node,) = tree["children"].values()
        assert node["description"]["name"] == "wait_on" and node["count"] == 80
    finally:
        lock.release()
        for t in threads:
            t.join(10)


def two_waits(first, second):
    first.acquire()
    second.acquire()


def lines_sampled(history):
    """The line numbers of the outermost frames in ``history``'s tree."""
    return sorted(c["description"]["line_number"] for c in history.get()["children"].values())


def test_a_thread_that_moved_on_in_the_same_frame_is_read_again():
    running, first, second = RunningThreads(), threading.Lock(), threading.Lock()
    sampler = Sampler(running, interval=0.01)
    first.acquire()
    second.acquire()
    (thread,) = start_task_threads(running, 1, two_waits, first, second)
    code = two_waits.__code__
    lines = [line_of(two_waits, "first.acquire()"), line_of(two_waits, "second.acquire()")]
    try:
        wait_until(lambda: at_line(thread, code, lines[0]))
        sampler.sample()
        first.release()
        wait_until(lambda: at_line(thread, code, lines[1]))
        sampler.sample()
        assert lines_sampled(sampler.history) == lines  # the same frame on its next line: read again
    finally:
        second.release()
        thread.join(10)


def stepper(lock):
    while True:
        lock.acquire()  # each time it is resumed, the generator waits here
        yield


def resumed_twice(lock):
    steps = stepper(lock)
    next(steps)  # first resumption
    next(steps)  # second resumption, from another line


def test_a_generator_resumed_from_elsewhere_is_read_again():
    # Its frame is the same object on the same line both times, but its caller moved:
    # a path kept from the first sample would name the caller's old line.
    running, lock = RunningThreads(), threading.Lock()
    sampler = Sampler(running, interval=0.01)
    lock.acquire()
    (thread,) = start_task_threads(running, 1, resumed_twice, lock)
    wait_line = line_of(stepper, "lock.acquire()")
    callers = [line_of(resumed_twice, "first resumption"), line_of(resumed_twice, "second resumption")]

    def resumed_from(line):
        frame = innermost(thread)
        return (frame is not None and frame.f_code is stepper.__code__ and frame.f_lineno == wait_line
                and frame.f_back.f_lineno == line)
    try:
        wait_until(lambda: resumed_from(callers[0]))
        sampler.sample()
        lock.release()  # the generator takes it, yields, and is resumed from the next line
        wait_until(lambda: resumed_from(callers[1]))
        sampler.sample()
        assert lines_sampled(sampler.history) == callers
    finally:
        lock.release()
        thread.join(10)


def test_a_finished_task_is_not_kept_alive_by_the_sampler():
    # The sampler keeps each thread's innermost frame from one sample to the next: a
    # frame whose task ended must go with the next sample, or once no task runs.
    import gc
    import weakref
    running, lock, refs = RunningThreads(), threading.Lock(), []
    sampler = Sampler(running, interval=0.001, name="actorrt-profiler-test")

    def holds_a_value(lock):
        value = Payload()
        refs.append(weakref.ref(value))
        lock.acquire()

    lock.acquire()
    gc.disable()
    try:
        sampler.start()
        (thread,) = start_task_threads(running, 1, holds_a_value, lock)
        wait_until(lambda: at_line(thread, holds_a_value.__code__, line_of(holds_a_value, "lock.acquire()")))
        seen = sampler.history.samples
        wait_until(lambda: sampler.history.samples > seen)  # sampled while it waits
        lock.release()
        thread.join(10)
        wait_until(lambda: running._idle)  # the sampler is asleep: no task runs
        assert refs[0]() is None  # freed with no collection
    finally:
        gc.enable()
        sampler.stop()
