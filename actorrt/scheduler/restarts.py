"""Restarting workers through their nannies (``client.restart``, ``client.restart_workers``).

The scheduler has no line to a nanny. It tells the worker ``restart``; the worker stops
and its process exits with the nanny's restart code; the nanny starts a new worker,
which registers with a new address and the same name. So a restart is done when a
worker of that name registers again. The old worker's leaving is an ordinary worker
loss: its tasks run elsewhere, its results are recomputed if still wanted.
"""
from __future__ import annotations

import asyncio
from typing import Callable

#: Seconds a restart waits for a worker to come back when the caller gives no timeout.
RESTART_TIMEOUT = 60.0


class Restarts:
    """Workers told to restart, each waiting for a worker of its name to register."""

    def __init__(self) -> None:
        self._waiting: dict[str, list[asyncio.Future[None]]] = {}  # worker name -> restarts of it

    def registered(self, name: str) -> None:
        """A worker named ``name`` registered: one restart waiting for that name is done."""
        waiters = self._waiting.get(name)
        while waiters:
            fut = waiters.pop(0)
            if not fut.done():
                fut.set_result(None)
                break
        if not waiters:
            self._waiting.pop(name, None)

    async def restart(self, addresses: list[str], worker_info: dict[str, dict],
                      tell_restart: Callable[[str], None], timeout: float, wait: bool = True) -> dict[str, object]:
        """Restart each worker in ``addresses``; ``{address: "OK" | [kind, message]}`` once
        each is back or ``timeout`` seconds passed (with ``wait=False``, once each was
        told). ``kind`` is ``"timeout"`` or ``"error"`` (no such worker, no nanny); one
        worker's error does not hold the others back."""
        results: dict[str, object] = {}
        pending: dict[str, tuple[str, asyncio.Future[None]]] = {}
        loop = asyncio.get_running_loop()
        for address in dict.fromkeys(addresses):
            problem = _cannot_restart(address, worker_info.get(address))
            if problem is not None:
                results[address] = ["error", problem]
                continue
            name = worker_info[address]["name"]
            fut: asyncio.Future[None] | None = None
            if wait:  # (listening before telling: the new worker may register at once)
                fut = loop.create_future()
                self._waiting.setdefault(name, []).append(fut)
            try:
                tell_restart(address)
            except Exception as e:  # its connection is gone already: it is not coming back by our doing
                if fut is not None:
                    self._forget(name, fut)
                results[address] = ["error", f"could not tell worker {address} to restart: {e}"]
                continue
            if fut is None:
                results[address] = "OK"
            else:
                pending[address] = (name, fut)
        if pending:
            await asyncio.wait([fut for _, fut in pending.values()], timeout=timeout)
        for address, (name, fut) in pending.items():
            if fut.done():
                results[address] = "OK"
            else:
                self._forget(name, fut)
                results[address] = ["timeout", f"worker {address} (name {name!r}) was told to restart, but no "
                                               f"worker of that name registered again within {timeout:g} s"]
        return results

    def _forget(self, name: str, fut: asyncio.Future[None]) -> None:
        fut.cancel()
        waiters = self._waiting.get(name, [])
        if fut in waiters:
            waiters.remove(fut)
        if not waiters:
            self._waiting.pop(name, None)


def _cannot_restart(address: str, info: dict | None) -> str | None:
    """Why the worker at ``address`` cannot be restarted through a nanny; None if it can."""
    if info is None:
        return f"no worker {address!r} in the cluster"
    if not info.get("nanny"):
        return (f"worker {address} has no nanny to start it again (it was started with --no-nanny, "
                "nanny=False, or in-process)")
    if not info.get("name"):
        return f"worker {address} has no name by which to recognise it when it comes back"
    return None


__all__ = ["RESTART_TIMEOUT", "Restarts"]
