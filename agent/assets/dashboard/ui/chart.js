// Canvas charts: a line (with an optional min–max band) over a time window, as a small card
// chart or a large chart with time and value axes. Plain 2D canvas, no library.
//
// Every call leaves `canvas.dataset.points` = the number of points it placed inside the
// window, so the page (and its browser tests) can tell an empty chart from a drawn one.

import { number } from "./common.js";

// Bucket widths offered to the aggregate API, in ms (whole minutes and up read the rollups).
const BUCKETS = [1e3, 5e3, 10e3, 30e3, 60e3, 300e3, 900e3, 3600e3, 6 * 3600e3, 86400e3];

// The narrowest bucket that cuts `spanMs` into at most `target` buckets.
export function pickBucket(spanMs, target) {
  return BUCKETS.find((b) => spanMs / b <= target) || BUCKETS[BUCKETS.length - 1];
}

// Horizontal room for value labels on a chart with axes, and vertical room for time labels.
const AXIS_X = 52, AXIS_Y = 16;

function setup(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  canvas.width = Math.max(1, Math.round(w * dpr));
  canvas.height = Math.max(1, Math.round(h * dpr));
  const g = canvas.getContext("2d");
  g.scale(dpr, dpr);
  g.clearRect(0, 0, w, h);
  return { g, w, h };
}

function timeLabel(ms, span) {
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, "0");
  const hm = `${p(d.getHours())}:${p(d.getMinutes())}`;
  if (span <= 15 * 60e3) return `${hm}:${p(d.getSeconds())}`;
  if (span <= 36 * 3600e3) return hm;
  return `${d.getMonth() + 1}/${d.getDate()} ${hm}`;
}

// Draws `data` = { line: [[t, v], …] in time order, band: [[t, lo, hi], …] or null } over
// [from, to). Returns the number of line points inside the window.
export function drawChart(canvas, data, from, to, { axes = false } = {}) {
  const { g, w, h } = setup(canvas);
  const line = data.line.filter(([t, v]) => t >= from && t < to && Number.isFinite(v));
  const band = (data.band || []).filter(([t]) => t >= from && t < to);
  canvas.dataset.points = String(line.length);
  const style = getComputedStyle(document.documentElement);
  g.fillStyle = style.getPropertyValue("--muted");
  g.font = "10px system-ui, sans-serif";
  if (line.length === 0) {
    g.fillText("no readings in this window", (axes ? AXIS_X : 0) + 4, h / 2);
    return 0;
  }
  let lo = Infinity, hi = -Infinity;
  for (const [, v] of line) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  for (const [, a, b] of band) { lo = Math.min(lo, a); hi = Math.max(hi, b); }
  if (hi === lo) { hi += Math.abs(hi) * 0.01 || 1; lo -= Math.abs(lo) * 0.01 || 1; }
  const left = axes ? AXIS_X : 0, bottom = axes ? h - AXIS_Y : h;
  const X = (t) => left + ((t - from) / (to - from)) * (w - left - 2);
  const Y = (v) => bottom - 4 - ((v - lo) / (hi - lo)) * (bottom - 8);

  if (axes) {
    g.strokeStyle = style.getPropertyValue("--grid");
    g.lineWidth = 1;
    g.textBaseline = "middle";
    for (let i = 0; i <= 4; i++) {
      const v = lo + ((hi - lo) * i) / 4, y = Y(v);
      g.beginPath(); g.moveTo(left, y); g.lineTo(w, y); g.stroke();
      g.fillText(number(v), 2, y);
    }
    g.textBaseline = "alphabetic";
    for (let i = 0; i <= 4; i++) {
      const t = from + ((to - from) * i) / 4;
      const label = timeLabel(t, to - from);
      const x = Math.min(X(t), w - g.measureText(label).width - 2);
      g.fillText(label, Math.max(left, x - (i ? g.measureText(label).width / 2 : 0)), h - 3);
    }
  } else {
    g.fillText(number(hi), 2, 10);
    g.fillText(number(lo), 2, h - 2);
  }

  if (band.length > 1) {
    g.fillStyle = style.getPropertyValue("--band");
    g.beginPath();
    band.forEach(([t, , b], i) => (i ? g.lineTo(X(t), Y(b)) : g.moveTo(X(t), Y(b))));
    for (let i = band.length - 1; i >= 0; i--) g.lineTo(X(band[i][0]), Y(band[i][1]));
    g.closePath();
    g.fill();
  }
  const color = style.getPropertyValue("--line");
  g.strokeStyle = color;
  g.lineWidth = 1.5;
  g.beginPath();
  line.forEach(([t, v], i) => (i ? g.lineTo(X(t), Y(v)) : g.moveTo(X(t), Y(v))));
  g.stroke();
  // A lone point (or a few) would be an invisible path: mark each one.
  if (line.length < 40) {
    g.fillStyle = color;
    for (const [t, v] of line) { g.beginPath(); g.arc(X(t), Y(v), 2, 0, 2 * Math.PI); g.fill(); }
  }
  return line.length;
}

// The time under a mouse x on a chart drawn with axes over [from, to).
export function timeAt(canvas, clientX, from, to) {
  const r = canvas.getBoundingClientRect();
  const x = Math.min(Math.max(clientX - r.left, AXIS_X), r.width - 2);
  return from + ((x - AXIS_X) / (r.width - 2 - AXIS_X)) * (to - from);
}
