//! The readings table's partitions: one per calendar month (UTC) within
//! [`PAST_MONTHS`] before and [`FUTURE_MONTHS`] after the present, created on demand before
//! a page's readings are inserted; readings outside that window (old backfills, clocks set
//! years ahead) go to the default partition. Owns partition naming, the month arithmetic and
//! the DDL; knows nothing of changes.
//!
//! Creation is serialised between hub replicas by a transaction-scoped advisory lock (per
//! schema) and is idempotent. A month once beyond the window may hold rows in the default
//! partition when it comes into the window: its partition is then created as a plain table,
//! those rows are moved into it and it is attached, in one transaction.

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;

use sqlx::{AssertSqlSafe, PgPool};

use crate::error::{PgError, Result};

/// Months before the present month that get their own partition.
pub const PAST_MONTHS: i64 = 120;
/// Months after the present month that get their own partition.
pub const FUTURE_MONTHS: i64 = 12;

const DAY_MS: i64 = 86_400_000;

/// Months since 1970-01 (UTC) of a unix-ms timestamp.
pub(crate) fn month_of(ts_ms: i64) -> i64 {
    let (y, m) = civil_from_days(ts_ms.div_euclid(DAY_MS));
    (y - 1970) * 12 + (m - 1)
}

/// Unix ms of the first instant of month `month` (months since 1970-01).
pub(crate) fn month_start_ms(month: i64) -> i64 {
    let y = 1970 + month.div_euclid(12);
    let m = month.rem_euclid(12) + 1;
    days_from_civil(y, m, 1) * DAY_MS
}

/// The partition table of `month`, e.g. `readings_y2026m12`.
pub(crate) fn partition_name(month: i64) -> String {
    format!(
        "readings_y{:04}m{:02}",
        1970 + month.div_euclid(12),
        month.rem_euclid(12) + 1
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Year and month of a day since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m)
}

/// The partitions this process knows exist (so a page costs no catalog lookup).
#[derive(Default)]
pub(crate) struct Partitions {
    known: Mutex<HashSet<i64>>,
}

impl Partitions {
    /// Makes sure every month of `months` inside the window around `now_ms` has its
    /// partition. Each is created in its own short transaction, before the page's
    /// transaction (DDL there would hold locks on the readings table until commit).
    pub async fn ensure(&self, pool: &PgPool, months: BTreeSet<i64>, now_ms: i64) -> Result<()> {
        let now = month_of(now_ms);
        let missing: Vec<i64> = {
            let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
            months
                .into_iter()
                .filter(|m| (now - PAST_MONTHS..=now + FUTURE_MONTHS).contains(m))
                .filter(|m| !known.contains(m))
                .collect()
        };
        for month in missing {
            create(pool, month).await?;
            self.known
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(month);
        }
        Ok(())
    }
}

/// Creates the partition of `month` unless it exists, moving any rows of that month out of
/// the default partition.
async fn create(pool: &PgPool, month: i64) -> Result<()> {
    let ctx = "creating a readings partition";
    let name = partition_name(month);
    let (lo, hi) = (month_start_ms(month), month_start_ms(month + 1));
    let mut tx = pool.begin().await.map_err(PgError::db(ctx))?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '/kdelta/partitions'))")
        .execute(&mut *tx)
        .await
        .map_err(PgError::db(ctx))?;
    let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(&name)
        .fetch_one(&mut *tx)
        .await
        .map_err(PgError::db(ctx))?;
    if exists.is_none() {
        // `name` is built from two integers above; `lo` and `hi` are integers.
        for sql in [
            format!("CREATE TABLE {name} (LIKE readings INCLUDING DEFAULTS)"),
            format!(
                "INSERT INTO {name} SELECT * FROM readings_default WHERE ts >= {lo} AND ts < {hi}"
            ),
            format!("DELETE FROM readings_default WHERE ts >= {lo} AND ts < {hi}"),
            format!(
                "ALTER TABLE readings ATTACH PARTITION {name} FOR VALUES FROM ({lo}) TO ({hi})"
            ),
        ] {
            sqlx::query(AssertSqlSafe(sql))
                .execute(&mut *tx)
                .await
                .map_err(PgError::db(ctx))?;
        }
        tracing::info!(partition = %name, "created readings partition");
    }
    tx.commit().await.map_err(PgError::db(ctx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_and_their_bounds() {
        // 2026-12-05T11:50:00Z
        let ts = 1_796_471_400_000;
        let m = month_of(ts);
        assert_eq!(partition_name(m), "readings_y2026m12");
        assert_eq!(month_start_ms(m), 1_796_083_200_000); // 2026-12-01
        assert_eq!(month_start_ms(m + 1), 1_798_761_600_000); // 2027-01-01
        assert_eq!(month_of(0), 0);
        assert_eq!(partition_name(0), "readings_y1970m01");
        assert_eq!(month_of(month_start_ms(m) - 1), m - 1);
        // Leap day 2024-02-29 is in February.
        assert_eq!(
            partition_name(month_of(1_709_164_800_000)),
            "readings_y2024m02"
        );
        for k in -24..2000 {
            assert_eq!(month_of(month_start_ms(k)), k);
            assert_eq!(month_of(month_start_ms(k + 1) - 1), k);
        }
    }
}
