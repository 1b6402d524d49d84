//! [`TwinDoc`]: a twin's document built from its stored changes, for a store that keeps only
//! the raw automerge changes of each key (the PostgreSQL hub, `kdelta-pg`). Its reads and
//! local edits are the embedded store's own functions — the merged view (`json.rs`), as-of
//! heads and values, history paths (`read.rs`), the edit checks and the local change
//! (`write.rs`) — so both stores give the same answers and errors. Knows no database.

use automerge::{Automerge, ChangeHash};

use super::json::to_json;
use super::read::{change_paths, heads_among, value_at};
use super::write::{apply_all, check_edit, local_change};
use super::{TwinEdit, TwinHistoryEntry};
use crate::{ActorId, AsOf, Hlc, Result, StoreError};

/// A twin's automerge document and the HLC of each change applied to it.
#[derive(Default)]
pub struct TwinDoc {
    doc: Automerge,
    /// HLC and automerge hash of every stored change given to [`apply`](Self::apply).
    stamps: Vec<(Hlc, ChangeHash)>,
}

impl TwinDoc {
    /// An empty document (a twin with no changes).
    pub fn new() -> TwinDoc {
        TwinDoc::default()
    }

    /// Applies stored changes of the twin (HLC and raw automerge change), in any causal
    /// order: automerge holds back a change whose dependencies have not arrived. A change
    /// that does not decode is [`StoreError::Decode`], as when the embedded store loads it.
    pub fn apply(&mut self, changes: Vec<(Hlc, Vec<u8>)>) -> Result<()> {
        let mut decoded = Vec::with_capacity(changes.len());
        for (hlc, bytes) in changes {
            let c = automerge::Change::try_from(&bytes[..]).map_err(|e| StoreError::Decode {
                what: "stored twin change",
                detail: e.to_string(),
            })?;
            self.stamps.push((hlc, c.hash()));
            decoded.push(c);
        }
        apply_all(&mut self.doc, decoded);
        Ok(())
    }

    /// Number of stored changes applied (including any automerge refused or holds back).
    pub fn changes(&self) -> u64 {
        self.stamps.len() as u64
    }

    /// The merged JSON value (always an object).
    pub fn value(&self) -> serde_json::Value {
        to_json(&self.doc)
    }

    /// The value of twin `key` as it was at `at`: the changes stamped at or before it;
    /// `None` before its first change.
    pub fn value_at(&self, key: &str, at: AsOf) -> Result<Option<serde_json::Value>> {
        let bound = at.bound();
        let hashes = self
            .stamps
            .iter()
            .filter(|(hlc, _)| *hlc <= bound)
            .map(|(_, h)| *h)
            .collect();
        heads_among(&self.doc, hashes)
            .map(|heads| value_at(key, &self.doc, &heads))
            .transpose()
    }

    /// The history entry of one stored change (`bytes`) of the twin by `actor`, `seq`,
    /// stamped `hlc`: which paths it wrote, resolved in this document.
    pub fn history_entry(
        &self,
        actor: ActorId,
        seq: u64,
        hlc: Hlc,
        bytes: &[u8],
    ) -> Result<TwinHistoryEntry> {
        let change = automerge::Change::try_from(bytes).map_err(|e| StoreError::Decode {
            what: "stored twin change",
            detail: e.to_string(),
        })?;
        let (paths, truncated) = change_paths(&self.doc, &change);
        Ok(TwinHistoryEntry {
            actor,
            seq,
            hlc,
            paths,
            truncated,
        })
    }

    /// Makes the change of a local `edit` of twin `key` on this document (which holds every
    /// stored change of the key: `exists` is whether there is one), by `actor` at `hlc`,
    /// with the embedded store's checks and errors ([`StoreError::WrongKind`] when
    /// `is_document`, `TwinExists`, `UnknownKey`, `InvalidPatch`, `ValueTooLarge` over
    /// `max_bytes`). Returns the raw change (`None` when a patch changes nothing) and the
    /// merged value after it. The patch is validated by the caller (`TwinPatch::validate`).
    pub fn edit(
        &mut self,
        key: &str,
        edit: &TwinEdit,
        is_document: bool,
        actor: ActorId,
        hlc: Hlc,
        max_bytes: usize,
    ) -> Result<(Option<Vec<u8>>, serde_json::Value)> {
        check_edit(key, edit, is_document, !self.stamps.is_empty())?;
        let made = local_change(&mut self.doc, key, edit, actor, hlc, max_bytes)?;
        if let Some((hash, _)) = &made {
            self.stamps.push((hlc, *hash));
        }
        Ok((made.map(|(_, bytes)| bytes), self.value()))
    }
}
