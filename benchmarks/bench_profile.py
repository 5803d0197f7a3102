"""What the workers' statistical profiler costs: tasks with the sampler off and on.

Rows, each on actorrt and dask.distributed in the same run (two worker processes,
one thread each; dask's profiler is on by default, sampling every 10 ms). Each
runtime runs on one cluster whose workers' profiler is switched off and on between
runs (``client.run``), in interleaved rounds, best of each kept:

* submit+gather of many tiny tasks (the per-task cost: the sampler's thread -> task
  map is written twice per task, and the sampler looks whenever a task runs);
* a CPU-bound workload (pure Python loops, a fixed amount of work per task): the
  wall time, where the sampler competes with the task for the GIL;
* one sample with N threads running tasks (actorrt only: ``Sampler.sample``).

Run from the repository root: ``python benchmarks/bench_profile.py [--quick] [--no-dask]``.
"""
from __future__ import annotations

import os
import sys
import threading
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import actorrt_client, dask_client, parse_args, print_table, runtimes, timeit  # noqa: E402

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
            n_cpu: int, cpu_turns: int, rounds: int) -> dict[float, tuple[float, float]]:
    """``{interval: (seconds for n_tiny tiny tasks, seconds for n_cpu CPU-bound tasks)}`` on one
    cluster, the profiler switched between intervals on the same workers, in interleaved
    rounds (best of ``rounds``): a busy moment of the machine hits every setting alike."""
    best: dict[float, tuple[float, float]] = {}
    with make() as client:
        client.gather(client.map(inc, range(200), pure=False))  # warm up: workers and functions loaded

        def tiny() -> None:
            assert len(client.gather(client.map(inc, range(n_tiny), pure=False))) == n_tiny

        def cpu() -> None:
            client.gather(client.map(crunch, [cpu_turns] * n_cpu, pure=False))
        for _ in range(rounds):
            for interval in intervals:
                client.run(switch, interval)
                t = (timeit(tiny, 1), timeit(cpu, 1))
                old = best.get(interval, t)
                best[interval] = (min(old[0], t[0]), min(old[1], t[1]))
    return best


def one_sample_seconds(n_threads: int, repeat: int = 2000) -> float:
    """Seconds per ``Sampler.sample()`` with ``n_threads`` threads registered as running tasks."""
    from actorrt.worker.profiler import Sampler

    stop = threading.Event()
    threads = [threading.Thread(target=stop.wait) for _ in range(n_threads)]
    for t in threads:
        t.start()

    class Run:
        key = "bench-1"
        name = "bench"
    running = {t.ident: Run() for t in threads if t.ident is not None}
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
    from actorrt.worker.profiler import Sampler

    class Run:
        key = "crunch-1"
        name = "crunch"
    running: dict[int, Any] = {}
    sampler = Sampler(running, interval=interval)
    sampler.start()
    try:
        def run() -> None:
            running[threading.get_ident()] = Run()
            crunch(turns)
            running.clear()
        return timeit(lambda: run(), repeat)
    finally:
        sampler.stop()


def main() -> None:
    args = parse_args(__doc__)
    n_tiny = 500 if args.quick else 5_000
    n_cpu, turns = (4, 200_000) if args.quick else (16, 2_000_000)
    with_dask = "dask" in runtimes(args)
    from actorrt.worker.profiler import DEFAULT_INTERVAL

    a = measure(actorrt_client, set_actorrt_sampler, (0.0, DEFAULT_INTERVAL, 0.001), n_tiny, n_cpu, turns,
                args.repeat)
    d: dict[float, tuple[float, float]] = {}
    if with_dask:
        d = measure(dask_client, set_dask_profiler, (0.0, 0.01), n_tiny, n_cpu, turns, args.repeat)

    def cell(results: dict[float, tuple[float, float]], interval: float, i: int) -> float | None:
        r = results.get(interval)
        return None if r is None else r[i]
    ms = f"{DEFAULT_INTERVAL * 1000:g} ms"
    rows: list[tuple] = [
        (f"{n_tiny} tiny tasks, profiler off", cell(a, 0.0, 0), cell(d, 0.0, 0), n_tiny),
        (f"{n_tiny} tiny tasks, profiler on ({ms}; dask's default)", cell(a, DEFAULT_INTERVAL, 0), cell(d, 0.01, 0),
         n_tiny),
        (f"{n_tiny} tiny tasks, sampler at 1 ms", cell(a, 0.001, 0), None, n_tiny),
        (f"CPU-bound {n_cpu} x {turns:,} turns, profiler off", cell(a, 0.0, 1), cell(d, 0.0, 1)),
        (f"CPU-bound {n_cpu} x {turns:,} turns, profiler on ({ms})", cell(a, DEFAULT_INTERVAL, 1), cell(d, 0.01, 1)),
        (f"CPU-bound {n_cpu} x {turns:,} turns, sampler at 1 ms", cell(a, 0.001, 1), None),
    ]
    rows += [(f"one sample, {n} threads running tasks", one_sample_seconds(n), None) for n in (1, 8)]
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
    print(f"actorrt, profiler on vs off: tiny tasks {100 * (on[0] / off[0] - 1):+.1f}% time, "
          f"CPU-bound {100 * (on[1] / off[1] - 1):+.1f}% time")


if __name__ == "__main__":
    main()
