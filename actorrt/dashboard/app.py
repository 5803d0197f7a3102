"""The dashboard's web layer: tornado handlers serving a :class:`~.actor.Dashboard`.

Imported by the Dashboard when the first browser connects (tornado.web costs ~35 ms
to import), never by a cluster that nobody looks at.
"""
from __future__ import annotations

import json
import logging
import os
import socket
from typing import Any, Callable

import tornado.web
import tornado.websocket
from tornado.httpserver import HTTPServer

from . import page, shell
from .actor import PAGES, Dashboard
from .task_view import BadKey, check_key

logger = logging.getLogger("actorrt.dashboard")


def serve(dashboard: Dashboard, sock: socket.socket) -> HTTPServer:
    """An HTTP server for ``dashboard`` accepting on the listening ``sock`` (on this loop)."""
    ctx = {"dashboard": dashboard}
    from .diagnostics_routes import routes as diagnostics_routes  # (after this module: it builds on it)
    svg = {**ctx, "body": shell.FAVICON, "content_type": "image/svg+xml"}
    routes: list[Any] = [*diagnostics_routes(ctx),
        (r"/", PageHandler, ctx),
        (r"/status", PageHandler, ctx),
        (r"/graph", StaticPageHandler, {**ctx, "render": shell.graph_page}),
        (r"/events", StaticPageHandler, {**ctx, "render": shell.events_page}),
        (r"/actors", StaticPageHandler, {**ctx, "render": shell.actors_page}),
        (r"/coordination", StaticPageHandler, {**ctx, "render": shell.coordination_page}),
        (r"/task/(.*)", TaskPageHandler, ctx),
        (r"/api/status", StatusHandler, ctx),
        (r"/api/story/(.+)", StoryHandler, ctx),
        (r"/api/task/(.*)", TaskHandler, ctx),
        (r"/api/(graph|events|actors|coordination)", ViewHandler, ctx),
        (r"/health", HealthHandler, ctx),
        (r"/ws", StatusSocket, ctx),
        (r"/favicon\.(?:ico|svg)", AssetHandler, svg),
        (r"/dashboard\.css", AssetHandler, {**ctx, "body": static_file("dashboard.css"),
                                             "content_type": "text/css; charset=utf-8"}),
        (r"/static/(\w+)\.js", ScriptHandler, ctx),
    ]
    from .profile_page import profile_routes  # (it builds on this module's handlers)
    routes += profile_routes(ctx)
    app = tornado.web.Application(routes, websocket_max_message_size=4096, log_function=_log_request)
    server = HTTPServer(app)
    server.add_sockets([sock])
    return server


STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
_SCRIPTS: dict[str, str] = {}


def static_file(name: str) -> str:
    with open(os.path.join(STATIC, name), encoding="utf-8") as f:
        return f.read()


def script(name: str) -> str | None:
    """The page script ``static/<name>.js`` (read once), None if there is none."""
    if name not in _SCRIPTS:
        if not os.path.isfile(os.path.join(STATIC, name + ".js")):
            return None
        _SCRIPTS[name] = static_file(name + ".js")
    return _SCRIPTS[name]


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


class StaticPageHandler(_DashboardHandler):
    """A page whose data comes over the websocket only (the frame is all it renders)."""

    def initialize(self, dashboard: Dashboard, render: Callable[[], str] = str) -> None:  # type: ignore[override]
        super().initialize(dashboard)
        self.render_body = render

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(self.render_body())


class TaskPageHandler(_DashboardHandler):
    """``/task/<key>``: the key's page; 400 for a key beyond bounds, 404 for an unknown one."""

    def get(self, key: str) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        # Back to the root from here: a key typed with a bare "/" makes the path deeper.
        root = "../" * (self.request.path.count("/") - 1)
        try:
            check_key(key)
        except BadKey as e:
            self.set_status(400)
            self.finish(shell.not_found_page(key[:100], str(e), root))
            return
        if self.dashboard.task(key) is None:
            self.set_status(404)
            self.finish(shell.not_found_page(key, f"the scheduler knows no task with key {key!r} "
                                                  "(never submitted, or released and forgotten)", root))
            return
        self.finish(shell.task_page(key, root))


class TaskHandler(_DashboardHandler):
    def get(self, key: str) -> None:
        try:
            check_key(key)
        except BadKey as e:
            self.set_status(400)
            self.write_json({"key": key[:100], "error": str(e)})
            return
        found = self.dashboard.task(key)
        if found is None:
            self.set_status(404)
            self.write_json({"key": key, "error": f"the scheduler knows no task with key {key!r}"})
        else:
            self.write_json(found)


class ViewHandler(_DashboardHandler):
    """``/api/graph``, ``/api/events?since=<seq>``, ``/api/actors``, ``/api/coordination``."""

    def get(self, view: str) -> None:
        d = self.dashboard
        if view == "events":
            try:
                since = int(self.get_query_argument("since", "0"))
            except ValueError:
                self.set_status(400)
                self.write_json({"error": "since must be an integer (an event's seq)"})
                return
            self.write_json(d.events(since))
            return
        self.write_json(d.graph() if view == "graph" else d.actors() if view == "actors" else d.coordination())


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


class ScriptHandler(_DashboardHandler):
    def get(self, name: str) -> None:
        body = script(name)
        if body is None:
            raise tornado.web.HTTPError(404)
        self.set_header("Content-Type", "application/javascript; charset=utf-8")
        self.finish(body)


class StatusSocket(tornado.websocket.WebSocketHandler):
    """Pushes what its page shows (``/ws?page=graph``, ``/ws?page=task&key=...``; the
    status by default) every ``interval`` while the page is open."""

    dashboard: Dashboard

    def initialize(self, dashboard: Dashboard) -> None:
        self.dashboard = dashboard
        self._pending: Any = None
        self.page = "status"
        self.key: str | None = None
        self.seen: dict[str, Any] = {}

    def prepare(self) -> None:
        if not self.dashboard.allows_host(self.request.host_name):
            raise tornado.web.HTTPError(403, "unexpected Host header")
        page_name = self.get_query_argument("page", "status")
        if page_name not in PAGES:
            raise tornado.web.HTTPError(400, f"unknown page {page_name[:50]!r}; known: {', '.join(PAGES)}")
        self.page = page_name
        if page_name == "task":
            try:
                self.key = check_key(self.get_query_argument("key", ""))
            except BadKey as e:
                raise tornado.web.HTTPError(400, str(e)) from None

    def open(self) -> None:  # type: ignore[override]
        self.dashboard.socket_opened(self)

    def ready(self) -> bool:
        """Whether the last push has left (a slow reader is skipped, not queued)."""
        return self._pending is None or self._pending.done()

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
