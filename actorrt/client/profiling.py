"""``client.profile``: the workers' sampled call trees, merged, and flame graphs of them.

Each worker samples the stacks of the threads running its tasks (worker/profiler.py)
and keeps the samples of the last minutes by second and task name; this mixin of
:class:`~actorrt.Client` asks the workers for a window of them and merges the trees
(diagnostics/profile.py). See docs/profiling.md.
"""
from __future__ import annotations

import asyncio
import datetime
import os
from typing import TYPE_CHECKING, Any

from ..core import ActorRef
from ..core.errors import ActorNotFoundError, CommClosedError
from ..diagnostics.flamegraph import flame_html
from ..diagnostics.profile import merge
from ..protocol import WORKER_ID
from .admin import _resolve_workers
from .part import ClientPart

if TYPE_CHECKING:
    from .client import Client


class ProfilingMethods(ClientPart):
    """Mixin of Client: statistical profiles of the tasks the workers run."""

    def profile(self, key: str | None = None, start: Any = None, stop: Any = None, workers: Any = None,
                merge_workers: bool = True, plot: bool = False, filename: str | os.PathLike | None = None,
                server: bool = False, scheduler: bool = False) -> Any:
        """The call tree of the tasks the workers ran between ``start`` and ``stop``.

        The tree has dask.distributed's shape (``identifier``, ``description``,
        ``count``, ``children``); counts are samples, one per thread running a task
        every sampling interval (10 ms by default, ``ACTORRT_PROFILE_INTERVAL``).
        ``key`` keeps only the tasks of one name (``"inc"``, or a key ``"inc-6f1c..."``
        standing for its name); ``start``/``stop`` are ``time.time()`` seconds or
        datetimes (None: as far back as kept / now); ``workers`` limits it to some
        workers (addresses or names). ``merge_workers=False`` returns ``{worker
        address: tree}`` instead of one tree. ``filename`` also writes a self-contained
        flame-graph HTML page there (it opens offline).

        ``plot``, ``server`` and ``scheduler`` are dask's Bokeh figure and its
        profiles of the servers' own event loops: not supported, and refused.

        >>> client.profile(filename="profile.html")["count"]   # doctest: +SKIP
        412
        """
        _refuse_unsupported(plot, server, scheduler)
        if key is not None and not isinstance(key, str):
            raise TypeError(f"profile(key=...) must be a task name or key (str) or None, got "
                            f"{type(key).__name__} {key!r}")
        t0, t1 = _seconds(start, "start"), _seconds(stop, "stop")
        if t0 is not None and t1 is not None and t0 > t1:
            raise ValueError(f"profile: start ({t0}) is after stop ({t1})")
        if filename is not None:
            filename = os.fspath(filename)
        return self.sync(_profile, self, key, t0, t1, workers, bool(merge_workers), filename)


def _refuse_unsupported(plot: Any, server: Any, scheduler: Any) -> None:
    if plot:
        raise ValueError("profile(plot=...) is not supported: actorrt draws no Bokeh figures; pass "
                         "filename='profile.html' for a flame graph, or open the dashboard's /profile page")
    if server:
        raise ValueError("profile(server=True) is not supported: actorrt samples the threads running "
                         "tasks, not the workers' event loops; leave server=False")
    if scheduler:
        raise ValueError("profile(scheduler=True) is not supported: actorrt does not sample the "
                         "scheduler's event loop; leave scheduler=False")


def _seconds(value: Any, what: str) -> float | None:
    """``time.time()`` seconds from a number or a datetime (naive: local time)."""
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
        return float(value)
    raise TypeError(f"profile({what}=...) must be time.time() seconds, a datetime or None, got "
                    f"{type(value).__name__} {value!r}")


async def _profile(client: "Client", key: str | None, start: float | None, stop: float | None,
                   workers: Any, merge_workers: bool, filename: str | None) -> Any:
    trees = await worker_profiles(client, key, start, stop, workers)
    merged = merge(*trees.values())
    if filename is not None:
        title = "actorrt profile" + (f" of {key}" if key else "")
        with open(filename, "w", encoding="utf-8") as f:
            f.write(flame_html(merged, title))
    return merged if merge_workers else trees


async def worker_profiles(client: "Client", key: str | None, start: float | None, stop: float | None,
                          workers: Any = None) -> dict[str, dict]:
    """``{worker address: tree}`` from the workers asked (all by default). A worker that
    leaves meanwhile is left out; any other failure is raised."""
    info = await client.host.ask(client.scheduler, "workers")
    targets = _resolve_workers(info, workers)
    replies = await asyncio.gather(*[
        # (On the bulk connection: a tree can be large, and must not hold up control messages.)
        client.host.ask_bulk(ActorRef(a, WORKER_ID), "profile", start=start, stop=stop, key=key)
        for a in targets], return_exceptions=True)
    trees: dict[str, dict] = {}
    for address, reply in zip(targets, replies):
        if isinstance(reply, (CommClosedError, ActorNotFoundError)):
            continue  # (gone since the scheduler listed it: it has nothing more to say)
        if isinstance(reply, BaseException):
            raise reply
        trees[address] = reply["tree"]
    return trees


__all__ = ["ProfilingMethods"]
