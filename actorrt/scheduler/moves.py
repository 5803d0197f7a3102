"""Carrying out data moves for the Scheduler actor: ``replicate``, ``rebalance`` and
``retire_workers`` (the plans are :mod:`.replicas`'s).

A recipient is asked to ``acquire_replicas`` (it fetches from the holders) and answers
with the keys it now holds; only then does the scheduler count those copies, and only
then does a sender drop its copy (a move), so a value is never without a holder the
scheduler knows. The three operations take turns (one lock), as in dask: a rebalance
planned while a retirement moves data would plan on a picture about to change.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
from typing import TYPE_CHECKING, Any

from ..core import ActorRef
from ..protocol import WORKER_ID
from .replicas import Move, plan_rebalance, plan_replicate, plan_retire, replicas_added, replicas_dropped, unique_keys

if TYPE_CHECKING:
    from .actor import Scheduler
    from .state import SchedulerState

logger = logging.getLogger("actorrt.scheduler")

#: Bytes one ``acquire_replicas`` request brings in at most (a larger value goes alone),
#: so that a big rebalance does not land on a recipient all at once.
BATCH_BYTES = 256 << 20

#: Rounds of moves a retirement makes while values only the retiring workers hold keep
#: appearing (a task that finished there meanwhile).
RETIRE_ROUNDS = 3


class DataMover:
    """Moves values between workers on the scheduler's behalf; one operation at a time."""

    def __init__(self, scheduler: "Scheduler") -> None:
        self.scheduler = scheduler
        self.lock = asyncio.Lock()
        self.retiring: set[str] = set()  # no task goes there; memory reports do not resume them
        self._ids = itertools.count()

    def _sid(self, what: str) -> str:
        return f"{what}-moves-{next(self._ids)}"

    # -------------------------------------------------------------- operations
    async def replicate(self, keys: list[str], n: int | None, workers: list[str] | None) -> int:
        """Bring each key to ``n`` workers (all of ``workers``); the copies made."""
        async with self.lock:
            state = self.scheduler.state
            moves, excess = plan_replicate(state, keys, n, workers)
            sid = self._sid("replicate")
            for address, dropped in excess.items():
                self.scheduler._apply(replicas_dropped(state, address, dropped, sid))
            return len(await self.carry_out(moves, drop_senders=False))

    async def rebalance(self, keys: list[str] | None, workers: list[str] | None) -> int:
        """Even out the bytes held by ``workers``; the values moved."""
        async with self.lock:
            moves = plan_rebalance(self.scheduler.state, keys, workers)
            return len(await self.carry_out(moves, drop_senders=True))

    async def retire(self, addresses: list[str], close: bool, remove: bool) -> dict[str, dict]:
        """Copy what only these workers hold elsewhere, then close and remove them.
        ``{address: info}`` of the workers retired; one whose values could not all be
        copied (no other worker, an actor lives there) stays, as in dask."""
        sch = self.scheduler
        state = sch.state
        targets = [a for a in dict.fromkeys(addresses) if a in state.workers and a not in self.retiring]
        if not targets:
            return {}
        self.retiring.update(targets)
        sid = self._sid("retire")
        retired: dict[str, dict] = {}
        try:
            for a in targets:  # no new task goes there from now on
                sch._apply(state.stimulus_worker_paused(a, True, sid))
            async with self.lock:
                for _ in range(RETIRE_ROUNDS):
                    moves, _stuck = plan_retire(state, set(targets))
                    if not moves:
                        break
                    await self.carry_out(moves, drop_senders=False)
                left = unique_keys(state, set(targets))
                for a in targets:
                    if a in left or a not in state.workers:
                        if a in left:
                            logger.warning("cannot retire worker %s: %d values only it holds have nowhere to "
                                           "go (e.g. %r)", a, len(left[a]), left[a][0])
                        continue
                    retired[a] = self._retire_one(a, close, remove, sid)
        finally:
            self.retiring.difference_update(targets)
            for a in targets:
                if a not in retired and a in state.workers:
                    sch._apply(state.stimulus_worker_paused(a, sch.reported_paused(a), sid))
        return retired

    def _retire_one(self, address: str, close: bool, remove: bool, sid: str) -> dict:
        sch = self.scheduler
        state = sch.state
        info = sch.worker_identity(address)
        ws = state.workers[address]
        # Tasks placed there run elsewhere: not a failure, no worker death counted.
        for ts in sorted(ws.processing, key=lambda t: t.key):
            if not ts.actor:
                sch._apply(state.stimulus_reschedule(address, ts.key, sid))
        if close:
            # Closed by its scheduler, a worker exits 0, and its nanny with it (no restart).
            try:
                sch.host.tell(ActorRef(address, WORKER_ID), "close")
            except Exception as e:
                logger.info("could not tell retired worker %s to close: %s", address, e)
        if remove:
            sch._remove_worker(address, "retired")
        info["status"] = "closed" if close else "closing_gracefully"
        return info

    # -------------------------------------------------------------- moves
    async def carry_out(self, moves: list[Move], drop_senders: bool) -> list[Move]:
        """Ask each recipient to fetch its keys (recipients at once, each one's batches in
        turn); count the copies they report; for a move, drop the senders' copies. The
        moves that happened."""
        by_recipient: dict[str, list[Move]] = {}
        for m in moves:
            by_recipient.setdefault(m.recipient, []).append(m)
        done_lists = await asyncio.gather(*[self._fill(r, ms) for r, ms in by_recipient.items()])
        done = [m for ms in done_lists for m in ms]
        if drop_senders:
            state = self.scheduler.state
            sid = self._sid("drop")
            by_sender: dict[str, list[str]] = {}
            for m in done:
                by_sender.setdefault(m.sender, []).append(m.key)
            for sender, keys in by_sender.items():
                self.scheduler._apply(replicas_dropped(state, sender, keys, sid))
        return done

    async def _fill(self, recipient: str, moves: list[Move]) -> list[Move]:
        done: list[Move] = []
        for batch in _batches(self.scheduler, moves):
            got = await self._acquire(recipient, batch)
            done += [m for m in batch if m.key in got]
        return done

    async def _acquire(self, recipient: str, batch: list[Move]) -> set[str]:
        sch = self.scheduler
        state = sch.state
        who_has: dict[str, list[str]] = {}
        for m in batch:
            ts = state.tasks.get(m.key)
            if ts is None or ts.state != "memory":
                continue  # released meanwhile
            # The planned sender first, then any other holder should it be gone.
            others = sorted(ws.address for ws in ts.who_has if ws.address not in (m.sender, recipient))
            who_has[m.key] = [m.sender, *others]
        if not who_has:
            return set()
        try:
            sch.outbox.send_held(recipient)  # (a free held back must not arrive after the copies)
            got: Any = await sch.host.ask(ActorRef(recipient, WORKER_ID), "acquire_replicas", who_has=who_has)
        except Exception as e:
            logger.info("worker %s could not take copies of %d values: %s", recipient, len(who_has), e)
            return set()
        keys = [k for k in got if isinstance(k, str)] if isinstance(got, list) else []
        sch._apply(replicas_added(state, recipient, keys, self._sid("acquired")))
        still = state.workers.get(recipient)
        return {k for k in keys if still is not None and k in state.tasks and still in state.tasks[k].who_has}


def workers_to_close(state: "SchedulerState", worker_info: dict[str, dict], names: list[str] | None,
                     n: int | None) -> list[str]:
    """Which workers ``retire_workers`` closes when given no addresses: those named
    ``names``; else ``n`` of them; else every idle one while the rest keep twice the
    memory the data needs (dask's ``workers_to_close``). Idle and least-loaded first;
    with neither ``names`` nor ``n``, one worker always stays."""
    if names is not None:
        wanted = {str(x) for x in names}
        return sorted(a for a, i in worker_info.items() if str(i.get("name")) in wanted and a in state.workers)
    # Idle first, then the fewest bytes held, then the latest to join.
    order = sorted(state.workers.values(), key=lambda ws: (bool(ws.processing), ws.managed_bytes, -ws.seq))
    if n is not None:
        return [ws.address for ws in order[:max(0, n)]]
    total = sum(ws.managed_bytes for ws in state.workers.values())
    limits = {a: (i.get("memory") and i["memory"].limit) or 0 for a, i in worker_info.items()}
    capacity = sum(limits.values())
    out: list[str] = []
    for ws in order:
        if ws.processing or len(out) + 1 >= len(order):
            break
        left = capacity - limits.get(ws.address, 0)
        if capacity and left < 2 * total:
            break
        capacity = left
        out.append(ws.address)
    return out


def _batches(sch: "Scheduler", moves: list[Move]) -> list[list[Move]]:
    """Consecutive batches of at most BATCH_BYTES (a larger value alone)."""
    out: list[list[Move]] = []
    size = 0
    for m in moves:
        ts = sch.state.tasks.get(m.key)
        nbytes = ts.nbytes if ts is not None else 0
        if not out or (size + nbytes > BATCH_BYTES and out[-1]):
            out.append([])
            size = 0
        out[-1].append(m)
        size += nbytes
    return out


__all__ = ["BATCH_BYTES", "DataMover", "workers_to_close"]
