"""The dashboard's web server: a tornado application on the scheduler's loop.

Imported only when a dashboard starts (tornado.web costs ~35 ms to import): a client
that asks for no dashboard never loads it. The :class:`Dashboard` is an actor on
the scheduler's host, so it shares the scheduler's loop (it reads the state between
the scheduler's messages, never concurrently with them) and it stops with its host.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
import time
from typing import TYPE_CHECKING, Any

import tornado.web
import tornado.websocket
from tornado.httpserver import HTTPServer
from tornado.httputil import HTTPServerRequest

from ..core import Actor
from . import page
from .status import status, story

if TYPE_CHECKING:
    from ..scheduler.actor import Scheduler

logger = logging.getLogger("actorrt.dashboard")

#: How long a closing dashboard waits for browsers to answer the websocket close.
CLOSE_GRACE = 1.0


class Dashboard(Actor):
    """Serves the dashboard page, its JSON API and its websocket on ``sock``.

    It owns everything it opened (the listening socket, HTTP connections, websockets,
    the push timer): :meth:`close` ends them gracefully; stopping the actor (its host
    closing) ends them at once.
    """

    def __init__(self, scheduler: "Scheduler", sock: socket.socket, link: str, *,
                 loopback_only: bool = True, interval: float = 0.5) -> None:
        self.scheduler = scheduler
        self.link = link
        self.loopback_only = loopback_only
        self.interval = interval
        self.started = time.time()
        self.sockets: set[StatusSocket] = set()
        self._sock = sock
        self._server: HTTPServer | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._sockets_gone: asyncio.Event | None = None

    # --- lifecycle ------------------------------------------------------------
    def on_start(self) -> None:
        app = tornado.web.Application(self._routes(), websocket_max_message_size=4096,
                                      log_function=_log_request)
        self._server = HTTPServer(app)
        self._server.add_sockets([self._sock])

    def _routes(self) -> list:
        ctx = {"dashboard": self}
        asset = AssetHandler
        return [
            (r"/", PageHandler, ctx),
            (r"/status", PageHandler, ctx),
            (r"/api/status", StatusHandler, ctx),
            (r"/api/story/(.+)", StoryHandler, ctx),
            (r"/health", HealthHandler, ctx),
            (r"/ws", StatusSocket, ctx),
            (r"/dashboard\.js", asset, {**ctx, "body": page.script(),
                                        "content_type": "application/javascript; charset=utf-8"}),
            (r"/dashboard\.css", asset, {**ctx, "body": page.STYLE, "content_type": "text/css; charset=utf-8"}),
        ]

    async def close(self) -> None:
        """Stop listening, close the websockets with a goodbye, close every HTTP connection."""
        server = self._server
        if server is None:
            return
        self._stop_pushing()
        server.stop()
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
        # The host is closing without close() having run: end everything now.
        server, self._server = self._server, None
        if server is None:
            return
        self._stop_pushing()
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

    def allows_host(self, request: HTTPServerRequest) -> bool:
        """On loopback, only requests addressed to an IP or ``localhost``.

        A web page elsewhere could make a browser fetch from a DNS name it points at
        127.0.0.1 (DNS rebinding); such a request names that DNS name in its Host header.
        """
        if not self.loopback_only:
            return True
        name = request.host_name.strip("[]")
        if name == "localhost":
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    # --- pushing to websockets ------------------------------------------------------
    def socket_opened(self, ws: "StatusSocket") -> None:
        self.sockets.add(ws)
        ws.push(self._encoded_status())
        if self._timer is None:
            self._schedule(self.interval)

    def socket_closed(self, ws: "StatusSocket") -> None:
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


def _log_request(handler: tornado.web.RequestHandler) -> None:
    # Browsers poll and reconnect: requests are debug chatter, errors are not.
    status_code = handler.get_status()
    level = logging.DEBUG if status_code < 400 else logging.INFO
    logger.log(level, "%d %s %.1f ms", status_code, handler.request.uri,
               1000 * handler.request.request_time())


# --- handlers --------------------------------------------------------------------------
class _DashboardHandler(tornado.web.RequestHandler):
    dashboard: Dashboard

    def initialize(self, dashboard: Dashboard) -> None:
        self.dashboard = dashboard

    def prepare(self) -> None:
        if not self.dashboard.allows_host(self.request):
            raise tornado.web.HTTPError(403, "unexpected Host header")

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Security-Policy", page.CONTENT_SECURITY_POLICY)

    def write_json(self, value: Any) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(value, separators=(",", ":")))


class PageHandler(_DashboardHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(page.render_page(self.dashboard.status()))


class StatusHandler(_DashboardHandler):
    def get(self) -> None:
        self.write_json(self.dashboard.status())


class StoryHandler(_DashboardHandler):
    def get(self, key: str) -> None:
        found = self.dashboard.story(key)
        if found is None:
            self.set_status(404)
            self.write_json({"key": key, "error": f"the scheduler knows no task with key {key!r}"})
        else:
            self.write_json(found)


class HealthHandler(_DashboardHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish("ok")


class AssetHandler(_DashboardHandler):
    def initialize(self, dashboard: Dashboard, body: str = "", content_type: str = "") -> None:  # type: ignore[override]
        super().initialize(dashboard)
        self.body = body
        self.content_type = content_type

    def get(self) -> None:
        self.set_header("Content-Type", self.content_type)
        self.finish(self.body)


class StatusSocket(tornado.websocket.WebSocketHandler):
    """Pushes the status JSON every ``interval`` while the page is open."""

    dashboard: Dashboard

    def initialize(self, dashboard: Dashboard) -> None:
        self.dashboard = dashboard
        self._pending: Any = None

    def prepare(self) -> None:
        if not self.dashboard.allows_host(self.request):
            raise tornado.web.HTTPError(403, "unexpected Host header")

    def open(self) -> None:  # type: ignore[override]
        self.dashboard.socket_opened(self)

    def on_message(self, message: str | bytes) -> None:
        pass  # the page sends nothing; anything sent is ignored

    def on_close(self) -> None:
        self.dashboard.socket_closed(self)

    def push(self, text: str) -> None:
        """Send ``text`` unless the last push is still on its way (a slow reader skips
        snapshots instead of piling them up in memory)."""
        if self._pending is not None and not self._pending.done():
            return
        try:
            self._pending = self.write_message(text)
        except tornado.websocket.WebSocketClosedError:
            return
        self._pending.add_done_callback(_consume_error)


def _consume_error(fut: Any) -> None:
    if not fut.cancelled():
        fut.exception()  # a socket that closed meanwhile: nothing to report
