//! Storing a document version inside the writer's transaction: the multi-value register with
//! dotted contexts. A version lists the dots of the siblings its writer saw; those dots are
//! recorded as superseded and leave the key's heads; the new version becomes a head unless a
//! version already stored supersedes it (possible when changes of different actors arrive out
//! of causal order). The final heads are the same whatever the order of arrival.
//!
//! Runs on the writer thread with cached prepared statements; key ids are cached in the
//! writer (reloaded after a rollback).

use rusqlite::{OptionalExtension, params};

use crate::digest::doc_hash;
use crate::writer::Writer;
use crate::{ActorId, ChangeEvent, ChangeEventKind, Dot, Hlc, Result, StoreError};

/// Canonical CBOR of a context: dots sorted, so equal contexts hash equally.
pub(crate) fn encode_context(dots: &[Dot]) -> Vec<u8> {
    let mut sorted = dots.to_vec();
    sorted.sort();
    sorted.dedup();
    let mut out = Vec::new();
    ciborium::into_writer(&sorted, &mut out).expect("encoding dots into memory");
    out
}

pub(crate) fn decode_context(bytes: &[u8]) -> Result<Vec<Dot>> {
    ciborium::from_reader(bytes).map_err(|e| StoreError::Decode {
        what: "document context",
        detail: e.to_string(),
    })
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
                "SELECT a.actor, c.seq FROM doc_heads h \
                 JOIN changes c ON c.id = h.change_id JOIN actors a ON a.idx = c.actor_idx \
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

    /// Stores one document version. `context` is `None` for a local write (the current heads
    /// are taken) and the received context for a remote one. Returns the context used.
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
    ) -> Result<Vec<Dot>> {
        let key_id = self.key_id(key)?;
        let mut context = match context {
            Some(c) => c.to_vec(),
            None => self.current_heads(key_id)?,
        };
        context.sort();
        context.dedup();
        let ctx_bytes = encode_context(&context);
        let slot = self.actor_slot(actor)?;
        let change_id = self.insert_change_row(slot.idx, seq, hlc, 2, None)?;
        self.conn
            .prepare_cached(
                "INSERT INTO doc_versions (change_id, key_id, hlc, value, context) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut st| st.execute(params![change_id, key_id, hlc.0 as i64, value, &ctx_bytes]))
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
                    "DELETE FROM doc_heads WHERE key_id = ?1 AND change_id IN \
                     (SELECT id FROM changes WHERE actor_idx = ?2 AND seq = ?3)",
                )
                .and_then(|mut st| st.execute(params![key_id, idx, dot.seq as i64]))
                .map_err(StoreError::db("updating document heads"))?;
        }
        let superseded = self
            .conn
            .prepare_cached(
                "SELECT 1 FROM doc_superseded WHERE key_id = ?1 AND actor_idx = ?2 AND seq = ?3",
            )
            .and_then(|mut st| st.exists(params![key_id, slot.idx, seq as i64]))
            .map_err(StoreError::db("checking document heads"))?;
        if !superseded {
            self.conn
                .prepare_cached("INSERT INTO doc_heads (key_id, change_id) VALUES (?1, ?2)")
                .and_then(|mut st| st.execute(params![key_id, change_id]))
                .map_err(StoreError::db("updating document heads"))?;
        }

        self.advance(actor, seq)?;
        self.digest
            .add(&doc_hash(&actor, seq, hlc, key, value, &ctx_bytes));
        self.pending_events.push(ChangeEvent {
            local_id: change_id,
            actor,
            seq,
            hlc,
            remote,
            kind: ChangeEventKind::Doc {
                key: key.to_owned(),
                deleted: value.is_none(),
            },
        });
        Ok(context)
    }
}
