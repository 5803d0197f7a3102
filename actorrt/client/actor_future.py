"""ActorFuture: the pending reply of one actor call, usable like a Future.

An actor call's reply is resolved on the client's loop (the call's ask completes) and
waited on from any thread, in ``runtime.block_on`` like every sync call; outside a
task the reply wakes the waiting thread straight from the loop (no hop to the loop
to start waiting), which keeps a sequential call at one network round trip plus two
thread hand-offs.

The loop-side protocol is :class:`~actorrt.client.future.FutureState`'s (``key``,
``status``, ``done()``, ``exception()``, ``add_callback``), so ``gather``, ``wait``
and ``as_completed`` take ActorFutures as they take Futures.

ActorFutures as ``submit`` arguments: an actor call's reply lives only in the caller's
process (one reply, no scheduler key), so the client resolves them itself. A finished
ActorFuture pickles as its value; a ``submit`` whose arguments hold unfinished ones
returns its Future at once and sends the task when they have all replied (see
:func:`submit_when_ready`). No extra message to the scheduler or the workers.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import types
import weakref
from typing import TYPE_CHECKING, Any, Callable

from .. import runtime
from ..core import Pickled
from ..core.serialize import remote_traceback_text
from ..core.thread_channel import ThreadChannel
from ..core.tracebacks import remote_tail
from ..durations import parse_timeout
from ..spec import funcname
from ..utils import fresh_ids
from .future import Future, FutureState, held_future, wait_all
from .routes import Tally

if TYPE_CHECKING:
    from .client import Client


# --- the state of one call's reply ------------------------------------------------------

_WAIT_LOCK = threading.Lock()


class ActorFutureState:
    """The reply to one actor call. Resolved on the client's loop; waited on from any thread.

    It speaks the loop-side protocol of :class:`~actorrt.client.future.FutureState`
    (``key``, ``status``, ``done()``, ``exception()``, ``add_callback(fn)``), so code
    that waits on Futures' states (``wait``, ``as_completed``, ``gather``) can wait on
    actor calls too.
    """

    __slots__ = ("key", "status", "_value", "_loaded", "_exc", "_callbacks", "_waiters",
                 "type", "workers", "cancel_reason", "traceback_text", "_tb", "_channel", "_rid",
                 "_tally", "__weakref__")

    def __init__(self, key: str) -> None:
        self.key = key
        self.status = "pending"            # -> "finished" | "error"
        self._value: Any = None            # a Pickled (or None) until loaded
        self._loaded = False
        self._exc: BaseException | None = None
        self._callbacks: list[Callable[["ActorFutureState"], None]] = []
        self._waiters: list[runtime.Waiter] = []  # threads parked until the reply (arm)
        self.type: str | None = None
        self.workers: list[str] = []
        self.cancel_reason: str | None = None
        self.traceback_text: str | None = None
        self._tb: types.TracebackType | None = None
        # The calling thread's own connection, if the call went on it: its reply is read
        # there (by that thread while it waits, else by the loop once lent to it).
        self._channel: ThreadChannel | None = None
        self._rid = 0
        self._tally: Tally | None = None  # counts it answered, if it went another way

    def on_channel(self, channel: ThreadChannel, rid: int) -> None:
        """The call went as ask ``rid`` on ``channel`` (client/actor_calls.py)."""
        self._channel, self._rid = channel, rid

    def counted_by(self, tally: "Tally") -> None:
        """The call went another way than its thread's channel: ``tally`` counts it
        answered when it is (client/actor_calls.py)."""
        self._tally = tally

    def done(self) -> bool:
        return self.status != "pending"

    def observe(self) -> None:
        """Someone looks at this reply without waiting in :meth:`arm` (``done()``, a
        callback): if it is to come on a thread's own connection, have the loop read it."""
        channel = self._channel
        if channel is not None and self.status == "pending":
            channel.lend()

    # loop side (or the thread reading its own channel) ---------------------------------
    def finish(self, value: Any) -> None:
        self._settle("finished", value, None)

    def settle(self, ok: bool, value: Any) -> None:
        """An ask's outcome as a thread channel hands it (``value``: the exception if not ``ok``)."""
        if ok:
            self.finish(value)
        else:
            self.err(value)

    def err(self, exc: BaseException) -> None:
        self.traceback_text = remote_traceback_text(exc)
        self._tb = exc.__traceback__  # raised again as it came: the raise adds no frames to it
        self._settle("error", None, exc)

    def _settle(self, status: str, value: Any, exc: BaseException | None) -> None:
        with _WAIT_LOCK:
            if self.status != "pending":
                return
            self._value, self._exc = value, exc
            self.status = status
            waiters, self._waiters = self._waiters, []
            callbacks, self._callbacks = self._callbacks, []
            channel, self._channel = self._channel, None
            tally, self._tally = self._tally, None
        if tally is not None:
            tally.answered += 1
        for waiter in waiters:
            waiter.set(None)
        if callbacks and channel is not None and not runtime.on_loop(channel.loop):
            # Read off the channel by its thread: callbacks are the loop's to run.
            try:
                runtime.post(channel.loop, self._run_callbacks, callbacks)
            except RuntimeError:
                pass  # the loop is closed: so is the client, and what waited on it
        else:
            self._run_callbacks(callbacks)

    def _run_callbacks(self, callbacks: list) -> None:
        for cb in callbacks:
            try:
                cb(self)
            except Exception:
                import logging
                logging.getLogger("actorrt.actors").exception("actor future callback failed")

    def add_callback(self, fn: Callable[["ActorFutureState"], None]) -> None:
        """Call ``fn(state)`` once done (now, if already done). Loop thread only."""
        with _WAIT_LOCK:  # (a thread reading its own channel may settle this meanwhile)
            pending = self.status == "pending"
            if pending:
                self._callbacks.append(fn)
        if pending:
            self.observe()
        else:
            fn(self)

    # any thread -------------------------------------------------------------------------
    def arm(self, waiter: "runtime.Waiter") -> bool:
        """Have ``waiter`` woken by the reply; False if it is here already. A reply to
        come on this thread's own connection is read here, by this thread, first."""
        channel = self._channel
        if channel is not None and self.status == "pending":
            channel.wait(self._rid)  # (False: the loop reads it, and sets the waiter)
        with _WAIT_LOCK:
            if self.status != "pending":
                return False
            self._waiters.append(waiter)
            return True

    def exception(self) -> BaseException | None:
        return self._exc if self.status == "error" else None

    def settled_future(self, loop: asyncio.AbstractEventLoop) -> "asyncio.Future[None]":
        """On ``loop`` (the client's): a future done once this is settled. (No coroutine:
        a task waiting for a call would cost an asyncio Task and three more turns.)"""
        fut = loop.create_future()
        self.add_callback(lambda _: _set_once(fut))
        return fut

    def outcome(self) -> Any:
        """The reply as it came (a Pickled stays one); raises its error."""
        if self.status == "error":
            assert self._exc is not None
            raise self._exc.with_traceback(self._tb)
        return self._value

    def value(self, client: "Client | None" = None) -> Any:
        """The reply's value (unpickled in the calling thread, once); raises its error.

        Futures and handles inside bind to ``client`` (the caller's), if given."""
        if self.status == "error":
            assert self._exc is not None
            raise self._exc.with_traceback(self._tb)
        if not self._loaded:
            raw = self._value
            if type(raw) is Pickled:
                from .actor_handle import load_binding
                value = load_binding(raw, client) if client is not None else raw.loads()
            else:
                value = raw
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


class BaseActorFuture:
    """The base class of :class:`ActorFuture` (dask's name), for ``isinstance`` checks:
    the pending result of an actor method call (``result()``, ``done()``, ``await``)."""

    __slots__ = ()


class ActorFuture(BaseActorFuture):
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
        self._state.observe()
        return self._state.status

    def done(self) -> bool:
        self._state.observe()
        return self._state.status != "pending"

    def cancelled(self) -> bool:
        return False

    def result(self, timeout: float | None = None) -> Any:
        """The method's return value; raises its exception, TimeoutError after ``timeout`` s.

        With an asynchronous client this returns an awaitable instead.
        """
        timeout = parse_timeout(timeout)
        if self.client.asynchronous:
            return self._result_async(timeout)
        self._wait(timeout)
        return self._state.value(self.client)

    def exception(self, timeout: float | None = None) -> Any:
        """The method's exception, or None if it returned."""
        timeout = parse_timeout(timeout)
        if self.client.asynchronous:
            return self._exception_async(timeout)
        self._wait(timeout)
        return self._state.exception()

    def traceback(self) -> types.TracebackType | None:
        """The remote traceback of a failed call, rebuilt from the remote frames (for
        ``traceback.format_tb``), else None."""
        return remote_tail(self._state._tb) if self._state.status == "error" else None

    def _wait(self, timeout: float | None) -> None:
        st = self._state
        if st.status != "pending":
            return
        if runtime.on_loop(self.client.loop):
            raise RuntimeError("blocking on an ActorFuture from the event loop; use `await` in async code")
        if runtime.running_actor() == (self._actor_key, 1):
            raise RuntimeError(f"actor {self._actor_key!r} is waiting for its own reply, which cannot "
                               "come while it waits (deadlock); return the ActorFuture, or make the "
                               "method async and await it")
        # Without a timeout the reply wakes this thread straight from the loop (arm), or
        # inside a task through a bare loop future; with one, the wait runs on the loop,
        # which owns the clock.
        if timeout is None:
            runtime.block_on(self.client.loop, self._done_future, arm=st.arm)
        else:
            runtime.block_on(self.client.loop, lambda: self._done_async(timeout))

    def _done_future(self) -> "asyncio.Future[None]":
        """On the client's loop: a future done with the reply."""
        return self._state.settled_future(self.client.loop)

    async def _result_async(self, timeout: float | None = None) -> Any:
        await self._done_async(timeout)
        return self._state.value(self.client)

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
            waiter = self._done_future()
        else:  # awaited on another loop: hop through a thread-safe future
            cf: concurrent.futures.Future[Any] = concurrent.futures.Future()
            runtime.post(self.client.loop, st.add_callback, lambda _: _set_once(cf))
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
                client.callbacks.submit(fn, self)

        runtime.call_on(client.loop, self._state.add_callback, run)

    def __reduce__(self) -> Any:
        st = self._state
        if st.status == "finished":
            return _resolved, (st.value(self.client),)
        raise ActorFutureNotReady(
            f"{self!r} has no value yet: pass it straight to submit() (which waits for it), "
            "or pass its result()")

    def __repr__(self) -> str:
        return f"<ActorFuture: {self.key} status: {self.status}>"


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
        return obj._state.value(obj.client)
    if t in (list, tuple, set, frozenset):
        return t(_with_values(x) for x in obj)
    if t is dict:
        return {k: _with_values(v) for k, v in obj.items()}
    return obj


async def wait_actor_futures(futures: list[ActorFuture], timeout: float | None = None) -> None:
    """Return once every actor future is done (on the client's loop)."""
    await wait_all([f._state for f in futures], timeout, "actor futures")


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
        out[f.key] = st.value(f.client)
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
    key = key or f"{funcname(func)}-{fresh_ids.next()}"
    if key in client.table:  # as submit: an existing key wins over the new spec
        return Future(key, client)
    state = FutureState(key)
    future = held_future(key, client, state)  # (counted in the table once submitted: _adopt)
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

    runtime.call_on(client.loop, watch)
    return future


def _adopt(client: "Client", real: Future, state: FutureState) -> None:
    """Let the user's Future (``state``) stand in for ``real``, which was just submitted."""
    if client.table.replace(real.key, real._state, state):
        # The scheduler's reports now reach the user's Future, whose reference this becomes.
        real._released = True
        return
    # Someone submitted the same key meanwhile: follow its state instead. The reference
    # ``real`` holds is kept (never released) so the result cannot vanish under us.
    real._released = True

    def mirror(s: FutureState) -> None:
        if s.status == "finished":
            state.finish(s.workers, s.type, s.inline)
        elif s.status == "error":
            state.err(s._exception, s.traceback_text)
        else:
            state.cancel(s.cancel_reason)
    real._state.add_callback(mirror)


__all__ = ["ActorFuture", "ActorFutureNotReady", "ActorFutureState", "actor_futures_of",
           "gather_actor_futures", "submit_when_ready", "wait_actor_futures",
           "waits_for_actor_futures"]
