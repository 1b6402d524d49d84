//! The readings queries of the HTTP API on PostgreSQL — series list (paged), raw ranges with
//! cursors, bucketed aggregates and latest values — with the answers, limits and errors of
//! the embedded store's (`sync/src/readings_query.rs`), so a hub replica and a SQLite store
//! holding the same readings answer alike. Read-only; every call is one or a few statements
//! on the pool.
//!
//! Series attributes (unit, metadata) are the last writer's by `(hlc, actor)` among the
//! per-actor rows of `series_attrs`. Counts, first and last times and the latest values
//! come from the rollups, never a scan of the partitioned readings; aggregates read the
//! rollups for whole minutes and raw readings only for the partial minutes at the edges, as
//! SQLite does. A minute has a rollup row per actor that wrote it (`rollups.rs`), merged
//! here in actor order: the answer is the same whichever replica applied what first. Names
//! are ordered bytewise (`COLLATE "C"`), SQLite's order, whatever the database's collation.

use std::collections::{BTreeMap, HashMap};

use futures::TryStreamExt;
use kdelta_sync::{
    AggregateQuery, Bucket, LatestReading, MAX_PAGE_ROWS, MAX_SERIES_PAGE, MinuteAgg, RangeQuery,
    ReadingPage, SeriesInfo, SeriesPage, StoreError, check_aggregate, check_range, fold_bucket,
    parse_cursor, reading_page,
};
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::error::{PgError, Result};
use crate::rollups::{MINUTE_MS, agg_from_row};
use crate::store::PgStore;

/// The winning unit and metadata of series `s` (a lateral subquery).
const ATTRS: &str = "LEFT JOIN LATERAL (SELECT unit, meta FROM series_attrs \
     WHERE series_id = s.id ORDER BY hlc DESC, actor DESC LIMIT 1) a ON true";

fn meta_of(json: Option<String>) -> BTreeMap<String, String> {
    json.and_then(|m| serde_json::from_str(&m).ok())
        .unwrap_or_default()
}

impl PgStore {
    /// The id and unit of a series, or [`StoreError::UnknownSeries`].
    async fn series_row(&self, name: &str) -> Result<(i64, Option<String>)> {
        let sql = format!("SELECT s.id, a.unit FROM series s {ATTRS} WHERE s.name = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(PgError::db("looking up a series"))?
            .ok_or_else(|| StoreError::UnknownSeries(name.to_owned()))?;
        let get = || Ok::<_, sqlx::Error>((row.try_get(0)?, row.try_get(1)?));
        get().map_err(PgError::db("looking up a series"))
    }

    /// Every series with its unit, metadata, reading count and time span, in name order
    /// (all pages of [`series_page`](Self::series_page)).
    pub async fn series(&self) -> Result<Vec<SeriesInfo>> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.series_page(after.as_deref(), MAX_SERIES_PAGE).await?;
            out.extend(page.series);
            match page.next_after {
                Some(next) => after = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// One page of series in name order (bytewise): at most `limit` (1 to
    /// [`MAX_SERIES_PAGE`]) after the name `after`, `next_after` set when more may follow —
    /// as `Store::series_page`. Counts and time spans come from the rollups.
    pub async fn series_page(&self, after: Option<&str>, limit: usize) -> Result<SeriesPage> {
        let ctx = "listing series";
        let limit = limit.clamp(1, MAX_SERIES_PAGE);
        let sql = format!(
            "SELECT s.name, a.unit, a.meta, \
               (SELECT SUM(n) FROM rollup_1m WHERE series_id = s.id)::int8, \
               (SELECT first_ts FROM rollup_1m WHERE series_id = s.id \
                ORDER BY minute, first_ts LIMIT 1), \
               (SELECT last_ts FROM rollup_1m WHERE series_id = s.id \
                ORDER BY minute DESC, last_ts DESC LIMIT 1) \
             FROM series s {ATTRS} \
             WHERE s.name COLLATE \"C\" > $1 ORDER BY s.name COLLATE \"C\" LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(after.unwrap_or_default())
            .bind(limit as i64)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(PgError::db(ctx))?;
        let series = rows
            .iter()
            .map(|r: &PgRow| {
                Ok(SeriesInfo {
                    name: r.try_get(0)?,
                    unit: r.try_get(1)?,
                    meta: meta_of(r.try_get(2)?),
                    count: r.try_get::<Option<i64>, _>(3)?.unwrap_or(0) as u64,
                    first_ts: r.try_get(4)?,
                    last_ts: r.try_get(5)?,
                })
            })
            .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
            .map_err(PgError::db(ctx))?;
        let next_after = (series.len() == limit)
            .then(|| series.last().map(|s| s.name.clone()))
            .flatten();
        Ok(SeriesPage { series, next_after })
    }

    /// Raw readings of one series in `[from, to)`, in time order, paged by `limit` (capped
    /// at [`MAX_PAGE_ROWS`]) and an opaque cursor, as `Store::range`. Cursors are this
    /// database's (any replica of it takes them).
    pub async fn range(&self, q: &RangeQuery) -> Result<ReadingPage> {
        let ctx = "reading a range";
        check_range(q)?;
        let limit = q.limit.clamp(1, MAX_PAGE_ROWS);
        let (after_ts, after_id) = match &q.cursor {
            Some(c) => parse_cursor(c)?,
            None => (i64::MIN, i64::MIN),
        };
        let (sid, unit) = self.series_row(&q.series).await?;
        let rows = sqlx::query(
            "SELECT ts, change_id, value FROM readings \
             WHERE series_id = $1 AND ts >= $2 AND ts < $3 AND (ts, change_id) > ($4, $5) \
             ORDER BY ts, change_id LIMIT $6",
        )
        .bind(sid)
        .bind(q.from)
        .bind(q.to)
        .bind(after_ts)
        .bind(after_id)
        .bind(limit as i64 + 1)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(PgError::db(ctx))?;
        let rows: Vec<(i64, i64, f64)> = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<std::result::Result<_, sqlx::Error>>()
            .map_err(PgError::db(ctx))?;
        Ok(reading_page(q, unit, &rows, limit))
    }

    /// Buckets of `bucket_ms` (aligned to the unix epoch) over `[from, to)` with count, min,
    /// max, avg, sum, first and last; buckets without readings are omitted. Whole-minute
    /// buckets read the rollups and raw readings only for partial minutes at the edges. The
    /// limits and errors of `Store::aggregate` (at most [`MAX_BUCKETS`]).
    pub async fn aggregate(&self, q: &AggregateQuery) -> Result<Vec<Bucket>> {
        check_aggregate(q)?;
        let (sid, _) = self.series_row(&q.series).await?;
        let mut buckets = BTreeMap::new();
        let b = q.bucket_ms;
        let m_from = q.from.saturating_add(MINUTE_MS - 1).div_euclid(MINUTE_MS) * MINUTE_MS;
        let m_to = q.to.div_euclid(MINUTE_MS) * MINUTE_MS;
        if b % MINUTE_MS == 0 && m_from < m_to {
            self.fold_raw(sid, q.from, m_from, b, &mut buckets).await?;
            self.fold_rollups(sid, m_from, m_to, b, &mut buckets)
                .await?;
            self.fold_raw(sid, m_to, q.to, b, &mut buckets).await?;
        } else {
            self.fold_raw(sid, q.from, q.to, b, &mut buckets).await?;
        }
        Ok(buckets.into_values().map(MinuteAgg::to_bucket).collect())
    }

    /// Folds the raw readings of `[from, to)` into `out`, bucket by bucket in time order.
    async fn fold_raw(
        &self,
        sid: i64,
        from: i64,
        to: i64,
        bucket_ms: i64,
        out: &mut BTreeMap<i64, MinuteAgg>,
    ) -> Result<()> {
        if from >= to {
            return Ok(());
        }
        let ctx = "scanning readings";
        // Streamed: a range cut into buckets that are not whole minutes may be long.
        let mut rows = sqlx::query(
            "SELECT ts, value FROM readings WHERE series_id = $1 AND ts >= $2 AND ts < $3 \
             ORDER BY ts, value",
        )
        .bind(sid)
        .bind(from)
        .bind(to)
        .fetch(&self.inner.pool);
        let mut cur: Option<MinuteAgg> = None;
        while let Some(r) = rows.try_next().await.map_err(PgError::db(ctx))? {
            let ts: i64 = r.try_get(0).map_err(PgError::db(ctx))?;
            let v: f64 = r.try_get(1).map_err(PgError::db(ctx))?;
            let start = ts.div_euclid(bucket_ms) * bucket_ms;
            match cur.as_mut() {
                Some(a) if a.minute == start => a.add(ts, v),
                _ => {
                    if let Some(done) = cur.take() {
                        fold_bucket(out, bucket_ms, done);
                    }
                    cur = Some(MinuteAgg::new(start, ts, v));
                }
            }
        }
        if let Some(done) = cur {
            fold_bucket(out, bucket_ms, done);
        }
        Ok(())
    }

    /// Folds the rollup rows of the minutes in `[from, to)` into `out`, in minute order.
    async fn fold_rollups(
        &self,
        sid: i64,
        from: i64,
        to: i64,
        bucket_ms: i64,
        out: &mut BTreeMap<i64, MinuteAgg>,
    ) -> Result<()> {
        let ctx = "reading rollups";
        let rows = sqlx::query(
            "SELECT minute, n, total, vmin, vmax, first_ts, first_value, last_ts, last_value \
             FROM rollup_1m WHERE series_id = $1 AND minute >= $2 AND minute < $3 \
             ORDER BY minute, actor_idx",
        )
        .bind(sid)
        .bind(from)
        .bind(to)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(PgError::db(ctx))?;
        for r in &rows {
            fold_bucket(
                out,
                bucket_ms,
                agg_from_row(r, 0).map_err(PgError::db(ctx))?,
            );
        }
        Ok(())
    }

    /// The latest reading of each series (of `series` when given, in that order, each
    /// once; else of every series, by name), from the last rollup row of each: its last
    /// time and, among readings at that time, the highest value — as `Store::latest`.
    /// Series without readings are left out; [`StoreError::UnknownSeries`] names the first
    /// unknown series asked for.
    pub async fn latest(&self, series: Option<&[String]>) -> Result<Vec<LatestReading>> {
        let ctx = "reading the latest values";
        let sql = format!(
            "SELECT s.name, a.unit, l.last_ts, l.last_value FROM series s {ATTRS} \
             LEFT JOIN LATERAL (SELECT last_ts, last_value FROM rollup_1m \
               WHERE series_id = s.id ORDER BY minute DESC, last_ts DESC, last_value DESC \
               LIMIT 1) l ON true \
             WHERE $1::text[] IS NULL OR s.name = ANY($1) \
             ORDER BY s.name COLLATE \"C\""
        );
        let names: Option<Vec<String>> = series.map(<[String]>::to_vec);
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&names)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(PgError::db(ctx))?;
        type Found = (String, Option<String>, Option<i64>, Option<f64>);
        let mut found: Vec<Found> = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
            .collect::<std::result::Result<_, sqlx::Error>>()
            .map_err(PgError::db(ctx))?;
        if let Some(names) = names {
            let mut by_name: HashMap<String, Found> =
                found.drain(..).map(|f| (f.0.clone(), f)).collect();
            for n in names {
                match by_name.remove(&n) {
                    Some(f) => found.push(f),
                    None if found.iter().any(|f| f.0 == n) => {}
                    None => return Err(PgError::Store(StoreError::UnknownSeries(n))),
                }
            }
        }
        Ok(found
            .into_iter()
            .filter_map(|(series, unit, ts, value)| {
                Some(LatestReading {
                    series,
                    unit,
                    ts: ts?,
                    value: value?,
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_fold_like_sqlite_minutes() {
        let mut out = BTreeMap::new();
        let mut a = MinuteAgg::new(0, 5, 2.0);
        a.add(5, 1.0); // same time, smaller value: first
        a.add(9, 4.0);
        a.add(9, 3.0); // same time, smaller value: not last
        fold_bucket(&mut out, 60_000, a);
        fold_bucket(&mut out, 60_000, MinuteAgg::new(0, 59_999, f64::MAX));
        fold_bucket(&mut out, 60_000, MinuteAgg::new(0, 59_999, f64::MAX));
        let b = out[&0].to_bucket();
        assert_eq!((b.count, b.first, b.last, b.min), (6, 1.0, f64::MAX, 1.0));
        assert_eq!(b.sum, f64::MAX, "saturates");
        assert!(parse_cursor("12.x").is_err());
        assert_eq!(parse_cursor("-5.7").unwrap(), (-5, 7));
    }
}
