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

ActorFutures as ``submit`` arguments: an actor call's reply lives only in the caller's
process (one reply, no scheduler), so the client resolves them itself. A finished
ActorFuture pickles as its value; a ``submit`` whose arguments hold unfinished ones
returns its Future at once and sends the task when they have all replied (see
:func:`submit_when_ready`). No extra message to the scheduler or the workers.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import itertools
import threading
import uuid
import weakref
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ..core import ActorRef, Pickled
from ..core.errors import ActorDeadError
from ..core.serialize import RemoteTraceback
from ..spec import funcname
from .actor_calls import CALL, GETATTR, Call, caller_of
from .future import Future, FutureState

if TYPE_CHECKING:
    from .client import Client

NAMED_PREFIX = "named-actor-"
OPTION_NAMES = ("name", "get_if_exists", "max_restarts", "max_concurrency")


def named_actor_key(name: str) -> str:
    """The key of the actor registered as ``name``: one per name in the cluster."""
    return NAMED_PREFIX + name


# --- the state of one call's reply ------------------------------------------------------

_WAIT_LOCK = threading.Lock()
_keys = itertools.count()


class ActorFutureState:
    """The reply to one actor call. Resolved on the client's loop; waited on from any thread.

    It speaks the loop-side protocol of :class:`~actorrt.client.future.FutureState`
    (``key``, ``status``, ``done()``, ``exception()``, ``add_callback(fn)``), so code
    that waits on Futures' states (``wait``, ``as_completed``, ``gather``) can wait on
    actor calls too.
    """

    __slots__ = ("key", "status", "_value", "_loaded", "_exc", "_callbacks", "_event",
                 "type", "workers", "cancel_reason", "traceback_text", "__weakref__")

    def __init__(self, key: str) -> None:
        self.key = key
        self.status = "pending"            # -> "finished" | "error"
        self._value: Any = None            # a Pickled (or None) until loaded
        self._loaded = False
        self._exc: BaseException | None = None
        self._callbacks: list[Callable[["ActorFutureState"], None]] = []
        self._event: threading.Event | None = None
        self.type: str | None = None
        self.workers: list[str] = []
        self.cancel_reason: str | None = None
        self.traceback_text: str | None = None

    def done(self) -> bool:
        return self.status != "pending"

    # loop side -----------------------------------------------------------------------
    def finish(self, value: Any) -> None:
        self._settle("finished", value, None)

    def err(self, exc: BaseException) -> None:
        if isinstance(exc.__cause__, RemoteTraceback):
            self.traceback_text = exc.__cause__.tb
        self._settle("error", None, exc)

    def _settle(self, status: str, value: Any, exc: BaseException | None) -> None:
        with _WAIT_LOCK:
            if self.status != "pending":
                return
            self._value, self._exc = value, exc
            self.status = status
            event = self._event
        if event is not None:
            event.set()
        callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            try:
                cb(self)
            except Exception:
                import logging
                logging.getLogger("actorrt.actors").exception("actor future callback failed")

    def add_callback(self, fn: Callable[["ActorFutureState"], None]) -> None:
        """Call ``fn(state)`` once done (now, if already done). Loop thread only."""
        if self.status != "pending":
            fn(self)
        else:
            self._callbacks.append(fn)

    # any thread -------------------------------------------------------------------------
    def wait(self, timeout: float | None) -> bool:
        """Block this (non-loop) thread until done; False on timeout."""
        with _WAIT_LOCK:
            if self.status != "pending":
                return True
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return event.wait(timeout)

    def exception(self) -> BaseException | None:
        return self._exc if self.status == "error" else None

    def value(self) -> Any:
        """The reply's value (unpickled in the calling thread, once); raises its error."""
        if self.status == "error":
            assert self._exc is not None
            raise self._exc
        if not self._loaded:
            raw = self._value
            value = raw.loads() if type(raw) is Pickled else raw
            with _WAIT_LOCK:
                if not self._loaded:
                    self._value, self._loaded = value, True
        return self._value

    def __repr__(self) -> str:
        return f"<ActorFutureState {self.key} {self.status}>"


class ActorFutureNotReady(TypeError):
    """An unfinished (or failed) ActorFuture was pickled; it has no value to carry yet."""


def _resolved(value: Any) -> Any:
    return value


def _set_once(fut: "asyncio.Future[Any] | concurrent.futures.Future[Any]") -> None:
    if not fut.done():
        fut.set_result(None)


# thread-local: the actor whose lane this thread runs (set by the worker's lanes), to
# refuse an actor waiting on its own reply, which could never come.
running_actor = threading.local()


class ActorFuture:
    """The pending reply of one actor method call (or attribute read).

    >>> f = counter.increment()        # doctest: +SKIP
    >>> f.result()                     # doctest: +SKIP
    11
    >>> await counter.increment()      # doctest: +SKIP  (async code)
    12

    Usable like a :class:`Future`: ``result(timeout)``, ``exception()``, ``done()``,
    ``add_done_callback``, ``await``; in ``client.gather``, ``wait``, ``as_completed``;
    and as an argument to ``submit`` (the task receives its value).
    """

    __slots__ = ("key", "client", "_state", "_actor_key", "__weakref__")

    def __init__(self, state: ActorFutureState, client: "Client", actor_key: str) -> None:
        self.key = state.key
        self.client = client
        self._state = state
        self._actor_key = actor_key

    @property
    def status(self) -> str:
        return self._state.status

    def done(self) -> bool:
        return self._state.status != "pending"

    def cancelled(self) -> bool:
        return False

    def result(self, timeout: float | None = None) -> Any:
        """The method's return value; raises its exception, TimeoutError after ``timeout`` s.

        With an asynchronous client this returns an awaitable instead.
        """
        if self.client.asynchronous:
            return self._result_async(timeout)
        self._wait(timeout)
        return self._state.value()

    def exception(self, timeout: float | None = None) -> Any:
        """The method's exception, or None if it returned."""
        if self.client.asynchronous:
            return self._exception_async(timeout)
        self._wait(timeout)
        return self._state.exception()

    def traceback(self) -> str | None:
        """The remote traceback (text) of a failed call, else None."""
        return self._state.traceback_text

    def _wait(self, timeout: float | None) -> None:
        st = self._state
        if st.status != "pending":
            return
        if threading.get_ident() == self.client._loop_thread:
            raise RuntimeError("blocking on an ActorFuture from the event loop; use `await` in async code")
        if (getattr(running_actor, "key", None) == self._actor_key
                and getattr(running_actor, "max_concurrency", 1) == 1):
            raise RuntimeError(f"actor {self._actor_key!r} is waiting for its own reply, which cannot "
                               "come while it waits (deadlock); return the ActorFuture, or make the "
                               "method async and await it")
        if not st.wait(timeout):
            raise TimeoutError(f"actor call {self.key} not done after {timeout} s")

    async def _result_async(self, timeout: float | None = None) -> Any:
        await self._done_async(timeout)
        return self._state.value()

    async def _exception_async(self, timeout: float | None = None) -> BaseException | None:
        await self._done_async(timeout)
        return self._state.exception()

    async def _done_async(self, timeout: float | None) -> None:
        st = self._state
        if st.status != "pending":
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any]
        if loop is self.client.loop:
            waiter = loop.create_future()
            st.add_callback(lambda _: _set_once(waiter))
        else:  # awaited on another loop: hop through a thread-safe future
            cf: concurrent.futures.Future[Any] = concurrent.futures.Future()
            self.client.loop.call_soon_threadsafe(st.add_callback, lambda _: _set_once(cf))
            waiter = asyncio.wrap_future(cf)
        try:
            await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"actor call {self.key} not done after {timeout} s") from None

    def __await__(self) -> Any:
        return self._result_async().__await__()

    def add_done_callback(self, fn: Callable[["ActorFuture"], Any]) -> None:
        """Call ``fn(actor_future)`` once done, on a thread of the client (never its loop
        for a synchronous client)."""
        client = self.client

        def run(_: ActorFutureState) -> None:
            if client.asynchronous:
                fn(self)
            else:
                client._callback_executor().submit(fn, self)

        client._call_on_loop(self._state.add_callback, run)

    def __reduce__(self) -> Any:
        st = self._state
        if st.status == "finished":
            return _resolved, (st.value(),)
        raise ActorFutureNotReady(
            f"{self!r} has no value yet: pass it straight to submit() (which waits for it), "
            "or pass its result()")

    def __repr__(self) -> str:
        return f"<ActorFuture: {self.key} status: {self.status}>"


# --- binding handles to clients --------------------------------------------------------------

_BINDING: contextvars.ContextVar["Client | None"] = contextvars.ContextVar("actorrt_actor_binding",
                                                                          default=None)


@contextlib.contextmanager
def binding(client: "Client") -> Iterator[None]:
    """Handles unpickled inside this block bind to ``client`` (e.g. the one fetching them)."""
    token = _BINDING.set(client)
    try:
        yield
    finally:
        _BINDING.reset(token)


def load_binding(blob: Pickled, client: "Client") -> Any:
    """``blob.loads()`` with actor handles inside bound to ``client`` (a fetched result)."""
    token = _BINDING.set(client)
    try:
        return blob.loads()
    finally:
        _BINDING.reset(token)


def _client_for_unpickling() -> "Client | None":
    client = _BINDING.get()
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
    from ..context import get_client
    try:
        return get_client()
    except ValueError:
        return None


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
                 "_bound_methods", "__weakref__")

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
        put(self, "_bound_methods", {})
        # A bound handle owns a Future for the key: that is what keeps the actor alive.
        put(self, "_future", Future(key, client, inform=True) if client is not None else None)

    # attribute access --------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        if name in self._methods:
            method = self._bound_methods.get(name)
            if method is None:
                method = self._bound_methods[name] = _Method(self, name)
            return method
        if name not in self._attrs and _on_event_loop():
            # Not known, and blocking is impossible here: runtime code probing objects
            # (``getattr(x, "nbytes", None)``) must not turn into messages to the actor.
            raise AttributeError(f"actor {self._cls_name} had no attribute {name!r} when created "
                                 "(read attributes set later through a method in async code)")
        future = self._send(GETATTR, name, (), {})
        if future.client.asynchronous or threading.get_ident() == future.client._loop_thread:
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
        blob = Pickled.dumps((args, kwargs), what=f"arguments of {self._cls_name}.{name}()") \
            if args or kwargs else None
        state = ActorFutureState(f"{self._cls_name}.{name}-{next(_keys)}")
        future = ActorFuture(state, client, self._key)
        dead = self._known_dead()
        if dead is not None:
            state.err(dead)  # the scheduler already said so: fail at once
            return future
        caller = caller_of(client)
        link = self._link
        if link is None or link.key not in caller.links or caller.links[link.key] is not link:
            link = caller.link(self._key, self._label(), self._ref)
            if self._client is not None:
                object.__setattr__(self, "_link", link)
        caller.send(link, Call(op, name, blob, state))
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
        from ..context import get_client
        try:
            return get_client()
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
    if not get_if_exists and key in client._states:
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


# --- ActorFutures inside other structures ------------------------------------------------------------


def actor_futures_of(obj: Any) -> list[ActorFuture]:
    """The ActorFutures inside ``obj`` (nested lists, tuples, sets, dicts), in order."""
    out: list[ActorFuture] = []
    seen: set[int] = set()
    stack = [obj]
    while stack:
        x = stack.pop()
        t = type(x)
        if t is ActorFuture:
            if id(x) not in seen:
                seen.add(id(x))
                out.append(x)
        elif t in (list, tuple, set, frozenset):
            stack.extend(reversed(list(x)))
        elif t is dict:
            stack.extend(reversed(list(x.values())))
    return out


def _with_values(obj: Any) -> Any:
    t = type(obj)
    if t is ActorFuture:
        return obj._state.value()
    if t in (list, tuple, set, frozenset):
        return t(_with_values(x) for x in obj)
    if t is dict:
        return {k: _with_values(v) for k, v in obj.items()}
    return obj


async def wait_actor_futures(futures: list[ActorFuture], timeout: float | None = None) -> None:
    """Return once every actor future is done (on the client's loop)."""
    pending = [f._state for f in futures if f._state.status == "pending"]
    if not pending:
        return
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    remaining = [len(pending)]

    def one_done(_: ActorFutureState) -> None:
        remaining[0] -= 1
        if remaining[0] == 0 and not done.done():
            done.set_result(None)

    for st in pending:
        st.add_callback(one_done)
    try:
        await asyncio.wait_for(done, timeout)
    except asyncio.TimeoutError:
        raise TimeoutError(f"{sum(not st.done() for st in pending)} actor futures not done "
                           f"after {timeout} s") from None


async def gather_actor_futures(futures: list[ActorFuture], errors: str = "raise",
                               timeout: float | None = None) -> dict[str, Any]:
    """``{key: value}`` of actor futures for ``client.gather``; failed ones raise or are left out."""
    await wait_actor_futures(futures, timeout)
    out: dict[str, Any] = {}
    for f in futures:
        st = f._state
        if st.status == "error":
            if errors == "raise":
                st.value()  # raises
            continue
        out[f.key] = st.value()
    return out


def waits_for_actor_futures(exc: BaseException) -> bool:
    """Whether pickling task arguments failed on an unfinished ActorFuture."""
    return isinstance(exc.__cause__, ActorFutureNotReady) or isinstance(exc, ActorFutureNotReady)


def submit_when_ready(client: "Client", func: Callable[..., Any], args: tuple, kwargs: dict,
                      key: str | None, submit_kwargs: dict) -> Future:
    """``client.submit`` for arguments holding unfinished ActorFutures.

    Returns the Future at once; when every ActorFuture has replied, the task is
    submitted with their values (from the client's loop). A failed call fails the
    Future with the call's exception. The key is fresh unless given (content hashing,
    ``pure``, needs the values).
    """
    pending = actor_futures_of((args, kwargs))
    if not pending:  # (map: this item has none)
        return client.submit(func, *args, key=key, **submit_kwargs, **kwargs)
    key = key or f"{funcname(func)}-{uuid.uuid4().hex}"
    if key in client._states:  # as submit: an existing key wins over the new spec
        return Future(key, client)
    state = FutureState(key)
    future = Future.__new__(Future)
    future.key, future.client, future._state, future._released = key, client, state, False
    alive = weakref.ref(future)
    remaining = [len(pending)]

    def one_done(_: ActorFutureState) -> None:
        remaining[0] -= 1
        if remaining[0]:
            return
        f = alive()
        if f is None or f._released or state.status == "cancelled":
            return  # dropped before its inputs arrived: never submitted
        failed = next((a for a in pending if a._state.status == "error"), None)
        if failed is not None:
            state.err(failed._state.exception(), failed._state.traceback_text)
            return
        try:
            real = client.submit(func, *_with_values(args), key=key, **submit_kwargs,
                                 **_with_values(kwargs))
        except Exception as e:
            state.err(e, None)
            return
        _adopt(client, real, state)

    def watch() -> None:
        for a in pending:
            a._state.add_callback(one_done)

    client._call_on_loop(watch)
    return future


def _adopt(client: "Client", real: Future, state: FutureState) -> None:
    """Let the user's Future (``state``) stand in for ``real``, which was just submitted."""
    with client._lock:
        if client._states.get(real.key) is real._state and client._refcount.get(real.key) == 1:
            client._states[real.key] = state  # the scheduler's reports now reach the user's Future
            real._released = True             # whose reference this one becomes
            return
    # Someone submitted the same key meanwhile: follow its state instead. The reference
    # ``real`` holds is kept (never released) so the result cannot vanish under us.
    real._released = True

    def mirror(s: FutureState) -> None:
        if s.status == "finished":
            state.finish(s.workers, s.type)
        elif s.status == "error":
            state.err(s._exception, s.traceback_text)
        else:
            state.cancel(s.cancel_reason)
    real._state.add_callback(mirror)


__all__ = ["Actor", "ActorFuture", "ActorDeadError", "named_actor_key"]
