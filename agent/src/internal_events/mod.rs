//! Observable events of the agent, one type each, as in vector's `internal_events/`: a type
//! carries what happened, and [`InternalEvent::emit`] writes its log line (if it has one)
//! and updates its metrics together, so a call site cannot count without logging or log
//! without counting. Ingest commits (HTTP, MQTT, sources), sync sessions, the MQTT client and
//! the API server's connection caps emit through here.
//!
//! A leaf: it uses only [`crate::metrics`] and must not reach into the parts that emit.
//!
//! ```
//! use kdelta::internal_events::{InternalEvent, IngestCommitted};
//! use kdelta::metrics::Metrics;
//! let metrics = Metrics::new();
//! IngestCommitted { source: "http", readings: 3, batches: 1, seconds: 0.002 }.emit(&metrics);
//! assert_eq!(metrics.readings_total(), 3);
//! ```

mod connections;
mod ingest;
mod mqtt;
mod sync;

pub use connections::{ConnectionLimited, LogEvery};
pub use ingest::{IngestCommitted, IngestRejected, ReadingsDropped};
pub use mqtt::{MqttBadPayload, MqttCommand};
pub use sync::{SyncRefused, SyncSessionEnded, SyncSessionFailed};

use crate::metrics::Metrics;

/// Something observable that happened: emitting it logs and counts it.
pub trait InternalEvent: Sized {
    /// Writes the event's log line and updates its metrics.
    fn emit(self, metrics: &Metrics);
}
