//! Retention, space and wear metrics: what prune passes removed, how long they took, whether
//! the disk is full, and the bytes this process wrote to storage (from `/proc/self/io`,
//! refreshed on scrape, so SD-card wear can be watched).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::Metrics;

/// Registered by [`Metrics::new`].
pub(super) struct RetentionMetrics {
    pruned_readings: Counter,
    pruned_rollups: Counter,
    pruned_doc_versions: Counter,
    pass_seconds: Histogram,
    disk_full: Gauge,
    write_bytes: Gauge,
    horizon_ms: Gauge,
}

impl Default for RetentionMetrics {
    fn default() -> Self {
        RetentionMetrics {
            pruned_readings: Counter::default(),
            pruned_rollups: Counter::default(),
            pruned_doc_versions: Counter::default(),
            // 1 ms … ~65 s.
            pass_seconds: Histogram::new(exponential_buckets(0.001, 4.0, 9)),
            disk_full: Gauge::default(),
            write_bytes: Gauge::default(),
            horizon_ms: Gauge::default(),
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
            "process_storage_write_bytes",
            "Bytes this process caused to be written to storage since it started (write_bytes of /proc/self/io): SD-card wear",
            self.write_bytes.clone(),
        );
        r.register(
            "retention_horizon_timestamp_ms",
            "Oldest raw reading kept, over all series (unix ms; 0 when there is none)",
            self.horizon_ms.clone(),
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
        self.retention.pass_seconds.observe(took.as_secs_f64());
    }

    /// Space and wear gauges, refreshed on scrape.
    pub fn set_space(&self, disk_full: bool, write_bytes: Option<u64>, horizon_ms: Option<i64>) {
        self.retention.disk_full.set(i64::from(disk_full));
        if let Some(b) = write_bytes {
            self.retention
                .write_bytes
                .set(i64::try_from(b).unwrap_or(i64::MAX));
        }
        self.retention.horizon_ms.set(horizon_ms.unwrap_or(0));
    }
}
