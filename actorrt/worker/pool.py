"""The worker's thread pool: ``nthreads`` execution slots, threads on demand.

Slot accounting lives on the event loop (single-threaded, no locks). A task that
blocks waiting for other tasks can *secede*: it gives its slot back, so the pool
starts the next job on another thread, and *rejoin* takes a slot again before it
continues. Completions are handed back to the loop in bursts: one
``call_soon_threadsafe`` wakes the loop for however many jobs finished meanwhile.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import queue
import threading
from collections import deque
from typing import Any, Awaitable, Callable

from .. import runtime
from ..runtime import Waiter

logger = logging.getLogger(__name__)


class Job:
    """One call to run on the pool. ``done(job)`` is called on the loop afterwards.

    ``then(job)``, if given, is called on the job's thread once it ran, before it is
    handed back to the loop; what it returns (if anything) is called on that thread
    right after the hand-back. A task's report leaves from its thread this way
    (Worker._report_from_thread): decided before the loop sees the job, sent after.
    """

    __slots__ = ("fn", "done", "then", "result", "error", "holds_slot", "seceded", "context",
                 "lent", "gave_back", "settled")

    def __init__(self, fn: Callable[[], Any], done: Callable[["Job"], None], context: Any = None,
                 then: "Callable[[Job], Callable[[], None] | None] | None" = None) -> None:
        self.fn = fn
        self.done = done
        self.then = then
        self.result: Any = None
        self.error: BaseException | None = None
        self.holds_slot = False   # loop side: counts in ``running``
        self.seceded = False      # thread side: secede() called and not yet rejoined
        self.lent = False         # its slot is lent to the loop while it waits (TaskPool._lend)
        self.gave_back = False    # loop side: it gave its slot back once (so on_secede was told)
        # Thread side: its outcome already reached whoever waits for it (an actor's answer
        # left from its lane), so the loop's part of it may wait for the loop's next message.
        self.settled = False
        self.context = context


def run_job(job: Job) -> None:
    """Run ``job`` on this thread, keeping its outcome; never raises."""
    runtime.enter_job(job)
    try:
        job.result = job.fn()
    except BaseException as e:  # reported to whoever waits on the job, never kills the thread
        job.error = e
    finally:
        runtime.leave_job()


class _Loan(Waiter):
    """The waiter of a job that lent its slot (TaskPool._wait_lending). The loop
    delivers the outcome to it (``set``, on the loop: a reply, an armed actor reply),
    and the pool settles the loan in the same turn before the thread is woken."""

    __slots__ = ("_pool", "_job")

    def __init__(self, pool: "TaskPool", job: Job) -> None:
        super().__init__()
        self._pool, self._job = pool, job

    def set(self, result: Any, error: BaseException | None = None) -> None:
        self._pool._loan_answered(self._job, functools.partial(Waiter.set, self, result, error))


def _then(job: Job) -> Callable[[], None] | None:
    """Thread side: the job's follow-up, if it has one; never raises (as run_job)."""
    if job.then is None:
        return None
    try:
        return job.then(job)
    except Exception:
        logger.exception("follow-up of %r failed", job.context)
        return None


def _after(job: Job, after: Callable[[], None]) -> None:
    """Thread side: what the follow-up left for after the hand-back; never raises."""
    try:
        after()
    except Exception:
        logger.exception("follow-up of %r failed after its hand-back", job.context)


class Completions:
    """Hands finished jobs from threads back to the loop: one wake-up per burst.

    A thread finishing while a wake-up is already pending only appends, so a loop busy
    elsewhere collects many completions in one turn instead of one callback each.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, on_jobs: Callable[[list[Job]], None]) -> None:
        self._loop = loop
        self._on_jobs = on_jobs
        self._done: deque[Job] = deque()
        self._lock = threading.Lock()
        self._wakeup_pending = False

    def put(self, job: Job, wake: bool = True) -> bool:
        """Thread side. False once the loop is closed (the worker is gone). With
        ``wake`` False the loop is not woken for it yet: the thread has one more thing
        to do first (send its task's report), and calls :meth:`wake` after."""
        with self._lock:
            self._done.append(job)
            if self._wakeup_pending or not wake:
                return True
            self._wakeup_pending = True
        return self._wake()

    def wake(self) -> bool:
        """Thread side, after ``put(job, wake=False)``: wake the loop for what waits
        here, unless a wake-up is on its way or the loop took it all already."""
        with self._lock:
            if self._wakeup_pending or not self._done:
                return True
            self._wakeup_pending = True
        return self._wake()

    def _wake(self) -> bool:
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:
            return False
        return True

    def take_back(self) -> None:
        """Loop side: hand back at once what threads have put, woken for or not."""
        if self._done:  # (read unlocked: a job put before the caller's message is seen)
            self._drain()

    def _drain(self) -> None:
        """Loop side: hand back every job put so far (woken for it, or asked now)."""
        with self._lock:
            jobs = list(self._done)
            self._done.clear()
            self._wakeup_pending = False
        if jobs:
            self._on_jobs(jobs)


class TaskPool:
    """The worker's slots. Installed on its threads as :class:`actorrt.runtime.Slots`:
    the policy by which a task waiting for the loop gives its slot back."""

    def __init__(self, nthreads: int, name: str = "actorrt-worker") -> None:
        if nthreads < 1:
            raise ValueError(f"nthreads must be at least 1, got {nthreads}")
        self.nthreads = nthreads
        self.name = name
        self.loop = asyncio.get_running_loop()
        self.running = 0                 # slots in use (loop side)
        self.ready: deque[Job] = deque()  # waiting for a slot
        self._rejoiners: deque[Callable[[], None]] = deque()
        # Slots lent to the loop by waiting jobs, not yet taken into ``running`` (_lend).
        self._lent: deque[Job] = deque()
        self._lent_lock = threading.Lock()
        self._work: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._busy_threads = 0
        self._completions = Completions(self.loop, self._on_done)
        self.closed = False
        # Paused for memory (worker/monitor.py): queued jobs wait, running ones go on.
        self.paused = False
        # Called on the loop with a job that just gave its slot back (the worker tells
        # the scheduler, which stops counting the task against the worker's capacity).
        self.on_secede: Callable[[Job], None] | None = None
        # Called on the loop once a burst of finished jobs has been handed back (the
        # worker sends their reports then, in one message, rather than a turn later).
        self.on_burst_done: Callable[[], None] | None = None
        self.handing_back = False  # (loop side: within a burst's done callbacks)

    # loop side -------------------------------------------------------------
    def submit(self, job: Job) -> None:
        if self.closed:  # (as close() drops jobs not started: no thread is made for it)
            return
        self.ready.append(job)
        self._dispatch()

    def _dispatch(self) -> None:
        if self._lent:  # (read unlocked: a slot lent before this is seen)
            self._take_lent()
        if self.running >= self.nthreads and self._completions._done and (self.ready or self._rejoiners):
            self._completions.take_back()  # (a settled job is not woken for: _thread_main)
        while self._rejoiners and self.running < self.nthreads:
            self.running += 1
            self._rejoiners.popleft()()
        while self.ready and self.running < self.nthreads and not self.paused:
            job = self.ready.popleft()
            job.holds_slot = True
            self.running += 1
            if self._busy_threads >= len(self._threads):
                self._spawn_thread()
            self._busy_threads += 1
            self._work.put(job)

    def pause(self) -> None:
        """Start no more queued jobs (a job that gave its slot back may still take one:
        it is running already, and holds its memory whether it waits or runs)."""
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self._dispatch()

    def _spawn_thread(self) -> None:
        t = threading.Thread(target=self._thread_main, name=f"{self.name}-{len(self._threads)}",
                             daemon=True)
        self._threads.append(t)
        t.start()

    def _on_done(self, jobs: list[Job]) -> None:
        for job in jobs:
            self._busy_threads -= 1
            if job.holds_slot:
                self.running -= 1
        self._dispatch()
        self.handing_back = True
        try:
            for job in jobs:
                job.done(job)
        finally:
            self.handing_back = False
            if self.on_burst_done is not None:
                self.on_burst_done()

    def _on_secede(self, job: Job) -> None:
        if job.holds_slot:
            job.holds_slot = False
            job.gave_back = True
            self.running -= 1
            self._dispatch()
            if self.on_secede is not None:
                self.on_secede(job)

    def _take_lent(self) -> None:
        """Count the slots waiting jobs lent (:meth:`_lend`) as free, before any
        decision that depends on them: every one goes through :meth:`_dispatch`."""
        with self._lent_lock:
            jobs = list(self._lent)  # (a recalled loan leaves the deque: _recall)
            self._lent.clear()
            for job in jobs:
                job.lent = False
        for job in jobs:
            if job.holds_slot:
                job.holds_slot = False
                self.running -= 1

    def _on_rejoin(self, job: Job, wake: Callable[[], None]) -> None:
        if job.holds_slot:
            wake()
            return
        job.holds_slot = True
        self._rejoiners.append(wake)
        self._dispatch()

    def _slot_back_while(self, job: Job, fut: "asyncio.Future[Any]", waiter: Waiter) -> None:
        """Loop side of :meth:`block_on`, the work started: give the slot back meanwhile."""
        gave_back = job.holds_slot and not fut.done()
        if gave_back:
            self._on_secede(job)
        fut.add_done_callback(lambda f: self._end_block(job, f, waiter, gave_back))

    def _end_block(self, job: Job, fut: "asyncio.Future[Any]", waiter: Waiter, gave_back: bool) -> None:
        if not gave_back:
            waiter.set_from(fut)
            return
        # Take a slot again before the thread continues: at once if one is free,
        # else the thread waits its turn (before queued tasks) like a rejoin.
        job.holds_slot = True
        self._rejoiners.append(lambda: waiter.set_from(fut))
        self._dispatch()

    def hand_back_finished(self) -> None:
        """Loop side: take back now the jobs threads finished and have not yet been
        handed back for: a message is about to be handled whose sender may have
        learned of them from a report their thread sent (Job.then)."""
        self._completions.take_back()

    @property
    def idle(self) -> bool:
        return self.running == 0 and not self.ready

    def close(self) -> None:
        """Stop threads once they finish their current job; jobs not started, and any
        submitted later, are dropped (a thread made for one would never be told to stop)."""
        self.closed = True
        self.ready.clear()
        for _ in self._threads:
            self._work.put(None)

    def join(self, timeout: float = 5.0) -> None:
        for t in self._threads:
            t.join(timeout)

    # thread side -----------------------------------------------------------
    def _thread_main(self) -> None:
        runtime.install_slots(self)
        while True:
            job = self._work.get()
            if job is None:
                return
            run_job(job)
            after = _then(job)
            if not self._completions.put(job, wake=after is None):
                return  # loop closed: the worker is gone
            if after is not None:
                # The loop is woken once this is done: woken first, it would take the
                # interpreter lock from this thread (measured: 37 µs more per report).
                _after(job, after)
                # A job whose outcome already reached its asker is taken back with the
                # loop's next message (the worker's before_dispatch), unless work waits
                # for its slot: then the loop is woken as ever. (The loop, queueing work
                # with no slot free, looks for finished jobs itself: _dispatch.)
                if not (job.settled and not self.ready and not self._rejoiners) \
                        and not self._completions.wake():
                    return
            # Let go before waiting for the next job: its result and arguments (and its
            # report) would live on here after the worker freed them, until this thread
            # ran something else.
            job = after = None

    def secede(self) -> bool:
        """Called from a pool thread: give this job's slot back. Returns False outside a job."""
        job = runtime.current_job()
        # ``seceded`` is the thread's own view: ``holds_slot`` changes on the loop later,
        # so a second secede() before the loop ran must not count twice.
        if job is None or job.seceded:
            return False
        job.seceded = True
        runtime.post(self.loop, self._on_secede, job)
        return True

    def block_on(self, start: Callable[[], Awaitable[Any]],
                 undo: Callable[[Any], None] | None = None,
                 direct: runtime.Direct | None = None,
                 arm: Callable[[Waiter], bool] | None = None) -> Any:
        """From a pool thread: run the awaitable ``start()`` makes on the loop and wait.

        The job's thread slot is given back while it waits and taken again before it
        returns, as secede/rejoin would, but with one hand-off to the loop and one back
        instead of three: blocking calls inside tasks (``result()``, actor calls, locks,
        queues) cost little more than from a client. (``undo``, ``direct``, ``arm``: see
        runtime.block_on; an ask the thread sends itself is on its way before the loop
        is asked to give the slot back.) A job's later waits on such an ask, or on an
        armed outcome, only lend the slot (:meth:`_wait_lending`).
        """
        job = runtime.current_job()
        if job is None or job.seceded:  # not a task, or already seceded by hand
            return runtime.wait_on_loop(self.loop, start, undo=undo, direct=direct)
        if job.gave_back and (direct is not None or arm is not None):
            return self._wait_lending(job, start, undo, direct, arm)
        return runtime.wait_on_loop(self.loop, start, functools.partial(self._slot_back_while, job),
                                    undo, direct)

    def _wait_lending(self, job: Job, start: Callable[[], Awaitable[Any]],
                      undo: Callable[[Any], None] | None, direct: runtime.Direct | None,
                      arm: Callable[[Waiter], bool] | None) -> Any:
        """:meth:`block_on` for a job that gave its slot back once already, waiting for
        an ask it sends itself (``direct``) or for an outcome the loop delivers anyway
        (``arm``): neither needs the loop woken on the way out, so the slot is only
        lent to it (:meth:`_lend`), taken at the loop's next decision about slots.

        The first wait of a job always wakes the loop (on_secede): a scheduler that
        counts the job against this worker's slots must hear that it waits, or a task
        it would place here, which the wait may depend on, never comes. After that, no
        one but this pool counts the slot, and it takes the loan into account before
        it starts anything (_dispatch).

        The outcome is delivered on the loop, which settles the loan there and then
        (:class:`_Loan`): returned untaken, the thread goes on at once; taken, the
        thread waits its turn for a slot as a rejoin does, without a hand-off more
        than a slot given back the usual way."""
        loan = _Loan(self, job)
        self._lend(job)
        if arm is not None:
            if arm(loan):
                return loan.wait()
            self._settle_on_thread(job)  # (the outcome was here already)
            return None
        try:
            return runtime.wait_on_loop(self.loop, start, undo=undo, direct=direct, waiter=loan)
        except BaseException as e:
            if e is not loan.error:  # (the loop never delivered: the loan is still out)
                self._settle_on_thread(job)
            raise

    def _settle_on_thread(self, job: Job) -> None:
        """Thread side: take back a loan whose outcome the loop will not deliver."""
        if not self._recall(job):
            self._rejoin(job)  # the loop took the slot meanwhile: wait for one

    def _loan_answered(self, job: Job, wake: Callable[[], None]) -> None:
        """Loop side: the outcome a lending job waits for is here. Its slot, if still
        lent, is its own again; if the pool took it, the job waits for one first."""
        if self._recall(job):
            wake()
            return
        job.holds_slot = True
        self._rejoiners.append(wake)
        self._dispatch()

    def _lend(self, job: Job) -> None:
        with self._lent_lock:
            job.lent = True
            self._lent.append(job)
        # Someone waits for a slot already: the loop passes this one on now, as it would
        # a slot given back. (Read after the loan is noted: a waiter queued after this
        # read is queued by a _dispatch that finds the loan.)
        if self._rejoiners or self.ready:
            runtime.post(self.loop, self._dispatch)

    def _recall(self, job: Job) -> bool:
        """Take back a slot lent by :meth:`_lend`; False if the loop took it meanwhile."""
        with self._lent_lock:
            if not job.lent:
                return False
            job.lent = False
            self._lent.remove(job)
            return True

    def rejoin(self) -> None:
        """Called from a pool thread after :meth:`secede`: wait for a slot again."""
        job = runtime.current_job()
        if job is None or not job.seceded:
            return
        job.seceded = False
        self._rejoin(job)

    def _rejoin(self, job: Job) -> None:
        waiter = Waiter()
        runtime.post(self.loop, self._on_rejoin, job, lambda: waiter.set(None))
        waiter.wait()
