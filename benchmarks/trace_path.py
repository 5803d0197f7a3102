"""Where one round trip's wall time goes, step by step, across processes and threads.

    python benchmarks/trace_path.py                      # submit(inc).result(), one at a time
    python benchmarks/trace_path.py --path actor         # the client calls an actor
    python benchmarks/trace_path.py --path task-actor    # a task calls an actor on the other worker
    python benchmarks/trace_path.py --path queue-get     # a task gets items off a filled Queue
    python benchmarks/trace_path.py --probe actorrt.client.client:Client._send_graph+

Runs on ``Client(n_workers=2, threads_per_worker=1)`` with worker processes. The
functions a round trip passes through (``PROBES``) are wrapped with a timestamp on entry
(and on return, for some), in this process and, through a ``sitecustomize`` hook put on
their PYTHONPATH, in the worker processes. The round trips run one at a time; the table
gives the median time from each probe to the next, in the order a round trip meets
them, and the process and thread where the step ended. A step that ends in another
process or thread than the one before it is a hand-off (marked ``>>``): a socket write
read by another process, or a thread woken.

Every process reads one clock (CLOCK_MONOTONIC, ``time.monotonic_ns``). A probe costs
about a microsecond, so the traced round trip is a little slower than the untraced
one, which is printed above the table. Not a comparison with dask (the smoke test runs
it for its table only): ``profile_core.py`` says which functions cost CPU; this says in
which step of the path the wall time goes.
"""
from __future__ import annotations

import argparse
import json
import os
import runpy
import shutil
import statistics
import sys
import tempfile
from collections import defaultdict
from collections import Counter as Tally
from typing import NamedTuple, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import format_columns, positive_count  # noqa: E402
from task_workloads import Counter, call_actor, get_queued, inc, median_seconds  # noqa: E402

#: ``(module, "Class.method", returns too)``: a probe's label is its qualified name, and
#: ``"... returns"`` for the return of one traced both ways.
Probe = tuple[str, str, bool]

TRANSPORT: list[Probe] = [
    ("actorrt.core.tcp", "TCPComm._read_ready", False),           # a loop reads a socket
    ("actorrt.core.tcp", "_SocketWriter._write_locked", True),    # a loop writes one
    ("actorrt.core.tcp", "_SocketWriter.send_first", True),       # a thread writes one
    ("actorrt.core.host", "Host._dispatch", False),               # a message reaches its actor
]

PROBES: dict[str, list[Probe]] = {
    "round-trip": [
        ("actorrt.client.client", "Client.submit", False),
        ("actorrt.client.future", "Future.result", True),
        ("actorrt.runtime", "Waiter.wait", True),
        ("actorrt.client.futures", "FutureTable._flush_window", False),
        ("actorrt.scheduler.actor", "Scheduler.handle_release_keys", False),
        ("actorrt.scheduler.actor", "Scheduler.handle_update_graph", True),
        ("actorrt.scheduler.outbox", "Outbox.flush", False),
        ("actorrt.worker.actor", "Worker.handle_compute", False),
        # A lone task the waiting thread runs on a worker itself (client/direct.py);
        # ACTORRT_DIRECT_TASKS=0 traces the way through the scheduler instead.
        ("actorrt.client.direct", "DirectRuns.run", True),
        ("actorrt.worker.actor", "Worker.handle_run_direct", False),
        ("actorrt.worker.direct", "DirectAsks._send_from_thread", True),
        ("actorrt.core.tcp", "TCPComm.read_messages", True),
        ("actorrt.client.direct", "DirectRuns._answered", True),
        ("actorrt.worker.task", "TaskRun.__call__", True),
        ("actorrt.scheduler.actor", "Scheduler.handle_tasks_done", True),
        ("actorrt.client.future", "FutureState.finish", False),
        ("actorrt.runtime", "Waiter.set", True),
        *TRANSPORT,
    ],
    "actor": [
        ("actorrt.client.actor_calls", "Caller.send", False),
        ("actorrt.core.tcp", "TCPComm.write_from_thread", True),
        ("actorrt.client.actor_future", "ActorFuture.result", True),
        ("actorrt.core.thread_channel", "ThreadChannel.wait", True),
        ("actorrt.worker.user_actor", "UserActor.handle_call", True),
        ("actorrt.worker.user_actor", "UserActor._run_sync", True),
        ("actorrt.core.tcp", "TCPComm.read_messages", True),
        *TRANSPORT,
    ],
}
PROBES["task-actor"] = PROBES["actor"]
PROBES["queue-get"] = [
    ("actorrt.coordination.queue", "Queue.get", True),
    ("actorrt.core.thread_channel", "ThreadChannel.ask", True),
    ("actorrt.core.thread_channel", "ThreadChannel.wait", True),
    ("actorrt.coordination.queue", "QueueActor.handle_get", True),
    ("actorrt.core.tcp", "TCPComm.read_messages", True),
    *TRANSPORT,
]
#: the probe each round trip begins with
FIRST = {"round-trip": "Client.submit", "actor": "Caller.send", "task-actor": "Caller.send",
         "queue-get": "Queue.get"}

# Installed as sitecustomize.py on the workers' PYTHONPATH, and run in this process:
# wraps the probes named in ACTORRT_TRACE_PROBES and writes their events into
# ACTORRT_TRACE_DIR when the process exits.
HOOK = '''
import os
_dir = os.environ.get("ACTORRT_TRACE_DIR")
if _dir:
    import atexit, importlib, json, signal, threading, time
    _events = []
    _now, _thread = time.monotonic_ns, threading.current_thread

    def _wrap(owner, name, label, returns):
        fn, record = getattr(owner, name), _events.append
        if returns:
            done = label + " returns"
            def probe(*args, **kwargs):
                record((_now(), label, _thread().name))
                try:
                    return fn(*args, **kwargs)
                finally:
                    record((_now(), done, _thread().name))
        else:
            def probe(*args, **kwargs):
                record((_now(), label, _thread().name))
                return fn(*args, **kwargs)
        setattr(owner, name, probe)

    for _module, _qualname, _returns in json.loads(os.environ["ACTORRT_TRACE_PROBES"]):
        _cls, _name = _qualname.split(".")
        _wrap(getattr(importlib.import_module(_module), _cls), _name, _qualname, _returns)

    def _dump(*_):
        if not os.path.isdir(_dir):
            return  # (this process's own events, read and cleaned up already)
        with open(os.path.join(_dir, f"{os.getpid()}.events"), "w") as out:
            json.dump(_events, out)

    os.register_at_fork(after_in_child=_events.clear)  # (a forked child's are not its own)
    atexit.register(_dump)
    _default_term = signal.getsignal(signal.SIGTERM)

    def _on_term(signum, frame):
        _dump()
        if callable(_default_term):
            _default_term(signum, frame)
        os._exit(0)

    signal.signal(signal.SIGTERM, _on_term)
'''


class Event(NamedTuple):
    ns: int
    label: str
    where: str  # "process/thread"


# --- workloads ----------------------------------------------------------------------
def run_path(path: str, n: int) -> float:
    """Run ``n`` round trips of ``path`` on a fresh cluster; their median seconds."""
    from actorrt import Client, Queue

    with Client(n_workers=2, threads_per_worker=1) as client:
        if path == "round-trip":
            return median_seconds(lambda: client.submit(inc, 1, pure=False).result(), n)
        first, second = sorted(client.scheduler_info()["workers"])
        if path == "queue-get":
            queue = Queue("traced", client=client)
            for i in range(n):
                queue.put(i)
            return client.submit(get_queued, "traced", n, workers=[second], pure=False).result()
        counter = client.submit(Counter, actor=True, workers=[first]).result()
        if path == "actor":
            return call_actor(counter, n)
        return client.submit(call_actor, counter, n, workers=[second], pure=False).result()


# --- tracing ------------------------------------------------------------------------
def parse_probe(text: str) -> Probe:
    """``module:Class.method``, with a trailing ``+`` to time its return too."""
    returns = text.endswith("+")
    module, _, qualname = text.rstrip("+").partition(":")
    if not module or qualname.count(".") != 1:
        raise argparse.ArgumentTypeError(f"a probe is module:Class.method[+], not {text!r}")
    return module, qualname, returns


def traced_run(path: str, n: int, extra: Sequence[Probe] = ()) -> tuple[float, list[Event]]:
    """Run ``path`` with its probes (and ``extra``) in every process; the median and the events."""
    workdir = tempfile.mkdtemp(prefix="actorrt-trace-")
    events_dir = os.path.join(workdir, "events")
    os.mkdir(events_dir)
    with open(os.path.join(workdir, "sitecustomize.py"), "w") as f:
        f.write(HOOK)
    env = {"ACTORRT_TRACE_DIR": events_dir, "ACTORRT_TRACE_PROBES": json.dumps(PROBES[path] + list(extra)),
           "PYTHONPATH": os.pathsep.join(filter(None, [workdir, os.environ.get("PYTHONPATH")]))}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        hook = runpy.run_path(os.path.join(workdir, "sitecustomize.py"))
        median = run_path(path, n)
        hook["_dump"]()
        return median, load_events(events_dir, os.getpid())
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(workdir, ignore_errors=True)


def load_events(events_dir: str, client_pid: int) -> list[Event]:
    """Every process's events on one time line. Processes are named ``client`` (this
    one: the scheduler's loop runs here too) and ``worker-a``, ``worker-b``... in the
    order they first appear."""
    raw: list[tuple[int, str, str, int]] = []
    for name in os.listdir(events_dir):
        pid = int(name.split(".")[0])
        with open(os.path.join(events_dir, name)) as f:
            raw.extend((ns, label, thread, pid) for ns, label, thread in json.load(f))
    raw.sort()
    names: dict[int, str] = {client_pid: "client"}
    for _, _, _, pid in raw:
        if pid not in names:
            names[pid] = f"worker-{chr(ord('a') + len(names) - 1)}"
    return [Event(ns, label, f"{names[pid]}/{thread}") for ns, label, thread, pid in raw]


# --- analysis -----------------------------------------------------------------------
def split_round_trips(events: list[Event], first: str, warmup: float = 0.2) -> list[list[Event]]:
    """The events of each round trip: from one ``first`` probe to the next. The first
    ``warmup`` share is dropped (connections opening, caches filling)."""
    trips: list[list[Event]] = []
    for event in events:
        if event.label == first:
            trips.append([event])
        elif trips:
            trips[-1].append(event)
    return trips[int(len(trips) * warmup):]


class Step(NamedTuple):
    start: str       # label@where the step starts at
    end: str         # label@where it ends at
    handoff: bool    # it ends in another process or thread
    median_us: float
    seen: int        # in how many round trips


def steps(trips: list[list[Event]], common: float = 0.5) -> list[Step]:
    """The median of each step (one probe to the next) taken by at least ``common`` of
    the round trips, in the order they usually come. A label met twice in a trip (a read
    by each process) is told apart by where, and by its count.

    Where the path varies from trip to trip (two messages read at once or one at a time,
    the task on one worker or the other), the steps of the usual variant are the ones
    listed: the sum of the listed steps beside the whole trip's median says how much of
    the trip they account for."""
    gaps: dict[tuple[str, str], list[float]] = defaultdict(list)
    position: dict[tuple[str, str], list[int]] = defaultdict(list)
    handoff: dict[tuple[str, str], bool] = {}  # (a name holds its where: the same for every trip)
    for trip in trips:
        seen: Tally[str] = Tally()
        names = []
        for event in trip:
            name = f"{event.label} @ {event.where}"
            seen[name] += 1
            names.append(name if seen[name] == 1 else f"{name} #{seen[name]}")
        for i in range(1, len(trip)):
            key = (names[i - 1], names[i])
            gaps[key].append((trip[i].ns - trip[i - 1].ns) / 1e3)
            position[key].append(i)
            handoff[key] = trip[i].where != trip[i - 1].where
    out = []
    for key, values in gaps.items():
        if len(values) < common * len(trips):
            continue
        out.append((statistics.median(position[key]),
                    Step(key[0], key[1], handoff[key], statistics.median(values), len(values))))
    return [step for _, step in sorted(out, key=lambda p: p[0])]


def table(path: str, untraced: float, traced: float, trips: list[list[Event]],
          found: list[Step]) -> str:
    total = statistics.median([(t[-1].ns - t[0].ns) / 1e3 for t in trips]) if trips else 0.0
    rows = [((">> " if s.handoff else "   ") + s.end, f"{s.median_us:.1f}",
             f"{s.median_us / total:.0%}" if total else "-") for s in found]
    listed = sum(s.median_us for s in found)
    lines = [
        f"=== {path}: {len(trips):,} round trips traced ===",
        f"untraced median {untraced * 1e6:.1f} µs; traced median {traced * 1e6:.1f} µs "
        f"(first probe to the last, {total:.1f} µs; the steps below add up to {listed:.1f} µs)",
        "",
        format_columns(("step ends at (>> : in another process or thread)", "median µs", "share"), rows),
    ]
    handoffs = [s for s in found if s.handoff]
    lines.append(f"\n{len(handoffs)} hand-offs, {sum(s.median_us for s in handoffs):.1f} µs; "
                 f"work within a thread {listed - sum(s.median_us for s in handoffs):.1f} µs")
    return "\n".join(lines)


def trace(path: str, n: int, extra: Sequence[Probe] = ()) -> str:
    untraced = run_path(path, n)
    traced, events = traced_run(path, n, extra)
    trips = split_round_trips(events, FIRST[path])
    return table(path, untraced, traced, trips, steps(trips))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--path", choices=sorted(PROBES), default="round-trip")
    parser.add_argument("--n", type=positive_count, default=None, help="round trips (default 3,000; --quick 200)")
    parser.add_argument("--quick", action="store_true", help="200 round trips")
    parser.add_argument("--probe", action="append", type=parse_probe, default=[], metavar="MODULE:CLASS.METHOD[+]",
                        help="trace this function too (+: its return as well); repeatable")
    args = parser.parse_args(argv)
    n = args.n or (200 if args.quick else 3_000)
    print(trace(args.path, n, args.probe))


if __name__ == "__main__":
    main()
