//! Merge documents ("device twins"): a key whose value is an automerge document, so edits
//! made apart (the hub sets `desired.interval` while the device sets `reported.temp`) both
//! survive the merge.
//!
//! Every edit is one automerge change carried in the store's change log as an ordinary
//! [`Change`](crate::Change) with a [`TwinChange`](crate::TwinChange) body: sync, resumption,
//! relay and the digest treat it like any other change. The store's state of a twin is, by
//! definition, every stored automerge change of its key (automerge holds back a change whose
//! dependencies have not arrived and applies it when they do), so replicas holding the same
//! changes show the same JSON.
//!
//! - `patch.rs`: the edit language (JSON Merge Patch, path operations) and its limits.
//! - `apply.rs`: applying an edit inside an automerge transaction.
//! - `json.rs`: the merged JSON view of a document.
//! - `write.rs`: the writer side (cache, persistence, snapshots), inside the group commit.
//! - `read.rs`: reads on the read pool (get, as-of, history, diff).
//! - `doc.rs`: [`TwinDoc`], the same reads and local edits over a key's raw changes, for a
//!   store that keeps only those (the PostgreSQL hub).
//! - `compact.rs`: history compaction — dropping raw chunks the snapshot holds (retention).
//! - `rebuild.rs`: the chunks of compacted changes, rebuilt from the snapshot (cached).
//!
//! Concurrently created maps at one key (both sides made `desired` while apart) are merged in
//! the JSON view rather than one hiding the other: see `json.rs`.

mod apply;
mod compact;
mod doc;
mod json;
mod patch;
mod read;
mod rebuild;
mod write;

use serde::{Deserialize, Serialize};

use crate::{ActorId, Hlc, Result, validate_key};

pub(crate) use compact::TwinCompactCursor;
pub use compact::TwinCompaction;
pub use doc::TwinDoc;
pub use patch::{
    MAX_PATCH_DEPTH, MAX_PATCH_OPS, MAX_PATCH_STRING_BYTES, MAX_PATH_SEGMENTS, PathOp, TwinPatch,
};
pub(crate) use rebuild::{rebuild_compacted, stored_hash as stored_twin_hash};
pub(crate) use write::TwinCache;

/// How a twin write starts: a new twin (optionally with an initial JSON object) or a patch.
#[derive(Debug, Clone, PartialEq)]
pub enum TwinEdit {
    /// Create the twin; the value, when given, must be a JSON object.
    Create(Option<serde_json::Value>),
    /// Change an existing twin.
    Patch(TwinPatch),
}

impl TwinEdit {
    /// Checks the key and the edit's value or patch before any store is touched (every store
    /// refuses the same edits with the same errors: `InvalidKey`, `InvalidPatch`,
    /// `ValueTooLarge` over `max_value_bytes`).
    pub fn validate(&self, key: &str, max_value_bytes: usize) -> Result<()> {
        validate_key(key)?;
        match self {
            TwinEdit::Create(None) => Ok(()),
            TwinEdit::Create(Some(v)) => TwinPatch::Merge(v.clone()).validate(key, max_value_bytes),
            TwinEdit::Patch(p) => p.validate(key, max_value_bytes),
        }
    }
}

/// The result of a twin write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TwinWrite {
    /// The twin's key.
    pub key: String,
    /// The change written; `None` when the patch changed nothing (no change is stored).
    pub change: Option<crate::ChangeMeta>,
    /// The merged value after the write.
    pub value: serde_json::Value,
}

/// A twin as a plain read returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TwinState {
    /// The twin's key.
    pub key: String,
    /// The merged JSON value (always an object).
    pub value: serde_json::Value,
    /// Number of stored changes of this twin.
    pub changes: u64,
}

/// One entry of a twin's history: who changed which paths, when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TwinHistoryEntry {
    /// The store (actor) that made the change.
    pub actor: ActorId,
    /// Its sequence number in the change log.
    pub seq: u64,
    /// When it was made.
    pub hlc: Hlc,
    /// JSON pointers the change wrote or deleted (at most [`MAX_HISTORY_PATHS`]; list
    /// elements are reported as the list's path).
    pub paths: Vec<String>,
    /// True when the change touched more paths than listed.
    pub truncated: bool,
}

/// How a twin is stored and what loading it replays (see
/// [`Store::twin_storage`](crate::Store::twin_storage)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwinStorage {
    /// Stored changes of the twin.
    pub changes: u64,
    /// Size of its snapshot (0 before the first).
    pub snapshot_bytes: u64,
    /// Changes replayed on top of the snapshot when loading.
    pub replayed: u64,
    /// Heads of the loaded document (more than one after concurrent edits).
    pub heads: usize,
    /// Changes whose raw chunk was compacted away: held only in the snapshot.
    pub compacted: u64,
    /// Bytes of the raw chunks still stored.
    pub raw_bytes: u64,
}

/// Most paths one history entry lists.
pub const MAX_HISTORY_PATHS: usize = 32;

/// Deepest nesting the JSON view renders; deeper values (only a hostile remote change can
/// build them) are shown as `null` so rendering never exhausts the stack.
pub const MAX_VIEW_DEPTH: usize = 64;
