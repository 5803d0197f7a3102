"""What the task stream costs: per-task time with the start/stop records on the wire
and in the scheduler's ring, against the same workload on dask.distributed (whose
workers send startstops too), and, with ``--baseline REV``, on actorrt as of commit
REV (e.g. the commit before the task stream: the cost without any records).

Workloads, two worker processes with one thread each:

* map+gather of N tiny independent tasks (time per task);
* a tree sum of N leaves (time per task; half the inputs move between workers, so
  transfers are recorded too).

Then the scheduler-side pieces alone, in this process (no cluster): decoding a
``tasks_done`` report of 100 records, appending them to the ring, and building the
dict records a ``get_task_stream`` returns.

Run from the repository root: ``python benchmarks/bench_diagnostics.py [--quick]
[--baseline REV]``. Measured on the 2-core development machine, shared with other
jobs (best of 3, baseline 00975d9: the commit before the task stream)::

    workload                           | actorrt  | actorrt 00975d9 | dask    | ratio
    map+gather (10000 tasks), per task | 313.6 µs |        167.3 µs | 3.01 ms |  9.6x
    tree sum (8191 tasks), per task    | 349.5 µs |        345.0 µs | 2.55 ms |  7.3x

    step                                               | time
    decode a Finished (9 fields, checked)              | 0.5 µs
      the same 6 fields unchecked into a tuple (floor) | 0.1 µs
    append to the ring (TaskStream.add_reports)        | 0.2 µs
    build dask's dict (get_task_stream)                | 1.3 µs

The map+gather gap in that one run is the machine's noise, not the records: six
alternating runs of the same 10,000-task map+gather, each in a fresh cluster, gave
152-186 µs (wall) and 153-212 µs (CPU, all processes) per task before, 156-159 µs and
154-161 µs after. Decoding a report's three new fields costs ~0.1 µs per task (0.48 ->
0.58 µs per record) and the ring ~0.16 µs: under 0.3 µs of ~150.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from common import Workload, compare, fmt_seconds, format_columns, parse_args

N_MAP = 10_000
N_TREE = 4_096


def inc(x: int) -> int:
    return x + 1


def add(x: int, y: int) -> int:
    return x + y


def map_gather(client: Any, n: int) -> None:
    client.gather(client.map(inc, range(n), pure=False))


def tree_sum(client: Any, n: int) -> None:
    layer = client.map(inc, range(n), pure=False)
    while len(layer) > 1:
        layer = [client.submit(add, a, b, pure=False) for a, b in zip(layer[::2], layer[1::2])]
    layer[0].result()


def workloads(quick: bool) -> list[Workload]:
    n_map, n_tree = (500, 256) if quick else (N_MAP, N_TREE)
    return [Workload(f"map+gather ({n_map} tasks), per task", lambda c: map_gather(c, n_map),
                     tasks=n_map, per_task=True),
            Workload(f"tree sum ({2 * n_tree - 1} tasks), per task", lambda c: tree_sum(c, n_tree),
                     tasks=2 * n_tree - 1, per_task=True)]


# --- actorrt as of another commit, in a child process ---------------------------------
def checkout(rev: str) -> str:
    """A directory holding actorrt as of ``rev`` (a directory is taken as it is)."""
    if os.path.isdir(rev):
        return os.path.abspath(rev)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    where = tempfile.mkdtemp(prefix="actorrt-baseline-")
    archive = subprocess.run(["git", "-C", root, "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", where], input=archive, check=True)
    return where


def run_baseline(rev: str, args: Any) -> dict[str, float]:
    """Seconds per workload on actorrt as of ``rev`` (its own scheduler and workers)."""
    where = checkout(rev)
    argv = [sys.executable, os.path.abspath(__file__), "--child", "--no-dask", "--repeat", str(args.repeat)]
    if args.quick:
        argv.append("--quick")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([where, os.path.dirname(os.path.abspath(__file__))])}
    # cwd too: worker processes start with ``python -m``, which looks in cwd first.
    out = subprocess.run(argv, cwd=where, env=env, capture_output=True, text=True, check=True, timeout=900)
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- the scheduler's side alone -----------------------------------------------------------
def scheduler_side(quick: bool) -> list[tuple[str, float]]:
    """(what, seconds per record) of decoding, storing and querying task stream records."""
    from actorrt.protocol import Finished, decode_tasks_done
    from actorrt.scheduler.task_stream import TaskStream
    batch, rounds = 100, (200 if quick else 2_000)
    now = time.time()
    wire = [[f"inc-{i:032x}", 28, "int", 0.001, 1, None, now, now + 0.001, 1234] for i in range(batch)]
    old_wire = [w[:6] for w in wire]  # the same report without the three new fields
    stream = TaskStream()
    out = []

    def per_record(fn: Any) -> float:
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(rounds):
                fn()
            best = min(best, (time.perf_counter() - start) / (rounds * batch))
        return best
    decoded, _ = decode_tasks_done(wire, [])
    out.append(("decode a Finished (9 fields, checked)", per_record(lambda: decode_tasks_done(wire, []))))
    out.append(("  the same 6 fields unchecked into a tuple (floor)",
                per_record(lambda: [tuple(w) for w in old_wire])))
    out.append(("append to the ring (TaskStream.add_reports)",
                per_record(lambda: stream.add_reports("tcp://127.0.0.1:1", decoded, []))))
    out.append(("build dask's dict (get_task_stream)", per_record(lambda: stream.window(count=batch))))
    assert isinstance(decoded[0], Finished)
    return out


def main() -> None:
    args = parse_args(__doc__, extra=lambda p: (
        p.add_argument("--baseline", metavar="REV", help="also run actorrt as of this commit (or directory)"),
        p.add_argument("--child", action="store_true", help=argparse_hidden())))
    chosen = workloads(args.quick)
    rows = compare(chosen, args)
    if args.child:  # the parent reads the last line
        print(json.dumps({r.workload: r.seconds.get("actorrt") for r in rows}))
        return
    baseline = run_baseline(args.baseline, args) if args.baseline else {}
    header = ["workload", "actorrt", "dask", *(["actorrt " + args.baseline] if args.baseline else []), "ratio"]
    lines = []
    for r in rows:
        dask = r.value("dask")  # ("-" where dask was not run, as every script's table)
        line = [r.workload, fmt_seconds(r.value("actorrt") or 0), "-" if dask is None else fmt_seconds(dask)]
        if args.baseline:
            s = baseline.get(r.workload)
            line.append("-" if s is None else fmt_seconds(s / (r.tasks or 1)))
        line.append("n/a" if r.ratio is None else f"{r.ratio:.1f}x")
        lines.append(line)
    print("task stream cost (2 worker processes x 1 thread; time per task, best of", args.repeat, "runs)")
    print(format_columns(header, lines))
    print("ratio = dask time / actorrt time (>1 means actorrt faster)")
    print()
    print("scheduler side, per record (this process)")
    print(format_columns(["step", "time"], [[what, fmt_seconds(s)] for what, s in scheduler_side(args.quick)]))


def argparse_hidden() -> str:
    import argparse
    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
