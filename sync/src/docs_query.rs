//! Document reads on the read pool: get (winner + sibling count), siblings, as-of, history,
//! list by prefix and diff. As-of reads rebuild the heads from the versions stamped at or
//! before the point: a version is a head unless a version in that set supersedes it (a
//! superseding version always has a higher HLC, so the set is causally closed).

use std::collections::HashSet;

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::docwrite::decode_context;
use crate::{
    ActorId, AsOf, DocChange, DocDiff, DocState, DocVersion, Dot, Hlc, Result, Store, StoreError,
};

const VERSION_COLUMNS: &str = "SELECT v.change_id, a.actor, c.seq, v.hlc, v.value, v.context, k.key \
     FROM doc_versions v JOIN changes c ON c.id = v.change_id JOIN actors a ON a.idx = c.actor_idx \
     JOIN doc_keys k ON k.id = v.key_id ";

/// Most versions one history page returns.
pub const MAX_HISTORY_PAGE: usize = 1000;

fn decode_value(key: &str, bytes: &[u8]) -> Result<serde_json::Value> {
    ciborium::from_reader(bytes).map_err(|e| StoreError::Decode {
        what: "stored document value",
        detail: format!("{key}: {e}"),
    })
}

fn version_from_row(r: &SqliteRow) -> Result<DocVersion> {
    let key: String = r.get(6);
    let actor = ActorId::from_slice(&r.get::<Vec<u8>, _>(1)).ok_or(StoreError::Decode {
        what: "stored actor id",
        detail: "not 16 bytes".into(),
    })?;
    let value = match r.get::<Option<Vec<u8>>, _>(4) {
        Some(b) => Some(decode_value(&key, &b)?),
        None => None,
    };
    Ok(DocVersion {
        actor,
        seq: r.get::<i64, _>(2) as u64,
        hlc: Hlc(r.get::<i64, _>(3) as u64),
        value,
        supersedes: decode_context(&r.get::<Vec<u8>, _>(5))?,
        key,
    })
}

/// Winner among siblings: highest HLC, then highest actor.
fn state_of(mut heads: Vec<DocVersion>) -> Option<DocState> {
    heads.sort_by_key(|v| std::cmp::Reverse((v.hlc, v.actor)));
    let siblings = heads.len();
    heads
        .into_iter()
        .next()
        .map(|winner| DocState { winner, siblings })
}

/// Heads among `versions` (any order): those no other version in the set supersedes.
fn heads_of(versions: Vec<DocVersion>) -> Vec<DocVersion> {
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

impl Store {
    async fn key_id(&self, key: &str) -> Result<Option<i64>> {
        sqlx::query_scalar("SELECT id FROM doc_keys WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(StoreError::db("looking up a document key"))
    }

    /// Current siblings of `key`, newest first (empty when the key was never written).
    pub async fn siblings(&self, key: &str) -> Result<Vec<DocVersion>> {
        let Some(id) = self.key_id(key).await? else {
            return Ok(Vec::new());
        };
        let rows = sqlx::query(const_format(
            VERSION_COLUMNS,
            "WHERE v.change_id IN (SELECT change_id FROM doc_heads WHERE key_id = ?)",
        ))
        .bind(id)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(StoreError::db("reading document heads"))?;
        let mut v = rows
            .iter()
            .map(version_from_row)
            .collect::<Result<Vec<_>>>()?;
        v.sort_by_key(|v| std::cmp::Reverse((v.hlc, v.actor)));
        Ok(v)
    }

    /// The current state of `key`: the winning version (possibly a tombstone) and the number
    /// of siblings. `None` when the key was never written.
    pub async fn get(&self, key: &str) -> Result<Option<DocState>> {
        Ok(state_of(self.siblings(key).await?))
    }

    /// The state of `key` as it was at `at`. `None` when the key was never written;
    /// [`StoreError::BeforeHistory`] when `at` is before its first version.
    pub async fn get_as_of(&self, key: &str, at: AsOf) -> Result<Option<DocState>> {
        let Some(id) = self.key_id(key).await? else {
            return Ok(None);
        };
        let rows = sqlx::query(const_format(
            VERSION_COLUMNS,
            "WHERE v.key_id = ? AND v.hlc <= ?",
        ))
        .bind(id)
        .bind(at.bound().0 as i64)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(StoreError::db("reading document history"))?;
        let versions = rows
            .iter()
            .map(version_from_row)
            .collect::<Result<Vec<_>>>()?;
        if versions.is_empty() {
            return Err(StoreError::BeforeHistory {
                key: key.to_owned(),
                at: at.to_string(),
            });
        }
        Ok(state_of(heads_of(versions)))
    }

    /// Versions of `key`, newest first, at most `limit`, older than `before` when given
    /// (pass the last HLC of the previous page).
    pub async fn history(
        &self,
        key: &str,
        limit: usize,
        before: Option<Hlc>,
    ) -> Result<Vec<DocVersion>> {
        let Some(id) = self.key_id(key).await? else {
            return Ok(Vec::new());
        };
        let rows = sqlx::query(const_format(
            VERSION_COLUMNS,
            "WHERE v.key_id = ? AND v.hlc < ? ORDER BY v.hlc DESC, a.actor DESC LIMIT ?",
        ))
        .bind(id)
        .bind(before.map_or(i64::MAX, |h| h.0 as i64))
        .bind(limit.clamp(1, MAX_HISTORY_PAGE) as i64)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(StoreError::db("reading document history"))?;
        rows.iter().map(version_from_row).collect()
    }

    /// Live (not deleted) documents whose key starts with `prefix`, in key order, after key
    /// `after`, at most `limit`; as they were at `at` when given.
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
            let keys: Vec<String> = sqlx::query_scalar(
                "SELECT key FROM doc_keys WHERE key > ? AND key >= ? ORDER BY key LIMIT 256",
            )
            .bind(&cursor)
            .bind(prefix)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(StoreError::db("listing document keys"))?;
            if keys.is_empty() {
                return Ok(out);
            }
            for key in keys {
                if !key.starts_with(prefix) {
                    return Ok(out);
                }
                let state = match at {
                    None => self.get(&key).await?,
                    Some(at) => match self.get_as_of(&key, at).await {
                        Err(StoreError::BeforeHistory { .. }) => None,
                        other => other?,
                    },
                };
                if let Some(s) = state.filter(|s| !s.winner.is_tombstone()) {
                    out.push(s);
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
                cursor = key;
            }
        }
    }

    /// How `key` changed between two points: its value at each (absent or deleted → `None`)
    /// and the JSON-level changes.
    pub async fn diff(&self, key: &str, from: AsOf, to: AsOf) -> Result<DocDiff> {
        let at = |a: AsOf| async move {
            match self.get_as_of(key, a).await {
                Ok(s) => Ok(s.and_then(|s| s.winner.value)),
                Err(StoreError::BeforeHistory { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        };
        if self.key_id(key).await?.is_none() {
            return Err(StoreError::UnknownKey(key.to_owned()));
        }
        let (a, b) = (at(from).await?, at(to).await?);
        Ok(DocDiff::between(key, a, b))
    }
}

fn const_format(head: &'static str, tail: &'static str) -> sqlx::AssertSqlSafe<String> {
    // Both parts are compile-time constants; only bound parameters carry data.
    sqlx::AssertSqlSafe(format!("{head}{tail}"))
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
