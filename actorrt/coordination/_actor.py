"""What every named system actor shares: waiters with timeouts, holder identity, held keys.

The primitives live on the scheduler host and are ordinary actors. A blocking request
(``get`` on an empty queue, ``acquire`` of a held lock) becomes a :class:`Waiter`: the
deferred reply plus where it came from. The actor, not the caller, enforces the
timeout, so an expired request is removed here and never leaves a waiter behind
(dask/distributed#2247 is a ``Queue.get(timeout=)`` that hung because the timeout
lived only on the caller's side).
"""
from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable

from ..core import Actor, ActorRef, Reply
from ..protocol import SCHEDULER_ID

if TYPE_CHECKING:
    from ..core.comm import Comm



def origin_address(actor: Actor, origin: "Comm | None") -> str:
    """The address of the host a request came from (this host's when local)."""
    if origin is None or origin.peer_address is None:
        return actor.host.address
    return origin.peer_address


class Waiter:
    """A deferred reply, the host it goes back to, and its timer."""

    __slots__ = ("reply", "address", "comm", "call", "token", "timer", "data")

    def __init__(self, reply: Reply, address: str, comm: "Comm | None", call: str,
                 token: str = "", data: Any = None) -> None:
        self.reply = reply
        self.address = address
        self.comm = comm
        self.call = call
        self.token = token
        self.timer: asyncio.TimerHandle | None = None
        self.data = data

    def alive(self) -> bool:
        """Whether an answer can still reach the asker (handing an item to a dead
        waiter would lose the item)."""
        return not self.reply.done and (self.comm is None or not self.comm.closed)

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def answer(self, value: Any) -> None:
        self.cancel_timer()
        self.reply.ok(value)


class SystemActor(Actor):
    """Base of the named system actors spawned by the registry."""

    kind: ClassVar[str] = ""

    def __init__(self, name: str) -> None:
        self.name = name
        self._timers: set[Waiter] = set()

    def check_options(self, options: dict) -> None:
        """Raise ValueError if a proxy asks for this name with conflicting options."""

    def options(self) -> dict:
        """The options this actor was made with (told to every proxy that resolves it)."""
        return {}

    def peer_lost(self, address: str) -> None:
        """The host at ``address`` is gone: drop its waiters, release its leases."""

    def idle(self) -> bool:
        """Whether this actor holds nothing a later user of its name could miss (no
        items, value, flag, lease or waiter), so that the registry may stop it once no
        proxy holds it. A kind that does not say is never stopped."""
        return False

    def summary(self) -> list[dict]:
        """What the dashboard's coordination page shows: a row per named primitive
        (read-only; ``holders``/``waiters`` are the hosts' addresses)."""
        return [{"kind": self.kind, "name": self.name}]

    def describe(self) -> str:
        return f"{type(self).__name__.replace('Actor', '')} {self.name!r}"

    # --- timeouts -----------------------------------------------------------
    def arm(self, waiter: Waiter, timeout: float | None, on_expiry: Callable[[Waiter], None]) -> None:
        """Call ``on_expiry(waiter)`` after ``timeout`` seconds unless answered first."""
        if timeout is None:
            return
        assert self.host.loop is not None

        def fire() -> None:
            waiter.timer = None
            self._timers.discard(waiter)
            on_expiry(waiter)

        waiter.timer = self.host.loop.call_later(max(0.0, timeout), fire)
        self._timers.add(waiter)

    def disarm(self, waiter: Waiter) -> None:
        waiter.cancel_timer()
        self._timers.discard(waiter)

    def on_stop(self) -> None:
        for waiter in list(self._timers):
            waiter.cancel_timer()
        self._timers.clear()

    def waiter(self, reply: Reply, origin: "Comm | None", call: str, token: str = "",
               data: Any = None) -> Waiter:
        return Waiter(reply, origin_address(self, origin), origin, call, token, data)


class KeyHolder:
    """The task keys held by one queue or variable, counted per key.

    A Future stored in a queue must stay alive while stored, so the holder tells the
    scheduler it wants the key (``want_keys``) and lets go (``release_keys``) when no
    stored value refers to it any more. The scheduler's set of holders is not a
    counter, hence the count here: two items holding one key are one claim.
    """

    def __init__(self, actor: Actor, holder_id: str) -> None:
        self.actor = actor
        self.holder_id = holder_id
        self.counts: Counter[str] = Counter()

    @property
    def scheduler(self) -> ActorRef:
        return ActorRef(self.actor.host.address, SCHEDULER_ID)

    def hold(self, keys: Iterable[str]) -> None:
        new = []
        for key in keys:
            self.counts[key] += 1
            if self.counts[key] == 1:
                new.append(key)
        if new:
            self.actor.tell(self.scheduler, "want_keys", client=self.holder_id, keys=new)

    def drop(self, keys: Iterable[str]) -> None:
        gone = []
        for key in keys:
            n = self.counts[key] - 1
            if n > 0:
                self.counts[key] = n
            else:
                self.counts.pop(key, None)
                gone.append(key)
        if gone:
            self.actor.tell(self.scheduler, "release_keys", client=self.holder_id, keys=gone)

    def give(self, client: str, keys: list[str]) -> None:
        """Make ``client`` a holder of ``keys`` before the value reaches it.

        The receiving client registers its own claim only when it unpickles the value;
        claiming for it here, ahead of any release, keeps the key from being freed in
        between. Local tells reach the scheduler in the order sent.
        """
        if keys and client:
            self.actor.tell(self.scheduler, "want_keys", client=client, keys=list(keys))

    def drop_all(self) -> None:
        if self.counts:
            keys = list(self.counts)
            self.counts.clear()
            self.actor.tell(self.scheduler, "release_keys", client=self.holder_id, keys=keys)
