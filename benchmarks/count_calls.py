"""Python calls per task, by module and function: a figure the machine's noise cannot move.

    python benchmarks/count_calls.py                          # map, chain and a round trip
    python benchmarks/count_calls.py --workload chain --top 40
    python benchmarks/count_calls.py --save now.json          # keep the counts ...
    PYTHONPATH=/tmp/old python benchmarks/count_calls.py --save old.json
    python benchmarks/count_calls.py --against old.json       # ... and print what changed

Timings on a shared 2-core machine move by 20-40% from one run to the next, so a 10%
slowdown hides in them. The number of Python function calls a task costs does not
move: this script counts the calls into actorrt's own modules (``sys.setprofile`` on
every thread of an in-process cluster: the caller's, the loop's, the workers' pool
threads) while it runs a workload, and divides by the number of tasks. A call is not
a fixed cost, but a change in the count points at the code that changed, and a count
that grew by half is work to look at however the timings came out.

An in-process cluster (``processes=False``) runs the same scheduler, worker and
client code as one with worker processes, minus the sockets. Not a comparison with
dask (the smoke test runs it for its table only).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import threading
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import format_columns, positive_count  # noqa: E402
from task_workloads import Driver, chain, map_gather, round_trips  # noqa: E402


WORKLOADS: dict[str, Driver] = {"map": map_gather, "chain": chain, "round-trip": round_trips}


class CallCounter:
    """Counts, while ``active``, calls into functions whose file lies under ``root``.
    ``hook`` goes on every thread: set before the cluster starts, it is inherited by
    each thread started after (the loop's, the pool's, the actors' lanes)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.active = False
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self._lock = threading.Lock()

    def hook(self, frame: Any, event: str, arg: Any) -> None:
        if event != "call" or not self.active:
            return
        code = frame.f_code
        if code.co_filename.startswith(self.root):
            key = (os.path.relpath(code.co_filename, self.root), getattr(code, "co_qualname", code.co_name))
            with self._lock:  # (Counter's += is not atomic across threads)
                self.counts[key] += 1


def count(workload: str, n: int) -> tuple[int, dict[str, int]]:
    """Run ``workload`` once to warm up and once counted; the tasks and the counts."""
    import actorrt
    from actorrt import Client

    counter = CallCounter(os.path.dirname(os.path.abspath(actorrt.__file__)))
    run = WORKLOADS[workload]
    threading.setprofile(counter.hook)
    sys.setprofile(counter.hook)
    try:
        with Client(n_workers=2, threads_per_worker=1, processes=False) as client:
            run(client, n)
            counter.active = True
            tasks = run(client, n)
            # What the tasks leave behind is theirs too: their releases, which the
            # scheduler has handled once it answers a question asked after them.
            client.scheduler_info()
            counter.active = False
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
    return tasks, {f"{path}:{name}": c for (path, name), c in counter.counts.items()}


def module_of(key: str) -> str:
    return key.split(":", 1)[0]


def report(workload: str, tasks: int, counts: dict[str, int], top: int,
           against: dict[str, int] | None = None, against_tasks: int | None = None) -> str:
    per = {k: v / tasks for k, v in counts.items()}
    old = {k: v / against_tasks for k, v in against.items()} if against and against_tasks else None
    lines = [f"=== {workload}: {tasks:,} tasks, {sum(per.values()):.1f} calls into actorrt per task"
             + (f" (against {sum(old.values()):.1f})" if old is not None else "") + " ==="]
    modules: collections.Counter[str] = collections.Counter()
    old_modules: collections.Counter[str] = collections.Counter()
    for k, v in per.items():
        modules[module_of(k)] += v  # type: ignore[assignment]
    for k, v in (old or {}).items():
        old_modules[module_of(k)] += v  # type: ignore[assignment]

    def rows(now: collections.Counter | dict, before: collections.Counter | dict | None) -> list[tuple[str, ...]]:
        names = set(now) | set(before or {})
        key: Callable[[str], float] = (lambda m: -now.get(m, 0)) if before is None else \
            (lambda m: -abs(now.get(m, 0) - before.get(m, 0)))
        out = []
        for name in sorted(names, key=key)[:top]:
            cells = [name, f"{now.get(name, 0):.2f}"]
            if before is not None:
                cells.insert(1, f"{before.get(name, 0):.2f}")
            out.append(tuple(cells))
        return out

    head = ("calls per task: before", "now") if old is not None else ("calls per task",)
    lines.append(format_columns(("module", *head), rows(modules, old_modules if old is not None else None)))
    lines.append("")
    lines.append(format_columns(("function", *head), rows(per, old)))
    return "\n".join(lines)


def read_saved(parser: argparse.ArgumentParser, path: str) -> dict:
    """A ``--save`` file's counts, by workload; a file that is not one ends the run
    with an error naming it."""
    try:
        with open(path) as f:
            saved = json.load(f)
        for entry in saved.values():
            if not (isinstance(entry["tasks"], int) and entry["tasks"] > 0 and isinstance(entry["counts"], dict)):
                raise ValueError("an entry without a task count and counts")
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        parser.error(f"--against {path}: not a file count_calls.py --save wrote ({type(e).__name__}: {e})")
    return saved


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), action="append",
                        help="repeatable; default: all")
    parser.add_argument("--n", type=positive_count, default=None,
                        help="tasks per workload (default 3,000; --quick 300); a tenth of that one at a time")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--top", type=positive_count, default=25, help="modules and functions listed")
    parser.add_argument("--save", metavar="FILE", help="write the counts as JSON")
    parser.add_argument("--against", metavar="FILE", help="a --save file: list what changed since")
    args = parser.parse_args(argv)
    n = args.n or (300 if args.quick else 3_000)
    before = read_saved(parser, args.against) if args.against else None
    saved = {}
    for workload in args.workload or list(WORKLOADS):
        tasks, counts = count(workload, n if workload != "round-trip" else max(1, n // 10))
        saved[workload] = {"tasks": tasks, "counts": counts}
        old = before.get(workload) if before is not None else None
        if before is not None and old is None:
            print(f"({args.against} has no counts for {workload}: nothing to compare with)")
        print(report(workload, tasks, counts, args.top,
                     old["counts"] if old else None, old["tasks"] if old else None))
        print()
    if args.save:
        with open(args.save, "w") as f:
            json.dump(saved, f)


if __name__ == "__main__":
    main()
