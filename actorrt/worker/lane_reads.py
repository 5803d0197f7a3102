"""A user actor's lane reads its callers' own connections itself.

A thread that calls one actor again and again (a task's ``counter.increment().result()``
in a loop) has a connection of its own to the actor's host (core/thread_channel.py), and
reads the answers off it itself. On the actor's side, each call on it still woke two
threads: the worker's loop, which read the call and handed it to the lane, and the
lane's thread, which ran it and wrote the answer. On a VM a cross-thread wake-up costs
tens of microseconds, a quarter of the whole call.

Here the lane's thread reads such a connection itself while it has nothing else to do,
and runs the call it finds there, as the caller's side does for the answer: one
wake-up per call on each side, and no Python of the loop's in between.

Who reads a connection is decided under :class:`LaneReads`'s lock:

* **the loop** lends a caller thread's connection (``"thread"`` channel) to the lane
  of the actor a call on it went to (:meth:`LaneReads.offer`), after the read that
  brought the call (the rest of that read is the loop's);
* **the lane's thread** then waits for its work queue *and* those sockets together
  (``poll`` on an eventfd the queue signals, and the sockets; the eventfd exists only
  while the lane holds a connection), polling a while before it sleeps, as a caller
  waiting for its answer does (core/spin.py). A read holding exactly one plain sync call
  to its actor (the sequential caller's case) runs there; anything else (another actor,
  an ``async`` method, an attribute read, a pipelined batch, a peer's garbage) goes
  back to the loop with the reading, untouched and in order (:meth:`LaneReads.give_back`);
* **the loop** takes every connection back when the lane has run one call for longer
  than ``STUCK_AFTER`` (a caller's other asks must not wait behind a slow method: a
  method that blocks until the same thread's next ask arrives would otherwise never
  see it), when none was used for ``IDLE_RETURN``, or when the actor stops. One timer
  per loop watches every lane that holds any (:class:`LaneWatch`).

The answer is written from the lane as before (``Reply.ok_from_thread``): only when
nothing else has to go first, else the loop sends it (``UserActor.finish_direct``).
Only lanes of one thread whose class has no ``async`` method read for themselves:
their calls never interleave with the loop's. ``ACTORRT_LANE_READS=0`` turns it off.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import queue
import select
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from .. import runtime
from ..core import Pickled
from ..core.actor import track_reply
from ..core.env import env_switch
from ..core.errors import CommClosedError
from ..core.spin import SpinPolicy, default_budget, poll_for
from ..core.tcp import TCPComm
from .pool import Job, run_job

if TYPE_CHECKING:
    from .user_actor import Lane, UserActor

logger = logging.getLogger("actorrt.worker")

#: A lane busy with one call for this long hands the connections it reads back to the
#: loop (s): another ask from the same caller thread then waits at most about this.
STUCK_AFTER = 0.05
#: A lent connection none of whose calls came for this long goes back to the loop (s),
#: so an idle actor costs its loop no watch.
IDLE_RETURN = 2.0
#: How often the loop's watch looks (s).
WATCH_EVERY = 0.05

_CALL_FIELDS = frozenset({"method", "args", "holder"})


def lane_reads_enabled() -> bool:
    """Whether lanes may read their callers' connections (``ACTORRT_LANE_READS``; Linux
    only: the lane waits on an eventfd). A malformed switch is refused everywhere."""
    return env_switch("ACTORRT_LANE_READS", True) and hasattr(os, "eventfd")


class LaneReads:
    """One lane's borrowed connections (see the module docstring). Loop side:
    :meth:`offer`, :meth:`give_back`, :meth:`reclaim`, :meth:`close`. Lane side:
    :meth:`next_job`, :meth:`running`, :meth:`exited`."""

    def __init__(self, actor: "UserActor", lane: "Lane") -> None:
        self.actor = actor
        self.lane = lane
        self.loop = lane.loop
        self._lock = threading.Lock()
        self._comms: dict[int, TCPComm] = {}     # lent to the lane, by file descriptor
        # An eventfd wakes the lane's thread in poll; it exists only while the lane
        # holds connections (made by the loop as it lends one, closed by the lane's
        # thread once it holds none): a worker with a thousand actors does not spend
        # a thousand file descriptors on them.
        self._wake_fd = -1
        self._polling = False                    # the lane's thread waits in poll
        self._busy_since: float | None = None   # the lane runs a call while it holds some
        self._last_used = time.monotonic()
        self._closed = False
        self._handing_back = False               # the loop dispatches what the lane gave back
        self.calls = 0                           # calls run straight off a connection
        self._poller = select.poll()             # (the lane's thread only)
        self._watched: set[int] = set()
        self._spin = SpinPolicy(default_budget())  # (the lane's thread only: core/spin.py)

    # --- loop side ----------------------------------------------------------------------
    def offer(self, comm: Any) -> None:
        """A call to this lane's actor came on ``comm``: lend it to the lane if it is a
        caller thread's own connection nobody else reads. Lent on the loop's next turn,
        once the read in progress is over."""
        if self._closed or self._handing_back or comm.lent_to is not None or comm.channel != "thread" \
                or not isinstance(comm, TCPComm) or not comm.threads_may_send:
            return
        comm.lent_to = self
        self.loop.call_soon(self._lend, comm)

    def _lend(self, comm: TCPComm) -> None:
        if self._closed or comm.closed or comm.lent_to is not self or self.actor.host.backlogged(comm):
            # (Messages read before still wait their turn on the loop: what the lane
            # would read now must not pass them. The next call lends it.) The loop
            # reads it meanwhile: offered while the lane gave it back, it had stopped.
            self._return(comm)
            return
        with self._lock:
            fresh = self._wake_fd < 0
            if fresh:
                try:
                    self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
                except OSError as e:  # (out of file descriptors: the loop reads it, as before)
                    logger.debug("actor %s: its lane reads no connection: %s", self.actor.label, e)
                    self._return(comm)
                    return
            comm.lend_reading()
            self._comms[comm.fileno()] = comm
            self._last_used = time.monotonic()
            polling = self._polling
        if fresh:
            self.lane.rouse()  # (its thread may wait on its queue alone: poll from now on)
        elif polling:
            self._wake()  # (to watch the new socket too)
        LaneWatch.of(self.loop).add(self)

    def give_back(self, comm: TCPComm, messages: list) -> None:
        """Posted by the lane: the reading of ``comm`` is the loop's again, starting
        with ``messages``, read off it and not handled."""
        if comm.lent_to is self:
            comm.lent_to = None
        if messages and not comm.closed and comm.on_messages is not None:
            # Calls that came several at once (a caller pipelining) lend nothing: the
            # lane would only hand the next batch back again. The next call that finds
            # the lane idle lends the connection anew (UserActor.handle_call).
            self._handing_back = len(messages) > 1
            try:
                comm.on_messages(messages, comm)
            finally:
                self._handing_back = False
        if not comm.closed and comm.lent_to is None:
            comm.take_reading_back()

    def reclaim(self, now: float) -> bool:
        """The watch's look: take every connection back if the lane is stuck in a call
        or has not used them lately. Whether it still holds any."""
        with self._lock:
            busy = self._busy_since
            if not self._comms:
                return False
            if not ((busy is not None and now - busy >= STUCK_AFTER)
                    or (busy is None and now - self._last_used >= IDLE_RETURN)):
                return True
        self._take_all_back()
        return False

    def close(self) -> None:
        """The lane closes (its actor stops, the worker closes): the loop reads again."""
        self._closed = True
        self._take_all_back()

    def _take_all_back(self) -> None:
        """Loop side: every connection lent to the lane is the loop's to read again; the
        lane's thread, woken, then closes its eventfd and waits on its queue alone.
        (A call the lane read just before runs on: what comes after it is the loop's.)"""
        with self._lock:
            comms, self._comms = list(self._comms.values()), {}
        for comm in comms:
            self._return(comm)
        self._wake()

    def _return(self, comm: TCPComm) -> None:
        """Loop side: the loop reads ``comm`` again, unless someone else was lent it since."""
        if comm.lent_to is self:
            comm.lent_to = None
            if not comm.closed:
                comm.take_reading_back()

    def wake(self) -> None:
        """After a job was queued for the lane: wake its thread if it waits in poll."""
        if self._polling:
            self._wake()

    def _wake(self) -> None:
        with self._lock:  # (never a number the lane's thread closed and the kernel reused)
            if self._wake_fd >= 0:
                os.eventfd_write(self._wake_fd, 1)

    @property
    def holds(self) -> int:
        """How many connections the lane reads now."""
        return len(self._comms)

    @property
    def eventfd_open(self) -> bool:
        """Whether the lane's eventfd exists (while it holds connections, and until its
        thread next looks after they all went back)."""
        return self._wake_fd >= 0

    # --- lane side ------------------------------------------------------------------------
    def next_job(self, work: "queue.SimpleQueue[Any]") -> Any:
        """The lane's next job, running the calls its connections bring meanwhile
        (while it holds none, simply the next job)."""
        while True:
            try:
                return work.get_nowait()
            except queue.Empty:
                pass
            with self._lock:
                if not self._comms or self._closed:
                    self._drop_wake_fd()
                    idle = True
                else:
                    self._polling, idle = True, False
                    fds = set(self._comms) | {self._wake_fd}
            if idle:
                self._watch(set())
                return work.get()  # (a lend puts Lane.ROUSE in it)
            # (After saying so: a job queued from now on writes the eventfd.)
            if not work.empty():
                self._polling = False
                continue
            self._watch(fds)
            try:
                events = self._wait_for_events()
            finally:
                self._polling = False
            for fd, _ in events:
                if fd == self._wake_fd:
                    try:
                        os.eventfd_read(self._wake_fd)
                    except OSError:
                        pass
                else:
                    self._read_safely(fd)

    def _wait_for_events(self) -> list:
        """The lane's thread: poll its sockets and its eventfd, at first without
        sleeping (core/spin.py): a caller that calls again at once then wakes no one."""
        budget = self._spin.next_budget()
        if budget:
            events = poll_for(self._poller.poll, budget)
            self._spin.polled(bool(events))
            if events:
                return events
        return self._poller.poll()

    def running(self, job: bool) -> None:
        """The lane starts (True) or ends (False) a job off its queue: while it runs one,
        its connections are not read (the watch gives them back if that lasts)."""
        self._busy_since = time.monotonic() if job else None

    def exited(self) -> None:
        """The lane's thread stops: nothing waits on the eventfd any more."""
        self._closed = True
        with self._lock:
            self._drop_wake_fd()

    def _drop_wake_fd(self) -> None:
        """Lane's thread, lock held: close the eventfd (none is polled after this)."""
        fd, self._wake_fd = self._wake_fd, -1
        if fd >= 0:
            os.close(fd)

    def _watch(self, fds: set[int]) -> None:
        for fd in self._watched - fds:
            self._poller.unregister(fd)
        for fd in fds - self._watched:
            self._poller.register(fd, select.POLLIN)
        self._watched = fds

    def _read_safely(self, fd: int) -> None:
        try:
            self._read(fd)
        except Exception:  # (a bug here must not stop the lane: the loop reads this one again)
            logger.exception("actor %s: reading a caller's connection on its lane failed", self.actor.label)
            with self._lock:
                comm = self._comms.pop(fd, None)
            if comm is not None:
                self._tell_loop(self.give_back, comm, [])

    def _read(self, fd: int) -> None:
        with self._lock:
            comm = self._comms.get(fd)
            if comm is None or comm.closed:
                self._comms.pop(fd, None)
                return  # (taken back, or closed: the loop's now; poll is trimmed next time)
            try:
                messages = comm.read_messages(self._tell_loop)
            except CommClosedError:
                del self._comms[fd]  # (the loop was told, and closes it)
                return
            if not messages:
                return  # part of a message: the rest comes
            call = self._plain_call(messages)
            if call is None:
                del self._comms[fd]
                self._tell_loop(self.give_back, comm, messages)
                return
            self._busy_since = time.monotonic()
        try:
            self._run(comm, *call)
        finally:
            self._busy_since = None
            self._last_used = time.monotonic()

    def _tell_loop(self, fn: Any, *args: Any) -> None:
        try:
            runtime.post(self.loop, fn, *args)
        except RuntimeError:  # the loop is closed: so is the connection
            pass

    def _plain_call(self, messages: list) -> tuple[int, str, Pickled | None, str | None] | None:
        """``(request id, method, args, holder)`` if ``messages`` is one call this lane
        runs by itself: a known sync method of its actor, well formed, with nothing
        queued for the lane before it. Else None: the loop's, as any message."""
        if len(messages) != 1:
            return None
        msg = messages[0]
        if type(msg) is not list or len(msg) != 4:
            return None
        dest, op, rid, fields = msg
        actor = self.actor
        if dest != actor.id or op != "call" or type(rid) is not int or rid <= 0 \
                or type(fields) is not dict or not fields.keys() <= _CALL_FIELDS:
            return None
        method, args, holder = fields.get("method"), fields.get("args"), fields.get("holder")
        if type(method) is not str or not (args is None or type(args) is Pickled) \
                or not (holder is None or type(holder) is str):
            return None
        if not actor.runs_on_lane(method) or self._closed or self.lane.has_work():
            # (Calls the loop queued for the lane first, some perhaps handed back by it
            # from this very connection: this one runs after them.)
            return None
        return rid, method, args, holder

    def _run(self, comm: TCPComm, rid: int, method: str, args: Pickled | None, holder: str | None) -> None:
        actor = self.actor
        reply = actor.host.reply_to(comm, rid)
        track_reply(actor, reply)  # (stopping the actor fails it, as any call's)
        self.calls += 1
        job = Job(functools.partial(actor.run_direct, method, args, reply, holder), _no_done, context=actor)
        run_job(job)
        if job.error is not None or not reply.done:
            # The loop answers: an error, keys changing hands, or something queued first.
            self._tell_loop(actor.finish_direct, reply, holder, job)


def _no_done(job: Job) -> None:  # (a direct call is never handed back as a job)
    pass


class LaneWatch:
    """One timer per loop over the lanes that read connections (see ``reclaim``)."""

    _by_loop: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LaneWatch]" = weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lanes: set[LaneReads] = set()
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> "LaneWatch":
        watch = cls._by_loop.get(loop)
        if watch is None:
            watch = cls._by_loop[loop] = cls(loop)
        return watch

    def add(self, reads: LaneReads) -> None:
        self._lanes.add(reads)
        if self._timer is None:
            self._timer = self.loop.call_later(WATCH_EVERY, self._look)

    def _look(self) -> None:
        now = time.monotonic()
        self._lanes = {reads for reads in self._lanes if reads.reclaim(now)}
        self._timer = self.loop.call_later(WATCH_EVERY, self._look) if self._lanes else None


__all__ = ["LaneReads", "LaneWatch", "lane_reads_enabled"]
