//! Rollups of pruned readings: what a readings change keeps of the readings retention
//! pruned, so a peer that receives the change later still gets their share of the
//! per-minute rollups. Owns the wire type ([`PrunedRollup`]), its hostile-input check
//! ([`check_pruned_rollups`]), the grouping a prune step keeps ([`group_pruned_rollups`])
//! and the SQLite table `pruned_rollups` (migration 0010: [`Writer::keep_step_rollups`],
//! [`load_pruned_rollups`]). Who calls them: `retention.rs` collects the units a step prunes
//! and keeps their groups, `ingest.rs` folds a received change's into the rollups and keeps
//! them, `log_read.rs` serves them with their change, `correct.rs` folds them back when it
//! recomputes a minute.
//!
//! **Why per actor, not `rollup_1m`.** A rollup row sums every change's readings of a
//! minute; a receiver that already holds some of those changes raw would count them twice.
//! What is kept instead is, per series, minute and actor, the aggregate ([`MinuteAgg`]) of
//! the units one prune step removed, carried by the *first* (lowest-seq) of their changes.
//! A peer holds a contiguous run of each actor's seqs, so one that receives that change
//! holds none of the others: it folds the group once, whole, and the others reach it pruned
//! and add nothing. Folded at the carrier's place in the apply order, that is what the raw
//! readings would have added (the same values; a total's last bits can differ where
//! another actor's readings of the minute came in between, as floating-point sums do).
//!
//! **What a late peer misses.** A peer that held the start of a group raw (it synced in the
//! middle of a minute) and comes back after the sender pruned the rest receives the rest
//! without their rollups: at most one minute per series for each such interruption. A
//! summary per unit would not have that gap, but the agent batches for one second, so most
//! units hold one reading per series, and a summary row (~100 bytes on SQLite) per reading
//! (~27 bytes) would make pruning grow the store.
//!
//! **Trust.** The field is not covered by the change's signature (the seal hashes the body
//! and the pruned unit hashes only, `seal.rs`): rollups are derived data, trusted as far as
//! the peer that sent them. What is checked is that they cannot hurt the receiver: bounded
//! counts, `n > 0`, finite values, `min ≤ max` with first and last inside, times inside
//! their minute, minutes strictly increasing, and each series named once and not among the
//! series the change still holds (a summary beside raw readings would count them twice).
//! A group's carrier held a unit of its series (the first one), so that series is pruned
//! from it; a carrier summarises at most `max_batch_readings` readings in all.
//!
//! **Where kept.** One row per series, minute, actor and prune step, about 100 bytes on
//! SQLite: for a series at 1 Hz, ~2 bytes per pruned reading. An actor's readings of a
//! series that a step prunes are summarised only when they average at least
//! [`KEEP_MIN_READINGS_PER_MINUTE`] per minute (a sparse series' rows would cost more than
//! its readings, and pruning for the disk budget would free nothing); a peer that receives
//! those later lacks their share.
//!
//! **Times** are those the readings are stored at (after a time correction, if any), as in
//! the sender's rollups; readings awaiting a correction are never pruned (`retention.rs`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;

use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};

use crate::ingest::{MINUTE_MS, MinuteAgg, minute_aggs};
use crate::multirow::{Binder, list_sql, statement_chunks, with_statement};
use crate::writer::Writer;
use crate::{
    ActorId, Change, ChangeBody, Limits, MAX_TS_MS, Result, StoreError, validate_series_name,
};

/// Change ids per statement of [`load_pruned_rollups`].
const ID_CHUNK: usize = 500;

/// The per-minute aggregates of the readings one change held for one series (a unit)
/// before retention pruned them: what those readings added to `rollup_1m`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrunedRollup {
    /// The series the unit belonged to.
    pub series: String,
    /// One aggregate per minute the unit had readings in, minutes strictly increasing.
    pub minutes: Vec<MinuteAgg>,
}

/// A [`MinuteAgg`] on the wire: one CBOR array `[minute, n, sum, min, max, first_ts,
/// first_value, last_ts, last_value]` (the columns of a rollup row, in order).
#[derive(Serialize, Deserialize)]
pub(crate) struct MinuteRow(i64, i64, f64, f64, f64, i64, f64, i64, f64);

impl From<MinuteRow> for MinuteAgg {
    fn from(r: MinuteRow) -> MinuteAgg {
        MinuteAgg {
            minute: r.0,
            n: r.1,
            sum: r.2,
            min: r.3,
            max: r.4,
            first: (r.5, r.6),
            last: (r.7, r.8),
        }
    }
}

impl From<MinuteAgg> for MinuteRow {
    fn from(a: MinuteAgg) -> MinuteRow {
        MinuteRow(
            a.minute, a.n, a.sum, a.min, a.max, a.first.0, a.first.1, a.last.0, a.last.1,
        )
    }
}

/// Appends one stored minute of `series` to a change's rollups, read ordered by series and
/// minute: to the last unit when it is that series', else as a new unit. Both backends
/// read them back this way.
pub fn push_pruned_minute(units: &mut Vec<PrunedRollup>, series: String, minute: MinuteAgg) {
    match units.last_mut() {
        Some(u) if u.series == series => u.minutes.push(minute),
        _ => units.push(PrunedRollup {
            series,
            minutes: vec![minute],
        }),
    }
}

/// Retention keeps the rollups of an actor's readings of a series pruned in one step only
/// when they average at least this many readings per minute they fall in (module header,
/// "Where kept").
pub const KEEP_MIN_READINGS_PER_MINUTE: usize = 4;

/// What one unit retention prunes added to the rollups, before grouping: the change that
/// held it (`change`, the backend's row id; `actor` and `seq`), its series, and its
/// readings' per-minute aggregates at the times they are stored.
#[derive(Debug, Clone, PartialEq)]
pub struct PrunedUnitMinutes<C> {
    /// The change's row id in the backend.
    pub change: C,
    /// The change's actor.
    pub actor: ActorId,
    /// The change's seq.
    pub seq: u64,
    /// The unit's series.
    pub series: String,
    /// One aggregate per minute the unit has readings in, minutes increasing.
    pub minutes: Vec<MinuteAgg>,
}

impl<C> PrunedUnitMinutes<C> {
    /// From the unit's readings as stored (`ts` sorted, as a normalized batch holds them):
    /// exactly what ingest folded into the rollups for them.
    pub fn new(
        (change, actor, seq): (C, ActorId, u64),
        series: &str,
        ts: &[i64],
        values: &[f64],
    ) -> Self {
        PrunedUnitMinutes {
            change,
            actor,
            seq,
            series: series.to_owned(),
            minutes: minute_aggs(ts, values),
        }
    }
}

/// The rollups one prune step keeps, by the change that carries them: the units it pruned
/// grouped per (actor, series, minute), each group carried by the first change (lowest seq)
/// it summarises, as [`PrunedRollup`]s sorted by series with minutes increasing.
///
/// Why the first change: a peer holds a contiguous run of each actor's seqs, so one that
/// receives the first change of a group holds none of the group's other changes and folds
/// the group once, whole; the others reach it pruned and add nothing. An actor's groups of
/// a series are kept only when they average at least [`KEEP_MIN_READINGS_PER_MINUTE`]
/// readings per minute (all of them, so the few readings a step boundary leaves in a
/// minute of a dense series are kept too). A change carries
/// at most `max_readings_per_change` summarised readings (the receiver's check,
/// [`check_pruned_rollups`]): a unit that would take its group's carrier past that starts a
/// new group carried by its own change. Both backends call this, so replicas under one
/// policy keep the same.
pub fn group_pruned_rollups<C: Copy + Ord + Hash>(
    units: Vec<PrunedUnitMinutes<C>>,
    max_readings_per_change: usize,
) -> BTreeMap<C, Vec<PrunedRollup>> {
    struct Group<C> {
        carrier: C,
        actor: ActorId,
        series: String,
        agg: MinuteAgg,
    }
    let mut units = units;
    units.sort_by(|a, b| (a.actor, a.seq, &a.series).cmp(&(b.actor, b.seq, &b.series)));
    let cap = max_readings_per_change as u64;
    let mut groups: Vec<Group<C>> = Vec::new();
    let mut open: HashMap<(ActorId, String, i64), usize> = HashMap::new();
    let mut carried: HashMap<C, u64> = HashMap::new();
    for unit in units {
        for agg in unit.minutes {
            let n = agg.n.max(0) as u64;
            let key = (unit.actor, unit.series.clone(), agg.minute);
            if let Some(&at) = open.get(&key) {
                let total = carried.entry(groups[at].carrier).or_default();
                if total.saturating_add(n) <= cap {
                    *total += n;
                    groups[at].agg.merge(&agg);
                    continue;
                }
            }
            *carried.entry(unit.change).or_default() += n;
            open.insert(key, groups.len());
            groups.push(Group {
                carrier: unit.change,
                actor: unit.actor,
                series: unit.series.clone(),
                agg,
            });
        }
    }
    // Per actor and series: the readings the step pruned and the minutes they fell in.
    let mut density: HashMap<(ActorId, &str), (i64, HashSet<i64>)> = HashMap::new();
    for g in &groups {
        let d = density.entry((g.actor, g.series.as_str())).or_default();
        d.0 += g.agg.n;
        d.1.insert(g.agg.minute);
    }
    let keep: Vec<bool> = groups
        .iter()
        .map(|g| {
            let (n, minutes) = &density[&(g.actor, g.series.as_str())];
            *n >= (KEEP_MIN_READINGS_PER_MINUTE * minutes.len()) as i64
        })
        .collect();
    let mut by_carrier: BTreeMap<C, BTreeMap<String, Vec<MinuteAgg>>> = BTreeMap::new();
    for (g, keep) in groups.into_iter().zip(keep) {
        if keep {
            let series = by_carrier.entry(g.carrier).or_default();
            series.entry(g.series).or_default().push(g.agg);
        }
    }
    by_carrier
        .into_iter()
        .map(|(carrier, series)| {
            let rollups = series
                .into_iter()
                .map(|(series, mut minutes)| {
                    minutes.sort_by_key(|m| m.minute);
                    PrunedRollup { series, minutes }
                })
                .collect();
            (carrier, rollups)
        })
        .collect()
}

/// Checks the pruned rollups a change carries (see the module header for what and why).
/// `limits.max_batch_readings` bounds the readings they summarise in all, as it bounds the
/// readings the change ever held; a signed change has at most one per pruned unit hash.
pub fn check_pruned_rollups(change: &Change, limits: &Limits) -> Result<(), StoreError> {
    if change.pruned_rollups.is_empty() {
        return Ok(());
    }
    let fail = |detail: String| StoreError::InvalidPrunedRollups {
        actor: change.actor,
        seq: change.seq,
        detail,
    };
    let ChangeBody::Readings(batch) = &change.body else {
        return Err(fail("only a readings change has pruned rollups".into()));
    };
    let rollups = &change.pruned_rollups;
    // A wholly pruned change (`Seal::body`) no longer says how many units it had: the
    // limit below bounds it.
    if let Some(seal) = &change.seal
        && seal.body.is_none()
        && rollups.len() > seal.pruned.len()
    {
        return Err(fail(format!(
            "{} series summarised, but only {} units pruned",
            rollups.len(),
            seal.pruned.len()
        )));
    }
    if rollups.len() > limits.max_batch_readings {
        return Err(fail(format!(
            "{} series summarised, over the limit of {}",
            rollups.len(),
            limits.max_batch_readings
        )));
    }
    let mut readings: u64 = 0;
    // Sets, not nested scans: a hostile change may name tens of thousands of series.
    let held: HashSet<&str> = batch.series.iter().map(|s| s.name.as_str()).collect();
    let mut summarised: HashSet<&str> = HashSet::with_capacity(rollups.len());
    for r in rollups {
        validate_series_name(&r.series).map_err(|e| fail(e.to_string()))?;
        if held.contains(r.series.as_str()) {
            return Err(fail(format!(
                "series {:?} is both held and summarised",
                r.series
            )));
        }
        if !summarised.insert(r.series.as_str()) {
            return Err(fail(format!("series {:?} summarised twice", r.series)));
        }
        if r.minutes.is_empty() {
            return Err(fail(format!("series {:?} has no minutes", r.series)));
        }
        let mut previous: Option<i64> = None;
        for m in &r.minutes {
            check_minute(m).map_err(|why| {
                fail(format!("series {:?}, minute {}: {why}", r.series, m.minute))
            })?;
            if previous.is_some_and(|p| p >= m.minute) {
                return Err(fail(format!(
                    "series {:?}: minutes out of order at {}",
                    r.series, m.minute
                )));
            }
            previous = Some(m.minute);
            readings = readings.saturating_add(m.n as u64);
        }
    }
    if readings > limits.max_batch_readings as u64 {
        return Err(fail(format!(
            "{readings} readings summarised, over the limit of {}",
            limits.max_batch_readings
        )));
    }
    Ok(())
}

/// What is wrong with one minute's aggregate, if anything.
fn check_minute(m: &MinuteAgg) -> Result<(), &'static str> {
    if m.minute.rem_euclid(MINUTE_MS) != 0 || !(0..MAX_TS_MS).contains(&m.minute) {
        return Err("not the start of a minute between 1970 and 9999");
    }
    if m.n <= 0 {
        return Err("no readings");
    }
    let values = [m.sum, m.min, m.max, m.first.1, m.last.1];
    if values.iter().any(|v| !v.is_finite()) {
        return Err("a value that is not finite");
    }
    if m.min > m.max {
        return Err("min above max");
    }
    let inside = |v: f64| m.min <= v && v <= m.max;
    if !inside(m.first.1) || !inside(m.last.1) {
        return Err("first or last value outside min..max");
    }
    let in_minute = |t: i64| m.minute <= t && t < m.minute + MINUTE_MS;
    if !in_minute(m.first.0) || !in_minute(m.last.0) || m.first.0 > m.last.0 {
        return Err("first and last times not in order inside the minute");
    }
    if m.n == 1 && (m.first != m.last || m.min != m.max) {
        return Err("one reading with two different first and last");
    }
    Ok(())
}

/// The units one SQLite prune step removed, kept together until the step ends so their
/// rollups go in groups ([`group_pruned_rollups`]).
#[derive(Default)]
pub(crate) struct StepRollups {
    units: Vec<PrunedUnitMinutes<i64>>,
    series_ids: HashMap<String, i64>,
}

impl StepRollups {
    /// Adds a pruned unit of series `series_id`.
    pub(crate) fn add(&mut self, series_id: i64, unit: PrunedUnitMinutes<i64>) {
        if !self.series_ids.contains_key(&unit.series) {
            self.series_ids.insert(unit.series.clone(), series_id);
        }
        self.units.push(unit);
    }
}

impl Writer {
    /// Keeps the rollups of the units a prune step removed, grouped, with the changes that
    /// carry them (in the step's transaction). A carrier's rows are written once: each of
    /// its groups was opened by its own unit of that series, which is pruned once.
    pub(crate) fn keep_step_rollups(&mut self, step: StepRollups) -> Result<()> {
        let carried = group_pruned_rollups(step.units, self.limits.max_batch_readings);
        for (change_id, rollups) in carried {
            for r in rollups {
                self.keep_pruned_rollups(change_id, step.series_ids[&r.series], &r.minutes)?;
            }
        }
        Ok(())
    }

    /// Keeps the per-minute rollups `minutes` of series `series_id` with change `change_id`
    /// (a unit's or a group's, pruned here or received with the change). Written once per
    /// change and series (a change is stored once, a unit pruned once).
    pub(crate) fn keep_pruned_rollups(
        &mut self,
        change_id: i64,
        series_id: i64,
        minutes: &[MinuteAgg],
    ) -> Result<()> {
        let mut st = self
            .conn
            .prepare_cached(
                "INSERT OR IGNORE INTO pruned_rollups (series_id, minute, change_id, n, total, \
                 vmin, vmax, first_ts, first_value, last_ts, last_value) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )
            .map_err(StoreError::db("keeping the rollups of pruned readings"))?;
        for m in minutes {
            st.execute(params![
                series_id, m.minute, change_id, m.n, m.sum, m.min, m.max, m.first.0, m.first.1,
                m.last.0, m.last.1
            ])
            .map_err(StoreError::db("keeping the rollups of pruned readings"))?;
        }
        Ok(())
    }
}

/// The pruned rollups kept with each of the changes `ids` that has some, series by name and
/// minutes in order (what `Change::pruned_rollups` carries).
pub(crate) fn load_pruned_rollups(
    conn: &Connection,
    ids: &[i64],
) -> Result<HashMap<i64, Vec<PrunedRollup>>> {
    let mut out: HashMap<i64, Vec<PrunedRollup>> = HashMap::new();
    let context = "reading the rollups of pruned readings";
    for chunk in statement_chunks(ids, ID_CHUNK) {
        let sql = list_sql(
            "SELECT p.change_id, s.name, p.minute, p.n, p.total, p.vmin, p.vmax, p.first_ts, \
             p.first_value, p.last_ts, p.last_value FROM pruned_rollups p \
             JOIN series s ON s.id = p.series_id WHERE p.change_id IN (",
            chunk.len(),
            ") ORDER BY p.change_id, s.name, p.minute",
        );
        with_statement(conn, &sql, |st| {
            let mut b = Binder::new(st);
            for id in chunk {
                b.bind(*id)?;
            }
            let mut rows = st.raw_query();
            while let Some(r) = rows.next()? {
                let (id, series): (i64, String) = (r.get(0)?, r.get(1)?);
                let minute = MinuteAgg::from_row(r, 2)?;
                push_pruned_minute(out.entry(id).or_default(), series, minute);
            }
            Ok(())
        })
        .map_err(StoreError::db(context))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{ActorId, Hlc, ReadingBatch, SeriesPoints};
    use std::collections::BTreeSet;

    fn test_actor() -> ActorId {
        ActorId([7; 16])
    }

    fn change(rollups: Vec<PrunedRollup>) -> Change {
        let mut batch = ReadingBatch::new();
        batch.series.push(SeriesPoints {
            name: "held".into(),
            unit: None,
            meta: Default::default(),
            ts: vec![1_000],
            values: vec![1.0],
        });
        Change {
            actor: test_actor(),
            seq: 3,
            hlc: Hlc(1),
            body: ChangeBody::Readings(batch),
            seal: None,
            pruned_rollups: rollups,
        }
    }

    fn minute() -> MinuteAgg {
        MinuteAgg {
            minute: 120_000,
            n: 2,
            sum: 3.0,
            min: 1.0,
            max: 2.0,
            first: (120_001, 1.0),
            last: (179_999, 2.0),
        }
    }

    fn one(minutes: Vec<MinuteAgg>) -> Vec<PrunedRollup> {
        vec![PrunedRollup {
            series: "gone".into(),
            minutes,
        }]
    }

    fn unit(change: i64, actor: u8, seq: u64, series: &str, ts: &[i64]) -> PrunedUnitMinutes<i64> {
        let values: Vec<f64> = ts.iter().map(|t| (t % 7) as f64 - 3.0).collect();
        PrunedUnitMinutes::new((change, ActorId([actor; 16]), seq), series, ts, &values)
    }

    #[test]
    fn groups_are_what_ingest_folded_carried_by_their_first_change() {
        // Actor 1: one-reading changes 3..=10, a reading every 10 s from minute 1 (the
        // agent's default batching); actor 2: one change of 4 readings in minute 1.
        let mut units: Vec<PrunedUnitMinutes<i64>> = (3..=10u64)
            .rev() // any order in: a step scans by time, not seq
            .map(|seq| {
                unit(
                    100 + seq as i64,
                    1,
                    seq,
                    "s",
                    &[60_000 + (seq as i64 - 3) * 10_000],
                )
            })
            .collect();
        units.push(unit(7, 2, 1, "s", &[60_001, 60_002, 60_003, 60_004]));
        // Actor 3: one reading in each of three minutes, a sparse series.
        for seq in 1..=3u64 {
            units.push(unit(
                200 + seq as i64,
                3,
                seq,
                "s",
                &[seq as i64 * MINUTE_MS],
            ));
        }
        let carried = group_pruned_rollups(units.clone(), 1000);
        // Actor 1's minute 1 (seqs 3..=8, 6 readings) by seq 3, its minute 2 (seqs 9 and
        // 10: 2 readings, but the series averages 4 a minute) by seq 9; actor 2's by its
        // own change; actor 3's not at all.
        assert_eq!(
            carried.keys().copied().collect::<Vec<_>>(),
            vec![7, 103, 109]
        );
        assert_eq!(carried[&109][0].minutes[0].n, 2);
        let by_3 = &carried[&103];
        assert_eq!(by_3.len(), 1);
        assert_eq!(by_3[0].minutes.len(), 1);
        // What ingest folded for those six changes, one after the other.
        let mut expected: Option<MinuteAgg> = None;
        for seq in 3..=8 {
            let u = units
                .iter()
                .find(|u| u.actor == ActorId([1; 16]) && u.seq == seq);
            let m = u.unwrap().minutes[0];
            match &mut expected {
                Some(e) => e.merge(&m),
                None => expected = Some(m),
            }
        }
        assert_eq!(by_3[0].minutes[0], expected.unwrap());
        assert_eq!(by_3[0].minutes[0].n, 6);
        assert_eq!(by_3[0].series, "s");
        assert_eq!(carried[&7][0].minutes[0].n, 4);
        let c = change(by_3.clone());
        check_pruned_rollups(&c, &Limits::default()).unwrap();
    }

    #[test]
    fn a_carrier_summarises_at_most_the_limit() {
        // 30 one-reading changes of 3 series in one minute, a limit of 40 readings a change.
        let units: Vec<PrunedUnitMinutes<i64>> = (1..=30u64)
            .flat_map(|seq| {
                ["a", "b", "c"].map(|s| unit(seq as i64, 1, seq, s, &[60_000 + seq as i64 * 100]))
            })
            .collect();
        let carried = group_pruned_rollups(units, 40);
        let mut total = 0;
        for rollups in carried.values() {
            let n: i64 = rollups.iter().flat_map(|r| &r.minutes).map(|m| m.n).sum();
            assert!(n <= 40, "{n}");
            total += n;
        }
        assert_eq!(total, 90, "every reading is in exactly one group");
        assert!(carried.len() >= 3, "{:?}", carried.keys());
    }

    #[test]
    fn malformed_rollups_are_refused_naming_the_change() {
        let limits = Limits::default();
        let bad: Vec<(&str, Vec<PrunedRollup>)> = vec![
            ("no readings", one(vec![MinuteAgg { n: 0, ..minute() }])),
            (
                "min above max",
                one(vec![MinuteAgg {
                    min: 9.0,
                    ..minute()
                }]),
            ),
            (
                "not finite",
                one(vec![MinuteAgg {
                    sum: f64::NAN,
                    ..minute()
                }]),
            ),
            (
                "start of a minute",
                one(vec![MinuteAgg {
                    minute: 1,
                    ..minute()
                }]),
            ),
            (
                "inside the minute",
                one(vec![MinuteAgg {
                    last: (180_000, 2.0),
                    ..minute()
                }]),
            ),
            ("out of order", one(vec![minute(), minute()])),
            ("no minutes", one(vec![])),
            (
                "both held and summarised",
                vec![PrunedRollup {
                    series: "held".into(),
                    minutes: vec![minute()],
                }],
            ),
            (
                "summarised twice",
                [one(vec![minute()]), one(vec![minute()])].concat(),
            ),
            (
                "over the limit",
                one(vec![MinuteAgg {
                    n: i64::MAX,
                    ..minute()
                }]),
            ),
        ];
        for (why, rollups) in bad {
            let err = check_pruned_rollups(&change(rollups), &limits).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(why), "{why}: {text}");
            assert!(text.contains(&format!("{}:3", test_actor())), "{text}");
        }
        let mut doc = change(one(vec![minute()]));
        doc.body = ChangeBody::Doc(crate::DocWrite {
            key: "k".into(),
            value: None,
            context: vec![],
            pruned: false,
        });
        assert!(check_pruned_rollups(&doc, &limits).is_err());
    }

    fn arb_minute() -> impl Strategy<Value = MinuteAgg> {
        (
            0i64..1_000_000,
            1i64..1000,
            -1e9f64..1e9,
            0u16..60_000,
            0u16..60_000,
        )
            .prop_map(|(m, n, v, a, b)| {
                let minute = m * MINUTE_MS;
                let (lo, hi) = (a.min(b) as i64, a.max(b) as i64);
                if n == 1 {
                    // One reading: it is first and last, min and max.
                    return MinuteAgg::new(minute, minute + lo, v);
                }
                MinuteAgg {
                    minute,
                    n,
                    sum: v * n as f64,
                    min: v - 1.0,
                    max: v + 1.0,
                    first: (minute + lo, v),
                    last: (minute + hi, v + 1.0),
                }
            })
    }

    /// Units of a prune step: (actor 0–2, seq 1–40, series a–c, readings at second offsets
    /// within minutes 0–3), each (actor, seq, series) once; values whole quarters, so sums
    /// are exact in any order.
    fn arb_units() -> impl Strategy<Value = Vec<PrunedUnitMinutes<(u8, u64)>>> {
        proptest::collection::btree_map(
            (0u8..3, 1u64..40, 0usize..3),
            proptest::collection::btree_set((0i64..4 * 60, -8i32..8), 1..12),
            1..60,
        )
        .prop_map(|units| {
            units
                .into_iter()
                .map(|((actor, seq, series), readings)| {
                    let mut readings: Vec<(i64, i32)> = readings.into_iter().collect();
                    readings.sort();
                    readings.dedup_by_key(|r| r.0);
                    let ts: Vec<i64> = readings.iter().map(|r| r.0 * 1000).collect();
                    let values: Vec<f64> = readings.iter().map(|r| r.1 as f64 / 4.0).collect();
                    let name = ["a", "b", "c"][series];
                    let carrier = ((actor, seq), ActorId([actor; 16]), seq);
                    PrunedUnitMinutes::new(carrier, name, &ts, &values)
                })
                .collect()
        })
    }

    /// Folds aggregates per key, in the order given.
    fn fold_into<K: Ord>(out: &mut BTreeMap<K, MinuteAgg>, key: K, m: &MinuteAgg) {
        match out.get_mut(&key) {
            Some(a) => a.merge(m),
            None => {
                out.insert(key, *m);
            }
        }
    }

    proptest! {
        /// Grouping loses and doubles nothing: per actor, series and minute, the groups kept
        /// fold to what the units fold to, for every dense (actor, series); a carrier holds a
        /// unit of each series it carries and at most `cap` readings; and what it carries
        /// passes the receiver's check.
        #[test]
        fn groups_fold_to_their_units(units in arb_units(), cap in 33usize..200) {
            // A change holds at most 3 × 11 readings here, and never more than the cap in a
            // store (the same `max_batch_readings` bounds both).
            let carried = group_pruned_rollups(units.clone(), cap);
            let mut want: BTreeMap<(u8, String, i64), MinuteAgg> = BTreeMap::new();
            let mut density: BTreeMap<(u8, String), (i64, BTreeSet<i64>)> = BTreeMap::new();
            for u in &units {
                for m in &u.minutes {
                    fold_into(&mut want, (u.actor.0[0], u.series.clone(), m.minute), m);
                    let d = density.entry((u.actor.0[0], u.series.clone())).or_default();
                    d.0 += m.n;
                    d.1.insert(m.minute);
                }
            }
            want.retain(|(a, s, _), _| {
                let (n, minutes) = &density[&(*a, s.clone())];
                *n >= (KEEP_MIN_READINGS_PER_MINUTE * minutes.len()) as i64
            });
            let mut got: BTreeMap<(u8, String, i64), MinuteAgg> = BTreeMap::new();
            for ((actor, seq), rollups) in &carried {
                let mut total = 0;
                for r in rollups {
                    prop_assert!(
                        units.iter().any(|u| u.change == (*actor, *seq) && u.series == r.series),
                        "carrier {actor}:{seq} has no unit of {}", r.series
                    );
                    for m in &r.minutes {
                        total += m.n;
                        fold_into(&mut got, (*actor, r.series.clone(), m.minute), m);
                    }
                }
                prop_assert!(total as usize <= cap, "{total} > {cap}");
                let mut c = change(rollups.clone());
                c.actor = ActorId([*actor; 16]);
                c.seq = *seq;
                check_pruned_rollups(&c, &Limits::default()).unwrap();
            }
            prop_assert_eq!(got.len(), want.len());
            for (key, w) in &want {
                let g = &got[key];
                prop_assert_eq!((g.n, g.sum, g.min, g.max), (w.n, w.sum, w.min, w.max), "{:?}", key);
                prop_assert_eq!((g.first, g.last), (w.first, w.last), "{:?}", key);
            }
        }
    }

    proptest! {
        #[test]
        fn the_codec_round_trips(minutes in proptest::collection::vec(arb_minute(), 1..20)) {
            let mut minutes = minutes;
            minutes.sort_by_key(|m| m.minute);
            minutes.dedup_by_key(|m| m.minute);
            let c = change(one(minutes));
            check_pruned_rollups(&c, &Limits::default()).unwrap();
            let back = Change::from_cbor(&c.to_cbor(), &Limits::default()).unwrap();
            prop_assert_eq!(back, c);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(c) = Change::from_cbor(&bytes, &Limits::default()) {
                check_pruned_rollups(&c, &Limits::default()).unwrap();
            }
        }

        #[test]
        fn corrupted_rollups_are_refused_or_valid(
            minutes in proptest::collection::vec(arb_minute(), 1..8),
            flip in any::<usize>(),
            to in any::<u8>(),
        ) {
            let mut bytes = change(one(minutes)).to_cbor();
            let at = flip % bytes.len();
            bytes[at] = to;
            if let Ok(c) = Change::from_cbor(&bytes, &Limits::default()) {
                check_pruned_rollups(&c, &Limits::default()).unwrap();
            }
        }
    }
}
