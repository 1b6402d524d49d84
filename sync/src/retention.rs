//! Retention: pruning raw readings by age (a default and per-series patterns) and per-minute
//! rollups by a longer age, in small steps run by the writer (each step one job of a write
//! group, bounded by a row budget, so ingest never waits behind a long delete).
//!
//! The unit of pruning is the readings one change holds for one series: it goes only when
//! *all* of them are older than the series' cutoff (a batch straddling the cutoff is kept
//! whole until its newest reading ages out). That keeps the store's invariants simple:
//! - **The digest** is over what the store holds: a pruned unit's hash (the same element
//!   [`readings_hash`] added at ingest) is subtracted, and the unit is dropped from its
//!   change's manifest. A pruned change stays in the log (actor, seq, HLC and whatever
//!   series remain), so version vectors stay dense and a peer that asks for it gets what
//!   remains — possibly a readings change with no readings, which `apply_remote` accepts
//!   (a signed one pruned wholly then keeps and travels with its body hash alone,
//!   `Seal::body`, not one hash per series).
//!   Two replicas holding the same changes under the same policy and clock prune the same
//!   units, so their digests are equal (sync/README.md, "Digest under retention").
//! - **Rollups** of a minute are kept while any raw reading of that series and minute
//!   remains, and beyond that until the rollup age, so aggregates over old ranges answer.
//! - **Rollups of pruned units** (`pruned_rollups.rs`): a step keeps what the units it
//!   prunes added to the rollups (table `pruned_rollups`), in the same transaction, per
//!   series, minute and actor, with the first change of that minute it pruned
//!   (`group_pruned_rollups`), so that change is served with them and a peer that receives
//!   the changes pruned still gets their share of the rollups. They go with the rollups of
//!   their minute.
//! - **Counters**: `meta.readings_pruned` counts raw readings pruned whose rollups remain,
//!   so the readings count (`SUM(rollup_1m.n) - readings_pruned`) needs no table scan.
//!
//! The same steps serve the disk budget ([`Store::prune_before`](crate::Store::prune_before)):
//! there every series' cutoff is one time, chosen by the agent's budget pass. Both keep the
//! readings an upstream peer has not acknowledged when told to ([`Unacked::Keep`]); only the
//! budget's hard limit drops them ([`Unacked::Drop`]), and each step that does writes a gap
//! record (`gap.rs`) in the same transaction.
//!
//! Callers pass `now` (unix ms), so tests drive retention with any clock.

use rusqlite::{OptionalExtension, params};

use crate::digest::readings_hash;
use crate::gap::GapCollector;
use crate::ingest::{MINUTE_MS, decode_manifest};
use crate::pruned_rollups::StepRollups;
use crate::writer::Writer;
use crate::{
    ActorId, Change, ChangeBody, ManifestEntry, PrunedUnitMinutes, Result, SeriesPoints,
    StoreError, VersionVector,
};

/// Ids of the signed readings changes a prune step emptied, rewritten together at the end
/// of the step ([`Writer::rewrite_emptied_changes`]).
type Emptied = Vec<i64>;

/// How long raw readings of the series matching `pattern` are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesRetention {
    /// A series name, or a glob with `*` (any run of characters) and `?` (one character).
    pub pattern: String,
    /// Keep raw readings this long (ms); `None`: forever.
    pub max_age_ms: Option<u64>,
}

/// What retention keeps. The default keeps everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Raw readings older than this (ms) are pruned, unless a [`series`](Self::series) rule
    /// matches; `None`: kept forever.
    pub readings_max_age_ms: Option<u64>,
    /// Per-series rules, first match wins.
    pub series: Vec<SeriesRetention>,
    /// Per-minute rollups older than this (ms) are pruned — never while raw readings of
    /// their minute remain; `None`: kept forever.
    pub rollups_max_age_ms: Option<u64>,
    /// Document history (`doc_retention.rs`).
    pub docs: crate::DocRetention,
    /// Twin history compaction (`twin/compact.rs`): raw chunks the snapshots hold.
    pub twins: crate::TwinCompaction,
}

impl RetentionPolicy {
    /// How long raw readings of `series` are kept (`None`: forever).
    pub fn readings_max_age(&self, series: &str) -> Option<u64> {
        match self.series.iter().find(|r| glob_match(&r.pattern, series)) {
            Some(rule) => rule.max_age_ms,
            None => self.readings_max_age_ms,
        }
    }

    /// True when this policy never prunes anything.
    pub fn keeps_everything(&self) -> bool {
        self.readings_max_age_ms.is_none()
            && self.rollups_max_age_ms.is_none()
            && self.series.iter().all(|r| r.max_age_ms.is_none())
            && self.docs.keeps_everything()
            && self.twins.never()
    }

    /// True when this policy prunes no raw reading and no rollup.
    pub fn keeps_all_readings(&self) -> bool {
        self.readings_max_age_ms.is_none()
            && self.rollups_max_age_ms.is_none()
            && self.series.iter().all(|r| r.max_age_ms.is_none())
    }
}

/// How a prune treats raw readings that upstream peers (`upstream = true` in the agent's
/// `[[sync.peers]]`) have not acknowledged: those of changes above the vector every upstream
/// peer is known to hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Unacked {
    /// No upstream peer: every reading may be pruned.
    #[default]
    NoUpstream,
    /// Readings of changes above this vector are kept (counted as `held`).
    Keep(VersionVector),
    /// The hard limit: they are pruned too, counted as `dropped_unacked`, and every step that
    /// drops some writes a gap record (change kind 6) saying what went.
    Drop(VersionVector),
}

impl Unacked {
    /// Whether `actor`'s change `seq` may be pruned, and whether that drops unacknowledged
    /// readings: `None` when it must be kept, `Some(dropped)` otherwise.
    fn verdict(&self, actor: &ActorId, seq: u64) -> Option<bool> {
        match self {
            Unacked::NoUpstream => Some(false),
            Unacked::Keep(v) => (seq <= v.get(actor)).then_some(false),
            Unacked::Drop(v) => Some(seq > v.get(actor)),
        }
    }
}

/// What one [`Store::prune`](crate::Store::prune) pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PruneReport {
    /// Raw readings deleted.
    pub readings: u64,
    /// (change, series) units of readings deleted.
    pub units: u64,
    /// Per-minute rollup rows deleted.
    pub rollups: u64,
    /// Writer jobs (small transactions) the pass took.
    pub steps: u64,
    /// Readings the pass would have pruned but kept, because an upstream peer has not
    /// acknowledged them ([`Unacked::Keep`]).
    pub held: u64,
    /// Readings pruned although no upstream peer had acknowledged them ([`Unacked::Drop`]);
    /// included in `readings`.
    pub dropped_unacked: u64,
    /// Gap records written for them.
    pub gaps: u64,
    /// Document versions whose value was pruned (`doc_retention.rs`).
    pub doc_versions: u64,
    /// Twin changes whose raw chunk was dropped, now held only in their twin's snapshot
    /// (`twin/compact.rs`).
    pub twin_changes_compacted: u64,
    /// Bytes of those chunks.
    pub twin_bytes_compacted: u64,
    /// Twin changes the compaction rule reached but kept raw: their snapshot does not give
    /// them back byte for byte.
    pub twin_changes_kept: u64,
    /// Change rows deleted by compacting runs of wholly pruned changes to their last one
    /// (`log_runs.rs`): seqs the log still stands for, without a row each.
    pub changes_compacted: u64,
}

impl PruneReport {
    /// Adds another report's figures to this one.
    pub fn add(&mut self, o: &PruneReport) {
        self.readings += o.readings;
        self.units += o.units;
        self.rollups += o.rollups;
        self.steps += o.steps;
        self.doc_versions += o.doc_versions;
        self.held += o.held;
        self.dropped_unacked += o.dropped_unacked;
        self.gaps += o.gaps;
        self.twin_changes_compacted += o.twin_changes_compacted;
        self.twin_bytes_compacted += o.twin_bytes_compacted;
        self.twin_changes_kept += o.twin_changes_kept;
        self.changes_compacted += o.changes_compacted;
    }
}

/// What a prune pass removes: raw readings by age ([`RetentionPolicy`], as of `now_ms`)
/// and, for the disk budget, every raw reading before `before_ms`; rollups by age and, for
/// the disk budget once raw readings are gone, every rollup before `rollups_before_ms`.
#[derive(Debug, Clone)]
pub(crate) struct PruneRule {
    pub policy: RetentionPolicy,
    pub now_ms: i64,
    pub before_ms: Option<i64>,
    pub rollups_before_ms: Option<i64>,
    pub unacked: Unacked,
}

impl PruneRule {
    /// True when the rule can remove nothing.
    pub fn prunes_nothing(&self) -> bool {
        self.policy.keeps_everything() && !self.is_budget()
    }

    /// True when the rule can remove raw readings or rollups.
    pub fn prunes_readings(&self) -> bool {
        !self.policy.keeps_all_readings() || self.is_budget()
    }

    /// True for the disk budget's cuts (which prune readings and rollups only, never
    /// document history or twin chunks).
    pub fn is_budget(&self) -> bool {
        self.before_ms.is_some() || self.rollups_before_ms.is_some()
    }

    /// The rollup cutoff (minutes before it may go, never while raw readings of the
    /// series and minute remain), `None`: keep all.
    fn rollup_cutoff(&self) -> Option<i64> {
        rollups_cutoff(&self.policy, self.now_ms).max(self.rollups_before_ms.map(minute_floor))
    }

    /// The raw-reading cutoff of series `name` (minute-aligned by age), `None`: keep all.
    fn raw_cutoff(&self, name: &str) -> Option<i64> {
        let by_age = readings_cutoff(&self.policy, name, self.now_ms);
        // The budget's cut is taken as is: it prunes no rollups, so it need not keep whole
        // minutes, and a fast store holds many batches per minute.
        by_age.max(self.before_ms)
    }
}

/// Where a prune pass has got to: series by id, and within the current series the raw
/// readings scanned so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PruneCursor {
    /// Next series id to look at (ids below are done).
    pub series_id: i64,
    /// Within `series_id`: raw readings with `ts` below this were looked at.
    pub after_ts: i64,
    /// The pass is over.
    pub done: bool,
}

/// Matches `*` and `?` globs (byte-wise; series names are ASCII-safe here).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

fn minute_floor(ts: i64) -> i64 {
    ts.div_euclid(MINUTE_MS) * MINUTE_MS
}

// The retention rule itself, as pure functions: the SQLite writer below and the PostgreSQL
// hub (`kdelta-pg`, `retention.rs`) both prune with these, so replicas on either backend
// under one policy prune the same units and subtract the same digest elements.

/// The age cutoff of raw readings of series `name` under `policy` at `now_ms` (unix ms):
/// readings before it may go, minute-aligned so rollups always cover whole minutes.
/// `None`: the series' readings are kept forever.
pub fn readings_cutoff(policy: &RetentionPolicy, name: &str, now_ms: i64) -> Option<i64> {
    policy
        .readings_max_age(name)
        .map(|age| minute_floor(now_ms.saturating_sub(age.min(i64::MAX as u64) as i64)))
}

/// The age cutoff of per-minute rollups under `policy` at `now_ms`: rows of minutes before
/// it may go (and only once no raw reading of their series and minute remains). `None`:
/// rollups are kept forever.
pub fn rollups_cutoff(policy: &RetentionPolicy, now_ms: i64) -> Option<i64> {
    policy
        .rollups_max_age_ms
        .map(|age| minute_floor(now_ms.saturating_sub(age.min(i64::MAX as u64) as i64)))
}

/// Whether a unit — the readings one change holds for one series, as its manifest `entry`
/// describes them (at the times the change carried) — lies wholly before `cutoff`, and if
/// so the range `[lo, hi]` of its readings as stored. `delta`: how far a time correction
/// moved the change's readings (`Some(0)` when never sampled under an untrusted clock);
/// `None` while they await a correction — their age is unknown, so they are never pruned.
/// A unit straddling the cutoff is kept whole until its newest reading ages out.
pub fn unit_expired(entry: &ManifestEntry, delta: Option<i64>, cutoff: i64) -> Option<(i64, i64)> {
    let delta = delta?;
    let (lo, hi) = (
        entry.ts_min.saturating_add(delta),
        entry.ts_max.saturating_add(delta),
    );
    (hi < cutoff).then_some((lo, hi))
}

/// What pruning one unit takes out of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrunedUnit {
    /// The element the unit added to the digest at ingest, to subtract (`Digest::sub`).
    pub digest_element: [u8; 32],
    /// The unit's seal hash, appended to the change's pruned hashes (`Seal::pruned`), so
    /// the change still proves its signed body.
    pub seal_hash: [u8; 32],
}

/// What pruning the unit `points` (the readings change `(actor, seq)` held for one series,
/// at the times the change carried, with the unit and metadata of its manifest entry)
/// takes out of a store.
pub fn pruned_unit(actor: &ActorId, seq: u64, points: &SeriesPoints) -> PrunedUnit {
    PrunedUnit {
        digest_element: readings_hash(actor, seq, &points.name, &points.ts, &points.values),
        seal_hash: crate::seal::unit_hash(points),
    }
}

/// Prunes series `name` from a readings change as a store serves it: the series leaves the
/// body, its seal hash joins the seal's pruned hashes (an unsigned change has none to keep;
/// once the last series goes, the seal carries the body hash instead, [`Seal::body`](crate::seal::Seal::body))
/// and the digest element to subtract is returned — `None` when the change holds no such
/// series. The change is then exactly what a store that pruned the unit serves.
pub fn prune_series(change: &mut Change, name: &str) -> Option<[u8; 32]> {
    let ChangeBody::Readings(batch) = &mut change.body else {
        return None;
    };
    let pos = batch.series.iter().position(|s| s.name == name)?;
    let points = batch.series.remove(pos);
    let unit = pruned_unit(&change.actor, change.seq, &points);
    if let Some(seal) = &mut change.seal {
        seal.pruned.push(unit.seal_hash);
        if batch.series.is_empty() {
            // Pruned wholly: it travels with its body hash instead (`Seal::body`).
            let body = crate::seal::readings_body_hash(&[], batch.timing.as_ref(), &seal.pruned);
            seal.body = Some(body);
            seal.pruned.clear();
        }
    }
    Some(unit.digest_element)
}

impl Writer {
    /// One bounded step of a prune pass: deletes at most about `budget` raw readings (or
    /// rollup rows), starting at `cursor`; returns what it removed and where to go on.
    pub(crate) fn prune_step(
        &mut self,
        rule: &PruneRule,
        cursor: PruneCursor,
        budget: usize,
    ) -> Result<(PruneReport, PruneCursor)> {
        let mut report = PruneReport {
            steps: 1,
            ..PruneReport::default()
        };
        let mut gaps = GapCollector::default();
        let mut kept = StepRollups::default();
        let mut emptied = Emptied::new();
        let sinks = (&mut gaps, &mut kept, &mut emptied);
        let cursor = self.prune_rows(rule, cursor, budget, &mut report, sinks)?;
        self.rewrite_emptied_changes(emptied)?;
        self.keep_step_rollups(kept)?;
        if let Some(gap) = gaps.finish() {
            self.write_local_gap(&gap)?;
            report.gaps += 1;
        }
        Ok((report, cursor))
    }

    fn prune_rows(
        &mut self,
        rule: &PruneRule,
        cursor: PruneCursor,
        budget: usize,
        report: &mut PruneReport,
        (gaps, kept, emptied): (&mut GapCollector, &mut StepRollups, &mut Emptied),
    ) -> Result<PruneCursor> {
        let mut cursor = cursor;
        let mut left = budget.max(1) as i64;
        while left > 0 && !gaps.full() {
            let next: Option<(i64, String)> = self
                .conn
                .prepare_cached("SELECT id, name FROM series WHERE id >= ?1 ORDER BY id LIMIT 1")
                .and_then(|mut st| {
                    st.query_row([cursor.series_id], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()
                })
                .map_err(StoreError::db("listing series to prune"))?;
            let Some((series_id, name)) = next else {
                cursor.done = true;
                break;
            };
            if series_id != cursor.series_id {
                cursor = PruneCursor {
                    series_id,
                    after_ts: i64::MIN,
                    done: false,
                };
            }
            let raw_cutoff = rule.raw_cutoff(&name);
            let mut finished_raw = true;
            if let Some(cutoff) = raw_cutoff {
                let (n, scanned_to) = self.prune_series_raw(
                    series_id,
                    &name,
                    cutoff,
                    cursor.after_ts,
                    left,
                    (
                        &rule.unacked,
                        &mut *report,
                        &mut *gaps,
                        &mut *kept,
                        &mut *emptied,
                    ),
                )?;
                left -= n.max(1);
                match scanned_to {
                    Some(ts) => {
                        cursor.after_ts = ts;
                        finished_raw = false;
                    }
                    None => cursor.after_ts = cutoff,
                }
            }
            if finished_raw {
                if let Some(cutoff) = rule.rollup_cutoff() {
                    let (n, more) = self.prune_series_rollups(series_id, cutoff, left)?;
                    report.rollups += n;
                    left -= n as i64;
                    if more {
                        break;
                    }
                }
                cursor.series_id = series_id + 1;
                cursor.after_ts = i64::MIN;
            }
        }
        Ok(cursor)
    }

    /// Prunes the (change, series) units of `series_id` lying wholly before `cutoff`, looking
    /// at raw readings from `after_ts` on, at most about `budget` of them. Returns the readings
    /// looked at and, when the budget ran out first, the timestamp to go on from.
    fn prune_series_raw(
        &mut self,
        series_id: i64,
        name: &str,
        cutoff: i64,
        after_ts: i64,
        budget: i64,
        (unacked, report, gaps, kept, emptied): (
            &Unacked,
            &mut PruneReport,
            &mut GapCollector,
            &mut StepRollups,
            &mut Emptied,
        ),
    ) -> Result<(i64, Option<i64>)> {
        let rows: Vec<(i64, i64)> = self
            .conn
            .prepare_cached(
                "SELECT ts, change_id FROM readings WHERE series_id = ?1 AND ts >= ?2 AND ts < ?3 ORDER BY ts LIMIT ?4",
            )
            .and_then(|mut st| {
                st.query_map(params![series_id, after_ts, cutoff, budget], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect()
            })
            .map_err(StoreError::db("finding readings to prune"))?;
        let scanned = rows.len() as i64;
        let mut resume = (scanned >= budget).then(|| rows.last().map_or(cutoff, |r| r.0 + 1));
        let mut seen = std::collections::HashSet::new();
        for (ts, change_id) in rows {
            if gaps.full() {
                // The gap record of this step is full: the next step goes on from here.
                resume = Some(ts);
                break;
            }
            // Rows come by time, so the first row of a change is its oldest in this scan.
            if seen.insert(change_id) {
                let unit = (series_id, name, change_id, ts);
                let sinks = (&mut *report, &mut *gaps, &mut *kept, &mut *emptied);
                self.prune_unit(unit, cutoff, unacked, sinks)?;
            }
        }
        Ok((scanned, resume))
    }

    /// Deletes the readings change `change_id` holds for `series_id` when all of them are
    /// before `cutoff`, subtracting their digest element and dropping the series from the
    /// change's manifest.
    /// `first_ts`: the unit's oldest reading this step scanned (a unit kept for upstream is
    /// counted as held once, by the step that scanned its oldest reading).
    fn prune_unit(
        &mut self,
        (series_id, name, change_id, first_ts): (i64, &str, i64, i64),
        cutoff: i64,
        unacked: &Unacked,
        (report, gaps, kept, emptied): (
            &mut PruneReport,
            &mut GapCollector,
            &mut StepRollups,
            &mut Emptied,
        ),
    ) -> Result<()> {
        type Row = (Vec<u8>, i64, Vec<u8>, Option<Vec<u8>>, bool);
        let row: Option<Row> = self
            .conn
            .prepare_cached(
                "SELECT c.manifest, c.seq, a.actor, c.pruned, c.body_hash IS NOT NULL \
                 FROM changes c JOIN actors a ON a.idx = c.actor_idx WHERE c.id = ?1",
            )
            .and_then(|mut st| {
                st.query_row([change_id], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .optional()
            })
            .map_err(StoreError::db("reading a change to prune"))?;
        let Some((manifest, seq, actor, pruned, signed)) = row else {
            return Ok(());
        };
        let Some(actor) = ActorId::from_slice(&actor) else {
            return Ok(());
        };
        let mut entries = decode_manifest(&manifest)?;
        let Some(pos) = entries.iter().position(|e| e.name == name) else {
            return Ok(());
        };
        let entry = entries.remove(pos);
        // Readings sampled under an untrusted clock have no known age until corrected
        // (1970 is not their age); corrected ones are stored moved by `delta` (timing.rs).
        let delta = self.correction_delta(change_id)?;
        let Some((lo, hi)) = unit_expired(&entry, delta, cutoff) else {
            return Ok(()); // awaiting a correction, or straddles the cutoff: kept for now
        };
        let delta = delta.unwrap_or(0);
        let Some(drops_unacked) = unacked.verdict(&actor, seq as u64) else {
            if first_ts == lo {
                report.held += entry.count;
            }
            return Ok(()); // upstream does not hold it yet
        };
        let (stored_ts, values): (Vec<i64>, Vec<f64>) = self
            .conn
            .prepare_cached(
                "SELECT ts, value FROM readings WHERE series_id = ?1 AND ts >= ?2 AND ts <= ?3 AND change_id = ?4 ORDER BY ts",
            )
            .and_then(|mut st| {
                st.query_map(params![series_id, lo, hi, change_id], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, f64>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<(i64, f64)>>>()
            })
            .map_err(StoreError::db("reading readings to prune"))?
            .into_iter()
            .unzip();
        let n = stored_ts.len() as u64;
        // What these readings added to the rollups stays with the first change of their
        // minute pruned in this step, so a peer that receives it later still counts them
        // (`pruned_rollups.rs`; kept when the step ends).
        let carrier = (change_id, actor, seq as u64);
        kept.add(
            series_id,
            PrunedUnitMinutes::new(carrier, name, &stored_ts, &values),
        );
        // The digest element and seal hash are over the times the change carried.
        let ts = stored_ts.into_iter().map(|t| t - delta).collect();
        let unit = pruned_unit(
            &actor,
            seq as u64,
            &SeriesPoints {
                name: entry.name.clone(),
                unit: entry.unit.clone(),
                meta: entry.meta.clone(),
                ts,
                values,
            },
        );
        self.digest.sub(&unit.digest_element);
        // The unit's seal hash stays with the change, so it still proves its body — until
        // the last unit goes: a signed change pruned wholly keeps only its stored body hash
        // and travels with it (`Seal::body`), 32 bytes instead of 32 per series. An unsigned
        // one keeps them all (its past hash is over them, `past.rs`).
        let mut pruned = pruned.unwrap_or_default();
        pruned.extend_from_slice(&unit.seal_hash);
        let pruned = (!(signed && entries.is_empty())).then_some(pruned);
        self.conn
            .prepare_cached(
                "DELETE FROM readings WHERE series_id = ?1 AND ts >= ?2 AND ts <= ?3 AND change_id = ?4",
            )
            .and_then(|mut st| {
                st.execute(params![series_id, lo, hi, change_id])
            })
            .map_err(StoreError::db("deleting pruned readings"))?;
        let bytes = crate::ingest::encode_manifest_entries(&entries);
        if pruned.is_none() {
            emptied.push(change_id); // its row is rewritten at the end of the step
        }
        self.conn
            .prepare_cached("UPDATE changes SET manifest = ?1, pruned = ?3 WHERE id = ?2")
            .and_then(|mut st| st.execute(params![bytes, change_id, pruned]))
            .map_err(StoreError::db("updating a pruned change's manifest"))?;
        if drops_unacked && n > 0 {
            gaps.add(name, actor, seq as u64, entry.ts_min, entry.ts_max, n);
            report.dropped_unacked += n;
        }
        self.add_readings_pruned(n as i64)?;
        self.counts.readings = self.counts.readings.saturating_sub(n);
        report.readings += n;
        report.units += 1;
        Ok(())
    }

    /// Deletes rollup rows of `series_id` before `cutoff` and before the minute of its oldest
    /// remaining raw reading, at most `budget`; returns how many and whether more remain.
    fn prune_series_rollups(
        &mut self,
        series_id: i64,
        cutoff: i64,
        budget: i64,
    ) -> Result<(u64, bool)> {
        let oldest_raw: Option<i64> = self
            .conn
            .prepare_cached("SELECT MIN(ts) FROM readings WHERE series_id = ?1")
            .and_then(|mut st| st.query_row([series_id], |r| r.get(0)))
            .map_err(StoreError::db("finding the oldest reading"))?;
        let mut upper = oldest_raw.map_or(cutoff, |t| cutoff.min(minute_floor(t)));
        let beyond: Option<i64> = self
            .conn
            .prepare_cached(
                "SELECT minute FROM rollup_1m WHERE series_id = ?1 AND minute < ?2 ORDER BY minute LIMIT 1 OFFSET ?3",
            )
            .and_then(|mut st| st.query_row(params![series_id, upper, budget.max(1)], |r| r.get(0)).optional())
            .map_err(StoreError::db("finding rollups to prune"))?;
        let more = beyond.is_some();
        if let Some(m) = beyond {
            upper = m;
        }
        // The rollups of pruned units of those minutes go with them: a peer served the
        // change from now on gets what this store's rollups still hold.
        self.conn
            .prepare_cached("DELETE FROM pruned_rollups WHERE series_id = ?1 AND minute < ?2")
            .and_then(|mut st| st.execute(params![series_id, upper]))
            .map_err(StoreError::db("deleting the rollups of pruned units"))?;
        let (rows, readings): (i64, i64) = self
            .conn
            .prepare_cached(
                "SELECT COUNT(*), COALESCE(SUM(n), 0) FROM rollup_1m WHERE series_id = ?1 AND minute < ?2",
            )
            .and_then(|mut st| st.query_row(params![series_id, upper], |r| Ok((r.get(0)?, r.get(1)?))))
            .map_err(StoreError::db("counting rollups to prune"))?;
        if rows == 0 {
            return Ok((0, false));
        }
        self.conn
            .prepare_cached("DELETE FROM rollup_1m WHERE series_id = ?1 AND minute < ?2")
            .and_then(|mut st| st.execute(params![series_id, upper]))
            .map_err(StoreError::db("deleting pruned rollups"))?;
        // Their raw readings were pruned (and counted) before: the rollups no longer count.
        self.add_readings_pruned(-readings)?;
        Ok((rows as u64, more))
    }

    /// Compacts the rows of the signed readings changes a step pruned wholly (manifest
    /// emptied, no pruned hashes: updated already). Deleted, all of them, then inserted
    /// again (same ids), not updated: SQLite merges a b-tree page only when a delete leaves
    /// it two-thirds empty, never when an update shrinks a row, so rows shrunk in place
    /// would keep their pages as full as they were before the prune (measured: 4,136 B of
    /// pages per 151-byte row). A step's emptied changes are neighbours in the table, so
    /// deleting them together empties their pages, and the rows go back densely.
    fn rewrite_emptied_changes(&mut self, emptied: Emptied) -> Result<()> {
        if emptied.is_empty() {
            return Ok(());
        }
        let ctx = "rewriting wholly pruned changes";
        // The rows go through a temporary copy (every column, whatever the schema adds).
        self.conn
            .execute_batch(
                "CREATE TEMP TABLE IF NOT EXISTS emptied_changes AS \
                 SELECT * FROM main.changes WHERE 0",
            )
            .map_err(StoreError::db(ctx))?;
        for change_id in emptied {
            self.conn
                .prepare_cached(
                    "INSERT INTO temp.emptied_changes SELECT * FROM main.changes WHERE id = ?1",
                )
                .and_then(|mut st| st.execute([change_id]))
                .map_err(StoreError::db(ctx))?;
        }
        self.conn
            .execute_batch(
                "DELETE FROM main.changes WHERE id IN (SELECT id FROM temp.emptied_changes); \
                 INSERT INTO main.changes SELECT * FROM temp.emptied_changes; \
                 DELETE FROM temp.emptied_changes;",
            )
            .map_err(StoreError::db(ctx))
    }

    /// Moves `meta.readings_pruned` (readings in the rollups but not held raw) by `delta`.
    pub(crate) fn add_readings_pruned(&mut self, delta: i64) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO meta (key, value) VALUES ('readings_pruned', ?1) \
                 ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + excluded.value",
            )
            .and_then(|mut st| st.execute([delta]))
            .map(drop)
            .map_err(StoreError::db("counting pruned readings"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("hwmon.*.temp*", "hwmon.cpu.temp1"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("sim.?", "sim.1"));
        assert!(!glob_match("sim.?", "sim.10"));
        assert!(glob_match("gh.temp", "gh.temp"));
        assert!(!glob_match("gh.temp", "gh.temps"));
        assert!(!glob_match("a*b", "acd"));
        assert!(glob_match("a*b*c", "axxbyyc"));
    }

    #[test]
    fn first_matching_rule_wins_and_none_keeps_forever() {
        let p = RetentionPolicy {
            readings_max_age_ms: Some(1000),
            series: vec![
                SeriesRetention {
                    pattern: "keep.*".into(),
                    max_age_ms: None,
                },
                SeriesRetention {
                    pattern: "*".into(),
                    max_age_ms: Some(5),
                },
            ],
            rollups_max_age_ms: None,
            docs: Default::default(),
            twins: Default::default(),
        };
        assert_eq!(p.readings_max_age("keep.me"), None);
        assert_eq!(p.readings_max_age("other"), Some(5));
        assert!(!p.keeps_everything());
        assert!(RetentionPolicy::default().keeps_everything());
    }
}
