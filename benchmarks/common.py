"""A tiny harness shared by the benchmark scripts.

Each script describes its workloads once and runs them on actorrt and, when it is
installed, dask.distributed, in the same run, on the same cluster shape (two worker
processes with one thread each), then prints one table::

    from common import Workload, compare, parse_args, print_table

    def submit_gather(client, n=5_000):
        return client.gather([client.submit(inc, i, pure=False) for i in range(n)])

    args = parse_args(__doc__)
    rows = compare([Workload("submit+gather", submit_gather, tasks=5_000)], args)
    print_table(rows)

``ratio`` is always "how many times faster actorrt is": dask's time / actorrt's time,
or equivalently actorrt's throughput / dask's. Above 1 means actorrt is faster.

Run a script from the repository root: ``python benchmarks/bench_core.py [--quick]``.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

#: the cluster shape every comparison uses (issue 2, "Speed")
N_WORKERS = 2
THREADS_PER_WORKER = 1

RUNTIMES = ("actorrt", "dask")


# --- command line -------------------------------------------------------------
def parse_args(description: str | None = None, argv: Sequence[str] | None = None,
               extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """The flags every script accepts; ``extra(parser)`` may add the script's own.

    --quick      tiny sizes and one repetition (the smoke test uses it)
    --no-dask    run actorrt only
    --only NAME  run only workloads whose name contains NAME (repeatable)
    --repeat N   repetitions per workload (best one is reported)
    """
    parser = argparse.ArgumentParser(description=(description or "").strip().splitlines()[0]
                                     if description else None)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repetition")
    parser.add_argument("--no-dask", action="store_true", help="skip dask.distributed")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only workloads whose name contains NAME")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions (best is kept)")
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    return args


def positive_count(text: str) -> int:
    """An argparse ``type``: a whole number of at least 1 (``--n 0`` is refused, not
    taken for the default)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"a positive whole number, not {text!r}")
    return value


def have_dask() -> bool:
    """True when dask.distributed can be imported (without importing it)."""
    return importlib.util.find_spec("distributed") is not None


def runtimes(args: argparse.Namespace) -> list[str]:
    """The runtimes this run compares: actorrt always, dask when present and wanted."""
    names = ["actorrt"]
    if have_dask() and not getattr(args, "no_dask", False):
        names.append("dask")
    return names


# --- timing ---------------------------------------------------------------------
def timeit(fn: Callable[[], Any], repeat: int = 3, setup: Callable[[], Any] | None = None) -> float:
    """Best wall-clock seconds of ``repeat`` calls of ``fn()``.

    The best run is the one least disturbed by the rest of the machine; a full GC
    before each run keeps one run's garbage out of the next one's time.
    """
    best = float("inf")
    for _ in range(max(1, repeat)):
        if setup is not None:
            setup()
        gc.collect()
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def tree_cpu_seconds(root: int | None = None) -> float | None:
    """CPU seconds (user + system) used so far by process ``root`` and its live descendants.

    Linux only (reads /proc); None elsewhere. Used to report CPU per task summed over
    client, scheduler and worker processes, whatever the runtime's process tree.
    """
    if not os.path.isdir("/proc"):
        return None
    root = os.getpid() if root is None else root
    stats: dict[int, tuple[int, float]] = {}  # pid -> (ppid, cpu seconds)
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                text = f.read()
        except OSError:
            continue  # exited meanwhile
        # Fields after the ")" that closes the command name: state ppid ... utime(12) stime(13)
        fields = text[text.rindex(")") + 2:].split()
        stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
        todo.extend(children.get(pid, ()))
    return total


def with_cpu(run: Callable[[], Any]) -> tuple[Any, float | None]:
    """``run()``'s value and the CPU seconds this process and its descendants used
    meanwhile (None where that cannot be read)."""
    before = tree_cpu_seconds()
    value = run()
    after = tree_cpu_seconds()
    return value, (after - before if before is not None and after is not None else None)


# --- clients --------------------------------------------------------------------
@contextlib.contextmanager
def actorrt_client(n_workers: int = N_WORKERS, threads_per_worker: int = THREADS_PER_WORKER,
                   **kwargs: Any) -> Iterator[Any]:
    """An actorrt Client on a fresh local cluster of worker processes."""
    import actorrt
    client = actorrt.Client(n_workers=n_workers, threads_per_worker=threads_per_worker, **kwargs)
    try:
        yield client
    finally:
        client.close()


@contextlib.contextmanager
def dask_client(n_workers: int = N_WORKERS, threads_per_worker: int = THREADS_PER_WORKER,
                **kwargs: Any) -> Iterator[Any]:
    """A dask.distributed Client on a fresh LocalCluster of worker processes, quietly."""
    _silence_dask()
    import distributed
    kwargs.setdefault("processes", True)
    kwargs.setdefault("dashboard_address", None)
    kwargs.setdefault("silence_logs", logging.ERROR)
    client = distributed.Client(n_workers=n_workers, threads_per_worker=threads_per_worker, **kwargs)
    try:
        yield client
    finally:
        client.close()
        if client.cluster is not None:
            client.cluster.close()


def _silence_dask() -> None:
    # The environment variable reaches dask's worker processes (they read their
    # config at import); the logger levels cover this process.
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
    for name in ("distributed", "distributed.worker", "distributed.scheduler", "distributed.nanny",
                 "distributed.core", "distributed.utils_perf", "tornado"):
        logging.getLogger(name).setLevel(logging.ERROR)


CLIENTS: dict[str, Callable[..., contextlib.AbstractContextManager]] = {
    "actorrt": actorrt_client,
    "dask": dask_client,
}


# --- workloads and results ---------------------------------------------------------
@dataclass
class Workload:
    """One thing to time on each runtime.

    ``run(client)`` does the work (its wall time is measured). With ``tasks`` set, the
    table shows throughput (``unit``/s) instead of seconds, or with ``per_task`` the
    time per task (e.g. a round trip's latency). With ``needs_client=False``,
    ``run`` receives the runtime's client factory instead (a context manager; e.g.
    to time start-up) and is run once per repetition on no shared client.
    """

    name: str
    run: Callable[[Any], Any]
    tasks: int | None = None
    per_task: bool = False
    unit: str = "tasks"
    needs_client: bool = True
    repeat: int | None = None          # overrides --repeat (e.g. slow start-up timings)
    runtimes: tuple[str, ...] = RUNTIMES


@dataclass
class Row:
    """One line of the table: seconds per runtime (None when not run)."""

    workload: str
    seconds: dict[str, float | None] = field(default_factory=dict)
    tasks: int | None = None
    per_task: bool = False
    unit: str = "tasks"

    def value(self, runtime: str) -> float | None:
        """What the table shows: seconds, seconds per task, or tasks per second."""
        s = self.seconds.get(runtime)
        if s is None or self.tasks is None:
            return s
        if self.per_task:
            return s / self.tasks
        return self.tasks / s if s > 0 else float("inf")

    @property
    def rate_unit(self) -> str | None:
        return f"{self.unit}/s" if self.tasks is not None and not self.per_task else None

    @property
    def ratio(self) -> float | None:
        """dask's time / actorrt's time: above 1 means actorrt is faster."""
        a, d = self.seconds.get("actorrt"), self.seconds.get("dask")
        if a is None or d is None or a <= 0:
            return None
        return d / a


def compare(workloads: Sequence[Workload], args: argparse.Namespace,
            client_kwargs: dict[str, dict] | None = None,
            factories: dict[str, Callable[..., Any]] | None = None) -> list[Row]:
    """Run every workload on every runtime, one client per runtime; return the rows.

    The runtimes run one after the other (never side by side) so that neither steals
    the other's two cores. ``factories`` replaces the client context managers (e.g.
    with a pair of connected hosts) for scripts that measure something else.
    """
    only = getattr(args, "only", [])
    chosen = [w for w in workloads if not only or any(o in w.name for o in only)]
    rows = {w.name: Row(w.name, tasks=w.tasks, per_task=w.per_task, unit=w.unit) for w in chosen}
    makers = {**CLIENTS, **(factories or {})}
    for runtime in runtimes(args):
        todo = [w for w in chosen if runtime in w.runtimes]
        if not todo:
            continue
        kwargs = (client_kwargs or {}).get(runtime, {})
        factory = _bind(makers[runtime], kwargs)
        print(f"# {runtime}: {len(todo)} workload(s)", file=sys.stderr, flush=True)
        shared = [w for w in todo if w.needs_client]
        if shared:
            with factory() as client:
                for w in shared:
                    rows[w.name].seconds[runtime] = _time_one(w, client, args)
        for w in todo:
            if not w.needs_client:
                rows[w.name].seconds[runtime] = _time_one(w, factory, args)
    return [rows[w.name] for w in chosen]


def _bind(make: Callable[..., Any], kwargs: dict) -> Callable[[], Any]:
    return lambda: make(**kwargs)


def _time_one(w: Workload, target: Any, args: argparse.Namespace) -> float:
    repeat = w.repeat if w.repeat is not None else args.repeat
    if args.quick:
        repeat = 1
    seconds = timeit(lambda: w.run(target), repeat=repeat)
    print(f"#   {w.name}: {seconds:.3f} s", file=sys.stderr, flush=True)
    return seconds


# --- the table ------------------------------------------------------------------------
def fmt_seconds(value: float) -> str:
    """Seconds in a readable unit: s, ms or µs."""
    if value < 1e-3:
        return f"{value * 1e6:.1f} µs"
    if value < 0.1:
        return f"{value * 1e3:.2f} ms"
    return f"{value:.3f} s"


def _fmt(value: float | None, rate_unit: str | None) -> str:
    if value is None:
        return "-"
    if rate_unit is not None:
        return f"{value:,.0f} {rate_unit}"
    return fmt_seconds(value)


def format_columns(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    """A plain text table: first column left-aligned, the others right-aligned."""
    widths = [max([len(h), *(len(line[i]) for line in lines)]) for i, h in enumerate(header)]
    out = [" | ".join(h.ljust(w) for h, w in zip(header, widths)), "-+-".join("-" * w for w in widths)]
    for line in lines:
        out.append(" | ".join([line[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(line[1:], widths[1:])]))
    return "\n".join(out)


def format_table(rows: Sequence[Row | tuple], title: str | None = None) -> str:
    """The table as text. Rows are `Row`s or tuples ``(workload, actorrt_s, dask_s[, tasks])``."""
    norm = [r if isinstance(r, Row) else _row_from_tuple(r) for r in rows]
    lines = [(r.workload, _fmt(r.value("actorrt"), r.rate_unit), _fmt(r.value("dask"), r.rate_unit),
              "n/a" if r.ratio is None else f"{r.ratio:.1f}x") for r in norm]
    out = [title] if title else []
    out.append(format_columns(("workload", "actorrt", "dask", "ratio"), lines))
    out.append("ratio = dask time / actorrt time (>1 means actorrt faster)")
    return "\n".join(out)


def _row_from_tuple(t: tuple) -> Row:
    name, a, d, *rest = t
    return Row(name, {"actorrt": a, "dask": d}, tasks=rest[0] if rest else None)


def print_table(rows: Sequence[Row | tuple], title: str | None = None) -> None:
    """Print the table to stdout."""
    print(format_table(rows, title), flush=True)


#: the name other scripts were told to expect
run_table = print_table
