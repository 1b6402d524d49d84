//! The way back from a backup file: [`unpack`] (check the header, decompress, check size and
//! hash — nothing is left behind when any of it fails), [`verify_unpacked`] (open the copy and
//! recompute its digest from the rows) and [`replay_as_of`] (point-in-time recovery).
//!
//! Point-in-time recovery keeps exactly the changes with HLC ≤ the bound. It replays them, in
//! the source's log order, into a fresh store through the ordinary remote-apply path, so
//! documents, siblings, twins, readings, rollups, the version vector and the digest are all
//! derived the same way as on any replica holding those changes — nothing is deleted in place.
//! Each actor's changes are kept up to its first change above the bound (an actor's HLCs grow
//! with its seq, so that is the same set, and it keeps every actor's seqs dense).

use std::collections::HashSet;
use std::io::{BufReader, Read, Write};
use std::path::Path;

use super::{BackupError, BackupHeader, read_header};
use crate::{ActorId, Change, Digest, Hlc, Store, StoreConfig, VersionVector};

/// Bytes per decompression step (also the progress granularity).
const CHUNK: usize = 1 << 20;

/// Changes applied per atomic call during a replay.
const REPLAY_BATCH: usize = 256;

/// Decompresses the backup `backup` into the new file `db_out`, checking the header, the size
/// and the BLAKE3 of the database; `progress` gets the database bytes written so far. On any
/// error `db_out` is removed. Does not open the database (see [`verify_unpacked`]).
pub fn unpack(
    backup: &Path,
    db_out: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<BackupHeader, BackupError> {
    let file = std::fs::File::open(backup).map_err(BackupError::io(backup))?;
    let mut input = BufReader::new(file);
    let header = read_header(&mut input, backup)?;
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(db_out)
        .map_err(BackupError::io(db_out))?;
    let result = decompress(backup, &header, input, out, db_out, &mut progress);
    if result.is_err() {
        let _ = std::fs::remove_file(db_out);
    }
    result.map(|()| header)
}

fn decompress(
    backup: &Path,
    header: &BackupHeader,
    input: impl Read,
    mut out: std::fs::File,
    db_out: &Path,
    progress: &mut impl FnMut(u64, u64),
) -> Result<(), BackupError> {
    let corrupt = |detail: String| BackupError::Corrupt {
        path: backup.to_path_buf(),
        detail,
    };
    let mut dec = zstd::stream::read::Decoder::new(input).map_err(BackupError::io(backup))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match dec.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(truncated(backup, total, header.db_bytes));
            }
            Err(e) => return Err(corrupt(format!("the compressed database is damaged ({e})"))),
        };
        total += n as u64;
        if total > header.db_bytes {
            return Err(corrupt(format!(
                "it holds more than the {} database bytes its header announces",
                header.db_bytes
            )));
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(BackupError::io(db_out))?;
        progress(total, header.db_bytes);
    }
    if total < header.db_bytes {
        return Err(truncated(backup, total, header.db_bytes));
    }
    let hash = hasher.finalize().to_hex().to_string();
    if hash != header.db_blake3 {
        return Err(corrupt(format!(
            "the database's BLAKE3 is {hash}, its header says {}",
            header.db_blake3
        )));
    }
    out.sync_all().map_err(BackupError::io(db_out))
}

fn truncated(backup: &Path, found: u64, expected: u64) -> BackupError {
    BackupError::Truncated {
        path: backup.to_path_buf(),
        detail: format!("it ends after {found} of the database's {expected} bytes"),
    }
}

/// Opens the unpacked database `db` and checks it against `header`: actor, version vector,
/// the stored digest, and the digest recomputed from every row. `backup` names the file in
/// errors.
pub async fn verify_unpacked(
    backup: &Path,
    db: &Path,
    header: &BackupHeader,
    config: StoreConfig,
) -> Result<(), BackupError> {
    let store = Store::open(db, config).await?;
    let checked = check_against(&store, header).await;
    store.close().await;
    checked.map_err(|detail| BackupError::Corrupt {
        path: backup.to_path_buf(),
        detail,
    })
}

async fn check_against(store: &Store, header: &BackupHeader) -> Result<(), String> {
    if store.actor() != header.actor {
        return Err(format!(
            "its database belongs to actor {}, its header says {}",
            store.actor(),
            header.actor
        ));
    }
    if store.version_vector() != header.version_vector {
        return Err("its database holds other changes than its header's version vector".into());
    }
    let stored = store.digest().to_string();
    if stored != header.digest {
        return Err(format!(
            "its database's digest is {stored}, its header says {}",
            header.digest
        ));
    }
    let recomputed = store.verify_digest().await.map_err(|e| e.to_string())?;
    if recomputed.to_string() != header.digest {
        return Err(format!(
            "the digest recomputed from its rows is {recomputed}, its header says {}",
            header.digest
        ));
    }
    Ok(())
}

/// Which changes a point-in-time view keeps: per actor, every change up to the first one
/// stamped after the bound. Feed it changes in log order.
#[derive(Debug)]
pub struct AsOfCut {
    at: Hlc,
    cut: HashSet<ActorId>,
}

impl AsOfCut {
    /// The view at `at` (inclusive).
    pub fn new(at: Hlc) -> AsOfCut {
        AsOfCut {
            at,
            cut: HashSet::new(),
        }
    }

    /// Whether `change` (the next of the log) belongs to the view.
    pub fn keeps(&mut self, change: &Change) -> bool {
        if self.cut.contains(&change.actor) {
            return false;
        }
        if change.hlc > self.at {
            self.cut.insert(change.actor);
            return false;
        }
        true
    }
}

/// What a replay kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayOutcome {
    /// Changes replayed.
    pub kept: u64,
    /// Changes left out (stamped after the bound, or after an actor's first such change).
    pub dropped: u64,
    /// The new store's version vector.
    pub version_vector: VersionVector,
    /// The new store's digest (checked against a recomputation from its rows).
    pub digest: Digest,
    /// The new store's actor.
    pub actor: ActorId,
}

/// Point-in-time recovery: creates the store `target` (which must not exist) holding exactly
/// the changes of `source` with HLC ≤ `at` (see [`AsOfCut`]). `identity`: the new store's
/// actor (`None`: a new random one). `progress` gets the changes read so far.
pub async fn replay_as_of(
    source: &Store,
    target: &Path,
    at: Hlc,
    identity: Option<ActorId>,
    mut progress: impl FnMut(u64),
) -> Result<ReplayOutcome, BackupError> {
    if target.exists() {
        return Err(BackupError::Io {
            path: target.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "file exists"),
        });
    }
    if let Some(actor) = identity {
        Store::set_identity(target, actor).await?;
        if actor == source.actor() {
            // The same identity goes on signing with the same key, or its next change
            // would be refused by every replica as signed by another key.
            source.copy_signing_key_to(target).await?;
        }
    }
    let mut config = source.config().clone();
    // Replayed history is judged by nothing: its timestamps were accepted when first stored,
    // and its unsigned past (changes stored before signing) when it was received. Chain
    // links and signatures are still checked.
    config.max_clock_offset_ms = u64::MAX;
    config.require_signatures = false;
    let store = Store::open(target, config).await?;
    let result = replay_into(source, &store, at, &mut progress).await;
    let result = match result {
        Ok((kept, dropped)) => match store.verify_digest().await {
            Ok(d) if d == store.digest() => Ok(ReplayOutcome {
                kept,
                dropped,
                version_vector: store.version_vector(),
                digest: d,
                actor: store.actor(),
            }),
            Ok(d) => Err(BackupError::Corrupt {
                path: target.to_path_buf(),
                detail: format!(
                    "the replayed store's digest {} differs from its rows' {d}",
                    store.digest()
                ),
            }),
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e),
    };
    store.close().await;
    result
}

async fn replay_into(
    source: &Store,
    target: &Store,
    at: Hlc,
    progress: &mut impl FnMut(u64),
) -> Result<(u64, u64), BackupError> {
    let mut cut = AsOfCut::new(at);
    let (mut kept, mut dropped, mut after) = (0u64, 0u64, 0i64);
    loop {
        let page = source.log_after(after, REPLAY_BATCH).await?;
        let Some(last) = page.last() else { break };
        after = last.0;
        let mut batch: Vec<Change> = Vec::with_capacity(page.len());
        for (_, change) in page {
            if cut.keeps(&change) {
                batch.push(change);
            } else {
                dropped += 1;
            }
        }
        kept += batch.len() as u64;
        if !batch.is_empty() {
            target.apply_remote(batch).await?;
        }
        progress(kept + dropped);
    }
    Ok((kept, dropped))
}
