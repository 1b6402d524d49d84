//! Wiring of the sources pipeline: builds every configured source through the sensors
//! crate's factory, creates their status entries, and spawns one task per source plus the
//! batcher. The daemon owns the order of shutdown (sources, then queue, then batcher).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use kdelta_sensors::{PolledSource, SourceConfig, StreamingSource, build_polled, build_streaming};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::queue::IngestQueue;
use super::scheduler::{StatusHandle, polled_loop, streaming_loop};
use super::status::SourceStatus;
use crate::metrics::Metrics;

/// A source ready to run.
pub enum BuiltSource {
    /// Sampled by the scheduler.
    Polled {
        /// The driver.
        source: Box<dyn PolledSource>,
        /// Its sampling interval.
        interval: Duration,
        /// Its status entry as it starts.
        status: SourceStatus,
    },
    /// Runs its own loop.
    Streaming {
        /// The driver.
        source: Box<dyn StreamingSource>,
        /// Its status entry as it starts.
        status: SourceStatus,
    },
}

/// Builds every configured source. Opens no device (a missing one is reported by the source
/// once it runs), so this fails only on configuration, naming `sources[i]`.
pub fn build(configs: &[SourceConfig]) -> anyhow::Result<Vec<BuiltSource>> {
    let mut built = Vec::with_capacity(configs.len());
    for (i, config) in configs.iter().enumerate() {
        let context = || {
            format!(
                "building source `{}` (sources[{i}], kind {})",
                config.name(),
                config.kind()
            )
        };
        let status = SourceStatus {
            name: config.name().to_owned(),
            kind: config.kind().to_owned(),
            interval_ms: config.interval().map_or(0, |d| d.as_millis() as u64),
            ..SourceStatus::default()
        };
        if let Some(source) = build_polled(config).with_context(context)? {
            let interval = config.interval().unwrap_or(Duration::from_secs(10));
            built.push(BuiltSource::Polled {
                source,
                interval,
                status,
            });
        } else if let Some(source) = build_streaming(config).with_context(context)? {
            built.push(BuiltSource::Streaming { source, status });
        } else {
            anyhow::bail!(
                "{}: the sensors crate builds no driver for this kind",
                context()
            );
        }
    }
    Ok(built)
}

/// Spawns one task per source on `tracker`; they stop when `cancel` fires. Fills `statuses`
/// with one entry per source, in configuration order. Returns the tasks' abort handles, for a
/// reload whose old sources do not stop in time.
pub fn spawn(
    built: Vec<BuiltSource>,
    queue: &Arc<IngestQueue>,
    statuses: &Arc<RwLock<Vec<SourceStatus>>>,
    metrics: &Arc<Metrics>,
    tracker: &TaskTracker,
    cancel: &CancellationToken,
) -> Vec<AbortHandle> {
    {
        let mut all = statuses
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        all.clear();
        all.extend(built.iter().map(|b| match b {
            BuiltSource::Polled { status, .. } | BuiltSource::Streaming { status, .. } => {
                status.clone()
            }
        }));
    }
    let mut aborts = Vec::with_capacity(built.len());
    for (index, source) in built.into_iter().enumerate() {
        let handle = StatusHandle::new(index, statuses.clone(), metrics.clone());
        let task = match source {
            BuiltSource::Polled {
                source, interval, ..
            } => {
                tracing::info!(
                    source = %handle.name(),
                    "sampling every {}",
                    humantime::format_duration(interval)
                );
                tracker.spawn(polled_loop(
                    source,
                    interval,
                    queue.clone(),
                    handle,
                    cancel.clone(),
                ))
            }
            BuiltSource::Streaming { source, .. } => {
                tracing::info!(source = %handle.name(), "streaming");
                tracker.spawn(streaming_loop(
                    source,
                    queue.clone(),
                    handle,
                    cancel.clone(),
                ))
            }
        };
        aborts.push(task.abort_handle());
    }
    aborts
}
