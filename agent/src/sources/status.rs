//! The status of each running source, shown by `GET /v1/sources` and `kdelta sources`,
//! updated by the scheduler and tuned by the device twin. Data only.

use std::sync::Arc;

/// Status of one configured source (or of MQTT ingest: the `mqtt` row), shown by
/// `GET /v1/sources` and `kdelta sources`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SourceStatus {
    /// Source instance name.
    pub name: String,
    /// Source kind (`system`, `sysfs`, `serial`, …).
    pub kind: String,
    /// Sampling interval in ms (0 for streaming sources).
    pub interval_ms: u64,
    /// Time of the last successful reading, unix ms.
    pub last_reading_ms: Option<i64>,
    /// Readings produced since start.
    pub readings: u64,
    /// Last error message, if the last attempt failed.
    pub last_error: Option<String>,
    /// Errors since start.
    pub errors: u64,
    /// Ticks missed because sampling took longer than the interval.
    pub missed_ticks: u64,
    /// Readings refused one by one before their batch (the rest was stored), by reason
    /// (`bad_series_name`, `not_finite`, `bad_timestamp`, `unit_too_long`); filled in from
    /// the metrics when the status is read.
    pub rejected: std::collections::BTreeMap<String, u64>,
    /// Wakes the source's scheduler after `interval_ms` was changed at run time (the device
    /// twin's `desired` interval), so the new interval applies without a restart.
    #[serde(skip)]
    pub retune: Arc<tokio::sync::Notify>,
}
