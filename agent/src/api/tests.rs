//! In-process tests of the router against a real store in a temp dir: the route table
//! against the OpenAPI description, and the request/response contract of each area. The
//! end-to-end tests in `tests/e2e` repeat the essentials against the real binary.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use kdelta_sync::{Store, StoreConfig};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{ErrorCode, openapi_document, router, routes};
use crate::metrics::Metrics;
use crate::state::{Agent, AgentInner};

struct Fixture {
    _dir: tempfile::TempDir,
    state: Agent,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("kdelta.db"), StoreConfig::default())
        .await
        .unwrap();
    let metrics = Arc::new(Metrics::new());
    let clock = crate::clock::ClockMonitor::start(&Default::default(), &store, &metrics);
    let state = Agent::new(AgentInner {
        backend: crate::backend::Backend::Sqlite(store),
        metrics,
        started: Instant::now(),
        data_dir: dir.path().to_path_buf(),
        sources: Arc::new(RwLock::new(Vec::new())),
        mqtt_ingest: Default::default(),
        device: "test".into(),
        ready: AtomicBool::new(true),
        max_body_bytes: 64 * 1024,
        shutdown: Default::default(),
        peers: Default::default(),
        guard: Default::default(),
        clock: Some(clock),
        retention: Default::default(),
    });
    Fixture { _dir: dir, state }
}

struct Answer {
    status: StatusCode,
    content_type: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
}

impl Fixture {
    async fn send(&self, req: Request<Body>) -> Answer {
        let resp = router(self.state.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 24)
            .await
            .unwrap()
            .to_vec();
        Answer {
            status,
            content_type,
            body,
        }
    }
    async fn get(&self, uri: &str) -> Answer {
        self.send(Request::get(uri).body(Body::empty()).unwrap())
            .await
    }
    async fn post(&self, uri: &str, content_type: &str, body: impl Into<Body>) -> Answer {
        self.send(
            Request::post(uri)
                .header("content-type", content_type)
                .body(body.into())
                .unwrap(),
        )
        .await
    }
    async fn put_json(&self, uri: &str, v: &Value) -> Answer {
        self.send(
            Request::put(uri)
                .header("content-type", "application/json")
                .body(Body::from(v.to_string()))
                .unwrap(),
        )
        .await
    }
    async fn readings_count(&self) -> u64 {
        self.state.sqlite().unwrap().stats().await.unwrap().readings
    }
}

fn documented() -> BTreeSet<(String, String)> {
    let doc = openapi_document();
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            out.insert((method.to_uppercase(), path.clone()));
        }
    }
    out
}

#[test]
fn openapi_describes_exactly_the_routes() {
    let mounted: BTreeSet<(String, String)> = routes()
        .into_iter()
        .map(|(m, p, _)| (m.to_string(), p.to_owned()))
        .collect();
    let documented = documented();
    let undocumented: Vec<_> = mounted.difference(&documented).collect();
    let unmounted: Vec<_> = documented.difference(&mounted).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from openapi.json: {undocumented:?}"
    );
    assert!(
        unmounted.is_empty(),
        "documented but not routed: {unmounted:?}"
    );
    // Every `$ref` resolves.
    let doc = openapi_document();
    let text = doc.to_string();
    for piece in text.split("#/components/schemas/").skip(1) {
        let name: String = piece.chars().take_while(|c| c.is_alphanumeric()).collect();
        assert!(
            doc["components"]["schemas"].get(&name).is_some(),
            "dangling $ref {name}"
        );
    }
}

/// Every error answer in the OpenAPI description comes from [`ErrorCode`], under its own
/// status; every code is answered by some route (or by every route: the fallbacks and
/// `internal`); and the user docs quote codes with their real status.
#[test]
fn error_codes_in_openapi_and_docs_come_from_the_enum() {
    let doc = openapi_document();
    let listed: Vec<&str> =
        doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
    let all: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(listed, all);
    let by_name = |name: &str| ErrorCode::ALL.iter().copied().find(|c| c.as_str() == name);
    let mut answered = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (status, resp) in op["responses"].as_object().unwrap() {
                let text = resp["description"].as_str().unwrap_or_default();
                let Some(codes) = text.strip_prefix("Error; `error.code` is one of: ") else {
                    assert!(
                        status.starts_with(['1', '2']),
                        "{method} {path} {status}: {text}"
                    );
                    continue;
                };
                // Entries are "`code` (meaning)"; meanings may quote other things in backticks.
                let pieces: Vec<&str> = codes.split('`').collect();
                let names = pieces
                    .windows(2)
                    .filter(|w| w[1].starts_with(" ("))
                    .map(|w| w[0]);
                for piece in names {
                    let code = by_name(piece)
                        .unwrap_or_else(|| panic!("{method} {path}: unknown code {piece}"));
                    assert_eq!(code.status().as_str(), status, "{method} {path}: {piece}");
                    answered.insert(piece.to_owned());
                }
            }
        }
    }
    for code in ErrorCode::ALL {
        // Any route may answer these (fallbacks, a bug; every SQLite-only route on a
        // PostgreSQL hub replica), or the store's mapping keeps them for sync-only failures
        // that no route documents.
        let anywhere = matches!(
            code,
            ErrorCode::Internal
                | ErrorCode::NotOnThisBackend
                | ErrorCode::NoRoute
                | ErrorCode::MethodNotAllowed
                | ErrorCode::ClockSkew
                | ErrorCode::SeqGap
        );
        assert!(
            anywhere || answered.contains(code.as_str()),
            "no route documents `{code}`"
        );
    }
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut files = vec![std::path::PathBuf::from(format!("{root}/README.md"))];
    for entry in std::fs::read_dir(format!("{root}/docs")).unwrap() {
        files.push(entry.unwrap().path());
    }
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "md"))
    {
        let text = std::fs::read_to_string(file).unwrap();
        // Every piece between backticks (parity is lost at code fences, and a piece that is
        // exactly `NNN name` is a quoted code wherever it stands).
        for quoted in text.split('`') {
            let Some((status, name)) = quoted.split_once(' ') else {
                continue;
            };
            if status.len() != 3 || !status.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            if !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                continue;
            }
            let code = by_name(name).unwrap_or_else(|| {
                panic!("{}: `{quoted}` is not an API error code", file.display())
            });
            assert_eq!(
                code.status().as_str(),
                status,
                "{}: `{quoted}`",
                file.display()
            );
        }
    }
}

#[tokio::test]
async fn every_documented_route_reaches_a_handler() {
    let f = fixture().await;
    for (method, path) in documented() {
        let uri = path.replace("{key}", "some/key");
        let req = Request::builder()
            .method(method.as_str())
            .uri(&uri)
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap();
        let resp = router(f.state.clone()).oneshot(req).await.unwrap();
        if resp.status() == StatusCode::NOT_FOUND || resp.status() == StatusCode::METHOD_NOT_ALLOWED
        {
            let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .unwrap();
            let v: Value = serde_json::from_slice(&body).unwrap();
            let code = v["error"]["code"].as_str().unwrap();
            assert!(
                code != "no_route" && code != "method_not_allowed",
                "{method} {uri}: {v}"
            );
        }
    }
    let a = f.get("/v1/nothing-here").await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (StatusCode::NOT_FOUND, "no_route")
    );
    // The gate runs before routing: a state-changing request must declare its media type
    // (even when empty) before the router can say the method is not allowed.
    let a = f
        .send(
            Request::patch("/v1/series")
                .header("content-type", "application/json")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
}

#[tokio::test]
async fn ingest_json_and_cbor_then_query() {
    let f = fixture().await;
    let a = f
        .post(
            "/v1/readings",
            "application/json",
            r#"[{"series":"t","ts":60000,"value":1},{"series":"t","ts":"1970-01-01T00:01:30Z","value":3,"unit":"C"}]"#,
        )
        .await;
    assert_eq!(
        a.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let ack = a.json();
    assert_eq!(ack["count"], 2);
    assert_eq!(ack["seq"], 1);
    assert!(ack["hlc"].as_str().unwrap().contains(':'));

    let mut cbor = Vec::new();
    ciborium::into_writer(
        &json!({"series": [{"name": "h", "unit": "%", "meta": {"room": "a"}, "ts": [1000, 2000], "values": [40, 41.5]}]}),
        &mut cbor,
    )
    .unwrap();
    let a = f.post("/v1/readings", "application/cbor", cbor).await;
    assert_eq!(a.status, StatusCode::CREATED);

    let page = f.get("/v1/readings?series=t&from=0&to=now").await.json();
    assert_eq!(
        page["readings"],
        json!([{"ts": 60000, "value": 1.0}, {"ts": 90000, "value": 3.0}])
    );
    assert_eq!(page["unit"], "C");
    let page = f.get("/v1/readings?series=t&limit=1").await.json();
    assert_eq!(page["readings"].as_array().unwrap().len(), 1);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let page = f
        .get(&format!("/v1/readings?series=t&limit=1&cursor={cursor}"))
        .await
        .json();
    assert_eq!(page["readings"], json!([{"ts": 90000, "value": 3.0}]));

    let agg = f
        .get("/v1/readings/aggregate?series=t&from=0&to=120000&bucket=1m&fn=avg,count")
        .await
        .json();
    assert_eq!(
        agg["buckets"],
        json!([{"start": 60000, "avg": 2.0, "count": 2}])
    );

    let latest = f.get("/v1/readings/latest?series=t,h").await.json();
    assert_eq!(latest["latest"][0]["value"], 3.0);
    assert_eq!(latest["latest"][1]["series"], "h");

    let series = f.get("/v1/series").await.json();
    assert_eq!(series["series"][0]["name"], "h");
    assert_eq!(series["series"][0]["meta"]["room"], "a");
    assert_eq!(series["next_after"], Value::Null);
    // Paged: one series per page, each once, then an empty last page.
    let page = f.get("/v1/series?limit=1").await.json();
    assert_eq!(
        (
            page["series"][0]["name"].clone(),
            page["next_after"].clone()
        ),
        (json!("h"), json!("h"))
    );
    assert_eq!(page["series"][0]["count"], 2);
    let page = f.get("/v1/series?limit=1&after=h").await.json();
    assert_eq!(
        (
            page["series"][0]["name"].clone(),
            page["next_after"].clone()
        ),
        (json!("t"), json!("t"))
    );
    assert_eq!(
        (
            page["series"][0]["first_ts"].clone(),
            page["series"][0]["last_ts"].clone()
        ),
        (json!(60000), json!(90000))
    );
    let page = f.get("/v1/series?limit=1&after=t").await.json();
    assert_eq!(page, json!({"series": [], "next_after": null}));
    assert_eq!(
        f.get("/v1/series?limit=0").await.status,
        StatusCode::BAD_REQUEST
    );

    // CBOR answer on request.
    let a = f
        .send(
            Request::get("/v1/readings/latest?series=h")
                .header("accept", "application/cbor")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(a.content_type, "application/cbor");
    let v: Value = ciborium::from_reader(&a.body[..]).unwrap();
    assert_eq!(v["latest"][0]["value"], 41.5);
}

#[tokio::test]
async fn bad_input_gets_the_right_code_and_stores_nothing() {
    let f = fixture().await;
    let mut nan = Vec::new();
    {
        use ciborium::Value as C;
        let row = C::Map(vec![
            (C::Text("series".into()), C::Text("t".into())),
            (C::Text("value".into()), C::Float(f64::NAN)),
        ]);
        ciborium::into_writer(&C::Array(vec![row]), &mut nan).unwrap();
    }
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "application/json",
            b"[{\"series\":".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_body",
        ),
        (
            "application/cbor",
            vec![0x81, 0xa1, 0x66],
            StatusCode::BAD_REQUEST,
            "malformed_body",
        ),
        (
            "application/json",
            br#"[{"series":"t","value":"12"}]"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_batch",
        ),
        (
            "application/json",
            br#"[{"series":"t","value":"NaN"}]"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_batch",
        ),
        (
            "application/cbor",
            nan,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_batch",
        ),
        (
            "application/json",
            b"[]".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_batch",
        ),
        (
            "application/json",
            br#"[{"series":"t","ts":5,"value":1},{"series":"t","ts":5,"value":2}]"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_batch",
        ),
        (
            "text/csv",
            b"t,1,2".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "application/json",
            vec![b' '; 70 * 1024],
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
    ];
    for (ct, body, status, code) in cases {
        let a = f.post("/v1/readings", ct, body).await;
        assert_eq!(
            (a.status, a.code()),
            (status, code.to_owned()),
            "{ct}: {}",
            String::from_utf8_lossy(&a.body)
        );
    }
    assert_eq!(f.readings_count().await, 0);
    assert_eq!(f.state.sqlite().unwrap().stats().await.unwrap().changes, 0);

    let a = f.get("/v1/readings?series=nope").await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (StatusCode::NOT_FOUND, "unknown_series")
    );
    let a = f.get("/v1/readings?series=t&from=yesterday").await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (StatusCode::BAD_REQUEST, "bad_time")
    );
    let a = f.get("/v1/readings").await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (StatusCode::BAD_REQUEST, "bad_request")
    );

    let metrics = f.get("/metrics").await;
    let text = String::from_utf8(metrics.body).unwrap();
    assert!(
        text.contains(r#"kdelta_ingest_rejected_total{source="http",code="invalid_batch"} 5"#),
        "{text}"
    );
    assert!(
        text.contains(r#"route="/v1/readings",status="422""#),
        "{text}"
    );
}

#[tokio::test]
async fn one_bad_reading_is_left_out_and_named_and_atomic_refuses_the_batch() {
    let f = fixture().await;
    let body = br#"{"series":[
        {"name":"t","ts":[1000,2000,3000],"values":[1,2,3]},
        {"name":"t2","unit":"uuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuu","ts":[1000],"values":[1]},
        {"name":"t3","ts":[1000,-1],"values":[1,2]}]}"#;
    // All or nothing when asked: refused, naming the first offender, nothing stored.
    let a = f
        .post("/v1/readings?atomic=true", "application/json", &body[..])
        .await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_batch")
    );
    let message = a.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("series[1].values[0]") && message.contains("2 reading(s)"),
        "{message}"
    );
    assert_eq!(f.readings_count().await, 0);
    let a = f
        .post("/v1/readings?atomic=maybe", "application/json", &body[..])
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(f.readings_count().await, 0);

    // By default the rest is stored and each offender named by its place.
    let a = f.post("/v1/readings", "application/json", &body[..]).await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.json());
    let v = a.json();
    assert_eq!(
        (v["count"].as_u64(), v["rejected_count"].as_u64()),
        (Some(4), Some(2))
    );
    let rejected: Vec<(&str, &str)> = v["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["at"].as_str().unwrap(), r["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        rejected,
        [
            ("series[1].values[0]", "unit_too_long"),
            ("series[2].values[1]", "bad_timestamp")
        ]
    );
    assert_eq!(f.readings_count().await, 4);

    // Counted per reason under source `http`, shown as a row of `GET /v1/sources`.
    let text = String::from_utf8(f.get("/metrics").await.body).unwrap();
    assert!(
        text.contains(
            r#"kdelta_source_rejected_readings_total{source="http",reason="unit_too_long"} 1"#
        ),
        "{text}"
    );
    let sources = f.get("/v1/sources").await.json();
    let http = sources["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "http")
        .cloned()
        .expect("an http row");
    assert_eq!(http["rejected"]["bad_timestamp"], 1);
    assert_eq!(http["readings"], 4);
}

#[tokio::test]
async fn documents_versions_as_of_diff_siblings() {
    let f = fixture().await;
    let v1 = f
        .put_json("/v1/docs/gh/setpoint", &json!({"temp": 21}))
        .await;
    assert_eq!(v1.status, StatusCode::OK);
    let h1 = v1.json()["hlc"].as_str().unwrap().to_owned();
    let v2 = f
        .put_json("/v1/docs/gh/setpoint", &json!({"temp": 22, "mode": "eco"}))
        .await
        .json();
    assert_eq!(v2["seq"], 2);

    let doc = f.get("/v1/docs/gh/setpoint").await.json();
    assert_eq!(doc["value"], json!({"temp": 22, "mode": "eco"}));
    assert_eq!(doc["siblings"], 1);
    let old = f
        .get(&format!("/v1/docs/gh/setpoint?as_of={h1}"))
        .await
        .json();
    assert_eq!(old["value"], json!({"temp": 21}));

    let hist = f.get("/v1/docs/gh/setpoint/history").await.json();
    assert_eq!(hist["versions"].as_array().unwrap().len(), 2);
    assert_eq!(hist["versions"][0]["value"]["temp"], 22);

    let diff = f
        .get(&format!("/v1/docs/gh/setpoint/diff?from={h1}"))
        .await
        .json();
    let ops: BTreeSet<(String, String)> = diff["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["path"].as_str().unwrap().to_owned(),
                c["op"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        ops,
        BTreeSet::from([
            ("/mode".into(), "added".into()),
            ("/temp".into(), "changed".into())
        ])
    );

    let sib = f.get("/v1/docs/gh/setpoint/siblings").await.json();
    assert_eq!(sib["siblings"].as_array().unwrap().len(), 1);

    let list = f.get("/v1/docs?prefix=gh/").await.json();
    assert_eq!(list["docs"][0]["key"], "gh/setpoint");

    let a = f.get("/v1/docs/gh/setpoint?as_of=1000").await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (StatusCode::NOT_FOUND, "before_history")
    );
    let a = f.get("/v1/docs/gh/setpoint?as_of=soon").await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (StatusCode::BAD_REQUEST, "bad_time")
    );
    let a = f.get("/v1/docs/missing").await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let a = f.put_json("/v1/docs/x/history", &json!(1)).await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_key")
    );

    let del = f
        .send(
            Request::delete("/v1/docs/gh/setpoint")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(del.status, StatusCode::OK);
    assert_eq!(del.json()["deleted"], true);
    let a = f.get("/v1/docs/gh/setpoint").await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let a = f
        .send(
            Request::delete("/v1/docs/gh/setpoint")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    assert_eq!(
        f.get("/v1/docs/gh/setpoint/history").await.json()["versions"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[tokio::test]
async fn status_health_readiness_metrics() {
    let f = fixture().await;
    let s = f.get("/v1/status").await.json();
    assert_eq!(s["actor"], f.state.sqlite().unwrap().actor().to_string());
    assert!(s["rss_bytes"].as_u64().unwrap() > 0);
    assert!(s["disk"]["total_bytes"].as_u64().unwrap() > 0);
    assert_eq!(s["counts"]["readings"], 0);
    assert_eq!(f.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(f.get("/readyz").await.status, StatusCode::OK);
    f.state
        .ready
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let a = f.get("/readyz").await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    );
    let m = f.get("/metrics").await;
    assert!(m.content_type.starts_with("application/openmetrics-text"));
    let text = String::from_utf8(m.body).unwrap();
    assert!(text.contains("kdelta_build_info{version=\""), "{text}");
    assert!(
        text.contains(r#"kdelta_http_requests_total{method="GET",route="/readyz",status="503"} 1"#),
        "{text}"
    );
    assert_eq!(f.get("/v1/sources").await.json(), json!({"sources": []}));

    f.state.sqlite().unwrap().close().await;
    let a = f.get("/v1/status").await;
    assert_eq!(
        a.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let a = f.put_json("/v1/docs/k", &json!(1)).await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    );
}

#[tokio::test]
async fn events_stream_filtered_changes_and_ends_on_shutdown() {
    use futures::StreamExt;
    let f = fixture().await;
    let resp = router(f.state.clone())
        .oneshot(
            Request::get("/v1/events?kind=doc&prefix=gh/")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body().into_data_stream();
    f.put_json("/v1/docs/other", &json!(0)).await;
    f.post(
        "/v1/readings",
        "application/json",
        r#"[{"series":"gh/t","value":1}]"#,
    )
    .await;
    f.put_json("/v1/docs/gh/a", &json!(1)).await;
    let chunk = tokio::time::timeout(std::time::Duration::from_secs(5), body.next())
        .await
        .expect("an event within 5 s")
        .unwrap()
        .unwrap();
    let text = String::from_utf8(chunk.to_vec()).unwrap();
    assert!(text.starts_with("event: change\n"), "{text}");
    let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    let v: Value = serde_json::from_str(data).unwrap();
    assert_eq!(
        (v["kind"].as_str(), v["key"].as_str()),
        (Some("doc"), Some("gh/a"))
    );
    f.state.shutdown.cancel();
    let end = tokio::time::timeout(std::time::Duration::from_secs(5), body.next())
        .await
        .expect("stream ends");
    assert!(end.is_none());
}

#[tokio::test]
async fn a_lagging_event_subscriber_is_told_how_much_it_missed() {
    use futures::StreamExt;
    let f = fixture().await;
    let resp = router(f.state.clone())
        .oneshot(Request::get("/v1/events").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let mut body = resp.into_body().into_data_stream();
    // More changes than the store's broadcast buffer (1024) while the client reads nothing.
    let writes = (0..1100i64).map(|i| {
        let store = f.state.sqlite().unwrap().clone();
        async move {
            let mut b = kdelta_sync::ReadingBatch::new();
            b.push("lag", i, 1.0, None);
            store.append(b).await.unwrap();
        }
    });
    futures::future::join_all(writes).await;
    let chunk = tokio::time::timeout(std::time::Duration::from_secs(5), body.next())
        .await
        .expect("an event within 5 s")
        .unwrap()
        .unwrap();
    let text = String::from_utf8(chunk.to_vec()).unwrap();
    assert!(text.starts_with("event: lagged\n"), "{text}");
    let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    let missed = serde_json::from_str::<Value>(data).unwrap()["missed"]
        .as_u64()
        .unwrap();
    assert!(missed >= 76, "{text}");
    // …and the stream goes on with the changes still buffered.
    let next = tokio::time::timeout(std::time::Duration::from_secs(5), body.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&next).starts_with("event: change\n"));
}

/// The dashboard calls only routed endpoints, with the parameters it really sends, and every
/// field its scripts read is in the answers (an API change cannot silently break it).
#[tokio::test]
async fn the_dashboard_is_served_and_its_api_calls_answer_what_it_reads() {
    let f = fixture().await;
    let page = f.get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.content_type, "text/html; charset=utf-8");
    assert!(String::from_utf8_lossy(&page.body).contains("<title>kdelta</title>"));
    for module in [
        "/dashboard.js",
        "/ui/common.js",
        "/ui/explorer.js",
        "/ui/series.js",
    ] {
        let js = f.get(module).await;
        assert_eq!(js.status, StatusCode::OK, "{module}");
        assert_eq!(
            js.content_type, "text/javascript; charset=utf-8",
            "{module}"
        );
    }
    assert_eq!(
        f.get("/dashboard.css").await.content_type,
        "text/css; charset=utf-8"
    );
    let resp = router(f.state.clone())
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let csp = resp.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");

    let routed: BTreeSet<String> = routes().into_iter().map(|(_, p, _)| p.to_owned()).collect();
    let used = super::dashboard::api_paths_used();
    assert!(used.len() >= 14, "{used:?}");
    assert!(
        used.iter().any(|p| p == "/v1/docs/{key}/history"),
        "{used:?}"
    );
    for path in &used {
        assert!(routed.contains(path), "the dashboard calls unrouted {path}");
    }

    let ingest = json!([{"series": "shed.temp", "ts": crate::time::now_ms() - 30_000, "value": 21.5, "unit": "°C"}]);
    let r = f
        .post("/v1/readings", "application/json", ingest.to_string())
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
    let status = f.get("/v1/status").await.json();
    for field in ["version", "actor", "uptime_s", "db_bytes", "rss_bytes"] {
        assert!(
            !status[field].is_null(),
            "/v1/status lacks {field}: {status}"
        );
    }
    assert_eq!(status["counts"]["readings"], 1);
    assert!(status["counts"]["series"].is_number() && status["counts"]["changes"].is_number());
    assert!(status["disk"]["used_percent"].is_number(), "{status}");
    assert!(f.get("/v1/sources").await.json()["sources"].is_array());
    assert!(f.get("/v1/sync/peers").await.json()["peers"].is_array());
    let latest = f.get("/v1/readings/latest").await.json();
    let l = &latest["latest"][0];
    assert_eq!(
        (&l["series"], &l["value"]),
        (&json!("shed.temp"), &json!(21.5)),
        "{latest}"
    );
    assert!(l["ts"].is_number() && l.get("unit").is_some(), "{latest}");
    let one = f.get("/v1/readings/latest?series=shed.temp").await.json();
    assert_eq!(one["latest"].as_array().map(Vec::len), Some(1), "{one}");
    for window in ["15m", "1h", "6h", "24h"] {
        let bucket = match window {
            "15m" => "30s",
            "1h" => "1m",
            "6h" => "5m",
            _ => "20m",
        };
        let a = f
            .get(&format!(
                "/v1/readings/aggregate?series=shed.temp&from=now-{window}&bucket={bucket}&fn=avg%2Cmin%2Cmax"
            ))
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.json());
        let b = &a.json()["buckets"][0];
        for field in ["start", "avg", "min", "max"] {
            assert!(b[field].is_number(), "{window}: bucket lacks {field}: {b}");
        }
    }

    // The explorer: listing, history, as-of, diff and siblings of documents; twins.
    let v1 = f
        .put_json("/v1/docs/shed/setpoint", &json!({"temp": 19}))
        .await
        .json();
    for field in ["actor", "seq", "hlc"] {
        assert!(!v1[field].is_null(), "a write lacks {field}: {v1}");
    }
    f.put_json("/v1/docs/shed/setpoint", &json!({"temp": 21}))
        .await;
    let list = f.get("/v1/docs?prefix=shed%2F&limit=200").await.json();
    assert_eq!(list["docs"][0]["key"], "shed/setpoint", "{list}");
    assert!(list["docs"][0]["siblings"].is_number() && list.get("next_after").is_some());
    let doc = f.get("/v1/docs/shed/setpoint").await.json();
    for field in ["value", "actor", "seq", "hlc", "siblings"] {
        assert!(!doc[field].is_null(), "a document lacks {field}: {doc}");
    }
    let h = f
        .get("/v1/docs/shed/setpoint/history?limit=1000")
        .await
        .json();
    let versions = h["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2, "{h}");
    for field in ["actor", "seq", "hlc", "value", "deleted"] {
        assert!(
            !versions[0][field].is_null(),
            "a version lacks {field}: {h}"
        );
    }
    // The first write's full HLC: both puts may fall in one millisecond.
    let first = v1["hlc"].as_str().unwrap().replace(':', "%3A");
    let then = f
        .get(&format!("/v1/docs/shed/setpoint?as_of={first}"))
        .await
        .json();
    assert_eq!(then["value"], json!({"temp": 19}), "{then}");
    let d = f
        .get(&format!(
            "/v1/docs/shed/setpoint/diff?from={}&to={}",
            v1["hlc"].as_str().unwrap().replace(':', "%3A"),
            versions[0]["hlc"].as_str().unwrap().replace(':', "%3A")
        ))
        .await
        .json();
    let c = &d["changes"][0];
    assert_eq!(
        (&c["path"], &c["op"]),
        (&json!("/temp"), &json!("changed")),
        "{d}"
    );
    assert_eq!((&c["from"], &c["to"]), (&json!(19), &json!(21)), "{d}");
    let sib = f.get("/v1/docs/shed/setpoint/siblings").await.json();
    assert!(sib["siblings"][0]["hlc"].is_string(), "{sib}");
    let created = f
        .post(
            "/v1/twins/device/shed",
            "application/json",
            r#"{"desired": {}}"#,
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.json());
    assert!(created.json()["seq"].is_number());
    let twins = f.get("/v1/twins?prefix=&limit=200").await.json();
    assert_eq!(twins["twins"], json!(["device/shed"]), "{twins}");
    let twin = f.get("/v1/twins/device/shed").await.json();
    assert!(
        twin["changes"].is_number() && twin["value"].is_object(),
        "{twin}"
    );
    let th = f
        .get("/v1/twins/device/shed/history?limit=1000")
        .await
        .json();
    let ch = &th["changes"][0];
    assert!(
        ch["paths"].is_array() && ch["hlc"].is_string() && ch["truncated"].is_boolean(),
        "{th}"
    );
}
