//! Rebuilding the raw chunks of compacted twin changes from their twin's snapshot.
//!
//! A compacted change (`twin_changes.bytes` empty, see `compact.rs`) lives on only inside
//! `twins.snapshot`: automerge's document format holds every change, and
//! `get_change_by_hash` re-encodes one as the uncompressed change chunk it was — the same
//! bytes, since a change's hash is the hash of exactly those bytes. Compaction only empties a
//! row after checking that the snapshot gives its bytes back unchanged, and every rebuilt
//! chunk is checked against its stored hash here, so a reader never serves altered bytes.
//!
//! Loading a snapshot is the expensive part (≈ 25 ms for a twin of 10,000 changes), so
//! loaded snapshots are kept in a small process-wide cache keyed by the BLAKE3 of the
//! snapshot's bytes: a sync page or a `verify` run over many compacted changes of one twin
//! loads its snapshot once, and a twin whose snapshot was replaced simply misses. The key is
//! the content, so stores sharing the process (tests, a hub and a device) never see each
//! other's documents by mistake. Owns no table; reads `twins` and `twin_changes`.

use std::sync::{Arc, Mutex};

use automerge::{Automerge, ChangeHash, ReadDoc};
use rusqlite::{Connection, OptionalExtension};

use crate::{Result, StoreError};

/// Most loaded snapshots kept.
const CACHED_SNAPSHOTS: usize = 4;
/// Most snapshot bytes the cache keeps loaded in total. A loaded document takes about 40
/// times its snapshot's size (docs/PERFORMANCE.md, "Device twins"), so this bounds the
/// cache near 20 MB; a larger snapshot is loaded for each call and not kept.
const CACHED_SNAPSHOT_BYTES: usize = 512 << 10;

/// A loaded snapshot.
struct Cached {
    /// BLAKE3 of the snapshot's bytes.
    key: [u8; 32],
    /// The snapshot's size in bytes (what the cache bound counts).
    len: usize,
    doc: Arc<Automerge>,
    /// Last use, for least-recently-used eviction.
    used: u64,
}

struct SnapshotCache {
    entries: Vec<Cached>,
    tick: u64,
}

static CACHE: Mutex<SnapshotCache> = Mutex::new(SnapshotCache {
    entries: Vec::new(),
    tick: 0,
});

fn cache() -> std::sync::MutexGuard<'static, SnapshotCache> {
    // The cache holds no invariant a panicking holder could break halfway.
    CACHE.lock().unwrap_or_else(|p| p.into_inner())
}

fn decode(what: &'static str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Decode {
        what,
        detail: detail.to_string(),
    }
}

/// The loaded snapshot of twin `twin_id`; `None` when it has none yet.
pub(crate) fn snapshot_doc(conn: &Connection, twin_id: i64) -> Result<Option<Arc<Automerge>>> {
    let snapshot: Option<Vec<u8>> = conn
        .prepare_cached("SELECT snapshot FROM twins WHERE id = ?1")
        .and_then(|mut st| st.query_row([twin_id], |r| r.get(0)).optional())
        .map_err(StoreError::db("reading a twin snapshot"))?
        .flatten();
    let Some(snapshot) = snapshot else {
        return Ok(None);
    };
    let key = *blake3::hash(&snapshot).as_bytes();
    {
        let mut c = cache();
        c.tick += 1;
        let tick = c.tick;
        if let Some(hit) = c.entries.iter_mut().find(|e| e.key == key) {
            hit.used = tick;
            return Ok(Some(hit.doc.clone()));
        }
    }
    // Loaded outside the lock: two threads may load the same snapshot once each.
    let doc = Arc::new(
        Automerge::load(&snapshot)
            .map_err(|e| decode("stored twin snapshot", format!("twin {twin_id}: {e}")))?,
    );
    if snapshot.len() <= CACHED_SNAPSHOT_BYTES {
        let mut c = cache();
        if !c.entries.iter().any(|e| e.key == key) {
            let used = c.tick;
            c.entries.push(Cached {
                key,
                len: snapshot.len(),
                doc: doc.clone(),
                used,
            });
            while c.entries.len() > CACHED_SNAPSHOTS
                || c.entries.iter().map(|e| e.len).sum::<usize>() > CACHED_SNAPSHOT_BYTES
            {
                let Some(oldest) = (0..c.entries.len()).min_by_key(|&i| c.entries[i].used) else {
                    break;
                };
                c.entries.swap_remove(oldest);
            }
        }
    }
    Ok(Some(doc))
}

/// The raw chunk of each change `hashes` names, as twin `twin_id`'s snapshot holds it (in
/// order; `None` for a change the snapshot lacks or cannot give back under its hash).
pub(crate) fn chunks_from_snapshot(
    conn: &Connection,
    twin_id: i64,
    hashes: &[ChangeHash],
) -> Result<Vec<Option<Vec<u8>>>> {
    let Some(doc) = snapshot_doc(conn, twin_id)? else {
        return Ok(vec![None; hashes.len()]);
    };
    Ok(hashes
        .iter()
        .map(|h| {
            doc.get_change_by_hash(h)
                .filter(|c| c.hash() == *h)
                .map(|c| c.raw_bytes().to_vec())
        })
        .collect())
}

/// The automerge hash stored with a twin change.
pub(crate) fn stored_hash(bytes: &[u8]) -> Result<ChangeHash> {
    <[u8; 32]>::try_from(bytes)
        .map(ChangeHash)
        .map_err(|_| decode("stored twin change hash", "not 32 bytes"))
}

/// Rebuilds the compacted changes `wanted` (change id, twin id, hash) from their twins'
/// snapshots, one snapshot load per twin (cached); an error names the first change that
/// cannot be rebuilt.
pub(crate) fn rebuild_compacted(
    conn: &Connection,
    wanted: Vec<(i64, i64, ChangeHash)>,
) -> Result<Vec<(i64, Vec<u8>)>> {
    let mut by_twin: std::collections::BTreeMap<i64, Vec<(i64, ChangeHash)>> =
        std::collections::BTreeMap::new();
    for (change_id, twin_id, hash) in wanted {
        by_twin.entry(twin_id).or_default().push((change_id, hash));
    }
    let mut out = Vec::new();
    for (twin_id, changes) in by_twin {
        let hashes: Vec<ChangeHash> = changes.iter().map(|c| c.1).collect();
        let chunks = chunks_from_snapshot(conn, twin_id, &hashes)?;
        for ((change_id, hash), chunk) in changes.into_iter().zip(chunks) {
            let chunk = chunk.ok_or_else(|| {
                decode(
                    "compacted twin change",
                    format!(
                        "change {change_id} (automerge {hash}) is not in twin {twin_id}'s snapshot"
                    ),
                )
            })?;
            out.push((change_id, chunk));
        }
    }
    Ok(out)
}
