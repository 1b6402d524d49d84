//! Operational endpoints: `GET /v1/status`, `/healthz`, `/readyz`, `/metrics`,
//! `GET /v1/sources`. Process figures (RSS from `/proc/self/status`, disk use by the sensors
//! crate's `statvfs` call) are read here on request; nothing is cached. Each serves both
//! backends: on a PostgreSQL hub replica readiness follows the database's periodic health
//! check, and the status shows the database's actor, version vector size and digest.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::format::Accept;
use super::{ApiError, ErrorCode};
use crate::backend::Backend;
use crate::state::Agent;

/// How long `/readyz` waits for the store's writer to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /healthz`: 200 while the process serves HTTP at all.
pub async fn healthz() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

/// `GET /readyz`: 200 when startup finished and the store can serve. SQLite: the store's
/// writer answers within 2 s and its last write group committed; writes nothing to the disk
/// (a probe is a round trip to the writer thread). `503 not_ready` while starting or
/// draining and while the disk is full (the message starts with `disk_full:`), `503
/// unavailable` when the store is stuck or its last commit failed for another reason.
/// PostgreSQL: `503 not_ready` with the reason while the last health check of the database
/// (every 2 s, not one per probe) failed.
pub async fn readyz(State(state): State<Agent>) -> Result<Response, ApiError> {
    if !state.ready.load(Ordering::Acquire) {
        return Err(ApiError::new(
            ErrorCode::NotReady,
            "the agent is starting or shutting down",
        ));
    }
    match &state.backend {
        Backend::Sqlite(store) => {
            let budget = state.retention.last().budget.is_some();
            sqlite_ready(store, budget).await?
        }
        #[cfg(feature = "postgres")]
        Backend::Postgres(hub) => {
            if let Some(why) = hub.unreachable() {
                return Err(ApiError::new(
                    ErrorCode::NotReady,
                    format!(
                        "PostgreSQL is unreachable: {why}; devices back off and resume once it answers"
                    ),
                ));
            }
        }
    }
    Ok(axum::Json(json!({ "status": "ready" })).into_response())
}

async fn sqlite_ready(store: &kdelta_sync::Store, has_budget: bool) -> Result<(), ApiError> {
    let health = match tokio::time::timeout(PROBE_TIMEOUT, store.probe()).await {
        Ok(Ok(health)) => health,
        Ok(Err(e)) => {
            return Err(ApiError::unavailable(format!(
                "the store is not writable: {e}"
            )));
        }
        Err(_) => {
            return Err(ApiError::unavailable(format!(
                "the store's writer did not answer within {} s",
                PROBE_TIMEOUT.as_secs()
            )));
        }
    };
    if let Some(detail) = &health.disk_full {
        return Err(ApiError::new(
            ErrorCode::NotReady,
            format!(
                "disk_full: the disk holding the store is full ({detail}); writes are refused with 507 until there is room again: {}; reads keep working",
                crate::retention::full_disk_remedy(has_budget)
            ),
        ));
    }
    if let Some(failure) = &health.last_failure {
        return Err(ApiError::unavailable(format!(
            "the store's last commit failed: {failure}"
        )));
    }
    Ok(())
}

/// `GET /metrics`: Prometheus (OpenMetrics) text; store gauges are refreshed first (on a
/// PostgreSQL hub: the sync figures, whose lags need the database's version vector).
pub async fn metrics(State(state): State<Agent>) -> Response {
    let local = match &state.backend {
        Backend::Sqlite(store) => {
            sqlite_gauges(&state, store).await;
            store.version_vector()
        }
        #[cfg(feature = "postgres")]
        Backend::Postgres(hub) => match hub.store.version_vector().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "reading the version vector for /metrics");
                Default::default()
            }
        },
    };
    state.metrics.set_uptime(state.started.elapsed().as_secs());
    state
        .metrics
        .set_sync_peers(state.peers.metric_samples(&local));
    let mut resp = state.metrics.encode().into_response();
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    resp
}

/// Refreshes the SQLite store's gauges (figures, space, retention horizon).
async fn sqlite_gauges(state: &Agent, store: &kdelta_sync::Store) {
    match store.stats().await {
        Ok(stats) => state.metrics.set_store_stats(&stats),
        Err(e) => tracing::warn!(error = %e, "reading store figures for /metrics"),
    }
    let horizon = match store.retention_horizon().await {
        Ok(h) => h.iter().filter_map(|(_, t)| *t).min(),
        Err(e) => {
            tracing::warn!(error = %e, "reading the retention horizon for /metrics");
            None
        }
    };
    state
        .metrics
        .set_space(&store.write_health(), storage_write_bytes(), horizon);
}

/// `GET /v1/sources`: `{"sources": [{name, kind, interval_ms, last_reading_ms, readings,
/// last_error, errors, missed_ticks, rejected}]}`, the configured sources and then, while
/// the MQTT client ingests, a row named `mqtt`, and once `POST /v1/readings` has left out
/// a reading, a row named `http`.
pub async fn sources(State(state): State<Agent>, Accept(reply): Accept) -> Response {
    let mut sources = match state.sources.read() {
        Ok(g) => g.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    // MQTT ingest is not a configured source, but its readings and rejects are shown alike.
    if let Some(mqtt) = state
        .mqtt_ingest
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
    {
        sources.push(mqtt);
    }
    if !state.metrics.rejected_readings_of("http").is_empty() {
        sources.push(crate::sources::SourceStatus {
            name: "http".into(),
            kind: "http".into(),
            readings: state.metrics.readings_ingested_of("http"),
            ..Default::default()
        });
    }
    for s in &mut sources {
        s.rejected = state.metrics.rejected_readings_of(&s.name);
    }
    reply.ok(&json!({ "sources": sources }))
}

/// Series whose retention horizon `/v1/status` lists one by one (beyond: only the oldest).
const HORIZON_SERIES: usize = 1000;

/// `GET /v1/status`.
pub async fn status(
    State(state): State<Agent>,
    Accept(reply): Accept,
) -> Result<Response, ApiError> {
    match &state.backend {
        Backend::Sqlite(store) => sqlite_status(&state, store, reply).await,
        #[cfg(feature = "postgres")]
        Backend::Postgres(hub) => Ok(reply.ok(&pg_status(&state, hub).await)),
    }
}

/// `/v1/status` of a PostgreSQL hub replica: the database's actor (every replica's),
/// version vector size and digest, whether the database answers, and retention. The vector and the
/// digest are `null` (with `database.error`) while it does not.
#[cfg(feature = "postgres")]
async fn pg_status(state: &Agent, hub: &crate::backend::PgHub) -> serde_json::Value {
    let (vector, digest) = tokio::join!(hub.store.version_vector(), hub.store.digest());
    let error = hub
        .unreachable()
        .or_else(|| vector.as_ref().err().map(ToString::to_string))
        .or_else(|| digest.as_ref().err().map(ToString::to_string));
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "backend": "postgres",
        "actor": hub.store.actor().to_string(),
        "ready": state.ready.load(Ordering::Acquire),
        "uptime_s": state.started.elapsed().as_secs(),
        "version_vector_size": vector.as_ref().ok().map(|v| v.len()),
        "digest": digest.ok().map(|d| d.to_string()),
        "database": {
            "reachable": error.is_none(),
            "error": error,
        },
        // What this replica's retention passes did (`hub`: partitions dropped, turns
        // skipped while another replica pruned).
        "store": { "retention": state.retention.last() },
        "rss_bytes": rss_bytes(),
    })
}

async fn sqlite_status(
    state: &Agent,
    store: &kdelta_sync::Store,
    reply: super::Format,
) -> Result<Response, ApiError> {
    let stats = store.stats().await?;
    let disk = disk_usage(&state.data_dir);
    let horizon = store.retention_horizon().await?;
    let oldest = horizon.iter().filter_map(|(_, t)| *t).min();
    let per_series: serde_json::Map<String, serde_json::Value> = horizon
        .iter()
        .take(HORIZON_SERIES)
        .map(|(name, t)| (name.clone(), json!(t)))
        .collect();
    let uptime = state.started.elapsed();
    let retention = state.retention.last();
    let written = storage_write_bytes();
    let wal = store.path().with_extension("db-wal");
    let wal_bytes = std::fs::metadata(&wal).map(|m| m.len()).ok();
    Ok(reply.ok(&json!({
        "version": env!("CARGO_PKG_VERSION"),
        "backend": "sqlite",
        "actor": stats.actor.to_string(),
        "ready": state.ready.load(Ordering::Acquire),
        "uptime_s": state.started.elapsed().as_secs(),
        "version_vector": stats.version_vector,
        "digest": stats.digest,
        "counts": {
            "changes": stats.changes,
            "readings": stats.readings,
            "series": stats.series,
            "doc_keys": stats.doc_keys,
            "doc_versions": stats.doc_versions,
        },
        "db_bytes": stats.db_bytes,
        "store": {
            "write_health": store.write_health(),
            "retention": retention,
            "budget": retention.budget,
            "horizon": {
                "oldest_reading_ms": oldest,
                "series": per_series,
                "truncated": horizon.len() > HORIZON_SERIES,
            },
            "wear": {
                "write_bytes": written,
                "write_bytes_per_day": written.and_then(|b| per_day(b, uptime)),
                "wal_bytes": wal_bytes,
            },
        },
        "data_dir": state.data_dir.display().to_string(),
        "disk": disk,
        "rss_bytes": rss_bytes(),
        "clock": state.clock.as_ref().map(|c| c.status()),
    })))
}

/// Filesystem figures of the data directory: `{total_bytes, free_bytes, available_bytes,
/// used_percent}` (as `df` counts, to one decimal), or `null` when `statvfs` fails.
fn disk_usage(dir: &Path) -> serde_json::Value {
    let Ok(d) = kdelta_sensors::system::disk_usage(dir) else {
        return serde_json::Value::Null;
    };
    json!({
        "total_bytes": d.total,
        "free_bytes": d.total.saturating_sub(d.used),
        "available_bytes": d.available,
        "used_percent": d.used_pct().map_or(0.0, |p| (p * 10.0).round() / 10.0),
    })
}

/// `write_bytes` of `/proc/self/io` when the process started its agent
/// ([`mark_storage_writes_start`]).
static WRITE_BYTES_AT_START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// Notes the process's storage writes so far, once, as the agent starts: Linux adds the
/// I/O of reaped children to a process's count and an `exec` keeps it, so a shell that
/// ran `cargo build` and then `exec kdelta start` (scripts/start.sh) would otherwise count
/// the build as the agent's writes.
pub fn mark_storage_writes_start() {
    WRITE_BYTES_AT_START.get_or_init(|| process_write_bytes().unwrap_or(0));
}

/// Bytes this process caused to be written to storage since its agent started (`write_bytes`
/// of `/proc/self/io`): what wears an SD card, WAL and checkpoints included.
pub fn storage_write_bytes() -> Option<u64> {
    let at_start = WRITE_BYTES_AT_START.get().copied().unwrap_or(0);
    Some(process_write_bytes()?.saturating_sub(at_start))
}

fn process_write_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/io").ok()?;
    parse_proc_io_write_bytes(&text)
}

fn parse_proc_io_write_bytes(io: &str) -> Option<u64> {
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Uptime before `write_bytes_per_day` is reported: the first seconds (opening the store,
/// a first checkpoint, catching up with peers) scaled to a day say nothing of the wear.
const PER_DAY_AFTER: Duration = Duration::from_secs(600);

/// `bytes` written over `elapsed`, scaled to a day; `None` before [`PER_DAY_AFTER`].
fn per_day(bytes: u64, elapsed: Duration) -> Option<u64> {
    (elapsed >= PER_DAY_AFTER).then(|| (bytes as f64 * 86_400.0 / elapsed.as_secs_f64()) as u64)
}

/// Resident set size of this process in bytes (`VmRSS` of `/proc/self/status`).
pub fn rss_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&text)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_line() {
        assert_eq!(
            parse_vm_rss("Name:\tkdelta\nVmRSS:\t   12345 kB\nThreads: 3\n"),
            Some(12_345 * 1024)
        );
        assert_eq!(parse_vm_rss("Name:\tkdelta\n"), None);
        assert!(rss_bytes().is_some_and(|b| b > 0));
    }

    #[test]
    fn proc_io_write_bytes() {
        let io = "rchar: 1\nwchar: 2\nsyscr: 3\nsyscw: 4\nread_bytes: 5\nwrite_bytes: 40960\ncancelled_write_bytes: 0\n";
        assert_eq!(parse_proc_io_write_bytes(io), Some(40_960));
        assert_eq!(parse_proc_io_write_bytes("rchar: 1\n"), None);
        assert_eq!(per_day(1000, Duration::from_secs(86_400)), Some(1000));
        assert_eq!(per_day(1000, Duration::from_secs(3_600)), Some(24_000));
        // 4 s after start would have said 21.6 MB/day for 1000 bytes: not reported yet.
        assert_eq!(per_day(1000, Duration::from_secs(4)), None);
        assert_eq!(per_day(1000, Duration::from_secs(599)), None);
    }

    #[test]
    fn disk_of_tmp() {
        let d = disk_usage(&std::env::temp_dir());
        assert!(d["total_bytes"].as_u64().is_some_and(|t| t > 0), "{d}");
        assert!(disk_usage(Path::new("/does/not/exist")).is_null());
    }
}
