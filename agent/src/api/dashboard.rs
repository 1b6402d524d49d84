//! The dashboard: `GET /` (HTML), `/dashboard.css`, the entry module `/dashboard.js` and the
//! modules under `/ui/`, embedded in the binary (agent/assets/dashboard/) so it works offline
//! on a Pi with no internet. Three views: an overview (status, a chart per series, sources,
//! peers), the time-travel explorer for documents and twins (versions, as-of slider, diffs,
//! siblings, an editor) and a series explorer (zoom, raw or aggregate). It uses only the
//! public API and follows `/v1/events` for live updates. Every file is served with a strict
//! Content-Security-Policy: same-origin scripts (no inline code), styles and connections only.
//!
//! These are not API routes, so they are mounted beside [`routes`](super::routes::routes)
//! and are not in the OpenAPI description.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::state::AppState;

/// One embedded file: the path it is served at, its text and its media type.
struct Asset {
    path: &'static str,
    body: &'static str,
    content_type: &'static str,
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the dashboard. `/dashboard.js` is the entry module; it imports the others.
const ASSETS: [Asset; 8] = [
    Asset {
        path: "/",
        body: include_str!("../../assets/dashboard/index.html"),
        content_type: "text/html; charset=utf-8",
    },
    Asset {
        path: "/dashboard.css",
        body: include_str!("../../assets/dashboard/dashboard.css"),
        content_type: "text/css; charset=utf-8",
    },
    Asset {
        path: "/dashboard.js",
        body: include_str!("../../assets/dashboard/dashboard.js"),
        content_type: JS,
    },
    Asset {
        path: "/ui/common.js",
        body: include_str!("../../assets/dashboard/ui/common.js"),
        content_type: JS,
    },
    Asset {
        path: "/ui/chart.js",
        body: include_str!("../../assets/dashboard/ui/chart.js"),
        content_type: JS,
    },
    Asset {
        path: "/ui/overview.js",
        body: include_str!("../../assets/dashboard/ui/overview.js"),
        content_type: JS,
    },
    Asset {
        path: "/ui/explorer.js",
        body: include_str!("../../assets/dashboard/ui/explorer.js"),
        content_type: JS,
    },
    Asset {
        path: "/ui/series.js",
        body: include_str!("../../assets/dashboard/ui/series.js"),
        content_type: JS,
    },
];

/// Whether `path` is one of the dashboard's files (served without credentials: the page
/// asks for a token itself).
pub fn is_asset(path: &str) -> bool {
    ASSETS.iter().any(|a| a.path == path)
}

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Mounts every dashboard file on `router`.
pub fn mount(mut router: Router<AppState>) -> Router<AppState> {
    for a in &ASSETS {
        let (body, content_type) = (a.body, a.content_type);
        router = router.route(
            a.path,
            get(move || async move { asset(body, content_type) }),
        );
    }
    router
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

/// The text of every string literal and every literal part of a template literal in `js`
/// (a small scanner for the dashboard's own scripts: quotes, escapes, `${…}` nesting and
/// comments; regular expressions must not contain quotes).
#[cfg(test)]
fn js_strings(js: &str) -> Vec<String> {
    fn code(s: &[char], mut i: usize, out: &mut Vec<String>, until_brace: bool) -> usize {
        let mut depth = 0usize;
        while i < s.len() {
            match s[i] {
                '/' if s.get(i + 1) == Some(&'/') => {
                    while i < s.len() && s[i] != '\n' {
                        i += 1;
                    }
                }
                '/' if s.get(i + 1) == Some(&'*') => {
                    i += 2;
                    while i + 1 < s.len() && !(s[i] == '*' && s[i + 1] == '/') {
                        i += 1;
                    }
                    i += 1;
                }
                q @ ('"' | '\'') => {
                    let mut text = String::new();
                    i += 1;
                    while i < s.len() && s[i] != q {
                        if s[i] == '\\' {
                            i += 1;
                        }
                        text.extend(s.get(i));
                        i += 1;
                    }
                    out.push(text);
                }
                '`' => {
                    let mut text = String::new();
                    i += 1;
                    while i < s.len() && s[i] != '`' {
                        if s[i] == '$' && s.get(i + 1) == Some(&'{') {
                            out.push(std::mem::take(&mut text));
                            i = code(s, i + 2, out, true);
                        } else {
                            if s[i] == '\\' {
                                i += 1;
                            }
                            text.extend(s.get(i));
                        }
                        i += 1;
                    }
                    out.push(text);
                }
                '{' => depth += 1,
                '}' if until_brace && depth == 0 => return i,
                '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
            i += 1;
        }
        i
    }
    let chars: Vec<char> = js.chars().collect();
    let mut out = Vec::new();
    code(&chars, 0, &mut out, false);
    out
}

/// Every `/v1/...` or other absolute API path the dashboard's scripts request: string
/// literals and literal template parts up to `?`, such as `/v1/docs/{key}/history` (a
/// documented route template the scripts fill in).
#[cfg(test)]
pub(crate) fn api_paths_used() -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in ASSETS.iter().filter(|a| a.content_type == JS) {
        for piece in js_strings(a.body) {
            if piece.starts_with("/v1/") || piece == "/metrics" {
                let path = piece.split('?').next().unwrap_or(&piece);
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

    fn body(path: &str) -> &'static str {
        ASSETS
            .iter()
            .find(|a| a.path == path)
            .map(|a| a.body)
            .unwrap()
    }

    #[test]
    fn the_page_loads_only_the_embedded_files() {
        let html = body("/");
        assert!(html.contains(r#"<script type="module" src="/dashboard.js"></script>"#));
        assert!(html.contains(r#"href="/dashboard.css""#));
        // No inline script or handler: the CSP allows only the embedded files.
        assert_eq!(html.matches("<script").count(), 1);
        assert!(
            !html.contains(" onclick=")
                && !html.contains(" onload=")
                && !html.contains("javascript:")
        );
        assert!(!CSP.contains("unsafe"));
        for a in &ASSETS {
            // No third-party host: the dashboard must work without internet.
            assert!(
                !a.body.contains("http://") && !a.body.contains("https://"),
                "{}",
                a.path
            );
            // Agent data goes into the page as text, never as markup.
            assert!(
                !a.body.contains("innerHTML") && !a.body.contains("insertAdjacentHTML"),
                "{}",
                a.path
            );
            // Every module a script imports is served.
            for import in a.body.lines().filter_map(|l| l.split(" from \"./").nth(1)) {
                let file = import.split('"').next().unwrap();
                let dir = if a.path == "/dashboard.js" {
                    "/"
                } else {
                    "/ui/"
                };
                let served = format!("{dir}{file}");
                assert!(
                    ASSETS.iter().any(|x| x.path == served),
                    "{} imports unserved {served}",
                    a.path
                );
            }
        }
        // Small: the assets ship in the Pi binary.
        let total: usize = ASSETS.iter().map(|a| a.body.len()).sum();
        assert!(total < 80_000, "{total} bytes of dashboard assets");
    }

    #[test]
    fn js_string_scanner() {
        let js = r#"// "/v1/not" in a comment
const a = "/v1/status", b = 'x"y';
const c = `/v1/readings?${q}` + `${k ? `/v1/docs/{key}` : "no"} tail`;"#;
        assert_eq!(
            js_strings(js),
            [
                "/v1/status",
                "x\"y",
                "/v1/readings?",
                "",
                "",
                "/v1/docs/{key}",
                "no",
                " tail"
            ]
        );
    }
}
