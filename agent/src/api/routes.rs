//! The route table and the router built from it, plus the middleware every request passes
//! (request metrics by route template) and the JSON fallbacks for unknown paths and methods.
//!
//! [`routes`] is the single list of `(method, path, handler)`: the router mounts exactly
//! these, and a test checks the OpenAPI description against the same list. Paths are written
//! as the OpenAPI description shows them; the document views `/v1/docs/{key}/history` etc.
//! share one wildcard route (see `docs.rs`).
//!
//! A PostgreSQL hub replica serves [`HUB_ROUTES`] (health, status, metrics, sync, readings
//! ingest and queries, timing and gap records, documents, twins, events) and the dashboard; every other route needs
//! the SQLite store and answers `501 not_on_this_backend` there.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{MethodFilter, MethodRouter, delete, get, patch, post, put};

use super::{
    ApiError, ErrorCode, backup, dashboard, doc_batch, docs, events, gaps, ingest, openapi,
    readings, status, sync, twins,
};
use crate::backend::{BackendKind, NotOnThisBackend};
use crate::metrics::Metrics;
use crate::state::Agent;

/// Axum path of every `/v1/docs/{key}…` route: keys may contain `/`.
const DOCS_WILDCARD: &str = "/v1/docs/{*key}";

/// Axum path of every `/v1/twins/{key}…` route.
const TWINS_WILDCARD: &str = "/v1/twins/{*key}";

/// Every route of the API: method, path as documented, handler.
pub fn routes() -> Vec<(Method, &'static str, MethodRouter<Agent>)> {
    vec![
        (Method::GET, "/healthz", get(status::healthz)),
        (Method::GET, "/readyz", get(status::readyz)),
        (Method::GET, "/metrics", get(status::metrics)),
        (Method::GET, "/v1/status", get(status::status)),
        (Method::GET, "/v1/sources", get(status::sources)),
        (Method::GET, "/v1/openapi.json", get(openapi::serve)),
        (Method::GET, "/v1/series", get(readings::list_series)),
        (Method::POST, "/v1/readings", post(ingest::post_readings)),
        (Method::GET, "/v1/readings", get(readings::range)),
        (
            Method::GET,
            "/v1/readings/aggregate",
            get(readings::aggregate),
        ),
        (Method::GET, "/v1/readings/latest", get(readings::latest)),
        (Method::GET, "/v1/readings/timing", get(readings::timing)),
        (Method::GET, "/v1/readings/gaps", get(gaps::list)),
        (Method::GET, "/v1/docs", get(docs::list)),
        (Method::POST, "/v1/docs", post(doc_batch::post)),
        (Method::GET, "/v1/docs/{key}", get(docs::get)),
        (Method::PUT, "/v1/docs/{key}", put(docs::put)),
        (Method::DELETE, "/v1/docs/{key}", delete(docs::delete)),
        (Method::GET, "/v1/docs/{key}/history", get(docs::get)),
        (Method::GET, "/v1/docs/{key}/diff", get(docs::get)),
        (Method::GET, "/v1/docs/{key}/siblings", get(docs::get)),
        (Method::GET, "/v1/twins", get(twins::list)),
        (Method::GET, "/v1/twins/{key}", get(twins::get)),
        (Method::POST, "/v1/twins/{key}", post(twins::create)),
        (Method::PATCH, "/v1/twins/{key}", patch(twins::patch)),
        (Method::GET, "/v1/twins/{key}/history", get(twins::get)),
        (Method::GET, "/v1/twins/{key}/diff", get(twins::get)),
        (Method::GET, "/v1/events", get(events::events)),
        (Method::GET, "/v1/sync", get(sync::sync_socket)),
        (Method::GET, "/v1/sync/peers", get(sync::list_peers)),
        (Method::POST, "/v1/sync/now", post(sync::sync_now)),
        (Method::GET, "/v1/backup", get(backup::backup)),
    ]
}

/// The routes (method, path) a PostgreSQL hub replica serves; the others need the SQLite
/// store. Readings are queried there (`GET /v1/readings`), not written (`POST`); documents
/// and twins are read and written (as the hub's own actor).
pub const HUB_ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/v1/status"),
    ("GET", "/v1/sources"),
    ("GET", "/v1/openapi.json"),
    ("GET", "/v1/series"),
    ("POST", "/v1/readings"),
    ("GET", "/v1/readings"),
    ("GET", "/v1/readings/aggregate"),
    ("GET", "/v1/readings/latest"),
    ("GET", "/v1/readings/timing"),
    ("GET", "/v1/readings/gaps"),
    ("GET", "/v1/docs"),
    ("POST", "/v1/docs"),
    ("GET", "/v1/docs/{key}"),
    ("PUT", "/v1/docs/{key}"),
    ("DELETE", "/v1/docs/{key}"),
    ("GET", "/v1/docs/{key}/history"),
    ("GET", "/v1/docs/{key}/diff"),
    ("GET", "/v1/docs/{key}/siblings"),
    ("GET", "/v1/twins"),
    ("GET", "/v1/twins/{key}"),
    ("POST", "/v1/twins/{key}"),
    ("PATCH", "/v1/twins/{key}"),
    ("GET", "/v1/twins/{key}/history"),
    ("GET", "/v1/twins/{key}/diff"),
    ("GET", "/v1/events"),
    ("GET", "/v1/sync"),
    ("GET", "/v1/sync/peers"),
];

/// True when an agent on `backend` serves `method` on the documented `path`.
pub fn serves(backend: BackendKind, method: &Method, path: &str) -> bool {
    backend == BackendKind::Sqlite
        || HUB_ROUTES
            .iter()
            .any(|&(m, p)| m == method.as_str() && p == path)
}

/// A handler answering `501 not_on_this_backend` for `method path`.
fn not_on_this_backend(method: &Method, path: &'static str) -> MethodRouter<Agent> {
    let what = format!("{method} {path}");
    let filter = MethodFilter::try_from(method.clone()).unwrap_or(MethodFilter::GET);
    axum::routing::on(filter, move || {
        let what = what.clone();
        async move { ApiError::from(NotOnThisBackend { what }) }
    })
}

/// The axum path a documented path is mounted at.
fn mount_path(path: &'static str) -> &'static str {
    if path.starts_with("/v1/docs/{key}") {
        DOCS_WILDCARD
    } else if path.starts_with("/v1/twins/{key}") {
        TWINS_WILDCARD
    } else {
        path
    }
}

/// Builds the router for every route of the API, with request metrics, the body limit
/// (`state.max_body_bytes`, answered with `413 body_too_large`) and JSON fallbacks.
pub fn router(state: Agent) -> Router {
    let backend = state.backend.kind();
    let mut router = Router::new();
    let mut mounted = HashSet::new();
    for (method, path, handler) in routes() {
        let at = mount_path(path);
        // The document views share the wildcard's GET handler.
        if mounted.insert((method.clone(), at)) {
            let handler = if serves(backend, &method, path) {
                handler
            } else {
                not_on_this_backend(&method, path)
            };
            router = router.route(at, handler);
        }
    }
    // The dashboard uses only routes both backends serve.
    let router = dashboard::mount(router);
    router
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(no_route)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            super::guard::guard,
        ))
        .layer(middleware::from_fn_with_state(state.metrics.clone(), track))
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .with_state(state)
}

async fn no_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        ErrorCode::NoRoute,
        format!("no route for {method} {}; see /v1/openapi.json", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!(
            "{method} is not allowed on {}; see /v1/openapi.json",
            uri.path()
        ),
    )
}

/// The `route` label of a request: the documented route template, never the raw path.
fn route_label<'a>(method: &Method, matched: Option<&'a MatchedPath>, path: &str) -> &'a str {
    match matched.map(MatchedPath::as_str) {
        None => "unmatched",
        Some(DOCS_WILDCARD) if method == Method::GET => {
            let rest = path.strip_prefix("/v1/docs/").unwrap_or(path);
            docs::View::split(rest).1.route()
        }
        Some(DOCS_WILDCARD) => docs::View::Value.route(),
        Some(TWINS_WILDCARD) if method == Method::GET => {
            let rest = path.strip_prefix("/v1/twins/").unwrap_or(path);
            twins::View::split(rest).1.route()
        }
        Some(TWINS_WILDCARD) => twins::View::Value.route(),
        Some(template) => template,
    }
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// Middleware: counts and times every request by method, route template and status, and
/// logs an error answer once (5xx as warnings or errors, 4xx at debug): handlers and
/// `ApiError` never log.
async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(req.method());
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = route_label(req.method(), matched.as_ref(), req.uri().path());
    let resp = next.run(req).await;
    let seconds = started.elapsed().as_secs_f64();
    let status = resp.status().as_u16();
    metrics.observe_http(method, route, status, seconds);
    match resp.extensions().get::<ApiError>() {
        Some(e) if e.code == ErrorCode::Internal => {
            tracing::error!(method, route, status, code = %e.code, "request failed: {}", e.message);
        }
        Some(e) if status >= 500 => {
            tracing::warn!(method, route, status, code = %e.code, "request failed: {}", e.message);
        }
        Some(e) => {
            tracing::debug!(method, route, status, code = %e.code, ms = seconds * 1000.0, "http request: {}", e.message);
        }
        None => tracing::debug!(method, route, status, ms = seconds * 1000.0, "http request"),
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postgres_hub_serves_health_status_sync_readings_documents_and_twins_only() {
        let documented: HashSet<(String, &str)> = routes()
            .iter()
            .map(|(method, path, _)| (method.to_string(), *path))
            .collect();
        for &(method, path) in HUB_ROUTES {
            assert!(
                documented.contains(&(method.to_owned(), path)),
                "{method} {path} is not a route"
            );
        }
        let pg = BackendKind::Postgres;
        for path in [
            "/v1/sync",
            "/readyz",
            "/v1/series",
            "/v1/readings",
            "/v1/readings/aggregate",
            "/v1/readings/latest",
        ] {
            assert!(serves(pg, &Method::GET, path), "{path}");
        }
        for (method, path) in [
            (Method::GET, "/v1/docs"),
            (Method::POST, "/v1/docs"),
            (Method::GET, "/v1/docs/{key}"),
            (Method::PUT, "/v1/docs/{key}"),
            (Method::DELETE, "/v1/docs/{key}"),
            (Method::GET, "/v1/docs/{key}/history"),
            (Method::POST, "/v1/readings"),
            (Method::GET, "/v1/twins"),
            (Method::GET, "/v1/twins/{key}"),
            (Method::POST, "/v1/twins/{key}"),
            (Method::PATCH, "/v1/twins/{key}"),
            (Method::GET, "/v1/twins/{key}/history"),
            (Method::GET, "/v1/twins/{key}/diff"),
            (Method::GET, "/v1/events"),
            (Method::GET, "/v1/readings/timing"),
            (Method::GET, "/v1/readings/gaps"),
        ] {
            assert!(serves(pg, &method, path), "{method} {path}");
        }
        for (method, path) in [(Method::POST, "/v1/sync/now"), (Method::GET, "/v1/backup")] {
            assert!(!serves(pg, &method, path), "{method} {path}");
            assert!(
                serves(BackendKind::Sqlite, &method, path),
                "{method} {path}"
            );
        }
    }
}
