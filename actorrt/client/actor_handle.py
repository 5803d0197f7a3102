"""User actors as the caller sees them: the :class:`Actor` handle and :class:`ActorFuture`.

``client.submit(Counter, actor=True)`` resolves to an ``Actor`` handle: the actor's
key, its ``ActorRef`` (worker host address, actor id) and the names of its class's
methods. A method call is one ask from the caller's host straight to that host —
never through the scheduler — and returns an :class:`ActorFuture` at once.

Lifetime: a handle bound to a client holds a reference on the actor's key, exactly
like a :class:`~actorrt.client.future.Future` (it owns one). A handle pickled into a
task, another actor or another client carries the key, and binds to the client of
wherever it is unpickled, telling the scheduler it wants the key (``want_keys``), so
the actor lives as long as any handle or Future for it does. The copy of the handle
kept in a worker's data store is *unbound*: it holds no reference (else the actor
would keep itself alive) and finds a client when used (``get_client()``).

The ActorFuture side (a call's reply, and ActorFutures inside ``gather`` and
``submit``) is in :mod:`actorrt.client.actor_future`.
"""
from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING, Any

from .. import runtime
from ..core import ActorRef, Pickled
from ..core.errors import ActorDeadError
from .actor_calls import CALL, GETATTR, Call, caller_of
from .actor_future import (ActorFuture, ActorFutureNotReady, ActorFutureState,  # noqa: F401 (re-exported)
                           actor_futures_of, gather_actor_futures, submit_when_ready,
                           wait_actor_futures, waits_for_actor_futures)
from .future import Future

if TYPE_CHECKING:
    from .client import Client

NAMED_PREFIX = "named-actor-"
OPTION_NAMES = ("name", "get_if_exists", "max_restarts", "max_concurrency")

_keys = itertools.count()  # numbers each call's ActorFuture key


def named_actor_key(name: str) -> str:
    """The key of the actor registered as ``name``: one per name in the cluster."""
    return NAMED_PREFIX + name


# --- binding handles to clients --------------------------------------------------------------

def load_binding(blob: Pickled, client: "Client") -> Any:
    """``blob.loads()`` with actor handles and Futures inside bound to ``client`` (a
    fetched result): not to the default client, which may be another (or none)."""
    with runtime.binding(client):
        return blob.loads()


def _client_for_unpickling() -> "Client | None":
    client = runtime.bound_client()
    if client is not None:
        return client
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        # On an event loop with no client named: a worker copying the handle into its
        # data store. That copy must not hold a reference (see the module docstring).
        return None
    try:
        return runtime.current_client()
    except ValueError:
        return None


def _pickle_call_args(args: tuple, kwargs: dict, what: str) -> tuple[Pickled, list[Future] | None]:
    """The pickled ``(args, kwargs)`` of a call, and the Futures inside (the call keeps
    them until the actor, whose copies then hold their keys, has replied)."""
    kept: list[Future] = []
    with runtime.collecting_futures(kept):
        return Pickled.dumps((args, kwargs), what=what), kept or None


# --- the handle ----------------------------------------------------------------------------------


class _Method:
    """``handle.increment``: calling it sends the call."""

    __slots__ = ("_handle", "_name")

    def __init__(self, handle: "Actor", name: str) -> None:
        self._handle = handle
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> ActorFuture:
        return self._handle._send(CALL, self._name, args, kwargs)

    def __repr__(self) -> str:
        return f"<actor method {self._handle._cls_name}.{self._name}>"


class Actor:
    """A handle on a user actor: call its methods, read its attributes.

    >>> counter = client.submit(Counter, 10, actor=True).result()   # doctest: +SKIP
    >>> counter.increment().result()                                  # doctest: +SKIP
    11
    >>> counter.n                                                     # doctest: +SKIP
    11

    Method calls return an :class:`ActorFuture` at once; calls from one caller run in
    the order sent. Reading an attribute returns its value (an awaitable in async
    code). Attributes cannot be set from outside: change state through methods.
    """

    __slots__ = ("_key", "_cls_name", "_ref", "_methods", "_attrs", "_client", "_future", "_link",
                 "__weakref__")

    def __init__(self, key: str, cls_name: str, ref: ActorRef, methods: frozenset[str] | tuple,
                 client: "Client | None" = None, attrs: frozenset[str] | tuple = ()) -> None:
        put = object.__setattr__
        put(self, "_key", key)
        put(self, "_cls_name", cls_name)
        put(self, "_ref", ref)
        put(self, "_methods", frozenset(methods))
        put(self, "_attrs", frozenset(attrs))  # public attributes it had when created
        put(self, "_client", client)
        put(self, "_link", None)
        # A bound handle owns a Future for the key: that is what keeps the actor alive.
        put(self, "_future", Future(key, client, inform=True) if client is not None else None)

    # attribute access --------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        if name in self._methods:
            # A new one each time: cached on the handle, a method (which holds the handle)
            # made a cycle, and a dropped actor lived on until the garbage collector ran.
            return _Method(self, name)
        if name not in self._attrs and _on_event_loop():
            # Not known, and blocking is impossible here: runtime code probing objects
            # (``getattr(x, "nbytes", None)``) must not turn into messages to the actor.
            raise AttributeError(f"actor {self._cls_name} had no attribute {name!r} when created "
                                 "(read attributes set later through a method in async code)")
        future = self._send(GETATTR, name, (), {})
        if future.client.asynchronous or runtime.on_loop(future.client.loop):
            return future
        return future.result()

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(
            f"cannot set attribute {name!r} of actor {self._cls_name}: an actor's state changes "
            "only through its methods (add a setter method)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete attribute {name!r} of actor {self._cls_name}")

    def __dir__(self) -> list[str]:
        return sorted(self._methods | self._attrs)

    # calls ----------------------------------------------------------------------------
    def _send(self, op: str, name: str, args: tuple, kwargs: dict) -> ActorFuture:
        client = self._client if self._client is not None else self._find_client()
        if client.status != "running":
            raise RuntimeError(f"cannot call actor {self._cls_name}: the client is {client.status}")
        blob, kept = _pickle_call_args(args, kwargs, f"arguments of {self._cls_name}.{name}()") \
            if args or kwargs else (None, None)
        state = ActorFutureState(f"{self._cls_name}.{name}-{next(_keys)}")
        future = ActorFuture(state, client, self._key)
        dead = self._known_dead()
        if dead is not None:
            state.err(dead)  # the scheduler already said so: fail at once
            return future
        caller = caller_of(client)
        link = self._link
        if link is None or link.caller is not caller:  # (an unbound handle, used by a new client)
            link = caller.link(self._key, self._label(), self._ref)
            object.__setattr__(self, "_link", link)
        caller.send(link, Call(op, name, blob, state, kept))
        return future

    def _known_dead(self) -> BaseException | None:
        """The actor's death as this client heard it from the scheduler, if it did."""
        fut = self._future
        if fut is None:
            return None
        st = fut._state
        if st.status == "error":
            exc = st.exception()
            if isinstance(exc, ActorDeadError):
                return exc
            return ActorDeadError(f"actor {self._label()} failed: {exc!r}")
        if st.status == "cancelled":
            return ActorDeadError(f"actor {self._label()} was released (cancelled)")
        return None

    def _find_client(self) -> "Client":
        try:
            return runtime.current_client()
        except ValueError:
            raise RuntimeError(
                f"actor handle {self._label()} is not bound to a client and none is found here: "
                "use it inside a task or actor, or where a Client exists") from None

    def _label(self) -> str:
        return f"{self._cls_name} ({self._key})"

    # identity and pickling --------------------------------------------------------------
    def __reduce__(self) -> Any:
        ref = self._link.ref if self._link is not None else self._ref
        return _rebuild_actor, (self._key, self._cls_name, ref.address, ref.id, tuple(sorted(self._methods)),
                                tuple(sorted(self._attrs)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Actor) and other._key == self._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        return f"<Actor: {self._cls_name}, key={self._key}>"


def unbound_handle(key: str, cls_name: str, ref: ActorRef, methods: Any, attrs: Any) -> "Actor":
    """The handle a hosting worker keeps in its data store: bound to no client, so it
    holds no reference on the actor (it finds a client when used)."""
    return Actor(key, cls_name, ref, methods, None, attrs)


def _rebuild_actor(key: str, cls_name: str, address: str, actor_id: str, methods: tuple,
                   attrs: tuple = ()) -> Actor:
    """Unpickling a handle binds it to the client of wherever it lands (module docstring)."""
    return Actor(key, cls_name, ActorRef(address, actor_id), methods, _client_for_unpickling(), attrs)


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def is_actor_handle(obj: Any) -> str | None:
    """The key of ``obj`` if it is an actor handle (tasks then depend on the actor's key)."""
    return obj._key if type(obj) is Actor else None


# --- submit options ----------------------------------------------------------------------------


def actor_options(kwargs: dict, key: str | None, client: "Client",
                  allow_name: bool = True) -> tuple[dict, str | None]:
    """Take the actor options out of ``submit``'s keyword arguments.

    ``name``, ``get_if_exists``, ``max_restarts`` and ``max_concurrency`` configure
    the actor (they are not passed to its constructor). Returns the options that travel
    with the task to the scheduler and the worker, and the key (a named actor's key is
    its name's).
    """
    max_concurrency = kwargs.pop("max_concurrency", 1)
    max_restarts = kwargs.pop("max_restarts", 0)
    name = kwargs.pop("name", None)
    get_if_exists = kwargs.pop("get_if_exists", False)
    if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
        raise ValueError(f"max_concurrency must be an integer >= 1, got {max_concurrency!r}")
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < -1:
        raise ValueError(f"max_restarts must be an integer >= 0 (or -1: no limit), got {max_restarts!r}")
    options: dict[str, Any] = {"max_concurrency": max_concurrency, "max_restarts": max_restarts}
    if name is None:
        if get_if_exists:
            raise ValueError("get_if_exists=True needs name=: only named actors can be looked up")
        return options, key
    if not allow_name:
        raise ValueError("map() cannot create named actors: one name is one actor")
    if not isinstance(name, str) or not name:
        raise ValueError(f"an actor's name must be a non-empty string, got {name!r}")
    if key is not None:
        raise ValueError("pass name= or key= for an actor, not both")
    key = named_actor_key(name)
    if not get_if_exists and key in client.table:
        raise ValueError(f"an actor named {name!r} already exists; pass get_if_exists=True to use it")
    options["name"] = name
    options["get_if_exists"] = bool(get_if_exists)
    return options, key


# --- named actors ----------------------------------------------------------------------------------


async def get_named_actor(client: "Client", name: str, timeout: float | None = None) -> Actor:
    """The handle of the actor registered as ``name`` (``Client.get_actor``)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"an actor's name must be a non-empty string, got {name!r}")
    key = named_actor_key(name)
    # Registered before asking: the scheduler's report for the key may arrive before
    # its answer, and must find this Future's state.
    future = Future(key, client, inform=False)
    try:
        found = await asyncio.wait_for(
            client.host.ask(client.scheduler, "get_actor", client=client.id, key=key), timeout)
        if not found:
            raise ValueError(f"no actor named {name!r} (it was never created, or was released)")
        handle = await future._result(timeout)
        if not isinstance(handle, Actor):
            raise TypeError(f"key {key!r} holds a {type(handle).__name__}, not an actor")
        return handle
    finally:
        future.release()  # the handle holds its own reference


__all__ = ["Actor", "ActorFuture", "ActorDeadError", "named_actor_key"]
