//! Retention, space and wear metrics: what prune passes removed, how long they took, whether
//! the disk is full, and the bytes this process wrote to storage (from `/proc/self/io`,
//! refreshed on scrape, so SD-card wear can be watched).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::Metrics;

/// What one disk-budget pass reports to [`Metrics::budget_pass`] (0 for a limit not set).
#[derive(Debug, Clone, Copy, Default)]
pub struct BudgetSample {
    /// Bytes the store uses after the pass.
    pub used_bytes: u64,
    /// `max_disk` in bytes.
    pub limit_bytes: u64,
    /// The hard limit in bytes.
    pub hard_limit_bytes: u64,
    /// Over budget holding unacknowledged readings.
    pub holding_unacked: bool,
    /// Readings held for upstream.
    pub held_readings: u64,
    /// Readings pruned by the pass.
    pub pruned_readings: u64,
    /// Of those, unacknowledged ones dropped at the hard limit.
    pub dropped_readings: u64,
    /// Gap records written.
    pub gap_records: u64,
    /// Rollup rows pruned by the pass (once raw readings were gone).
    pub pruned_rollups: u64,
    /// Change rows compacted into log runs by the pass.
    pub compacted_changes: u64,
    /// Over budget with nothing more the budget may prune.
    pub cannot_meet: bool,
}

/// Registered by [`Metrics::new`].
pub(super) struct RetentionMetrics {
    pruned_readings: Counter,
    pruned_rollups: Counter,
    pruned_doc_versions: Counter,
    compacted_twin_changes: Counter,
    compacted_twin_bytes: Counter,
    compacted_changes: Counter,
    pass_seconds: Histogram,
    disk_full: Gauge,
    reserve_held: Gauge,
    reserve_bytes: Gauge,
    write_bytes: Gauge,
    horizon_ms: Gauge,
    budget: BudgetMetrics,
    backups: Family<BackupLabels, Counter>,
}

/// `outcome` of a scheduled backup: `written`, `failed` or `no_space`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackupLabels {
    outcome: &'static str,
}

/// The disk budget's figures (`[retention] max_disk` / `min_free`).
#[derive(Default)]
struct BudgetMetrics {
    used_bytes: Gauge,
    limit_bytes: Gauge,
    hard_limit_bytes: Gauge,
    holding: Gauge,
    held_readings: Gauge,
    pruned_readings: Counter,
    dropped_readings: Counter,
    gap_records: Counter,
    pruned_rollups: Counter,
    cannot_meet: Gauge,
}

impl Default for RetentionMetrics {
    fn default() -> Self {
        RetentionMetrics {
            pruned_readings: Counter::default(),
            pruned_rollups: Counter::default(),
            pruned_doc_versions: Counter::default(),
            compacted_twin_changes: Counter::default(),
            compacted_twin_bytes: Counter::default(),
            compacted_changes: Counter::default(),
            // 1 ms … ~65 s.
            pass_seconds: Histogram::new(exponential_buckets(0.001, 4.0, 9)),
            disk_full: Gauge::default(),
            reserve_held: Gauge::default(),
            reserve_bytes: Gauge::default(),
            write_bytes: Gauge::default(),
            horizon_ms: Gauge::default(),
            budget: BudgetMetrics::default(),
            backups: Family::default(),
        }
    }
}

impl RetentionMetrics {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "retention_pruned_readings",
            "Raw readings deleted by retention",
            self.pruned_readings.clone(),
        );
        r.register(
            "retention_pruned_rollups",
            "Per-minute rollup rows deleted by retention",
            self.pruned_rollups.clone(),
        );
        r.register(
            "retention_pruned_doc_versions",
            "Document versions whose value retention pruned (the version stays in history, marked pruned)",
            self.pruned_doc_versions.clone(),
        );
        r.register(
            "retention_compacted_twin_changes",
            "Twin changes whose raw chunk retention dropped because the twin's snapshot holds it (lossless: history and sync unchanged)",
            self.compacted_twin_changes.clone(),
        );
        r.register(
            "retention_compacted_twin_bytes",
            "Bytes of the raw twin change chunks retention dropped",
            self.compacted_twin_bytes.clone(),
        );
        r.register(
            "retention_compacted_changes",
            "Change rows retention deleted by compacting runs of changes it pruned wholly to the run's last change (the seqs stay in the version vector; peers lacking them get the run)",
            self.compacted_changes.clone(),
        );
        r.register(
            "retention_pass_duration_seconds",
            "Duration of one retention pass (all its small steps)",
            self.pass_seconds.clone(),
        );
        r.register(
            "store_disk_full",
            "1 while the disk holding the store is full and writes are refused (507 disk_full)",
            self.disk_full.clone(),
        );
        r.register(
            "store_reserve_held",
            "1 while the disk reserve file is held; 0 while it is released to a full disk, cannot be created, or is disabled ([retention] reserve)",
            self.reserve_held.clone(),
        );
        r.register(
            "store_reserve_bytes",
            "Size of the disk reserve ([retention] reserve; 0: none)",
            self.reserve_bytes.clone(),
        );
        r.register(
            "process_storage_write_bytes",
            "Bytes this process caused to be written to storage since it started (write_bytes of /proc/self/io): SD-card wear",
            self.write_bytes.clone(),
        );
        r.register(
            "retention_horizon_timestamp_ms",
            "Oldest raw reading kept, over all series (unix ms; 0 when there is none)",
            self.horizon_ms.clone(),
        );
        let b = &self.budget;
        r.register(
            "retention_budget_used_bytes",
            "Bytes the store uses (database + WAL + shm, less free pages), as the disk budget last measured",
            b.used_bytes.clone(),
        );
        r.register(
            "retention_budget_limit_bytes",
            "[retention] max_disk in bytes (0 without it)",
            b.limit_bytes.clone(),
        );
        r.register(
            "retention_budget_hard_limit_bytes",
            "The disk budget's hard limit in bytes, beyond which readings upstream has not acknowledged are dropped (0 without max_disk)",
            b.hard_limit_bytes.clone(),
        );
        r.register(
            "retention_budget_holding_unacked",
            "1 while the store is over its disk budget holding readings upstream peers have not acknowledged",
            b.holding.clone(),
        );
        r.register(
            "retention_budget_held_readings",
            "Readings the last budget pass kept over budget because upstream has not acknowledged them",
            b.held_readings.clone(),
        );
        r.register(
            "retention_budget_pruned_readings",
            "Raw readings pruned by the disk budget (upstream-acknowledged or without upstream, and dropped at the hard limit)",
            b.pruned_readings.clone(),
        );
        r.register(
            "retention_budget_dropped_readings",
            "Readings no upstream peer had acknowledged, dropped at the disk budget's hard limit (each recorded in a gap record that syncs)",
            b.dropped_readings.clone(),
        );
        r.register(
            "retention_budget_pruned_rollups",
            "Per-minute rollup rows pruned by the disk budget (only once no raw reading it may prune is left)",
            b.pruned_rollups.clone(),
        );
        r.register(
            "retention_budget_cannot_meet",
            "1 while the store is over its disk budget and the budget may prune nothing more (held readings, documents, twins, the change log); /v1/status store.budget.cannot_meet names what holds the space",
            b.cannot_meet.clone(),
        );
        r.register(
            "backup_scheduled",
            "Scheduled backups by outcome: written, failed (retried with a backoff) or no_space (refused before writing: not enough free space for the snapshot and the file)",
            self.backups.clone(),
        );
        r.register(
            "retention_gap_records",
            "Gap records written by this agent (change kind 6: readings dropped before upstream had them)",
            b.gap_records.clone(),
        );
    }
}

impl Metrics {
    /// A retention pass ended: what it removed and how long it took.
    pub fn retention_pass(&self, report: &kdelta_sync::PruneReport, took: std::time::Duration) {
        self.retention.pruned_readings.inc_by(report.readings);
        self.retention.pruned_rollups.inc_by(report.rollups);
        self.retention
            .pruned_doc_versions
            .inc_by(report.doc_versions);
        self.retention
            .compacted_twin_changes
            .inc_by(report.twin_changes_compacted);
        self.retention
            .compacted_twin_bytes
            .inc_by(report.twin_bytes_compacted);
        self.retention
            .compacted_changes
            .inc_by(report.changes_compacted);
        self.retention.pass_seconds.observe(took.as_secs_f64());
    }

    /// A scheduled backup ended: `written`, `failed` or `no_space`.
    pub fn scheduled_backup(&self, outcome: &'static str) {
        self.retention
            .backups
            .get_or_create(&BackupLabels { outcome })
            .inc();
    }

    /// A disk-budget pass ended.
    pub fn budget_pass(&self, pass: &BudgetSample) {
        let b = &self.retention.budget;
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        b.used_bytes.set(gauge(pass.used_bytes));
        b.limit_bytes.set(gauge(pass.limit_bytes));
        b.hard_limit_bytes.set(gauge(pass.hard_limit_bytes));
        b.holding.set(i64::from(pass.holding_unacked));
        b.held_readings.set(gauge(pass.held_readings));
        b.pruned_readings.inc_by(pass.pruned_readings);
        b.dropped_readings.inc_by(pass.dropped_readings);
        b.gap_records.inc_by(pass.gap_records);
        b.pruned_rollups.inc_by(pass.pruned_rollups);
        self.retention
            .compacted_changes
            .inc_by(pass.compacted_changes);
        b.cannot_meet.set(i64::from(pass.cannot_meet));
    }

    /// Space and wear gauges, refreshed on scrape.
    pub fn set_space(
        &self,
        health: &kdelta_sync::WriteHealth,
        write_bytes: Option<u64>,
        horizon_ms: Option<i64>,
    ) {
        let r = &self.retention;
        r.disk_full.set(i64::from(health.disk_full.is_some()));
        let reserve = health.reserve.as_ref();
        r.reserve_held.set(i64::from(
            reserve.is_some_and(|s| s.state == kdelta_sync::ReserveState::Held),
        ));
        r.reserve_bytes
            .set(reserve.map_or(0, |s| i64::try_from(s.bytes).unwrap_or(i64::MAX)));
        if let Some(b) = write_bytes {
            self.retention
                .write_bytes
                .set(i64::try_from(b).unwrap_or(i64::MAX));
        }
        self.retention.horizon_ms.set(horizon_ms.unwrap_or(0));
    }
}
