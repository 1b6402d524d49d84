//! Content negotiation: which format a request body is in (from `Content-Type`) and which
//! format the client wants back (from `Accept`). JSON is the default both ways; CBOR
//! (`application/cbor`) is the compact alternative for batches and for clients on slow links.
//! Error bodies are always JSON (see `error.rs`).

use axum::body::Bytes;
use axum::extract::FromRequestParts;
use axum::extract::rejection::BytesRejection;
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::ApiError;

/// Media type of CBOR bodies.
pub const CBOR: &str = "application/cbor";
/// Media type of JSON bodies.
pub const JSON: &str = "application/json";

/// A wire format of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/json`.
    Json,
    /// `application/cbor`.
    Cbor,
}

impl Format {
    /// The format of a request body. A body must say what it is: a missing `Content-Type`
    /// is `415 unsupported_media_type` (a browser's `no-cors` request cannot send JSON or
    /// CBOR, so this keeps web pages from writing); so is anything else than JSON or CBOR.
    pub fn of_body(headers: &HeaderMap) -> Result<Format, ApiError> {
        let Some(value) = headers.get(CONTENT_TYPE) else {
            return Err(ApiError::new(
                super::ErrorCode::UnsupportedMediaType,
                "the request has a body but no Content-Type; send Content-Type: application/json or application/cbor",
            ));
        };
        let text = value.to_str().unwrap_or("");
        let essence = text
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence == JSON || essence.ends_with("+json") {
            Ok(Format::Json)
        } else if essence == CBOR || essence.ends_with("+cbor") {
            Ok(Format::Cbor)
        } else {
            Err(ApiError::unsupported_media_type(text))
        }
    }

    /// The format the client asked for: CBOR when `Accept` rates `application/cbor` above
    /// JSON (`application/json`, `application/*` or `*/*`), JSON otherwise.
    pub fn accepted(headers: &HeaderMap) -> Format {
        let (mut cbor_q, mut json_q) = (0.0f32, 0.0f32);
        for item in headers
            .get_all(ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
        {
            let mut parts = item.split(';');
            let ty = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .find_map(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .and_then(|q| q.trim().parse::<f32>().ok())
                })
                .unwrap_or(1.0);
            match ty.as_str() {
                CBOR => cbor_q = cbor_q.max(q),
                JSON | "application/*" | "*/*" => json_q = json_q.max(q),
                _ => {}
            }
        }
        if cbor_q > json_q {
            Format::Cbor
        } else {
            Format::Json
        }
    }

    /// Its media type.
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Json => JSON,
            Format::Cbor => CBOR,
        }
    }

    /// A response with `status` and `value` encoded in this format.
    pub fn respond<T: Serialize>(self, status: StatusCode, value: &T) -> Response {
        let encoded = match self {
            Format::Json => serde_json::to_vec(value).map_err(|e| e.to_string()),
            Format::Cbor => {
                let mut out = Vec::with_capacity(256);
                ciborium::into_writer(value, &mut out)
                    .map(|()| out)
                    .map_err(|e| e.to_string())
            }
        };
        match encoded {
            Ok(bytes) => {
                let mut resp = (status, bytes).into_response();
                resp.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(self.media_type()));
                resp
            }
            Err(e) => ApiError::internal(format!("encoding the response: {e}")).into_response(),
        }
    }

    /// A `200 OK` response of `value` in this format.
    pub fn ok<T: Serialize>(self, value: &T) -> Response {
        self.respond(StatusCode::OK, value)
    }
}

/// The buffered request body, or `413 body_too_large` when it exceeded `limit` (the
/// router's `DefaultBodyLimit`), or `400 malformed_body` when it could not be read.
pub fn read_body(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::body_too_large(limit)
        } else {
            ApiError::malformed_body(format!("cannot read the request body: {}", r.body_text()))
        }
    })
}

/// Bodies at least this large are decoded on the blocking pool, not on an async worker: a
/// maximal JSON or CBOR body takes long enough to stall every other request of the worker.
pub const BLOCKING_DECODE_BYTES: usize = 64 * 1024;

/// Runs `decode` over `body`: inline when the body is small, on tokio's blocking pool when it
/// is [`BLOCKING_DECODE_BYTES`] or more.
pub async fn decode_off_worker<T: Send + 'static>(
    body: Bytes,
    decode: impl FnOnce(&[u8]) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    if body.len() < BLOCKING_DECODE_BYTES {
        return decode(&body);
    }
    tokio::task::spawn_blocking(move || decode(&body))
        .await
        .map_err(|e| {
            ApiError::new(
                super::ErrorCode::Internal,
                format!("decoding the body: {e}"),
            )
        })?
}

/// Extractor: the response format the client accepts.
#[derive(Debug, Clone, Copy)]
pub struct Accept(pub Format);

impl<S: Send + Sync> FromRequestParts<S> for Accept {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Accept(Format::accepted(&parts.headers)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn large_bodies_are_decoded_off_the_calling_thread() {
        let here = std::thread::current().id();
        let thread_of = |len: usize| {
            decode_off_worker(Bytes::from(vec![b' '; len]), |b| {
                Ok((b.len(), std::thread::current().id()))
            })
        };
        assert_eq!(thread_of(10).await.unwrap(), (10, here));
        let (len, there) = thread_of(BLOCKING_DECODE_BYTES).await.unwrap();
        assert_eq!(len, BLOCKING_DECODE_BYTES);
        assert_ne!(there, here, "a large body is decoded on the blocking pool");
        let err = decode_off_worker(Bytes::from(vec![0; BLOCKING_DECODE_BYTES]), |_| {
            Err::<(), _>(ApiError::malformed_body("bad"))
        })
        .await
        .unwrap_err();
        assert_eq!(err.message, "bad");
    }

    fn headers(name: axum::http::HeaderName, v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn body_formats() {
        assert_eq!(
            Format::of_body(&HeaderMap::new()).unwrap_err().code,
            super::super::ErrorCode::UnsupportedMediaType
        );
        assert_eq!(
            Format::of_body(&headers(CONTENT_TYPE, "application/json; charset=utf-8")).unwrap(),
            Format::Json
        );
        assert_eq!(
            Format::of_body(&headers(CONTENT_TYPE, "Application/CBOR")).unwrap(),
            Format::Cbor
        );
        let e = Format::of_body(&headers(CONTENT_TYPE, "text/csv")).unwrap_err();
        assert_eq!(
            (e.status().as_u16(), e.code.as_str()),
            (415, "unsupported_media_type")
        );
    }

    #[test]
    fn accept_header() {
        assert_eq!(Format::accepted(&HeaderMap::new()), Format::Json);
        assert_eq!(Format::accepted(&headers(ACCEPT, "*/*")), Format::Json);
        assert_eq!(
            Format::accepted(&headers(ACCEPT, "application/cbor")),
            Format::Cbor
        );
        assert_eq!(
            Format::accepted(&headers(ACCEPT, "application/json, application/cbor;q=0.5")),
            Format::Json
        );
        assert_eq!(
            Format::accepted(&headers(ACCEPT, "application/cbor, */*;q=0.1")),
            Format::Cbor
        );
        assert_eq!(
            Format::accepted(&headers(ACCEPT, "application/cbor;q=0")),
            Format::Json
        );
    }
}
