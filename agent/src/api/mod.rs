//! The HTTP API (axum), versioned under `/v1`, plus `/healthz`, `/readyz` and `/metrics`.
//!
//! Owns routing, handlers, the one error type ([`ApiError`]), time parsing, JSON/CBOR
//! content negotiation, the OpenAPI description and the server-sent event stream. It does
//! not bind sockets or run the server: the daemon binds the listener and serves
//! [`router`]`(state)`. Every handler talks to the store through [`Agent`]; writes are
//! answered only after the store reports them durable.
//!
//! | area | module |
//! |---|---|
//! | `[api]` ([`ApiConfig`]) | `config` |
//! | the scope each route needs | `route_scope` |
//! | the gate before every handler: Host, Origin, throttle, credentials, body type and timeout (state in `crate::access`) | `guard` |
//! | route table, router, request metrics, fallbacks | `routes` |
//! | `POST /v1/readings` (JSON/CBOR, row and columnar forms) | `ingest` |
//! | series, range, aggregate, latest | `readings` |
//! | documents: value, as-of, history, diff, siblings, list, put, delete | `docs` |
//! | `POST /v1/docs`: a batch of puts and deletes as one change | `doc_batch` |
//! | twins (merge documents): create, patch, value, as-of, history, diff, list | `twins` |
//! | `GET /v1/events` (SSE) | `events` |
//! | status, health, readiness, metrics, sources | `status` |
//! | sync: `/v1/sync` (WebSocket), `/v1/sync/peers`, `/v1/sync/now` | `sync` |
//! | `GET /v1/backup` (a streamed backup of the store) | `backup` |
//! | `GET /v1/openapi.json` | `openapi` |
//! | the live dashboard at `/` (embedded HTML, JS, CSS) | `dashboard` |
//!
//! Errors are JSON `{"error": {"code", "message"}}`; the codes and their statuses are the
//! table of [`ErrorCode`] (`ErrorCode::ALL`), which the OpenAPI description and its tests
//! read. An error is logged once, by the request middleware, never by the handler.
//!
//! [`Agent`]: crate::state::Agent

mod backup;
mod config;
mod dashboard;
mod doc_batch;
mod docs;
mod error;
mod events;
mod format;
mod gaps;
mod guard;
mod ingest;
mod openapi;
mod params;
mod readings;
mod route_scope;
mod routes;
mod status;
mod sync;
pub mod time;
pub mod twins;

pub use crate::access::ApiGuard;
pub use crate::access::auth::{ApiToken, AuthError, Scope};
pub use config::{ApiConfig, DEFAULT_LISTEN, DEFAULT_MAX_BODY_BYTES};
pub use error::{ApiError, ErrorCode};
pub use format::Format;
pub use ingest::decode_batch;
pub use openapi::document as openapi_document;
pub use routes::{router, routes};
pub use status::{mark_storage_writes_start, rss_bytes};

#[cfg(test)]
mod guard_tests;
#[cfg(test)]
mod tests;
