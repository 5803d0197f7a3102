"""A connection one thread owns for its asks to one peer, whose replies it reads itself.

A thread that asks and waits (``counter.increment().result()``) otherwise takes two
wake-ups on its own side per call: the loop's, woken by the reply, and its own, woken by
the loop. Reading the reply off the socket on the waiting thread saves the first one and
all the loop's work on it: a sequential actor call costs about a third less (see
docs/internals.md, "A thread's own connection").

Who reads is decided per channel, under its lock:

* **the owner thread**, while it waits for one of its asks (:meth:`ThreadChannel.wait`),
  and only then: outside a wait nobody reads, so the loop is never woken for this socket;
* **the loop**, once anyone else needs a reply the owner is not waiting for: another
  thread waits on it, a callback is attached to it (``gather``, ``as_completed``,
  ``await``), the owner has more than one ask out (a pipeline), a wait outlasts
  ``PATIENCE`` (the loop's heartbeat then watches the peer), or the owner thread is
  gone. :meth:`ThreadChannel.lend` hands the reading to the loop; the loop hands it back
  once every ask is answered.

An ask is written by the owner straight onto the socket when it is the only one out
and nothing handed to the loop for this channel is still unsent; else the loop writes
it after those, a turn's asks at once (a pipeline costs one write per batch, not per
ask). One connection, so the peer sees one thread's asks in the order they were made.

A thread channel carries no heartbeat of its own: the host closes it with the main
connection to the same peer (Host._on_comm_closed), which is watched.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from typing import Any, Callable

from .comm import REPLY, reply_outcome
from .errors import CommClosedError
from .spin import SpinPolicy

logger = logging.getLogger("actorrt.host")

#: ``settle(ok, value)``: an ask's outcome, on whichever thread read it (``value`` is the
#: exception when not ``ok``).
Settle = Callable[[bool, Any], None]

#: Longest a thread reads for a reply itself before the loop takes over (s). A reply
#: that is slower than this is no longer a sequential call's latency; on the loop the
#: wait is watched by the heartbeat like any other.
PATIENCE = 0.5


class ThreadChannel:
    """One thread's connection to one peer host (see the module docstring).

    ``post(fn, *args)``, from any thread, has the loop call ``fn(*args)`` after
    everything that thread handed it before (so an ask the loop writes cannot pass
    them); RuntimeError if the loop is closed. ``spin_budget``: how long the owner
    polls for a reply before it sleeps, at most (seconds; core/spin.py)."""

    def __init__(self, comm: Any, loop: asyncio.AbstractEventLoop, owner: int,
                 post: Callable[..., None], spin_budget: float = 0.0) -> None:
        self.comm = comm
        self.loop = loop
        self.owner = owner                     # the thread's ident
        self._post = post
        self._lock = threading.Lock()
        self._asks: dict[int, Settle] = {}     # unanswered, by request id
        self._rids = itertools.count(1)
        self._loop_reads = False               # else nobody, or the owner in wait()
        self._owner_reading = False
        self._lend_after_read = False          # asked for while the owner read
        self._outbox: list = []                # asks for the loop to write, in order
        self._flush_posted = False
        self._owner_gone = False
        self._spin = SpinPolicy(spin_budget)  # (the owner's alone: used in wait())
        comm.on_messages = self._on_loop_messages
        comm.lend_reading()

    @property
    def closed(self) -> bool:
        return bool(self.comm.closed)

    # --- the owner thread -------------------------------------------------------------
    def ask(self, actor_id: str, op: str, fields: dict, settle: Settle, may_write: bool) -> int:
        """Send an ask; ``settle`` gets its outcome. Returns its request id.

        Written from this thread if ``may_write`` (nothing the thread handed the loop is
        still to run), it is the only ask out and nothing for this channel waits on the
        loop. Else the loop writes it, after those: a pipeline's asks go in the loop's
        batches, one write for however many came in one turn."""
        msg: list = [actor_id, op, 0, fields]
        with self._lock:
            rid = msg[2] = next(self._rids)
            self._asks[rid] = settle
            if len(self._asks) > 1:
                self._lend_locked()  # a pipeline: its replies come faster than waits read them
            direct = may_write and len(self._asks) == 1 and not self._flush_posted
        self._send(msg, direct)
        return rid

    def tell(self, actor_id: str, op: str, fields: dict, may_write: bool) -> None:
        """Send a tell (no reply), after every ask and tell this thread sent here before:
        written from this thread if ``may_write`` and nothing for this channel waits on
        the loop, else by the loop."""
        with self._lock:
            direct = may_write and not self._flush_posted
        self._send([actor_id, op, 0, fields], direct)

    def _send(self, msg: list, direct: bool) -> None:
        if direct:
            data = self.comm.frame_for_thread(msg)
            if data is not None and self.comm.write_from_thread(data):
                return
        with self._lock:
            self._outbox.append(msg)
            post = not self._flush_posted
            self._flush_posted = True
        if post:
            try:
                self._post(self._flush)
            except RuntimeError:  # the loop is closed, and the connection with it
                self._fail_all(CommClosedError(f"connection to {self.comm.peer_address} closed"))

    def wait(self, rid: int) -> bool:
        """Read replies on this thread until ask ``rid``'s has come (True). False, at
        once or after ``PATIENCE``, if the loop reads them instead: then wait for the
        outcome as for any other (this has asked the loop to read)."""
        with self._lock:
            if rid not in self._asks:
                return True
            if self._loop_reads or self._owner_reading or threading.get_ident() != self.owner:
                self._lend_locked()
                return False
            self._owner_reading = True
        deadline = self.loop.time() + PATIENCE
        try:
            budget = self._spin.next_budget()
            if budget:  # poll a while first: a reply that lands meanwhile wakes no one
                self._spin.polled(self.comm.readable_within(budget))
            while rid in self._asks:
                left = deadline - self.loop.time()
                if left <= 0 or not self.comm.wait_readable(left):
                    self._lend_after_read = True  # slow: the loop waits for it, watching the peer
                    return False
                self._read_and_settle()
            return True
        except CommClosedError as e:
            self._fail_all(e)
            return True
        finally:
            with self._lock:
                self._owner_reading = False
                if self._lend_after_read:
                    self._lend_after_read = False
                    self._lend_locked()

    def _read_and_settle(self) -> None:
        """Read what came and settle the asks it answers. Interrupted in between (Ctrl-C,
        which lands on the main thread wherever it is), bytes read may be lost, and the
        stream's place with them: the connection is closed, and every ask on it fails
        as on a lost connection, rather than a later read misreading the stream."""
        try:
            for msg in self.comm.read_messages(self._call_on_loop):
                self._on_message(msg)
        except CommClosedError:
            raise
        except BaseException:
            error = CommClosedError(f"connection to {self.comm.peer_address} closed: a read of its "
                                    "replies was interrupted")
            self._call_on_loop(self.comm.close, error)
            self._fail_all(error)
            raise

    def release(self) -> None:
        """The owner thread is done with this channel (it is ending): the loop reads
        what is still to come, then closes it."""
        with self._lock:
            self._owner_gone = True
            if self._asks:
                self._lend_locked()
                return
        self._call_on_loop(self.comm.close)

    # --- any thread ---------------------------------------------------------------------
    def lend(self) -> None:
        """Have the loop read the replies still to come (someone other than the owner,
        or not in a wait, needs one)."""
        with self._lock:
            self._lend_locked()

    def _lend_locked(self) -> None:
        if self._owner_reading:
            self._lend_after_read = True
        elif not self._loop_reads and self._asks:
            self._loop_reads = True
            self._call_on_loop(self._start_loop_reading)

    def _call_on_loop(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            self._post(fn, *args)
        except RuntimeError:  # the loop is closed, and the connection with it
            pass

    def _on_message(self, msg: Any) -> None:
        if type(msg) is not list or len(msg) != 4:
            logger.warning("ignoring a malformed message on a thread channel from %s", self.comm.peer_address)
            return
        _, op, rid, fields = msg
        if op != REPLY:
            if rid:  # (a tell, a ping say, is dropped quietly: nothing waits for it)
                logger.warning("ignoring an ask (%r) on a thread channel from %s", op, self.comm.peer_address)
            return
        with self._lock:
            settle = self._asks.pop(rid, None)
        if settle is not None:
            settle(*reply_outcome(fields))

    def _fail_all(self, exc: BaseException) -> None:
        with self._lock:
            asks, self._asks = self._asks, {}
        for settle in asks.values():
            settle(False, exc)

    # --- the loop -----------------------------------------------------------------------
    def _flush(self) -> None:
        with self._lock:
            batch, self._outbox = self._outbox, []
            self._flush_posted = False
        for msg in batch:
            if self.comm.closed:
                self._fail_one(msg[2], CommClosedError(f"connection to {self.comm.peer_address} closed"))
            else:
                self.comm.send(msg)

    def _fail_one(self, rid: int, exc: BaseException) -> None:
        with self._lock:
            settle = self._asks.pop(rid, None)
        if settle is not None:
            settle(False, exc)

    def _start_loop_reading(self) -> None:
        self.comm.take_reading_back()
        self._maybe_take_back()  # (everything may have been answered meanwhile)

    def _on_loop_messages(self, messages: list, comm: Any) -> None:
        for msg in messages:
            self._on_message(msg)
        if not self._asks:
            # Not from inside the socket's read handler, which may read on after this.
            self.loop.call_soon(self._maybe_take_back)

    def _maybe_take_back(self) -> None:
        """Every ask answered: the owner reads again (or, gone, the channel closes)."""
        with self._lock:
            if not self._loop_reads or self._asks or self.comm.closed:
                return
            if not self._owner_gone:
                self._loop_reads = False
                self.comm.lend_reading()
                return
        self.comm.close()  # (outside the lock: closing fails asks, which takes it)

    def on_closed(self, exc: BaseException | None) -> None:
        """The connection closed: every ask still out fails, as on any connection."""
        self._fail_all(CommClosedError(
            f"connection to {self.comm.peer_address} closed before the reply arrived"
            + (f" ({exc})" if exc else "")))

    def __repr__(self) -> str:
        return f"<ThreadChannel to {self.comm.peer_address} {len(self._asks)} asks>"
