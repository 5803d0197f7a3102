"""The dashboard's task stream page (``/task-stream``): its HTML, script and style, and
the bounded reply of its incremental endpoint (``/api/task-stream?since=``).

As page.py: no inline script or style (the Content-Security-Policy forbids both), no
external assets (an offline cluster), and every key, name and address reaches the
page through ``textContent`` or an attribute set by the script, never as markup.

The page asks for what it has not seen once a second while it is open (nothing is
computed for a page that is closed), keeps the last minutes of records, and draws a
lane per worker thread (and one per worker for transfers and disk reads/writes).
Wheel zooms, dragging pans, "live" follows the present again.
"""
from __future__ import annotations

import time
from html import escape
from typing import TYPE_CHECKING, Any
from .shell import header

if TYPE_CHECKING:
    from ..scheduler.task_stream import TaskStream

#: Records in one reply at most (a page that was away catches up in a few replies).
MAX_REPLY = 5000


def parse_since(text: str | None) -> int:
    """The ``since`` parameter: an index >= 0 (absent: 0). ValueError names the problem."""
    if text is None or text == "":
        return 0
    if len(text) > 20 or not text.isdigit():
        raise ValueError(f"since must be a record index (an int >= 0), got {text[:40]!r}")
    return int(text)


def parse_limit(text: str | None) -> int:
    if text is None or text == "":
        return MAX_REPLY
    if len(text) > 20 or not text.isdigit() or int(text) < 1:
        raise ValueError(f"limit must be an int >= 1, got {text[:40]!r}")
    return min(int(text), MAX_REPLY)


def reply(stream: TaskStream, since: int, limit: int = MAX_REPLY) -> dict[str, Any]:
    """What the page lacks from ``since`` on: at most ``limit`` records, oldest first;
    ``next`` is where to ask from next time, ``first`` the oldest index still kept (a
    page that sees ``first`` > its ``since`` knows it missed some), ``now`` the
    scheduler's clock (to line up the live view)."""
    records, next_index = stream.since(since, min(limit, MAX_REPLY))
    return {"records": records, "next": next_index, "first": stream.first_index, "now": time.time()}


def render_page(scheduler_address: str) -> str:
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>task stream · actorrt dashboard</title>
<link rel="icon" href="favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="dashboard.css">
<link rel="stylesheet" href="task-stream.css">
</head>
<body>
{header("task-stream")}
<h2>Task stream</h2>
<p id="scheduler">{escape(scheduler_address)}</p>
<p id="ts-controls"><button id="ts-live" type="button">live</button>
<button id="ts-in" type="button">zoom in</button> <button id="ts-out" type="button">zoom out</button>
<span id="ts-note"></span></p>
<div id="ts-box"><svg id="ts" xmlns="http://www.w3.org/2000/svg" width="100%" height="40"></svg></div>
<p id="ts-hover" class="ts-hover"></p>
<p class="ts-help">Wheel: zoom. Drag: scroll back and forth. Hover a run for its key, duration and worker.</p>
<script src="task-stream.js"></script>
</body>
</html>
"""


STYLE = """
#ts-box { overflow: hidden; border: 1px solid #ccc; cursor: grab; user-select: none; }
#ts text { font: 11px monospace; fill: #333; }
#ts rect.run:hover { stroke: #000; stroke-width: 1; }
.ts-hover { font-family: monospace; min-height: 1.4em; white-space: pre; }
.ts-help { color: #666; }
"""

SCRIPT = r"""
"use strict";
(function () {
  var NS = "http://www.w3.org/2000/svg";
  var KEEP_SECONDS = 600, KEEP_RECORDS = 50000, MAX_RECTS = 8000;
  var LANE = 16, LABEL = 230;
  var ERROR = "#d62728";
  var ACTIONS = {"transfer": "#ff9896", "disk-write": "#8c564b", "disk-read": "#c49c94"};
  var svg = document.getElementById("ts"), box = document.getElementById("ts-box");
  var note = document.getElementById("ts-note"), hover = document.getElementById("ts-hover");
  var pieces = [], since = 0, skew = 0, span = 60, end = null, colours = {}, threads = {};

  function colour(name) {
    if (colours[name]) { return colours[name]; }
    var h = 0;
    for (var i = 0; i < name.length; i++) { h = (h * 31 + name.charCodeAt(i)) >>> 0; }
    return (colours[name] = "hsl(" + (30 + h % 300) + "," + (55 + (h >>> 9) % 25) + "%," + (50 + (h >>> 17) % 15) + "%)");
  }
  function seconds(s) {
    if (s >= 1) { return s.toFixed(2) + " s"; }
    if (s >= 1e-3) { return (s * 1e3).toFixed(1) + " ms"; }
    return (s * 1e6).toFixed(0) + " us";
  }
  function threadName(worker, ident) {
    // Thread idents are long numbers: name each worker's threads 1, 2, ... as first seen.
    var seen = threads[worker] || (threads[worker] = {n: 0});
    if (!(ident in seen)) { seen[ident] = ++seen.n; }
    return "thread " + seen[ident];
  }
  function add(records) {
    records.forEach(function (r) {
      (r.startstops || []).forEach(function (ss) {
        var compute = ss.action === "compute";
        pieces.push({
          lane: r.worker + (compute ? " " + threadName(r.worker, r.thread) : " io"),
          start: ss.start, stop: ss.stop, key: r.key, worker: r.worker,
          what: compute ? (r.status === "error" ? "error" : "compute") : ss.action,
          fill: compute ? (r.status === "error" ? ERROR : colour(String(r.name))) : (ACTIONS[ss.action] || "#999"),
          source: ss.source || null
        });
      });
    });
    var cutoff = Date.now() / 1000 - skew - KEEP_SECONDS;
    var first = 0;
    while (first < pieces.length && pieces[first].stop < cutoff) { first++; }
    if (pieces.length - first > KEEP_RECORDS) { first = pieces.length - KEEP_RECORDS; }
    if (first) { pieces = pieces.slice(first); }
  }
  function now() { return Date.now() / 1000 - skew; }
  function draw() {
    var right = end === null ? now() : end, left = right - span;
    var width = Math.max(200, box.clientWidth - LABEL - 4);
    var shown = [], lanes = {}, names = [];
    for (var i = pieces.length - 1; i >= 0 && shown.length < MAX_RECTS; i--) {
      var p = pieces[i];
      if (p.stop >= left && p.start <= right) { shown.push(p); }
    }
    shown.forEach(function (p) { if (!(p.lane in lanes)) { lanes[p.lane] = 0; names.push(p.lane); } });
    names.sort();
    names.forEach(function (n, i) { lanes[n] = i; });
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    var height = Math.max(1, names.length) * LANE + 20;
    svg.setAttribute("height", String(height));
    names.forEach(function (n, i) {
      var t = document.createElementNS(NS, "text");
      t.setAttribute("x", "2"); t.setAttribute("y", String(i * LANE + 12));
      t.textContent = n.length > 36 ? "\u2026" + n.slice(-35) : n;
      svg.appendChild(t);
    });
    var scale = width / span;
    shown.forEach(function (p) {
      var x = LABEL + Math.max(0, (p.start - left)) * scale;
      var w = Math.max(0.5, (Math.min(p.stop, right) - Math.max(p.start, left)) * scale);
      var r = document.createElementNS(NS, "rect");
      r.setAttribute("class", "run");
      r.setAttribute("x", x.toFixed(2)); r.setAttribute("y", String(lanes[p.lane] * LANE + 2));
      r.setAttribute("width", w.toFixed(2)); r.setAttribute("height", String(LANE - 4));
      r.setAttribute("fill", p.fill);
      var title = document.createElementNS(NS, "title");
      var text = p.key + "\n" + p.what + " " + seconds(p.stop - p.start) + "\nworker " + p.worker;
      if (p.source) { text += "\nfrom " + p.source; }
      title.textContent = text;
      r.appendChild(title);
      r.addEventListener("mouseenter", function () { hover.textContent = text.replace(/\n/g, "  |  "); });
      svg.appendChild(r);
    });
    var axis = document.createElementNS(NS, "text");
    axis.setAttribute("x", String(LABEL)); axis.setAttribute("y", String(height - 4));
    axis.textContent = "last " + seconds(span) + (end === null ? " (live)" : " (ending " + new Date(right * 1000).toLocaleTimeString() + ")");
    svg.appendChild(axis);
    note.textContent = shown.length + " shown of " + pieces.length + " kept";
  }
  function poll() {
    var xhr = new XMLHttpRequest();
    xhr.open("GET", "api/task-stream?since=" + since);
    xhr.onload = function () {
      if (xhr.status === 200) {
        var reply = JSON.parse(xhr.responseText);
        var conn = document.getElementById("conn");
        if (conn) { conn.textContent = "live"; conn.className = "live"; }
        skew = Date.now() / 1000 - reply.now;
        since = reply.next;
        add(reply.records);
        draw();
        if (reply.records.length >= 5000) { setTimeout(poll, 50); return; }
      } else {
        note.textContent = "the scheduler answered " + xhr.status;
      }
      setTimeout(poll, 1000);
    };
    xhr.onerror = function () {
      var conn = document.getElementById("conn");
      if (conn) { conn.textContent = "disconnected: retrying"; conn.className = "off"; }
      note.textContent = "scheduler unreachable; retrying"; setTimeout(poll, 2000);
    };
    xhr.send();
  }
  box.addEventListener("wheel", function (ev) {
    ev.preventDefault();
    span = Math.min(KEEP_SECONDS, Math.max(0.01, span * (ev.deltaY > 0 ? 1.25 : 0.8)));
    draw();
  }, {passive: false});
  var dragX = null;
  box.addEventListener("mousedown", function (ev) { dragX = ev.clientX; });
  window.addEventListener("mouseup", function () { dragX = null; });
  window.addEventListener("mousemove", function (ev) {
    if (dragX === null) { return; }
    var width = Math.max(200, box.clientWidth - LABEL - 4);
    var right = (end === null ? now() : end) - (ev.clientX - dragX) / width * span;
    dragX = ev.clientX;
    end = Math.min(right, now());
    draw();
  });
  document.getElementById("ts-live").addEventListener("click", function () { end = null; draw(); });
  document.getElementById("ts-in").addEventListener("click", function () { span = Math.max(0.01, span / 2); draw(); });
  document.getElementById("ts-out").addEventListener("click", function () { span = Math.min(KEEP_SECONDS, span * 2); draw(); });
  poll();
})();
"""


__all__ = ["MAX_REPLY", "SCRIPT", "STYLE", "parse_limit", "parse_since", "render_page", "reply"]
