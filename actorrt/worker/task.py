"""Running a task's function: load it, put its inputs in, call it, time it.

A task on a worker is a row of the worker's state machine (state.py) plus a job on
its pool: no actor, no message. :class:`TaskRun` is that job's callable and its
context, through which ``get_worker()`` inside the task finds the worker.
"""
from __future__ import annotations

import asyncio
import inspect
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from .. import runtime
from ..core import Pickled
from ..spec import substitute

if TYPE_CHECKING:
    from ..protocol import Finished
    from .actor import Worker

# Functions kept loaded, by their pickle's header (many tasks share one function).
FUNCTION_CACHE_SIZE = 1000


class FunctionCache:
    """Unpickled task functions: a map of 10,000 tasks unpickles its function once."""

    def __init__(self) -> None:
        self._functions: dict[bytes, Any] = {}

    def load(self, blob: Pickled) -> Any:
        fn = self._functions.get(blob.header)
        if fn is None:
            fn = blob.loads()
            if inspect.iscoroutinefunction(fn):  # decided once per function, not per task
                fn = CoroutineTask(fn)
            if len(self._functions) > FUNCTION_CACHE_SIZE:
                self._functions.clear()
            self._functions[blob.header] = fn
        return fn


class CoroutineTask:
    """An ``async def`` task function, run to completion in the task's own thread.

    Each call gets an event loop of its own in the pool thread running it
    (``asyncio.run``), not the worker's loop: a coroutine that blocks or computes
    between awaits (easy to write by mistake) then holds one thread slot, as any task
    does, instead of stalling the worker's messages, transfers and heartbeats. Blocking
    client calls inside it give the slot back as in any task (docs/futures.md).
    """

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return asyncio.run(self.fn(*args, **kwargs))

    def __repr__(self) -> str:
        return f"<CoroutineTask {getattr(self.fn, '__qualname__', self.fn)!r}>"


class TaskRun:
    """One run of one key here: called on a pool thread (or an actor's lane)."""

    __slots__ = ("worker", "key", "job", "spec", "inputs", "start", "stop", "thread", "name", "run_id",
                 "quiet", "reported")

    def __init__(self, worker: "Worker", key: str, job: int, spec: Any, inputs: dict[str, Any],
                 name: str = "", run_id: int | None = None) -> None:
        self.worker = worker  # get_worker() inside the task
        self.key = key
        self.name = name      # the task's name (the profiler counts its samples under it)
        self.job = job        # the state machine's name for this run
        self.run_id = run_id  # the scheduler's
        self.spec = spec
        self.inputs = inputs
        # Wall clock (the task stream lines up runs from many hosts) and the thread's
        # ident (its lane); stop never before start, should the clock step back.
        self.start = self.stop = 0.0
        self.thread = 0
        # Whether the function handed its worker's loop nothing to do (runtime.post: a
        # submit, a secede, an event logged...): only then may its report overtake them.
        self.quiet = False
        # The report this run's thread sent (Worker._report_from_thread), else None.
        self.reported: Finished | None = None

    def __call__(self) -> Any:
        # Which thread runs which task, for the profiler's sampler (worker/profiler.py).
        running = self.worker.running_tasks
        self.thread = ident = threading.get_ident()
        running.enter(ident, self)
        posts = runtime.posts_made()
        self.start = start = time.time()
        try:
            return call_task(self.worker.functions.load, self.spec, self.inputs)
        finally:
            stop = time.time()
            self.stop = stop if stop > start else start
            self.quiet = runtime.posts_made() == posts
            running.leave(ident)

    @property
    def duration(self) -> float:
        return self.stop - self.start

    def __repr__(self) -> str:
        return f"<TaskRun {self.key!r} job {self.job}>"


class ActorCall(NamedTuple):
    """A sync actor method running on a lane thread, as the profiler sees it (worker/profiler.py)."""

    key: str   # the actor's
    name: str  # ``Class.method``


def call_task(load: Callable[[Pickled], Any], spec: Any, inputs: dict[str, Any]) -> Any:
    """Call the task's function with its inputs in place of their keys."""
    fn_blob, args_blob = spec
    fn = load(fn_blob)
    if args_blob is None:
        return fn()
    args, kwargs = args_blob.loads()
    if inputs:
        args = substitute(args, inputs)
        kwargs = substitute(kwargs, inputs)
    return fn(*args, **kwargs)


def user_frames_only(exc: BaseException) -> BaseException:
    """Drop the runtime's own frames so the remote traceback starts at the user's call
    (past asyncio's, for a coroutine task)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code is not call_task.__code__:
        tb = tb.tb_next
    if tb is None or tb.tb_next is None:
        return exc
    tb = tb.tb_next
    if tb.tb_frame.f_code is CoroutineTask.__call__.__code__:
        inner = tb.tb_next
        while inner is not None and inner.tb_frame.f_code.co_filename.startswith(_ASYNCIO_DIR):
            inner = inner.tb_next
        tb = inner or tb
    return exc.with_traceback(tb)


_ASYNCIO_DIR = os.path.dirname(asyncio.__file__)
