"""Out-of-band calls: run a user function on a worker or the scheduler itself.

``client.run(fn)`` and ``client.run_on_scheduler(fn)`` are for housekeeping (read a
worker's state, set an environment variable, collect garbage), not for work: the
function runs on the server's event loop thread, between messages, so it sees the
server's state without races and must be quick. A coroutine function is awaited on
that loop. A function with a ``dask_worker`` (``dask_scheduler``) parameter receives
the Worker (Scheduler) actor, as in dask.distributed.

The reply is a small list, never an error reply, so that the caller can tell the
user's exception (``["error", exception, traceback]``) from a server that went away.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

from .core import Actor, Pickled, own_task
from .core.serialize import dumps_exception

logger = logging.getLogger("actorrt.run")


def _wants(function: Any, name: str) -> bool:
    try:
        return name in inspect.signature(function).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False


def _outcome_error(exc: BaseException) -> list:
    blob, tb = dumps_exception(exc)
    return ["error", blob, tb]


async def run_here(server: Actor, param: str, function: Pickled, args: Pickled | None,
                   wait: bool) -> list:
    """Call the pickled ``function`` here; ``["ok", result]`` or ``["error", exc, tb]``.

    ``param`` names the keyword that receives ``server`` if ``function`` declares it
    (``"dask_worker"`` or ``"dask_scheduler"``). With ``wait=False`` a coroutine
    function is started and left running (owned by ``server``); the reply is at once.
    """
    try:
        fn = function.loads()
        a, kw = args.loads() if args is not None else ((), {})
        if _wants(fn, param):
            kw = {**kw, param: server}
        if inspect.iscoroutinefunction(fn):
            if not wait:
                own_task(server, _logged(fn(*a, **kw)))
                return ["ok", Pickled.dumps(None)]
            result = await fn(*a, **kw)
        else:
            result = fn(*a, **kw)
            if inspect.isawaitable(result):  # e.g. a lambda returning a coroutine
                result = await result
        return ["ok", Pickled.dumps(result, what=f"result of {getattr(fn, '__name__', fn)!r}")]
    except Exception as e:
        return _outcome_error(e)


async def _logged(coro: Any) -> None:
    """A background run (``wait=False``): nobody awaits it, so its failure is logged."""
    try:
        await coro
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("background function of client.run(wait=False) failed")
