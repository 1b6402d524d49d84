//! In-process tests of the API gate (`guard.rs`) against a real store in a temp dir, each
//! shaped like the request it refuses: no token, a token of too small a scope, token
//! guessing, a browser's `no-cors` text/plain POST, an HTML form POST to a twin, a page that
//! rebound its DNS name to the agent, a foreign `Origin`, a body that never ends. Every
//! refusal is checked against the store afterwards: nothing was stored.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use kdelta_sync::{Store, StoreConfig};
use serde_json::Value;
use tower::ServiceExt;

use super::guard::connect_info;
use super::{ApiConfig, ApiGuard, Scope, router};
use crate::access::auth::ApiToken;
use crate::metrics::Metrics;
use crate::state::{Agent, AgentInner};

const READ: &str = "reader-token-0123456789";
const WRITE: &str = "writer-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

struct Fixture {
    _dir: tempfile::TempDir,
    state: Agent,
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    json: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }
}

fn token(name: &str, t: &str, scope: Scope) -> ApiToken {
    ApiToken {
        name: name.into(),
        token: Some(t.into()),
        token_sha256: None,
        token_file: None,
        scopes: vec![scope],
    }
}

/// An agent's API with `cfg` (tokens unless `open`).
async fn fixture(open: bool, tune: impl FnOnce(&mut ApiConfig)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("kdelta.db"), StoreConfig::default())
        .await
        .unwrap();
    let mut cfg = ApiConfig::default();
    if !open {
        cfg.tokens = vec![
            token("reader", READ, Scope::Read),
            token("writer", WRITE, Scope::Write),
            token("ops", ADMIN, Scope::Admin),
        ];
    }
    tune(&mut cfg);
    cfg.validate().unwrap();
    let metrics = Arc::new(Metrics::new());
    let clock = crate::clock::ClockMonitor::start(&Default::default(), &store, &metrics);
    let state = Agent::new(AgentInner {
        backend: crate::backend::Backend::Sqlite(store),
        metrics,
        started: Instant::now(),
        data_dir: dir.path().to_path_buf(),
        sources: Arc::new(RwLock::new(Vec::new())),
        mqtt_ingest: Default::default(),
        device: "pi".into(),
        ready: AtomicBool::new(true),
        max_body_bytes: 64 * 1024,
        shutdown: Default::default(),
        peers: Default::default(),
        guard: Arc::new(ApiGuard::new(&cfg, &[], "pi").unwrap()),
        clock: Some(clock),
        retention: Default::default(),
    });
    Fixture { _dir: dir, state }
}

/// A request as a browser or client would send it: `Host` set, from `from`.
fn req(method: &str, uri: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "127.0.0.1:7878")
}

impl Fixture {
    async fn send_from(&self, from: &str, req: Request<Body>) -> Answer {
        let mut req = req;
        let addr: SocketAddr = from.parse().unwrap();
        req.extensions_mut().insert(connect_info(addr, None));
        let resp = router(self.state.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            json,
        }
    }

    async fn send(&self, req: Request<Body>) -> Answer {
        self.send_from("127.0.0.1:50000", req).await
    }

    /// Puts `{"v": 1}` at `key` with `bearer`.
    async fn put(&self, key: &str, bearer: Option<&str>) -> Answer {
        let mut r =
            req("PUT", &format!("/v1/docs/{key}")).header("content-type", "application/json");
        if let Some(t) = bearer {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        self.send(r.body(Body::from(r#"{"v": 1}"#)).unwrap()).await
    }

    async fn stored_changes(&self) -> u64 {
        self.state.sqlite().unwrap().stats().await.unwrap().changes
    }
}

#[tokio::test]
async fn no_token_is_401_and_nothing_is_stored() {
    let f = fixture(false, |_| {}).await;
    let a = f.put("k", None).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    assert!(a.headers.contains_key("www-authenticate"));
    let a = f.put("k", Some("not-a-token-0123456789")).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let a = f
        .send(req("GET", "/v1/status").body(Body::empty()).unwrap())
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "reads need a token too");
    assert_eq!(f.stored_changes().await, 0);
    assert!(f.state.sqlite().unwrap().get("k").await.unwrap().is_none());

    // Open routes stay open.
    for open in ["/healthz", "/readyz", "/", "/v1/openapi.json"] {
        let a = f.send(req("GET", open).body(Body::empty()).unwrap()).await;
        assert!(a.status.is_success(), "{open}: {}", a.status);
    }
    let a = f
        .send(req("GET", "/metrics").body(Body::empty()).unwrap())
        .await;
    assert_eq!(
        a.status,
        StatusCode::UNAUTHORIZED,
        "metrics are not public by default"
    );
}

#[tokio::test]
async fn scopes_are_enforced_read_write_admin() {
    let f = fixture(false, |_| {}).await;
    let a = f.put("k", Some(READ)).await;
    assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "forbidden"));
    assert!(
        a.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("needs write")
    );
    assert_eq!(f.stored_changes().await, 0);

    let a = f.put("k", Some(WRITE)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    let get =
        |t: &'static str| req("GET", "/v1/docs/k").header("authorization", format!("Bearer {t}"));
    assert_eq!(
        f.send(get(READ).body(Body::empty()).unwrap()).await.status,
        StatusCode::OK
    );

    // Admin-only: a write token is refused, an admin token passes the gate.
    let now = |t: &str| {
        req("POST", "/v1/sync/now?timeout=1s")
            .header("authorization", format!("Bearer {t}"))
            .body(Body::empty())
            .unwrap()
    };
    let a = f.send(now(WRITE)).await;
    assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "forbidden"));
    let a = f.send(now(ADMIN)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);

    // The event stream takes the token as a query parameter (EventSource sends no headers).
    let a = router(f.state.clone())
        .oneshot(
            req("GET", &format!("/v1/events?access_token={READ}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(a.status(), StatusCode::OK);
}

#[tokio::test]
async fn metrics_can_be_public() {
    let f = fixture(false, |c| c.metrics_public = true).await;
    let a = router(f.state.clone())
        .oneshot(req("GET", "/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(a.status(), StatusCode::OK);
}

#[tokio::test]
async fn token_guessing_is_throttled_per_address() {
    let f = fixture(false, |c| {
        c.max_auth_failures = 5;
        c.auth_failure_window = Duration::from_secs(60);
    })
    .await;
    let guess = |i: usize| {
        req("GET", "/v1/status")
            .header("authorization", format!("Bearer guess-{i:020}"))
            .body(Body::empty())
            .unwrap()
    };
    for i in 0..5 {
        let a = f.send_from("192.0.2.7:40000", guess(i)).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "guess {i}");
    }
    let a = f.send_from("192.0.2.7:40001", guess(5)).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_auth_failures")
    );
    let retry: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Even the right token waits on the throttled address…
    let status = |t: &str| {
        req("GET", "/v1/status")
            .header("authorization", format!("Bearer {t}"))
            .body(Body::empty())
            .unwrap()
    };
    let a = f.send_from("192.0.2.7:40002", status(READ)).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    // …while another address is served.
    let a = f.send_from("192.0.2.8:40000", status(READ)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
}

#[tokio::test]
async fn a_no_cors_text_plain_post_stores_nothing() {
    // What `fetch(url, {method: "POST", mode: "no-cors", body: JSON.stringify(batch)})` sends.
    let f = fixture(true, |_| {}).await;
    let batch = r#"[{"series":"evil","value":1}]"#;
    for ct in [Some("text/plain;charset=UTF-8"), None] {
        let mut r = req("POST", "/v1/readings").header("origin", "http://127.0.0.1:7878");
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        let a = f.send(r.body(Body::from(batch)).unwrap()).await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            "{ct:?}: {}",
            a.json
        );
    }
    assert!(f.state.sqlite().unwrap().series().await.unwrap().is_empty());
    assert_eq!(f.stored_changes().await, 0);
}

#[tokio::test]
async fn an_html_form_post_to_a_twin_stores_nothing() {
    // `<form method=post action=http://127.0.0.1:7878/v1/twins/x enctype=text/plain>` with
    // a field named `{"a":1, "b":"` and value `"}` sends a JSON-looking text/plain body.
    let f = fixture(true, |_| {}).await;
    for ct in [
        "application/x-www-form-urlencoded",
        "text/plain",
        "multipart/form-data; boundary=x",
    ] {
        let a = f
            .send(
                req("POST", "/v1/twins/x")
                    .header("content-type", ct)
                    .body(Body::from(r#"{"a":1, "b":"="}"#))
                    .unwrap(),
            )
            .await;
        assert_eq!(
            a.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{ct}: {}",
            a.json
        );
    }
    assert!(
        f.state
            .sqlite()
            .unwrap()
            .twin_get("x")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(f.stored_changes().await, 0);
    // A real client still creates it.
    let a = f
        .send(
            req("POST", "/v1/twins/x")
                .header("content-type", "application/json")
                .body(Body::from(r#"{"a":1}"#))
                .unwrap(),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.json);
}

#[tokio::test]
async fn an_empty_form_post_to_a_twin_creates_nothing() {
    // `<form method=post action=…/v1/twins/x>` without fields, or a `no-cors` fetch
    // without a body: Content-Length 0 with a form type, text/plain or no type at all.
    let f = fixture(true, |_| {}).await;
    for ct in [
        Some("application/x-www-form-urlencoded"),
        Some("text/plain"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let mut r = req("POST", "/v1/twins/x").header("content-length", "0");
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        let a = f.send(r.body(Body::empty()).unwrap()).await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            "{ct:?}: {}",
            a.json
        );
    }
    let a = f
        .send(
            req("PUT", "/v1/docs/x")
                .header("content-type", "text/plain")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", a.json);
    let store = f.state.sqlite().unwrap();
    assert!(store.twin_get("x").await.unwrap().is_none());
    assert_eq!(f.stored_changes().await, 0);
    // A bodiless DELETE needs no type (it answers about the key, not the media type)…
    let a = f
        .send(req("DELETE", "/v1/docs/x").body(Body::empty()).unwrap())
        .await;
    assert_ne!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", a.json);
    // …and a client that says JSON still creates an empty twin.
    let a = f
        .send(
            req("POST", "/v1/twins/x")
                .header("content-type", "application/json")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.json);
}

/// A body that records whether anyone polled it and never ends.
fn watched_body() -> (Body, Arc<AtomicBool>) {
    let polled = Arc::new(AtomicBool::new(false));
    let flag = polled.clone();
    let stream = futures::stream::poll_fn(move |_| {
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        std::task::Poll::<Option<Result<axum::body::Bytes, std::io::Error>>>::Pending
    });
    (Body::from_stream(stream), polled)
}

#[tokio::test]
async fn bodies_are_not_read_before_authentication_nor_where_no_route_takes_one() {
    let f = fixture(false, |c| c.body_read_timeout = Duration::from_secs(30)).await;
    let started = Instant::now();
    // Open routes and /v1/sync take no body: 413 at once, nothing read, connection closed.
    for path in ["/healthz", "/readyz", "/v1/openapi.json", "/", "/v1/sync"] {
        let (body, polled) = watched_body();
        let a = f
            .send(
                req("POST", path)
                    .header("content-type", "application/json")
                    .body(body)
                    .unwrap(),
            )
            .await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            "{path}: {}",
            a.json
        );
        assert_eq!(a.headers["connection"], "close", "{path}");
        assert!(
            !polled.load(std::sync::atomic::Ordering::SeqCst),
            "{path}: body read"
        );
    }
    // A write route without (or with a wrong) token: 401 before any of the body is read.
    for bearer in [None, Some("not-a-token-0123456789")] {
        let (body, polled) = watched_body();
        let mut r = req("POST", "/v1/readings").header("content-type", "application/json");
        if let Some(t) = bearer {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        let a = f.send(r.body(body).unwrap()).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{bearer:?}: {}", a.json);
        assert!(
            !polled.load(std::sync::atomic::Ordering::SeqCst),
            "{bearer:?}: body read"
        );
    }
    // A read token cannot make a write route read its body either.
    let (body, polled) = watched_body();
    let a = f
        .send(
            req("POST", "/v1/readings")
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {READ}"))
                .body(body)
                .unwrap(),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.json);
    assert!(!polled.load(std::sync::atomic::Ordering::SeqCst));
    // None of these waited for the body (api.body_read_timeout is 30 s here).
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(f.stored_changes().await, 0);
}

#[tokio::test]
async fn a_rebound_host_is_refused_and_stores_nothing() {
    // A page on attacker.example whose DNS now answers 127.0.0.1: same origin for the
    // browser, so it can read and write — unless the agent refuses the Host.
    let f = fixture(true, |_| {}).await;
    let a = f
        .send(
            Request::put("/v1/docs/k")
                .header("host", "attacker.example:7878")
                .header("content-type", "application/json")
                .body(Body::from("1"))
                .unwrap(),
        )
        .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::FORBIDDEN, "host_not_allowed")
    );
    let a = f
        .send(
            Request::get("/v1/status")
                .header("host", "attacker.example:7878")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "reads are refused too");
    assert_eq!(f.stored_changes().await, 0);

    // A configured name is answered.
    let f = fixture(true, |c| c.allowed_hosts = vec!["hub.example.org".into()]).await;
    let a = f
        .send(
            Request::get("/v1/status")
                .header("host", "hub.example.org:7878")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn a_foreign_origin_cannot_write_even_with_json() {
    let f = fixture(true, |_| {}).await;
    let put = |origin: &str| {
        req("PUT", "/v1/docs/k")
            .header("origin", origin)
            .header("content-type", "application/json")
            .body(Body::from("1"))
            .unwrap()
    };
    for origin in ["http://attacker.example", "null", "http://127.0.0.1:9999"] {
        let a = f.send(put(origin)).await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::FORBIDDEN, "foreign_origin"),
            "{origin}"
        );
    }
    assert_eq!(f.stored_changes().await, 0);
    // The dashboard's own origin may write.
    let a = f.send(put("http://127.0.0.1:7878")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
}

#[tokio::test]
async fn a_body_that_never_ends_is_408() {
    let f = fixture(true, |c| c.body_read_timeout = Duration::from_millis(200)).await;
    let first = futures::stream::iter([Ok::<_, std::io::Error>(axum::body::Bytes::from_static(
        b"[{\"series\"",
    ))]);
    let stream = futures::StreamExt::chain(first, futures::stream::pending());
    let started = Instant::now();
    let a = f
        .send(
            req("POST", "/v1/readings")
                .header("content-type", "application/json")
                .body(Body::from_stream(stream))
                .unwrap(),
        )
        .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::REQUEST_TIMEOUT, "request_timeout")
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(f.stored_changes().await, 0);
}
