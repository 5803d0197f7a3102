"""Futures: each is a pending reply from the scheduler about one key.

Every :class:`Future` object for a key shares one :class:`FutureState`, which the
client's actor updates when a report arrives. Nothing polls: waiting means
registering a callback that the report runs.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import types
from typing import TYPE_CHECKING, Any, Callable, Iterable

from .. import runtime
from ..core.serialize import Pickled, loads_exception
from ..core.tracebacks import remote_tail

if TYPE_CHECKING:
    from .client import Client


class CancelledError(concurrent.futures.CancelledError):
    """The future's key was cancelled (by this client, another, or a cancelled input)."""


FutureCancelledError = CancelledError

DONE = frozenset({"finished", "error", "cancelled"})


# Guards FutureState._waiters: a thread arms a waiter while the loop may be finishing.
_ARM_LOCK = threading.Lock()

# The holders of finished keys, shared: most of a client's results sit on one of a few
# workers, and a list per Future (72 bytes) was a seventh of a held Future's cost.
_HOLDERS: dict[tuple[str, ...], tuple[str, ...]] = {}


def shared_holders(workers: Iterable[str]) -> tuple[str, ...]:
    """``workers`` as a tuple shared with every Future held by the same workers."""
    holders = tuple(workers)
    shared = _HOLDERS.get(holders)
    if shared is None:
        if len(_HOLDERS) >= 1024:  # bounded: forgetting costs sharing, not correctness
            _HOLDERS.clear()
        shared = _HOLDERS[holders] = holders
    return shared


class FutureState:
    """What the client knows about one key. Mutated on the client's loop; a thread may
    :meth:`arm` a waiter on it, and the thread that ran its task on a worker itself
    (client/direct.py) settles it with :meth:`finish_off_loop` / :meth:`err_off_loop`.
    Its status changes under ``_ARM_LOCK`` (the first to settle it wins) and its
    callbacks run on the loop."""

    __slots__ = ("key", "status", "type", "workers", "inline", "_exception", "traceback_text",
                 "cancel_reason", "_callbacks", "_waiters", "__weakref__")

    def __init__(self, key: str) -> None:
        self.key = key
        self.status = "pending"
        self.type: str | None = None
        self.workers: tuple[str, ...] = ()
        self.inline: bytes | None = None  # a small value's pickle, come with the news it finished
        self._exception: Any = None
        self.traceback_text: str | None = None
        self.cancel_reason: str | None = None
        # None until someone asks: most Futures are waited on in bulk, never one by one.
        self._callbacks: list[Callable[["FutureState"], None]] | None = None
        self._waiters: list[runtime.Waiter] | None = None

    def done(self) -> bool:
        return self.status in DONE

    def finish(self, workers: Iterable[str], typ: str | None, inline: bytes | None = None) -> None:
        self.workers = shared_holders(workers)
        self.type = typ
        self.inline = inline
        self._fire("finished")

    def err(self, exception: Any, traceback: str | None) -> None:
        self._exception = exception
        self.traceback_text = traceback
        self._fire("error")

    def cancel(self, reason: str | None = None) -> None:
        if self.status in DONE and self.status != "finished":
            return
        self.cancel_reason = reason
        self._fire("cancelled")

    def finish_off_loop(self, loop: asyncio.AbstractEventLoop, workers: Iterable[str], typ: str | None,
                        inline: bytes | None) -> bool:
        """From another thread than the loop's: :meth:`finish`, unless the state was
        settled meanwhile (False)."""
        return self._settle_off_loop(loop, "finished", workers=shared_holders(workers), type=typ, inline=inline)

    def err_off_loop(self, loop: asyncio.AbstractEventLoop, exception: Any, traceback: str | None) -> bool:
        """From another thread than the loop's: :meth:`err`, unless settled meanwhile."""
        return self._settle_off_loop(loop, "error", _exception=exception, traceback_text=traceback)

    def lost(self) -> None:
        self.status = "pending"
        self.workers = ()

    def exception(self) -> BaseException | None:
        if self.status == "cancelled":
            return CancelledError(self.cancel_reason or f"{self.key} was cancelled")
        if self.status != "error":
            return None
        # A fresh object per call: a raised exception collects the frames it passes
        # through (which hold Futures); cached here, it would keep its own Future, and
        # so the erred key and its data, alive for ever (dask/distributed#8790).
        exc = self._exception
        if isinstance(exc, Pickled):
            try:
                return loads_exception(exc, self.traceback_text)
            except Exception as e:  # the exception's class is unknown here
                return RuntimeError(f"task {self.key!r} failed; its exception could not be loaded: {e}")
        if isinstance(exc, BaseException):  # (keep only the frames it brought from elsewhere)
            return exc.with_traceback(remote_tail(exc.__traceback__))
        return RuntimeError(str(exc))

    def add_callback(self, fn: Callable[["FutureState"], None]) -> None:
        """Call ``fn(state)`` once done (now, if already done). Loop thread only."""
        if self.status not in DONE:
            with _ARM_LOCK:  # (a thread may be settling it: finish_off_loop)
                if self.status not in DONE:
                    if self._callbacks is None:
                        self._callbacks = [fn]
                    else:
                        self._callbacks.append(fn)
                    return
        fn(self)

    def arm(self, waiter: "runtime.Waiter") -> bool:
        """Any thread: have ``waiter`` woken once this is done; False if it is already."""
        with _ARM_LOCK:
            if self.status in DONE:
                return False
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
            return True

    def _fire(self, status: str) -> None:
        # Always under the lock: a thread in arm() that saw 'pending' may be appending
        # right now, and an unlocked look would miss its waiter (a lost wake-up).
        with _ARM_LOCK:
            self.status = status
            waiters, self._waiters = self._waiters, None
            callbacks, self._callbacks = self._callbacks, None
        for waiter in waiters or ():
            waiter.set(None)
        if callbacks:
            self._run_callbacks(callbacks)

    def _settle_off_loop(self, loop: asyncio.AbstractEventLoop, status: str, **fields: Any) -> bool:
        """Set ``fields`` and ``status``, under the lock, if nothing settled the state
        first; wake its waiters here and have the loop run its callbacks."""
        with _ARM_LOCK:
            if self.status != "pending":
                return False
            for name, value in fields.items():
                setattr(self, name, value)
            self.status = status
            waiters, self._waiters = self._waiters, None
            callbacks, self._callbacks = self._callbacks, None
        for waiter in waiters or ():
            waiter.set(None)
        if callbacks:
            try:
                runtime.post(loop, self._run_callbacks, callbacks)
            except RuntimeError:
                pass  # the loop is closed: so is the client, and whatever waited on it
        return True

    def _run_callbacks(self, callbacks: list | None) -> None:
        for cb in callbacks or ():
            try:
                cb(self)
            except Exception:
                import logging
                logging.getLogger("actorrt.client").exception("future callback failed")

    def __repr__(self) -> str:
        return f"<FutureState {self.key} {self.status}>"


async def wait_all(states: Iterable[Any], timeout: float | None = None, what: str = "futures") -> None:
    """Return once every state (anything with ``done()`` and ``add_callback``) is done.

    Runs on the client's loop; completion is pushed by the states' callbacks, so
    nothing polls. TimeoutError after ``timeout`` seconds.
    """
    pending = [st for st in states if not st.done()]
    if not pending:
        return
    done = asyncio.get_running_loop().create_future()
    remaining = len(pending)

    def one_done(_: Any) -> None:
        nonlocal remaining
        remaining -= 1
        if remaining == 0 and not done.done():
            done.set_result(None)

    for st in pending:
        st.add_callback(one_done)
    try:
        await asyncio.wait_for(done, timeout)
    except asyncio.TimeoutError:
        raise TimeoutError(f"{sum(not st.done() for st in pending)} {what} not done "
                           f"after {timeout} s") from None


class CallbackThread:
    """Runs users' done-callbacks of a sync client on a thread of their own, never on the
    client's loop (a slow or blocking callback must not stall every reply)."""

    def __init__(self) -> None:
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    def submit(self, fn: Callable[[Any], Any], arg: Any) -> None:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="actorrt-callback")
        self._executor.submit(fn, arg)

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)


class Future:
    """A remote result: the pending reply about ``key``.

    >>> x = client.submit(inc, 1)       # doctest: +SKIP
    >>> x.result()                      # doctest: +SKIP
    2
    """

    __slots__ = ("key", "client", "_state", "_released", "__weakref__")

    # dask treats objects with this flag as data already computed elsewhere: a Future
    # inside a dask graph or a ``dask.delayed`` call becomes a reference to its key.
    __dask_future__ = True

    def __init__(self, key: str, client: "Client | None" = None, state: FutureState | None = None,
                 inform: bool = True) -> None:
        if client is None:
            client = runtime.current_client()
        self.key = key
        self.client = client
        self._released = False
        if state is None:
            self._state = client.table.hold(key, inform=inform)
        else:
            self._state = state
            client.table.hold_again(key)

    # status ------------------------------------------------------------------
    @property
    def status(self) -> str:
        return self._state.status

    @property
    def type(self) -> Any:
        """The result's type (``int``), once finished; its name (a string) for a type
        this process cannot import, e.g. a class defined inside a function."""
        from .semantics import resolve_type  # (semantics imports this module)
        return resolve_type(self._state.type)

    def done(self) -> bool:
        return self._state.done()

    def cancelled(self) -> bool:
        return self._state.status == "cancelled"

    # results -----------------------------------------------------------------
    def result(self, timeout: float | None = None) -> Any:
        """The task's value; raises its exception, or TimeoutError after ``timeout`` (a
        duration: seconds, ``"2s"``, a ``timedelta``)."""
        client = self.client
        if (not client.asynchronous and timeout is None and client.status == "running"
                and not self._released and runtime.current_slots() is None):
            # A small value comes with the news that it finished: woken by that news
            # (runtime.block_on's arm), the thread takes it without a hop to the loop.
            # (In a task the wait goes through the loop anyway: one trip, not two.)
            st = self._state
            # Alone and unsent: run it on a worker from here (direct.py); else what is
            # queued lazily goes now, as it may be this very task.
            if st.status == "pending" and not client.direct.run(self.key, st):
                client.table.flush_soon(tasks_only=True)
            runtime.block_on(client.loop, lambda: wait_all([st]), arm=st.arm)
            if st.status == "finished" and st.inline is not None:
                from .transfer import inline_value  # (transfer imports this module)
                return inline_value(st, client)
        return client.sync(self._result, timeout=timeout)

    async def _result(self, timeout: float | None = None) -> Any:
        if self._released:  # its data may be gone: say so rather than wait for it
            from .semantics import released_future
            raise released_future(self.key)
        from .transfer import gather_keys  # (transfer needs Future: imported when first used)
        return (await gather_keys(self.client, [self], "raise", timeout))[0]

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return self.client.sync(self._exception, timeout=timeout)

    async def _exception(self, timeout: float | None = None) -> BaseException | None:
        await wait_all([self._state], timeout)
        return self._state.exception()

    def traceback(self, timeout: float | None = None) -> types.TracebackType | None:
        """The remote traceback of a failed task, a traceback object rebuilt from the
        remote frames (for ``traceback.format_tb``/``print_tb``/pdb), else None.

        >>> import traceback                                     # doctest: +SKIP
        >>> traceback.print_tb(client.submit(div, 1, 0).traceback())  # doctest: +SKIP
        """
        return self.client.sync(self._traceback, timeout=timeout)

    async def _traceback(self, timeout: float | None = None) -> types.TracebackType | None:
        await wait_all([self._state], timeout)
        if self._state.status != "error":
            return None
        exc = self._state.exception()
        return None if exc is None else exc.__traceback__

    def __await__(self) -> Any:
        return self._result().__await__()

    def add_done_callback(self, fn: Callable[["Future"], Any]) -> None:
        """Call ``fn(future)`` once the future is done, on a thread of the client."""
        client = self.client

        def run(_: FutureState) -> None:
            if client.asynchronous:
                fn(self)
            else:  # never run user code on the client's event loop thread
                client.callbacks.submit(fn, self)

        runtime.call_on(client.loop, self._state.add_callback, run)

    # life cycle --------------------------------------------------------------
    def cancel(self, reason: str | None = None, msg: str | None = None, force: bool = False) -> Any:
        """Cancel this future's task (and what depends on it); ``reason`` (or dask's
        ``msg``) goes into the CancelledError its holders see. Positions as in dask."""
        return self.client.cancel([self], force=force, reason=reason or msg)

    def retry(self) -> Any:
        return self.client.retry([self])

    def release(self) -> None:
        """Drop this future's claim on the key now rather than at garbage collection."""
        if not self._released:
            self._released = True
            self.client.table.release(self.key)

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:
            pass  # interpreter shutdown or a closed client

    def __reduce__(self) -> Any:
        kept = runtime.pickled_futures.get()
        if kept is not None:
            kept.append(self)
        # Wherever the copy goes (an actor call, a queue), its key is claimed there: the
        # scheduler must have heard of it by then, if it was submitted lazily.
        self.client.table.flush_soon()
        return _rebuild_future, (self.key,)

    def _repr_html_(self) -> str:
        from .html import future_html  # (html is for display only: loaded when a notebook asks)
        return future_html(self)

    def __repr__(self) -> str:
        name = self.key.rsplit("-", 1)[0] if "-" in self.key else self.key
        typ = self._state.type
        extra = f", type: {typ}" if typ and self.status == "finished" else ""
        return f"<Future: {name} status: {self.status}{extra}, key: {self.key}>"

    def __hash__(self) -> int:
        return hash(self.key)

    def __dask_tokenize__(self) -> str:
        return self.key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Future) and other.key == self.key and other.client is self.client


def held_future(key: str, client: "Client", state: FutureState) -> Future:
    """A Future for a reference the client's table has counted already (a submit)."""
    f = Future.__new__(Future)
    f.key, f.client, f._state, f._released = key, client, state, False
    return f


def _rebuild_future(key: str) -> Future:
    """Unpickling a Future binds it to the client of wherever it lands (a task's worker)."""
    client = runtime.bound_client()
    if client is None:
        client = runtime.current_client()
    return Future(key, client, inform=True)


def futures_of(obj: Any) -> list[Future]:
    """All futures inside ``obj`` (nested lists, tuples, sets, dicts), in order."""
    out: list[Future] = []
    seen: set[int] = set()
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, Future):
            if id(x) not in seen:
                seen.add(id(x))
                out.append(x)
        elif isinstance(x, (list, tuple, set, frozenset)):
            stack.extend(reversed(list(x)))
        elif isinstance(x, dict):
            stack.extend(reversed(list(x.values())))
        elif callable(getattr(x, "__dask_graph__", None)) and not isinstance(x, type):
            from .collections import futures_in_collection  # a persisted dask collection
            stack.extend(reversed(futures_in_collection(x)))
    return out
