"""Worker plugins on one worker: set up, torn down, told of transitions.

The scheduler sends each plugin pickled (``plugin_add``), when a client registers it
and to every worker that joins later. A plugin whose ``setup`` raises is reported to
the caller as that exception (``["error", exception, traceback]``, as ``client.run``
answers) and the worker carries on. Transitions are watched only while a plugin with
its own ``transition`` is registered: the worker state machine's story log is then
swapped for one that also calls the plugins, so with no such plugin a task pays nothing.
"""
from __future__ import annotations

import inspect
import logging
from typing import Any, Awaitable, Callable, Union

from ..core import Pickled
from ..diagnostics.hooks import error_reply, start_closing, watch_transitions
from ..diagnostics.plugin import WorkerPlugin, overrides

logger = logging.getLogger("actorrt.worker.plugins")

# What a hook's call gives the caller: the reply now, or a coroutine giving it.
Outcome = Union[list, Awaitable[list]]


def _outcome(call: Callable[[], Any], failure: str) -> Outcome:
    """Call a hook: ``["ok"]``/``["error", ...]`` at once, or a coroutine if the hook is one."""
    try:
        result = call()
    except Exception as e:
        logger.exception(failure)
        return error_reply(e)
    if not inspect.isawaitable(result):
        return ["ok"]
    return _awaited(result, failure)


async def _awaited(result: Awaitable[Any], failure: str) -> list:
    try:
        await result
    except Exception as e:
        logger.exception(failure)
        return error_reply(e)
    return ["ok"]


class WorkerPlugins:
    """The plugins of one worker, by name, in the order they were added."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self.plugins: dict[str, Any] = {}
        self._blobs: dict[str, Pickled] = {}

    def add(self, name: str, blob: Pickled, replace: bool = True) -> Outcome:
        """Load and set up the plugin: ``["ok"]`` or ``["error", exception, traceback]``,
        or a coroutine giving that when a hook is a coroutine.

        Synchronous hooks run right here, before the worker handles its next message:
        a task sent after the plugin finds it set up. A plugin of the same name is torn
        down first. ``replace=False`` (a worker joining, or rejoining with its plugins
        still set up) keeps one that is already there in the same version.
        """
        if not replace and self._blobs.get(name) == blob:
            return ["ok"]
        if name in self.plugins:
            removed = self.remove(name)
            if not isinstance(removed, list):
                return self._then(removed, lambda: self._setup(name, blob))
        return self._setup(name, blob)

    def _setup(self, name: str, blob: Pickled) -> Outcome:
        try:
            plugin = blob.loads()
        except Exception as e:
            logger.exception("worker plugin %s could not be loaded", name)
            return error_reply(e)
        # Kept even if its setup fails, as dask keeps it: teardown still comes on
        # removal or close, and the caller hears of the failure.
        self.plugins[name] = plugin
        self._blobs[name] = blob
        self._watch()
        return _outcome(lambda: plugin.setup(worker=self.worker), f"worker plugin {name} failed to set up")

    def remove(self, name: str) -> Outcome:
        """Tear the plugin down and forget it; ``["ok"]`` (also if it was not there)."""
        plugin = self.plugins.pop(name, None)
        self._blobs.pop(name, None)
        self._watch()
        if plugin is None:
            return ["ok"]
        return _outcome(lambda: plugin.teardown(worker=self.worker), f"worker plugin {name} failed to tear down")

    @staticmethod
    async def _then(first: Awaitable[list], then: Callable[[], Outcome]) -> list:
        await first
        result = then()
        return result if isinstance(result, list) else await result

    def close(self) -> None:
        """The worker stops: tear every plugin down. A coroutine teardown is started and
        kept until done, but a process that exits at once may cut it short."""
        plugins, self.plugins = self.plugins, {}
        self._blobs.clear()
        self._watch()
        for name, plugin in reversed(list(plugins.items())):
            try:
                start_closing(plugin.teardown(worker=self.worker), f"worker plugin {name}")
            except Exception:
                logger.exception("worker plugin %s failed to tear down", name)

    def _watch(self) -> None:
        hooks = [p.transition for p in self.plugins.values() if overrides(p, WorkerPlugin, "transition")]
        watch_transitions(self.worker.state, hooks)
