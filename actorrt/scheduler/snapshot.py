"""The scheduler's state as plain data, for ``client.dump_cluster_state`` (debugging).

JSON-able: str keys, lists, numbers; exceptions and values as their ``repr``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .task_state import unpack_priority

if TYPE_CHECKING:
    from .actor import Scheduler

#: Story entries in a dump at most (the newest): the log may hold 100,000.
STORY_LIMIT = 10_000


def _priority(priority: int) -> list:
    """As dask dumps it: ``[-user priority, generation, order]`` (lowest runs first)."""
    user, generation, order = unpack_priority(priority)
    return [-user, generation, order]


def scheduler_snapshot(scheduler: "Scheduler") -> dict[str, Any]:
    state = scheduler.state
    tasks = {key: {"state": ts.state, "name": ts.name, "priority": _priority(ts.priority),
                   "dependencies": sorted(d.key for d in ts.dependencies),
                   "who_has": sorted(ws.address for ws in ts.who_has),
                   "who_wants": sorted(ts.who_wants), "nbytes": ts.nbytes, "type": ts.type,
                   "processing_on": ts.processing_on.address if ts.processing_on is not None else None,
                   "exception": None if ts.exception is None else repr(ts.exception),
                   "suspicious": ts.suspicious, "actor": bool(ts.actor)}
             for key, ts in state.tasks.items()}
    workers = {a: {"name": ws.name, "nthreads": ws.nthreads, "paused": ws.paused,
                   "processing": sorted(t.key for t in ws.processing),
                   "has_what": sorted(t.key for t in ws.has_what), "managed_bytes": ws.managed_bytes,
                   "memory": scheduler.memory_of(a)}
               for a, ws in state.workers.items()}
    log = list(state.log)[-STORY_LIMIT:]
    return {"address": scheduler.host.address, "tasks": tasks, "workers": workers,
            "clients": sorted(state.clients), "queued": len(state.placement.queued),
            "story": [[str(x) if not isinstance(x, (int, float)) else x for x in entry] for entry in log]}


__all__ = ["scheduler_snapshot"]
