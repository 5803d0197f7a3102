"""The client's future table: what it knows of each key, who holds it, and what the
scheduler must hear.

One :class:`FutureState` per key, shared by every :class:`Future` object for that key;
a count of those Futures; and an outbox of the messages their creation and release
imply (``update_graph``, ``want_keys``, ``release_keys``, ...), sent as one batch per
loop turn. Any thread may submit or drop Futures, so the table has one lock; the
states themselves change only on the client's loop.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable, Iterable

from .future import FutureState

#: ``[[op, [item, ...]], ...]``: consecutive items of one op merged (see FutureTable.queue)
Outbox = list[list]


class FutureTable:
    """The client's keys. ``send(batch)`` (set by :meth:`attach`) delivers an outbox."""

    def __init__(self) -> None:
        self._states: dict[str, FutureState] = {}
        self._refcount: dict[str, int] = {}
        # Reentrant: the garbage collector may free a Future (whose release takes this
        # lock) on any allocation, including one made while this thread holds the lock.
        self.lock = threading.RLock()
        self._outbox: Outbox = []
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._send: Callable[[Outbox], None] | None = None
        self.closed = False  # once closed, released keys are not reported

    def attach(self, loop: asyncio.AbstractEventLoop, send: Callable[[Outbox], None]) -> None:
        """The loop that flushes the outbox, and how a flushed batch reaches the scheduler."""
        self._loop, self._send = loop, send

    # --- queries ------------------------------------------------------------------
    def get(self, key: str) -> FutureState | None:
        return self._states.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self._states

    def held(self) -> int:
        """How many keys some Future still holds (a cancelled key may have no state)."""
        return len(self._refcount)

    def states(self) -> list[FutureState]:
        """A snapshot: Futures dropped on other threads change the table meanwhile."""
        with self.lock:
            return list(self._states.values())

    def holds(self, key: str, state: FutureState, refs: int = 1) -> bool:
        """Whether ``state`` is the key's current state, held by exactly ``refs`` Futures."""
        return self._states.get(key) is state and self._refcount.get(key) == refs

    # --- holding keys -------------------------------------------------------------
    def hold(self, key: str, inform: bool = False) -> FutureState:
        """One more Future for ``key``; its state (new if the key is not known).

        ``inform``: a new key arrived from elsewhere (unpickled, a dataset), so the
        scheduler is told this client wants it."""
        with self.lock:
            st = self._states.get(key)
            if st is None:
                st = self._states[key] = FutureState(key)
                if inform:
                    self.queue_locked("want_keys", key)
            self._refcount[key] = self._refcount.get(key, 0) + 1  # cancelled futures may remain
        return st

    def hold_again(self, key: str) -> None:
        """One more Future for a state the caller already has (a copy of a Future)."""
        with self.lock:
            self._refcount[key] = self._refcount.get(key, 0) + 1

    def hold_new(self, key: str, spec: Any = None, wanted: bool = True) -> FutureState:
        """Lock held: a Future for ``key`` about to be submitted with ``spec``.

        A key known already keeps its state (the first submission wins, as in dask)
        unless it was cancelled: then a fresh state, so the old Futures stay cancelled
        while the new ones follow the new run. ``spec`` None submits nothing; with
        ``wanted`` the key (a Future output of a graph) is wanted again instead."""
        st = self._states.get(key)
        if st is None or st.status == "cancelled":
            st = self._states[key] = FutureState(key)
            if spec is not None:
                self.queue_locked("update_graph", (spec, key))
            elif wanted:
                self.queue_locked("want_keys", key)
        self._refcount[key] = self._refcount.get(key, 0) + 1
        return st

    def release(self, key: str) -> None:
        """One Future for ``key`` fewer; the last one tells the scheduler."""
        with self.lock:
            n = self._refcount.get(key, 0) - 1
            if n > 0:
                self._refcount[key] = n
                return
            self._refcount.pop(key, None)
            st = self._states.pop(key, None)
            if st is None or self.closed:
                return
            self.queue_locked("release_keys", key)

    def detach(self, states: Iterable[FutureState]) -> None:
        """Lock held: forget these states (cancelled) so a new submit starts afresh and
        late reports about the old run do not reach the new one."""
        for st in states:
            if self._states.get(st.key) is st:
                del self._states[st.key]

    def replace(self, key: str, old: FutureState, new: FutureState) -> bool:
        """Let ``new`` stand for ``key`` if ``old`` is its state, held by one Future."""
        with self.lock:
            if not self.holds(key, old):
                return False
            self._states[key] = new
            return True

    def clear(self) -> list[FutureState]:
        """Forget every state (a restart); returns them."""
        with self.lock:
            states = list(self._states.values())
            self._states.clear()
        return states

    # --- the outbox -------------------------------------------------------------------
    def queue(self, op: str, item: Any) -> None:
        with self.lock:
            self.queue_locked(op, item)

    def queue_locked(self, op: str, item: Any) -> None:
        """Lock held: append to the outbox; consecutive ops of one kind merge into one
        message. (Callers hold the lock over several changes that must go together.)"""
        box = self._outbox
        if box and box[-1][0] == op:
            box[-1][1].append(item)
        else:
            box.append([op, [item]])
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            if asyncio._get_running_loop() is self._loop:  # (the non-raising form: hot path)
                self._loop.call_soon(self.flush)
            else:
                try:
                    self._loop.call_soon_threadsafe(self.flush)
                except RuntimeError:
                    pass  # loop closed

    def flush(self) -> None:
        """On the loop: send what is queued now (also before a message that must follow it)."""
        with self.lock:
            box, self._outbox = self._outbox, []
            self._flush_scheduled = False
        if box and self._send is not None:
            self._send(box)


__all__ = ["FutureTable", "Outbox"]
