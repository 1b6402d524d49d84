//! Twin reads on the read pool: the materialized value, as-of (by HLC or wall time), history
//! (who changed which paths, when, paged) and diffs. As-of reads take the changes stamped at
//! or before the point — causally closed, since a change's HLC is above those it depends
//! on — and read the document at those heads. Each call is one closure on a read
//! connection (`readers.rs`).

use automerge::{Automerge, ChangeHash, ReadDoc};
use rusqlite::{Connection, OptionalExtension, params};

use super::json::to_json;
use super::patch::escape;
use super::rebuild::stored_hash;
use super::write::load_doc;
use super::{
    MAX_HISTORY_PATHS, TwinEdit, TwinHistoryEntry, TwinPatch, TwinState, TwinStorage, TwinWrite,
};
use crate::writer::Job;
use crate::{
    ActorId, AsOf, DocDiff, HistoryCursor, Hlc, MAX_HISTORY_PAGE, Result, Store, StoreError,
};

impl Store {
    /// Creates the twin `key`, empty or with `initial` (a JSON object). Fails with
    /// [`StoreError::TwinExists`], [`StoreError::WrongKind`] (a plain document holds the key)
    /// or [`StoreError::InvalidPatch`]. Durable on return.
    pub async fn twin_create(
        &self,
        key: &str,
        initial: Option<serde_json::Value>,
    ) -> Result<TwinWrite> {
        let edit = TwinEdit::Create(initial);
        edit.validate(key, self.inner.config.limits.max_value_bytes)?;
        self.twin_edit(key, edit).await
    }

    /// Applies `patch` to the twin `key` as one change (nothing is stored when it changes
    /// nothing). A refused patch changes nothing. Durable on return.
    pub async fn twin_patch(&self, key: &str, patch: TwinPatch) -> Result<TwinWrite> {
        let edit = TwinEdit::Patch(patch);
        edit.validate(key, self.inner.config.limits.max_value_bytes)?;
        self.twin_edit(key, edit).await
    }

    async fn twin_edit(&self, key: &str, edit: TwinEdit) -> Result<TwinWrite> {
        self.submit(|reply| Job::Twin {
            key: key.to_owned(),
            edit,
            reply,
        })
        .await
    }

    /// The merged value of twin `key`; `None` when the key is not a twin.
    pub async fn twin_get(&self, key: &str) -> Result<Option<TwinState>> {
        let owned = key.to_owned();
        let Some((_, json, changes)) = self
            .inner
            .readers
            .read(move |conn| twin_row(conn, &owned))
            .await?
        else {
            return Ok(None);
        };
        let value = serde_json::from_slice(&json).map_err(|e| StoreError::Decode {
            what: "stored twin value",
            detail: format!("{key}: {e}"),
        })?;
        Ok(Some(TwinState {
            key: key.to_owned(),
            value,
            changes,
        }))
    }

    /// Keys of twins starting with `prefix`, in order, after `after`, at most `limit`.
    pub async fn twin_keys(
        &self,
        prefix: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Vec<String>> {
        let (prefix, after) = (prefix.to_owned(), after.unwrap_or("").to_owned());
        self.inner
            .readers
            .read(move |conn| {
                let keys: Vec<String> = conn
                    .prepare_cached(
                        "SELECT key FROM twins WHERE key > ?1 AND key >= ?2 ORDER BY key LIMIT ?3",
                    )
                    .and_then(|mut st| {
                        st.query_map(
                            params![after, prefix, limit.clamp(1, MAX_HISTORY_PAGE) as i64],
                            |r| r.get(0),
                        )?
                        .collect()
                    })
                    .map_err(StoreError::db("listing twins"))?;
                Ok(keys
                    .into_iter()
                    .take_while(|k| k.starts_with(&prefix))
                    .collect())
            })
            .await
    }

    /// Runs `f` with the loaded document of twin `key` (and its id) on a read connection.
    async fn with_twin_doc<T: Send + 'static>(
        &self,
        key: &str,
        f: impl FnOnce(&Connection, i64, Automerge) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let key = key.to_owned();
        self.inner
            .readers
            .read(move |conn| {
                let Some((id, ..)) = twin_row(conn, &key)? else {
                    return Err(StoreError::UnknownKey(key));
                };
                let (doc, _) = load_doc(conn, id)?;
                f(conn, id, doc)
            })
            .await
    }

    /// Loads twin `key` the way the writer and the history reads do (its snapshot, then the
    /// changes stored after it) and reports what that took: a cheap check of how compact a
    /// twin's storage is, and what the load benchmark measures.
    pub async fn twin_storage(&self, key: &str) -> Result<TwinStorage> {
        let key = key.to_owned();
        self.inner
            .readers
            .read(move |conn| {
                let Some((id, _, changes)) = twin_row(conn, &key)? else {
                    return Err(StoreError::UnknownKey(key));
                };
                let snapshot_bytes: i64 = conn
                    .prepare_cached("SELECT COALESCE(LENGTH(snapshot), 0) FROM twins WHERE id = ?1")
                    .and_then(|mut st| st.query_row([id], |r| r.get(0)))
                    .map_err(StoreError::db("reading a twin"))?;
                let (compacted, raw_bytes): (i64, i64) = conn
                    .prepare_cached(
                        "SELECT COALESCE(SUM(length(bytes) = 0), 0), COALESCE(SUM(length(bytes)), 0) \
                         FROM twin_changes WHERE twin_id = ?1",
                    )
                    .and_then(|mut st| st.query_row([id], |r| Ok((r.get(0)?, r.get(1)?))))
                    .map_err(StoreError::db("reading a twin"))?;
                let (doc, replayed) = load_doc(conn, id)?;
                Ok(TwinStorage {
                    changes,
                    snapshot_bytes: snapshot_bytes as u64,
                    replayed,
                    heads: doc.get_heads().len(),
                    compacted: compacted as u64,
                    raw_bytes: raw_bytes as u64,
                })
            })
            .await
    }

    /// The value of twin `key` as it was at `at`. [`StoreError::UnknownKey`] when the key is
    /// not a twin, [`StoreError::BeforeHistory`] when `at` is before its first change.
    pub async fn twin_get_as_of(&self, key: &str, at: AsOf) -> Result<serde_json::Value> {
        let owned = key.to_owned();
        self.with_twin_doc(key, move |conn, id, doc| {
            match heads_at(conn, id, &doc, at)? {
                Some(heads) => value_at(&owned, &doc, &heads),
                None => Err(StoreError::BeforeHistory {
                    key: owned,
                    at: at.to_string(),
                }),
            }
        })
        .await
    }

    /// How twin `key` changed between two points (before its first change it is absent).
    pub async fn twin_diff(&self, key: &str, from: AsOf, to: AsOf) -> Result<DocDiff> {
        let owned = key.to_owned();
        let (a, b) = self
            .with_twin_doc(key, move |conn, id, doc| {
                let point = |at| match heads_at(conn, id, &doc, at)? {
                    Some(h) => value_at(&owned, &doc, &h).map(Some),
                    None => Ok(None),
                };
                Ok((point(from)?, point(to)?))
            })
            .await?;
        Ok(DocDiff::between(key, a, b))
    }

    /// Changes of twin `key`, newest first (by HLC, then actor), at most `limit` (≤ 1000),
    /// after `before` when given (the cursor of the previous page's last entry): who changed
    /// which paths, when.
    pub async fn twin_history(
        &self,
        key: &str,
        limit: usize,
        before: Option<HistoryCursor>,
    ) -> Result<Vec<TwinHistoryEntry>> {
        let (below, actor_below) = HistoryCursor::sql_bounds(before);
        self.with_twin_doc(key, move |conn, id, doc| {
            let rows: Vec<HistoryRow> = conn
                .prepare_cached(
                    "SELECT a.actor, c.seq, t.hlc, t.bytes, t.hash FROM twin_changes t \
                     JOIN changes c ON c.id = t.change_id JOIN actors a ON a.idx = c.actor_idx \
                     WHERE t.twin_id = ?1 AND t.hlc <= ?2 AND (t.hlc < ?2 OR a.actor < ?3) \
                     ORDER BY t.hlc DESC, a.actor DESC LIMIT ?4",
                )
                .and_then(|mut st| {
                    st.query_map(
                        params![
                            id,
                            below,
                            actor_below,
                            limit.clamp(1, MAX_HISTORY_PAGE) as i64
                        ],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                    )?
                    .collect()
                })
                .map_err(StoreError::db("reading twin history"))?;
            rows.into_iter()
                .map(|(actor, seq, hlc, bytes, hash)| {
                    let actor = ActorId::from_slice(&actor).ok_or(StoreError::Decode {
                        what: "stored actor id",
                        detail: "not 16 bytes".into(),
                    })?;
                    let change = if bytes.is_empty() {
                        // Compacted: the loaded document (its snapshot) holds the change.
                        let hash = stored_hash(&hash)?;
                        doc.get_change_by_hash(&hash)
                            .ok_or_else(|| StoreError::Decode {
                                what: "compacted twin change",
                                detail: format!("{hash} is not in the twin's snapshot"),
                            })?
                    } else {
                        automerge::Change::try_from(&bytes[..]).map_err(|e| StoreError::Decode {
                            what: "stored twin change",
                            detail: e.to_string(),
                        })?
                    };
                    let (paths, truncated) = change_paths(&doc, &change);
                    Ok(TwinHistoryEntry {
                        actor,
                        seq: seq as u64,
                        hlc: Hlc(hlc as u64),
                        paths,
                        truncated,
                    })
                })
                .collect()
        })
        .await
    }
}

/// A twin change as history reads it: actor, seq, HLC, stored chunk (empty when compacted),
/// automerge hash.
type HistoryRow = (Vec<u8>, i64, i64, Vec<u8>, Vec<u8>);

/// The id, materialized JSON and change count of twin `key`.
fn twin_row(conn: &Connection, key: &str) -> Result<Option<(i64, Vec<u8>, u64)>> {
    conn.prepare_cached("SELECT id, json, changes FROM twins WHERE key = ?1")
        .and_then(|mut st| {
            st.query_row([key], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
            })
            .optional()
        })
        .map_err(StoreError::db("reading a twin"))
}

/// The heads of twin `id` at `at` (`None` before its first change).
fn heads_at(
    conn: &Connection,
    id: i64,
    doc: &Automerge,
    at: AsOf,
) -> Result<Option<Vec<ChangeHash>>> {
    let hashes: Vec<Vec<u8>> = conn
        .prepare_cached("SELECT hash FROM twin_changes WHERE twin_id = ?1 AND hlc <= ?2")
        .and_then(|mut st| {
            st.query_map(params![id, at.bound().0 as i64], |r| r.get(0))?
                .collect()
        })
        .map_err(StoreError::db("reading twin history"))?;
    Ok(heads_among(
        doc,
        hashes
            .iter()
            .filter_map(|h| <[u8; 32]>::try_from(&h[..]).ok().map(ChangeHash))
            .collect(),
    ))
}

/// The heads of the state made of the stored changes `hashes` (those stamped up to a point):
/// `None` when there are none (before the twin's first change). Changes still waiting for
/// dependencies are not part of the state yet.
pub(crate) fn heads_among(doc: &Automerge, hashes: Vec<ChangeHash>) -> Option<Vec<ChangeHash>> {
    if hashes.is_empty() {
        return None;
    }
    Some(
        hashes
            .into_iter()
            .filter(|h| doc.get_change_meta_by_hash(h).is_some())
            .collect(),
    )
}

pub(crate) fn value_at(
    key: &str,
    doc: &Automerge,
    heads: &[ChangeHash],
) -> Result<serde_json::Value> {
    let past = doc.fork_at(heads).map_err(|e| StoreError::Decode {
        what: "twin history",
        detail: format!("{key}: {e}"),
    })?;
    Ok(to_json(&past))
}

/// JSON pointers a change wrote: each operation's object resolved to its path in `doc`
/// (map keys appended; list operations reported as the list). Objects no longer reachable
/// are shown by their automerge id.
pub(crate) fn change_paths(doc: &Automerge, change: &automerge::Change) -> (Vec<String>, bool) {
    let mut out: Vec<String> = Vec::new();
    let mut truncated = false;
    for op in change.decode().operations {
        let obj = match doc.import_obj(&op.obj.to_string()) {
            Ok(o) => o,
            Err(_) => continue,
        };
        let base = match doc.parents(&obj) {
            Ok(p) if obj != automerge::ROOT => {
                let mut s = String::new();
                for (_, prop) in p.path() {
                    s.push('/');
                    s.push_str(&match prop {
                        automerge::Prop::Map(k) => escape(&k),
                        automerge::Prop::Seq(i) => i.to_string(),
                    });
                }
                s
            }
            Ok(_) => String::new(),
            Err(_) => format!("/({})", op.obj),
        };
        let path = match &op.key {
            automerge::legacy::Key::Map(k) => format!("{base}/{}", escape(k)),
            automerge::legacy::Key::Seq(_) => base,
        };
        let path = if path.is_empty() {
            "/".to_owned()
        } else {
            path
        };
        if out.contains(&path) {
            continue;
        }
        // A path under one already listed (a new object's contents) adds nothing.
        if out.iter().any(|p| path.starts_with(&format!("{p}/"))) {
            continue;
        }
        if out.len() == MAX_HISTORY_PATHS {
            truncated = true;
            break;
        }
        out.push(path);
    }
    (out, truncated)
}
