//! The unit every source produces: one timestamped value of one named series.

use serde::{Deserialize, Serialize};

/// One sample of one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// Series name, e.g. `system.cpu_usage` or `w1.28-000005e2fdc3`.
    pub series: String,
    /// Sample time, unix milliseconds (UTC).
    pub ts_ms: i64,
    /// The value; sources never emit NaN or infinities.
    pub value: f64,
    /// Unit of measurement (`°C`, `%`, `B`, `V`, …), if known.
    pub unit: Option<String>,
}

impl Reading {
    /// A reading of `series` at `ts_ms` with an optional unit.
    pub fn new(series: impl Into<String>, ts_ms: i64, value: f64, unit: Option<&str>) -> Self {
        Reading {
            series: series.into(),
            ts_ms,
            value,
            unit: unit.map(str::to_owned),
        }
    }
}
