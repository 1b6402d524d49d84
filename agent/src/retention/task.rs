//! The retention loop: every `retention.every`, one age prune pass through the store
//! (readings, rollups, document history, then twin compaction; small transactions queued
//! with ingest) and,
//! with a disk budget, one budget pass (`budget.rs`); their outcome kept in
//! [`RetentionState`] for `/v1/status` and counted in `/metrics`.
//! Both keep the readings upstream peers have not acknowledged (the registry's
//! `upstream_acked`); only the budget's hard limit drops them. A failed pass (a full disk, a
//! busy store) is logged and tried again at the next tick; it never stops the agent.
//!
//! With a budget, a full disk does not wait for the tick: when the store enters its
//! full-disk state (having released its reserve, `reserve.rs`) a **recovery pass** runs at
//! once — the budget pass with room raised to what holding the reserve again needs
//! ([`recovery_room`]) — and again every [`RECOVERY_RETRY`] while the state lasts. The store
//! ends the state itself once the reserve is held again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use kdelta_sync::{PruneReport, RECREATE_FACTOR, RetentionPolicy, Unacked};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::RetentionConfig;
use super::budget::{BudgetPass, RollupMeasure, budget_pass};
use super::unmet::{self, CannotMeet};
use crate::metrics::Metrics;

/// While the disk stays full, a recovery pass runs again this often.
pub const RECOVERY_RETRY: Duration = Duration::from_secs(10);
/// A recovery pass frees at least this much, even with a tiny reserve (or none).
const MIN_RECOVERY_ROOM: u64 = 1 << 20;

/// What the retention loop works with.
pub struct RetentionDeps {
    /// The store it prunes.
    pub store: kdelta_sync::Store,
    /// The data directory (its file system is what `min_free` and shares are of).
    pub data_dir: std::path::PathBuf,
    /// Where it records what it did.
    pub state: std::sync::Arc<RetentionState>,
    /// Where it counts what it did.
    pub metrics: std::sync::Arc<Metrics>,
    /// What every upstream peer is known to hold (`None`: no upstream peer); the sync
    /// registry's `upstream_acked`.
    pub upstream_acked: Box<dyn Fn() -> Option<kdelta_sync::VersionVector> + Send + Sync>,
}

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
    /// The disk budget (`None` without `max_disk` / `min_free`); shown as `store.budget`.
    #[serde(skip)]
    pub budget: Option<BudgetState>,
    /// On a PostgreSQL hub: partitions dropped and turns taken (`hub.rs`).
    #[cfg(feature = "postgres")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hub: Option<HubRetention>,
}

/// What a PostgreSQL hub's passes did beyond the embedded store's figures
/// (`store.retention.hub`; `hub.rs`).
#[cfg(feature = "postgres")]
#[derive(Debug, Clone, Default, Serialize)]
pub struct HubRetention {
    /// Whether this replica's last turn ran a pass (false: another replica was pruning).
    pub ran: bool,
    /// Month partitions of `readings` the last pass dropped whole.
    pub partitions_dropped: Vec<String>,
    /// Partitions it could not detach in time (dropped by the next pass).
    pub partitions_deferred: Vec<String>,
    /// Partitions this replica dropped since it started.
    pub partitions_dropped_total: u64,
    /// Turns skipped because another replica was pruning.
    pub turns_skipped_total: u64,
}

/// The disk budget's state, for `/v1/status` (`store.budget`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct BudgetState {
    /// Bytes the store uses (database + WAL + shm less free pages), as last measured.
    pub used_bytes: u64,
    /// `max_disk` in bytes (`null` without it).
    pub limit_bytes: Option<u64>,
    /// The hard limit in bytes.
    pub hard_limit_bytes: Option<u64>,
    /// `used_bytes / limit_bytes`.
    pub fraction: Option<f64>,
    /// `min_free` in bytes, and the room left (available bytes + the store's free pages).
    pub min_free_bytes: Option<u64>,
    /// See `min_free_bytes`.
    pub room_bytes: u64,
    /// True while readings that upstream peers have not acknowledged are being held over
    /// the budget (upstream is behind; at the hard limit the oldest of them go).
    pub holding_unacked: bool,
    /// The last pass.
    pub last: BudgetPass,
    /// Readings pruned by the budget since the agent started (all kinds).
    pub pruned_total: u64,
    /// Of those, readings no upstream peer had acknowledged (recorded in gap records).
    pub dropped_unacked_total: u64,
    /// Gap records written since the agent started.
    pub gaps_total: u64,
    /// Rollup rows pruned by the budget since the agent started (once raw readings were
    /// gone).
    pub rollups_pruned_total: u64,
    /// Change rows the budget's passes compacted into log runs since the agent started.
    pub changes_compacted_total: u64,
    /// Set while the budget cannot be met: over it after pruning everything the budget may
    /// prune, with what holds the space (`unmet.rs`).
    pub cannot_meet: Option<CannotMeet>,
}

impl BudgetState {
    fn record(&mut self, pass: BudgetPass, cannot_meet: Option<CannotMeet>) {
        let m = pass.after;
        self.used_bytes = m.used();
        self.limit_bytes = pass.limits.max_bytes;
        self.hard_limit_bytes = pass.limits.hard_bytes;
        self.fraction = pass
            .limits
            .max_bytes
            .map(|l| m.used() as f64 / l.max(1) as f64);
        self.min_free_bytes = pass.limits.min_free_bytes;
        self.room_bytes = m.room();
        self.holding_unacked = pass.holding_unacked;
        self.pruned_total += pass.pruned.readings + pass.hard.readings;
        self.dropped_unacked_total += pass.hard.dropped_unacked;
        self.gaps_total += pass.hard.gaps;
        self.rollups_pruned_total += pass.rollups.rollups;
        self.changes_compacted_total += pass.changes_compacted();
        self.cannot_meet = cannot_meet;
        self.last = pass;
    }
}

impl RetentionState {
    /// A copy of the last pass.
    pub fn last(&self) -> LastPass {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(super) fn update(&self, f: impl FnOnce(&mut LastPass)) {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Logs and records a failed pass; the next one runs `every` later.
    pub(super) fn failed(&self, error: &dyn std::fmt::Display, every: std::time::Duration) {
        tracing::warn!(
            "retention pass failed, trying again in {}: {error}",
            humantime::format_duration(every)
        );
        self.update(|s| {
            s.at_ms = Some(now_ms());
            s.error = Some(error.to_string());
        });
    }
}

pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Runs prune passes every `config.every` until `cancel`. Returns at once when the policy
/// keeps everything and no disk budget is set.
pub async fn retention_loop(
    agent: RetentionDeps,
    config: RetentionConfig,
    cancel: CancellationToken,
) {
    let policy: RetentionPolicy = config.policy();
    let by_age = !policy.keeps_everything();
    let budget = config.has_budget();
    if !by_age && !budget {
        return;
    }
    let state = agent.state.clone();
    state.update(|s| {
        s.enabled = true;
        s.budget = budget.then(BudgetState::default);
    });
    tracing::info!(
        "retention: pruning every {} ({} rows per step){}",
        humantime::format_duration(config.every),
        config.step_rows,
        if budget { ", with a disk budget" } else { "" }
    );
    let mut ticker = tokio::time::interval(config.every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut full = agent.store.subscribe_disk_full();
    let mut was_holding = false;
    let mut rollup_measure = RollupMeasure::default();
    loop {
        let at_tick = tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => true,
            () = recovery_due(&mut full), if budget => false,
        };
        // Any budget pass while the disk is full is a recovery pass.
        let recovering = budget && *full.borrow();
        let recovery_room = recovering.then(|| recovery_room(&agent.store));
        if let Some(room) = recovery_room {
            tracing::warn!(
                room_bytes = room,
                "the disk is full: running the disk budget now to free {} ({})",
                super::human_bytes(room),
                super::reserve::full_disk_remedy(true)
            );
            // Pages an earlier pass freed but could not give back (it ran out of room) first.
            if let Err(e) = agent.store.reclaim().await {
                tracing::debug!(error = %e, "giving free pages back on a full disk");
            }
        }
        let acked = (agent.upstream_acked)();
        let has_upstream = acked.is_some();
        // A recovery pass out of turn is the budget's alone: the age rules wait for their tick.
        if by_age && at_tick {
            let unacked = acked.clone().map_or(Unacked::NoUpstream, Unacked::Keep);
            tokio::select! {
                _ = cancel.cancelled() => return,
                pruned_rollups = age_pass(&agent, &policy, &config, &unacked) => {
                    if pruned_rollups {
                        rollup_measure.forget();
                    }
                }
            }
        }
        if budget {
            let pass = tokio::select! {
                _ = cancel.cancelled() => return,
                p = budget_pass(&agent.store, &agent.data_dir, &config, acked, recovery_room, &mut rollup_measure) => p,
            };
            log_budget_pass(&pass, has_upstream, &mut was_holding);
            let prev = state.last().budget.and_then(|b| b.cannot_meet);
            // A failed pass says nothing about whether the budget can be met: keep the state.
            let next = if pass.error.is_some() {
                prev.clone()
            } else {
                CannotMeet::after(&agent.store, &pass, prev.as_ref(), now_ms()).await
            };
            unmet::log_change(prev.as_ref(), next.as_ref(), &pass);
            agent.metrics.budget_pass(&crate::metrics::BudgetSample {
                cannot_meet: next.is_some(),
                ..pass.sample()
            });
            state.update(|s| {
                if let Some(b) = &mut s.budget {
                    b.record(pass, next);
                }
            });
        }
    }
}

/// Returns when a recovery pass is due: as soon as the disk-full state begins, then every
/// [`RECOVERY_RETRY`] while it lasts. Never while the disk has room.
async fn recovery_due(full: &mut watch::Receiver<bool>) {
    if *full.borrow_and_update() {
        tokio::time::sleep(RECOVERY_RETRY).await;
        if *full.borrow_and_update() {
            return;
        }
    }
    loop {
        if full.changed().await.is_err() {
            // The store is closing: no recovery any more.
            std::future::pending::<()>().await;
        }
        if *full.borrow_and_update() {
            return;
        }
    }
}

/// The room a recovery pass frees: enough to hold the reserve again with as much left for
/// writes (`kdelta_sync::RECREATE_FACTOR` times it) and a reserve's worth of margin, at
/// least [`MIN_RECOVERY_ROOM`].
fn recovery_room(store: &kdelta_sync::Store) -> u64 {
    let reserve = store.write_health().reserve.map_or(0, |r| r.bytes);
    (reserve * (RECREATE_FACTOR + 1)).max(MIN_RECOVERY_ROOM)
}

/// One age prune pass; true when it pruned rollups (or failed part way), so a measure of
/// the rollups' bytes no longer stands.
async fn age_pass(
    agent: &RetentionDeps,
    policy: &RetentionPolicy,
    config: &RetentionConfig,
    unacked: &Unacked,
) -> bool {
    let started = Instant::now();
    let result = agent
        .store
        .prune_with(policy, now_ms(), config.step_rows, unacked)
        .await;
    let took = started.elapsed();
    let state = &agent.state;
    match result {
        Ok(report) => {
            agent.metrics.retention_pass(&report, took);
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
            if report.twin_changes_compacted > 0 {
                tracing::info!(
                    twin_changes = report.twin_changes_compacted,
                    bytes = report.twin_bytes_compacted,
                    "retention compacted {} twin changes ({} bytes of raw chunks their snapshots hold)",
                    report.twin_changes_compacted,
                    report.twin_bytes_compacted
                );
            }
            if report.changes_compacted > 0 {
                tracing::info!(
                    changes = report.changes_compacted,
                    "retention compacted {} wholly pruned changes into log runs",
                    report.changes_compacted
                );
            }
            state.update(|s| {
                s.at_ms = Some(now_ms());
                s.pruned = report;
                s.took_ms = took.as_millis() as u64;
                s.error = None;
                s.total.add(&report);
            });
            report.rollups > 0
        }
        Err(e) => {
            state.failed(&e, config.every);
            true
        }
    }
}

/// One log line per budget pass that did something, and one when holding starts or ends.
fn log_budget_pass(pass: &BudgetPass, has_upstream: bool, was_holding: &mut bool) {
    if let Some(e) = &pass.error {
        tracing::warn!("disk budget pass failed, trying again next tick: {e}");
    }
    if pass.pruned.readings > 0 {
        // Without an upstream peer nothing is "already held" anywhere: say what happened.
        let which = if has_upstream {
            "readings upstream already holds"
        } else {
            "readings (no upstream peer is configured)"
        };
        tracing::info!(
            readings = pass.pruned.readings,
            used_bytes = pass.after.used(),
            "disk budget: pruned the {} oldest {which} (store {} → {} bytes) in {} ms",
            pass.pruned.readings,
            pass.before.used(),
            pass.after.used(),
            pass.took_ms
        );
    }
    if pass.rollups.rollups > 0 {
        tracing::info!(
            rollups = pass.rollups.rollups,
            used_bytes = pass.after.used(),
            "disk budget: no raw reading left to prune, pruned the {} oldest per-minute rollups (store {} → {} bytes)",
            pass.rollups.rollups,
            pass.before.used(),
            pass.after.used()
        );
    }
    if pass.hard.dropped_unacked > 0 {
        tracing::warn!(
            readings = pass.hard.dropped_unacked,
            gaps = pass.hard.gaps,
            "disk budget: over the hard limit, dropped {} readings no upstream peer had yet (recorded in {} gap records that sync)",
            pass.hard.dropped_unacked,
            pass.hard.gaps
        );
    }
    if pass.holding_unacked != *was_holding {
        if pass.holding_unacked {
            tracing::warn!(
                held = pass.pruned.held,
                "disk budget: over max_disk, holding {} readings upstream has not acknowledged (kept until the hard limit)",
                pass.pruned.held
            );
        } else {
            tracing::info!("disk budget: no longer holding unacknowledged readings over budget");
        }
        *was_holding = pass.holding_unacked;
    }
}

pub(super) fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}
