//! Read-side subcommands about the agent and its readings: `status`, `sources`, `series`,
//! `latest`, `query`.

use serde_json::Value;

use super::args::{Conn, LatestArgs, QueryArgs};
use super::show::{array, cell, pretty, table, time_arg, ts};

/// `kdelta status`.
pub async fn status(conn: Conn) -> anyhow::Result<()> {
    let c = conn.client()?;
    let answer = c.get(c.url("v1/status", &[])).await?;
    if conn.json {
        println!("{}", pretty(&answer));
        return Ok(());
    }
    for (k, line) in status_lines(&c.base(), &answer) {
        println!("{k:<9} {line}");
    }
    Ok(())
}

/// The status answer as a few readable lines, each with its label; fields the agent does
/// not send are left out.
fn status_lines(base: &str, v: &Value) -> Vec<(&'static str, String)> {
    let num = |p: &str| v.pointer(p).and_then(Value::as_u64);
    let text = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_owned);
    let mut lines: Vec<(&str, String)> = Vec::new();
    let mut agent = base.to_owned();
    if let Some(version) = text("/version") {
        agent.push_str(&format!(" — kdelta {version}"));
    }
    if let Some(up) = num("/uptime_s") {
        agent.push_str(&format!(
            ", up {}",
            humantime::format_duration(std::time::Duration::from_secs(up))
        ));
    }
    match v.get("ready").and_then(Value::as_bool) {
        Some(true) => agent.push_str(", ready"),
        Some(false) => agent.push_str(", NOT ready"),
        None => {}
    }
    lines.push(("agent", agent));
    if let Some(actor) = text("/actor") {
        lines.push(("actor", actor));
    }
    if let Some(dir) = text("/data_dir") {
        let size = num("/db_bytes")
            .map(|b| format!(" ({} database)", human_bytes(b)))
            .unwrap_or_default();
        lines.push(("data", format!("{dir}{size}")));
    }
    if let (Some(readings), Some(series)) = (num("/counts/readings"), num("/counts/series")) {
        lines.push((
            "store",
            format!(
                "{readings} readings in {series} series, {} documents ({} versions), {} changes",
                num("/counts/doc_keys").unwrap_or(0),
                num("/counts/doc_versions").unwrap_or(0),
                num("/counts/changes").unwrap_or(0)
            ),
        ));
    }
    if let Some(pct) = v.pointer("/disk/used_percent").and_then(Value::as_f64) {
        let free = num("/disk/available_bytes")
            .map(|b| format!(", {} available", human_bytes(b)))
            .unwrap_or_default();
        // The reserve kept for a full disk (docs/storage.md): held, released, or why not.
        let reserve = match (
            text("/store/write_health/reserve/state"),
            num("/store/write_health/reserve/bytes"),
        ) {
            (Some(state), Some(bytes)) if state != "disabled" => {
                format!(
                    ", reserve {} {}",
                    human_bytes(bytes),
                    state.replace('_', " ")
                )
            }
            _ => String::new(),
        };
        lines.push(("disk", format!("{pct:.1}% used{free}{reserve}")));
    }
    if let Some(full) = text("/store/write_health/disk_full") {
        lines.push(("DISK FULL", format!("writes refused (507): {full}")));
    }
    let wal = num("/store/wear/wal_bytes")
        .map(|b| format!(", WAL {}", human_bytes(b)))
        .unwrap_or_default();
    if let Some(per_day) = num("/store/wear/write_bytes_per_day") {
        lines.push(("writes", format!("{}/day{wal}", human_bytes(per_day))));
    } else if let Some(since) = num("/store/wear/write_bytes") {
        // The first 10 minutes say nothing of a day: what was written so far.
        lines.push(("writes", format!("{} since start{wal}", human_bytes(since))));
    }
    let oldest = v
        .pointer("/store/horizon/oldest_reading_ms")
        .and_then(Value::as_i64);
    let enabled = v
        .pointer("/store/retention/enabled")
        .and_then(Value::as_bool)
        == Some(true);
    if oldest.is_some() || enabled {
        let mut parts = Vec::new();
        if let Some(oldest) = oldest {
            parts.push(format!(
                "oldest reading {}",
                crate::time::format_rfc3339_ms(oldest)
            ));
        }
        if enabled {
            let total = num("/store/retention/total/readings").unwrap_or(0);
            let docs = num("/store/retention/total/doc_versions").unwrap_or(0);
            let mut line = format!("{total} readings and {docs} document versions pruned");
            // Age passes and the disk budget's passes both compact log runs.
            let runs = num("/store/retention/total/changes_compacted").unwrap_or(0)
                + num("/store/budget/changes_compacted_total").unwrap_or(0);
            if runs > 0 {
                line.push_str(&format!(", {runs} changes compacted into log runs"));
            }
            parts.push(format!("{line} since start"));
        }
        lines.push(("retention", parts.join("; ")));
    }
    if let Some(used) = num("/store/budget/used_bytes") {
        let mut line = human_bytes(used);
        if let Some(limit) = num("/store/budget/limit_bytes") {
            let pct = v
                .pointer("/store/budget/fraction")
                .and_then(Value::as_f64)
                .unwrap_or(0.0)
                * 100.0;
            line.push_str(&format!(" of {} ({pct:.0}%)", human_bytes(limit)));
        }
        if let Some(min_free) = num("/store/budget/min_free_bytes") {
            line.push_str(&format!(", keeping {} free", human_bytes(min_free)));
        }
        if v.pointer("/store/budget/holding_unacked")
            .and_then(Value::as_bool)
            == Some(true)
        {
            line.push_str("; OVER BUDGET, holding readings upstream has not acknowledged");
        }
        if let Some(c) = v
            .pointer("/store/budget/cannot_meet")
            .filter(|c| !c.is_null())
        {
            let held: Vec<String> = c["held_by"]
                .as_array()
                .map(|hs| {
                    hs.iter()
                        .filter_map(|h| {
                            let holder = h["holder"].as_str()?.replace('_', " ");
                            Some(format!("{holder} {}", human_bytes(h["bytes"].as_u64()?)))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let over = c["over_bytes"].as_u64().unwrap_or(0);
            line.push_str(&format!(
                "; CANNOT BE MET ({} over): nothing more may be pruned, the space is held by {}",
                human_bytes(over),
                if held.is_empty() {
                    "(not measured)".to_owned()
                } else {
                    held.join(", ")
                }
            ));
        }
        let dropped = num("/store/budget/dropped_unacked_total").unwrap_or(0);
        if dropped > 0 {
            line.push_str(&format!(
                "; {dropped} unacknowledged readings dropped at the hard limit (gap records)"
            ));
        }
        lines.push(("budget", line));
    }
    if let Some(rss) = num("/rss_bytes") {
        lines.push(("memory", format!("{} resident", human_bytes(rss))));
    }
    if let Some(trusted) = v.pointer("/clock/trusted").and_then(Value::as_bool) {
        let reason = text("/clock/reason").unwrap_or_default();
        let verdict = if trusted { "trusted" } else { "NOT trusted" };
        let mut line = format!("{verdict}: {reason}");
        if !trusted && let Some(wall) = num("/clock/wall_ms") {
            line.push_str(&format!(
                "; wall clock {}",
                crate::time::format_rfc3339_ms(wall as i64)
            ));
        }
        if !trusted && let Some(best) = num("/clock/best_known_ms") {
            line.push_str(&format!(
                "; best known time {}",
                crate::time::format_rfc3339_ms(best as i64)
            ));
        }
        lines.push(("clock", line));
    }
    // A store whose own changes ran ahead of the trusted clock took a new actor at this
    // start (docs/clock.md, "A store stamped in the future").
    if let (Some(at), Some(until), Some(old), Some(new)) = (
        num("/clock/rebased/at_ms"),
        num("/clock/rebased/old_newest_ms"),
        text("/clock/rebased/old_actor"),
        text("/clock/rebased/new_actor"),
    ) {
        lines.push((
            "rebased",
            format!(
                "at {}: this store's changes ran ahead of the clock, to {}; it writes as {new} now \
                 (was {old}, whose changes peers hold back until their time)",
                crate::time::format_rfc3339_ms(at as i64),
                crate::time::format_rfc3339_ms(until as i64)
            ),
        ));
    }
    if let Some(digest) = text("/digest") {
        lines.push(("digest", digest));
    }
    if let Some(Value::Object(vv)) = v.get("version_vector") {
        let entries: Vec<String> = vv.iter().map(|(a, s)| format!("{a}:{s}")).collect();
        lines.push(("versions", entries.join(" ")));
    }
    lines
}

pub use crate::retention::human_bytes;

/// `kdelta sources`.
pub async fn sources(conn: Conn) -> anyhow::Result<()> {
    let c = conn.client()?;
    let answer = c.get(c.url("v1/sources", &[])).await?;
    if conn.json {
        println!("{}", pretty(&answer));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = array(&answer, &["sources"])
        .iter()
        .map(|s| {
            let field = |k: &str| s.get(k).cloned().unwrap_or(Value::Null);
            let interval = field("interval_ms").as_u64().map_or_else(
                || "-".into(),
                |ms| {
                    if ms == 0 {
                        "stream".into()
                    } else {
                        humantime::format_duration(std::time::Duration::from_millis(ms)).to_string()
                    }
                },
            );
            vec![
                cell(&field("name"), 24),
                cell(&field("kind"), 12),
                interval,
                cell(&field("readings"), 12),
                ts(&field("last_reading_ms")),
                cell(&field("errors"), 8),
                cell(&field("missed_ticks"), 8),
                rejected(&field("rejected")),
                cell(&field("last_error"), 60),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "KIND",
            "EVERY",
            "READINGS",
            "LAST READING",
            "ERRORS",
            "MISSED",
            "REFUSED",
            "LAST ERROR",
        ],
        &rows,
    );
    Ok(())
}

/// Readings refused one by one, per reason: `0`, or `3 (not_finite 2, bad_timestamp 1)`.
fn rejected(by_reason: &Value) -> String {
    let Some(map) = by_reason.as_object() else {
        return "0".into();
    };
    let total: u64 = map.values().filter_map(Value::as_u64).sum();
    if total == 0 {
        return "0".into();
    }
    let parts: Vec<String> = map
        .iter()
        .map(|(reason, n)| format!("{reason} {}", n.as_u64().unwrap_or(0)))
        .collect();
    format!("{total} ({})", parts.join(", "))
}

/// `kdelta series`.
pub async fn series(conn: Conn) -> anyhow::Result<()> {
    let c = conn.client()?;
    // Every page, as one answer.
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let query: Vec<(&str, String)> = after.iter().map(|a| ("after", a.clone())).collect();
        let page = c.get(c.url("v1/series", &query)).await?;
        all.extend(array(&page, &["series"]).iter().cloned());
        match page.get("next_after").and_then(Value::as_str) {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    let answer = serde_json::json!({ "series": all });
    if conn.json {
        println!("{}", pretty(&answer));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = array(&answer, &["series"])
        .iter()
        .map(|s| {
            let field = |k: &str| s.get(k).cloned().unwrap_or(Value::Null);
            vec![
                cell(&field("name"), 48),
                cell(&field("unit"), 8),
                cell(&field("count"), 12),
                ts(&field("first_ts")),
                ts(&field("last_ts")),
            ]
        })
        .collect();
    table(&["SERIES", "UNIT", "COUNT", "FIRST", "LAST"], &rows);
    Ok(())
}

/// `kdelta latest [SERIES…]`.
pub async fn latest(args: LatestArgs) -> anyhow::Result<()> {
    let c = args.conn.client()?;
    let query: Vec<(&str, String)> = args.series.iter().map(|s| ("series", s.clone())).collect();
    let answer = c.get(c.url("v1/readings/latest", &query)).await?;
    if args.conn.json {
        println!("{}", pretty(&answer));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = array(&answer, &["readings", "latest", "series"])
        .iter()
        .map(|r| {
            let field = |k: &str| r.get(k).cloned().unwrap_or(Value::Null);
            vec![
                cell(&field("series"), 48),
                ts(&field("ts")),
                number(&field("value")),
                cell(&field("unit"), 8),
            ]
        })
        .collect();
    table(&["SERIES", "TIME", "VALUE", "UNIT"], &rows);
    Ok(())
}

/// A reading value for display: integers without a fraction, others with up to 6 digits.
fn number(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{x:.0}"),
        Some(x) => {
            let s = format!("{x:.6}");
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        }
        None => cell(v, 20),
    }
}

/// `kdelta query SERIES`.
pub async fn query(args: QueryArgs) -> anyhow::Result<()> {
    let c = args.conn.client()?;
    let from = time_arg(args.from.as_deref().unwrap_or("now-1h"));
    let to = time_arg(args.to.as_deref().unwrap_or("now"));
    let mut query = vec![("series", args.series.clone()), ("from", from), ("to", to)];
    let answer = match args.agg {
        Some(f) => {
            query.push(("bucket", args.bucket.clone()));
            let fns = if f.as_str() == "count" {
                "count".to_owned()
            } else {
                format!("{},count", f.as_str())
            };
            query.push(("fn", fns));
            c.get(c.url("v1/readings/aggregate", &query)).await?
        }
        None => {
            query.push(("limit", args.limit.to_string()));
            c.get(c.url("v1/readings", &query)).await?
        }
    };
    if args.conn.json {
        println!("{}", pretty(&answer));
        return Ok(());
    }
    let unit = answer.get("unit").and_then(Value::as_str).unwrap_or("");
    match args.agg {
        None => {
            let rows: Vec<Vec<String>> = array(&answer, &["readings"])
                .iter()
                .map(|r| vec![ts(&r["ts"]), number(&r["value"])])
                .collect();
            let value_header = if unit.is_empty() {
                "VALUE".to_owned()
            } else {
                format!("VALUE ({unit})")
            };
            table(&["TIME", &value_header], &rows);
            if answer.get("next_cursor").is_some_and(|c| !c.is_null()) {
                eprintln!("(more readings in the range; raise --limit or use `kdelta export`)");
            }
        }
        Some(f) => {
            let rows: Vec<Vec<String>> = array(&answer, &["buckets"])
                .iter()
                .map(|b| {
                    let value = b
                        .get(f.as_str())
                        .or_else(|| b.get("value"))
                        .cloned()
                        .unwrap_or(Value::Null);
                    vec![
                        ts(b.get("start").unwrap_or(&Value::Null)),
                        number(&value),
                        cell(&b["count"], 10),
                    ]
                })
                .collect();
            let value_header = if unit.is_empty() || f.as_str() == "count" {
                f.as_str().to_uppercase()
            } else {
                format!("{} ({unit})", f.as_str().to_uppercase())
            };
            table(&["BUCKET", &value_header, "READINGS"], &rows);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(lines: &'a [(&str, String)], label: &str) -> Option<&'a str> {
        lines
            .iter()
            .find(|(k, _)| *k == label)
            .map(|(_, l)| l.as_str())
    }

    #[test]
    fn a_rebase_at_this_start_gets_its_own_status_line() {
        let status = serde_json::json!({
            "clock": {
                "trusted": true,
                "reason": "synchronised (NTP)",
                "rebased": {
                    "old_actor": "aaaa",
                    "new_actor": "bbbb",
                    "old_newest_ms": 1_796_000_000_000u64,
                    "at_ms": 1_764_000_000_000u64,
                },
            },
        });
        let lines = status_lines("http://x", &status);
        assert_eq!(line(&lines, "clock"), Some("trusted: synchronised (NTP)"));
        let rebased = line(&lines, "rebased").expect("a rebased line");
        assert!(
            rebased.starts_with("at 2025-11-24T16:00:00.000Z:"),
            "{rebased}"
        );
        assert!(rebased.contains("to 2026-11-30T"), "{rebased}");
        assert!(
            rebased.contains("writes as bbbb now (was aaaa"),
            "{rebased}"
        );

        let plain = serde_json::json!({"clock": {"trusted": true, "reason": "r"}});
        assert_eq!(line(&status_lines("http://x", &plain), "rebased"), None);
    }

    #[test]
    fn the_retention_line_counts_changes_compacted_into_log_runs() {
        let status = |compacted: u64| {
            serde_json::json!({"store": {"retention": {"enabled": true, "total": {
                "readings": 90, "doc_versions": 2, "changes_compacted": compacted}}}})
        };
        let lines = status_lines("http://x", &status(0));
        assert_eq!(
            line(&lines, "retention"),
            Some("90 readings and 2 document versions pruned since start")
        );
        let lines = status_lines("http://x", &status(28));
        assert_eq!(
            line(&lines, "retention"),
            Some(
                "90 readings and 2 document versions pruned, 28 changes compacted into log \
                 runs since start"
            )
        );
    }
}
