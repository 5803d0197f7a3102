"""Coordination primitives (issue 5) on actorrt and dask.distributed, side by side.

    python benchmarks/bench_coordination.py            # full sizes, best of 3
    python benchmarks/bench_coordination.py --quick    # tiny sizes, seconds

Both runtimes get ``Client(n_workers=2, threads_per_worker=1)`` with worker processes.

Latency rows show the time of one round trip *pair* (e.g. one ``set`` and one ``get``),
averaged over many, from the client's main thread and from inside a task. Throughput
rows move items from a producer task to a consumer task (on the other worker): through
a Queue, and through Pub/Sub (dask.distributed 2026 has no Pub/Sub: '-').
"""
from __future__ import annotations

import importlib
import itertools
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import Row, Workload, compare, format_columns, parse_args, print_table  # noqa: E402
from floors import FLOOR_COLUMNS, call_round_trip, floor_row  # noqa: E402

_fresh = itertools.count()


def _libname(client) -> str:
    """The runtime's module name (actorrt or distributed), from its client's type."""
    return "distributed" if type(client).__module__.startswith("distributed") else "actorrt"


def _lib(client):
    return importlib.import_module(_libname(client))


def _name(what: str) -> str:
    return f"bench-{what}-{next(_fresh)}"


# --- round trips: each returns nothing, does ``n`` pairs ------------------------------------
def variable_set_get(lib, name, n):
    v = lib.Variable(name)
    for i in range(n):
        v.set(i)
        v.get()


def queue_put_get(lib, name, n):
    q = lib.Queue(name)
    for i in range(n):
        q.put(i)
        q.get()


def lock_acquire_release(lib, name, n):
    lock = lib.Lock(name)
    for _ in range(n):
        lock.acquire()
        lock.release()


def semaphore_acquire_release(lib, name, n):
    sem = lib.Semaphore(max_leases=2, name=name)
    for _ in range(n):
        sem.acquire()
        sem.release()


def event_set_is_set(lib, name, n):
    ev = lib.Event(name)
    for _ in range(n):
        ev.set()
        ev.is_set()


def in_task(fn, libname, name, n):
    """Run ``fn`` inside a task, with the task's runtime (imported there)."""
    fn(importlib.import_module(libname), name, n)
    return n


PAIRS = [("Variable set+get", variable_set_get), ("Queue put+get", queue_put_get),
         ("Lock acquire+release", lock_acquire_release),
         ("Semaphore acquire+release", semaphore_acquire_release),
         ("Event set+is_set", event_set_is_set)]


def from_client(fn, what, n):
    def run(client):
        name = _name(what)
        fn(_lib(client), name, 1)  # create the primitive: time only the round trips
        fn(_lib(client), name, n)
    return run


def from_task(fn, what, n):
    def run(client):
        name = _name(what)
        lib = _libname(client)
        client.submit(in_task, fn, lib, name, 1, pure=False).result()
        client.submit(in_task, fn, lib, name, n, pure=False).result()
    return run


# --- throughput: producer task -> consumer task ----------------------------------------------
def produce(libname, name, n, kind):
    lib = importlib.import_module(libname)
    if kind == "pubsub":
        lib.Event(name + "-subscribed").wait(timeout=60)
        pub = lib.Pub(name)
        for i in range(n):
            pub.put(i)
        return n
    q = lib.Queue(name)
    for i in range(n):
        q.put(i)
    return n


def consume(libname, name, n, kind):
    lib = importlib.import_module(libname)
    if kind == "pubsub":
        sub = lib.Sub(name)
        lib.Event(name + "-subscribed").set()
        got = [sub.get(timeout=60) for _ in range(n)]
    else:
        q = lib.Queue(name)
        got = [q.get(timeout=60) for _ in range(n)]
    assert got == list(range(n)), "items lost, duplicated or reordered"
    return n


def task_to_task(kind, n):
    def run(client):
        name = _name(kind)
        workers = sorted(client.scheduler_info()["workers"])
        lib = _libname(client)
        consumer = client.submit(consume, lib, name, n, kind, workers=[workers[0]], pure=False)
        producer = client.submit(produce, lib, name, n, kind, workers=[workers[1]], pure=False)
        assert client.gather([producer, consumer]) == [n, n]
    return run


def workloads(quick: bool) -> list[Workload]:
    n = 20 if quick else 500
    items = 100 if quick else 1_000
    out = []
    for label, fn in PAIRS:
        out.append(Workload(f"{label} (client)", from_client(fn, label, n), tasks=n, per_task=True))
        out.append(Workload(f"{label} (task)", from_task(fn, label, n), tasks=n, per_task=True))
    out.append(Workload(f"Queue task->task ({items:,} items)", task_to_task("queue", items),
                        tasks=items, unit="items"))
    out.append(Workload(f"Pub/Sub task->task ({items * 10:,} msgs)", task_to_task("pubsub", items * 10),
                        tasks=items * 10, unit="msgs", runtimes=("actorrt",)))
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__, argv)
    rows = compare(workloads(args.quick), args)
    print_table(rows, title="coordination round trips (time per pair) and throughput: "
                            "2 worker processes x 1 thread")
    print("target: Queue task->task ratio >= 5 (issue 9)")
    queue_rows = [row for row in rows if row.workload.startswith("Queue task->task")]
    if queue_rows and not args.only:
        print_floor_table(queue_rows[0], args)


def print_floor_table(row: Row, args: Any) -> None:
    """A consumer's ``Queue.get`` rate against its floor: one get at a time is a task
    thread's call answered by the scheduler's loop, whose reply the thread reads off its
    own connection itself, polling for it first (floors.call_round_trip("loop", reader="poll"))."""
    assert row.tasks is not None
    floor = call_round_trip("loop", 300 if args.quick else 3_000, args.repeat, reader="poll")
    per_item = {rt: None if s is None else s / row.tasks for rt, s in row.seconds.items()}
    print()
    print(format_columns(FLOOR_COLUMNS, [floor_row("Queue task->task, time per item", floor,
                                                   per_item.get("actorrt"), per_item.get("dask"))]))
    print("floor: a thread writes a call, the other process's loop writes the answer, the thread polls "
          "for it and reads it itself (benchmarks/floors.py); per item includes both tasks' start")


if __name__ == "__main__":
    main()
