//! The batcher: takes readings off the [`IngestQueue`] and commits them to the store as
//! batches, flushing when a batch holds `ingest.batch_max_readings` readings or its first
//! reading has waited `ingest.batch_max_age`. One batch is one change in the store, so
//! batching is what keeps the change log small and commits cheap.
//!
//! While the wall clock is not trusted, readings are timed as they are taken off the queue
//! (`sample_timing.rs`) and a batch holds readings of one timing only (a clock step splits
//! it), so each batch's timing record says exactly how its readings were stamped.
//!
//! A batch is cleaned before it is committed — every reading the store would refuse (a bad
//! series name, a value that is not finite, a timestamp outside 1970..9999, a unit that is too
//! long: [`check_reading`]) is dropped and counted per source and reason, and two readings of
//! one series at one millisecond keep the later one — because the store refuses a batch as a
//! whole, and one bad reading must cost only itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use kdelta_sync::{
    ReadingBatch, ReadingProblem, ReadingTiming, SeriesPoints, Store, StoreError, check_reading,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::queue::{IngestQueue, Queued};
use crate::internal_events::{IngestCommitted, IngestRejected, InternalEvent, ReadingsDropped};
use crate::metrics::Metrics;
use crate::sample_timing::{SampleTimer, same_timing};

/// Where batches go: the store, or a recorder in tests.
pub trait BatchSink: Send + Sync + 'static {
    /// Commits `batch` durably, or refuses it whole.
    fn append(&self, batch: ReadingBatch) -> BoxFuture<'_, Result<(), StoreError>>;
}

impl BatchSink for Store {
    fn append(&self, batch: ReadingBatch) -> BoxFuture<'_, Result<(), StoreError>> {
        // A batch too large for one change is stored as several: no reading is lost to the
        // size limit (the batcher promises no atomicity).
        Box::pin(async move { Store::append_in_parts(self, batch).await.map(|_| ()) })
    }
}

/// Longest wait between retries of a batch the store could not commit for a transient reason.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(5);

/// Batching limits (from `[ingest]`).
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Flush at this many readings.
    pub max_readings: usize,
    /// Flush when the first reading of the batch has waited this long.
    pub max_age: Duration,
}

/// The batcher task's state.
pub struct Batcher<S> {
    sink: S,
    limits: BatchLimits,
    metrics: Arc<Metrics>,
    /// Times readings while the clock is untrusted; `None`: never (tests, no boot id).
    timer: Option<Arc<SampleTimer>>,
}

impl<S: BatchSink> Batcher<S> {
    /// A batcher committing into `sink`.
    pub fn new(sink: S, limits: BatchLimits, metrics: Arc<Metrics>) -> Self {
        Batcher {
            sink,
            limits: BatchLimits {
                max_readings: limits.max_readings.max(1),
                ..limits
            },
            metrics,
            timer: None,
        }
    }

    /// Times the readings it takes while the wall clock is untrusted.
    pub fn with_timer(mut self, timer: Arc<SampleTimer>) -> Self {
        self.timer = Some(timer);
        self
    }

    /// The timing of each of `items` (taken off the queue now).
    fn time(&self, items: &[Queued], out: &mut Vec<Option<ReadingTiming>>) {
        let timing = self.timer.as_ref().and_then(|t| t.timing_now());
        let wall = crate::time::now_ms();
        out.extend(
            items
                .iter()
                .map(|q| timing.filter(|_| SampleTimer::locally_timed(q.reading.ts_ms, wall))),
        );
    }

    /// Runs until `queue` is closed and drained, committing everything it held. `give_up`
    /// stops retrying a batch the store keeps failing on (shutdown deadline); the readings of
    /// that batch are then lost, and the error says how many.
    pub async fn run(
        self,
        queue: Arc<IngestQueue>,
        give_up: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut pending: Vec<Queued> = Vec::with_capacity(self.limits.max_readings);
        let mut timings: Vec<Option<ReadingTiming>> = Vec::with_capacity(self.limits.max_readings);
        let mut deadline: Option<Instant> = None;
        loop {
            let room = self.limits.max_readings - pending.len();
            let popped = tokio::select! {
                n = queue.pop_into(&mut pending, room) => Some(n),
                _ = sleep_until(deadline), if deadline.is_some() => None,
            };
            if let Some(n) = popped.filter(|n| *n > 0) {
                self.time(&pending[pending.len() - n..], &mut timings);
            }
            match popped {
                Some(0) => {
                    self.flush(&mut pending, &mut timings, &give_up).await?;
                    return Ok(());
                }
                Some(_) => {
                    deadline.get_or_insert_with(|| Instant::now() + self.limits.max_age);
                    if pending.len() >= self.limits.max_readings {
                        self.flush(&mut pending, &mut timings, &give_up).await?;
                        deadline = None;
                    }
                }
                None => {
                    self.flush(&mut pending, &mut timings, &give_up).await?;
                    deadline = None;
                }
            }
        }
    }

    /// Commits `pending` (emptying it, and `timings` beside it), one batch per timing.
    async fn flush(
        &self,
        pending: &mut Vec<Queued>,
        timings: &mut Vec<Option<ReadingTiming>>,
        give_up: &CancellationToken,
    ) -> anyhow::Result<()> {
        let groups = group_by_timing(pending.drain(..).zip(timings.drain(..)));
        for (timing, items) in groups {
            let (mut batch, counts) = self.build(items.into_iter());
            if batch.is_empty() {
                continue;
            }
            batch.timing = timing;
            self.commit(batch, counts, give_up).await?;
        }
        Ok(())
    }

    /// Commits one batch, retrying transient failures.
    async fn commit(
        &self,
        batch: ReadingBatch,
        counts: HashMap<Arc<str>, u64>,
        give_up: &CancellationToken,
    ) -> anyhow::Result<()> {
        let mut backoff = Duration::from_millis(100);
        loop {
            let started = std::time::Instant::now();
            match self.sink.append(batch.clone()).await {
                Ok(()) => {
                    // One commit: its duration is observed once, with the first source.
                    let mut seconds = started.elapsed().as_secs_f64();
                    for (source, n) in &counts {
                        IngestCommitted {
                            source,
                            readings: *n,
                            batches: 1,
                            seconds: std::mem::take(&mut seconds),
                        }
                        .emit(&self.metrics);
                    }
                    return Ok(());
                }
                Err(StoreError::Closed) => {
                    anyhow::bail!(
                        "the store closed with {} readings not committed",
                        batch.len()
                    );
                }
                Err(e) if e.is_transient() && !give_up.is_cancelled() => {
                    tracing::warn!(
                        readings = batch.len(),
                        "committing a batch failed, retrying in {}: {e}",
                        humantime::format_duration(backoff)
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = give_up.cancelled() => {}
                    }
                    backoff = (backoff * 2).min(MAX_RETRY_BACKOFF);
                }
                Err(e) if e.is_transient() => {
                    anyhow::bail!(
                        "gave up committing {} readings at shutdown: {e}",
                        batch.len()
                    );
                }
                Err(e) => {
                    // Should not happen after cleaning; a bug or a limit change. Losing this
                    // batch is bad, stopping ingest for good would be worse.
                    for (source, n) in &counts {
                        IngestRejected {
                            source,
                            code: e.code(),
                            readings: Some(*n),
                            error: Some(&e),
                        }
                        .emit(&self.metrics);
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Groups readings by series, dropping unusable ones (counted per source).
    fn build(&self, items: impl Iterator<Item = Queued>) -> (ReadingBatch, HashMap<Arc<str>, u64>) {
        let mut counts: HashMap<Arc<str>, u64> = HashMap::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut series: Vec<SeriesPoints> = Vec::new();
        // Per source and reason: how many, and the series of the first one (for the log).
        let mut dropped: HashMap<(Arc<str>, ReadingProblem), (u64, String)> = HashMap::new();
        for Queued { source, reading } in items {
            let checked = check_reading(
                &reading.series,
                reading.ts_ms,
                reading.value,
                reading.unit.as_deref(),
            );
            if let Err(problem) = checked {
                dropped
                    .entry((source, problem))
                    .or_insert_with(|| (0, reading.series))
                    .0 += 1;
                continue;
            }
            let idx = match index.get(&reading.series) {
                Some(&i) => i,
                None => {
                    series.push(SeriesPoints {
                        name: reading.series.clone(),
                        unit: reading.unit.clone(),
                        meta: Default::default(),
                        ts: Vec::new(),
                        values: Vec::new(),
                    });
                    index.insert(reading.series, series.len() - 1);
                    series.len() - 1
                }
            };
            let s = &mut series[idx];
            if s.unit.is_none() {
                s.unit = reading.unit;
            }
            s.ts.push(reading.ts_ms);
            s.values.push(reading.value);
            *counts.entry(source).or_default() += 1;
        }
        for ((source, problem), (readings, example)) in &dropped {
            ReadingsDropped {
                source,
                readings: *readings,
                problem: *problem,
                series: example,
            }
            .emit(&self.metrics);
        }
        for s in &mut series {
            dedup_by_time(s);
        }
        (
            ReadingBatch {
                series,
                timing: None,
            },
            counts,
        )
    }
}

/// Splits readings into runs of one timing, in order of first appearance: untimed readings
/// together, and timed ones per boot and offset ([`same_timing`]).
fn group_by_timing(
    items: impl Iterator<Item = (Queued, Option<ReadingTiming>)>,
) -> Vec<(Option<ReadingTiming>, Vec<Queued>)> {
    let mut groups: Vec<(Option<ReadingTiming>, Vec<Queued>)> = Vec::new();
    for (item, timing) in items {
        match groups.iter_mut().find(|(g, _)| same_timing(*g, timing)) {
            Some((_, items)) => items.push(item),
            None => groups.push((timing, vec![item])),
        }
    }
    groups
}

/// Sorts a series by time and keeps the last value of each millisecond (a source that
/// sampled twice within one ms, or a device repeating a timestamp).
fn dedup_by_time(s: &mut SeriesPoints) {
    if s.ts.windows(2).all(|w| w[0] < w[1]) {
        return;
    }
    let mut pairs: Vec<(i64, f64)> = s.ts.iter().copied().zip(s.values.iter().copied()).collect();
    pairs.sort_by_key(|p| p.0); // stable: equal times keep arrival order
    let mut out: Vec<(i64, f64)> = Vec::with_capacity(pairs.len());
    for p in pairs {
        match out.last_mut() {
            Some(last) if last.0 == p.0 => *last = p,
            _ => out.push(p),
        }
    }
    s.ts = out.iter().map(|p| p.0).collect();
    s.values = out.iter().map(|p| p.1).collect();
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::Overflow;
    use kdelta_sensors::Reading;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Recorder {
        batches: Arc<Mutex<Vec<(Duration, ReadingBatch)>>>,
        start: Arc<Mutex<Option<Instant>>>,
        metrics: Arc<Metrics>,
    }

    fn rec_metrics(rec: &Recorder) -> String {
        rec.metrics.encode()
    }

    impl BatchSink for Recorder {
        fn append(&self, batch: ReadingBatch) -> BoxFuture<'_, Result<(), StoreError>> {
            Box::pin(async move {
                let start = self.start.lock().unwrap().expect("start set");
                self.batches.lock().unwrap().push((start.elapsed(), batch));
                Ok(())
            })
        }
    }

    fn queued(series: &str, ts: i64, value: f64) -> Queued {
        Queued {
            source: "test".into(),
            reading: Reading::new(series, ts, value, Some("u")),
        }
    }

    fn setup(
        max_readings: usize,
        max_age: Duration,
    ) -> (
        Recorder,
        Arc<IngestQueue>,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    ) {
        let recorder = Recorder::default();
        *recorder.start.lock().unwrap() = Some(Instant::now());
        let queue = Arc::new(IngestQueue::new(10_000, Overflow::Block));
        let batcher = Batcher::new(
            recorder.clone(),
            BatchLimits {
                max_readings,
                max_age,
            },
            recorder.metrics.clone(),
        );
        let task = tokio::spawn(batcher.run(queue.clone(), CancellationToken::new()));
        (recorder, queue, task)
    }

    #[tokio::test(start_paused = true)]
    async fn flushes_by_count_without_waiting() {
        let (rec, queue, task) = setup(3, Duration::from_secs(60));
        queue
            .push((0..7).map(|i| queued("a", i, 1.0)).collect())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        {
            let batches = rec.batches.lock().unwrap();
            assert_eq!(
                batches.iter().map(|(_, b)| b.len()).collect::<Vec<_>>(),
                vec![3, 3]
            );
            assert!(batches.iter().all(|(at, _)| *at < Duration::from_millis(1)));
        }
        queue.close();
        task.await.unwrap().unwrap();
        assert_eq!(
            rec.batches.lock().unwrap().last().unwrap().1.len(),
            1,
            "close flushes the rest"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn flushes_by_age() {
        let (rec, queue, task) = setup(1000, Duration::from_secs(1));
        queue.push(vec![queued("a", 1, 1.0)]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        queue.push(vec![queued("a", 2, 2.0)]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(rec.batches.lock().unwrap().is_empty(), "not yet 1 s old");
        tokio::time::sleep(Duration::from_millis(200)).await;
        {
            let batches = rec.batches.lock().unwrap();
            assert_eq!(batches.len(), 1);
            assert_eq!(
                batches[0].0,
                Duration::from_secs(1),
                "flushed exactly at max_age"
            );
            assert_eq!(batches[0].1.len(), 2);
        }
        queue.close();
        task.await.unwrap().unwrap();
        assert_eq!(
            rec.batches.lock().unwrap().len(),
            1,
            "nothing left to flush"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn cleans_the_batch() {
        let (rec, queue, task) = setup(1000, Duration::from_secs(1));
        queue
            .push(vec![
                queued("a", 5, 1.0),
                queued("a", 3, 2.0),
                queued("a", 5, 3.0),
                queued("a", 4, f64::NAN),
                queued(" padded", 1, 1.0),
                queued("b", 1, 9.0),
                queued("b", -1, 9.0),
                queued("b", kdelta_sync::MAX_TS_MS, 9.0),
                Queued {
                    source: "other".into(),
                    reading: Reading::new("c", 7, 1.0, Some(&"u".repeat(33))),
                },
            ])
            .await
            .unwrap();
        queue.close();
        task.await.unwrap().unwrap();
        let batches = rec.batches.lock().unwrap();
        let batch = &batches[0].1;
        let a = batch.series.iter().find(|s| s.name == "a").unwrap();
        assert_eq!(a.ts, vec![3, 5]);
        assert_eq!(a.values, vec![2.0, 3.0], "the later reading of ts 5 wins");
        assert_eq!(a.unit.as_deref(), Some("u"));
        assert_eq!(batch.series.len(), 2);
        assert_eq!(batch.series[1].ts, vec![1], "b keeps its good reading");
        batch
            .validate(&kdelta_sync::Limits::default())
            .expect("the store accepts it");
        drop(batches);
        let counted = rec_metrics(&rec);
        for (source, reason, n) in [
            ("test", "not_finite", 1),
            ("test", "bad_series_name", 1),
            ("test", "bad_timestamp", 2),
            ("other", "unit_too_long", 1),
        ] {
            let line = format!(
                "kdelta_source_rejected_readings_total{{source=\"{source}\",reason=\"{reason}\"}} {n}"
            );
            assert!(counted.contains(&line), "{line} in\n{counted}");
        }
    }

    /// The sensors crate refuses at decode and config time what the store would refuse.
    #[test]
    fn the_sensors_limits_are_the_stores() {
        assert_eq!(
            kdelta_sensors::time::MAX_TIMESTAMP_MS,
            kdelta_sync::MAX_TS_MS
        );
        assert_eq!(
            kdelta_sensors::config::MAX_UNIT_BYTES,
            kdelta_sync::MAX_UNIT_BYTES
        );
    }

    #[tokio::test]
    async fn commits_into_a_real_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("kdelta.db"), Default::default())
            .await
            .unwrap();
        let queue = Arc::new(IngestQueue::new(100, Overflow::Block));
        let metrics = Arc::new(Metrics::new());
        let batcher = Batcher::new(
            store.clone(),
            BatchLimits {
                max_readings: 10,
                max_age: Duration::from_millis(50),
            },
            metrics.clone(),
        );
        let task = tokio::spawn(batcher.run(queue.clone(), CancellationToken::new()));
        queue
            .push(
                (0..25)
                    .map(|i| queued("x", 1_700_000_000_000 + i, i as f64))
                    .collect(),
            )
            .await
            .unwrap();
        queue.close();
        task.await.unwrap().unwrap();
        assert_eq!(store.stats().await.unwrap().readings, 25);
        assert!(
            metrics
                .encode()
                .contains("kdelta_readings_ingested_total{source=\"test\"} 25")
        );
        store.close().await;
    }
}
