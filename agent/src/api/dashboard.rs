//! The live dashboard: `GET /` (HTML), `/dashboard.js` and `/dashboard.css`, embedded in the
//! binary (agent/assets/dashboard/) so it works offline on a Pi with no internet. It reads only
//! the public API (`/v1/status`, `/v1/sources`, `/v1/sync/peers`, `/v1/readings/latest`,
//! `/v1/readings/aggregate`) and follows `/v1/events` for live updates. The pages are served
//! with a strict Content-Security-Policy: same-origin scripts, styles and connections only.
//!
//! These are not API routes, so they are mounted beside [`routes`](super::routes::routes)
//! and are not in the OpenAPI description.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::state::AppState;

const INDEX_HTML: &str = include_str!("../../assets/dashboard/index.html");
const DASHBOARD_JS: &str = include_str!("../../assets/dashboard/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("../../assets/dashboard/dashboard.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The dashboard's paths, for the router and the request metrics.
pub const PATHS: [&str; 3] = ["/", "/dashboard.js", "/dashboard.css"];

/// Mounts the dashboard's three files on `router`.
pub fn mount(router: Router<AppState>) -> Router<AppState> {
    router
        .route(
            PATHS[0],
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            PATHS[1],
            get(|| async { asset(DASHBOARD_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            PATHS[2],
            get(|| async { asset(DASHBOARD_CSS, "text/css; charset=utf-8") }),
        )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Small and versioned with the binary: revalidate so an upgrade shows at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// Every `/v1/...` or other absolute API path the dashboard's script requests (string
/// literals and template prefixes up to `?`).
#[cfg(test)]
pub(crate) fn api_paths_used() -> Vec<String> {
    let mut out = Vec::new();
    for quote in ['"', '`'] {
        for piece in DASHBOARD_JS.split(quote).skip(1).step_by(2) {
            if piece.starts_with("/v1/") || piece == "/metrics" {
                let path = piece.split(['?', '$']).next().unwrap_or(piece);
                if !out.iter().any(|p| p == path) {
                    out.push(path.to_owned());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_the_embedded_files() {
        assert!(INDEX_HTML.contains(r#"src="/dashboard.js""#));
        assert!(INDEX_HTML.contains(r#"href="/dashboard.css""#));
        // No third-party host: the dashboard must work without internet.
        for text in [INDEX_HTML, DASHBOARD_JS, DASHBOARD_CSS] {
            assert!(!text.contains("http://") && !text.contains("https://"));
        }
        // Agent data goes into the page as text, never as markup.
        assert!(!DASHBOARD_JS.contains("innerHTML"));
    }
}
