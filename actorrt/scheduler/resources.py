"""Abstract resources and the other names of a worker, for :mod:`.placement`.

A worker declares resources (``{"GPU": 2, "MEM": 64e9}``: names and amounts that mean
whatever the cluster's users agree they mean); a task asks for some (``{"GPU": 1}``).
The task runs only on a worker that declared at least that much of each and has it
free, and holds it while it runs. Nothing here measures a real GPU: the amounts are
bookkeeping, as in dask.distributed.

``workers=`` names workers by address, by name, or by host (every worker on it); a
worker's aliases are all three, so a restriction can be resolved against workers
that join later. No I/O; the functions take the worker's state and change only it.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .placement import WorkerState

# Amounts are floats: what ten tasks of 0.1 took and gave back may not sum to exactly 0.
_SLACK = 1e-9

Resources = Mapping[str, float]


def aliases(ws: WorkerState) -> list[str]:
    """The names ``workers=`` may select ``ws`` by: address, name, host."""
    return [a for a in (ws.address, ws.name, ws.host) if a]


def selects(entries: Iterable[str] | None, ws: WorkerState) -> bool:
    """Whether a ``workers=`` restriction (None: none) names ``ws`` one way or another."""
    if entries is None:
        return True
    return ws.address in entries or bool(ws.name) and ws.name in entries or (
        ws.host is not None and ws.host in entries)


def declares(ws: WorkerState, need: Resources) -> bool:
    """Whether ``ws`` declared at least ``need`` of each resource (free or not): whether
    the task could ever run there."""
    have = ws.resources
    for name, amount in need.items():
        declared = have.get(name)
        if declared is None or declared + _SLACK < amount:
            return False
    return True


def fits(ws: WorkerState, need: Resources) -> bool:
    """Whether ``need`` is free on ``ws`` now."""
    have, used = ws.resources, ws.used_resources
    for name, amount in need.items():
        declared = have.get(name)
        if declared is None or declared - used.get(name, 0.0) + _SLACK < amount:
            return False
    return True


def take(ws: WorkerState, need: Resources) -> None:
    used = ws.used_resources
    for name, amount in need.items():
        used[name] = used.get(name, 0.0) + amount


def give_back(ws: WorkerState, need: Resources) -> None:
    used = ws.used_resources
    for name, amount in need.items():
        left = used.get(name, 0.0) - amount
        if left <= _SLACK:
            used.pop(name, None)
        else:
            used[name] = left


def signature(need: Resources, workers: Iterable[str] | None, allow_other_workers: bool,
              actor: bool) -> tuple:
    """What decides where a task with resources may go: two tasks of one signature fit
    the same workers, so when the first of them fits nowhere, neither does the next."""
    return (tuple(sorted(need.items())), None if workers is None else frozenset(workers),
            allow_other_workers, actor)


def why_unrunnable(need: Resources, candidates: Iterable[WorkerState]) -> str | None:
    """Why no worker among ``candidates`` (those ``workers=`` allows) can ever run a task
    needing ``need``; None when one can, as far as resources go."""
    candidates = list(candidates)
    if any(declares(ws, need) for ws in candidates):
        return None
    for name, amount in sorted(need.items()):
        most = max((ws.resources[name] for ws in candidates if name in ws.resources), default=None)
        if most is None:
            return (f"no worker has resource {name!r} (the task asks for {_amount(amount)}); "
                    "it waits until a worker declaring it joins")
        if most + _SLACK < amount:
            return (f"no worker has enough of resource {name!r} (the task asks for {_amount(amount)}, "
                    f"the most a worker declares is {_amount(most)}); it waits until one joins")
    asked = ", ".join(f"{k}={_amount(v)}" for k, v in sorted(need.items()))
    return (f"no single worker has all the resources the task asks for ({asked}); "
            "it waits until one joins")


def _amount(value: float) -> str:
    return f"{value:g}"


__all__ = ["aliases", "declares", "fits", "give_back", "selects", "signature", "take",
           "why_unrunnable"]
