// kdelta dashboard, entry module: the status line, the three views (overview, documents and
// twins explorer, series explorer) switched by the URL's #fragment, and the timers. Plain JS
// modules served by the agent itself (no dependencies, works offline); every value from the
// agent is put into the page with textContent, never as HTML.

import { $, bytes, duration, getJson, report } from "./ui/common.js";
import * as overview from "./ui/overview.js";
import * as explorer from "./ui/explorer.js";
import * as seriesView from "./ui/series.js";

const VIEWS = ["overview", "explorer", "series"];

async function refreshStatus() {
  const s = await getJson("/v1/status");
  // A hub replica on PostgreSQL has no local store: no counts, size or disk.
  const counts = s.counts || {};
  const number = (n) => (n == null ? "–" : n.toLocaleString());
  const items = [
    ["version", s.version],
    ["actor", String(s.actor).slice(0, 8)],
    ["up", duration(s.uptime_s)],
    ["readings", number(counts.readings)],
    ["series", number(counts.series)],
    ["changes", number(counts.changes)],
    ["store", s.backend === "postgres" ? "PostgreSQL" : bytes(s.db_bytes)],
    ["disk", s.disk ? `${s.disk.used_percent.toFixed(0)} % used` : "–"],
    ["memory", bytes(s.rss_bytes)],
  ];
  if (s.database && !s.database.reachable) {
    items.unshift(["DATABASE", `unreachable: ${s.database.error}`]);
  }
  // Whether the wall clock is trusted (docs/clock.md); a PostgreSQL hub has no verdict.
  const clock = s.clock;
  if (clock) {
    const verdict = clock.trusted ? "trusted" : "NOT trusted";
    const item = ["clock", `${verdict} (${clock.state}): ${clock.reason}`];
    if (clock.trusted) items.push(item);
    else items.unshift(item);
    // This start rebased a store whose own changes ran ahead of the clock (docs/clock.md).
    const r = clock.rebased;
    if (r) {
      const until = new Date(r.old_newest_ms).toISOString().slice(0, 10);
      items.push(["rebased", `changes ran ahead to ${until}; now writing as ${String(r.new_actor).slice(0, 8)}`]);
    }
  }
  const store = s.store || {};
  if (store.write_health && store.write_health.disk_full) {
    items.unshift(["DISK FULL", "writes refused (507) until space is freed"]);
  }
  if (store.wear && store.wear.write_bytes_per_day != null) {
    items.push(["writes/day", bytes(store.wear.write_bytes_per_day)]);
  } else if (store.wear && store.wear.write_bytes != null) {
    // Per day only after 10 minutes of uptime: what was written so far.
    items.push(["written", bytes(store.wear.write_bytes)]);
  }
  if (store.horizon && store.horizon.oldest_reading_ms != null) {
    items.push(["oldest", new Date(store.horizon.oldest_reading_ms).toISOString().slice(0, 10)]);
  }
  const budget = store.budget;
  if (budget) {
    const limit = budget.limit_bytes != null
      ? ` of ${bytes(budget.limit_bytes)} (${(100 * budget.fraction).toFixed(0)} %)` : "";
    items.push(["budget", bytes(budget.used_bytes) + limit]);
    if (budget.holding_unacked) {
      items.push(["HOLDING", "over budget, keeping readings upstream has not acknowledged"]);
    }
    if (budget.cannot_meet) {
      const held = (budget.cannot_meet.held_by || [])
        .map((h) => `${h.holder.replace("_", " ")} ${bytes(h.bytes)}`).join(", ");
      items.push(["OVER BUDGET", `nothing more may be pruned; held by ${held || "(not measured)"}`]);
    }
  }
  $("status").replaceChildren(...items.map(([k, v]) => {
    const d = document.createElement("div");
    const dt = document.createElement("dt"), dd = document.createElement("dd");
    d.dataset.item = k.toLowerCase();
    dt.textContent = k;
    dd.textContent = String(v);
    d.append(dt, dd);
    return d;
  }));
}

function every(ms, f) {
  const run = () => f().catch(report);
  run();
  setInterval(run, ms);
}

// `#explorer/docs/<key>` → ["explorer", "docs/<key>"].
function showView() {
  const [name, ...rest] = location.hash.replace(/^#/, "").split("/");
  const view = VIEWS.includes(name) ? name : "overview";
  for (const v of VIEWS) $(`view-${v}`).hidden = v !== view;
  for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("current", a.dataset.view === view);
  const arg = rest.join("/");
  if (view === "overview") overview.redraw();
  else if (view === "explorer") explorer.show(arg);
  else seriesView.show(arg).catch(report);
}

function init() {
  every(5000, refreshStatus);
  overview.start(every);
  explorer.start();
  seriesView.start();
  window.addEventListener("hashchange", showView);
  showView();
}

// Modules run after the document is parsed.
init();
