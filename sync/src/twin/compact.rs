//! Twin history compaction: dropping the raw chunk of twin changes that the twin's snapshot
//! already holds, in small writer steps run by a [`Store::prune`] pass after document
//! retention (`[retention.twins]` in the agent).
//!
//! **Why it is lossless.** Every twin change used to be stored twice: its raw automerge
//! chunk in `twin_changes.bytes` and, once a snapshot covers it, inside `twins.snapshot`
//! (`Automerge::save()` holds the complete history). Compaction empties `bytes` (the marker
//! of schema 8) of changes the snapshot covers; the row keeps change id, HLC and automerge
//! hash, and the chunk is rebuilt from the snapshot by hash whenever it is read
//! (`rebuild.rs`) — for sync pages, `verify`, the digest, backups' as-of replay, history.
//! Nothing a reader or a peer sees changes: the rebuilt chunk is byte-identical, so the
//! digest (which hashes the chunk) and every seal's body hash stay as they were.
//!
//! **What is compacted.** A change whose raw chunk exceeds every limit of the
//! [`TwinCompaction`] rule — written (by its HLC) more than `after_ms` before `now`, and not
//! among its twin's `keep_raw` newest changes (by local id) — and which the current snapshot
//! covers (`change_id <= snapshot_upto`). Before emptying a row the step rebuilds the chunk
//! from the snapshot and compares it with the stored bytes; a change that does not come back
//! identical (a chunk automerge would encode differently, or one automerge refused to apply)
//! keeps its bytes and is counted as `twin_changes_kept`.
//!
//! Callers pass `now` (unix ms), so tests drive compaction with any clock.

use automerge::ChangeHash;
use rusqlite::{OptionalExtension, params};

use super::rebuild::{chunks_from_snapshot, stored_hash};
use crate::writer::{Job, Writer};
use crate::{Hlc, PruneReport, Result, Store, StoreError};

/// Most twin changes one compaction step looks at: rebuilding a change from a loaded
/// snapshot and comparing it takes tens of microseconds, so a step stays a few milliseconds
/// of writer time whatever `step_rows` says (docs/PERFORMANCE.md, "Device twins").
pub(crate) const MAX_STEP_CHANGES: usize = 256;

/// When the raw chunk of a twin change is dropped (it stays readable from the twin's
/// snapshot; see the module docs). The default never compacts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TwinCompaction {
    /// Compact changes written more than this long before `now` (ms, by their HLC);
    /// `None`: never compact.
    pub after_ms: Option<u64>,
    /// Keep the newest this many changes of each twin raw whatever their age (0: no such
    /// limit).
    pub keep_raw: u64,
}

impl TwinCompaction {
    /// True when this rule never compacts anything.
    pub fn never(&self) -> bool {
        self.after_ms.is_none()
    }
}

/// Where a compaction pass has got to: twins by id, and within the current twin the
/// changes looked at so far (local ids).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TwinCompactCursor {
    /// Next twin id to look at (ids below are done).
    pub twin_id: i64,
    /// Within `twin_id`: changes with local ids up to this were looked at.
    pub after_change: i64,
    /// The pass is over.
    pub done: bool,
}

impl Store {
    /// The twin part of a prune pass: small writer jobs of at most `step_rows` (and
    /// [`MAX_STEP_CHANGES`]) twin changes each, until every twin is done. Adds to `total`.
    pub(crate) async fn compact_twins(
        &self,
        rule: TwinCompaction,
        now_ms: i64,
        step_rows: usize,
        total: &mut PruneReport,
    ) -> Result<()> {
        if rule.never() {
            return Ok(());
        }
        let budget = step_rows.clamp(1, MAX_STEP_CHANGES);
        let mut cursor = TwinCompactCursor::default();
        while !cursor.done {
            let (report, next) = self
                .submit(|reply| Job::CompactTwins {
                    rule,
                    now_ms,
                    cursor,
                    budget,
                    reply,
                })
                .await?;
            total.add(&report);
            cursor = next;
        }
        Ok(())
    }
}

/// A change that may be compacted: local id, automerge hash, stored chunk.
type Candidate = (i64, Vec<u8>, Vec<u8>);

impl Writer {
    /// One bounded step of a compaction pass: looks at twins from `cursor` on and at most
    /// about `budget` of their changes (each twin looked at counts as one).
    pub(crate) fn compact_twins_step(
        &mut self,
        rule: TwinCompaction,
        now_ms: i64,
        cursor: TwinCompactCursor,
        budget: usize,
    ) -> Result<(PruneReport, TwinCompactCursor)> {
        let mut report = PruneReport {
            steps: 1,
            ..PruneReport::default()
        };
        let mut cursor = cursor;
        let Some(age) = rule.after_ms else {
            cursor.done = true;
            return Ok((report, cursor));
        };
        let cutoff = now_ms.saturating_sub(age.min(i64::MAX as u64) as i64);
        if cutoff <= 0 {
            cursor.done = true;
            return Ok((report, cursor));
        }
        // `hlc < cutoff` as HLCs: written before the cutoff's millisecond (a cutoff past
        // every representable HLC takes them all).
        let below_hlc = i64::try_from(Hlc::new(cutoff as u64, 0).0)
            .ok()
            .filter(|_| (cutoff as u64) < (i64::MAX as u64 >> 16))
            .unwrap_or(i64::MAX);
        let mut left = budget.max(1) as i64;
        while left > 0 {
            let next: Option<(i64, i64)> = self
                .conn
                .prepare_cached(
                    "SELECT id, snapshot_upto FROM twins WHERE id >= ?1 ORDER BY id LIMIT 1",
                )
                .and_then(|mut st| {
                    st.query_row([cursor.twin_id], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()
                })
                .map_err(StoreError::db("listing twins to compact"))?;
            let Some((twin_id, snapshot_upto)) = next else {
                cursor.done = true;
                break;
            };
            if twin_id != cursor.twin_id {
                cursor = TwinCompactCursor {
                    twin_id,
                    after_change: 0,
                    done: false,
                };
            }
            left -= 1;
            let upto = snapshot_upto.min(self.keep_raw_bound(twin_id, rule.keep_raw)?);
            let limit = left.max(1);
            let found =
                self.compaction_candidates(twin_id, cursor.after_change, upto, below_hlc, limit)?;
            let n = found.len() as i64;
            if let Some(last) = found.last() {
                cursor.after_change = last.0;
            }
            self.compact_changes(twin_id, found, &mut report)?;
            left -= n;
            if n >= limit {
                break; // this twin may have more: the next step goes on from the cursor
            }
            cursor = TwinCompactCursor {
                twin_id: twin_id + 1,
                after_change: 0,
                done: false,
            };
        }
        Ok((report, cursor))
    }

    /// The highest local id of twin `twin_id` that `keep_raw` lets go (`i64::MAX` without
    /// that limit): below its `keep_raw` newest changes.
    fn keep_raw_bound(&mut self, twin_id: i64, keep_raw: u64) -> Result<i64> {
        if keep_raw == 0 {
            return Ok(i64::MAX);
        }
        let nth: Option<i64> = self
            .conn
            .prepare_cached(
                "SELECT change_id FROM twin_changes WHERE twin_id = ?1 \
                 ORDER BY change_id DESC LIMIT 1 OFFSET ?2",
            )
            .and_then(|mut st| {
                st.query_row(
                    params![twin_id, (keep_raw - 1).min(i64::MAX as u64) as i64],
                    |r| r.get(0),
                )
                .optional()
            })
            .map_err(StoreError::db("counting a twin's changes"))?;
        // Fewer than `keep_raw` changes: all of them stay raw.
        Ok(nth.map_or(0, |id| id - 1))
    }

    /// Changes of the twin still held raw, after local id `after` and up to `upto`, written
    /// before `below_hlc`, oldest first, at most `limit`.
    fn compaction_candidates(
        &mut self,
        twin_id: i64,
        after: i64,
        upto: i64,
        below_hlc: i64,
        limit: i64,
    ) -> Result<Vec<Candidate>> {
        if upto <= after {
            return Ok(Vec::new());
        }
        self.conn
            .prepare_cached(
                "SELECT change_id, hash, bytes FROM twin_changes INDEXED BY twin_changes_raw \
                 WHERE twin_id = ?1 AND length(bytes) > 0 AND change_id > ?2 AND change_id <= ?3 \
                 AND hlc < ?4 ORDER BY change_id LIMIT ?5",
            )
            .and_then(|mut st| {
                st.query_map(params![twin_id, after, upto, below_hlc, limit], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect()
            })
            .map_err(StoreError::db("finding twin changes to compact"))
    }

    /// Empties the stored chunk of each candidate the twin's snapshot gives back unchanged.
    fn compact_changes(
        &mut self,
        twin_id: i64,
        found: Vec<Candidate>,
        report: &mut PruneReport,
    ) -> Result<()> {
        if found.is_empty() {
            return Ok(());
        }
        let hashes = found
            .iter()
            .map(|c| stored_hash(&c.1))
            .collect::<Result<Vec<ChangeHash>>>()?;
        let rebuilt = chunks_from_snapshot(&self.conn, twin_id, &hashes)?;
        for ((change_id, _, bytes), chunk) in found.into_iter().zip(rebuilt) {
            if chunk.as_deref() != Some(&bytes[..]) {
                report.twin_changes_kept += 1;
                tracing::debug!(
                    change_id,
                    twin_id,
                    "a twin change does not come back unchanged from its snapshot; its raw bytes are kept"
                );
                continue;
            }
            self.conn
                .prepare_cached("UPDATE twin_changes SET bytes = X'' WHERE change_id = ?1")
                .and_then(|mut st| st.execute([change_id]))
                .map_err(StoreError::db("compacting a twin change"))?;
            report.twin_changes_compacted += 1;
            report.twin_bytes_compacted += bytes.len() as u64;
        }
        Ok(())
    }
}
