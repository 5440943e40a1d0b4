// The service map view: fetches api/map with the page's filters, draws it with
// Cytoscape.js (namespaces as compound nodes), refreshes in place. Plain JS, no build.
// Filtering happens on the server (traceprobe_map.views), so the page, the API and
// the CLI always agree; the page only diffs what comes back into the graph.
"use strict";
(function () {
  const REFRESH_MS = 5000;
  const LARGE = 300; // nodes: from here on, cheaper layout and rendering settings
  const state = {
    cy: null, snapshot: null, nodes: new Map(), edges: new Map(), positions: new Map(),
    selected: null, refreshes: 0, layoutMs: null, renderMs: null, ready: false, error: null,
  };
  window.traceprobeMap = state; // for the tests and the browser console

  const $ = (id) => document.getElementById(id);

  // --- formatting (the edge panel's numbers; tests read them) ---------------------
  const fmtRate = (x) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
  function fmtBytesRate(x) {
    const units = ["B/s", "kB/s", "MB/s", "GB/s"];
    let i = 0;
    while (x >= 1000 && i < units.length - 1) { x /= 1000; i += 1; }
    return `${i === 0 ? x.toFixed(0) : x.toFixed(1)} ${units[i]}`;
  }
  const fmtUs = (us) => (us == null ? "–" : us >= 1000 ? `${(us / 1000).toFixed(2)} ms`
    : `${Math.round(us)} µs`);
  const fmtPct = (r) => `${(100 * r).toFixed(r > 0 && r < 0.01 ? 2 : 1)} %`;
  // A side no agent observed has no figures (absent in api/map), never a measured 0.
  const UNSEEN = "not observed";
  const fmtCount = (n) => (n == null ? UNSEEN : String(n));
  // Connections tried (established + refused + timed out); UDP: datagrams both ways.
  const attempts = (e) => (e.transport === "udp"
    ? (e.datagramsSentPerSecond || 0) + (e.datagramsReceivedPerSecond || 0)
    : e.attemptsPerSecond);
  // Same scales as traceprobe_map.views.edge_colour / edge_thickness.
  const edgeColour = (r) => (r <= 0 ? "#2e9e5b" : r < 0.05 ? "#e0a020" : "#d64040");
  const edgeWidth = (rate) => Math.min(10, 1 + 2 * Math.log10(1 + 10 * rate));
  const labelOf = (id) => {
    const n = state.nodes.get(id);
    return n ? (n.namespace ? `${n.namespace}/${n.name}` : n.name) : id;
  };

  // --- filters <-> form <-> URL fragment --------------------------------------------
  const FILTERS = ["namespace", "probe", "window", "minRate", "search"];
  function currentQuery() {
    const params = new URLSearchParams();
    for (const name of FILTERS) {
      const value = $(name).value.trim();
      if (value) params.set(name, value);
    }
    return params.toString();
  }
  function ensureOption(select, value) {
    if (value && ![...select.options].some((o) => o.value === value)) {
      select.add(new Option(value, value));
    }
  }
  function restoreFilters() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ""));
    for (const name of FILTERS) {
      const el = $(name);
      if (!params.has(name)) continue;
      if (el.tagName === "SELECT") ensureOption(el, params.get(name));
      el.value = params.get(name);
    }
  }
  function fillSelect(select, values) {
    const keep = select.value;
    while (select.options.length > 1) select.remove(1);
    for (const v of values) select.add(new Option(v, v));
    ensureOption(select, keep); // a filter on something absent right now stays visible
    select.value = keep;
  }

  async function fetchJson(url) {
    const reply = await fetch(url, { headers: { Accept: "application/json" } });
    if (!reply.ok) {
      let message = reply.statusText;
      try { message = (await reply.json()).message || message; } catch (_) { /* not JSON */ }
      throw new Error(`${reply.status} ${message}`);
    }
    return reply.json();
  }

  // --- snapshot -> elements -----------------------------------------------------------
  function groupOf(node) {
    if (node.namespace) return [`ns:${node.namespace}`, node.namespace];
    if (node.kind === "external") return ["group:external", "outside the cluster"];
    if (node.kind === "node") return ["group:nodes", "nodes"];
    return [null, null];
  }
  function elementsFor(snapshot) {
    const groups = new Map();
    const nodes = [];
    const edges = [];
    const nodeFor = (n) => {
      const [group, groupLabel] = groupOf(n);
      if (group && !groups.has(group)) {
        groups.set(group, { group: "nodes", data: { id: group, label: groupLabel, isGroup: 1 },
          classes: "group" });
      }
      nodes.push({ group: "nodes", classes: n.kind,
        data: { id: n.id, parent: group || undefined, kind: n.kind,
          label: n.workloadKind ? `${n.name}\n${n.workloadKind}` : n.name } });
    };
    snapshot.nodes.forEach(nodeFor);
    const known = new Set(snapshot.nodes.map((n) => n.id));
    const need = (id) => { // an edge must never point at nothing
      if (!known.has(id)) { known.add(id); nodeFor({ id, kind: "unknown", name: id }); }
    };
    for (const e of snapshot.edges) {
      need(e.source); need(e.target);
      const rate = attempts(e);
      const req = (e.requests || [])[0]; // requests, where a probe parses them, say more
      const errorRate = Math.max(e.errorRate, req ? req.errorRate : 0);
      edges.push({ group: "edges", classes: errorRate > 0 ? "traffic failing" : "traffic",
        data: { id: e.id, source: e.source, target: e.target, width: edgeWidth(rate),
          colour: edgeColour(errorRate), label: req ? requestLabel(req) : `${fmtRate(rate)}/s` } });
      for (const b of e.backends || []) {
        need(b.id);
        edges.push({ group: "edges", classes: "backend",
          data: { id: `backend:${e.id}=>${b.id}`, source: e.target, target: b.id, edge: e.id } });
      }
    }
    return [...groups.values(), ...nodes, ...edges];
  }

  const STYLE = [
    { selector: "node", style: { label: "data(label)", "text-wrap": "wrap", "font-size": 10,
      "text-valign": "bottom", "text-margin-y": 3, "min-zoomed-font-size": 7, width: 26,
      height: 26, "background-color": "#8a93a3", "border-width": 1, "border-color": "#fff" } },
    { selector: "node.workload", style: { shape: "round-rectangle",
      "background-color": "#4a78c2" } },
    { selector: "node.service", style: { shape: "hexagon", "background-color": "#1f9e9a" } },
    { selector: "node.node", style: { shape: "rectangle", "background-color": "#7b8494" } },
    { selector: "node.external", style: { shape: "ellipse", "background-color": "#d9822b" } },
    { selector: "node.group", style: { shape: "round-rectangle", "background-color": "#eef1f5",
      "background-opacity": 0.7, "border-color": "#c9d0da", "border-width": 1,
      "text-valign": "top", "text-halign": "center", "font-size": 12, "font-weight": "bold",
      color: "#5a6475", padding: 14 } },
    { selector: "edge", style: { "curve-style": "bezier", "target-arrow-shape": "triangle",
      "arrow-scale": 0.8, width: "data(width)", "line-color": "data(colour)",
      "target-arrow-color": "data(colour)", opacity: 0.85 } },
    { selector: "edge.labelled", style: { label: "data(label)", "font-size": 9,
      "text-rotation": "autorotate", "text-background-color": "#fbfcfd",
      "text-background-opacity": 0.8, "min-zoomed-font-size": 8 } },
    { selector: "edge.backend", style: { "line-style": "dashed", "line-color": "#9aa3b2",
      "target-arrow-color": "#9aa3b2", width: 1, "target-arrow-shape": "vee" } },
    { selector: ":selected", style: { "overlay-color": "#1d2430", "overlay-opacity": 0.15,
      "border-color": "#1d2430", "border-width": 2 } },
    { selector: ".faded", style: { opacity: 0.15 } },
  ];

  function createGraph(large) {
    state.cy = cytoscape({
      container: $("graph"), style: STYLE, minZoom: 0.05, maxZoom: 4,
      // With hundreds of nodes, pan and zoom a snapshot bitmap instead of redrawing the scene.
      textureOnViewport: large, hideEdgesOnViewport: large, pixelRatio: large ? 1 : "auto",
    });
    state.cy.on("tap", "edge", (evt) => showEdge(evt.target.data("edge") || evt.target.id()));
    state.cy.on("tap", "node", (evt) => {
      if (!evt.target.data("isGroup")) showNode(evt.target.id());
    });
    state.cy.on("tap", (evt) => { if (evt.target === state.cy) closePanel(); });
  }

  function layout(nodesCount) {
    const t0 = performance.now();
    if (nodesCount > LARGE) groupedLayout(); else wholeLayout();
    state.layoutMs = performance.now() - t0;
  }
  function wholeLayout() {
    state.cy.layout({ name: "fcose", quality: "default", randomize: true, animate: false,
      fit: true, padding: 30, nodeDimensionsIncludeLabels: true, idealEdgeLength: () => 80,
      nodeRepulsion: () => 6000, nodeSeparation: 60, packComponents: true }).run();
  }
  // Large maps: a force layout of the whole graph spends seconds and still lets namespaces
  // overlap when many edges cross them. Laying out each namespace on its own (its inner
  // edges only) and packing the boxes in rows is fast and keeps every namespace readable.
  function groupedLayout() {
    const cy = state.cy;
    const boxes = [];
    const layoutBox = (members) => {
      const inner = members.union(members.edgesWith(members));
      inner.layout({ name: "fcose", quality: "default", randomize: true, animate: false,
        fit: false, nodeDimensionsIncludeLabels: false, idealEdgeLength: () => 60,
        nodeRepulsion: () => 4500, packComponents: true }).run();
      boxes.push({ members, bb: members.boundingBox() });
    };
    // No cy.batch() here: inside one, the boxes measured below are stale and nothing draws.
    cy.nodes("[?isGroup]").forEach((group) => layoutBox(group.children()));
    const loose = cy.nodes().filter((n) => !n.data("isGroup") && n.parent().empty());
    if (loose.nonempty()) layoutBox(loose);
    boxes.sort((a, b) => b.bb.h - a.bb.h); // shelf packing, tallest first
    const gap = 60;
    const area = boxes.reduce((acc, b) => acc + (b.bb.w + gap) * (b.bb.h + gap), 0);
    const rowWidth = Math.max(Math.sqrt(area) * 1.3, ...boxes.map((b) => b.bb.w + gap));
    let x = 0; let y = 0; let rowHeight = 0;
    for (const { members, bb } of boxes) {
      if (x > 0 && x + bb.w > rowWidth) { x = 0; y += rowHeight + gap; rowHeight = 0; }
      members.shift({ x: x - bb.x1, y: y - bb.y1 });
      x += bb.w + gap;
      rowHeight = Math.max(rowHeight, bb.h);
    }
    cy.fit(undefined, 30);
  }

  function placeNear(node) { // a newcomer goes next to a neighbour that already has a place
    const anchor = node.neighborhood("node").filter((n) => state.positions.has(n.id()))[0];
    const base = anchor ? anchor.position() : state.cy.extent();
    const x = anchor ? base.x : (base.x1 + base.x2) / 2;
    const y = anchor ? base.y : (base.y1 + base.y2) / 2;
    node.position({ x: x + 40 * (Math.random() - 0.5) + 30, y: y + 40 * (Math.random() - 0.5) });
  }

  function render(snapshot) {
    const t0 = performance.now();
    state.snapshot = snapshot;
    state.nodes = new Map(snapshot.nodes.map((n) => [n.id, n]));
    state.edges = new Map(snapshot.edges.map((e) => [e.id, e]));
    const elements = elementsFor(snapshot);
    if (!state.cy) createGraph(snapshot.nodes.length > LARGE);
    const cy = state.cy;
    const labelled = snapshot.edges.length <= 2 * LARGE;
    const wanted = new Set(elements.map((el) => el.data.id));
    const placed = state.positions;
    let fresh;
    cy.batch(() => {
      cy.nodes().forEach((n) => { if (!n.isParent()) placed.set(n.id(), { ...n.position() }); });
      cy.elements().filter((el) => !wanted.has(el.id())).remove();
      const toAdd = [];
      for (const el of elements) {
        const existing = cy.getElementById(el.data.id);
        if (existing.nonempty()) {
          existing.data(el.data);
          existing.classes(el.classes);
        } else {
          if (placed.has(el.data.id)) el.position = { ...placed.get(el.data.id) };
          toAdd.push(el);
        }
      }
      fresh = cy.add(toAdd);
      cy.edges(".traffic").toggleClass("labelled", labelled);
    });
    const unplaced = fresh.nodes().filter((n) => !n.data("isGroup") && !placed.has(n.id()));
    const leaves = cy.nodes().filter((n) => !n.data("isGroup"));
    if (unplaced.length > 0 && unplaced.length >= leaves.length / 2) {
      layout(leaves.length); // first draw, or most of the graph is new: lay out everything
    } else {
      unplaced.forEach(placeNear); // keep the user's layout; newcomers join their neighbours
    }
    leaves.forEach((n) => placed.set(n.id(), { ...n.position() }));
    state.renderMs = performance.now() - t0;
    refreshPanel();
    const failing = snapshot.edges.filter((e) => e.errorRate > 0).length;
    $("summary").textContent = `${snapshot.nodes.length} nodes, ${snapshot.edges.length} edges`
      + (failing ? `, ${failing} failing` : "");
    $("updated").textContent = `window ${Math.round(snapshot.windowSeconds)} s, `
      + `at ${new Date(snapshot.generatedAt).toLocaleTimeString()}`;
  }

  // --- panels -------------------------------------------------------------------------
  function fill(title, rows) {
    $("panel-title").textContent = title;
    const body = $("panel-body");
    body.replaceChildren();
    for (const [label, text, field, value] of rows) {
      const dt = document.createElement("dt");
      dt.textContent = label;
      if (text === null) { dt.className = "section"; body.append(dt); continue; }
      const dd = document.createElement("dd");
      dd.textContent = text;
      if (field) { dd.dataset.field = field; dd.dataset.value = String(value ?? ""); }
      body.append(dt, dd);
    }
    $("panel").hidden = false;
    if (state.cy) state.cy.resize(); // the panel narrows the graph: fit and clicks use that
  }
  function rttRows(side, field, r) { // one side's own RTT: p50/p99/samples, or not observed
    if (r == null) return [[`measured by the ${side}`, UNSEEN, field, ""]];
    return [[`by the ${side}: p50`, fmtUs(r.p50Us), `${field}.p50Us`, r.p50Us],
      [`by the ${side}: p99`, fmtUs(r.p99Us), `${field}.p99Us`, r.p99Us],
      [`by the ${side}: samples`, String(r.samples || 0), `${field}.samples`, r.samples || 0]];
  }
  function requestLatency(r) { // the client's time to first byte, else the server's
    return r.latencyByClient || r.latencyByServer || null;
  }
  function requestLabel(r) {
    const l = requestLatency(r);
    return `${fmtRate(r.requestsPerSecond)} req/s, ${fmtPct(r.errorRate)}`
      + (l && l.p99Ms != null ? `, p99 ${fmtUs(l.p99Ms * 1000)}` : "");
  }
  function latencyRows(side, field, l) {
    if (l == null) return [[`latency by the ${side}`, UNSEEN, field, ""]];
    return ["p50", "p95", "p99"].map((q) => [`by the ${side}: ${q}`,
      l[`${q}Ms`] == null ? "–" : fmtUs(l[`${q}Ms`] * 1000), `${field}.${q}Ms`, l[`${q}Ms`]]);
  }
  function requestRows(e) { // per protocol: rate, errors, statuses, each side's latency
    const unparsed = Object.entries(e.unparsedConnections || {});
    return unparsed.map(([p, n]) => [`not parsed: ${p}`, `${n} connections`,
      `unparsedConnections.${p}`, n]).concat((e.requests || []).flatMap((r, i) => [
      [`Requests (${r.protocol})`, null],
      ["per second", `${fmtRate(r.requestsPerSecond)}/s`, `requests.${i}.requestsPerSecond`,
        r.requestsPerSecond],
      ["in window", String(r.requests), `requests.${i}.requests`, r.requests],
      ["errors", `${r.errors} (${fmtPct(r.errorRate)})`, `requests.${i}.errors`, r.errors],
      ["by status", Object.entries(r.byStatus || {}).map(([s, n]) => `${s}: ${n}`).join(", "),
        `requests.${i}.byStatus`, Object.keys(r.byStatus || {}).join(",")],
      ["counted by", r.countedBy, `requests.${i}.countedBy`, r.countedBy],
      ...latencyRows("client", `requests.${i}.latencyByClient`, r.latencyByClient),
      ...latencyRows("server", `requests.${i}.latencyByServer`, r.latencyByServer),
    ]));
  }
  function datagramRows(e) { // UDP has no connections: datagrams each way instead
    return [["Datagrams", null],
      ["client → server", `${fmtRate(e.datagramsSentPerSecond)}/s`, "datagramsSentPerSecond",
        e.datagramsSentPerSecond],
      ["server → client", `${fmtRate(e.datagramsReceivedPerSecond)}/s`,
        "datagramsReceivedPerSecond", e.datagramsReceivedPerSecond],
      ["in window", `${e.datagramsSent} → / ${e.datagramsReceived} ←`, "datagramsSent",
        e.datagramsSent]];
  }
  function showEdge(id) {
    const e = state.edges.get(id);
    if (!e) return closePanel();
    state.selected = { kind: "edge", id };
    const f = e.failures || {};
    const rtt = e.rtt || {};
    $("panel").dataset.kind = "edge";
    $("panel").dataset.id = id;
    fill(`${labelOf(e.source)} → ${labelOf(e.target)}`, [
      ["Port", e.port == null ? e.transport : `${e.port}/${e.transport}`, "port", e.port],
      ...(e.transport === "udp" ? datagramRows(e) : []),
      ...requestRows(e),
      ["Connections", null],
      ["per second", `${fmtRate(e.connectionsPerSecond)}/s`, "connectionsPerSecond",
        e.connectionsPerSecond],
      ["in window", String(e.connections), "connections", e.connections],
      ["Failures", null],
      ["per second", `${fmtRate(e.failuresPerSecond)}/s`, "failuresPerSecond",
        e.failuresPerSecond],
      ["refused", String(f.refused || 0), "failures.refused", f.refused || 0],
      ["timed out", String(f.timeout || 0), "failures.timeout", f.timeout || 0],
      ["reset", String(f.reset || 0), "failures.reset", f.reset || 0],
      ["error rate", fmtPct(e.errorRate), "errorRate", e.errorRate],
      ["Bytes", null],
      ["client → server", fmtBytesRate(e.bytesSentPerSecond), "bytesSentPerSecond",
        e.bytesSentPerSecond],
      ["server → client", fmtBytesRate(e.bytesReceivedPerSecond), "bytesReceivedPerSecond",
        e.bytesReceivedPerSecond],
      ["Retransmits", null],
      ["by the client → server", fmtCount(e.retransmitsClientToServer),
        "retransmitsClientToServer", e.retransmitsClientToServer],
      ["by the server → client", fmtCount(e.retransmitsServerToClient),
        "retransmitsServerToClient", e.retransmitsServerToClient],
      ["both ways", String(e.retransmits), "retransmits", e.retransmits],
      ["Round-trip time, both sides", null],
      ["p50", fmtUs(rtt.p50Us), "rtt.p50Us", rtt.p50Us],
      ["p99", fmtUs(rtt.p99Us), "rtt.p99Us", rtt.p99Us],
      ["max", fmtUs(rtt.maxUs), "rtt.maxUs", rtt.maxUs],
      ["samples", String(rtt.samples || 0), "rtt.samples", rtt.samples || 0],
      ...rttRows("client", "rttByClient", e.rttByClient),
      ...rttRows("server", "rttByServer", e.rttByServer),
      ["Seen", null],
      ["backends", (e.backends || []).map((b) => `${labelOf(b.id)} (${b.attempts})`)
        .join(", ") || "–", "backends", (e.backends || []).length],
      ["observed by", (e.observedBy || []).join(", ") || "–", "observedBy", ""],
      ["probes", (e.probes || []).join(", ") || "–", "probes", ""],
    ]);
    highlight(state.cy.getElementById(id));
  }
  function showNode(id) {
    const n = state.nodes.get(id);
    if (!n) return closePanel();
    state.selected = { kind: "node", id };
    const ins = state.snapshot.edges.filter((e) => e.target === id);
    const outs = state.snapshot.edges.filter((e) => e.source === id);
    const sum = (list) => list.reduce((acc, e) => acc + attempts(e), 0);
    $("panel").dataset.kind = "node";
    $("panel").dataset.id = id;
    fill(labelOf(id), [
      ["kind", n.workloadKind ? `${n.kind} (${n.workloadKind})` : n.kind, "kind", n.kind],
      ["namespace", n.namespace || "–", "namespace", n.namespace],
      ["pods", (n.pods || []).join(", ") || "–", "pods", (n.pods || []).length],
      ["nodes", (n.nodes || []).join(", ") || "–", "nodes", (n.nodes || []).length],
      ["ports", (n.ports || []).join(", ") || "–", "ports", (n.ports || []).join(",")],
      ["Traffic", null],
      ["in", `${ins.length} edges, ${fmtRate(sum(ins))}/s`, "in", sum(ins)],
      ["out", `${outs.length} edges, ${fmtRate(sum(outs))}/s`, "out", sum(outs)],
    ]);
    const el = state.cy.getElementById(id);
    highlight(el.closedNeighborhood());
  }
  function highlight(keep) {
    const cy = state.cy;
    cy.batch(() => {
      cy.elements().removeClass("faded");
      if (keep.nonempty()) cy.elements().not(keep).not(keep.ancestors()).addClass("faded");
    });
  }
  function closePanel() {
    state.selected = null;
    $("panel").hidden = true;
    if (state.cy) { state.cy.resize(); highlight(state.cy.collection()); }
  }
  function refreshPanel() { // after a refresh: same selection, new numbers
    const sel = state.selected;
    if (!sel) return;
    if (sel.kind === "edge") showEdge(sel.id); else showNode(sel.id);
  }

  // --- refresh loop ---------------------------------------------------------------------
  let timer = null;
  let generation = 0;
  async function refresh() {
    clearTimeout(timer);
    const mine = ++generation; // a slow older answer must not overwrite a newer one
    const query = currentQuery();
    history.replaceState(null, "", query ? `#${query}` : location.pathname + location.search);
    for (const kind of ["json", "dot", "mermaid"]) {
      $(`export-${kind}`).href = `api/export/${kind}${query ? `?${query}` : ""}`;
    }
    try {
      const windowParam = $("window").value ? `?window=${encodeURIComponent($("window").value)}`
        : "";
      const [filters, snapshot] = await Promise.all([
        fetchJson(`api/filters${windowParam}`), fetchJson(`api/map${query ? `?${query}` : ""}`)]);
      if (mine !== generation) return;
      $("cluster").textContent = filters.cluster;
      fillSelect($("namespace"), filters.namespaces);
      fillSelect($("probe"), filters.probes);
      render(snapshot);
      state.error = null;
      $("error").hidden = true;
    } catch (err) {
      if (mine !== generation) return;
      state.error = String(err.message || err);
      $("error").textContent = `Could not load the map: ${state.error}`;
      $("error").hidden = false;
    }
    state.refreshes += 1;
    state.ready = true;
    document.body.dataset.state = "ready";
    schedule();
  }
  function schedule() {
    clearTimeout(timer);
    if ($("live").checked) timer = setTimeout(refresh, REFRESH_MS);
  }

  let debounce = null;
  $("filters").addEventListener("input", (evt) => {
    if (evt.target.id === "live") return;
    clearTimeout(debounce);
    debounce = setTimeout(refresh, evt.target.id === "search" ? 300 : 0);
  });
  $("filters").addEventListener("submit", (evt) => { evt.preventDefault(); refresh(); });
  $("live").addEventListener("change", () => ($("live").checked ? refresh() : schedule()));
  $("relayout").addEventListener("click", () => {
    if (!state.cy) return;
    layout(state.cy.nodes().filter((n) => !n.data("isGroup")).length);
    state.cy.nodes().forEach((n) => { if (!n.isParent()) state.positions.set(n.id(), { ...n.position() }); });
  });
  $("panel-close").addEventListener("click", closePanel);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) schedule(); });

  restoreFilters();
  refresh();
})();
