"""The dashboard's status page: HTML rendered from a status snapshot, and the style of
every page (the scripts are in static/, the frame in shell.py).

The page is complete without script (a snapshot as of the request); the script then
keeps it live from the websocket. Everything user-controlled (task names, keys,
worker names) goes into the HTML through :func:`html.escape`, and into the live page
through ``textContent``, never through markup. The script and style are served from
this server (the page has no external assets: it must work on machines without
internet), which lets the Content-Security-Policy forbid inline script altogether.
"""
from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import quote

from ..sizes import format_bytes
from .shell import shell

#: Columns of the per-name progress table, after the name and the bar.
NAME_COLUMNS = ("waiting", "queued", "processing", "memory", "erred", "cancelled", "released")

#: Sent with every page: only this server's own script and style, nothing inline.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; "
                           "connect-src 'self' ws: wss:; img-src 'self'; base-uri 'none'; "
                           "form-action 'none'; frame-ancestors 'none'")


def human_bytes(n: float) -> str:
    """>>> human_bytes(1536)
    '1.5 KiB'
    """
    return format_bytes(n, digits=1)


def human_duration(seconds: float) -> str:
    """>>> human_duration(3723)
    '1h 02m 03s'
    """
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m {s % 60:02d}s"


def render_page(snapshot: dict[str, Any]) -> str:
    """The status page for ``snapshot`` (from :func:`actorrt.dashboard.status.status`):
    complete without script; the script keeps it live."""
    e = escape
    body = f"""<p id="scheduler">{e(snapshot["scheduler"])}</p>
<section id="summary">{_summary(snapshot)}</section>
<h2>Tasks by name</h2>
<table id="names">
<thead><tr><th>name</th><th>progress</th>{"".join(f"<th>{c}</th>" for c in NAME_COLUMNS)}<th>total</th></tr></thead>
<tbody>{_name_rows(snapshot)}</tbody>
</table>
<p id="omitted">{_omitted(snapshot)}</p>
<h2>Failed tasks</h2>
<ul id="erred" class="keys">{_erred_rows(snapshot)}</ul>
<h2>Workers</h2>
<table id="workers">
<thead><tr>{"".join(f"<th>{c}</th>" for c in WORKER_COLUMNS)}</tr></thead>
<tbody>{_worker_rows(snapshot)}</tbody>
</table>
<h2>A key</h2>
<form id="key-form"><input id="key-input" placeholder="a task's key" size="50"> <button>open</button></form>"""
    return shell("status", "status", body)


#: The workers table's columns.
WORKER_COLUMNS = ("address", "name", "status", "threads", "processing", "CPU", "sent/s", "received/s",
                  "keys", "managed", "spilled", "memory / limit")


def summary_items(snapshot: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) pairs of the summary line; the script computes the same ones."""
    by_state = snapshot["tasks"]["by_state"]
    workers = snapshot["workers"]
    return [
        ("workers", str(len(workers))),
        ("threads", str(sum(w["nthreads"] for w in workers))),
        ("tasks", str(snapshot["tasks"]["total"])),
        ("processing", str(by_state.get("processing", 0))),
        ("in memory", str(by_state.get("memory", 0))),
        ("finished", str(snapshot["totals"]["finished"])),
        ("erred", str(snapshot["totals"]["erred"])),
        ("clients", str(len(snapshot["clients"]))),
        ("CPU", optional(_total(workers, "cpu"), lambda v: f"{v:.0f} %")),
        ("memory", human_bytes(sum(w["rss"] or 0 for w in workers))),
        ("sent", optional(_total(workers, "sent_per_s"), lambda v: human_bytes(v) + "/s")),
        ("received", optional(_total(workers, "received_per_s"), lambda v: human_bytes(v) + "/s")),
        ("uptime", human_duration(snapshot["uptime"])),
    ]


def _total(workers: list[dict[str, Any]], field: str) -> float | None:
    """The workers' sum of an optional figure; None when none reports it."""
    values = [w[field] for w in workers if w.get(field) is not None]
    return sum(values) if values else None


def _summary(snapshot: dict[str, Any]) -> str:
    return "".join(f'<div class="card"><b>{escape(value)}</b><span>{escape(label)}</span></div>'
                   for label, value in summary_items(snapshot))


def _name_rows(snapshot: dict[str, Any]) -> str:
    rows = []
    for name, counts in snapshot["by_name"].items():
        total = sum(counts.values())
        done = counts.get("memory", 0) + counts.get("erred", 0) + counts.get("cancelled", 0)
        cells = "".join(f"<td>{counts.get(c, 0)}</td>" for c in NAME_COLUMNS)
        rows.append(f'<tr><td class="name">{escape(name)}</td>'
                    f'<td><progress value="{done}" max="{max(total, 1)}"></progress></td>'
                    f"{cells}<td>{total}</td></tr>")
    return "".join(rows)


def _omitted(snapshot: dict[str, Any]) -> str:
    n = snapshot["names_omitted"]
    return f"{n} more task names with fewer tasks are not shown." if n else ""


def _erred_rows(snapshot: dict[str, Any]) -> str:
    return "".join(f'<li>{key_link(t["key"])}</li>' for t in snapshot.get("erred_keys", ())) \
        or "<li>none</li>"


def key_link(key: str, root: str = "") -> str:
    """A link to ``key``'s task page (escaped for the path and for the HTML)."""
    return f'<a class="key" href="{escape(root)}task/{escape(quote(key, safe=""))}">{escape(key)}</a>'


def optional(value: Any, fmt: Any) -> str:
    """A figure a worker may not report (yet): a dash when absent."""
    return "–" if value is None else fmt(value)


def _worker_rows(snapshot: dict[str, Any]) -> str:
    rows = []
    for w in snapshot["workers"]:
        rss, limit = w["rss"], w["limit"]
        meter = "" if rss is None else _meter(rss, limit)
        rows.append(
            f'<tr><td class="name">{escape(w["address"])}</td><td>{escape(str(w["name"]))}</td>'
            f'<td class="{escape(w["status"])}">{escape(w["status"])}</td>'
            f'<td>{w["nthreads"]}</td><td>{w["processing"]}</td>'
            f'<td>{optional(w.get("cpu"), lambda v: f"{v:.0f} %")}</td>'
            f'<td>{optional(w.get("sent_per_s"), lambda v: human_bytes(v) + "/s")}</td>'
            f'<td>{optional(w.get("received_per_s"), lambda v: human_bytes(v) + "/s")}</td>'
            f'<td>{w["keys"]}</td>'
            f'<td>{_meter(w["bytes"], limit)}{escape(human_bytes(w["bytes"]))}</td>'
            f'<td>{escape(human_bytes(w["spilled"]))}</td>'
            f'<td>{meter}{escape(process_memory(rss, limit))}</td></tr>')
    return "".join(rows)


def _meter(value: int, limit: int | None) -> str:
    """A bar of ``value`` against the worker's memory limit (none without a limit)."""
    if not limit:
        return ""
    return f'<meter min="0" max="{limit}" high="{int(limit * 0.8)}" value="{min(value, limit)}"></meter> '


def process_memory(rss: int | None, limit: int | None) -> str:
    """>>> process_memory(2 << 30, 4 << 30)
    '2.0 GiB / 4.0 GiB'"""
    used = "?" if rss is None else human_bytes(rss)
    return f"{used} / {'no limit' if limit is None else human_bytes(limit)}"
