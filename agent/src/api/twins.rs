//! Merge documents (device twins): `POST/PATCH/GET /v1/twins/{key}`, `…/history`, `…/diff`
//! and the listing `GET /v1/twins?prefix`.
//!
//! Keys may contain `/` (`device/pi-01`), so, as for documents, one wildcard route
//! `/v1/twins/{*key}` serves them and a GET is dispatched on its last segment (`…/history`,
//! `…/diff`). `PATCH` takes `Content-Type: application/merge-patch+json` (RFC 7396) or
//! `application/json` with `{"ops": [...]}` (path operations). See docs/twins.md.
//!
//! Served by either store (`backend/twins.rs`); on a PostgreSQL hub replica an edit is a
//! change of the hub's own actor.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use kdelta_sync::{
    AsOf, HistoryCursor, Hlc, MAX_HISTORY_PAGE, TwinHistoryEntry, TwinPatch, TwinWrite,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::docs::DEFAULT_PAGE;
use super::format::{Accept, read_body};
use super::params::{limit, path, query, required};
use super::time::{parse_as_of, parse_history_cursor};
use super::{ApiError, ErrorCode};
use crate::state::Agent;

/// Media type of a JSON Merge Patch body.
pub const MERGE_PATCH: &str = "application/merge-patch+json";

/// What a GET under `/v1/twins/` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// The merged value, optionally as of a point.
    Value,
    /// `…/history`.
    History,
    /// `…/diff`.
    Diff,
}

impl View {
    /// Splits the wildcard part of a `/v1/twins/…` path into the key and the view.
    pub fn split(path: &str) -> (&str, View) {
        for (suffix, view) in [("/history", View::History), ("/diff", View::Diff)] {
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
            View::Value => "/v1/twins/{key}",
            View::History => "/v1/twins/{key}/history",
            View::Diff => "/v1/twins/{key}/diff",
        }
    }
}

/// Query string of every GET under `/v1/twins`.
#[derive(Debug, Default, Deserialize)]
pub struct TwinParams {
    as_of: Option<String>,
    limit: Option<String>,
    before: Option<String>,
    from: Option<String>,
    to: Option<String>,
    prefix: Option<String>,
    after: Option<String>,
}

/// JSON of a write: `{key, value, changed, actor, seq, hlc}` (the last three `null` when
/// the patch changed nothing).
pub fn write_json(w: &TwinWrite) -> Value {
    json!({
        "key": w.key,
        "value": w.value,
        "changed": w.change.is_some(),
        "actor": w.change.map(|c| c.actor.to_string()),
        "seq": w.change.map(|c| c.seq),
        "hlc": w.change.map(|c| c.hlc.to_string()),
    })
}

fn entry_json(e: &TwinHistoryEntry) -> Value {
    json!({
        "actor": e.actor.to_string(),
        "seq": e.seq,
        "hlc": e.hlc.to_string(),
        "paths": e.paths,
        "truncated": e.truncated,
    })
}

fn writable_key(key: &str) -> Result<(), ApiError> {
    if View::split(key).1 != View::Value {
        return Err(ApiError::new(
            ErrorCode::InvalidKey,
            format!(
                "key {key:?} ends in /history or /diff, which the HTTP API reserves for views of a twin"
            ),
        ));
    }
    Ok(())
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::malformed_body(format!("the body is not valid JSON: {e}")))
}

/// `POST /v1/twins/{*key}`: creates the twin, empty or with the body (a JSON object) as its
/// initial value. `201` with the value; `409 twin_exists` or `409 wrong_kind`.
pub async fn create(
    State(state): State<Agent>,
    Accept(reply): Accept,
    p: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let key = path(p)?;
    writable_key(&key)?;
    let body = read_body(body, state.max_body_bytes)?;
    let initial = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(parse_json(&body)?)
    };
    let w = state.backend.twin_create(&key, initial).await?;
    Ok(reply.respond(StatusCode::CREATED, &write_json(&w)))
}

/// Parses a PATCH body by its media type: merge patch, or `{"ops": [...]}`.
pub fn patch_from_body(
    key: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<TwinPatch, ApiError> {
    let essence = content_type
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let value = parse_json(body)?;
    match essence.as_str() {
        MERGE_PATCH => Ok(TwinPatch::Merge(value)),
        "application/json" => match &value {
            Value::Object(m) if m.len() == 1 && m.contains_key("ops") => {
                Ok(TwinPatch::from_json(key, value)?)
            }
            _ => Err(ApiError::new(
                ErrorCode::InvalidPatch,
                format!(
                    "an application/json patch must be {{\"ops\": [...]}}; send a JSON Merge Patch with Content-Type {MERGE_PATCH}"
                ),
            )),
        },
        other => Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!(
                "Content-Type {other:?} is not supported for a twin patch; send {MERGE_PATCH} or application/json with {{\"ops\": [...]}}"
            ),
        )),
    }
}

/// `PATCH /v1/twins/{*key}`: applies a merge patch or path operations as one change.
pub async fn patch(
    State(state): State<Agent>,
    Accept(reply): Accept,
    p: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let key = path(p)?;
    writable_key(&key)?;
    let body = read_body(body, state.max_body_bytes)?;
    let ct = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let patch = patch_from_body(&key, ct, &body)?;
    let w = state.backend.twin_patch(&key, patch).await?;
    Ok(reply.ok(&write_json(&w)))
}

fn missing(key: &str) -> ApiError {
    ApiError::not_found(format!("twin {key:?} does not exist"))
}

/// `GET /v1/twins/{*key}`: dispatches on the view.
pub async fn get(
    State(state): State<Agent>,
    Accept(reply): Accept,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<TwinParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let full = path(p)?;
    let params = query(q)?;
    let (key, view) = View::split(&full);
    let body = match view {
        View::Value => value(&state, key, &params).await?,
        View::History => history(&state, key, &params).await?,
        View::Diff => diff(&state, key, &params).await?,
    };
    Ok(reply.ok(&body))
}

async fn value(state: &Agent, key: &str, p: &TwinParams) -> Result<Value, ApiError> {
    if let Some(at) = &p.as_of {
        let at = parse_as_of("as_of", at)?;
        let value = state.backend.twin_as_of(key, at).await?;
        return Ok(json!({"key": key, "value": value}));
    }
    match state.backend.twin(key).await? {
        Some(t) => Ok(json!({"key": t.key, "value": t.value, "changes": t.changes})),
        None => Err(missing(key)),
    }
}

async fn history(state: &Agent, key: &str, p: &TwinParams) -> Result<Value, ApiError> {
    let limit = limit("limit", &p.limit, DEFAULT_PAGE, MAX_HISTORY_PAGE)?;
    let before = p
        .before
        .as_deref()
        .map(|b| parse_history_cursor("before", b))
        .transpose()?;
    let entries = state.backend.twin_history(key, limit, before).await?;
    let next_before = (entries.len() == limit)
        .then(|| {
            entries
                .last()
                .map(|e| HistoryCursor::after_entry(e.hlc, e.actor).to_string())
        })
        .flatten();
    Ok(json!({
        "key": key,
        "changes": entries.iter().map(entry_json).collect::<Vec<_>>(),
        "next_before": next_before,
    }))
}

async fn diff(state: &Agent, key: &str, p: &TwinParams) -> Result<Value, ApiError> {
    let from = parse_as_of("from", required("from", &p.from)?)?;
    let to = match &p.to {
        Some(t) => parse_as_of("to", t)?,
        None => AsOf::Hlc(Hlc(i64::MAX as u64)),
    };
    let d = state.backend.twin_diff(key, from, to).await?;
    Ok(serde_json::to_value(&d).unwrap_or(Value::Null))
}

/// `GET /v1/twins?prefix&limit&after`: twin keys in order: `{"twins": [...], "next_after"}`.
pub async fn list(
    State(state): State<Agent>,
    Accept(reply): Accept,
    q: Result<Query<TwinParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = query(q)?;
    let limit = limit("limit", &p.limit, DEFAULT_PAGE, MAX_HISTORY_PAGE)?;
    let keys = state
        .backend
        .twin_keys(p.prefix.as_deref().unwrap_or(""), limit, p.after.as_deref())
        .await?;
    let next_after = (keys.len() == limit)
        .then(|| keys.last().cloned())
        .flatten();
    Ok(reply.ok(&json!({ "twins": keys, "next_after": next_after })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_and_media_types() {
        assert_eq!(View::split("device/a/history"), ("device/a", View::History));
        assert_eq!(View::split("device/a/diff"), ("device/a", View::Diff));
        assert_eq!(View::split("device/a"), ("device/a", View::Value));
        assert!(matches!(
            patch_from_body("k", Some(MERGE_PATCH), br#"{"ops": 1}"#),
            Ok(TwinPatch::Merge(_))
        ));
        assert!(matches!(
            patch_from_body("k", Some("application/json"), br#"{"ops": []}"#),
            Ok(TwinPatch::Ops { .. })
        ));
        assert_eq!(
            patch_from_body("k", Some("application/json"), br#"{"a": 1}"#)
                .unwrap_err()
                .code,
            "invalid_patch"
        );
        assert_eq!(
            patch_from_body("k", Some("text/plain"), b"{}")
                .unwrap_err()
                .code,
            "unsupported_media_type"
        );
        assert_eq!(
            patch_from_body("k", Some(MERGE_PATCH), b"{nope")
                .unwrap_err()
                .code,
            "malformed_body"
        );
    }
}
