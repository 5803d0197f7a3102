"""What the workers' statistical profiler costs: tasks with the sampler off and on.

Rows, each on actorrt and dask.distributed in the same run (two worker processes,
one thread each; dask's profiler is on by default, sampling every 10 ms). Each
runtime runs on one cluster whose workers' profiler is switched off and on between
runs (``client.run``), in interleaved rounds, best of each kept:

* submit+gather of many tiny tasks (the per-task cost: the sampler's thread -> task
  map is written twice per task, and the sampler looks whenever a task runs);
* a CPU-bound workload (pure Python loops, a fixed amount of work per task): the
  wall time, where the sampler competes with the task for the GIL;
* both again as CPU seconds of all the cluster's processes (steadier than wall time
  on a machine shared with other jobs), and those of a few idle seconds;
* one sample with N threads running tasks (actorrt only: ``Sampler.sample``), up to
  the hundreds a worker holds while its tasks wait for other tasks.

Run from the repository root: ``python benchmarks/bench_profile.py [--quick] [--no-dask]``.
"""
from __future__ import annotations

import functools
import os
import sys
import threading
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (actorrt_client, dask_client, parse_args, print_table, runtimes, timeit,  # noqa: E402
                    tree_cpu_seconds)

def inc(x: int) -> int:
    return x + 1


def crunch(n: int) -> int:
    """Pure-Python work: ``n`` loop turns, holding the GIL throughout."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def set_actorrt_sampler(interval: float, dask_worker: Any) -> None:
    """On a worker's loop (client.run): replace its sampler by one at ``interval`` (0: off)."""
    from actorrt.worker.profiler import Sampler
    dask_worker.profiler.stop()
    dask_worker.profiler = Sampler(dask_worker.running_tasks, interval, history=dask_worker.profiler.history)
    dask_worker.profiler.start()


def set_dask_profiler(interval: float, dask_worker: Any) -> None:
    """On a dask worker's loop: start or stop its profiling callback (10 ms, its default)."""
    pc = dask_worker.periodic_callbacks.get("profile")
    assert pc is not None, "dask's profiler is off in its config"
    pc.start() if interval else pc.stop()


def measure(make: Callable[..., Any], switch: Callable[..., None], intervals: tuple[float, ...], n_tiny: int,
            n_cpu: int, cpu_turns: int, rounds: int, idle: float) -> dict[float, list[float | None]]:
    """``{interval: [wall s of n_tiny tiny tasks, of n_cpu CPU-bound tasks, CPU s of each]}``
    on one cluster, the profiler switched between intervals on the same workers, in
    interleaved rounds (best of ``rounds``): a busy moment of the machine hits every
    setting alike. CPU seconds are summed over this process and its children (client,
    scheduler, workers): less disturbed than wall time by other jobs on the machine.
    Last, the CPU seconds of ``idle`` seconds with nothing to do, per interval."""
    best: dict[float, list[float | None]] = {}
    with make() as client:
        client.gather(client.map(inc, range(200), pure=False))  # warm up: workers and functions loaded

        def tiny() -> None:
            assert len(client.gather(client.map(inc, range(n_tiny), pure=False))) == n_tiny

        def cpu() -> None:
            client.gather(client.map(crunch, [cpu_turns] * n_cpu, pure=False))
        for _ in range(rounds):
            for interval in intervals:
                client.run(switch, interval)
                got: list[float | None] = []
                for work in (tiny, cpu):
                    cpu0 = tree_cpu_seconds()
                    got.append(timeit(work, 1))
                    cpu1 = tree_cpu_seconds()
                    got.append(None if cpu0 is None or cpu1 is None else cpu1 - cpu0)
                wall_tiny, cpu_tiny, wall_cpu, cpu_cpu = got
                got = [wall_tiny, wall_cpu, cpu_tiny, cpu_cpu]
                old = best.get(interval, got)
                best[interval] = [None if a is None or b is None else min(a, b) for a, b in zip(old, got)]
        for interval in intervals:  # nothing running: what a sampler costs an idle cluster
            client.run(switch, interval)
            cpu0 = tree_cpu_seconds()
            time.sleep(idle)
            cpu1 = tree_cpu_seconds()
            best[interval].append(None if cpu0 is None or cpu1 is None else cpu1 - cpu0)
    return best


def as_task(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` called as a worker calls a task (so that samples see a task's stack)."""
    from actorrt.worker.task import call_task
    return call_task(lambda _: functools.partial(fn, *args), (None, None), {})


def one_sample_seconds(n_threads: int, repeat: int = 2000) -> float:
    """Seconds per ``Sampler.sample()`` with ``n_threads`` threads registered as running tasks."""
    from actorrt.worker.profiler import RunningThreads, Sampler

    stop = threading.Event()
    threads = [threading.Thread(target=as_task, args=(stop.wait,)) for _ in range(n_threads)]
    for t in threads:
        t.start()

    class Run:
        key = "bench-1"
        name = "bench"
    running = RunningThreads()
    for t in threads:
        assert t.ident is not None
        running.enter(t.ident, Run())
    sampler = Sampler(running, interval=0.01)  # (never started: sampled by hand)
    try:
        return timeit(lambda: [sampler.sample() for _ in range(repeat)], 3) / repeat
    finally:
        stop.set()
        for t in threads:
            t.join()


def sampled_loop_seconds(interval: float, turns: int, repeat: int) -> float:
    """Seconds of ``crunch(turns)`` in a thread registered as running a task, with a
    sampler at ``interval`` (0: none) in the same process: the GIL contention alone,
    without a cluster's noise."""
    from actorrt.worker.profiler import RunningThreads, Sampler

    class Run:
        key = "crunch-1"
        name = "crunch"
    running = RunningThreads()
    sampler = Sampler(running, interval=interval)
    sampler.start()
    try:
        def run() -> None:
            running.enter(threading.get_ident(), Run())
            as_task(crunch, turns)
            running.leave(threading.get_ident())
        return timeit(lambda: run(), repeat)
    finally:
        sampler.stop()


def main() -> None:
    args = parse_args(__doc__)
    n_tiny = 500 if args.quick else 5_000
    n_cpu, turns = (4, 200_000) if args.quick else (16, 2_000_000)
    with_dask = "dask" in runtimes(args)
    from actorrt.worker.profiler import DEFAULT_INTERVAL

    idle = 0.5 if args.quick else 5.0
    a = measure(actorrt_client, set_actorrt_sampler, (0.0, DEFAULT_INTERVAL, 0.001), n_tiny, n_cpu, turns,
                args.repeat, idle)
    d: dict[float, list[float | None]] = {}
    if with_dask:
        d = measure(dask_client, set_dask_profiler, (0.0, 0.01), n_tiny, n_cpu, turns, args.repeat, idle)

    def cell(results: dict[float, list[float | None]], interval: float, i: int) -> float | None:
        r = results.get(interval)
        return None if r is None else r[i]
    ms = f"{DEFAULT_INTERVAL * 1000:g} ms"
    settings = [("profiler off", 0.0, 0.0), (f"profiler on ({ms}; dask's default)", DEFAULT_INTERVAL, 0.01),
                ("sampler at 1 ms", 0.001, None)]
    tiny_name, cpu_name = f"{n_tiny} tiny tasks", f"CPU-bound {n_cpu} x {turns:,} turns"
    rows: list[tuple] = []
    for i, (what, unit) in enumerate([(tiny_name, n_tiny), (cpu_name, None),
                                      (f"{tiny_name}, CPU s", None), (f"{cpu_name}, CPU s", None),
                                      (f"idle cluster {idle:g} s, CPU s", None)]):
        for label, mine, theirs in settings:
            row = (f"{what}, {label}", cell(a, mine, i), None if theirs is None else cell(d, theirs, i))
            rows.append(row + (unit,) if unit else row)
    # (200: tasks that wait for tasks, as fib by tasks from tasks, each holding a thread)
    rows += [(f"one sample, {n} threads running tasks", one_sample_seconds(n, 200 if n > 8 else 2000), None)
             for n in (1, 8, 200)]
    loop_turns = 200_000 if args.quick else 5_000_000
    best: dict[float, float] = {}
    for _ in range(1 if args.quick else 3):  # interleaved, so that a busy moment hits all alike
        for interval in (0.0, DEFAULT_INTERVAL, 0.001):
            t = sampled_loop_seconds(interval, loop_turns, args.repeat)
            best[interval] = min(best.get(interval, t), t)
    rows += [(f"one process: {loop_turns:,} turns, sampler {label}", best[i], None)
             for i, label in ((0.0, "off"), (DEFAULT_INTERVAL, f"at {ms}"), (0.001, "at 1 ms"))]
    print_table(rows, title="the workers' statistical profiler")
    on, off = a[DEFAULT_INTERVAL], a[0.0]

    def change(i: int) -> str:
        x, y = on[i], off[i]
        return "?" if x is None or y is None or not y else f"{100 * (x / y - 1):+.1f}%"
    print(f"actorrt, profiler on vs off: tiny tasks {change(0)} wall, {change(2)} CPU; "
          f"CPU-bound {change(1)} wall, {change(3)} CPU")


if __name__ == "__main__":
    main()
