"""The dashboard's one page: HTML rendered from a status snapshot, plus its script and style.

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

#: Columns of the per-name progress table, after the name and the bar.
NAME_COLUMNS = ("waiting", "queued", "processing", "memory", "erred", "released")

#: Sent with every page: only this server's own script and style, nothing inline.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; "
                           "connect-src 'self' ws: wss:; img-src 'self'; base-uri 'none'; "
                           "form-action 'none'; frame-ancestors 'none'")


def human_bytes(n: float) -> str:
    """>>> human_bytes(1536)
    '1.5 KiB'
    """
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


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
    """The whole page for ``snapshot`` (from :func:`actorrt.dashboard.status.status`)."""
    e = escape
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>actorrt dashboard</title>
<link rel="stylesheet" href="dashboard.css">
</head>
<body>
<header>
<h1>actorrt</h1>
<span id="scheduler">{e(snapshot["scheduler"])}</span>
<span id="conn" class="off">snapshot</span>
</header>
<section id="summary">{_summary(snapshot)}</section>
<h2>Tasks by name</h2>
<table id="names">
<thead><tr><th>name</th><th>progress</th>{"".join(f"<th>{c}</th>" for c in NAME_COLUMNS)}<th>total</th></tr></thead>
<tbody>{_name_rows(snapshot)}</tbody>
</table>
<p id="omitted">{_omitted(snapshot)}</p>
<h2>Workers</h2>
<table id="workers">
<thead><tr><th>address</th><th>name</th><th>status</th><th>threads</th><th>processing</th><th>keys</th><th>bytes</th><th>spilled</th><th>process / limit</th></tr></thead>
<tbody>{_worker_rows(snapshot)}</tbody>
</table>
<h2>Story of a key</h2>
<form id="story-form"><input id="story-key" placeholder="a task's key" size="50"> <button>show</button></form>
<p id="story-note"></p>
<table id="story"><thead><tr><th>time</th><th>from</th><th>to</th><th>stimulus</th></tr></thead><tbody></tbody></table>
<script src="dashboard.js"></script>
</body>
</html>
"""


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
        ("uptime", human_duration(snapshot["uptime"])),
    ]


def _summary(snapshot: dict[str, Any]) -> str:
    return "".join(f'<div class="card"><b>{escape(value)}</b><span>{escape(label)}</span></div>'
                   for label, value in summary_items(snapshot))


def _name_rows(snapshot: dict[str, Any]) -> str:
    rows = []
    for name, counts in snapshot["by_name"].items():
        total = sum(counts.values())
        done = counts.get("memory", 0) + counts.get("erred", 0)
        cells = "".join(f"<td>{counts.get(c, 0)}</td>" for c in NAME_COLUMNS)
        rows.append(f'<tr><td class="name">{escape(name)}</td>'
                    f'<td><progress value="{done}" max="{max(total, 1)}"></progress></td>'
                    f"{cells}<td>{total}</td></tr>")
    return "".join(rows)


def _omitted(snapshot: dict[str, Any]) -> str:
    n = snapshot["names_omitted"]
    return f"{n} more task names with fewer tasks are not shown." if n else ""


def _worker_rows(snapshot: dict[str, Any]) -> str:
    return "".join(
        f'<tr><td class="name">{escape(w["address"])}</td><td>{escape(str(w["name"]))}</td>'
        f'<td class="{escape(w["status"])}">{escape(w["status"])}</td>'
        f'<td>{w["nthreads"]}</td><td>{w["processing"]}</td><td>{w["keys"]}</td>'
        f'<td>{escape(human_bytes(w["bytes"]))}</td><td>{escape(human_bytes(w["spilled"]))}</td>'
        f'<td>{escape(process_memory(w["rss"], w["limit"]))}</td></tr>'
        for w in snapshot["workers"])


def process_memory(rss: int | None, limit: int | None) -> str:
    """>>> process_memory(2 << 30, 4 << 30)
    '2.0 GiB / 4.0 GiB'"""
    used = "?" if rss is None else human_bytes(rss)
    return f"{used} / {'no limit' if limit is None else human_bytes(limit)}"


STYLE = """\
body { font: 14px/1.4 system-ui, sans-serif; margin: 1em 2em; color: #222; background: #fafafa; }
header { display: flex; align-items: baseline; gap: 1em; }
h1 { font-size: 1.4em; margin: 0; }
h2 { font-size: 1.1em; margin: 1.4em 0 0.4em; }
#scheduler { color: #555; font-family: monospace; }
#conn { font-size: 0.85em; padding: 0 0.5em; border-radius: 3px; background: #ccc; }
#conn.live { background: #8c8; }
td.paused { color: #b00; font-weight: bold; }
#summary { display: flex; flex-wrap: wrap; gap: 0.6em; margin-top: 1em; }
.card { background: #fff; border: 1px solid #ddd; border-radius: 4px; padding: 0.3em 0.8em;
        display: flex; flex-direction: column; align-items: center; min-width: 5em; }
.card b { font-size: 1.3em; }
.card span { color: #666; font-size: 0.85em; }
table { border-collapse: collapse; background: #fff; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.6em; text-align: right; }
th { background: #eee; }
td.name { text-align: left; font-family: monospace; max-width: 40em; overflow-wrap: anywhere; }
progress { width: 12em; }
#omitted, #story-note { color: #666; }
"""

# The live page: every value goes in through textContent (names are user input).
SCRIPT = """\
(function () {
  "use strict";
  var COLUMNS = %(columns)s;
  function byId(id) { return document.getElementById(id); }
  function cell(row, text, cls) {
    var td = document.createElement("td");
    td.textContent = String(text);
    if (cls) { td.className = cls; }
    row.appendChild(td);
    return td;
  }
  function bytes(n) {
    var units = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return i === 0 ? n.toFixed(0) + " B" : n.toFixed(1) + " " + units[i];
  }
  function duration(t) {
    var s = Math.floor(t), pad = function (x) { return (x < 10 ? "0" : "") + x; };
    if (s < 60) { return s + "s"; }
    if (s < 3600) { return Math.floor(s / 60) + "m " + pad(s %% 60) + "s"; }
    return Math.floor(s / 3600) + "h " + pad(Math.floor(s %% 3600 / 60)) + "m " + pad(s %% 60) + "s";
  }
  function rows(tbody, items, build) {
    var fresh = document.createElement("tbody");
    items.forEach(function (item) { var tr = document.createElement("tr"); build(tr, item); fresh.appendChild(tr); });
    tbody.parentNode.replaceChild(fresh, tbody);
  }
  function summary(s) {
    var st = s.tasks.by_state, threads = 0;
    s.workers.forEach(function (w) { threads += w.nthreads; });
    var items = [["workers", s.workers.length], ["threads", threads], ["tasks", s.tasks.total],
                 ["processing", st.processing || 0], ["in memory", st.memory || 0],
                 ["finished", s.totals.finished], ["erred", s.totals.erred],
                 ["clients", s.clients.length], ["uptime", duration(s.uptime)]];
    var box = byId("summary");
    while (box.firstChild) { box.removeChild(box.firstChild); }
    items.forEach(function (it) {
      var div = document.createElement("div"), b = document.createElement("b"), span = document.createElement("span");
      div.className = "card"; b.textContent = String(it[1]); span.textContent = it[0];
      div.appendChild(b); div.appendChild(span); box.appendChild(div);
    });
  }
  function render(s) {
    byId("scheduler").textContent = s.scheduler;
    summary(s);
    rows(byId("names").tBodies[0], Object.keys(s.by_name), function (tr, name) {
      var counts = s.by_name[name], total = 0;
      Object.keys(counts).forEach(function (k) { total += counts[k]; });
      cell(tr, name, "name");
      var bar = document.createElement("progress");
      bar.max = Math.max(total, 1); bar.value = (counts.memory || 0) + (counts.erred || 0);
      cell(tr, "").appendChild(bar);
      COLUMNS.forEach(function (c) { cell(tr, counts[c] || 0); });
      cell(tr, total);
    });
    byId("omitted").textContent = s.names_omitted ?
      s.names_omitted + " more task names with fewer tasks are not shown." : "";
    rows(byId("workers").tBodies[0], s.workers, function (tr, w) {
      cell(tr, w.address, "name"); cell(tr, w.name); cell(tr, w.status, w.status); cell(tr, w.nthreads);
      cell(tr, w.processing); cell(tr, w.keys); cell(tr, bytes(w.bytes)); cell(tr, bytes(w.spilled));
      cell(tr, (w.rss === null ? "?" : bytes(w.rss)) + " / " + (w.limit === null ? "no limit" : bytes(w.limit)));
    });
  }
  function connect(delay) {
    var url = new URL("ws", location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    var ws = new WebSocket(url.href), conn = byId("conn");
    ws.onopen = function () { conn.textContent = "live"; conn.className = "live"; delay = 1000; };
    ws.onmessage = function (ev) { render(JSON.parse(ev.data)); };
    ws.onclose = function () {
      conn.textContent = "disconnected: retrying"; conn.className = "off";
      setTimeout(function () { connect(Math.min(delay * 2, 15000)); }, delay);
    };
  }
  function showStory(ev) {
    ev.preventDefault();
    var key = byId("story-key").value, note = byId("story-note");
    fetch("api/story/" + encodeURIComponent(key)).then(function (r) {
      return r.json().then(function (body) { return [r.ok, body]; });
    }).then(function (res) {
      var body = res[1], list = res[0] ? body.transitions : [];
      note.textContent = res[0] ? key + " is " + body.state : (body.error || "no such key");
      rows(byId("story").tBodies[0], list, function (tr, t) {
        cell(tr, new Date(t.time * 1000).toISOString()); cell(tr, t.start); cell(tr, t.finish);
        cell(tr, t.stimulus_id, "name");
      });
    }, function (err) { note.textContent = String(err); });
  }
  byId("story-form").addEventListener("submit", showStory);
  connect(1000);
})();
"""


def script() -> str:
    """The page's script, with the table's columns filled in."""
    columns = "[" + ", ".join(f'"{c}"' for c in NAME_COLUMNS) + "]"
    return SCRIPT % {"columns": columns}
