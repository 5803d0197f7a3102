"""Actors and references to them.

An actor is an object with an id, living on one :class:`~actorrt.core.host.Host`,
whose handlers ``handle_<op>`` are called one message at a time in arrival order.
A handler's keyword parameters *are* its message type: the dispatch table, built
once per class, checks each incoming message's fields against them at the edge.

A handler replies by returning a value. One that cannot answer yet (an empty queue,
a held lock) declares a ``reply`` parameter, keeps the :class:`Reply` and answers
later; it never blocks the mailbox. ``async def`` handlers run as tasks owned by the
actor and may interleave with later messages at their ``await`` points.
"""
from __future__ import annotations

import asyncio
import inspect
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from .checks import FieldCheck, field_check
from .errors import ActorDeadError
from .serialize import Pickled

if TYPE_CHECKING:
    from .host import Host


class ActorRef:
    """Where an actor lives: ``(host address, actor id)``. Small and msgpack-able."""

    __slots__ = ("address", "id")

    def __init__(self, address: str, id: str) -> None:
        self.address = address
        self.id = id

    def __iter__(self) -> Any:
        return iter((self.address, self.id))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorRef) and self.address == other.address and self.id == other.id

    def __hash__(self) -> int:
        return hash((self.address, self.id))

    def __reduce__(self) -> Any:
        return ActorRef, (self.address, self.id)

    def __repr__(self) -> str:
        return f"ActorRef({self.address!r}, {self.id!r})"


class Handler(NamedTuple):
    name: str
    params: frozenset[str]
    required: frozenset[str]
    wants_reply: bool
    wants_origin: bool
    is_async: bool
    var_keyword: bool = False  # ``**fields``: accepts fields beyond its named parameters
    # Type checks of the fields whose annotations are simple (see core/checks.py),
    # run by the host before the handler: a peer's bad field never reaches the handler.
    checks: tuple[FieldCheck, ...] = ()


# Parameters the host supplies itself; never read from the message.
_INJECTED = frozenset({"reply", "origin"})

# Annotation names of the core's own types that a field check understands.
_CHECKABLE: dict[str, type] = {"ActorRef": ActorRef, "Pickled": Pickled}


def _build_handlers(cls: type) -> dict[str, Handler]:
    table: dict[str, Handler] = {}
    for attr in dir(cls):
        if not attr.startswith("handle_"):
            continue
        fn = getattr(cls, attr)
        if not callable(fn):
            continue
        sig = inspect.signature(fn)
        all_params = list(sig.parameters.values())[1:]
        params = [p for p in all_params if p.kind is not p.VAR_KEYWORD]
        names = frozenset(p.name for p in params) - _INJECTED
        required = frozenset(p.name for p in params if p.default is p.empty) - _INJECTED
        checks = (field_check(p.name, p.annotation, _CHECKABLE) for p in params if p.name not in _INJECTED)
        table[attr[len("handle_"):]] = Handler(
            attr, names, required, "reply" in sig.parameters, "origin" in sig.parameters,
            inspect.iscoroutinefunction(fn), any(p.kind is p.VAR_KEYWORD for p in all_params),
            tuple(c for c in checks if c is not None),
        )
    return table


class Actor:
    """Base class of everything that receives messages."""

    _handlers: dict[str, Handler] = {}
    host: "Host"
    id: str
    #: Whether this actor's deferred replies may be answered from another thread
    #: (``Reply.ok_from_thread``): the host then equips each one for it, which costs a
    #: little per message, so only actors that do so (a user actor's lane) ask for it.
    answers_from_threads = False
    #: Called on the loop before each message to this actor is handled, if set: an
    #: actor whose threads speak for it (a worker's tasks report themselves) first
    #: takes back what they did, so no message finds it behind what it has said.
    before_dispatch: Callable[[], None] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._handlers = _build_handlers(cls)

    @property
    def ref(self) -> ActorRef:
        return ActorRef(self.host.address, self.id)

    # lifecycle hooks -------------------------------------------------------
    def on_start(self) -> None:
        """Called once the actor is registered on its host."""

    def on_stop(self) -> None:
        """Called when the actor is removed from its host."""

    # conveniences ----------------------------------------------------------
    def tell(self, ref: ActorRef, op: str, /, **fields: Any) -> None:
        self.host.tell(ref, op, **fields)

    def ask(self, ref: ActorRef, op: str, /, **fields: Any) -> "asyncio.Future[Any]":
        return self.host.ask(ref, op, **fields)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {getattr(self, 'id', '?')}>"


class Reply:
    """The right to answer one ask, possibly later. Answering twice is a no-op."""

    __slots__ = ("_send", "done", "actor", "send_from_thread")

    def __init__(self, send: Callable[[bool, Any], None], actor: Actor | None = None) -> None:
        self._send = send
        self.done = False
        self.actor = actor
        # Set by the host for an actor that answers from threads, when the ask came on a
        # connection a thread may write to.
        self.send_from_thread: Callable[[Any], bool] | None = None

    def ok(self, value: Any = None) -> None:
        if not self.done:
            self.done = True
            self._untrack()
            self._send(True, value)

    def ok_from_thread(self, value: Any = None) -> bool:
        """From a thread other than the loop's (an actor's method just returned there):
        answer now, straight on the connection the ask came on. False, with nothing
        done, when it cannot (see ``Comm.send_from_thread``): then ``ok`` on the loop.
        Once it has, ``ok``/``fail`` do nothing. (If the loop fails the reply at the
        same moment, as the actor stops, the asker takes whichever answer comes first
        and drops the other.)"""
        if self.done or self.send_from_thread is None or not self.send_from_thread(value):
            return False
        self.done = True
        self._untrack()
        return True

    def fail(self, exc: BaseException) -> None:
        if not self.done:
            self.done = True
            self._untrack()
            self._send(False, exc)

    def _untrack(self) -> None:
        if self.actor is not None:
            self.actor.__dict__.get("_open_replies", set()).discard(self)


def track_reply(actor: Actor, reply: Reply) -> None:
    """Remember a deferred reply so stopping the actor can fail it."""
    reply.actor = actor
    actor.__dict__.setdefault("_open_replies", set()).add(reply)


def fail_open_replies(actor: Actor) -> None:
    for reply in list(actor.__dict__.get("_open_replies", ())):
        reply.fail(ActorDeadError(f"actor {actor.id!r} stopped before replying"))
    for task in list(actor.__dict__.get("_tasks", ())):
        task.cancel()


def own_task(actor: Actor, coro: Any) -> "asyncio.Task[Any]":
    """Run ``coro`` as a task owned by ``actor``: cancelled when the actor stops."""
    task = asyncio.get_running_loop().create_task(coro)
    tasks: set = actor.__dict__.setdefault("_tasks", set())
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return task


