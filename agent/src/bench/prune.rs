//! `kdelta bench prune`: how fast retention prunes, and what it costs the ingest running at
//! the same time.
//!
//! One store in a temporary directory is filled with `--readings` readings of `--series`
//! series, one per series per second, `--batch` readings per change (not timed). Then a steady
//! ingest of small batches (`--ingest-batch` readings, one append at a time) runs for a while
//! alone, and again while a prune pass removes the older half of the readings (policy: raw
//! readings kept for half the filled span). It prints the prune rate (readings/s), the change
//! rows compacted into log runs (`kdelta_sync` `log_runs.rs`) and the ingest latency
//! percentiles without and during the prune.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use kdelta_sync::{HeldSpace, ReadingBatch, RetentionPolicy, Store, StoreConfig};
use serde::Serialize;

/// First timestamp of the generated readings (2025-11-24T16:00:00Z).
const T0_MS: i64 = 1_764_000_000_000;
/// Appends in flight while filling (group commit coalesces them).
const FILL_CONCURRENCY: usize = 16;

/// `kdelta bench prune`.
#[derive(Debug, Args)]
pub struct BenchPruneArgs {
    /// Readings in the store before the prune.
    #[arg(long, default_value_t = 2_000_000, value_parser = clap::value_parser!(u64).range(1000..=100_000_000))]
    pub readings: u64,
    /// Series they belong to (one reading per series per second).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub series: u32,
    /// Readings per change while filling.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    pub batch: u32,
    /// Readings per append of the concurrent ingest.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    pub ingest_batch: u32,
    /// Raw readings one prune transaction looks at (`retention.step_rows`).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(100..=1_000_000))]
    pub step_rows: u64,
    /// How long the ingest runs alone, for the baseline.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub baseline: Duration,
    /// Print the figures as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    readings: u64,
    series: u32,
    batch: u32,
    step_rows: u64,
    fill_secs: f64,
    pruned_readings: u64,
    prune_steps: u64,
    prune_secs: f64,
    prune_readings_per_sec: f64,
    /// Change rows the pass compacted into log runs (changes pruned wholly whose rollups
    /// went: here every change but the first of its minute, which carries them).
    changes_compacted: u64,
    ingest_batch: u32,
    baseline: Latency,
    during_prune: Latency,
    db_bytes_before: u64,
    db_bytes_after: u64,
    /// Bytes of pages by kind of data (`Store::space_held`), before and after the prune:
    /// the rollups grow by what the pruned readings' rollups kept for sync take.
    held_before: Vec<HeldSpace>,
    held_after: Vec<HeldSpace>,
}

#[derive(Debug, Serialize)]
struct Latency {
    appends: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn latency(mut samples: Vec<Duration>) -> Latency {
    samples.sort_unstable();
    let at = |q: f64| {
        samples
            .get(((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Latency {
        appends: samples.len(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: samples.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
    }
}

/// Appends small batches one after another until `stop`, timing each.
async fn steady_ingest(
    store: Store,
    batch: u32,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::new();
    let mut ts = T0_MS + 10 * 365 * 86_400_000;
    while !stop.load(Ordering::Relaxed) {
        let mut b = ReadingBatch::new();
        for i in 0..batch {
            b.push("bench.live", ts + i64::from(i), f64::from(i), None);
        }
        ts += i64::from(batch);
        let started = Instant::now();
        store
            .append(b)
            .await
            .context("appending during the bench")?;
        samples.push(started.elapsed());
    }
    Ok(samples)
}

/// `kdelta bench prune`.
pub async fn prune(args: BenchPruneArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let store = Store::open(dir.path().join("kdelta.db"), StoreConfig::default()).await?;
    let seconds = args.readings.div_ceil(u64::from(args.series)) as i64;

    let started = Instant::now();
    let per_change = u64::from(args.batch);
    let changes = args.readings.div_ceil(per_change);
    let mut next = 0u64;
    let mut in_flight = futures::stream::FuturesUnordered::new();
    use futures::StreamExt;
    while next < changes || !in_flight.is_empty() {
        while next < changes && in_flight.len() < FILL_CONCURRENCY {
            let mut b = ReadingBatch::new();
            let first = next * per_change;
            for k in first..(first + per_change).min(args.readings) {
                let series = k % u64::from(args.series);
                let second = (k / u64::from(args.series)) as i64;
                b.push(
                    &format!("bench.s{series}"),
                    T0_MS + second * 1000,
                    k as f64,
                    None,
                );
            }
            let s = store.clone();
            in_flight.push(async move { s.append(b).await });
            next += 1;
        }
        if let Some(r) = in_flight.next().await {
            r.context("filling the store")?;
        }
    }
    let fill_secs = started.elapsed().as_secs_f64();
    let db_bytes_before = store.stats().await?.db_bytes;
    let held_before = store.space_held().await?;

    let stop = Arc::new(AtomicBool::new(false));
    let ingest = tokio::spawn(steady_ingest(
        store.clone(),
        args.ingest_batch,
        stop.clone(),
    ));
    tokio::time::sleep(args.baseline).await;
    stop.store(true, Ordering::Relaxed);
    let baseline = latency(ingest.await??);

    // Keep the newer half: the cutoff falls in the middle of the filled span.
    let policy = RetentionPolicy {
        readings_max_age_ms: Some((seconds / 2 * 1000) as u64),
        ..RetentionPolicy::default()
    };
    let now = T0_MS + seconds * 1000;
    let stop = Arc::new(AtomicBool::new(false));
    let ingest = tokio::spawn(steady_ingest(
        store.clone(),
        args.ingest_batch,
        stop.clone(),
    ));
    let started = Instant::now();
    // The live series is kept (its readings are ten years ahead of the filled span).
    let report = store.prune(&policy, now, args.step_rows as usize).await?;
    let prune_secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let during_prune = latency(ingest.await??);
    let db_bytes_after = store.stats().await?.db_bytes;
    let held_after = store.space_held().await?;
    store.close().await;

    let out = Report {
        readings: args.readings,
        series: args.series,
        batch: args.batch,
        step_rows: args.step_rows,
        fill_secs,
        pruned_readings: report.readings,
        prune_steps: report.steps,
        prune_secs,
        prune_readings_per_sec: report.readings as f64 / prune_secs.max(1e-9),
        changes_compacted: report.changes_compacted,
        ingest_batch: args.ingest_batch,
        baseline,
        during_prune,
        db_bytes_before,
        db_bytes_after,
        held_before,
        held_after,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "filled {} readings ({} series, {} per change) in {:.1} s",
        out.readings, out.series, out.batch, out.fill_secs
    );
    println!(
        "pruned {} readings in {:.2} s ({} steps of {} rows): {:.0} readings/s",
        out.pruned_readings,
        out.prune_secs,
        out.prune_steps,
        out.step_rows,
        out.prune_readings_per_sec
    );
    println!(
        "compacted {} change rows into log runs",
        out.changes_compacted
    );
    for (what, l) in [
        ("ingest alone", &out.baseline),
        ("during prune", &out.during_prune),
    ] {
        println!(
            "{what}: {} appends of {} readings, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            l.appends, out.ingest_batch, l.p50_ms, l.p99_ms, l.max_ms
        );
    }
    println!(
        "store {} before, {} after (main file + WAL; a new store gives freed pages back)",
        super::mib(out.db_bytes_before),
        super::mib(out.db_bytes_after)
    );
    for (when, held) in [("before", &out.held_before), ("after", &out.held_after)] {
        let kinds: Vec<String> = held
            .iter()
            .map(|h| format!("{} {}", h.holder.as_str(), super::mib(h.bytes)))
            .collect();
        println!("pages held {when}: {}", kinds.join(", "));
    }
    Ok(())
}
