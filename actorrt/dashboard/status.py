"""What the dashboard shows, read from the scheduler's state: plain dicts, no I/O.

Every function here runs on the scheduler's loop (where the state lives) and only
reads. The cost of a snapshot is one pass over the tasks, counted in C
(``Counter`` over ``attrgetter``), plus one pass over each worker's held keys.
"""
from __future__ import annotations

import time
from collections import Counter
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from ..scheduler.state import TASK_STATES

if TYPE_CHECKING:
    from ..scheduler.actor import Scheduler

#: Beyond this many task names, the least populous are left out (and counted): a page
#: with a row per name must stay readable when keys are named freely (scatter).
MAX_NAMES = 100

_name_and_state = attrgetter("name", "state")


def status(scheduler: Scheduler, started: float, max_names: int = MAX_NAMES) -> dict[str, Any]:
    """A snapshot of the cluster: workers, task counts, clients, totals.

    >>> status(scheduler, started)["tasks"]        # doctest: +SKIP
    {'total': 3, 'by_state': {'released': 0, 'waiting': 0, 'queued': 0, 'processing': 1,
     'memory': 2, 'erred': 0}}
    """
    state = scheduler.state
    pairs = Counter(map(_name_and_state, state.tasks.values()))
    by_state = dict.fromkeys(TASK_STATES, 0)
    for (_, task_state), n in pairs.items():
        by_state[task_state] = by_state.get(task_state, 0) + n
    for name, n in state.cancelled_by_name.items():  # (no longer held, but part of the progress)
        pairs[(name, "cancelled")] = n
    by_name, omitted = _by_name(pairs, max_names)
    erred = _erred_keys(state.tasks) if by_state.get("erred") else []
    now = time.time()
    return {
        "scheduler": scheduler.host.address,
        "time": now,
        "uptime": now - started,
        "workers": [_worker(scheduler, address) for address in sorted(state.workers)],
        "tasks": {"total": len(state.tasks), "by_state": by_state},
        "by_name": by_name,
        "names_omitted": omitted,
        "erred_keys": erred,
        "clients": user_clients(scheduler),
        "totals": {"finished": state.finished_total, "erred": state.erred_total,
                   "cancelled": sum(state.cancelled_by_name.values())},
    }


#: Failed keys the status page lists (each links to its task page).
MAX_ERRED_KEYS = 20


def _erred_keys(tasks: dict) -> list[dict[str, str]]:
    out = []
    for key, ts in tasks.items():
        if ts.state == "erred":
            out.append({"key": key, "name": ts.name})
            if len(out) == MAX_ERRED_KEYS:
                break
    return out


def user_clients(scheduler: Scheduler) -> list[str]:
    """The ids of the users' clients: not the ones tasks and actors use on a worker.

    A worker's client shares the worker's host, so it registered with a reference to
    an actor at a worker's address; a user's lives on a host of its own.
    """
    workers = scheduler.state.workers
    refs = scheduler.client_refs
    return sorted(c for c in scheduler.state.clients
                  if c not in refs or refs[c].address not in workers)


def _by_name(pairs: Counter, max_names: int) -> tuple[dict[str, dict[str, int]], int]:
    """``{name: {state: count}}`` for the ``max_names`` names with most tasks, by name."""
    rows: dict[str, dict[str, int]] = {}
    for (name, task_state), n in pairs.items():
        rows.setdefault(name, {})[task_state] = n
    if len(rows) > max_names:
        keep = sorted(rows, key=lambda name: -sum(rows[name].values()))[:max_names]
        return {name: rows[name] for name in sorted(keep)}, len(rows) - max_names
    return {name: rows[name] for name in sorted(rows)}, 0


def _worker(scheduler: Scheduler, address: str) -> dict[str, Any]:
    ws = scheduler.state.workers[address]
    info = scheduler.worker_info.get(address, {})
    memory = scheduler.memory_of(address)
    return {
        "address": address,
        "name": info.get("name", ""),
        "pid": info.get("pid", 0),
        "nthreads": ws.nthreads,
        "processing": len(ws.processing),
        "long_running": len(ws.long_running),
        "keys": len(ws.has_what),
        "bytes": memory["managed"],
        "spilled": memory["spilled"],
        "rss": memory["rss"],
        "limit": memory["limit"],
        "status": "paused" if memory["paused"] else "running",
        **scheduler.usage_of(address),
    }


def story(scheduler: Scheduler, key: str) -> dict[str, Any] | None:
    """The recorded transitions of ``key``, oldest first; None if the scheduler knows
    nothing of it (never submitted, or forgotten and its story rotated out)."""
    entries = scheduler.state.story(key)
    task = scheduler.state.tasks.get(key)
    if not entries and task is None:
        return None
    return {
        "key": key,
        "state": task.state if task is not None else "forgotten",
        "transitions": [{"start": start, "finish": finish, "stimulus_id": stimulus, "time": when}
                        for _, start, finish, stimulus, when in entries],
    }
