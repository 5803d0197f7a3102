"""The Dashboard actor: owns the listening socket, the web server and the live pushes.

It lives on the scheduler's host, so it shares the scheduler's loop: it reads the
state between the scheduler's messages, never concurrently with them, and never
writes it. It stops with its host.

Nothing here imports tornado. The web layer (:mod:`.app`, ~35 ms to import) is
loaded when the first browser connects: until then the dashboard is one listening
socket and a reader on the loop, so a cluster nobody looks at starts as fast as one
without a dashboard. Connections that arrive meanwhile wait in the socket's backlog.
"""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import socket
import time
from typing import TYPE_CHECKING, Any, Protocol

from ..core import Actor
from .status import status, story

if TYPE_CHECKING:
    from ..scheduler.actor import Scheduler

logger = logging.getLogger("actorrt.dashboard")

#: How long a closing dashboard waits for browsers to answer the websocket close.
CLOSE_GRACE = 1.0


class Pushable(Protocol):
    """A page's websocket, as the dashboard sees it (``app.StatusSocket``)."""

    ws_connection: Any

    def push(self, text: str) -> None: ...

    def close(self, code: int | None = None, reason: str | None = None) -> None: ...


class Dashboard(Actor):
    """Serves the dashboard page, its JSON API and its websocket on ``sock``.

    It owns everything it opened (the listening socket, HTTP connections, websockets,
    the push timer): :meth:`close` ends them gracefully; stopping the actor (its host
    closing) ends them at once.
    """

    def __init__(self, scheduler: Scheduler, sock: socket.socket, link: str, *,
                 loopback_only: bool = True, interval: float = 0.5) -> None:
        self.scheduler = scheduler
        self.link = link
        self.loopback_only = loopback_only
        self.interval = interval
        self.started = time.time()
        self.sockets: set[Pushable] = set()
        self._sock: socket.socket | None = sock
        self._server: Any = None  # tornado's HTTPServer, once the first browser came
        self._timer: asyncio.TimerHandle | None = None
        self._sockets_gone: asyncio.Event | None = None

    # --- lifecycle ------------------------------------------------------------
    def on_start(self) -> None:
        assert self._sock is not None
        try:
            asyncio.get_running_loop().add_reader(self._sock.fileno(), self._first_connection)
        except NotImplementedError:  # a loop without readers (Windows' proactor): serve now
            self._first_connection()

    def _first_connection(self) -> None:
        sock = self._sock
        if sock is None:
            return
        with contextlib.suppress(NotImplementedError):
            asyncio.get_running_loop().remove_reader(sock.fileno())
        from .app import serve  # the web layer, now that someone wants it
        self._server = serve(self, sock)

    async def close(self) -> None:
        """Stop listening, close the websockets with a goodbye, close every HTTP connection."""
        server = self._server
        if server is None:
            self.host.stop_actor(self.id)
            return
        self._stop_pushing()
        server.stop()
        self._sock = None
        if self.sockets:
            protocols = [ws.ws_connection for ws in self.sockets]
            self._sockets_gone = asyncio.Event()
            for ws in list(self.sockets):
                ws.close(1001, "the scheduler is closing")
            try:
                await asyncio.wait_for(self._sockets_gone.wait(), CLOSE_GRACE)
            except asyncio.TimeoutError:  # a browser that does not answer: hang up
                _hang_up(protocols)
        await server.close_all_connections()
        self._server = None
        self.host.stop_actor(self.id)

    def on_stop(self) -> None:
        # Closing (or the host closing without close() having run): end everything now.
        self._stop_pushing()
        sock, self._sock = self._sock, None
        server, self._server = self._server, None
        if server is None:
            if sock is not None:  # no browser ever came: only the socket to close
                with contextlib.suppress(NotImplementedError):
                    asyncio.get_running_loop().remove_reader(sock.fileno())
                sock.close()
            return
        server.stop()
        protocols = [ws.ws_connection for ws in self.sockets]
        for ws in list(self.sockets):
            ws.close(1001, "the scheduler is closing")
        _hang_up(protocols)
        for conn in list(getattr(server, "_connections", ())):  # (no public sync way)
            conn.stream.close()

    # --- reading the state --------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return status(self.scheduler, self.started)

    def story(self, key: str) -> dict[str, Any] | None:
        return story(self.scheduler, key)

    def allows_host(self, host_name: str) -> bool:
        """On loopback, only requests addressed to an IP or ``localhost``.

        A web page elsewhere could make a browser fetch from a DNS name it points at
        127.0.0.1 (DNS rebinding); such a request names that DNS name in its Host header.
        """
        if not self.loopback_only:
            return True
        name = host_name.strip("[]")
        if name == "localhost":
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    # --- pushing to websockets ------------------------------------------------------
    def socket_opened(self, ws: Pushable) -> None:
        self.sockets.add(ws)
        ws.push(self._encoded_status())
        if self._timer is None:
            self._schedule(self.interval)

    def socket_closed(self, ws: Pushable) -> None:
        self.sockets.discard(ws)
        if not self.sockets:
            self._stop_pushing()
            if self._sockets_gone is not None:
                self._sockets_gone.set()

    def _encoded_status(self) -> str:
        return json.dumps(self.status(), separators=(",", ":"))

    def _schedule(self, delay: float) -> None:
        self._timer = asyncio.get_running_loop().call_later(delay, self._push_all)

    def _push_all(self) -> None:
        self._timer = None
        if not self.sockets or self._server is None:
            return
        t0 = time.perf_counter()
        try:
            text = self._encoded_status()
        except Exception:  # a bug here must not end the pushes (nor touch the scheduler)
            logger.exception("dashboard: could not read the scheduler's state")
        else:
            for ws in list(self.sockets):
                ws.push(text)
        cost = time.perf_counter() - t0
        # A snapshot of a huge graph is not free: keep it under ~5% of the loop's time.
        self._schedule(max(self.interval, 20 * cost))

    def _stop_pushing(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _hang_up(protocols: list) -> None:
    for proto in protocols:
        stream = getattr(proto, "stream", None)
        if stream is not None:
            stream.close()
