//! Reading queries on the read pool: series list (paged), raw ranges with cursors, bucketed
//! aggregates (from the per-minute rollups when buckets are whole minutes, raw rows only for
//! partial edge minutes) and latest values. Never writes. Each call is one closure on a read
//! connection (`readers.rs`).

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};

use crate::ingest::{MINUTE_MS, MinuteAgg};
use crate::{
    AggregateQuery, Bucket, LatestReading, RangeQuery, ReadingPage, ReadingRow, Result, SeriesInfo,
    SeriesPage, Store, StoreError,
};

/// Most rows one range page returns.
pub const MAX_PAGE_ROWS: usize = 100_000;
/// A row of the latest-values statement: series, unit, last time and value (NULL for a
/// series without readings).
type LatestRow = (String, Option<String>, Option<i64>, Option<f64>);

/// Most series one page of [`Store::series_page`] returns.
pub const MAX_SERIES_PAGE: usize = 10_000;
/// Most buckets one aggregate query returns.
pub const MAX_BUCKETS: i64 = 100_000;

impl MinuteAgg {
    /// The aggregate as a query answers it.
    pub fn to_bucket(self) -> Bucket {
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

/// Folds a minute's (or a partial bucket's) aggregate into the bucket of `bucket_ms` (aligned
/// to the unix epoch) its first reading falls in.
pub fn fold_bucket(buckets: &mut BTreeMap<i64, MinuteAgg>, bucket_ms: i64, agg: MinuteAgg) {
    let start = agg.first.0.div_euclid(bucket_ms) * bucket_ms;
    buckets
        .entry(start)
        .and_modify(|b| b.merge(&agg))
        .or_insert(MinuteAgg {
            minute: start,
            ..agg
        });
}

/// The row a range page ended at, from a cursor [`reading_page`] issued (`ts.row_id`).
pub fn parse_cursor(c: &str) -> Result<(i64, i64)> {
    c.split_once('.')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .ok_or_else(|| {
            StoreError::InvalidQuery(format!("cursor {c:?} is not one this store issued"))
        })
}

/// Refuses a range query whose `from` is not before its `to` (every backend's rule).
pub fn check_range(q: &RangeQuery) -> Result<()> {
    check_span(q.from, q.to)
}

fn check_span(from: i64, to: i64) -> Result<()> {
    if from >= to {
        return Err(StoreError::InvalidQuery(format!(
            "`from` ({from}) must be before `to` ({to})"
        )));
    }
    Ok(())
}

/// Refuses an aggregate query with a bucket under 1 ms, an empty span or more than
/// [`MAX_BUCKETS`] buckets (every backend's rules).
pub fn check_aggregate(q: &AggregateQuery) -> Result<()> {
    if q.bucket_ms < 1 {
        return Err(StoreError::InvalidQuery(
            "bucket must be at least 1 ms".into(),
        ));
    }
    check_span(q.from, q.to)?;
    let span_buckets =
        ((q.to as i128 - q.from as i128) / q.bucket_ms as i128 + 1).min(i64::MAX as i128) as i64;
    if span_buckets > MAX_BUCKETS {
        return Err(StoreError::InvalidQuery(format!(
            "{span_buckets} buckets requested; at most {MAX_BUCKETS} per query (use a wider bucket)"
        )));
    }
    Ok(())
}

/// A page of `q.series` from up to `limit + 1` rows `(ts, row id, value)` read in time
/// order: the first `limit` readings, and a cursor after the last of them when there were
/// more.
pub fn reading_page(
    q: &RangeQuery,
    unit: Option<String>,
    rows: &[(i64, i64, f64)],
    limit: usize,
) -> ReadingPage {
    let more = rows.len() > limit;
    let readings = rows
        .iter()
        .take(limit)
        .map(|&(ts, _, value)| ReadingRow { ts, value })
        .collect();
    let next_cursor = more.then(|| {
        let (ts, id, _) = rows[limit - 1];
        format!("{ts}.{id}")
    });
    ReadingPage {
        series: q.series.clone(),
        unit,
        readings,
        next_cursor,
    }
}

/// The id and unit of a series, or [`StoreError::UnknownSeries`].
fn series_row(conn: &Connection, name: &str) -> Result<(i64, Option<String>)> {
    conn.prepare_cached("SELECT id, unit FROM series WHERE name = ?1")
        .and_then(|mut st| {
            st.query_row([name], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(StoreError::db("looking up a series"))?
        .ok_or_else(|| StoreError::UnknownSeries(name.to_owned()))
}

fn fold_raw(
    conn: &Connection,
    sid: i64,
    from: i64,
    to: i64,
    bucket_ms: i64,
    out: &mut BTreeMap<i64, MinuteAgg>,
) -> Result<()> {
    if from >= to {
        return Ok(());
    }
    let mut cur: Option<MinuteAgg> = None;
    conn.prepare_cached(
        "SELECT ts, value FROM readings WHERE series_id = ?1 AND ts >= ?2 AND ts < ?3 ORDER BY ts",
    )
    .and_then(|mut st| {
        let mut rows = st.query(params![sid, from, to])?;
        while let Some(r) = rows.next()? {
            let (ts, v): (i64, f64) = (r.get(0)?, r.get(1)?);
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
        Ok(())
    })
    .map_err(StoreError::db("scanning readings"))?;
    if let Some(done) = cur {
        fold_bucket(out, bucket_ms, done);
    }
    Ok(())
}

fn fold_rollups(
    conn: &Connection,
    sid: i64,
    from: i64,
    to: i64,
    bucket_ms: i64,
    out: &mut BTreeMap<i64, MinuteAgg>,
) -> Result<()> {
    conn.prepare_cached(
        "SELECT minute, n, total, vmin, vmax, first_ts, first_value, last_ts, last_value FROM rollup_1m \
         WHERE series_id = ?1 AND minute >= ?2 AND minute < ?3 ORDER BY minute",
    )
    .and_then(|mut st| {
        let mut rows = st.query(params![sid, from, to])?;
        while let Some(r) = rows.next()? {
            fold_bucket(out, bucket_ms, MinuteAgg::from_row(r, 0)?);
        }
        Ok(())
    })
    .map_err(StoreError::db("reading rollups"))
}

impl Store {
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

    /// One page of series in name order: at most `limit` (1 to [`MAX_SERIES_PAGE`]) after
    /// the name `after`, with `next_after` set when more may follow. Reads only the page's
    /// series: each one's count is a range scan of its own rollups, its first and last
    /// times are index seeks (never a scan of every rollup).
    pub async fn series_page(&self, after: Option<&str>, limit: usize) -> Result<SeriesPage> {
        let limit = limit.clamp(1, MAX_SERIES_PAGE);
        // Names are never empty, so "" is before the first.
        let after = after.unwrap_or_default().to_owned();
        self.inner
            .readers
            .read(move |conn| {
                let series: Vec<SeriesInfo> = conn
                    .prepare_cached(
                        "SELECT s.name, s.unit, s.meta, \
                           (SELECT SUM(n) FROM rollup_1m WHERE series_id = s.id), \
                           (SELECT first_ts FROM rollup_1m WHERE series_id = s.id ORDER BY minute LIMIT 1), \
                           (SELECT last_ts FROM rollup_1m WHERE series_id = s.id ORDER BY minute DESC LIMIT 1) \
                         FROM series s WHERE s.name > ?1 ORDER BY s.name LIMIT ?2",
                    )
                    .and_then(|mut st| {
                        st.query_map(params![after, limit as i64], |r| {
                            Ok(SeriesInfo {
                                name: r.get(0)?,
                                unit: r.get(1)?,
                                meta: r
                                    .get::<_, Option<String>>(2)?
                                    .and_then(|m| serde_json::from_str(&m).ok())
                                    .unwrap_or_default(),
                                count: r.get::<_, Option<i64>>(3)?.unwrap_or(0) as u64,
                                first_ts: r.get(4)?,
                                last_ts: r.get(5)?,
                            })
                        })?
                        .collect()
                    })
                    .map_err(StoreError::db("listing series"))?;
                let next_after = (series.len() == limit)
                    .then(|| series.last().map(|s| s.name.clone()))
                    .flatten();
                Ok(SeriesPage { series, next_after })
            })
            .await
    }

    /// Raw readings of one series in `[from, to)`, in time order, paged by `limit` and an
    /// opaque cursor.
    pub async fn range(&self, q: &RangeQuery) -> Result<ReadingPage> {
        check_range(q)?;
        let limit = q.limit.clamp(1, MAX_PAGE_ROWS);
        let (after_ts, after_id) = match &q.cursor {
            Some(c) => parse_cursor(c)?,
            None => (i64::MIN, i64::MIN),
        };
        let (series, from, to) = (q.series.clone(), q.from, q.to);
        let (unit, rows) = self
            .inner
            .readers
            .read(move |conn| {
                let (sid, unit) = series_row(conn, &series)?;
                let rows: Vec<(i64, i64, f64)> = conn
                    .prepare_cached(
                        "SELECT ts, change_id, value FROM readings \
                         WHERE series_id = ?1 AND ts >= ?2 AND ts < ?3 AND (ts, change_id) > (?4, ?5) \
                         ORDER BY ts, change_id LIMIT ?6",
                    )
                    .and_then(|mut st| {
                        st.query_map(
                            params![sid, from, to, after_ts, after_id, limit as i64 + 1],
                            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                        )?
                        .collect()
                    })
                    .map_err(StoreError::db("reading a range"))?;
                Ok((unit, rows))
            })
            .await?;
        Ok(reading_page(q, unit, &rows, limit))
    }

    /// Buckets of `bucket_ms` (aligned to the unix epoch) over `[from, to)` with count, min,
    /// max, avg, sum, first and last. Whole-minute buckets read the per-minute rollups and
    /// touch raw rows only for partial minutes at the edges.
    pub async fn aggregate(&self, q: &AggregateQuery) -> Result<Vec<Bucket>> {
        check_aggregate(q)?;
        let q = q.clone();
        self.inner
            .readers
            .read(move |conn| {
                let (sid, _) = series_row(conn, &q.series)?;
                let mut buckets = BTreeMap::new();
                let b = q.bucket_ms;
                if b % MINUTE_MS == 0 {
                    let m_from =
                        q.from.saturating_add(MINUTE_MS - 1).div_euclid(MINUTE_MS) * MINUTE_MS;
                    let m_to = q.to.div_euclid(MINUTE_MS) * MINUTE_MS;
                    if m_from < m_to {
                        fold_raw(conn, sid, q.from, m_from, b, &mut buckets)?;
                        fold_rollups(conn, sid, m_from, m_to, b, &mut buckets)?;
                        fold_raw(conn, sid, m_to, q.to, b, &mut buckets)?;
                    } else {
                        fold_raw(conn, sid, q.from, q.to, b, &mut buckets)?;
                    }
                } else {
                    fold_raw(conn, sid, q.from, q.to, b, &mut buckets)?;
                }
                Ok(buckets.into_values().map(MinuteAgg::to_bucket).collect())
            })
            .await
    }

    /// The latest reading of each series (of `series` when given, in that order; else of
    /// every series, by name), in one statement: per series an index seek for its last
    /// timestamp and, among readings at that time, the highest value.
    /// [`StoreError::UnknownSeries`] names the first unknown series asked for.
    pub async fn latest(&self, series: Option<&[String]>) -> Result<Vec<LatestReading>> {
        let names: Option<Vec<String>> = series.map(<[String]>::to_vec);
        self.inner
            .readers
            .read(move |conn| {
                // NULL = every series; otherwise a JSON array of names.
                let wanted: Option<String> = names
                    .as_ref()
                    .map(|n| serde_json::to_string(n).expect("names to JSON"));
                let mut found: Vec<LatestRow> = conn
                    .prepare_cached(
                        "SELECT s.name, s.unit, t.ts, \
                           (SELECT MAX(r.value) FROM readings r WHERE r.series_id = s.id AND r.ts = t.ts) \
                         FROM series s \
                         JOIN (SELECT id, (SELECT MAX(ts) FROM readings WHERE series_id = series.id) AS ts \
                               FROM series) t ON t.id = s.id \
                         WHERE ?1 IS NULL OR s.name IN (SELECT value FROM json_each(?1)) \
                         ORDER BY s.name",
                    )
                    .and_then(|mut st| {
                        st.query_map([wanted], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                            .collect()
                    })
                    .map_err(StoreError::db("reading the latest values"))?;
                if let Some(names) = names {
                    let mut by_name: std::collections::HashMap<String, _> =
                        found.drain(..).map(|f| (f.0.clone(), f)).collect();
                    for n in names {
                        match by_name.remove(&n) {
                            Some(f) => found.push(f),
                            None if found.iter().any(|f| f.0 == n) => {}
                            None => return Err(StoreError::UnknownSeries(n)),
                        }
                    }
                }
                Ok(found
                    .into_iter()
                    .filter_map(|(series, unit, ts, value)| {
                        Some(LatestReading { series, unit, ts: ts?, value: value? })
                    })
                    .collect())
            })
            .await
    }
}
