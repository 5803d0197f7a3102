"""The dashboard's web layer: tornado handlers serving a :class:`~.actor.Dashboard`.

Imported by the Dashboard when the first browser connects (tornado.web costs ~35 ms
to import), never by a cluster that nobody looks at.
"""
from __future__ import annotations

import json
import logging
import socket
from typing import Any

import tornado.web
import tornado.websocket
from tornado.httpserver import HTTPServer

from . import page
from .actor import Dashboard

logger = logging.getLogger("actorrt.dashboard")


def serve(dashboard: Dashboard, sock: socket.socket) -> HTTPServer:
    """An HTTP server for ``dashboard`` accepting on the listening ``sock`` (on this loop)."""
    ctx = {"dashboard": dashboard}
    routes: list[Any] = [
        (r"/", PageHandler, ctx),
        (r"/status", PageHandler, ctx),
        (r"/api/status", StatusHandler, ctx),
        (r"/api/story/(.+)", StoryHandler, ctx),
        (r"/health", HealthHandler, ctx),
        (r"/ws", StatusSocket, ctx),
        (r"/dashboard\.js", AssetHandler, {**ctx, "body": page.script(),
                                            "content_type": "application/javascript; charset=utf-8"}),
        (r"/dashboard\.css", AssetHandler, {**ctx, "body": page.STYLE,
                                             "content_type": "text/css; charset=utf-8"}),
    ]
    from .profile_page import profile_routes  # (it builds on this module's handlers)
    routes += profile_routes(ctx)
    app = tornado.web.Application(routes, websocket_max_message_size=4096, log_function=_log_request)
    server = HTTPServer(app)
    server.add_sockets([sock])
    return server


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
        if not self.dashboard.allows_host(self.request.host_name):
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
        if not self.dashboard.allows_host(self.request.host_name):
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
