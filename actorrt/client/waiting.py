"""Waiting on many futures: :class:`as_completed`, :func:`wait`, :func:`fire_and_forget`.

Completion is pushed, never polled: each future's state runs a callback on the
client's loop when the scheduler's report arrives. ``as_completed`` hands finished
futures from that callback to the iterating side through a condition variable (sync
iteration, on any thread) or loop futures (``async for``). Called inside a task, the
blocking forms give the task's thread slot back while they wait, like every blocking
call of a worker's client.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterable, Iterator, NamedTuple

from .. import runtime
from ..durations import parse_timeout
from .actor_handle import ActorFuture, actor_futures_of
from .future import Future, FutureState, futures_of
from .semantics import raise_if_cancelled

if TYPE_CHECKING:
    from .client import Client

ALL_COMPLETED = "ALL_COMPLETED"
FIRST_COMPLETED = "FIRST_COMPLETED"
FIRST_EXCEPTION = "FIRST_EXCEPTION"
_RETURN_WHEN = (ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION)


class DoneAndNotDoneFutures(NamedTuple):
    done: set
    not_done: set


# --- wait ----------------------------------------------------------------------------
def wait(fs: Any, timeout: float | None = None, return_when: str = ALL_COMPLETED) -> Any:
    """Wait until futures are done; returns ``(done, not_done)`` sets.

    ``return_when`` is ``"ALL_COMPLETED"`` (default), ``"FIRST_COMPLETED"`` or
    ``"FIRST_EXCEPTION"`` (return as soon as one future fails or is cancelled, else
    when all are done). Raises ``TimeoutError`` if the condition does not hold within
    ``timeout`` (a duration: seconds, ``"2s"``, a ``timedelta``), and, as dask, a
    ``CancelledError`` (``FuturesCancelledError``) once it holds if a done future was
    cancelled. With an asynchronous client, returns an awaitable.

    >>> futures = client.map(inc, range(10))                       # doctest: +SKIP
    >>> done, not_done = wait(futures, return_when="FIRST_EXCEPTION")  # doctest: +SKIP
    """
    timeout = parse_timeout(timeout)
    if return_when not in _RETURN_WHEN:
        raise ValueError(f"return_when must be one of {', '.join(_RETURN_WHEN)}; got {return_when!r}")
    futures: list[Any] = [*futures_of(fs), *actor_futures_of(fs)]  # (actor calls too: actor_handle.py)
    if not futures:
        if isinstance(fs, (Future, ActorFuture)):
            futures = [fs]
        else:
            return _empty_wait_result(fs)
    client = _one_client(futures, "wait")
    return client.sync(_wait, futures, return_when, timeout=timeout)


def _empty_wait_result(fs: Any) -> DoneAndNotDoneFutures:
    return DoneAndNotDoneFutures(set(), set())


async def _wait(futures: list[Future], return_when: str,
                timeout: float | None = None) -> DoneAndNotDoneFutures:
    """Runs on the client's loop, where future states change."""
    states = {f._state for f in futures}
    if not _condition_met(states, return_when):
        woken = asyncio.get_running_loop().create_future()
        _wake_when(states, return_when, woken)
        try:
            await asyncio.wait_for(woken, timeout)
        except asyncio.TimeoutError:
            pending = sum(not st.done() for st in states)
            raise TimeoutError(f"wait(return_when={return_when!r}): {pending} of {len(states)} "
                               f"futures still not done after {timeout} s") from None
    done = {f for f in futures if f._state.done()}
    raise_if_cancelled(done)
    return DoneAndNotDoneFutures(done, {f for f in futures if f not in done})


def _wake_when(states: set[FutureState], return_when: str, woken: "asyncio.Future[None]") -> None:
    """Resolve ``woken`` once ``return_when`` holds for ``states`` (it does not yet).

    Each state's callback counts down the ones still pending, so waiting on n futures
    costs O(n), not the O(n^2) of re-checking every state on every completion.
    """
    pending = [st for st in states if not st.done()]
    remaining = len(pending)

    def on_done(st: FutureState) -> None:
        nonlocal remaining
        remaining -= 1
        if woken.done():
            return
        if (remaining <= 0 or return_when == FIRST_COMPLETED
                or (return_when == FIRST_EXCEPTION and st.status in ("error", "cancelled"))):
            woken.set_result(None)

    for st in pending:
        st.add_callback(on_done)


def _condition_met(states: set[FutureState], return_when: str) -> bool:
    if return_when == FIRST_COMPLETED:
        return any(st.done() for st in states)
    if return_when == FIRST_EXCEPTION and any(st.status in ("error", "cancelled") for st in states):
        return True
    return all(st.done() for st in states)


def _one_client(futures: list[Future], what: str) -> "Client":
    client = futures[0].client
    for f in futures:
        if f.client is not client:
            raise ValueError(f"{what}() got futures of different clients ({f.client!r} and "
                             f"{client!r}); use one client per call")
    return client


# --- fire and forget -------------------------------------------------------------------
def fire_and_forget(obj: Any) -> None:
    """Run the tasks behind the futures in ``obj`` even after every Future is dropped.

    The scheduler keeps the work, and everything it depends on, until it has run; then
    the result is released (a fire-and-forget task is run for its side effects).

    >>> fire_and_forget(client.submit(send_email, to="team"))   # doctest: +SKIP
    """
    futures = futures_of(obj)
    if isinstance(obj, Future) and not futures:
        futures = [obj]
    by_client: dict[int, tuple["Client", list[str]]] = {}
    for f in futures:
        by_client.setdefault(id(f.client), (f.client, []))[1].append(f.key)
    for client, keys in by_client.values():
        with client.table.lock:
            for key in keys:
                client.table.queue_locked("fire_and_forget", key)


# --- as_completed ---------------------------------------------------------------------
class _Done(NamedTuple):
    future: Future
    value: Any        # the result (with_results) or None
    error: bool       # value is the task's exception


class _Slot:
    """A done future's place in the completion order, until its item is made."""

    __slots__ = ("future", "item")

    def __init__(self, future: Future) -> None:
        self.future = future
        self.item: _Done | None = None


class as_completed:
    """Iterate over futures in the order they finish.

    Futures may be added while iterating (:meth:`add`, :meth:`update`), which makes
    dynamic workloads easy, e.g. a reduction that combines whatever is ready::

        seq = as_completed(client.map(load, files))       # doctest: +SKIP
        while seq.count() > 1:
            a, b = next(seq), next(seq)
            seq.add(client.submit(combine, a, b))
        total = next(seq).result()

    A future that fails is yielded like any other (its ``result()`` raises). With
    ``with_results=True`` each item is ``(future, result)``, in completion order; an
    erred future raises its exception from ``next()`` at its turn unless
    ``raise_errors=False``, when the exception is the yielded result; a cancelled one
    is yielded with its ``CancelledError`` (dask does the same). ``timeout`` (a
    duration) counts from construction: ``next()`` raises ``TimeoutError`` once it has
    passed with nothing ready. Works with ``for`` and ``async for``.
    """

    def __init__(self, futures: Iterable[Future] | None = None, loop: Any = None,
                 with_results: bool = False, raise_errors: bool = True, *,
                 timeout: float | None = None) -> None:
        self.with_results = with_results
        self.raise_errors = raise_errors
        timeout = parse_timeout(timeout)
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._timeout = timeout
        self._lock = threading.Lock()  # guards the fields below: threads add, the loop pushes
        self._loop: asyncio.AbstractEventLoop | None = None  # where a sync next() waits
        self._ready: deque[_Done] = deque()
        self._pending: dict[Future, int] = {}     # future -> how many adds not yet done
        self._generation = 0                      # bumped by clear(): stale callbacks drop out
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []
        self._fetches: dict[int, list[_Slot]] = {}  # per client: finished, result not fetched
        self._making: deque[_Slot] = deque()  # done, in completion order, item not yet ready
        self._tasks: set[asyncio.Task] = set()
        if futures is not None:
            self.update(futures)

    # --- adding -------------------------------------------------------------
    def add(self, future: Future) -> None:
        """Add one future; it is yielded once it finishes (at once if already done)."""
        if not isinstance(future, (Future, ActorFuture)):
            raise TypeError(f"as_completed.add() needs a Future, got {type(future).__name__}")
        with self._lock:
            self._pending[future] = self._pending.get(future, 0) + 1
            generation = self._generation
            if self._loop is None:
                self._loop = future.client.loop

        def on_done(_: FutureState) -> None:
            self._on_done(future, generation)

        runtime.call_on(future.client.loop, future._state.add_callback, on_done)

    def update(self, futures: Iterable[Future]) -> None:
        """Add many futures."""
        for f in [futures] if isinstance(futures, (Future, ActorFuture)) else futures:
            self.add(f)  # type: ignore[arg-type]  # (an ActorFuture: actor_handle.py)

    # --- loop side ----------------------------------------------------------
    def _on_done(self, future: Future, generation: int) -> None:
        """On the client's loop, once ``future`` is done."""
        if generation != self._generation:
            return
        st = future._state
        if not self.with_results:
            with self._lock:
                self._push_locked(_Done(future, None, st.status != "finished"))
            return
        # Items leave in the order their futures finished, also while an earlier one's
        # value is still being fetched: an error that came later is raised later (dask).
        slot = _Slot(future)
        with self._lock:
            self._making.append(slot)
        if type(future) is ActorFuture:  # an actor call's reply is here already: no fetch
            error = st.status != "finished"
            slot.item = _Done(future, st.exception() if error else st.value(future.client), error)
        elif st.status != "finished":
            # dask raises for an erred future; a cancelled one is yielded with its
            # CancelledError as the result.
            slot.item = _Done(future, st.exception(), st.status == "error")
        else:
            batch = self._fetches.get(id(future.client))
            if batch is None:  # first one this loop turn: fetch what finishes meanwhile in one go
                batch = self._fetches[id(future.client)] = []
                future.client.loop.call_soon(self._start_fetch, future.client, generation)
            batch.append(slot)
            return
        self._flush()

    def _start_fetch(self, client: "Client", generation: int) -> None:
        batch = self._fetches.pop(id(client), [])
        task = asyncio.ensure_future(self._fetch(client, batch, generation))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fetch(self, client: "Client", batch: list[_Slot], generation: int) -> None:
        from .transfer import SKIP, gather_keys
        futures = [slot.future for slot in batch]
        try:
            values = await gather_keys(client, futures, "skip", None)
        except Exception as e:  # e.g. the client closed: report it on every item
            values = [e] * len(batch)
            failed = True
        else:
            failed = False
        if generation != self._generation:
            return
        for slot, f, v in zip(batch, futures, values):
            if failed or v is SKIP:
                exc = v if failed else f._state.exception()
                slot.item = _Done(f, exc, True)
            else:
                slot.item = _Done(f, v, False)
        self._flush()

    def _flush(self) -> None:
        """Hand over the finished items at the head of the completion order."""
        with self._lock:
            making = self._making
            while making and making[0].item is not None:
                item = making.popleft().item
                assert item is not None
                self._push_locked(item)

    def _push_locked(self, item: _Done) -> None:
        n = self._pending.get(item.future, 0)
        if n <= 1:
            self._pending.pop(item.future, None)
        else:
            self._pending[item.future] = n - 1
        self._ready.append(item)
        waiters, self._async_waiters = self._async_waiters, []
        _wake(waiters)

    # --- queries ------------------------------------------------------------
    def count(self) -> int:
        """How many futures are still to be yielded (pending or ready)."""
        with self._lock:
            return sum(self._pending.values()) + len(self._ready)

    def is_empty(self) -> bool:
        return self.count() == 0

    def has_ready(self) -> bool:
        """Whether ``next()`` would return without waiting."""
        with self._lock:
            return bool(self._ready)

    def clear(self) -> None:
        """Forget every future not yet yielded."""
        with self._lock:
            self._generation += 1
            self._pending.clear()
            self._ready.clear()
            self._making.clear()
            waiters, self._async_waiters = self._async_waiters, []
        _wake(waiters)

    # --- sync iteration -----------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        return self._unpack(self._take(1, block=True)[0])

    def _take(self, n: int | None, block: bool) -> list[_Done]:
        """Pop up to ``n`` ready items (all if None), waiting for one if ``block``."""
        with self._lock:
            if self._ready or not block:
                return self._pop_locked(n)
            if not self._pending:
                raise StopIteration
            loop = self._loop
        assert loop is not None  # (set by the first add)
        if not runtime.block_on(loop, self._until_ready):
            raise StopIteration
        with self._lock:
            return self._pop_locked(n)

    def _pop_locked(self, n: int | None) -> list[_Done]:
        count = len(self._ready) if n is None else min(n, len(self._ready))
        return [self._ready.popleft() for _ in range(count)]

    async def _until_ready(self) -> bool:
        """On a loop: wait until an item is ready (True) or none can come (False).
        TimeoutError once the deadline passes first."""
        while True:
            with self._lock:
                if self._ready:
                    return True
                if not self._pending:
                    return False
                loop = asyncio.get_running_loop()
                fut = loop.create_future()
                self._async_waiters.append((loop, fut))
            remaining = None if self._deadline is None else self._deadline - time.monotonic()
            try:
                await asyncio.wait_for(fut, remaining)
            except asyncio.TimeoutError:
                raise TimeoutError(f"as_completed: nothing finished within {self._timeout} s "
                                   f"({sum(self._pending.values())} futures pending)") from None

    def next_batch(self, block: bool = True) -> list:
        """Everything ready now; with ``block``, wait for at least one item first."""
        try:
            items = self._take(None, block)
        except StopIteration:
            return []
        return [self._unpack(i) for i in items]

    def batches(self) -> Iterator[list]:
        """Yield lists of whatever finished since the last list, until none are left."""
        while True:
            batch = self.next_batch(block=True)
            if not batch:
                return
            yield batch

    def _unpack(self, item: _Done) -> Any:
        if not self.with_results:
            return item.future
        if item.error and self.raise_errors:
            raise item.value
        return item.future, item.value

    # --- async iteration ----------------------------------------------------
    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        while True:
            with self._lock:
                if self._ready:
                    return self._unpack(self._ready.popleft())
            if not await self._until_ready():
                raise StopAsyncIteration

    def __repr__(self) -> str:
        return f"<as_completed: {self.count()} to go, {len(self._ready)} ready>"


def _wake(waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]]) -> None:
    for loop, fut in waiters:
        if runtime.on_loop(loop):  # (results arrive on the client's loop: no hop needed)
            _resolve(fut)
        else:
            runtime.post(loop, _resolve, fut)


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


__all__ = ["ALL_COMPLETED", "FIRST_COMPLETED", "FIRST_EXCEPTION", "as_completed",
           "fire_and_forget", "wait"]
