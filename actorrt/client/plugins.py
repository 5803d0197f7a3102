"""Plugins from the client: ``register_plugin`` and friends, ``upload_file``
(dask.distributed's names; docs/plugins.md). A mixin of :class:`~actorrt.Client`.

The plugin is pickled here, in the caller's thread (an unpicklable one fails right
away), and sent to the scheduler, which keeps a WorkerPlugin for workers that join
later and loads a SchedulerPlugin itself (scheduler/plugins.py). A plugin whose setup
(or start) raises makes the call raise that exception, with its type and message; the
workers keep running.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..core import Pickled
from ..core.serialize import loads_exception
from ..diagnostics.plugin import (
    NannyPlugin,
    SchedulerPlugin,
    UploadFile,
    WorkerPlugin,
    WorkerSetup,
    plugin_name,
)
from .part import ClientPart

if TYPE_CHECKING:
    from .client import Client


class PluginMethods(ClientPart):
    """Mixin of Client: worker and scheduler plugins, setup callbacks, uploaded files."""

    def register_plugin(self, plugin: Any, name: str | None = None, idempotent: bool | None = None) -> Any:
        """Register a :class:`WorkerPlugin` (set up on every worker, and on workers that
        join later) or a :class:`SchedulerPlugin` (started on the scheduler).

        ``name`` defaults to ``plugin.name``, else the class name and a random suffix.
        Registering a name again replaces that plugin (the old one is torn down
        first) unless ``idempotent`` (default: ``plugin.idempotent``, else False), which
        keeps the one there. A worker plugin returns ``{worker address: {"status":
        "OK"}}``; if its setup raises on a worker, that exception is raised here.

        >>> client.register_plugin(UploadFile("helpers.py"))     # doctest: +SKIP
        {'tcp://127.0.0.1:40123': {'status': 'OK'}}
        """
        kind = _kind(plugin)
        name = _check_name(plugin_name(plugin) if name is None else name)
        if idempotent is None:
            idempotent = bool(getattr(plugin, "idempotent", False))
        elif not isinstance(idempotent, bool):
            raise TypeError(f"idempotent must be a bool, got {type(idempotent).__name__}: {idempotent!r}")
        blob = Pickled.dumps(plugin, what=f"plugin {name!r}")
        return self.sync(_register, self, kind, name, blob, idempotent)

    def register_worker_plugin(self, plugin: Any = None, name: str | None = None, nanny: Any = None) -> Any:
        """dask's older spelling of :meth:`register_plugin` for a WorkerPlugin."""
        if nanny:
            _refuse_nanny()
        if not isinstance(plugin, WorkerPlugin):
            raise TypeError(f"register_worker_plugin needs a WorkerPlugin, got {type(plugin).__name__}")
        return self.register_plugin(plugin, name=name)

    def register_scheduler_plugin(self, plugin: Any, name: str | None = None, idempotent: bool | None = None) -> Any:
        """dask's older spelling of :meth:`register_plugin` for a SchedulerPlugin."""
        if not isinstance(plugin, SchedulerPlugin):
            raise TypeError(f"register_scheduler_plugin needs a SchedulerPlugin, got {type(plugin).__name__}")
        return self.register_plugin(plugin, name=name, idempotent=idempotent)

    def unregister_worker_plugin(self, name: str, nanny: Any = None) -> Any:
        """Remove a worker plugin: each worker tears it down, and later joiners do not get it.
        ``ValueError`` if there is no worker plugin of that name."""
        if nanny:
            _refuse_nanny()
        return self.sync(_unregister, self, "worker", _check_name(name))

    def unregister_scheduler_plugin(self, name: str) -> Any:
        """Remove a scheduler plugin (its ``close`` runs). ``ValueError`` if there is none of that name."""
        return self.sync(_unregister, self, "scheduler", _check_name(name))

    def register_worker_callbacks(self, setup: Any = None) -> Any:
        """Run ``setup()`` on every worker now and on each worker that joins later (a
        ``dask_worker`` parameter receives the worker). Each call adds one more."""
        return self.register_plugin(WorkerSetup(setup))

    def upload_file(self, filename: str, load: bool = True) -> Any:
        """Send a local file to every worker, and to workers that join later.

        A ``.py`` file is imported, again when uploaded again (so the new code is
        used); a ``.zip`` or ``.egg`` is put on ``sys.path`` and the packages in it
        imported (re-imported from the new file when uploaded again); any other file is
        placed in the workers' upload directory. ``load=False`` imports nothing. The
        newest upload of a file name replaces the older everywhere. An import that
        fails raises here, with the worker's exception.

        >>> client.upload_file("helpers.py")          # doctest: +SKIP
        """
        if not isinstance(filename, (str, os.PathLike)):
            raise TypeError(f"upload_file: filename must be a path, got {type(filename).__name__}: {filename!r}")
        return self.register_plugin(UploadFile(filename, load=load))


def _kind(plugin: Any) -> str:
    if isinstance(plugin, type):
        raise TypeError(f"register_plugin needs a plugin instance, not the class {plugin.__name__} "
                        f"(write {plugin.__name__}(...))")
    if isinstance(plugin, WorkerPlugin):
        return "worker"
    if isinstance(plugin, SchedulerPlugin):
        return "scheduler"
    if isinstance(plugin, NannyPlugin):
        _refuse_nanny()
    raise TypeError(f"register_plugin needs a WorkerPlugin or a SchedulerPlugin (from actorrt), got "
                    f"{type(plugin).__name__}; a plugin must inherit from one of them")


def _refuse_nanny() -> None:
    raise ValueError("nanny plugins are not supported: actorrt's nanny is a small supervisor that runs "
                     "no user code; use a WorkerPlugin (its setup runs in each worker process, also "
                     "after a restart), and set environment variables where the worker is started")


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise TypeError(f"the plugin name must be a non-empty str, got {type(name).__name__}: {name!r}")
    return name


async def _register(client: "Client", kind: str, name: str, blob: Pickled, idempotent: bool) -> Any:
    ask = client.host.ask
    if kind == "scheduler":
        await ask(client.scheduler, "register_scheduler_plugin", name=name, plugin=blob, idempotent=idempotent)
        return None
    replies = await ask(client.scheduler, "register_worker_plugin", name=name, plugin=blob, idempotent=idempotent)
    return _statuses(replies)


async def _unregister(client: "Client", kind: str, name: str) -> Any:
    replies = await client.host.ask(client.scheduler, f"unregister_{kind}_plugin", name=name)
    return None if kind == "scheduler" else _statuses(replies)


def _statuses(replies: dict) -> dict:
    """``{address: {"status": "OK"}}``; the first worker's exception is raised instead."""
    for reply in replies.values():
        if reply[0] == "error":
            raise loads_exception(reply[1], reply[2])
    return {address: {"status": "OK"} for address in replies}


__all__ = ["PluginMethods"]
