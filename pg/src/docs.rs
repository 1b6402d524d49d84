//! Documents on PostgreSQL: the reads of the HTTP API (current value and siblings, as-of,
//! history pages, diffs, listings) and the hub's own writes (put, delete, batch), with the
//! answers and errors of the embedded store (`sync/src/docs_query.rs`, `docwrite.rs`,
//! `doc_batch.rs`). The pure parts — decoding a stored version, heads, the winner, the
//! checks of a write, the diff — are kdelta-sync's own functions; this file only reads rows.
//!
//! The current siblings of a key are its versions not superseded (`doc_superseded`, filled
//! by every apply) and not pruned: a pruned version is never a head, as on SQLite. As-of
//! reads rebuild the heads from the versions stamped at or before the point.
//!
//! A write of the hub is a change of its own actor through the local path of `apply.rs`
//! (seq and HLC issued under the hub actor's row lock). Its contexts — the key's current
//! heads, or the dots a batch entry names — are resolved and checked here, inside that
//! transaction after the lock ([`resolve_contexts`]): writes through two replicas are
//! serialised like the writes of one SQLite store (the later supersedes the earlier), and a
//! refused entry rolls the whole change back. Does not touch readings, twins or the log's
//! sync side.

use std::collections::{BTreeSet, HashMap, HashSet};

use kdelta_sync::{
    AsOf, BatchEntry, ChangeBody, DocDiff, DocState, DocVersion, DocWrite, Dot, HistoryCursor, Hlc,
    Limits, MAX_HISTORY_PAGE, StoreError, StoredVersion, check_resolved_size, decode_version,
    doc_heads, doc_state, encode_doc_value, live_state, not_a_version, prepare_batch,
    twin_not_document, validate_key,
};
use sqlx::{PgConnection, Row};

use crate::error::{PgError, Result};
use crate::store::PgStore;

/// Keys one step of a listing looks at.
const LIST_KEYS_PER_READ: i64 = 256;

/// The columns of a version, as [`StoredVersion`] (`v` versions, `c` changes, `a` actors).
const VERSION_COLUMNS: &str = "a.actor, c.seq, v.hlc, v.value, v.context, v.pruned";
const VERSION_JOINS: &str =
    "doc_versions v JOIN changes c ON c.id = v.change_id JOIN actors a ON a.idx = c.actor_idx";
/// `v` is a current head of its key.
const IS_HEAD: &str = "NOT v.pruned AND NOT EXISTS (SELECT 1 FROM doc_superseded s \
     WHERE s.key_id = v.key_id AND s.actor = a.actor AND s.seq = c.seq)";

fn stored(r: &sqlx::postgres::PgRow, at: usize, ctx: &'static str) -> Result<StoredVersion> {
    let get = |e| PgError::db(ctx)(e);
    Ok((
        r.try_get(at).map_err(get)?,
        r.try_get(at + 1).map_err(get)?,
        r.try_get(at + 2).map_err(get)?,
        r.try_get(at + 3).map_err(get)?,
        r.try_get(at + 4).map_err(get)?,
        r.try_get(at + 5).map_err(get)?,
    ))
}

async fn key_id(conn: &mut PgConnection, key: &str) -> Result<Option<i64>> {
    sqlx::query_scalar("SELECT id FROM doc_keys WHERE key = $1")
        .bind(key)
        .fetch_optional(conn)
        .await
        .map_err(PgError::db("looking up a document key"))
}

/// Versions of the key with id `id` matching `filter` (SQL over `v`, `c`, `a`; `$1` is the
/// key id, `$2` the HLC bound).
async fn versions(
    conn: &mut PgConnection,
    key: &str,
    id: i64,
    filter: &str,
    bound: i64,
    ctx: &'static str,
) -> Result<Vec<DocVersion>> {
    let sql = format!(
        "SELECT {VERSION_COLUMNS} FROM {VERSION_JOINS} WHERE v.key_id = $1 AND v.hlc <= $2 AND {filter}"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(bound)
        .fetch_all(conn)
        .await
        .map_err(PgError::db(ctx))?;
    rows.iter()
        .map(|r| Ok(decode_version(key, stored(r, 0, ctx)?)?))
        .collect()
}

/// Current siblings of the key with id `id`, newest first.
async fn siblings_of(conn: &mut PgConnection, key: &str, id: i64) -> Result<Vec<DocVersion>> {
    let mut v = versions(conn, key, id, IS_HEAD, i64::MAX, "reading document heads").await?;
    v.sort_by_key(|v| std::cmp::Reverse((v.hlc, v.actor)));
    Ok(v)
}

/// The state of the key with id `id` at `at` (`None` before its first version);
/// [`StoreError::HistoryPruned`] when the winner then is a pruned version.
async fn as_of(conn: &mut PgConnection, key: &str, id: i64, at: AsOf) -> Result<Option<DocState>> {
    let found = versions(
        conn,
        key,
        id,
        "true",
        at.bound().0 as i64,
        "reading document history",
    )
    .await?;
    let state = doc_state(doc_heads(found));
    if state.as_ref().is_some_and(|s| s.winner.pruned) {
        return Err(StoreError::HistoryPruned {
            key: key.to_owned(),
            at: at.to_string(),
            horizon: history_horizon(conn, id).await?,
        }
        .into());
    }
    Ok(state)
}

/// The oldest point as-of reads of the key answer: the HLC of the first version kept after
/// its newest pruned one.
async fn history_horizon(conn: &mut PgConnection, id: i64) -> Result<Hlc> {
    let h: Option<i64> = sqlx::query_scalar(
        "SELECT MIN(hlc) FROM doc_versions WHERE key_id = $1 AND NOT pruned AND hlc > \
         (SELECT MAX(hlc) FROM doc_versions WHERE key_id = $1 AND pruned)",
    )
    .bind(id)
    .fetch_one(conn)
    .await
    .map_err(PgError::db("reading a document's history horizon"))?;
    Ok(Hlc(h.unwrap_or(i64::MAX) as u64))
}

/// A read-only snapshot, so the statements of one read see one state of the database.
pub(crate) async fn snapshot(
    store: &PgStore,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    let ctx = "reading documents";
    let mut tx = store.inner.pool.begin().await.map_err(PgError::db(ctx))?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(PgError::db(ctx))?;
    Ok(tx)
}

impl PgStore {
    /// Current siblings of `key`, newest first (empty when the key was never written), as
    /// `Store::siblings`.
    pub async fn siblings(&self, key: &str) -> Result<Vec<DocVersion>> {
        let mut tx = snapshot(self).await?;
        match key_id(&mut tx, key).await? {
            Some(id) => siblings_of(&mut tx, key, id).await,
            None => Ok(Vec::new()),
        }
    }

    /// The current state of `key`: the winning version (possibly a tombstone) and the
    /// number of siblings; `None` when the key was never written. As `Store::get`.
    pub async fn get(&self, key: &str) -> Result<Option<DocState>> {
        Ok(doc_state(self.siblings(key).await?))
    }

    /// The state of `key` as it was at `at`: `None` when the key was never written,
    /// [`StoreError::BeforeHistory`] before its first version, [`StoreError::HistoryPruned`]
    /// when retention pruned the winner then. As `Store::get_as_of`.
    pub async fn get_as_of(&self, key: &str, at: AsOf) -> Result<Option<DocState>> {
        let mut tx = snapshot(self).await?;
        let Some(id) = key_id(&mut tx, key).await? else {
            return Ok(None);
        };
        match as_of(&mut tx, key, id, at).await? {
            Some(s) => Ok(Some(s)),
            None => Err(StoreError::BeforeHistory {
                at: at.to_string(),
                key: key.to_owned(),
            }
            .into()),
        }
    }

    /// Versions of `key`, newest first (by HLC, then actor), at most `limit` (1 to
    /// [`MAX_HISTORY_PAGE`]), after `before` when given: `Store::history`'s pages and
    /// cursors.
    pub async fn history(
        &self,
        key: &str,
        limit: usize,
        before: Option<HistoryCursor>,
    ) -> Result<Vec<DocVersion>> {
        let ctx = "reading document history";
        let (below, actor_below) = HistoryCursor::sql_bounds(before);
        let mut tx = snapshot(self).await?;
        let Some(id) = key_id(&mut tx, key).await? else {
            return Ok(Vec::new());
        };
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM {VERSION_JOINS} \
             WHERE v.key_id = $1 AND v.hlc <= $2 AND (v.hlc < $2 OR a.actor < $3) \
             ORDER BY v.hlc DESC, a.actor DESC LIMIT $4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(below)
            .bind(actor_below)
            .bind(limit.clamp(1, MAX_HISTORY_PAGE) as i64)
            .fetch_all(&mut *tx)
            .await
            .map_err(PgError::db(ctx))?;
        rows.iter()
            .map(|r| Ok(decode_version(key, stored(r, 0, ctx)?)?))
            .collect()
    }

    /// How `key` changed between two points (`Store::diff`); [`StoreError::UnknownKey`]
    /// when it was never written.
    pub async fn diff(&self, key: &str, from: AsOf, to: AsOf) -> Result<DocDiff> {
        let mut tx = snapshot(self).await?;
        let Some(id) = key_id(&mut tx, key).await? else {
            return Err(StoreError::UnknownKey(key.to_owned()).into());
        };
        let a = as_of(&mut tx, key, id, from)
            .await?
            .and_then(|s| s.winner.value);
        let b = as_of(&mut tx, key, id, to)
            .await?
            .and_then(|s| s.winner.value);
        Ok(DocDiff::between(key, a, b))
    }

    /// Live (not deleted) documents whose key starts with `prefix`, in key order (bytewise,
    /// as SQLite), after key `after`, at most `limit` (1 to [`MAX_HISTORY_PAGE`]); as they
    /// were at `at` when given. As `Store::list`.
    pub async fn list(
        &self,
        prefix: &str,
        at: Option<AsOf>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Vec<DocState>> {
        let ctx = "listing documents";
        let limit = limit.clamp(1, MAX_HISTORY_PAGE);
        let mut tx = snapshot(self).await?;
        let mut out = Vec::new();
        let mut cursor = after.unwrap_or_default().to_owned();
        loop {
            let keys = sqlx::query(
                "SELECT id, key FROM doc_keys WHERE key COLLATE \"C\" > $1 \
                 AND key COLLATE \"C\" >= $2 ORDER BY key COLLATE \"C\" LIMIT $3",
            )
            .bind(&cursor)
            .bind(prefix)
            .bind(LIST_KEYS_PER_READ)
            .fetch_all(&mut *tx)
            .await
            .map_err(PgError::db(ctx))?;
            let exhausted = keys.len() < LIST_KEYS_PER_READ as usize;
            let mut window = Vec::with_capacity(keys.len());
            for r in &keys {
                let id: i64 = r.try_get(0).map_err(PgError::db(ctx))?;
                let key: String = r.try_get(1).map_err(PgError::db(ctx))?;
                if !key.starts_with(prefix) {
                    break;
                }
                window.push((id, key));
            }
            let ended = exhausted || window.len() < keys.len();
            let mut heads = match at {
                None => window_heads(&mut tx, &window).await?,
                Some(_) => HashMap::new(),
            };
            for (id, key) in &window {
                let state = match at {
                    None => match heads.remove(id) {
                        Some(h) => live_state(key, h)?,
                        None => None,
                    },
                    Some(at) => as_of(&mut tx, key, *id, at)
                        .await?
                        .filter(|s| !s.winner.is_tombstone()),
                };
                if let Some(s) = state {
                    out.push(s);
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
            match window.last() {
                Some((_, last)) if !ended => cursor = last.clone(),
                _ => return Ok(out),
            }
        }
    }

    /// Writes a new version of `key` as a change of the hub's own actor, superseding every
    /// sibling the database holds for the key when the change is stamped. Validated as
    /// `Store::put` ([`StoreError::InvalidKey`](kdelta_sync::StoreError),
    /// `ValueTooLarge`, `WrongKind` for a twin key); durable on return.
    pub async fn put(&self, key: &str, value: &serde_json::Value) -> Result<DocVersion> {
        let bytes = encode_doc_value(key, value, &self.inner.config.limits)?;
        self.write_one(key, Some((bytes, value.clone()))).await
    }

    /// Deletes `key` by writing a tombstone version of the hub (history is kept);
    /// [`StoreError::UnknownKey`] when the key has no live value, as `Store::delete`.
    pub async fn delete(&self, key: &str) -> Result<DocVersion> {
        validate_key(key)?;
        self.write_one(key, None).await
    }

    /// One document write of the hub (`value`: its encoded bytes and JSON; `None`: a
    /// tombstone), its context the key's current heads, resolved under the hub actor's lock.
    async fn write_one(
        &self,
        key: &str,
        value: Option<(Vec<u8>, serde_json::Value)>,
    ) -> Result<DocVersion> {
        let (bytes, json) = value.unzip();
        let write = DocWrite {
            key: key.to_owned(),
            value: bytes,
            context: Vec::new(),
            pruned: false,
        };
        let c = self
            .write_own(ChangeBody::Doc(write), Some(&Resolve::single()))
            .await?;
        let ChangeBody::Doc(w) = &c.body else {
            unreachable!("written as a document above")
        };
        Ok(version(&c, w.key.clone(), json, w.context.clone()))
    }

    /// Writes every entry as ONE change of the hub: one seq, one HLC, all or nothing, with
    /// the checks and errors of `Store::write_batch` ([`StoreError::BatchEntry`] names the
    /// entry; nothing is stored). Returns the new versions in entry order once durable.
    pub async fn write_batch(&self, entries: Vec<BatchEntry>) -> Result<Vec<DocVersion>> {
        let (body, encoded_bytes) = prepare_batch(&entries, &self.inner.config.limits)?;
        let resolve = Resolve {
            given: entries.iter().map(|e| e.context.clone()).collect(),
            batch_bytes: Some(encoded_bytes),
        };
        let c = self
            .write_own(ChangeBody::DocBatch(body), Some(&resolve))
            .await?;
        let ChangeBody::DocBatch(b) = &c.body else {
            unreachable!("written as a batch above")
        };
        Ok(entries
            .into_iter()
            .zip(&b.writes)
            .map(|(e, w)| version(&c, e.key, e.value, w.context.clone()))
            .collect())
    }
}

fn version(
    c: &kdelta_sync::Change,
    key: String,
    value: Option<serde_json::Value>,
    supersedes: Vec<Dot>,
) -> DocVersion {
    DocVersion {
        key,
        actor: c.actor,
        seq: c.seq,
        hlc: c.hlc,
        value,
        supersedes,
        pruned: false,
    }
}

/// The current head rows of the keys of one listing window, by key id.
async fn window_heads(
    conn: &mut PgConnection,
    window: &[(i64, String)],
) -> Result<HashMap<i64, Vec<StoredVersion>>> {
    let ctx = "reading document heads";
    let ids: Vec<i64> = window.iter().map(|w| w.0).collect();
    let sql = format!(
        "SELECT v.key_id, {VERSION_COLUMNS} FROM {VERSION_JOINS} WHERE v.key_id = ANY($1) AND {IS_HEAD}"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&ids)
        .fetch_all(conn)
        .await
        .map_err(PgError::db(ctx))?;
    let mut out: HashMap<i64, Vec<StoredVersion>> = HashMap::new();
    for r in &rows {
        let id: i64 = r.try_get(0).map_err(PgError::db(ctx))?;
        out.entry(id).or_default().push(stored(r, 1, ctx)?);
    }
    Ok(out)
}

/// What a local document write leaves to its transaction.
pub(crate) struct Resolve {
    /// Per write of the body: the context its caller gave, or `None` for the key's current
    /// heads.
    given: Vec<Option<Vec<Dot>>>,
    /// For a batch, the encoded size bound of `prepare_batch` (the resolved dots are added
    /// and checked); `None` for a single write.
    batch_bytes: Option<usize>,
}

impl Resolve {
    /// A single put or delete: the key's current heads (a delete is refused when the key
    /// has no live value).
    fn single() -> Resolve {
        Resolve {
            given: vec![None],
            batch_bytes: None,
        }
    }
}

/// Fills in the contexts of the hub's own document change `body` inside its transaction
/// (the hub actor's row is locked): each write resolves the key's current heads, or the
/// dots its entry gave (each must be a version of the key). Refuses as SQLite's writer
/// does, entry by entry in order: a twin key (`WrongKind`), a dot that is not a version of
/// its key, a delete of a key without a live value (`UnknownKey`); then a batch whose
/// resolved contexts would make it too large. Batch errors name the entry.
pub(crate) async fn resolve_contexts(
    conn: &mut PgConnection,
    body: &mut ChangeBody,
    resolve: &Resolve,
    limits: &Limits,
) -> Result<()> {
    let ctx = "resolving document contexts";
    let (writes, batch) = match body {
        ChangeBody::Doc(w) => (std::slice::from_mut(w), false),
        ChangeBody::DocBatch(b) => (&mut b.writes[..], true),
        _ => return Ok(()),
    };
    let at = |e: StoreError, index: usize| if batch { e.at_entry(index) } else { e };
    let keys: Vec<&str> = writes.iter().map(|w| w.key.as_str()).collect();
    let twins: HashSet<String> =
        sqlx::query_scalar("SELECT DISTINCT key FROM twin_changes WHERE key = ANY($1)")
            .bind(&keys)
            .fetch_all(&mut *conn)
            .await
            .map_err(PgError::db(ctx))?
            .into_iter()
            .collect();
    let sql = format!(
        "SELECT k.key, {VERSION_COLUMNS} FROM doc_keys k JOIN {VERSION_JOINS} ON v.key_id = k.id \
         WHERE k.key = ANY($1) AND {IS_HEAD}"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&keys)
        .fetch_all(&mut *conn)
        .await
        .map_err(PgError::db(ctx))?;
    let mut heads: HashMap<String, Vec<DocVersion>> = HashMap::new();
    for r in &rows {
        let key: String = r.try_get(0).map_err(PgError::db(ctx))?;
        let v = decode_version(&key, stored(r, 1, ctx)?)?;
        heads.entry(key).or_default().push(v);
    }
    let named = named_versions(conn, writes, resolve).await?;
    let mut resolved = 0;
    for (index, w) in writes.iter_mut().enumerate() {
        if twins.contains(&w.key) {
            // A single delete of a twin key finds no document, as `Store::delete` does.
            let e = match (batch, &w.value) {
                (false, None) => StoreError::UnknownKey(w.key.clone()),
                _ => twin_not_document(&w.key),
            };
            return Err(at(e, index).into());
        }
        let given = resolve.given.get(index).cloned().flatten();
        let context = match given {
            Some(dots) => {
                if let Some(&dot) = dots.iter().find(|d| !named.contains(&(index, **d))) {
                    return Err(at(not_a_version(dot, &w.key), index).into());
                }
                dots
            }
            None => {
                let own = heads.remove(&w.key).unwrap_or_default();
                let deletable = doc_state(own.clone()).is_some_and(|s| s.is_deletable());
                if w.value.is_none() && !deletable {
                    return Err(at(StoreError::UnknownKey(w.key.clone()), index).into());
                }
                resolved += own.len();
                own.iter()
                    .map(|v| Dot {
                        actor: v.actor,
                        seq: v.seq,
                    })
                    .collect()
            }
        };
        // Canonical, as SQLite stores and seals it: sorted, each dot once.
        w.context = context
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
    }
    if let Some(bytes) = resolve.batch_bytes {
        check_resolved_size(bytes, resolved, limits)?;
    }
    Ok(())
}

/// The (write index, dot) pairs of the given contexts that are versions of their key.
async fn named_versions(
    conn: &mut PgConnection,
    writes: &[DocWrite],
    resolve: &Resolve,
) -> Result<HashSet<(usize, Dot)>> {
    let (mut idx, mut key, mut actor, mut seq) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, (w, given)) in writes.iter().zip(&resolve.given).enumerate() {
        for d in given.iter().flatten() {
            idx.push(i as i64);
            key.push(w.key.as_str());
            actor.push(d.actor.as_bytes().to_vec());
            seq.push(d.seq as i64);
        }
    }
    if idx.is_empty() {
        return Ok(HashSet::new());
    }
    let ctx = "checking document contexts";
    let rows = sqlx::query(
        "SELECT u.i, u.a, u.s FROM unnest($1::int8[], $2::text[], $3::bytea[], $4::int8[]) AS u(i, k, a, s) \
         WHERE EXISTS (SELECT 1 FROM doc_keys k JOIN doc_versions v ON v.key_id = k.id \
         JOIN changes c ON c.id = v.change_id JOIN actors a ON a.idx = c.actor_idx \
         WHERE k.key = u.k AND a.actor = u.a AND c.seq = u.s)",
    )
    .bind(&idx)
    .bind(&key)
    .bind(&actor)
    .bind(&seq)
    .fetch_all(conn)
    .await
    .map_err(PgError::db(ctx))?;
    let mut out = HashSet::new();
    for r in rows {
        let i: i64 = r.try_get(0).map_err(PgError::db(ctx))?;
        let a: Vec<u8> = r.try_get(1).map_err(PgError::db(ctx))?;
        let s: i64 = r.try_get(2).map_err(PgError::db(ctx))?;
        if let Some(actor) = kdelta_sync::ActorId::from_slice(&a) {
            out.insert((
                i as usize,
                Dot {
                    actor,
                    seq: s as u64,
                },
            ));
        }
    }
    Ok(out)
}
