// The overview: a card per series (latest value and a chart of the chosen window, updated as
// readings commit), sources and sync peers.

import { $, ago, bytes, eventSource, el, getJson, number, report } from "./common.js";
import { drawChart, pickBucket } from "./chart.js";

// Window → [bucket, span ms]. A bucket holds several samples of a 10 s source, so every
// window of a series sampled at the default interval has points to draw.
export const WINDOWS = { "15m": ["30s", 900e3], "1h": ["1m", 3600e3], "6h": ["5m", 21600e3], "24h": ["20m", 86400e3] };
const MAX_CHARTS = 24;
const CHART_REFRESH_MS = 10000;
// A series whose first bucket is later than 1/YOUNG of the window into it is charted from
// that bucket on, in about CARD_BUCKETS buckets.
const YOUNG = 8;
const CARD_BUCKETS = 60;

const charts = new Map(); // series -> { series, card, value, canvas, data, unit, fetchedAt }
const dirty = new Set();
let allSeries = [];
let refreshing = null;
// Bumped when the window changes: a chart fetched for the previous window is not kept.
let generation = 0;

function fillTable(id, rows) {
  const body = $(id).tBodies[0];
  body.replaceChildren(...rows.map((cells) => {
    const tr = el("tr");
    for (const c of cells) tr.append(typeof c === "object" && c !== null ? c : el("td", c));
    return tr;
  }));
}

export async function refreshSources() {
  const { sources } = await getJson("/v1/sources");
  fillTable("sources", sources.map((s) => [
    s.name, s.kind, s.interval_ms ? `${s.interval_ms / 1000} s` : "stream", s.readings.toLocaleString(),
    ago(s.last_reading_ms), s.errors, el("td", s.last_error || "", "err"),
  ]));
}

export async function refreshPeers() {
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

export async function refreshSeriesList() {
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
      canvas.dataset.series = s.series;
      card.append(el("div", s.series, "name"), value, canvas);
      c = { series: s.series, card, value, canvas, data: { line: [], band: [] }, from: 0, to: 0, unit: s.unit, fetchedAt: 0 };
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

// Each bucket is drawn at its middle (the last one at most at "now"), from its avg, with its
// min–max as the band.
export function bucketsToData(buckets, bucketMs, now) {
  const at = (b) => Math.min(b.start + bucketMs / 2, now - 1);
  return {
    line: buckets.map((b) => [at(b), b.avg]),
    band: buckets.map((b) => [at(b), b.min, b.max]),
  };
}

async function aggregate(series, from, bucket) {
  const q = new URLSearchParams({ series, from, bucket: String(bucket), fn: "avg,min,max" });
  return getJson(`/v1/readings/aggregate?${q}`);
}

// The chart of the chosen window. A series younger than the window (a 10 s system series 20
// minutes after start, in the 24 h window) is charted from its first bucket, with buckets
// fitted to that span: drawn over the whole window it was a sliver of a few pixels at the
// right edge, a value without a visible chart.
async function refreshChart(c) {
  const gen = generation;
  const win = $("window").value;
  const [bucket, span] = WINDOWS[win];
  let r = await aggregate(c.series, `now-${win}`, bucket);
  let from = r.to - span;
  const first = r.buckets.length ? r.buckets[0].start : null;
  if (first !== null && first - from > span / YOUNG) {
    from = first;
    const fine = pickBucket(r.to - first, CARD_BUCKETS);
    if (fine < r.bucket_ms) {
      r = await aggregate(c.series, String(first), fine);
      from = r.buckets.length ? r.buckets[0].start : first;
    }
  }
  if (gen !== generation) { dirty.add(c.series); return; }
  c.data = bucketsToData(r.buckets, r.bucket_ms, r.to);
  c.canvas.dataset.window = win;
  c.from = from;
  c.to = r.to;
  c.fetchedAt = Date.now();
  drawChart(c.canvas, c.data, from, r.to);
}

// Charts of series that changed are refetched at most every CHART_REFRESH_MS; values at once.
// One refresh at a time; a chart that fails does not keep the others from drawing.
async function refreshDirty() {
  if (refreshing) return refreshing;
  refreshing = (async () => {
    const names = [...dirty].filter((n) => charts.has(n));
    dirty.clear();
    if (names.length === 0) return;
    const q = new URLSearchParams({ series: names.join(",") });
    const { latest } = await getJson(`/v1/readings/latest?${q}`);
    for (const s of latest) {
      const c = charts.get(s.series);
      if (c) showLatest(c, s);
    }
    const due = names.map((n) => charts.get(n)).filter((c) => c && Date.now() - c.fetchedAt >= CHART_REFRESH_MS);
    const failed = [];
    await Promise.all(due.map((c) => refreshChart(c).catch((e) => { failed.push(e); dirty.add(c.series); })));
    if (failed.length) throw failed[0];
  })();
  try { await refreshing; } finally { refreshing = null; }
}

function listen() {
  const live = $("live");
  const es = eventSource("/v1/events?kind=readings");
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

export function start(every) {
  $("filter").addEventListener("input", () => { layoutCharts(); refreshDirty().catch(report); });
  $("window").addEventListener("change", () => {
    generation++;
    charts.forEach((c) => { c.fetchedAt = 0; dirty.add(c.series); });
    refreshDirty().catch(report);
  });
  // A card that became visible (tab switch, resize) is drawn again at its new size.
  window.addEventListener("resize", () => charts.forEach((c) => { c.fetchedAt = 0; dirty.add(c.series); }));
  every(5000, refreshSources);
  every(5000, refreshPeers);
  every(60000, refreshSeriesList);
  every(1000, refreshDirty);
  // Charts move with time even when a series is quiet.
  setInterval(() => charts.forEach((c) => { if (Date.now() - c.fetchedAt >= 60000) dirty.add(c.series); }), 5000);
  listen();
}

// After the overview becomes visible again: every card is drawn at once from what it holds
// (cards hidden meanwhile had no size to draw at), then fetched afresh.
export function redraw() {
  charts.forEach((c) => {
    if (c.fetchedAt) drawChart(c.canvas, c.data, c.from, c.to);
    c.fetchedAt = 0;
    dirty.add(c.series);
  });
  refreshDirty().catch(report);
}
