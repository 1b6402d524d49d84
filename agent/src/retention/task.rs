//! The retention loop: every `retention.every`, one prune pass through the store (readings,
//! rollups, then document history; small transactions queued with ingest), its outcome kept in [`RetentionState`] for
//! `/v1/status` and counted in `/metrics`. A failed pass (a full disk, a busy store) is logged
//! and tried again at the next tick; it never stops the agent.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use kdelta_sync::{PruneReport, RetentionPolicy, Store};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::RetentionConfig;
use crate::metrics::Metrics;

/// What retention last did, for `/v1/status`.
#[derive(Debug, Default)]
pub struct RetentionState {
    inner: Mutex<LastPass>,
}

/// The last prune pass.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LastPass {
    /// Whether a policy that prunes anything is configured.
    pub enabled: bool,
    /// Unix ms when the last pass ended.
    pub at_ms: Option<i64>,
    /// What it removed.
    pub pruned: PruneReport,
    /// How long it took (ms).
    pub took_ms: u64,
    /// Its error, when it failed.
    pub error: Option<String>,
    /// Totals since the agent started.
    pub total: PruneReport,
}

impl RetentionState {
    /// A copy of the last pass.
    pub fn last(&self) -> LastPass {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut LastPass)) {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Runs prune passes every `config.every` until `cancel`. Returns at once when the policy
/// keeps everything.
pub async fn retention_loop(
    store: Store,
    config: RetentionConfig,
    state: std::sync::Arc<RetentionState>,
    metrics: std::sync::Arc<Metrics>,
    cancel: CancellationToken,
) {
    let policy: RetentionPolicy = config.policy();
    if policy.keeps_everything() {
        return;
    }
    state.update(|s| s.enabled = true);
    tracing::info!(
        "retention: pruning every {} ({} rows per step)",
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
            Ok(report) => {
                metrics.retention_pass(&report, took);
                if report.readings + report.rollups + report.doc_versions > 0 {
                    tracing::info!(
                        readings = report.readings,
                        rollups = report.rollups,
                        doc_versions = report.doc_versions,
                        steps = report.steps,
                        "retention pruned {} readings, {} rollup rows and {} document versions in {}",
                        report.readings,
                        report.rollups,
                        report.doc_versions,
                        humantime::format_duration(round_ms(took))
                    );
                }
                state.update(|s| {
                    s.at_ms = Some(now_ms());
                    s.pruned = report;
                    s.took_ms = took.as_millis() as u64;
                    s.error = None;
                    s.total.add(&report);
                });
            }
            Err(e) => {
                tracing::warn!(
                    "retention pass failed, trying again in {}: {e}",
                    humantime::format_duration(config.every)
                );
                state.update(|s| {
                    s.at_ms = Some(now_ms());
                    s.error = Some(e.to_string());
                });
            }
        }
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}
