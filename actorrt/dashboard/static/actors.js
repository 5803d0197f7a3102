(function () {
  "use strict";
  var d = dash;
  function num(v) { return d.optional(v, String); }
  function render(data) {
    d.rows(d.byId("actors").tBodies[0], data.actors, function (tr, a) {
      d.cell(tr, "", "name").appendChild(d.keyLink(a.key));
      d.cell(tr, a["class"], "text"); d.cell(tr, d.optional(a.name, String), "text");
      d.cell(tr, a.state, a.state === "erred" ? "error" : ""); d.cell(tr, d.optional(a.worker, String), "text");
      d.cell(tr, d.optional(a.calls_per_s, function (v) { return v.toFixed(1); }));
      d.cell(tr, num(a.calls)); d.cell(tr, num(a.in_flight)); d.cell(tr, num(a.queued));
      d.cell(tr, a.restarts); d.cell(tr, d.optional(a.last_error, String), a.last_error ? "text error" : "text");
    });
    d.byId("actors-note").textContent = data.actors.length ? "" : "no actors";
  }
  d.connect("actors", render);
})();
