"""Hosting user actors on a worker.

``client.submit(Counter, actor=True)`` reaches a worker as a task whose spec says it
is an actor. :class:`ActorBuilds` runs the constructor on the actor's own lane and
then registers a :class:`UserActor` — a core actor with id ``actor-<key>`` on the
worker's host — and stores an (unbound) :class:`~actorrt.client.actor_handle.Actor`
handle under the key, so ``future.result()`` returns a handle.

Each user actor has its own execution lane (:class:`Lane`): one dedicated thread, or
up to ``max_concurrency`` threads. Sync methods never run on the worker's task pool,
so a slow actor never blocks another, a task, or an actor it calls on the same worker
(two actors calling each other on one worker do not deadlock — dask/distributed#4224).
``async def`` methods run on the worker's event loop and may interleave at ``await``.

Ordering: calls start in the order they arrive (one caller's calls arrive in the
order sent). An async call starts once every earlier sync call has finished, so it
sees their effects; later calls do not wait for it.
"""
from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import queue
import threading
from collections import deque
from typing import TYPE_CHECKING, Any

from .. import runtime
from ..core import Actor, Pickled, Reply, own_task
from ..core.checks import describe
from ..core.errors import BadMessageError
from .lane_reads import LaneReads, lane_reads_enabled
from .pool import Completions, Job, run_job
from .task import ActorCall, TaskRun

if TYPE_CHECKING:
    from .actor import Worker

logger = logging.getLogger("actorrt.worker")

SYNC, ASYNC, ATTRIBUTE = 0, 1, 2


def actor_id(key: str) -> str:
    """The id of the user actor for ``key`` on its worker's host (the same after a restart)."""
    return "actor-" + key


def public_methods(cls: type) -> frozenset[str]:
    """The names a handle may call: public callables of the class."""
    return frozenset(n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n, None)))


def public_attributes(instance: Any) -> frozenset[str]:
    """Public non-method attributes of ``instance`` now: instance variables, properties."""
    names = {n for n in getattr(instance, "__dict__", {}) if not n.startswith("_")}
    cls = type(instance)
    names |= {n for n in dir(cls) if not n.startswith("_") and not callable(getattr(cls, n, None))}
    return frozenset(names)


# What the scheduler is told a handle weighs (never measured: probing a handle's
# attributes would ask the actor).
HANDLE_NBYTES = 256


class Lane:
    """One actor's threads: runs its sync calls in arrival order, at most ``max_concurrency``
    at once. Completions go back to the loop in bursts (one wake-up for many)."""

    #: Put in the queue to make a thread waiting on it alone look again at how it waits
    #: (it now has connections to read: lane_reads.py); no job.
    ROUSE: Any = object()

    def __init__(self, max_concurrency: int, name: str, key: str) -> None:
        self.loop = asyncio.get_running_loop()
        self.max_concurrency = max_concurrency
        self.name = name
        self.key = key
        self.closed = False
        self._work: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._outstanding = 0            # submitted, not yet handed back (loop side)
        self._completions = Completions(self.loop, self._on_done)
        # Set once the actor is up, if its thread reads its callers' connections itself.
        self.reads: LaneReads | None = None

    def submit(self, job: Job) -> None:
        """Loop side: queue ``job``; ``job.done(job)`` runs on the loop afterwards.
        Once closed, nothing: as the pool's, a thread made now would never stop."""
        if self.closed:
            return
        self._outstanding += 1
        if self._outstanding > len(self._threads) and len(self._threads) < self.max_concurrency:
            t = threading.Thread(target=self._main, name=f"{self.name}-{len(self._threads)}", daemon=True)
            self._threads.append(t)
            t.start()
        self._work.put(job)
        if self.reads is not None:
            self.reads.wake()

    def rouse(self) -> None:
        """Loop side: see ``ROUSE``."""
        self._work.put(self.ROUSE)

    def has_work(self) -> bool:
        """Lane side: whether jobs wait in the lane's queue."""
        return not self._work.empty()

    def only_call(self) -> bool:
        """Whether the call a lane thread is running is the only one submitted and not yet
        handed back: none waits behind it, and none finished is still on its way back
        (read from a lane thread, the loop's count may be a call behind: a hint)."""
        return self._outstanding == 1

    def take_back(self) -> None:
        """Loop side: hand back now the calls threads finished, woken for or not (a
        settled call does not wake the loop: the next message to the actor takes it)."""
        self._completions.take_back()

    def close(self) -> None:
        """Threads stop after their current call; calls not started are dropped."""
        self.closed = True
        for _ in self._threads:
            self._work.put(None)
        if self.reads is not None:
            self.reads.close()

    def _on_done(self, jobs: list[Job]) -> None:
        self._outstanding -= len(jobs)
        for job in jobs:
            job.done(job)

    def _main(self) -> None:
        runtime.serve_actor(self.key, self.max_concurrency)
        try:
            self._serve()
        finally:
            if self.reads is not None:
                self.reads.exited()

    def _serve(self) -> None:
        while True:
            reads = self.reads
            job = self._work.get() if reads is None else reads.next_job(self._work)
            if job is self.ROUSE:
                continue
            if job is None or self.closed:
                if job is None:
                    return
                continue
            # The job's context makes get_worker()/get_client() work inside methods.
            if reads is None:
                run_job(job)
            else:
                reads.running(True)
                run_job(job)
                reads.running(False)
            # A call whose answer has left needs the loop only for bookkeeping, which
            # the actor's next message takes care of first (UserActor.before_dispatch):
            # one wake-up of the loop less per call. Unless calls wait for it on the
            # loop, as they may have started to since the call looked (so: again).
            settled = job.settled
            if not self._completions.put(job, wake=not settled):
                return  # loop closed: the worker is gone
            if settled and job.context.waits_for_hand_back() and not self._completions.wake():
                return
            job = None  # (as TaskPool's threads: the last call's Futures are not kept alive here)

    def __repr__(self) -> str:
        return f"<Lane {self.name} {len(self._threads)}/{self.max_concurrency} threads>"


class UserActor(Actor):
    """A user's object living on this worker, served one call per message."""

    answers_from_threads = True  # a sync method's answer may leave from its lane (_run_sync)

    def __init__(self, worker: "Worker", key: str, instance: Any, lane: Lane, label: str) -> None:
        self.worker = worker
        self.key = key
        self.instance = instance
        self.lane = lane
        self.label = label
        self.methods = public_methods(type(instance))
        self._kinds: dict[str, int] = {}
        self._sync_running = 0
        self.calls = 0                     # calls and reads received (the dashboard's rate)
        self.last_error: str | None = None  # the last call's exception, as "Type: message"
        self._blocked: deque[tuple[int, str, Any, Reply, str | None]] = deque()  # behind an async call
        if lane.max_concurrency == 1 and lane_reads_enabled() and not _has_async_methods(type(instance)):
            lane.reads = LaneReads(self, lane)
        # A call answered from its lane comes back to the loop with the actor's next
        # message at the latest (Lane._main), and must before that message is handled.
        self.before_dispatch = lane.take_back

    def waits_for_hand_back(self) -> bool:
        """Whether calls wait on the loop for running ones to be handed back (calls
        queued behind an async call, which starts once every earlier sync call is
        done). Read from lane threads."""
        return bool(self._blocked)

    def on_stop(self) -> None:
        self.lane.close()
        self.instance = None  # its state is freed with it
        self._blocked.clear()  # their replies fail with ActorDeadError (tracked by the host)
        if self.worker.user_actors.get(self.key) is self:
            del self.worker.user_actors[self.key]

    # --- messages ---------------------------------------------------------------------
    def handle_call(self, method: str, reply: Reply, args: Pickled | None = None,
                    holder: str | None = None, origin: Any = None) -> None:
        self.calls += 1
        kind = self._kinds.get(method)
        if kind is None:
            if method not in self.methods:
                raise AttributeError(f"actor {self.label} has no method {method!r} "
                                     f"(methods: {', '.join(sorted(self.methods)) or 'none'})")
            fn = getattr(self.instance, method)
            kind = self._kinds[method] = ASYNC if inspect.iscoroutinefunction(fn) else SYNC
        self._submit(kind, method, args, reply, holder)
        reads = self.lane.reads
        if reads is not None and origin is not None and self.lane.only_call():
            # A caller thread's own connection, and the lane idle but for this call (not
            # in the middle of a pipeline): its next call may skip the loop.
            reads.offer(origin)

    def handle_getattr(self, name: str, reply: Reply, holder: str | None = None) -> None:
        if name.startswith("_"):
            raise AttributeError(f"actor {self.label}: private attribute {name!r} is not readable")
        self.calls += 1
        self._submit(ATTRIBUTE, name, None, reply, holder)

    def handle_info(self) -> dict:
        return {"key": self.key, "class": self.label, "methods": sorted(self.methods),
                "max_concurrency": self.lane.max_concurrency, "running": self._sync_running,
                "waiting": len(self._blocked), "calls": self.calls_received(), "last_error": self.last_error}

    def calls_received(self) -> int:
        """Calls and reads received, by the loop or straight by the lane."""
        reads = self.lane.reads
        return self.calls + (reads.calls if reads is not None else 0)

    # --- calls the lane read off its callers' connections (lane_reads.py) ----------------
    def runs_on_lane(self, method: str) -> bool:
        """From the lane's thread: whether a call of ``method`` may run straight there
        (a sync method the loop has seen called, nothing waiting behind an async call)."""
        return self._kinds.get(method) == SYNC and not self._blocked

    def run_direct(self, method: str, args: Pickled | None, reply: Reply,
                   holder: str | None) -> tuple[Pickled | None, list, list]:
        """On the lane's thread, which read the call itself: run it as any sync call."""
        return self._run_sync(SYNC, method, args, reply, holder, direct=True)

    def finish_direct(self, reply: Reply, holder: str | None, job: Job) -> None:
        """Loop side: answer a call the lane read and ran, but could not answer itself."""
        self._answer(reply, holder, job)
        self.host.flush_pending()

    # --- ordering ---------------------------------------------------------------------------
    def _submit(self, kind: int, name: str, args: Any, reply: Reply, holder: str | None) -> None:
        if self._blocked or (kind == ASYNC and self._sync_running):
            self._blocked.append((kind, name, args, reply, holder))
        else:
            self._start(kind, name, args, reply, holder)

    def _start(self, kind: int, name: str, args: Any, reply: Reply, holder: str | None) -> None:
        if kind == ASYNC:
            own_task(self, self._run_async(name, args, reply, holder))
            return
        self._sync_running += 1
        self.lane.submit(Job(functools.partial(self._run_sync, kind, name, args, reply, holder),
                             functools.partial(self._sync_done, reply, holder), context=self))

    def _sync_done(self, reply: Reply, holder: str | None, job: Job) -> None:
        self._sync_running -= 1
        self._answer(reply, holder, job)
        self.host.flush_pending()  # (the caller waits: no turn of the loop in between)
        while self._blocked:
            kind = self._blocked[0][0]
            if kind == ASYNC and self._sync_running:
                break
            self._start(*self._blocked.popleft())

    def _answer(self, reply: Reply, holder: str | None, job: Job) -> None:
        if job.error is not None:
            self.last_error = _error_text(job.error)
            reply.fail(job.error)
            return
        blob, futures, claims = job.result
        if claims or (futures and holder):
            own_task(self, self._answer_once_keys_are_in(reply, blob, holder, futures, claims))
        else:
            reply.ok(blob)

    # --- running ------------------------------------------------------------------------------
    def _run_sync(self, kind: int, name: str, args: Pickled | None, reply: Reply,
                  holder: str | None, direct: bool = False) -> tuple[Pickled | None, list, list]:
        """On a lane thread: the method's result, pickled here rather than on the loop,
        the Futures inside it (kept alive until their keys pass to the caller), and the
        keys the arguments' Futures claimed (the answer waits for the claims).

        A plain answer to a call with none queued behind it leaves from this thread
        (``Reply.ok_from_thread``): its caller is likely waiting for it, and waking the
        loop first to send it costs a thread hand-off (client->actor median 175-201 µs
        against 184-219 µs in three alternating runs of benchmarks/bench_actors.py; 4.8-5.2x
        dask's speed against 4.3-4.7x). The loop's bookkeeping (``_sync_done``)
        follows, off the caller's path, and without waking the loop for it: the call
        is *settled* (Job.settled), taken back with the actor's next message
        (``before_dispatch``), or at once if calls wait on the loop for it. With other
        calls on their way through the lane (a caller pipelining), the answers go back
        from the loop in bursts: one write for many, not one each.
        A method that handed the loop anything to do (a ``put_nowait``, a call it does
        not wait for, an event logged: ``runtime.post``) is answered from the loop too,
        after it: what the method sent leaves before its answer, as before."""
        claims: list = []
        posts = runtime.posts_made()
        if kind == ATTRIBUTE:
            value = _read_attribute(self.instance, name, self.label)
        else:
            fn = getattr(self.instance, name)
            # Which thread runs which call, for the profiler's sampler (worker/profiler.py).
            running, ident = self.worker.running_tasks, threading.get_ident()
            running.enter(ident, ActorCall(self.key, f"{self.label}.{name}"))
            try:
                if args is None:
                    value = fn()
                else:
                    with runtime.collecting_claims(claims):
                        a, kw = _call_args(args, self.label, name)
                    value = fn(*a, **kw)
            finally:
                running.leave(ident)
        blob, futures = self._pack(value, name)
        if (not claims and not (futures and holder) and runtime.posts_made() == posts
                and (direct or self.lane.only_call())):
            # (If it cannot, the loop answers: _sync_done, or finish_direct for a call
            # the lane read itself.)
            if reply.ok_from_thread(blob) and not self.waits_for_hand_back():
                runtime.current_job().settled = True
        return blob, futures, claims

    def _pack(self, value: Any, name: str) -> tuple[Pickled | None, list]:
        if value is None:
            return None, []
        futures: list = []  # the Futures inside, wherever they hide, as pickling meets them
        with runtime.collecting_futures(futures):
            blob = Pickled.dumps(value, what=f"result of {self.label}.{name}()")
        return blob, futures

    # --- keys that change hands with a call ----------------------------------------------
    # Futures travel both ways in a call: in its arguments (unpickled here, they claim
    # their keys for this worker's client) and in its result (the caller's client will
    # hold them). Either way a claim goes from this worker to the scheduler while the
    # other side's release of the same key goes on another connection: the caller drops
    # the copies it sent once answered, and drops those it got when it likes. Leaving
    # first is not arriving first, so the answer waits for the scheduler's receipt of
    # each claim: answered earlier, a busy connection could let the release arrive first
    # and the key be forgotten (or a late claim keep it for ever).

    async def _answer_once_keys_are_in(self, reply: Reply, blob: Pickled | None, holder: str | None,
                                       futures: list, claims: list) -> None:
        """Sync methods' answer, once the keys are in (``futures``, this actor's own, go
        when this returns: after the claim on the caller's behalf)."""
        await self._keys_in(holder, futures, claims)
        reply.ok(blob)
        self.host.flush_pending()

    async def _keys_in(self, holder: str | None, futures: list, claims: list) -> None:
        """The caller's client (``holder``) holds the keys of the Futures in the result,
        and this worker's client those its arguments' Futures claimed."""
        asks = []
        if futures and holder:
            for client in {id(f.client): f.client for f in futures}.values():
                if client.loop is self.host.loop:
                    client.table.flush()  # a submit made by the method must reach the scheduler first
            asks.append((holder, [f.key for f in futures]))
        if claims:
            client = self.worker.client()
            keys = [key for table, key in claims if table is client.table]
            if keys:  # (a Future bound to some other client is that client's to claim)
                asks.append((client.id, keys))
        # Both asks at once: one round trip. (Wanting a key twice changes nothing: the
        # reply is the receipt.)
        replies = await asyncio.gather(
            *(self.host.ask(self.worker.scheduler, "want_keys", client=who, keys=keys) for who, keys in asks),
            return_exceptions=True)
        for e in replies:
            if isinstance(e, BaseException):  # the scheduler is out of reach: answer all the same
                logger.debug("could not confirm the claims of a call to %s: %s", self.label, e)

    async def _run_async(self, name: str, args: Pickled | None, reply: Reply,
                         holder: str | None = None) -> None:
        try:
            a: Any = ()
            kw: dict = {}
            claims: list = []
            if args is not None:
                client = self.worker.client()
                with runtime.binding(client), runtime.collecting_claims(claims):  # handles bind here
                    a, kw = _call_args(args, self.label, name)
                client.table.flush()  # Futures in them: want their keys now
            value = await getattr(self.instance, name)(*a, **kw)
            blob, futures = self._pack(value, name)
            if claims or (futures and holder):
                await self._keys_in(holder, futures, claims)
            reply.ok(blob)
        except Exception as e:
            self.last_error = _error_text(e)
            reply.fail(e)

    def __repr__(self) -> str:
        return f"<UserActor {self.label} on {getattr(self, 'host', None) and self.host.address}>"


def _has_async_methods(cls: type) -> bool:
    return any(inspect.iscoroutinefunction(getattr(cls, name, None)) for name in public_methods(cls))


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:500]


def _call_args(args: Pickled, label: str, method: str) -> tuple[Any, dict]:
    """The ``(args, kwargs)`` a handle pickled (a peer may have pickled anything)."""
    payload = args.loads()
    if not (type(payload) in (tuple, list) and len(payload) == 2
            and type(payload[0]) in (tuple, list) and type(payload[1]) is dict):
        raise BadMessageError(f"UserActor.call: field 'args' of {label}.{method}() must hold "
                              f"(args, kwargs), got {describe(payload)}")
    return payload[0], payload[1]


def _read_attribute(instance: Any, name: str, label: str) -> Any:
    try:
        return getattr(instance, name)
    except AttributeError:
        methods = sorted(public_methods(type(instance)))
        raise AttributeError(f"actor {label} has no attribute {name!r} "
                             f"(methods: {', '.join(methods) or 'none'})") from None


class ActorBuilds:
    """The constructors of user actors being built on this worker, by the run's job.

    A constructor runs on its actor's own lane, like the methods after it will
    (thread-locals, ``get_worker()`` inside ``__init__``); the lane goes to the actor.
    """

    def __init__(self, worker: "Worker") -> None:
        self.worker = worker
        self._lanes: dict[int, Lane] = {}

    def start(self, run: TaskRun, name: str, options: dict) -> None:
        n = int(options.get("max_concurrency", 1) or 1)
        lane = self._lanes[run.job] = Lane(n, f"actorrt-actor-{name}", run.key)
        lane.submit(Job(run, functools.partial(self._built, name), context=run))

    def abandon(self, job: int) -> None:
        """Nobody wants this actor any more (released or placed again meanwhile)."""
        lane = self._lanes.pop(job, None)
        if lane is not None:
            lane.close()

    def close(self) -> None:
        for lane in self._lanes.values():
            lane.close()
        self._lanes.clear()

    def _built(self, name: str, job: Job) -> None:
        run: TaskRun = job.context
        lane = self._lanes.pop(run.job, None)
        worker = self.worker
        if lane is None or not worker.state.is_running(run.key, run.job):
            if lane is not None:
                lane.close()
            return  # abandoned: nobody wants this actor any more
        if job.error is not None:
            lane.close()
            out = worker.state.stimulus_execute_erred(run.key, run.job, job.error)
        else:
            handle = host_actor(worker, run.key, name, job.result, lane)
            out = worker.state.stimulus_executed(run.key, run.job, handle, HANDLE_NBYTES, "Actor", None)
        worker.carry_out(out)


def host_actor(worker: "Worker", key: str, label: str, instance: Any, lane: Lane) -> Any:
    """Register ``instance`` as a user actor on ``worker``'s host; return its unbound handle."""
    stop_user_actor(worker, key)
    ua = UserActor(worker, key, instance, lane, label)
    ref = worker.host.spawn(ua, actor_id(key))
    worker.user_actors[key] = ua
    return runtime.make_actor_handle(key, type(instance).__name__, ref, ua.methods, public_attributes(instance))


def stop_user_actor(worker: "Worker", key: str) -> None:
    """Stop the actor for ``key`` if this worker hosts it (its key was freed)."""
    ua = worker.user_actors.pop(key, None)
    if ua is not None:
        worker.host.stop_actor(ua.id)


__all__ = ["ActorBuilds", "Lane", "UserActor", "actor_id", "host_actor", "stop_user_actor"]
