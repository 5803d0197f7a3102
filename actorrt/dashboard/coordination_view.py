"""The coordination page's data: every named queue, lock, semaphore, event, variable,
condition and pub/sub topic, from the registry beside the scheduler.

The registry and its actors live on the scheduler's host (its loop): reading them
here is as safe as reading the scheduler's state. Each kind describes itself
(``SystemActor.summary``); this module only gathers the rows and names the hosts.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..protocol import REGISTRY_ID

if TYPE_CHECKING:
    from ..scheduler.actor import Scheduler

logger = logging.getLogger("actorrt.dashboard")

#: Rows sent at most (a program may make a lock per item).
MAX_ROWS = 1000


def coordination(scheduler: Scheduler, max_rows: int = MAX_ROWS) -> dict[str, Any]:
    """``{"primitives": [{kind, name, ...}, ...], "omitted": n}``, by kind then name."""
    registry = scheduler.host.actors.get(REGISTRY_ID)
    rows: list[dict] = []
    for actor in list(getattr(registry, "actors", {}).values()):
        try:
            rows.extend(actor.summary())
        except Exception:  # one actor's bug must not hide the others
            logger.exception("dashboard: could not describe %r", actor)
    rows.sort(key=lambda r: (r["kind"], r["name"]))
    names = _host_names(scheduler)
    for row in rows:
        for field in ("holders", "waiters"):
            if field in row:
                row[field] = [names.get(a, a) for a in row[field]]
    return {"primitives": rows[:max_rows], "omitted": max(0, len(rows) - max_rows)}


def _host_names(scheduler: Scheduler) -> dict[str, str]:
    """A worker's address -> "worker <name> (address)"; a client's host -> its id."""
    out = {address: f"worker {info.get('name') or address}"
           for address, info in scheduler.worker_info.items()}
    for client, ref in scheduler.client_refs.items():
        out.setdefault(ref.address, f"client {client}")
    return out
