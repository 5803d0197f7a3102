"""The scheduler's task state machine. No I/O: stimuli in, instructions out.

Every public ``handle_*`` method takes a stimulus (a client submitted a graph, a
worker finished a task, a worker died, ...) and returns the instructions the
:class:`~actorrt.scheduler.actor.Scheduler` must carry out (compute this on that
worker, free these keys, tell this client its key is ready). Nothing here sends a
message, sleeps or reads a clock other than for the story's timestamps, so the
hardest logic of the runtime is tested by feeding events and asserting instructions.

A task's states::

    released -> waiting -> queued -> processing -> memory
                                              \\-> erred
    (any) -> released -> forgotten

A key is *needed* while some holder wants it (a client's Future, fire-and-forget,
a queue or variable holding a Future) or while a needed task depends on it.
"""
from __future__ import annotations

import heapq
import itertools
import time
from collections import deque
from typing import Any, Callable, Iterable, NamedTuple

from sortedcontainers import SortedKeyList

from ..core.errors import ActorDeadError

# --- instructions ------------------------------------------------------------


class Compute(NamedTuple):
    worker: str
    key: str
    spec: Any
    deps: dict  # dep key -> [worker addresses holding it]
    name: str
    actor: bool
    run_id: int  # this run of the key: reports of an earlier run are told apart
    sizes: dict  # dep key -> its nbytes: the worker budgets its transfers with them


class Free(NamedTuple):
    worker: str
    keys: list


class Report(NamedTuple):
    """Tell ``client`` about ``key``: status is memory, erred, cancelled or lost."""
    client: str
    key: str
    status: str
    info: dict


Instruction = Compute | Free | Report

FIRE_AND_FORGET = "fire-and-forget"


class KilledWorker(Exception):
    """A task was running on too many workers that died; it is not retried again."""


class TaskState:
    __slots__ = ("key", "state", "spec", "name", "dependencies", "dependents", "waiting_on",
                 "waiters", "who_has", "processing_on", "priority", "retries", "who_wants",
                 "exception", "traceback", "blame", "nbytes", "type", "suspicious",
                 "workers", "allow_other_workers", "actor", "restarts", "run_id")

    def __init__(self, key: str, spec: Any, name: str) -> None:
        self.key = key
        self.state = "released"
        self.spec = spec
        self.name = name
        self.dependencies: set[TaskState] = set()
        self.dependents: set[TaskState] = set()
        self.waiting_on: set[TaskState] = set()   # dependencies not yet in memory
        self.waiters: set[TaskState] = set()      # active dependents that still need us
        self.who_has: set[WorkerState] = set()
        self.processing_on: WorkerState | None = None
        self.priority: tuple = ()
        self.retries = 0
        self.who_wants: set[str] = set()
        self.exception: Any = None
        self.traceback: str | None = None
        self.blame: str | None = None
        self.nbytes = 0
        self.type: str | None = None
        self.suspicious = 0
        self.workers: set[str] | None = None
        self.allow_other_workers = False
        self.actor: Any = False  # a user actor's options (a dict), or True; False for a task
        self.restarts = 0        # how often this actor was re-created after its worker died
        self.run_id = 0          # which run of this key a worker's report must be about

    def __lt__(self, other: "TaskState") -> bool:
        return self.priority < other.priority

    def __repr__(self) -> str:
        return f"<TaskState {self.key!r} {self.state}>"


class WorkerState:
    __slots__ = ("address", "nthreads", "processing", "long_running", "has_what", "capacity", "seq")

    def __init__(self, address: str, nthreads: int, saturation: float, seq: int) -> None:
        self.address = address
        self.nthreads = nthreads
        self.processing: set[TaskState] = set()
        # Running tasks that gave their thread slot back (secede, or blocked on other
        # futures): they no longer count against capacity, so the work they wait for
        # can be placed here (a nested gather on a one-thread worker cannot deadlock).
        self.long_running: set[TaskState] = set()
        self.has_what: set[TaskState] = set()
        self.capacity = max(1, int(nthreads * saturation))
        self.seq = seq

    @property
    def busy(self) -> int:
        """Tasks holding a thread slot here."""
        return len(self.processing) - len(self.long_running)

    @property
    def occupancy(self) -> float:
        return self.busy / self.nthreads

    def __repr__(self) -> str:
        return f"<WorkerState {self.address} {len(self.processing)}/{self.capacity}>"


class TaskSpec(NamedTuple):
    """One task of a submitted graph, as the scheduler sees it."""
    key: str
    spec: Any
    deps: tuple
    name: str = ""
    priority: int = 0
    retries: int = 0
    workers: tuple | None = None
    allow_other_workers: bool = False
    actor: bool = False


class InvalidStateError(AssertionError):
    pass


class SchedulerState:
    """All tasks and workers, and the transitions between task states."""

    def __init__(self, *, saturation: float | None = None, allowed_failures: int = 3,
                 story_length: int = 100_000, validate: bool = False,
                 queued_seconds: float = 0.02, max_saturation: float = 32.0) -> None:
        self.tasks: dict[str, TaskState] = {}
        self.workers: dict[str, WorkerState] = {}
        self.clients: set[str] = set()
        # How many tasks a worker holds per thread. Given, it is fixed; else it adapts
        # to the tasks' run time so that each thread has about ``queued_seconds`` of
        # work in hand: short tasks go out in large batches (one message carries many),
        # long ones barely queue, so a worker that frees up still finds work to take.
        self.adaptive = saturation is None
        self.saturation = 2.0 if saturation is None else saturation
        self.queued_seconds = queued_seconds
        self.max_saturation = max_saturation
        self.mean_duration: float | None = None
        self._durations_seen = 0
        self.allowed_failures = allowed_failures
        self.validate_each = validate
        self.log: deque[tuple] = deque(maxlen=story_length)
        # Since start, for the dashboard (the log rotates; these do not).
        self.finished_total = 0
        self.erred_total = 0
        # Workers with a free slot, least occupied first, kept ordered as it changes.
        self.idle: SortedKeyList = SortedKeyList(key=lambda ws: (ws.occupancy, ws.seq))
        self.queued: list[tuple[tuple, int, TaskState]] = []   # heap
        self.unrunnable: set[TaskState] = set()                  # restricted to absent workers
        self.actor_tasks: set[TaskState] = set()                 # user actors, to spread them
        self._seq = itertools.count()
        self._generation = itertools.count()
        self._worker_seq = itertools.count()
        self._runs = itertools.count(1)
        self._out: list[Instruction] = []
        self._transitions: dict[tuple[str, str], Callable[[TaskState, str], dict]] = {
            ("released", "waiting"): self._released_waiting,
            ("released", "erred"): self._to_erred,
            ("released", "forgotten"): self._released_forgotten,
            ("waiting", "queued"): self._waiting_queued,
            ("waiting", "released"): self._waiting_released,
            ("waiting", "erred"): self._to_erred,
            ("queued", "processing"): self._queued_processing,
            ("queued", "released"): self._waiting_released,
            ("queued", "erred"): self._to_erred,
            ("processing", "memory"): self._processing_memory,
            ("processing", "erred"): self._to_erred,
            ("processing", "released"): self._processing_released,
            ("processing", "queued"): self._processing_queued,
            ("memory", "released"): self._memory_released,
            ("erred", "released"): self._erred_released,
            ("memory", "erred"): self._memory_erred,
        }

    # ------------------------------------------------------------------ stimuli
    def handle_add_client(self, client: str) -> list[Instruction]:
        self.clients.add(client)
        return []

    def handle_remove_client(self, client: str, stimulus_id: str) -> list[Instruction]:
        self.clients.discard(client)
        keys = [ts.key for ts in self.tasks.values() if client in ts.who_wants]
        return self.handle_release_keys(client, keys, stimulus_id)

    def handle_update_graph(self, client: str, tasks: Iterable[TaskSpec], wanted: Iterable[str],
                            stimulus_id: str) -> list[Instruction]:
        """A client submitted tasks and wants the keys ``wanted``."""
        generation = next(self._generation)
        new: list[TaskState] = []
        missing: dict[str, str] = {}
        for spec in tasks:
            ts = self.tasks.get(spec.key)
            if ts is None:
                ts = self.tasks[spec.key] = TaskState(spec.key, spec.spec, spec.name)
                new.append(ts)
            elif ts.state == "released" and ts.spec is None:
                ts.spec = spec.spec
                new.append(ts)
            else:
                continue  # same key already known (pure=True dedup): keep what we have
            ts.priority = (-spec.priority, generation, next(self._seq))
            ts.retries = spec.retries
            ts.actor = spec.actor
            if spec.actor:
                self.actor_tasks.add(ts)
            if spec.workers is not None:
                ts.workers = set(spec.workers)
                ts.allow_other_workers = spec.allow_other_workers
            for dep_key in spec.deps:
                dep = self.tasks.get(dep_key)
                if dep is None:
                    missing[spec.key] = dep_key
                    continue
                ts.dependencies.add(dep)
                dep.dependents.add(ts)
        recs: dict[str, str] = {}
        for key in wanted:
            ts = self.tasks.get(key)
            if ts is None:
                continue
            ts.who_wants.add(client)
            if ts.state in ("memory", "erred"):
                self._report(ts, only=client)
            elif ts.state == "released":
                recs[key] = "waiting"
        for ts in new:
            if ts.key in missing:
                ts.exception = _missing_dependency_error(ts.key, missing[ts.key])
                recs[ts.key] = "erred"
            elif ts.state == "released" and self._needed(ts):
                recs.setdefault(ts.key, "waiting")
        self._run(recs, stimulus_id)
        # Tasks of the graph that nothing wants, directly or through a dependent, would
        # otherwise stay 'released' for ever: forget them (dependents first).
        unwanted = {ts.key: "forgotten" for ts in reversed(new) if ts.state == "released"
                    and not self._needed(ts) and not ts.dependents}
        if unwanted:
            self._run(unwanted, stimulus_id)
        return self._flush()

    def handle_update_data(self, client: str, who_has: dict[str, list[str]], nbytes: dict[str, int],
                           types: dict[str, str], stimulus_id: str) -> list[Instruction]:
        """Data was placed on workers directly (scatter)."""
        for key, addresses in who_has.items():
            holders = [self.workers[a] for a in addresses if a in self.workers]
            ts = self.tasks.get(key)
            if ts is None:
                ts = self.tasks[key] = TaskState(key, None, key.split("-", 1)[0])
            ts.who_wants.add(client)
            if not holders:
                ts.exception = RuntimeError(f"no live worker holds scattered key {key!r}")
                self._run({key: "erred"}, stimulus_id)
                continue
            if ts.state in ("waiting", "queued", "processing"):
                # Scattered under the key of a task being computed: the computation
                # stands (the client now holds the key and hears when it is done), and
                # the stray copies go, except where that task itself runs.
                for ws in holders:
                    if ws is not ts.processing_on:
                        self._out.append(Free(ws.address, [key]))
                continue
            if ts.state == "memory":
                for ws in holders:  # more copies of data already held: known, so freed later
                    self._add_holder(ts, ws)
                continue
            self._story(ts, ts.state, "memory", stimulus_id)
            ts.state = "memory"
            ts.exception = ts.traceback = ts.blame = None  # (from erred: the data replaces it)
            ts.nbytes = nbytes.get(key, 0)
            ts.type = types.get(key)
            for ws in holders:
                self._add_holder(ts, ws)
            self._report(ts, only=client)
        return self._flush()

    def handle_release_keys(self, holder: str, keys: Iterable[str], stimulus_id: str) -> list[Instruction]:
        """``holder`` no longer wants ``keys`` (its Futures were dropped)."""
        recs: dict[str, str] = {}
        for key in keys:
            ts = self.tasks.get(key)
            if ts is None or holder not in ts.who_wants:
                continue
            ts.who_wants.discard(holder)
            if not self._needed(ts):
                recs[key] = "released"
        self._run(recs, stimulus_id)
        return self._flush()

    def handle_want_keys(self, holder: str, keys: Iterable[str], stimulus_id: str) -> list[Instruction]:
        """``holder`` wants ``keys`` too (a Future was unpickled, fire_and_forget, ...)."""
        recs: dict[str, str] = {}
        for key in keys:
            ts = self.tasks.get(key)
            if ts is None or holder == FIRE_AND_FORGET and ts.state in ("memory", "erred") and not (
                    ts.actor and ts.state == "memory"):  # (a live actor is kept: it is a service)
                continue  # fire-and-forget of finished work: nothing left to keep alive
            ts.who_wants.add(holder)
            if ts.state in ("memory", "erred") and holder in self.clients:
                self._report(ts, only=holder)
            elif ts.state == "released":
                recs[key] = "waiting"
        self._run(recs, stimulus_id)
        return self._flush()

    def handle_cancel(self, keys: Iterable[str], reason: str | None, stimulus_id: str,
                      requester: str | None = None) -> list[Instruction]:
        """Cancel ``keys`` and everything that depends on them, for every holder.

        Each report names the key that was cancelled: a dependent's reason says which
        of its inputs was, so a user looking at a downstream CancelledError knows why.
        The ``requester`` is not told about the keys it cancelled itself (it knows, and
        may already have submitted them again).
        """
        stack = [(self.tasks[k], k) for k in keys if k in self.tasks]
        root_of: dict[TaskState, str] = {}
        while stack:
            ts, root = stack.pop()
            if ts in root_of:
                continue
            root_of[ts] = root
            stack.extend((dts, root) for dts in ts.dependents)
        recs: dict[str, str] = {}
        for ts, root in root_of.items():
            if ts.key == root:
                why = reason or f"{root} was cancelled"
            else:
                why = f"{ts.key} was cancelled because its input {root} was cancelled"
            for client in ts.who_wants:
                if client in self.clients and not (client == requester and ts.key == root):
                    self._out.append(Report(client, ts.key, "cancelled", {"reason": why}))
            ts.who_wants.clear()
            recs[ts.key] = "released"
        self._run(recs, stimulus_id)
        return self._flush()

    def handle_retry(self, keys: Iterable[str], stimulus_id: str) -> list[Instruction]:
        """Run erred tasks (and their erred dependencies) again."""
        recs: dict[str, str] = {}
        stack = [self.tasks[k] for k in keys if k in self.tasks]
        while stack:
            ts = stack.pop()
            if ts.state != "erred":
                continue
            ts.exception = ts.traceback = ts.blame = None
            ts.suspicious = 0  # asked to try again: past worker deaths no longer count
            self._story(ts, "erred", "released", stimulus_id)
            ts.state = "released"
            recs[ts.key] = "waiting"
            stack.extend(ts.dependencies)
        self._run(recs, stimulus_id)
        return self._flush()

    def handle_add_worker(self, address: str, nthreads: int, stimulus_id: str) -> list[Instruction]:
        if address in self.workers:
            return []
        ws = WorkerState(address, max(1, nthreads), self.saturation, next(self._worker_seq))
        self.workers[address] = ws
        self.idle.add(ws)
        recs: dict[str, str] = {}
        for ts in list(self.unrunnable):
            if ts.workers is not None and address in ts.workers or ts.allow_other_workers:
                self.unrunnable.discard(ts)
                self._push_queue(ts)
        self._run(recs, stimulus_id)
        return self._flush()

    def handle_remove_worker(self, address: str, stimulus_id: str) -> list[Instruction]:
        """A worker left or died: rerun what it was running, recompute what it alone held."""
        ws = self.workers.pop(address, None)
        if ws is None:
            return []
        if ws in self.idle:
            self.idle.remove(ws)
        recs: dict[str, str] = {}
        for ts in list(ws.processing):
            if ts.actor and ts.restarts and self._pinned_workers_gone(ts):
                # Being re-built on its last allowed worker: queued, it would stay
                # unrunnable, and the calls waiting for the restart would hang.
                self._fail_pinned_actor(ts, address)
                recs[ts.key] = "erred"
                continue
            ts.suspicious += 1
            if ts.suspicious > self.allowed_failures:
                ts.exception = KilledWorker(
                    f"task {ts.key!r} was running on {ts.suspicious} workers that died; "
                    "not retrying it (it may be crashing them)")
                recs[ts.key] = "erred"
            else:
                recs[ts.key] = "queued"
        for ts in list(ws.has_what):
            ts.who_has.discard(ws)
            if not ts.who_has:
                recs[ts.key] = self._actor_lost(ts, address) if ts.actor else "released"
        ws.has_what.clear()
        self._run(recs, stimulus_id)
        return self._flush()

    def handle_task_finished(self, worker: str, key: str, nbytes: int, type: str | None,
                             stimulus_id: str, duration: float | None = None,
                             run_id: int | None = None) -> list[Instruction]:
        ts = self.tasks.get(key)
        ws = self.workers.get(worker)
        if ws is None:
            return []
        if ts is not None and run_id is not None and run_id != ts.run_id:
            # An earlier run of this key (cancelled, released, moved) finished late: its
            # worker was already told to free it; the current run will report itself.
            return []
        if duration is not None and self.adaptive and ts is not None and not ts.actor:
            self._observe_duration(duration)
        if ts is None or ts.state in ("released", "forgotten", "waiting", "queued", "erred"):
            # Nobody wants this result any more (it was released while running).
            self._out.append(Free(worker, [key]))
            return self._flush()
        if ts.state == "memory":
            self._add_holder(ts, ws)
            return self._flush()
        if ts.processing_on is not ws:
            return []  # a stale report from a worker this task was moved away from
        ts.nbytes = nbytes
        ts.type = type
        self._run({key: "memory"}, stimulus_id, worker=ws)
        return self._flush()

    def _observe_duration(self, duration: float) -> None:
        """Fold a task's run time into the mean; re-size worker capacity now and then."""
        mean = self.mean_duration
        self.mean_duration = duration if mean is None else 0.9 * mean + 0.1 * duration
        self._durations_seen += 1
        if self._durations_seen % 16 == 0 or mean is None:
            wanted = self.queued_seconds / max(self.mean_duration, 1e-6)
            wanted = min(self.max_saturation, max(1.0, wanted))
            if abs(wanted - self.saturation) > 0.25 * self.saturation:
                self.set_saturation(wanted)

    def set_saturation(self, saturation: float) -> None:
        """Change how many tasks each worker may hold per thread."""
        self.saturation = saturation
        for ws in self.workers.values():
            if ws.busy < ws.capacity:
                self.idle.remove(ws)
            ws.capacity = max(1, int(ws.nthreads * saturation))
            if ws.busy < ws.capacity:
                self.idle.add(ws)

    def handle_task_erred(self, worker: str, key: str, exception: Any, traceback: str | None,
                          stimulus_id: str, run_id: int | None = None) -> list[Instruction]:
        ts = self.tasks.get(key)
        ws = self.workers.get(worker)
        if ts is None or ws is None or ts.state != "processing" or ts.processing_on is not ws:
            return []
        if run_id is not None and run_id != ts.run_id:
            return []  # an earlier run of the key failed late: not this run's outcome
        if ts.retries > 0:
            ts.retries -= 1
            self._run({key: "queued"}, stimulus_id)
        else:
            ts.exception = exception
            ts.traceback = traceback
            self._run({key: "erred"}, stimulus_id)
        return self._flush()

    def managed_bytes(self, worker: str) -> int:
        """Bytes of the values ``worker`` holds, as their holders measured them."""
        ws = self.workers.get(worker)
        return sum(ts.nbytes for ts in ws.has_what) if ws is not None else 0

    def handle_long_running(self, worker: str, key: str, stimulus_id: str) -> list[Instruction]:
        """A running task gave its thread slot back: free the slot for queued work."""
        ts = self.tasks.get(key)
        ws = self.workers.get(worker)
        if ts is None or ws is None or ts.processing_on is not ws or ts in ws.long_running:
            return []
        if ws.busy < ws.capacity:
            self.idle.remove(ws)
        ws.long_running.add(ts)
        # Not unconditionally: a worker may hold more than its capacity (the adaptive
        # saturation lowered it), and one slot given back may leave it still full.
        if ws.busy < ws.capacity:
            self.idle.add(ws)
        self._story(ts, "processing", "long-running", stimulus_id)
        self._fill_workers(stimulus_id)
        return self._flush()

    def handle_missing_data(self, worker: str, key: str, missing: dict[str, list[str]],
                            stimulus_id: str) -> list[Instruction]:
        """``worker`` could not fetch inputs of ``key`` from the workers said to hold them."""
        recs: dict[str, str] = {}
        for dep_key, bad in missing.items():
            dep = self.tasks.get(dep_key)
            if dep is None:
                continue
            for address in bad:
                bws = self.workers.get(address)
                if bws is not None and bws in dep.who_has:
                    dep.who_has.discard(bws)
                    bws.has_what.discard(dep)
            if dep.state == "memory" and not dep.who_has:
                recs[dep_key] = "released"
        ts = self.tasks.get(key)
        ws = self.workers.get(worker)
        if ts is not None and ts.state == "processing" and ts.processing_on is ws:
            recs[key] = "queued"
        self._run(recs, stimulus_id)
        return self._flush()

    # ------------------------------------------------------------- transitions
    def _run(self, recs: dict[str, str], stimulus_id: str, worker: WorkerState | None = None) -> None:
        """Apply recommendations until none remain, then fill free worker slots."""
        while recs:
            key, finish = recs.popitem()
            ts = self.tasks.get(key)
            if ts is None or ts.state == finish:
                continue
            start = ts.state
            func = self._transitions.get((start, finish))
            if func is None:
                # No direct edge (e.g. erred -> waiting): go through 'released'.
                if (start, "released") in self._transitions and ("released", finish) in self._transitions:
                    recs[key] = finish
                    func, finish = self._transitions[(start, "released")], "released"
                else:
                    raise InvalidStateError(f"no transition {start} -> {finish} for {key!r}")
            more = func(ts, stimulus_id)
            self._story(ts, start, finish, stimulus_id)
            for k, v in more.items():
                if recs.get(k) == "released" and v != "released":
                    continue
                recs[k] = v
        self._fill_workers(stimulus_id)
        if self.validate_each:
            self.validate()

    def _story(self, ts: TaskState, start: str, finish: str, stimulus_id: str) -> None:
        self.log.append((ts.key, start, finish, stimulus_id, time.time()))

    def _needed(self, ts: TaskState) -> bool:
        return bool(ts.who_wants) or bool(ts.waiters)

    def _released_waiting(self, ts: TaskState, stimulus_id: str) -> dict[str, str]:
        recs: dict[str, str] = {}
        if ts.spec is None:
            ts.exception = RuntimeError(
                f"the data of {ts.key!r} was lost (it was scattered and its worker is gone) "
                "and it has no recipe to recompute it")
            return {ts.key: "erred"}
        ts.state = "waiting"
        for dep in ts.dependencies:
            dep.waiters.add(ts)
            if dep.state == "erred":
                ts.blame = dep.blame or dep.key
                ts.exception, ts.traceback = dep.exception, dep.traceback
                recs[ts.key] = "erred"
            elif dep.state != "memory":
                ts.waiting_on.add(dep)
                if dep.state == "released":
                    recs[dep.key] = "waiting"
        if not ts.waiting_on and ts.key not in recs:
            recs[ts.key] = "queued"
        return recs

    def _waiting_queued(self, ts: TaskState, stimulus_id: str) -> dict[str, str]:
        ts.state = "queued"
        if ts.actor:  # an actor is built in its own lane, not a task slot: place it now
            return {ts.key: "processing"}
        self._push_queue(ts)
        return {}

    def _push_queue(self, ts: TaskState) -> None:
        heapq.heappush(self.queued, (ts.priority, next(self._seq), ts))

    def _fill_workers(self, stimulus_id: str) -> None:
        """Move queued tasks onto workers with free slots, highest priority first."""
        queue = self.queued
        while queue and self.idle:
            _, _, ts = queue[0]
            if ts.state != "queued" or ts in self.unrunnable:
                heapq.heappop(queue)
                continue
            ws = self._decide_worker(ts)
            if ws is None:
                heapq.heappop(queue)
                self.unrunnable.add(ts)
                continue
            heapq.heappop(queue)
            self._queued_processing(ts, stimulus_id, ws)
            self._story(ts, "queued", "processing", stimulus_id)

    def _decide_worker(self, ts: TaskState) -> WorkerState | None:
        """Where ``ts`` runs: its restriction, else the free holder of most input bytes,
        else the least occupied free worker. Actors go where the fewest actors live."""
        if ts.actor:
            return self._decide_actor_worker(ts)
        if ts.workers is not None:
            allowed = [self.workers[a] for a in ts.workers if a in self.workers]
            free = [ws for ws in allowed if ws.busy < ws.capacity]
            if free:
                return min(free, key=lambda ws: (ws.occupancy, ws.seq))
            if allowed or not ts.allow_other_workers:
                if not allowed:
                    return None
                return min(allowed, key=lambda ws: (ws.occupancy, ws.seq))
        if ts.dependencies:
            held: dict[WorkerState, int] = {}
            for dep in ts.dependencies:
                for ws in dep.who_has:
                    held[ws] = held.get(ws, 0) + dep.nbytes + 1
            free = [ws for ws in held if ws.busy < ws.capacity]
            if free:
                return max(free, key=lambda ws: (held[ws], -ws.occupancy, -ws.seq))
        return self.idle[0]

    def _decide_actor_worker(self, ts: TaskState) -> WorkerState | None:
        """Spread actors: the allowed worker hosting the fewest, then the least occupied.

        An actor does not hold a thread slot once built (it has its own lane), so a
        busy worker is no reason to avoid it; counting live actors is O(actors).
        """
        candidates = list(self.workers.values())
        if ts.workers is not None:
            allowed = [self.workers[a] for a in ts.workers if a in self.workers]
            if allowed or not ts.allow_other_workers:
                candidates = allowed
        if not candidates:
            return None
        hosted: dict[WorkerState, int] = {}
        for other in self.actor_tasks:
            homes = (other.processing_on,) if other.processing_on is not None else other.who_has
            for home in homes:
                hosted[home] = hosted.get(home, 0) + 1
        return min(candidates, key=lambda ws: (hosted.get(ws, 0), ws.occupancy, ws.seq))

    def _queued_processing(self, ts: TaskState, stimulus_id: str,
                           ws: WorkerState | None = None) -> dict[str, str]:
        if ws is None:
            ws = self._decide_worker(ts)
            if ws is None:
                self.unrunnable.add(ts)
                return {}
        in_idle = ws.busy < ws.capacity
        if in_idle:
            self.idle.remove(ws)
        ws.processing.add(ts)
        if ts.actor:  # built in its own lane: it holds no thread slot
            ws.long_running.add(ts)
        if ws.busy < ws.capacity:
            self.idle.add(ws)
        ts.state = "processing"
        ts.processing_on = ws
        deps: dict[str, list[str]] = {}
        sizes: dict[str, int] = {}  # of the inputs the worker must fetch
        for dep in ts.dependencies:
            deps[dep.key] = [w.address for w in dep.who_has]
            if ws not in dep.who_has:
                sizes[dep.key] = dep.nbytes
        ts.run_id = next(self._runs)
        self._out.append(Compute(ws.address, ts.key, ts.spec, deps, ts.name, ts.actor, ts.run_id, sizes))
        return {}

    def _leave_worker(self, ts: TaskState) -> WorkerState | None:
        ws = ts.processing_on
        ts.processing_on = None
        if ws is None or ws.address not in self.workers:
            return None
        was_idle = ws.busy < ws.capacity
        if was_idle:
            self.idle.remove(ws)
        ws.processing.discard(ts)
        ws.long_running.discard(ts)
        if ws.busy < ws.capacity:  # (a task holding no slot leaves busy unchanged)
            self.idle.add(ws)
        return ws

    def _add_holder(self, ts: TaskState, ws: WorkerState) -> None:
        ts.who_has.add(ws)
        ws.has_what.add(ts)

    def _processing_memory(self, ts: TaskState, stimulus_id: str) -> dict[str, str]:
        ws = ts.processing_on
        self._leave_worker(ts)
        assert ws is not None
        self._add_holder(ts, ws)
        ts.state = "memory"
        ts.suspicious = 0
        self.finished_total += 1
        recs: dict[str, str] = {}
        for dts in ts.waiters:
            if ts in dts.waiting_on:
                dts.waiting_on.discard(ts)
                if not dts.waiting_on and dts.state == "waiting":
                    recs[dts.key] = "queued"
        self._unlink_inputs(ts, recs)
        if not ts.actor:  # an actor's work is to be there: fire-and-forget keeps it
            ts.who_wants.discard(FIRE_AND_FORGET)  # its work is done: let the result go
        if ts.who_wants:
            self._report(ts)
        elif not ts.waiters:
            recs[ts.key] = "released"
        return recs

    def _unlink_inputs(self, ts: TaskState, recs: dict[str, str]) -> None:
        """``ts`` no longer needs its inputs: release the ones nobody else needs."""
        for dep in ts.dependencies:
            dep.waiters.discard(ts)
            if not self._needed(dep) and dep.state not in ("released", "forgotten"):
                recs[dep.key] = "released"
        ts.waiting_on.clear()

    def _processing_queued(self, ts: TaskState, stimulus_id: str) -> dict[str, str]:
        ws = self._leave_worker(ts)
        if ws is not None:
            self._out.append(Free(ws.address, [ts.key]))
        ts.state = "waiting"
        recs: dict[str, str] = {}
        for dep in ts.dependencies:
            if dep.state != "memory":
                ts.waiting_on.add(dep)
                if dep.state == "released":
                    recs[dep.key] = "waiting"
        if ts.waiting_on:
            return recs
        ts.state = "queued"
        self._push_queue(ts)
        return recs

    def _processing_released(self, ts: TaskState, stimulus_id: str) -> dict[str, str]:
        ws = self._leave_worker(ts)
        if ws is not None:
            self._out.append(Free(ws.address, [ts.key]))
        return self._to_released(ts)

    def _waiting_released(self, ts: TaskState, stimulus_id: str) -> dict[str, str]:
        self.unrunnable.discard(ts)  # a queued entry is skipped lazily when popped
        return self._to_released(ts)

    def _memory_released(self, ts: TaskState, stimulus_id: str) -> dict[str, str]:
        by_worker: dict[str, list[str]] = {}
        for ws in ts.who_has:
            ws.has_what.discard(ts)
            by_worker.setdefault(ws.address, []).append(ts.key)
        for address, keys in by_worker.items():
            self._out.append(Free(address, keys))
        ts.who_has.clear()
        recs = self._to_released(ts)
        if self._needed(ts):
            # Data lost while still wanted: compute it again from its recipe.
            for client in ts.who_wants:
                if client in self.clients:
                    self._out.append(Report(client, ts.key, "lost", {}))
            recs[ts.key] = "waiting"
            for dts in ts.waiters:
                if dts.state in ("queued", "waiting"):
                    dts.waiting_on.add(ts)
                    if dts.state == "queued":
                        dts.state = "waiting"
        return recs

    def _actor_lost(self, ts: TaskState, address: str) -> str:
        """An actor's only worker is gone, and its state with it: restart it from its
        constructor if it may (``max_restarts``), else it is dead. Never silently."""
        limit = ts.actor.get("max_restarts", 0) if isinstance(ts.actor, dict) else 0
        if self._needed(ts) and (limit < 0 or ts.restarts < limit):
            if self._pinned_workers_gone(ts):
                # Nowhere it may restart: queued, it would stay unrunnable and its
                # callers (waiting for the restart) would hang.
                self._fail_pinned_actor(ts, address)
                return "erred"
            ts.restarts += 1
            return "released"  # -> waiting again: re-created on another worker
        ts.exception = ActorDeadError(
            f"actor {ts.name} ({ts.key}) died with its worker {address}"
            + (f" after {ts.restarts} restart(s) (max_restarts={limit})" if limit else
               " (no restarts: max_restarts=0)"))
        ts.traceback = None
        return "erred"

    def _pinned_workers_gone(self, ts: TaskState) -> bool:
        """Whether ``ts`` may run only on given workers (``workers=`` without
        ``allow_other_workers``) and none of them is alive."""
        return (ts.workers is not None and not ts.allow_other_workers
                and not any(address in self.workers for address in ts.workers))

    def _fail_pinned_actor(self, ts: TaskState, address: str) -> None:
        ts.exception = ActorDeadError(
            f"actor {ts.name} ({ts.key}) died with its worker {address} and cannot restart: "
            f"the workers it is pinned to ({', '.join(sorted(ts.workers or ()))}) are gone "
            "(pass allow_other_workers=True to let it restart elsewhere)")
        ts.traceback = None

    def _memory_erred(self, ts: TaskState, stimulus_id: str) -> dict[str, str]:
        """A held actor died: its key fails, so its handles and dependents learn it."""
        for ws in ts.who_has:
            ws.has_what.discard(ts)
            self._out.append(Free(ws.address, [ts.key]))
        ts.who_has.clear()
        return self._to_erred(ts, stimulus_id)

    def _erred_released(self, ts: TaskState, stimulus_id: str) -> dict[str, str]:
        ts.exception = ts.traceback = ts.blame = None
        return self._to_released(ts)

    def _to_released(self, ts: TaskState) -> dict[str, str]:
        ts.state = "released"
        recs: dict[str, str] = {}
        self._unlink_inputs(ts, recs)
        if not self._needed(ts) and not any(d.state != "forgotten" for d in ts.dependents):
            recs[ts.key] = "forgotten"
        elif self._needed(ts) and ts.who_wants and not ts.waiters:
            pass
        return recs

    def _released_forgotten(self, ts: TaskState, stimulus_id: str) -> dict[str, str]:
        ts.state = "forgotten"
        del self.tasks[ts.key]
        self.actor_tasks.discard(ts)
        recs: dict[str, str] = {}
        for dep in ts.dependencies:
            dep.dependents.discard(ts)
            if dep.state == "released" and not self._needed(dep) and not dep.dependents:
                recs[dep.key] = "forgotten"
        for dts in ts.dependents:
            dts.dependencies.discard(ts)
        return recs

    def _to_erred(self, ts: TaskState, stimulus_id: str) -> dict[str, str]:
        if ts.state == "processing":
            self._leave_worker(ts)
        ts.state = "erred"
        self.erred_total += 1
        recs: dict[str, str] = {}
        for dts in ts.dependents:
            if dts.state in ("waiting", "queued", "released") and self._needed(dts):
                dts.exception, dts.traceback = ts.exception, ts.traceback
                dts.blame = ts.blame or ts.key
                recs[dts.key] = "erred"
        self._unlink_inputs(ts, recs)
        for dts in ts.dependents:
            dts.waiting_on.discard(ts)
        ts.who_wants.discard(FIRE_AND_FORGET)  # nobody to tell: free the exception too
        if ts.who_wants:
            self._report(ts)
        elif not ts.waiters:
            recs.setdefault(ts.key, "released")
        return recs

    def _report(self, ts: TaskState, only: str | None = None) -> None:
        clients = (only,) if only is not None else ts.who_wants
        if ts.state == "memory":
            info: dict = {"workers": [ws.address for ws in ts.who_has], "type": ts.type}
            status = "memory"
        else:
            info = {"exception": ts.exception, "traceback": ts.traceback, "blame": ts.blame}
            status = "erred"
        for client in clients:
            if client in self.clients:
                self._out.append(Report(client, ts.key, status, info))

    def _flush(self) -> list[Instruction]:
        out, self._out = self._out, []
        return out

    # ---------------------------------------------------------- introspection
    def story(self, *keys: str) -> list[tuple]:
        """Every recorded transition of ``keys``: (key, start, finish, stimulus_id, time)."""
        wanted = set(keys)
        return [entry for entry in self.log if entry[0] in wanted]

    def validate(self) -> None:
        """Check the invariants that tie tasks, workers and states together."""
        for key, ts in self.tasks.items():
            _check(ts.key == key, f"{ts} stored under {key!r}")
            s = ts.state
            _check(s in {"released", "waiting", "queued", "processing", "memory", "erred"},
                   f"{ts} has unknown state")
            _check((s == "processing") == (ts.processing_on is not None), f"{ts} processing_on mismatch")
            if s == "processing":
                _check(ts in ts.processing_on.processing, f"{ts} not in its worker's processing")  # type: ignore[union-attr]
                _check(ts.processing_on.address in self.workers, f"{ts} on a removed worker")  # type: ignore[union-attr]
            _check((s == "memory") == bool(ts.who_has), f"{ts} who_has {ts.who_has} mismatch")
            for ws in ts.who_has:
                _check(ts in ws.has_what, f"{ts} not in has_what of {ws}")
            if s == "waiting":
                _check(bool(ts.waiting_on), f"{ts} waiting on nothing")
            if s == "queued":
                _check(not ts.waiting_on, f"{ts} ready but waiting on {ts.waiting_on}")
                for dep in ts.dependencies:
                    _check(dep.state == "memory", f"{ts} ready but input {dep} not in memory")
            for dep in ts.waiting_on:
                _check(dep.state != "memory", f"{ts} waiting on {dep} which is in memory")
            for dts in ts.waiters:
                _check(dts in ts.dependents, f"waiter {dts} of {ts} is not a dependent")
                _check(dts.key in self.tasks, f"waiter {dts} of {ts} is forgotten")
            for dep in ts.dependencies:
                _check(ts in dep.dependents, f"{ts} missing from dependents of {dep}")
        for address, ws in self.workers.items():
            for ts in ws.processing:
                _check(ts.state == "processing" and ts.processing_on is ws, f"{ws} processing {ts}")
            for ts in ws.has_what:
                _check(ws in ts.who_has, f"{ws} has {ts} but is not in its who_has")
            _check((ws in self.idle) == (ws.busy < ws.capacity), f"{ws} idle-set mismatch")
            _check(ws.long_running <= ws.processing, f"{ws} long-running tasks not processing")

    def __repr__(self) -> str:
        return f"<SchedulerState {len(self.tasks)} tasks, {len(self.workers)} workers>"


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise InvalidStateError(msg)


def _missing_dependency_error(key: str, dep_key: str) -> Exception:
    return KeyError(
        f"task {key!r} depends on {dep_key!r}, which the scheduler does not know "
        "(was its Future released or cancelled before submission?)")
