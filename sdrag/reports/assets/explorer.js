// The sweep explorer: reads the JSON the page carries (sdrag/reports/explore.py) and draws grids, details,
// heatmaps, the Pareto plot and the table. User text only ever reaches the page as textContent or attribute
// values, never as markup.
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("sdrag-data").textContent);
  const AX = D.axes, CELLS = D.cells, M = D.metrics;
  const compare = D.runs.length > 1;
  const byKey = new Map(CELLS.map((c, i) => [c.v.join(","), i]));
  const S = defaults();
  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") e.textContent = v;
      else if (k === "on") for (const [ev, f] of Object.entries(v)) e.addEventListener(ev, f);
      else if (v !== null && v !== undefined && v !== false) e.setAttribute(k, v === true ? "" : v);
    }
    for (const kid of kids) if (kid !== null && kid !== undefined) e.append(kid);
    return e;
  }

  function defaults() {
    const names = AX.map((a) => a.name);
    const plain = AX.map((_, i) => i).filter((i) => names[i] !== "seed" && names[i] !== "run");
    const seed = names.indexOf("seed"), run = names.indexOf("run");
    const s = { x: plain.length ? plain[0] : seed, y: plain.length > 1 ? plain[1] : -1, supers: [],
      sel: AX.map(() => 0), hidden: AX.map(() => new Set()), color: "", mode: "border", view: "images",
      open: -1, px: 128 };
    if (run >= 0) s.supers.push(run);
    if (seed >= 0 && seed !== s.x) s.supers.push(seed);
    return s;
  }

  // -- numbers ---------------------------------------------------------------------------------------------
  function sortKey(label) {
    let v;
    try { v = JSON.parse(label); } catch (e) { return [2, [], String(label)]; }
    if (typeof v === "number") return [0, [v], label];
    if (Array.isArray(v) && v.length && v.every((x) => typeof x === "number")) return [1, v, label];
    return [2, [], String(label)];
  }
  function cmpKeys(a, b) {
    if (a[0] !== b[0]) return a[0] - b[0];
    for (let i = 0; i < Math.max(a[1].length, b[1].length); i++) {
      const d = (a[1][i] ?? -Infinity) - (b[1][i] ?? -Infinity);
      if (d) return d;
    }
    return a[2] < b[2] ? -1 : a[2] > b[2] ? 1 : 0;
  }
  // Enough decimals that the ends of a range read differently (0.751 and 0.753 are not both "0.75").
  function digits(lo, hi) {
    const span = Math.abs(hi - lo);
    return span > 0 ? Math.min(8, Math.max(2, Math.ceil(-Math.log10(span)) + 2)) : 3;
  }
  function fmt(v, d) { return v === null || v === undefined || Number.isNaN(v) ? "–" : v.toFixed(d); }
  function colour(t) {  // viridis-like ramp, t in [0, 1]
    const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
    const f = Math.min(1, Math.max(0, t)) * (stops.length - 1), i = Math.min(stops.length - 2, Math.floor(f));
    const c = stops[i].map((a, k) => Math.round(a + (stops[i + 1][k] - a) * (f - i)));
    return `rgb(${c.join(",")})`;
  }
  function metricOf(cell, key) {
    if (!key) return null;
    const [kind, name] = key.split(":");
    const at = M.indexOf(name);
    return kind === "d" ? (cell.dm ? cell.dm[at] : null) : cell.m[at];
  }
  const ranges = new Map();
  function range(key) {
    if (!ranges.has(key)) {
      let lo = Infinity, hi = -Infinity;
      for (const c of CELLS) {
        const v = metricOf(c, key);
        if (v !== null && v !== undefined) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
      }
      ranges.set(key, lo <= hi ? [lo, hi] : null);
    }
    return ranges.get(key);
  }

  // -- controls --------------------------------------------------------------------------------------------
  function axisSelect(id, value, allowNone) {
    const s = el("select", { id });
    if (allowNone) s.append(el("option", { value: "-1", text: "(none)" }));
    AX.forEach((a, i) => s.append(el("option", { value: String(i), text: a.name })));
    s.value = String(value);
    return s;
  }
  function controls() {
    const box = $("controls");
    box.replaceChildren();
    const x = axisSelect("x-axis", S.x, true), y = axisSelect("y-axis", S.y, true);
    x.onchange = () => { place(+x.value, "x"); draw(); };
    y.onchange = () => { place(+y.value, "y"); draw(); };
    const supers = el("span", { class: "supers" }, "grid of grids by: ");
    AX.forEach((a, i) => {
      const cb = el("input", { type: "checkbox", "data-axis": String(i), checked: S.supers.includes(i) });
      cb.onchange = () => { place(i, cb.checked ? "super" : "none"); draw(); };
      supers.append(el("label", {}, cb, a.name));
    });
    const color = el("select", { id: "color-by" }, el("option", { value: "", text: "(none)" }));
    M.forEach((m) => color.append(el("option", { value: "m:" + m, text: m })));
    if (compare) M.forEach((m) => color.append(el("option", { value: "d:" + m, text: "Δ " + m + " vs run 0" })));
    color.value = S.color;
    color.onchange = () => { S.color = color.value; draw(); };
    const mode = el("select", { id: "color-mode" }, el("option", { value: "border", text: "border" }),
      el("option", { value: "overlay", text: "overlay" }));
    mode.value = S.mode;
    mode.onchange = () => { S.mode = mode.value; draw(); };
    const view = el("select", { id: "view" }, el("option", { value: "images", text: "images" }));
    if (compare) view.append(el("option", { value: "diff", text: "difference to run 0" }));
    view.value = S.view;
    view.onchange = () => { S.view = view.value; draw(); };
    const size = el("input", { type: "range", min: "48", max: "384", step: "16", value: String(S.px), id: "px" });
    size.oninput = () => { S.px = +size.value; document.documentElement.style.setProperty("--px", S.px + "px"); };
    box.append(el("label", {}, "X ", x), el("label", {}, "Y ", y), supers, el("label", {}, "colour by ", color, mode),
      el("label", {}, "show ", view), el("label", {}, "size ", size));
  }
  // An axis is X, Y, a super-axis, or none of them (then one of its values is selected).
  function place(i, role) {
    if (S.x === i) S.x = -1;
    if (S.y === i) S.y = -1;
    S.supers = S.supers.filter((k) => k !== i);
    if (i < 0) return;
    if (role === "x") S.x = i; else if (role === "y") S.y = i; else if (role === "super") S.supers.push(i);
  }
  function laidOut(i) { return i === S.x || i === S.y || S.supers.includes(i); }

  let cycling = null;
  function selectors() {
    const box = $("selectors");
    box.replaceChildren();
    AX.forEach((a, i) => {
      const row = el("div", { class: "axis-row", "data-axis": a.name }, el("b", { text: a.name + ": " }));
      a.values.forEach((v, k) => {
        if (laidOut(i)) {  // shown as columns/rows: each value can be hidden
          const cb = el("input", { type: "checkbox", checked: !S.hidden[i].has(k) });
          cb.onchange = () => { cb.checked ? S.hidden[i].delete(k) : S.hidden[i].add(k); draw(); };
          row.append(el("label", { class: "chip" }, cb, v));
        } else {
          const b = el("button", { class: "tab" + (S.sel[i] === k ? " on" : ""), text: v });
          b.onclick = () => { S.sel[i] = k; draw(); };
          row.append(b);
        }
      });
      if (!laidOut(i) && a.values.length > 1) {
        const c = el("button", { class: "cycle", text: cycling && cycling.axis === i ? "■ stop" : "▶ cycle" });
        c.onclick = () => toggleCycle(i);
        row.append(c);
      }
      box.append(row);
    });
  }
  function toggleCycle(i) {
    const was = cycling && cycling.axis === i;
    if (cycling) clearInterval(cycling.timer);
    cycling = was ? null : { axis: i, timer: setInterval(() => {
      S.sel[i] = (S.sel[i] + 1) % AX[i].values.length; draw(); }, 1200) };
    selectors();
  }

  // -- the grid --------------------------------------------------------------------------------------------
  function shown(i) { return i < 0 ? [null] : AX[i].values.map((_, k) => k).filter((k) => !S.hidden[i].has(k)); }
  function cellAt(pos) {
    const v = AX.map((_, i) => (pos[i] !== undefined ? pos[i] : S.sel[i]));
    const i = byKey.get(v.join(","));
    return i === undefined ? -1 : i;
  }
  function combos(axes) {
    let out = [{}];
    for (const a of axes) out = out.flatMap((o) => shown(a).map((k) => ({ ...o, [a]: k })));
    return out;
  }
  function label(i, k) { return i < 0 || k === null ? "" : `${AX[i].name}: ${AX[i].values[k]}`; }

  function tile(ci, pos) {
    const fig = el("figure", { class: "cell", tabindex: "0", "data-pos": JSON.stringify(pos) });
    if (ci < 0) {
      fig.classList.add("missing");
      fig.append(el("span", { text: "pending" }));
      return fig;
    }
    const c = CELLS[ci];
    fig.dataset.cell = String(ci);
    fig.dataset.id = c.id;
    if (c.status !== "ok") {
      fig.classList.add("failed");
      fig.append(el("span", { text: "FAILED" }), el("small", { text: c.error }));
      fig.title = c.error;
    } else {
      const src = S.view === "diff" ? (c.diff || (c.run === 0 ? c.thumb : null)) : c.thumb;
      fig.append(src ? el("img", { src, loading: "lazy", alt: c.id }) : el("span", { text: "no base cell" }));
    }
    const v = metricOf(c, S.color);
    if (S.color && v !== null && v !== undefined) {
      const r = range(S.color), t = r && r[1] > r[0] ? (v - r[0]) / (r[1] - r[0]) : 0.5;
      if (S.mode === "border") fig.style.outline = `4px solid ${colour(t)}`;
      else fig.append(el("b", { class: "overlay", style: `background:${colour(t)}`, text: fmt(v, digits(...r)) }));
    }
    fig.onclick = () => openCell(ci);
    fig.onkeydown = (e) => { if (e.key === "Enter") openCell(ci); };
    return fig;
  }
  function subgrid(fixed) {
    const xs = shown(S.x), ys = shown(S.y);
    const t = el("table", { class: "grid" });
    const head = el("tr", {}, el("th"));
    xs.forEach((k) => head.append(el("th", { text: label(S.x, k) })));
    t.append(head);
    ys.forEach((ky) => {
      const tr = el("tr", {}, el("th", { class: "rowlab", text: label(S.y, ky) }));
      xs.forEach((kx) => {
        const pos = { ...fixed };
        if (S.x >= 0) pos[S.x] = kx;
        if (S.y >= 0) pos[S.y] = ky;
        tr.append(el("td", {}, tile(cellAt(pos), pos)));
      });
      t.append(tr);
    });
    return t;
  }
  function draw() {
    const grid = $("grid");
    grid.replaceChildren();
    for (const fixed of combos(S.supers)) {
      const title = S.supers.map((a) => label(a, fixed[a])).join(" · ");
      grid.append(el("div", { class: "sub" }, title ? el("h4", { text: title }) : null, subgrid(fixed)));
    }
    selectors();
    legend();
    const x = $("x-axis"), y = $("y-axis");
    if (x) x.value = String(S.x);
    if (y) y.value = String(S.y);
    document.querySelectorAll(".supers input").forEach((cb) => { cb.checked = S.supers.includes(+cb.dataset.axis); });
  }
  function legend() {
    const box = $("legend");
    box.replaceChildren();
    const r = S.color ? range(S.color) : null;
    if (!r) return;
    const d = digits(...r);
    box.append(el("span", { text: S.color.replace(/^d:/, "Δ ").replace(/^m:/, "") + ": " }),
      el("span", { id: "legend-low", text: fmt(r[0], d) }), el("span", { class: "ramp" }),
      el("span", { id: "legend-high", text: fmt(r[1], d) }));
  }

  // -- one cell, enlarged ----------------------------------------------------------------------------------
  function params(c) { return { ...D.common[c.run], ...c.p }; }
  function styleRow(sid, num, what, unused, why) {
    const s = D.styles[sid] || { name: sid, caption: "" };
    return el("li", {}, s.thumb ? el("img", { src: s.thumb, class: "sthumb", alt: s.name }) : null,
      el("b", { text: s.name }), ` ${what} ${fmt(num, 4)}`, unused ? el("em", { text: " unused (IP-Adapter scale 0)" }) : null,
      why ? el("span", { class: "why", text: " · " + why }) : null,
      s.caption ? el("div", { class: "cap", text: s.caption }) : null);
  }
  function openCell(ci) {
    S.open = ci;
    const c = CELLS[ci], dlg = $("detail"), body = $("detail-body");
    body.replaceChildren();
    const big = c.image && S.view !== "diff" ? c.image : (S.view === "diff" && c.diff) || c.thumb;
    body.append(el("h3", { text: `cell ${c.id}` + (compare ? ` · run ${D.runs[c.run].name}` : "") }));
    if (big) body.append(el("img", { src: big, class: "big", alt: c.id }));
    if (c.status !== "ok") body.append(el("p", { class: "error", text: "failed: " + c.error }));
    const tab = el("table", { class: "params" });
    for (const [k, v] of Object.entries(params(c))) {
      tab.append(el("tr", { "data-param": k }, el("th", { text: k }), el("td", { text: paramLabel(c, k, v) })));
    }
    M.forEach((m, i) => tab.append(el("tr", { "data-metric": m }, el("th", { text: m }),
      el("td", { text: fmt(c.m[i], 4) + (c.dm && c.dm[i] !== null ? ` (Δ ${c.dm[i] >= 0 ? "+" : ""}${fmt(c.dm[i], 4)} vs run 0)` : "") }))));
    tab.append(el("tr", {}, el("th", { text: "seconds" }), el("td", { text: fmt(c.seconds, 3) })));
    tab.append(el("tr", {}, el("th", { text: "peak memory MB" }), el("td", { text: fmt(c.peak_mb, 1) })));
    body.append(tab);
    if (c.refs.length) {
      body.append(el("h4", { text: c.refs.length > 1 ? "blended styles (weight)" : "style (weight)" }),
        el("ul", { class: "styles" }, ...c.refs.map(([s, w]) => styleRow(s, w, "weight", !c.style_used))));
    }
    if (c.retrieved.length) {
      body.append(el("h4", { text: "retrieved (score)" }),
        el("ul", { class: "styles" }, ...c.retrieved.map(([s, sc], n) => styleRow(s, sc, "score", false, (c.why || [])[n]))));
    }
    const out = el("textarea", { id: "copy-text", readonly: true, rows: "8" });
    const copy = (text) => { out.value = text; out.select(); if (navigator.clipboard) navigator.clipboard.writeText(text).catch(() => {}); };
    body.append(el("p", {}, el("button", { id: "copy-yaml", text: "copy as spec YAML", on: { click: () => copy(specYaml(c)) } }),
      el("button", { id: "copy-params", text: "copy as Params", on: { click: () => copy(pyParams(c)) } })), out);
    if (!dlg.open) dlg.showModal();
  }
  function paramLabel(c, k, v) {
    const at = AX.findIndex((a) => a.params.length === 1 && a.params[0] === k);
    if (at >= 0) return AX[at].values[c.v[at]];
    const known = D.common_labels[c.run][k];
    return known !== undefined ? known : typeof v === "string" ? v : JSON.stringify(v);
  }
  function specYaml(c) {
    const lines = [`name: cell-${c.id}`, `preset: ${JSON.stringify(D.runs[c.run].preset)}`, "base:"];
    for (const [k, v] of Object.entries(params(c))) if (v !== null) lines.push(`  ${k}: ${JSON.stringify(v)}`);
    return lines.join("\n") + "\n";
  }
  function py(v) {
    if (v === null) return "None";
    if (v === true) return "True";
    if (v === false) return "False";
    if (Array.isArray(v)) return "[" + v.map(py).join(", ") + "]";
    if (typeof v === "object") return "{" + Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}: ${py(x)}`).join(", ") + "}";
    return JSON.stringify(v);
  }
  function pyParams(c) {
    return "Params(" + Object.entries(params(c)).filter(([, v]) => v !== null).map(([k, v]) => `${k}=${py(v)}`).join(", ") + ")";
  }
  function step(axis, delta) {
    if (S.open < 0 || axis < 0) return;
    const c = CELLS[S.open], ks = shown(axis), at = ks.indexOf(c.v[axis]);
    if (at < 0) return;
    const to = ks[Math.min(ks.length - 1, Math.max(0, at + delta))];
    const v = c.v.slice();
    v[axis] = to;
    const ci = byKey.get(v.join(","));
    if (ci !== undefined) openCell(ci);
  }
  document.addEventListener("keydown", (e) => {
    if (!$("detail").open) return;
    const moves = { ArrowLeft: [S.x, -1], ArrowRight: [S.x, 1], ArrowUp: [S.y, -1], ArrowDown: [S.y, 1] };
    if (moves[e.key]) { e.preventDefault(); step(...moves[e.key]); }
  });
  $("detail").addEventListener("close", () => { S.open = -1; });
  $("detail-close").onclick = () => $("detail").close();

  // -- heatmap of a metric over any two axes ---------------------------------------------------------------
  function heatmap() {
    const box = $("heatmap");
    const xs = axisSelect("hm-x", S.x >= 0 ? S.x : 0, false), ys = axisSelect("hm-y", S.y, true);
    const ms = el("select", { id: "hm-metric" });
    M.forEach((m) => ms.append(el("option", { value: "m:" + m, text: m })));
    if (compare) M.forEach((m) => ms.append(el("option", { value: "d:" + m, text: "Δ " + m })));
    const out = el("div", { id: "hm-out" });
    const render = () => {
      const ax = +xs.value, ay = +ys.value, key = ms.value, sums = new Map();
      for (const c of CELLS) {
        const v = metricOf(c, key);
        if (c.status !== "ok" || v === null || v === undefined) continue;
        const k = `${c.v[ax]},${ay >= 0 ? c.v[ay] : 0}`, s = sums.get(k) || [0, 0];
        sums.set(k, [s[0] + v, s[1] + 1]);
      }
      const means = [...sums.values()].map(([t, n]) => t / n);
      out.replaceChildren();
      if (!means.length) { out.append(el("p", { text: "no finished cells with this metric" })); return; }
      const lo = means.reduce((a, b) => Math.min(a, b)), hi = means.reduce((a, b) => Math.max(a, b)), d = digits(lo, hi);
      const t = el("table", { class: "heat" }, el("tr", {}, el("th", { text: ay >= 0 ? `${AX[ay].name} \\ ${AX[ax].name}` : AX[ax].name }),
        ...AX[ax].values.map((v) => el("th", { text: v }))));
      (ay >= 0 ? AX[ay].values : [""]).forEach((vy, ky) => {
        const tr = el("tr", {}, el("th", { text: vy }));
        AX[ax].values.forEach((_, kx) => {
          const s = sums.get(`${kx},${ky}`);
          const m = s ? s[0] / s[1] : null, f = m === null ? 0.5 : hi > lo ? (m - lo) / (hi - lo) : 0.5;
          tr.append(el("td", { style: m === null ? "" : `background:${colour(f)};color:${f > 0.6 ? "#000" : "#fff"}`,
            title: s ? `mean of ${s[1]} cells` : "no cells", text: m === null ? "–" : fmt(m, d) }));
        });
        t.append(tr);
      });
      out.append(t, el("p", { class: "scale" }, `colour scale ${fmt(lo, d)} `, el("span", { class: "ramp" }),
        ` ${fmt(hi, d)} — each square is the mean over the cells with those two values (every other axis pooled; hover for the count).`));
    };
    [xs, ys, ms].forEach((s) => { s.onchange = render; });
    box.append(el("label", {}, "X ", xs), el("label", {}, "Y ", ys), el("label", {}, "metric ", ms), out);
    render();
  }

  // -- style vs structure: the Pareto front, each point a link to its cell ---------------------------------
  function pareto() {
    const box = $("pareto"), fi = M.indexOf("edge_f1"), si = M.indexOf("style_similarity");
    if (fi < 0 || si < 0) return;
    const pts = CELLS.map((c, i) => [c.m[fi], c.m[si], i]).filter((p) => p[0] !== null && p[1] !== null && CELLS[p[2]].status === "ok");
    if (!pts.length) return;
    // Best structure first: a point is on the front when it has more style than every point before it.
    const front = [];
    let best = -Infinity;
    for (const p of pts.slice().sort((a, b) => b[0] - a[0] || b[1] - a[1])) {
      if (p[1] > best) { front.push(p); best = p[1]; }
    }
    front.sort((a, b) => a[0] - b[0]);
    const W = 560, H = 380, P = 50, ns = "http://www.w3.org/2000/svg";
    const [x0, x1] = range("m:edge_f1"), [y0, y1] = range("m:style_similarity");
    const sx = (v) => P + (x1 > x0 ? (v - x0) / (x1 - x0) : 0.5) * (W - 2 * P);
    const sy = (v) => H - P - (y1 > y0 ? (v - y0) / (y1 - y0) : 0.5) * (H - 2 * P);
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.setAttribute("width", W);
    const add = (tag, attrs, text) => {
      const e = document.createElementNS(ns, tag);
      for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
      if (text !== undefined) e.textContent = text;
      svg.append(e);
      return e;
    };
    const dx = digits(x0, x1), dy = digits(y0, y1);
    add("text", { x: W / 2, y: H - 8, "text-anchor": "middle" }, "structure fidelity (edge F1)");
    add("text", { x: 12, y: H / 2, transform: `rotate(-90 12 ${H / 2})`, "text-anchor": "middle" }, "style similarity (CLIP cosine)");
    add("text", { x: P, y: H - P + 16, "font-size": 10 }, fmt(x0, dx));
    add("text", { x: W - P, y: H - P + 16, "font-size": 10, "text-anchor": "end" }, fmt(x1, dx));
    add("text", { x: P - 4, y: H - P, "font-size": 10, "text-anchor": "end" }, fmt(y0, dy));
    add("text", { x: P - 4, y: P, "font-size": 10, "text-anchor": "end" }, fmt(y1, dy));
    add("polyline", { points: front.map((p) => `${sx(p[0])},${sy(p[1])}`).join(" "), fill: "none", stroke: "#c00" });
    const onFront = new Set(front.map((p) => p[2]));
    for (const p of pts) {
      const dot = add("circle", { cx: sx(p[0]), cy: sy(p[1]), r: onFront.has(p[2]) ? 5 : 3, class: onFront.has(p[2]) ? "front" : "pt",
        "data-cell": p[2] });
      dot.addEventListener("click", () => openCell(p[2]));
      add("title", {}, shortLabel(p[2]));
      dot.append(svg.lastChild);
    }
    front.forEach((p, n) => add("text", { x: sx(p[0]) + 6, y: sy(p[1]) - 6, "font-size": 10, class: "front-label" }, `#${n + 1}`));
    const list = el("ol", { class: "front-list" }, ...front.map((p) => el("li", {},
      el("a", { href: "#", text: shortLabel(p[2]), on: { click: (e) => { e.preventDefault(); openCell(p[2]); } } }),
      ` — edge F1 ${fmt(p[0], dx)}, style ${fmt(p[1], dy)}`)));
    box.append(svg, el("p", { text: "Pareto front (no other cell is better on both), click a point or a line to open its cell:" }), list);
  }
  function shortLabel(ci) {
    const c = CELLS[ci];
    return AX.map((a, i) => `${a.name}=${a.values[c.v[i]]}`).join(", ");
  }

  // -- the table: sortable, style names, a page at a time --------------------------------------------------
  function table() {
    const box = $("table"), cols = [...AX.map((a, i) => ({ name: a.name, get: (c) => a.values[c.v[i]] })),
      { name: "status", get: (c) => c.status + (c.error ? ": " + c.error : "") },
      ...M.map((m, i) => ({ name: m, get: (c) => c.m[i], num: true })),
      { name: "seconds", get: (c) => c.seconds, num: true },
      { name: "style", get: (c) => c.refs.map(([s, w]) => `${(D.styles[s] || { name: s }).name} (${fmt(w, 2)})`).join("; ") +
        (c.refs.length && !c.style_used ? " — unused" : "") }];
    let order = CELLS.map((_, i) => i), by = -1, dir = 1, limit = 200;
    const t = el("table", { class: "results" }), more = el("button", { text: "show more" });
    const render = () => {
      t.replaceChildren(el("tr", {}, ...cols.map((col, k) => el("th", { class: "sortable", "data-col": col.name,
        text: col.name + (k === by ? (dir > 0 ? " ▲" : " ▼") : ""), on: { click: () => sortBy(k) } }))));
      for (const ci of order.slice(0, limit)) {
        const c = CELLS[ci];
        t.append(el("tr", { class: c.status === "ok" ? "" : "failed", on: { click: () => openCell(ci) } },
          ...cols.map((col) => el("td", { text: col.num ? fmt(col.get(c), 4) : String(col.get(c)) }))));
      }
      more.hidden = limit >= order.length;
      more.textContent = `show more (${Math.min(limit, order.length)} of ${order.length} rows shown)`;
    };
    const sortBy = (k) => {
      dir = by === k ? -dir : 1;
      by = k;
      const col = cols[k];
      const key = (ci) => { const v = col.get(CELLS[ci]); return col.num ? [0, [v ?? -Infinity], ""] : sortKey(String(v)); };
      order.sort((a, b) => dir * cmpKeys(key(a), key(b)));
      render();
    };
    more.onclick = () => { limit += 500; render(); };
    box.append(t, more);
    render();
  }

  controls();
  draw();
  heatmap();
  pareto();
  table();
  document.body.dataset.ready = "1";
})();
