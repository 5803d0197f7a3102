"""The plugin base classes (dask.distributed's, same hooks) and ``UploadFile``.

A plugin is pickled by the client and loaded where it runs: a :class:`WorkerPlugin`
on every worker, now and later (the scheduler keeps it, unopened, for workers that
join), a :class:`SchedulerPlugin` on the scheduler. Hooks may be plain methods or
coroutines, except ``transition``, which is called inside the state machine's step
and must be quick. A plugin that does not override ``transition`` costs nothing per
task: the runtime only watches transitions while such a plugin is registered.

>>> class Hello(WorkerPlugin):                              # doctest: +SKIP
...     def setup(self, worker):
...         print("hello from", worker.address)
>>> client.register_plugin(Hello(), name="hello")           # doctest: +SKIP
"""
from __future__ import annotations

import inspect
import os
import uuid
from typing import Any

from .uploads import install_file, upload_directory


class SchedulerPlugin:
    """Called by the scheduler on its events. Every hook is optional.

    ``start(scheduler)`` when registered (the Scheduler actor; its task state is
    ``scheduler.state``), ``close()`` when unregistered or when the scheduler stops,
    ``add_worker(scheduler=, worker=)`` / ``remove_worker(scheduler=, worker=)`` with a
    worker's address, ``add_client(scheduler=, client=)`` / ``remove_client(...)``, and
    ``transition(key, start, finish, *args, stimulus_id=, **kwargs)`` for each change of
    a task's state on the scheduler.
    """

    async def start(self, scheduler: Any) -> None:
        """Run when the plugin is registered with the scheduler."""

    async def close(self) -> None:
        """Run when the plugin is removed, or the scheduler stops."""

    def add_worker(self, scheduler: Any, worker: str) -> Any:
        """A worker (its address) joined."""

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> Any:
        """A worker (its address) left or was lost."""

    def add_client(self, scheduler: Any, client: str) -> None:
        """A client (its id) registered."""

    def remove_client(self, scheduler: Any, client: str) -> None:
        """A client (its id) closed or was lost."""

    def transition(self, key: str, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        """Task ``key`` went from ``start`` to ``finish`` on the scheduler."""


class WorkerPlugin:
    """Called by each worker: ``setup(worker)`` when it is registered or the worker
    joins, ``teardown(worker)`` when it is removed or replaced or the worker closes,
    ``transition(key, start, finish, **kwargs)`` for each change of a task's state on
    the worker. Every hook is optional."""

    def setup(self, worker: Any) -> Any:
        """Run on each worker when the plugin is registered, and on workers that join later."""

    def teardown(self, worker: Any) -> Any:
        """Run when the plugin is removed or replaced, or the worker closes."""

    def transition(self, key: str, start: str, finish: str, **kwargs: Any) -> None:
        """Task ``key`` went from ``start`` to ``finish`` on this worker."""


class NannyPlugin:
    """dask's plugin for the nanny process. actorrt's nanny is a small supervisor that
    runs no user code: ``register_plugin`` refuses these (use a :class:`WorkerPlugin`;
    for environment variables, set them where ``actorrt-worker`` starts)."""

    restart = False

    def setup(self, nanny: Any) -> Any:
        """Not called: see the class docstring."""

    def teardown(self, nanny: Any) -> Any:
        """Not called: see the class docstring."""


def plugin_name(plugin: Any) -> str:
    """The plugin's ``name`` attribute, else its class name and a random suffix (dask's rule)."""
    name = getattr(plugin, "name", None)
    if isinstance(name, str) and name:
        return name
    return f"{type(plugin).__name__}-{uuid.uuid4()}"


def overrides(plugin: Any, base: type, hook: str) -> bool:
    """Whether ``plugin`` has its own ``hook`` rather than ``base``'s no-op: only then is
    it called for that event (``transition`` is per task, so this matters)."""
    mine = getattr(type(plugin), hook, None)
    return mine is not None and mine is not getattr(base, hook, None)


class WorkerSetup(WorkerPlugin):
    """``client.register_worker_callbacks(setup=fn)``: ``fn()`` on every worker, now and
    on workers that join later; a ``dask_worker`` parameter receives the worker."""

    def __init__(self, setup: Any) -> None:
        if not callable(setup):
            raise TypeError(f"setup must be a callable, got {type(setup).__name__}: {setup!r}")
        self.setup_function = setup
        self.name = f"worker-setup-{getattr(setup, '__name__', type(setup).__name__)}-{uuid.uuid4()}"

    def setup(self, worker: Any) -> Any:
        fn = self.setup_function
        try:
            wants = "dask_worker" in inspect.signature(fn).parameters
        except (TypeError, ValueError):  # builtins without a signature
            wants = False
        return fn(dask_worker=worker) if wants else fn()


class UploadFile(WorkerPlugin):
    """Send a file to every worker, now and on workers that join later.

    A ``.py`` file is imported (imported again, so the new code is used, when uploaded
    again); a ``.zip`` or ``.egg`` goes on ``sys.path`` and the packages in it are
    imported (their old modules dropped first when it is uploaded again); any other
    file is only placed in the workers' upload directory, which is on ``sys.path``
    (``UploadFile.directory()`` gives it on a worker). ``load=False`` imports nothing.

    >>> client.register_plugin(UploadFile("mymodule.py"))   # doctest: +SKIP
    """

    def __init__(self, filepath: str, load: bool = True) -> None:
        if not isinstance(filepath, (str, os.PathLike)):
            raise TypeError(f"UploadFile: filepath must be a path, got {type(filepath).__name__}: {filepath!r}")
        self.filename = os.path.basename(os.fspath(filepath))
        self.load = bool(load)
        with open(filepath, "rb") as f:
            self.data = f.read()
        # One plugin per file name: uploading a file again replaces the old version
        # everywhere, and only the newest goes to workers that join later.
        self.name = f"upload_file-{self.filename}"

    def setup(self, worker: Any) -> None:
        # (Synchronous on purpose: it runs before any later message to the worker,
        # so a task sent after the upload finds the file.)
        install_file(self.filename, self.data, self.load)

    @staticmethod
    def directory() -> str:
        return upload_directory()


__all__ = ["NannyPlugin", "SchedulerPlugin", "UploadFile", "WorkerPlugin", "WorkerSetup", "overrides",
           "plugin_name"]
