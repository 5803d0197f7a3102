"""Memory management: spilling past a limit, on actorrt and dask.distributed, side by side.

    python benchmarks/bench_memory.py            # 512 MiB per worker, best of 3
    python benchmarks/bench_memory.py --quick    # 256 MiB per worker, one repetition

Three measurements, each with a table:

* **map -> reduce at 2.5x the limit.** ``Client(n_workers=2, threads_per_worker=1,
  memory_limit=L)`` on both runtimes (worker processes, each under its nanny). A map
  makes 8 MiB numpy partitions until the results held are 2.5x the two workers'
  limits together; all of them are waited for (so they must be spilled), then summed
  by a tree of partial sums (4 partitions per task) and the partials added up. Wall
  time of the whole, and the peak resident size of each worker process (sampled
  every 10 ms from ``/proc/<pid>/statm``) divided by its limit.
* **spill and reload throughput.** Each runtime's worker store on its own, in this
  process, on the same directory: 64 values of 8 MiB put into a store whose target
  holds one of them (so every put spills the previous one), then each read back.
  MB/s of values spilled and reloaded. The floor is the same bytes written with
  ``os.write`` and read back with ``readinto``, nothing else; for a reload it is a
  read and a write, since each value read back displaces the one in memory. The
  allocator is tuned first, as in a worker process of either runtime.
* **the cost on small tasks.** ``map(inc, range(10_000))`` + gather with
  ``memory_limit="auto"`` on both runtimes; and actorrt with and without a limit
  (its own table: time without / time with, 1.00x is no cost).

ratio = dask's time / actorrt's time (>1 means actorrt faster), unless said otherwise.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    CLIENTS,
    Row,
    format_columns,
    parse_args,
    print_table,
    runtimes,
    timeit,
)

import numpy as np  # noqa: E402

MiB = 2**20
PART = 8 * MiB


def make_part(i: int) -> Any:
    import numpy as np
    return np.full(PART // 8, float(i))


def partial_sum(*parts: Any) -> float:
    return float(sum(p.sum() for p in parts))


def inc(x: int) -> int:
    return x + 1


# --- peak RSS of worker processes ---------------------------------------------------------
class PeakRSS:
    """Samples the resident size of some processes every ``interval`` s in a thread."""

    def __init__(self, pids: list[int], interval: float = 0.01) -> None:
        self.pids = pids
        self.peak = {pid: 0 for pid in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def _run(self, interval: float) -> None:
        from actorrt.worker.memory import process_rss
        while not self._stop.is_set():
            for pid in self.pids:
                rss = process_rss(pid)
                if rss is not None:
                    self.peak[pid] = max(self.peak[pid], rss)
            self._stop.wait(interval)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def worker_pids(client: Any) -> list[int]:
    return sorted(client.run(os.getpid).values())


# Seconds a step may take before the run counts as failed (a runtime whose workers
# are killed in a loop must not hang the benchmark).
STEP_TIMEOUT = 300


def wait_all(client: Any, futures: list) -> None:
    if type(client).__module__.startswith("actorrt"):
        from actorrt import wait
    else:
        from distributed import wait
    wait(futures, timeout=STEP_TIMEOUT)
    bad = [f for f in futures if f.status != "finished"]
    if bad:
        raise RuntimeError(f"{len(bad)} partitions failed: {bad[0].exception()!r}")


def map_reduce(client: Any, n_parts: int) -> float:
    from_map = client.map(make_part, range(n_parts), pure=False)
    wait_all(client, from_map)  # every partition is held at once here
    partials = [client.submit(partial_sum, *from_map[i:i + 4], pure=False) for i in range(0, n_parts, 4)]
    del from_map
    wait_all(client, partials)
    total = sum(client.gather(partials))
    expected = sum(float(i) * (PART // 8) for i in range(n_parts))
    assert total == expected, (total, expected)
    return total


def spilling_rows(args: Any, limit: int) -> tuple[list[Row], list[tuple[str, ...]]]:
    n_parts = int(2.5 * 2 * limit / PART)
    name = f"map->reduce, {n_parts} x 8 MiB = 2.5x the limits"
    row = Row(name)
    peaks: list[tuple[str, ...]] = []
    for runtime in runtimes(args):
        with CLIENTS[runtime](memory_limit=limit) as client:
            pids = worker_pids(client)
            with PeakRSS(pids) as sampler:
                try:
                    row.seconds[runtime] = timeit(lambda: map_reduce(client, n_parts), repeat=args.repeat)
                except Exception as e:  # shown, and the run goes on
                    print(f"#   {runtime} {name} failed: {e!r}", file=sys.stderr, flush=True)
                    row.seconds[runtime] = None
            worst = max(sampler.peak.values())
            failed = " (failed)" if row.seconds[runtime] is None else ""
            peaks.append((runtime + failed, f"{limit / MiB:.0f} MiB", f"{worst / MiB:.0f} MiB",
                          f"{worst / limit:.2f}x"))
        print(f"#   {runtime} {name}: peak {worst / MiB:.0f} MiB", file=sys.stderr, flush=True)
    return [row], peaks


# --- spill and reload throughput -------------------------------------------------------------
def actorrt_store(directory: str) -> Any:
    from actorrt.worker.spill import SpillBuffer
    buf = SpillBuffer(directory, target=PART)
    return lambda k, v: buf.put(k, v, v.nbytes), buf.__getitem__, buf.clear


def dask_store(directory: str) -> Any:
    from distributed.spill import SpillBuffer
    buf = SpillBuffer(directory, target=PART)
    return buf.__setitem__, buf.__getitem__, buf.clear


def spill_reload(make_store: Callable[[str], Any], n: int) -> tuple[float, float]:
    """Seconds to spill ``n`` values, and to read them back."""
    directory = tempfile.mkdtemp(prefix="bench-spill-")
    try:
        put, get, clear = make_store(directory)
        values = [np.random.default_rng(i).random(PART // 8) for i in range(n)]
        t0 = time.perf_counter()
        for i, v in enumerate(values):
            put(f"k{i}", v)
        put("last", np.zeros(PART // 8))  # pushes the n-th one out too
        t1 = time.perf_counter()
        del values
        for i in range(n):
            get(f"k{i}")
        t2 = time.perf_counter()
        clear()
        return t1 - t0, t2 - t1
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def floor(n: int) -> tuple[float, float]:
    """The same bytes written and read back with nothing but the system calls."""
    directory = tempfile.mkdtemp(prefix="bench-floor-")
    try:
        values = [np.random.default_rng(i).random(PART // 8) for i in range(n)]
        t0 = time.perf_counter()
        for i, v in enumerate(values):
            fd = os.open(os.path.join(directory, str(i)), os.O_WRONLY | os.O_CREAT)
            view = memoryview(v).cast("B")
            done = 0
            while done < view.nbytes:
                done += os.write(fd, view[done:])
            os.close(fd)
        t1 = time.perf_counter()
        for i in range(n):
            buf = bytearray(PART)
            with open(os.path.join(directory, str(i)), "rb", buffering=0) as f:
                f.readinto(buf)
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def throughput_table(args: Any) -> str:
    # As in a worker process (actorrt's tunes its allocator at start, dask's nanny sets
    # MALLOC_TRIM_THRESHOLD_ for its workers): large blocks come fresh from the system.
    from actorrt.worker.memory import tune_allocator
    tune_allocator()
    n = 8 if args.quick else 64
    stores = {"actorrt": actorrt_store}
    if "dask" in runtimes(args):
        stores["dask"] = dask_store
    best: dict[str, tuple[float, float]] = {}
    for name, make in [*stores.items(), ("floor", None)]:
        runs = [spill_reload(make, n) if make else floor(n) for _ in range(args.repeat)]
        best[name] = (min(r[0] for r in runs), min(r[1] for r in runs))
    # A reload into a store whose target holds one value writes out the value it
    # displaces: the floor of a reload is a read and a write.
    best["floor"] = (best["floor"][0], best["floor"][0] + best["floor"][1])
    mb = n * PART / MiB
    lines = []
    for i, what in enumerate(("spill", "reload")):
        a = best["actorrt"][i]
        d = best.get("dask", (None, None))[i]
        lines.append((f"{what} {n} x 8 MiB", f"{mb / a:,.0f} MB/s", "-" if d is None else f"{mb / d:,.0f} MB/s",
                      "n/a" if d is None else f"{d / a:.2f}x", f"{mb / best['floor'][i]:,.0f} MB/s",
                      f"{best['floor'][i] / a:.2f}x"))
    return format_columns(("workload", "actorrt", "dask", "ratio", "floor", "actorrt / floor"), lines)


# --- small tasks -----------------------------------------------------------------------------
def small_tasks(client: Any, n: int) -> None:
    assert sum(client.gather(client.map(inc, range(n), pure=False))) == n * (n + 1) // 2


@contextmanager
def quiet_client(runtime: str, **kwargs: Any) -> Iterator[Any]:
    with CLIENTS[runtime](**kwargs) as client:
        small_tasks(client, 200)  # warm: workers started and functions cached
        yield client


def small_task_rows(args: Any) -> tuple[list[Row], str]:
    """The comparison with dask (both with a limit), and actorrt against itself."""
    n = 2_000 if args.quick else 10_000
    with_limit = Row(f"map+gather {n:,} small tasks, memory_limit='auto'", tasks=n)
    for runtime in runtimes(args):
        with quiet_client(runtime, memory_limit="auto") as client:
            with_limit.seconds[runtime] = timeit(lambda: small_tasks(client, n), repeat=args.repeat)
    with quiet_client("actorrt", memory_limit=None) as client:
        unlimited = timeit(lambda: small_tasks(client, n), repeat=args.repeat)
    limited = with_limit.seconds["actorrt"]
    assert limited is not None
    own = format_columns(("workload", "no limit", "memory_limit='auto'", "no limit / auto"), [(
        f"actorrt map+gather {n:,}", f"{n / unlimited:,.0f} tasks/s", f"{n / limited:,.0f} tasks/s",
        f"{unlimited / limited:.2f}x")])
    return [with_limit], own


def main() -> None:
    args = parse_args(__doc__)
    # dask's worker processes start at ~130 MiB (actorrt's at ~60 MiB with numpy): a
    # smaller limit kills dask's workers in a loop, which measures nothing.
    limit = (256 if args.quick else 512) * MiB
    rows, peaks = spilling_rows(args, limit)
    small, own = small_task_rows(args)
    print_table(rows + small, title="Memory management: wall time and throughput")
    print()
    print("The cost of memory management on small tasks (1.00x: none)")
    print(own)
    print()
    print("Peak resident size of a worker process, holding 2.5x its limit in results")
    print(format_columns(("runtime", "limit", "peak worker RSS", "peak / limit"), peaks))
    print()
    print("Spill and reload throughput of each runtime's worker store, same directory, this process")
    print(throughput_table(args))


if __name__ == "__main__":
    main()
