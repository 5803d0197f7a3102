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
import functools
import threading
from typing import Any, Callable, Iterable

from .. import runtime
from ..protocol import runs_alone
from ..utils import env_count
from .future import FutureState

#: ``[[op, [item, ...]], ...]``: consecutive items of one op merged (see FutureTable.queue)
Outbox = list[list]

#: Tasks per ``update_graph`` message: the scheduler takes each in one turn of its loop
#: (~10 ms here), so a million-task map never stops it for seconds (its workers would
#: take the silence for its death).
GRAPH_CHUNK = 5_000
#: Tasks sent and not yet acknowledged by the scheduler. It acknowledges at once (with
#: the client's next report while the client has half its window free: see
#: :meth:`FutureTable.may_ack_later`) unless too much work waits for workers
#: (scheduler/admission.py): then this is how far a client runs ahead of it.
DEFAULT_WINDOW = 20_000
#: Tasks queued here, not yet sent, before a thread that submits more waits for room.
DEFAULT_BACKLOG = 100_000
#: Seconds a message that is not urgent (a release, a relayed report) may wait for
#: company before the loop sends it (FutureTable.queue_locked).
BATCH_INTERVAL = 0.002


class OutboxLock:
    """The table's lock (reentrant), which wakes the loop only once it is let go.

    Queueing a message asks the loop to flush the outbox. Asking while holding this
    lock woke the loop only for it to wait here for the lock, and to be woken a second
    time when the holder let go: a cross-CPU wake-up more on every submission's path
    (10% of the client loop's busy time in the submit round trip, sampled). So the
    request is noted, and carried out when the outermost hold ends.
    """

    __slots__ = ("_lock", "_depth", "_wake")

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._depth = 0  # holds by the owning thread (only the owner changes it)
        self._wake: Callable[[], None] | None = None  # asked for while held

    def wake_on_release(self, wake: Callable[[], None]) -> None:
        """Lock held: call ``wake`` once the outermost hold ends."""
        self._wake = wake

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        got = self._lock.acquire(blocking, timeout)
        if got:
            self._depth += 1
        return got

    def release(self) -> None:
        self._depth -= 1
        wake = None
        if self._depth == 0:
            wake, self._wake = self._wake, None
        self._lock.release()
        if wake is not None:
            wake()

    __enter__ = acquire

    def __exit__(self, *exc: Any) -> None:
        self.release()

    # threading.Condition's protocol for a reentrant lock: waiting lets go of every
    # hold at once, and so asks the loop for what was queued (it may be what the
    # waiting thread waits for).
    def _is_owned(self) -> bool:
        return self._lock._is_owned()  # type: ignore[attr-defined]

    def _release_save(self) -> Any:
        depth, self._depth = self._depth, 0
        wake, self._wake = self._wake, None
        saved = self._lock._release_save()  # type: ignore[attr-defined]
        if wake is not None:
            wake()
        return saved, depth

    def _acquire_restore(self, saved: Any) -> None:
        state, depth = saved
        self._lock._acquire_restore(state)  # type: ignore[attr-defined]
        self._depth = depth


class FutureTable:
    """The client's keys. ``send(batch)`` (set by :meth:`attach`) delivers an outbox."""

    def __init__(self, window: int | None = None, backlog: int | None = None) -> None:
        self._states: dict[str, FutureState] = {}
        self._refcount: dict[str, int] = {}
        # Reentrant: the garbage collector may free a Future (whose release takes this
        # lock) on any allocation, including one made while this thread holds the lock.
        self.lock = OutboxLock()
        # Flow control of submissions: at most ``window`` tasks unacknowledged by the
        # scheduler; past ``backlog`` tasks queued here, submitting threads wait.
        self.window = window if window is not None else env_count("ACTORRT_SUBMIT_WINDOW", DEFAULT_WINDOW)
        self.backlog = backlog if backlog is not None else env_count("ACTORRT_SUBMIT_BACKLOG", DEFAULT_BACKLOG)
        self.chunk = GRAPH_CHUNK  # tasks per message
        self.unacknowledged = 0  # tasks sent, not yet acknowledged
        self.queued_tasks = 0    # tasks in the outbox, not yet sent
        # (OutboxLock speaks the reentrant-lock protocol Condition uses; typeshed lists only its own.)
        self._room = threading.Condition(self.lock)  # type: ignore[arg-type]
        self._outbox: Outbox = []
        self._flush_scheduled = False
        self.lazy = False  # something was queued lazily, not yet sent (queue_locked)
        self.lazy_tasks = False  # a task, among them
        self._batching = False  # the loop flushes every BATCH_INTERVAL (queue_locked)
        self._batch_timer: asyncio.TimerHandle | None = None
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
                    claims = runtime.claimed_keys.get()
                    if claims is not None:  # (an actor call's arguments: it answers once this is in)
                        claims.append((self, key))
            self._refcount[key] = self._refcount.get(key, 0) + 1  # cancelled futures may remain
        return st

    def hold_again(self, key: str) -> None:
        """One more Future for a state the caller already has (a copy of a Future)."""
        with self.lock:
            self._refcount[key] = self._refcount.get(key, 0) + 1

    def hold_new(self, key: str, spec: Any = None, wanted: bool = True, lazy: bool = False) -> FutureState:
        """Lock held: a Future for ``key`` about to be submitted with ``spec``.

        A key known already keeps its state (the first submission wins, as in dask)
        unless it was cancelled: then a fresh state, so the old Futures stay cancelled
        while the new ones follow the new run. ``spec`` None submits nothing; with
        ``wanted`` the key (a Future output of a graph) is wanted again instead;
        ``lazy``: its submission is queued lazily (``queue_locked``)."""
        st = self._states.get(key)
        if st is None or st.status == "cancelled":
            st = self._states[key] = FutureState(key)
            if spec is not None:  # (lazy: likely to be taken for a direct run: client/direct.py)
                self.queue_locked("update_graph", (spec, key), lazy)
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
            self.queue_locked("release_keys", key, True)

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
    def queue(self, op: str, item: Any, lazy: bool = False) -> None:
        with self.lock:
            self.queue_locked(op, item, lazy)

    def queue_locked(self, op: str, item: Any, lazy: bool = False) -> None:
        """Lock held: append to the outbox; consecutive ops of one kind merge into one
        message. (Callers hold the lock over several changes that must go together.)

        ``lazy``: not urgent (a release, a relayed report, a submission likely to be
        taken for a direct run). It goes with the next flush, and within
        ``BATCH_INTERVAL``: the first lazy message wakes the loop, which flushes, then
        flushes every ``BATCH_INTERVAL`` while more come. A thread busy with round
        trips wakes the loop once per interval, not once per message (in a
        LocalCluster's process the loop's turns contend with that thread for the GIL
        on every round trip). Whatever is queued after it still follows it.

        A lazy submission is not flushed at once even when first: its thread is about
        to take it for a direct run (``take_lone``, from ``Future.result``), and a
        loop woken to send it would race that thread for it, and win whenever the
        thread is held up a moment (the loop's wake-up takes the GIL from it). The loop
        only starts the interval's timer; the submission goes at the tick if nobody
        took it, or sooner with anything urgent (``flush_soon`` among them)."""
        box = self._outbox
        if box and box[-1][0] == op:
            box[-1][1].append(item)
        else:
            box.append([op, [item]])
        if op == "update_graph":
            self.queued_tasks += 1
            if lazy:
                self.lazy_tasks = True
        if lazy:
            self.lazy = True
            if self._batching:
                return
            self._batching = True
            if op == "update_graph":
                self._arm_batch()
                return
        if not self._flush_scheduled:  # (a call once per flush, not per item)
            self._schedule_flush()

    def flush_soon(self, tasks_only: bool = False) -> None:
        """Any thread: have the loop send now what was queued lazily, if anything was
        (a question to the scheduler follows: it must see what this client did);
        ``tasks_only``: only if a task was (a thread about to wait for one)."""
        if self.lazy_tasks if tasks_only else self.lazy:
            with self.lock:
                self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._have_loop_call(self._woken)

    def _arm_batch(self) -> None:
        """Lock held: have the loop start the interval's timer, and flush nothing now
        (a lazy submission's first message, see ``queue_locked``)."""
        if not self._flush_scheduled and self._loop is not None:  # (else a flush's turn starts it)
            self._have_loop_call(self._start_batch)

    def _have_loop_call(self, fn: Callable[[], None]) -> None:
        """Lock held: have the loop call ``fn``, on its next turn; from another thread,
        once the lock is let go (the loop would only wait for it)."""
        assert self._loop is not None
        if asyncio._get_running_loop() is self._loop:  # (the non-raising form: hot path)
            self._loop.call_soon(fn)
        else:
            self.lock.wake_on_release(functools.partial(self._post, fn))

    def _post(self, fn: Callable[[], None]) -> None:
        assert self._loop is not None
        try:
            runtime.post(self._loop, fn)
        except RuntimeError:
            pass  # loop closed

    def _start_batch(self) -> None:
        """On the loop: flush what is queued lazily every ``BATCH_INTERVAL`` while some
        comes (the timer, if it is not running)."""
        if self._batching and self._batch_timer is None:
            assert self._loop is not None
            self._batch_timer = self._loop.call_later(BATCH_INTERVAL, self._batch_tick)

    def _woken(self) -> None:
        """On the loop, asked to flush: flush, and keep flushing what is queued lazily
        every ``BATCH_INTERVAL`` while some comes (see ``queue_locked``)."""
        self._start_batch()
        self._flush_window()

    def _batch_tick(self) -> None:
        self._batch_timer = None
        with self.lock:
            if not self.lazy:
                self._batching = False  # (under the lock: the next lazy message wakes us)
                return
        self._woken()

    def flush(self) -> None:
        """On the loop: send everything queued, window or not: a message that must follow
        what was queued before it (a dataset published, a question about keys) comes next."""
        self._flush(window=False)

    def _flush_window(self) -> None:
        """On the loop, once per turn: send what is queued as far as the window allows;
        the rest waits for acknowledgements, in order."""
        self._flush(window=True)

    def _flush(self, window: bool) -> None:
        with self.lock:
            box = self._sendable(window)
            self._flush_scheduled = self.lazy = self.lazy_tasks = False
        if box and self._send is not None:
            self._send(box)

    def _sendable(self, window: bool = True) -> Outbox:
        """Lock held: take from the outbox what may go now. Tasks go in messages of at
        most ``chunk``; with ``window``, at most ``window`` unacknowledged, and whatever
        follows the first task that may not go stays queued behind it (a release must
        not overtake the submission of its key)."""
        box = self._outbox
        out: Outbox = []
        queued = self.queued_tasks
        while box:
            op, items = box[0]
            if op != "update_graph":
                box.pop(0)
                # (A million releases go as many messages: the scheduler handles each in
                # a turn of its loop, with its heartbeats and other peers between.)
                out.extend([op, items[i:i + self.chunk]] for i in range(0, len(items), self.chunk))
                continue
            room = self.window - self.unacknowledged if window else len(items)
            if room <= 0:
                break
            take = min(len(items), room, self.chunk)
            # A part with more of its graph behind it says so: the scheduler then keeps
            # the tasks nothing wants yet (their dependents are in the next part).
            out.append(["update_graph" if take == len(items) else "update_graph_more", items[:take]])
            self.unacknowledged += take
            self.queued_tasks -= take
            if take == len(items):
                box.pop(0)
            else:
                del items[:take]
        if self.queued_tasks < queued:  # room made: wake threads waiting for it
            self._room.notify_all()
        return out

    def take_lone(self, key: str, worker: str) -> list | None:
        """Lock held: the spec of ``key``'s submission, if it is still queued here, alone
        in its message, and a task a worker may run with no word from the scheduler (no
        inputs, no restrictions, resources, retries or actor). Its message becomes a
        ``direct_started`` naming ``worker``, in the same place, so what this client
        says next about the key still follows it (client/direct.py)."""
        for entry in self._outbox:
            op, items = entry
            if op != "update_graph" or len(items) != 1 or items[0][1] != key:
                continue
            spec = items[0][0]
            if not runs_alone(spec):
                return None
            entry[0], entry[1] = "direct_started", [(spec, key, worker)]
            self.queued_tasks -= 1
            return spec
        return None

    def acknowledged(self, n: int) -> None:
        """On the loop: the scheduler took ``n`` tasks (or the message is lost: its
        connection closed): that much more may go."""
        with self.lock:
            self.unacknowledged = max(0, self.unacknowledged - n)
            more = bool(self._outbox)
        if more:
            self._flush_window()

    def may_ack_later(self) -> bool:
        """Whether what was just taken for sending may be acknowledged late (on a report):
        yes while half the window is still free, so late acknowledgements never stall
        the window (past half, each chunk is asked, and its reply counts them too)."""
        return self.unacknowledged <= self.window // 2

    def connection_lost(self) -> None:
        """The scheduler's connection closed: nothing sent on it will be acknowledged."""
        with self.lock:
            self.unacknowledged = 0

    def unsent(self, n: int) -> None:
        """On the loop: ``n`` tasks taken for sending went nowhere (the client is not
        connected): nothing will acknowledge them, and nothing more is sent now."""
        with self.lock:
            self.unacknowledged = max(0, self.unacknowledged - n)

    def wait_for_room(self) -> None:
        """Block the calling thread while more than ``backlog`` tasks wait here to be
        sent (the scheduler is holding back its acknowledgements: the cluster is behind).
        Inside a task, its thread slot is given back meanwhile. Never on the loop."""
        if self.queued_tasks <= self.backlog or self._loop is None or runtime.on_loop(self._loop):
            return
        slots = runtime.current_slots()
        seceded = slots is not None and slots.secede()
        try:
            with self._room:
                while self.queued_tasks > self.backlog and not self.closed:
                    self._room.wait()
        finally:
            if seceded:
                assert slots is not None
                slots.rejoin()

    def close(self) -> None:
        """No more sending: wake every thread waiting for room."""
        with self.lock:
            self.closed = True
            self._room.notify_all()


__all__ = ["FutureTable", "Outbox"]
