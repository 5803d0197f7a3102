(function () {
  "use strict";
  var d = dash, COLUMNS = ["waiting", "queued", "processing", "memory", "erred", "cancelled", "released"];
  function summary(s) {
    var st = s.tasks.by_state, threads = 0, cpu = null, sent = null, recv = null, rss = 0;
    function plus(total, v) { return (v === null || v === undefined) ? total : (total || 0) + v; }
    s.workers.forEach(function (w) {
      threads += w.nthreads; cpu = plus(cpu, w.cpu); sent = plus(sent, w.sent_per_s);
      recv = plus(recv, w.received_per_s); rss += w.rss || 0;
    });
    function rate(v) { return d.optional(v, function (x) { return d.bytes(x) + "/s"; }); }
    var items = [["workers", s.workers.length], ["threads", threads], ["tasks", s.tasks.total],
                 ["processing", st.processing || 0], ["in memory", st.memory || 0],
                 ["finished", s.totals.finished], ["erred", s.totals.erred],
                 ["clients", s.clients.length], ["CPU", d.optional(cpu, function (x) { return x.toFixed(0) + " %"; })],
                 ["memory", d.bytes(rss)], ["sent", rate(sent)], ["received", rate(recv)],
                 ["uptime", d.duration(s.uptime)]];
    var box = d.clear(d.byId("summary"));
    items.forEach(function (it) {
      var div = d.el("div", null, "card");
      div.appendChild(d.el("b", it[1])); div.appendChild(d.el("span", it[0])); box.appendChild(div);
    });
  }
  function meter(limit, value) {
    var m = document.createElement("meter");
    m.min = 0; m.max = limit; m.high = limit * 0.8; m.value = Math.min(value, limit);
    return m;
  }
  function render(s) {
    d.byId("scheduler").textContent = s.scheduler;
    summary(s);
    d.rows(d.byId("names").tBodies[0], Object.keys(s.by_name), function (tr, name) {
      var counts = s.by_name[name], total = 0;
      Object.keys(counts).forEach(function (k) { total += counts[k]; });
      d.cell(tr, name, "name");
      var bar = document.createElement("progress");
      bar.max = Math.max(total, 1); bar.value = (counts.memory || 0) + (counts.erred || 0) + (counts.cancelled || 0);
      d.cell(tr, "").appendChild(bar);
      COLUMNS.forEach(function (c) { d.cell(tr, counts[c] || 0, c === "erred" && counts[c] ? "error" : ""); });
      d.cell(tr, total);
    });
    d.byId("omitted").textContent = s.names_omitted ?
      s.names_omitted + " more task names with fewer tasks are not shown." : "";
    var erred = d.clear(d.byId("erred"));
    (s.erred_keys || []).forEach(function (t) { var li = d.el("li"); li.appendChild(d.keyLink(t.key)); erred.appendChild(li); });
    if (!erred.firstChild) { erred.appendChild(d.el("li", "none")); }
    d.rows(d.byId("workers").tBodies[0], s.workers, function (tr, w) {
      d.cell(tr, w.address, "name"); d.cell(tr, w.name); d.cell(tr, w.status, w.status); d.cell(tr, w.nthreads);
      d.cell(tr, w.processing);
      d.cell(tr, d.optional(w.cpu, function (v) { return v.toFixed(0) + " %"; }));
      d.cell(tr, d.optional(w.sent_per_s, function (v) { return d.bytes(v) + "/s"; }));
      d.cell(tr, d.optional(w.received_per_s, function (v) { return d.bytes(v) + "/s"; }));
      d.cell(tr, w.keys);
      var managed = d.cell(tr, "");
      if (w.limit) { managed.appendChild(meter(w.limit, w.bytes)); managed.appendChild(document.createTextNode(" ")); }
      managed.appendChild(document.createTextNode(d.bytes(w.bytes)));
      d.cell(tr, d.bytes(w.spilled));
      var td = d.cell(tr, "");
      if (w.rss !== null && w.limit) { td.appendChild(meter(w.limit, w.rss)); td.appendChild(document.createTextNode(" ")); }
      td.appendChild(document.createTextNode((w.rss === null ? "?" : d.bytes(w.rss)) + " / " +
                                             (w.limit === null ? "no limit" : d.bytes(w.limit))));
    });
  }
  d.byId("key-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var key = d.byId("key-input").value;
    if (key) { location.href = d.taskHref(key); }
  });
  d.connect("status", render);
})();
