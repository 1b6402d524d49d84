// The time-travel explorer for documents and twins: a prefix browser, the current value with
// its siblings, every version (actor, HLC, time), a slider that shows the value as of any
// moment, a diff between two picked versions, and an editor that writes a new version.
//
// Documents use /v1/docs/{key} (put a whole value); twins use /v1/twins/{key} (a JSON
// Merge Patch per write). Both answer as-of reads and diffs for an HLC or a wall time.

import { $, ApiError, el, eventSource, getJson, hlcMs, json, report, route, sendJson, short, stamp } from "./common.js";

const LIST_LIMIT = 200;
const HISTORY_LIMIT = 1000;
const MERGE_PATCH = "application/merge-patch+json";

const ex = {
  listKind: "docs", // what the key list shows
  kind: "docs", // the open key's kind
  key: null,
  versions: [], // newest first: { actor, seq, hlc, ms, value?, deleted?, pruned?, paths? }
  pick: { a: null, b: null }, // HLCs picked for the diff
  asOfTimer: 0,
  asOfSeq: 0, // answers of older slider positions are dropped
  loadSeq: 0,
};

const KIND = {
  docs: {
    list: "/v1/docs", value: "/v1/docs/{key}", history: "/v1/docs/{key}/history",
    diff: "/v1/docs/{key}/diff", siblings: "/v1/docs/{key}/siblings",
  },
  twins: {
    list: "/v1/twins", value: "/v1/twins/{key}", history: "/v1/twins/{key}/history",
    diff: "/v1/twins/{key}/diff",
  },
};

const notFound = (e) => e instanceof ApiError && e.status === 404;

// ---- the key list -------------------------------------------------------------------------

export async function listKeys() {
  const q = new URLSearchParams({ prefix: $("ex-prefix").value, limit: String(LIST_LIMIT) });
  const kind = ex.listKind;
  const r = await getJson(`${KIND[kind].list}?${q}`);
  const items = kind === "docs" ? r.docs.map((d) => [d.key, d.siblings]) : r.twins.map((k) => [k, 1]);
  $("ex-keys").replaceChildren(...items.map(([key, siblings]) => {
    const b = el("button", key, key === ex.key && kind === ex.kind ? "key current" : "key");
    b.type = "button";
    b.addEventListener("click", () => open(kind, key));
    const li = el("li");
    li.append(b);
    if (siblings > 1) li.append(el("span", `${siblings} siblings`, "badge warn"));
    return li;
  }));
  $("ex-keys-note").textContent = items.length === 0
    ? `No ${kind === "docs" ? "documents" : "twins"} with this prefix.`
    : r.next_after ? `First ${items.length}; type a longer prefix to see others.` : "";
}

// ---- one key ------------------------------------------------------------------------------

export function open(kind, key) {
  ex.kind = kind;
  ex.listKind = kind;
  ex.key = key;
  $("ex-kind").value = kind;
  const hash = `#explorer/${kind}/${encodeURIComponent(key)}`;
  if (location.hash !== hash) history.replaceState(null, "", hash);
  ex.pick = { a: null, b: null };
  $("ex-editor").value = "";
  $("ex-edit-note").textContent = "";
  $("ex-diff").hidden = true;
  load({ fillEditor: true }).catch(report);
  listKeys().catch(report);
}

async function load({ fillEditor = false } = {}) {
  const seq = ++ex.loadSeq;
  const { kind, key } = ex;
  const t = KIND[kind];
  const [current, history] = await Promise.all([
    getJson(route(t.value, key)).catch((e) => (notFound(e) ? null : Promise.reject(e))),
    getJson(`${route(t.history, key)}?limit=${HISTORY_LIMIT}`)
      .catch((e) => (notFound(e) ? { versions: [], changes: [] } : Promise.reject(e))),
  ]);
  let siblings = [];
  if (kind === "docs" && current && current.siblings > 1) {
    siblings = (await getJson(route(t.siblings, key))).siblings;
  }
  if (seq !== ex.loadSeq) return; // another key was opened meanwhile
  ex.versions = (kind === "docs" ? history.versions : history.changes).map((v) => ({ ...v, ms: hlcMs(v.hlc) }));
  $("ex-empty").hidden = true;
  $("ex-detail").hidden = false;
  $("ex-key").textContent = `${kind === "docs" ? "document" : "twin"} ${key}`;
  showCurrent(current, siblings);
  if (fillEditor) {
    $("ex-editor").value = kind === "docs" ? (current ? JSON.stringify(current.value, null, 2) : "{}") : "{}";
  }
  $("ex-edit-title").textContent = kind === "docs"
    ? "Write a new version (JSON)"
    : current ? "Merge patch (RFC 7396; null deletes a field)" : "Create the twin (JSON object)";
  if (!ex.pick.b || !ex.versions.some((v) => v.hlc === ex.pick.b)) {
    ex.pick.b = ex.versions[0] ? ex.versions[0].hlc : null;
    ex.pick.a = ex.versions[1] ? ex.versions[1].hlc : null;
  }
  showHistory();
  setupSlider();
}

function showCurrent(current, siblings) {
  const badge = $("ex-siblings");
  const n = current && current.siblings > 1 ? current.siblings : 0;
  badge.hidden = n === 0;
  badge.textContent = n ? `${n} siblings` : "";
  $("ex-value").textContent = current ? json(current.value) : "(no current value)";
  $("ex-meta").textContent = !current
    ? ex.versions.length ? "Deleted: every version is kept below." : "This key does not exist yet: save to create it."
    : ex.kind === "docs"
      ? `winner ${short(current.actor)}:${current.seq} at HLC ${current.hlc} (${stamp(hlcMs(current.hlc))})`
      : `${current.changes} changes merged`;
  $("ex-sibling-list").hidden = n === 0;
  $("ex-sibling-items").replaceChildren(...siblings.map((s) => {
    const li = el("li");
    li.append(el("span", `${short(s.actor)}:${s.seq} · ${stamp(hlcMs(s.hlc))} · `, "note"),
      el("code", s.deleted ? "(deleted)" : JSON.stringify(s.value)));
    return li;
  }));
}

function pickCell(which, hlc) {
  const td = el("td");
  const r = el("input");
  r.type = "radio";
  r.name = `ex-pick-${which}`;
  r.checked = ex.pick[which] === hlc;
  r.setAttribute("aria-label", `diff ${which.toUpperCase()}`);
  r.addEventListener("change", () => { ex.pick[which] = hlc; });
  td.append(r);
  return td;
}

function showHistory() {
  const body = $("ex-history").tBodies[0];
  body.replaceChildren(...ex.versions.map((v) => {
    const tr = el("tr");
    tr.dataset.hlc = v.hlc;
    const when = el("button", stamp(v.ms), "link");
    when.type = "button";
    when.title = "show the value as of this version";
    when.addEventListener("click", () => { $("ex-slider").value = String(v.ms); asOf(); });
    const whenCell = el("td");
    whenCell.append(when);
    const change = ex.kind === "docs"
      ? (v.deleted ? "(deleted)" : v.pruned ? "(value pruned by retention)" : JSON.stringify(v.value))
      : `${v.paths.join(", ") || "(no paths)"}${v.truncated ? " …" : ""}`;
    tr.append(pickCell("a", v.hlc), pickCell("b", v.hlc), whenCell, el("td", v.hlc),
      el("td", `${short(v.actor)}:${v.seq}`, "mono"), el("td", change, "change"));
    return tr;
  }));
}

// ---- time travel --------------------------------------------------------------------------

function setupSlider() {
  const s = $("ex-slider");
  const now = Date.now();
  if (ex.versions.length === 0) {
    s.disabled = true;
    $("ex-asof-time").textContent = "";
    $("ex-asof-note").textContent = "no versions yet";
    $("ex-asof-value").textContent = "";
    return;
  }
  const oldest = ex.versions[ex.versions.length - 1].ms;
  s.disabled = false;
  // One step before the first version shows the key before it existed.
  s.min = String(oldest - 1);
  s.max = String(Math.max(now, ex.versions[0].ms));
  s.value = s.max;
  asOf();
}

// The value as of the slider's time, from the as-of API (debounced while dragging).
function asOf() {
  clearTimeout(ex.asOfTimer);
  const ms = Number($("ex-slider").value);
  const at = ex.versions.find((v) => v.ms <= ms);
  const index = at ? ex.versions.length - ex.versions.indexOf(at) : 0;
  $("ex-asof-time").textContent = `as of ${stamp(ms)}`;
  $("ex-asof-note").textContent = at
    ? ` — version ${index} of ${ex.versions.length} (${short(at.actor)}:${at.seq})`
    : " — before the first version";
  for (const tr of $("ex-history").tBodies[0].rows) tr.classList.toggle("asof", !!at && tr.dataset.hlc === at.hlc);
  const seq = ++ex.asOfSeq;
  const { kind, key } = ex;
  ex.asOfTimer = setTimeout(async () => {
    const q = new URLSearchParams({ as_of: String(ms) });
    let text;
    try {
      const r = await getJson(`${route(KIND[kind].value, key)}?${q}`);
      text = json(r.value);
    } catch (e) {
      if (e instanceof ApiError && e.status === 410) {
        text = `(pruned by retention: ${e.message})`;
      } else if (!notFound(e)) { report(e); return; } else {
        text = "(did not exist, or deleted, at this time)";
      }
    }
    if (seq === ex.asOfSeq) $("ex-asof-value").textContent = text;
  }, 60);
}

// ---- diff ---------------------------------------------------------------------------------

async function diff() {
  const { a, b } = ex.pick;
  if (!a || !b) {
    $("ex-edit-note").textContent = "";
    $("ex-diff").hidden = false;
    $("ex-diff-title").textContent = "Pick two versions (A and B) first.";
    $("ex-diff-table").tBodies[0].replaceChildren();
    return;
  }
  const q = new URLSearchParams({ from: a, to: b });
  const d = await getJson(`${route(KIND[ex.kind].diff, ex.key)}?${q}`);
  $("ex-diff").hidden = false;
  $("ex-diff-title").textContent = `Diff ${a} → ${b}: ${d.changes.length} change${d.changes.length === 1 ? "" : "s"}`;
  const cell = (v) => el("td", v === undefined ? "" : JSON.stringify(v), "mono");
  $("ex-diff-table").tBodies[0].replaceChildren(...d.changes.map((c) => {
    const tr = el("tr", null, `op-${c.op}`);
    tr.append(el("td", c.path || "(whole value)", "mono"), el("td", c.op), cell(c.from), cell(c.to));
    return tr;
  }));
}

// ---- writing ------------------------------------------------------------------------------

async function save() {
  const note = $("ex-edit-note");
  let value;
  try {
    value = JSON.parse($("ex-editor").value);
  } catch (e) {
    note.textContent = `not valid JSON: ${e.message}`;
    note.className = "note err";
    return;
  }
  const { kind, key } = ex;
  let w;
  if (kind === "docs") {
    w = await sendJson("PUT", route(KIND.docs.value, key), value);
  } else if (ex.versions.length === 0) {
    w = await sendJson("POST", route(KIND.twins.value, key), value);
  } else {
    w = await sendJson("PATCH", route(KIND.twins.value, key), value, MERGE_PATCH);
  }
  note.className = "note ok";
  note.textContent = w.seq === null ? "nothing changed" : `wrote ${short(w.actor)}:${w.seq} at HLC ${w.hlc}`;
  ex.pick = { a: null, b: null };
  await load({ fillEditor: kind === "twins" });
  listKeys().catch(report);
}

// ---- wiring -------------------------------------------------------------------------------

// Changes to the open key (from this page, the CLI, MQTT or sync) show at once.
function listen() {
  const es = eventSource("/v1/events?kind=doc");
  es.addEventListener("change", (ev) => {
    let d;
    try { d = JSON.parse(ev.data); } catch { return; }
    if (ex.key !== null && d.key === ex.key) load().catch(report);
    else if (d.key && d.key.startsWith($("ex-prefix").value)) listKeys().catch(report);
  });
}

export function start() {
  let typing = 0;
  $("ex-kind").addEventListener("change", () => { ex.listKind = $("ex-kind").value; listKeys().catch(report); });
  $("ex-prefix").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => listKeys().catch(report), 150);
  });
  $("ex-open").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = $("ex-new-key").value.trim();
    if (key) open(ex.listKind, key);
  });
  $("ex-slider").addEventListener("input", asOf);
  $("ex-diff-btn").addEventListener("click", () => diff().catch(report));
  $("ex-save").addEventListener("click", () => save().catch((e) => {
    const note = $("ex-edit-note");
    note.className = "note err";
    note.textContent = e.message;
  }));
  listen();
}

// Called when the explorer becomes visible; `rest` is what follows `#explorer/` in the URL.
export function show(rest) {
  const [kind, ...key] = (rest || "").split("/");
  if ((kind === "docs" || kind === "twins") && key.length) {
    const k = decodeURIComponent(key.join("/"));
    if (k !== ex.key || kind !== ex.kind) { open(kind, k); return; }
  }
  listKeys().catch(report);
}
