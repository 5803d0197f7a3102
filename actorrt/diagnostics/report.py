"""HTML for ``performance_report`` and ``get_task_stream(plot=...)``: text in, text out.

One self-contained page: inline CSS and SVG, no script, nothing fetched (it must open
on a machine with no network, or attached to a bug report). Every key, name and
address is escaped where it lands: keys are user text (``submit(..., key=...)``).

The task stream is drawn as in the dashboard: a lane per worker thread (and one per
worker for its transfers and disk reads/writes), a rectangle per run coloured by its
function, transfers and spills in their own colours, erred runs red; each rectangle's
``<title>`` is what a hover shows (key, duration, worker).
"""
from __future__ import annotations

import hashlib
import html
import time
from collections.abc import Iterable
from typing import Any

from ..sizes import format_bytes

#: Beyond this many rectangles the report draws the latest only (and says so): a
#: report must stay a file a browser opens.
MAX_RECTS = 50_000

WIDTH = 1000      # the drawing's width in px (it scales with the page)
LANE = 16         # px per lane
LABEL = 220       # px for the lane names

ERROR_COLOUR = "#d62728"
ACTION_COLOURS = {"transfer": "#ff9896", "disk-write": "#8c564b", "disk-read": "#c49c94"}

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.note { color: #666; } .swatch { display: inline-block; width: 10px; height: 10px; margin-right: 4px; }
svg text { font: 11px monospace; fill: #333; }
svg rect.run:hover { stroke: #000; stroke-width: 1; }
"""


def esc(value: Any) -> str:
    """``value`` as text safe inside HTML, SVG text and quoted attributes."""
    return html.escape(str(value), quote=True)


def note(text: str) -> str:
    """A paragraph saying why a section is missing."""
    return f'<p class="note">{esc(text)}</p>'


def colour(name: str) -> str:
    """A stable colour for a function name, never the red of errors."""
    h = int.from_bytes(hashlib.blake2b(name.encode("utf-8", "replace"), digest_size=4).digest(), "big")
    hue = 30 + h % 300  # 30..329: away from red (0/360)
    return f"hsl({hue},{55 + (h >> 9) % 25}%,{50 + (h >> 17) % 15}%)"


def _seconds(s: float) -> str:
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} us"


def _bytes(n: Any) -> str:
    return "-" if n is None else format_bytes(float(n), digits=1)


# --- the task stream ----------------------------------------------------------------------

def _spans(records: Iterable[dict]) -> list[tuple[str, str, float, float, dict, dict]]:
    """(lane, action, start, stop, record, startstop) for each drawn piece."""
    records = list(records)
    # Thread idents are long numbers: each worker's threads are numbered 1, 2, ... instead.
    idents: dict[Any, set] = {}
    for r in records:
        idents.setdefault(r.get("worker"), set()).add(r.get("thread"))
    number = {(w, t): i for w, ts in idents.items()
              for i, t in enumerate(sorted((t for t in ts if t is not None), key=str), 1)}
    out = []
    for r in records:
        for ss in r.get("startstops", ()):
            action = ss.get("action", "compute")
            where = f"thread {number.get((r.get('worker'), r.get('thread')), '?')}" if action == "compute" else "io"
            lane = f"{r.get('worker', '?')} {where}"
            out.append((lane, action, float(ss["start"]), float(ss["stop"]), r, ss))
    return out


def task_stream_svg(records: list[dict], start: float | None = None, stop: float | None = None,
                    max_rects: int = MAX_RECTS) -> str:
    """The task stream as an inline SVG (with a line saying what was left out)."""
    spans = _spans(records)
    if not spans:
        return note("no task ran in this interval")
    dropped = 0
    if len(spans) > max_rects:
        spans.sort(key=lambda s: s[3])
        dropped = len(spans) - max_rects
        spans = spans[dropped:]
    t0 = min(s[2] for s in spans) if start is None else min(start, min(s[2] for s in spans))
    t1 = max(s[3] for s in spans) if stop is None else max(stop, max(s[3] for s in spans))
    scale = WIDTH / max(t1 - t0, 1e-9)
    lanes = sorted({s[0] for s in spans})
    row = {lane: i for i, lane in enumerate(lanes)}
    height = LANE * len(lanes) + 20
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {LABEL + WIDTH} {height}" '
             f'width="100%" role="img" aria-label="task stream">']
    for lane, i in row.items():
        parts.append(f'<text x="2" y="{i * LANE + 12}">{esc(lane[-34:])}</text>')
    for lane, action, begin, end, r, ss in spans:
        x = LABEL + (begin - t0) * scale
        w = max((end - begin) * scale, 0.5)
        if action == "compute":
            fill = ERROR_COLOUR if r.get("status") == "error" else colour(str(r.get("name", "")))
        else:
            fill = ACTION_COLOURS.get(action, "#999")
        what = action if action != "compute" else ("error" if r.get("status") == "error" else "compute")
        title = f"{r.get('key')}\n{what} {_seconds(end - begin)}\nworker {r.get('worker')}"
        if ss.get("source"):
            title += f"\nfrom {ss['source']}"
        parts.append(f'<rect class="run" x="{x:.2f}" y="{row[lane] * LANE + 2}" width="{w:.2f}" '
                     f'height="{LANE - 4}" fill="{esc(fill)}"><title>{esc(title)}</title></rect>')
    parts.append(f'<text x="{LABEL}" y="{height - 4}">0 s</text>'
                 f'<text x="{LABEL + WIDTH - 80}" y="{height - 4}">{esc(_seconds(t1 - t0))}</text>')
    parts.append("</svg>")
    if dropped:
        parts.append(note(f"{dropped} earlier pieces left out (the latest {max_rects} are drawn)"))
    return "".join(parts)


def _legend(records: list[dict]) -> str:
    names = sorted({str(r.get("name", "")) for r in records
                    if any(ss.get("action") == "compute" for ss in r.get("startstops", ()))})[:40]
    items = [f'<span class="swatch" style="background:{esc(colour(n))}"></span>{esc(n)}' for n in names]
    items += [f'<span class="swatch" style="background:{c}"></span>{a}' for a, c in ACTION_COLOURS.items()]
    items.append(f'<span class="swatch" style="background:{ERROR_COLOUR}"></span>erred')
    return "<p>" + " &nbsp; ".join(items) + "</p>"


# --- tables ---------------------------------------------------------------------------

def function_summary(records: list[dict]) -> list[dict[str, Any]]:
    """Per function: runs, errors, total and mean compute seconds; then one row per
    other action (transfers, disk) with its bytes. Largest total first."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        for ss in r.get("startstops", ()):
            action = ss.get("action", "compute")
            name = str(r.get("name", "")) if action == "compute" else action
            row = rows.setdefault((action, name), {"name": name, "action": action, "count": 0,
                                                   "errors": 0, "total": 0.0, "nbytes": 0})
            row["count"] += 1
            row["total"] += max(0.0, float(ss["stop"]) - float(ss["start"]))
            row["nbytes"] += int(r.get("nbytes") or 0)
            if action == "compute" and r.get("status") == "error":
                row["errors"] += 1
    out = sorted(rows.values(), key=lambda row: (row["action"] != "compute", -row["total"]))
    for row in out:
        row["mean"] = row["total"] / row["count"]
    return out


def _summary_table(records: list[dict]) -> str:
    rows = function_summary(records)
    if not rows:
        return note("nothing ran")
    body = "".join(
        f"<tr><td>{esc(r['name'])}</td><td>{r['count']}</td><td>{r['errors']}</td>"
        f"<td>{esc(_seconds(r['total']))}</td><td>{esc(_seconds(r['mean']))}</td>"
        f"<td>{esc(_bytes(r['nbytes']))}</td></tr>" for r in rows)
    return ("<table><tr><th>function / action</th><th>count</th><th>erred</th><th>total</th>"
            f"<th>mean</th><th>bytes</th></tr>{body}</table>")


def _fmt_cpu(v: Any) -> str:
    return "-" if v is None else f"{float(v):.0f}%"


def _figures_table(before: dict, after: dict) -> str:
    addresses = sorted(set(before) | set(after))
    if not addresses:
        return note("no workers")
    body = []
    for a in addresses:
        b, e = before.get(a, {}), after.get(a, {})
        body.append(
            f"<tr><td>{esc(a)}</td><td>{esc(e.get('nthreads', b.get('nthreads', '-')))}</td>"
            f"<td>{_fmt_cpu(b.get('cpu'))}</td><td>{_fmt_cpu(e.get('cpu'))}</td>"
            f"<td>{esc(_bytes(b.get('rss')))}</td><td>{esc(_bytes(e.get('rss')))}</td>"
            f"<td>{esc(_bytes(e.get('managed')))}</td><td>{esc(_bytes(e.get('spilled')))}</td>"
            f"<td>{esc(_bytes(e.get('limit')))}</td>"
            f"<td>{esc(_bytes(e.get('sent_per_s')))}/s</td><td>{esc(_bytes(e.get('received_per_s')))}/s</td></tr>")
    return ("<table><tr><th>worker</th><th>threads</th><th>CPU start</th><th>CPU end</th><th>RSS start</th>"
            "<th>RSS end</th><th>managed</th><th>spilled</th><th>limit</th><th>sent</th><th>received</th></tr>"
            + "".join(body) + "</table>")


# --- pages ----------------------------------------------------------------------------

def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{_STYLE}</style></head><body>{body}</body></html>\n")


def render_task_stream_page(records: list[dict]) -> str:
    """``get_task_stream(plot=True)``'s page: the stream and its legend."""
    return _page("actorrt task stream", "<h1>Task stream</h1>" + _legend(records) + task_stream_svg(records))


def render_report(records: list[dict], *, start: float, stop: float, figures_before: dict | None = None,
                  figures_after: dict | None = None, profile_svg: str | None = None) -> str:
    """``performance_report``'s page. ``profile_svg``: markup from the flame-graph
    renderer (trusted: ours), inserted as is."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(start))
    computed = sum(1 for r in records for ss in r.get("startstops", ()) if ss.get("action") == "compute")
    erred = sum(1 for r in records if r.get("status") == "error")
    duration = max(0.0, stop - start)
    parts = [
        f"<h1>actorrt performance report</h1><p>{esc(when)}, {esc(_seconds(duration))} wall clock; "
        f"{computed} task runs, {erred} erred.</p>",
        "<h2>Task stream</h2>", _legend(records), task_stream_svg(records, start, stop),
        "<h2>By function</h2>", _summary_table(records),
        "<h2>Workers</h2>", _figures_table(figures_before or {}, figures_after or {}),
        "<h2>Profile</h2>", profile_svg if profile_svg else note("no profile was collected"),
    ]
    return _page("actorrt performance report", "".join(parts))


__all__ = ["MAX_RECTS", "colour", "esc", "function_summary", "note", "render_report",
           "render_task_stream_page", "task_stream_svg"]
