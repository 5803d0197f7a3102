"""The worker's statistical profiler: a thread that looks at the stacks of running tasks.

Every ``interval`` seconds it reads the current frame of each thread running a task
or a sync actor method (the pool's threads and actor lanes register themselves in
``running`` while they run one: worker/task.py, worker/user_actor.py) and counts the
stack, from the task's function (the actor's method) inwards, in a
:class:`~actorrt.diagnostics.profile.ProfileHistory` under the task's name.
``client.profile`` reads it through the worker's ``profile`` op.

It costs nothing while no task runs (nothing to look at) and one ``sys._current_frames``
per interval while some do; benchmarks/bench_profile.py measures what that costs a
workload, which decided the default interval (docs/profiling.md).
``ACTORRT_PROFILE_INTERVAL`` (seconds; ``0`` turns the sampler off) sets it for every
worker started afterwards, in this process and in worker processes it starts.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import math
import os
import sys
import threading
import time
from types import FrameType
from typing import Any

from ..core.errors import BadMessageError
from ..diagnostics.profile import MAX_DEPTH, Frame, ProfileHistory, frame_path, merge_into, new_tree, prune
from .task import call_task
from .user_actor import UserActor

logger = logging.getLogger("actorrt.worker")

# Where a sampled stack stops being the user's: the runtime's frame that called a task's
# function, or an actor's method.
RUNTIME_CODES = frozenset({call_task.__code__, UserActor._run_sync.__code__})
# A code whose frame can be suspended and resumed by another caller.
_RESUMABLE = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR
# Distinct paths kept for sharing at most (a tuple of a few frames each).
_MAX_SHARED_PATHS = 4096

#: Seconds between samples unless configured (see the module docstring for why).
DEFAULT_INTERVAL = 0.01
INTERVAL_ENV = "ACTORRT_PROFILE_INTERVAL"
#: Nodes in a ``profile`` reply at most, unless asked otherwise (the most sampled).
MAX_REPLY_NODES = 20_000
#: Trees merged between two turns of the worker's loop (each of at most a few thousand nodes).
MERGE_STEP = 8


def interval_from_environ(default: float = DEFAULT_INTERVAL) -> float:
    """The sampling interval ``ACTORRT_PROFILE_INTERVAL`` asks for (0: off)."""
    text = os.environ.get(INTERVAL_ENV, "").strip()
    if not text:
        return default
    return check_interval(text, f"${INTERVAL_ENV}")


def check_interval(value: Any, what: str = "profile_interval") -> float:
    """Seconds as a float, 0 for off; ValueError naming ``what`` otherwise."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number of seconds (0 turns profiling off), got {value!r}") from None
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(f"{what} must be a finite number of seconds >= 0, got {value!r}")
    if 0 < seconds < 0.001:
        raise ValueError(f"{what} must be at least 0.001 s (or 0 for off), got {value!r}: "
                         "sampling more often than that costs the tasks more than it tells")
    return seconds


class RunningThreads:
    """Which thread runs which task now (thread id -> a TaskRun or an ActorCall, with
    ``key`` and ``name``): set by the threads themselves as a task starts and ends.

    A sampler with nothing to look at sleeps in :meth:`wait_for_work` until a task
    starts, instead of waking every interval to find nothing (which cost an idle
    worker ~0.5% of a core at 10 ms: benchmarks/bench_profile.py). Starting a task
    costs a dict write and a flag read; only the first one after an idle spell wakes
    the sampler.
    """

    def __init__(self) -> None:
        self.items: dict[int, Any] = {}
        self._idle = False
        self._work = threading.Event()

    def enter(self, ident: int, run: Any) -> None:
        self.items[ident] = run
        if self._idle:  # (read after the write: see wait_for_work)
            self._work.set()

    def leave(self, ident: int) -> None:
        self.items.pop(ident, None)

    def wait_for_work(self, stopped: threading.Event) -> None:
        """Sampler side: return once some thread runs a task, or ``stopped`` is set
        (and :meth:`wake` called after).

        No wake-up can be lost: a task that wrote its entry before the check below is
        seen by it; one that writes after reads ``_idle`` as True, and its ``set``
        comes after the ``clear``. Likewise a stop set before the check is seen, and
        one set after it wakes after the ``clear``.
        """
        self._idle = True
        self._work.clear()
        if not self.items and not stopped.is_set():
            self._work.wait()
        self._idle = False

    def wake(self) -> None:
        self._work.set()


class Sampler:
    """Samples the threads in ``running`` every ``interval`` while some run tasks.

    Owns one daemon thread from :meth:`start` to :meth:`stop` (the worker stops it
    with itself); with ``interval == 0`` it starts none and records nothing.
    """

    def __init__(self, running: RunningThreads, interval: float = DEFAULT_INTERVAL,
                 history: ProfileHistory | None = None, name: str = "actorrt-profiler") -> None:
        self.running = running
        self.interval = check_interval(interval)
        self.history = history or ProfileHistory()
        self.name = name
        self.wakeups = 0  # (how often it woke to sample: nothing while no task runs)
        self.failed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Per thread, its innermost frame, line and path at the last sample (see sample).
        # Only the sampler's thread touches these; a frame held here lives at most one
        # interval longer, and none while no task runs.
        self._last: dict[int, tuple[FrameType, int, tuple[Frame, ...]]] = {}
        self._paths: dict[tuple[Frame, ...], tuple[Frame, ...]] = {}

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    def start(self) -> None:
        if not self.enabled or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.running.wake()  # (after the set: see RunningThreads.wait_for_work)
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _main(self) -> None:
        stopped, interval, running = self._stop, self.interval, self.running
        while True:
            if not running.items:
                self._last = {}  # (no frame of a finished task held while idle)
                running.wait_for_work(stopped)
            # Always a full interval before the next look, even when just woken: short
            # tasks with gaps between them must not wake the sampler once per task.
            if stopped.wait(interval):
                return
            self.wakeups += 1
            try:
                self.sample()
            except Exception:  # a bug here must not end the sampling, nor repeat in the log
                if not self.failed:
                    logger.exception("profiler: sampling failed; later failures are not logged")
                self.failed = True

    def sample(self) -> int:
        """Record the stack of every thread running a task now; how many were recorded.

        Cheap where threads wait: a worker running tasks that wait for other tasks
        (``gather`` inside a task) holds hundreds of threads, all running a task as far
        as the sampler is concerned, nearly all in the same wait. Walking and counting
        each of them every interval took 10 µs a thread, 2 ms a sample at 200 threads:
        fib(15) by tasks from tasks ran 40% slower with the sampler on. So a thread
        whose innermost frame is the one it was in at the last sample, on the same
        line, keeps the path read then (the frames outside it cannot have moved while
        it runs); equal paths are one shared object, and those of one task name are
        counted in one go. 1 µs a thread now (tests/test_profiling.py pins the rules).
        """
        running = self.running.items.copy()  # (a copy: tasks start and stop meanwhile)
        last, self._last = self._last, {}
        if not running:
            return 0
        # Only the task threads' frames, never the whole dict: it holds this very frame,
        # whose locals would hold the dict, a cycle keeping every sampled task's frames
        # (and their arrays) alive until a garbage collection, which an idle worker paused
        # for memory never runs (it stayed paused for good).
        frames = {i: f for i, f in sys._current_frames().items() if i in running}
        # (name, id of a shared path) -> [path, threads]: no path hashed per thread.
        seen: dict[tuple[str, int], list] = {}
        for ident, run in running.items():
            frame = frames.get(ident)
            if frame is None:
                continue
            before = last.get(ident)
            if before is not None and before[0] is frame and before[1] == frame.f_lineno:
                path = before[2]
            else:
                path = self._shared(tuple(frame_path(frame, stop=RUNTIME_CODES, max_depth=MAX_DEPTH)))
            if not path:
                continue
            # A frame running a generator is read again next time: between two samples
            # it may have yielded and been resumed from elsewhere, its callers changed.
            if not frame.f_code.co_flags & _RESUMABLE:
                self._last[ident] = (frame, frame.f_lineno, path)
            group = (run.name or run.key, id(path))
            entry = seen.get(group)
            if entry is None:
                seen[group] = [path, 1]
            else:
                entry[1] += 1
        now = time.time()
        for (name, _), (path, count) in seen.items():
            self.history.add(path, name, now, count)
        return sum(count for _, count in seen.values())

    def _shared(self, path: tuple[Frame, ...]) -> tuple[Frame, ...]:
        """The one object for paths equal to ``path`` (the threads in one wait share it)."""
        shared = self._paths.setdefault(path, path)
        if len(self._paths) > _MAX_SHARED_PATHS:  # (only sharing is lost: start over)
            self._paths = {path: path}
        return shared


async def profile_request(sampler: Sampler, start: float | None, stop: float | None, key: str | None,
                          max_nodes: int | None = None) -> dict:
    """The worker's ``profile`` op: ``{"tree", "names", "interval", "samples"}``: the tree
    (at most ``max_nodes`` nodes, the most sampled), the task names sampled (to choose
    from), and the sampler's interval (which tells a caller that an empty tree means
    "off", not "idle").

    Merged on the worker's loop a few trees at a time, letting other messages in
    between: ten minutes of varied stacks must not hold up heartbeats and transfers.
    """
    for field, value in (("start", start), ("stop", stop)):
        if value is not None and not math.isfinite(value):
            raise BadMessageError(f"Worker.profile: field {field} must be finite seconds or None, got {value!r}")
    if max_nodes is not None and max_nodes < 1:
        raise BadMessageError(f"Worker.profile: field max_nodes must be at least 1, got {max_nodes!r}")
    history = sampler.history
    tree = new_tree()
    for i, part in enumerate(history.snapshot(start, stop, key)):
        merge_into(tree, part)
        if i % MERGE_STEP == MERGE_STEP - 1:
            await asyncio.sleep(0)
    return {"tree": prune(tree, max_nodes or MAX_REPLY_NODES), "names": history.names(),
            "interval": sampler.interval, "samples": history.samples}
