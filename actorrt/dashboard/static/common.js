// Shared by every dashboard page. Values go into the page through textContent and
// attributes, never through markup: task names and keys are user input.
var dash = (function () {
  "use strict";
  var body = document.body, root = body.getAttribute("data-root") || "";
  function byId(id) { return document.getElementById(id); }
  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    if (cls) { node.className = cls; }
    return node;
  }
  function cell(row, text, cls) { var td = el("td", text, cls); row.appendChild(td); return td; }
  function bytes(n) {
    var units = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return i === 0 ? n.toFixed(0) + " B" : n.toFixed(1) + " " + units[i];
  }
  function optional(v, fmt) { return (v === null || v === undefined) ? "\u2013" : fmt(v); }
  function duration(t) {
    var s = Math.floor(t), pad = function (x) { return (x < 10 ? "0" : "") + x; };
    if (s < 60) { return s + "s"; }
    if (s < 3600) { return Math.floor(s / 60) + "m " + pad(s % 60) + "s"; }
    return Math.floor(s / 3600) + "h " + pad(Math.floor(s % 3600 / 60)) + "m " + pad(s % 60) + "s";
  }
  function clock(t) { return new Date(t * 1000).toISOString().replace("T", " ").slice(0, 23); }
  function taskHref(key) { return root + "task/" + encodeURIComponent(key); }
  function keyLink(key) { var a = el("a", key, "key"); a.href = taskHref(key); return a; }
  function rows(tbody, items, build) {
    var fresh = document.createElement("tbody");
    items.forEach(function (item) { var tr = document.createElement("tr"); build(tr, item); fresh.appendChild(tr); });
    tbody.parentNode.replaceChild(fresh, tbody);
    return fresh;
  }
  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } return node; }
  // Subscribe to this page's pushes; reconnects with a growing delay.
  function connect(page, onData, key) {
    var delay = 1000;
    function open() {
      var url = new URL(root + "ws", location.href);
      url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
      url.searchParams.set("page", page);
      if (key !== undefined && key !== null) { url.searchParams.set("key", key); }
      var ws = new WebSocket(url.href), conn = byId("conn");
      ws.onopen = function () { conn.textContent = "live"; conn.className = "live"; delay = 1000; };
      ws.onmessage = function (ev) { var msg = JSON.parse(ev.data); onData(msg.data); };
      ws.onclose = function () {
        conn.textContent = "disconnected: retrying"; conn.className = "off";
        setTimeout(open, delay); delay = Math.min(delay * 2, 15000);
      };
    }
    open();
  }
  return {byId: byId, el: el, cell: cell, bytes: bytes, optional: optional, duration: duration,
          clock: clock, taskHref: taskHref, keyLink: keyLink, rows: rows, clear: clear,
          connect: connect, root: root, key: body.getAttribute("data-key")};
})();
