"""Which worker a task runs on, and when: the workers, how full each is, which values
each holds, the tasks ready to run that wait for a free slot, and the choice of a
worker for each.

No I/O and no task transitions. :class:`~actorrt.scheduler.state.SchedulerState`
owns one :class:`Placement`. It hands over each task that is ready to run
(:meth:`~Placement.enqueue`) and takes back, from :meth:`~Placement.next_placement`,
the next one to start and the worker it goes to; it tells the placement when a task
starts on (:meth:`~Placement.occupy`) or leaves (:meth:`~Placement.vacate`) a worker
and where values are held (:meth:`~Placement.add_replica`, ...). Only this module
changes a :class:`WorkerState`; the state machine reads them.

The workers with a free slot stay ordered by occupancy as that changes, so a placement
costs O(log workers), never a sort.

A task asking for resources (:mod:`.resources`) runs only where they are free, and
holds them while it runs. One that fits nowhere now, but on some worker here once that
worker frees them, is *held* beside the queue, in a bucket of tasks that fit the same
workers (its :func:`~.resources.signature`); buckets are looked at again only when
resources are given back or a worker joins or resumes, one task per bucket, so
unrestricted tasks never wait behind them and a waiting GPU task costs nothing per
placement of the others. One that no worker here could ever run is parked, as a task
restricted to absent workers is, and the state machine says so to its clients.

A worker holds up to ``capacity = nthreads * saturation`` tasks: more than it has
threads, so that a worker finishing a task finds the next one already there.
"""
from __future__ import annotations

import heapq
import itertools
import operator
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from sortedcontainers import SortedKeyList

from ..core.comm import host_of
from . import resources as rs
from .task_state import Members

if TYPE_CHECKING:
    from .task_state import TaskState


class WorkerState:
    """A worker as placement sees it. ``busy``, ``load`` and ``has_free_slot`` follow
    from the others; they are kept as fields, refreshed by :meth:`settle` whenever the
    others change, because placement reads them several times per task."""

    __slots__ = ("address", "busy", "capacity", "has_free_slot", "has_what", "host", "load", "long_running",
                 "name", "nthreads", "paused", "processing", "resources", "seq", "used_resources")

    def __init__(self, address: str, nthreads: int, saturation: float, seq: int, name: str = "",
                 resources: dict[str, float] | None = None) -> None:
        self.address = address
        self.name = name
        self.host = host_of(address)
        # Declared at registration, and the part of it the tasks running here hold.
        self.resources: dict[str, float] = dict(resources or {})
        self.used_resources: dict[str, float] = {}
        self.nthreads = nthreads
        self.processing: set[TaskState] = set()
        # Running tasks that gave their thread slot back (secede, or blocked on other
        # futures): they no longer count against capacity, so the work they wait for
        # can be placed here (a nested gather on a one-thread worker cannot deadlock).
        self.long_running: set[TaskState] = set()
        self.has_what: set[TaskState] = set()
        self.capacity = _capacity(nthreads, saturation)
        self.seq = seq
        # Paused for memory (its process is nearly full): no new task goes there.
        self.paused = False
        self.settle()

    def settle(self) -> None:
        """Refresh what follows from the tasks held, the capacity and the pause."""
        busy = self.busy = len(self.processing) - len(self.long_running)  # tasks holding a slot
        # The order of ``Placement.idle``: least occupied first; among equals the
        # earliest to join, so that a choice never depends on the order of a set.
        self.load = (busy / self.nthreads, self.seq)
        self.has_free_slot = busy < self.capacity and not self.paused

    @property
    def managed_bytes(self) -> int:
        """Bytes of the values held here, as their holders measured them."""
        return sum(ts.nbytes for ts in self.has_what)

    def __repr__(self) -> str:
        return f"<WorkerState {self.address} {len(self.processing)}/{self.capacity}>"


def _capacity(nthreads: int, saturation: float) -> int:
    return max(1, int(nthreads * saturation))


_load = operator.attrgetter("load")


class Placement:
    """The workers, ordered by how busy they are, the queue of tasks ready to run, and
    where each of those should run.

    ``saturation`` (tasks per thread) is fixed when given; when None it adapts to the
    tasks' run time so that each thread has about ``queued_seconds`` of work in hand:
    short tasks go out in large batches (one message carries many), long ones barely
    queue, so a worker that frees up still finds work to take.
    """

    def __init__(self, saturation: float | None = None, *, queued_seconds: float = 0.02,
                 max_saturation: float = 32.0) -> None:
        self.workers: dict[str, WorkerState] = {}
        self.holders = Members()  # shares the ``who_has`` of the many tasks held once
        # Workers with a free slot, least occupied first.
        self.idle: SortedKeyList = SortedKeyList(key=_load)
        # Tasks ready to run, highest priority first: (priority, push order, task). A task
        # that leaves the 'queued' state keeps its entry, skipped when it comes up.
        self.queued: list[tuple[tuple, int, TaskState]] = []
        # Queued tasks with no worker here they may run on (restricted to absent workers,
        # or an actor before any worker joined): out of the queue until one joins.
        self.unrunnable: set[TaskState] = set()
        self.actors: set[TaskState] = set()  # user actors, placed or held: to spread them
        # address, name and host -> the workers they select (``workers=`` resolves here).
        self.aliases: dict[str, set[WorkerState]] = {}
        # resource name -> the workers that declared it.
        self.declaring: dict[str, set[WorkerState]] = {}
        # Queued tasks waiting for resources a worker here declared to be free: by
        # signature, each a heap like ``queued``. ``held`` says which entries are live.
        self.held: set[TaskState] = set()
        self._buckets: dict[tuple, list[tuple[tuple, int, TaskState]]] = {}
        self._held_stale = False  # resources given back, or a worker came: look again
        # Parked since the state machine last asked (it tells their clients why).
        self.newly_parked: list[TaskState] = []
        self.adaptive = saturation is None
        self.saturation = 2.0 if saturation is None else saturation
        self.queued_seconds = queued_seconds
        self.max_saturation = max_saturation
        self.mean_duration: float | None = None
        self._durations_seen = 0
        self._worker_seq = itertools.count()
        self._push_seq = itertools.count()

    # ------------------------------------------------------------ membership
    def add_worker(self, address: str, nthreads: int, name: str = "",
                   resources: dict[str, float] | None = None) -> WorkerState | None:
        """The new worker's state; None if ``address`` is already a worker.

        The unrunnable tasks it may run go back to the queue, whatever made them
        unrunnable: an actor submitted before any worker joined has no restriction at
        all, and was left out when only restricted tasks were looked at.
        """
        if address in self.workers:
            return None
        ws = WorkerState(address, max(1, nthreads), self.saturation, next(self._worker_seq), name, resources)
        self.workers[address] = ws
        self.idle.add(ws)
        for alias in rs.aliases(ws):
            self.aliases.setdefault(alias, set()).add(ws)
        for resource in ws.resources:
            self.declaring.setdefault(resource, set()).add(ws)
        for ts in list(self.unrunnable):
            if _may_run_on(ts, ws):
                self.unrunnable.discard(ts)
                self.enqueue(ts)
        self._held_stale = bool(self.held)
        return ws

    def remove_worker(self, address: str) -> WorkerState | None:
        """The removed worker's state, its tasks still listed for the caller to move.
        Held tasks that only it could run are parked."""
        ws = self.workers.pop(address, None)
        if ws is None:
            return None
        self.holders.forget(ws)
        if ws in self.idle:
            self.idle.remove(ws)
        for index, keys in ((self.aliases, rs.aliases(ws)), (self.declaring, ws.resources)):
            for k in keys:
                others = index.get(k)
                if others is not None:
                    others.discard(ws)
                    if not others:
                        del index[k]
        for ts in [ts for ts in self.held if not self._runnable_here(ts)]:
            self.held.discard(ts)
            self.park(ts)
        return ws

    # ----------------------------------------------------------------- queue
    def enqueue(self, ts: TaskState) -> None:
        """``ts`` is ready to run (its state is 'queued') and waits for a free slot."""
        heapq.heappush(self.queued, (ts.priority, next(self._push_seq), ts))

    def park(self, ts: TaskState) -> None:
        """``ts`` has nowhere to run until a worker it may run on joins."""
        self.unrunnable.add(ts)
        self.newly_parked.append(ts)

    def shelve(self, ts: TaskState) -> None:
        """``ts`` fits no worker now: held while some worker here could run it once
        resources are free, else parked."""
        if ts.resources and self._runnable_here(ts):
            self._hold(ts)
        else:
            self.park(ts)

    def unpark(self, ts: TaskState) -> None:
        """``ts`` no longer waits to run (it left the 'queued' state). Left parked, it
        would be skipped when queued again."""
        self.unrunnable.discard(ts)
        self.held.discard(ts)  # (its entry in a bucket is skipped)

    def next_placement(self) -> tuple[TaskState, WorkerState] | None:
        """The queued task to start next and its worker; None while no worker has a
        free slot or nothing is queued. The caller :meth:`occupies <occupy>` the worker
        before it asks again."""
        if self._held_stale:
            placed = self._place_held()
            if placed is not None:
                return placed
        queue = self.queued
        while queue and self.idle:
            ts = heapq.heappop(queue)[2]
            if ts.state != "queued" or ts in self.unrunnable or ts in self.held:
                continue  # released, or placed, since it was queued
            if ts.resources and self._others_held_like(ts):
                # Others asking the same wait already: behind them, in priority order.
                self._hold(ts)
                continue
            ws = self.choose(ts)
            if ws is not None:
                return ts, ws
            self.shelve(ts)
        return None

    # ----------------------------------------------------------------- held
    def _bucket(self, ts: TaskState) -> list[tuple[tuple, int, TaskState]]:
        assert ts.resources is not None
        sig = rs.signature(ts.resources, ts.workers, ts.allow_other_workers, bool(ts.actor))
        return self._buckets.setdefault(sig, [])

    def _others_held_like(self, ts: TaskState) -> bool:
        """Whether live tasks of ``ts``'s signature are held (stale entries go)."""
        bucket = self._bucket(ts)
        while bucket and bucket[0][2] not in self.held:
            heapq.heappop(bucket)
        return bool(bucket)

    def _hold(self, ts: TaskState) -> None:
        self.held.add(ts)
        heapq.heappush(self._bucket(ts), (ts.priority, next(self._push_seq), ts))

    def _place_held(self) -> tuple[TaskState, WorkerState] | None:
        """The first held task, by priority, of those heading their buckets, that fits
        somewhere now. Only heads are tried: the rest of a bucket fits where its head does."""
        heads = []
        for sig, bucket in list(self._buckets.items()):
            while bucket and bucket[0][2] not in self.held:
                heapq.heappop(bucket)  # released, or placed, since it was held
            if bucket:
                heads.append((bucket[0], bucket))
            else:
                del self._buckets[sig]
        heads.sort(key=lambda head: head[0][:2])
        for (_, _, ts), bucket in heads:
            ws = self.choose(ts)
            if ws is not None:
                heapq.heappop(bucket)
                self.held.discard(ts)
                return ts, ws
        self._held_stale = False
        return None

    def _runnable_here(self, ts: TaskState) -> bool:
        """Whether some worker here could ever run ``ts`` (whatever it is busy with)."""
        return any(_may_run_on(ts, ws) for ws in self._allowed(ts))

    def unrunnable_reason(self, ts: TaskState) -> str | None:
        """Why parked ``ts`` cannot run, when resources are why; None otherwise."""
        if not ts.resources:
            return None
        return rs.why_unrunnable(ts.resources, self._allowed(ts))

    def _allowed(self, ts: TaskState) -> list[WorkerState]:
        """The workers here ``workers=`` lets ``ts`` run on, whatever their resources."""
        if ts.workers is None or ts.allow_other_workers:
            return list(self.workers.values())
        return self._present(ts.workers)

    # ------------------------------------------------------------- occupancy
    # A worker's place in ``idle`` is keyed on its ``load``: it leaves the list before
    # what the load follows from changes, and comes back after, settled; or the list
    # loses track of it.
    def _unlist(self, ws: WorkerState) -> None:
        if ws.has_free_slot:
            self.idle.remove(ws)

    def _relist(self, ws: WorkerState) -> None:
        ws.settle()
        if ws.has_free_slot:
            self.idle.add(ws)

    def occupy(self, ws: WorkerState, ts: TaskState) -> None:
        """``ts`` starts on ``ws`` and takes the resources it asked for. An actor is
        built in its own lane: it holds no slot."""
        self._unlist(ws)
        ws.processing.add(ts)
        if ts.actor:
            ws.long_running.add(ts)
        if ts.resources:
            rs.take(ws, ts.resources)
        self._relist(ws)

    def vacate(self, ws: WorkerState, ts: TaskState) -> None:
        """``ts`` no longer runs on ``ws`` (finished, failed, released or moved): its
        slot and resources are free again."""
        self._unlist(ws)
        if ts in ws.processing and ts.resources:
            rs.give_back(ws, ts.resources)
            self._held_stale = bool(self.held)
        ws.processing.discard(ts)
        ws.long_running.discard(ts)
        self._relist(ws)

    def hold_no_slot(self, ws: WorkerState, ts: TaskState) -> None:
        """``ts`` still runs on ``ws`` but gave its thread slot back (seceded)."""
        self._unlist(ws)
        ws.long_running.add(ts)
        # Not unconditionally listed: a worker may hold more than its capacity (the
        # adaptive saturation lowered it), and one slot given back may leave it full.
        self._relist(ws)

    # -------------------------------------------------------------- capacity
    def set_paused(self, ws: WorkerState, paused: bool) -> None:
        """``ws`` paused for memory (no new task goes there) or resumed."""
        self._unlist(ws)
        ws.paused = paused
        self._relist(ws)
        if not paused:
            self._held_stale = bool(self.held)

    def set_saturation(self, saturation: float) -> None:
        """Change how many tasks each worker may hold per thread."""
        self.saturation = saturation
        for ws in self.workers.values():
            self._unlist(ws)
            ws.capacity = _capacity(ws.nthreads, saturation)
            self._relist(ws)

    def observe_duration(self, duration: float) -> None:
        """Fold a task's run time into the mean; re-size worker capacity now and then."""
        if not self.adaptive:
            return
        mean = self.mean_duration
        self.mean_duration = duration if mean is None else 0.9 * mean + 0.1 * duration
        self._durations_seen += 1
        if self._durations_seen % 16 == 0 or mean is None:
            wanted = self.queued_seconds / max(self.mean_duration, 1e-6)
            wanted = min(self.max_saturation, max(1.0, wanted))
            # Only a large change: each one walks every worker.
            if abs(wanted - self.saturation) > 0.25 * self.saturation:
                self.set_saturation(wanted)

    # -------------------------------------------------------------- replicas
    # Which workers hold a task's value is kept both ways (``ts.who_has``,
    # ``ws.has_what``) and changed only here, so the two sides never disagree.
    def add_replica(self, ts: TaskState, ws: WorkerState) -> None:
        ts.who_has = self.holders.plus(ts.who_has, ws)
        ws.has_what.add(ts)

    def drop_replica(self, ts: TaskState, ws: WorkerState) -> None:
        ts.who_has = self.holders.minus(ts.who_has, ws)
        ws.has_what.discard(ts)

    def drop_replicas(self, ts: TaskState) -> list[WorkerState]:
        """Forget every copy of ``ts``'s value; the workers that held one."""
        holders = list(ts.who_has)
        for ws in holders:
            self.drop_replica(ts, ws)
        return holders

    def drop_replicas_on(self, ws: WorkerState) -> list[TaskState]:
        """Forget every value ``ws`` held (it is gone); the tasks whose values those were."""
        held = list(ws.has_what)
        for ts in held:
            self.drop_replica(ts, ws)
        return held

    # ---------------------------------------------------------------- choice
    def choose(self, ts: TaskState) -> WorkerState | None:
        """Where ``ts`` runs: its restriction, else the free holder of most input bytes,
        else the least occupied free worker. Actors go where the fewest actors live.

        None when ``ts`` may run only on workers that are not here. For a task that
        is not an actor, some worker must have a free slot.
        """
        if ts.actor:
            return self._choose_for_actor(ts)
        if ts.resources:
            return self._choose_with_resources(ts)
        if ts.workers is not None:
            allowed = self._present(ts.workers)
            if allowed:
                return min([ws for ws in allowed if ws.has_free_slot] or allowed, key=_load)
            if not ts.allow_other_workers:
                return None
        if ts.dependencies:
            holder = self._free_holder_of_most_input(ts)
            if holder is not None:
                return holder
        return self.idle[0]

    def _present(self, entries: Iterable[str]) -> list[WorkerState]:
        """The workers here that ``workers=`` entries (addresses, names, hosts) select."""
        found: set[WorkerState] = set()
        for entry in entries:
            found.update(self.aliases.get(entry, ()))
        return sorted(found, key=lambda ws: ws.seq)

    def _choose_with_resources(self, ts: TaskState) -> WorkerState | None:
        """Among the workers with ``ts``'s resources free (and that ``workers=`` allows),
        one with a free slot, the least occupied. None when there is none now.

        O(workers declaring the scarcest resource asked for): only tasks with resources
        pay it. Resources are strict: ``allow_other_workers`` loosens ``workers=`` only.
        """
        need = ts.resources
        assert need
        scarcest = min(need, key=lambda name: len(self.declaring.get(name, ())))
        candidates = [ws for ws in self.declaring.get(scarcest, ()) if not ws.paused and rs.fits(ws, need)]
        if ts.workers is not None:
            pinned = [ws for ws in candidates if rs.selects(ts.workers, ws)]
            if pinned or not ts.allow_other_workers:
                candidates = pinned
        if not candidates:
            return None
        return min(candidates, key=lambda ws: (not ws.has_free_slot, *ws.load))

    def _free_holder_of_most_input(self, ts: TaskState) -> WorkerState | None:
        # +1 per input: among holders of empty or unmeasured values, the count decides.
        held: dict[WorkerState, int] = {}
        for dep in ts.dependencies:
            for ws in dep.who_has:
                held[ws] = held.get(ws, 0) + dep.nbytes + 1
        free = [ws for ws in held if ws.has_free_slot]
        if not free:
            return None
        return max(free, key=lambda ws: (held[ws], -ws.load[0], -ws.seq))

    def _choose_for_actor(self, ts: TaskState) -> WorkerState | None:
        """Spread actors: the allowed worker hosting the fewest, then the least occupied.

        An actor does not hold a thread slot once built (it has its own lane), so a
        busy worker is no reason to avoid it; counting live actors is O(actors).
        """
        candidates = list(self.workers.values())
        if ts.workers is not None:
            allowed = self._present(ts.workers)
            if allowed or not ts.allow_other_workers:
                candidates = allowed
        if not candidates:
            return None
        if ts.resources:
            candidates = [ws for ws in candidates if not ws.paused and rs.fits(ws, ts.resources)]
            if not candidates:
                return None
        candidates = [ws for ws in candidates if not ws.paused] or candidates
        hosted: dict[WorkerState, int] = {}
        for other in self.actors:
            homes = (other.processing_on,) if other.processing_on is not None else other.who_has
            for home in homes:
                hosted[home] = hosted.get(home, 0) + 1
        return min(candidates, key=lambda ws: (hosted.get(ws, 0), *ws.load))

    def pinned_workers_gone(self, ts: TaskState) -> bool:
        """Whether ``ts`` may run only on given workers (``workers=`` without
        ``allow_other_workers``) and none of them is here."""
        return (ts.workers is not None and not ts.allow_other_workers
                and not any(entry in self.aliases for entry in ts.workers))

    # ------------------------------------------------------------ invariants
    def validate(self, check: Callable[[bool, str], None]) -> None:
        """Check the workers' invariants; ``check(ok, message)`` reports a breach."""
        for ws in self.workers.values():
            check((ws in self.idle) == ws.has_free_slot, f"{ws} idle-set mismatch")
            check(ws.long_running <= ws.processing, f"{ws} long-running tasks not processing")
            check(ws.busy == len(ws.processing) - len(ws.long_running) and ws.load[0] == ws.busy / ws.nthreads
                  and ws.has_free_slot == (ws.busy < ws.capacity and not ws.paused), f"{ws} not settled")
            for ts in ws.processing:
                check(ts.state == "processing" and ts.processing_on is ws, f"{ws} processing {ts}")
            for ts in ws.has_what:
                check(ws in ts.who_has, f"{ws} has {ts} but is not in its who_has")
            check(_resources_add_up(ws), f"{ws} holds resources {ws.used_resources}, not its tasks' sum")
        check(len(self.idle) == sum(ws.has_free_slot for ws in self.workers.values()),
              "a removed worker is still in the idle set")
        for ts in self.unrunnable:
            check(ts.state == "queued", f"{ts} parked but not queued")
            check(not any(_may_run_on(ts, ws) for ws in self.workers.values()),
                  f"{ts} parked while a worker it may run on is here")
            check(ts not in self.held, f"{ts} both parked and held")
        for ts in self.held:
            check(ts.state == "queued", f"{ts} held but not queued")
            check(self._runnable_here(ts), f"{ts} held while no worker here could run it")


def _may_run_on(ts: TaskState, ws: WorkerState) -> bool:
    """Whether ``ts``'s restrictions (if any) let it run on ``ws``, once free."""
    return ((ts.workers is None or ts.allow_other_workers or rs.selects(ts.workers, ws))
            and (not ts.resources or rs.declares(ws, ts.resources)))


def _resources_add_up(ws: WorkerState) -> bool:
    """Whether what ``ws`` holds taken is what the tasks running there asked for."""
    held: dict[str, float] = {}
    for ts in ws.processing:
        for name, amount in (ts.resources or {}).items():
            held[name] = held.get(name, 0.0) + amount
    return all(abs(held.get(k, 0.0) - ws.used_resources.get(k, 0.0)) < 1e-6 for k in {*held, *ws.used_resources})
