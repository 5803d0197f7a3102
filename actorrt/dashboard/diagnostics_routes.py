"""Routes of the diagnostics pages: ``/metrics`` (metrics.py) and the task stream's
page, its assets and its endpoint (task_stream_page.py).

Imported by app.serve, after app.py itself: these share its handler base (the Host
check, the security headers).
"""
from __future__ import annotations

from typing import Any

from . import metrics, task_stream_page
from .actor_view import actor_infos, actor_rows, workers_hosting
from .app import AssetHandler, _DashboardHandler


class MetricsHandler(_DashboardHandler):
    async def get(self) -> None:
        # Actor calls are counted on the workers: asked per scrape, of the workers that
        # host actors (nothing is asked when nobody scrapes).
        scheduler = self.dashboard.scheduler
        infos = await actor_infos(scheduler.host, workers_hosting(actor_rows(scheduler)))
        self.set_header("Content-Type", metrics.CONTENT_TYPE)
        self.finish(metrics.render(scheduler, infos))


class TaskStreamPageHandler(_DashboardHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(task_stream_page.render_page(self.dashboard.scheduler.host.address))


class TaskStreamHandler(_DashboardHandler):
    """``/api/task-stream?since=<index>&limit=<n>``: the records the page lacks."""

    def get(self) -> None:
        try:
            since = task_stream_page.parse_since(self.get_query_argument("since", None))
            limit = task_stream_page.parse_limit(self.get_query_argument("limit", None))
        except ValueError as e:
            self.set_status(400)
            self.write_json({"error": str(e)})
            return
        self.write_json(task_stream_page.reply(self.dashboard.scheduler.task_stream, since, limit))


def routes(ctx: dict[str, Any]) -> list[Any]:
    return [
        (r"/metrics", MetricsHandler, ctx),
        (r"/task-stream", TaskStreamPageHandler, ctx),
        (r"/api/task-stream", TaskStreamHandler, ctx),
        (r"/task-stream\.js", AssetHandler, {**ctx, "body": task_stream_page.SCRIPT,
                                              "content_type": "application/javascript; charset=utf-8"}),
        (r"/task-stream\.css", AssetHandler, {**ctx, "body": task_stream_page.STYLE,
                                               "content_type": "text/css; charset=utf-8"}),
    ]


__all__ = ["routes"]
