//! Storing a document version inside the writer's transaction: the multi-value register with
//! dotted contexts. A version lists the dots of the siblings its writer saw; those dots are
//! recorded as superseded and leave the key's heads; the new version becomes a head unless a
//! version already stored supersedes it (possible when changes of different actors arrive out
//! of causal order). The final heads are the same whatever the order of arrival.

use sqlx::Row;

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
    async fn key_id(&mut self, key: &str) -> Result<i64> {
        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM doc_keys WHERE key = ?")
            .bind(key)
            .fetch_optional(&mut self.conn)
            .await
            .map_err(StoreError::db("looking up a document key"))?;
        if let Some(id) = id {
            return Ok(id);
        }
        Ok(sqlx::query("INSERT INTO doc_keys (key) VALUES (?)")
            .bind(key)
            .execute(&mut self.conn)
            .await
            .map_err(StoreError::db("creating a document key"))?
            .last_insert_rowid())
    }

    async fn current_heads(&mut self, key_id: i64) -> Result<Vec<Dot>> {
        let rows = sqlx::query(
            "SELECT a.actor, c.seq FROM doc_heads h \
             JOIN changes c ON c.id = h.change_id JOIN actors a ON a.idx = c.actor_idx \
             WHERE h.key_id = ?",
        )
        .bind(key_id)
        .fetch_all(&mut self.conn)
        .await
        .map_err(StoreError::db("reading document heads"))?;
        rows.iter()
            .map(|r| {
                let a: Vec<u8> = r.get(0);
                Ok(Dot {
                    actor: ActorId::from_slice(&a).ok_or(StoreError::Decode {
                        what: "stored actor id",
                        detail: "not 16 bytes".into(),
                    })?,
                    seq: r.get::<i64, _>(1) as u64,
                })
            })
            .collect()
    }

    /// Stores one document version. `context` is `None` for a local write (the current heads
    /// are taken) and the received context for a remote one. Returns the context used.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn store_doc(
        &mut self,
        actor: ActorId,
        seq: u64,
        hlc: Hlc,
        key: &str,
        value: Option<&[u8]>,
        context: Option<&[Dot]>,
        remote: bool,
    ) -> Result<Vec<Dot>> {
        let key_id = self.key_id(key).await?;
        let mut context = match context {
            Some(c) => c.to_vec(),
            None => self.current_heads(key_id).await?,
        };
        context.sort();
        context.dedup();
        let ctx_bytes = encode_context(&context);
        let slot = self.actor_slot(actor).await?;
        let change_id = self.insert_change_row(slot.idx, seq, hlc, 2, None).await?;
        sqlx::query("INSERT INTO doc_versions (change_id, key_id, hlc, value, context) VALUES (?, ?, ?, ?, ?)")
            .bind(change_id)
            .bind(key_id)
            .bind(hlc.0 as i64)
            .bind(value)
            .bind(&ctx_bytes)
            .execute(&mut self.conn)
            .await
            .map_err(StoreError::db("storing a document version"))?;

        for dot in context.clone() {
            let idx = self.actor_slot(dot.actor).await?.idx;
            sqlx::query(
                "INSERT OR IGNORE INTO doc_superseded (key_id, actor_idx, seq) VALUES (?, ?, ?)",
            )
            .bind(key_id)
            .bind(idx)
            .bind(dot.seq as i64)
            .execute(&mut self.conn)
            .await
            .map_err(StoreError::db("recording superseded versions"))?;
            sqlx::query(
                "DELETE FROM doc_heads WHERE key_id = ? AND change_id IN \
                 (SELECT id FROM changes WHERE actor_idx = ? AND seq = ?)",
            )
            .bind(key_id)
            .bind(idx)
            .bind(dot.seq as i64)
            .execute(&mut self.conn)
            .await
            .map_err(StoreError::db("updating document heads"))?;
        }
        let superseded: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM doc_superseded WHERE key_id = ? AND actor_idx = ? AND seq = ?",
        )
        .bind(key_id)
        .bind(slot.idx)
        .bind(seq as i64)
        .fetch_optional(&mut self.conn)
        .await
        .map_err(StoreError::db("checking document heads"))?;
        if superseded.is_none() {
            sqlx::query("INSERT INTO doc_heads (key_id, change_id) VALUES (?, ?)")
                .bind(key_id)
                .bind(change_id)
                .execute(&mut self.conn)
                .await
                .map_err(StoreError::db("updating document heads"))?;
        }

        self.advance(actor, seq).await?;
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
