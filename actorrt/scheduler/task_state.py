"""A task as the scheduler knows it (:class:`TaskState`) and the states it moves
through; :mod:`.state` moves it. A record with no behaviour of its own."""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .placement import WorkerState

#: A task's state. Plain strings, not an Enum: they are what ``client.story()`` and
#: ``key_states`` hand to clients, and what the dashboard counts by.
TaskStatus = Literal["released", "waiting", "queued", "processing", "memory", "erred", "forgotten"]
#: The states of a task the scheduler holds, in the order a task moves through them
#: (a 'forgotten' task is no longer held).
TASK_STATES: tuple[TaskStatus, ...] = ("released", "waiting", "queued", "processing", "memory", "erred")
#: The states of a task with work still ahead of it: what admission control counts.
#: ('long-running' is told in a story, not a state: a processing task that seceded.)
UNFINISHED = frozenset({"waiting", "queued", "processing", "long-running"})


#: The links a task starts with. Most tasks of a map have no inputs and no dependents:
#: four empty sets each would be ~860 bytes of a held task's cost, so they share this
#: one until :func:`grow` gives a task a set of its own.
NO_TASKS: "frozenset[TaskState]" = frozenset()


def grow(links: "set[TaskState]", ts: "TaskState") -> "set[TaskState]":
    """``links`` with ``ts`` added: a new set if ``links`` is the shared empty one.
    Use as ``x.links = grow(x.links, ts)``."""
    if links is NO_TASKS:
        return {ts}
    links.add(ts)
    return links


def shrink(links: "set[TaskState]", ts: "TaskState") -> None:
    """Drop ``ts`` from ``links`` (nothing to do for the shared empty set)."""
    if links:
        links.discard(ts)


#: A task's place in the queue is one int: the user's priority (higher first), then its
#: submission (earlier first), then its order within it. A tuple of the three cost 120
#: bytes per held task; the int, 40. (Generations and orders stay below 2**40.)
_ORDER_BITS = 40
_ORDER_MASK = (1 << _ORDER_BITS) - 1
_FRACTION = 1 << 20  # a float priority keeps 20 bits below the point


def queue_priority(user: float, generation: int, order: int) -> int:
    """The int that orders tasks as ``(-user, generation, order)`` would."""
    return (round(-user * _FRACTION) << 2 * _ORDER_BITS) + (generation << _ORDER_BITS) + order


def unpack_priority(priority: int) -> tuple[float, int, int]:
    """``(user priority, generation, order)`` of :func:`queue_priority`'s int."""
    user = -(priority >> 2 * _ORDER_BITS) / _FRACTION
    return (int(user) if user.is_integer() else user, (priority >> _ORDER_BITS) & _ORDER_MASK,
            priority & _ORDER_MASK)


#: Nobody: the ``who_wants``/``who_has`` of a task that no holder wants, no worker holds.
NOBODY: frozenset = frozenset()


class Members:
    """Copy-on-write member sets (``who_wants``, ``who_has``) that share their singletons.

    Nearly every held task is wanted by one client and held by one worker. A set of
    one costs 216 bytes, twice per task; a reference to a shared ``frozenset({x})`` costs
    8. The sets are immutable: changing one assigns a new one (``ts.who_wants =
    wanters.plus(ts.who_wants, client)``), so a loop over a task's holders never sees
    them change under it. Members of one task stay few (clients, replicas), so the copy
    is cheap. The cache is bounded: past ``limit`` members it starts over, which costs
    sharing only, never correctness.
    """
    __slots__ = ("_alone", "limit")

    def __init__(self, limit: int = 4096) -> None:
        self._alone: dict[Any, frozenset] = {}
        self.limit = limit

    def alone(self, member: Any) -> frozenset:
        """The shared ``frozenset({member})``."""
        one = self._alone.get(member)
        if one is None:
            if len(self._alone) >= self.limit:
                self._alone.clear()
            one = self._alone[member] = frozenset((member,))
        return one

    def plus(self, members: frozenset, member: Any) -> frozenset:
        if member in members:
            return members
        return members | {member} if members else self.alone(member)

    def minus(self, members: frozenset, member: Any) -> frozenset:
        if member not in members:
            return members
        return members - {member} if len(members) > 1 else NOBODY

    def forget(self, member: Any) -> None:
        """``member`` is gone for good (a worker left): do not keep it alive here."""
        self._alone.pop(member, None)


#: What a failed task records of its failure, cleared when it runs again.
ERROR_FIELDS = ("exception", "traceback", "blame")


def reset_rare(ts: "TaskState", *names: str) -> None:
    """Put rarely set fields of ``ts`` back to their defaults (the class's), so that they
    cost the task nothing again. Assigning the default would keep an entry for it.

    A field still at the class's default is not looked up in ``ts.__dict__``: reading
    that attribute would make the dict this is meant to spare (every scattered key
    goes through here)."""
    for name in names:
        if getattr(ts, name) is not getattr(TaskState, name):
            ts.__dict__.pop(name, None)


class TaskState:
    # The fields every task uses are slots. The rest are class attributes below, read
    # at a slot's speed (no Python call) and, once a task sets one, kept in its
    # ``__dict__``: created on the first such write, so a task that never sets one pays
    # 8 bytes for them all. Write one only when it differs from the default, and put
    # it back with :func:`reset_rare`: assigning the default would create the dict.
    __slots__ = ("__dict__", "dependencies", "dependents", "key", "name", "nbytes", "priority",
                 "processing_on", "run_id", "spec", "state", "type", "waiters", "waiting_on", "who_has",
                 "who_wants")

    actor: Any = False  # a user actor's options (a dict), or True; False for a task
    allow_other_workers: bool = False
    blame: str | None = None
    exception: Any = None
    traceback: str | None = None
    # An input the scheduler did not know at submission: the task can never run (it is
    # not among ``dependencies``, so without this a re-run would go without it).
    missing_input: str | None = None
    resources: dict[str, float] | None = None  # held on its worker while it runs
    restarts: int = 0  # how often this actor was re-created after its worker died
    retries: int = 0
    suspicious: int = 0
    workers: set[str] | None = None
    # Copies a client scattered: holder address -> that worker's serial number of the
    # put, named when the copy is freed (a later put there is then kept).
    puts: dict[str, int] | None = None

    def __init__(self, key: str, spec: Any, name: str) -> None:
        self.key = key
        self.state: TaskStatus = "released"
        self.spec = spec
        self.name = name
        # (Each starts as the shared NO_TASKS: change them only through grow/shrink.)
        self.dependencies: set[TaskState] = NO_TASKS  # type: ignore[assignment]
        self.dependents: set[TaskState] = NO_TASKS  # type: ignore[assignment]
        self.waiting_on: set[TaskState] = NO_TASKS  # type: ignore[assignment]  # inputs not in memory
        self.waiters: set[TaskState] = NO_TASKS  # type: ignore[assignment]  # dependents that need us
        self.who_has: frozenset[WorkerState] = NOBODY  # change through Placement.add/drop_replica
        self.processing_on: WorkerState | None = None
        self.priority: Any = 0  # queue_priority()
        self.who_wants: frozenset[str] = NOBODY  # change through SchedulerState.wanters
        self.nbytes = 0
        self.type: str | None = None
        self.run_id = 0          # which run of this key a worker's report must be about

    def __lt__(self, other: TaskState) -> bool:
        return self.priority < other.priority

    def __repr__(self) -> str:
        return f"<TaskState {self.key!r} {self.state}>"


def forget_put(ts: TaskState, ws: "WorkerState") -> int | None:
    """The serial number of the put that scattered ``ws``'s copy of ``ts``, if one did,
    no longer remembered (the copy is being freed)."""
    puts = ts.puts
    put = puts.get(ws.address) if puts else None
    if put:
        rest = {a: n for a, n in puts.items() if a != ws.address}  # type: ignore[union-attr]
        if rest:
            ts.puts = rest
        else:
            reset_rare(ts, "puts")
    return put


def shared_type_name(type_name: str | None) -> str | None:
    """One string per type name, not one per task: a held task's type would cost ~55
    bytes apiece as each report's decoded copy."""
    return sys.intern(type_name) if type_name else type_name
