//! `kdelta bench sync`: a device's backlog to a hub over a real loopback WebSocket, end to end.
//!
//! Two stores in one process: the device store is filled first (not timed), then a hub
//! serves the agent's real router (`GET /v1/sync`) on `127.0.0.1:0` and the device runs the
//! real outbound peer task against it. The clock runs from starting the peer (connect and
//! handshake included) until the hub holds every change; then the digests are compared. It
//! prints readings/s, the bytes the device sent against the CBOR size of the changes, and the
//! growth of this process's RSS during the sync (device and hub together, so an upper bound
//! for a hub alone).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use kdelta_sync::protocol::Direction;
use kdelta_sync::{ChangeBody, ReadingBatch, Store, StoreConfig, VersionVector};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::BenchSyncArgs;
use super::{mib, proc_sample};
use crate::metrics::Metrics;
use crate::peers::{AcceptToken, PeerConfig, Registry, SyncSection};
use crate::state::{Agent, AgentInner};

/// First timestamp of the generated readings (2025-11-24T16:00:00Z).
const T0_MS: i64 = 1_764_000_000_000;
/// Appends in flight while filling the device store (group commit coalesces them).
const FILL_CONCURRENCY: usize = 32;
/// How often the hub's version vector and the process RSS are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(5);
const TOKEN: &str = "kdelta-bench-sync-token";

/// Everything the run measured.
#[derive(Debug, Serialize)]
struct Report {
    readings: u64,
    changes: u64,
    series: u32,
    batch: u32,
    compression: String,
    page_bytes: usize,
    /// Seconds to fill the device store (not part of the figure).
    fill_secs: f64,
    /// Connect → the hub holds every change.
    sync_secs: f64,
    readings_per_sec: f64,
    /// Sum of the CBOR encodings of the changes, as stored and as sent uncompressed.
    cbor_bytes: u64,
    /// Sync frames the device sent (WebSocket payloads).
    wire_bytes_out: u64,
    frames_out: u64,
    /// WebSocket headers of those frames: at most 14 bytes each (masked client frames).
    ws_header_bytes_max: u64,
    /// Frames the hub sent back (acks, keepalives).
    wire_bytes_in: u64,
    /// `(wire_bytes_out + ws_header_bytes_max) / cbor_bytes`.
    wire_ratio: f64,
    pages: u64,
    rss_before_bytes: u64,
    rss_peak_bytes: u64,
    rss_growth_bytes: u64,
    /// CPU time of this process during the sync, in cores (device and hub together).
    cpu_cores: f64,
    digests_equal: bool,
}

/// Runs the benchmark; an error when the hub does not catch up or ends up different.
pub async fn sync(args: BenchSyncArgs) -> anyhow::Result<()> {
    let tmp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("kdelta-bench-sync-")
                .tempdir()
                .context("creating a temporary directory")?;
            tmp.path().to_path_buf()
        }
    };
    for name in ["device.db", "hub.db"] {
        if dir.join(name).exists() {
            bail!(
                "{} already holds {name}: use an empty directory",
                dir.display()
            );
        }
    }
    let device = open(&dir.join("device.db")).await?;
    let hub = open(&dir.join("hub.db")).await?;
    let result = run(&args, &dir, &device, &hub).await;
    device.close().await;
    hub.close().await;
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report);
    }
    if !report.digests_equal {
        bail!("the hub's digest differs from the device's after the sync");
    }
    Ok(())
}

async fn open(path: &Path) -> anyhow::Result<Store> {
    Store::open(path, StoreConfig::default())
        .await
        .with_context(|| format!("opening {}", path.display()))
}

async fn run(
    args: &BenchSyncArgs,
    dir: &Path,
    device: &Store,
    hub: &Store,
) -> anyhow::Result<Report> {
    if !args.json {
        println!(
            "kdelta bench sync: {} readings ({} series, {} per change), device → hub over a loopback WebSocket, compression {}, pages of {} bytes",
            args.readings, args.series, args.batch, args.compression, args.page_bytes
        );
    }
    let started = Instant::now();
    let changes = fill(device, args).await?;
    let fill_secs = started.elapsed().as_secs_f64();
    let (cbor_bytes, held) = cbor_size(device).await?;
    if held != args.readings {
        bail!(
            "the device holds {held} readings, {} were written",
            args.readings
        );
    }
    let target = device.version_vector();

    // The hub: the agent's router on a loopback port, accepting the bench's token.
    let hub_section = SyncSection {
        accept_tokens: vec![AcceptToken::clear("device", TOKEN)],
        page_bytes: args.page_bytes,
        ..SyncSection::default()
    };
    let hub_stop = CancellationToken::new();
    let hub_state = Agent::new(AgentInner {
        backend: crate::backend::Backend::Sqlite(hub.clone()),
        metrics: Arc::new(Metrics::new()),
        started: Instant::now(),
        data_dir: dir.to_path_buf(),
        sources: Arc::new(RwLock::new(Vec::new())),
        mqtt_ingest: Default::default(),
        device: "bench-hub".into(),
        ready: AtomicBool::new(true),
        max_body_bytes: 1 << 20,
        shutdown: hub_stop.clone(),
        peers: Arc::new(Registry::new(&hub_section, "bench-hub")),
        guard: Default::default(),
        clock: Some(crate::clock::ClockMonitor::new(
            &Default::default(),
            hub.time_reference(),
        )),
        retention: Default::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding a loopback port for the hub")?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn({
        let stop = hub_stop.clone();
        let app = crate::api::router(hub_state);
        async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }
    });

    // The device: one outbound peer, the same task `kdelta start` runs.
    let peer = PeerConfig {
        name: "hub".into(),
        url: format!("ws://{addr}"),
        token: Some(TOKEN.into()),
        ca: None,
        client_cert: None,
        client_key: None,
        upstream: false,
    };
    let device_section = SyncSection {
        page_bytes: args.page_bytes,
        compression: vec![args.compression.clone()],
        peers: vec![peer.clone()],
        ..SyncSection::default()
    };
    device_section.validate()?;
    let registry = Arc::new(Registry::new(&device_section, "bench-device"));
    let device_stop = CancellationToken::new();
    let tracker = TaskTracker::new();

    let rss_before = proc_sample(std::process::id());
    let rss_peak = Arc::new(AtomicU64::new(
        rss_before.as_ref().map_or(0, |s| s.rss_bytes),
    ));
    let sampling = CancellationToken::new();
    let sampler = tokio::spawn(sample_rss(rss_peak.clone(), sampling.clone()));
    let sync_started = Instant::now();
    crate::peers::spawn_peers(
        &device_section.peers,
        &registry,
        device,
        &Arc::new(Metrics::new()),
        &tracker,
        &device_stop,
    );
    tracker.close();
    let caught_up = wait_for(hub, &target, args.timeout).await;
    let sync_secs = sync_started.elapsed().as_secs_f64();
    let cpu_after = proc_sample(std::process::id());
    sampling.cancel();
    let _ = sampler.await;

    let url = peer.ws_url().unwrap_or_default();
    let stats = registry
        .stats_for(&peer.name, Direction::Outbound, Some(&url))
        .snapshot();
    device_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await;
    hub_stop.cancel();
    if tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .is_err()
    {
        tracing::warn!("the bench hub did not stop within 10 s");
    }
    if !caught_up {
        let why = stats
            .last_error
            .map_or_else(|| "no error reported".to_owned(), |e| e.message);
        bail!(
            "the hub did not catch up within {} ({} of {} changes; last error: {why})",
            humantime::format_duration(args.timeout),
            hub.version_vector().total(),
            target.total()
        );
    }

    let rss_before_bytes = rss_before.as_ref().map_or(0, |s| s.rss_bytes);
    let rss_peak_bytes = rss_peak.load(Ordering::Relaxed);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu_cores = match (&rss_before, &cpu_after) {
        (Some(b), Some(a)) => a.cpu_ticks.saturating_sub(b.cpu_ticks) as f64 / hz / sync_secs,
        _ => 0.0,
    };
    let ws_header_bytes_max = stats.frames_out * 14;
    Ok(Report {
        readings: args.readings,
        changes,
        series: args.series,
        batch: args.batch,
        compression: args.compression.clone(),
        page_bytes: args.page_bytes,
        fill_secs,
        sync_secs,
        readings_per_sec: args.readings as f64 / sync_secs,
        cbor_bytes,
        wire_bytes_out: stats.bytes_out,
        frames_out: stats.frames_out,
        ws_header_bytes_max,
        wire_bytes_in: stats.bytes_in,
        wire_ratio: (stats.bytes_out + ws_header_bytes_max) as f64 / cbor_bytes.max(1) as f64,
        pages: stats.pages_sent,
        rss_before_bytes,
        rss_peak_bytes,
        rss_growth_bytes: rss_peak_bytes.saturating_sub(rss_before_bytes),
        cpu_cores,
        digests_equal: hub.digest() == device.digest(),
    })
}

/// Fills `device` with `args.readings` readings, `args.batch` per change; returns the
/// number of changes.
async fn fill(device: &Store, args: &BenchSyncArgs) -> anyhow::Result<u64> {
    let names: Arc<Vec<String>> = Arc::new(
        (0..args.series)
            .map(|s| format!("bench.sensor{s:05}"))
            .collect(),
    );
    let (total, batch, series) = (args.readings, u64::from(args.batch), u64::from(args.series));
    let changes = total.div_ceil(batch);
    futures::stream::iter(0..changes)
        .map(|c| {
            let names = names.clone();
            async move {
                let mut b = ReadingBatch::new();
                for k in c * batch..((c + 1) * batch).min(total) {
                    let (second, s) = ((k / series) as i64, (k % series) as usize);
                    b.push(
                        &names[s],
                        T0_MS + second * 1000,
                        sensor_value(k, s),
                        Some("°C"),
                    );
                }
                device.append(b).await
            }
        })
        .buffer_unordered(FILL_CONCURRENCY)
        .try_for_each(|_| async { Ok(()) })
        .await
        .context("filling the device store")?;
    Ok(changes)
}

/// A sensor-like value: a slow curve per series plus noise, at 0.01 resolution (so most
/// values need a full 9-byte float, as real readings do).
fn sensor_value(k: u64, series: usize) -> f64 {
    let mut x = k.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (series as u64);
    x ^= x >> 29;
    let noise = (x % 1000) as f64 / 1000.0 - 0.5;
    let v = 20.0 + ((k as f64) / 3000.0 + series as f64).sin() * 5.0 + noise;
    (v * 100.0).round() / 100.0
}

/// The CBOR size of every change `store` holds, and the readings in them; reads the log in
/// 4 MiB pages, so memory stays bounded.
async fn cbor_size(store: &Store) -> anyhow::Result<(u64, u64)> {
    let mut seen = VersionVector::new();
    let (mut bytes, mut readings) = (0u64, 0u64);
    loop {
        let page = store.changes_since(&seen, 4 << 20).await?;
        if page.is_empty() {
            return Ok((bytes, readings));
        }
        for c in &page {
            bytes += c.to_cbor().len() as u64;
            if let ChangeBody::Readings(b) = &c.body {
                readings += b.len() as u64;
            }
            if c.seq > seen.get(&c.actor) {
                seen.set(c.actor, c.seq);
            }
        }
    }
}

/// Polls `hub` until it holds `target`; false after `limit`.
async fn wait_for(hub: &Store, target: &VersionVector, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    loop {
        if hub.version_vector().dominates(target) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tick.tick().await;
    }
}

/// Keeps the highest RSS of this process in `peak` until `stop`.
async fn sample_rss(peak: Arc<AtomicU64>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    while !stop.is_cancelled() {
        if let Some(s) = proc_sample(std::process::id()) {
            peak.fetch_max(s.rss_bytes, Ordering::Relaxed);
        }
        tokio::select! {
            () = stop.cancelled() => {}
            _ = tick.tick() => {}
        }
    }
}

fn print_report(r: &Report) {
    println!(
        "fill         {} changes in {:.1} s (not timed)",
        r.changes, r.fill_secs
    );
    println!(
        "sync         {:.2} s: {:.0} readings/s end to end (connect to the hub holding every change; digests {})",
        r.sync_secs,
        r.readings_per_sec,
        if r.digests_equal { "equal" } else { "DIFFER" }
    );
    println!(
        "wire         device → hub {} B in {} frames ({} pages) + ≤ {} B of WebSocket headers; hub → device {} B",
        r.wire_bytes_out, r.frames_out, r.pages, r.ws_header_bytes_max, r.wire_bytes_in
    );
    println!(
        "vs CBOR      {} B of change CBOR: wire/CBOR = {:.3}×",
        r.cbor_bytes, r.wire_ratio
    );
    println!(
        "RSS          {} before, peak {} during the sync: +{} (device and hub in this process)",
        mib(r.rss_before_bytes),
        mib(r.rss_peak_bytes),
        mib(r.rss_growth_bytes)
    );
    println!("CPU          {:.2} cores during the sync", r.cpu_cores);
}
