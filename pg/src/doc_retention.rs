//! Document history retention on a PostgreSQL hub (`[retention.docs]`): the embedded
//! store's rule (`kdelta_sync`'s `doc_retention.rs`), applied with its pure functions
//! ([`DocRule::prune_bound`], [`pruned_version`]), so a hub and SQLite replicas holding the
//! same changes under one policy prune the same versions and show the same digest.
//! Runs as the document part of a [`PgStore::prune`] pass, under its advisory lock
//! (`retention.rs`); touches nothing but document versions, their changes' seals and sizes,
//! and the digests of their actors.
//!
//! **What is pruned.** Of each key, the versions below the rule's bound — not among the
//! `keep_versions` newest by `(HLC, actor)` (pruned ones counted) and older than the age
//! limit — that are not pruned yet and not heads: a version goes only once some version the
//! hub holds names it in its context (`doc_superseded`, insert-only, so a version that
//! stopped being a head never becomes one again). Its value is dropped and `pruned` set;
//! its key, HLC and context stay, so merges and as-of reads stay exact (`docs.rs` answers
//! `HistoryPruned` over them as SQLite does).
//!
//! **One step** is one transaction over at most `step_rows` versions (of one key or
//! several): it locks the rows in `actors` of the versions' authors, in actor order as
//! applies lock them, moves each actor's digest from the version's element to the element
//! of what remains of it, marks the versions, appends each write's seal hash to its
//! change's seal (`pruned`), and stores the change's new encoded size. The change itself is
//! then served with the pruned write as `{key, context, pruned: true}` — the body SQLite
//! serves. Marking is conditional (`NOT pruned`), so a version is never counted twice.

use std::collections::HashMap;

use kdelta_sync::{
    ActorId, Digest, DocRetention, DocRule, Hlc, PruneReport, StoreError, VersionOrder,
    pruned_version,
};
use sqlx::Row;

use crate::codec::{decode_context, encode_seal};
use crate::error::{PgError, Result};
use crate::read::changes_by_id;
use crate::retention::CONFLICT_RETRIES;
use crate::store::PgStore;

/// Keys read per listing query of a pass.
const KEYS_PER_READ: i64 = 512;

/// A version a step prunes.
#[derive(Debug, Clone)]
struct Candidate {
    change_id: i64,
    ord: i32,
    key: String,
    hlc: i64,
    value: Option<Vec<u8>>,
    context: Vec<u8>,
    seq: i64,
    actor: Vec<u8>,
}

impl PgStore {
    /// The document part of a prune pass as of `now_ms`: every key, in key id order, its
    /// prunable versions in transactions of at most `step_rows`. Adds to `report`
    /// (`doc_versions`, `steps`). The caller holds the retention lock.
    pub(crate) async fn prune_docs(
        &self,
        docs: &DocRetention,
        now_ms: i64,
        step_rows: usize,
        report: &mut PruneReport,
    ) -> Result<()> {
        if docs.keeps_everything() {
            return Ok(());
        }
        let ctx = "listing document keys to prune";
        let step_rows = step_rows.max(1);
        let mut batch: Vec<Candidate> = Vec::new();
        let mut after = 0i64;
        loop {
            let keys: Vec<(i64, String)> =
                sqlx::query_as("SELECT id, key FROM doc_keys WHERE id > $1 ORDER BY id LIMIT $2")
                    .bind(after)
                    .bind(KEYS_PER_READ)
                    .fetch_all(&self.inner.pool)
                    .await
                    .map_err(PgError::db(ctx))?;
            let Some((last, _)) = keys.last() else {
                break;
            };
            after = *last;
            for (key_id, key) in keys {
                let rule = docs.rule(&key);
                loop {
                    let Some(bound) = self.prune_bound(key_id, rule, now_ms).await? else {
                        break;
                    };
                    let limit = step_rows - batch.len();
                    let found = self.candidates(key_id, &key, &bound, limit).await?;
                    let more = found.len() == limit;
                    batch.extend(found);
                    if batch.len() >= step_rows {
                        self.prune_step(std::mem::take(&mut batch), report).await?;
                    }
                    if !more {
                        break; // this key is done; a full step looks at it again
                    }
                }
            }
        }
        if !batch.is_empty() {
            self.prune_step(batch, report).await?;
        }
        Ok(())
    }

    /// The bound of `rule` for the key with id `key_id`, from the versions held now.
    async fn prune_bound(
        &self,
        key_id: i64,
        rule: DocRule,
        now_ms: i64,
    ) -> Result<Option<VersionOrder>> {
        if rule.keeps_everything() {
            return Ok(None);
        }
        let mut nth = None;
        if let Some(offset) = rule.newest_kept_offset() {
            nth = sqlx::query_as(
                "SELECT v.hlc, a.actor FROM doc_versions v \
                 JOIN changes c ON c.id = v.change_id JOIN actors a ON a.idx = c.actor_idx \
                 WHERE v.key_id = $1 ORDER BY v.hlc DESC, a.actor DESC LIMIT 1 OFFSET $2",
            )
            .bind(key_id)
            .bind(offset)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(PgError::db("counting a document's versions"))?;
        }
        Ok(rule.prune_bound(nth, now_ms))
    }

    /// Up to `limit` versions of the key below `bound`, not pruned and not heads, oldest
    /// first.
    async fn candidates(
        &self,
        key_id: i64,
        key: &str,
        (bound_hlc, bound_actor): &VersionOrder,
        limit: usize,
    ) -> Result<Vec<Candidate>> {
        let ctx = "finding document versions to prune";
        let rows = sqlx::query(
            "SELECT v.change_id, v.ord, v.hlc, v.value, v.context, c.seq, a.actor \
             FROM doc_versions v JOIN changes c ON c.id = v.change_id \
             JOIN actors a ON a.idx = c.actor_idx \
             WHERE v.key_id = $1 AND NOT v.pruned AND (v.hlc, a.actor) < ($2, $3) \
             AND EXISTS (SELECT 1 FROM doc_superseded s \
                         WHERE s.key_id = v.key_id AND s.actor = a.actor AND s.seq = c.seq) \
             ORDER BY v.hlc, a.actor LIMIT $4",
        )
        .bind(key_id)
        .bind(bound_hlc)
        .bind(bound_actor)
        .bind(limit as i64)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(PgError::db(ctx))?;
        let get = |e| PgError::db(ctx)(e);
        rows.iter()
            .map(|r| {
                Ok(Candidate {
                    change_id: r.try_get(0).map_err(get)?,
                    ord: r.try_get(1).map_err(get)?,
                    key: key.to_owned(),
                    hlc: r.try_get(2).map_err(get)?,
                    value: r.try_get(3).map_err(get)?,
                    context: r.try_get(4).map_err(get)?,
                    seq: r.try_get(5).map_err(get)?,
                    actor: r.try_get(6).map_err(get)?,
                })
            })
            .collect()
    }

    /// Prunes `versions` in one transaction, tried again when PostgreSQL aborts it for a
    /// conflict with an apply.
    async fn prune_step(&self, versions: Vec<Candidate>, report: &mut PruneReport) -> Result<()> {
        let mut attempt = 0;
        loop {
            match self.prune_versions(&versions).await {
                Err(e) if e.is_conflict() && attempt < CONFLICT_RETRIES => attempt += 1,
                Err(e) => return Err(e),
                Ok(n) => {
                    report.doc_versions += n;
                    report.steps += 1;
                    return Ok(());
                }
            }
        }
    }

    /// One step (see the module's header); returns the versions it pruned.
    async fn prune_versions(&self, versions: &[Candidate]) -> Result<u64> {
        let ctx = "pruning document versions";
        let mut tx = self.inner.pool.begin().await.map_err(PgError::db(ctx))?;
        let actors: Vec<Vec<u8>> = versions.iter().map(|v| v.actor.clone()).collect();
        // The authors' rows, in actor order as applies lock them: their digests move here.
        let locked: Vec<(Vec<u8>, Vec<u8>)> = sqlx::query_as(
            "SELECT actor, digest FROM actors WHERE actor = ANY($1) ORDER BY actor FOR UPDATE",
        )
        .bind(&actors)
        .fetch_all(&mut *tx)
        .await
        .map_err(PgError::db(ctx))?;
        let mut digests: HashMap<Vec<u8>, Digest> = locked
            .into_iter()
            .map(|(actor, d)| (actor, Digest::from_slice(&d)))
            .collect();
        // Seal hashes per change, in the order the versions are pruned (as SQLite appends).
        let mut sealed: Vec<(i64, [u8; 32])> = Vec::new();
        let mut n = 0u64;
        for v in versions {
            let marked = sqlx::query(
                "UPDATE doc_versions SET value = NULL, pruned = true \
                 WHERE change_id = $1 AND ord = $2 AND NOT pruned",
            )
            .bind(v.change_id)
            .bind(v.ord)
            .execute(&mut *tx)
            .await
            .map_err(PgError::db(ctx))?;
            if marked.rows_affected() == 0 {
                continue; // pruned meanwhile (a pass that stopped after committing)
            }
            let actor = ActorId::from_slice(&v.actor).ok_or(StoreError::Decode {
                what: "stored actor id",
                detail: "not 16 bytes".into(),
            })?;
            let dots = decode_context(&v.context)?;
            let pruned = pruned_version(
                &actor,
                v.seq as u64,
                Hlc(v.hlc as u64),
                &v.key,
                v.value.as_deref(),
                &dots,
            );
            let digest = digests
                .get_mut(&v.actor)
                .ok_or_else(|| StoreError::Decode {
                    what: "document version's actor",
                    detail: format!("actor {actor} has no row"),
                })?;
            digest.sub(&pruned.held);
            digest.add(&pruned.remains);
            sealed.push((v.change_id, pruned.seal_hash));
            n += 1;
        }
        if n == 0 {
            tx.rollback().await.map_err(PgError::db(ctx))?;
            return Ok(0);
        }
        let mut ids: Vec<i64> = sealed.iter().map(|s| s.0).collect();
        ids.dedup();
        // The changes as served now (their pruned writes marked): new seal and size.
        let mut changes = changes_by_id(&mut tx, &ids).await?;
        for (id, hash) in &sealed {
            if let Some(seal) = changes.get_mut(id).and_then(|c| c.seal.as_mut()) {
                seal.pruned.push(*hash);
            }
        }
        for (id, change) in &changes {
            sqlx::query("UPDATE changes SET seal = $1, bytes = $2 WHERE id = $3")
                .bind(change.seal.as_ref().map(encode_seal))
                .bind(i32::try_from(change.encoded_len()).unwrap_or(i32::MAX))
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(PgError::db(ctx))?;
        }
        for (actor, digest) in &digests {
            sqlx::query("UPDATE actors SET digest = $1 WHERE actor = $2")
                .bind(digest.0.as_slice())
                .bind(actor)
                .execute(&mut *tx)
                .await
                .map_err(PgError::db(ctx))?;
        }
        tx.commit().await.map_err(PgError::db(ctx))?;
        Ok(n)
    }
}
