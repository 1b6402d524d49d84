// kdelta dashboard: status, series with live charts, sources and sync peers. Plain JS, no
// dependencies (the agent serves it offline). Every value from the agent is put into the
// page with textContent, never as HTML.
"use strict";

const WINDOWS = { "15m": ["15s", 900e3], "1h": ["1m", 3600e3], "6h": ["5m", 21600e3], "24h": ["20m", 86400e3] };
const MAX_CHARTS = 24;
const POLL_MS = 5000;
const CHART_REFRESH_MS = 10000;

const charts = new Map(); // series -> { series, card, value, canvas, buckets, unit, fetchedAt }
const dirty = new Set();
let allSeries = [];

const $ = (id) => document.getElementById(id);

// An agent with [api] tokens answers 401: ask for a token once, keep it for this tab only
// (sessionStorage), send it as a header; the event stream takes it as ?access_token=.
const TOKEN_KEY = "kdelta.token";
let asking = null;
let declined = false;
const token = () => sessionStorage.getItem(TOKEN_KEY);

function askToken(used) {
  if (token() && token() !== used) return Promise.resolve(true); // another request asked
  if (declined) return Promise.resolve(false);
  if (!asking) {
    asking = Promise.resolve().then(() => {
      const t = window.prompt("This agent needs an API token (scope read) — see docs/security.md:");
      asking = null;
      if (!t || !t.trim()) { declined = true; return false; }
      sessionStorage.setItem(TOKEN_KEY, t.trim());
      listen();
      return true;
    });
  }
  return asking;
}

async function getJson(path, retried) {
  const used = token();
  const headers = { Accept: "application/json" };
  if (used) headers.Authorization = `Bearer ${used}`;
  const r = await fetch(path, { headers });
  if (r.status === 401 && !retried) {
    if (used === token()) sessionStorage.removeItem(TOKEN_KEY);
    if (await askToken(used)) return getJson(path, true);
  }
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function ago(ms) {
  if (!ms) return "never";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

function duration(s) {
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${s % 60}s`;
}

function number(v) {
  if (typeof v !== "number" || !isFinite(v)) return "–";
  const a = Math.abs(v);
  return a !== 0 && (a >= 1e6 || a < 1e-3) ? v.toExponential(3) : String(+v.toFixed(3));
}

async function refreshStatus() {
  const s = await getJson("/v1/status");
  const items = [
    ["version", s.version],
    ["actor", String(s.actor).slice(0, 8)],
    ["up", duration(s.uptime_s)],
    ["readings", s.counts.readings.toLocaleString()],
    ["series", s.counts.series],
    ["changes", s.counts.changes.toLocaleString()],
    ["store", bytes(s.db_bytes)],
    ["disk", s.disk ? `${s.disk.used_percent.toFixed(0)} % used` : "–"],
    ["memory", bytes(s.rss_bytes)],
  ];
  const dl = $("status");
  dl.replaceChildren(...items.map(([k, v]) => {
    const d = el("div");
    d.append(el("dt", k), el("dd", v));
    return d;
  }));
}

function fillTable(id, rows) {
  const body = $(id).tBodies[0];
  body.replaceChildren(...rows.map((cells) => {
    const tr = el("tr");
    for (const c of cells) tr.append(typeof c === "object" && c !== null ? c : el("td", c));
    return tr;
  }));
}

async function refreshSources() {
  const { sources } = await getJson("/v1/sources");
  fillTable("sources", sources.map((s) => [
    s.name, s.kind, s.interval_ms ? `${s.interval_ms / 1000} s` : "stream", s.readings.toLocaleString(),
    ago(s.last_reading_ms), s.errors, el("td", s.last_error || "", "err"),
  ]));
}

async function refreshPeers() {
  const { peers } = await getJson("/v1/sync/peers");
  fillTable("peers", peers.map((p) => [
    p.name, p.direction, p.connected ? "yes" : "no", p.lag_to_peer, p.lag_from_peer,
    `${bytes(p.bytes_in)} / ${bytes(p.bytes_out)}`, el("td", p.last_error ? p.last_error.message : "", "err"),
  ]));
}

function visibleSeries() {
  const f = $("filter").value.trim().toLowerCase();
  return allSeries.filter((s) => !f || s.series.toLowerCase().includes(f));
}

async function refreshSeriesList() {
  const { latest } = await getJson("/v1/readings/latest");
  allSeries = latest.sort((a, b) => a.series.localeCompare(b.series));
  layoutCharts();
  await refreshDirty(); // new charts get their history at once
}

function layoutCharts() {
  const shown = visibleSeries();
  const note = $("series-note");
  note.textContent = allSeries.length === 0
    ? "No readings yet."
    : shown.length > MAX_CHARTS ? `Showing ${MAX_CHARTS} of ${shown.length} series; filter to see others.` : "";
  const wanted = new Set(shown.slice(0, MAX_CHARTS).map((s) => s.series));
  for (const [name, c] of charts) {
    if (!wanted.has(name)) { c.card.remove(); charts.delete(name); }
  }
  const grid = $("charts");
  for (const s of shown.slice(0, MAX_CHARTS)) {
    let c = charts.get(s.series);
    if (!c) {
      const card = el("div", null, "card");
      const value = el("div", null, "value");
      const canvas = el("canvas");
      card.append(el("div", s.series, "name"), value, canvas);
      c = { series: s.series, card, value, canvas, buckets: [], unit: s.unit, fetchedAt: 0 };
      charts.set(s.series, c);
      dirty.add(s.series);
    }
    grid.append(c.card); // keeps the sorted order
    showLatest(c, s);
  }
}

function showLatest(c, s) {
  c.unit = s.unit || c.unit;
  c.value.textContent = c.unit === "B" ? bytes(s.value) : `${number(s.value)}${c.unit ? " " + c.unit : ""}`;
  c.value.title = new Date(s.ts).toLocaleString();
}

async function refreshChart(series, c) {
  const [bucket, span] = WINDOWS[$("window").value];
  const q = new URLSearchParams({ series, from: `now-${$("window").value}`, bucket, fn: "avg,min,max" });
  const r = await getJson(`/v1/readings/aggregate?${q}`);
  c.buckets = r.buckets;
  c.fetchedAt = Date.now();
  draw(c, Date.now() - span, Date.now());
}

function draw(c, from, to) {
  const cv = c.canvas, dpr = window.devicePixelRatio || 1;
  const w = cv.clientWidth, h = cv.clientHeight;
  cv.width = w * dpr; cv.height = h * dpr;
  const g = cv.getContext("2d");
  g.scale(dpr, dpr);
  g.clearRect(0, 0, w, h);
  const b = c.buckets;
  if (b.length === 0) return;
  let lo = Infinity, hi = -Infinity;
  for (const x of b) { lo = Math.min(lo, x.min); hi = Math.max(hi, x.max); }
  if (hi === lo) { hi += 1; lo -= 1; }
  const X = (t) => ((t - from) / (to - from)) * w;
  const Y = (v) => h - 4 - ((v - lo) / (hi - lo)) * (h - 8);
  const style = getComputedStyle(document.documentElement);
  g.fillStyle = style.getPropertyValue("--band");
  g.beginPath();
  b.forEach((x, i) => (i ? g.lineTo(X(x.start), Y(x.max)) : g.moveTo(X(x.start), Y(x.max))));
  for (let i = b.length - 1; i >= 0; i--) g.lineTo(X(b[i].start), Y(b[i].min));
  g.closePath();
  g.fill();
  g.strokeStyle = style.getPropertyValue("--line");
  g.lineWidth = 1.5;
  g.beginPath();
  b.forEach((x, i) => (i ? g.lineTo(X(x.start), Y(x.avg)) : g.moveTo(X(x.start), Y(x.avg))));
  g.stroke();
  g.fillStyle = style.getPropertyValue("--muted");
  g.font = "10px system-ui";
  g.fillText(number(hi), 2, 10);
  g.fillText(number(lo), 2, h - 2);
}

// Charts of series that changed are refetched at most every CHART_REFRESH_MS; values at once.
async function refreshDirty() {
  const names = [...dirty].filter((n) => charts.has(n));
  dirty.clear();
  if (names.length === 0) return;
  const q = new URLSearchParams({ series: names.join(",") });
  const { latest } = await getJson(`/v1/readings/latest?${q}`);
  for (const s of latest) {
    const c = charts.get(s.series);
    if (c) showLatest(c, s);
  }
  for (const n of names) {
    const c = charts.get(n);
    if (c && Date.now() - c.fetchedAt >= CHART_REFRESH_MS) await refreshChart(n, c);
  }
}

let events = null;

function listen() {
  const live = $("live");
  if (events) events.close();
  const t = token();
  const auth = t ? `&access_token=${encodeURIComponent(t)}` : "";
  const es = new EventSource(`/v1/events?kind=readings${auth}`);
  events = es;
  es.onopen = () => { live.textContent = "live"; live.className = "badge on"; };
  es.onerror = () => { live.textContent = "reconnecting…"; live.className = "badge off"; };
  es.addEventListener("change", (ev) => {
    let d;
    try { d = JSON.parse(ev.data); } catch { return; }
    let unknown = false;
    for (const s of d.series || []) {
      if (charts.has(s)) dirty.add(s);
      else if (!allSeries.some((x) => x.series === s)) unknown = true;
    }
    if (unknown) refreshSeriesList().catch(report);
  });
  // Missed events: refresh everything shown.
  es.addEventListener("lagged", () => charts.forEach((_, n) => dirty.add(n)));
}

function report(e) {
  const live = $("live");
  live.textContent = `error: ${e.message}`;
  live.className = "badge off";
}

function every(ms, f) {
  const run = () => f().catch(report);
  run();
  setInterval(run, ms);
}

document.addEventListener("DOMContentLoaded", () => {
  $("filter").addEventListener("input", () => { layoutCharts(); refreshDirty().catch(report); });
  $("window").addEventListener("change", () => charts.forEach((c) => { c.fetchedAt = 0; dirty.add(c.series); }));
  every(POLL_MS, refreshStatus);
  every(POLL_MS, refreshSources);
  every(POLL_MS, refreshPeers);
  every(60000, refreshSeriesList);
  every(1000, refreshDirty);
  // Charts move with time even when a series is quiet.
  setInterval(() => charts.forEach((c) => { if (Date.now() - c.fetchedAt >= 60000) dirty.add(c.series); }), 5000);
  listen();
});
