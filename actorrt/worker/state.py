"""The worker's per-key state machine. No I/O: stimuli in, instructions out.

Every ``stimulus_*`` method takes an event (the scheduler placed tasks, a peer sent
the inputs asked of it, a task's function returned, ...) and returns the
instructions the :class:`~actorrt.worker.actor.Worker` must carry out: fetch these
keys from that peer, run this task, tell the scheduler this one finished. Nothing here
sends a message, starts a thread or touches the event loop, so the worker's
bookkeeping is tested by feeding events and asserting instructions.

One row per key the worker knows. A key computed here::

    released -> waiting -> executing -> memory
             \\----------/          \\-> erred -> (released or forgotten)

and an input of a local task that lives on a peer::

    released -> fetch -> flight -> memory (a copy the scheduler does not know of)
                              \\-> released (lost, or it cannot move)

'released' rests only while some local task still takes the key as input: the key
is neither here nor on its way. A row nobody needs is forgotten. The values
themselves are in ``data``, a :class:`~actorrt.worker.spill.SpillBuffer` (in memory,
then on disk), which this machine keeps in step with the rows in 'memory' (the
Worker and its peers read it; only this module writes it).
"""
from __future__ import annotations

import itertools
import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from ..core.typenames import type_name
from ..protocol import ComputeTask
from .spill import SpillBuffer

#: A key's state on this worker ('erred' passes; 'forgotten' is a row that is gone).
KeyStatus = Literal["released", "fetch", "flight", "waiting", "executing", "memory", "erred", "forgotten"]

# The transitions a row may take: start -> the states it may move to.
_NEXT: dict[str, frozenset[str]] = {
    "released": frozenset({"fetch", "waiting", "executing", "memory", "forgotten"}),
    "fetch": frozenset({"flight", "memory", "waiting", "executing", "released", "forgotten"}),
    "flight": frozenset({"memory", "released", "waiting", "executing", "forgotten"}),
    "waiting": frozenset({"executing", "erred", "released", "forgotten"}),
    "executing": frozenset({"memory", "erred", "released", "forgotten"}),
    "erred": frozenset({"released", "forgotten"}),
    "memory": frozenset({"released", "forgotten"}),
}
_RESTING = frozenset(_NEXT) - {"erred"}
_COMING = ("fetch", "flight")
_RUNS = ("waiting", "executing")

# Bytes fetched from peers at once (dask: transfer_incoming_bytes_limit).
TRANSFER_INCOMING_BYTES_LIMIT = 512 << 20


# --- instructions ---------------------------------------------------------------------
# (Slotted dataclasses, not NamedTuples: built per task, and a NamedTuple's __new__
# costs twice as much. The stimuli's payload, ComputeTask, is the wire record itself,
# decoded without its __new__: protocol.py.)

@dataclass(slots=True)
class Fetch:
    """Ask ``peer`` for ``keys``; the outcome comes back as ``stimulus_fetched(transfer, ...)``."""
    transfer: int
    peer: str
    keys: list[str]
    nbytes: int


@dataclass(slots=True)
class Execute:
    """Run ``key`` (the pool, or a new lane if ``actor`` is not None); its outcome comes
    back as ``stimulus_executed`` or ``stimulus_execute_erred`` with the same ``job``."""
    key: str
    job: int
    spec: Any
    name: str
    actor: dict | None
    inputs: dict[str, Any]
    run_id: int | None  # the scheduler's name for this run (its reports carry it)


@dataclass(slots=True)
class ReportFinished:
    key: str
    nbytes: int
    type: str
    duration: float | None
    run_id: int | None


@dataclass(slots=True)
class ReportErred:
    key: str
    error: BaseException
    run_id: int | None


@dataclass(slots=True)
class ReportMissing:
    """``key`` cannot run here: its inputs ``missing`` could not be had from the holders named."""
    key: str
    missing: dict[str, list[str]]


@dataclass(slots=True)
class LongRunning:
    """The run of ``key`` gave its thread slot back (the scheduler may place more here)."""
    key: str


@dataclass(slots=True)
class StopActor:
    """The user actor hosted here for ``key`` goes."""
    key: str


@dataclass(slots=True)
class Abandon:
    """Nobody wants the outcome of ``job`` any more: let go of what it holds (a lane)."""
    key: str
    job: int


Instruction = Fetch | Execute | ReportFinished | ReportErred | ReportMissing | LongRunning | StopActor | Abandon


class InvalidStateError(AssertionError):
    pass


class KeyState:
    """What this worker knows of one key."""

    __slots__ = ("key", "state", "task", "job", "actor", "waiting_on", "waiters", "missing", "unmovable",
                 "long_running", "copy", "uses", "nbytes", "type", "batch", "put")

    def __init__(self, key: str) -> None:
        self.key = key
        self.state: KeyStatus = "released"
        # While it is to be computed here (waiting, executing):
        self.task: ComputeTask | None = None       # the recipe, its inputs and run id
        self.job: int | None = None                # the run in progress (executing only)
        self.actor: dict | None = None             # in memory: an actor hosted here goes with the key
        self.waiting_on: set[str] | None = None    # inputs on their way
        self.missing: dict[str, list[str]] | None = None  # inputs that will not come -> holders to blame
        self.unmovable: BaseException | None = None  # the first input that cannot be brought here
        self.long_running = False                  # the scheduler was told (once per run)
        # As a value, or an input of local tasks:
        # Local tasks waiting for it to arrive, in the order placed (they run in that order).
        self.waiters: dict[str, None] | None = None
        self.copy = False       # fetched from a peer: the scheduler does not know it is here
        self.uses = 0           # local tasks (waiting, executing) that take it as input
        self.nbytes = 0
        self.type = ""          # the value's type name, as reported (read here: the store may be on disk)
        self.batch: int | None = None              # the transfer bringing it (fetch, flight)
        # Scattered here by a client: this worker's serial number of that put (0: computed,
        # fetched or copied here). A free from the scheduler names the put it knew of.
        self.put = 0

    def __repr__(self) -> str:
        return f"<KeyState {self.key!r} {self.state}>"


class WorkerState:
    """The keys one worker holds, fetches and runs, and its transfer budget."""

    def __init__(self, data: SpillBuffer | None = None, address: str = "", *,
                 transfer_limit: int = TRANSFER_INCOMING_BYTES_LIMIT, story_length: int = 20_000,
                 rng: random.Random | None = None) -> None:
        self.data = SpillBuffer() if data is None else data
        self.address = address  # never fetch from ourselves
        self.rows: dict[str, KeyState] = {}
        # Transfer budget: bytes being fetched at once stay under this (one request
        # always may run, however big), so a wide fan-in cannot exhaust memory.
        self.transfer_limit = transfer_limit
        self.transfer_incoming_bytes = 0
        self.transfer_incoming_bytes_peak = 0
        self.queued_transfers: deque[Fetch] = deque()
        self.transfers_in_flight: dict[int, Fetch] = {}
        self.log: deque[tuple[str, str, str, str]] = deque(maxlen=story_length)
        self._rng = rng or random.Random()
        self._transfers = itertools.count(1)
        self._puts = itertools.count(1)
        self._jobs = itertools.count(1)
        self._stimuli = itertools.count(1)

    # ------------------------------------------------------------------ stimuli
    def stimulus_compute(self, tasks: Iterable[ComputeTask], stimulus_id: str = "") -> list[Instruction]:
        """The scheduler placed ``tasks`` here."""
        sid = stimulus_id or self._sid("compute")
        out: list[Instruction] = []
        for task in tasks:
            self._compute(task, sid, out)
        self._start_transfers(sid, out)
        return out

    def stimulus_fetched(self, transfer: int, values: dict[str, Any], unmovable: dict[str, BaseException],
                         stimulus_id: str = "") -> list[Instruction]:
        """A fetch came back: ``values`` loaded, ``unmovable`` cannot come here (retrying
        would fail the same way); what it asked for and got neither of, the peer lost."""
        fetch = self.transfers_in_flight.pop(transfer, None)
        if fetch is None:
            return []
        sid = stimulus_id or self._sid("fetched")
        out: list[Instruction] = []
        self.transfer_incoming_bytes -= fetch.nbytes
        for key in fetch.keys:
            row = self.rows.get(key)
            if row is None:
                continue
            if key in values and row.state in _COMING:  # (maybe queued again meanwhile: take it)
                self._store(row, values[key], row.nbytes, True, sid, out)
            elif row.state == "flight" and row.batch == transfer:
                self._not_coming(row, sid, out, error=unmovable.get(key), blame=[fetch.peer])
        self._start_transfers(sid, out)
        return out

    def stimulus_fetch_failed(self, transfer: int, stimulus_id: str = "") -> list[Instruction]:
        """A fetch brought nothing (the peer is gone or unreachable): it lost every key asked."""
        return self.stimulus_fetched(transfer, {}, {}, stimulus_id or self._sid("fetch-failed"))

    def stimulus_executed(self, key: str, job: int, value: Any, nbytes: int, type: str,
                          duration: float | None, stimulus_id: str = "") -> list[Instruction]:
        row = self.rows.get(key)
        if row is None or row.job != job:
            return []  # a run freed or superseded meanwhile: nobody wants its outcome
        sid = stimulus_id or self._sid("executed")
        task = row.task
        assert task is not None
        out: list[Instruction] = [ReportFinished(
            # A task that waited on others says nothing about how long work takes.
            key, nbytes, type, None if row.long_running else duration, task.run_id)]
        row.job = None
        self._end_run(row, sid)
        row.actor = task.actor
        self._store(row, value, nbytes, False, sid, out)
        return out

    def stimulus_execute_erred(self, key: str, job: int, error: BaseException,
                               stimulus_id: str = "") -> list[Instruction]:
        row = self.rows.get(key)
        if row is None or row.job != job:
            return []
        sid = stimulus_id or self._sid("execute-erred")
        row.job = None
        out: list[Instruction] = [ReportErred(key, error, row.task.run_id if row.task else None)]
        self._move(row, "erred", sid)
        self._drop_run(row, sid, out)
        return out

    def stimulus_seceded(self, key: str, job: int, stimulus_id: str = "") -> list[Instruction]:
        """The run gave its thread slot back. Told once per run: the scheduler's view of
        its slots does not flip back when it takes one again."""
        row = self.rows.get(key)
        if row is None or row.job != job or row.long_running:
            return []
        row.long_running = True
        return [LongRunning(key)]

    def stimulus_free_keys(self, keys: Iterable[str], stimulus_id: str = "",
                           puts: dict[str, int] | None = None) -> list[Instruction]:
        """The scheduler no longer wants ``keys`` here (computed, held or running).

        ``puts``: for a key scattered here, the put the scheduler frees (its serial
        number, ``stimulus_put_data``). A value put here again since is kept: a client
        that released a scattered key and scattered it again (the same value hashes to
        the same key) puts it over its own connection, while the free of the first put
        comes from the scheduler over another; the new put may arrive first, and the
        scheduler learns of it (update_data) after the free."""
        sid = stimulus_id or self._sid("free-keys")
        out: list[Instruction] = []
        for key in keys:
            row = self.rows.get(key)
            if row is None:
                continue  # (nothing here: every value has a row, validate() says so)
            if row.state in _RUNS:
                self._drop_run(row, sid, out)
            elif row.state == "memory":
                if puts and row.put > puts.get(key, row.put):
                    continue  # put again since the put the scheduler frees
                self._drop_value(row, sid, out)
            # (fetch, flight, released: only local tasks want it, which the scheduler
            # does not know of; they keep it until they stop.)
        return out

    def stimulus_put_data(self, values: dict[str, Any], nbytes: dict[str, int],
                          stimulus_id: str = "", scattered: bool = True) -> list[Instruction]:
        """Data was put here: it is ours. ``scattered``: by a client, which tells the
        scheduler, naming each put (``put_serial``); else copied here on the scheduler's
        word (acquire_replicas), which frees it without naming a put."""
        sid = stimulus_id or self._sid("put-data")
        out: list[Instruction] = []
        for key, value in values.items():
            row = self.rows.get(key)
            if row is None:
                row = self.rows[key] = KeyState(key)
            elif row.state in _RUNS:
                continue  # the run stands: the scheduler keeps it and waits for its report
            self._store(row, value, nbytes[key], False, sid, out)
            if scattered:
                row.put = next(self._puts)
        return out

    def put_serial(self, key: str) -> int:
        """The serial number of the put that stored ``key`` here (0: none, or not stored:
        a run of it was going on)."""
        row = self.rows.get(key)
        return row.put if row is not None else 0

    def stimulus_scheduler_lost(self, stimulus_id: str = "") -> list[Instruction]:
        """The scheduler gave up on this worker: its runs are rerun elsewhere, its data
        recomputed, its actors restarted. Forget everything, so that on rejoining this
        worker hands in no stale or duplicate result."""
        sid = stimulus_id or self._sid("scheduler-lost")
        out: list[Instruction] = []
        for row in list(self.rows.values()):
            if row.job is not None:
                out.append(Abandon(row.key, row.job))
            if self._hosts_actor(row):
                out.append(StopActor(row.key))
            self.log.append((row.key, row.state, "forgotten", sid))
            row.state = "forgotten"
        self.rows.clear()
        self.data.clear()
        # (Transfers on the wire still count against the budget until they come back.)
        self.queued_transfers.clear()
        return out

    # ------------------------------------------------------------------ queries
    def awaits(self, key: str) -> bool:
        """Whether a value for ``key`` that a peer sent should be loaded and kept."""
        row = self.rows.get(key)
        return row is not None and row.state in _COMING

    def is_running(self, key: str, job: int) -> bool:
        row = self.rows.get(key)
        return row is not None and row.job == job

    def keys_in(self, *states: KeyStatus) -> list[str]:
        return [key for key, row in self.rows.items() if row.state in states]

    # ------------------------------------------------------------- a task's run
    def _compute(self, task: ComputeTask, sid: str, out: list[Instruction]) -> None:
        key = task.key
        row = self.rows.get(key)
        if row is not None and row.state in _RUNS:
            # Placed again (cancelled, then submitted again): the new run replaces it,
            # and the reports carry the run they are about. Local tasks waiting for
            # it wait for the new run.
            waiters, row.waiters = row.waiters, None
            self._drop_run(row, sid, out)
            row = self.rows.get(key)
            if row is not None:  # (always, when it has waiters: they use it)
                row.waiters = waiters
        if row is not None and row.state == "memory":
            if task.actor is None:  # already here (e.g. recomputed elsewhere and copied)
                row.copy = False  # the scheduler now knows it is here: ours
                out.append(ReportFinished(key, row.nbytes, row.type, None, task.run_id))
                return
            # A copy of an actor's handle fetched as some task's input: the actor
            # itself is to be created here (a restart), not the copy reported.
            self._drop_value(row, sid, out)
            row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = KeyState(key)
        row.batch = None  # (an input on its way, now to be computed here: the transfer no longer counts)
        row.task = task
        self._gather_inputs(row, task, sid, out)

    def _gather_inputs(self, row: KeyState, task: ComputeTask, sid: str, out: list[Instruction]) -> None:
        """Count ``row`` as a user of its inputs and send for those not here."""
        if not task.deps:
            self._ready(row, sid, out)
            return
        rows = self.rows
        by_peer: dict[str, list[str]] = {}
        waiting: set[str] = set()
        for dep, holders in task.deps.items():
            d = rows.get(dep)
            if d is None:
                d = rows[dep] = KeyState(dep)
            d.uses += 1
            if d.state == "memory":
                continue
            if d.state == "released":
                candidates = [h for h in holders if h != self.address]
                if not candidates:  # only this worker was named, and it has not got it
                    if row.missing is None:
                        row.missing = {}
                    row.missing[dep] = list(holders)
                    continue
                d.nbytes = task.sizes.get(dep, 0)
                by_peer.setdefault(self._rng.choice(candidates), []).append(dep)
            waiting.add(dep)
            if d.waiters is None:
                d.waiters = {}
            d.waiters[row.key] = None
        # Each task's inputs in their own requests, queued in the order placed: the
        # first task placed is not held up by the inputs of the ones after it.
        for peer, keys in by_peer.items():
            for batch, nbytes in _batches(keys, task.sizes, self.transfer_limit):
                fetch = Fetch(next(self._transfers), peer, batch, nbytes)
                self.queued_transfers.append(fetch)
                for dep in batch:
                    rows[dep].batch = fetch.transfer
                    self._move(rows[dep], "fetch", sid)
        if waiting:
            row.waiting_on = waiting
            self._move(row, "waiting", sid)
        else:
            self._ready(row, sid, out)

    def _ready(self, row: KeyState, sid: str, out: list[Instruction]) -> None:
        """Nothing more is on its way for ``row``: run it, or say why it cannot run."""
        task = row.task
        assert task is not None
        if row.unmovable is not None:
            out.append(ReportErred(row.key, row.unmovable, task.run_id))
            self._move(row, "erred", sid)
            self._drop_run(row, sid, out)
            return
        deps = task.deps
        inputs: dict[str, Any] = {}
        if deps:
            missing = self._missing_inputs(row, deps)
            if missing:
                out.append(ReportMissing(row.key, missing))
                self._drop_run(row, sid, out)
                return
            data = self.data
            inputs = {k: data[k] for k in deps}
        row.job = job = next(self._jobs)
        self._move(row, "executing", sid)
        out.append(Execute(row.key, job, task.spec, task.name, task.actor, inputs, task.run_id))

    def _missing_inputs(self, row: KeyState, deps: dict[str, list[str]]) -> dict[str, list[str]]:
        """The inputs of ``row`` not here, with the holders to blame for each."""
        rows = self.rows
        missing = row.missing
        row.missing = None
        if missing:
            missing = {k: h for k, h in missing.items() if rows[k].state != "memory"}
            if missing:
                return missing
        for k, holders in deps.items():
            if rows[k].state != "memory":  # freed by the scheduler while this task waited
                return {k: list(holders)}
        return {}

    def _end_run(self, row: KeyState, sid: str) -> None:
        """``row`` is no longer a run: its inputs are let go, and so is its recipe."""
        task, waiting = row.task, row.waiting_on
        row.task = row.waiting_on = row.missing = row.unmovable = None
        row.long_running = False
        if task is None or not task.deps:
            return
        rows = self.rows
        for dep in task.deps:
            d = rows[dep]
            if waiting is not None and dep in waiting and d.waiters is not None:
                d.waiters.pop(row.key, None)
            d.uses -= 1
            if not d.uses:
                self._unused(d, sid)

    def _drop_run(self, row: KeyState, sid: str, out: list[Instruction]) -> None:
        """``row`` is not to be computed here after all (freed, superseded, failed)."""
        if row.job is not None:
            out.append(Abandon(row.key, row.job))
            row.job = None
        self._end_run(row, sid)
        row.actor = None
        waiters, row.waiters = row.waiters, None
        if row.uses:
            if row.state != "released":
                self._move(row, "released", sid)
        else:
            self._forget(row, sid)
        if waiters:  # local tasks that waited for it to be computed here: it will not be
            self._wake(row.key, waiters, sid, out, blame=[])

    # ------------------------------------------------------------ values, inputs
    def _store(self, row: KeyState, value: Any, nbytes: int, copy: bool, sid: str,
               out: list[Instruction]) -> None:
        self.data.put(row.key, value, nbytes, spillable=row.actor is None)
        row.nbytes = nbytes
        row.type = type_name(value)
        row.copy = copy
        row.batch = None
        row.put = 0  # (stimulus_put_data numbers a scatter's)
        if row.state == "memory":
            return
        self._move(row, "memory", sid)
        waiters, row.waiters = row.waiters, None
        if waiters:
            self._wake(row.key, waiters, sid, out)

    def _drop_value(self, row: KeyState, sid: str, out: list[Instruction]) -> None:
        if self._hosts_actor(row):
            out.append(StopActor(row.key))
        if row.uses:  # a local task still takes it: it will find it gone and say so
            self.data.pop(row.key, None)
            row.copy = False
            row.put = 0
            row.actor = None
            self._move(row, "released", sid)
        else:
            self._forget(row, sid)

    def _not_coming(self, row: KeyState, sid: str, out: list[Instruction], *,
                    error: BaseException | None, blame: list[str]) -> None:
        """An input on its way will not arrive: lost by ``blame``, or unable to move (``error``)."""
        row.batch = None
        self._move(row, "released", sid)
        waiters, row.waiters = row.waiters, None
        if waiters:
            self._wake(row.key, waiters, sid, out, blame=None if error is not None else blame, error=error)

    def _wake(self, key: str, waiters: dict[str, None], sid: str, out: list[Instruction], *,
              blame: list[str] | None = None, error: BaseException | None = None) -> None:
        """``key`` arrived (no ``blame``, no ``error``) or will not: the local tasks
        that waited for it go on once nothing else is on its way for them."""
        rows = self.rows
        for waiter in waiters:
            task = rows.get(waiter)
            if task is None or task.waiting_on is None or key not in task.waiting_on:
                continue
            task.waiting_on.discard(key)
            if error is not None:
                if task.unmovable is None:
                    task.unmovable = error
            elif blame is not None:
                if task.missing is None:
                    task.missing = {}
                task.missing[key] = blame
            if not task.waiting_on:
                task.waiting_on = None
                self._ready(task, sid, out)

    def _unused(self, row: KeyState, sid: str) -> None:
        """No local task takes ``row`` as input any more: a copy or a fetch goes with them."""
        if row.state == "memory":
            if row.copy:  # the scheduler never frees what it does not know is here
                self._forget(row, sid)
        elif row.state not in _RUNS:
            self._forget(row, sid)  # (a fetch on the wire is ignored when it comes back)

    def _forget(self, row: KeyState, sid: str) -> None:
        key = row.key
        if row.state == "memory":
            self.data.pop(key, None)
        del self.rows[key]
        self.log.append((key, row.state, "forgotten", sid))  # (from any state)
        row.state = "forgotten"

    @staticmethod
    def _hosts_actor(row: KeyState) -> bool:
        return row.state == "memory" and row.actor is not None and not row.copy

    # ----------------------------------------------------------------- transfers
    def _start_transfers(self, sid: str, out: list[Instruction]) -> None:
        """Start queued fetches, oldest first, while they fit in the transfer budget."""
        queue, rows = self.queued_transfers, self.rows
        while queue:
            fetch = queue[0]
            keys = [k for k in fetch.keys
                    if (r := rows.get(k)) is not None and r.state == "fetch" and r.batch == fetch.transfer]
            if not keys:  # every task that wanted them stopped, or they came another way
                queue.popleft()
                continue
            nbytes = sum(rows[k].nbytes for k in keys)
            if self.transfer_incoming_bytes and self.transfer_incoming_bytes + nbytes > self.transfer_limit:
                return
            queue.popleft()
            fetch = Fetch(fetch.transfer, fetch.peer, keys, nbytes)
            self.transfers_in_flight[fetch.transfer] = fetch
            self.transfer_incoming_bytes += nbytes
            if self.transfer_incoming_bytes > self.transfer_incoming_bytes_peak:
                self.transfer_incoming_bytes_peak = self.transfer_incoming_bytes
            for key in keys:
                self._move(rows[key], "flight", sid)
            out.append(fetch)

    # ----------------------------------------------------------------- the story
    def _move(self, row: KeyState, finish: KeyStatus, sid: str) -> None:
        start = row.state
        if finish not in _NEXT[start]:
            raise InvalidStateError(f"no transition {start} -> {finish} for {row.key!r} ({sid})")
        # (No clock: a task's cost is the product, and the stimulus ids order the story.)
        self.log.append((row.key, start, finish, sid))
        row.state = finish

    def _sid(self, what: str) -> str:
        return f"{what}-{next(self._stimuli)}"

    def story(self, *keys: str) -> list[tuple]:
        """Every recorded transition of ``keys``: (key, start, finish, stimulus_id)."""
        wanted = set(keys)
        return [entry for entry in self.log if entry[0] in wanted]

    # ---------------------------------------------------------------- invariants
    def validate(self) -> None:
        """Check the invariants that tie rows, values and transfers together."""
        rows = self.rows
        uses: dict[str, int] = {}
        for key, row in rows.items():
            s = row.state
            _check(row.key == key, f"{row} stored under {key!r}")
            _check(s in _RESTING, f"{row} rests in a passing state")
            _check((s == "executing") == (row.job is not None), f"{row} job {row.job} mismatch")
            _check((s in _RUNS) == (row.task is not None), f"{row} task {row.task} mismatch")
            _check((s == "waiting") == bool(row.waiting_on), f"{row} waiting on {row.waiting_on}")
            _check((s in _COMING) == (row.batch is not None), f"{row} batch {row.batch} mismatch")
            _check((s == "memory") == (key in self.data), f"{row} and data disagree")
            _check(not row.copy or (s == "memory" and row.uses > 0), f"{row} a copy kept unused")
            _check(s not in ("released", "fetch", "flight") or row.uses > 0, f"{row} kept, used by none")
            _check(not row.waiters or s in _COMING or s in _RUNS, f"{row} has waiters {row.waiters}")
            for waiter in row.waiters or ():
                w = rows.get(waiter)
                _check(w is not None and w.waiting_on is not None and key in w.waiting_on,
                       f"{row} has waiter {waiter} that does not wait for it")
            for dep in row.waiting_on or ():
                d = rows.get(dep)
                _check(d is not None and d.waiters is not None and key in d.waiters,
                       f"{row} waits for {dep} which does not know")
            if row.task is not None:
                for dep in row.task.deps:
                    uses[dep] = uses.get(dep, 0) + 1
        for key, row in rows.items():
            _check(row.uses == uses.get(key, 0), f"{row} counts {row.uses} uses, tasks have {uses.get(key, 0)}")
        _check(set(self.data) <= set(rows), f"values without rows: {set(self.data) - set(rows)}")
        queued = {f.transfer for f in self.queued_transfers}
        for row in rows.values():
            if row.state == "fetch":
                _check(row.batch in queued, f"{row} in no queued transfer")
            elif row.state == "flight":
                fetch = self.transfers_in_flight.get(row.batch or 0)
                _check(fetch is not None and row.key in fetch.keys, f"{row} in no transfer on the wire")
        inflight = sum(f.nbytes for f in self.transfers_in_flight.values())
        _check(self.transfer_incoming_bytes == inflight,
               f"transfer_incoming_bytes {self.transfer_incoming_bytes} != {inflight} on the wire")
        _check(self.transfer_incoming_bytes_peak >= self.transfer_incoming_bytes, "peak below current")

    def __repr__(self) -> str:
        return f"<WorkerState {len(self.rows)} keys, {len(self.data)} in memory>"


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise InvalidStateError(msg)


def _batches(keys: list[str], sizes: dict[str, int], limit: int) -> list[tuple[list[str], int]]:
    """Split one holder's keys into requests of at most ``limit`` bytes (a bigger value
    goes alone), so the budget can interleave holders instead of waiting on one."""
    out: list[tuple[list[str], int]] = []
    batch: list[str] = []
    total = 0
    for key in keys:
        n = sizes.get(key, 0)
        if batch and total + n > limit:
            out.append((batch, total))
            batch, total = [], 0
        batch.append(key)
        total += n
    if batch:
        out.append((batch, total))
    return out
