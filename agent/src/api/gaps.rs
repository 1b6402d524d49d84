//! `GET /v1/readings/gaps`: the gap records this store holds — readings dropped at their
//! source under its disk budget's hard limit before an upstream peer had them (change kind 6,
//! `kdelta_sync::GapRecord`), its own and those synced from devices. On a hub this is how
//! readings dropped at the source are told from readings lost in transit. Read-only.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::ApiError;
use super::format::Accept;
use super::params::{limit, query};
use crate::state::Agent;

/// Query string of `GET /v1/readings/gaps`.
#[derive(Debug, Deserialize)]
pub struct GapParams {
    series: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

/// `GET /v1/readings/gaps?series&after&limit`: gap records in local order after position
/// `after` (each: `local_id`, the recording change's `actor`, `seq`, `hlc`, `reason` and
/// `entries` of `{series, actor, first_seq, last_seq, from_ms, to_ms, readings}`), at most
/// `limit` (default 100, at most 1000); `next_after` pages on. With `series`, only the
/// entries naming it.
pub async fn list(
    State(state): State<Agent>,
    Accept(reply): Accept,
    q: Result<Query<GapParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = query(q)?;
    let after = match p.after.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => s
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("`after`: {s:?} is not a position")))?,
        None => 0,
    };
    let limit = limit("limit", &p.limit, 100, 1000)?;
    let series = p.series.filter(|s| !s.is_empty());
    let gaps = state.backend.gaps(series, after, limit).await?;
    let next_after = (gaps.len() == limit)
        .then(|| gaps.last().map(|g| g.local_id))
        .flatten();
    let readings: u64 = gaps.iter().map(|g| g.record.readings()).sum();
    Ok(reply.ok(&json!({ "gaps": gaps, "readings": readings, "next_after": next_after })))
}
