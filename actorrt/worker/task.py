"""The short-lived Task actor: gather inputs, run once on the pool, store, report, vanish."""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from ..core import Actor, own_task
from ..core.serialize import dumps_exception
from ..spec import substitute
from ..utils import sizeof
from .pool import Job

if TYPE_CHECKING:
    from .actor import Worker

logger = logging.getLogger("actorrt.worker")


class Task(Actor):
    """One run of one key on this worker. Spawned by the Worker; stops itself when done."""

    def __init__(self, worker: "Worker", key: str, spec: Any, deps: dict, name: str) -> None:
        self.worker = worker
        self.key = key
        self.spec = spec
        self.deps = deps
        self.name = name
        self.start_time = 0.0
        self.told_long_running = False
        self.duration = 0.0
        self.sizes: dict[str, int] = {}  # of the inputs to fetch, as the scheduler knows them

    def on_start(self) -> None:
        self.worker.use_inputs(self.deps)
        data = self.worker.data
        missing = {k: holders for k, holders in self.deps.items() if k not in data}
        if missing:
            own_task(self, self._fetch_then_run(missing))
        else:
            self._run()

    def on_stop(self) -> None:
        self.worker.drop_inputs(self.deps)

    async def _fetch_then_run(self, missing: dict) -> None:
        failed, unmovable = await self.worker.fetch(missing, self.sizes)
        if self.worker.tasks.get(self.key) is not self:
            return
        if unmovable:
            self._fail(next(iter(unmovable.values())))
            return
        if failed:
            self.worker.report_missing(self, failed)
            return
        self._run()

    def _run(self) -> None:
        data = self.worker.data
        try:
            inputs = {k: data[k] for k in self.deps}
        except KeyError as e:  # freed between fetch and run: ask the scheduler again
            self.worker.report_missing(self, {e.args[0]: self.deps.get(e.args[0], [])})
            return
        self.worker.pool.submit(Job(lambda: self._execute(inputs), self._done, context=self))

    def _execute(self, inputs: dict) -> Any:
        """Runs on a pool thread."""
        self.start_time = time.time()
        start = time.perf_counter()
        try:
            return self._call(inputs)
        finally:
            self.duration = time.perf_counter() - start

    def _call(self, inputs: dict) -> Any:
        fn_blob, args_blob = self.spec
        fn = self.worker.load_function(fn_blob)
        if args_blob is None:
            return fn()
        args, kwargs = args_blob.loads()
        if inputs:
            args = substitute(args, inputs)
            kwargs = substitute(kwargs, inputs)
        return fn(*args, **kwargs)

    def _done(self, job: Job) -> None:
        worker = self.worker
        current = worker.tasks.get(self.key) is self
        if current:
            del worker.tasks[self.key]
            if job.error is None:
                worker.store(self.key, job.result)
                # A task that waited on others says nothing about how long work takes.
                duration = None if self.told_long_running else self.duration
                worker.report_finished(self.key, sizeof(job.result), type(job.result).__name__,
                                       duration)
            else:
                blob, tb = dumps_exception(_user_frames_only(job.error))
                worker.report_erred(self.key, blob, tb)
        self._stop()

    def _fail(self, error: BaseException) -> None:
        """Err without running: an input cannot be brought here."""
        worker = self.worker
        if worker.tasks.get(self.key) is self:
            del worker.tasks[self.key]
            blob, tb = dumps_exception(error)
            worker.report_erred(self.key, blob, tb)
        self._stop()

    def _stop(self) -> None:
        if self.host.actors.get(self.id) is self:  # not a newer run of the same key
            self.host.stop_actor(self.id)


def _user_frames_only(exc: BaseException) -> BaseException:
    """Drop the runtime's own frames so the remote traceback starts at the user's call."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code is not Task._call.__code__:
        tb = tb.tb_next
    if tb is not None and tb.tb_next is not None:
        return exc.with_traceback(tb.tb_next)
    return exc
