"use strict";
// Draws the run embedded in #run-data (a hubsim Timeline) as a sequence diagram. Bands and
// violation markers are drawn once per filter change; arrows are laid out then too, but they,
// the per-row dots, labels and times are drawn for the rows in view only (every row with `#all`
// in the address), so a run of tens of thousands of events stays quick.
(function () {
  const data = JSON.parse(document.getElementById("run-data").textContent);
  const app = document.getElementById("app");
  const entries = data.entries;
  const COLORS = {
    request: "#1f77b4", response: "#2ca02c", notify: "#ff7f0e", receipt: "#9467bd",
    ping: "#9a9a9a", pong: "#9a9a9a", hello: "#17becf", welcome: "#17becf", error: "#d62728",
  };
  const FRAME_KINDS = Object.keys(COLORS);
  const TIME_W = 64, SCRIPT_W = 250, HEAD = 8;
  const state = {
    rowH: 16,
    hiddenKinds: new Set(),
    hiddenLanes: new Set(),
    collapseClient: false,
    collapseHub: false,
    from: null,
    to: null,
    selected: null,
    search: "",
  };

  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  const secs = (us) => {
    const s = us / 1e6;
    return (Number.isInteger(s) ? s.toFixed(1) : String(+s.toFixed(6))) + "s";
  };
  const frameKindOf = (e) => (e.frame ? e.frame.kind : null);
  // Each frame's JSON is one line of #frame-data, split when a frame is first shown.
  let frameLines = null;
  const frameJson = (line) => {
    if (line < 0) return "";
    if (!frameLines) frameLines = document.getElementById("frame-data").textContent.split("\n");
    return frameLines[line] || "";
  };

  // Frames: a numbered frame's entries (send, then delivery or drop) are one arrow.
  const frames = [];
  const frameOf = new Map(); // entry number -> frame
  const bySeq = new Map();
  for (const e of entries) {
    if (!e.frame) continue;
    let f = e.frame.seq > 0 ? bySeq.get(e.frame.seq) : undefined;
    if (!f) {
      f = { seq: e.frame.seq, up: e.frame.up, kind: e.frame.kind, agent: e.agents[0], start: null, end: null, dropped: false, line: -1 };
      frames.push(f);
      if (e.frame.seq > 0) bySeq.set(e.frame.seq, f);
    }
    if (e.frame.line >= 0) f.line = e.frame.line;
    if (e.kind === "sent") f.start = e;
    else {
      if (!f.start && e.kind === "dropped") f.start = e;
      f.end = e;
      if (e.kind === "dropped") f.dropped = true;
    }
    if (!f.start) f.start = e;
    frameOf.set(e.n, f);
  }

  // --- page skeleton ---------------------------------------------------------------------
  const violations = data.violations.map((n) => entries[n - 1]);
  app.innerHTML = `
    <h1>${esc(data.scenario)} <span class="meta">seed ${data.seed}, ${esc(data.backend)} backend</span></h1>
    <div id="head">
      <p class="meta">${entries.length} events, ${frames.length} frames, ${data.lanes.length - 1} agents; simulated ${secs(entries.length ? entries[entries.length - 1].at : 0)}.
      Rows follow the order of events (time runs down; each row is one event, its time on the left).</p>
      <div id="violations-box"></div>
      <div id="chaos-box"></div>
    </div>
    <div id="controls">
      <span>frames:</span>
      ${FRAME_KINDS.map((k) => `<label><input type="checkbox" data-kind="${k}" checked><span class="swatch" style="background:${COLORS[k]}"></span>${k}</label>`).join("")}
      <span>lanes:</span>
      ${data.lanes.map((l, i) => `<label><input type="checkbox" data-lane="${i}" checked>${esc(l)}</label>`).join("")}
      <label><input type="checkbox" id="collapse-client">hide client events</label>
      <label><input type="checkbox" id="collapse-hub">hide timers and syncs</label>
      <label>from <input type="number" id="from" step="any" min="0" placeholder="s"></label>
      <label>to <input type="number" id="to" step="any" min="0" placeholder="s"></label>
      <label>zoom <input type="range" id="zoom" min="3" max="30" value="${state.rowH}"></label>
      <label><input type="search" id="search" placeholder="find (Enter: next)"></label>
      <span id="shown"></span>
    </div>
    <div id="main">
      <div id="scroller"><div id="lane-heads"></div><svg id="diagram" xmlns="http://www.w3.org/2000/svg"></svg></div>
      <div id="detail"><p>Click an arrow, a dot or a marker to see the event (and a frame's JSON).</p></div>
    </div>
    <div id="tooltip"></div>
    <div id="summary"></div>`;
  const scroller = document.getElementById("scroller");
  const svg = document.getElementById("diagram");
  const heads = document.getElementById("lane-heads");
  const detail = document.getElementById("detail");
  const tooltip = document.getElementById("tooltip");

  // --- layout ----------------------------------------------------------------------------
  let rows = []; // visible entries
  let rowOf = new Int32Array(entries.length + 2); // entry number -> row, or -1
  let nextRow = new Int32Array(entries.length + 2); // entry number -> first row at or after it
  let laneX = [];
  let width = 0, height = 0;

  function visible(e) {
    if (state.from !== null && e.at < state.from) return false;
    if (state.to !== null && e.at > state.to) return false;
    if (e.kind === "violation") return true;
    if (e.lane !== null && state.hiddenLanes.has(e.lane)) return false;
    if (e.frame) {
      if (state.hiddenKinds.has(e.frame.kind)) return false;
      if (state.hiddenLanes.has(e.agents[0] + 1) || state.hiddenLanes.has(0)) return false;
    }
    if (state.collapseClient && (e.kind === "client" || e.kind === "turn_start" || e.kind === "turn_end")) return false;
    if (state.collapseHub && (e.kind === "timer" || e.kind === "store")) return false;
    return true;
  }

  function layout() {
    rows = entries.filter(visible);
    rowOf.fill(-1);
    rows.forEach((e, i) => { rowOf[e.n] = i; });
    let next = rows.length;
    for (let n = entries.length + 1; n >= 1; n--) {
      if (n <= entries.length && rowOf[n] >= 0) next = rowOf[n];
      nextRow[n] = next;
    }
    const lanes = data.lanes.length;
    const avail = Math.max(scroller.clientWidth - TIME_W - SCRIPT_W - 40, lanes * 150);
    const laneW = Math.max(150, Math.floor(avail / lanes));
    laneX = data.lanes.map((_, i) => TIME_W + SCRIPT_W + laneW / 2 + i * laneW);
    width = TIME_W + SCRIPT_W + lanes * laneW + 240;
    height = HEAD + rows.length * state.rowH + 20;
  }

  const y = (row) => HEAD + row * state.rowH + state.rowH / 2;
  const rowY = (n) => (rowOf[n] >= 0 ? y(rowOf[n]) : null);

  // --- the drawing that changes with the filter ------------------------------------------
  let staticSvg = "";
  let arrowCount = 0;
  // Each arrow's class and SVG, and the arrows crossing each BUCKET_PX band of the drawing.
  let arrows = [];
  let buckets = new Map();
  const BUCKET_PX = 400;
  // `#all` in the address draws every row and arrow at once (for printing and for tests).
  const ALL = location.hash === "#all";
  function drawStatic() {
    const out = [];
    out.push(`<defs>${FRAME_KINDS.map((k) => `<marker id="ah-${k}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" fill="${COLORS[k]}"/></marker>`).join("")}</defs>`);
    out.push(`<g id="rows-bg"></g>`);
    data.lanes.forEach((name, i) => {
      if (state.hiddenLanes.has(i)) return;
      out.push(`<line class="lane-line${i === 0 ? " hub" : ""}" x1="${laneX[i]}" y1="0" x2="${laneX[i]}" y2="${height}"/>`);
    });
    // Fault periods and model turns.
    for (const b of data.bands) {
      if (state.hiddenLanes.has(b.lane)) continue;
      const first = nextRow[b.from];
      const last = b.to === null ? rows.length - 1 : nextRow[b.to] - (rowOf[b.to] >= 0 ? 0 : 1);
      if (first >= rows.length || last < first) continue;
      const top = y(first) - state.rowH / 2, bottom = y(last) + state.rowH / 2;
      const x = laneX[b.lane];
      if (b.kind === "turn") {
        out.push(`<rect class="band turn" data-band="turn" x="${x + 3}" y="${top}" width="6" height="${bottom - top}"><title>${esc(b.label)}</title></rect>`);
      } else {
        out.push(`<rect class="band ${b.kind}" data-band="${b.kind}" x="${x - 60}" y="${top}" width="120" height="${bottom - top}"><title>${esc(b.label)}</title></rect>`);
        out.push(`<text class="band-label" x="${x - 58}" y="${top + 10}">${esc(b.label)}</text>`);
      }
    }
    // Frames: laid out here, drawn by drawRows for the rows in view (all of them with #all).
    arrows = [];
    buckets = new Map();
    for (const f of frames) {
      const sy = rowY(f.start.n);
      if (sy === null) continue;
      const agentX = laneX[f.agent + 1];
      const from = f.up ? agentX : laneX[0];
      const to = f.up ? laneX[0] : agentX;
      const color = COLORS[f.kind] || "#444";
      let ey = f.end && f.end !== f.start ? rowY(f.end.n) : null;
      let x2 = to, cls = "arrow", extra = "";
      if (f.dropped) {
        cls += " dropped";
        if (ey === null) ey = sy;
        x2 = from + (to - from) * 0.6;
        extra = `<path class="drop-x" d="M${x2 - 5},${ey - 5}L${x2 + 5},${ey + 5}M${x2 - 5},${ey + 5}L${x2 + 5},${ey - 5}"/>`;
      } else if (ey === null) {
        ey = sy + Math.min(state.rowH, 12);
        x2 = from + (to - from) * 0.5;
        cls += " open";
      }
      const head = f.dropped ? "" : ` marker-end="url(#ah-${f.kind})"`;
      const n = f.start.n;
      const idx = arrows.length;
      arrows.push({ n, cls, body: `<line class="vis" x1="${from}" y1="${sy}" x2="${x2}" y2="${ey}" stroke="${color}"${head}/><line class="hit" x1="${from}" y1="${sy}" x2="${x2}" y2="${ey}"/>${extra}` });
      const top = Math.floor(Math.min(sy, ey) / BUCKET_PX), bottom = Math.floor(Math.max(sy, ey) / BUCKET_PX);
      for (let b = top; b <= bottom; b++) {
        let list = buckets.get(b);
        if (!list) buckets.set(b, (list = []));
        list.push(idx);
      }
    }
    arrowCount = arrows.length;
    out.push(`<g id="arrows"></g>`);
    // Violations.
    for (const v of violations) {
      const vy = rowY(v.n);
      if (vy === null) continue;
      const x = laneX[v.lane === null ? 0 : v.lane];
      out.push(`<line class="violation-rule" x1="${TIME_W}" y1="${vy}" x2="${width}" y2="${vy}"/>`);
      out.push(`<path class="violation-marker" data-n="${v.n}" d="M${x},${vy - 8}L${x + 8},${vy}L${x},${vy + 8}L${x - 8},${vy}z"><title>${esc(v.what)}</title></path>`);
    }
    out.push(`<g id="rows-fg"></g>`);
    staticSvg = out.join("");
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    svg.innerHTML = staticSvg;
    heads.style.width = width + "px";
    heads.innerHTML = data.lanes.map((l, i) => (state.hiddenLanes.has(i) ? "" : `<div style="left:${laneX[i]}px">${esc(l)}</div>`)).join("") +
      `<div style="left:${TIME_W + SCRIPT_W / 2}px">steps, faults, checks</div>`;
    document.getElementById("shown").textContent = `${rows.length} of ${entries.length} events, ${arrowCount} arrows`;
    drawRows();
  }

  // --- the rows in view ------------------------------------------------------------------
  let refs = new Set();
  let matches = new Set();
  let selectedArrow = null;
  function drawRows() {
    const bg = document.getElementById("rows-bg");
    const fg = document.getElementById("rows-fg");
    if (!bg || !fg) return;
    const top = ALL ? 0 : scroller.scrollTop - 200;
    const bottom = ALL ? height : scroller.scrollTop + scroller.clientHeight + 200;
    const first = Math.max(0, Math.floor((top - HEAD) / state.rowH));
    const last = Math.min(rows.length - 1, Math.ceil((bottom - HEAD) / state.rowH));
    const drawn = new Set();
    const lines = [];
    for (let b = Math.floor(Math.max(0, top) / BUCKET_PX); b <= Math.floor(bottom / BUCKET_PX); b++) {
      for (const idx of buckets.get(b) || []) {
        if (drawn.has(idx)) continue;
        drawn.add(idx);
        const a = arrows[idx];
        lines.push(`<g class="${a.cls}${a.n === selectedArrow ? " selected" : ""}" data-n="${a.n}">${a.body}</g>`);
      }
    }
    document.getElementById("arrows").innerHTML = lines.join("");
    const back = [], front = [];
    const labels = state.rowH >= 9;
    let lastTime = first > 0 ? rows[first - 1].at : -1;
    for (let r = first; r <= last; r++) {
      const e = rows[r];
      const ry = y(r);
      const hl = e.n === state.selected ? "row-hl" : refs.has(e.n) ? "row-ref" : matches.has(e.n) ? "row-match" : null;
      if (hl) back.push(`<rect class="${hl}" x="0" y="${ry - state.rowH / 2}" width="${width}" height="${state.rowH}"/>`);
      if (!labels) continue;
      if (e.at !== lastTime) front.push(`<text class="tlbl" x="4" y="${ry + 4}">${secs(e.at)}</text>`);
      lastTime = e.at;
      const short = e.what.length > 70 ? e.what.slice(0, 69) + "…" : e.what;
      if (e.lane === null || e.kind === "step" || e.kind === "step_end" || e.kind === "fault" || e.kind === "violation") {
        const cls = e.kind === "violation" ? "violation" : e.kind === "fault" ? "fault" : e.kind === "step" ? "step" : "";
        front.push(`<text class="lbl ${cls}" data-n="${e.n}" x="${TIME_W}" y="${ry + 4}">#${e.n} ${esc(short.length > 40 ? short.slice(0, 39) + "…" : short)}</text>`);
        if (e.lane === null || e.kind !== "fault") continue;
      }
      const x = laneX[e.lane];
      if (e.frame) {
        const f = frameOf.get(e.n);
        if (f && f.start === e) {
          const dir = (f.up ? laneX[0] : laneX[f.agent + 1]) > x ? 1 : -1;
          const tx = dir > 0 ? x + 6 : x - 6;
          front.push(`<text class="lbl" x="${tx}" y="${ry - 2}" text-anchor="${dir > 0 ? "start" : "end"}">${esc(e.what.replace(/^sent /, "").slice(0, 48))}</text>`);
        }
        continue;
      }
      front.push(`<circle class="dot ${e.kind}" data-n="${e.n}" cx="${x}" cy="${ry}" r="3.5"/>`);
      front.push(`<text class="lbl" x="${x + 12}" y="${ry + 4}">${esc(short.slice(0, 56))}</text>`);
    }
    bg.innerHTML = back.join("");
    fg.innerHTML = front.join("");
  }

  // --- details ---------------------------------------------------------------------------
  function describe(e) {
    let html = `<p class="mono">#${e.n} at ${secs(e.at)}<br><b>${esc(e.who)}</b></p><p class="what">${esc(e.what)}</p>`;
    const f = frameOf.get(e.n);
    if (f) {
      const ends = [f.start, f.end].filter((x, i, a) => x && a.indexOf(x) === i);
      html += `<p>frame ${f.seq || "(unnumbered)"}: ${ends.map((x) => `<a data-jump="${x.n}">#${x.n} ${esc(x.kind)} at ${secs(x.at)}</a>`).join(", ")}${f.dropped ? " — <b>dropped</b>" : ""}</p>`;
      let json = frameJson(f.line);
      try { json = JSON.stringify(JSON.parse(json), null, 2); } catch (_) { json = json.replace(/\\u003c/g, "<"); /* cut: shown as is */ }
      html += `<pre>${esc(json)}</pre>`;
    }
    if (e.refs && e.refs.length) {
      html += `<p class="refs">concerns: ${e.refs.map((n) => `<a data-jump="${n}">#${n}</a> ${esc(entries[n - 1].who)}: ${esc(entries[n - 1].what)}`).join("<br>")}</p>`;
    }
    if (e.channels.length) html += `<p>channels: ${e.channels.map(esc).join(", ")}</p>`;
    return html;
  }

  function select(n, scroll) {
    state.selected = n;
    const e = entries[n - 1];
    refs = new Set(e.refs || []);
    detail.innerHTML = describe(e);
    const f = frameOf.get(n);
    selectedArrow = f ? f.start.n : null;
    if (scroll) {
      if (rowOf[n] < 0) {
        // Make it visible: drop the filters that hide it.
        state.from = state.to = null;
        state.hiddenKinds.clear();
        state.hiddenLanes.clear();
        state.collapseClient = state.collapseHub = false;
        syncControls();
        layout();
        drawStatic();
      }
      scroller.scrollTop = Math.max(0, y(rowOf[n]) - scroller.clientHeight / 3);
    }
    drawRows();
  }

  function numberAt(target) {
    const el = target.closest("[data-n]");
    return el ? Number(el.getAttribute("data-n")) : null;
  }

  svg.addEventListener("click", (ev) => {
    const n = numberAt(ev.target);
    if (n) select(n, false);
  });
  svg.addEventListener("mousemove", (ev) => {
    const n = numberAt(ev.target);
    if (!n) { tooltip.style.display = "none"; return; }
    const e = entries[n - 1];
    const f = frameOf.get(n);
    const end = f && f.end && f.end !== f.start ? ` → #${f.end.n} ${f.end.kind} at ${secs(f.end.at)}` : "";
    tooltip.textContent = `#${e.n} ${secs(e.at)} ${e.who}: ${e.what}${end}`;
    tooltip.style.display = "block";
    tooltip.style.left = ev.clientX + 14 + "px";
    tooltip.style.top = ev.clientY + 10 + "px";
  });
  svg.addEventListener("mouseleave", () => { tooltip.style.display = "none"; });
  document.addEventListener("click", (ev) => {
    const a = ev.target.closest("[data-jump]");
    if (a) { ev.preventDefault(); select(Number(a.getAttribute("data-jump")), true); }
  });
  let pending = false;
  scroller.addEventListener("scroll", () => {
    heads.style.transform = "";
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; drawRows(); });
  });

  // --- controls --------------------------------------------------------------------------
  function syncControls() {
    document.querySelectorAll("[data-kind]").forEach((c) => { c.checked = !state.hiddenKinds.has(c.getAttribute("data-kind")); });
    document.querySelectorAll("[data-lane]").forEach((c) => { c.checked = !state.hiddenLanes.has(Number(c.getAttribute("data-lane"))); });
    document.getElementById("collapse-client").checked = state.collapseClient;
    document.getElementById("collapse-hub").checked = state.collapseHub;
    document.getElementById("from").value = state.from === null ? "" : state.from / 1e6;
    document.getElementById("to").value = state.to === null ? "" : state.to / 1e6;
  }
  function redraw() { layout(); drawStatic(); }
  document.getElementById("controls").addEventListener("change", (ev) => {
    const t = ev.target;
    if (t.hasAttribute("data-kind")) {
      const k = t.getAttribute("data-kind");
      if (t.checked) state.hiddenKinds.delete(k); else state.hiddenKinds.add(k);
    } else if (t.hasAttribute("data-lane")) {
      const l = Number(t.getAttribute("data-lane"));
      if (t.checked) state.hiddenLanes.delete(l); else state.hiddenLanes.add(l);
    } else if (t.id === "collapse-client") state.collapseClient = t.checked;
    else if (t.id === "collapse-hub") state.collapseHub = t.checked;
    else if (t.id === "from") state.from = t.value === "" ? null : Math.round(Number(t.value) * 1e6);
    else if (t.id === "to") state.to = t.value === "" ? null : Math.round(Number(t.value) * 1e6);
    else return;
    redraw();
  });
  document.getElementById("zoom").addEventListener("input", (ev) => {
    const anchor = rows[Math.floor((scroller.scrollTop - HEAD) / state.rowH)] || null;
    state.rowH = Number(ev.target.value);
    redraw();
    if (anchor && rowOf[anchor.n] >= 0) scroller.scrollTop = y(rowOf[anchor.n]) - state.rowH / 2;
  });
  let cursor = 0;
  document.getElementById("search").addEventListener("keydown", (ev) => {
    if (ev.key !== "Enter") return;
    const q = ev.target.value.toLowerCase();
    matches = new Set(q ? rows.filter((e) => (e.who + " " + e.what).toLowerCase().includes(q)).map((e) => e.n) : []);
    const list = [...matches];
    if (!list.length) { drawRows(); return; }
    cursor = cursor % list.length;
    select(list[cursor], true);
    cursor++;
  });

  // --- head and summary ------------------------------------------------------------------
  const vbox = document.getElementById("violations-box");
  const finals = data.final_violations || [];
  if (violations.length || finals.length) {
    vbox.innerHTML = `<b class="bad">${violations.length + finals.length} violation(s)</b><ol id="violations-list">` +
      violations.map((v) => `<li><a data-jump="${v.n}">#${v.n} at ${secs(v.at)}</a>: ${esc(v.what.replace(/^VIOLATION /, ""))}</li>`).join("") +
      finals.map(([k, m]) => `<li>at the end: ${esc(k)}: ${esc(m)}</li>`).join("") + "</ol>";
  } else {
    vbox.innerHTML = `<span class="ok">No violation.</span>`;
  }
  const cbox = document.getElementById("chaos-box");
  cbox.innerHTML = data.chaos.length
    ? `chaos schedule drawn by the seed: <span id="chaos-list">${data.chaos.map((n) => `<a data-jump="${n}">${secs(entries[n - 1].at)} ${esc(entries[n - 1].what.replace(/^chaos fault: /, ""))}</a>`).join("; ")}</span>`
    : "chaos schedule drawn by the seed: none";

  const summary = document.getElementById("summary");
  const broken = new Map();
  for (const v of violations) {
    const kind = v.what.replace(/^VIOLATION /, "").split(":")[0];
    const inv = kind.split("/")[0];
    if (!broken.has(inv)) broken.set(inv, new Set());
    broken.get(inv).add(kind);
  }
  for (const [kind] of finals) {
    const inv = kind.split("/")[0];
    if (!broken.has(inv)) broken.set(inv, new Set());
    broken.get(inv).add(kind);
  }
  let html = "<h2>Invariants</h2>";
  if (data.invariants.length) {
    html += `<table class="wal"><thead><tr><th>invariant</th><th>result</th></tr></thead><tbody>` +
      data.invariants.map((i) => `<tr><td>${esc(i)}</td><td>${broken.has(i) ? `<span class="bad">${[...broken.get(i)].map(esc).join(", ")}</span>` : `<span class="ok">ok</span>`}</td></tr>`).join("") +
      "</tbody></table>";
  } else {
    html += "<p style=\"margin:0 16px\">None checked (in process).</p>";
  }
  html += "<h2>Channels at the end</h2>";
  for (const c of data.channels) {
    html += `<h2 class="mono" style="font-size:13px">${esc(c.label)}: ${esc(c.adapter)}, ${esc(c.state)}${c.close_reason ? ` (${esc(c.close_reason)})` : ""}, ${c.rows.length} WAL entries</h2>`;
    html += `<table class="wal"><thead><tr><th>#</th><th>sender</th><th>event type</th><th>audience</th><th>data</th></tr></thead><tbody>` +
      c.rows.map((r) => `<tr><td>${esc(r[0])}</td><td>${esc(r[1])}</td><td>${esc(r[2])}</td><td>${esc(r[3])}</td><td class="data mono">${esc(r[4])}</td></tr>`).join("") +
      "</tbody></table>";
  }
  summary.innerHTML = html;

  redraw();
  if (violations.length) select(violations[0].n, true);
  // For tests and measurements: the arrows laid out (all drawn with #all, those in view
  // otherwise), and when drawing ended (ms since the page began to load).
  document.body.setAttribute("data-arrows", String(arrowCount));
  document.body.setAttribute("data-arrows-drawn", String(svg.querySelectorAll("g.arrow").length));
  document.body.setAttribute("data-drawn-ms", String(Math.round(performance.now())));
})();
