"""The actors page's data: each user actor as the scheduler knows it (class, name,
worker, restarts, failure), with its calls as its worker counts them.

The call figures live on the workers only. They are fetched on demand, while an
actors page is open (:class:`ActorStats`: one ``actor_info`` ask per worker hosting
actors per push), so an unwatched cluster pays nothing for them.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from ..core import ActorRef
from ..protocol import WORKER_ID
from .task_view import failure

if TYPE_CHECKING:
    from ..core.host import Host
    from ..scheduler.actor import Scheduler

logger = logging.getLogger("actorrt.dashboard")

#: Actors listed at most.
MAX_ACTORS = 1000
#: How long a worker may take to say what its actors did before the page goes without.
ASK_TIMEOUT = 5.0


def actor_rows(scheduler: Scheduler, max_actors: int = MAX_ACTORS) -> list[dict[str, Any]]:
    """The scheduler's side: one row per actor task it holds, by key."""
    rows: list[dict[str, Any]] = []
    for key, ts in scheduler.state.tasks.items():
        if not ts.actor:
            continue
        options = ts.actor if isinstance(ts.actor, dict) else {}
        worker = next(iter(ts.who_has)).address if ts.who_has else (
            ts.processing_on.address if ts.processing_on is not None else None)
        rows.append({"key": key, "class": ts.name, "name": options.get("name"), "state": ts.state,
                     "worker": worker, "restarts": ts.restarts,
                     "error": failure(ts)[0] if ts.state == "erred" else None})
        if len(rows) >= max_actors:
            break
    rows.sort(key=lambda r: r["key"])
    return rows


async def actor_infos(host: Host, workers: list[str]) -> list[dict[str, Any]]:
    """What ``workers`` say of the actors they host (``Worker.actor_info``); a worker
    that does not answer within ASK_TIMEOUT is left out."""
    answers = await asyncio.gather(*(asyncio.wait_for(host.ask(ActorRef(w, WORKER_ID), "actor_info"),
                                                      ASK_TIMEOUT) for w in workers),
                                   return_exceptions=True)
    infos: list[dict[str, Any]] = []
    for worker, answer in zip(workers, answers):
        if isinstance(answer, BaseException):
            logger.debug("dashboard: worker %s did not describe its actors: %r", worker, answer)
        else:
            infos.extend(answer)
    return infos


class ActorStats:
    """The workers' figures of their actors, asked for while an actors page is open,
    and the call rate each pair of answers gives."""

    def __init__(self) -> None:
        self.latest: dict[str, dict[str, Any]] = {}   # actor key -> its worker's answer
        self._previous: dict[str, tuple[float, int]] = {}  # key -> (time, calls) of the last answer
        self.rates: dict[str, float] = {}
        self._asking: asyncio.Task | None = None

    def refresh(self, host: Host, workers: list[str]) -> None:
        """Ask ``workers`` (without waiting); answers are merged as they arrive. One
        round at a time: a slow worker delays the figures, it does not pile up asks."""
        if self._asking is not None and not self._asking.done():
            return
        self._asking = asyncio.get_running_loop().create_task(self._ask(host, workers))

    async def _ask(self, host: Host, workers: list[str]) -> None:
        infos = await actor_infos(host, workers)
        now = time.monotonic()
        for info in infos:
            self.merge(info["key"], info, now)

    def merge(self, key: str, info: dict[str, Any], now: float) -> None:
        """Keep ``info``; the rate is calls since the previous answer over the time between."""
        before = self._previous.get(key)
        if before is not None and now > before[0] and info["calls"] >= before[1]:
            self.rates[key] = (info["calls"] - before[1]) / (now - before[0])
        self._previous[key] = (now, info["calls"])
        self.latest[key] = info

    def close(self) -> None:
        if self._asking is not None:
            self._asking.cancel()
            self._asking = None


def actors(scheduler: Scheduler, stats: ActorStats) -> dict[str, Any]:
    """The page's rows: the scheduler's view joined with the workers' last figures."""
    rows = actor_rows(scheduler)
    for row in rows:
        info = stats.latest.get(row["key"], {})
        row.update(calls=info.get("calls"), calls_per_s=stats.rates.get(row["key"]),
                   in_flight=info.get("running"), queued=info.get("waiting"),
                   last_error=info.get("last_error") or row["error"])
    live = {r["key"] for r in rows}
    for key in [k for k in stats.latest if k not in live]:  # forgotten actors
        stats.latest.pop(key, None)
        stats.rates.pop(key, None)
        stats._previous.pop(key, None)
    return {"actors": rows}


def workers_hosting(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({r["worker"] for r in rows if r["worker"] is not None and r["state"] == "memory"})
