//! Versioned documents: `GET/PUT/DELETE /v1/docs/{key}`, as-of reads, `…/history`,
//! `…/diff`, `…/siblings`, and the listing `GET /v1/docs?prefix`.
//!
//! Keys may contain `/`, so the router mounts one wildcard route `/v1/docs/{*key}` and a GET
//! is dispatched here on its last segment: `…/history`, `…/diff` and `…/siblings` are views
//! of the key before them. Such keys therefore cannot be read by a plain GET, and `PUT`
//! refuses them (`422 invalid_key`); `GET /v1/docs?prefix=` still lists any that arrive by
//! sync from elsewhere.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use kdelta_sync::{AsOf, DocState, DocVersion, HistoryCursor, Hlc, MAX_HISTORY_PAGE};
use serde::Deserialize;
use serde_json::{Value, json};

use super::format::{Accept, Format, read_body};
use super::params::{limit, path, query, required};
use super::time::{parse_as_of, parse_history_cursor};
use super::{ApiError, ErrorCode};
use crate::state::Agent;

/// Default page size of history and listings.
pub const DEFAULT_PAGE: usize = 100;

/// What a GET under `/v1/docs/` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// The value (winner), optionally as of a point.
    Value,
    /// `…/history`.
    History,
    /// `…/diff`.
    Diff,
    /// `…/siblings`.
    Siblings,
}

impl View {
    const SUFFIXES: [(&'static str, View); 3] = [
        ("/history", View::History),
        ("/diff", View::Diff),
        ("/siblings", View::Siblings),
    ];

    /// Splits the wildcard part of a `/v1/docs/…` path into the key and the view.
    pub fn split(path: &str) -> (&str, View) {
        for (suffix, view) in Self::SUFFIXES {
            if let Some(key) = path.strip_suffix(suffix)
                && !key.is_empty()
            {
                return (key, view);
            }
        }
        (path, View::Value)
    }

    /// The route template of this view, as in the OpenAPI description and metric labels.
    pub fn route(self) -> &'static str {
        match self {
            View::Value => "/v1/docs/{key}",
            View::History => "/v1/docs/{key}/history",
            View::Diff => "/v1/docs/{key}/diff",
            View::Siblings => "/v1/docs/{key}/siblings",
        }
    }
}

/// Query string of every GET under `/v1/docs`.
#[derive(Debug, Default, Deserialize)]
pub struct DocParams {
    as_of: Option<String>,
    limit: Option<String>,
    before: Option<String>,
    from: Option<String>,
    to: Option<String>,
    prefix: Option<String>,
    after: Option<String>,
}

/// JSON of one version: `{key, actor, seq, hlc, value, deleted, pruned, supersedes: [{actor,
/// seq}]}`; `pruned`: retention dropped the value (it is `null`, and not a delete).
pub fn version_json(v: &DocVersion) -> Value {
    json!({
        "key": v.key,
        "actor": v.actor.to_string(),
        "seq": v.seq,
        "hlc": v.hlc.to_string(),
        "value": v.value,
        "deleted": v.is_tombstone(),
        "pruned": v.pruned,
        "supersedes": v.supersedes.iter().map(|d| json!({"actor": d.actor.to_string(), "seq": d.seq})).collect::<Vec<_>>(),
    })
}

/// JSON of a document's current state: `{key, value, actor, seq, hlc, siblings}`.
fn state_json(s: &DocState) -> Value {
    json!({
        "key": s.winner.key,
        "value": s.winner.value,
        "actor": s.winner.actor.to_string(),
        "seq": s.winner.seq,
        "hlc": s.winner.hlc.to_string(),
        "siblings": s.siblings,
    })
}

fn missing(key: &str) -> ApiError {
    ApiError::not_found(format!("document {key:?} does not exist"))
}

/// `GET /v1/docs/{*key}`: dispatches on the view (see the module docs).
pub async fn get(
    State(state): State<Agent>,
    Accept(reply): Accept,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<DocParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let full = path(p)?;
    let params = query(q)?;
    let (key, view) = View::split(&full);
    let body = match view {
        View::Value => value(&state, key, &params).await?,
        View::History => history(&state, key, &params).await?,
        View::Diff => diff(&state, key, &params).await?,
        View::Siblings => siblings(&state, key).await?,
    };
    Ok(reply.ok(&body))
}

async fn value(state: &Agent, key: &str, p: &DocParams) -> Result<Value, ApiError> {
    let doc = match &p.as_of {
        Some(at) => {
            state
                .backend
                .doc_as_of(key, parse_as_of("as_of", at)?)
                .await?
        }
        None => state.backend.doc(key).await?,
    };
    match doc {
        Some(s) if !s.winner.is_tombstone() => Ok(state_json(&s)),
        Some(s) if s.siblings > 1 => Err(ApiError::not_found(format!(
            "document {key:?} is deleted, but {} concurrent versions exist; see /v1/docs/{key}/siblings",
            s.siblings
        ))),
        _ => Err(missing(key)),
    }
}

async fn history(state: &Agent, key: &str, p: &DocParams) -> Result<Value, ApiError> {
    let limit = limit("limit", &p.limit, DEFAULT_PAGE, MAX_HISTORY_PAGE)?;
    let before = p
        .before
        .as_deref()
        .map(|b| parse_history_cursor("before", b))
        .transpose()?;
    let versions = state.backend.doc_history(key, limit, before).await?;
    if versions.is_empty() && before.is_none() {
        return Err(missing(key));
    }
    let next_before = (versions.len() == limit)
        .then(|| {
            versions
                .last()
                .map(|v| HistoryCursor::after_entry(v.hlc, v.actor).to_string())
        })
        .flatten();
    Ok(json!({
        "key": key,
        "versions": versions.iter().map(version_json).collect::<Vec<_>>(),
        "next_before": next_before,
    }))
}

async fn diff(state: &Agent, key: &str, p: &DocParams) -> Result<Value, ApiError> {
    let from = parse_as_of("from", required("from", &p.from)?)?;
    let to = match &p.to {
        Some(t) => parse_as_of("to", t)?,
        // The latest point the store can compare against (HLCs are stored as SQLite i64).
        None => AsOf::Hlc(Hlc(i64::MAX as u64)),
    };
    let d = state.backend.doc_diff(key, from, to).await?;
    Ok(serde_json::to_value(&d).unwrap_or(Value::Null))
}

async fn siblings(state: &Agent, key: &str) -> Result<Value, ApiError> {
    let versions = state.backend.doc_siblings(key).await?;
    if versions.is_empty() {
        return Err(missing(key));
    }
    Ok(json!({
        "key": key,
        "siblings": versions.iter().map(version_json).collect::<Vec<_>>(),
    }))
}

/// `PUT /v1/docs/{*key}`: the body (JSON, or CBOR with `Content-Type: application/cbor`) is
/// the new value. Answers the new version once durable.
pub async fn put(
    State(state): State<Agent>,
    Accept(reply): Accept,
    p: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let key = path(p)?;
    if View::split(&key).1 != View::Value {
        return Err(ApiError::new(
            ErrorCode::InvalidKey,
            format!(
                "key {key:?} ends in /history, /diff or /siblings, which the HTTP API reserves for views of a key"
            ),
        ));
    }
    let format = Format::of_body(&headers)?;
    let body = read_body(body, state.max_body_bytes)?;
    let value: Value = match format {
        Format::Json => serde_json::from_slice(&body)
            .map_err(|e| ApiError::malformed_body(format!("the body is not valid JSON: {e}")))?,
        Format::Cbor => ciborium::from_reader(&body[..])
            .map_err(|e| ApiError::malformed_body(format!("the body is not valid CBOR: {e}")))?,
    };
    let v = state.backend.doc_put(&key, &value).await?;
    Ok(reply.ok(&version_json(&v)))
}

/// `DELETE /v1/docs/{*key}`: writes a tombstone version (history is kept); `404 not_found`
/// when the key has no live value.
pub async fn delete(
    State(state): State<Agent>,
    Accept(reply): Accept,
    p: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let key = path(p)?;
    let v = state.backend.doc_delete(&key).await?;
    Ok(reply.ok(&version_json(&v)))
}

/// `GET /v1/docs?prefix&as_of&limit&after`: live documents in key order:
/// `{"docs": [{key, value, actor, seq, hlc, siblings}], "next_after"}`.
pub async fn list(
    State(state): State<Agent>,
    Accept(reply): Accept,
    q: Result<Query<DocParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = query(q)?;
    let limit = limit("limit", &p.limit, DEFAULT_PAGE, MAX_HISTORY_PAGE)?;
    let at = p
        .as_of
        .as_deref()
        .map(|a| parse_as_of("as_of", a))
        .transpose()?;
    let docs = state
        .backend
        .doc_list(
            p.prefix.as_deref().unwrap_or(""),
            at,
            limit,
            p.after.as_deref(),
        )
        .await?;
    let next_after = (docs.len() == limit)
        .then(|| docs.last().map(|d| d.winner.key.clone()))
        .flatten();
    Ok(reply.ok(&json!({
        "docs": docs.iter().map(state_json).collect::<Vec<_>>(),
        "next_after": next_after,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_split_on_the_last_segment() {
        assert_eq!(View::split("a/b"), ("a/b", View::Value));
        assert_eq!(View::split("a/b/history"), ("a/b", View::History));
        assert_eq!(View::split("a/diff"), ("a", View::Diff));
        assert_eq!(View::split("x/siblings"), ("x", View::Siblings));
        assert_eq!(View::split("history"), ("history", View::Value));
        assert_eq!(View::split("/history"), ("/history", View::Value));
        assert_eq!(View::split("a/histories"), ("a/histories", View::Value));
    }
}
