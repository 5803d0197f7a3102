"""The registry: the one well-known actor that finds (or makes) a named system actor.

A proxy asks ``get_or_create(kind=..., name=..., options=...)`` once and then talks to
the returned :class:`~actorrt.core.ActorRef` directly. The registry also watches the
scheduler host's connections: when a worker or client host goes away, every system
actor hears about it and releases that host's leases and waiters.

**Reclaiming names.** A cluster that runs for hours names primitives per job or per
round; each would otherwise stay for good (~2 KB apiece). So the registry counts the
proxies that resolved each actor (a proxy tells ``release`` when it is garbage
collected; a lost host's proxies go with it), and stops an actor once no
proxy holds it *and* it is idle: it holds nothing a later user of the name could miss
(no items, no value, not set, no leases, no waiters: ``SystemActor.idle``). Nothing
can then reach the old actor: every proxy that knew its ref has let go, and the
messages it sent before letting go arrived before its ``release`` (one connection
keeps its order). The next proxy of that name makes a fresh one. An actor left busy
by its last proxy (a waiter that will time out, a subscriber yet to leave) is checked
again every :data:`RECHECK_SECONDS` until it is idle or held again.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from typing import TYPE_CHECKING, Any, Callable

from ..core import Actor, ActorRef, Host
from ..core.checks import describe
from ..core.errors import BadMessageError
from ..protocol import REGISTRY_ID
from ._actor import SystemActor, origin_address

if TYPE_CHECKING:
    from ..core.comm import Comm

logger = logging.getLogger("actorrt.coordination")

#: How often actors that nobody holds but that are still busy are looked at again.
RECHECK_SECONDS = 2.0

Slot = tuple[str, str]  # (kind, name); name "" for a kind one shared actor serves


def _kinds() -> dict[str, Callable[..., SystemActor]]:
    from .condition import ConditionActor
    from .event import EventActor
    from .lock import LockTable
    from .pubsub import TopicActor
    from .queue import QueueActor
    from .semaphore import SemaphoreActor
    from .variable import VariableActor
    return {cls.kind: cls for cls in (QueueActor, LockTable, SemaphoreActor, EventActor,
                                      VariableActor, TopicActor, ConditionActor)}


class Registry(Actor):
    """Maps ``(kind, name)`` to the system actor of that name, spawning it on first use."""

    def __init__(self) -> None:
        self.kinds = _kinds()
        self.actors: dict[Slot, SystemActor] = {}
        # slot -> (host address, proxy token) of the proxies that resolved it and have
        # not let go (by token, so a stray release cannot let go of another's hold)
        self.holds: dict[Slot, set[tuple[str, str]]] = {}
        self._unheld: set[Slot] = set()   # nobody holds these, but they were busy
        self._recheck: asyncio.TimerHandle | None = None

    def on_start(self) -> None:
        self.host.peer_lost_callbacks.append(self._on_peer_lost)

    def on_stop(self) -> None:
        if self._on_peer_lost in self.host.peer_lost_callbacks:
            self.host.peer_lost_callbacks.remove(self._on_peer_lost)
        if self._recheck is not None:
            self._recheck.cancel()

    def handle_get_or_create(self, kind: str, name: str, origin: Comm | None,
                             options: dict | None = None, holder: str | None = None) -> list:
        """``[ref, options]`` of the actor: where it is, and the options it really has
        (e.g. the maxsize of a queue first made by someone else). A ``holder`` (a
        proxy's token) holds the actor until it tells ``release``."""
        cls = self.kinds.get(kind)
        if cls is None:
            raise ValueError(f"unknown coordination primitive {kind!r}; known: {sorted(self.kinds)}")
        if not isinstance(name, str):
            raise TypeError(f"{kind} name must be a string, got {type(name).__name__}")
        options = options or {}
        # Locks and multi-locks share one table so that a MultiLock can take several
        # names in one step (atomically, hence without deadlock); see lock.py.
        slot = (kind, "" if getattr(cls, "shared", False) else name)
        actor = self.actors.get(slot)
        if actor is None:
            actor = _build(cls, kind, slot[1], options)
            self.host.spawn(actor, f"{kind}/{slot[1]}" if slot[1] else kind)
            self.actors[slot] = actor
        else:
            if options:  # well formed before they are compared with the actor's
                _build(cls, kind, slot[1], options)
            actor.check_options(options)
        if holder is not None and slot[1]:  # (a shared actor is never reclaimed)
            self.holds.setdefault(slot, set()).add((origin_address(self, origin), holder))
            self._unheld.discard(slot)
        return [actor.ref, actor.options()]

    def handle_release(self, kind: str, name: str, holder: str, origin: Comm | None) -> None:
        """The proxy ``holder`` on the asking host let go of ``(kind, name)`` (a release
        that matches no hold of that host's changes nothing)."""
        slot = (kind, name)
        holders = self.holds.get(slot)
        if holders is None:
            return
        holders.discard((origin_address(self, origin), holder))
        if not holders:
            self._let_go(slot)

    def _let_go(self, slot: Slot) -> None:
        """Nobody holds ``slot`` any more: stop its actor now if idle, else later."""
        del self.holds[slot]
        if not self._reclaim_if_idle(slot):
            self._unheld.add(slot)
            self._arm_recheck()

    def _reclaim_if_idle(self, slot: Slot) -> bool:
        """Stop ``slot``'s actor if nobody holds it and it is idle. False: still busy
        (look again later); True: nothing more to do (stopped, gone, held again, or kept
        for good because it cannot tell)."""
        actor = self.actors.get(slot)
        if actor is None or slot in self.holds:
            return True
        try:
            idle = actor.idle()
        except Exception:
            logger.exception("%s could not tell whether it is idle; keeping it", actor.describe())
            return True
        if not idle:
            return False
        del self.actors[slot]
        self.host.stop_actor(actor.id)
        return True

    def _arm_recheck(self) -> None:
        if self._recheck is None and self._unheld and self.host.loop is not None:
            self._recheck = self.host.loop.call_later(RECHECK_SECONDS, self._check_unheld)

    def _check_unheld(self) -> None:
        self._recheck = None
        self._unheld = {slot for slot in self._unheld if not self._reclaim_if_idle(slot)}
        self._arm_recheck()

    def handle_names(self, kind: str | None = None) -> list:
        """The ``[kind, name]`` of every live system actor (or of one kind)."""
        return [[k, n] for (k, n) in self.actors if kind is None or k == kind]

    def _on_peer_lost(self, address: str, comm: Any) -> None:
        # Two hosts may briefly hold two connections; only the last one closing
        # means the peer is gone (and its leases with it).
        if self.host.is_connected(address):
            return
        for actor in list(self.actors.values()):
            try:
                actor.peer_lost(address)
            except Exception:
                logger.exception("%s failed to release the leases of %s", actor.describe(), address)
        for slot, holders in list(self.holds.items()):
            gone = {hold for hold in holders if hold[0] == address}
            if gone:
                holders -= gone
                if not holders:
                    self._let_go(slot)


def _build(cls: Callable[..., SystemActor], kind: str, name: str, options: dict) -> SystemActor:
    """A new actor of ``cls`` made with ``options``, each of them checked: a name the
    kind does not take, or a value its constructor refuses, is a BadMessageError."""
    accepted = [p for p in inspect.signature(cls).parameters if p != "name"]
    for option in options:
        if option not in accepted:
            raise BadMessageError(f"Registry.get_or_create: field 'options' has unknown option "
                                  f"{describe(option)} for a {kind} (known: {', '.join(accepted) or 'none'})")
    try:
        return cls(name, **options)
    except (TypeError, ValueError) as e:
        raise BadMessageError(f"Registry.get_or_create: field 'options' of a {kind}: {e}") from None


def install(host: Host) -> ActorRef:
    """Spawn the registry on the scheduler's host (called by ``start_scheduler``)."""
    existing = host.actors.get(REGISTRY_ID)
    if existing is not None:
        return existing.ref
    return host.spawn(Registry(), REGISTRY_ID)
