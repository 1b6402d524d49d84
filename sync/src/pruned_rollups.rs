//! Rollups of pruned readings: what a readings change keeps of the units retention pruned
//! from it, so a peer that receives the change later still gets their share of the
//! per-minute rollups. Owns the wire type ([`PrunedRollup`]), its hostile-input check
//! ([`check_pruned_rollups`]), the summary of a unit ([`unit_rollup`]) and the SQLite table
//! `pruned_rollups` (migration 0010: [`Writer::keep_pruned_rollups`], [`load_pruned_rollups`]).
//! Who calls them: `retention.rs` keeps a unit's as it prunes it, `ingest.rs` folds a
//! received change's into the rollups and keeps them, `log_read.rs` serves them with their
//! change, `correct.rs` folds them back when it recomputes a minute.
//!
//! **Why per unit, not `rollup_1m`.** A rollup row sums every change's readings of a
//! minute; a receiver that already holds some of those changes raw would count them twice.
//! A unit's own per-minute aggregates are exactly what ingest folded into the rollups for
//! it ([`MinuteAgg`] per minute, computed over its readings in time order), so folding them
//! at the change's place in the apply order gives the receiver the rollups it would have
//! had from the raw readings — bit for bit when changes arrive in the same order.
//!
//! **Trust.** The field is not covered by the change's signature (the seal hashes the body
//! and the pruned unit hashes only, `seal.rs`): rollups are derived data, trusted as far as
//! the peer that sent them. What is checked is that they cannot hurt the receiver: bounded
//! counts, `n > 0`, finite values, `min ≤ max` with first and last inside, times inside
//! their minute, minutes strictly increasing, and each series named once and not among the
//! series the change still holds (a summary beside raw readings would count them twice).
//!
//! **Where kept.** A unit's rollups are one row per minute it has readings in, about 100
//! bytes on SQLite, while a raw reading takes about 27 (measured: 20 series at 1 Hz for
//! 6 hours, pruned). A unit of one reading — the agent's default batching of one second
//! makes most units that small — would cost ~4× the reading it replaces, so pruning would
//! grow the store (and the disk budget's pruning would free nothing). So retention keeps a
//! unit's rollups only when it averages at least [`KEEP_MIN_READINGS_PER_MINUTE`] readings
//! per minute ([`unit_rollup`]): then they take at most about the bytes of its readings
//! (measured: 38 % for 10-second batches, 6 % for one-minute batches). Smaller units are
//! pruned as before, and a peer that receives them later lacks their share of the rollups
//! (sync/README.md, "Rollups of pruned readings", says what would cover them).
//!
//! **Times** are those the readings are stored at (after a time correction, if any), as in
//! the sender's rollups; readings awaiting a correction are never pruned (`retention.rs`).

use std::collections::{HashMap, HashSet};

use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};

use crate::ingest::{MINUTE_MS, MinuteAgg, minute_aggs};
use crate::multirow::{Binder, list_sql, statement_chunks, with_statement};
use crate::writer::Writer;
use crate::{Change, ChangeBody, Limits, MAX_TS_MS, Result, StoreError, validate_series_name};

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

/// Retention keeps a unit's rollups only when it averages at least this many readings per
/// minute it has readings in (module header, "Where kept").
pub const KEEP_MIN_READINGS_PER_MINUTE: usize = 4;

/// The rollups retention keeps of a unit it prunes: its readings' per-minute aggregates
/// (what ingest added to the rollups for it), from its readings as stored (`ts` sorted, as
/// a normalized batch holds them) — or `None` when the unit has fewer than
/// [`KEEP_MIN_READINGS_PER_MINUTE`] readings per minute on average, so that keeping them
/// would cost about as much as keeping the readings. Both backends decide with this, so
/// replicas under one policy keep the same.
pub fn unit_rollup(series: &str, ts: &[i64], values: &[f64]) -> Option<PrunedRollup> {
    let minutes = minute_aggs(ts, values);
    (!minutes.is_empty() && ts.len() >= KEEP_MIN_READINGS_PER_MINUTE * minutes.len()).then(|| {
        PrunedRollup {
            series: series.to_owned(),
            minutes,
        }
    })
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
    if let Some(seal) = &change.seal
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

impl Writer {
    /// Keeps the per-minute rollups of a pruned unit (series `series_id`) of change
    /// `change_id`. A unit's rows are written once (a change is stored once).
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

    #[test]
    fn a_unit_rollup_is_what_ingest_folded() {
        let ts = [
            60_000, 60_001, 60_002, 60_003, 120_000, 120_001, 120_002, 120_003,
        ];
        let values = [1.0, -2.0, 0.0, 0.0, 5.0, 5.0, 5.0, 5.0];
        let r = unit_rollup("s", &ts, &values).expect("4 readings a minute: kept");
        assert_eq!(r.minutes.len(), 2);
        assert_eq!((r.minutes[0].n, r.minutes[0].sum), (4, -1.0));
        assert_eq!((r.minutes[0].min, r.minutes[0].max), (-2.0, 1.0));
        assert_eq!(r.minutes[1].first, (120_000, 5.0));
        check_pruned_rollups(&change(vec![r]), &Limits::default()).unwrap();
        // Fewer readings a minute: keeping them would cost about as much as the readings.
        assert_eq!(unit_rollup("s", &ts[..7], &values[..7]), None);
        assert_eq!(unit_rollup("s", &[60_000], &[1.0]), None);
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
