//! Document history retention: pruning old versions of documents by count (keep the newest N
//! versions of each key) and/or age, by default and per key pattern, in small writer steps
//! run after the readings part of a [`Store::prune`] pass (`retention.rs` owns the readings).
//!
//! **What is pruned.** A version goes when it exceeds every limit its key's rule sets (it is
//! not among the key's `keep_versions` newest, by `(HLC, actor)`, and it was written more
//! than `max_age_ms` before `now`, by its HLC) **and** it is not a head: a key's current
//! siblings, tombstones that are heads included, are never pruned. "Newest N" counts every
//! version of the key, pruned ones included, so the set a pass prunes depends only on the
//! versions held, the rule and `now`.
//!
//! **What remains.** Only the value is dropped: the row keeps its change, key, HLC and
//! context (the dots it superseded) and is marked `pruned`. That is what merges need — a
//! version arriving late from another actor is still recognised as superseded, so no old
//! sibling comes back — and what as-of needs to know which version was current at a point:
//! an as-of read whose winner is pruned answers [`StoreError::HistoryPruned`] naming the
//! horizon, never an older or newer value in its place. History lists pruned versions with
//! `pruned` set and no value.
//!
//! **Sync.** A pruned change is still a change: it is served as a `doc` or `doc_batch` body
//! whose pruned writes carry `pruned: true` and no value (`change.rs`), so version vectors
//! stay dense. A receiver stores such a version pruned and never as a head (`docwrite.rs`):
//! its sender pruned it because a version it holds supersedes it, and that version arrives
//! too. **The digest** subtracts a pruned version's `doc_hash` and adds its
//! `doc_pruned_hash` (dot, HLC, key, context), which is also what a receiver of the pruned
//! change adds; so replicas holding the same changes that prune with the same policy at the
//! same `now` have equal digests (sync/README.md, "Digest under retention").
//!
//! Callers pass `now` (unix ms), so tests drive retention with any clock.

use rusqlite::{OptionalExtension, params};

use crate::digest::{doc_hash, doc_pruned_hash};
use crate::retention::glob_match;
use crate::writer::{Job, Writer};
use crate::{ActorId, Dot, Hlc, PruneReport, Result, Store, StoreError};

/// How much history of a key is kept. A version is pruned only when it exceeds every limit
/// set (and is not a head); with no limit set everything is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DocRule {
    /// Keep the newest this many versions of each key (at least 1); `None`: no count limit.
    pub keep_versions: Option<u64>,
    /// Keep versions younger than this (ms, by their HLC); `None`: no age limit.
    pub max_age_ms: Option<u64>,
}

impl DocRule {
    /// True when this rule never prunes anything.
    pub fn keeps_everything(&self) -> bool {
        self.keep_versions.is_none() && self.max_age_ms.is_none()
    }

    /// Where the count limit falls among a key's versions, newest first by `(HLC, actor)`
    /// and pruned ones included: the offset of the `keep_versions`-th newest, the version
    /// [`prune_bound`](Self::prune_bound) takes; `None` without a count limit.
    pub fn newest_kept_offset(&self) -> Option<i64> {
        self.keep_versions
            .map(|n| n.saturating_sub(1).min(i64::MAX as u64) as i64)
    }

    /// The `(HLC, actor)` below which a key's versions exceed every limit of this rule, as
    /// of `now_ms`: the smaller of the `keep_versions`-th newest version (`nth_newest`, the
    /// version at [`newest_kept_offset`](Self::newest_kept_offset), `None` when the key
    /// has fewer versions) and the age cutoff. `None` when nothing of the key is past every
    /// limit. Versions strictly below the bound that are not heads are pruned; the one
    /// rule of SQLite and PostgreSQL stores.
    pub fn prune_bound(
        &self,
        nth_newest: Option<VersionOrder>,
        now_ms: i64,
    ) -> Option<VersionOrder> {
        if self.keeps_everything() {
            return None;
        }
        let mut bound = None;
        if self.keep_versions.is_some() {
            // At most N versions: all kept.
            bound = Some(nth_newest?);
        }
        if let Some(age) = self.max_age_ms {
            let cutoff = now_ms.saturating_sub(age.min(i64::MAX as u64) as i64);
            if cutoff <= 0 {
                return None;
            }
            // `(hlc, actor) < (cutoff, zero actor)` is `hlc < cutoff`.
            let by_age = (Hlc::new(cutoff as u64, 0).0 as i64, vec![0u8; 16]);
            bound = Some(match bound {
                Some(b) if b < by_age => b,
                _ => by_age,
            });
        }
        bound
    }
}

/// A document version's place in its key's order: `(HLC, actor bytes)`, compared as
/// SQLite compares the pair (integer, then bytes).
pub type VersionOrder = (i64, Vec<u8>);

/// What pruning one document version changes, whichever store holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrunedVersion {
    /// The digest element the version added when stored: subtracted.
    pub held: [u8; 32],
    /// The digest element of what remains of it (dot, HLC, key, context): added — what a
    /// receiver of the pruned change adds.
    pub remains: [u8; 32],
    /// The write's seal hash, appended to its change's pruned hashes
    /// ([`Seal::pruned`](crate::seal::Seal::pruned)), so the change still proves its body.
    pub seal_hash: [u8; 32],
}

/// Prunes one version (its value goes): the digest and seal changes of [`PrunedVersion`].
/// `context` is the version's (the dots it superseded).
pub fn pruned_version(
    actor: &ActorId,
    seq: u64,
    hlc: Hlc,
    key: &str,
    value: Option<&[u8]>,
    context: &[Dot],
) -> PrunedVersion {
    let encoded = crate::docwrite::encode_context(context);
    PrunedVersion {
        held: doc_hash(actor, seq, hlc, key, value, &encoded),
        remains: doc_pruned_hash(actor, seq, hlc, key, &encoded),
        seal_hash: crate::seal::write_hash(key, value, context),
    }
}

/// The rule of the keys matching `pattern`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRetention {
    /// A document key, or a glob with `*` (any run of characters) and `?` (one character).
    pub pattern: String,
    /// What is kept of matching keys.
    pub rule: DocRule,
}

/// What document retention keeps. The default keeps everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocRetention {
    /// The rule of keys no [`keys`](Self::keys) pattern matches.
    pub default: DocRule,
    /// Per-key-pattern rules, first match wins.
    pub keys: Vec<KeyRetention>,
}

impl DocRetention {
    /// The rule for `key`.
    pub fn rule(&self, key: &str) -> DocRule {
        self.keys
            .iter()
            .find(|r| glob_match(&r.pattern, key))
            .map_or(self.default, |r| r.rule)
    }

    /// True when no rule prunes anything.
    pub fn keeps_everything(&self) -> bool {
        self.default.keeps_everything() && self.keys.iter().all(|r| r.rule.keeps_everything())
    }
}

/// Where a document prune pass has got to: keys by id (ids below are done).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DocPruneCursor {
    /// Next key id to look at.
    pub key_id: i64,
    /// The pass is over.
    pub done: bool,
}

impl Store {
    /// The document part of a prune pass: small writer jobs of about `step_rows` versions
    /// (or keys looked at) each, until every key is done. Adds to `total`.
    pub(crate) async fn prune_docs(
        &self,
        docs: &std::sync::Arc<crate::RetentionPolicy>,
        now_ms: i64,
        step_rows: usize,
        total: &mut PruneReport,
    ) -> Result<()> {
        if docs.docs.keeps_everything() {
            return Ok(());
        }
        let mut cursor = DocPruneCursor::default();
        while !cursor.done {
            let (report, next) = self
                .submit(|reply| Job::PruneDocs {
                    policy: docs.clone(),
                    now_ms,
                    cursor,
                    budget: step_rows,
                    reply,
                })
                .await?;
            total.add(&report);
            cursor = next;
        }
        Ok(())
    }
}

/// A version to prune: change id, HLC, value, context bytes, seq, actor.
type Candidate = (i64, i64, Option<Vec<u8>>, Vec<u8>, i64, Vec<u8>);

impl Writer {
    /// One bounded step of a document prune pass: looks at keys from `cursor` on and prunes
    /// at most about `budget` versions (each key looked at counts as one).
    pub(crate) fn prune_docs_step(
        &mut self,
        docs: &DocRetention,
        now_ms: i64,
        cursor: DocPruneCursor,
        budget: usize,
    ) -> Result<(PruneReport, DocPruneCursor)> {
        let mut report = PruneReport {
            steps: 1,
            ..PruneReport::default()
        };
        let mut cursor = cursor;
        let mut left = budget.max(1) as i64;
        while left > 0 {
            let next: Option<(i64, String)> = self
                .conn
                .prepare_cached("SELECT id, key FROM doc_keys WHERE id >= ?1 ORDER BY id LIMIT 1")
                .and_then(|mut st| {
                    st.query_row([cursor.key_id], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()
                })
                .map_err(StoreError::db("listing document keys to prune"))?;
            let Some((key_id, key)) = next else {
                cursor.done = true;
                break;
            };
            cursor.key_id = key_id;
            left -= 1;
            let rule = docs.rule(&key);
            if let Some(bound) = self.prune_bound(key_id, rule, now_ms)? {
                let limit = left.max(1);
                let n = self.prune_versions(key_id, &key, bound, limit)?;
                report.doc_versions += n;
                left -= n as i64;
                if n as i64 >= limit {
                    break; // this key may have more: the next step looks at it again
                }
            }
            cursor.key_id = key_id + 1;
        }
        Ok((report, cursor))
    }

    /// The `(HLC, actor)` below which versions of the key exceed every limit of `rule`
    /// ([`DocRule::prune_bound`]); `None` when nothing of the key is past every limit.
    fn prune_bound(
        &mut self,
        key_id: i64,
        rule: DocRule,
        now_ms: i64,
    ) -> Result<Option<VersionOrder>> {
        if rule.keeps_everything() {
            return Ok(None);
        }
        let mut nth = None;
        if let Some(offset) = rule.newest_kept_offset() {
            nth = self
                .conn
                .prepare_cached(
                    "SELECT v.hlc, a.actor FROM doc_versions v JOIN actors a ON a.idx = v.actor_idx \
                     WHERE v.key_id = ?1 ORDER BY v.hlc DESC, a.actor DESC LIMIT 1 OFFSET ?2",
                )
                .and_then(|mut st| {
                    st.query_row(params![key_id, offset], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()
                })
                .map_err(StoreError::db("counting a document's versions"))?;
        }
        Ok(rule.prune_bound(nth, now_ms))
    }

    /// Prunes up to `limit` versions of the key below `bound` that are not pruned yet and
    /// not heads, oldest first; returns how many.
    fn prune_versions(
        &mut self,
        key_id: i64,
        key: &str,
        (bound_hlc, bound_actor): VersionOrder,
        limit: i64,
    ) -> Result<u64> {
        let found: Vec<Candidate> = self
            .conn
            .prepare_cached(
                "SELECT v.change_id, v.hlc, v.value, v.context, v.seq, a.actor \
                 FROM doc_versions v INDEXED BY doc_versions_unpruned \
                 JOIN actors a ON a.idx = v.actor_idx \
                 WHERE v.key_id = ?1 AND v.pruned = 0 AND v.hlc <= ?2 \
                 AND (v.hlc < ?2 OR a.actor < ?3) \
                 AND NOT EXISTS (SELECT 1 FROM doc_heads h \
                                 WHERE h.key_id = v.key_id AND h.hlc = v.hlc AND h.change_id = v.change_id) \
                 ORDER BY v.hlc LIMIT ?4",
            )
            .and_then(|mut st| {
                st.query_map(params![key_id, bound_hlc, bound_actor, limit], |r| {
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
            .map_err(StoreError::db("finding document versions to prune"))?;
        let n = found.len() as u64;
        for (change_id, hlc, value, context, seq, actor) in found {
            let actor = ActorId::from_slice(&actor).ok_or(StoreError::Decode {
                what: "stored actor id",
                detail: "not 16 bytes".into(),
            })?;
            let dots = crate::docwrite::decode_context(&context)?;
            let version = pruned_version(
                &actor,
                seq as u64,
                Hlc(hlc as u64),
                key,
                value.as_deref(),
                &dots,
            );
            self.digest.sub(&version.held);
            self.digest.add(&version.remains);
            let write = version.seal_hash;
            let mut pruned: Vec<u8> = self
                .conn
                .prepare_cached("SELECT pruned FROM changes WHERE id = ?1")
                .and_then(|mut st| {
                    st.query_row(params![change_id], |r| r.get::<_, Option<Vec<u8>>>(0))
                })
                .map_err(StoreError::db("reading a change's pruned hashes"))?
                .unwrap_or_default();
            pruned.extend_from_slice(&write);
            self.conn
                .prepare_cached("UPDATE changes SET pruned = ?1 WHERE id = ?2")
                .and_then(|mut st| st.execute(params![pruned, change_id]))
                .map_err(StoreError::db("recording a pruned version's hash"))?;
            self.conn
                .prepare_cached(
                    "UPDATE doc_versions SET value = NULL, pruned = 1 \
                     WHERE change_id = ?1 AND key_id = ?2",
                )
                .and_then(|mut st| st.execute(params![change_id, key_id]))
                .map_err(StoreError::db("pruning a document version"))?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_key_rule_wins_and_no_limit_keeps_everything() {
        let docs = DocRetention {
            default: DocRule {
                keep_versions: Some(10),
                max_age_ms: None,
            },
            keys: vec![
                KeyRetention {
                    pattern: "audit/*".into(),
                    rule: DocRule::default(),
                },
                KeyRetention {
                    pattern: "*".into(),
                    rule: DocRule {
                        keep_versions: Some(2),
                        max_age_ms: Some(1000),
                    },
                },
            ],
        };
        assert!(docs.rule("audit/x").keeps_everything());
        assert_eq!(docs.rule("other").keep_versions, Some(2));
        assert!(!docs.keeps_everything());
        assert!(DocRetention::default().keeps_everything());
    }
}
