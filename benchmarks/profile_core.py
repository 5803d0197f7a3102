"""Where a task's time goes: CPU per task per process and thread, and a profile of each.

    python benchmarks/profile_core.py                        # submit and map, py-spy if installed
    python benchmarks/profile_core.py --workload map --n 20000 --top 30
    python benchmarks/profile_core.py --profiler cprofile    # exact call counts, more distortion
    python benchmarks/profile_core.py --quick

Runs on ``Client(n_workers=2, threads_per_worker=1)`` with worker processes, twice:

1. unprofiled: CPU seconds of every thread of the client+scheduler process and of each
   worker process (from /proc), divided by the number of tasks: µs per task per thread;
2. profiled, with either
   * ``py-spy`` (``pip install py-spy``; sampling, little distortion): attached to this
     process and its worker subprocesses for the workload only; samples whose innermost
     frame waits (epoll, a lock, the pool's queue) are dropped as idle; or
   * ``cProfile`` (deterministic, wall-clock timer, exact calls per task but slows
     small Python functions down): in this process the caller's thread and the loop
     thread (client host and scheduler share it); in each worker its loop thread,
     between SIGUSR1 and SIGUSR2, and its pool threads for their whole life, through
     a ``sitecustomize`` hook put on the workers' PYTHONPATH.

Read profiled figures as shares; use the unprofiled table for absolute costs. Not a
comparison with dask, so the smoke test does not run it.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import fmt_seconds, format_columns, positive_count  # noqa: E402
from task_workloads import (Driver, chain, map_gather, queue_task_to_task, round_trips,  # noqa: E402
                            submit_gather, tasks_from_tasks)

# Installed as sitecustomize.py in the worker processes (only its env var turns it on).
PROFILE_HOOK = '''
import atexit, cProfile, os, signal, threading
_dir = os.environ.get("ACTORRT_PROFILE_DIR")
if _dir:
    _main = cProfile.Profile()
    _threads = []
    _run = threading.Thread.run

    def _profiled_run(self):
        _threads.append(self)
        prof = cProfile.Profile()
        prof.enable()
        try:
            _run(self)
        finally:
            prof.disable()
            prof.dump_stats(os.path.join(_dir, f"worker-{os.getpid()}-thread-{self.name}.prof"))

    threading.Thread.run = _profiled_run

    def _start(*_):
        _main.enable()

    def _stop(*_):
        _main.disable()
        _main.dump_stats(os.path.join(_dir, f"worker-{os.getpid()}-loop.prof"))

    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _stop)

    @atexit.register
    def _join():
        for t in _threads:
            t.join(5)
'''

# Time spent waiting, not working: left out of the busy totals and the top lists.
IDLE = ("method 'poll' of 'select.epoll'", "method 'acquire' of '_thread.lock'",
        "method 'get' of '_queue.SimpleQueue'", "method 'select' of 'select.epoll'",
        "built-in method time.sleep", "method 'wait' of", "method 'control' of 'select.kqueue'")

WORKLOADS: dict[str, Driver] = {
    "submit": submit_gather, "map": map_gather, "round-trip": round_trips, "chain": chain,
    "tasks-from-tasks": tasks_from_tasks, "queue": queue_task_to_task}


# --- CPU per thread from /proc ------------------------------------------------------
def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds per thread (by native id) of process ``pid``: the scheduler's own
    count in nanoseconds (``schedstat``) where the kernel keeps it, else 10 ms ticks. (A
    thread that works a few milliseconds in a quick run shows 0 in ticks more often than
    not.)"""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        cpu = _schedstat_seconds(pid, tid)
        if cpu is None:
            cpu = _stat_seconds(pid, tid)
        if cpu is not None:  # (else the thread ended meanwhile)
            out[int(tid)] = cpu
    return out


def _schedstat_seconds(pid: int, tid: str) -> float | None:
    try:
        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_seconds(pid: int, tid: str) -> float | None:
    try:
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_SECOND


def cpu_resolution() -> str:
    """How finely :func:`thread_cpu` counts here."""
    return "ns" if os.path.exists("/proc/self/schedstat") else "10 ms ticks"


def _children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux)."""
    out: list[int] = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(child) for child in f.read().split())
        except OSError:
            continue  # the thread ended meanwhile
    return out


def worker_pids(client: Any) -> dict[str, int]:
    """The worker processes. Under a nanny (the default) that is the nanny's child: the
    cluster's own handle is the nanny, which runs no task. (A tree from before the
    nanny has no ``nanny`` attribute: its handles are the workers, for A/B runs.)"""
    out = {}
    nanny = getattr(client.cluster, "nanny", False)
    for name, proc in client.cluster.workers.items():
        children = _children(proc.pid) if nanny else []
        out[f"worker {name}"] = children[0] if children else proc.pid
    return out


def _thread_label(pid: int, tid: int) -> str:
    if pid == os.getpid():
        names = {t.native_id: t.name for t in threading.enumerate()}
        return names.get(tid, f"thread {tid}")
    return "MainThread (loop)" if tid == pid else f"thread {tid} (pool)"


#: Threads of a process the CPU table shows one by one, the busiest first; the rest in one line.
SHOWN_THREADS = 4


def cpu_table(client: Any, run: Callable[[], int]) -> str:
    """CPU per thread of every process while ``run()`` runs its tasks (it returns how many)."""
    procs = {"client+scheduler": os.getpid(), **worker_pids(client)}
    before = {p: thread_cpu(pid) for p, pid in procs.items()}
    t0 = time.perf_counter()
    n = run()
    wall = time.perf_counter() - t0
    after = {p: thread_cpu(pid) for p, pid in procs.items()}
    lines, total = [], 0.0
    for p, pid in procs.items():
        used = {tid: cpu - before[p].get(tid, 0.0) for tid, cpu in after[p].items()}
        busiest = sorted((tid for tid in used if used[tid] > 0), key=lambda tid: -used[tid])
        for tid in busiest[:SHOWN_THREADS]:
            lines.append((p, _thread_label(pid, tid), fmt_seconds(used[tid]), f"{used[tid] / n * 1e6:.1f}"))
        rest = busiest[SHOWN_THREADS:]
        if rest:  # (a task that secedes leaves its thread: tasks-from-tasks makes hundreds)
            cpu = sum(used[tid] for tid in rest)
            kind = "" if pid == os.getpid() else " (pool)"
            lines.append((p, f"{len(rest)} more threads{kind}", fmt_seconds(cpu), f"{cpu / n * 1e6:.1f}"))
        total += sum(used[tid] for tid in busiest)
    lines.append(("all", "", fmt_seconds(total), f"{total / n * 1e6:.1f}"))
    head = (f"unprofiled: {n:,} tasks in {wall:.3f} s = {n / wall:,.0f} tasks/s "
            f"(CPU from /proc, in {cpu_resolution()})")
    return head + "\n" + format_columns(("process", "thread", "CPU", "µs/task"), lines)


# --- py-spy ---------------------------------------------------------------------------
# An innermost frame on one of these source lines is a thread waiting, not working.
_IDLE_LINE = re.compile(r"\._work\.get\(|\.acquire\(|\.poll\(|\.wait\(|\.select\(|sleep\(")
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]+):(?P<line>\d+)\)$")


class Samples:
    """py-spy's raw (collapsed) output, aggregated per process/thread."""

    def __init__(self, path: str, rate: int) -> None:
        self.rate = rate
        self.active: Counter = Counter()   # (proc, thread) -> samples
        self.idle: Counter = Counter()
        self.own: Counter = Counter()      # ((proc, thread), frame) -> samples as innermost frame
        self.incl: Counter = Counter()     # ((proc, thread), frame) -> samples anywhere in the stack
        self.modules: Counter = Counter()  # ((proc, thread), module) -> own samples
        with open(path) as f:
            for line in f:
                self._add(line)

    def _add(self, line: str) -> None:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            return
        n = int(count)
        frames = stack.split(";")
        procs = [fr for fr in frames if fr.startswith("process ")]
        thread = next((fr for fr in frames if fr.startswith("thread (")), "thread ?")
        where = (_process_label(procs[-1] if procs else ""), thread.partition(": ")[2] or thread)
        code = [fr for fr in frames if not fr.startswith(("process ", "thread ("))]
        if not code or _is_idle_frame(code[-1]):
            self.idle[where] += n
            return
        self.active[where] += n
        self.own[(where, code[-1])] += n
        self.modules[(where, _frame_module(code[-1]))] += n
        for fn in {_function_of(fr) for fr in code}:
            self.incl[(where, fn)] += n

    def report(self, n: int, top: int) -> str:
        us = 1e6 / self.rate / n  # µs per task of one sample
        out = []
        for where, samples in sorted(self.active.items(), key=lambda kv: -kv[1]):
            title = f"{where[0]}, {where[1]}: {samples * us:.1f} µs/task active ({samples} samples)"
            own = sorted(((v, fr) for (w, fr), v in self.own.items() if w == where), reverse=True)[:top]
            incl = sorted(((v, fn) for (w, fn), v in self.incl.items()
                           if w == where and "actorrt/" in fn and v < 0.97 * samples), reverse=True)[:top]
            mods = sorted(((v, m) for (w, m), v in self.modules.items() if w == where), reverse=True)[:10]
            out.append(title)
            out.append(format_columns(("own time (innermost frame)", "µs/task", "share"),
                                      [(_short_frame(fr), f"{v * us:.2f}", f"{100 * v / samples:.1f}%")
                                       for v, fr in own]))
            out.append("by module: " + ", ".join(f"{m} {v * us:.1f}" for v, m in mods))
            out.append(format_columns(("actorrt function (inclusive)", "µs/task", "share"),
                                      [(fn[:95], f"{v * us:.2f}", f"{100 * v / samples:.1f}%")
                                       for v, fn in incl]))
            out.append("")
        return "\n".join(out)


def _process_label(frame: str) -> str:
    if "actorrt.deploy.cli worker" in frame:
        m = re.search(r"--name (\S+)", frame)
        return f"worker {m.group(1) if m else '?'}"
    return "client+scheduler"


def _is_idle_frame(frame: str) -> bool:
    import linecache
    m = _FRAME.match(frame)
    if m is None:
        return False
    text = linecache.getline(_resolve(m["file"]), int(m["line"]))
    return bool(_IDLE_LINE.search(text))


def _resolve(short: str) -> str:
    """py-spy prints paths relative to sys.path entries; find the file again."""
    for base in sys.path:
        candidate = os.path.join(base, short)
        if os.path.exists(candidate):
            return candidate
    return short


def _function_of(frame: str) -> str:
    """The frame without its line number: inclusive time is per function."""
    m = _FRAME.match(frame)
    return f"{m['func']} ({m['file']})" if m else frame


def _frame_module(frame: str) -> str:
    m = _FRAME.match(frame)
    return m["file"] if m else frame


def _short_frame(frame: str) -> str:
    m = _FRAME.match(frame)
    return f"{m['func']} ({m['file']}:{m['line']})"[:95] if m else frame[:95]


def pyspy_run(work: Driver, n: int, top: int, rate: int, gil: bool) -> None:
    import actorrt
    with tempfile.TemporaryDirectory() as tmp, \
            actorrt.Client(n_workers=2, threads_per_worker=1) as client:
        work(client, min(n, 500))  # warm up
        out = os.path.join(tmp, "samples.txt")
        spy = subprocess.Popen(["py-spy", "record", "--pid", str(os.getpid()), "--subprocesses",
                                "--threads", "--nonblocking", "--rate", str(rate), "--format", "raw",
                                *(["--gil"] if gil else []), "-o", out], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)  # py-spy attaches to the process tree
        t0 = time.perf_counter()
        n = work(client, n)
        wall = time.perf_counter() - t0
        spy.send_signal(signal.SIGINT)
        _, err = spy.communicate(timeout=60)
        if not os.path.exists(out):
            print(f"py-spy wrote no samples: {err.strip()[-500:]}")
            return
        print(f"py-spy at {rate} Hz{' (--gil: only threads holding the GIL)' if gil else ''}: "
              f"{n:,} tasks in {wall:.3f} s = {n / wall:,.0f} tasks/s while sampled")
        print("Own time on a def/for/while line is mostly a thread waiting to take the GIL back\n"
              "(Python 3.11 hands it over there); --gil leaves those samples out.\n")
        print(Samples(out, rate).report(n, top))


# --- cProfile -------------------------------------------------------------------------
def _is_idle(func: tuple) -> bool:
    text = pstats.func_std_string(func)
    return any(marker in text for marker in IDLE)


def summary(title: str, stats: pstats.Stats, n: int, top: int) -> str:
    rows = [(tt, nc, func) for func, (cc, nc, tt, ct, callers) in stats.stats.items()  # type: ignore[attr-defined]
            if not _is_idle(func)]
    rows.sort(key=lambda r: -r[0])
    busy = sum(r[0] for r in rows)
    lines = [(_short(func), f"{tt / n * 1e6:.2f}", f"{100 * tt / busy:.1f}%" if busy else "-", f"{nc / n:.2f}")
             for tt, nc, func in rows[:top]]
    head = f"{title}: busy {busy:.3f} s = {busy / n * 1e6:.1f} µs/task (profiled)"
    return head + "\n" + format_columns(("function (own time)", "µs/task", "share", "calls/task"), lines)


def by_module(stats: pstats.Stats, n: int) -> list[tuple[str, float]]:
    """Own time grouped by file (package module or C builtin)."""
    groups: dict[str, float] = {}
    for func, (cc, nc, tt, ct, callers) in stats.stats.items():  # type: ignore[attr-defined]
        if _is_idle(func):
            continue
        filename = func[0]
        key = f"builtin {func[2]}"[:60] if filename == "~" else _module_of(filename)
        groups[key] = groups.get(key, 0.0) + tt
    return sorted(((k, v / n * 1e6) for k, v in groups.items()), key=lambda kv: -kv[1])


def _module_of(filename: str) -> str:
    parts = filename.replace("\\", "/").split("/")
    for anchor in ("actorrt", "asyncio", "msgpack", "cloudpickle", "concurrent", "tornado"):
        if anchor in parts:
            i = parts.index(anchor)
            return "/".join(parts[i:])
    return parts[-1]


def _short(func: tuple) -> str:
    filename, line, name = func
    if filename == "~":
        return name[:90]
    return f"{_module_of(filename)}:{line} {name}"[:90]


def profile_client(client: Any, run: Callable[[], int]) -> tuple[pstats.Stats, pstats.Stats, int]:
    """Profile the caller's thread and the client's loop thread during ``run()``; and
    what it returned (the tasks it ran)."""
    caller, loop_prof = cProfile.Profile(), cProfile.Profile()
    on_loop = threading.Event()

    def enable() -> None:
        loop_prof.enable()
        on_loop.set()
    client.loop.call_soon_threadsafe(enable)
    on_loop.wait()
    caller.enable()
    try:
        n = run()
    finally:
        caller.disable()
        off = threading.Event()

        def disable() -> None:
            loop_prof.disable()
            off.set()
        client.loop.call_soon_threadsafe(disable)
        off.wait()
    return pstats.Stats(caller), pstats.Stats(loop_prof), n


def cprofile_run(work: Driver, n: int, top: int) -> None:
    import actorrt
    with tempfile.TemporaryDirectory() as tmp:
        hook_dir = os.path.join(tmp, "hook")
        os.makedirs(hook_dir)
        with open(os.path.join(hook_dir, "sitecustomize.py"), "w") as f:
            f.write(PROFILE_HOOK)
        env = {"ACTORRT_PROFILE_DIR": tmp,
               "PYTHONPATH": os.pathsep.join(p for p in (hook_dir, os.environ.get("PYTHONPATH")) if p)}
        warm = min(n, 500)
        with actorrt.Client(n_workers=2, threads_per_worker=1, worker_env=env) as client:
            warm = work(client, warm)
            pids = worker_pids(client)
            for pid in pids.values():
                os.kill(pid, signal.SIGUSR1)
            time.sleep(0.2)  # let each worker's loop wake up and run its handler
            caller, loop, n = profile_client(client, lambda: work(client, n))
            for pid in pids.values():
                os.kill(pid, signal.SIGUSR2)
            time.sleep(0.5)
        print(summary("client+scheduler process, caller's thread (submit, pickle, gather)", caller, n, top))
        print()
        print(summary("client+scheduler process, loop thread (client host + scheduler + comms)", loop, n, top))
        _print_modules(loop, n)
        for label, pid in pids.items():
            path = os.path.join(tmp, f"worker-{pid}-loop.prof")
            if not os.path.exists(path):
                print(f"{label}: no loop profile (signal not handled?)")
                continue
            stats = pstats.Stats(path)
            print(summary(f"{label} (pid {pid}), loop thread", stats, n, top))
            _print_modules(stats, n)
            for tp in sorted(p for p in os.listdir(tmp) if p.startswith(f"worker-{pid}-thread-")):
                tstats = pstats.Stats(os.path.join(tmp, tp))
                # Pool threads live from the first task: warm-up and workload both count.
                print(summary(f"{label}, pool thread {tp.split('-thread-')[1][:-5]} (per task of "
                              f"warm-up + workload, {warm + n:,})", tstats, warm + n, min(top, 10)))
                print()


def _print_modules(stats: pstats.Stats, n: int) -> None:
    out = io.StringIO()
    out.write("by module (µs/task): ")
    out.write(", ".join(f"{k} {v:.1f}" for k, v in by_module(stats, n)[:10]))
    print(out.getvalue())
    print()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=[*WORKLOADS, "all"], default="all")
    parser.add_argument("--n", type=positive_count, default=None, help="tasks per workload (default 20,000)")
    parser.add_argument("--top", type=positive_count, default=15, help="functions listed per thread")
    parser.add_argument("--profiler", choices=["py-spy", "cprofile", "none"], default=None,
                        help="default: py-spy when installed, else cprofile")
    parser.add_argument("--rate", type=positive_count, default=500, help="py-spy samples per second")
    parser.add_argument("--gil", action="store_true",
                        help="py-spy: sample only threads holding the GIL (drops GIL waits and syscalls)")
    parser.add_argument("--quick", action="store_true", help="1,000 tasks, top 8")
    args = parser.parse_args(argv)
    n = args.n or (1_000 if args.quick else 20_000)
    top = 8 if args.quick else args.top
    profiler = args.profiler or ("py-spy" if shutil.which("py-spy") else "cprofile")
    names = list(WORKLOADS) if args.workload == "all" else [args.workload]
    import actorrt
    for name in names:
        work = WORKLOADS[name]
        print(f"=== {name}, about {n:,} trivial tasks, 2 worker processes x 1 thread ===\n")
        with actorrt.Client(n_workers=2, threads_per_worker=1) as client:
            work(client, min(n, 500))  # warm up: connections, function caches, pool threads
            print(cpu_table(client, lambda: work(client, n)))
        print()
        if profiler == "py-spy":
            pyspy_run(work, n, top, args.rate, args.gil)
        elif profiler == "cprofile":
            cprofile_run(work, n, top)


if __name__ == "__main__":
    main()
