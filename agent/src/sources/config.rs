//! `[ingest]`: the path from the sources to the store — queue size, batching, overflow — with
//! defaults and `validate()`. Pure data. (`[[sources]]` entries are the sensors crate's
//! `SourceConfig`.)

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::section::{InvalidValue, refuse};

/// `[ingest]`: how readings from sources reach the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// A batch is committed once it holds this many readings.
    pub batch_max_readings: usize,
    /// …or once its oldest reading has waited this long.
    #[serde(with = "humantime_serde")]
    pub batch_max_age: Duration,
    /// Readings held between the sources and the batcher. Bounds memory when the store is
    /// slower than the sources.
    pub queue_capacity: usize,
    /// What a source does when the queue is full.
    pub overflow: Overflow,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            batch_max_readings: 1000,
            batch_max_age: Duration::from_secs(1),
            queue_capacity: 10_000,
            overflow: Overflow::Block,
        }
    }
}

/// Policy for a full ingest queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// The source waits (backpressure): a polled source misses ticks, a serial device's
    /// bytes wait in the kernel buffer. Nothing is dropped.
    Block,
    /// The oldest queued reading is discarded (counted in
    /// `kdelta_ingest_dropped_readings_total`): fresh data wins.
    DropOldest,
}

impl IngestConfig {
    /// Checks what serde accepted; `store_max` is `store.max_batch_readings`, the most a batch
    /// may hold. The error names the key (`ingest.…`).
    pub fn validate(&self, store_max: usize) -> Result<(), InvalidValue> {
        if self.batch_max_readings == 0 || self.batch_max_readings > store_max {
            return refuse(
                "ingest.batch_max_readings",
                format!(
                    "{} is out of range; use 1 to store.max_batch_readings ({store_max})",
                    self.batch_max_readings
                ),
            );
        }
        if self.batch_max_age < Duration::from_millis(1)
            || self.batch_max_age > Duration::from_secs(3600)
        {
            return refuse(
                "ingest.batch_max_age",
                format!(
                    "{} is out of range; use 1ms to 1h",
                    humantime::format_duration(self.batch_max_age)
                ),
            );
        }
        if self.queue_capacity < self.batch_max_readings || self.queue_capacity > 10_000_000 {
            return refuse(
                "ingest.queue_capacity",
                format!(
                    "{} is out of range; use ingest.batch_max_readings ({}) to 10000000",
                    self.queue_capacity, self.batch_max_readings
                ),
            );
        }
        Ok(())
    }
}
