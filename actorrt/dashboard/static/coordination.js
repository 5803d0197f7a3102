(function () {
  "use strict";
  var d = dash, SKIP = {kind: 1, name: 1, size: 1, holders: 1, waiters: 1, keys: 1};
  function details(p) {
    return Object.keys(p).filter(function (k) { return !SKIP[k]; }).map(function (k) {
      var v = p[k]; return k + ": " + (v === null ? "\u2013" : (typeof v === "object" ? JSON.stringify(v) : v));
    }).join("; ");
  }
  function render(data) {
    d.rows(d.byId("coordination").tBodies[0], data.primitives, function (tr, p) {
      d.cell(tr, p.kind, "text"); d.cell(tr, p.name, "text");
      d.cell(tr, p.size === undefined ? (p.subscribers === undefined ? "\u2013" : p.subscribers + " subscribers") : p.size);
      d.cell(tr, (p.holders || []).join(", "), "text"); d.cell(tr, (p.waiters || []).join(", "), "text");
      var td = d.cell(tr, details(p), "text");
      (p.keys || []).forEach(function (k) { td.appendChild(document.createTextNode(" ")); td.appendChild(d.keyLink(k)); });
    });
    d.byId("coordination-note").textContent = (data.primitives.length ? "" : "no named queues, locks, " +
      "semaphores, events, variables, conditions or topics") + (data.omitted ? data.omitted + " more not shown" : "");
  }
  d.connect("coordination", render);
})();
