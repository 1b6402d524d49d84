//! Reading queries: `GET /v1/series`, `GET /v1/readings` (raw range, paged by cursor),
//! `GET /v1/readings/aggregate` (time buckets), `GET /v1/readings/latest` and
//! `GET /v1/readings/timing` (batches sampled under an untrusted clock, original times and
//! corrections). Read-only. They ask the [`Backend`](crate::backend::Backend), so a
//! PostgreSQL hub replica answers them as a SQLite store does (timing positions there are
//! the database's change ids).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Response;
use kdelta_sync::{AggregateQuery, Bucket, MAX_PAGE_ROWS, MAX_SERIES_PAGE, RangeQuery};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::ApiError;
use super::format::Accept;
use super::params::{limit, list, query, required};
use super::time::{parse_bucket, parse_instant};
use crate::state::Agent;
use crate::time::now_ms;

/// Default page size of `GET /v1/readings`.
pub const DEFAULT_LIMIT: usize = 1000;
/// Aggregate functions, in the order buckets list them.
pub const FUNCTIONS: &[&str] = &["count", "min", "max", "avg", "sum", "first", "last"];
/// Buckets an aggregate query spans when `from` is not given.
const DEFAULT_BUCKETS: i64 = 60;

/// Default page size of `GET /v1/series`.
pub const DEFAULT_SERIES_PAGE: usize = 1000;

/// Query string of `GET /v1/series`.
#[derive(Debug, Deserialize)]
pub struct SeriesParams {
    limit: Option<String>,
    after: Option<String>,
}

/// `GET /v1/series?limit&after`: series in name order, at most `limit` (default 1000, at
/// most 10,000) after the name `after`:
/// `{"series": [{name, unit, meta, count, first_ts, last_ts}], "next_after"}`.
pub async fn list_series(
    State(state): State<Agent>,
    Accept(reply): Accept,
    q: Result<Query<SeriesParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = query(q)?;
    let limit = limit("limit", &p.limit, DEFAULT_SERIES_PAGE, MAX_SERIES_PAGE)?;
    let page = state.backend.series_page(p.after.as_deref(), limit).await?;
    Ok(reply.ok(&json!({ "series": page.series, "next_after": page.next_after })))
}

/// Query string of `GET /v1/readings`.
#[derive(Debug, Deserialize)]
pub struct RangeParams {
    series: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /v1/readings?series&from&to&limit&cursor`: readings of one series in `[from, to)`
/// (defaults: everything), at most `limit` (default 1000, at most 100,000) per page;
/// `{"series", "unit", "readings": [{"ts", "value"}], "next_cursor"}`.
pub async fn range(
    State(state): State<Agent>,
    Accept(reply): Accept,
    q: Result<Query<RangeParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = query(q)?;
    let rq = RangeQuery {
        series: required("series", &p.series)?.to_owned(),
        from: p
            .from
            .as_deref()
            .map(|s| parse_instant("from", s))
            .transpose()?
            .unwrap_or(i64::MIN),
        to: p
            .to
            .as_deref()
            .map(|s| parse_instant("to", s))
            .transpose()?
            .unwrap_or(i64::MAX),
        limit: limit("limit", &p.limit, DEFAULT_LIMIT, MAX_PAGE_ROWS)?,
        cursor: p.cursor.filter(|c| !c.is_empty()),
    };
    let page = state.backend.range(&rq).await?;
    Ok(reply.ok(&page))
}

/// Query string of `GET /v1/readings/timing`.
#[derive(Debug, Deserialize)]
pub struct TimingParams {
    series: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

/// `GET /v1/readings/timing?series&after&limit`: the timing records of readings batches
/// sampled while their device's clock was not trusted — original time span, the correction
/// once its actor knew a trusted time (`delta_ms`, `corrected_by`) and the corrected span —
/// in local order after position `after`; `next_after` pages on.
pub async fn timing(
    State(state): State<Agent>,
    Accept(reply): Accept,
    q: Result<Query<TimingParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = query(q)?;
    let after = match p.after.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => s
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("`after`: {s:?} is not a position")))?,
        None => 0,
    };
    let limit = limit("limit", &p.limit, DEFAULT_LIMIT, 10_000)?;
    let series = p.series.filter(|s| !s.is_empty());
    let records = state.backend.reading_timing(series, after, limit).await?;
    let next_after = (records.len() == limit)
        .then(|| records.last().map(|r| r.0))
        .flatten();
    let timing: Vec<Value> = records
        .iter()
        .map(|(position, r)| {
            let shift = |t: i64| r.delta_ms.map(|d| t + d);
            json!({
                "position": position,
                "actor": r.actor.to_string(),
                "seq": r.seq,
                "boot_id": r.timing.boot_id.to_string(),
                "offset_ms": r.timing.offset_ms,
                "count": r.count,
                "original_from": r.original_from_ms,
                "original_to": r.original_to_ms,
                "state": if r.delta_ms.is_some() { "corrected" } else { "uncorrected" },
                "delta_ms": r.delta_ms,
                "corrected_by": r.corrected_by,
                "corrected_from": shift(r.original_from_ms),
                "corrected_to": shift(r.original_to_ms),
            })
        })
        .collect();
    Ok(reply.ok(&json!({ "timing": timing, "next_after": next_after })))
}

/// Query string of `GET /v1/readings/aggregate`.
#[derive(Debug, Deserialize)]
pub struct AggregateParams {
    series: Option<String>,
    from: Option<String>,
    to: Option<String>,
    bucket: Option<String>,
    #[serde(rename = "fn")]
    functions: Option<String>,
}

/// `GET /v1/readings/aggregate?series&from&to&bucket&fn`: buckets of `bucket` (default
/// `1m`) aligned to the unix epoch over `[from, to)` (defaults: the 60 buckets up to now);
/// `fn` is a comma list of count, min, max, avg, sum, first, last (default all). Buckets
/// without readings are omitted.
pub async fn aggregate(
    State(state): State<Agent>,
    Accept(reply): Accept,
    q: Result<Query<AggregateParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = query(q)?;
    let series = required("series", &p.series)?.to_owned();
    let bucket_ms = p
        .bucket
        .as_deref()
        .map(parse_bucket)
        .transpose()?
        .unwrap_or(60_000);
    let functions = functions(&p.functions)?;
    let to = match &p.to {
        Some(s) => parse_instant("to", s)?,
        None => now_ms().saturating_add(1),
    };
    let from = match &p.from {
        Some(s) => parse_instant("from", s)?,
        None => to.saturating_sub(bucket_ms.saturating_mul(DEFAULT_BUCKETS)),
    };
    let buckets = state
        .backend
        .aggregate(&AggregateQuery {
            series: series.clone(),
            from,
            to,
            bucket_ms,
        })
        .await?;
    let buckets: Vec<Value> = buckets.iter().map(|b| bucket_json(b, &functions)).collect();
    Ok(reply.ok(&json!({
        "series": series,
        "from": from,
        "to": to,
        "bucket_ms": bucket_ms,
        "fn": functions,
        "buckets": buckets,
    })))
}

fn functions(v: &Option<String>) -> Result<Vec<&'static str>, ApiError> {
    let Some(asked) = list(v) else {
        return Ok(FUNCTIONS.to_vec());
    };
    let mut out = Vec::new();
    for name in asked {
        let f = FUNCTIONS.iter().find(|f| **f == name).ok_or_else(|| {
            ApiError::bad_request(format!(
                "`fn`: unknown function {:?}; use {}",
                name.chars().take(32).collect::<String>(),
                FUNCTIONS.join(", ")
            ))
        })?;
        if !out.contains(f) {
            out.push(*f);
        }
    }
    Ok(out)
}

fn bucket_json(b: &Bucket, functions: &[&str]) -> Value {
    let mut m = Map::new();
    m.insert("start".into(), json!(b.start));
    for f in functions {
        let v = match *f {
            "count" => json!(b.count),
            "min" => json!(b.min),
            "max" => json!(b.max),
            "avg" => json!(b.avg),
            "sum" => json!(b.sum),
            "first" => json!(b.first),
            _ => json!(b.last),
        };
        m.insert((*f).into(), v);
    }
    Value::Object(m)
}

/// Query string of `GET /v1/readings/latest`.
#[derive(Debug, Deserialize)]
pub struct LatestParams {
    series: Option<String>,
}

/// `GET /v1/readings/latest?series=a,b`: the latest reading of each named series (default
/// every series): `{"latest": [{"series", "unit", "ts", "value"}]}`.
pub async fn latest(
    State(state): State<Agent>,
    Accept(reply): Accept,
    q: Result<Query<LatestParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = query(q)?;
    let names = list(&p.series);
    let latest = state.backend.latest(names.as_deref()).await?;
    Ok(reply.ok(&json!({ "latest": latest })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_lists() {
        assert_eq!(functions(&None).unwrap(), FUNCTIONS);
        assert_eq!(
            functions(&Some("avg,max,avg".into())).unwrap(),
            vec!["avg", "max"]
        );
        assert_eq!(
            functions(&Some("median".into())).unwrap_err().code,
            "bad_request"
        );
        let b = Bucket {
            start: 60_000,
            count: 2,
            min: 1.0,
            max: 3.0,
            avg: 2.0,
            sum: 4.0,
            first: 1.0,
            last: 3.0,
        };
        assert_eq!(
            bucket_json(&b, &["avg"]),
            json!({"start": 60_000, "avg": 2.0})
        );
    }
}
