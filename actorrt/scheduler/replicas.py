"""Where copies of values should go: ``replicate``, ``rebalance`` and ``retire_workers``.

No I/O. Each ``plan_*`` function reads the scheduler's state and returns the
:class:`Move` s that would reach the goal; :mod:`.moves` carries them out (the recipient
fetches from a holder) and reports back here, through :func:`replicas_added` and
:func:`replicas_dropped`, which change the replica bookkeeping only through
:class:`~actorrt.scheduler.placement.Placement` (so ``who_has``/``has_what`` agree).

Only values the scheduler knows are in memory move, and never an actor's key: an actor
lives on its worker, and its handle means nothing elsewhere.

The rebalance is greedy and simple on purpose (dask's weighs process memory and
fractions of memory limits, which a user cannot predict): while the worker holding the
most bytes and the one holding the fewest differ by more than ``tolerance`` of the mean,
move the largest value from the first to the second that narrows that gap.
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple

from .instructions import Free, Instruction
from .task_state import forget_put

if TYPE_CHECKING:
    from .placement import WorkerState
    from .state import SchedulerState
    from .task_state import TaskState

#: Rebalanced when each worker's bytes are within this fraction of the mean.
REBALANCE_TOLERANCE = 0.1


class Move(NamedTuple):
    """Copy ``key`` from ``sender`` to ``recipient`` (then drop the sender's, for a move)."""
    key: str
    sender: str
    recipient: str


def movable(ts: "TaskState | None") -> bool:
    """Whether this value may be copied between workers."""
    return ts is not None and ts.state == "memory" and not ts.actor and bool(ts.who_has)


def _bytes(ws: "WorkerState") -> int:
    # +1 per value: among empty or unmeasured values, the count decides.
    return sum(ts.nbytes + 1 for ts in ws.has_what)


def _pick(candidates: Iterable["WorkerState"], load: dict["WorkerState", int]) -> "WorkerState":
    """The candidate holding the fewest bytes (planned moves included); the earliest to join on a tie."""
    return min(candidates, key=lambda ws: (load[ws], ws.seq))


# ------------------------------------------------------------------ replicate
def plan_replicate(state: "SchedulerState", keys: Iterable[str], n: int | None,
                   workers: list[str] | None) -> tuple[list[Move], dict[str, list[str]]]:
    """Moves that bring each key to ``n`` of ``workers`` (all of them when None; every
    one of them when ``n`` is None), and ``{worker: [keys]}`` of copies beyond ``n``
    there that go (as dask: replicate sets the count, it does not only raise it)."""
    pool = _workers(state, workers)
    target = len(pool) if n is None else min(n, len(pool))
    load = {ws: _bytes(ws) for ws in state.workers.values()}
    moves: list[Move] = []
    excess: dict[str, list[str]] = {}
    for key in dict.fromkeys(keys):
        ts = state.tasks.get(key)
        if not movable(ts) or not pool:
            continue
        assert ts is not None
        have = [ws for ws in pool if ws in ts.who_has]
        if len(have) > target:
            # Drop from those holding the most; one copy always stays somewhere.
            keep = max(target, 1 if len(ts.who_has) == len(have) else 0)
            for ws in sorted(have, key=lambda w: (-load[w], -w.seq))[:len(have) - keep]:
                excess.setdefault(ws.address, []).append(key)
                load[ws] -= ts.nbytes + 1
            continue
        senders = sorted(ts.who_has, key=lambda w: w.seq)
        chosen: set["WorkerState"] = set()
        for i in range(target - len(have)):
            recipient = _pick([ws for ws in pool if ws not in ts.who_has and ws not in chosen], load)
            chosen.add(recipient)
            # (Senders in turn: a value wanted everywhere does not all come from one.)
            moves.append(Move(key, senders[i % len(senders)].address, recipient.address))
            load[recipient] += ts.nbytes + 1
    return moves, excess


def _workers(state: "SchedulerState", addresses: list[str] | None) -> list["WorkerState"]:
    """The live workers among ``addresses`` (all when None), in joining order."""
    if addresses is None:
        return sorted(state.workers.values(), key=lambda ws: ws.seq)
    return sorted({state.workers[a] for a in addresses if a in state.workers}, key=lambda ws: ws.seq)


# ------------------------------------------------------------------ rebalance
def plan_rebalance(state: "SchedulerState", keys: Iterable[str] | None, workers: list[str] | None,
                   tolerance: float = REBALANCE_TOLERANCE) -> list[Move]:
    """Moves that even out the bytes held by ``workers`` (all when None), moving only
    ``keys`` (every movable value when None)."""
    pool = _workers(state, workers)
    if len(pool) < 2:
        return []
    allowed = None if keys is None else set(keys)
    load = {ws: sum(ts.nbytes for ts in ws.has_what) for ws in pool}
    held = {ws: sorted((ts for ts in ws.has_what if movable(ts) and (allowed is None or ts.key in allowed)),
                       key=lambda ts: (-ts.nbytes, ts.key)) for ws in pool}
    mean = sum(load.values()) / len(pool)
    moves: list[Move] = []
    gone: set[tuple[str, "WorkerState"]] = set()
    arriving: set[tuple[str, str]] = set()  # (key, recipient) of the moves planned so far
    while True:
        sender = max(pool, key=lambda ws: (load[ws], -ws.seq))
        recipient = min(pool, key=lambda ws: (load[ws], ws.seq))
        gap = load[sender] - load[recipient]
        if gap <= tolerance * mean:
            break
        # The largest value that narrows the gap (moving more than half of it widens it).
        ts = next((t for t in held[sender] if (t.key, sender) not in gone and 0 < t.nbytes < gap
                   and recipient not in t.who_has
                   and (t.key, recipient.address) not in arriving), None)
        if ts is None:
            break
        moves.append(Move(ts.key, sender.address, recipient.address))
        arriving.add((ts.key, recipient.address))
        gone.add((ts.key, sender))
        load[sender] -= ts.nbytes
        load[recipient] += ts.nbytes
    return moves


# ------------------------------------------------------------------ retire
def plan_retire(state: "SchedulerState", retiring: set[str]) -> tuple[list[Move], set[str]]:
    """Moves that put each value held only by ``retiring`` workers on another worker,
    and the retiring workers that cannot go (a value of theirs has nowhere to go)."""
    others = [ws for a, ws in state.workers.items() if a not in retiring]
    # A paused worker is nearly full: only when every other one is.
    recipients = [ws for ws in others if not ws.paused] or others
    load = {ws: _bytes(ws) for ws in state.workers.values()}
    moves: list[Move] = []
    moving: set[str] = set()  # keys a move is planned for already
    stuck: set[str] = set()
    for address in sorted(retiring):
        ws = state.workers.get(address)
        if ws is None:
            continue
        for ts in sorted(ws.has_what, key=lambda t: t.key):
            if any(h.address not in retiring for h in ts.who_has):
                continue  # another copy stays
            if ts.actor or not recipients:
                stuck.add(address)  # (an actor cannot move: its worker must stay)
                continue
            if ts.key in moving:
                continue  # (held by two retiring workers: one copy is enough)
            recipient = _pick(recipients, load)
            moves.append(Move(ts.key, address, recipient.address))
            moving.add(ts.key)
            load[recipient] += ts.nbytes + 1
    return moves, stuck


def unique_keys(state: "SchedulerState", retiring: set[str]) -> dict[str, list[str]]:
    """``{worker: [keys only the retiring workers hold]}``: what would be lost."""
    out: dict[str, list[str]] = {}
    for address in retiring:
        ws = state.workers.get(address)
        if ws is None:
            continue
        lost = [ts.key for ts in ws.has_what if not any(h.address not in retiring for h in ts.who_has)]
        if lost:
            out[address] = sorted(lost)
    return out


# ------------------------------------------------------------------ bookkeeping
def replicas_added(state: "SchedulerState", worker: str, keys: Iterable[str],
                   stimulus_id: str) -> list[Instruction]:
    """``worker`` now holds copies of ``keys``. A key released meanwhile is freed there
    again (the scheduler never learns of a copy it did not ask for: it would stay for ever)."""
    ws = state.workers.get(worker)
    if ws is None:
        return []  # gone meanwhile: its copies with it
    stale = []
    for key in keys:
        ts = state.tasks.get(key)
        if ts is None or ts.state != "memory":
            stale.append(key)
        elif ws not in ts.who_has:
            state.placement.add_replica(ts, ws)
            state.log.append((key, "memory", f"replica-on-{worker}", stimulus_id, time.time()))
    return [Free(worker, stale)] if stale else []


def replicas_dropped(state: "SchedulerState", worker: str, keys: Iterable[str],
                     stimulus_id: str) -> list[Instruction]:
    """``worker`` lets go of its copies of ``keys``, each only where another copy stays."""
    ws = state.workers.get(worker)
    if ws is None:
        return []
    dropped = []
    puts: dict[str, int] = {}  # (a scattered copy: the put the worker frees)
    for key in keys:
        ts = state.tasks.get(key)
        if ts is None or ws not in ts.who_has or len(ts.who_has) < 2:
            continue
        state.placement.drop_replica(ts, ws)
        state.log.append((key, "memory", f"replica-off-{worker}", stimulus_id, time.time()))
        dropped.append(key)
        put = forget_put(ts, ws)
        if put:
            puts[key] = put
    return [Free(worker, dropped, puts or None)] if dropped else []


__all__ = ["Move", "REBALANCE_TOLERANCE", "movable", "plan_rebalance", "plan_replicate", "plan_retire",
           "replicas_added", "replicas_dropped", "unique_keys"]
