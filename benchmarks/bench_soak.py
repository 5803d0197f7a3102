"""Soak: a mixed workload for a long time, watching memory and throughput (issue 13, point 4).

    python benchmarks/bench_soak.py                      # one hour, a row every 60 s
    python benchmarks/bench_soak.py --duration 600 --interval 60 --dask
    python benchmarks/bench_soak.py --scheduler-process  # scheduler and workers from the CLI
    python benchmarks/bench_soak.py --quick --no-dask    # 3 intervals of 5 s (the smoke test)

A benchmark, not a test. On a real local cluster (2 worker processes x 1 thread; the
scheduler in this process as LocalCluster runs it, or with ``--scheduler-process`` an
``actorrt-scheduler`` and two ``actorrt-worker`` processes, so that every process is
measured on its own), rounds run back to back until ``--duration`` is up. One round:

* tasks: a map + gather, chains of dependent submits, a map iterated with as_completed;
* actor calls: actors created, called (pipelined and one at a time) and dropped, plus
  one long-lived actor called every round;
* primitive operations on objects named for the round and released at its end: Queue
  put/get (also fed by a task on a worker), Lock and Semaphore acquire/release, Event
  set/wait/clear, Variable set/get/delete; Pub/Sub messages (actorrt only: dask
  2026 has no Pub/Sub) are counted apart so that the primitive rates compare like
  with like.

Every ``--interval`` seconds a row records the rate of each kind over the time spent
on that kind, the RSS of every process (/proc/<pid>/statm; the nannies are not counted),
and the scheduler's number of tasks once the round's releases have arrived (only the
long-lived actor's key should be left). The summary compares the last interval with
the first: throughput kept (each rate >= 0.8x) and memory flat (each process grew
< 10%). ``--tracemalloc`` also prints, per process and interval, the source lines
whose allocations grew most (slow: for finding a leak, not for figures);
``--reuse-names`` names the primitives once for the whole run instead of per round. ``--dask``
runs the same workload on dask.distributed afterwards, for as long (``--quick`` runs
it unless ``--no-dask``), and prints its table and a side-by-side comparison.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

# This checkout's actorrt first (a script's sys.path starts with its own folder, not the
# repository, so an installed actorrt would be imported instead), then common.py.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(_HERE), _HERE]
from common import (CLIENTS, N_WORKERS, THREADS_PER_WORKER, Row, format_columns,  # noqa: E402
                    have_dask, parse_args, print_table)
from task_workloads import Counter, add, inc  # noqa: E402

KINDS = ("tasks", "actor calls", "primitive ops", "pubsub msgs")
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MEMORY_GROWTH_LIMIT = 0.10   # "memory flat": < 10% growth after the first interval
THROUGHPUT_KEPT = 0.8        # "throughput kept": last >= 0.8x first


@dataclass
class Sizes:
    """What one round does (the full sizes make a round last a fraction of a second)."""

    map_n: int = 200          # map + gather
    chains: int = 10          # chains of dependent submits ...
    chain_len: int = 10       # ... this long
    as_completed_n: int = 100
    actors: int = 2           # created and dropped per round
    pipelined_calls: int = 50  # per actor, sent at once
    sequential_calls: int = 10  # per actor (and to the long-lived one), one at a time
    prim_n: int = 10          # round trips per primitive
    pubsub_n: int = 50


# --- the workload's pieces (module level: the workers unpickle them) -----------------------
# (inc, add and Counter are task_workloads', which travel by value.)
def fill_queue(libname: str, name: str, n: int) -> int:
    """A task feeding a queue the client drains (primitives used from a worker)."""
    q = importlib.import_module(libname).Queue(name)
    for i in range(n):
        q.put(i)
    return n


def _lib(client: Any) -> Any:
    name = "distributed" if type(client).__module__.startswith("distributed") else "actorrt"
    return importlib.import_module(name)


def run_tasks(client: Any, lib: Any, s: Sizes, counts: dict[str, int]) -> None:
    futures = client.map(inc, range(s.map_n), pure=False)
    assert client.gather(futures)[-1] == s.map_n
    del futures
    ends = []
    for c in range(s.chains):
        x = client.submit(inc, c, pure=False)
        for _ in range(s.chain_len - 1):
            x = client.submit(add, x, 1, pure=False)
        ends.append(x)
    assert client.gather(ends) == [c + s.chain_len for c in range(s.chains)]
    del ends, x
    futures = client.map(inc, range(s.as_completed_n), pure=False)
    for f in lib.as_completed(futures):
        f.result()
    del futures, f
    counts["tasks"] += s.map_n + s.chains * s.chain_len + s.as_completed_n


def run_actors(client: Any, s: Sizes, long_lived: Any, counts: dict[str, int]) -> None:
    futures = [client.submit(Counter, actor=True, pure=False) for _ in range(s.actors)]
    actors = [f.result() for f in futures]
    for a in actors:
        pending = [a.increment() for _ in range(s.pipelined_calls)]
        # (dask runs one caller's calls in no set order)
        assert max(p.result() for p in pending) == s.pipelined_calls
        for _ in range(s.sequential_calls):
            a.increment().result()
    for _ in range(s.sequential_calls):
        long_lived.increment().result()
    # Dropped (every reference, the loop's too): the scheduler releases them and the
    # workers stop them.
    del actors, futures, a, pending
    counts["actor calls"] += s.actors * (s.pipelined_calls + s.sequential_calls) + s.sequential_calls


def run_primitives(client: Any, lib: Any, s: Sizes, tag: str, counts: dict[str, int]) -> None:
    n = s.prim_n
    q = lib.Queue(f"soak-q-{tag}")
    for i in range(n):
        q.put(i)
        q.get(timeout=30)
    fed = client.submit(fill_queue, lib.__name__, f"soak-q-{tag}", n, pure=False)
    assert [q.get(timeout=30) for _ in range(n)] == list(range(n))
    fed.result()
    del fed
    lock = lib.Lock(f"soak-lock-{tag}")
    for _ in range(n):
        lock.acquire()
        lock.release()
    sem = lib.Semaphore(max_leases=2, name=f"soak-sem-{tag}")
    for _ in range(n):
        sem.acquire()
        sem.release()
    ev = lib.Event(f"soak-ev-{tag}")
    for _ in range(n):
        ev.set()
        ev.wait(timeout=30)
        ev.clear()
    var = lib.Variable(f"soak-var-{tag}")
    for i in range(n):
        var.set(i)
        var.get(timeout=30)
    var.delete()
    for obj in (q, lock, sem):  # what the runtime offers to release a named object
        close = getattr(obj, "close", None)
        if close is not None:
            close()
    counts["primitive ops"] += 2 * n + 2 * n + 2 * n + 2 * n + 3 * n + 2 * n + 1


def run_pubsub(lib: Any, s: Sizes, tag: str, counts: dict[str, int]) -> None:
    if not hasattr(lib, "Pub"):
        return  # (dask.distributed 2026 has none)
    sub = lib.Sub(f"soak-topic-{tag}")
    pub = lib.Pub(f"soak-topic-{tag}")
    for i in range(s.pubsub_n):
        pub.put(i)
    assert [sub.get(timeout=30) for _ in range(s.pubsub_n)] == list(range(s.pubsub_n))
    sub.close()
    counts["pubsub msgs"] += s.pubsub_n


def run_round(client: Any, lib: Any, s: Sizes, tag: str, long_lived: Any, counts: dict[str, int],
              busy: dict[str, float]) -> None:
    """One round; ``busy[kind]`` gains the seconds spent on each kind, so that each
    rate is its own (a slower kind does not hide behind the others' time)."""
    parts: list[tuple[str, Callable[[], None]]] = [
        ("tasks", lambda: run_tasks(client, lib, s, counts)),
        ("actor calls", lambda: run_actors(client, s, long_lived, counts)),
        ("primitive ops", lambda: run_primitives(client, lib, s, tag, counts)),
        ("pubsub msgs", lambda: run_pubsub(lib, s, tag, counts))]
    for kind, part in parts:
        t0 = time.perf_counter()
        part()
        busy[kind] += time.perf_counter() - t0


# --- what is measured between rounds ----------------------------------------------------------
def rss_mb(pid: int) -> float | None:
    """Resident set size of ``pid`` in MiB (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE / 2**20
    except (OSError, ValueError, IndexError):
        return None


def _actorrt_held(dask_scheduler: Any) -> int:
    return len(dask_scheduler.state.tasks)


def _dask_held(dask_scheduler: Any) -> int:
    return len(dask_scheduler.tasks)


def held_tasks(client: Any, runtime: str, floor: int, wait: float = 2.0) -> int:
    """The scheduler's task count once the round's releases have arrived (they travel
    asynchronously): polled up to ``wait`` s for it to come down to ``floor``."""
    count = _actorrt_held if runtime == "actorrt" else _dask_held
    deadline = time.monotonic() + wait
    while True:
        n = client.run_on_scheduler(count)
        if n <= floor or time.monotonic() > deadline:
            return n
        time.sleep(0.05)


def processes(client: Any, separate_scheduler: bool) -> dict[str, int]:
    """label -> pid of every process measured (worker pids asked again each time: a
    restarted worker is a new process)."""
    if separate_scheduler:
        out = {"client": os.getpid(), "scheduler": client.run_on_scheduler(os.getpid)}
    else:
        out = {"client+sched": os.getpid()}
    for i, (_, pid) in enumerate(sorted(client.run(os.getpid).items())):
        out[f"worker-{i}"] = pid
    return out


def trace_growth(top: int = 8, dask_worker: Any = None, dask_scheduler: Any = None) -> list[str]:
    """In the process it runs in: the ``top`` source lines whose traced allocations grew
    most since the previous call (the first call starts tracing and returns [])."""
    import tracemalloc
    if not tracemalloc.is_tracing():
        tracemalloc.start(1)
        return []
    snap = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>")])
    prev = getattr(tracemalloc, "_soak_previous", None)
    tracemalloc._soak_previous = snap  # type: ignore[attr-defined]
    if prev is None:
        return []
    stats = snap.compare_to(prev, "lineno")
    stats.sort(key=lambda st: st.size_diff, reverse=True)
    return [f"{st.size_diff / 1024:+9.1f} KiB {st.count_diff:+7d} blocks  "
            f"{st.traceback[0].filename}:{st.traceback[0].lineno}" for st in stats[:top] if st.size_diff > 0]


def trace_all(client: Any, separate_scheduler: bool) -> dict[str, list[str]]:
    out = {("client" if separate_scheduler else "client+sched"): trace_growth()}
    if separate_scheduler:
        out["scheduler"] = client.run_on_scheduler(trace_growth)
    by_address = client.run(trace_growth)
    for i, address in enumerate(sorted(by_address)):
        out[f"worker-{i}"] = by_address[address]
    return out


# --- one run -------------------------------------------------------------------------------------
@dataclass
class Interval:
    elapsed: float
    rates: dict[str, float]
    rss: dict[str, float | None]
    held: int
    rounds: int


@dataclass
class Run:
    runtime: str
    intervals: list[Interval] = field(default_factory=list)
    traces: list[dict[str, list[str]]] = field(default_factory=list)


def soak(client: Any, runtime: str, args: argparse.Namespace, sizes: Sizes) -> Run:
    lib = _lib(client)
    run = Run(runtime)
    long_future = client.submit(Counter, actor=True, pure=False)
    long_lived = long_future.result()
    for _ in range(3):  # warm up code paths and connections before the clock starts
        run_round(client, lib, sizes, f"warm-{_}", long_lived, {k: 0 for k in KINDS}, {k: 0.0 for k in KINDS})
    floor = held_tasks(client, runtime, 1)  # (the long-lived actor's key)
    if args.tracemalloc:
        trace_all(client, args.scheduler_process)
    start = time.perf_counter()
    next_mark = start + args.interval
    counts, busy = {k: 0 for k in KINDS}, {k: 0.0 for k in KINDS}
    rounds, tags = 0, itertools.count()
    while True:
        tag = "shared" if args.reuse_names else str(next(tags))
        run_round(client, lib, sizes, tag, long_lived, counts, busy)
        now = time.perf_counter()
        rounds += 1
        if now < next_mark:
            continue
        pids = processes(client, args.scheduler_process)
        row = Interval(now - start, {k: counts[k] / busy[k] if busy[k] else 0.0 for k in KINDS},
                       {label: rss_mb(pid) for label, pid in pids.items()},
                       held_tasks(client, runtime, floor), rounds)
        run.intervals.append(row)
        if args.tracemalloc:
            run.traces.append(trace_all(client, args.scheduler_process))
            _print_trace(run.traces[-1], len(run.intervals))
        print(f"# {runtime} {row.elapsed:7.0f} s: " + ", ".join(f"{row.rates[k]:,.0f} {k}/s" for k in KINDS)
              + f", held {row.held}, RSS " + " ".join(f"{k}={v:.0f}" for k, v in row.rss.items() if v),
              file=sys.stderr, flush=True)
        counts, busy = {k: 0 for k in KINDS}, {k: 0.0 for k in KINDS}
        rounds = 0
        if now - start >= args.duration - 1e-6 or len(run.intervals) >= args.intervals_max:
            break
        next_mark = time.perf_counter() + args.interval  # (sampling time is not an interval's)
    del long_lived, long_future
    return run


def _print_trace(trace: dict[str, list[str]], interval: int) -> None:
    for label, lines in trace.items():
        if lines:
            print(f"# tracemalloc, interval {interval}, {label}: grew most", file=sys.stderr)
            for line in lines:
                print(f"#   {line}", file=sys.stderr)
    sys.stderr.flush()


# --- clusters ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def separate_cluster(runtime: str) -> Iterator[Any]:
    """A scheduler and N_WORKERS workers, each its own process started from the CLI."""
    procs: list[subprocess.Popen] = []
    tmp = tempfile.mkdtemp(prefix="soak-")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "DASK_LOGGING__DISTRIBUTED": "error"}
    try:
        if runtime == "actorrt":
            sched = subprocess.Popen([sys.executable, "-m", "actorrt.deploy.cli", "scheduler", "--port", "0",
                                      "--dashboard-address", "none"], stdout=subprocess.PIPE, text=True,
                                     env=env, stdin=subprocess.DEVNULL)
            procs.append(sched)
            address = _read_address(sched)
            # (what it prints later must not fill the pipe and block it)
            threading.Thread(target=sched.stdout.read, daemon=True).start()  # type: ignore[union-attr]
            worker = [sys.executable, "-m", "actorrt.deploy.cli", "worker", address,
                      "--nthreads", str(THREADS_PER_WORKER)]
            target: Any = address
        else:
            dask_cli = shutil.which("dask") or "dask"
            sfile = os.path.join(tmp, "scheduler.json")
            procs.append(subprocess.Popen([dask_cli, "scheduler", "--port", "0", "--no-dashboard",
                                           "--scheduler-file", sfile], env=env, stdin=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
            worker = [dask_cli, "worker", "--scheduler-file", sfile, "--nthreads", str(THREADS_PER_WORKER),
                      "--no-dashboard"]
            _wait_file(sfile)
            target = None
        for _ in range(N_WORKERS):
            procs.append(subprocess.Popen(worker, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL if runtime == "dask" else None))
        client = _connect(runtime, target, os.path.join(tmp, "scheduler.json"))
        try:
            client.wait_for_workers(N_WORKERS, timeout=60)
            yield client
        finally:
            client.close()
    finally:
        for p in reversed(procs):  # the workers first: none of them tries to rejoin
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def _read_address(proc: subprocess.Popen) -> str:
    assert proc.stdout is not None
    for line in proc.stdout:
        m = re.search(r"scheduler at (\S+)", line)
        if m:
            return m.group(1)
    raise RuntimeError(f"actorrt scheduler exited ({proc.wait()}) without printing its address")


def _wait_file(path: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"dask scheduler wrote no {path} within {timeout} s")
        time.sleep(0.1)


def _connect(runtime: str, address: str | None, scheduler_file: str) -> Any:
    if runtime == "actorrt":
        import actorrt
        return actorrt.Client(address)
    import distributed
    return distributed.Client(scheduler_file=scheduler_file)


def cluster(runtime: str, args: argparse.Namespace) -> contextlib.AbstractContextManager:
    if args.scheduler_process:
        return separate_cluster(runtime)
    return CLIENTS[runtime]()


# --- the tables -----------------------------------------------------------------------------------
def format_run(run: Run, args: argparse.Namespace) -> str:
    labels = list(run.intervals[0].rss) if run.intervals else []
    header = ["elapsed", "tasks/s", "actor calls/s", "primitive ops/s", "pubsub msgs/s", "rounds",
              "held tasks", *(f"{label} MB" for label in labels)]
    lines = [[f"{r.elapsed:.0f} s", *(f"{r.rates[k]:,.0f}" if r.rates[k] else "-" for k in KINDS), str(r.rounds), str(r.held),
              *(_mb(r.rss.get(label)) for label in labels)] for r in run.intervals]
    where = "scheduler, client and 2 workers each their own process" if args.scheduler_process \
        else "scheduler in the client's process"
    out = [f"soak, {run.runtime}: {len(run.intervals)} intervals of {args.interval:g} s, "
           f"{N_WORKERS} worker processes x {THREADS_PER_WORKER} thread ({where}; "
           f"{'the same primitive names every round' if args.reuse_names else 'new primitive names each round'})",
           format_columns(header, lines)]
    out.extend(summary(run))
    return "\n".join(out)


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def summary(run: Run) -> list[str]:
    if len(run.intervals) < 2:
        return ["(fewer than 2 intervals: no summary)"]
    first, last = run.intervals[0], run.intervals[-1]
    out, kept, flat = [], True, True
    for k in KINDS:
        if first.rates[k] <= 0:
            continue
        ratio = last.rates[k] / first.rates[k]
        kept &= ratio >= THROUGHPUT_KEPT
        out.append(f"  {k}/s: last / first = {ratio:.2f}x ({first.rates[k]:,.0f} -> {last.rates[k]:,.0f})")
    for label, mb0 in first.rss.items():
        mb1 = last.rss.get(label)
        if mb0 is None or mb1 is None:
            out.append(f"  RSS {label}: not measured (process gone)")
            flat = False
            continue
        growth = (mb1 - mb0) / mb0
        flat &= growth < MEMORY_GROWTH_LIMIT
        out.append(f"  RSS {label}: {mb0:.1f} -> {mb1:.1f} MB, {mb1 - mb0:+.1f} MB ({growth:+.1%})")
    held = [r.held for r in run.intervals]
    out.append(f"  held tasks between rounds: {min(held)}..{max(held)}")
    out.append(f"{'PASS' if flat else 'FAIL'}: memory flat (growth < {MEMORY_GROWTH_LIMIT:.0%} after the "
               f"first interval, every process)")
    out.append(f"{'PASS' if kept else 'FAIL'}: throughput kept (last >= {THROUGHPUT_KEPT}x first, every kind)")
    return ["summary, last interval against the first:", *out]


def comparison(runs: dict[str, Run]) -> list[Row]:
    """Mean rate per kind over the whole run, in the common table (value = rate)."""
    rows = []
    for k in KINDS:
        seconds: dict[str, float | None] = {}
        for rt, run in runs.items():
            rates = [r.rates[k] for r in run.intervals]
            mean = sum(rates) / len(rates) if rates else 0.0
            seconds[rt] = 1.0 / mean if mean > 0 else None
        if any(v is not None for v in seconds.values()):
            rows.append(Row(f"{k}, mean over the run", seconds, tasks=1, unit=k.split()[-1]))
    return rows


def _extra(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=float, default=3600.0, help="seconds per runtime (default 3600)")
    p.add_argument("--interval", type=float, default=60.0, help="seconds per row (default 60)")
    p.add_argument("--dask", action="store_true", help="also run on dask.distributed, afterwards")
    p.add_argument("--scheduler-process", action="store_true",
                   help="scheduler and workers as CLI processes (each measured on its own)")
    p.add_argument("--reuse-names", action="store_true",
                   help="the same primitive names every round (default: new names per round)")
    p.add_argument("--tracemalloc", action="store_true",
                   help="print the source lines whose allocations grew, per process and interval (slow)")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__, argv, extra=_extra)
    args.intervals_max = 1 << 30
    if args.quick:
        args.interval, args.duration, args.intervals_max = 5.0, 15.0, 3
    wanted = ["actorrt"]
    if have_dask() and not args.no_dask and (args.dask or args.quick):
        wanted.append("dask")
    print(f"# load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", file=sys.stderr)
    runs: dict[str, Run] = {}
    for runtime in wanted:
        print(f"# {runtime}: soak for {args.duration:g} s", file=sys.stderr, flush=True)
        with cluster(runtime, args) as client:
            runs[runtime] = soak(client, runtime, args, Sizes())
        print(format_run(runs[runtime], args), flush=True)
        print(flush=True)
    print_table(comparison(runs), title="soak: mean rates over the run (1 round = tasks, actors, primitives)")
    print(f"load average at end (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} cores", flush=True)


if __name__ == "__main__":  # dask's worker processes re-import this module
    main()
