// Shared helpers of the dashboard: API calls, DOM building (text only, never HTML) and the
// formatting of numbers, bytes, times and HLCs. No state of its own.

export const $ = (id) => document.getElementById(id);

// An API error answer as an Error carrying the API's code.
export class ApiError extends Error {
  constructor(path, status, code, message) {
    super(`${path}: ${message || `HTTP ${status}`}`);
    this.status = status;
    this.code = code;
  }
}

async function answer(path, r) {
  if (r.ok) return r.json();
  let code = null, message = null;
  try {
    const e = (await r.json()).error;
    code = e.code;
    message = e.message;
  } catch { /* not a JSON error body */ }
  throw new ApiError(path, r.status, code, message);
}

// An agent with [api] tokens answers 401: ask for a token once, keep it for this tab only
// (sessionStorage) and start again with it; requests send it as a header, the event streams
// (EventSource cannot send headers) as ?access_token= (docs/security.md).
const TOKEN_KEY = "kdelta.token";
let asked = false;
const token = () => sessionStorage.getItem(TOKEN_KEY);

function askToken() {
  if (asked) return;
  asked = true;
  const t = window.prompt("This agent needs an API token (see docs/security.md):");
  if (t && t.trim()) {
    sessionStorage.setItem(TOKEN_KEY, t.trim());
    location.reload();
  }
}

async function call(path, init) {
  const t = token();
  if (t) init.headers.Authorization = `Bearer ${t}`;
  const r = await fetch(path, init);
  if (r.status === 401) {
    if (t) sessionStorage.removeItem(TOKEN_KEY);
    askToken();
  }
  return r;
}

export async function getJson(path) {
  return answer(path, await call(path, { headers: { Accept: "application/json" } }));
}

// PUT/PATCH/POST with a JSON body (`type` names the media type, e.g. a merge patch).
export async function sendJson(method, path, body, type = "application/json") {
  const r = await call(path, {
    method,
    headers: { Accept: "application/json", "Content-Type": type },
    body: JSON.stringify(body),
  });
  return answer(path, r);
}

// A live event stream of `path`, authenticated like every other request.
export function eventSource(path) {
  const t = token();
  if (!t) return new EventSource(path);
  return new EventSource(`${path}${path.includes("?") ? "&" : "?"}access_token=${encodeURIComponent(t)}`);
}

// A documented route template (`/v1/docs/{key}/history`) with the key filled in: each
// segment of the key is percent-encoded, its `/` kept (the API's keys may contain `/`).
export function route(template, key) {
  return template.replace("{key}", key.split("/").map(encodeURIComponent).join("/"));
}

export function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function ago(ms) {
  if (!ms) return "never";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

export function duration(s) {
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${s % 60}s`;
}

export function number(v) {
  if (typeof v !== "number" || !isFinite(v)) return "–";
  const a = Math.abs(v);
  return a !== 0 && (a >= 1e6 || a < 1e-3) ? v.toExponential(3) : String(+v.toFixed(3));
}

// The wall-clock part of an HLC `<ms>:<logical>`, in unix ms.
export const hlcMs = (hlc) => Number(String(hlc).split(":")[0]);

// Local time with milliseconds: versions written in one second stay apart.
export function stamp(ms) {
  const d = new Date(ms);
  const p = (n, w = 2) => String(n).padStart(w, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
    `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

export const json = (v) => (v === undefined ? "–" : JSON.stringify(v, null, 2));

export const short = (actor) => String(actor).slice(0, 8);

// Reports an error in the live badge (and the console, where browser tests look).
export function report(e) {
  const live = $("live");
  live.textContent = `error: ${e.message}`;
  live.className = "badge off";
  console.error("kdelta dashboard:", e.message);
}
