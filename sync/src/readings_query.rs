//! Reading queries on the read pool: series list, raw ranges with cursors, bucketed
//! aggregates (from the per-minute rollups when buckets are whole minutes, raw rows only for
//! partial edge minutes) and latest values. Never writes.

use std::collections::BTreeMap;

use futures::TryStreamExt;
use sqlx::Row;

use crate::ingest::{MINUTE_MS, MinuteAgg};
use crate::{
    AggregateQuery, Bucket, LatestReading, RangeQuery, ReadingPage, ReadingRow, Result, SeriesInfo,
    Store, StoreError,
};

/// Most rows one range page returns.
pub const MAX_PAGE_ROWS: usize = 100_000;
/// Most buckets one aggregate query returns.
pub const MAX_BUCKETS: i64 = 100_000;

impl MinuteAgg {
    fn to_bucket(self) -> Bucket {
        Bucket {
            start: self.minute,
            count: self.n as u64,
            min: self.min,
            max: self.max,
            avg: self.sum / self.n as f64,
            sum: self.sum,
            first: self.first.1,
            last: self.last.1,
        }
    }
}

fn fold(buckets: &mut BTreeMap<i64, MinuteAgg>, bucket_ms: i64, agg: MinuteAgg) {
    let start = agg.first.0.div_euclid(bucket_ms) * bucket_ms;
    buckets
        .entry(start)
        .and_modify(|b| b.merge(&agg))
        .or_insert(MinuteAgg {
            minute: start,
            ..agg
        });
}

fn parse_cursor(c: &str) -> Result<(i64, i64)> {
    c.split_once('.')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .ok_or_else(|| {
            StoreError::InvalidQuery(format!("cursor {c:?} is not one this store issued"))
        })
}

impl Store {
    /// The id and unit of a series, or [`StoreError::UnknownSeries`].
    async fn series_row(&self, name: &str) -> Result<(i64, Option<String>)> {
        let row = sqlx::query("SELECT id, unit FROM series WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(StoreError::db("looking up a series"))?
            .ok_or_else(|| StoreError::UnknownSeries(name.to_owned()))?;
        Ok((row.get(0), row.get(1)))
    }

    /// Every series with its unit, metadata, reading count and time span.
    pub async fn series(&self) -> Result<Vec<SeriesInfo>> {
        let rows = sqlx::query(
            "SELECT s.name, s.unit, s.meta, r.n, r.first_ts, r.last_ts FROM series s \
             LEFT JOIN (SELECT series_id, SUM(n) AS n, MIN(first_ts) AS first_ts, MAX(last_ts) AS last_ts \
                        FROM rollup_1m GROUP BY series_id) r ON r.series_id = s.id \
             ORDER BY s.name",
        )
        .fetch_all(&self.inner.pool)
        .await
        .map_err(StoreError::db("listing series"))?;
        Ok(rows
            .iter()
            .map(|r| SeriesInfo {
                name: r.get(0),
                unit: r.get(1),
                meta: r
                    .get::<Option<String>, _>(2)
                    .and_then(|m| serde_json::from_str(&m).ok())
                    .unwrap_or_default(),
                count: r.get::<Option<i64>, _>(3).unwrap_or(0) as u64,
                first_ts: r.get(4),
                last_ts: r.get(5),
            })
            .collect())
    }

    /// Raw readings of one series in `[from, to)`, in time order, paged by `limit` and an
    /// opaque cursor.
    pub async fn range(&self, q: &RangeQuery) -> Result<ReadingPage> {
        if q.from >= q.to {
            return Err(StoreError::InvalidQuery(format!(
                "`from` ({}) must be before `to` ({})",
                q.from, q.to
            )));
        }
        let limit = q.limit.clamp(1, MAX_PAGE_ROWS);
        let (sid, unit) = self.series_row(&q.series).await?;
        let (after_ts, after_id) = match &q.cursor {
            Some(c) => parse_cursor(c)?,
            None => (i64::MIN, i64::MIN),
        };
        let rows = sqlx::query(
            "SELECT ts, change_id, value FROM readings \
             WHERE series_id = ? AND ts >= ? AND ts < ? AND (ts, change_id) > (?, ?) \
             ORDER BY ts, change_id LIMIT ?",
        )
        .bind(sid)
        .bind(q.from)
        .bind(q.to)
        .bind(after_ts)
        .bind(after_id)
        .bind(limit as i64 + 1)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(StoreError::db("reading a range"))?;
        let more = rows.len() > limit;
        let readings: Vec<ReadingRow> = rows
            .iter()
            .take(limit)
            .map(|r| ReadingRow {
                ts: r.get(0),
                value: r.get(2),
            })
            .collect();
        let next_cursor = more.then(|| {
            let last = &rows[limit - 1];
            format!("{}.{}", last.get::<i64, _>(0), last.get::<i64, _>(1))
        });
        Ok(ReadingPage {
            series: q.series.clone(),
            unit,
            readings,
            next_cursor,
        })
    }

    /// Buckets of `bucket_ms` (aligned to the unix epoch) over `[from, to)` with count, min,
    /// max, avg, sum, first and last. Whole-minute buckets read the per-minute rollups and
    /// touch raw rows only for partial minutes at the edges.
    pub async fn aggregate(&self, q: &AggregateQuery) -> Result<Vec<Bucket>> {
        if q.bucket_ms < 1 {
            return Err(StoreError::InvalidQuery(
                "bucket must be at least 1 ms".into(),
            ));
        }
        if q.from >= q.to {
            return Err(StoreError::InvalidQuery(format!(
                "`from` ({}) must be before `to` ({})",
                q.from, q.to
            )));
        }
        let span_buckets = ((q.to as i128 - q.from as i128) / q.bucket_ms as i128 + 1)
            .min(i64::MAX as i128) as i64;
        if span_buckets > MAX_BUCKETS {
            return Err(StoreError::InvalidQuery(format!(
                "{span_buckets} buckets requested; at most {MAX_BUCKETS} per query (use a wider bucket)"
            )));
        }
        let (sid, _) = self.series_row(&q.series).await?;
        let mut buckets = BTreeMap::new();
        if q.bucket_ms % MINUTE_MS == 0 {
            let m_from = q.from.saturating_add(MINUTE_MS - 1).div_euclid(MINUTE_MS) * MINUTE_MS;
            let m_to = q.to.div_euclid(MINUTE_MS) * MINUTE_MS;
            if m_from < m_to {
                self.fold_raw(sid, q.from, m_from, q.bucket_ms, &mut buckets)
                    .await?;
                self.fold_rollups(sid, m_from, m_to, q.bucket_ms, &mut buckets)
                    .await?;
                self.fold_raw(sid, m_to, q.to, q.bucket_ms, &mut buckets)
                    .await?;
            } else {
                self.fold_raw(sid, q.from, q.to, q.bucket_ms, &mut buckets)
                    .await?;
            }
        } else {
            self.fold_raw(sid, q.from, q.to, q.bucket_ms, &mut buckets)
                .await?;
        }
        Ok(buckets.into_values().map(MinuteAgg::to_bucket).collect())
    }

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
        let mut rows = sqlx::query(
            "SELECT ts, value FROM readings WHERE series_id = ? AND ts >= ? AND ts < ? ORDER BY ts",
        )
        .bind(sid)
        .bind(from)
        .bind(to)
        .fetch(&self.inner.pool);
        let mut cur: Option<MinuteAgg> = None;
        while let Some(r) = rows
            .try_next()
            .await
            .map_err(StoreError::db("scanning readings"))?
        {
            let (ts, v): (i64, f64) = (r.get(0), r.get(1));
            let start = ts.div_euclid(bucket_ms) * bucket_ms;
            match cur.as_mut() {
                Some(a) if a.minute == start => a.add(ts, v),
                _ => {
                    if let Some(done) = cur.take() {
                        fold(out, bucket_ms, done);
                    }
                    cur = Some(MinuteAgg::new(start, ts, v));
                }
            }
        }
        if let Some(done) = cur {
            fold(out, bucket_ms, done);
        }
        Ok(())
    }

    async fn fold_rollups(
        &self,
        sid: i64,
        from: i64,
        to: i64,
        bucket_ms: i64,
        out: &mut BTreeMap<i64, MinuteAgg>,
    ) -> Result<()> {
        let rows = sqlx::query(
            "SELECT minute, n, total, vmin, vmax, first_ts, first_value, last_ts, last_value FROM rollup_1m \
             WHERE series_id = ? AND minute >= ? AND minute < ? ORDER BY minute",
        )
        .bind(sid)
        .bind(from)
        .bind(to)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(StoreError::db("reading rollups"))?;
        for r in rows {
            fold(out, bucket_ms, MinuteAgg::from_row(&r, 0));
        }
        Ok(())
    }

    /// The latest reading of each series (or of the named ones).
    pub async fn latest(&self, series: Option<&[String]>) -> Result<Vec<LatestReading>> {
        let names: Vec<String> = match series {
            Some(s) => s.to_vec(),
            None => sqlx::query_scalar("SELECT name FROM series ORDER BY name")
                .fetch_all(&self.inner.pool)
                .await
                .map_err(StoreError::db("listing series"))?,
        };
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let (sid, unit) = self.series_row(&name).await?;
            let row = sqlx::query("SELECT ts, value FROM readings WHERE series_id = ? ORDER BY ts DESC, value DESC LIMIT 1")
                .bind(sid)
                .fetch_optional(&self.inner.pool)
                .await
                .map_err(StoreError::db("reading the latest value"))?;
            if let Some(r) = row {
                out.push(LatestReading {
                    series: name,
                    unit,
                    ts: r.get(0),
                    value: r.get(1),
                });
            }
        }
        Ok(out)
    }
}
