//! `kdelta bench fleet` (issue 17): many simulated devices replay their backlogs into one,
//! then two (or any list of) hub replicas on PostgreSQL, end to end with real processes.
//!
//! Prepared before anything is timed: one SQLite store per device (the device's own signed
//! change log) holding `backlog_changes` changes of `series × per_change` readings. Each
//! phase then works in a fresh schema, starts its replicas as `kdelta start` processes of
//! this executable (`[store] backend = "postgres"`, ready on `/readyz`), syncs every device
//! once through the agent's outbound peer code (device i → replica i mod n, at most
//! `concurrency` sessions at once), checks that the database holds every change and reading
//! exactly once (version vector, digest, row count) and drops the schema. A phase whose data
//! did not all arrive fails; it never prints a rate.
//!
//! Figures per phase: readings and changes applied per second of wall time (first session
//! started → last backlog acknowledged), sync lag per device (its session requested → the
//! replica acknowledged its last change) as p50/p90/p99/max, and CPU seconds of PostgreSQL
//! (every process named `postgres`), of the replicas and of this process (the devices).
//!
//! With `--follow-log`, a follower of the database's change log in commit order (what a
//! hub's MQTT outbox reads) runs in this process during each phase: when it read the last
//! change, against the last acknowledgement, and the time its reads took.
//!
//! Files: `devices.rs` (stores and sessions), `replicas.rs` (the processes), `db.rs` (schema
//! and verification), `cpu.rs` (/proc), `follow.rs` (the log follower).

mod cpu;
mod db;
mod devices;
mod follow;
mod replicas;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use kdelta_sync::protocol::DeviceRelay;
use serde::Serialize;

use cpu::CpuSample;
use db::PhaseDb;
use devices::{Device, Outcome, Sessions, Shape};
use replicas::Replica;

/// `kdelta bench fleet`.
#[derive(Debug, Args)]
pub struct BenchFleetArgs {
    /// The PostgreSQL server (`postgres://user@host:port/db`); each phase works in a schema
    /// of its own, dropped at its end.
    #[arg(long, env = "KDELTA_POSTGRES", value_name = "URL")]
    pub url: String,
    /// Simulated devices.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub devices: u32,
    /// Series per device.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub series: u32,
    /// Readings per series in one change (seconds a device at 1 Hz batches into a change).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub per_change: u32,
    /// Changes in each device's backlog.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub backlog_changes: u32,
    /// Phases: the number of hub replicas of each, in order.
    #[arg(long, default_value = "1,2", value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..=16))]
    pub replicas: Vec<u16>,
    /// Device sessions at once (over all replicas).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// `push`: a device leaves once the replica acknowledged its backlog (what the hub
    /// relayed to it until then is counted); `both`: one-shot sessions, which also bring
    /// every device everything the hub holds (every other device's changes: O(devices²)).
    #[arg(long, default_value = "push", value_parser = ["push", "both"])]
    pub sessions: String,
    /// What the replicas send the devices (`[sync] device_relay`): `own` (only the hub's
    /// own changes and the device's — a fleet hub) or `all` (every other device's changes
    /// too: relay work grows with devices²).
    #[arg(long, default_value = "own", value_parser = parse_device_relay)]
    pub device_relay: DeviceRelay,
    /// `shared`: every device writes the same series names (as kdelta's sources name
    /// theirs, so the hub merges each into one series); `per-device`: names of its own.
    #[arg(long, default_value = "shared", value_parser = ["shared", "per-device"])]
    pub series_names: String,
    /// Directory for the device stores and the replicas (default: a new temporary directory,
    /// removed at the end).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Give up on a phase after this long.
    #[arg(long, default_value = "20m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Follow the database's change log in commit order during each phase (what a hub's
    /// MQTT outbox reads) and report how far it trails the devices' acknowledgements.
    #[arg(long)]
    pub follow_log: bool,
    /// Print the figures as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Everything the run measured.
#[derive(Debug, Serialize)]
struct Report {
    devices: u32,
    series: u32,
    per_change: u32,
    backlog_changes: u32,
    readings_per_device: u64,
    concurrency: u16,
    sessions: String,
    device_relay: DeviceRelay,
    series_names: String,
    /// Seconds to create and fill the device stores (not timed).
    prepare_secs: f64,
    phases: Vec<PhaseReport>,
}

/// One phase's figures.
#[derive(Debug, Serialize)]
struct PhaseReport {
    replicas: usize,
    /// Readings and changes the database holds at the end (verified).
    readings: u64,
    changes: u64,
    /// First session started → last backlog acknowledged.
    wall_secs: f64,
    readings_per_sec: f64,
    changes_per_sec: f64,
    /// This phase's readings/s over the first phase's.
    vs_first: f64,
    /// Per device: session requested → the replica acknowledged its last change.
    lag_ms: Percentiles,
    /// CPU seconds during the phase (first session started → last session closed), and
    /// as cores (seconds over that window). `None` when /proc does not show them.
    cpu_window_secs: f64,
    postgres_cpu_secs: Option<f64>,
    replicas_cpu_secs: Option<f64>,
    devices_cpu_secs: Option<f64>,
    /// Changes of other devices the hub sent devices during their sessions.
    relayed_changes: u64,
    bytes_to_devices: u64,
    bytes_from_devices: u64,
    /// Device sessions that failed before their acknowledgement and were run again.
    retries: u32,
    /// Their errors (without the replica's URL), with how often each occurred.
    retry_errors: std::collections::BTreeMap<String, u32>,
    /// The log follower (`--follow-log`).
    follower: Option<follow::FollowReport>,
    /// The database's digest: equal to the sum of the devices' digests (checked).
    digest: String,
}

/// Milliseconds.
#[derive(Debug, Serialize)]
struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

impl Percentiles {
    fn of(mut values: Vec<Duration>) -> Percentiles {
        values.sort();
        let at = |q: f64| {
            if values.is_empty() {
                return 0.0;
            }
            // Nearest rank.
            let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
            values[rank - 1].as_secs_f64() * 1000.0
        };
        Percentiles {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// `--device-relay`: `all` or `own`.
fn parse_device_relay(s: &str) -> Result<DeviceRelay, String> {
    match s {
        "all" => Ok(DeviceRelay::All),
        "own" => Ok(DeviceRelay::Own),
        other => Err(format!("{other:?}: use \"own\" or \"all\"")),
    }
}

/// Runs the benchmark; an error when a phase's data does not all arrive.
pub async fn fleet(args: BenchFleetArgs) -> anyhow::Result<()> {
    if args.replicas.is_empty() {
        bail!("--replicas names no phase");
    }
    let tmp;
    let root = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            if std::fs::read_dir(d)?.next().is_some() {
                bail!("{} is not empty: use an empty directory", d.display());
            }
            d.clone()
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("kdelta-bench-fleet-")
                .tempdir()
                .context("creating a temporary directory")?;
            tmp.path().to_path_buf()
        }
    };
    let shape = Shape {
        devices: args.devices,
        series: args.series,
        per_change: args.per_change,
        changes: args.backlog_changes,
        shared_series: args.series_names == "shared",
    };
    let sessions = if args.sessions == "both" {
        Sessions::Both
    } else {
        Sessions::Push
    };
    if !args.json {
        println!(
            "kdelta bench fleet: {} devices × {} series, backlog {} changes × {} readings per series ({} readings per device), replicas {}, {} sessions at once ({}, device_relay {}, {} series names), PostgreSQL {}",
            args.devices,
            args.series,
            args.backlog_changes,
            args.per_change,
            shape.readings_per_device(),
            args.replicas
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" then "),
            args.concurrency,
            args.sessions,
            args.device_relay.as_str(),
            args.series_names,
            crate::backend::redact_url(&args.url, "<redacted>")
        );
    }
    let pristine = root.join("devices");
    let started = Instant::now();
    let devices = devices::prepare(&pristine, shape).await?;
    let prepare_secs = started.elapsed().as_secs_f64();
    if !args.json {
        println!(
            "prepare      {} device stores in {prepare_secs:.1} s (not timed)",
            devices.len()
        );
    }
    let http = reqwest::Client::new();
    let mut phases: Vec<PhaseReport> = Vec::new();
    for &n in &args.replicas {
        let mut p = phase(
            &args,
            &root,
            &devices,
            shape,
            usize::from(n),
            sessions,
            &http,
        )
        .await
        .with_context(|| format!("the phase with {n} replica(s)"))?;
        p.vs_first = phases
            .first()
            .map_or(1.0, |f| p.readings_per_sec / f.readings_per_sec);
        if !args.json {
            print_phase(&p);
        }
        phases.push(p);
    }
    let report = Report {
        devices: args.devices,
        series: args.series,
        per_change: args.per_change,
        backlog_changes: args.backlog_changes,
        readings_per_device: shape.readings_per_device(),
        concurrency: args.concurrency,
        sessions: args.sessions.clone(),
        device_relay: args.device_relay,
        series_names: args.series_names.clone(),
        prepare_secs,
        phases,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else if report.phases.len() > 1 {
        let first = &report.phases[0];
        for p in &report.phases[1..] {
            println!(
                "scaling      {} replicas / {}: {:.2}× the readings/s",
                p.replicas, first.replicas, p.vs_first
            );
        }
    }
    Ok(())
}

/// One phase: a fresh schema, `n` replicas, every device synced once, the data checked.
/// The schema is dropped whatever happens, a timeout (`--timeout`) or Ctrl-C included.
async fn phase(
    args: &BenchFleetArgs,
    root: &Path,
    devices: &[Device],
    shape: Shape,
    n: usize,
    sessions: Sessions,
    http: &reqwest::Client,
) -> anyhow::Result<PhaseReport> {
    let db = PhaseDb::create(&args.url).await?;
    let dir = replicas::phase_dir(root, n);
    let run = run_phase(args, root, &dir, devices, shape, n, sessions, http, &db);
    // A timeout or Ctrl-C drops the phase, its replicas (killed) first, before the schema
    // goes: an interrupted bench leaves no process and no schema behind.
    let result = tokio::select! {
        done = tokio::time::timeout(args.timeout, run) => done.unwrap_or_else(|_| {
            Err(anyhow::anyhow!(
                "not finished within {}",
                humantime::format_duration(args.timeout)
            ))
        }),
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted (Ctrl-C)")),
    };
    let dropped = db.drop_schema().await;
    let _ = std::fs::remove_dir_all(&dir);
    let report = result?;
    dropped?;
    Ok(report)
}

#[expect(clippy::too_many_arguments, reason = "one phase's inputs, named once")]
async fn run_phase(
    args: &BenchFleetArgs,
    root: &Path,
    dir: &Path,
    devices: &[Device],
    shape: Shape,
    n: usize,
    sessions: Sessions,
    http: &reqwest::Client,
    db: &PhaseDb,
) -> anyhow::Result<PhaseReport> {
    let stores = dir.join("devices");
    devices::copy_stores(&root.join("devices"), &stores, devices)?;
    let concurrency = usize::from(args.concurrency);
    // A replica notices that a device left only after the page query it is running (the
    // relay, see docs/PERFORMANCE.md), so its sessions outlive the devices' for a while:
    // room for every device at once.
    let max_sessions = (shape.devices as usize).max(concurrency) + 16;
    let config =
        replicas::replica_config(&db.url(), shape.devices, max_sessions, args.device_relay);
    let mut running = Vec::new();
    for i in 0..n {
        running.push(Replica::start(i, dir, &config, http).await?);
    }
    let urls: Vec<String> = running.iter().map(|r| r.url.clone()).collect();
    let pids: Vec<u32> = running.iter().map(Replica::pid).collect();

    let before = CpuSample::now(&pids);
    let started = Instant::now();
    let changes = u64::from(shape.changes) * devices.len() as u64;
    let follower = args
        .follow_log
        .then(|| tokio::spawn(follow::follow(db.url(), changes, started)));
    let synced = devices::sync_all(&stores, devices, &urls, concurrency, sessions, started).await;
    let cpu_window_secs = started.elapsed().as_secs_f64();
    let used = before.until(CpuSample::now(&pids));
    let outcomes = match synced {
        Ok(o) => o,
        Err(e) => {
            if let Some(f) = &follower {
                f.abort();
            }
            let logs: Vec<String> = running
                .iter()
                .enumerate()
                .map(|(i, r)| format!("replica {i} ({}), last lines:\n{}", r.url, r.log()))
                .collect();
            return Err(e.context(logs.join("\n")));
        }
    };
    let follower = match follower {
        Some(task) => Some(task.await.context("the log follower")??),
        None => None,
    };
    for r in running {
        r.stop().await;
    }

    let readings = shape.readings_per_device() * devices.len() as u64;
    let digest = db
        .verify(devices, readings)
        .await
        .context("checking the database after the phase")?;
    let wall = outcomes
        .iter()
        .map(|o| o.acked_at)
        .max()
        .unwrap_or_default()
        .as_secs_f64()
        .max(1e-9);
    let sum = |f: fn(&Outcome) -> u64| outcomes.iter().map(f).sum::<u64>();
    Ok(PhaseReport {
        replicas: n,
        readings,
        changes,
        wall_secs: wall,
        readings_per_sec: readings as f64 / wall,
        changes_per_sec: changes as f64 / wall,
        vs_first: 1.0,
        lag_ms: Percentiles::of(outcomes.iter().map(|o| o.lag).collect()),
        cpu_window_secs,
        postgres_cpu_secs: used.postgres,
        replicas_cpu_secs: used.replicas,
        devices_cpu_secs: used.bench,
        relayed_changes: sum(|o| o.relayed_changes),
        bytes_to_devices: sum(|o| o.bytes_in),
        bytes_from_devices: sum(|o| o.bytes_out),
        retries: outcomes.iter().map(|o| o.retries).sum(),
        retry_errors: outcomes.iter().flat_map(|o| &o.retry_errors).fold(
            Default::default(),
            |mut m, e| {
                *m.entry(e.clone()).or_insert(0) += 1;
                m
            },
        ),
        digest: digest.to_string(),
        follower,
    })
}

fn print_phase(p: &PhaseReport) {
    let cpu = |secs: Option<f64>| match secs {
        Some(s) => format!("{s:.1} s ({:.2} cores)", s / p.cpu_window_secs.max(1e-9)),
        None => "n/a".to_owned(),
    };
    println!(
        "{} replica{}",
        p.replicas,
        if p.replicas == 1 { "" } else { "s" }
    );
    println!(
        "  applied    {} readings ({} changes) in {:.2} s: {:.0} readings/s, {:.0} changes/s (checked: vector, digest, rows)",
        p.readings, p.changes, p.wall_secs, p.readings_per_sec, p.changes_per_sec
    );
    println!(
        "  sync lag   p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms (session requested → last change acknowledged)",
        p.lag_ms.p50, p.lag_ms.p90, p.lag_ms.p99, p.lag_ms.max
    );
    println!(
        "  CPU        PostgreSQL {}, replicas {}, devices (this process) {} over {:.2} s",
        cpu(p.postgres_cpu_secs),
        cpu(p.replicas_cpu_secs),
        cpu(p.devices_cpu_secs),
        p.cpu_window_secs
    );
    println!(
        "  wire       devices → hub {}, hub → devices {} ({} changes of other devices relayed); {} session retries",
        super::mib(p.bytes_from_devices),
        super::mib(p.bytes_to_devices),
        p.relayed_changes,
        p.retries
    );
    for (why, n) in &p.retry_errors {
        println!("  retried    {n}× {why}");
    }
    if let Some(f) = &p.follower {
        println!(
            "  log        a follower in commit order read all {} changes ({} readings) {:.0} ms after the last acknowledgement; its reads took {:.2} s ({:.0} readings/s read)",
            f.changes,
            f.readings,
            ((f.caught_up_secs - p.wall_secs) * 1000.0).max(0.0),
            f.read_secs,
            f.readings as f64 / f.read_secs.max(1e-9)
        );
    }
}
