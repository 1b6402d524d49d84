//! The one HTTP error type of the API and the one list of its codes. Every handler returns
//! `Result<_, ApiError>`; the body is always JSON `{"error": {"code", "message"}}` whatever the
//! request's `Accept`, so clients need one error parser.
//!
//! [`ErrorCode`] is the list: each code's HTTP status, wire name and meaning live in one table
//! below, and the OpenAPI description (`Error.code` enum, every route's error answers), the
//! module docs and a test are derived from it. Errors are not logged here: the response
//! carries the error in its extensions and the request middleware (`routes.rs`) logs it once,
//! with the route, as axum's error-handling example does.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kdelta_sync::StoreError;

/// Declares [`ErrorCode`] from one table: variant, status, wire name, meaning.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $status:literal, $code:literal, $meaning:literal;)*) => {
        /// A stable, machine-readable API error code (`error.code` of an error answer).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $($(#[$doc])* #[doc = concat!("`", $status, " ", $code, "`: ", $meaning, ".")] $variant,)*
        }

        impl ErrorCode {
            /// Every code, grouped by status.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The wire name, e.g. `invalid_batch`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }

            /// The HTTP status an answer with this code has.
            pub fn status(self) -> StatusCode {
                let status: u16 = match self {
                    $(ErrorCode::$variant => $status,)*
                };
                StatusCode::from_u16(status).expect("the table holds valid statuses")
            }

            /// What the code means (one line, for documentation).
            pub const fn meaning(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $meaning,)*
                }
            }
        }
    };
}

error_codes! {
    MalformedBody = 400, "malformed_body", "the body is not valid JSON or CBOR";
    BadTime = 400, "bad_time", "a time parameter is not unix ms, RFC 3339, `now[±duration]` or an HLC";
    BadRequest = 400, "bad_request", "a query parameter is missing or invalid";
    InvalidQuery = 400, "invalid_query", "the store refused the query (range, limit or bucket)";
    WebsocketRequired = 400, "websocket_required", "`/v1/sync` was requested without a WebSocket upgrade";
    Unauthorized = 401, "unauthorized", "the credentials are missing or not accepted";
    SyncDisabled = 403, "sync_disabled", "inbound sync is off on this agent (no accepted tokens or certificates)";
    Forbidden = 403, "forbidden", "the credentials are valid but lack the scope the route needs (`read`, `write` or `admin`)";
    HostNotAllowed = 403, "host_not_allowed", "the `Host` header names a host this agent does not answer for (`api.allowed_hosts`; DNS rebinding)";
    ForeignOrigin = 403, "foreign_origin", "a state-changing request carries the `Origin` of another site (a web page elsewhere)";
    UnknownSeries = 404, "unknown_series", "no series has this name";
    NotFound = 404, "not_found", "the key has no live value";
    BeforeHistory = 404, "before_history", "the point in time is before the key's first version";
    NoRoute = 404, "no_route", "no route has this path";
    UnknownPeer = 404, "unknown_peer", "no outbound sync peer has this name";
    MethodNotAllowed = 405, "method_not_allowed", "the route exists but not with this method";
    RequestTimeout = 408, "request_timeout", "the request body did not arrive within `api.body_read_timeout`";
    ClockSkew = 409, "clock_skew", "a timestamp is too far ahead of this agent's clock";
    SeqGap = 409, "seq_gap", "a change does not follow its actor's previous one";
    TwinExists = 409, "twin_exists", "a twin with this key exists already";
    WrongKind = 409, "wrong_kind", "the key holds a document where a twin is expected, or the reverse";
    HistoryPruned = 410, "history_pruned", "document retention pruned the version that was current at that point; the message names the oldest point still answered";
    BodyTooLarge = 413, "body_too_large", "the request body is over `api.max_body_bytes`";
    ValueTooLarge = 413, "value_too_large", "the document value is over the store's limit";
    UnsupportedMediaType = 415, "unsupported_media_type", "the body's `Content-Type` is missing, or is not JSON, CBOR or (for a twin patch) JSON Merge Patch";
    InvalidBatch = 422, "invalid_batch", "the batch is well-formed but refused (types, values, limits); nothing was stored";
    InvalidKey = 422, "invalid_key", "the document key is empty, too long or reserved";
    InvalidPatch = 422, "invalid_patch", "the twin patch cannot be applied";
    TooManyAuthFailures = 429, "too_many_auth_failures", "too many failed authentications from this address (`api.max_auth_failures`); retry after `Retry-After` seconds";
    Internal = 500, "internal", "a bug or an unexpected failure";
    NotOnThisBackend = 501, "not_on_this_backend", "the route needs the SQLite store and this agent is a PostgreSQL hub replica (issue 17): query the database or a SQLite replica";
    Unavailable = 503, "unavailable", "the store cannot serve right now (busy, I/O, shutting down); retry later";
    NotReady = 503, "not_ready", "the agent is starting or shutting down";
    TooManySessions = 503, "too_many_sessions", "as many inbound sync sessions run as allowed (`api.max_sync_sessions`, `api.max_sync_sessions_per_peer`); retry later";
    DiskFull = 507, "disk_full", "the file system holding the store is full and nothing was stored; free space or keep less (`[retention] readings`, `max_disk`, `min_free`) — writes resume by themselves once there is room, reads keep working";
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compares with a wire name (`code == "invalid_batch"`), as clients and tests see codes.
impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// An error answer: a stable code (which fixes the HTTP status) and a human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The code, e.g. [`ErrorCode::InvalidBatch`].
    pub code: ErrorCode,
    /// What went wrong and, where possible, what to do.
    pub message: String,
}

impl ApiError {
    /// An error with the given code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }

    /// The HTTP status of this answer (the code's).
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// 400 `malformed_body`: the body is not valid JSON/CBOR.
    pub fn malformed_body(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::MalformedBody, message)
    }

    /// 422 `invalid_batch`: well-formed body with wrong types, or a batch the store refused.
    pub fn invalid_batch(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidBatch, message)
    }

    /// 400 `bad_time`: a time parameter is neither RFC 3339, unix ms nor an HLC.
    pub fn bad_time(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::BadTime, message)
    }

    /// 400 `bad_request`: a missing or invalid query parameter.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::BadRequest, message)
    }

    /// 404 `not_found`: a document key without a live value.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::NotFound, message)
    }

    /// 413 `body_too_large`.
    pub fn body_too_large(limit: usize) -> ApiError {
        ApiError::new(
            ErrorCode::BodyTooLarge,
            format!(
                "request body is over the limit of {limit} bytes (api.max_body_bytes); send smaller batches"
            ),
        )
    }

    /// 415 `unsupported_media_type`.
    pub fn unsupported_media_type(got: &str) -> ApiError {
        ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!(
                "Content-Type {got:?} is not supported; send application/json or application/cbor"
            ),
        )
    }

    /// 503 `unavailable`: the store or the agent cannot serve right now.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Unavailable, message)
    }

    /// 500 `internal`.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Internal, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status().as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl From<crate::backend::NotOnThisBackend> for ApiError {
    fn from(e: crate::backend::NotOnThisBackend) -> ApiError {
        ApiError::new(ErrorCode::NotOnThisBackend, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        // A batch entry's error is answered with the entry's code; the message names the entry.
        let code = match e.innermost() {
            StoreError::InvalidBatch(_) | StoreError::InvalidDocBatch(_) => ErrorCode::InvalidBatch,
            StoreError::InvalidKey { .. } => ErrorCode::InvalidKey,
            StoreError::ValueTooLarge { .. } => ErrorCode::ValueTooLarge,
            StoreError::InvalidQuery(_) => ErrorCode::InvalidQuery,
            StoreError::UnknownKey(_) => ErrorCode::NotFound,
            StoreError::UnknownSeries(_) => ErrorCode::UnknownSeries,
            StoreError::BeforeHistory { .. } => ErrorCode::BeforeHistory,
            StoreError::HistoryPruned { .. } => ErrorCode::HistoryPruned,
            StoreError::ClockSkew { .. } => ErrorCode::ClockSkew,
            StoreError::SeqGap { .. } => ErrorCode::SeqGap,
            StoreError::Decode { .. } => ErrorCode::MalformedBody,
            StoreError::InvalidPatch { .. } => ErrorCode::InvalidPatch,
            StoreError::WrongKind { .. } => ErrorCode::WrongKind,
            StoreError::TwinExists(_) => ErrorCode::TwinExists,
            StoreError::Closed => ErrorCode::Unavailable,
            StoreError::DiskFull { .. } => ErrorCode::DiskFull,
            // A failing database (busy, I/O error, full disk, pool closed while stopping) is
            // the store being unavailable; the client may retry.
            StoreError::Database { .. }
            | StoreError::WriteGroup { .. }
            | StoreError::Backend { .. } => ErrorCode::Unavailable,
            e if e.is_transient() => ErrorCode::Unavailable,
            _ => ErrorCode::Internal,
        };
        ApiError::new(code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "code": self.code.as_str(), "message": &self.message }
        });
        let mut resp = (self.status(), Json(body)).into_response();
        // For the request middleware: it logs the error once and counts it by code.
        resp.extensions_mut().insert(self);
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_status_and_code() {
        let cases: Vec<(StoreError, u16, &str)> = vec![
            (StoreError::InvalidBatch("x".into()), 422, "invalid_batch"),
            (StoreError::UnknownSeries("s".into()), 404, "unknown_series"),
            (StoreError::UnknownKey("k".into()), 404, "not_found"),
            (
                StoreError::BeforeHistory {
                    key: "k".into(),
                    at: "unix ms 1".into(),
                },
                404,
                "before_history",
            ),
            (
                StoreError::HistoryPruned {
                    key: "k".into(),
                    at: "unix ms 1".into(),
                    horizon: kdelta_sync::Hlc::new(5, 0),
                },
                410,
                "history_pruned",
            ),
            (StoreError::InvalidQuery("q".into()), 400, "invalid_query"),
            (
                StoreError::InvalidKey {
                    key: "".into(),
                    reason: "must not be empty",
                },
                422,
                "invalid_key",
            ),
            (
                StoreError::ValueTooLarge {
                    key: "k".into(),
                    size: 2,
                    max: 1,
                },
                413,
                "value_too_large",
            ),
            (StoreError::Closed, 503, "unavailable"),
            (
                StoreError::DiskFull {
                    context: "committing a write group",
                    detail: "database or disk is full".into(),
                },
                507,
                "disk_full",
            ),
        ];
        for (e, status, code) in cases {
            let a = ApiError::from(e);
            assert_eq!(
                (a.status().as_u16(), a.code.as_str()),
                (status, code),
                "{a}"
            );
        }
    }

    #[test]
    fn codes_are_unique_snake_case_and_grouped_by_status() {
        let mut seen = std::collections::HashSet::new();
        let mut last_status = 0;
        for code in ErrorCode::ALL {
            let name = code.as_str();
            assert!(seen.insert(name), "{name} twice");
            assert!(
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name}"
            );
            let status = code.status().as_u16();
            assert!(
                (400..600).contains(&status) && status >= last_status,
                "{name}: {status} out of order"
            );
            last_status = status;
            assert!(!code.meaning().is_empty());
        }
    }

    #[tokio::test]
    async fn body_has_the_documented_shape() {
        let resp = ApiError::bad_time("nope").into_response();
        assert_eq!(resp.status(), 400);
        assert_eq!(
            resp.extensions().get::<ApiError>().map(|e| e.code),
            Some(ErrorCode::BadTime)
        );
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": {"code": "bad_time", "message": "nope"}})
        );
    }
}
