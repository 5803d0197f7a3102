"""``/metrics``: the scheduler's figures in Prometheus' text exposition format (0.0.4),
the format operators scrape. No I/O: read on the scheduler's loop, like status.py.

Each family is a ``# HELP`` and a ``# TYPE`` line, then one sample per label set;
label values are escaped (backslash, double quote, newline), as worker addresses and
names are free text.
"""
from __future__ import annotations

import math
from collections import Counter
from operator import attrgetter
from typing import TYPE_CHECKING, Any, NamedTuple

from ..scheduler.state import TASK_STATES

if TYPE_CHECKING:
    from ..scheduler.actor import Scheduler

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_state_of = attrgetter("state")


class Family(NamedTuple):
    name: str
    kind: str           # "gauge" or "counter"
    help: str
    samples: list[tuple[dict[str, str], float | int | None]]  # (labels, value); None: left out


def escape_label(value: str) -> str:
    """A label value as the format quotes it."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float | int) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def exposition(families: list[Family]) -> str:
    """The text of ``families`` (samples whose value is None are left out)."""
    lines = []
    for f in families:
        lines.append(f"# HELP {f.name} {_help(f.help)}")
        lines.append(f"# TYPE {f.name} {f.kind}")
        for labels, value in f.samples:
            if value is None:
                continue
            if labels:
                inner = ",".join(f'{k}="{escape_label(str(v))}"' for k, v in labels.items())
                lines.append(f"{f.name}{{{inner}}} {_number(value)}")
            else:
                lines.append(f"{f.name} {_number(value)}")
    return "\n".join(lines) + "\n"


def actor_families(infos: list[dict[str, Any]]) -> list[Family]:
    """User actors' calls, as their workers count them (``Worker.actor_info`` answers)."""
    calls, running, waiting = [], [], []
    for info in sorted(infos, key=lambda i: str(i.get("key"))):
        labels = {"actor": str(info.get("key")), "class": str(info.get("class"))}
        calls.append((labels, info.get("calls")))
        running.append((labels, info.get("running")))
        waiting.append((labels, info.get("waiting")))
    return [
        Family("actorrt_actors", "gauge", "User actors whose workers answered.", [({}, len(infos))]),
        Family("actorrt_actor_calls_total", "counter", "Method calls an actor received.", calls),
        Family("actorrt_actor_calls_running", "gauge", "An actor's method calls running now.", running),
        Family("actorrt_actor_calls_queued", "gauge", "An actor's method calls waiting their turn.", waiting),
    ]


#: The per-worker gauges: (metric, field of the worker's figures, help).
PER_WORKER = (
    ("actorrt_worker_threads", "threads", "Task threads of a worker."),
    ("actorrt_worker_tasks_processing", "processing", "Tasks placed on a worker and not done."),
    ("actorrt_worker_memory_managed_bytes", "managed", "Results a worker holds in memory."),
    ("actorrt_worker_memory_spilled_bytes", "spilled", "Results a worker spilled to disk (their size in memory)."),
    ("actorrt_worker_memory_rss_bytes", "rss", "A worker process's resident size."),
    ("actorrt_worker_memory_limit_bytes", "limit", "A worker's memory limit."),
    ("actorrt_worker_cpu_percent", "cpu", "A worker process's CPU use, percent of one core."),
    ("actorrt_worker_sent_bytes_per_second", "sent_per_s", "Bytes a worker process's connections sent."),
    ("actorrt_worker_received_bytes_per_second", "received_per_s", "Bytes a worker process's connections received."),
)


def families(scheduler: Scheduler) -> list[Family]:
    """What the scheduler knows, as metric families."""
    state = scheduler.state
    by_state = dict.fromkeys(TASK_STATES, 0)
    by_state.update(Counter(map(_state_of, state.tasks.values())))
    workers = sorted(state.workers)
    figures = []  # per worker: (labels, {field: value})
    for address in workers:
        ws = state.workers[address]
        labels = {"worker": address, "name": str(scheduler.worker_info.get(address, {}).get("name", ""))}
        figures.append((labels, {"threads": ws.nthreads, "processing": len(ws.processing),
                                 **scheduler.memory_of(address), **scheduler.usage_of(address)}))
    stream = scheduler.task_stream
    return [
        Family("actorrt_tasks", "gauge", "Tasks the scheduler holds, by state.",
               [({"state": s}, n) for s, n in by_state.items()]),
        Family("actorrt_tasks_finished_total", "counter", "Task runs that finished since the scheduler started.",
               [({}, state.finished_total)]),
        Family("actorrt_tasks_erred_total", "counter", "Task runs that raised since the scheduler started.",
               [({}, state.erred_total)]),
        Family("actorrt_workers", "gauge", "Workers connected.", [({}, len(workers))]),
        Family("actorrt_threads", "gauge", "Task threads over all workers.",
               [({}, sum(state.workers[a].nthreads for a in workers))]),
        Family("actorrt_clients", "gauge", "Clients connected.", [({}, len(state.clients))]),
        *(Family(name, "gauge", help_text, [(labels, values[field]) for labels, values in figures])
          for name, field, help_text in PER_WORKER),
        Family("actorrt_transfer_bytes_total", "counter", "Bytes workers fetched from each other.",
               [({}, stream.totals["transfer"][1])]),
        Family("actorrt_transfers_total", "counter", "Fetches of keys between workers.",
               [({}, stream.totals["transfer"][0])]),
        Family("actorrt_disk_write_bytes_total", "counter", "Bytes workers spilled to disk.",
               [({}, stream.totals["disk-write"][1])]),
        Family("actorrt_disk_read_bytes_total", "counter", "Bytes workers read back from disk.",
               [({}, stream.totals["disk-read"][1])]),
    ]


def render(scheduler: Scheduler, actor_infos: list[dict[str, Any]] | None = None) -> str:
    """The ``/metrics`` body; with the workers' figures of their actors if given."""
    return exposition(families(scheduler) + actor_families(actor_infos or []))


__all__ = ["CONTENT_TYPE", "Family", "escape_label", "exposition", "families", "render"]
