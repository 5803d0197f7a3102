"""Actor calls, actorrt vs dask.distributed (issue 4).

Workloads, on two worker processes with one thread each:

* client -> actor: ``counter.increment().result()`` one at a time, 2,000 calls:
  median and 99th percentile round trip;
* pipelined: 10,000 calls sent at once, then every result waited for: calls/s;
* task -> actor: a task making 2,000 sequential calls, the task on the other worker
  than the actor, and on the actor's own worker: median round trip;
* actor -> actor: an actor calling another on the other worker, and on its own
  worker: median round trip.

A second table gives the CPU time per sequential call, summed over the client, the
scheduler and the worker processes (Linux: read from /proc): what each call costs the
machine, which a latency on an idle machine hides.

On the same worker the two runtimes do different things: dask.distributed runs the
method inline, on the calling actor's thread (all of a worker's actors share one
thread there), and returns the object itself; actorrt runs it on the callee's own
lane (the thread its constructor ran on, so thread-bound state such as an sqlite
connection keeps working) and returns a copy, which costs four thread hand-offs.

Each figure is the best of ``--repeat`` runs (3; 1 with ``--quick``). Run from the
repository root: ``python benchmarks/bench_actors.py [--quick]``.
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    CLIENTS,
    Row,
    format_columns,
    parse_args,
    print_table,
    runtimes,
    with_cpu,
)
from floors import FLOOR_COLUMNS, call_round_trip, floor_row  # noqa: E402
from task_workloads import Counter  # noqa: E402

from actorrt.worker.lane_reads import lane_reads_enabled  # noqa: E402

SIZES = {"seq": 2_000, "pipelined": 10_000, "task": 2_000, "actor": 2_000}
QUICK = {"seq": 50, "pipelined": 200, "task": 50, "actor": 50}


class Driver:
    """An actor that times its own calls to another actor."""

    def drive(self, other: Any, n: int) -> list[float]:
        return _time_calls(other, n)


def _time_calls(counter: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        counter.increment().result()
        out.append(time.perf_counter() - t)
    return out


def task_calls(counter: Any, n: int) -> list[float]:
    return _time_calls(counter, n)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- one runtime -------------------------------------------------------------------------


def actor_on(client: Any, cls: type, address: str) -> Any:
    return client.submit(cls, actor=True, workers=[address]).result()


def best(repeat: int, run: Callable[[], float]) -> float:
    """The best of ``repeat`` runs: the one least disturbed by the rest of the machine."""
    return min(run() for _ in range(max(1, repeat)))


def measure(runtime: str, client: Any, sizes: dict[str, int], only: list[str],
            repeat: int) -> dict[str, float]:
    """Seconds per workload (latencies) or total seconds (the pipelined run)."""
    addresses = sorted(client.nthreads() if runtime == "actorrt" else client.scheduler_info()["workers"])
    a, b = addresses[0], addresses[1]
    out: dict[str, float] = {}

    def wanted(name: str) -> bool:
        return not only or any(o in name for o in only)

    counter = actor_on(client, Counter, a)
    for _ in range(20):  # warm up connections and code paths
        counter.increment().result()
    if wanted("sequential"):
        timed = [with_cpu(lambda: _time_calls(counter, sizes["seq"])) for _ in range(max(1, repeat))]
        runs = [lat for lat, _ in timed]
        out["seq-median"] = min(statistics.median(lat) for lat in runs)
        out["seq-p99"] = min(percentile(lat, 0.99) for lat in runs)
        cpu = [c for _, c in timed if c is not None]
        if cpu:
            out["seq-cpu"] = min(cpu) / sizes["seq"]
    if wanted("pipelined"):
        def pipelined() -> float:
            start = time.perf_counter()
            futures = [counter.increment() for _ in range(sizes["pipelined"])]
            for f in futures:
                f.result()
            return time.perf_counter() - start
        out["pipelined"] = best(repeat, pipelined)

    def in_task(where: str) -> float:
        task = client.submit(task_calls, counter, sizes["task"], workers=[where], pure=False)
        return statistics.median(task.result())
    if wanted("task"):
        timed = [with_cpu(lambda: in_task(b)) for _ in range(max(1, repeat))]
        out["task-other"] = min(median for median, _ in timed)
        cpu = [c for _, c in timed if c is not None]
        if cpu:
            out["task-other-cpu"] = min(cpu) / sizes["task"]
        out["task-same"] = best(repeat, lambda: in_task(a))
    if wanted("actor"):
        far = actor_on(client, Driver, b)
        out["actor-other"] = best(repeat, lambda: statistics.median(far.drive(counter, sizes["actor"]).result()))
        near = actor_on(client, Driver, a)
        out["actor-same"] = best(repeat, lambda: statistics.median(near.drive(counter, sizes["actor"]).result()))
    return out


ROWS: list[tuple[str, str, bool]] = [
    # (label, measurement, is a rate over the pipelined calls)
    ("client->actor round trip, median", "seq-median", False),
    ("client->actor round trip, p99", "seq-p99", False),
    ("client->actor pipelined", "pipelined", True),
    ("task->actor round trip, median (other worker)", "task-other", False),
    ("task->actor round trip, median (same worker)", "task-same", False),
    ("actor->actor round trip, median (other worker)", "actor-other", False),
    ("actor->actor round trip, median (same worker)", "actor-same", False),
]


def main() -> None:
    args = parse_args(__doc__)
    sizes = QUICK if args.quick else SIZES
    results: dict[str, dict[str, float]] = {}
    for runtime in runtimes(args):
        print(f"# {runtime}", file=sys.stderr, flush=True)
        make: Callable[..., Any] = CLIENTS[runtime]
        with make() as client:
            results[runtime] = measure(runtime, client, sizes, args.only, args.repeat)
    rows = []
    for label, key, rate in ROWS:
        seconds = {rt: results[rt].get(key) for rt in results}
        if all(v is None for v in seconds.values()):
            continue
        if rate:
            rows.append(Row(f"{label} ({sizes['pipelined']:,} calls)", seconds,
                            tasks=sizes["pipelined"], unit="calls"))
        else:
            rows.append(Row(label, seconds))
    print_table(rows, title=f"actor calls: 2 worker processes x 1 thread, best of {args.repeat}"
                            f"{' (--quick sizes)' if args.quick else ''}")
    print("targets: client->actor ratio >= 5, task->actor >= 4 (issue 9), pipelined >= 10 (issue 4)")
    print("actor->actor on the same worker: dask calls the method inline on the caller's thread "
          "(one thread for all its actors); actorrt runs it on the callee's own lane (see the docstring)")
    print_cpu_table(results)
    if not args.only:
        print_floor_table(results, sizes, args.repeat)


def print_floor_table(results: dict[str, dict[str, float]], sizes: dict[str, int], repeat: int) -> None:
    """The sequential calls against their floor: the same thread hand-offs and socket
    writes with no work on them (floors.call_round_trip), read by the calling thread
    itself, polling first, as a sequential call's reply is on its own connection
    (core/spin.py); answered by a thread that read the call itself when actor lanes
    read their callers' connections (worker/lane_reads.py), else by a thread the loop
    hands it to."""
    lane_reads = lane_reads_enabled()
    floor = call_round_trip("thread" if lane_reads else "lane", sizes["seq"], repeat, reader="poll")
    lines = [floor_row(label, floor, results.get("actorrt", {}).get(key), results.get("dask", {}).get(key))
             for label, key in (("client->actor, median", "seq-median"), ("task->actor, other worker", "task-other"))]
    print()
    print(format_columns(FLOOR_COLUMNS, lines))
    answered = ("a thread of the other process reads it and writes the answer" if lane_reads else
                "the other process's loop hands it to a thread that writes the answer")
    print(f"floor: a thread writes a call, {answered}, which the calling thread reads itself, "
          "polling for it first (benchmarks/floors.py)")


CPU_ROWS = [("client->actor, sequential", "seq-cpu"), ("task->actor, other worker", "task-other-cpu")]


def print_cpu_table(results: dict[str, dict[str, float]]) -> None:
    """CPU per call over all processes (the run with the least), where it was measured."""
    lines = []
    for label, key in CPU_ROWS:
        per = {rt: results.get(rt, {}).get(key) for rt in ("actorrt", "dask")}
        if per["actorrt"] is None:
            continue
        cells = ["-" if v is None else f"{v * 1e6:.0f} µs" for v in per.values()]
        ratio = "n/a" if per["dask"] is None or not per["actorrt"] else f"{per['dask'] / per['actorrt']:.1f}x"
        lines.append((label, *cells, ratio))
    if lines:
        print()
        print(format_columns(("CPU per call (all processes)", "actorrt", "dask", "ratio"), lines))
        print("CPU = user + system seconds of the client, scheduler and worker processes")


if __name__ == "__main__":  # dask's worker processes re-import this module
    main()
