(function () {
  "use strict";
  var d = dash, MAX_ROWS = 1000;
  function text(msg) { return typeof msg === "string" ? msg : JSON.stringify(msg); }
  function render(data) {
    var topics = Object.keys(data.topics).sort().map(function (t) { return t + " (" + data.topics[t] + ")"; });
    d.byId("topics").textContent = topics.length ? "topics: " + topics.join(", ") : "no events yet";
    var tbody = d.byId("events").tBodies[0];
    // Newest first; each push carries only the events logged since the last one.
    data.events.forEach(function (e) {
      var tr = d.el("tr");
      d.cell(tr, d.clock(e.time)); d.cell(tr, e.topic, "text"); d.cell(tr, text(e.msg), "text");
      tbody.insertBefore(tr, tbody.firstChild);
    });
    while (tbody.rows.length > MAX_ROWS) { tbody.removeChild(tbody.lastChild); }
  }
  d.connect("events", render);
})();
