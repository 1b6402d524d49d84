//! Ingest events: a batch committed, refused by the store, or readings dropped before it.

use super::InternalEvent;
use crate::metrics::Metrics;

/// Readings of one source committed in one store transaction.
#[derive(Debug, Clone, Copy)]
pub struct IngestCommitted<'a> {
    /// The `source` metric label (`http`, `mqtt`, a source name).
    pub source: &'a str,
    /// Readings committed.
    pub readings: u64,
    /// Batches they came in (1 for an HTTP request or an MQTT flush).
    pub batches: u64,
    /// How long the commit took, in seconds (0 when another event of the same commit
    /// already observed it).
    pub seconds: f64,
}

impl InternalEvent for IngestCommitted<'_> {
    fn emit(self, metrics: &Metrics) {
        // Too frequent for a log line at info; the metrics carry it.
        tracing::trace!(
            source = self.source,
            readings = self.readings,
            "batch committed"
        );
        if self.seconds > 0.0 {
            metrics.observe_commit(self.seconds);
        }
        metrics.readings_ingested(self.source, self.readings);
        for _ in 0..self.batches {
            metrics.batch_ingested(self.source);
        }
    }
}

/// A batch refused (bad input, or the store's refusal), counted under its error code.
#[derive(Clone, Copy)]
pub struct IngestRejected<'a> {
    /// The `source` metric label.
    pub source: &'a str,
    /// The error code (`invalid_batch`, `body_too_large`, …).
    pub code: &'a str,
    /// Readings in the refused batch, when known.
    pub readings: Option<u64>,
    /// Why, for the log line; `None` when the caller already told the client (an HTTP
    /// error is logged once by the API's middleware).
    pub error: Option<&'a dyn std::fmt::Display>,
}

impl InternalEvent for IngestRejected<'_> {
    fn emit(self, metrics: &Metrics) {
        if let Some(error) = self.error {
            match self.readings {
                Some(n) => tracing::warn!(
                    source = self.source,
                    code = self.code,
                    "{n} readings refused by the store: {error}"
                ),
                None => tracing::warn!(
                    source = self.source,
                    code = self.code,
                    "a batch was refused: {error}"
                ),
            }
        }
        metrics.ingest_rejected(self.source, self.code);
    }
}

/// Readings a source produced that the store would refuse (see `kdelta_sync::check_reading`):
/// dropped before the batch, one reason at a time, so the rest of the batch is stored.
#[derive(Debug, Clone, Copy)]
pub struct ReadingsDropped<'a> {
    /// The `source` metric label.
    pub source: &'a str,
    /// How many.
    pub readings: u64,
    /// Why.
    pub problem: kdelta_sync::ReadingProblem,
    /// The series of the first of them (named in the log line).
    pub series: &'a str,
}

impl InternalEvent for ReadingsDropped<'_> {
    fn emit(self, metrics: &Metrics) {
        tracing::warn!(
            source = self.source,
            reason = self.problem.reason(),
            "dropped {} reading(s), the first of series {:?}: {}",
            self.readings,
            self.series.chars().take(64).collect::<String>(),
            self.problem
        );
        metrics.dropped_readings(self.source, self.readings);
        metrics.rejected_readings(self.source, self.problem.reason(), self.readings);
    }
}
