"""Futures toolkit benchmarks: as_completed, tasks launching tasks, task graphs.

Workloads (issue 3), each on actorrt and dask.distributed, two worker processes with
one thread each:

* as_completed reduction: 512 inputs combined pairwise in completion order, each
  sum submitted from the loop (``seq.add(client.submit(add, a, b))``);
* fib(n) by tasks from tasks: each task submits fib(n-1) and fib(n-2) and waits for
  them. ``pure`` keys are deduplicated (fib(n) runs n+1 tasks); ``impure`` makes
  every call its own task (fib(12): 465 tasks, fib(15): 1,973). actorrt's tasks use
  ``get_client()`` and a plain gather (the slot is given back automatically); dask's
  use ``worker_client()`` as dask requires;
* client.get of a 10,000-node graph: 5,000 leaves and a binary tree of sums.

Run from the repository root: ``python benchmarks/bench_futures.py [--quick]``;
``--profile`` also prints where actorrt's client process (client + scheduler) spends
its time, per workload (cProfile).

Measured on the 2-core development machine (best of 3)::

    workload                                      | actorrt  | dask     | ratio
    as_completed reduction (512 inputs)           |  0.246 s |  2.184 s |  8.9x
    fib(12) tasks-from-tasks, impure (465 tasks)  |  0.161 s |  2.304 s | 14.3x
    fib(15) tasks-from-tasks, impure (1973 tasks) |  0.560 s | 10.693 s | 19.1x
    fib(12) tasks-from-tasks, pure (13 tasks)     | 11.16 ms |  0.117 s | 10.5x
    fib(15) tasks-from-tasks, pure (16 tasks)     | 14.33 ms |  0.150 s | 10.4x
    client.get of a 10,000-node graph             |  2.553 s | 20.573 s |  8.1x

Where the time goes (CPU from /proc, py-spy):

* as_completed reduction: ~240 µs per task along a dependency chain: the completion
  report reaches the client's loop, a condition variable wakes the iterating thread,
  the sum is submitted (one ``update_graph`` per loop turn), placed, its inputs fetched
  from the other worker when they live apart, run, reported. Nothing polls.
* fib by tasks: a waiting task secedes (one ``long_running`` message; the scheduler
  stops counting it against the worker's slots) and the worker's shared client submits
  over the worker's existing connection. dask opens a ``worker_client`` per task, and
  its secede/rejoin and submissions each cost tornado round trips.
* 10,000-node graph: wall ~2.3 s ~ total CPU of all processes (one core busy on
  average): the client process ~1.0 s (0.35 s translating and pickling the 10,000 task
  specs, the rest the scheduler's state machine and messages, which share its loop),
  the workers ~1.25 s together (~125 µs per task: Task actor, pool hand-off,
  cross-worker fetch of inputs, reports). The scheduler keeps 2 tasks per thread in
  flight (saturation 2); with ``Client(saturation=8)`` the same graph takes ~1.6 s.
"""
from __future__ import annotations

import cProfile
import io
import os
import pstats
import sys
from operator import add
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Workload, compare, parse_args, print_table  # noqa: E402


def inc(x: int) -> int:
    return x + 1


def _is_dask(client: Any) -> bool:
    return type(client).__module__.startswith("distributed")


# --- as_completed reduction -------------------------------------------------------------
def reduction(client: Any, n: int) -> int:
    if _is_dask(client):
        from distributed import as_completed
    else:
        from actorrt import as_completed
    seq = as_completed(client.map(inc, range(n), pure=False))
    while seq.count() > 1:
        a, b = next(seq), next(seq)
        seq.add(client.submit(add, a, b, pure=False))
    total = next(seq).result()
    assert total == sum(range(1, n + 1)), total
    return total


# --- fib by tasks from tasks --------------------------------------------------------------
def fib_actorrt(n: int, pure: bool) -> int:
    from actorrt import get_client
    if n < 2:
        return n
    c = get_client()
    a, b = c.submit(fib_actorrt, n - 1, pure, pure=pure), c.submit(fib_actorrt, n - 2, pure, pure=pure)
    return sum(c.gather([a, b]))


def fib_dask(n: int, pure: bool) -> int:
    from distributed import worker_client
    if n < 2:
        return n
    with worker_client() as c:
        a, b = c.submit(fib_dask, n - 1, pure, pure=pure), c.submit(fib_dask, n - 2, pure, pure=pure)
        return sum(c.gather([a, b]))


FIB = {0: 0, 1: 1}


def fib_value(n: int) -> int:
    for i in range(2, n + 1):
        FIB.setdefault(i, FIB[i - 1] + FIB[i - 2])
    return FIB[n]


def fib(client: Any, n: int, pure: bool) -> int:
    func = fib_dask if _is_dask(client) else fib_actorrt
    # A fresh top-level key each run (pure keys would be cached from the last run).
    result = client.submit(func, n, pure, pure=False).result()
    assert result == fib_value(n), result
    return result


# --- a 10,000-node graph -------------------------------------------------------------------
def tree_graph(n_leaves: int, tag: str) -> dict:
    """``n_leaves`` leaves, a binary tree of sums over them, and one final task."""
    dsk: dict = {(f"leaf-{tag}", i): (inc, i) for i in range(n_leaves)}
    level = list(dsk)
    depth = 0
    while len(level) > 1:
        nxt = []
        for j in range(0, len(level) - 1, 2):
            key = (f"sum-{tag}-{depth}", j)
            dsk[key] = (add, level[j], level[j + 1])
            nxt.append(key)
        if len(level) % 2:
            nxt.append(level[-1])
        level, depth = nxt, depth + 1
    dsk[f"total-{tag}"] = (inc, level[0])
    return dsk


_runs = iter(range(1 << 30))


def graph(client: Any, n_leaves: int) -> int:
    tag = str(next(_runs))  # new keys each run: nothing cached from the previous one
    dsk = tree_graph(n_leaves, tag)
    total = client.get(dsk, f"total-{tag}")
    assert total == sum(range(1, n_leaves + 1)) + 1, total
    return total


# --- the table -------------------------------------------------------------------------
def workloads(quick: bool) -> list[Workload]:
    n_red = 32 if quick else 512
    leaves = 250 if quick else 5_000
    fibs = [(8, False), (8, True)] if quick else [(12, False), (15, False), (12, True), (15, True)]
    out = [Workload(f"as_completed reduction ({n_red} inputs)",
                    lambda c: reduction(c, n_red))]
    for n, pure in fibs:
        ntasks = n + 1 if pure else 2 * fib_value(n + 1) - 1
        label = "pure" if pure else "impure"
        out.append(Workload(f"fib({n}) tasks-from-tasks, {label} ({ntasks} tasks)",
                            lambda c, n=n, pure=pure: fib(c, n, pure)))
    nodes = len(tree_graph(leaves, "x"))
    out.append(Workload(f"client.get of a {nodes:,}-node graph", lambda c: graph(c, leaves)))
    return out


def profile_actorrt(chosen: list[Workload]) -> None:
    """Where actorrt's client process spends its time (the scheduler lives there too)."""
    from common import actorrt_client
    with actorrt_client() as client:
        for w in chosen:
            w.run(client)  # warm
            prof = cProfile.Profile()
            prof.enable()
            w.run(client)
            prof.disable()
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(12)
            print(f"\n## profile of {w.name} (client process, by own time)\n")
            print("\n".join(out.getvalue().splitlines()[:40]))


def main() -> None:
    args = parse_args(__doc__, extra=lambda p: p.add_argument(
        "--profile", action="store_true", help="cProfile actorrt's client process per workload"))
    chosen = workloads(args.quick)
    rows = compare(chosen, args)
    print_table(rows, title="futures toolkit (2 worker processes x 1 thread)")
    if args.profile:
        profile_actorrt([w for w in chosen if not args.only or any(o in w.name for o in args.only)])


if __name__ == "__main__":
    main()
