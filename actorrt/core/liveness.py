"""Liveness: every connection between hosts proves, at least once a heartbeat interval,
that the peer is still there; one silent for the heartbeat timeout is closed.

A peer that crashes or exits closes its sockets, and we learn of it at once. A peer
behind a broken link (a cable pulled, a partition, a machine frozen or SIGSTOPped)
sends nothing at all: no FIN, no RST, and TCP itself would wait for many minutes. So
each host watches its own connections:

* any bytes received count as a sign of life (busy connections need nothing more);
* a connection we have sent nothing on for ``interval`` gets a ``_ping`` (a message to
  no actor, dropped on arrival) so the *peer* hears from us;
* a connection we have heard nothing on for ``timeout`` is closed, which the layers
  above already treat as the peer's loss: the scheduler removes a worker (its tasks
  rerun, its unique results are recomputed, its actors restart or fail, its leases are
  released), a worker stops when its scheduler is gone, a client fails its futures.

The default timeout, 10 s, is ten intervals: a peer whose event loop is held up (a
large value being unpickled or allocated on it, a garbage collection of a huge heap)
for a few seconds is not declared dead, and a real loss is still noticed within
seconds rather than dask's default of minutes. Settings: ``ACTORRT_HEARTBEAT_INTERVAL``
and ``ACTORRT_HEARTBEAT_TIMEOUT`` (seconds), or ``Host(heartbeat_interval=...,
heartbeat_timeout=...)``. In-process connections need none of this.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Iterable

from .env import env_number
from .errors import CommClosedError

logger = logging.getLogger("actorrt.liveness")

DEFAULT_INTERVAL = 1.0
DEFAULT_TIMEOUT = 10.0
PING = "_ping"


def heartbeat_settings(interval: float | None = None, timeout: float | None = None) -> tuple[float, float]:
    """``(interval, timeout)`` from the arguments, else the environment, else the defaults."""
    if interval is None:
        interval = env_number("ACTORRT_HEARTBEAT_INTERVAL", DEFAULT_INTERVAL, "seconds", positive=True)
    if timeout is None:
        timeout = env_number("ACTORRT_HEARTBEAT_TIMEOUT", DEFAULT_TIMEOUT, "seconds", positive=True)
    if timeout <= interval:
        raise ValueError(f"the heartbeat timeout ({timeout} s) must be longer than its interval ({interval} s)")
    return interval, timeout


class Heartbeat:
    """Watches the connections ``comms()`` returns; pings the quiet, closes the silent."""

    def __init__(self, loop: asyncio.AbstractEventLoop, comms: Callable[[], Iterable[Any]],
                 interval: float, timeout: float) -> None:
        self._loop = loop
        self._comms = comms
        self.interval = interval
        self.timeout = timeout
        # Checked twice an interval, so a ping goes out at most 1.5 intervals after the
        # last message and a silent peer is closed at most half an interval late.
        self._handle: asyncio.TimerHandle | None = loop.call_later(interval / 2, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        now = self._loop.time()
        for comm in list(self._comms()):
            last_received = getattr(comm, "last_received", None)
            if last_received is None or comm.closed or comm.channel == "thread":
                # In-process: nothing can go silent. A thread's own connection is read
                # by that thread, not the loop, and closes with the main one (Host).
                continue
            silent = now - last_received
            if silent > self.timeout:
                logger.warning("closing the connection to %s: nothing heard for %.1f s (heartbeat timeout %s s)",
                               comm.peer_address, silent, self.timeout)
                comm.close(CommClosedError(
                    f"{comm.peer_address} was silent for {silent:.1f} s (heartbeat timeout {self.timeout} s)"))
            elif now - comm.last_sent >= self.interval:
                try:
                    comm.send(["", PING, 0, {}])
                except CommClosedError:
                    pass
        self._handle = self._loop.call_later(self.interval / 2, self._tick)
