//! The per-minute rollups (`rollup_1m`, migration 0003), maintained inside the apply
//! transaction for every (series, minute) whose readings it changed: readings inserted, and
//! the minutes a time correction moved readings out of and into. Knows nothing of changes,
//! actors or the version vector; `apply.rs` collects the touched minutes and calls
//! [`recompute`] once per transaction, after the rows are written.
//!
//! **Recomputed, never folded.** SQLite folds each change's readings into the row in arrival
//! order; float addition is not associative, so two replicas applying the same pages in
//! different orders could store different totals. Here the row of a touched minute is
//! computed again from all the readings of that minute (`INSERT … SELECT … GROUP BY … ON
//! CONFLICT DO UPDATE`), summed in `(ts, value)` order: the row is a function of the set of
//! readings, whichever replica wrote last. A minute left without readings loses its row.
//!
//! **Concurrency.** Under READ COMMITTED each statement sees what was committed when it
//! started: two replicas applying readings of one minute at once would each recompute
//! without the other's uncommitted rows, and the later commit would store a total missing
//! the earlier one's readings. So before recomputing, the transaction locks the rollup rows
//! of its touched minutes (creating missing ones) in key order, with `INSERT … ON CONFLICT
//! DO UPDATE … WHERE false` — which locks a conflicting row without writing a new version,
//! and waits for a transaction holding it (or inserting it) to end. The recompute is the
//! *next* statement, so its snapshot includes every transaction that held those rows before:
//! the last one to hold a row recomputes it from all the readings committed before it plus
//! its own. Key order rules out deadlocks between pages. Row locks rather than
//! `pg_advisory_xact_lock` per (series, minute): a catch-up page touches thousands of
//! minutes, and advisory locks take slots in PostgreSQL's shared lock table (sized by
//! `max_locks_per_transaction`, 64 per connection by default), while row locks are kept on
//! the rows themselves. A lock per series instead would serialise every backlog of a series
//! that many devices write (`system.load1`), not just pages of the same minutes. (Under
//! REPEATABLE READ the second writer fails with a serialization error instead, which
//! `apply.rs` runs again.)
//!
//! **Totals.** Readings are finite, but a sum can leave the finite range; like SQLite's
//! `saturating_sum`, a total is held within ±`f64::MAX`. PostgreSQL raises an error on a
//! float overflow, so a minute whose values could overflow (largest magnitude × count ≥
//! `f64::MAX`/2) is summed scaled by 2⁻⁶⁴ — exact, since scaling by a power of two does not
//! change the rounding of normal numbers — and scaled back, or saturated when it does not
//! fit. Every other minute is the plain sequential sum, exactly what SQLite's recompute
//! (`sync/src/correct.rs`) stores for the same readings. Unlike SQLite's fold, partial sums
//! of such a minute do not saturate on the way (only the result does).

use std::collections::BTreeSet;

use sqlx::{Postgres, Transaction};

use crate::error::{PgError, Result};

/// One minute in ms: the rollup granularity (as on SQLite).
pub(crate) const MINUTE_MS: i64 = 60_000;

/// The minute (its start, unix ms) of a timestamp.
pub(crate) fn minute_of(ts: i64) -> i64 {
    ts.div_euclid(MINUTE_MS) * MINUTE_MS
}

/// (series id, minute start) pairs an apply transaction changed the readings of.
pub(crate) type Touched = BTreeSet<(i64, i64)>;

/// Locks the rollup rows of `touched` (series, minute) pairs, in key order, creating the
/// missing ones (placeholders the next statement overwrites or deletes; never visible to
/// other transactions).
const LOCK: &str = "INSERT INTO rollup_1m AS o \
     (series_id, minute, n, total, vmin, vmax, first_ts, first_value, last_ts, last_value) \
     SELECT s, m, 0, 0, 0, 0, m, 0, m, 0 FROM unnest($1::int8[], $2::int8[]) AS t(s, m) ORDER BY s, m \
     ON CONFLICT (series_id, minute) DO UPDATE SET n = o.n WHERE false";

/// Recomputes the rows of the touched minutes from their readings, and deletes the rows of
/// touched minutes that have none left. The same computation as the backfill of migration
/// 0003.
const RECOMPUTE: &str = "WITH t AS (SELECT s, m FROM unnest($1::int8[], $2::int8[]) AS t(s, m)), \
     r AS MATERIALIZED ( \
       SELECT t.s, t.m, r.ts, r.value FROM t \
       JOIN readings r ON r.series_id = t.s AND r.ts >= t.m AND r.ts < t.m + 60000), \
     g AS ( \
       SELECT s, m, count(*) AS n, min(value) AS vmin, max(value) AS vmax, \
              min(ts) AS first_ts, max(ts) AS last_ts, \
              CASE WHEN max(abs(value)) < (1.7976931348623157e308::float8 / 2) / count(*) \
                   THEN 1::float8 ELSE power(2::float8, -64) END AS scale \
       FROM r GROUP BY s, m), \
     a AS ( \
       SELECT g.s, g.m, g.n, g.scale, sum(r.value * g.scale ORDER BY r.ts, r.value) AS scaled, \
              g.vmin, g.vmax, g.first_ts, min(r.value) FILTER (WHERE r.ts = g.first_ts) AS first_value, \
              g.last_ts, max(r.value) FILTER (WHERE r.ts = g.last_ts) AS last_value \
       FROM g JOIN r ON r.s = g.s AND r.m = g.m \
       GROUP BY g.s, g.m, g.n, g.scale, g.vmin, g.vmax, g.first_ts, g.last_ts), \
     emptied AS ( \
       DELETE FROM rollup_1m o USING t \
       WHERE o.series_id = t.s AND o.minute = t.m \
       AND NOT EXISTS (SELECT 1 FROM g WHERE g.s = t.s AND g.m = t.m)) \
     INSERT INTO rollup_1m (series_id, minute, n, total, vmin, vmax, first_ts, first_value, last_ts, last_value) \
     SELECT s, m, n, \
            CASE WHEN abs(scaled) > 1.7976931348623157e308::float8 * scale \
                 THEN sign(scaled) * 1.7976931348623157e308::float8 ELSE scaled / scale END, \
            vmin, vmax, first_ts, first_value, last_ts, last_value \
     FROM a \
     ON CONFLICT (series_id, minute) DO UPDATE SET n = EXCLUDED.n, total = EXCLUDED.total, \
       vmin = EXCLUDED.vmin, vmax = EXCLUDED.vmax, first_ts = EXCLUDED.first_ts, \
       first_value = EXCLUDED.first_value, last_ts = EXCLUDED.last_ts, last_value = EXCLUDED.last_value";

/// Brings the rollup rows of `touched` up to date with the readings the transaction sees
/// (its own and every committed one), safely while other replicas do the same (module
/// header).
pub(crate) async fn recompute(tx: &mut Transaction<'_, Postgres>, touched: &Touched) -> Result<()> {
    if touched.is_empty() {
        return Ok(());
    }
    let ctx = "updating the rollups";
    let (series, minutes): (Vec<i64>, Vec<i64>) = touched.iter().copied().unzip();
    sqlx::query(LOCK)
        .bind(&series)
        .bind(&minutes)
        .execute(&mut **tx)
        .await
        .map_err(PgError::db(ctx))?;
    sqlx::query(RECOMPUTE)
        .bind(&series)
        .bind(&minutes)
        .execute(&mut **tx)
        .await
        .map_err(PgError::db(ctx))?;
    Ok(())
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
}
