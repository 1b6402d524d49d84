//! Storing document versions inside the writer's transaction: the multi-value register with
//! dotted contexts, for single writes and batches (one change, one version per key). A version lists the dots of the siblings its writer saw; those dots are
//! recorded as superseded and leave the key's heads; the new version becomes a head unless a
//! version already stored supersedes it (possible when changes of different actors arrive out
//! of causal order). The final heads are the same whatever the order of arrival.
//!
//! Runs on the writer thread with cached prepared statements; key ids are cached in the
//! writer (reloaded after a rollback).

use rusqlite::{OptionalExtension, params};

use crate::digest::{doc_hash, doc_pruned_hash};
use crate::doc_batch::{check_resolved_size, not_a_version, twin_not_document};
use crate::seal;
use crate::stored_cbor;
use crate::writer::{LocalDocWrite, Writer};
use crate::{
    ActorId, ChangeEvent, ChangeEventKind, ChangeMeta, DocBatch, Dot, Hlc, Result, StoreError,
};

/// A context as it is stored and served: dots sorted, each once.
fn canonical_context(mut dots: Vec<Dot>) -> Vec<Dot> {
    dots.sort();
    dots.dedup();
    dots
}

/// Canonical CBOR of a context: dots sorted, so equal contexts hash equally.
pub(crate) fn encode_context(dots: &[Dot]) -> Vec<u8> {
    let sorted = canonical_context(dots.to_vec());
    stored_cbor::encode(&sorted)
}

/// Reads a stored context: the shape [`encode_context`] writes without serde, anything else
/// through it (`written_cbor.rs`).
pub(crate) fn decode_context(bytes: &[u8]) -> Result<Vec<Dot>> {
    match crate::written_cbor::decode_context(bytes) {
        Some(dots) => Ok(dots),
        None => stored_cbor::decode(bytes, "document context"),
    }
}

impl Writer {
    pub(crate) fn key_id(&mut self, key: &str) -> Result<i64> {
        if let Some(&id) = self.key_ids.get(key) {
            return Ok(id);
        }
        let found: Option<i64> = self
            .conn
            .prepare_cached("SELECT id FROM doc_keys WHERE key = ?1")
            .and_then(|mut st| st.query_row([key], |r| r.get(0)).optional())
            .map_err(StoreError::db("looking up a document key"))?;
        let id = match found {
            Some(id) => id,
            None => {
                self.conn
                    .prepare_cached("INSERT INTO doc_keys (key) VALUES (?1)")
                    .and_then(|mut st| st.execute([key]))
                    .map_err(StoreError::db("creating a document key"))?;
                self.counts.doc_keys += 1;
                self.conn.last_insert_rowid()
            }
        };
        self.key_ids.insert(key.to_owned(), id);
        Ok(id)
    }

    pub(crate) fn current_heads(&mut self, key_id: i64) -> Result<Vec<Dot>> {
        let rows: Vec<(Vec<u8>, i64)> = self
            .conn
            .prepare_cached(
                "SELECT a.actor, h.seq FROM doc_heads h JOIN actors a ON a.idx = h.actor_idx \
                 WHERE h.key_id = ?1",
            )
            .and_then(|mut st| {
                st.query_map([key_id], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .map_err(StoreError::db("reading document heads"))?;
        rows.into_iter()
            .map(|(a, seq)| {
                Ok(Dot {
                    actor: ActorId::from_slice(&a).ok_or(StoreError::Decode {
                        what: "stored actor id",
                        detail: "not 16 bytes".into(),
                    })?,
                    seq: seq as u64,
                })
            })
            .collect()
    }

    /// Stores one document write as its own change (kind 2). `context` is `None` for a local
    /// write (the current heads are taken) and the received context for a remote one;
    /// `pruned` is set for a remote version its sender's retention pruned (no value).
    /// Returns the context used.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn store_doc(
        &mut self,
        actor: ActorId,
        seq: u64,
        hlc: Hlc,
        key: &str,
        value: Option<&[u8]>,
        context: Option<&[Dot]>,
        remote: bool,
        pruned: bool,
    ) -> Result<Vec<Dot>> {
        let key_id = self.key_id(key)?;
        let context = canonical_context(match context {
            Some(c) => c.to_vec(),
            None => self.current_heads(key_id)?,
        });
        let slot = self.actor_slot(actor)?;
        let seal = match remote {
            true => None,
            false => {
                let write = seal::write_hash(key, value, &context);
                Some(self.seal_local(seq, hlc, seal::docs_body_hash(false, vec![write]))?)
            }
        };
        let change_id =
            self.insert_sealed_change_row(slot.idx, seq, hlc, KIND_DOC, None, seal.as_ref())?;
        let version = Version {
            change_id,
            actor,
            actor_idx: slot.idx,
            seq,
            hlc,
        };
        let context = self.store_version(&version, 0, key_id, key, value, context, pruned)?;
        self.advance(actor, seq, hlc)?;
        self.pending_events.push(ChangeEvent {
            local_id: change_id,
            actor,
            seq,
            hlc,
            remote,
            kind: ChangeEventKind::Doc {
                key: key.to_owned(),
                deleted: value.is_none() && !pruned,
            },
        });
        Ok(context)
    }

    /// Stores a local batch of document writes as one change (kind 4): every entry's context
    /// is resolved and checked first, so a bad entry refuses the batch before a row is
    /// written. Returns the change and each entry's context.
    pub(crate) fn store_local_batch(
        &mut self,
        writes: &[LocalDocWrite],
        encoded_bytes: usize,
    ) -> Result<(ChangeMeta, Vec<Vec<Dot>>)> {
        let mut contexts = Vec::with_capacity(writes.len());
        let mut resolved = 0;
        for (index, w) in writes.iter().enumerate() {
            let context = self.local_context(w).map_err(|e| e.at_entry(index))?;
            if w.context.is_none() {
                resolved += context.len();
            }
            contexts.push(context);
        }
        check_resolved_size(encoded_bytes, resolved, &self.limits)?;
        let (seq, hlc) = self.next_local();
        let actor = self.actor;
        let entries = writes
            .iter()
            .zip(contexts)
            .map(|(w, c)| (w.key.as_str(), w.value.as_deref(), c, false));
        let contexts = self.store_batch(actor, seq, hlc, entries, false)?;
        Ok((ChangeMeta { actor, seq, hlc }, contexts))
    }

    /// Stores a batch received from a peer (validated by the caller) as one change.
    pub(crate) fn store_remote_batch(
        &mut self,
        actor: ActorId,
        seq: u64,
        hlc: Hlc,
        batch: &DocBatch,
    ) -> Result<()> {
        let entries = batch.writes.iter().map(|w| {
            (
                w.key.as_str(),
                w.value.as_deref(),
                w.context.clone(),
                w.pruned,
            )
        });
        self.store_batch(actor, seq, hlc, entries, true).map(drop)
    }

    /// The change row of a batch, then each key's version under it, exactly as a single
    /// write's; one event for the change.
    fn store_batch<'a>(
        &mut self,
        actor: ActorId,
        seq: u64,
        hlc: Hlc,
        entries: impl Iterator<Item = (&'a str, Option<&'a [u8]>, Vec<Dot>, bool)>,
        remote: bool,
    ) -> Result<Vec<Vec<Dot>>> {
        let slot = self.actor_slot(actor)?;
        let entries: Vec<_> = entries
            .map(|(key, value, context, pruned)| (key, value, canonical_context(context), pruned))
            .collect();
        let seal = match remote {
            true => None,
            false => {
                // A local batch has no pruned writes: every write is in the body's hash.
                let writes = entries
                    .iter()
                    .map(|(key, value, context, _)| seal::write_hash(key, *value, context))
                    .collect();
                Some(self.seal_local(seq, hlc, seal::docs_body_hash(true, writes))?)
            }
        };
        let change_id =
            self.insert_sealed_change_row(slot.idx, seq, hlc, KIND_DOC_BATCH, None, seal.as_ref())?;
        let version = Version {
            change_id,
            actor,
            actor_idx: slot.idx,
            seq,
            hlc,
        };
        let (mut keys, mut deleted, mut contexts) = (Vec::new(), 0, Vec::new());
        for (key, value, context, pruned) in entries {
            let key_id = self.key_id(key)?;
            let pos = contexts.len();
            contexts.push(self.store_version(&version, pos, key_id, key, value, context, pruned)?);
            keys.push(key.to_owned());
            deleted += usize::from(value.is_none() && !pruned);
        }
        self.advance(actor, seq, hlc)?;
        self.pending_events.push(ChangeEvent {
            local_id: change_id,
            actor,
            seq,
            hlc,
            remote,
            kind: ChangeEventKind::DocBatch { keys, deleted },
        });
        Ok(contexts)
    }

    /// The context of one local batch entry: the caller's (every dot must be a stored
    /// version of the key) or the key's current siblings. Refuses twin keys, and a delete
    /// of a key without a live value, as [`Store::delete`](crate::Store::delete) does.
    fn local_context(&mut self, w: &LocalDocWrite) -> Result<Vec<Dot>> {
        if self.is_twin(&w.key)? {
            return Err(twin_not_document(&w.key));
        }
        let key_id = self.key_id(&w.key)?;
        if let Some(given) = &w.context {
            for dot in given {
                if !self.is_version_of(key_id, *dot)? {
                    return Err(not_a_version(*dot, &w.key));
                }
            }
            return Ok(given.clone());
        }
        if w.value.is_none() {
            let (heads, tombstones): (i64, i64) = self
                .conn
                .prepare_cached(HEAD_TOMBSTONES)
                .and_then(|mut st| st.query_row([key_id], |r| Ok((r.get(0)?, r.get(1)?))))
                .map_err(StoreError::db("reading document heads"))?;
            if heads == 0 || (heads == 1 && tombstones == 1) {
                return Err(StoreError::UnknownKey(w.key.clone()));
            }
        }
        self.current_heads(key_id)
    }

    fn is_version_of(&mut self, key_id: i64, dot: Dot) -> Result<bool> {
        let Some(idx) = self.actors.get(&dot.actor).map(|s| s.idx) else {
            return Ok(false);
        };
        self.conn
            .prepare_cached(
                // From the change's unique (actor, seq) to the version by change: two index
                // lookups, whatever the number of versions of the key.
                "SELECT 1 FROM changes c JOIN doc_versions v ON v.change_id = c.id AND v.key_id = ?1 \
                 WHERE c.actor_idx = ?2 AND c.seq = ?3",
            )
            .and_then(|mut st| st.exists(params![key_id, idx, dot.seq as i64]))
            .map_err(StoreError::db("checking a document context"))
    }

    /// Stores the version of one key made by the change `v` (`pos`: its place among the
    /// change's versions, batch order): the version row, the dots it supersedes (they leave
    /// the key's heads), itself as a head unless a stored version supersedes it, and its
    /// digest element. Returns the context, sorted.
    ///
    /// A `pruned` version (received from a peer whose retention dropped its value) is never
    /// made a head: its sender prunes only versions something supersedes, and that version
    /// reaches this store too — until then the key shows its other heads, never a version
    /// without a value (`doc_retention.rs`).
    #[allow(clippy::too_many_arguments)]
    fn store_version(
        &mut self,
        v: &Version,
        pos: usize,
        key_id: i64,
        key: &str,
        value: Option<&[u8]>,
        context: Vec<Dot>,
        pruned: bool,
    ) -> Result<Vec<Dot>> {
        let context = canonical_context(context);
        let ctx_bytes = encode_context(&context);
        let value = value.filter(|_| !pruned);
        self.conn
            .prepare_cached(
                "INSERT INTO doc_versions (key_id, hlc, change_id, actor_idx, seq, pos, pruned, context, value) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    key_id,
                    v.hlc.0 as i64,
                    v.change_id,
                    v.actor_idx,
                    v.seq as i64,
                    pos as i64,
                    pruned,
                    &ctx_bytes,
                    value
                ])
            })
            .map_err(StoreError::db("storing a document version"))?;
        self.counts.doc_versions += 1;

        for dot in &context {
            let idx = self.actor_slot(dot.actor)?.idx;
            self.conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO doc_superseded (key_id, actor_idx, seq) VALUES (?1, ?2, ?3)",
                )
                .and_then(|mut st| st.execute(params![key_id, idx, dot.seq as i64]))
                .map_err(StoreError::db("recording superseded versions"))?;
            self.conn
                .prepare_cached(
                    "DELETE FROM doc_heads WHERE key_id = ?1 AND actor_idx = ?2 AND seq = ?3",
                )
                .and_then(|mut st| st.execute(params![key_id, idx, dot.seq as i64]))
                .map_err(StoreError::db("updating document heads"))?;
        }
        let superseded = self
            .conn
            .prepare_cached(
                "SELECT 1 FROM doc_superseded WHERE key_id = ?1 AND actor_idx = ?2 AND seq = ?3",
            )
            .and_then(|mut st| st.exists(params![key_id, v.actor_idx, v.seq as i64]))
            .map_err(StoreError::db("checking document heads"))?;
        if !superseded && !pruned {
            self.conn
                .prepare_cached(
                    "INSERT INTO doc_heads (key_id, hlc, change_id, actor_idx, seq) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        key_id,
                        v.hlc.0 as i64,
                        v.change_id,
                        v.actor_idx,
                        v.seq as i64
                    ])
                })
                .map_err(StoreError::db("updating document heads"))?;
        }
        self.digest.add(&if pruned {
            doc_pruned_hash(&v.actor, v.seq, v.hlc, key, &ctx_bytes)
        } else {
            doc_hash(&v.actor, v.seq, v.hlc, key, value, &ctx_bytes)
        });
        Ok(context)
    }
}

/// How many heads a key has and how many of them are tombstones (heads first, as
/// `docs_query::HEADS_OF_KEY`).
pub(crate) const HEAD_TOMBSTONES: &str = "SELECT COUNT(*), COALESCE(SUM(v.value IS NULL), 0) FROM doc_heads h \
     CROSS JOIN doc_versions v ON v.key_id = h.key_id AND v.hlc = h.hlc AND v.change_id = h.change_id \
     WHERE h.key_id = ?1";

/// `changes.kind` of a single document write.
pub(crate) const KIND_DOC: i64 = 2;
/// `changes.kind` of a batch of document writes (schema 4).
pub(crate) const KIND_DOC_BATCH: i64 = 5;

/// The change a version belongs to.
struct Version {
    change_id: i64,
    actor: ActorId,
    actor_idx: i64,
    seq: u64,
    hlc: Hlc,
}
