(function () {
  "use strict";
  var d = dash, NS = "http://www.w3.org/2000/svg";
  var STATES = ["waiting", "queued", "processing", "memory", "erred", "released"];
  var nodes = {}, edges = {}, grouped = false;
  var COL = 150, ROW = 18, R = 6;
  function svgEl(tag, attrs) {
    var n = document.createElementNS(NS, tag);
    Object.keys(attrs).forEach(function (k) { n.setAttribute(k, attrs[k]); });
    return n;
  }
  function legend() {
    var box = d.clear(d.byId("legend"));
    STATES.forEach(function (s) {
      box.appendChild(d.el("span", null, "swatch s-" + s)); box.appendChild(document.createTextNode(s));
    });
  }
  function apply(change) {
    if (change.reset) { nodes = {}; edges = {}; }
    grouped = change.grouped;
    Object.keys(change.nodes).forEach(function (k) { nodes[k] = change.nodes[k]; });
    (change.removed || []).forEach(function (k) { delete nodes[k]; });
    change.edges.forEach(function (e) { edges[e[0] + "\u0000" + e[1]] = e; });
    Object.keys(edges).forEach(function (id) {
      var e = edges[id]; if (!(e[0] in nodes) || !(e[1] in nodes)) { delete edges[id]; }
    });
  }
  // A node's column is its dependency depth: 0 for tasks without inputs.
  function depths() {
    var inputs = {}, depth = {};
    Object.keys(edges).forEach(function (id) { var e = edges[id]; (inputs[e[1]] = inputs[e[1]] || []).push(e[0]); });
    function depthOf(k) {
      if (depth[k] !== undefined) { return depth[k]; }
      depth[k] = 0;  // (a cycle between grouped names stops here)
      var best = 0;
      (inputs[k] || []).forEach(function (i) { best = Math.max(best, depthOf(i) + 1); });
      depth[k] = best;
      return best;
    }
    var stack = Object.keys(nodes);
    stack.forEach(function (k) { depthOf(k); });
    return depth;
  }
  function draw() {
    var depth = depths(), layers = [], pos = {}, inputs = {}, outputs = {};
    Object.keys(nodes).sort().forEach(function (k) { var l = depth[k] || 0; (layers[l] = layers[l] || []).push(k); });
    for (var i = 0; i < layers.length; i += 1) { layers[i] = layers[i] || []; }
    Object.keys(edges).forEach(function (id) {
      var e = edges[id];
      (inputs[e[1]] = inputs[e[1]] || []).push(e[0]); (outputs[e[0]] = outputs[e[0]] || []).push(e[1]);
    });
    function place(layer, x) { layer.forEach(function (k, y) { pos[k] = [20 + x * COL, 20 + y * ROW]; }); }
    // Order a layer by its neighbours' mean row (the barycenter heuristic: fewer crossings).
    function order(layer, links) {
      var rank = {};
      layer.forEach(function (k) {
        var ns = (links[k] || []).filter(function (n) { return pos[n]; });
        rank[k] = ns.length ? ns.reduce(function (s, n) { return s + pos[n][1]; }, 0) / ns.length : Infinity;
      });
      layer.sort(function (a, b) { return (rank[a] - rank[b]) || (a < b ? -1 : 1); });
    }
    layers.forEach(place);
    for (var x = 1; x < layers.length; x += 1) { order(layers[x], inputs); place(layers[x], x); }
    for (x = layers.length - 2; x >= 0; x -= 1) { order(layers[x], outputs); place(layers[x], x); }
    for (x = 1; x < layers.length; x += 1) { order(layers[x], inputs); place(layers[x], x); }
    var tallest = 0; layers.forEach(function (l) { tallest = Math.max(tallest, (l || []).length); });
    var svg = d.byId("graph"), fresh = svgEl("svg", {id: "graph", width: Math.max(400, 40 + layers.length * COL),
                                                      height: Math.max(100, 40 + tallest * ROW)});
    var edgeGroup = svgEl("g", {}), nodeGroup = svgEl("g", {});
    Object.keys(edges).forEach(function (id) {
      var e = edges[id], a = pos[e[0]], b = pos[e[1]];
      if (a && b) { edgeGroup.appendChild(svgEl("line", {"class": "edge", x1: a[0], y1: a[1], x2: b[0], y2: b[1]})); }
    });
    Object.keys(pos).forEach(function (k) {
      var p = pos[k], n = nodes[k], g = svgEl("g", {}), dot = svgEl("circle", {"class": "node s-" + n[1], cx: p[0], cy: p[1], r: R, "data-key": k});
      var title = svgEl("title", {}); title.textContent = (grouped ? n[0] : k) + " \u2014 " + n[1]; dot.appendChild(title);
      if (!grouped) { dot.addEventListener("click", function () { location.href = d.taskHref(k); }); }
      g.appendChild(dot);
      var label = svgEl("text", {x: p[0] + R + 2, y: p[1] + 3}); label.textContent = (grouped ? n[0] : n[0]).slice(0, 18);
      g.appendChild(label); nodeGroup.appendChild(g);
    });
    fresh.appendChild(edgeGroup); fresh.appendChild(nodeGroup);
    svg.parentNode.replaceChild(fresh, svg);
    var count = Object.keys(nodes).length;
    d.byId("graph-note").textContent = grouped ?
      count + " task names (too many tasks to draw one by one: grouped by name, each with its task count)" :
      count + " tasks, by dependency depth (left to right); click one for its page";
  }
  legend();
  d.connect("graph", function (change) { apply(change); draw(); });
})();
