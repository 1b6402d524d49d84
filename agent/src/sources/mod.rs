//! The sources pipeline: sensor drivers (built from `[[sources]]` by the sensors crate) →
//! scheduler (one task per source) → bounded [`IngestQueue`] (overflow `block` or
//! `drop_oldest`) → [`Batcher`] → `Store::append`. Status per source is kept in
//! `state::Agent::sources` for `GET /v1/sources`; counters go to [`crate::metrics::Metrics`].
//!
//! Owns `[ingest]` ([`IngestConfig`]) and the sources' status ([`SourceStatus`]). This module
//! must not know about HTTP; readings posted to the API go straight to the store and do not
//! pass through here.

mod batcher;
mod config;
mod pipeline;
mod queue;
mod scheduler;
mod status;

pub use batcher::{BatchLimits, BatchSink, Batcher};
pub use config::{IngestConfig, Overflow};
pub use pipeline::{BuiltSource, build, spawn};
pub use queue::{Closed, IngestQueue, Queued};
pub use scheduler::{RetuneError, StatusHandle, polled_loop, set_interval, streaming_loop};
pub use status::SourceStatus;
