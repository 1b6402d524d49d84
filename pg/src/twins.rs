//! Twins (merge documents) on PostgreSQL: the reads of the HTTP API (merged value, as-of,
//! history pages, diffs, listings) and the hub's own edits (create, patch), with the answers
//! and errors of the embedded store (`sync/src/twin/`). A twin is every stored automerge
//! change of its key (`twin_changes`, as received); a read loads them, in change-id pages
//! of [`CHANGES_PER_READ`], into a [`TwinDoc`] — kdelta-sync's own view, as-of, history and
//! edit functions — inside one read-only snapshot.
//!
//! An edit of the hub is a change of its own actor through the local path of `apply.rs`
//! (seq and HLC issued under the hub actor's row lock). Its automerge change is made there,
//! on the key's state read in that transaction after the lock ([`own_twin_change`]): edits
//! of one twin through two replicas are serialised, each made on top of the other, so
//! neither is lost and the hub's automerge actor never issues one automerge seq twice.

use std::sync::Mutex;

use kdelta_sync::{
    ActorId, AsOf, ChangeBody, ChangeMeta, DocDiff, HistoryCursor, Hlc, MAX_HISTORY_PAGE,
    StoreError, TwinChange, TwinDoc, TwinEdit, TwinHistoryEntry, TwinPatch, TwinState, TwinWrite,
};
use sqlx::{PgConnection, Row};

use crate::docs::snapshot;
use crate::error::{PgError, Result};
use crate::store::PgStore;

/// Stored changes one step of loading a twin reads.
const CHANGES_PER_READ: i64 = 1_000;

/// Loads every stored change of twin `key` (in change-id order, page by page); an empty
/// document when the key has none.
async fn load(conn: &mut PgConnection, key: &str) -> Result<TwinDoc> {
    let ctx = "reading twin changes";
    let mut doc = TwinDoc::new();
    let mut after = i64::MIN;
    loop {
        let rows = sqlx::query(
            "SELECT change_id, hlc, bytes FROM twin_changes WHERE key = $1 AND change_id > $2 \
             ORDER BY change_id LIMIT $3",
        )
        .bind(key)
        .bind(after)
        .bind(CHANGES_PER_READ)
        .fetch_all(&mut *conn)
        .await
        .map_err(PgError::db(ctx))?;
        let full = rows.len() as i64 == CHANGES_PER_READ;
        let mut page = Vec::with_capacity(rows.len());
        for r in rows {
            after = r.try_get(0).map_err(PgError::db(ctx))?;
            let hlc: i64 = r.try_get(1).map_err(PgError::db(ctx))?;
            page.push((Hlc(hlc as u64), r.try_get(2).map_err(PgError::db(ctx))?));
        }
        doc.apply(page)?;
        if !full {
            return Ok(doc);
        }
    }
}

/// Loads twin `key`; [`StoreError::UnknownKey`] when it has no stored change.
async fn load_existing(conn: &mut PgConnection, key: &str) -> Result<TwinDoc> {
    let doc = load(conn, key).await?;
    if doc.changes() == 0 {
        return Err(StoreError::UnknownKey(key.to_owned()).into());
    }
    Ok(doc)
}

async fn is_document(conn: &mut PgConnection, key: &str) -> Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM doc_keys WHERE key = $1)")
        .bind(key)
        .fetch_one(conn)
        .await
        .map_err(PgError::db("looking up a document key"))
}

impl PgStore {
    /// The merged value of twin `key` and its number of stored changes; `None` when the key
    /// is not a twin. As `Store::twin_get`.
    pub async fn twin_get(&self, key: &str) -> Result<Option<TwinState>> {
        let mut tx = snapshot(self).await?;
        let doc = load(&mut tx, key).await?;
        Ok((doc.changes() > 0).then(|| TwinState {
            key: key.to_owned(),
            value: doc.value(),
            changes: doc.changes(),
        }))
    }

    /// Keys of twins starting with `prefix`, in key order (bytewise, as SQLite), after
    /// `after`, at most `limit` (1 to [`MAX_HISTORY_PAGE`]). As `Store::twin_keys`.
    pub async fn twin_keys(
        &self,
        prefix: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Vec<String>> {
        let keys: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT key COLLATE \"C\" FROM twin_changes WHERE key COLLATE \"C\" > $1 \
             AND key COLLATE \"C\" >= $2 ORDER BY 1 LIMIT $3",
        )
        .bind(after.unwrap_or(""))
        .bind(prefix)
        .bind(limit.clamp(1, MAX_HISTORY_PAGE) as i64)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(PgError::db("listing twins"))?;
        Ok(keys
            .into_iter()
            .take_while(|k| k.starts_with(prefix))
            .collect())
    }

    /// The value of twin `key` as it was at `at`: [`StoreError::UnknownKey`] when the key
    /// is not a twin, [`StoreError::BeforeHistory`] before its first change. As
    /// `Store::twin_get_as_of`.
    pub async fn twin_get_as_of(&self, key: &str, at: AsOf) -> Result<serde_json::Value> {
        let mut tx = snapshot(self).await?;
        let doc = load_existing(&mut tx, key).await?;
        doc.value_at(key, at)?.ok_or_else(|| {
            StoreError::BeforeHistory {
                key: key.to_owned(),
                at: at.to_string(),
            }
            .into()
        })
    }

    /// How twin `key` changed between two points (before its first change it is absent);
    /// [`StoreError::UnknownKey`] when the key is not a twin. As `Store::twin_diff`.
    pub async fn twin_diff(&self, key: &str, from: AsOf, to: AsOf) -> Result<DocDiff> {
        let mut tx = snapshot(self).await?;
        let doc = load_existing(&mut tx, key).await?;
        Ok(DocDiff::between(
            key,
            doc.value_at(key, from)?,
            doc.value_at(key, to)?,
        ))
    }

    /// Changes of twin `key`, newest first (by HLC, then actor), at most `limit` (1 to
    /// [`MAX_HISTORY_PAGE`]), after `before` when given: who changed which paths, when.
    /// [`StoreError::UnknownKey`] when the key is not a twin. As `Store::twin_history`.
    pub async fn twin_history(
        &self,
        key: &str,
        limit: usize,
        before: Option<HistoryCursor>,
    ) -> Result<Vec<TwinHistoryEntry>> {
        let ctx = "reading twin history";
        let (below, actor_below) = HistoryCursor::sql_bounds(before);
        let mut tx = snapshot(self).await?;
        let doc = load_existing(&mut tx, key).await?;
        let rows = sqlx::query(
            "SELECT a.actor, c.seq, t.hlc, t.bytes FROM twin_changes t \
             JOIN changes c ON c.id = t.change_id JOIN actors a ON a.idx = c.actor_idx \
             WHERE t.key = $1 AND t.hlc <= $2 AND (t.hlc < $2 OR a.actor < $3) \
             ORDER BY t.hlc DESC, a.actor DESC LIMIT $4",
        )
        .bind(key)
        .bind(below)
        .bind(actor_below)
        .bind(limit.clamp(1, MAX_HISTORY_PAGE) as i64)
        .fetch_all(&mut *tx)
        .await
        .map_err(PgError::db(ctx))?;
        rows.iter()
            .map(|r| {
                let actor: Vec<u8> = r.try_get(0).map_err(PgError::db(ctx))?;
                let actor = ActorId::from_slice(&actor).ok_or(StoreError::Decode {
                    what: "stored actor id",
                    detail: "not 16 bytes".into(),
                })?;
                let seq: i64 = r.try_get(1).map_err(PgError::db(ctx))?;
                let hlc: i64 = r.try_get(2).map_err(PgError::db(ctx))?;
                let bytes: Vec<u8> = r.try_get(3).map_err(PgError::db(ctx))?;
                Ok(doc.history_entry(actor, seq as u64, Hlc(hlc as u64), &bytes)?)
            })
            .collect()
    }

    /// Creates twin `key`, empty or with `initial` (a JSON object), as a change of the hub's
    /// own actor. Fails as `Store::twin_create`: [`StoreError::TwinExists`],
    /// [`StoreError::WrongKind`] (a plain document holds the key), `InvalidPatch`. Durable
    /// on return.
    pub async fn twin_create(
        &self,
        key: &str,
        initial: Option<serde_json::Value>,
    ) -> Result<TwinWrite> {
        self.twin_edit(key, TwinEdit::Create(initial)).await
    }

    /// Applies `patch` to twin `key` as one change of the hub's own actor, made on the
    /// twin's state when it is stamped (nothing is stored when it changes nothing). Fails
    /// as `Store::twin_patch`: [`StoreError::UnknownKey`], `WrongKind`, `InvalidPatch`; a
    /// refused patch changes nothing. Durable on return.
    pub async fn twin_patch(&self, key: &str, patch: TwinPatch) -> Result<TwinWrite> {
        self.twin_edit(key, TwinEdit::Patch(patch)).await
    }

    async fn twin_edit(&self, key: &str, edit: TwinEdit) -> Result<TwinWrite> {
        edit.validate(key, self.inner.config.limits.max_value_bytes)?;
        let plan = OwnTwinEdit {
            key: key.to_owned(),
            edit,
            value: Mutex::new(None),
        };
        let stored = self.write_own_twin(&plan).await?;
        let value = plan
            .value
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .ok_or_else(|| StoreError::Decode {
                what: "a twin edit of the hub",
                detail: "it was not made".into(),
            })?;
        Ok(TwinWrite {
            key: key.to_owned(),
            change: stored.map(|c| ChangeMeta {
                actor: c.actor,
                seq: c.seq,
                hlc: c.hlc,
            }),
            value,
        })
    }
}

/// A twin edit of the hub, made in its change's transaction ([`own_twin_change`]).
pub(crate) struct OwnTwinEdit {
    key: String,
    edit: TwinEdit,
    /// The merged value after the edit, left by the attempt that committed (or found that
    /// the edit changes nothing).
    value: Mutex<Option<serde_json::Value>>,
}

/// The body of the hub's change for `plan`, stamped `actor`/`hlc`, inside its transaction
/// (the hub actor's row is locked, so every earlier edit of the hub is visible): the key's
/// stored changes are loaded and the edit made on top of them, with the embedded store's
/// checks. `None` when the edit changes nothing (nothing is to be stored).
pub(crate) async fn own_twin_change(
    conn: &mut PgConnection,
    plan: &OwnTwinEdit,
    actor: ActorId,
    hlc: Hlc,
    max_bytes: usize,
) -> Result<Option<ChangeBody>> {
    let key = &plan.key;
    let document = is_document(conn, key).await?;
    let mut doc = if document {
        TwinDoc::new()
    } else {
        load(conn, key).await?
    };
    let (change, value) = doc.edit(key, &plan.edit, document, actor, hlc, max_bytes)?;
    *plan.value.lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
    Ok(change.map(|change| {
        ChangeBody::Twin(TwinChange {
            key: key.clone(),
            change,
        })
    }))
}
