"""Small rules where the client follows dask.distributed's observable behaviour.

Kept apart from the modules that use them so each rule reads on its own: what
``Future.type`` resolves to, when ``wait`` raises for cancelled futures, the checks
of ``wait_for_workers``, and scatter waiting for workers to join.
"""
from __future__ import annotations

import asyncio
import builtins
import importlib
import numbers
import sys
from typing import TYPE_CHECKING, Any, Iterable

from ..core.comm import host_of
from .future import CancelledError

if TYPE_CHECKING:
    from .client import Client
    from .future import Future


# --- Future.type ------------------------------------------------------------------------
# The wire carries a result's type as a name (core.typenames.type_name): "int" for a
# builtin, "module.qualname" otherwise. The client resolves it to the type object, as
# dask's ``future.type`` is one, importing the module if need be (unpickling the value
# would import it too). A type this process cannot import or reach (a class local to a
# function, a module only the workers have) stays its name, a string.

_TYPES: dict[str, Any] = {}
_TYPES_LIMIT = 1000  # distinct names kept; past that the cache starts over


def resolve_type(name: str | None) -> Any:
    """The type object named ``name``; the name itself when it cannot be found here."""
    if name is None:
        return None
    found = _TYPES.get(name)
    if found is None:
        found = _find_type(name)
        if len(_TYPES) > _TYPES_LIMIT:
            _TYPES.clear()
        _TYPES[name] = found
    return found


def _find_type(name: str) -> Any:
    if name == "Actor":  # a hosted actor's result is its handle (worker/user_actor.py)
        from .actor_handle import Actor
        return Actor
    if "." not in name:
        typ = getattr(builtins, name, None)
        return typ if isinstance(typ, type) else name
    # The module is the longest importable prefix: "pkg.mod.Outer.Inner" has a dotted
    # qualname, so try each split from the right.
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module_name, attrs = ".".join(parts[:cut]), parts[cut:]
        module = sys.modules.get(module_name)
        if module is None:
            try:
                module = importlib.import_module(module_name)
            except Exception:  # not importable here (or it fails to import): try a shorter one
                continue
        obj: Any = module
        for attr in attrs:
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        if isinstance(obj, type):
            return obj
    return name


# --- wait -------------------------------------------------------------------------------

class FuturesCancelledError(CancelledError):
    """``wait`` found cancelled futures among those done: says which, grouped by reason.

    ``keys_by_reason`` maps each reason to the keys cancelled for it.
    """

    def __init__(self, keys_by_reason: dict[str, list[str]]) -> None:
        self.keys_by_reason = keys_by_reason
        count = sum(len(keys) for keys in keys_by_reason.values())
        lines = [f"{count} Future{'s' if count > 1 else ''} cancelled:"]
        for reason, keys in sorted(keys_by_reason.items(), key=lambda kv: -len(kv[1])):
            lines.append(f"{len(keys)} cancelled for reason: {reason}; keys: {keys}")
        super().__init__("\n".join(lines))


def raise_if_cancelled(done: Iterable["Future"]) -> None:
    """dask's ``wait`` raises once it returns if a done future was cancelled (a pending one
    is not looked at: with ``FIRST_COMPLETED`` it may still finish)."""
    by_reason: dict[str, list[str]] = {}
    for f in done:
        if f._state.status == "cancelled":
            reason = f._state.cancel_reason or "unknown"
            by_reason.setdefault(reason, []).append(f.key)
    if by_reason:
        raise FuturesCancelledError(by_reason)


def cancelled_dependency(future: "Future") -> CancelledError:
    """The error of a submit whose argument is a cancelled Future: at the call, naming it."""
    reason = future._state.cancel_reason
    return CancelledError(f"cannot run a task on {future.key!r}: it was cancelled"
                          + (f" ({reason})" if reason else ""))


def released_future(key: str) -> CancelledError:
    """The error of asking a released Future for its result: no report reaches it any
    more, and its data may be gone (dask raises CancelledError here too)."""
    return CancelledError(f"the Future for {key!r} was released; it has no result any more")


# --- wait_for_workers ---------------------------------------------------------------------

def check_workers_wanted(n_workers: Any) -> int:
    """dask's rule: a positive int, else ValueError (``None`` and 0 included); another
    type (``"2"``) is a TypeError, as everywhere in actorrt."""
    if n_workers is not None and (isinstance(n_workers, bool) or not isinstance(n_workers, numbers.Integral)):
        raise TypeError(f"n_workers must be an int, got {type(n_workers).__name__}: {n_workers!r}")
    if n_workers is None or n_workers < 1:
        raise ValueError(f"n_workers must be a positive integer, got {n_workers!r}")
    return int(n_workers)


# --- scatter --------------------------------------------------------------------------------

def _selected(address: str, info: dict, restrict: list[str]) -> bool:
    """Whether a ``workers=`` list names this worker: by address, name or host."""
    return address in restrict or str(info.get("name")) in restrict or host_of(address) in restrict


async def workers_to_scatter_to(client: "Client", restrict: list[str] | None,
                                timeout: float | None) -> list[str]:
    """The workers scatter may use; with none yet, wait for one to join (as dask does) up
    to ``timeout`` seconds (the client's ``timeout`` when None), then TimeoutError."""
    if timeout is None:
        timeout = client.timeout
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    while True:
        info = await client.host.ask(client.scheduler, "workers")
        addresses = sorted(a for a, i in info.items() if not restrict or _selected(a, i, restrict))
        if addresses:
            return addresses
        remaining = None if deadline is None else deadline - loop.time()
        if remaining is not None and remaining <= 0:
            raise TimeoutError("scatter: no workers to scatter to after waiting "
                               f"{timeout} s: " + (f"none of {restrict} is a worker of this cluster"
                                                   if restrict else "the cluster has none"))
        try:  # the scheduler answers once one more worker is in: no polling
            await asyncio.wait_for(client.host.ask(client.scheduler, "wait_for_workers",
                                                   n=len(info) + 1), remaining)
        except asyncio.TimeoutError:
            pass  # (the next turn raises, having looked once more)


__all__ = ["FuturesCancelledError", "cancelled_dependency", "check_workers_wanted",
           "raise_if_cancelled", "released_future", "resolve_type", "workers_to_scatter_to"]
