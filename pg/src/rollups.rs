//! The per-minute rollups (`rollup_1m`, migrations 0003 and 0004): **one row per (series,
//! minute, actor)**, maintained inside the apply transaction, which already holds the row
//! lock of every actor it writes (`apply.rs`). Knows nothing of changes or the version
//! vector; `rows.rs` reports what it wrote into a [`RollupWork`] and `apply.rs` calls
//! [`update`] once per transaction, after the rows are written.
//!
//! **Folded, per actor.** An actor's row of a minute is its readings of that minute folded
//! one by one, in (seq, ts) order, with kdelta-sync's [`MinuteAgg::add`] (SQLite's own
//! fold): count, a total whose every addition is held within ±`f64::MAX`
//! ([`kdelta_sync::saturating_sum`]), min, max, first (earliest; at equal times the smaller
//! value) and last (latest; at equal times the larger value). Every
//! replica applies an actor's changes in seq order (gaps are refused), so the row is a
//! function of the actor's readings whichever replica applied them. An apply reads only the
//! rows of its own actors (`SELECT … FOR UPDATE`, uncontended: the actor lock already
//! serialises their writers; the row lock only orders it against retention deleting old
//! rows), folds its readings onto them in memory and writes them back: no reading is read
//! back, and devices writing one series name (`system.load1` on a thousand Pis) never wait
//! for each other. The queries merge a minute's rows across actors (`query.rs`).
//!
//! **Recomputed when readings move.** A time correction moves an actor's readings between
//! minutes; a total cannot be un-added, so the actor's rows of the minutes readings left and
//! entered are computed again from its readings, in the same (seq, ts) order, by the SQL
//! aggregate `kdelta_saturating_sum` (migration 0004: the same additions as
//! `saturating_sum`). That reads every reading of those minutes of the series (to find the
//! actor's), which only corrections pay.
//!
//! **Rollups of pruned units** a received change carries (`pruned_rollups` on the wire,
//! kept in the table of migration 0008 by [`keep_pruned_rollups`]) are folded onto the
//! actor's rows with [`MinuteAgg::merge`] at the change's place in seq order: they are what
//! the change's readings added before the sender pruned them. A correction's recompute,
//! which rebuilds a minute from the readings, folds them back after (`fold_back_pruned`).
//!
//! Rows of actor 0 hold what schema v3 rows held for minutes whose readings were all pruned
//! before the upgrade (migration 0004); they are merged like any other.

use std::collections::{BTreeMap, BTreeSet};

use kdelta_sync::MinuteAgg;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Postgres, Row, Transaction};

use crate::error::{PgError, Result};

/// One minute in ms: the rollup granularity (as on SQLite).
pub(crate) const MINUTE_MS: i64 = 60_000;

/// The minute (its start, unix ms) of a timestamp.
pub(crate) fn minute_of(ts: i64) -> i64 {
    ts.div_euclid(MINUTE_MS) * MINUTE_MS
}

/// The nine columns `minute, n, total, vmin, vmax, first_ts, first_value, last_ts,
/// last_value` of a rollup row, from column `at`.
pub(crate) fn agg_from_row(r: &PgRow, at: usize) -> std::result::Result<MinuteAgg, sqlx::Error> {
    Ok(MinuteAgg {
        minute: r.try_get(at)?,
        n: r.try_get(at + 1)?,
        sum: r.try_get(at + 2)?,
        min: r.try_get(at + 3)?,
        max: r.try_get(at + 4)?,
        first: (r.try_get(at + 5)?, r.try_get(at + 6)?),
        last: (r.try_get(at + 7)?, r.try_get(at + 8)?),
    })
}

/// A rollup row's key: series id, minute start, actor (`actors.idx`).
type Key = (i64, i64, i64);

/// One thing folded into a rollup row: a reading, or the aggregate of a minute's readings
/// a received change no longer holds (the rollups of its pruned units).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fold {
    Reading(i64, f64),
    Minute(MinuteAgg),
}

/// What an apply transaction did to the readings, for the rollups: readings and rollups of
/// pruned units added (in the order they are folded) and the minutes corrections moved
/// readings out of or into.
#[derive(Debug, Default)]
pub(crate) struct RollupWork {
    added: BTreeMap<Key, Vec<Fold>>,
    moved: BTreeSet<Key>,
}

impl RollupWork {
    /// Readings of one series written by one change of `actor_idx`; called in seq order
    /// for each actor, with each series' times sorted (as a change holds them).
    pub fn add(&mut self, series_id: i64, actor_idx: i64, ts: &[i64], values: &[f64]) {
        for (&t, &v) in ts.iter().zip(values) {
            self.added
                .entry((series_id, minute_of(t), actor_idx))
                .or_default()
                .push(Fold::Reading(t, v));
        }
    }

    /// The rollups of a pruned unit of one series that a received change of `actor_idx`
    /// carries (checked by `Change::validate`), in seq order with [`add`](Self::add).
    pub fn add_pruned(&mut self, series_id: i64, actor_idx: i64, minutes: &[MinuteAgg]) {
        for m in minutes {
            self.added
                .entry((series_id, m.minute, actor_idx))
                .or_default()
                .push(Fold::Minute(*m));
        }
    }

    /// A reading of `actor_idx` left or entered `minute` (a time correction).
    pub fn moved(&mut self, series_id: i64, actor_idx: i64, minute: i64) {
        self.moved.insert((series_id, minute, actor_idx));
    }
}

/// The rows of some keys, locked until commit, in key order.
const LOCK_ROWS: &str = "SELECT o.series_id, o.actor_idx, o.minute, o.n, o.total, o.vmin, o.vmax, \
       o.first_ts, o.first_value, o.last_ts, o.last_value \
     FROM rollup_1m o JOIN unnest($1::int8[], $2::int8[], $3::int8[]) AS t(s, m, a) \
       ON o.series_id = t.s AND o.minute = t.m AND o.actor_idx = t.a \
     ORDER BY o.series_id, o.minute, o.actor_idx FOR UPDATE OF o";

/// Writes rows folded in memory over the stored ones.
const WRITE_ROWS: &str = "INSERT INTO rollup_1m \
       (series_id, minute, actor_idx, n, total, vmin, vmax, first_ts, first_value, last_ts, last_value) \
     SELECT * FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::int8[], $5::float8[], $6::float8[], \
       $7::float8[], $8::int8[], $9::float8[], $10::int8[], $11::float8[]) \
     ON CONFLICT (series_id, minute, actor_idx) DO UPDATE SET n = EXCLUDED.n, total = EXCLUDED.total, \
       vmin = EXCLUDED.vmin, vmax = EXCLUDED.vmax, first_ts = EXCLUDED.first_ts, \
       first_value = EXCLUDED.first_value, last_ts = EXCLUDED.last_ts, last_value = EXCLUDED.last_value";

/// Recomputes the rows of some keys from the actor's readings of the minute, in (seq, ts)
/// order, and deletes the rows of keys left without readings. The statement of migration
/// 0004's rebuild.
const RECOMPUTE: &str = "WITH t AS (SELECT s, m, a FROM unnest($1::int8[], $2::int8[], $3::int8[]) AS t(s, m, a)), \
     r AS MATERIALIZED ( \
       SELECT t.s, t.m, t.a, c.seq, r.ts, r.value FROM t \
       JOIN readings r ON r.series_id = t.s AND r.ts >= t.m AND r.ts < t.m + 60000 \
       JOIN changes c ON c.id = r.change_id AND c.actor_idx = t.a), \
     g AS ( \
       SELECT s, m, a, count(*) AS n, kdelta_saturating_sum(value ORDER BY seq, ts) AS total, \
              min(value) AS vmin, max(value) AS vmax, min(ts) AS first_ts, max(ts) AS last_ts \
       FROM r GROUP BY s, m, a), \
     emptied AS ( \
       DELETE FROM rollup_1m o USING t \
       WHERE o.series_id = t.s AND o.minute = t.m AND o.actor_idx = t.a \
       AND NOT EXISTS (SELECT 1 FROM g WHERE g.s = t.s AND g.m = t.m AND g.a = t.a)) \
     INSERT INTO rollup_1m \
       (series_id, minute, actor_idx, n, total, vmin, vmax, first_ts, first_value, last_ts, last_value) \
     SELECT g.s, g.m, g.a, g.n, g.total, g.vmin, g.vmax, \
            g.first_ts, min(r.value) FILTER (WHERE r.ts = g.first_ts), \
            g.last_ts, max(r.value) FILTER (WHERE r.ts = g.last_ts) \
     FROM g JOIN r ON r.s = g.s AND r.m = g.m AND r.a = g.a \
     GROUP BY g.s, g.m, g.a, g.n, g.total, g.vmin, g.vmax, g.first_ts, g.last_ts \
     ON CONFLICT (series_id, minute, actor_idx) DO UPDATE SET n = EXCLUDED.n, total = EXCLUDED.total, \
       vmin = EXCLUDED.vmin, vmax = EXCLUDED.vmax, first_ts = EXCLUDED.first_ts, \
       first_value = EXCLUDED.first_value, last_ts = EXCLUDED.last_ts, last_value = EXCLUDED.last_value";

/// Brings the rollup rows of the transaction's actors up to date with what it wrote
/// (module header): readings added are folded onto the stored rows, the keys corrections
/// moved readings of are recomputed (after the fold, so a page holding both ends with the
/// recomputed row).
pub(crate) async fn update(tx: &mut Transaction<'_, Postgres>, work: RollupWork) -> Result<()> {
    let ctx = "updating the rollups";
    let RollupWork { added, moved } = work;
    let added: BTreeMap<Key, Vec<Fold>> = added
        .into_iter()
        .filter(|(k, _)| !moved.contains(k))
        .collect();
    if !added.is_empty() {
        let keys = Columns::of(added.keys().copied());
        let stored = sqlx::query(LOCK_ROWS)
            .bind(&keys.0)
            .bind(&keys.1)
            .bind(&keys.2)
            .fetch_all(&mut **tx)
            .await
            .map_err(PgError::db(ctx))?;
        let mut rows: BTreeMap<Key, MinuteAgg> = BTreeMap::new();
        for r in &stored {
            let key = (
                r.try_get(0).map_err(PgError::db(ctx))?,
                r.try_get(2).map_err(PgError::db(ctx))?,
                r.try_get(1).map_err(PgError::db(ctx))?,
            );
            rows.insert(key, agg_from_row(r, 2).map_err(PgError::db(ctx))?);
        }
        for (key, folds) in &added {
            for fold in folds {
                match *fold {
                    Fold::Reading(t, v) => rows
                        .entry(*key)
                        .and_modify(|row| row.add(t, v))
                        .or_insert(MinuteAgg::new(key.1, t, v)),
                    Fold::Minute(m) => rows
                        .entry(*key)
                        .and_modify(|row| row.merge(&m))
                        .or_insert(m),
                };
            }
        }
        write_rows(tx, &rows).await?;
    }
    if !moved.is_empty() {
        let keys = Columns::of(moved.iter().copied());
        sqlx::query(RECOMPUTE)
            .bind(&keys.0)
            .bind(&keys.1)
            .bind(&keys.2)
            .execute(&mut **tx)
            .await
            .map_err(PgError::db(ctx))?;
        fold_back_pruned(tx, &keys).await?;
    }
    Ok(())
}

/// The rollups of pruned units of the actor's changes in the recomputed `keys` — readings
/// that are gone, so the recompute from readings left them out — folded back onto the
/// rows, in seq order.
async fn fold_back_pruned(tx: &mut Transaction<'_, Postgres>, keys: &Columns) -> Result<()> {
    let ctx = "updating the rollups";
    let kept = sqlx::query(
        "SELECT p.series_id, c.actor_idx, p.minute, p.n, p.total, p.vmin, p.vmax, \
           p.first_ts, p.first_value, p.last_ts, p.last_value \
         FROM pruned_rollups p JOIN changes c ON c.id = p.change_id \
         JOIN unnest($1::int8[], $2::int8[], $3::int8[]) AS t(s, m, a) \
           ON p.series_id = t.s AND p.minute = t.m AND c.actor_idx = t.a \
         ORDER BY p.series_id, p.minute, c.actor_idx, c.seq",
    )
    .bind(&keys.0)
    .bind(&keys.1)
    .bind(&keys.2)
    .fetch_all(&mut **tx)
    .await
    .map_err(PgError::db(ctx))?;
    if kept.is_empty() {
        return Ok(());
    }
    let key_of = |r: &PgRow| -> std::result::Result<Key, sqlx::Error> {
        Ok((r.try_get(0)?, r.try_get(2)?, r.try_get(1)?))
    };
    let mut rows: BTreeMap<Key, MinuteAgg> = BTreeMap::new();
    let touched = Columns::of(
        kept.iter()
            .map(key_of)
            .collect::<std::result::Result<BTreeSet<Key>, _>>()
            .map_err(PgError::db(ctx))?
            .into_iter(),
    );
    let stored = sqlx::query(LOCK_ROWS)
        .bind(&touched.0)
        .bind(&touched.1)
        .bind(&touched.2)
        .fetch_all(&mut **tx)
        .await
        .map_err(PgError::db(ctx))?;
    for r in stored.iter().chain(&kept) {
        let key = key_of(r).map_err(PgError::db(ctx))?;
        let agg = agg_from_row(r, 2).map_err(PgError::db(ctx))?;
        rows.entry(key)
            .and_modify(|row| row.merge(&agg))
            .or_insert(agg);
    }
    write_rows(tx, &rows).await
}

/// Keeps the per-minute rollups of a pruned unit (series `series_id`) of change `change_id`
/// (migration 0008), in the caller's transaction: retention's as it prunes the unit, an
/// apply's for a change received pruned. Written once per unit (a change is stored once).
pub(crate) async fn keep_pruned_rollups(
    conn: &mut PgConnection,
    change_id: i64,
    series_id: i64,
    minutes: &[MinuteAgg],
) -> Result<()> {
    let minute: Vec<i64> = minutes.iter().map(|a| a.minute).collect();
    let query = sqlx::query(
        "INSERT INTO pruned_rollups (series_id, change_id, minute, n, total, vmin, vmax, \
           first_ts, first_value, last_ts, last_value) \
         SELECT $1, $2, * FROM unnest($3::int8[], $4::int8[], $5::float8[], $6::float8[], \
           $7::float8[], $8::int8[], $9::float8[], $10::int8[], $11::float8[]) \
         ON CONFLICT DO NOTHING",
    )
    .bind(series_id)
    .bind(change_id)
    .bind(minute);
    bind_values(query, minutes)
        .execute(conn)
        .await
        .map_err(PgError::db("keeping the rollups of pruned readings"))?;
    Ok(())
}

/// Writes `rows` (folded in memory) over the stored ones, in one statement.
async fn write_rows(
    tx: &mut Transaction<'_, Postgres>,
    rows: &BTreeMap<Key, MinuteAgg>,
) -> Result<()> {
    let keys = Columns::of(rows.keys().copied());
    let values: Vec<MinuteAgg> = rows.values().copied().collect();
    let query = sqlx::query(WRITE_ROWS)
        .bind(keys.0)
        .bind(keys.1)
        .bind(keys.2);
    bind_values(query, &values)
        .execute(&mut **tx)
        .await
        .map_err(PgError::db("updating the rollups"))?;
    Ok(())
}

/// Binds the value columns of `aggs` as arrays for `unnest`, in the order of a rollup row:
/// n, total, vmin, vmax, first_ts, first_value, last_ts, last_value.
fn bind_values<'q>(
    query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    aggs: &[MinuteAgg],
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    let float = |f: fn(&MinuteAgg) -> f64| aggs.iter().map(f).collect::<Vec<f64>>();
    let int = |f: fn(&MinuteAgg) -> i64| aggs.iter().map(f).collect::<Vec<i64>>();
    query
        .bind(int(|a| a.n))
        .bind(float(|a| a.sum))
        .bind(float(|a| a.min))
        .bind(float(|a| a.max))
        .bind(int(|a| a.first.0))
        .bind(float(|a| a.first.1))
        .bind(int(|a| a.last.0))
        .bind(float(|a| a.last.1))
}

/// Keys as three parallel arrays (series ids, minutes, actors), for `unnest`.
struct Columns(Vec<i64>, Vec<i64>, Vec<i64>);

impl Columns {
    fn of(keys: impl Iterator<Item = Key>) -> Columns {
        let mut c = Columns(Vec::new(), Vec::new(), Vec::new());
        for (s, m, a) in keys {
            c.0.push(s);
            c.1.push(m);
            c.2.push(a);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_round_down_also_before_1970() {
        assert_eq!(minute_of(0), 0);
        assert_eq!(minute_of(59_999), 0);
        assert_eq!(minute_of(60_000), 60_000);
        assert_eq!(minute_of(-1), -60_000);
    }

    #[test]
    fn readings_fold_per_actor_and_minute_in_the_order_given() {
        let mut work = RollupWork::default();
        work.add(7, 2, &[59_000, 61_000], &[1.0, 2.0]);
        work.add(7, 1, &[59_500], &[5.0]);
        work.add(7, 2, &[59_900], &[3.0]);
        work.moved(7, 1, 0);
        let keys: Vec<_> = work.added.keys().copied().collect();
        assert_eq!(keys, [(7, 0, 1), (7, 0, 2), (7, 60_000, 2)]);
        assert_eq!(
            work.added[&(7, 0, 2)],
            [Fold::Reading(59_000, 1.0), Fold::Reading(59_900, 3.0)]
        );
        let pruned = MinuteAgg::new(0, 30_000, 4.0);
        work.add_pruned(7, 2, &[pruned]);
        assert_eq!(work.added[&(7, 0, 2)][2], Fold::Minute(pruned));
        assert!(work.moved.contains(&(7, 0, 1)));
    }

    #[test]
    fn sums_saturate_at_each_addition_as_sqlite_folds() {
        let mut a = MinuteAgg::new(0, 1, f64::MAX);
        a.add(2, f64::MAX);
        a.add(3, -f64::MAX);
        // Held at MAX after the second reading, then back down: 0, not MAX.
        assert_eq!(a.sum, 0.0);
        assert_eq!(
            kdelta_sync::saturating_sum(f64::INFINITY, f64::NEG_INFINITY),
            0.0
        );
        let mut b = MinuteAgg::new(0, 5, 2.0);
        b.add(5, 1.0); // same time, smaller value: first
        b.add(9, 4.0);
        b.add(9, 3.0); // same time, smaller value: not last
        assert_eq!(
            (b.n, b.first, b.last, b.min, b.max),
            (4, (5, 1.0), (9, 4.0), 1.0, 4.0)
        );
    }
}
