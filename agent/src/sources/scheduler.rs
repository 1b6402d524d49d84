//! Runs sources: a polled source is sampled on a fixed grid (`tokio::time::interval` with
//! [`MissedTickBehavior::Skip`], so a slow sample skips ticks instead of bursting to catch
//! up, and the skipped ticks are counted); a streaming source runs its own loop. Both hand
//! their readings to the [`IngestQueue`] and report into the source's [`SourceStatus`].

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use kdelta_sensors::{PolledSource, Reading, SourceError, StreamingSource};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::queue::{IngestQueue, Queued};
use super::status::SourceStatus;
use crate::metrics::Metrics;

/// Readings a streaming source may have in flight before it waits for the queue.
const STREAM_CHANNEL: usize = 256;

/// The longest a single `sample()` may take: three intervals (a slow round only costs
/// missed ticks), but at least 10 s (a Modbus round over many registers) and at most 60 s (a
/// hung device must show up as an error, not as silence).
fn sample_timeout(interval: Duration) -> Duration {
    interval
        .saturating_mul(3)
        .clamp(Duration::from_secs(10), Duration::from_secs(60))
}

/// One source's entry in the shared status list, plus its metrics label.
#[derive(Clone)]
pub struct StatusHandle {
    index: usize,
    name: Arc<str>,
    statuses: Arc<RwLock<Vec<SourceStatus>>>,
    metrics: Arc<Metrics>,
}

impl StatusHandle {
    /// The handle of entry `index` of `statuses`.
    pub fn new(
        index: usize,
        statuses: Arc<RwLock<Vec<SourceStatus>>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let name = statuses.read().unwrap_or_else(PoisonError::into_inner)[index]
            .name
            .clone();
        StatusHandle {
            index,
            name: name.into(),
            statuses,
            metrics,
        }
    }

    /// The source's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn update<T>(&self, f: impl FnOnce(&mut SourceStatus) -> T) -> T {
        let mut all = self
            .statuses
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        f(&mut all[self.index])
    }

    /// A snapshot of the status.
    pub fn get(&self) -> SourceStatus {
        self.statuses.read().unwrap_or_else(PoisonError::into_inner)[self.index].clone()
    }

    fn readings(&self, readings: &[Reading]) {
        let Some(last) = readings.iter().map(|r| r.ts_ms).max() else {
            return;
        };
        let recovered = self.update(|s| {
            s.readings += readings.len() as u64;
            s.last_reading_ms = Some(s.last_reading_ms.map_or(last, |t| t.max(last)));
            s.last_error.take()
        });
        if let Some(previous) = recovered {
            tracing::info!(source = %self.name, "source recovered (last error: {previous})");
        }
    }

    fn error(&self, message: String, code: &str) {
        self.metrics.source_error(&self.name, code);
        let repeated = self.update(|s| {
            s.errors += 1;
            let repeated = s.last_error.as_deref() == Some(message.as_str());
            s.last_error = Some(message.clone());
            repeated
        });
        // Log a failure when it starts or changes, not every interval while it lasts.
        if repeated {
            tracing::debug!(source = %self.name, "{message}");
        } else {
            tracing::warn!(source = %self.name, "{message}");
        }
    }

    fn missed(&self, n: u64) {
        self.metrics.missed_ticks(&self.name, n);
        self.update(|s| s.missed_ticks += n);
    }

    /// Hands readings to the queue; counts what `drop_oldest` discarded, per source.
    async fn enqueue(
        &self,
        queue: &IngestQueue,
        readings: Vec<Reading>,
    ) -> Result<(), super::queue::Closed> {
        self.readings(&readings);
        let items = readings
            .into_iter()
            .map(|reading| Queued {
                source: self.name.clone(),
                reading,
            })
            .collect();
        for dropped in queue.push(items).await? {
            self.metrics.dropped_readings(&dropped.source, 1);
        }
        Ok(())
    }
}

fn ticker(interval: Duration) -> tokio::time::Interval {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    ticker
}

/// Why a run-time interval change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetuneError {
    /// No running source has this name.
    #[error("no source named {0:?} is running")]
    Unknown(String),
    /// The source streams; it has no sampling interval.
    #[error("source {0:?} streams readings; it has no sampling interval")]
    Streaming(String),
}

/// Sets the sampling interval of the running polled source `name` and wakes its scheduler
/// (see [`polled_loop`]). Returns whether the interval changed. Lasts until the sources are
/// rebuilt (restart or SIGHUP reload).
pub fn set_interval(
    statuses: &RwLock<Vec<SourceStatus>>,
    name: &str,
    interval: Duration,
) -> Result<bool, RetuneError> {
    let ms = interval.as_millis() as u64;
    let retune = {
        let mut all = statuses.write().unwrap_or_else(PoisonError::into_inner);
        let s = all
            .iter_mut()
            .find(|s| s.name == name)
            .ok_or_else(|| RetuneError::Unknown(name.to_owned()))?;
        if s.interval_ms == 0 {
            return Err(RetuneError::Streaming(name.to_owned()));
        }
        if s.interval_ms == ms {
            return Ok(false);
        }
        s.interval_ms = ms;
        s.retune.clone()
    };
    retune.notify_one();
    Ok(true)
}

/// Samples `source` every `interval` until `cancel`. When the source's status gets a new
/// `interval_ms` and its `retune` is notified, sampling continues at the new interval,
/// starting with a sample at once.
pub async fn polled_loop(
    mut source: Box<dyn PolledSource>,
    mut interval: Duration,
    queue: Arc<IngestQueue>,
    status: StatusHandle,
    cancel: CancellationToken,
) {
    let retune = status.get().retune;
    let mut ticker = ticker(interval);
    let mut timeout = sample_timeout(interval);
    let mut previous: Option<Instant> = None;
    loop {
        let tick = tokio::select! {
            _ = cancel.cancelled() => return,
            _ = retune.notified() => {
                let wanted = Duration::from_millis(status.get().interval_ms);
                if !wanted.is_zero() && wanted != interval {
                    tracing::info!(
                        source = %status.name(),
                        "sampling interval changed from {} to {}",
                        humantime::format_duration(interval),
                        humantime::format_duration(wanted)
                    );
                    interval = wanted;
                    ticker = self::ticker(interval);
                    timeout = sample_timeout(interval);
                    previous = None;
                }
                continue;
            }
            tick = ticker.tick() => tick,
        };
        if let Some(prev) = previous {
            // With `Skip`, the next tick is the next grid point after a late one: every grid
            // point in between was missed.
            let steps = (tick - prev).as_nanos() / interval.as_nanos().max(1);
            if steps > 1 {
                status.missed((steps - 1) as u64);
            }
        }
        previous = Some(tick);
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return,
            outcome = tokio::time::timeout(timeout, source.sample()) => outcome,
        };
        match outcome {
            Ok(Ok(readings)) if readings.is_empty() => {}
            Ok(Ok(readings)) => {
                let pushed = tokio::select! {
                    _ = cancel.cancelled() => return,
                    pushed = status.enqueue(&queue, readings) => pushed,
                };
                if pushed.is_err() {
                    return;
                }
            }
            Ok(Err(e)) => {
                status.error(e.to_string(), e.code());
                if !e.is_transient() {
                    tracing::error!(source = %status.name(), "source stopped: {e}");
                    return;
                }
            }
            Err(_) => status.error(
                format!(
                    "sampling took longer than {}",
                    humantime::format_duration(timeout)
                ),
                "timeout",
            ),
        }
    }
}

/// Runs a streaming `source` until `cancel`, forwarding its readings to the queue.
pub async fn streaming_loop(
    mut source: Box<dyn StreamingSource>,
    queue: Arc<IngestQueue>,
    status: StatusHandle,
    cancel: CancellationToken,
) {
    let (tx, mut rx) = mpsc::channel::<Reading>(STREAM_CHANNEL);
    let on_error = {
        let status = status.clone();
        Box::new(move |e: &SourceError| status.error(e.to_string(), e.code()))
    };
    let run = source.run(tx, on_error, Box::pin(cancel.clone().cancelled_owned()));
    let forward = async {
        let mut chunk = Vec::with_capacity(STREAM_CHANNEL);
        loop {
            let n = tokio::select! {
                _ = cancel.cancelled() => return,
                n = rx.recv_many(&mut chunk, STREAM_CHANNEL) => n,
            };
            if n == 0 {
                return; // the source ended
            }
            let pushed = tokio::select! {
                _ = cancel.cancelled() => return,
                pushed = status.enqueue(&queue, std::mem::take(&mut chunk)) => pushed,
            };
            if pushed.is_err() {
                return;
            }
        }
    };
    let (result, ()) = tokio::join!(run, forward);
    if let Err(e) = result {
        status.error(e.to_string(), e.code());
        tracing::error!(source = %status.name(), "source stopped: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::Overflow;
    use kdelta_sensors::BoxFuture;

    /// Samples take `delays[i]` (the last one repeating) and yield one reading.
    struct Slow {
        delays: Vec<Duration>,
        round: usize,
    }

    impl PolledSource for Slow {
        fn name(&self) -> &str {
            "slow"
        }
        fn sample(&mut self) -> BoxFuture<'_, Result<Vec<Reading>, SourceError>> {
            let delay = self.delays[self.round.min(self.delays.len() - 1)];
            self.round += 1;
            let ts = self.round as i64;
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                Ok(vec![Reading::new("slow.value", ts, 1.0, None)])
            })
        }
    }

    fn status(name: &str) -> StatusHandle {
        let statuses = Arc::new(RwLock::new(vec![SourceStatus {
            name: name.into(),
            ..SourceStatus::default()
        }]));
        StatusHandle::new(0, statuses, Arc::new(Metrics::new()))
    }

    #[tokio::test(start_paused = true)]
    async fn counts_missed_ticks_and_keeps_the_grid() {
        let queue = Arc::new(IngestQueue::new(100, Overflow::Block));
        let status = status("slow");
        let cancel = CancellationToken::new();
        let source = Slow {
            // t=0: takes 25 s, so the tick of t=10 fires late at t=25 and the one of t=20 is
            // skipped; from t=30 on the grid is kept again.
            delays: vec![Duration::from_secs(25), Duration::from_millis(1)],
            round: 0,
        };
        let task = tokio::spawn(polled_loop(
            Box::new(source),
            Duration::from_secs(10),
            queue.clone(),
            status.clone(),
            cancel.clone(),
        ));
        tokio::time::sleep(Duration::from_secs(55)).await;
        cancel.cancel();
        task.await.unwrap();
        let s = status.get();
        assert_eq!(s.missed_ticks, 1);
        // Samples at 0, 25 (late), 30, 40, 50.
        assert_eq!(s.readings, 5);
        assert_eq!(queue.len(), 5);
        assert_eq!(s.errors, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_sample_is_an_error_not_a_silence() {
        let queue = Arc::new(IngestQueue::new(100, Overflow::Block));
        let status = status("slow");
        let cancel = CancellationToken::new();
        let source = Slow {
            delays: vec![Duration::from_secs(3600)],
            round: 0,
        };
        let task = tokio::spawn(polled_loop(
            Box::new(source),
            Duration::from_secs(1),
            queue,
            status.clone(),
            cancel.clone(),
        ));
        tokio::time::sleep(Duration::from_secs(11)).await;
        cancel.cancel();
        task.await.unwrap();
        let s = status.get();
        assert_eq!(s.errors, 1);
        assert!(s.last_error.unwrap().contains("longer than 10s"));
    }

    #[tokio::test]
    async fn drop_oldest_is_counted_against_the_source_that_lost_readings() {
        let queue = IngestQueue::new(2, Overflow::DropOldest);
        let metrics = Arc::new(Metrics::new());
        let statuses = Arc::new(RwLock::new(
            ["a", "b"]
                .iter()
                .map(|n| SourceStatus {
                    name: (*n).into(),
                    ..SourceStatus::default()
                })
                .collect::<Vec<_>>(),
        ));
        let a = StatusHandle::new(0, statuses.clone(), metrics.clone());
        let b = StatusHandle::new(1, statuses.clone(), metrics.clone());
        let reading = |ts| Reading::new("x", ts, 1.0, None);
        a.enqueue(&queue, vec![reading(1), reading(2)])
            .await
            .unwrap();
        b.enqueue(&queue, vec![reading(3)]).await.unwrap();
        assert_eq!(queue.len(), 2);
        let text = metrics.encode();
        assert!(
            text.contains("kdelta_source_dropped_readings_total{source=\"a\"} 1"),
            "{text}"
        );
        assert!(
            !text.contains("kdelta_source_dropped_readings_total{source=\"b\"}"),
            "{text}"
        );
        assert_eq!(a.get().readings, 2, "produced, whatever happened later");
    }
}
