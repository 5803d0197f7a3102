"""Cost as the work grows: tasks/s and memory per task from 10⁴ to 10⁶ tasks, many workers,
and uneven work, on actorrt and dask.distributed side by side.

    python benchmarks/bench_scaling.py                  # 10⁴, 10⁵, 10⁶ (dask to 10⁵)
    python benchmarks/bench_scaling.py --quick          # 1,000 and 3,000 tasks, 20 workers
    python benchmarks/bench_scaling.py --sizes 10000 300000 --dask-max 10000

Every process stands alone, as on a real cluster: the scheduler and two workers (one
thread each) are started from each runtime's command line (``actorrt-scheduler``/
``actorrt-worker``, ``dask scheduler``/``dask worker``) and the client is this process,
so the memory of the client and of the scheduler are measured apart (RSS read from
``/proc/<pid>/statm``).

Tables:

* **throughput per size**: for n tasks, tasks/s of ``map`` + ``wait``, ``submit`` in a
  loop + ``wait``, ``as_completed`` over a map, and ``get`` of an n-node graph (chains of
  ten ``inc`` under a tree of sums), and each size's rate against the smallest size's
  (the "flat" column: 1.00 is a flat cost; the target is >= 0.8 at 10⁶).
* **memory per held task**: growth of the client's and the scheduler's RSS while n
  Futures of a map are held, per task (target <= 1 KiB in each); and the tasks the
  scheduler still holds once they are released (target 0).
* **many workers** (in-process workers, one thread each): wall time per task of a map of
  no-op tasks with 100 workers against 2 (target <= 1.2x).
* **uneven work**: 1,000 tasks of which 10% sleep 100x longer (0.1 s against 1 ms) on two
  workers: time against the ideal (all the work split evenly; target <= 1.2x).

ratio columns = dask's time / actorrt's (>1: actorrt faster); "-" where dask was not run
(past ``--dask-max`` it would take many minutes).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import subprocess
import sys
import time
from typing import Any, Callable, Iterator

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import _silence_dask, format_columns, have_dask  # noqa: E402

from actorrt.testing import stop_processes  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def inc(x: int) -> int:
    return x + 1


def add(*xs: int) -> int:
    return sum(xs)


def noop(x: int) -> None:
    return None


def work(i: int, long: bool) -> int:
    time.sleep(0.1 if long else 0.001)
    return i


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


# --- clusters of separate processes -----------------------------------------------------
def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    import socket
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with code {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


@contextlib.contextmanager
def cluster(runtime: str, workers: int = 2) -> Iterator[tuple[Any, int]]:
    """A client of a scheduler and ``workers`` one-thread workers, each its own process;
    yields (client, scheduler pid)."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, ACTORRT_SECRET=os.urandom(16).hex())
    if runtime == "actorrt":
        sched = [sys.executable, "-m", "actorrt.deploy.cli", "scheduler", "--port", str(port),
                 "--dashboard-address", "none"]
        worker = [sys.executable, "-m", "actorrt.deploy.cli", "worker", address, "--nthreads", "1"]
    else:
        _silence_dask()
        env["DASK_LOGGING__DISTRIBUTED"] = "error"
        dask = shutil.which("dask") or "dask"
        sched = [dask, "scheduler", "--port", str(port), "--no-dashboard"]
        worker = [dask, "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard"]
    procs = [subprocess.Popen(sched, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        _wait_port(port, procs[0])
        procs += [subprocess.Popen(worker, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                  for _ in range(workers)]
        if runtime == "actorrt":
            import actorrt
            client = actorrt.Client(address, secret=env["ACTORRT_SECRET"])
        else:
            import distributed
            client = distributed.Client(address)
        try:
            client.wait_for_workers(workers, timeout=60)
            yield client, procs[0].pid
        finally:
            client.close()
    finally:
        stop_processes(procs[::-1])


def _api(runtime: str) -> Any:
    if runtime == "actorrt":
        import actorrt
        return actorrt
    import distributed
    return distributed


# --- workloads ----------------------------------------------------------------------------
def run_map(client: Any, api: Any, n: int) -> None:
    futures = client.map(inc, range(n), pure=False)
    api.wait(futures)


def run_submit(client: Any, api: Any, n: int) -> None:
    futures = [client.submit(inc, i, pure=False) for i in range(n)]
    api.wait(futures)


def run_as_completed(client: Any, api: Any, n: int) -> None:
    done = 0
    for batch in api.as_completed(client.map(inc, range(n), pure=False)).batches():
        done += len(batch)
    assert done == n


def chains_graph(n: int, tag: str) -> tuple[dict, str]:
    """About ``n`` nodes: chains of ten incs, their ends summed by a tree of fan-in 10."""
    dsk: dict = {}
    ends = []
    for c in range(max(1, n // 11)):
        dsk[(tag, c, 0)] = c
        for i in range(1, 10):
            dsk[(tag, c, i)] = (inc, (tag, c, i - 1))
        ends.append((tag, c, 9))
    level = 0
    while len(ends) > 1:
        nxt = []
        for j in range(0, len(ends), 10):
            k = (tag + "-sum", level, j)
            dsk[k] = (add, *ends[j:j + 10])
            nxt.append(k)
        ends, level = nxt, level + 1
    return dsk, ends[0]


def run_get(client: Any, api: Any, n: int) -> None:
    dsk, out = chains_graph(n, f"g{random.random()}")
    client.get(dsk, out)


WORKLOADS: dict[str, Callable[[Any, Any, int], None]] = {
    "map + wait": run_map, "submit loop + wait": run_submit,
    "as_completed(map)": run_as_completed, "get(graph)": run_get,
}


def full_collection_seconds() -> float:
    """How long the process's garbage collector stops it to walk everything once."""
    import gc
    t0 = time.perf_counter()
    gc.collect()
    return time.perf_counter() - t0


def held_memory(client: Any, api: Any, scheduler_pid: int, n: int,
                runtime: str) -> tuple[float, float, int, float, float]:
    """(client bytes per held Future, scheduler bytes per held task, tasks left after
    release, seconds of a full garbage collection in the client, and in the scheduler)."""
    import gc
    gc.collect()
    c0, s0 = rss(os.getpid()), rss(scheduler_pid)
    futures = client.map(inc, range(n), pure=False)
    api.wait(futures)
    gc.collect()
    c1, s1 = rss(os.getpid()), rss(scheduler_pid)
    client_gc = full_collection_seconds()
    scheduler_gc = client.run_on_scheduler(full_collection_seconds)
    del futures
    gc.collect()
    left = _scheduler_tasks(client, runtime)
    return (c1 - c0) / n, (s1 - s0) / n, left, client_gc, scheduler_gc


def _scheduler_tasks(client: Any, runtime: str, timeout: float = 60) -> int:
    count = (lambda dask_scheduler: len(dask_scheduler.state.tasks)) if runtime == "actorrt" \
        else (lambda dask_scheduler: len(dask_scheduler.tasks))
    deadline = time.monotonic() + timeout
    while True:  # releases travel asynchronously: give them until the count settles at 0
        left = client.run_on_scheduler(count)
        if left == 0 or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


# --- the tables -------------------------------------------------------------------------------
def scaling(args: argparse.Namespace, runtimes: list[str]) -> None:
    rates: dict[tuple[str, str, int], float] = {}
    memory: dict[tuple[str, int], tuple[float, float, int]] = {}
    for runtime in runtimes:
        sizes = [n for n in args.sizes if runtime == "actorrt" or n <= args.dask_max]
        api = _api(runtime)
        with cluster(runtime) as (client, scheduler_pid):
            run_map(client, api, 200)  # warm up: functions cached, connections made
            for n in sizes:
                # Memory first: after a larger workload, freed memory the allocator keeps
                # would be reused and hide the growth.
                memory[(runtime, n)] = held_memory(client, api, scheduler_pid, n, runtime)
                print(f"# {runtime} memory n={n:,}: {memory[(runtime, n)]}", file=sys.stderr, flush=True)
                for name, fn in WORKLOADS.items() if not args.memory_only else ():
                    t0 = time.perf_counter()
                    fn(client, api, n)
                    rates[(runtime, name, n)] = n / (time.perf_counter() - t0)
                    print(f"# {runtime} {name} n={n:,}: {rates[(runtime, name, n)]:,.0f} tasks/s",
                          file=sys.stderr, flush=True)
    lines: list[tuple] = []
    flat: list[tuple] = []
    smallest = args.sizes[0]
    for name in WORKLOADS:
        for n in args.sizes:
            a, d = rates.get(("actorrt", name, n)), rates.get(("dask", name, n))
            base = rates.get(("actorrt", name, smallest))
            lines.append((f"{name}, n={n:,}", f"{a:,.0f}" if a else "-", f"{d:,.0f}" if d else "-",
                          f"{a / d:.1f}x" if a and d else "n/a"))
            flat.append((f"{name}, n={n:,}", f"{a / base:.2f}" if a and base else "-"))
    print("\nthroughput (tasks/s)")
    print(format_columns(("workload", "actorrt", "dask", "ratio"), lines))
    print("\nflat: actorrt's rate / its rate at the smallest size (target >= 0.8)")
    print(format_columns(("workload", "flat"), flat))
    lines = []
    for runtime in runtimes:
        for n in args.sizes:
            m = memory.get((runtime, n))
            if m is not None:
                lines.append((f"{runtime}, n={n:,}", f"{m[0] / 1024:.2f}", f"{m[1] / 1024:.2f}", str(m[2]),
                              f"{m[3]:.2f}", f"{m[4]:.2f}"))
    print("\nmemory per held task (KiB of RSS growth while the Futures of a map are held; left = "
          "tasks the scheduler holds after they are released; gc = seconds one full garbage "
          "collection stops the process while they are held)")
    print(format_columns(("size", "client KiB", "scheduler KiB", "left", "client gc s", "scheduler gc s"),
                         lines))


def many_workers(args: argparse.Namespace, runtimes: list[str]) -> None:
    ours = 2_000 if args.quick else 20_000
    many = 20 if args.quick else 100
    lines = []
    # dask's in-process workers with a hundred of them took minutes for this map: it is
    # measured on a tenth of the tasks, and not at all in --quick (the smoke test).
    for runtime in runtimes if not args.quick else ["actorrt"]:
        api = _api(runtime)
        n = ours if runtime == "actorrt" else 2_000
        per_task = {}
        for workers in (2, many):
            if runtime == "dask":
                _silence_dask()
            client = api.Client(processes=False, n_workers=workers, threads_per_worker=1, dashboard_address=None)
            try:
                client.wait_for_workers(workers, timeout=120)
                api.wait(client.map(noop, range(1_000), pure=False))
                t0 = time.perf_counter()
                api.wait(client.map(noop, range(n), pure=False))
                per_task[workers] = (time.perf_counter() - t0) / n
            finally:
                client.close()
            print(f"# {runtime} {workers} workers: {per_task[workers] * 1e6:.0f} us/task", file=sys.stderr, flush=True)
        lines.append((runtime, f"{per_task[2] * 1e6:.0f} µs", f"{per_task[many] * 1e6:.0f} µs",
                      f"{per_task[many] / per_task[2]:.2f}x"))
    print(f"\nmany workers: wall time per task of a map of no-op tasks (actorrt {ours:,}, dask 2,000), "
          "in-process workers (target for actorrt: 100 workers <= 1.2x of 2)")
    print(format_columns(("runtime", "2 workers", f"{many} workers", f"{many} / 2"), lines))


def uneven(args: argparse.Namespace, runtimes: list[str]) -> None:
    n = 100 if args.quick else 1_000
    rng = random.Random(1)
    longs = set(rng.sample(range(n), n // 10))
    ideal = (len(longs) * 0.1 + (n - len(longs)) * 0.001) / 2
    lines = []
    for runtime in runtimes:
        api = _api(runtime)
        with cluster(runtime) as (client, _):
            api.wait(client.map(work, range(20), [False] * 20, pure=False))
            t0 = time.perf_counter()
            api.wait(client.map(work, range(n), [i in longs for i in range(n)], pure=False))
            took = time.perf_counter() - t0
        lines.append((runtime, f"{took:.2f} s", f"{ideal:.2f} s", f"{took / ideal:.2f}x"))
    print(f"\nuneven work: {n:,} tasks, 10% of them 100x longer, 2 workers (target: <= 1.2x ideal)")
    print(format_columns(("runtime", "time", "ideal", "time / ideal"), lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (the smoke test)")
    parser.add_argument("--no-dask", action="store_true", help="actorrt only")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="numbers of tasks")
    parser.add_argument("--dask-max", type=int, default=100_000, help="largest size dask runs")
    parser.add_argument("--only", choices=("scaling", "workers", "uneven"), action="append", default=[])
    parser.add_argument("--memory-only", action="store_true", help="of the scaling part, only the memory table")
    args = parser.parse_args(argv)
    if args.sizes is None:
        args.sizes = [1_000, 3_000] if args.quick else [10_000, 100_000, 1_000_000]
    runtimes = ["actorrt"] + ([] if args.no_dask or not have_dask() else ["dask"])
    parts = args.only or ["scaling", "workers", "uneven"]
    if "scaling" in parts:
        scaling(args, runtimes)
    if "workers" in parts:
        many_workers(args, runtimes)
    if "uneven" in parts:
        uneven(args, runtimes)
    print(f"\n(load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: "
          "a shared machine; compare ratios, not absolute figures)")


if __name__ == "__main__":
    main()
