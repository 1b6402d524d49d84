// The series explorer: one series on a large chart with axes, over a chosen window; drag to
// zoom in, "zoom out" doubles the span, "reset" goes back to the window ending now. "raw"
// draws the stored readings (up to RAW_LIMIT), "aggregate" draws per-bucket avg with the
// min–max band, the bucket chosen so the window holds about TARGET_BUCKETS of them.

import { $, el, getJson, number, report } from "./common.js";
import { drawChart, pickBucket, timeAt } from "./chart.js";
import { bucketsToData } from "./overview.js";

const RAW_LIMIT = 5000;
const TARGET_BUCKETS = 200;

const se = { from: 0, to: 0, zoomed: false, data: { line: [], band: [] }, drag: null, seq: 0, first: new Map() };
// The narrowest window "reset" shows for a series younger than the chosen window.
const MIN_SPAN = 60e3;

const mode = () => document.querySelector('input[name="se-mode"]:checked').value;

// Every series: /v1/series is paged by name.
async function allSeries() {
  const out = [];
  let after = null;
  for (;;) {
    const page = await getJson("/v1/series" + (after === null ? "" : `?after=${encodeURIComponent(after)}`));
    out.push(...page.series);
    if (!page.next_after) return out;
    after = page.next_after;
  }
}

async function loadSeriesList() {
  const series = await allSeries();
  for (const s of series) se.first.set(s.name, s.first_ts);
  const sel = $("se-series");
  const keep = sel.value;
  sel.replaceChildren(...series.map((s) => el("option", s.unit ? `${s.name} (${s.unit})` : s.name)));
  series.forEach((s, i) => { sel.options[i].value = s.name; });
  if (series.some((s) => s.name === keep)) sel.value = keep;
}

// The chosen window ending now; for a series younger than that, from its first reading on
// (a 10 s series a few minutes old would be a sliver at the edge of a 24 h chart).
function resetWindow() {
  se.to = Date.now();
  se.from = se.to - Number($("se-window").value);
  const first = se.first.get($("se-series").value);
  if (first && first > se.from) se.from = Math.min(first - 1000, se.to - MIN_SPAN);
  se.zoomed = false;
}

async function fetchData() {
  const series = $("se-series").value;
  if (!series) return { line: [], band: [], note: "No series yet." };
  const span = se.to - se.from;
  if (mode() === "raw") {
    const q = new URLSearchParams({ series, from: String(Math.floor(se.from)), to: String(Math.ceil(se.to)), limit: String(RAW_LIMIT) });
    const r = await getJson(`/v1/readings?${q}`);
    return {
      line: r.readings.map((x) => [x.ts, x.value]),
      band: null,
      note: `${r.readings.length} raw readings${r.next_cursor ? ` (the first ${RAW_LIMIT}: zoom in or switch to aggregate)` : ""}`,
    };
  }
  const bucket = pickBucket(span, TARGET_BUCKETS);
  const q = new URLSearchParams({
    series, from: String(Math.floor(se.from)), to: String(Math.ceil(se.to)), bucket: String(bucket), fn: "avg,min,max,count",
  });
  const r = await getJson(`/v1/readings/aggregate?${q}`);
  const n = r.buckets.reduce((a, b) => a + b.count, 0);
  return { ...bucketsToData(r.buckets, r.bucket_ms, se.to), note: `${r.buckets.length} buckets of ${bucket / 1000} s (${n} readings)` };
}

export async function refresh() {
  if (!se.zoomed) resetWindow();
  const seq = ++se.seq;
  const d = await fetchData();
  if (seq !== se.seq) return;
  se.data = d;
  draw();
}

function draw() {
  const cv = $("se-chart");
  const n = drawChart(cv, se.data, se.from, se.to, { axes: true });
  const vals = se.data.line.map(([, v]) => v);
  const range = vals.length ? ` · min ${number(Math.min(...vals))}, max ${number(Math.max(...vals))}` : "";
  $("se-note").textContent = `${se.data.note || ""}${n ? range : ""} · drag across the chart to zoom in`;
  if (se.drag && se.drag.x1 !== undefined) {
    const g = cv.getContext("2d");
    const r = cv.getBoundingClientRect();
    g.fillStyle = getComputedStyle(document.documentElement).getPropertyValue("--band");
    const x0 = Math.min(se.drag.x0, se.drag.x1) - r.left, x1 = Math.max(se.drag.x0, se.drag.x1) - r.left;
    g.fillRect(x0, 0, x1 - x0, r.height);
  }
}

function zoom(from, to) {
  if (to - from < 1000) return; // a second is the narrowest window
  se.from = from;
  se.to = to;
  se.zoomed = true;
  refresh().catch(report);
}

export function start() {
  const cv = $("se-chart");
  $("se-series").addEventListener("change", () => refresh().catch(report));
  $("se-window").addEventListener("change", () => { se.zoomed = false; refresh().catch(report); });
  for (const r of document.querySelectorAll('input[name="se-mode"]')) r.addEventListener("change", () => refresh().catch(report));
  $("se-reset").addEventListener("click", () => { se.zoomed = false; refresh().catch(report); });
  $("se-out").addEventListener("click", () => {
    const mid = (se.from + se.to) / 2, span = se.to - se.from;
    zoom(mid - span, Math.min(mid + span, Date.now()));
  });
  cv.addEventListener("pointerdown", (e) => { se.drag = { x0: e.clientX }; cv.setPointerCapture(e.pointerId); });
  cv.addEventListener("pointermove", (e) => { if (se.drag) { se.drag.x1 = e.clientX; draw(); } });
  cv.addEventListener("pointerup", (e) => {
    const d = se.drag;
    se.drag = null;
    if (!d || d.x1 === undefined || Math.abs(e.clientX - d.x0) < 4) { draw(); return; }
    const a = timeAt(cv, Math.min(d.x0, e.clientX), se.from, se.to);
    const b = timeAt(cv, Math.max(d.x0, e.clientX), se.from, se.to);
    zoom(a, b);
  });
  window.addEventListener("resize", () => { if (!$("view-series").hidden) draw(); });
}

// Called when the series explorer becomes visible; `rest` may name a series.
export async function show(rest) {
  await loadSeriesList();
  if (rest) {
    const name = decodeURIComponent(rest);
    if ([...$("se-series").options].some((o) => o.value === name)) $("se-series").value = name;
  }
  await refresh();
}
