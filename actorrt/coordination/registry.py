"""The registry: the one well-known actor that finds (or makes) a named system actor.

A proxy asks ``get_or_create(kind=..., name=..., options=...)`` once and then talks to
the returned :class:`~actorrt.core.ActorRef` directly. The registry also watches the
scheduler host's connections: when a worker or client host goes away, every system
actor hears about it and releases that host's leases and waiters.
"""
from __future__ import annotations

import inspect
import logging
from typing import Any, Callable

from ..core import Actor, ActorRef, Host
from ..core.checks import describe
from ..core.errors import BadMessageError
from ..protocol import REGISTRY_ID
from ._actor import SystemActor

logger = logging.getLogger("actorrt.coordination")


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
        self.actors: dict[tuple[str, str], SystemActor] = {}

    def on_start(self) -> None:
        self.host.peer_lost_callbacks.append(self._on_peer_lost)

    def on_stop(self) -> None:
        if self._on_peer_lost in self.host.peer_lost_callbacks:
            self.host.peer_lost_callbacks.remove(self._on_peer_lost)

    def handle_get_or_create(self, kind: str, name: str, options: dict | None = None) -> list:
        """``[ref, options]`` of the actor: where it is, and the options it really has
        (e.g. the maxsize of a queue first made by someone else)."""
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
        return [actor.ref, actor.options()]

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
