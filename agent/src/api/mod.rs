//! The HTTP API (axum), versioned under `/v1`, plus `/healthz`, `/readyz` and `/metrics`.
//!
//! Owns routing, handlers, the one error type ([`ApiError`]), time parsing, JSON/CBOR
//! content negotiation, the OpenAPI description and the server-sent event stream. It does
//! not bind sockets or run the server: the daemon binds the listener and serves
//! [`router`]`(state)`. Every handler talks to the store through [`AppState`]; writes are
//! answered only after the store reports them durable.
//!
//! | area | module |
//! |---|---|
//! | route table, router, request metrics, fallbacks | `routes` |
//! | `POST /v1/readings` (JSON/CBOR, row and columnar forms) | `ingest` |
//! | series, range, aggregate, latest | `readings` |
//! | documents: value, as-of, history, diff, siblings, list, put, delete | `docs` |
//! | twins (merge documents): create, patch, value, as-of, history, diff, list | `twins` |
//! | `GET /v1/events` (SSE) | `events` |
//! | status, health, readiness, metrics, sources | `status` |
//! | `GET /v1/openapi.json` | `openapi` |
//! | the live dashboard at `/` (embedded HTML, JS, CSS) | `dashboard` |
//!
//! Errors are JSON `{"error": {"code", "message"}}`: 400 `malformed_body`, `bad_time`,
//! `bad_request`, `invalid_query`; 404 `unknown_series`, `not_found`, `before_history`,
//! `no_route`; 405 `method_not_allowed`; 409 `clock_skew`, `seq_gap`, `twin_exists`,
//! `wrong_kind`; 413 `body_too_large`, `value_too_large`; 415 `unsupported_media_type`; 422
//! `invalid_batch`, `invalid_key`, `invalid_patch`;
//! 500 `internal`; 503 `unavailable`, `not_ready`.
//!
//! [`AppState`]: crate::state::AppState

mod dashboard;
mod docs;
mod error;
mod events;
mod format;
mod ingest;
mod openapi;
mod params;
mod readings;
mod routes;
mod status;
pub mod time;
pub mod twins;

pub use error::{ApiError, ErrorCode};
pub use format::Format;
pub use ingest::decode_batch;
pub use openapi::document as openapi_document;
pub use routes::{router, routes};
pub use status::rss_bytes;

#[cfg(test)]
mod tests;
