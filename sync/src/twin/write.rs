//! The writer side of twins, inside the group commit: a bounded cache of loaded documents,
//! local edits (stamped with this store's actor as the automerge actor and the change's HLC
//! as its time), remote changes, and persistence — the raw change per key with its change
//! id, HLC and hash, the materialized JSON after each job, and a `save()` snapshot every
//! [`SNAPSHOT_EVERY`] changes so loading never replays a long log.
//!
//! A cached document may run ahead of the database only inside the current job: a failing
//! job or commit makes the writer `reload()`, which clears this cache.

use std::collections::HashMap;

use automerge::transaction::CommitOptions;
use automerge::{Automerge, ChangeHash, ReadDoc};
use rusqlite::{Connection, OptionalExtension, params};

use super::apply::apply_patch;
use super::json::to_json;
use super::{TwinEdit, TwinPatch, TwinWrite};
use crate::digest::twin_hash;
use crate::writer::Writer;
use crate::{
    ActorId, ChangeEvent, ChangeEventKind, ChangeMeta, Hlc, Result, StoreError, TwinChange,
};

/// Most documents kept loaded in the writer.
const CACHED_TWINS: usize = 64;
/// Changes after which a new snapshot is saved.
pub(crate) const SNAPSHOT_EVERY: u64 = 256;

/// Loaded documents, least recently used evicted past [`CACHED_TWINS`].
#[derive(Default)]
pub(crate) struct TwinCache {
    slots: HashMap<String, Slot>,
    tick: u64,
    /// Twins changed in the current write group whose JSON and snapshot are not yet written
    /// (written once per group, at its end: [`Writer::flush_twins`]).
    dirty: Vec<String>,
}

struct Slot {
    id: i64,
    doc: Automerge,
    /// Changes stored since the last snapshot.
    since_snapshot: u64,
    used: u64,
}

impl TwinCache {
    /// Forgets every loaded document (after a rollback). The group's dirty marks stay: a
    /// twin reloaded from the database is flushed from what it holds, which is exact.
    pub(crate) fn clear(&mut self) {
        self.slots.clear();
    }

    /// A new write group: nothing is waiting to be flushed (a group that failed before its
    /// flush left its marks; its writes are gone).
    pub(crate) fn start_group(&mut self) {
        self.dirty.clear();
    }

    fn touch(&mut self, key: &str) -> Option<&mut Slot> {
        self.tick += 1;
        let tick = self.tick;
        let slot = self.slots.get_mut(key)?;
        slot.used = tick;
        Some(slot)
    }

    fn evict(&mut self) {
        while self.slots.len() > CACHED_TWINS {
            let Some(oldest) = self
                .slots
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(k, _)| k.clone())
            else {
                return;
            };
            self.slots.remove(&oldest);
        }
    }
}

fn decode(what: &'static str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Decode {
        what,
        detail: detail.to_string(),
    }
}

/// Applies changes in one batch, falling back to one by one so a single change automerge
/// refuses (only a replica that reused an actor id can produce one) does not hide the rest.
pub(crate) fn apply_all(doc: &mut Automerge, changes: Vec<automerge::Change>) {
    if doc.apply_changes(changes.clone()).is_ok() {
        return;
    }
    for c in changes {
        let hash = c.hash();
        if let Err(e) = doc.apply_changes([c]) {
            tracing::warn!(change = %hash, error = %e, "automerge refused a stored twin change; it is kept but not shown");
        }
    }
}

/// Loads the document of twin `twin_id`: its snapshot plus every change stored after it.
/// Returns the document and how many changes were replayed.
pub(crate) fn load_doc(conn: &Connection, twin_id: i64) -> Result<(Automerge, u64)> {
    let (snapshot, upto): (Option<Vec<u8>>, i64) = conn
        .prepare_cached("SELECT snapshot, snapshot_upto FROM twins WHERE id = ?1")
        .and_then(|mut st| st.query_row([twin_id], |r| Ok((r.get(0)?, r.get(1)?))))
        .map_err(StoreError::db("reading a twin snapshot"))?;
    let mut doc = match snapshot {
        Some(b) => Automerge::load(&b).map_err(|e| decode("stored twin snapshot", e))?,
        None => Automerge::new(),
    };
    let rows: Vec<Vec<u8>> = conn
        .prepare_cached(
            "SELECT bytes FROM twin_changes WHERE twin_id = ?1 AND change_id > ?2 ORDER BY change_id",
        )
        .and_then(|mut st| st.query_map([twin_id, upto], |r| r.get(0))?.collect())
        .map_err(StoreError::db("reading twin changes"))?;
    let changes = rows
        .iter()
        .map(|b| automerge::Change::try_from(&b[..]).map_err(|e| decode("stored twin change", e)))
        .collect::<Result<Vec<_>>>()?;
    let n = changes.len() as u64;
    apply_all(&mut doc, changes);
    Ok((doc, n))
}

/// Refuses an edit the key's kind or existence rules out, as every store does: a plain
/// document's key is [`StoreError::WrongKind`], creating an existing twin
/// [`StoreError::TwinExists`], patching a missing one [`StoreError::UnknownKey`].
pub(crate) fn check_edit(
    key: &str,
    edit: &TwinEdit,
    is_document: bool,
    exists: bool,
) -> Result<()> {
    if is_document {
        return Err(StoreError::WrongKind {
            key: key.to_owned(),
            problem: "is a plain document, not a twin",
        });
    }
    match (edit, exists) {
        (TwinEdit::Create(_), true) => Err(StoreError::TwinExists(key.to_owned())),
        (TwinEdit::Patch(_), false) => Err(StoreError::UnknownKey(key.to_owned())),
        _ => Ok(()),
    }
}

/// Makes the automerge change of a local edit (checked by [`check_edit`]) on `doc`: by
/// `actor` as the automerge actor, with the change's HLC as its time. A create always makes
/// a change (an empty one when it sets nothing); a patch that changes nothing makes none
/// (`None`). Returns the change's hash and raw bytes; [`StoreError::ValueTooLarge`] when
/// those are over `max_bytes` (the caller discards `doc` then: it holds the change).
pub(crate) fn local_change(
    doc: &mut Automerge,
    key: &str,
    edit: &TwinEdit,
    actor: ActorId,
    hlc: Hlc,
    max_bytes: usize,
) -> Result<Option<(ChangeHash, Vec<u8>)>> {
    doc.set_actor(automerge::ActorId::from(actor.as_bytes().as_slice()));
    let opts = || CommitOptions::default().with_time(hlc.ms() as i64);
    let transact = |doc: &mut Automerge, patch: &TwinPatch| {
        doc.transact_with(|_| opts(), |tx| apply_patch(tx, key, patch))
            .map(|s| s.hash)
            .map_err(|f| f.error)
    };
    let hash = match edit {
        TwinEdit::Create(None) => Some(doc.empty_commit(opts())),
        TwinEdit::Create(Some(v)) => match transact(doc, &TwinPatch::Merge(v.clone()))? {
            Some(h) => Some(h),
            None => Some(doc.empty_commit(opts())),
        },
        TwinEdit::Patch(p) => transact(doc, p)?,
    };
    let Some(hash) = hash else {
        return Ok(None);
    };
    let bytes = doc
        .get_change_by_hash(&hash)
        .ok_or_else(|| decode("twin change", "the change just made is missing"))?
        .raw_bytes()
        .to_vec();
    if bytes.len() > max_bytes {
        return Err(StoreError::ValueTooLarge {
            key: key.to_owned(),
            size: bytes.len(),
            max: max_bytes,
        });
    }
    Ok(Some((hash, bytes)))
}

impl Writer {
    fn twin_id(&mut self, key: &str) -> Result<Option<i64>> {
        self.conn
            .prepare_cached("SELECT id FROM twins WHERE key = ?1")
            .and_then(|mut st| st.query_row([key], |r| r.get(0)).optional())
            .map_err(StoreError::db("looking up a twin"))
    }

    /// True when `key` holds a twin (used to refuse plain writes to it).
    pub(crate) fn is_twin(&mut self, key: &str) -> Result<bool> {
        Ok(self.twins.slots.contains_key(key) || self.twin_id(key)?.is_some())
    }

    /// Loads `key` into the cache; `false` when it is not a twin. Creates it when `create`.
    fn load_twin(&mut self, key: &str, create: bool) -> Result<bool> {
        if self.twins.touch(key).is_some() {
            return Ok(true);
        }
        let (id, doc, since_snapshot) = match self.twin_id(key)? {
            Some(id) => {
                let (doc, n) = load_doc(&self.conn, id)?;
                (id, doc, n)
            }
            None if create => {
                self.conn
                    .prepare_cached("INSERT INTO twins (key, json) VALUES (?1, '{}')")
                    .and_then(|mut st| st.execute([key]))
                    .map_err(StoreError::db("creating a twin"))?;
                (self.conn.last_insert_rowid(), Automerge::new(), 0)
            }
            None => return Ok(false),
        };
        self.twins.slots.insert(
            key.to_owned(),
            Slot {
                id,
                doc,
                since_snapshot,
                used: 0,
            },
        );
        self.twins.touch(key);
        Ok(true)
    }

    /// A local create or patch: one automerge change by this store's actor.
    pub(crate) fn store_twin_local(&mut self, key: &str, edit: &TwinEdit) -> Result<TwinWrite> {
        let is_document = self.key_ids.contains_key(key)
            || self
                .conn
                .prepare_cached("SELECT 1 FROM doc_keys WHERE key = ?1")
                .and_then(|mut st| st.exists([key]))
                .map_err(StoreError::db("looking up a document key"))?;
        let exists = !is_document && self.load_twin(key, false)?;
        check_edit(key, edit, is_document, exists)?;
        if !exists {
            self.load_twin(key, true)?;
        }
        let (seq, hlc) = self.next_local();
        let actor = self.actor;
        let max_bytes = self.limits.max_value_bytes;
        let slot = self.twins.touch(key).expect("loaded above");
        let Some((hash, bytes)) = local_change(&mut slot.doc, key, edit, actor, hlc, max_bytes)?
        else {
            return Ok(TwinWrite {
                key: key.to_owned(),
                change: None,
                value: to_json(&slot.doc),
            });
        };
        self.persist_twin_change(actor, seq, hlc, key, &bytes, hash, false)?;
        self.twins.evict();
        Ok(TwinWrite {
            key: key.to_owned(),
            change: Some(ChangeMeta { actor, seq, hlc }),
            // Filled at the end of the group (`flush_twins`): the merged JSON is computed
            // once per twin per group, not once per patch.
            value: serde_json::Value::Null,
        })
    }

    /// A change received from another replica (already validated). Its JSON is written by
    /// [`flush_twins`](Self::flush_twins) at the end of the write group.
    pub(crate) fn store_twin_remote(
        &mut self,
        actor: ActorId,
        seq: u64,
        hlc: Hlc,
        t: &TwinChange,
    ) -> Result<()> {
        let change =
            automerge::Change::try_from(&t.change[..]).map_err(|e| decode("twin change", e))?;
        let hash = change.hash();
        self.load_twin(&t.key, true)?;
        let slot = self.twins.touch(&t.key).expect("loaded above");
        apply_all(&mut slot.doc, vec![change]);
        self.persist_twin_change(actor, seq, hlc, &t.key, &t.change, hash, true)
    }

    #[allow(clippy::too_many_arguments)]
    fn persist_twin_change(
        &mut self,
        actor: ActorId,
        seq: u64,
        hlc: Hlc,
        key: &str,
        bytes: &[u8],
        hash: ChangeHash,
        remote: bool,
    ) -> Result<()> {
        let twin_id = self.twins.slots.get(key).expect("loaded by the caller").id;
        let idx = self.actor_slot(actor)?.idx;
        let change_id = self.insert_change_row(idx, seq, hlc, 3, None)?;
        self.conn
            .prepare_cached(
                "INSERT INTO twin_changes (change_id, twin_id, hlc, hash, bytes) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut st| {
                st.execute(params![change_id, twin_id, hlc.0 as i64, hash.0.as_slice(), bytes])
            })
            .map_err(StoreError::db("storing a twin change"))?;
        self.conn
            .prepare_cached("UPDATE twins SET changes = changes + 1 WHERE id = ?1")
            .and_then(|mut st| st.execute([twin_id]))
            .map_err(StoreError::db("counting twin changes"))?;
        self.advance(actor, seq, hlc)?;
        self.digest.add(&twin_hash(&actor, seq, hlc, key, bytes));
        self.pending_events.push(ChangeEvent {
            local_id: change_id,
            actor,
            seq,
            hlc,
            remote,
            kind: ChangeEventKind::Twin {
                key: key.to_owned(),
            },
        });
        if let Some(s) = self.twins.slots.get_mut(key) {
            s.since_snapshot += 1;
        }
        if !self.twins.dirty.iter().any(|k| k == key) {
            self.twins.dirty.push(key.to_owned());
        }
        Ok(())
    }

    /// Writes the JSON (and, when due, a snapshot) of every twin the current write group
    /// changed, once per twin; returns each one's merged JSON (what the group's local
    /// patches answer: the twin as the group leaves it).
    pub(crate) fn flush_twins(&mut self) -> Result<HashMap<String, serde_json::Value>> {
        let mut values = HashMap::new();
        for key in std::mem::take(&mut self.twins.dirty) {
            // Evicted (or forgotten after a failed job) since it changed: its rows hold it.
            // Gone when the job that created it failed.
            if !self.load_twin(&key, false)? {
                continue;
            }
            let value = self.flush_twin(&key)?;
            values.insert(key, value);
        }
        self.twins.evict();
        Ok(values)
    }

    fn flush_twin(&mut self, key: &str) -> Result<serde_json::Value> {
        let Some(slot) = self.twins.slots.get_mut(key) else {
            return Err(decode("twin cache", format!("{key:?} is not loaded")));
        };
        let value = to_json(&slot.doc);
        let json = serde_json::to_vec(&value).map_err(|e| decode("twin value", e))?;
        self.conn
            .prepare_cached("UPDATE twins SET json = ?1 WHERE id = ?2")
            .and_then(|mut st| st.execute(params![json, slot.id]))
            .map_err(StoreError::db("storing a twin's value"))?;
        // A snapshot must hold every change up to its mark, so none may be waiting for
        // dependencies.
        if slot.since_snapshot >= SNAPSHOT_EVERY && slot.doc.get_missing_deps(&[]).is_empty() {
            let snapshot = slot.doc.save();
            self.conn
                .prepare_cached(
                    "UPDATE twins SET snapshot = ?1, \
                     snapshot_upto = (SELECT MAX(change_id) FROM twin_changes WHERE twin_id = ?2) WHERE id = ?2",
                )
                .and_then(|mut st| st.execute(params![snapshot, slot.id]))
                .map_err(StoreError::db("storing a twin snapshot"))?;
            slot.since_snapshot = 0;
        }
        Ok(value)
    }
}
