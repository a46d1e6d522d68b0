// Draws a lineage view (archive/drawing/view.py) as SVG: the tree, the best-score chart, node details.
// The same script serves the offline HTML file (data embedded) and `lineage serve` (data polled).
// All text from the archive goes in through textContent, never as markup.
(function () {
  "use strict";
  var SVGNS = "http://www.w3.org/2000/svg";
  var DX = 56, DY = 72, R = 8, PAD = 30; // DX: a column fits a node's label
  var SPLIT_COLORS = { train: "#1f77b4", dev: "#ff7f0e", heldout: "#2ca02c" };
  var EXTRA_COLORS = ["#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
  var FAILED = "#d62728";

  var config = JSON.parse(document.getElementById("lineage-config").textContent);
  var data = JSON.parse(document.getElementById("lineage-data").textContent || "null");
  var selected = null;
  var view = null; // {x, y, k}: pan and zoom of the tree, kept across refreshes

  function el(name, attrs, parent) {
    var node = document.createElementNS(SVGNS, name);
    for (var key in attrs) node.setAttribute(key, attrs[key]);
    if (parent) parent.appendChild(node);
    return node;
  }
  function html(name, text, parent, cls) {
    var node = document.createElement(name);
    if (text !== undefined && text !== null) node.textContent = text;
    if (cls) node.className = cls;
    if (parent) parent.appendChild(node);
    return node;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function fmt(v) { return typeof v === "number" ? (Math.round(v * 10000) / 10000).toString() : String(v); }
  function when(t) { return t ? new Date(t * 1000).toLocaleString() : "-"; }

  // ---- shapes (the PNG uses the matching matplotlib markers) ----
  function shape(kind, r, parent) {
    if (kind === "circle") return el("circle", { r: r }, parent);
    if (kind === "square") return el("rect", { x: -r * 0.9, y: -r * 0.9, width: r * 1.8, height: r * 1.8 }, parent);
    var pts;
    if (kind === "triangle") pts = [[0, -r * 1.15], [r, r * 0.75], [-r, r * 0.75]];
    else if (kind === "diamond") pts = [[0, -r * 1.2], [r, 0], [0, r * 1.2], [-r, 0]];
    else { pts = []; for (var i = 0; i < 6; i++) { var a = Math.PI / 6 + i * Math.PI / 3; pts.push([r * Math.cos(a), r * Math.sin(a)]); } }
    return el("polygon", { points: pts.map(function (p) { return p[0].toFixed(2) + "," + p[1].toFixed(2); }).join(" ") }, parent);
  }

  // ---- header: counts and legends ----
  function drawHeader(d) {
    document.getElementById("run-dir").textContent = d.run_dir || "";
    var counts = document.getElementById("counts");
    clear(counts);
    html("span", d.nodes.length + " nodes", counts, "item");
    Object.keys(d.counts).forEach(function (k) {
      if (d.counts[k]) html("span", d.counts[k] + " " + k, counts, "item" + (k === "failed" ? " failed" : ""));
    });
    var cl = document.getElementById("color-legend");
    clear(cl);
    if (d.split) {
      html("span", "colour: " + d.split + " score " + fmt(d.range[0]), cl, "item");
      var bar = html("span", null, cl, "colorbar");
      bar.style.background = "linear-gradient(to right, " + d.stops.join(", ") + ")";
      html("span", fmt(d.range[1]), cl, "item");
    } else {
      html("span", "no scores yet", cl, "item");
    }
    var sl = document.getElementById("shape-legend");
    clear(sl);
    Object.keys(d.operators).forEach(function (op) {
      var st = d.operators[op];
      var item = html("span", null, sl, "item");
      var svg = el("svg", { width: 16, height: 16, viewBox: "-8 -8 16 16" }, item);
      var s = shape(st.shape, 6, svg);
      s.setAttribute("fill", "#ccc");
      s.setAttribute("stroke", st.color);
      s.setAttribute("stroke-width", 2);
      html("span", op === st.label ? op : op + " (" + st.label + ")", item);
    });
    var failed = html("span", null, sl, "item");
    var fsvg = el("svg", { width: 16, height: 16, viewBox: "-8 -8 16 16" }, failed);
    el("circle", { r: 6, fill: "#ccc", stroke: FAILED, "stroke-width": 2 }, fsvg);
    el("path", { d: "M-4,-4L4,4M4,-4L-4,4", stroke: FAILED, "stroke-width": 2 }, fsvg);
    html("span", "failed", failed);
  }

  // ---- the tree ----
  function px(n) { return PAD + n.x * DX; }
  function py(n) { return PAD + n.depth * DY; }

  function drawTree(d) {
    var svg = document.getElementById("tree");
    clear(svg);
    var g = el("g", { id: "viewport" }, svg);
    var byId = {};
    d.nodes.forEach(function (n) { byId[n.id] = n; });
    var edges = el("g", { class: "edges" }, g);
    d.nodes.forEach(function (n) {
      var style = d.operators[n.operator] || { color: "#888", label: n.operator };
      n.parents.forEach(function (pid, i) {
        var p = byId[pid];
        if (!p) return;
        var x1 = px(p), y1 = py(p) + R, x2 = px(n), y2 = py(n) - R, my = (y1 + y2) / 2;
        var path = el("path", {
          d: "M" + x1 + "," + y1 + " C" + x1 + "," + my + " " + x2 + "," + my + " " + x2 + "," + y2,
          class: "edge" + (i > 0 ? " merge" : ""), stroke: style.color,
        }, edges);
        el("title", {}, path).textContent = pid + " \u2192 " + n.id + " (" + n.operator + (i > 0 ? ", secondary parent" : "") + ")";
      });
    });
    var nodes = el("g", { class: "nodes" }, g);
    var showIds = d.nodes.length <= 400;
    d.nodes.forEach(function (n) {
      var failed = n.status === "failed";
      var node = el("g", { class: "node", transform: "translate(" + px(n) + "," + py(n) + ")", "data-id": n.id }, nodes);
      var s = shape(n.shape, R, node);
      s.setAttribute("class", "shape");
      s.setAttribute("fill", n.color);
      s.setAttribute("stroke", failed ? FAILED : "#333");
      s.setAttribute("stroke-width", failed ? 2.5 : 1);
      if (n.status === "pending" || n.status === "evaluating") s.setAttribute("stroke-dasharray", "2 2");
      if (failed) el("path", { d: "M-5,-5L5,5M5,-5L-5,5", stroke: FAILED, "stroke-width": 2, "pointer-events": "none" }, node);
      var tip = [n.id, n.operator + " \u00b7 " + n.status];
      Object.keys(n.scores).forEach(function (k) { tip.push(k + ": " + fmt(n.scores[k].score) + " (n=" + n.scores[k].n + ")"); });
      if (n.agent_errors) tip.push("agent errors: " + n.agent_errors + " tasks with no program");
      if (n.failure_reason) tip.push("failed: " + n.failure_reason);
      el("title", {}, node).textContent = tip.join("\n");
      if (showIds) {  // its id, then its score (or why it failed): the hover and the click say more
        el("text", { y: R + 10, "text-anchor": "middle", class: "label" }, node).textContent = n.label[0];
        el("text", { y: R + 19, "text-anchor": "middle", class: "label score" + (failed ? " failed" : "") }, node).textContent = n.label[1];
      }
      node.addEventListener("click", function (ev) { ev.stopPropagation(); select(n.id); });
    });
    if (!view) fit();
    applyView();
    markSelected();
  }

  function extent() {
    var maxX = 0, maxD = 0;
    data.nodes.forEach(function (n) { maxX = Math.max(maxX, n.x); maxD = Math.max(maxD, n.depth); });
    return { w: 2 * PAD + maxX * DX, h: 2 * PAD + maxD * DY + 12 };
  }
  function fit() {
    var svg = document.getElementById("tree");
    var box = svg.getBoundingClientRect();
    var w = box.width || 800, h = box.height || 500, e = extent();
    var k = Math.min(w / e.w, h / e.h, 1.6);
    view = { k: k, x: (w - e.w * k) / 2, y: Math.max(0, (h - e.h * k) / 2) };
  }
  function applyView() {
    var g = document.getElementById("viewport");
    if (g) g.setAttribute("transform", "translate(" + view.x + "," + view.y + ") scale(" + view.k + ")");
  }
  function setupPanZoom() {
    var svg = document.getElementById("tree");
    var drag = null;
    svg.addEventListener("wheel", function (ev) {
      ev.preventDefault();
      var box = svg.getBoundingClientRect();
      var mx = ev.clientX - box.left, my = ev.clientY - box.top;
      var f = Math.exp(-ev.deltaY * 0.0015);
      var k = Math.min(8, Math.max(0.02, view.k * f));
      view.x = mx - (mx - view.x) * (k / view.k);
      view.y = my - (my - view.y) * (k / view.k);
      view.k = k;
      applyView();
    }, { passive: false });
    svg.addEventListener("mousedown", function (ev) { drag = { x: ev.clientX, y: ev.clientY, vx: view.x, vy: view.y }; svg.classList.add("dragging"); });
    window.addEventListener("mousemove", function (ev) {
      if (!drag) return;
      view.x = drag.vx + ev.clientX - drag.x;
      view.y = drag.vy + ev.clientY - drag.y;
      applyView();
    });
    window.addEventListener("mouseup", function () { drag = null; svg.classList.remove("dragging"); });
    document.getElementById("fit").addEventListener("click", function () { fit(); applyView(); });
  }

  // ---- best score per split over time ----
  function drawProgress(d) {
    var svg = document.getElementById("progress");
    clear(svg);
    var splits = Object.keys(d.progress);
    var box = svg.getBoundingClientRect();
    var W = box.width || 800, H = box.height || 170, L = 44, Rm = 90, T = 8, B = 22;
    if (!splits.length) {
      el("text", { x: L, y: H / 2, class: "axis" }, svg).textContent = "no evaluated node yet";
      return;
    }
    var t0 = Infinity, t1 = -Infinity, lo = Infinity, hi = -Infinity;
    d.nodes.forEach(function (n) { t0 = Math.min(t0, n.created_at); t1 = Math.max(t1, n.evaluated_at, n.created_at); });
    if (d.now) t1 = Math.max(t1, d.now);
    splits.forEach(function (s) { d.progress[s].forEach(function (p) { lo = Math.min(lo, p[1]); hi = Math.max(hi, p[1]); t0 = Math.min(t0, p[0]); }); });
    if (hi <= lo) { lo -= 0.5; hi += 0.5; }
    var step = niceStep((hi - lo) / 4);
    lo = Math.floor(lo / step) * step;
    hi = Math.ceil(hi / step) * step;
    if (t1 <= t0) t1 = t0 + 1;
    function X(t) { return L + (t - t0) / (t1 - t0) * (W - L - Rm); }
    function Y(v) { return T + (1 - (v - lo) / (hi - lo)) * (H - T - B); }
    var axis = el("g", { class: "axis" }, svg);
    for (var v = lo; v <= hi + step / 2; v += step) {
      el("line", { x1: L, x2: W - Rm, y1: Y(v), y2: Y(v) }, axis);
      el("text", { x: L - 4, y: Y(v) + 3, "text-anchor": "end" }, axis).textContent = fmt(v);
    }
    var span = t1 - t0;
    var unit = span > 7200 ? [3600, "h"] : span > 120 ? [60, "m"] : [1, "s"];
    for (var j = 0; j <= 5; j++) {
      var t = t0 + span * j / 5;
      el("text", { x: X(t), y: H - 6, "text-anchor": "middle" }, axis).textContent =
        "+" + (Math.round((t - t0) / unit[0] * 10) / 10) + unit[1];
    }
    var tags = [];
    splits.forEach(function (s, k) {
      var color = SPLIT_COLORS[s] || EXTRA_COLORS[k % EXTRA_COLORS.length];
      var pts = d.progress[s];
      var path = "M" + X(pts[0][0]) + "," + Y(pts[0][1]);
      for (var i = 1; i < pts.length; i++) path += " H" + X(pts[i][0]) + " V" + Y(pts[i][1]);
      path += " H" + X(t1);
      el("path", { d: path, fill: "none", stroke: color, "stroke-width": 2 }, svg);
      pts.forEach(function (p) {
        var c = el("circle", { cx: X(p[0]), cy: Y(p[1]), r: 3.5, fill: color, class: "node" }, svg);
        el("title", {}, c).textContent = s + " best " + fmt(p[1]) + " by " + p[2] + " at " + when(p[0]);
        c.addEventListener("click", function () { select(p[2]); });
      });
      var last = pts[pts.length - 1];
      tags.push({ y: Y(last[1]) + 3, color: color, text: s + " " + fmt(last[1]) });
    });
    tags.sort(function (a, b) { return a.y - b.y; });
    tags.forEach(function (tag, i) { // pushed apart so that close scores stay readable
      if (i && tag.y < tags[i - 1].y + 12) tag.y = tags[i - 1].y + 12;
      el("text", { x: W - Rm + 4, y: tag.y, fill: tag.color, "font-size": 11 }, svg).textContent = tag.text;
    });
  }

  function niceStep(raw) {
    var mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) if (raw <= steps[i] * mag) return steps[i] * mag;
    return 10 * mag;
  }

  // ---- details of one node ----
  function row(table, key, value, cls) {
    if (value === undefined || value === null || value === "") return;
    var tr = html("tr", null, table);
    html("th", key, tr);
    var td = html("td", null, tr, cls);
    if (value instanceof Node) td.appendChild(value); else td.textContent = value;
  }
  function nodeLinks(ids) {
    var span = document.createElement("span");
    ids.forEach(function (id, i) {
      if (i) span.appendChild(document.createTextNode(", "));
      var a = html("a", id, span, "node-link");
      a.addEventListener("click", function () { select(id); });
    });
    return span;
  }
  function diffBlock(text, parent) {
    var pre = html("pre", null, parent, "diff");
    text.split("\n").forEach(function (line) {
      var cls = line.startsWith("diff --git") ? "diff-file" : line.startsWith("@@") ? "diff-hunk"
        : line.startsWith("+") && !line.startsWith("+++") ? "diff-add"
        : line.startsWith("-") && !line.startsWith("---") ? "diff-del" : null;
      if (cls) html("span", line, pre, cls);
      else pre.appendChild(document.createTextNode(line + "\n"));
    });
  }
  function drawDetails() {
    var box = document.getElementById("details");
    clear(box);
    var n = null;
    if (data && selected) data.nodes.forEach(function (m) { if (m.id === selected) n = m; });
    if (!n) { html("p", "Click a node to see its details.", box, "hint"); return; }
    box.setAttribute("data-node", n.id);
    html("h2", n.id, box);
    var t = html("table", null, box);
    row(t, "operator", n.operator);
    row(t, "status", n.status, n.status === "failed" ? "failed" : null);
    row(t, "failure reason", n.failure_reason, "failed");
    if (n.agent_errors) row(t, "agent errors", n.agent_errors + " tasks with no program (apart from wrong answers)", "failed");
    if (n.parents.length) row(t, "parents", nodeLinks(n.parents));
    var kids = data.nodes.filter(function (m) { return m.parents.indexOf(n.id) >= 0; }).map(function (m) { return m.id; });
    if (kids.length) row(t, "children", nodeLinks(kids));
    row(t, "iteration", n.iteration);
    row(t, "created", when(n.created_at));
    if (n.evaluated_at !== n.created_at) row(t, "evaluated", when(n.evaluated_at));
    row(t, "base model", n.base_model);
    row(t, "scaffold", n.scaffold);
    var splits = Object.keys(n.scores);
    html("h3", "Scores", box);
    if (splits.length) {
      var st = html("table", null, box);
      var head = html("tr", null, st);
      ["split", "score", "n"].forEach(function (h) { html("th", h, head); });
      splits.forEach(function (s) {
        var tr = html("tr", null, st);
        html("td", s, tr); html("td", fmt(n.scores[s].score), tr); html("td", String(n.scores[s].n), tr);
      });
    } else html("p", "not scored", box, "hint");
    if (n.cost) {
      html("h3", "Cost", box);
      var ct = html("table", null, box);
      row(ct, "generated tokens", String(n.cost.generated_tokens));
      row(ct, "sandbox", fmt(n.cost.sandbox_s) + " s");
      row(ct, "wall", fmt(n.cost.wall_s) + " s");
    }
    var flags = n.flags;
    if (flags && flags.length) {
      html("h3", "Flags", box);
      var fl = html("div", null, box);
      (Array.isArray(flags) ? flags : [flags]).forEach(function (f) { html("span", f, fl, "flag"); });
    }
    if (n.diagnosis) { html("h3", "Diagnosis", box); html("pre", n.diagnosis, box, "wrap"); }
    if (n.problem_statement) { html("h3", "Problem statement", box); html("pre", n.problem_statement, box, "wrap"); }
    if (n.improve_note) { html("h3", "What improve did", box); html("pre", n.improve_note, box, "wrap"); }
    if (n.diff !== undefined) {
      html("h3", n.diff_base ? "Scaffold diff vs " + n.parents[0] : "Scaffold (initial files)", box);
      if (n.diff) diffBlock(n.diff, box); else html("p", "no change (same commit as its parent)", box, "hint");
    }
    if (n.es_record) { html("h3", "ES record", box); html("pre", JSON.stringify(n.es_record, null, 2), box, "es-record"); }
    if (n.metadata && Object.keys(n.metadata).length) { html("h3", "Other metadata", box); html("pre", JSON.stringify(n.metadata, null, 2), box); }
  }
  function markSelected() {
    var nodes = document.querySelectorAll("#tree .node");
    for (var i = 0; i < nodes.length; i++) nodes[i].classList.toggle("selected", nodes[i].getAttribute("data-id") === selected);
  }
  function select(id) {
    selected = id;
    markSelected();
    drawDetails();
    if (history.replaceState) history.replaceState(null, "", "#node=" + encodeURIComponent(id));
  }

  // ---- events (live dashboard only) ----
  function drawEvents(d) {
    var panel = document.getElementById("events-panel");
    if (!d.events) { panel.hidden = true; return; }
    panel.hidden = false;
    var list = document.getElementById("events");
    clear(list);
    d.events.slice().reverse().forEach(function (e) {
      var rest = Object.keys(e).filter(function (k) { return k !== "t" && k !== "event"; })
        .map(function (k) { return k + "=" + (typeof e[k] === "string" ? e[k] : JSON.stringify(e[k])); });
      html("li", new Date(e.t * 1000).toLocaleTimeString() + "  " + e.event + "  " + rest.join(" "), list);
    });
  }

  function render() {
    if (!data) return;
    drawHeader(data);
    drawTree(data);
    drawProgress(data);
    drawEvents(data);
    drawDetails();
  }

  // ---- live refresh: poll the server, redraw only when the archive changed ----
  function poll() {
    var status = document.getElementById("live-status");
    var url = config.url + "?version=" + encodeURIComponent(data ? data.version || "" : "");
    fetch(url, { cache: "no-store" })
      .then(function (r) { return r.json().then(function (body) { if (!r.ok) throw new Error(body.error || r.statusText); return body; }); })
      .then(function (body) {
        if (!body.unchanged) { data = body; render(); }
        status.className = "";
        status.textContent = "live \u00b7 updated " + new Date().toLocaleTimeString();
      })
      .catch(function (err) { status.className = "error"; status.textContent = "not updated: " + err.message; })
      .then(function () { setTimeout(poll, config.interval_ms); });
  }

  setupPanZoom();
  if (location.hash.indexOf("#node=") === 0) selected = decodeURIComponent(location.hash.slice(6));
  render();
  window.addEventListener("resize", function () { if (data) drawProgress(data); });
  if (config.live) poll();
})();
