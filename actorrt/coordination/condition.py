"""Condition: wait for a notification while holding a lock, cluster-wide.

Asked for in dask/distributed#2007. The condition actor owns its lock, so ``wait``
is one message that releases the lock and joins the waiters atomically: no
notification can slip in between. A notified (or timed-out) waiter joins the lock's
FIFO line and its ``wait`` returns once it holds the lock again, as with
``threading.Condition``.
"""
from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

from ..core import Reply
from ._actor import SystemActor, Waiter, origin_address
from ._lease import LeaseProxy
from ._proxy import check_timeout

if TYPE_CHECKING:
    from ..client.client import Client
    from ..core.comm import Comm


class ConditionActor(SystemActor):
    """The lock (owner and FIFO line) and the waiters for a notification.

    In the lock line, a waiter's ``data`` is what its call answers once it holds the
    lock: True for an acquire, True/False (notified/timed out) for a wait.
    """

    kind = "condition"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.owner: Waiter | None = None
        self.line: deque[Waiter] = deque()
        self.waiting: deque[Waiter] = deque()
        self.calls: dict[str, Waiter] = {}

    def summary(self) -> list[dict]:
        return [{"kind": self.kind, "name": self.name,
                 "holders": [self.owner.address] if self.owner is not None else [],
                 "waiters": [w.address for w in self.line] + [w.address for w in self.waiting]}]

    def idle(self) -> bool:
        return self.owner is None and not (self.line or self.waiting or self.calls)

    # --- the lock -----------------------------------------------------------------
    def handle_acquire(self, call: str, token: str, reply: Reply, origin: "Comm | None",
                       timeout: float | None = None) -> None:
        request = self.waiter(reply, origin, call, token, data=True)
        if self.owner is None and not self.line:
            self._grant(request)
        elif timeout == 0:
            request.answer(False)
        else:
            self.line.append(request)
            self.calls[call] = request
            self.arm(request, timeout, self._expire_acquire)

    def handle_release(self, token: str, origin: "Comm | None") -> None:
        self._check_owner(token, origin, "released")
        self._release()

    def handle_locked(self) -> bool:
        return self.owner is not None

    # --- the condition ------------------------------------------------------------
    def handle_wait(self, call: str, token: str, reply: Reply, origin: "Comm | None",
                    timeout: float | None = None) -> None:
        self._check_owner(token, origin, "waited on")
        waiter = self.waiter(reply, origin, call, token)
        self._release()
        self.waiting.append(waiter)
        self.calls[call] = waiter
        self.arm(waiter, timeout, lambda w: self._to_line(w, False))

    def handle_notify(self, token: str, origin: "Comm | None", n: int = 1) -> int:
        self._check_owner(token, origin, "notified")
        woken = 0
        while self.waiting and woken < n:
            waiter = self.waiting[0]
            if not waiter.alive():  # its host is gone; a notification to it would be lost
                self._remove(waiter)
                waiter.answer(False)
                continue
            self._to_line(waiter, True)
            woken += 1
        return woken

    def handle_notify_all(self, token: str, origin: "Comm | None") -> int:
        return self.handle_notify(token, origin, n=len(self.waiting))

    def handle_abandon(self, call: str) -> None:
        waiter = self.calls.get(call)
        if waiter is None:
            return
        if waiter is self.owner:
            self._release()
            return
        self._remove(waiter)
        waiter.answer(False)

    def peer_lost(self, address: str) -> None:
        for waiter in [w for w in (*self.line, *self.waiting) if w.address == address]:
            self._remove(waiter)
            waiter.answer(False)
        if self.owner is not None and self.owner.address == address:
            self._release()

    # --- machinery ----------------------------------------------------------------
    def _check_owner(self, token: str, origin: "Comm | None", what: str) -> None:
        owner = self.owner
        if owner is None or (owner.address, owner.token) != (origin_address(self, origin), token):
            raise RuntimeError(f"Condition {self.name!r} {what} without holding its lock "
                               "(acquire it first, from this same object)")

    def _grant(self, request: Waiter) -> None:
        self.owner = request
        self.calls[request.call] = request
        self.disarm(request)
        request.answer(request.data)

    def _release(self) -> None:
        if self.owner is not None:
            self.calls.pop(self.owner.call, None)
        self.owner = None
        while self.line:
            request = self.line.popleft()
            if request.alive():
                self._grant(request)
                return
            self._forget(request)
            request.answer(False)

    def _to_line(self, waiter: Waiter, notified: bool) -> None:
        """A waiter was notified or timed out: it now waits for the lock, untimed."""
        self.waiting.remove(waiter)
        self.disarm(waiter)
        waiter.data = notified
        self.line.append(waiter)
        if self.owner is None:
            self._release()  # hand the free lock to the head of the line

    def _expire_acquire(self, request: Waiter) -> None:
        self._remove(request)
        request.answer(False)

    def _remove(self, waiter: Waiter) -> None:
        for queue in (self.line, self.waiting):
            try:
                queue.remove(waiter)
            except ValueError:
                pass
        self._forget(waiter)

    def _forget(self, waiter: Waiter) -> None:
        self.calls.pop(waiter.call, None)
        self.disarm(waiter)


class Condition(LeaseProxy):
    """A named condition variable with its own lock, like ``threading.Condition``.

    ``wait`` (lock held) releases the lock, waits for a ``notify``, and re-acquires
    the lock before returning: True if notified, False if ``timeout`` passed. Waiting
    or notifying without holding the lock raises RuntimeError.

    >>> cond = Condition("stock")             # doctest: +SKIP
    >>> with cond:                            # consumer  # doctest: +SKIP
    ...     cond.wait_for(lambda: stock.get() > 0, timeout=5)
    >>> with cond:                            # producer  # doctest: +SKIP
    ...     stock.set(stock.get() + 1); cond.notify()
    """

    kind = "condition"

    def __init__(self, name: str | None = None, client: "Client | None" = None) -> None:
        super().__init__(name, client)

    def __reduce__(self) -> Any:
        return Condition, (self.name,)

    def locked(self) -> Any:
        return self._call("locked")

    def wait(self, timeout: float | None = None) -> Any:
        """Release the lock, wait for a notification, re-acquire; False on timeout."""
        return self._call("wait", blocking=True, token=self._token, timeout=check_timeout(timeout))

    def notify(self, n: int = 1) -> Any:
        """Wake up to ``n`` waiters (they run once they get the lock). Returns how many."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        return self._call("notify", token=self._token, n=n)

    def notify_all(self) -> Any:
        """Wake every waiter. Returns how many."""
        return self._call("notify_all", token=self._token)

    def wait_for(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        """Wait until ``predicate()`` is true (checked with the lock held); its last value."""
        timeout = check_timeout(timeout)
        if self.client.asynchronous:
            return self._wait_for_async(predicate, timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        result = predicate()
        while not result:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            self.wait(remaining)
            result = predicate()
        return result

    async def _wait_for_async(self, predicate: Callable[[], Any], timeout: float | None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        result = predicate()
        while not result:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            await self.wait(remaining)
            result = predicate()
        return result
