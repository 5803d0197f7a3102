"""Plugins on the scheduler's side (``client.register_plugin``; docs/plugins.md).

* **Worker plugins** are kept here pickled, never loaded (the scheduler need not be
  able to import the user's code): sent to every worker when registered, and to each
  worker that joins later, before any task is placed there (a tell on the same
  connection, ahead of the ``compute`` batch). Registering a name again replaces the
  plugin everywhere (each worker tears the old one down first).
* **Scheduler plugins** are loaded and started here, and told of workers and clients
  coming and going and, only while one of them wants it, of task transitions
  (diagnostics/hooks.py): with none, a task pays nothing.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..core import ActorRef, Pickled, own_task
from ..core.errors import ActorNotFoundError, CommClosedError
from ..diagnostics.hooks import call_hook, error_reply, start_closing, watch_transitions
from ..diagnostics.plugin import SchedulerPlugin, overrides
from ..protocol import WORKER_ID

logger = logging.getLogger("actorrt.scheduler.plugins")


class Plugins:
    """The worker plugins kept for joiners and the scheduler plugins running here."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.worker_plugins: dict[str, Pickled] = {}  # name -> pickled, in registration order
        self.plugins: dict[str, Any] = {}  # name -> a started SchedulerPlugin

    # --- worker plugins ---------------------------------------------------------
    async def register_worker_plugin(self, name: str, blob: Pickled, idempotent: bool) -> dict:
        """Keep it for later joiners and set it up on every current worker:
        ``{address: ["ok"] | ["error", exception, traceback]}``."""
        if idempotent and name in self.worker_plugins:
            return {}
        self.worker_plugins.pop(name, None)  # (re-registered: it moves to the end of the order)
        self.worker_plugins[name] = blob
        return await self._ask_workers("plugin_add", name=name, plugin=blob)

    async def unregister_worker_plugin(self, name: str) -> dict:
        if self.worker_plugins.pop(name, None) is None:
            raise ValueError(f"there is no worker plugin named {name!r}; registered: "
                             f"{sorted(self.worker_plugins)}")
        return await self._ask_workers("plugin_remove", name=name)

    async def _ask_workers(self, op: str, **fields: Any) -> dict:
        host = self.scheduler.host
        addresses = list(self.scheduler.worker_info)
        replies = await asyncio.gather(*[host.ask(ActorRef(a, WORKER_ID), op, **fields) for a in addresses],
                                       return_exceptions=True)
        out = {}
        for address, reply in zip(addresses, replies):
            if isinstance(reply, (CommClosedError, ActorNotFoundError)):
                continue  # it left meanwhile: nothing to set up there any more
            out[address] = error_reply(reply) if isinstance(reply, BaseException) else reply
        return out

    def worker_joined(self, address: str) -> None:
        """Send the kept worker plugins to a worker that just registered. ``replace=False``:
        a worker rejoining with them still set up keeps them as they are."""
        ref = ActorRef(address, WORKER_ID)
        for name, blob in self.worker_plugins.items():
            self.scheduler.host.tell(ref, "plugin_add", name=name, plugin=blob, replace=False)
        self._each("add_worker", worker=address)

    def worker_left(self, address: str) -> None:
        self._each("remove_worker", worker=address)

    def client_joined(self, client: str) -> None:
        self._each("add_client", client=client)

    def client_left(self, client: str) -> None:
        self._each("remove_client", client=client)

    # --- scheduler plugins ---------------------------------------------------------
    async def add(self, name: str, blob: Pickled, idempotent: bool) -> None:
        """Load and start a SchedulerPlugin; its ``start`` raising fails the registration
        (with that exception) and leaves no trace of it here."""
        if idempotent and name in self.plugins:
            return
        plugin = blob.loads()
        if not isinstance(plugin, SchedulerPlugin):
            raise TypeError(f"register_scheduler_plugin: {name!r} is a {type(plugin).__name__}, not a "
                            "SchedulerPlugin")
        if name in self.plugins:
            await self.remove(name)
        await call_hook(plugin.start(self.scheduler))
        self.plugins[name] = plugin
        self._watch()

    async def remove(self, name: str) -> None:
        plugin = self.plugins.pop(name, None)
        if plugin is None:
            raise ValueError(f"there is no scheduler plugin named {name!r}; registered: {sorted(self.plugins)}")
        self._watch()
        await call_hook(plugin.close())

    def close(self) -> None:
        """The scheduler stops: close every plugin (a coroutine is started, not awaited)."""
        plugins, self.plugins = self.plugins, {}
        self._watch()
        for name, plugin in reversed(list(plugins.items())):
            try:
                start_closing(plugin.close(), f"scheduler plugin {name}")
            except Exception:
                logger.exception("scheduler plugin %s failed to close", name)

    def _each(self, hook: str, **fields: Any) -> None:
        """Call ``hook`` on each plugin that has one; a coroutine runs as the scheduler's
        task. A failure is logged: membership goes on regardless."""
        for name, plugin in list(self.plugins.items()):
            if not overrides(plugin, SchedulerPlugin, hook):
                continue
            try:
                result = getattr(plugin, hook)(scheduler=self.scheduler, **fields)
                if asyncio.iscoroutine(result):
                    own_task(self.scheduler, _logged(result, f"scheduler plugin {name}.{hook}"))
            except Exception:
                logger.exception("scheduler plugin %s failed in %s", name, hook)

    def _watch(self) -> None:
        hooks = [p.transition for p in self.plugins.values() if overrides(p, SchedulerPlugin, "transition")]
        watch_transitions(self.scheduler.state, hooks)


async def _logged(coro: Any, what: str) -> None:
    try:
        await coro
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("%s failed", what)


__all__ = ["Plugins"]
