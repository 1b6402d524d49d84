//! The simulated devices: real SQLite [`Store`]s (signed change log, as on a device), each
//! in a directory of its own, filled with a backlog before anything is timed and closed
//! again, so a thousand of them cost disk, not memory. A phase copies the pristine stores
//! (a device receives what the hub relays to it, so a store is used by one phase only) and
//! syncs each as one session of the agent's outbound peer code ([`crate::peers::sync_once`])
//! to a replica, round robin, at most `concurrency` at once; a device's store is open only
//! during its session.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use kdelta_sync::protocol::{SessionEnd, SessionMode, SessionStats, SyncConfig};
use kdelta_sync::{ActorId, Digest, ReadingBatch, Store, StoreConfig};

use super::replicas::{device_name, device_token};
use crate::peers::PeerConfig;

/// How often a session's acknowledged position is checked.
const ACK_POLL: Duration = Duration::from_millis(2);
/// How long a device waits for the replica's handshake and vector.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// Stores filled at once while preparing.
const FILL_CONCURRENCY: usize = 8;
/// Attempts of a device's session before the phase fails; the n-th retry waits n × this.
const ATTEMPTS: u32 = 20;
const RETRY_AFTER: Duration = Duration::from_millis(200);

/// What a backlog looks like.
#[derive(Debug, Clone, Copy)]
pub(super) struct Shape {
    pub devices: u32,
    pub series: u32,
    /// Readings per series in one change (seconds batched at 1 Hz).
    pub per_change: u32,
    pub changes: u32,
    /// Every device writes the same series names (`bench.sensor000`…, as kdelta's sources
    /// name theirs: the hub merges them into one series each), or names of its own
    /// (`dev00007.sensor000`…).
    pub shared_series: bool,
}

impl Shape {
    pub(super) fn readings_per_device(&self) -> u64 {
        u64::from(self.series) * u64::from(self.per_change) * u64::from(self.changes)
    }
}

/// A prepared device: where its pristine store is, who it is, what it holds.
#[derive(Debug, Clone)]
pub(super) struct Device {
    pub index: u32,
    pub actor: ActorId,
    /// Its last seq: the replica must acknowledge this.
    pub max_seq: u64,
    pub digest: Digest,
}

/// The store's file name inside a device's directory.
const STORE_FILE: &str = "store.db";

fn device_dir(root: &Path, i: u32) -> PathBuf {
    root.join(format!("dev{i:05}"))
}

/// Small stores: a device's store is read by one session at a time.
fn store_config() -> StoreConfig {
    StoreConfig {
        read_connections: 1,
        ..StoreConfig::default()
    }
}

/// Creates every device's store under `root` with its backlog and closes it again.
pub(super) async fn prepare(root: &Path, shape: Shape) -> anyhow::Result<Vec<Device>> {
    // The backlog ends a minute ago: timestamps in the past, HLCs issued now.
    let end_ms = crate::time::now_ms_u64() as i64 - 60_000;
    let span_ms = i64::from(shape.per_change) * i64::from(shape.changes) * 1000;
    let t0 = end_ms - span_ms;
    let names = |device: Option<u32>| -> Arc<Vec<String>> {
        let prefix = device.map_or_else(|| "bench".to_owned(), device_name);
        Arc::new(
            (0..shape.series)
                .map(|s| format!("{prefix}.sensor{s:03}"))
                .collect(),
        )
    };
    let shared = names(None);
    let mut devices: Vec<Device> = futures::stream::iter(0..shape.devices)
        .map(|i| {
            let names = if shape.shared_series {
                shared.clone()
            } else {
                names(Some(i))
            };
            let dir = device_dir(root, i);
            async move { fill(i, &dir, &names, shape, t0).await }
        })
        .buffer_unordered(FILL_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    devices.sort_by_key(|d| d.index);
    Ok(devices)
}

async fn fill(
    i: u32,
    dir: &Path,
    names: &[String],
    shape: Shape,
    t0: i64,
) -> anyhow::Result<Device> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(STORE_FILE);
    let store = Store::open(&path, store_config())
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let result = async {
        let mut max_seq = 0;
        for c in 0..shape.changes {
            let mut b = ReadingBatch::new();
            for k in 0..shape.per_change {
                let second = i64::from(c * shape.per_change + k);
                for (s, name) in names.iter().enumerate() {
                    let v = 20.0 + ((second as f64 / 600.0) + s as f64 + f64::from(i)).sin() * 5.0;
                    b.push(
                        name,
                        t0 + second * 1000,
                        (v * 100.0).round() / 100.0,
                        Some("°C"),
                    );
                }
            }
            max_seq = store.append(b).await?.seq;
        }
        anyhow::Ok(Device {
            index: i,
            actor: store.actor(),
            max_seq,
            digest: store.digest(),
        })
    }
    .await
    .with_context(|| format!("filling {}", path.display()));
    store.close().await;
    result
}

/// Copies the pristine stores of `devices` from `from` to `to` (not timed).
pub(super) fn copy_stores(from: &Path, to: &Path, devices: &[Device]) -> anyhow::Result<()> {
    for d in devices {
        let (src, dst) = (device_dir(from, d.index), device_dir(to, d.index));
        std::fs::create_dir_all(&dst).with_context(|| format!("creating {}", dst.display()))?;
        for entry in
            std::fs::read_dir(&src).with_context(|| format!("reading {}", src.display()))?
        {
            let entry = entry?;
            std::fs::copy(entry.path(), dst.join(entry.file_name()))
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// How each device's session goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sessions {
    /// The device leaves once the replica acknowledged its last change (a backlog replay);
    /// what the hub relayed to it until then is counted.
    Push,
    /// One-shot sessions: the device also catches up with everything the hub holds.
    Both,
}

/// What one device's sync measured.
#[derive(Debug, Clone)]
pub(super) struct Outcome {
    /// Session requested (store open, before connecting) → the replica acknowledged the
    /// device's last change.
    pub lag: Duration,
    /// When the last change was acknowledged, from the phase's start.
    pub acked_at: Duration,
    /// Changes of other devices the hub sent this one and it stored.
    pub relayed_changes: u64,
    /// Bytes the device received (WebSocket payloads).
    pub bytes_in: u64,
    /// Bytes it sent.
    pub bytes_out: u64,
    /// Sessions that failed before the acknowledgement and were run again.
    pub retries: u32,
    /// Why, one entry per retry (the error, without the replica's URL, cut at 120 bytes).
    pub retry_errors: Vec<String>,
}

/// Syncs every device in `dir` to `replicas` (device i → replica i mod n), at most
/// `concurrency` at once. Fails when a device's backlog is not acknowledged after
/// [`ATTEMPTS`] sessions.
pub(super) async fn sync_all(
    dir: &Path,
    devices: &[Device],
    replicas: &[String],
    concurrency: usize,
    sessions: Sessions,
    started: Instant,
) -> anyhow::Result<Vec<Outcome>> {
    let results: Vec<anyhow::Result<Outcome>> = futures::stream::iter(devices.iter().cloned())
        .map(|d| {
            let url = replicas[d.index as usize % replicas.len()].clone();
            let path = device_dir(dir, d.index).join(STORE_FILE);
            async move {
                let what = format!("device {} → {url}", device_name(d.index));
                sync_one(&path, &d, &url, sessions, started)
                    .await
                    .with_context(|| what)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

async fn sync_one(
    path: &Path,
    device: &Device,
    url: &str,
    sessions: Sessions,
    started: Instant,
) -> anyhow::Result<Outcome> {
    let store = Store::open(path, store_config())
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let result = session(&store, device, url, sessions, started).await;
    store.close().await;
    result
}

async fn session(
    store: &Store,
    device: &Device,
    url: &str,
    sessions: Sessions,
    started: Instant,
) -> anyhow::Result<Outcome> {
    let peer = PeerConfig {
        name: "hub".into(),
        url: url.to_owned(),
        token: Some(device_token(device.index)),
        ca: None,
        client_cert: None,
        client_key: None,
        upstream: false,
    };
    let config = SyncConfig {
        peer_name: device_name(device.index),
        // A replica busy relaying (docs/PERFORMANCE.md, "Fleet benchmark") answers the
        // handshake late: the devices wait for it rather than give up after the default 10 s.
        handshake_timeout: HANDSHAKE_TIMEOUT,
        idle_timeout: HANDSHAKE_TIMEOUT * 2,
        mode: match sessions {
            Sessions::Push => SessionMode::Continuous,
            Sessions::Both => SessionMode::OneShot,
        },
        ..SyncConfig::default()
    };
    let stats = Arc::new(SessionStats::new());
    let requested = Instant::now();
    let acked: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
    let mut retries = 0;
    let mut retry_errors = Vec::new();
    let mut last_error = String::new();
    for attempt in 1..=ATTEMPTS {
        let watch = {
            let (stats, acked, actor, target) =
                (stats.clone(), acked.clone(), device.actor, device.max_seq);
            async move {
                while stats.their_seq(&actor) < target {
                    tokio::time::sleep(ACK_POLL).await;
                }
                let _ = acked.set(Instant::now());
                if sessions == Sessions::Both {
                    std::future::pending::<()>().await;
                }
            }
        };
        let result =
            crate::peers::sync_once(&peer, config.clone(), store.clone(), stats.clone(), watch)
                .await;
        // A one-shot session may end before the watcher's next look.
        if stats.their_seq(&device.actor) >= device.max_seq {
            let _ = acked.set(Instant::now());
        }
        match &result {
            Ok(summary) if acked.get().is_some() => {
                if sessions == Sessions::Both && summary.end != SessionEnd::Done {
                    bail!("the one-shot session ended with {:?}", summary.end);
                }
                break;
            }
            Ok(summary) => last_error = format!("the session ended with {:?}", summary.end),
            Err(e) => last_error = e.to_string(),
        }
        if attempt < ATTEMPTS {
            retries += 1;
            let why = match &result {
                Err(crate::peers::SyncOnceError::Connect { code, message, .. }) => {
                    format!("connect ({code}): {message}")
                }
                Err(crate::peers::SyncOnceError::Session { error, .. }) => {
                    format!("session ({}): {error}", error.code())
                }
                Ok(_) => last_error.clone(),
            };
            let cut = (0..=why.len().min(120))
                .rev()
                .find(|&i| why.is_char_boundary(i))
                .unwrap_or(0);
            retry_errors.push(why[..cut].to_owned());
            tracing::warn!(device = device.index, error = %last_error, "a device's session failed: trying again");
            tokio::time::sleep(RETRY_AFTER * attempt).await;
        }
    }
    let Some(&at) = acked.get() else {
        bail!(
            "the replica did not acknowledge seq {} after {ATTEMPTS} sessions: {last_error}",
            device.max_seq
        );
    };
    let s = stats.snapshot();
    Ok(Outcome {
        lag: at - requested,
        acked_at: at - started,
        relayed_changes: s.changes_applied,
        bytes_in: s.bytes_in,
        bytes_out: s.bytes_out,
        retries,
        retry_errors,
    })
}
