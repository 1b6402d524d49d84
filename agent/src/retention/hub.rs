//! The retention loop of a hub replica on PostgreSQL: every `retention.every`, one
//! [`PgStore::prune`] pass with the readings rules of `[retention]` (`readings`,
//! `[[retention.series]]`, `rollups`, `step_rows`) and document history
//! (`[retention.docs]`). Replicas take turns through the
//! database (one pass at a time for the hub; a replica that finds another pruning skips
//! its turn). What it did goes to [`RetentionState`] (`/v1/status` → `store.retention`)
//! and `/metrics` as on SQLite (`doc_versions` counts the document versions pruned). Which
//! `[retention]` keys a hub refuses (the disk budget) is `RetentionConfig::validate_for_postgres`; twin compaction does not
//! apply (`Config::for_backend`). Never stops the agent: a failed pass is logged and tried
//! again at the next tick.

use std::time::Instant;

use kdelta_pg::PgStore;
use tokio_util::sync::CancellationToken;

use super::RetentionConfig;
use super::task::{HubRetention, RetentionState, now_ms, round_ms};
use crate::metrics::Metrics;

/// Runs PostgreSQL prune passes every `config.every` until `cancel`. Returns at once when
/// `[retention]` keeps every reading, rollup and document version.
pub async fn hub_retention_loop(
    store: PgStore,
    config: RetentionConfig,
    state: std::sync::Arc<RetentionState>,
    metrics: std::sync::Arc<Metrics>,
    cancel: CancellationToken,
) {
    let policy = config.policy();
    if policy.keeps_all_readings() && policy.docs.keeps_everything() {
        return;
    }
    state.update(|s| {
        s.enabled = true;
        s.hub = Some(HubRetention::default());
    });
    tracing::info!(
        "retention: pruning the hub's readings and document history every {} ({} rows per step; one replica at a time)",
        humantime::format_duration(config.every),
        config.step_rows
    );
    let mut ticker = tokio::time::interval(config.every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let started = Instant::now();
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            r = store.prune(&policy, now_ms(), config.step_rows) => r,
        };
        let took = started.elapsed();
        match result {
            Ok(pass) if !pass.ran => state.update(|s| {
                if let Some(hub) = &mut s.hub {
                    hub.ran = false;
                    hub.turns_skipped_total += 1;
                }
            }),
            Ok(pass) => {
                let report = pass.pruned;
                metrics.retention_pass(&report, took);
                if report.readings + report.rollups + report.doc_versions > 0
                    || !pass.partitions_dropped.is_empty()
                {
                    tracing::info!(
                        readings = report.readings,
                        rollups = report.rollups,
                        doc_versions = report.doc_versions,
                        partitions = pass.partitions_dropped.len(),
                        "retention pruned {} readings, {} rollup rows and {} document versions (dropping {} month partitions whole) in {}",
                        report.readings,
                        report.rollups,
                        report.doc_versions,
                        pass.partitions_dropped.len(),
                        humantime::format_duration(round_ms(took))
                    );
                }
                state.update(|s| {
                    s.at_ms = Some(now_ms());
                    s.pruned = report;
                    s.took_ms = took.as_millis() as u64;
                    s.error = None;
                    s.total.add(&report);
                    if let Some(hub) = &mut s.hub {
                        hub.ran = true;
                        hub.partitions_dropped_total += pass.partitions_dropped.len() as u64;
                        hub.partitions_dropped = pass.partitions_dropped;
                        hub.partitions_deferred = pass.partitions_deferred;
                    }
                });
            }
            Err(e) => state.failed(&e, config.every),
        }
    }
}
