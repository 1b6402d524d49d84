//! The one HTTP error type of the API. Every handler returns `Result<_, ApiError>`; the body
//! is always JSON `{"error": {"code", "message"}}` whatever the request's `Accept`, so clients
//! need one error parser. Codes are stable and documented in the OpenAPI description.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kdelta_sync::StoreError;

/// An error answer: status, stable machine-readable code, human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code, e.g. `invalid_batch`.
    pub code: &'static str,
    /// What went wrong and, where possible, what to do.
    pub message: String,
}

impl ApiError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 `malformed_body`: the body is not valid JSON/CBOR.
    pub fn malformed_body(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "malformed_body", message)
    }

    /// 422 `invalid_batch`: well-formed body with wrong types, or a batch the store refused.
    pub fn invalid_batch(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_batch", message)
    }

    /// 400 `bad_time`: a time parameter is neither RFC 3339, unix ms nor an HLC.
    pub fn bad_time(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_time", message)
    }

    /// 400 `bad_request`: a missing or invalid query parameter.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404 `not_found`: a document key without a live value.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 413 `body_too_large`.
    pub fn body_too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "request body is over the limit of {limit} bytes (api.max_body_bytes); send smaller batches"
            ),
        )
    }

    /// 415 `unsupported_media_type`.
    pub fn unsupported_media_type(got: &str) -> ApiError {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "Content-Type {got:?} is not supported; send application/json or application/cbor"
            ),
        )
    }

    /// 503 `unavailable`: the store or the agent cannot serve right now.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 500 `internal`.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let message = e.to_string();
        let (status, code) = match &e {
            StoreError::InvalidBatch(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_batch"),
            StoreError::InvalidKey { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_key"),
            StoreError::ValueTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "value_too_large"),
            StoreError::InvalidQuery(_) => (StatusCode::BAD_REQUEST, "invalid_query"),
            StoreError::UnknownKey(_) => (StatusCode::NOT_FOUND, "not_found"),
            StoreError::UnknownSeries(_) => (StatusCode::NOT_FOUND, "unknown_series"),
            StoreError::BeforeHistory { .. } => (StatusCode::NOT_FOUND, "before_history"),
            StoreError::ClockSkew { .. } => (StatusCode::CONFLICT, "clock_skew"),
            StoreError::SeqGap { .. } => (StatusCode::CONFLICT, "seq_gap"),
            StoreError::Decode { .. } => (StatusCode::BAD_REQUEST, "malformed_body"),
            StoreError::InvalidPatch { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_patch"),
            StoreError::WrongKind { .. } => (StatusCode::CONFLICT, "wrong_kind"),
            StoreError::TwinExists(_) => (StatusCode::CONFLICT, "twin_exists"),
            StoreError::Closed => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            // A failing database (busy, I/O error, full disk, pool closed while stopping) is
            // the store being unavailable; the client may retry.
            StoreError::Database { .. } => {
                tracing::warn!(error = %e, "store unavailable while serving a request");
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            e if e.is_transient() => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            _ => {
                tracing::error!(error = %e, "store failure while serving a request");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        ApiError::new(status, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        let mut resp = (self.status, Json(body)).into_response();
        // Lets the metrics middleware count rejections by code without parsing the body.
        resp.extensions_mut().insert(ErrorCode(self.code));
        resp
    }
}

/// The error code of an error response, left in the response extensions.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

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
        ];
        for (e, status, code) in cases {
            let a = ApiError::from(e);
            assert_eq!((a.status.as_u16(), a.code), (status, code), "{a}");
        }
    }

    #[tokio::test]
    async fn body_has_the_documented_shape() {
        let resp = ApiError::bad_time("nope").into_response();
        assert_eq!(resp.status(), 400);
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
