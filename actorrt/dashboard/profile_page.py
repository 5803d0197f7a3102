"""The dashboard's profile page: ``/profile`` (a flame graph) and ``/api/profile`` (JSON).

Both ask every worker for its sampled call tree of the last ``seconds`` (worker
``profile`` op, worker/profiler.py), for every task or one task name (``key``), and
merge them. Nothing is asked while no one requests the page: it costs the cluster
nothing unopened. The page has no script at all: the graph is SVG drawn here, its
tooltips are SVG titles, and choosing a name or a window is following a link (the
Content-Security-Policy forbids forms). Loaded with the web layer (it builds on
:mod:`.app`'s handlers).
"""
from __future__ import annotations

import asyncio
import time
from html import escape
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from ..core import ActorRef
from ..diagnostics.flamegraph import CSS as FLAME_CSS
from ..diagnostics.flamegraph import flame_svg
from ..diagnostics.profile import KEEP_SECONDS, merge
from ..protocol import WORKER_ID
from .app import AssetHandler, _DashboardHandler
from .app import static_file
from .shell import header
from .task_view import MAX_KEY_LENGTH

if TYPE_CHECKING:
    from ..scheduler.actor import Scheduler

#: Windows offered on the page, in seconds; any from 1 to what workers keep is accepted.
WINDOWS = (10, 60, 300, KEEP_SECONDS)
DEFAULT_SECONDS = 60
#: Longest ``key`` accepted: a task name or a key, never a document.
MAX_KEY = MAX_KEY_LENGTH  # (a task name or a key: the task pages' bound)
#: Seconds to wait for a worker's tree; a worker slower than that is left out (and counted).
ASK_TIMEOUT = 5.0
#: Names listed as links, at most (the workers keep at most 50 per second each).
MAX_NAME_LINKS = 100
HOT_ROWS = 20
#: Nodes asked of each worker: the page draws at most 2,000 frames, and merging runs on
#: the scheduler's loop.
MAX_NODES_PER_WORKER = 5_000

PAGE_CSS = static_file("dashboard.css") + FLAME_CSS + """\
nav.choices a { margin-right: 0.6em; }
nav.choices a.on { font-weight: bold; text-decoration: none; color: #222; }
#flame { overflow-x: auto; background: #fff; border: 1px solid #ddd; padding: 4px; }
"""


class BadQuery(ValueError):
    """A page parameter that cannot be used (answered 400, naming it)."""


def parse_query(key: str | None, seconds: str | None) -> tuple[str | None, int]:
    """``(key or None, seconds)`` from the query's text values."""
    if key is not None:
        if len(key) > MAX_KEY:
            raise BadQuery(f"key is {len(key)} characters long; at most {MAX_KEY}")
        key = key or None
    if seconds is None or seconds == "":
        return key, DEFAULT_SECONDS
    try:
        n = int(seconds)
    except ValueError:
        raise BadQuery(f"seconds must be a whole number of seconds, got {seconds[:40]!r}") from None
    if not 1 <= n <= KEEP_SECONDS:
        raise BadQuery(f"seconds must be from 1 to {KEEP_SECONDS} (what workers keep), got {n}")
    return key, n


async def collect(scheduler: "Scheduler", key: str | None, seconds: int) -> dict[str, Any]:
    """Every worker's tree of the last ``seconds``, merged: ``{"key", "seconds",
    "workers", "answered", "timed_out", "failed", "names", "tree"}`` (``failed``: the
    first error of a worker that could not answer, e.g. one that left meanwhile)."""
    addresses = sorted(scheduler.state.workers)
    start = time.time() - seconds
    host = scheduler.host

    async def one(address: str) -> Any:
        ask = host.ask_bulk(ActorRef(address, WORKER_ID), "profile", start=start, stop=None, key=key,
                            max_nodes=MAX_NODES_PER_WORKER)
        return await asyncio.wait_for(ask, ASK_TIMEOUT)
    replies = await asyncio.gather(*[one(a) for a in addresses], return_exceptions=True)
    answers = [r for r in replies if isinstance(r, dict)]
    timed_out = sum(isinstance(r, (asyncio.TimeoutError, TimeoutError)) for r in replies)
    errors = [f"{type(r).__name__}: {r}" for r in replies
              if isinstance(r, BaseException) and not isinstance(r, (asyncio.TimeoutError, TimeoutError))]
    names = sorted({n for r in answers for n in r.get("names", ())})
    return {"key": key, "seconds": seconds, "workers": len(addresses), "answered": len(answers),
            "timed_out": timed_out, "failed": errors, "names": names,
            "tree": merge(*(r["tree"] for r in answers))}


def hot_frames(tree: dict[str, Any], n: int = HOT_ROWS) -> list[tuple[str, str, int]]:
    """The ``n`` lines most often at the top of a stack: ``(function, file:line, samples)``."""
    own: dict[tuple[str, str], int] = {}
    stack = list(tree["children"].values())
    while stack:
        node = stack.pop()
        children = node["children"].values()
        mine = node["count"] - sum(c["count"] for c in children)
        if mine > 0:
            d = node["description"]
            where = (d["name"], f'{d["filename"]}:{d["line_number"]}')
            own[where] = own.get(where, 0) + mine
        stack.extend(children)
    ranked = sorted(own.items(), key=lambda item: -item[1])[:n]
    return [(name, where, count) for (name, where), count in ranked]


def _missing_note(timed_out: int, failed: list[str]) -> str:
    """Why some workers are not in the profile, as the page says it."""
    parts = []
    if timed_out:
        parts.append(f"{timed_out} did not answer within {ASK_TIMEOUT:g} s")
    if failed:
        parts.append(f"{len(failed)} could not be asked ({failed[0]})")
    return f" ({'; '.join(parts)})" if parts else ""


def _link(label: str, key: str | None, seconds: int, on: bool) -> str:
    query = urlencode({k: v for k, v in (("key", key), ("seconds", seconds)) if v is not None})
    cls = ' class="on"' if on else ""
    return f'<a{cls} href="profile?{escape(query)}">{escape(label)}</a>'


def render_profile_page(result: dict[str, Any]) -> str:
    """The whole page for ``result`` (from :func:`collect`)."""
    e = escape
    key, seconds, tree = result["key"], result["seconds"], result["tree"]
    windows = "".join(_link(f"{w // 60} min" if w >= 60 else f"{w} s", key, w, w == seconds) for w in WINDOWS)
    names = result["names"][:MAX_NAME_LINKS]
    choices = _link("all tasks", None, seconds, key is None) + "".join(
        _link(name, name, seconds, name == key) for name in names)
    if key is not None and key not in names:
        choices += _link(key, key, seconds, True)
    total = tree["count"] or 1
    hot = "".join(f'<tr><td class="name">{e(name)}</td><td class="name">{e(where)}</td>'
                  f"<td>{count}</td><td>{100 * count / total:.1f}%</td></tr>"
                  for name, where, count in hot_frames(tree))
    note = _missing_note(result["timed_out"], result["failed"])
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>profile · actorrt dashboard</title>
<link rel="icon" href="favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="profile.css">
</head>
<body>
{header("profile")}
<p id="profile-summary">{tree["count"]} samples of {"tasks called " + e(key) if key else "all tasks"} over the
last {seconds} s from {result["answered"]} of {result["workers"]} workers{e(note)}.</p>
<nav class="choices" id="windows">window: {windows}</nav>
<nav class="choices" id="names">tasks: {choices}</nav>
<div id="flame">{flame_svg(tree)}</div>
<h2>Lines on top of the stack</h2>
<table id="hot"><thead><tr><th>function</th><th>where</th><th>samples</th><th>share</th></tr></thead>
<tbody>{hot}</tbody></table>
</body>
</html>
"""


class _ProfileHandler(_DashboardHandler):
    async def collect(self) -> dict[str, Any] | None:
        """The merged profile the query asks for; None after answering 400."""
        try:
            key, seconds = parse_query(self.get_query_argument("key", None),
                                       self.get_query_argument("seconds", None))
        except BadQuery as e:
            self.set_status(400)
            self.write_json({"error": str(e)})
            return None
        return await collect(self.dashboard.scheduler, key, seconds)


class ProfilePageHandler(_ProfileHandler):
    async def get(self) -> None:
        result = await self.collect()
        if result is not None:
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.finish(render_profile_page(result))


class ProfileApiHandler(_ProfileHandler):
    async def get(self) -> None:
        result = await self.collect()
        if result is not None:
            self.write_json(result)


def profile_routes(ctx: dict[str, Any]) -> list[Any]:
    """The routes of this page, for :func:`.app.serve`."""
    return [
        (r"/profile", ProfilePageHandler, ctx),
        (r"/api/profile", ProfileApiHandler, ctx),
        (r"/profile\.css", AssetHandler, {**ctx, "body": PAGE_CSS, "content_type": "text/css; charset=utf-8"}),
    ]
