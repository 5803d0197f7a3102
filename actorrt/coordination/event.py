"""Event: a cluster-wide flag that tasks and clients can wait for."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core import Reply
from ._actor import SystemActor, Waiter
from ._proxy import Proxy, check_timeout

if TYPE_CHECKING:
    from ..client.client import Client
    from ..core.comm import Comm


class EventActor(SystemActor):
    kind = "event"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.flag = False
        self.waiters: dict[str, Waiter] = {}

    def summary(self) -> list[dict]:
        return [{"kind": self.kind, "name": self.name, "set": self.flag,
                 "waiters": [w.address for w in self.waiters.values()]}]

    def idle(self) -> bool:
        return not self.flag and not self.waiters  # (a set event must stay set)

    def handle_set(self) -> None:
        self.flag = True
        waiters, self.waiters = self.waiters, {}
        for waiter in waiters.values():
            self.disarm(waiter)
            waiter.answer(True)

    def handle_clear(self) -> None:
        self.flag = False

    def handle_is_set(self) -> bool:
        return self.flag

    def handle_wait(self, call: str, reply: Reply, origin: "Comm | None",
                    timeout: float | None = None) -> None:
        if self.flag:
            reply.ok(True)
            return
        if timeout == 0:
            reply.ok(False)
            return
        waiter = self.waiter(reply, origin, call)
        self.waiters[call] = waiter
        self.arm(waiter, timeout, self._expire)

    def handle_abandon(self, call: str) -> None:
        waiter = self.waiters.pop(call, None)
        if waiter is not None:
            self._expire(waiter)

    def _expire(self, waiter: Waiter) -> None:
        self.waiters.pop(waiter.call, None)
        self.disarm(waiter)
        waiter.answer(False)

    def peer_lost(self, address: str) -> None:
        for waiter in [w for w in self.waiters.values() if w.address == address]:
            self._expire(waiter)


class Event(Proxy):
    """A named flag: ``set()``, ``clear()``, ``is_set()`` and ``wait(timeout=)``.

    ``wait`` returns True once the flag is set (at once if it already is) and False
    if ``timeout`` passes first, like ``threading.Event.wait``.

    >>> ready = Event("data-ready")           # doctest: +SKIP
    >>> ready.wait(timeout=5)                 # in some task  # doctest: +SKIP
    True
    >>> ready.set()                           # elsewhere     # doctest: +SKIP
    """

    kind = "event"

    def __init__(self, name: str | None = None, client: "Client | None" = None) -> None:
        super().__init__(name, client)

    def __reduce__(self) -> Any:
        return Event, (self.name,)

    def set(self) -> Any:
        """Set the flag and wake every waiter."""
        return self._call("set")

    def clear(self) -> Any:
        """Reset the flag; later waits block until it is set again."""
        return self._call("clear")

    def is_set(self) -> Any:
        return self._call("is_set")

    def wait(self, timeout: float | None = None) -> Any:
        """True once the flag is set; False if ``timeout`` seconds pass first."""
        return self._call("wait", blocking=True, timeout=check_timeout(timeout))
