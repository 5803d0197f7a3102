"""Every dashboard page's frame: head, navigation, connection badge, scripts; and the
bodies of the pages that the script fills in (all but the status page, see page.py).

The pages carry no inline script or style (the Content-Security-Policy forbids them)
and fetch nothing from elsewhere: an offline cluster's dashboard works the same.
The script of a page learns what it shows from ``data-`` attributes of ``<body>``.
"""
from __future__ import annotations

from html import escape

#: The navigation: (path, label). The task stream and profile pages come from other
#: modules (task_stream_page.py, profile_page.py).
NAV = (("status", "Status"), ("task-stream", "Task stream"), ("graph", "Graph"),
       ("actors", "Actors"), ("coordination", "Coordination"), ("events", "Events"),
       ("profile", "Profile"))

#: The favicon: a small SVG (served as /favicon.ico and /favicon.svg).
FAVICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
           '<rect width="16" height="16" rx="3" fill="#2a6f97"/>'
           '<circle cx="5" cy="5" r="2" fill="#fff"/><circle cx="11" cy="5" r="2" fill="#fff"/>'
           '<circle cx="8" cy="11" r="2.4" fill="#f4a261"/>'
           '<path d="M5 5 8 11 11 5" stroke="#fff" fill="none"/></svg>')


def header(page: str, root: str = "") -> str:
    """The common header: the title, the navigation (``page`` marked), the connection badge."""
    here = ' class="here"'
    nav = "".join(f'<a href="{root}{path}"{here if path == page else ""}>{label}</a>'
                  for path, label in NAV)
    return f"""<header>
<h1>actorrt</h1>
<nav>{nav}</nav>
<span id="conn" class="off">snapshot</span>
</header>"""


def shell(title: str, page: str, body: str, *, root: str = "", key: str | None = None) -> str:
    """A whole page: ``body`` inside the common frame. ``root`` leads back to the
    dashboard's root from this page's path (``"../"`` under ``/task/``)."""
    e = escape
    key_attr = "" if key is None else f' data-key="{e(key)}"'
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)} · actorrt dashboard</title>
<link rel="icon" href="{root}favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="{root}dashboard.css">
</head>
<body data-page="{e(page)}" data-root="{e(root)}"{key_attr}>
{header(page, root)}
{body}
<script src="{root}static/common.js"></script>
{"" if page == "missing" else f'<script src="{root}static/{e(page)}.js"></script>'}
</body>
</html>
"""


def task_page(key: str, root: str = "../") -> str:
    body = f"""<h2>Task <code id="task-key">{escape(key)}</code></h2>
<p id="task-note"></p>
<table id="task-facts" class="facts"><tbody></tbody></table>
<section id="failure" hidden><h2>Exception</h2><pre id="exception"></pre>
<h3>Traceback</h3><pre id="traceback"></pre></section>
<div class="cols">
<section><h2>Dependencies</h2><ul id="dependencies" class="keys"></ul></section>
<section><h2>Dependents</h2><ul id="dependents" class="keys"></ul></section>
</div>
<h2>Story</h2>
<table id="story"><thead><tr><th>time</th><th>from</th><th>to</th><th>stimulus</th></tr></thead><tbody></tbody></table>"""
    return shell(f"task {key[:60]}", "task", body, root=root, key=key)


def not_found_page(key: str, why: str, root: str = "../") -> str:
    body = f'<h2>No such task</h2><p id="task-note" class="error">{escape(why)}</p>'
    return shell("no such task", "missing", body, root=root, key=key)


def graph_page() -> str:
    body = """<h2>Task graph</h2>
<p id="graph-note">The tasks the scheduler holds, by dependency depth (left to right);
click a node for its task page.</p>
<p id="legend"></p>
<div id="graph-box"><svg id="graph" xmlns="http://www.w3.org/2000/svg" width="800" height="200"></svg></div>"""
    return shell("graph", "graph", body)


def events_page() -> str:
    body = """<h2>Events</h2>
<p id="topics"></p>
<table id="events"><thead><tr><th>time</th><th>topic</th><th>event</th></tr></thead><tbody></tbody></table>"""
    return shell("events", "events", body)


def actors_page() -> str:
    body = """<h2>Actors</h2>
<table id="actors"><thead><tr><th>key</th><th>class</th><th>name</th><th>state</th>
<th>worker</th><th>calls/s</th><th>calls</th><th>in flight</th><th>queued</th><th>restarts</th>
<th>last error</th></tr></thead><tbody></tbody></table>
<p id="actors-note"></p>"""
    return shell("actors", "actors", body)


def coordination_page() -> str:
    body = """<h2>Queues, locks, semaphores, events, variables, conditions, topics</h2>
<table id="coordination"><thead><tr><th>kind</th><th>name</th><th>size</th>
<th>holders</th><th>waiters</th><th>details</th></tr></thead><tbody></tbody></table>
<p id="coordination-note"></p>"""
    return shell("coordination", "coordination", body)
