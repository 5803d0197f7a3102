"""Calling plugin hooks: plain or coroutine, transitions watched only when wanted.

Shared by the scheduler's and the workers' plugin registries (scheduler/plugins.py,
worker/plugins.py). Transitions are watched through the state machine's story log,
which both state machines append each transition to: while a plugin wants
transitions the log is a :class:`NotifyingLog`, otherwise the plain deque, so with no
such plugin a task pays nothing.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from typing import Any, Callable

from ..core.serialize import dumps_exception

logger = logging.getLogger("actorrt.plugins")

# Coroutine hooks started by a closing server, kept until done (the loop holds only weak refs).
_closing: set["asyncio.Future[Any]"] = set()


class NotifyingLog(deque):
    """A state machine's story log that also tells ``hooks`` of each transition
    ``(key, start, finish, stimulus_id, ...)`` appended to it."""

    def __init__(self, entries: deque, hooks: list[Callable[..., Any]]) -> None:
        super().__init__(entries, maxlen=entries.maxlen)
        self.hooks = hooks

    def append(self, entry: Any) -> None:
        super().append(entry)
        key, start, finish, sid = entry[:4]
        for hook in self.hooks:
            try:
                hook(key, start, finish, stimulus_id=sid)
            except Exception:  # a plugin's bug must not break the state machine's step
                logger.exception("plugin transition hook failed for %r %s -> %s", key, start, finish)


def watch_transitions(owner: Any, hooks: list[Callable[..., Any]]) -> None:
    """Have ``owner.log`` (a state machine's story) call ``hooks`` on each transition,
    or stop when there are none: the plain deque again, at no cost per task."""
    log = owner.log
    if hooks:
        if isinstance(log, NotifyingLog):
            log.hooks = hooks
        else:
            owner.log = NotifyingLog(log, hooks)
    elif isinstance(log, NotifyingLog):
        owner.log = deque(log, maxlen=log.maxlen)


def error_reply(exc: BaseException) -> list:
    blob, tb = dumps_exception(exc)
    return ["error", blob, tb]


async def call_hook(result: Any) -> None:
    """A hook's result: awaited if it is a coroutine (hooks may be either)."""
    if inspect.isawaitable(result):
        await result


def start_closing(result: Any, what: str) -> None:
    """A hook called while its server stops: a coroutine is started and kept until done
    (nobody can await it), its failure logged."""
    if not inspect.isawaitable(result):
        return
    task = asyncio.ensure_future(result)
    _closing.add(task)
    task.add_done_callback(_closing.discard)
    task.add_done_callback(lambda t: _log_failure(t, what))


def _log_failure(task: "asyncio.Future[Any]", what: str) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("%s failed while closing: %r", what, task.exception())
