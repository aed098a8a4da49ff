// weir's page for the technician: machines, alerts, gateway health,
// pipeline, dead letters. Live through Server-Sent Events (/api/v1/events);
// everything it shows comes from /api/v1 (docs/api.md).
"use strict";

window.__weirErrors = [];
function reportError(msg) {
  window.__weirErrors.push(String(msg));
  const e = document.getElementById("errors");
  e.textContent = "Page error: " + msg;
  e.classList.remove("hidden");
}
window.addEventListener("error", (ev) => reportError(ev.message || ev));
window.addEventListener("unhandledrejection", (ev) => reportError(ev.reason && ev.reason.message || ev.reason));

const $ = (id) => document.getElementById(id);
const state = { sensors: [], alerts: [], overview: null, view: "machines", sensor: null, version: -1 };

// The token (to acknowledge alerts) comes in the URL weir prints
// (#token=…) or is typed in; it stays in this tab only.
(function takeToken() {
  const m = location.hash.match(/token=([0-9A-Za-z_\-]+)/);
  if (m) {
    sessionStorage.setItem("weir-token", m[1]);
    history.replaceState(null, "", location.pathname + "#/");
  }
})();
const token = () => sessionStorage.getItem("weir-token");

function esc(s) {
  return String(s == null ? "" : s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
function fmt(v) {
  if (v == null || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
  return v.toFixed(a >= 100 ? 1 : a >= 10 ? 2 : 3);
}
function time(ms) {
  if (ms == null) return "–";
  const d = new Date(ms);
  return d.toISOString().replace("T", " ").slice(0, 19);
}
function lag(ms) {
  if (ms == null) return "no data";
  return ms < 0 ? "event time " + ago(-ms) + " ahead" : ago(ms) + " behind";
}
function ago(ms) {
  if (ms == null) return "–";
  const s = Math.round(ms / 1000);
  if (s < 120) return s + " s";
  if (s < 7200) return Math.round(s / 60) + " min";
  return Math.round(s / 3600) + " h";
}
function bytes(n) {
  if (n == null) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}

async function api(path, opts) {
  const headers = {};
  if (token()) headers["Authorization"] = "Bearer " + token();
  const r = await fetch("/api/v1/" + path, Object.assign({ headers }, opts || {}));
  if (!r.ok && r.status !== 404) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

// A line chart on a canvas: `pts` are {t, min, max, last, alarm}; a band
// from min to max, the last value as a line, alarms as red dots.
function drawChart(canvas, pts, opts) {
  const o = Object.assign({ axes: false, color: "#2563eb" }, opts);
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 300, h = canvas.clientHeight || 40;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  const g = canvas.getContext("2d");
  g.scale(dpr, dpr);
  g.clearRect(0, 0, w, h);
  const good = pts.filter((p) => p.last != null);
  if (good.length === 0) {
    g.fillStyle = "#9aa6b2";
    g.font = "12px system-ui";
    g.fillText("no data yet", 4, h / 2 + 4);
    canvas.dataset.drawn = "0";
    return;
  }
  const padL = o.axes ? 52 : 2, padR = 4, padT = 6, padB = o.axes ? 20 : 4;
  let lo = Infinity, hi = -Infinity;
  for (const p of good) {
    lo = Math.min(lo, p.min != null ? p.min : p.last, p.last);
    hi = Math.max(hi, p.max != null ? p.max : p.last, p.last);
  }
  if (hi === lo) { hi += 1; lo -= 1; }
  const t0 = good[0].t, t1 = good[good.length - 1].t === t0 ? t0 + 60000 : good[good.length - 1].t;
  const x = (t) => padL + (w - padL - padR) * (t - t0) / (t1 - t0);
  const y = (v) => padT + (h - padT - padB) * (1 - (v - lo) / (hi - lo));
  if (o.axes) {
    g.strokeStyle = "#e3e8ee";
    g.fillStyle = "#6b7785";
    g.font = "11px system-ui";
    for (let i = 0; i <= 4; i++) {
      const v = lo + (hi - lo) * i / 4, yy = y(v);
      g.beginPath(); g.moveTo(padL, yy); g.lineTo(w - padR, yy); g.stroke();
      g.fillText(fmt(v), 2, yy + 4);
    }
    g.fillText(time(t0).slice(11, 16), padL, h - 4);
    g.fillText(time(t1).slice(11, 16), w - padR - 32, h - 4);
  }
  // band
  g.fillStyle = "rgba(37,99,235,0.12)";
  g.beginPath();
  good.forEach((p, i) => { const xx = x(p.t), yy = y(p.max != null ? p.max : p.last); i ? g.lineTo(xx, yy) : g.moveTo(xx, yy); });
  for (let i = good.length - 1; i >= 0; i--) { const p = good[i]; g.lineTo(x(p.t), y(p.min != null ? p.min : p.last)); }
  g.closePath(); g.fill();
  // line
  g.strokeStyle = o.color; g.lineWidth = 1.6;
  g.beginPath();
  good.forEach((p, i) => { const xx = x(p.t), yy = y(p.last); i ? g.lineTo(xx, yy) : g.moveTo(xx, yy); });
  g.stroke();
  // alarms
  g.fillStyle = "#d64545";
  for (const p of good) if (p.alarm) { g.beginPath(); g.arc(x(p.t), y(p.last), o.axes ? 4.5 : 3, 0, 7); g.fill(); }
  canvas.dataset.drawn = String(good.length);
}

function renderSummary() {
  const ov = state.overview;
  if (!ov) return;
  const c = ov.counts;
  const open = state.alerts.filter((a) => !a.acked).length;
  const lag = ov.sources.map((s) => s.lag_ms).filter((v) => v != null);
  $("summary").innerHTML = [
    ["Machines", state.sensors.length],
    ["Open alerts", open],
    ["Readings", c.readings.toLocaleString()],
    ["Windows", c.windows.toLocaleString()],
    ["Watermark lag", lag.length ? ago(Math.max(0, ...lag)) : "–"],
    ["Dead letters", c.dead_letters],
  ].map(([k, v]) => `<div class="stat"><b>${esc(v)}</b><span>${esc(k)}</span></div>`).join("");
}

function renderMachines() {
  const root = $("machines");
  if (state.sensors.length === 0) return;
  root.innerHTML = state.sensors.map((s) => {
    const alarm = s.alarm || s.open_alerts > 0;
    const ops = s.operators.map((o, i) => `
      <div class="op"><span class="name">${esc(o.operator)} · ${esc(o.primary || o.field)}</span>
      <span class="val">${fmt(o.values[o.primary])}</span>
      <canvas class="spark" data-key="${esc(s.key)}" data-i="${i}"></canvas></div>`).join("");
    return `<div class="card machine${alarm ? " alarm" : ""}" data-key="${esc(s.key)}">
      <h3><span>${esc(s.key)}</span><span class="state${alarm ? " alarm" : ""}">${alarm ? (s.open_alerts ? s.open_alerts + " alert" + (s.open_alerts > 1 ? "s" : "") : "alarm") : "normal"}</span></h3>${ops}</div>`;
  }).join("");
  root.querySelectorAll("canvas.spark").forEach((cv) => {
    const s = state.sensors.find((x) => x.key === cv.dataset.key);
    const o = s.operators[+cv.dataset.i];
    drawChart(cv, o.spark.map(([t, v, a]) => ({ t, last: v, alarm: a })), {});
  });
  root.querySelectorAll(".card.machine").forEach((c) => c.addEventListener("click", () => { location.hash = "#/sensor/" + encodeURIComponent(c.dataset.key); }));
}

function alertRows(list) {
  if (list.length === 0) return `<p class="muted">No alerts.</p>`;
  const can = !!token();
  return `<table><tr><th>Raised</th><th>Machine</th><th>Detector</th><th>On</th><th class="num">Value</th><th class="num">Score</th><th>Window</th><th></th></tr>` +
    list.map((a) => `<tr class="alert${a.acked ? " acked" : ""}" data-key="${esc(a.key)}">
      <td>${time(a.raised)}</td><td><a href="#/sensor/${encodeURIComponent(a.key)}">${esc(a.key)}</a></td>
      <td><span class="tag bad">${esc(a.detector)}</span>${esc(a.operator)}</td><td>${esc(a.on)}</td>
      <td class="num">${fmt(a.value)}</td><td class="num">${fmt(a.score)}</td>
      <td>${time(a.window.start).slice(11)} – ${time(a.window.end).slice(11)}</td>
      <td>${a.acked ? `acknowledged by ${esc(a.acked.by)}` : `<button data-ack="${a.id}" ${can ? "" : "disabled title=\"needs the dashboard token\""}>Acknowledge</button>`}</td></tr>`).join("") + `</table>`;
}

function bindAcks(root) {
  root.querySelectorAll("button[data-ack]").forEach((b) => b.addEventListener("click", async () => {
    b.disabled = true;
    await api("alerts/" + b.dataset.ack + "/ack?by=" + encodeURIComponent(localStorage.getItem("weir-name") || "technician"), { method: "POST" });
    refresh(true);
  }));
}

function renderAlerts() {
  const open = state.alerts.filter((a) => !a.acked).length;
  const b = $("open-alerts");
  b.textContent = open;
  b.classList.toggle("hidden", open === 0);
  $("alerts").innerHTML = alertRows(state.alerts);
  bindAcks($("alerts"));
  $("latest-alerts").innerHTML = alertRows(state.alerts.slice(0, 5));
  bindAcks($("latest-alerts"));
}

async function renderSensor() {
  const key = state.sensor;
  const d = await api("sensors/" + encodeURIComponent(key) + "/windows");
  $("sensor-title").textContent = key;
  if (!d.operators) { $("sensor-charts").innerHTML = `<p class="muted">No windows for this machine yet.</p>`; return; }
  $("sensor-charts").innerHTML = d.operators.map((o, i) => `
    <div class="chart"><b>${esc(o.operator)}</b> <span class="muted">${esc(o.primary || "")} of ${esc(o.field)}, per minute (band: min–max), last hour</span>
    <canvas class="big" data-i="${i}"></canvas>
    <div class="legend">latest window ${time(o.start).slice(11)} – ${time(o.end).slice(11)}: ${Object.entries(o.values).map(([k, v]) => `<span class="tag">${esc(k)} ${fmt(v)}</span>`).join("")}
    ${o.alarm ? `<span class="tag bad">alarm</span>` : `<span class="tag ok">normal</span>`}</div></div>`).join("");
  $("sensor-charts").querySelectorAll("canvas.big").forEach((cv) => drawChart(cv, d.operators[+cv.dataset.i].history, { axes: true }));
  $("sensor-alerts").innerHTML = alertRows(d.alerts);
  bindAcks($("sensor-alerts"));
}

function renderGateway() {
  const ov = state.overview;
  if (!ov) return;
  const h = ov.health, st = ov.store;
  const panel = (title, rows) => `<div class="panel"><h3>${esc(title)}</h3><dl class="kv">${rows.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join("")}</dl></div>`;
  const parts = [
    panel("Health", [["status", h.status], ["broker", h.broker_connected ? "connected" : "disconnected"], ["outputs", h.outputs_connected ? "connected" : "disconnected"], ["storage", h.storage_fault || "ok"], ["durability", ov.durability], ["memory", bytes(ov.rss_bytes)], ["keys", ov.keys]]),
    panel("Sources (newest event vs the gateway clock)", ov.sources.map((s) => [s.name, lag(s.lag_ms)])),
    panel("Journal and flash", [["commits", st.commits.toLocaleString()], ["journal written", bytes(st.journal_bytes)], ["checkpoints", st.checkpoints], ["store file", bytes(st.file_bytes)], ["written to flash", bytes(st.flash_write_bytes)], ["storage faults", st.storage_faults]]),
    panel("Cloud uplink", ov.cloud ? [["published", ov.cloud.published], ["acknowledged", ov.cloud.acked], ["outbox", ov.cloud.outbox_records + " records, " + bytes(ov.cloud.outbox_bytes)], ["connects", ov.cloud.connects]] : [["uplink", "not configured"]]),
    panel("Wired sensors", ov.wired.length ? ov.wired.map((w) => [w.sensor, (w.healthy === 1 ? "healthy" : "UNHEALTHY") + ", " + (w.reads_total || 0) + " reads"]) : [["wired sensors", "none"]]),
  ];
  $("gateway-info").innerHTML = parts.join("");
}

async function renderPipeline() {
  const [p, u] = await Promise.all([api("pipeline"), api("updates")]);
  const last = u.last ? `<p>Last update: <span class="tag">${esc(u.last.result || "")}</span> version ${esc(u.last.version)} ${esc(u.last.reason || u.last.detail || "")}</p>` : "";
  $("pipeline").innerHTML = `<p><b>${esc(p.name)}</b> · version ${esc(u.running_version || p.version)} · from ${esc(p.origin)}</p>${last}
    <table><tr><th>Operator id</th><th>Kind</th><th>Field</th><th>Aggregates</th><th>Detector</th></tr>${p.operators.map((o) => `<tr><td>${esc(o.id)}</td><td>${esc(o.kind)}</td><td>${esc(o.field)}</td><td>${o.aggregates.map(esc).join(", ")}</td><td>${o.detector ? esc(o.detector.kind + " on " + o.detector.on) : "–"}</td></tr>`).join("")}</table>
    ${p.text ? `<h2>Text</h2><pre>${esc(p.text)}</pre>` : ""}`;
}

async function renderDead() {
  const d = await api("deadletters?limit=100");
  $("deadletters").innerHTML = d.deadletters.length === 0 ? `<p class="muted">None.</p>` :
    `<table><tr><th>At</th><th>Topic</th><th>Reason</th><th>Detail</th><th>Payload</th></tr>${d.deadletters.map((x) => `<tr><td>${time(x.at)}</td><td>${esc(x.topic)}</td><td><span class="tag bad">${esc(x.reason)}</span></td><td>${esc(x.detail)}</td><td>${x.payload != null ? `<code>${esc(x.payload.slice(0, 200))}</code>` : `<span class="muted">${x.payload_bytes} bytes (sign in to see)</span>`}</td></tr>`).join("")}</table>`;
}

function renderHeader() {
  const ov = state.overview;
  if (!ov) return;
  $("gateway").textContent = ov.gateway;
  $("version").textContent = ov.version;
  const h = $("health");
  const s = ov.health.status;
  h.textContent = { ok: "healthy", recovering: "recovering", broker_disconnected: "broker disconnected", storage_failing: "storage failing" }[s] || s;
  h.className = "pill " + (s === "ok" ? "ok" : s === "recovering" ? "warn" : "bad");
}

function renderAuth() {
  const a = $("auth");
  if (token()) {
    a.innerHTML = `signed in · <a href="#" id="signout" class="muted">sign out</a>`;
    $("signout").addEventListener("click", (e) => { e.preventDefault(); sessionStorage.removeItem("weir-token"); renderAuth(); refresh(true); });
  } else {
    a.innerHTML = `<input id="tok" type="password" placeholder="dashboard token" aria-label="dashboard token">`;
    $("tok").addEventListener("change", (e) => { sessionStorage.setItem("weir-token", e.target.value.trim()); renderAuth(); refresh(true); });
  }
}

let busy = false, again = false;
async function refresh() {
  if (busy) { again = true; return; }
  busy = true;
  try {
    const [s, a] = await Promise.all([api("sensors"), api("alerts?limit=200")]);
    state.sensors = s.sensors;
    state.alerts = a.alerts;
    renderHeader(); renderSummary(); renderAlerts();
    if (state.view === "machines") renderMachines();
    if (state.view === "sensor") await renderSensor();
    if (state.view === "gateway") renderGateway();
    if (state.view === "pipeline") await renderPipeline();
    if (state.view === "deadletters") await renderDead();
  } catch (e) {
    $("health").textContent = "no connection to the gateway";
    $("health").className = "pill bad";
  } finally {
    busy = false;
    if (again) { again = false; setTimeout(refresh, 300); }
  }
}

function route() {
  const h = location.hash || "#/";
  let view = "machines";
  state.sensor = null;
  if (h.startsWith("#/sensor/")) { view = "sensor"; state.sensor = decodeURIComponent(h.slice(9)); }
  else if (h === "#/alerts") view = "alerts";
  else if (h === "#/gateway") view = "gateway";
  else if (h === "#/pipeline") view = "pipeline";
  else if (h === "#/deadletters") view = "deadletters";
  state.view = view;
  document.querySelectorAll(".view").forEach((v) => v.classList.add("hidden"));
  $("view-" + view).classList.remove("hidden");
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.view === view || (view === "sensor" && a.dataset.view === "machines")));
  refresh();
}

function live() {
  const t = token();
  const es = new EventSource("/api/v1/events" + (t ? "?token=" + encodeURIComponent(t) : ""));
  es.addEventListener("update", (ev) => {
    const d = JSON.parse(ev.data);
    state.overview = d.overview;
    renderHeader();
    if (d.version !== state.version) { state.version = d.version; refresh(); }
  });
  es.onerror = () => { $("health").textContent = "reconnecting…"; $("health").className = "pill warn"; };
}

window.addEventListener("hashchange", route);
window.addEventListener("resize", () => { if (state.view === "machines") renderMachines(); });
renderAuth();
api("overview").then((ov) => { state.overview = ov; renderHeader(); renderSummary(); }).catch((e) => reportError(e.message));
route();
live();
