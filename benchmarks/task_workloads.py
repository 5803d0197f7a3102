"""The workloads the measuring tools run (count_calls.py, profile_core.py, trace_path.py),
and the task functions and actor class bench_actors.py and bench_soak.py share with them.

Each driver takes a client and about ``n`` tasks' worth, runs them, and returns the
number of tasks it ran (what the tools divide by). Arguments are fresh on every call,
so that a pure key never hits a result left by an earlier run.

Worker processes cannot import ``benchmarks/``: this module is registered to pickle
by value, so the tasks and the actor class travel whole, as a script's own
functions do.
"""
from __future__ import annotations

import itertools
import statistics
import sys
import time
from typing import Any, Callable

import cloudpickle

cloudpickle.register_pickle_by_value(sys.modules[__name__])

_fresh = itertools.count(1)


def _offset(n: int) -> int:
    return next(_fresh) * 10 * n


# --- what the tasks run ---------------------------------------------------------------
def inc(x: int) -> int:
    return x + 1


def double(x: int) -> int:
    return 2 * x


def add(x: int, y: int) -> int:
    return x + y


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def increment(self) -> int:
        self.n += 1
        return self.n


def fib(k: int) -> int:
    """fib by tasks that submit tasks and wait for them."""
    from actorrt import get_client
    if k < 2:
        return k
    c = get_client()
    return sum(c.gather([c.submit(fib, k - 1, pure=False), c.submit(fib, k - 2, pure=False)]))


def fib_tasks(k: int) -> int:
    """The tasks :func:`fib` ``(k)`` runs."""
    a, b = 1, 1  # the tasks of fib(0), fib(1)
    for _ in range(k - 1):
        a, b = b, a + b + 1
    return b if k else a


def median_seconds(trip: Callable[[], Any], n: int) -> float:
    """``trip()`` ``n`` times, one at a time; the median seconds of one. (Here, not in
    common.py: it also runs inside tasks, which get it by value from this module.)"""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        trip()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def call_actor(counter: Any, n: int) -> float:
    """``n`` sequential calls of ``counter.increment``; their median seconds. From the
    client, or as a task (task -> actor)."""
    return median_seconds(lambda: counter.increment().result(), n)


def get_queued(name: str, n: int) -> float:
    """``n`` sequential gets from Queue ``name`` (filled beforehand); their median
    seconds. Run as a task (task -> the scheduler's queue actor)."""
    import actorrt
    q = actorrt.Queue(name)
    return median_seconds(lambda: q.get(timeout=60), n)


# --- drivers: (client, n) -> tasks run -------------------------------------------------
def submit_gather(client: Any, n: int) -> int:
    start = _offset(n)
    client.gather([client.submit(inc, start + i) for i in range(n)])
    return n


def map_gather(client: Any, n: int) -> int:
    start = _offset(n)
    client.gather(client.map(inc, range(start, start + n)))
    return n


def round_trips(client: Any, n: int) -> int:
    """One task at a time: a task's whole round trip, as bench_core's "round trip"."""
    start = _offset(n)
    for i in range(start, start + n):
        client.submit(inc, i, pure=False).result()
    return n


def chain(client: Any, n: int) -> int:
    """``n // 3`` of (inc, double, add) and their sum: tasks with inputs, as
    bench_core's "chain"."""
    start = _offset(n)
    zs = []
    for i in range(start, start + max(1, n // 3)):
        x = client.submit(inc, i)
        zs.append(client.submit(add, x, client.submit(double, x)))
    client.submit(sum, zs).result()
    return 3 * len(zs) + 1


def tasks_from_tasks(client: Any, n: int) -> int:
    """fib by tasks from tasks (bench_futures' "fib ... impure"): the largest fib of at
    most ``n`` tasks, then smaller ones to make up the rest."""
    ran = 0
    while n - ran >= 1:
        k = max(k for k in range(40) if fib_tasks(k) <= n - ran)
        client.submit(fib, k, pure=False).result()
        ran += fib_tasks(k)
    return ran


def queue_produce(name: str, n: int) -> int:
    import actorrt
    q = actorrt.Queue(name)
    for i in range(n):
        q.put(i)
    return n


def queue_consume(name: str, n: int) -> int:
    import actorrt
    q = actorrt.Queue(name)
    got = [q.get(timeout=60) for _ in range(n)]
    assert got == list(range(n)), "items lost, duplicated or reordered"
    return n


def queue_task_to_task(client: Any, n: int) -> int:
    """``n`` items from a producer task to a consumer task on the other worker through
    a Queue, as bench_coordination's "Queue task->task"; counts items, not tasks."""
    name = f"profiled-queue-{_offset(n)}"
    workers = sorted(client.scheduler_info()["workers"])
    consumer = client.submit(queue_consume, name, n, workers=[workers[0]], pure=False)
    producer = client.submit(queue_produce, name, n, workers=[workers[1]], pure=False)
    assert client.gather([producer, consumer]) == [n, n]
    return n


Driver = Callable[[Any, int], int]
