(function () {
  "use strict";
  var d = dash, key = d.key;
  function fact(tbody, label, value) {
    var tr = d.el("tr"); tr.appendChild(d.el("th", label));
    var td = d.el("td"); if (value instanceof Node) { td.appendChild(value); } else { td.textContent = String(value); }
    tr.appendChild(td); tbody.appendChild(tr);
  }
  function links(ul, items) {
    d.clear(ul);
    items.forEach(function (t) {
      var li = d.el("li"); li.appendChild(d.keyLink(t.key));
      li.appendChild(d.el("span", " " + t.state, "state")); ul.appendChild(li);
    });
    if (!items.length) { ul.appendChild(d.el("li", "none")); }
  }
  function render(t) {
    var note = d.byId("task-note");
    if (t.error) { note.textContent = t.error; note.className = "error"; return; }
    note.textContent = ""; note.className = "";
    var tbody = d.clear(d.byId("task-facts").tBodies[0] || d.byId("task-facts").appendChild(d.el("tbody")));
    fact(tbody, "state", t.state);
    fact(tbody, "name", d.optional(t.name, String));
    fact(tbody, "type", d.optional(t.type, String));
    fact(tbody, "size", d.optional(t.nbytes, d.bytes));
    fact(tbody, "who has it", t.who_has.length ? t.who_has.join(", ") : "\u2013");
    fact(tbody, "running on", d.optional(t.processing_on, String));
    fact(tbody, "wanted by", t.holders + " client(s)");
    if (t.actor) { fact(tbody, "actor restarts", t.restarts); }
    if (t.links_omitted) { fact(tbody, "links not shown", t.links_omitted); }
    var failure = d.byId("failure");
    failure.hidden = !t.exception;
    d.byId("exception").textContent = t.exception || "";
    d.byId("traceback").textContent = t.traceback || "";
    links(d.byId("dependencies"), t.dependencies);
    links(d.byId("dependents"), t.dependents);
    d.rows(d.byId("story").tBodies[0], t.transitions.slice().reverse(), function (tr, s) {
      d.cell(tr, d.clock(s.time)); d.cell(tr, s.start); d.cell(tr, s.finish); d.cell(tr, s.stimulus_id, "name");
    });
  }
  d.connect("task", render, key);
})();
