"""A worker takes copies of values from its peers when the scheduler asks
(``replicate``, ``rebalance``, ``retire_workers``: scheduler/moves.py).

The copies are the worker's own, as scattered data is (``stimulus_put_data``): kept
until the scheduler frees them, never dropped when a local task is done with them.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..core import ActorRef
from ..core.serialize import loads_exception
from ..protocol import WORKER_ID
from ..utils import sizeof

if TYPE_CHECKING:
    from .actor import Worker

logger = logging.getLogger("actorrt.worker")


async def acquire_replicas(worker: "Worker", who_has: dict[str, list[str]]) -> list[str]:
    """Fetch ``{key: [holders]}`` (each from its first holder that answers); the keys
    this worker now holds as its own. A key no holder could give is left out: the
    scheduler counts only the copies that are here."""
    state = worker.state
    own = _adopt_local_copies(worker, list(who_has))
    wanted = {k: [h for h in hs if h != worker.address] for k, hs in who_has.items() if k not in own}
    tried: dict[str, int] = {k: 0 for k in wanted}
    while wanted:
        by_peer: dict[str, list[str]] = {}
        for key, holders in wanted.items():
            if tried[key] < len(holders):
                by_peer.setdefault(holders[tried[key]], []).append(key)
        if not by_peer:
            break
        for peer, keys in by_peer.items():
            values = await _fetch(worker, peer, keys)
            for key in keys:
                tried[key] += 1
            if values:
                state_out = state.stimulus_put_data(values, {k: sizeof(v) for k, v in values.items()},
                                                    scattered=False)
                worker.carry_out(state_out)
                for key in values:
                    wanted.pop(key, None)
        wanted = {k: hs for k, hs in wanted.items() if tried[k] < len(hs)}
    return [k for k in who_has if _held_as_own(worker, k)]


def _adopt_local_copies(worker: "Worker", keys: list[str]) -> set[str]:
    """Keys already here (a copy fetched as a task's input, or ours): stored as our own."""
    own = set()
    for key in keys:
        row = worker.state.rows.get(key)
        if row is not None and row.state == "memory":
            if row.copy:
                worker.carry_out(worker.state.stimulus_put_data({key: worker.data[key]}, {key: row.nbytes},
                                                                scattered=False))
            own.add(key)
    return own


def _held_as_own(worker: "Worker", key: str) -> bool:
    row = worker.state.rows.get(key)
    return row is not None and row.state == "memory" and not row.copy


async def _fetch(worker: "Worker", peer: str, keys: list[str]) -> dict[str, Any]:
    """The values of ``keys`` that ``peer`` gives (loaded); none if it cannot be reached."""
    try:
        got = await worker.host.ask_bulk(ActorRef(peer, WORKER_ID), "get_data", keys=keys)
    except Exception as e:
        logger.info("could not copy %s from %s: %s", keys, peer, e)
        return {}
    for key, (blob, tb) in got["errors"].items():
        logger.warning("cannot copy %r from %s: %r", key, peer, loads_exception(blob, tb))
    values = {}
    for key, blob in got["data"].items():
        try:
            values[key] = blob.loads()
        except Exception as e:
            logger.warning("cannot load %r copied from %s: %r", key, peer, e)
    return values


__all__ = ["acquire_replicas"]
