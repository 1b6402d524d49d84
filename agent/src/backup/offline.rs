//! The tools that work on a stopped agent's data directory: [`restore`] a backup into it and
//! [`rekey`] its store. Both take the directory's lock first, so they refuse to run while an
//! agent has the store open, and both give a store its new identity through the one store
//! function that does it (`Store::set_identity`, via `Store::rekey`).
//!
//! A restore never half-replaces a store: the backup is unpacked and verified (size, hash,
//! digest recomputed from the rows) in a scratch directory inside the data directory, the
//! point-in-time replay and the new identity happen there too, and only the finished file is
//! renamed over `kdelta.db`. The MQTT outbox cursor is then checked against the restored log.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use kdelta_sync::backup::{self, BackupHeader};
use kdelta_sync::{ActorId, Digest, Hlc, Store, StoreConfig, VersionVector};

use crate::lockfile::{DataDirLock, LOCK_FILE};
use crate::mqtt::CursorFile;

/// What [`restore`] does.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The backup file.
    pub backup: PathBuf,
    /// The data directory to restore into (created when absent).
    pub data_dir: PathBuf,
    /// The store's file inside it.
    pub db_path: PathBuf,
    /// Replace what the directory holds.
    pub force: bool,
    /// Keep the backed-up actor id instead of a new one.
    pub same_identity: bool,
    /// Keep only the changes stamped at or before this.
    pub as_of: Option<Hlc>,
    /// Store settings (limits) for the verification and the replay.
    pub store: StoreConfig,
}

/// Which restore step is running, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestorePhase {
    /// Decompressing: database bytes done of the total.
    Unpack,
    /// Recomputing the digest (no byte count).
    Verify,
    /// Point-in-time replay: changes read of the total.
    Replay,
}

/// What [`restore`] did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    /// The backup's header.
    pub header: BackupHeader,
    /// The restored store's actor.
    pub actor: ActorId,
    /// What the restored store holds.
    pub version_vector: VersionVector,
    /// Its digest.
    pub digest: Digest,
    /// Point-in-time replay: changes kept and left out.
    pub replayed: Option<(u64, u64)>,
    /// The MQTT outbox cursor was beyond the restored log: `(was, now)`.
    pub cursor_reset: Option<(i64, i64)>,
}

/// Restores `opts.backup` into `opts.data_dir` (agent stopped). Refuses a running agent, a
/// non-empty directory without `force`, and a backup that does not verify — in every such
/// case the directory is left as it was. `progress(phase, done, total)` reports long steps.
pub async fn restore(
    opts: &RestoreOptions,
    progress: impl FnMut(RestorePhase, u64, u64) + Send + 'static,
) -> anyhow::Result<RestoreReport> {
    let dir = &opts.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let _lock = DataDirLock::acquire(dir).context("stop the agent before restoring")?;
    let held = contents(dir)?;
    if !held.is_empty() && !opts.force {
        bail!(
            "{} is not empty (it holds {}): restoring would replace it; pass --force to replace \
             the store there",
            dir.display(),
            held.join(", ")
        );
    }
    let scratch = tempfile::Builder::new()
        .prefix(".restore-")
        .tempdir_in(dir)
        .with_context(|| format!("creating a scratch directory in {}", dir.display()))?;
    let progress = std::sync::Arc::new(std::sync::Mutex::new(progress));
    let report = move |phase: RestorePhase, done: u64, total: u64| {
        if let Ok(mut p) = progress.lock() {
            (*p)(phase, done, total)
        }
    };
    let unpacked = scratch.path().join("unpacked.db");
    let header = {
        let (file, out) = (opts.backup.clone(), unpacked.clone());
        let report = report.clone();
        tokio::task::spawn_blocking(move || {
            backup::unpack(&file, &out, |done, total| {
                report(RestorePhase::Unpack, done, total)
            })
        })
        .await
        .context("unpacking the backup")??
    };
    report(RestorePhase::Verify, 0, 0);
    backup::verify_unpacked(&opts.backup, &unpacked, &header, opts.store.clone()).await?;

    let (result, replayed) = match opts.as_of {
        Some(at) => {
            let source = Store::open(&unpacked, opts.store.clone()).await?;
            let target = scratch.path().join("as-of.db");
            let total = header.changes;
            let identity = opts.same_identity.then_some(header.actor);
            let replay = backup::replay_as_of(&source, &target, at, identity, |seen| {
                report(RestorePhase::Replay, seen, total)
            })
            .await;
            source.close().await;
            let outcome = replay?;
            (target, Some((outcome.kept, outcome.dropped)))
        }
        None => {
            if !opts.same_identity {
                Store::rekey(&unpacked).await?;
            }
            (unpacked, None)
        }
    };
    // Read what the result holds (and fold its WAL) before it takes the store's place.
    let restored = Store::open(&result, opts.store.clone()).await?;
    let (actor, version_vector, digest) = (
        restored.actor(),
        restored.version_vector(),
        restored.digest(),
    );
    let log_end = restored.log_end().await;
    restored.close().await;
    let log_end = log_end?;
    remove_sidecars(&result)?;

    // The old store's WAL must not meet the new file; the database itself is replaced by the
    // rename in one step, so an interruption leaves the old store or the new one.
    remove_sidecars(&opts.db_path)?;
    std::fs::rename(&result, &opts.db_path)
        .with_context(|| format!("moving the restored store to {}", opts.db_path.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }

    let cursor = CursorFile::in_dir(dir);
    let cursor_reset = match cursor.load()? {
        Some(state) => match state.beyond(log_end) {
            Some(reset) => {
                cursor.store(reset)?;
                Some((state.acked, reset.acked))
            }
            None => None,
        },
        None => None,
    };
    Ok(RestoreReport {
        header,
        actor,
        version_vector,
        digest,
        replayed,
        cursor_reset,
    })
}

/// What [`rekey`] did.
#[derive(Debug, Clone, Copy)]
pub struct RekeyReport {
    /// The store's actor before.
    pub old: ActorId,
    /// Its new actor.
    pub new: ActorId,
}

/// Gives the store at `db_path` in `data_dir` a new identity (agent stopped): changes already
/// stored keep their actor, new ones are written as the new one. For an imaged SD card, run
/// it on each copy before its first start.
pub async fn rekey(data_dir: &Path, db_path: &Path) -> anyhow::Result<RekeyReport> {
    if !db_path.is_file() {
        bail!("there is no store at {}", db_path.display());
    }
    let _lock = DataDirLock::acquire(data_dir).context("stop the agent before rekeying")?;
    let store = Store::open(db_path, StoreConfig::default())
        .await
        .with_context(|| format!("opening {}", db_path.display()))?;
    let old = store.actor();
    store.close().await;
    let new = Store::rekey(db_path).await?;
    Ok(RekeyReport { old, new })
}

/// Rewrites the stopped agent's store with incremental auto-vacuum (`kdelta compact`);
/// returns the database size before and after (bytes).
pub async fn compact(data_dir: &Path, db_path: &Path) -> anyhow::Result<(u64, u64)> {
    if !db_path.is_file() {
        bail!("there is no store at {}", db_path.display());
    }
    let _lock = DataDirLock::acquire(data_dir).context("stop the agent before compacting")?;
    Store::compact(db_path)
        .await
        .with_context(|| format!("compacting {}", db_path.display()))
}

/// Names of the entries of `dir` other than the lock file.
fn contents(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != LOCK_FILE)
        .collect();
    names.sort();
    Ok(names)
}

/// Removes the WAL and shared-memory files beside `db` (checkpointed and empty after a
/// clean close).
fn remove_sidecars(db: &Path) -> anyhow::Result<()> {
    for suffix in ["-wal", "-shm"] {
        let f = PathBuf::from(format!("{}{suffix}", db.display()));
        match std::fs::remove_file(&f) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", f.display())),
        }
    }
    Ok(())
}
