//! Document reads on the read pool: get (winner + sibling count), siblings, as-of, history,
//! list by prefix and diff. As-of reads rebuild the heads from the versions stamped at or
//! before the point: a version is a head unless a version in that set supersedes it (a
//! superseding version always has a higher HLC, so the set is causally closed).
//!
//! Each public read is one closure on a read connection (`readers.rs`); `list` takes a
//! bounded number of keys per closure, and reads the current state of all of them with one
//! statement over their heads.

use std::collections::{HashMap, HashSet};

use rusqlite::{Connection, OptionalExtension, params};

use crate::docwrite::decode_context;
use crate::readers::in_snapshot;
use crate::{
    ActorId, AsOf, DocChange, DocDiff, DocState, DocVersion, Dot, HistoryCursor, Hlc, Result,
    Store, StoreError,
};

/// Most versions one history page returns.
pub const MAX_HISTORY_PAGE: usize = 1000;
/// Keys one read of `list` looks at before handing its connection back.
const LIST_KEYS_PER_READ: usize = 256;

fn decode_value(key: &str, bytes: &[u8]) -> Result<serde_json::Value> {
    ciborium::from_reader(bytes).map_err(|e| StoreError::Decode {
        what: "stored document value",
        detail: format!("{key}: {e}"),
    })
}

/// A document version row as both backends store it: (actor id bytes, seq, HLC, value as
/// CBOR or `None` for a tombstone or a pruned version, context as CBOR, pruned).
pub type StoredVersion = (Vec<u8>, i64, i64, Option<Vec<u8>>, Vec<u8>, bool);

/// Decodes a stored version row of `key`; [`StoreError::Decode`] on a bad actor id, value
/// or context.
pub fn decode_version(
    key: &str,
    (actor, seq, hlc, value, ctx, pruned): StoredVersion,
) -> Result<DocVersion> {
    let actor = stored_actor(&actor)?;
    let value = match value {
        Some(b) => Some(decode_value(key, &b)?),
        None => None,
    };
    Ok(DocVersion {
        actor,
        seq: seq as u64,
        hlc: Hlc(hlc as u64),
        value,
        supersedes: decode_context(&ctx)?,
        key: key.to_owned(),
        pruned,
    })
}

/// Runs a version query (selecting `a.actor, c.seq, v.hlc, v.value, v.context, v.pruned`) and decodes
/// its rows as versions of `key`.
fn versions(
    conn: &Connection,
    key: &str,
    sql: &'static str,
    params: impl rusqlite::Params,
    what: &'static str,
) -> Result<Vec<DocVersion>> {
    let raw: Vec<StoredVersion> = conn
        .prepare_cached(sql)
        .and_then(|mut st| {
            st.query_map(params, |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })?
            .collect()
        })
        .map_err(StoreError::db(what))?;
    raw.into_iter().map(|r| decode_version(key, r)).collect()
}

/// The state of a key from its heads (any order): the winner — highest HLC, then highest
/// actor — and the number of siblings; `None` without heads.
pub fn doc_state(mut heads: Vec<DocVersion>) -> Option<DocState> {
    heads.sort_by_key(|v| std::cmp::Reverse((v.hlc, v.actor)));
    let siblings = heads.len();
    heads
        .into_iter()
        .next()
        .map(|winner| DocState { winner, siblings })
}

/// Heads among `versions` (any order): those no other version in the set supersedes. Given
/// every version stamped at or before a point, the heads at that point (a superseding
/// version always has a higher HLC, so the set is causally closed).
pub fn doc_heads(versions: Vec<DocVersion>) -> Vec<DocVersion> {
    let superseded: HashSet<Dot> = versions
        .iter()
        .flat_map(|v| v.supersedes.iter().copied())
        .collect();
    versions
        .into_iter()
        .filter(|v| {
            !superseded.contains(&Dot {
                actor: v.actor,
                seq: v.seq,
            })
        })
        .collect()
}

fn key_id(conn: &Connection, key: &str) -> Result<Option<i64>> {
    conn.prepare_cached("SELECT id FROM doc_keys WHERE key = ?1")
        .and_then(|mut st| st.query_row([key], |r| r.get(0)).optional())
        .map_err(StoreError::db("looking up a document key"))
}

/// The head versions of one key. `CROSS JOIN` fixes the loop order (key, then its heads,
/// then each head's version by its whole primary key): left to choose, SQLite 3.51 walks
/// every version of the key and looks each up in the heads — 36 µs instead of 8 for a key
/// with 100 versions (docs/PERFORMANCE.md; `query_plans.rs` holds the order).
pub(crate) const HEADS_OF_KEY: &str = "SELECT a.actor, v.seq, v.hlc, v.value, v.context, v.pruned FROM doc_keys k \
     CROSS JOIN doc_heads h ON h.key_id = k.id \
     CROSS JOIN doc_versions v ON v.key_id = h.key_id AND v.hlc = h.hlc AND v.change_id = h.change_id \
     JOIN actors a ON a.idx = v.actor_idx WHERE k.key = ?1";

/// Current siblings of `key`, newest first: one statement from the key to its heads' rows.
fn siblings_of(conn: &Connection, key: &str) -> Result<Vec<DocVersion>> {
    let mut v = versions(conn, key, HEADS_OF_KEY, [key], "reading document heads")?;
    v.sort_by_key(|v| std::cmp::Reverse((v.hlc, v.actor)));
    Ok(v)
}

/// The actor id stored under `idx`.
fn actor_of(conn: &Connection, idx: i64) -> Result<ActorId> {
    let bytes: Vec<u8> = conn
        .prepare_cached("SELECT actor FROM actors WHERE idx = ?1")
        .and_then(|mut st| st.query_row([idx], |r| r.get(0)))
        .map_err(StoreError::db("reading an actor id"))?;
    stored_actor(&bytes)
}

/// An actor id as stored; [`StoreError::Decode`] when it is not 16 bytes.
fn stored_actor(bytes: &[u8]) -> Result<ActorId> {
    ActorId::from_slice(bytes).ok_or(StoreError::Decode {
        what: "stored actor id",
        detail: "not 16 bytes".into(),
    })
}

/// The state of the key with id `id` at `at`; `None` before its first version;
/// [`StoreError::HistoryPruned`] when the winner at `at` is a version retention pruned (its
/// context is kept, so which versions were heads then is still exact — only the value is
/// gone).
///
/// One range scan over the key's versions up to `at` (adjacent rows: the table is clustered
/// by key and HLC) reads their dots and contexts but no values; only the winner's value is
/// read and decoded, by its primary key.
fn as_of(conn: &Connection, key: &str, id: i64, at: AsOf) -> Result<Option<DocState>> {
    // No join with `actors` per version: a key's versions come from a handful of actors,
    // looked up once each below.
    let raw: Vec<DotRow> = conn
        .prepare_cached(VERSIONS_UP_TO)
        .and_then(|mut st| {
            st.query_map(params![id, at.bound().0 as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect()
        })
        .map_err(StoreError::db("reading document history"))?;
    let mut superseded = HashSet::new();
    let mut rows = Vec::with_capacity(raw.len());
    let mut actors: HashMap<i64, ActorId> = HashMap::new();
    for (idx, seq, hlc, change_id, context) in raw {
        let actor = match actors.get(&idx) {
            Some(a) => *a,
            None => {
                let a = actor_of(conn, idx)?;
                actors.insert(idx, a);
                a
            }
        };
        superseded.extend(decode_context(&context)?);
        let dot = Dot {
            actor,
            seq: seq as u64,
        };
        rows.push((dot, hlc, change_id));
    }
    rows.retain(|(dot, _, _)| !superseded.contains(dot));
    // Winner: highest HLC, then highest actor (as `doc_state`).
    let Some(&(_, hlc, change_id)) = rows.iter().max_by_key(|(dot, hlc, _)| (*hlc, dot.actor))
    else {
        return Ok(None);
    };
    let winner = versions(
        conn,
        key,
        "SELECT a.actor, v.seq, v.hlc, v.value, v.context, v.pruned FROM doc_versions v \
         JOIN actors a ON a.idx = v.actor_idx \
         WHERE v.key_id = ?1 AND v.hlc = ?2 AND v.change_id = ?3",
        params![id, hlc, change_id],
        "reading document history",
    )?
    .pop()
    .ok_or(StoreError::Decode {
        what: "document history",
        detail: format!("{key}: a version vanished during a read"),
    })?;
    if winner.pruned {
        return Err(StoreError::HistoryPruned {
            key: key.to_owned(),
            at: at.to_string(),
            horizon: history_horizon(conn, id)?,
        });
    }
    Ok(Some(DocState {
        winner,
        siblings: rows.len(),
    }))
}

/// A version's actor index, seq, HLC, change id and context (no value), as `as_of` scans
/// them.
type DotRow = (i64, i64, i64, i64, Vec<u8>);

/// A key's versions up to a point (dots and contexts, no values): `as_of`'s scan, one range
/// of the primary key (`query_plans.rs`).
pub(crate) const VERSIONS_UP_TO: &str = "SELECT v.actor_idx, v.seq, v.hlc, v.change_id, v.context \
     FROM doc_versions v WHERE v.key_id = ?1 AND v.hlc <= ?2";

/// The oldest point as-of reads of the key with id `id` answer: the HLC of the first version
/// kept after its newest pruned one (a head is never pruned, so there is one).
fn history_horizon(conn: &Connection, id: i64) -> Result<Hlc> {
    conn.prepare_cached(
        "SELECT MIN(hlc) FROM doc_versions WHERE key_id = ?1 AND pruned = 0 AND hlc > \
         (SELECT MAX(hlc) FROM doc_versions WHERE key_id = ?1 AND pruned = 1)",
    )
    .and_then(|mut st| st.query_row([id], |r| r.get::<_, Option<i64>>(0)))
    .map(|h| Hlc(h.unwrap_or(i64::MAX) as u64))
    .map_err(StoreError::db("reading a document's history horizon"))
}

/// One read of `list`: live documents among the next keys after `cursor`. Returns the
/// states, the last key looked at and whether the prefix is exhausted.
///
/// The current state of a whole page of keys is one statement over their heads (a deleted
/// key costs its head rows, never a read of its own); only winners' values are decoded.
/// As-of listings rebuild each key's heads from its history.
fn list_step(
    conn: &Connection,
    prefix: &str,
    at: Option<AsOf>,
    want: usize,
    cursor: &str,
) -> Result<(Vec<DocState>, Option<String>, bool)> {
    let keys: Vec<(i64, String)> = conn
        .prepare_cached(
            "SELECT id, key FROM doc_keys WHERE key > ?1 AND key >= ?2 ORDER BY key LIMIT ?3",
        )
        .and_then(|mut st| {
            st.query_map(params![cursor, prefix, LIST_KEYS_PER_READ as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect()
        })
        .map_err(StoreError::db("listing document keys"))?;
    let exhausted = keys.len() < LIST_KEYS_PER_READ;
    let in_prefix = keys
        .iter()
        .take_while(|(_, k)| k.starts_with(prefix))
        .count();
    let ended = exhausted || in_prefix < keys.len();
    let keys = &keys[..in_prefix];
    let mut heads = match at {
        None => page_heads(conn, cursor, prefix)?,
        Some(_) => HashMap::new(),
    };
    let mut out = Vec::new();
    let mut last = None;
    for (id, key) in keys {
        let (id, key) = (*id, key.clone());
        let state = match at {
            None => match heads.remove(&id) {
                Some(h) => live_state(&key, h)?,
                None => None,
            },
            Some(at) => as_of(conn, &key, id, at)?.filter(|s| !s.winner.is_tombstone()),
        };
        if let Some(s) = state {
            out.push(s);
            if out.len() >= want {
                return Ok((out, Some(key), true));
            }
        }
        last = Some(key);
    }
    Ok((out, last, ended))
}

/// Head rows of one key: (actor, seq, hlc, value, context, pruned).
type HeadRows = Vec<StoredVersion>;

/// The heads of a page of keys, heads first as in [`HEADS_OF_KEY`].
pub(crate) const HEADS_OF_KEYS_PAGE: &str = "SELECT h.key_id, a.actor, v.seq, v.hlc, v.value, v.context, v.pruned FROM doc_heads h \
     CROSS JOIN doc_versions v ON v.key_id = h.key_id AND v.hlc = h.hlc AND v.change_id = h.change_id \
     JOIN actors a ON a.idx = v.actor_idx \
     WHERE h.key_id IN (SELECT id FROM doc_keys WHERE key > ?1 AND key >= ?2 ORDER BY key LIMIT ?3)";

/// The heads of the next page of keys (the same key window as `list_step`'s), by key id.
fn page_heads(conn: &Connection, cursor: &str, prefix: &str) -> Result<HashMap<i64, HeadRows>> {
    let mut out: HashMap<i64, HeadRows> = HashMap::new();
    conn.prepare_cached(HEADS_OF_KEYS_PAGE)
        .and_then(|mut st| {
            let mut rows = st.query(params![cursor, prefix, LIST_KEYS_PER_READ as i64])?;
            while let Some(r) = rows.next()? {
                out.entry(r.get(0)?).or_default().push((
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ));
            }
            Ok(())
        })
        .map_err(StoreError::db("reading document heads"))?;
    Ok(out)
}

/// The live state of a key from its current head rows: `None` when the winner is a
/// tombstone (or there are no heads). Only the winner's value is decoded.
pub fn live_state(key: &str, mut heads: Vec<StoredVersion>) -> Result<Option<DocState>> {
    let siblings = heads.len();
    // Winner: highest HLC, then highest actor (as `doc_state`).
    heads.sort_by(|a, b| (b.2, &b.0).cmp(&(a.2, &a.0)));
    let Some(winner) = heads.into_iter().next() else {
        return Ok(None);
    };
    if winner.3.is_none() {
        return Ok(None);
    }
    Ok(Some(DocState {
        winner: decode_version(key, winner)?,
        siblings,
    }))
}

impl Store {
    /// Current siblings of `key`, newest first (empty when the key was never written).
    pub async fn siblings(&self, key: &str) -> Result<Vec<DocVersion>> {
        let key = key.to_owned();
        self.inner
            .readers
            .read(move |conn| siblings_of(conn, &key))
            .await
    }

    /// The current state of `key`: the winning version (possibly a tombstone) and the number
    /// of siblings. `None` when the key was never written.
    pub async fn get(&self, key: &str) -> Result<Option<DocState>> {
        Ok(doc_state(self.siblings(key).await?))
    }

    /// The state of `key` as it was at `at`. `None` when the key was never written;
    /// [`StoreError::BeforeHistory`] when `at` is before its first version.
    pub async fn get_as_of(&self, key: &str, at: AsOf) -> Result<Option<DocState>> {
        let key = key.to_owned();
        self.inner
            .readers
            .read(move |conn| {
                in_snapshot(conn, |conn| {
                    let Some(id) = key_id(conn, &key)? else {
                        return Ok(None);
                    };
                    match as_of(conn, &key, id, at)? {
                        Some(s) => Ok(Some(s)),
                        None => Err(StoreError::BeforeHistory {
                            at: at.to_string(),
                            key: key.clone(),
                        }),
                    }
                })
            })
            .await
    }

    /// Versions of `key`, newest first (by HLC, then actor), at most `limit`, after `before`
    /// when given (the cursor of the previous page's last version, so versions of two actors
    /// sharing one HLC are neither skipped nor repeated at a page boundary).
    pub async fn history(
        &self,
        key: &str,
        limit: usize,
        before: Option<HistoryCursor>,
    ) -> Result<Vec<DocVersion>> {
        let key = key.to_owned();
        let (below, actor_below) = HistoryCursor::sql_bounds(before);
        self.inner
            .readers
            .read(move |conn| {
                in_snapshot(conn, |conn| {
                let Some(id) = key_id(conn, &key)? else {
                    return Ok(Vec::new());
                };
                versions(
                    conn,
                    &key,
                    "SELECT a.actor, v.seq, v.hlc, v.value, v.context, v.pruned FROM doc_versions v \
                     JOIN actors a ON a.idx = v.actor_idx \
                     WHERE v.key_id = ?1 AND v.hlc <= ?2 AND (v.hlc < ?2 OR a.actor < ?3) \
                     ORDER BY v.hlc DESC, a.actor DESC LIMIT ?4",
                    params![
                        id,
                        below,
                        actor_below,
                        limit.clamp(1, MAX_HISTORY_PAGE) as i64
                    ],
                    "reading document history",
                )
                })
            })
            .await
    }

    /// Live (not deleted) documents whose key starts with `prefix`, in key order, after key
    /// `after`, at most `limit`; as they were at `at` when given. Reads [`LIST_KEYS_PER_READ`]
    /// keys per connection hold, whatever the number of deleted keys to skip.
    pub async fn list(
        &self,
        prefix: &str,
        at: Option<AsOf>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Vec<DocState>> {
        let limit = limit.clamp(1, MAX_HISTORY_PAGE);
        let mut out = Vec::new();
        let mut cursor = after.map(str::to_owned).unwrap_or_default();
        loop {
            let (prefix, from, want) = (prefix.to_owned(), cursor.clone(), limit - out.len());
            let (found, last, done) = self
                .inner
                .readers
                .read(move |conn| in_snapshot(conn, |c| list_step(c, &prefix, at, want, &from)))
                .await?;
            out.extend(found);
            match last {
                Some(last) if !done && out.len() < limit => cursor = last,
                _ => return Ok(out),
            }
        }
    }

    /// How `key` changed between two points: its value at each (absent or deleted → `None`)
    /// and the JSON-level changes.
    pub async fn diff(&self, key: &str, from: AsOf, to: AsOf) -> Result<DocDiff> {
        let owned = key.to_owned();
        let (a, b) = self
            .inner
            .readers
            .read(move |conn| {
                in_snapshot(conn, |conn| {
                    let Some(id) = key_id(conn, &owned)? else {
                        return Err(StoreError::UnknownKey(owned.clone()));
                    };
                    let value = |at| -> Result<Option<serde_json::Value>> {
                        Ok(as_of(conn, &owned, id, at)?.and_then(|s| s.winner.value))
                    };
                    Ok((value(from)?, value(to)?))
                })
            })
            .await?;
        Ok(DocDiff::between(key, a, b))
    }
}

/// JSON-level diff: recurses into objects, compares other values whole.
pub(crate) fn json_diff(
    path: &str,
    a: Option<&serde_json::Value>,
    b: Option<&serde_json::Value>,
    out: &mut Vec<DocChange>,
) {
    use serde_json::Value;
    match (a, b) {
        (None, None) => {}
        (None, Some(b)) => out.push(DocChange {
            path: path.into(),
            op: "added".into(),
            from: None,
            to: Some(b.clone()),
        }),
        (Some(a), None) => out.push(DocChange {
            path: path.into(),
            op: "removed".into(),
            from: Some(a.clone()),
            to: None,
        }),
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = format!("{path}/{}", k.replace('~', "~0").replace('/', "~1"));
                json_diff(&p, x.get(k), y.get(k), out);
            }
        }
        (Some(a), Some(b)) if a != b => out.push(DocChange {
            path: path.into(),
            op: "changed".into(),
            from: Some(a.clone()),
            to: Some(b.clone()),
        }),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diff_recurses_into_objects() {
        let mut out = Vec::new();
        json_diff(
            "",
            Some(&json!({"a": 1, "b": {"c": 2, "d/e": 3}})),
            Some(&json!({"a": 1, "b": {"c": 5}, "x": true})),
            &mut out,
        );
        let paths: Vec<(&str, &str)> = out
            .iter()
            .map(|c| (c.path.as_str(), c.op.as_str()))
            .collect();
        assert_eq!(
            paths,
            vec![("/b/c", "changed"), ("/b/d~1e", "removed"), ("/x", "added")]
        );
    }
}
