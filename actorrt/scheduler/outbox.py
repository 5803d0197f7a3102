"""The scheduler's messages to workers and clients, batched per loop turn.

Consecutive items of one op at one peer share a message, and ops keep their order: a
``compute``, ``free_keys``, ``compute`` of one key (cancelled, then submitted again)
must not reach the worker as compute, compute, free.

A turn whose only news for a worker is ``free_keys`` holds it back (``FREE_LINGER``):
freeing is never urgent, and a message alone costs a socket write here and a wake-up
of the worker's loop there, about 100 µs of CPU between them on this machine. A task
that never passes through the scheduler's hands on its way to a worker (a client ran
it there itself: direct_runs.py) otherwise costs exactly that extra message when its
key is released. Held frees go ahead of the next message to that worker, whatever it
is, so a free still arrives before a later compute of the same key; a worker asked
something outside this outbox (a data move) is sent its held frees first
(:meth:`Outbox.send_held`).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from ..core import ActorRef, Host
from ..protocol import WORKER_ID

logger = logging.getLogger("actorrt.scheduler")

#: Seconds a worker's ``free_keys`` waits for company before it goes alone.
FREE_LINGER = 0.005
#: Keys held back for one worker before they go regardless.
FREE_LINGER_KEYS = 10_000

FIELD = {"compute": "tasks", "free_keys": "keys", "report": "msgs"}

#: ``fields(ref, op, items)``: a message's fields from its items.
Fields = Callable[[ActorRef, str, list], dict]


class Outbox:
    """Per peer, ``(op, items)`` in order, sent once per loop turn (see the module docstring)."""

    def __init__(self, fields: Fields) -> None:
        self.host: Host | None = None  # the scheduler's, set once it is spawned
        self._fields = fields
        self._out: dict[ActorRef, list[tuple[str, list]]] = {}
        self._flush_scheduled = False
        self._held: dict[ActorRef, list] = {}  # a worker's free_keys items held back
        self._timer: asyncio.TimerHandle | None = None

    @property
    def idle(self) -> bool:
        """Nothing queued, nothing held back."""
        return not self._out and not self._flush_scheduled and not self._held

    def send(self, ref: ActorRef, op: str, *items: Any) -> None:
        """Queue ``items`` for ``op`` at ``ref``."""
        queue = self._out.setdefault(ref, [])
        if queue and queue[-1][0] == op:
            queue[-1][1].extend(items)
        else:
            queue.append((op, list(items)))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Send this turn's messages (a worker's lone frees wait: see the module docstring)."""
        self._flush_scheduled = False
        out, self._out = self._out, {}
        held = self._held
        host = self._host()
        for ref, ops in out.items():
            if ref.id == WORKER_ID:
                waiting = held.pop(ref, None)
                if len(ops) == 1 and ops[0][0] == "free_keys":
                    waiting = ops[0][1] if waiting is None else waiting + ops[0][1]
                    if len(waiting) < FREE_LINGER_KEYS:
                        held[ref] = waiting
                        continue
                    ops = [("free_keys", waiting)]
                elif waiting is not None:
                    ops.insert(0, ("free_keys", waiting))
            self._tell(host, ref, ops)
        if held and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FREE_LINGER, self._send_all_held)
        host.flush_pending()

    def send_held(self, worker: str) -> None:
        """Send what is held back for ``worker`` now: it is about to be asked something
        outside this outbox, which must not overtake a free."""
        ref = ActorRef(worker, WORKER_ID)
        waiting = self._held.pop(ref, None)
        if waiting is not None:
            host = self._host()
            self._tell(host, ref, [("free_keys", waiting)])
            host.flush_pending()

    def forget(self, worker: str) -> None:
        """``worker`` is gone: nothing held for it goes."""
        self._held.pop(ActorRef(worker, WORKER_ID), None)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._held.clear()

    def _send_all_held(self) -> None:
        self._timer = None
        held, self._held = self._held, {}
        host = self._host()
        for ref, waiting in held.items():
            self._tell(host, ref, [("free_keys", waiting)])
        host.flush_pending()

    def _host(self) -> Host:
        assert self.host is not None, "the scheduler is not started"
        return self.host

    def _tell(self, host: Host, ref: ActorRef, ops: list[tuple[str, list]]) -> None:
        for op, items in ops:
            try:
                host.tell(ref, op, **self._fields(ref, op, items))
            except Exception:
                logger.exception("could not send %s to %s", op, ref)
