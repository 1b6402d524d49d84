//! Log runs: the change log's floor made O(runs), not O(changes).
//!
//! Retention prunes readings, never change rows: a signed readings change whose readings all
//! went (and whose rollups and timing record went too) stays as a row of ~200 B — actor, seq,
//! HLC, chain link, body hash and signature — so version vectors stay dense and a peer that
//! asks for it gets it. An agent that keeps recording would grow that floor forever.
//!
//! So the retention pass compacts it: a run of such changes of one actor, seqs `a..=b`
//! (consecutive, every one of them *compactable*), is reduced to its last row. Rows `a..b`
//! are deleted and row `b` keeps `run_from = a` (column `changes.run_from`, migration 0012;
//! served as [`Seal::run_from`](crate::seal::Seal::run_from)). What is lost is only what the
//! rows proved: that each of those changes was signed by its actor and linked to the one
//! before. What they held was gone already. Row `b`'s seal is whole: its signature still
//! verifies and the next change still links to its hash.
//!
//! A change is compactable when it is a signed readings change retention pruned wholly (no
//! series left: it travels with its body hash), with no rollups of pruned units and no
//! timing record left. Such a change adds nothing to the digest, so compacting
//! it changes no digest, and two replicas compacting at different times still agree.
//! Unsigned changes are never compacted (the implied hash of an unsigned past links over
//! them, `past.rs`), nor documents, twins, corrections or gap records.
//!
//! Serving ([`trim_run`]): a peer that holds seq `h` of the actor is sent row `b` with
//! `run_from = max(a, h + 1)`, or with none when it holds `b − 1` (any release can take that).
//! Receiving ([`run_from_held`], `admit.rs`): a survivor whose run reaches down to what is
//! held is admitted although its seq skips; its link cannot be checked (the store does not
//! hold `b − 1`), its key and signature are; it is stored as a run from what was held + 1. A
//! peer that does not list the `log_runs` feature is never sent a run (`exchange.rs`).
//!
//! The sweep: each prune pass looks at a bounded window of the log, by row id, from where
//! the last one stopped, wrapping at the end, so every row is looked at again after a while
//! (a change becomes compactable when its rollups go, which may be long after its readings).
//! Each step is one writer job looking at `step_rows` row ids, like a prune step.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, params};

use crate::writer::Writer;
use crate::{Change, PruneReport, Result, StoreError};

/// Row ids one compaction step looks at, per `step_rows` of the prune pass: a step deletes
/// at most that many rows, as a prune step deletes at most about that many readings, so it
/// holds ingest up no longer.
const IDS_PER_STEP_ROW: i64 = 1;
/// Most compaction steps per prune pass (the sweep goes on at the next pass): 32,000 ids a
/// pass at the default `step_rows`, so a log of a million rows is swept in ~30 passes.
pub(crate) const MAX_STEPS_PER_PASS: usize = 32;

/// The SQL condition of a compactable row `c` (parameter `?1`: the encoded empty manifest).
/// `pruned` may hold the unit hashes of a change emptied by a release of 2026-12-05/06 (the
/// form before `Seal::body`): such a row goes the same way, and a survivor in that form is
/// turned into the body-hash form (its `body_hash` is what those hashes hash to).
const COMPACTABLE: &str = "c.kind = 1 AND c.signature IS NOT NULL AND c.body_hash IS NOT NULL \
     AND c.manifest = ?1 \
     AND NOT EXISTS (SELECT 1 FROM pruned_rollups p WHERE p.change_id = c.id) \
     AND NOT EXISTS (SELECT 1 FROM reading_timing t WHERE t.change_id = c.id)";

/// `change` as served to a peer holding its actor up to `held`: a run reaching below
/// `held + 1` starts there; none when the peer holds the change just below.
pub fn trim_run(change: &mut Change, held: u64) {
    let seq = change.seq;
    if let Some(seal) = change.seal.as_mut()
        && let Some(from) = seal.run_from
    {
        seal.run_from = (held + 1 < seq).then_some(from.max(held + 1));
    }
}

/// [`trim_run`] over a page of changes in per-actor seq order, for a peer holding `theirs`.
pub fn trim_runs(changes: &mut [Change], theirs: &crate::VersionVector) {
    let mut held: std::collections::HashMap<crate::ActorId, u64> = Default::default();
    for c in changes {
        let h = held.entry(c.actor).or_insert_with(|| theirs.get(&c.actor));
        trim_run(c, *h);
        *h = (*h).max(c.seq);
    }
}

/// Of a received change when the store holds its actor up to `have`: `Some(have + 1)` when
/// it is the survivor of a log run that reaches down to `have + 1` and skips seqs the store
/// lacks (admitted then without its link checked), else `None` (an ordinary change).
pub(crate) fn run_from_held(c: &Change, have: u64) -> Option<u64> {
    let from = c.seal.as_ref()?.run_from?;
    (from <= have + 1 && c.seq > have + 1).then_some(have + 1)
}

/// A compactable row found by a step: its id and seq, and the first seq it stands for.
#[derive(Debug, Clone, Copy)]
struct Member {
    id: i64,
    seq: u64,
    from: u64,
}

impl Member {
    /// From the stored `id`, `seq` and `run_from` of a row.
    fn stored(id: i64, seq: i64, run_from: Option<i64>) -> Member {
        let seq = seq as u64;
        Member {
            id,
            seq,
            from: run_from.map_or(seq, |f| f as u64),
        }
    }
}

impl Writer {
    /// One step of the log-run sweep: looks at the rows with ids after the sweep's position
    /// (at most `budget` ids), compacts the runs of compactable changes it finds (with
    /// the compactable row just below each, wherever it is) and moves on. Returns what it
    /// did and whether the sweep wrapped (the next step starts at the first row again).
    pub(crate) fn compact_log_step(&mut self, budget: usize) -> Result<(PruneReport, bool)> {
        let ctx = "compacting the change log";
        let after = self.log_sweep;
        let upto = after.saturating_add((budget.max(1) as i64).saturating_mul(IDS_PER_STEP_ROW));
        let last_id: i64 = self
            .conn
            .prepare_cached("SELECT COALESCE(MAX(id), 0) FROM changes")
            .and_then(|mut st| st.query_row([], |r| r.get(0)))
            .map_err(StoreError::db(ctx))?;
        let empty = crate::ingest::encode_manifest_entries(&[]);
        let found: Vec<(i64, i64, i64, Option<i64>)> = self
            .conn
            .prepare_cached(&format!(
                "SELECT c.id, c.actor_idx, c.seq, c.run_from FROM changes c \
                 WHERE c.id > ?2 AND c.id <= ?3 AND {COMPACTABLE} ORDER BY c.actor_idx, c.seq"
            ))
            .and_then(|mut st| {
                st.query_map(params![empty, after, upto], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect()
            })
            .map_err(StoreError::db(ctx))?;
        let mut per_actor: BTreeMap<i64, Vec<Member>> = BTreeMap::new();
        for (id, idx, seq, run_from) in found {
            per_actor
                .entry(idx)
                .or_default()
                .push(Member::stored(id, seq, run_from));
        }
        let mut report = PruneReport::default();
        for (idx, members) in per_actor {
            for run in consecutive(members) {
                report.changes_compacted += self.compact_run(idx, run, &empty)?;
            }
        }
        let wrapped = upto >= last_id;
        self.log_sweep = if wrapped { 0 } else { upto };
        self.counts.changes = self.counts.changes.saturating_sub(report.changes_compacted);
        Ok((report, wrapped))
    }

    /// Compacts one run of consecutive compactable rows of actor row `idx` (and the
    /// compactable row just below it, if any) to its last row; returns the rows deleted.
    fn compact_run(&mut self, idx: i64, mut run: Vec<Member>, empty: &[u8]) -> Result<u64> {
        let ctx = "compacting the change log";
        let first = run[0].from;
        if first > 1 {
            let below: Option<(i64, i64, Option<i64>)> = self
                .conn
                .prepare_cached(&format!(
                    "SELECT c.id, c.seq, c.run_from FROM changes c \
                     WHERE c.actor_idx = ?2 AND c.seq = ?3 AND {COMPACTABLE}"
                ))
                .and_then(|mut st| {
                    st.query_row(params![empty, idx, first as i64 - 1], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .optional()
                })
                .map_err(StoreError::db(ctx))?;
            if let Some((id, seq, run_from)) = below {
                run.insert(0, Member::stored(id, seq, run_from));
            }
        }
        let Some((survivor, gone)) = run.split_last() else {
            return Ok(0);
        };
        if gone.is_empty() {
            return Ok(0);
        }
        for m in gone {
            self.conn
                .prepare_cached("DELETE FROM changes WHERE id = ?1")
                .and_then(|mut st| st.execute([m.id]))
                .map_err(StoreError::db(ctx))?;
        }
        self.conn
            .prepare_cached("UPDATE changes SET run_from = ?1, pruned = NULL WHERE id = ?2")
            .and_then(|mut st| st.execute(params![run[0].from as i64, survivor.id]))
            .map_err(StoreError::db(ctx))?;
        Ok(gone.len() as u64)
    }
}

/// Splits one actor's compactable rows (in seq order) into runs of consecutive ones: each
/// row's first seq follows the previous row's seq.
fn consecutive(members: Vec<Member>) -> Vec<Vec<Member>> {
    let mut runs: Vec<Vec<Member>> = Vec::new();
    for m in members {
        match runs.last_mut() {
            Some(run) if run.last().is_some_and(|p| p.seq + 1 == m.from) => run.push(m),
            _ => runs.push(vec![m]),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::{CHAIN_START, Seal};
    use crate::{ActorId, ChangeBody, Hlc, ReadingBatch};

    fn survivor(seq: u64, run_from: Option<u64>) -> Change {
        Change {
            actor: ActorId([1; 16]),
            seq,
            hlc: Hlc(seq),
            body: ChangeBody::Readings(ReadingBatch::default()),
            seal: Some(Seal {
                key: [0; 32],
                prev: CHAIN_START,
                sig: [0; 64],
                pruned: Vec::new(),
                body: Some([7; 32]),
                run_from,
            }),
            pruned_rollups: Vec::new(),
        }
    }

    #[test]
    fn a_run_is_served_from_what_the_peer_lacks() {
        let run_from = |c: &Change| c.seal.as_ref().unwrap().run_from;
        let mut c = survivor(10, Some(3));
        trim_run(&mut c, 0);
        assert_eq!(
            run_from(&c),
            Some(3),
            "a peer holding nothing gets the whole run"
        );
        let mut c = survivor(10, Some(3));
        trim_run(&mut c, 5);
        assert_eq!(
            run_from(&c),
            Some(6),
            "the run starts above what the peer holds"
        );
        let mut c = survivor(10, Some(3));
        trim_run(&mut c, 9);
        assert_eq!(
            run_from(&c),
            None,
            "a peer holding seq 9 gets an ordinary change"
        );
        let mut plain = survivor(10, None);
        trim_run(&mut plain, 2);
        assert_eq!(run_from(&plain), None, "no run is made up");
    }

    #[test]
    fn a_run_is_admitted_only_when_it_reaches_what_is_held() {
        let c = survivor(10, Some(3));
        assert_eq!(run_from_held(&c, 2), Some(3));
        assert_eq!(run_from_held(&c, 6), Some(7));
        assert_eq!(run_from_held(&c, 1), None, "seq 2 is missing: a gap");
        assert_eq!(
            run_from_held(&c, 9),
            None,
            "the predecessor is held: linked as usual"
        );
        assert_eq!(run_from_held(&survivor(10, None), 2), None);
    }

    #[test]
    fn runs_are_cut_where_seqs_do_not_follow() {
        let m = |seq, from| Member { id: 0, seq, from };
        let runs = consecutive(vec![m(1, 1), m(2, 2), m(5, 3), m(7, 7), m(8, 8), m(10, 10)]);
        let seqs: Vec<Vec<u64>> = runs
            .iter()
            .map(|r| r.iter().map(|m| m.seq).collect())
            .collect();
        assert_eq!(seqs, vec![vec![1, 2, 5], vec![7, 8], vec![10]]);
    }
}
