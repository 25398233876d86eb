// The dtask dashboard: one page per path, each polling a small JSON
// endpoint of the scheduler. No framework, no CDN: it works offline.
"use strict";

const PHASES = ["waiting", "processing", "memory", "erred", "cancelled", "lost", "released"];
const STREAM_SECONDS = 30;
const app = document.getElementById("app");

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
function num(n) { return Number(n ?? 0).toLocaleString("en-US"); }
function bytes(n) {
  n = Number(n || 0);
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}
function when(ms) { return ms ? new Date(ms).toISOString().replace("T", " ").replace("Z", " UTC") : "—"; }
function taskLink(key) { return `<a href="/task/${encodeURIComponent(key)}">${esc(key)}</a>`; }
function colour(name) {
  let h = 0;
  for (const c of String(name)) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return `hsl(${h % 360}, 55%, 52%)`;
}
async function getJson(url) {
  const r = await fetch(url, { credentials: "same-origin", cache: "no-store" });
  if (r.status === 401) { location.reload(); throw new Error("logged out"); }
  if (!r.ok) throw new Error(`${url}: ${r.status} ${await r.text()}`);
  return r.json();
}
function stamp() { document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString(); }
function every(ms, f) {
  let stopped = false;
  const run = async () => {
    try { await f(); stamp(); } catch (e) { document.getElementById("updated").textContent = String(e.message || e); }
    if (!stopped) setTimeout(run, ms);
  };
  run();
  return () => { stopped = true; };
}

// ---- status ----
function statusPage() {
  app.innerHTML = `
    <section class="totals" id="totals"></section>
    <h2>Task stream <span class="muted">(last ${STREAM_SECONDS} s; one row per worker slot)</span></h2>
    <canvas id="stream" height="80"></canvas>
    <h2>Progress per function</h2>
    <div class="legend">${PHASES.map(p => `<span class="${p}"></span>${p}`).join("")}</div>
    <table id="functions"><thead><tr><th>function</th><th></th>${PHASES.map(p => `<th class="n">${p}</th>`).join("")}<th class="n">finished</th><th class="n">failed</th><th class="n">compute s</th></tr></thead><tbody></tbody></table>
    <h2>Workers</h2>
    <table id="workers"><thead><tr><th>name</th><th>address</th><th class="n">slots</th><th class="n">running</th><th class="n">processing</th><th class="n">results</th><th class="n">bytes held</th><th class="n">spilled</th><th class="n">memory</th><th class="n">last heartbeat</th><th class="n">restarts</th></tr></thead><tbody></tbody></table>`;
  let after = 0;
  let spans = [];
  let last = null;
  let rate = 0;
  every(1000, async () => {
    const s = await getJson(`/json/status.json?after=${after}`);
    if (s.spans.length) after = s.spans[s.spans.length - 1].id + 1;
    spans = spans.concat(s.spans).filter(x => x.ended_ms >= s.now_ms - STREAM_SECONDS * 1000).slice(-20000);
    const done = s.totals.finished + s.totals.failed;
    if (last) rate = Math.max(0, (done - last.done) / Math.max(0.001, (s.now_ms - last.at) / 1000));
    last = { done, at: s.now_ms };
    renderTotals(s, rate);
    renderFunctions(s.functions);
    renderWorkers(s.workers);
    renderStream(spans, s.workers, s.now_ms);
  });
}

function renderTotals(s, rate) {
  const t = s.totals.tasks;
  const cells = [
    ["workers", s.workers.length, "count-workers"],
    ["slots", s.workers.reduce((a, w) => a + w.nthreads, 0), "count-slots"],
    ["clients", s.clients, "count-clients"],
    ...PHASES.map(p => [p, t[p], `count-${p}`]),
    ["finished in all", s.totals.finished, "finished-total"],
    ["failed in all", s.totals.failed, "failed-total"],
    ["forgotten", s.totals.forgotten, "forgotten-total"],
    ["tasks/s", Math.round(rate), "rate"],
  ];
  document.getElementById("totals").innerHTML = cells.map(([n, v, id]) => `<div>${esc(n)}<b id="${id}">${num(v)}</b></div>`).join("");
}

function renderFunctions(functions) {
  document.querySelector("#functions tbody").innerHTML = functions.map(([name, f]) => {
    const total = PHASES.reduce((a, p) => a + f.tasks[p], 0) || 1;
    const bar = PHASES.map(p => `<span class="${p}" style="width:${100 * f.tasks[p] / total}%"></span>`).join("");
    return `<tr><td><span class="legend"><span style="background:${colour(name)};margin-left:0"></span></span>${esc(name)}</td><td><div class="bar">${bar}</div></td>${PHASES.map(p => `<td class="n">${num(f.tasks[p])}</td>`).join("")}<td class="n">${num(f.finished)}</td><td class="n">${num(f.failed)}</td><td class="n">${f.compute_seconds.toFixed(2)}</td></tr>`;
  }).join("") || `<tr><td colspan="12" class="muted">no tasks yet</td></tr>`;
}

function renderWorkers(workers) {
  document.querySelector("#workers tbody").innerHTML = workers.map(w => `<tr><td>${esc(w.name)}</td><td>${esc(w.address)}</td><td class="n">${w.nthreads}</td><td class="n">${num(w.executing)}</td><td class="n">${num(w.processing)}</td><td class="n">${num(w.holding)}</td><td class="n">${bytes(w.nbytes)}</td><td class="n">${bytes(w.spilled_bytes)}</td><td class="n">${w.rss_bytes ? bytes(w.rss_bytes) : "—"}</td><td class="n">${(w.heartbeat_age_ms / 1000).toFixed(1)} s ago</td><td class="n">${w.restarts}</td></tr>`).join("")
    || `<tr><td colspan="11" class="muted">no workers connected</td></tr>`;
}

// Packs each worker's runs into as many rows as it has slots: a run goes
// in the first row free when it began.
function renderStream(spans, workers, now) {
  const canvas = document.getElementById("stream");
  const rows = [];
  const byWorker = new Map();
  for (const w of workers) {
    const first = rows.length;
    for (let i = 0; i < w.nthreads; i++) rows.push({ label: `${w.name} #${i + 1}`, end: 0 });
    byWorker.set(w.id, { first, n: w.nthreads });
  }
  const rowH = 14, labelW = 170;
  const width = canvas.clientWidth || 800;
  canvas.width = width;
  canvas.height = Math.max(1, rows.length) * rowH + 16;
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  g.font = "11px system-ui, sans-serif";
  g.fillStyle = "#6b7480";
  rows.forEach((r, i) => g.fillText(r.label, 4, i * rowH + 11, labelW - 8));
  const t0 = now - STREAM_SECONDS * 1000;
  const x = ms => labelW + (width - labelW - 4) * (ms - t0) / (STREAM_SECONDS * 1000);
  for (const s of spans) {
    const w = byWorker.get(s.worker);
    if (!w) continue;
    let row = w.first;
    for (let i = w.first; i < w.first + w.n; i++) {
      if (rows[i].end <= s.began_ms) { row = i; break; }
      if (rows[i].end < rows[row].end) row = i;
    }
    rows[row].end = s.ended_ms;
    const a = x(Math.max(s.began_ms, t0)), b = Math.max(a + 1, x(s.ended_ms));
    g.fillStyle = s.failed ? "#d63c3c" : colour(s.function);
    g.fillRect(a, row * rowH + 2, b - a, rowH - 4);
    if (s.failed) { g.strokeStyle = "#000"; g.strokeRect(a, row * rowH + 2, b - a, rowH - 4); }
  }
  g.fillStyle = "#6b7480";
  g.fillText(`-${STREAM_SECONDS} s`, labelW, canvas.height - 3);
  g.fillText("now", width - 28, canvas.height - 3);
}

// ---- one task ----
function taskPage(key) {
  every(2000, async () => {
    let t;
    try {
      t = await getJson(`/json/task.json?key=${encodeURIComponent(key)}`);
    } catch (e) {
      app.innerHTML = `<h1>${esc(key)}</h1><p class="muted">${esc(e.message)}</p>`;
      return;
    }
    const tm = t.timings;
    const duration = tm.started_ms && tm.finished_ms ? ((tm.finished_ms - tm.started_ms) / 1000).toFixed(3) + " s" : "—";
    const list = (keys, total) => keys.length ? keys.map(taskLink).join("<br>") + (total > keys.length ? `<br><span class="muted">and ${num(total - keys.length)} more</span>` : "") : "—";
    let html = `<h1 id="task-key">${esc(t.key)}</h1><dl>
      <dt>state</dt><dd id="task-state"><span class="${t.phase === "erred" ? "err" : ""}">${esc(t.phase)}</span></dd>
      <dt>function</dt><dd id="task-function">${esc(t.function)}</dd>
      <dt>module</dt><dd>${esc(t.module)}</dd>
      <dt>worker</dt><dd>${esc(tm.worker ?? "—")}</dd>
      <dt>submitted</dt><dd>${when(tm.submitted_ms)}</dd>
      <dt>started</dt><dd>${when(tm.started_ms)}</dd>
      <dt>finished</dt><dd>${when(tm.finished_ms)}</dd>
      <dt>duration</dt><dd>${duration}</dd>
      <dt>retries</dt><dd>${tm.retries}</dd>
      <dt>result</dt><dd>${t.nbytes == null ? "—" : bytes(t.nbytes)}</dd>
      <dt>held by</dt><dd>${esc(t.holders.join(", ") || "—")}</dd>
      <dt>inputs</dt><dd>${list(t.inputs, t.inputs_total)}</dd>
      <dt>dependents</dt><dd>${list(t.dependents, t.dependents_total)}</dd></dl>`;
    if (t.error) {
      const e = t.error;
      html += `<h2 class="err">Error (${esc(e.kind)})</h2><pre id="task-error">${esc(e.message)}</pre>`;
      if (e.origin && e.origin !== t.key) html += `<p>first raised by ${taskLink(e.origin)}</p>`;
      if (e.stderr) html += `<h2>Guest stderr</h2><pre id="task-stderr">${esc(e.stderr)}</pre>`;
      if (e.backtrace) html += `<h2>Wasm backtrace</h2><pre>${esc(e.backtrace)}</pre>`;
    }
    app.innerHTML = html;
  });
}

// ---- recent failures ----
function errorsPage() {
  every(2000, async () => {
    const errors = await getJson("/json/errors.json");
    app.innerHTML = `<h1>Recent failures</h1><table id="errors"><thead><tr><th>when</th><th>task</th><th>function</th><th>kind</th><th>message</th></tr></thead><tbody>${errors.map(e => `<tr><td>${when(e.at_ms)}</td><td>${taskLink(e.key)}</td><td>${esc(e.function)}</td><td>${esc(e.kind)}</td><td>${esc(e.message)}</td></tr>`).join("") || `<tr><td colspan="5" class="muted">no failures</td></tr>`}</tbody></table>`;
  });
}

// ---- primitives and actors ----
function primitivesPage() {
  every(2000, async () => {
    const p = await getJson("/json/primitives.json");
    const table = (title, total, heads, rows) => `<h2>${title} <span class="muted">(${num(total)}${rows.length < total ? `, ${rows.length} shown` : ""})</span></h2>` +
      (rows.length ? `<table><thead><tr>${heads.map(h => `<th>${h}</th>`).join("")}</tr></thead><tbody>${rows.map(r => `<tr>${r.map(c => `<td>${c}</td>`).join("")}</tr>`).join("")}</tbody></table>` : `<p class="muted">none</p>`);
    app.innerHTML = `<h1>Primitives and actors</h1>` +
      table("Queues", p.totals[0], ["name", "items", "getters waiting"], p.queues.map(([n, len, g]) => [esc(n), num(len), num(g)])) +
      table("Variables", p.totals[1], ["name", "set", "waiters"], p.variables.map(([n, set, w]) => [esc(n), set ? "yes" : "no", num(w)])) +
      table("Locks", p.totals[2], ["name", "holders", "waiters"], p.locks.map(([n, h, w]) => [esc(n), esc(h.join(", ") || "—"), num(w)])) +
      table("Semaphores", p.totals[3], ["name", "leases", "holders", "waiters"], p.semaphores.map(([n, max, h, w]) => [esc(n), num(max), esc(h.join(", ") || "—"), num(w)])) +
      table("Events", p.totals[4], ["name", "set", "waiters"], p.events.map(([n, set, w]) => [esc(n), set ? "yes" : "no", num(w)])) +
      table("Topics", p.totals[5], ["name", "subscribers"], p.topics.map(([n, s]) => [esc(n), num(s)])) +
      table("Actors", p.totals[6], ["key", "resource", "worker", "state"], p.actors.map(a => [esc(a.key), esc(a.resource), esc(a.address), esc(a.state)]));
  });
}

const path = location.pathname;
if (path.startsWith("/task/")) taskPage(decodeURIComponent(path.slice("/task/".length)));
else if (path === "/errors") errorsPage();
else if (path === "/primitives") primitivesPage();
else statusPage();
