"""The foundation's workloads (issue 2) on actorrt and dask.distributed, side by side.

    python benchmarks/bench_core.py            # full sizes, best of 3
    python benchmarks/bench_core.py --quick    # tiny sizes, seconds

Both runtimes get ``Client(n_workers=2, threads_per_worker=1)`` with worker processes.
Workloads: submit+gather of 5,000 trivial tasks; map of 10,000; the 256x(inc, double,
add) chain + sum; a pairwise tree reduction of 1,024 inputs; one task's whole round
trip (``submit(inc, i).result()``, one at a time, 1,000 times), as it goes (straight to
a worker: client/direct.py) and as it went before (through the scheduler); client
start-up (Client() to first result). A second table gives the CPU time per task summed
over every process of the cluster (client, scheduler, workers) for the submit, map and
round-trip workloads; a third, the round trips against their floors: the same socket
writes and thread hand-offs with no work on them.

Every repetition uses fresh arguments so that pure (hashed) keys never hit results
left over from the previous repetition.
"""
from __future__ import annotations

import itertools
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (Row, Workload, compare, fmt_seconds, format_columns, parse_args,  # noqa: E402
                    print_table, with_cpu)
import sockets  # noqa: E402
from floors import call_round_trip  # noqa: E402
from pingpong import handoff_round_trip  # noqa: E402


def inc(x):
    return x + 1


def double(x):
    return 2 * x


def add(x, y):
    return x + y


# Fresh inputs for every repetition (see the module docstring).
_fresh = itertools.count(1)


def _offset(n: int) -> int:
    return next(_fresh) * 10 * n


# CPU seconds of the whole process tree, per (runtime, workload), of the last repetition.
cpu_used: dict[tuple[str, str], float] = {}


def _with_cpu(name: str, body):
    """Wrap ``body(client)`` to record the cluster's CPU seconds it used."""
    def run(client):
        result, cpu = with_cpu(lambda: body(client))
        if cpu is not None:
            runtime = "dask" if type(client).__module__.startswith("distributed") else "actorrt"
            cpu_used[(runtime, name)] = cpu
        return result
    return run


def submit_gather(n: int):
    def run(client):
        start = _offset(n)
        futures = [client.submit(inc, start + i) for i in range(n)]
        results = client.gather(futures)
        assert results[-1] == start + n
    return run


def map_gather(n: int):
    def run(client):
        start = _offset(n)
        results = client.gather(client.map(inc, range(start, start + n)))
        assert results[0] == start + 1
    return run


def chain(n: int):
    """for i in range(n): x = inc(i); y = double(x); z = add(x, y) -> sum(zs)."""
    def run(client):
        start = _offset(n)
        zs = []
        for i in range(start, start + n):
            x = client.submit(inc, i)
            y = client.submit(double, x)
            zs.append(client.submit(add, x, y))
        total = client.submit(sum, zs).result()
        assert total == sum(3 * (i + 1) for i in range(start, start + n))
    return run


def tree(n: int):
    """Pairwise reduction: n inputs, then add pairs level by level down to one."""
    def run(client):
        start = _offset(n)
        level = client.map(inc, range(start, start + n))
        while len(level) > 1:
            level = [client.submit(add, level[i], level[i + 1]) for i in range(0, len(level), 2)]
        assert level[0].result() == sum(range(start + 1, start + n + 1))
    return run


def round_trips(n: int, direct: bool = True):
    """``submit(inc, i).result()`` one at a time: a task's whole round trip, client to
    worker and back (issue 9's target: <= 300 us here, <= 4 socket round trips). The
    waiting thread runs each on a worker itself (client/direct.py); ``direct=False``
    sends them through the scheduler instead, as before (dask's run is the same)."""
    def run(client):
        start = _offset(n)
        runs = getattr(client, "direct", None)
        if runs is not None:
            runs.enabled = direct
        try:
            for i in range(start, start + n):
                assert client.submit(inc, i, pure=False).result() == i + 1
        finally:
            if runs is not None:
                runs.enabled = True
    return run


def startup(make_client):
    """Client() (cluster with worker processes included) to the first result."""
    with make_client() as client:
        assert client.submit(inc, _offset(1)).result() > 0


def workloads(quick: bool) -> list[Workload]:
    n_submit, n_map, n_chain, n_tree = (200, 400, 16, 64) if quick else (5_000, 10_000, 256, 1_024)
    n_trip = 50 if quick else 1_000
    submit_name = f"submit+gather {n_submit:,} tasks"
    trip_name = f"submit(inc).result() round trip, one at a time ({n_trip:,})"
    via_name = f"the same round trip through the scheduler ({n_trip:,})"
    map_name = f"map+gather {n_map:,} tasks"
    return [
        Workload(submit_name, _with_cpu(submit_name, submit_gather(n_submit)), tasks=n_submit),
        Workload(map_name, _with_cpu(map_name, map_gather(n_map)), tasks=n_map),
        Workload(f"chain {n_chain}x(inc, double, add) + sum", chain(n_chain)),
        Workload(f"tree reduction of {n_tree:,} inputs", tree(n_tree)),
        Workload(trip_name, _with_cpu(trip_name, round_trips(n_trip)), tasks=n_trip, per_task=True),
        Workload(via_name, _with_cpu(via_name, round_trips(n_trip, direct=False)), tasks=n_trip, per_task=True),
        Workload("client start-up to first result", startup, needs_client=False),
    ]


def cpu_rows(rows: list[Row]) -> list[tuple[str, str, str, str]]:
    """CPU ms per task over all processes, for the workloads that recorded it."""
    out = []
    for row in rows:
        if row.tasks is None:
            continue
        per = {rt: cpu_used.get((rt, row.workload)) for rt in ("actorrt", "dask")}
        if per["actorrt"] is None:
            continue
        cells = ["-" if v is None else f"{v / row.tasks * 1e3:.3f} ms" for v in per.values()]
        ratio = ("n/a" if per["dask"] is None or not per["actorrt"]
                 else f"{per['dask'] / per['actorrt']:.1f}x")
        out.append((row.workload, *cells, ratio))
    return out


def print_cpu_table(lines: list[tuple[str, str, str, str]]) -> None:
    if not lines:
        return
    print()
    print(format_columns(("CPU per task (all processes)", "actorrt", "dask", "ratio"), lines))
    print("CPU = user + system seconds of the client, scheduler and worker processes")


def floor_rows(rows: list[Row], args: Any) -> list[tuple[str, str, str, str]]:
    """The round trips against their floors: the same socket writes and thread hand-offs,
    with no work on them. Straight to a worker: the calling thread writes, the worker's
    loop hands the request to a thread that answers, the caller reads the answer itself
    (floors.call_round_trip). Through the scheduler: pingpong.handoff_round_trip."""
    out = []
    repeat = 1 if args.quick else args.repeat
    for row in rows:
        ours = row.seconds.get("actorrt")
        if "round trip" not in row.workload or ours is None or row.tasks is None:
            continue
        if "through the scheduler" in row.workload:
            floor = handoff_round_trip(row.tasks, repeat=repeat)
        else:
            floor = call_round_trip("lane", row.tasks, repeat, reader="thread")
        per = ours / row.tasks
        out.append((row.workload, fmt_seconds(floor), fmt_seconds(per), f"{per / floor:.1f}x"))
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__, argv)
    rows = compare(workloads(args.quick), args)
    print_table(rows, title="actorrt vs dask.distributed: 2 worker processes x 1 thread")
    print_cpu_table(cpu_rows(rows))
    floors = floor_rows(rows, args)
    if floors:
        print()
        print(format_columns(("floor", "hand-offs only", "actorrt", "actorrt / floor (time)"), floors))
        print(f"hand-offs only, no work, over a {sockets.same_machine_kind()} socket as actorrt's: straight to a"
              " worker, caller thread -> socket -> worker loop -> pool thread -> socket -> caller thread"
              " (floors.call_round_trip); through the scheduler, caller thread -> loop -> socket -> worker"
              " loop -> pool thread -> loop -> socket -> loop -> caller thread"
              " (pingpong.handoff_round_trip)")


if __name__ == "__main__":
    main()
