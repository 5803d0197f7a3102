"""Semaphore: at most ``max_leases`` holders at once, FIFO-fair, leases tied to liveness."""
from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from ..core import Reply
from ._actor import SystemActor, Waiter, origin_address
from ._lease import LeaseProxy

if TYPE_CHECKING:
    from ..client.client import Client
    from ..core.comm import Comm


def check_max_leases(max_leases: Any) -> int:
    if isinstance(max_leases, bool) or not isinstance(max_leases, int):
        raise TypeError(f"max_leases must be an int, got {type(max_leases).__name__}: {max_leases!r}")
    if max_leases <= 0:
        raise ValueError(f"max_leases must be at least 1, got {max_leases}")
    return max_leases


class SemaphoreActor(SystemActor):
    """Leases held (by holder) and the FIFO line of waiting acquires."""

    kind = "semaphore"

    def __init__(self, name: str, max_leases: int = 1) -> None:
        super().__init__(name)
        self.max_leases = check_max_leases(max_leases)
        self.leases: dict[tuple[str, str], list[Waiter]] = {}  # (address, token) -> leases
        self.count = 0
        self.line: deque[Waiter] = deque()
        self.calls: dict[str, Waiter] = {}

    def summary(self) -> list[dict]:
        return [{"kind": self.kind, "name": self.name, "max_leases": self.max_leases, "size": self.count,
                 "holders": sorted({address for address, _ in self.leases}),
                 "waiters": [w.address for w in self.line]}]

    def idle(self) -> bool:
        return not (self.count or self.leases or self.line or self.calls)

    def check_options(self, options: dict) -> None:
        max_leases = options.get("max_leases", self.max_leases)
        if max_leases != self.max_leases:
            raise ValueError(f"Semaphore {self.name!r} exists with max_leases={self.max_leases}, "
                             f"not {max_leases}")

    def handle_acquire(self, call: str, token: str, reply: Reply, origin: "Comm | None",
                       timeout: float | None = None) -> None:
        request = self.waiter(reply, origin, call, token)
        if self.count < self.max_leases and not self.line:
            self._grant(request)
        elif timeout == 0:
            request.answer(False)
        else:
            self.line.append(request)
            self.calls[call] = request
            self.arm(request, timeout, self._expire)

    def handle_release(self, token: str, origin: "Comm | None") -> None:
        leases = self.leases.get((origin_address(self, origin), token))
        if not leases:
            raise RuntimeError(f"Semaphore {self.name!r} released too often: this object holds "
                               "no lease (release it from the object that acquired it)")
        self._release(leases[0])

    def handle_get_value(self) -> int:
        return self.count

    def handle_abandon(self, call: str) -> None:
        request = self.calls.get(call)
        if request is None:
            return
        if request in self.line:
            self.line.remove(request)
            self._forget(request)
            request.answer(False)
        else:
            self._release(request)

    def peer_lost(self, address: str) -> None:
        for request in [r for r in self.line if r.address == address]:
            self.line.remove(request)
            self._forget(request)
            request.answer(False)
        for key in [k for k in self.leases if k[0] == address]:
            for lease in list(self.leases.get(key, ())):
                self._release(lease)

    # --- machinery ----------------------------------------------------------------
    def _grant(self, request: Waiter) -> None:
        self.leases.setdefault((request.address, request.token), []).append(request)
        self.calls[request.call] = request
        self.count += 1
        self.disarm(request)
        request.answer(True)

    def _release(self, lease: Waiter) -> None:
        key = (lease.address, lease.token)
        leases = self.leases[key]
        leases.remove(lease)
        if not leases:
            del self.leases[key]
        self.calls.pop(lease.call, None)
        self.count -= 1
        self._wake()

    def _forget(self, request: Waiter) -> None:
        self.calls.pop(request.call, None)
        self.disarm(request)

    def _expire(self, request: Waiter) -> None:
        if request in self.line:
            self.line.remove(request)
        self._forget(request)
        request.answer(False)

    def _wake(self) -> None:
        while self.line and self.count < self.max_leases:
            request = self.line.popleft()
            if request.alive():
                self._grant(request)
            else:
                self._forget(request)
                request.answer(False)


class Semaphore(LeaseProxy):
    """At most ``max_leases`` holders at once across the cluster, by name.

    Each ``acquire`` takes one lease for this object; ``release`` gives one back
    (RuntimeError if this object holds none). Waiters are served first come, first
    served. Leases are released for you only when the holder's worker process dies or
    its client disconnects -- never because a holder is slow.

    >>> sem = Semaphore(max_leases=2, name="database")   # doctest: +SKIP
    >>> with sem:                                        # doctest: +SKIP
    ...     query()
    """

    kind = "semaphore"

    def __init__(self, max_leases: int = 1, name: str | None = None,
                 client: "Client | None" = None) -> None:
        self.max_leases = check_max_leases(max_leases)
        super().__init__(name, client)

    def _options(self) -> dict:
        return {"max_leases": self.max_leases}

    def __reduce__(self) -> Any:
        return Semaphore, (self.max_leases, self.name)

    def acquire(self, timeout: float | None = None, blocking: bool = True) -> Any:  # type: ignore[override]
        """Take a lease; True once held, False if ``timeout`` passed. ``timeout`` comes
        first, as in dask's ``Semaphore.acquire(timeout)``."""
        return super().acquire(blocking=blocking, timeout=timeout)

    def release(self) -> Any:
        """Give back a lease this object holds; True (as dask). RuntimeError if it holds none."""
        return self._call("release", then=_released, **self._holder())

    def get_value(self) -> Any:
        """The number of leases held right now (by anyone)."""
        return self._call("get_value")


def _released(_: Any) -> bool:
    return True
