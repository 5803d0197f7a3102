"""The scheduler's task state machine. No I/O: stimuli in, instructions out.

Every ``stimulus_*`` method takes an event (a client submitted a graph, a worker
finished a task, a worker died, ...) and returns the :mod:`.instructions` the
:class:`~actorrt.scheduler.actor.Scheduler` must carry out (compute this on that
worker, free these keys, tell this client its key is ready). Nothing here sends a
message, sleeps or reads a clock other than for the story's timestamps, so the
hardest logic of the runtime is tested by feeding events and asserting instructions.
Which worker a task runs on is :mod:`.placement`'s to decide; this module only asks.

A task's states::

    released -> waiting -> queued -> processing -> memory
                                              \\-> erred
    (any) -> released -> forgotten

A key is *needed* while some holder wants it (a client's Future, fire-and-forget,
a queue or variable holding a Future) or while a needed task depends on it.
"""
from __future__ import annotations

import itertools
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from graphlib import CycleError, TopologicalSorter
from typing import Any

from ..core.errors import ActorDeadError
from ..protocol import FIRE_AND_FORGET, TaskSpec  # noqa: F401 (both re-exported: the stimuli's terms)
from .instructions import Compute, Free, Instruction, Report
from .placement import Placement, WorkerState
from .invariants import InvalidStateError, check_invariants
from .task_state import (ERROR_FIELDS, NO_TASKS, NOBODY, TASK_STATES, UNFINISHED, Members,  # noqa: F401 (re-exported)
                         TaskState, TaskStatus, forget_put, grow, queue_priority, reset_rare, shared_type_name,
                         shrink)

#: Task names whose cancellations are counted (for the dashboard; freely named keys
#: must not grow the scheduler without bound).
MAX_CANCELLED_NAMES = 1000

#: Transitions a step asks for next: key -> the state it should move to.
Recs = dict[str, TaskStatus]


class KilledWorker(Exception):
    """A task was running on too many workers that died; it is not retried again."""


class SchedulerState:
    """All tasks and workers, and the transitions between task states."""

    def __init__(self, *, saturation: float | None = None, allowed_failures: int = 3,
                 story_length: int = 100_000, validate: bool = False,
                 queued_seconds: float = 0.02, max_saturation: float = 32.0) -> None:
        self.tasks: dict[str, TaskState] = {}
        self.placement = Placement(saturation, queued_seconds=queued_seconds,
                                   max_saturation=max_saturation)
        self.clients: set[str] = set()
        self.allowed_failures = allowed_failures
        self.validate_each = validate
        self.log: deque[tuple] = deque(maxlen=story_length)
        self.unfinished = 0  # tasks waiting, queued or processing (see _story)
        # Per client, tasks of a graph still arriving in parts that nothing wants yet.
        self._unclaimed: dict[str, list[TaskState]] = {}
        self.wanters = Members()  # shares the ``who_wants`` of the many tasks one client holds
        # Since start, for the dashboard (the log rotates; these do not).
        self.finished_total = 0
        self.erred_total = 0
        self.cancelled_by_name: dict[str, int] = {}  # tasks cancelled before they finished
        self._seq = itertools.count()
        self._generation = itertools.count()
        self._runs = itertools.count(1)
        self._out: list[Instruction] = []
        self._transitions: dict[tuple[TaskStatus, TaskStatus], Callable[[TaskState, str], Recs]] = {
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

    @property
    def workers(self) -> dict[str, WorkerState]:
        """The workers by address (the placement's own table: read, never change it)."""
        return self.placement.workers

    @property
    def saturation(self) -> float:
        return self.placement.saturation

    @property
    def mean_duration(self) -> float | None:
        return self.placement.mean_duration

    @property
    def queued(self) -> list:
        return self.placement.queued

    # ------------------------------------------------------------------ stimuli
    def stimulus_add_client(self, client: str) -> list[Instruction]:
        self.clients.add(client)
        return []

    def stimulus_remove_client(self, client: str, stimulus_id: str) -> list[Instruction]:
        self.clients.discard(client)
        self.wanters.forget(client)
        # A graph it was sending in parts will never be complete: forget what nothing wants.
        self._run(self._unwanted(self._unclaimed.pop(client, [])), stimulus_id)
        keys = [ts.key for ts in self.tasks.values() if client in ts.who_wants]
        return self.stimulus_release_keys(client, keys, stimulus_id)

    def stimulus_update_graph(self, client: str, tasks: Iterable[TaskSpec], wanted: Iterable[str],
                              stimulus_id: str, more: bool = False) -> list[Instruction]:
        """A client submitted tasks and wants the keys ``wanted``.

        ``more``: this is a part of a larger graph, whose next part (with the dependents
        of some of these tasks) follows; what nothing wants is judged once it is in."""
        generation = next(self._generation)
        new = [ts for spec in tasks if (ts := self._add_task(spec, generation)) is not None]
        recs: Recs = {}
        for key in wanted:
            ts = self.tasks.get(key)
            if ts is None:
                continue
            ts.who_wants = self.wanters.plus(ts.who_wants, client)
            if ts.state in ("memory", "erred"):
                self._report(ts, only=client)
            elif ts.state == "released":
                recs[key] = "waiting"
        for ts in new:
            if ts.missing_input is not None:
                ts.exception = _missing_dependency_error(ts.key, ts.missing_input)
                recs[ts.key] = "erred"
            elif ts.state == "released" and self._needed(ts):
                recs.setdefault(ts.key, "waiting")
        self._run(recs, stimulus_id)
        # Tasks of the graph that nothing wants, directly or through a dependent, would
        # otherwise stay 'released' for ever: forget them (dependents first) - once the
        # whole graph is in, as a later part may hold their dependents.
        candidates = self._unclaimed.pop(client, [])
        candidates.extend(ts for ts in new if ts.state == "released" and not self._needed(ts))
        if more:
            if candidates:
                self._unclaimed[client] = candidates
            return self._flush()
        unwanted = self._unwanted(candidates)
        if unwanted:
            self._run(unwanted, stimulus_id)
        return self._flush()

    def _add_task(self, spec: TaskSpec, generation: int) -> TaskState | None:
        """The task ``spec`` submits, made (or given its recipe); None for a key known
        already (pure=True dedup: what we have is kept)."""
        ts = self.tasks.get(spec.key)
        if ts is None:
            # (Names repeat across a graph: one string each, not one per task.)
            ts = self.tasks[spec.key] = TaskState(spec.key, spec.spec, sys.intern(spec.name))
        elif ts.state == "released" and ts.spec is None:
            ts.spec = spec.spec
        else:
            return None
        ts.priority = queue_priority(spec.priority, generation, next(self._seq))
        if (spec.retries, spec.actor, spec.resources or None) != (ts.retries, ts.actor, ts.resources):
            # (Rare fields: written only when not all defaults, see TaskState.)
            ts.retries, ts.actor, ts.resources = spec.retries, spec.actor, spec.resources or None
        if spec.actor:
            self.placement.actors.add(ts)
        if spec.workers is not None:
            ts.workers = set(spec.workers)
            ts.allow_other_workers = spec.allow_other_workers
        for dep_key in spec.deps:
            dep = self.tasks.get(dep_key)
            if dep is None:
                ts.missing_input = dep_key
                continue
            ts.dependencies = grow(ts.dependencies, dep)
            dep.dependents = grow(dep.dependents, ts)
        return ts

    def _unwanted(self, candidates: list[TaskState]) -> Recs:
        """Of tasks submitted in one graph, those still held that nothing wants,
        directly or through a dependent: to forget (dependents first)."""
        return {ts.key: "forgotten" for ts in reversed(candidates) if ts.state == "released"
                and self.tasks.get(ts.key) is ts and not self._needed(ts) and not ts.dependents}

    def stimulus_update_data(self, client: str, who_has: dict[str, list[str]], nbytes: dict[str, int],
                             types: dict[str, str], stimulus_id: str,
                             puts: dict[str, dict[str, int]] | None = None) -> list[Instruction]:
        """Data was placed on workers directly (scatter); ``puts``: each holder's serial
        number of its put (WorkerState.stimulus_put_data), named when it is freed."""
        for key, addresses in who_has.items():
            key_puts = puts.get(key) if puts else None
            holders = [self.workers[a] for a in addresses if a in self.workers]
            ts = self.tasks.get(key)
            if ts is None:
                ts = self.tasks[key] = TaskState(key, None, key.split("-", 1)[0])
            ts.who_wants = self.wanters.plus(ts.who_wants, client)
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
                        self._out.append(Free.one(ws.address, key, key_puts.get(ws.address) if key_puts else None))
                continue
            if ts.state == "memory":
                for ws in holders:  # more copies of data already held: known, so freed later
                    self._add_put_copy(ts, ws, key_puts)
                continue
            self._story(ts, ts.state, "memory", stimulus_id)
            ts.state = "memory"
            reset_rare(ts, *ERROR_FIELDS)  # (from erred: the data replaces it)
            ts.nbytes = nbytes.get(key, 0)
            ts.type = shared_type_name(types.get(key))
            for ws in holders:
                self._add_put_copy(ts, ws, key_puts)
            self._report(ts, only=client)
        return self._flush()

    def stimulus_release_keys(self, holder: str, keys: Iterable[str], stimulus_id: str) -> list[Instruction]:
        """``holder`` no longer wants ``keys`` (its Futures were dropped)."""
        recs: Recs = {}
        for key in keys:
            ts = self.tasks.get(key)
            if ts is None or holder not in ts.who_wants:
                continue
            ts.who_wants = self.wanters.minus(ts.who_wants, holder)
            if not self._needed(ts):
                recs[key] = "released"
        self._run(recs, stimulus_id)
        return self._flush()

    def stimulus_want_keys(self, holder: str, keys: Iterable[str], stimulus_id: str) -> list[Instruction]:
        """``holder`` wants ``keys`` too (a Future was unpickled, fire_and_forget, ...)."""
        recs: Recs = {}
        for key in keys:
            ts = self.tasks.get(key)
            if ts is None or holder == FIRE_AND_FORGET and ts.state in ("memory", "erred") and not (
                    ts.actor and ts.state == "memory"):  # (a live actor is kept: it is a service)
                continue  # fire-and-forget of finished work: nothing left to keep alive
            ts.who_wants = self.wanters.plus(ts.who_wants, holder)
            if ts.state in ("memory", "erred") and holder in self.clients:
                self._report(ts, only=holder)
            elif ts.state == "released":
                recs[key] = "waiting"
        self._run(recs, stimulus_id)
        return self._flush()

    def stimulus_cancel(self, keys: Iterable[str], reason: str | None, stimulus_id: str,
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
        for ts, root in root_of.items():
            if ts.key == root:
                why = reason or f"{root} was cancelled"
            else:
                why = f"{ts.key} was cancelled because its input {root} was cancelled"
            for client in ts.who_wants:
                if client in self.clients and not (client == requester and ts.key == root):
                    self._out.append(Report(client, ts.key, "cancelled", {"reason": why}))
            ts.who_wants = NOBODY
            if ts.state not in ("memory", "erred") and (ts.name in self.cancelled_by_name
                                                         or len(self.cancelled_by_name) < MAX_CANCELLED_NAMES):
                self.cancelled_by_name[ts.name] = self.cancelled_by_name.get(ts.name, 0) + 1
        # Inputs first, so dependents are released first (the last recommendation is
        # applied first): an input released while a dependent still waits on it would be
        # asked to compute again.
        graph = {ts: [dep for dep in ts.dependencies if dep in root_of] for ts in root_of}
        try:
            order = list(TopologicalSorter(graph).static_order())
        except CycleError:  # (a key submitted over a lost scattered one can close a cycle)
            order = list(root_of)
        recs: Recs = {ts.key: "released" for ts in order}
        self._run(recs, stimulus_id)
        return self._flush()

    def stimulus_retry(self, keys: Iterable[str], stimulus_id: str) -> list[Instruction]:
        """Run erred tasks (and their erred dependencies) again."""
        recs: Recs = {}
        stack = [self.tasks[k] for k in keys if k in self.tasks]
        while stack:
            ts = stack.pop()
            if ts.state != "erred":
                continue
            reset_rare(ts, *ERROR_FIELDS, "suspicious")  # past worker deaths no longer count
            self._story(ts, "erred", "released", stimulus_id)
            ts.state = "released"
            recs[ts.key] = "waiting"
            stack.extend(ts.dependencies)
        self._run(recs, stimulus_id)
        return self._flush()

    def stimulus_add_worker(self, address: str, nthreads: int, stimulus_id: str, name: str = "",
                            resources: dict[str, float] | None = None) -> list[Instruction]:
        if self.placement.add_worker(address, nthreads, name, resources) is None:
            return []
        self._run({}, stimulus_id)
        return self._flush()

    def stimulus_worker_paused(self, address: str, paused: bool, stimulus_id: str) -> list[Instruction]:
        """A worker paused for memory (no new task goes there) or resumed."""
        ws = self.placement.workers.get(address)
        if ws is None or ws.paused == paused:
            return []
        self.placement.set_paused(ws, paused)
        self._run({}, stimulus_id)
        return self._flush()

    def stimulus_remove_worker(self, address: str, stimulus_id: str) -> list[Instruction]:
        """A worker left or died: rerun what it was running, recompute what it alone held."""
        ws = self.placement.remove_worker(address)
        if ws is None:
            return []
        recs: Recs = {}
        for ts in list(ws.processing):
            if ts.actor and ts.restarts and self.placement.pinned_workers_gone(ts):
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
        for ts in self.placement.drop_replicas_on(ws):
            if not ts.who_has:
                recs[ts.key] = self._actor_lost(ts, address) if ts.actor else "released"
        self._run(recs, stimulus_id)
        return self._flush()

    def stimulus_task_finished(self, worker: str, key: str, nbytes: int, type: str | None,
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
        # (An actor's duration is how long it took to build: no guide to task run times.)
        if duration is not None and ts is not None and not ts.actor:
            self.placement.observe_duration(duration)
        if ts is None or ts.state in ("released", "forgotten", "waiting", "queued", "erred"):
            # Nobody wants this result any more (it was released while running).
            self._out.append(Free(worker, [key]))
            return self._flush()
        if ts.state == "memory":
            self.placement.add_replica(ts, ws)
            return self._flush()
        if ts.processing_on is not ws:
            return []  # a stale report from a worker this task was moved away from
        ts.nbytes = nbytes
        ts.type = shared_type_name(type)
        self._run({key: "memory"}, stimulus_id)
        return self._flush()

    def stimulus_task_erred(self, worker: str, key: str, exception: Any, traceback: str | None,
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

    def stimulus_reschedule(self, worker: str, key: str, stimulus_id: str) -> list[Instruction]:
        """Place ``key``, running on ``worker``, again (it raised ``Reschedule``, or its worker
        retires): no failure, no retry spent, no worker death counted."""
        ts = self.tasks.get(key)
        ws = self.workers.get(worker)
        if ts is None or ws is None or ts.state != "processing" or ts.processing_on is not ws:
            return []
        self._run({key: "queued"}, stimulus_id)
        return self._flush()

    def stimulus_long_running(self, worker: str, key: str, stimulus_id: str) -> list[Instruction]:
        """A running task gave its thread slot back: free the slot for queued work."""
        ts = self.tasks.get(key)
        ws = self.workers.get(worker)
        if ts is None or ws is None or ts.processing_on is not ws or ts in ws.long_running:
            return []
        self.placement.hold_no_slot(ws, ts)
        self._story(ts, "processing", "long-running", stimulus_id)
        self._fill_workers(stimulus_id)
        return self._flush()

    def stimulus_missing_data(self, worker: str, key: str, missing: dict[str, list[str]],
                              stimulus_id: str) -> list[Instruction]:
        """``worker`` could not fetch inputs of ``key`` from the workers said to hold them."""
        recs: Recs = {}
        for dep_key, bad in missing.items():
            dep = self.tasks.get(dep_key)
            if dep is None:
                continue
            for address in bad:
                bws = self.workers.get(address)
                if bws is not None:
                    self.placement.drop_replica(dep, bws)
            if dep.state == "memory" and not dep.who_has:
                recs[dep_key] = "released"
        ts = self.tasks.get(key)
        ws = self.workers.get(worker)
        if ts is not None and ts.state == "processing" and ts.processing_on is ws:
            recs[key] = "queued"
        self._run(recs, stimulus_id)
        return self._flush()

    # ------------------------------------------------------------- transitions
    def _run(self, recs: Recs, stimulus_id: str) -> None:
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
            if ts.state != start:  # (a task with nowhere to run stays 'queued': no story)
                self._story(ts, start, ts.state, stimulus_id)
            if start == "queued" and ts.state != "queued":
                self.placement.unpark(ts)
            for k, v in more.items():
                # A release, or a failure, stands: a later wish that the task wait or
                # run must not undo it (a task with an unknown input ran without it).
                if recs.get(k) == "released" and v != "released" or (
                        recs.get(k) == "erred" and v not in ("released", "erred")):
                    continue
                recs[k] = v
        self._fill_workers(stimulus_id)
        if self.validate_each:
            self.validate()

    def _add_put_copy(self, ts: TaskState, ws: WorkerState, key_puts: dict[str, int] | None) -> None:
        """``ws`` holds a copy of ``ts`` a client scattered there (with that put's serial)."""
        self.placement.add_replica(ts, ws)
        put = key_puts.get(ws.address) if key_puts else None
        if put:
            ts.puts = {**(ts.puts or {}), ws.address: put}
        else:
            forget_put(ts, ws)  # (an earlier put there, freed meanwhile)

    def _free_copy(self, ts: TaskState, ws: WorkerState) -> Free:
        """The Free of ``ws``'s copy of ``ts`` (no longer counted as one), naming the put
        that scattered it there, if one did."""
        return Free.one(ws.address, ts.key, forget_put(ts, ws))

    def _story(self, ts: TaskState, start: str, finish: str, stimulus_id: str) -> None:
        # Every change of a task's state is told here, so the count of work ahead is
        # kept here too (admission control reads it per submission: a scan would not do).
        self.log.append((ts.key, start, finish, stimulus_id, time.time()))
        if (start in UNFINISHED) is not (finish in UNFINISHED):
            self.unfinished += 1 if finish in UNFINISHED else -1

    def _needed(self, ts: TaskState) -> bool:
        return bool(ts.who_wants) or bool(ts.waiters)

    def _released_waiting(self, ts: TaskState, stimulus_id: str) -> Recs:
        if not self._needed(ts):
            # Asked to wait by a dependent that has erred or been released since, in the
            # same step. Waiting anyway, for nobody, it was left 'waiting' on nothing
            # when its own input erred.
            return {} if self._has_dependents(ts) else {ts.key: "forgotten"}
        if ts.spec is None:
            ts.exception = RuntimeError(
                f"the data of {ts.key!r} was lost (it was scattered and its worker is gone) "
                "and it has no recipe to recompute it")
            return {ts.key: "erred"}
        if ts.missing_input is not None:  # (also when asked again: retried, or re-wanted)
            ts.exception = _missing_dependency_error(ts.key, ts.missing_input)
            return {ts.key: "erred"}
        recs = self._wait_for_inputs(ts)
        if not ts.waiting_on and ts.key not in recs:
            recs[ts.key] = "queued"
        return recs

    def _wait_for_inputs(self, ts: TaskState) -> Recs:
        """``ts`` is 'waiting': on its inputs not in memory, as their states are now (never
        a stale set); released ones are asked to compute, an erred one fails ``ts``."""
        ts.state = "waiting"
        ts.waiting_on = NO_TASKS  # type: ignore[assignment]
        recs: Recs = {}
        for dep in ts.dependencies:
            dep.waiters = grow(dep.waiters, ts)
            if dep.state == "erred":
                ts.blame = dep.blame or dep.key
                ts.exception, ts.traceback = dep.exception, dep.traceback
                recs[ts.key] = "erred"
            elif dep.state != "memory":
                ts.waiting_on = grow(ts.waiting_on, dep)
                if dep.state == "released":
                    recs[dep.key] = "waiting"
        return recs

    def _waiting_queued(self, ts: TaskState, stimulus_id: str) -> Recs:
        ts.state = "queued"
        if ts.actor:  # an actor is built in its own lane, not a task slot: place it now
            return {ts.key: "processing"}
        self.placement.enqueue(ts)
        return {}

    def _fill_workers(self, stimulus_id: str) -> None:
        """Move queued tasks onto workers with free slots, highest priority first."""
        while (placed := self.placement.next_placement()) is not None:
            ts, ws = placed
            self._queued_processing(ts, stimulus_id, ws)
            self._story(ts, "queued", "processing", stimulus_id)
        if not self.placement.newly_parked:
            return
        parked, self.placement.newly_parked = self.placement.newly_parked, []
        for ts in parked:  # (no error: it runs if such a worker joins, but say why it waits)
            reason = self.placement.unrunnable_reason(ts) if ts.state == "queued" else None
            for client in ts.who_wants if reason else ():
                if client in self.clients:
                    self._out.append(Report(client, ts.key, "unrunnable", {"reason": reason}))

    def _queued_processing(self, ts: TaskState, stimulus_id: str,
                           ws: WorkerState | None = None) -> Recs:
        if ws is None:
            ws = self.placement.choose(ts)
            if ws is None:
                self.placement.shelve(ts)
                return {}
        self.placement.occupy(ws, ts)
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
        """``ts`` stops running; its worker, unless that is gone (it has nothing to free)."""
        ws = ts.processing_on
        ts.processing_on = None
        if ws is None or ws.address not in self.workers:
            return None
        self.placement.vacate(ws, ts)
        return ws

    def _processing_memory(self, ts: TaskState, stimulus_id: str) -> Recs:
        ws = ts.processing_on
        self._leave_worker(ts)
        assert ws is not None
        self.placement.add_replica(ts, ws)
        ts.state = "memory"
        if ts.suspicious:
            reset_rare(ts, "suspicious")
        self.finished_total += 1
        recs: Recs = {}
        for dts in ts.waiters:
            if ts in dts.waiting_on:
                shrink(dts.waiting_on, ts)
                if not dts.waiting_on and dts.state == "waiting":
                    recs[dts.key] = "queued"
        self._unlink_inputs(ts, recs)
        if not ts.actor:  # an actor's work is to be there: fire-and-forget keeps it
            ts.who_wants = self.wanters.minus(ts.who_wants, FIRE_AND_FORGET)  # its work is done: let the result go
        if ts.who_wants:
            self._report(ts)
        elif not ts.waiters:
            recs[ts.key] = "released"
        return recs

    def _unlink_inputs(self, ts: TaskState, recs: Recs) -> None:
        """``ts`` no longer needs its inputs: release the ones nobody else needs."""
        for dep in ts.dependencies:
            shrink(dep.waiters, ts)
            if not self._needed(dep) and dep.state not in ("released", "forgotten"):
                recs[dep.key] = "released"
        ts.waiting_on = NO_TASKS  # type: ignore[assignment]

    def _processing_queued(self, ts: TaskState, stimulus_id: str) -> Recs:
        ws = self._leave_worker(ts)
        if ws is not None:
            self._out.append(Free(ws.address, [ts.key]))
        # Its inputs may have changed while it ran (an actor input died: erred).
        recs = self._wait_for_inputs(ts)
        if ts.waiting_on or ts.key in recs:
            return recs
        ts.state = "queued"
        self.placement.enqueue(ts)
        return recs

    def _processing_released(self, ts: TaskState, stimulus_id: str) -> Recs:
        ws = self._leave_worker(ts)
        if ws is not None:
            self._out.append(Free(ws.address, [ts.key]))
        return self._to_released(ts)

    def _waiting_released(self, ts: TaskState, stimulus_id: str) -> Recs:
        return self._to_released(ts)  # (a queued one's entry in the queue is skipped)

    def _memory_released(self, ts: TaskState, stimulus_id: str) -> Recs:
        for ws in self.placement.drop_replicas(ts):
            self._out.append(self._free_copy(ts, ws))
        recs = self._to_released(ts)
        if self._needed(ts):
            # Data lost while still wanted: compute it again from its recipe.
            for client in ts.who_wants:
                if client in self.clients:
                    self._out.append(Report(client, ts.key, "lost", {}))
            recs[ts.key] = "waiting"
            for dts in ts.waiters:
                if dts.state in ("queued", "waiting"):
                    dts.waiting_on = grow(dts.waiting_on, ts)
                    if dts.state == "queued":  # (its entry in the queue is skipped)
                        self.placement.unpark(dts)
                        dts.state = "waiting"
                        self._story(dts, "queued", "waiting", stimulus_id)
        return recs

    def _actor_lost(self, ts: TaskState, address: str) -> TaskStatus:
        """An actor's only worker is gone, and its state with it: restart it from its
        constructor if it may (``max_restarts``), else it is dead. Never silently."""
        limit = ts.actor.get("max_restarts", 0) if isinstance(ts.actor, dict) else 0
        if self._needed(ts) and (limit < 0 or ts.restarts < limit):
            if self.placement.pinned_workers_gone(ts):
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
        reset_rare(ts, "traceback")
        return "erred"

    def _fail_pinned_actor(self, ts: TaskState, address: str) -> None:
        ts.exception = ActorDeadError(
            f"actor {ts.name} ({ts.key}) died with its worker {address} and cannot restart: "
            f"the workers it is pinned to ({', '.join(sorted(ts.workers or ()))}) are gone "
            "(pass allow_other_workers=True to let it restart elsewhere)")
        reset_rare(ts, "traceback")

    def _memory_erred(self, ts: TaskState, stimulus_id: str) -> Recs:
        """A held actor died: its key fails, so its handles and dependents learn it."""
        for ws in self.placement.drop_replicas(ts):
            self._out.append(self._free_copy(ts, ws))
        return self._to_erred(ts, stimulus_id)

    def _erred_released(self, ts: TaskState, stimulus_id: str) -> Recs:
        reset_rare(ts, *ERROR_FIELDS)
        return self._to_released(ts)

    def _to_released(self, ts: TaskState) -> Recs:
        ts.state = "released"
        recs: Recs = {}
        self._unlink_inputs(ts, recs)
        if self._needed(ts):
            # Released on a recommendation made while nobody needed it; a dependent began
            # to wait on it since, in the same step: compute it again, or that one waits
            # for ever on a released input.
            recs[ts.key] = "waiting"
        elif not self._has_dependents(ts):
            recs[ts.key] = "forgotten"
        return recs

    def _has_dependents(self, ts: TaskState) -> bool:
        return any(d.state != "forgotten" for d in ts.dependents)

    def _released_forgotten(self, ts: TaskState, stimulus_id: str) -> Recs:
        ts.state = "forgotten"
        del self.tasks[ts.key]
        self.placement.actors.discard(ts)
        recs: Recs = {}
        for dep in ts.dependencies:
            shrink(dep.dependents, ts)
            if dep.state == "released" and not self._needed(dep) and not dep.dependents:
                recs[dep.key] = "forgotten"
        for dts in ts.dependents:
            shrink(dts.dependencies, ts)
        return recs

    def _to_erred(self, ts: TaskState, stimulus_id: str) -> Recs:
        if ts.state == "processing":
            self._leave_worker(ts)
        ts.state = "erred"
        self.erred_total += 1
        recs: Recs = {}
        for dts in ts.dependents:
            # One waiting for it can never run; a released one fails only if wanted.
            # (It keeps ``ts`` in its waiting_on until it errs, so nothing queues it.)
            if dts.state in ("waiting", "queued") or dts.state == "released" and self._needed(dts):
                dts.exception, dts.traceback = ts.exception, ts.traceback
                dts.blame = ts.blame or ts.key
                recs[dts.key] = "erred"
        self._unlink_inputs(ts, recs)
        ts.who_wants = self.wanters.minus(ts.who_wants, FIRE_AND_FORGET)  # nobody to tell: free the exception too
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
    def key_and_name(self, key: str) -> tuple[str, str | None]:
        """The scheduler's own copy of ``key`` and the task's name (``key`` and None when
        it holds no such task): what a record kept beside the task (the task stream)
        should point at."""
        ts = self.tasks.get(key)
        return (key, None) if ts is None else (ts.key, ts.name)

    def story(self, *keys: str) -> list[tuple]:
        """Every recorded transition of ``keys``: (key, start, finish, stimulus_id, time)."""
        wanted = set(keys)
        return [entry for entry in self.log if entry[0] in wanted]

    def validate(self) -> None:
        """Check the invariants that tie tasks, workers and states together."""
        check_invariants(self)

    def __repr__(self) -> str:
        return f"<SchedulerState {len(self.tasks)} tasks, {len(self.workers)} workers>"


def _missing_dependency_error(key: str, dep_key: str) -> Exception:
    return KeyError(
        f"task {key!r} depends on {dep_key!r}, which the scheduler does not know "
        "(was its Future released or cancelled before submission?)")

