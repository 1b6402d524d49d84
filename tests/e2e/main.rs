//! End-to-end tests: real sockets, temp data dirs, whole agents.
//!
//! Single-agent tests start the real `kdelta` binary on `127.0.0.1:0` through
//! [`harness::Agent`], talk to it over HTTP and check what a user would see: ingest and
//! read-back in JSON and CBOR, documents with history and time travel, every kind of bad input
//! refused with the right status and code and nothing stored, durability of acknowledged
//! batches across `kill -9`, config errors naming the key, signals, systemd notify and the
//! one-agent-per-data-dir lock. Multi-agent tests (`sync.rs`, `twins.rs`) start their agents
//! in this process through [`cluster::Node`] (`kdelta::agent::Agent::start` on port 0) — a
//! process only where one is killed — with links through the fault-injecting TCP proxy of
//! `proxy.rs`.

mod backup;
mod budget;
mod cert_auth;
mod clock;
mod clones;
mod cluster;
mod disk;
mod disk_recovery;
mod doc_batch;
mod doc_retention;
mod harness;
#[path = "../../agent/tests/mqtt/support.rs"]
mod mqtt_support;
mod mqtt_tls;
#[cfg(feature = "postgres")]
mod pg_events;
#[cfg(feature = "postgres")]
mod pg_hub;
#[cfg(feature = "postgres")]
mod pg_mqtt;
mod proxy;
mod reload;
mod retention;
mod roles;
mod security;
mod signing;
mod slowloris;
mod sources;
mod sync;
mod systemd;
mod tls;
mod twin_compaction;
mod twins;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::{Agent, eventually, run_to_end};
use serde_json::{Value, json};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

async fn get_json(c: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = c
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    let body = r.bytes().await.unwrap();
    let v = serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "GET {url}: not JSON ({e}): {}",
            String::from_utf8_lossy(&body)
        )
    });
    (status, v)
}

/// The agent's Prometheus text (`GET /metrics`).
async fn metrics_text(c: &reqwest::Client, a: &impl harness::Endpoint) -> String {
    c.get(a.at("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

async fn post(c: &reqwest::Client, url: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let r = c
        .post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = r.status().as_u16();
    let body = r.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&body)
            .unwrap_or(Value::String(String::from_utf8_lossy(&body).into())),
    )
}

async fn put_json(c: &reqwest::Client, url: &str, v: &Value) -> (u16, Value) {
    let r = c
        .put(url)
        .header("content-type", "application/json")
        .body(v.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

fn cbor(v: &impl serde::Serialize) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).unwrap();
    out
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<no error code>")
}

/// Every reading of `series` as `ts → value`, following cursors.
async fn all_readings(c: &reqwest::Client, agent: &Agent, series: &str) -> BTreeMap<i64, f64> {
    let mut out = BTreeMap::new();
    let mut cursor = String::new();
    loop {
        let url = agent.at(&format!(
            "/v1/readings?series={series}&limit=100000&cursor={cursor}"
        ));
        let (status, page) = get_json(c, &url).await;
        assert_eq!(status, 200, "{url}: {page}");
        for r in page["readings"].as_array().unwrap() {
            out.insert(r["ts"].as_i64().unwrap(), r["value"].as_f64().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => return out,
        }
    }
}

#[tokio::test]
async fn ingest_json_and_cbor_and_read_back() {
    // No device twin: the first change of the store is the first batch.
    let agent = Agent::builder().config("device_twin = false\n").start();
    let c = client();

    // Row form, JSON, with RFC 3339 and unix-ms times.
    let rows = json!([
        {"series": "gh.temp", "ts": 1_764_000_000_000i64, "value": 21.5, "unit": "°C"},
        {"series": "gh.temp", "ts": "2025-11-24T16:00:10Z", "value": 21.7},
        {"series": "gh.hum", "ts": 1_764_000_000_000i64, "value": 40},
    ]);
    let (status, ack) = post(
        &c,
        &agent.at("/v1/readings"),
        "application/json",
        rows.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 201, "{ack}");
    assert_eq!(ack["count"], 3);
    assert_eq!(ack["seq"], 1);

    // Columnar form, CBOR.
    let ts: Vec<i64> = (0..500).map(|i| 1_764_000_100_000 + i * 1000).collect();
    let values: Vec<f64> = (0..500).map(|i| f64::from(i) / 4.0).collect();
    let body = cbor(
        &json!({"series": [{"name": "gh.temp", "unit": "°C", "meta": {"room": "north"}, "ts": ts, "values": values}]}),
    );
    let (status, ack) = post(&c, &agent.at("/v1/readings"), "application/cbor", body).await;
    assert_eq!(status, 201, "{ack}");
    assert_eq!(ack["count"], 500);
    assert_eq!(ack["seq"], 2);

    let got = all_readings(&c, &agent, "gh.temp").await;
    assert_eq!(got.len(), 502);
    assert_eq!(got[&1_764_000_000_000], 21.5);
    assert_eq!(got[&1_764_000_010_000], 21.7);
    for (t, v) in ts.iter().zip(&values) {
        assert_eq!(got[t], *v);
    }

    let (_, page) = get_json(
        &c,
        &agent.at("/v1/readings?series=gh.temp&from=2025-11-24T16:01:40Z&to=1764000102000"),
    )
    .await;
    assert_eq!(
        page["readings"],
        json!([{"ts": 1_764_000_100_000i64, "value": 0.0}, {"ts": 1_764_000_101_000i64, "value": 0.25}])
    );
    assert_eq!(page["unit"], "°C");

    let (_, agg) = get_json(
        &c,
        &agent.at("/v1/readings/aggregate?series=gh.temp&from=1764000100000&to=1764000220000&bucket=1m&fn=count,min,max"),
    )
    .await;
    let buckets = agg["buckets"].as_array().unwrap();
    assert_eq!(
        buckets
            .iter()
            .map(|b| b["count"].as_u64().unwrap())
            .sum::<u64>(),
        120,
        "{agg}"
    );

    let (_, latest) = get_json(&c, &agent.at("/v1/readings/latest?series=gh.temp,gh.hum")).await;
    assert_eq!(latest["latest"][0]["value"], 124.75);
    assert_eq!(latest["latest"][1]["value"], 40.0);

    let (_, series) = get_json(&c, &agent.at("/v1/series")).await;
    let temp = series["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "gh.temp")
        .unwrap();
    assert_eq!(temp["count"], 502);
    assert_eq!(temp["meta"]["room"], "north");

    // A CBOR answer when asked for.
    let r = c
        .get(agent.at("/v1/readings/latest?series=gh.hum"))
        .header("accept", "application/cbor")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "application/cbor");
    let v: Value = ciborium::from_reader(&r.bytes().await.unwrap()[..]).unwrap();
    assert_eq!(v["latest"][0]["series"], "gh.hum");

    let (_, status) = get_json(&c, &agent.at("/v1/status")).await;
    assert_eq!(status["counts"]["readings"], 503);
    assert_eq!(status["counts"]["changes"], 2);
}

#[tokio::test]
async fn documents_put_get_history_as_of_diff_siblings() {
    let agent = Agent::start();
    let c = client();
    let doc = agent.at("/v1/docs/greenhouse/setpoint");

    let (s, v1) = put_json(&c, &doc, &json!({"temp": 21, "fan": "auto"})).await;
    assert_eq!(s, 200, "{v1}");
    let h1 = v1["hlc"].as_str().unwrap().to_owned();
    let (_, v2) = put_json(&c, &doc, &json!({"temp": 23, "fan": "auto", "mist": true})).await;
    let h2 = v2["hlc"].as_str().unwrap().to_owned();
    assert_ne!(h1, h2);

    let (s, now) = get_json(&c, &doc).await;
    assert_eq!(s, 200);
    assert_eq!(
        now["value"],
        json!({"temp": 23, "fan": "auto", "mist": true})
    );
    assert_eq!(now["siblings"], 1);
    assert_eq!(now["hlc"], h2.as_str());

    // As of the first version: by HLC and by wall time.
    let (_, then) = get_json(&c, &format!("{doc}?as_of={h1}")).await;
    assert_eq!(then["value"], json!({"temp": 21, "fan": "auto"}));
    let h1_ms: u64 = h1.split(':').next().unwrap().parse().unwrap();
    let (s, then) = get_json(&c, &format!("{doc}?as_of={h1_ms}")).await;
    assert_eq!(s, 200);
    assert!(
        then["value"]["temp"] == 21
            || h1_ms == h2.split(':').next().unwrap().parse::<u64>().unwrap()
    );

    let (_, hist) = get_json(&c, &format!("{doc}/history")).await;
    let versions = hist["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["hlc"], h2.as_str());
    assert_eq!(versions[1]["value"]["temp"], 21);
    let (_, page) = get_json(&c, &format!("{doc}/history?limit=1")).await;
    assert_eq!(page["versions"].as_array().unwrap().len(), 1);
    let before = page["next_before"].as_str().unwrap();
    let (_, page) = get_json(&c, &format!("{doc}/history?limit=1&before={before}")).await;
    assert_eq!(page["versions"][0]["hlc"], h1.as_str());

    let (_, diff) = get_json(&c, &format!("{doc}/diff?from={h1}&to={h2}")).await;
    let mut changes: Vec<(String, String)> = diff["changes"]
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
    changes.sort();
    assert_eq!(
        changes,
        vec![
            ("/mist".to_owned(), "added".to_owned()),
            ("/temp".to_owned(), "changed".to_owned())
        ]
    );

    let (_, sib) = get_json(&c, &format!("{doc}/siblings")).await;
    assert_eq!(sib["siblings"].as_array().unwrap().len(), 1);
    assert_eq!(sib["siblings"][0]["hlc"], h2.as_str());

    put_json(&c, &agent.at("/v1/docs/greenhouse/light"), &json!("on")).await;
    put_json(&c, &agent.at("/v1/docs/shed/door"), &json!("closed")).await;
    let (_, list) = get_json(&c, &agent.at("/v1/docs?prefix=greenhouse/")).await;
    let keys: Vec<&str> = list["docs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, vec!["greenhouse/light", "greenhouse/setpoint"]);
    let (_, list) = get_json(
        &c,
        &agent.at(&format!("/v1/docs?prefix=greenhouse/&as_of={h2}")),
    )
    .await;
    assert_eq!(list["docs"].as_array().unwrap().len(), 1);

    // Delete: gone for reads, kept in history.
    let r = c.delete(&doc).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (s, gone) = get_json(&c, &doc).await;
    assert_eq!((s, code(&gone)), (404, "not_found"));
    let (_, hist) = get_json(&c, &format!("{doc}/history")).await;
    assert_eq!(hist["versions"][0]["deleted"], true);
    let (_, then) = get_json(&c, &format!("{doc}?as_of={h2}")).await;
    assert_eq!(then["value"]["temp"], 23);
}

#[tokio::test]
async fn bad_input_is_refused_with_the_right_code_and_nothing_is_stored() {
    // The body limit comes in through the environment layer (KDELTA_API__MAX_BODY_BYTES).
    // No device twin, so the change count below is exactly what the test wrote.
    let agent = Agent::builder()
        .config("device_twin = false\n")
        .env("KDELTA_API__MAX_BODY_BYTES", "65536")
        .start();
    let c = client();
    let url = agent.at("/v1/readings");

    let nan_body = {
        use ciborium::Value as C;
        let row = C::Map(vec![
            (C::Text("series".into()), C::Text("bad.nan".into())),
            (C::Text("ts".into()), C::Integer(1000.into())),
            (C::Text("value".into()), C::Float(f64::NAN)),
        ]);
        cbor(&C::Array(vec![row]))
    };
    let huge = json!([{"series": "bad.huge", "ts": 1, "value": 1, "unit": "x".repeat(70_000)}])
        .to_string()
        .into_bytes();

    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "malformed JSON",
            "application/json",
            br#"[{"series": "bad.a", "value": 1"#.to_vec(),
            400,
            "malformed_body",
        ),
        (
            "malformed CBOR",
            "application/cbor",
            vec![0x9f, 0xa1, 0x66],
            400,
            "malformed_body",
        ),
        (
            "wrong type: value as string",
            "application/json",
            br#"[{"series":"bad.b","ts":1,"value":"21.5"}]"#.to_vec(),
            422,
            "invalid_batch",
        ),
        (
            "wrong type: \"NaN\" string",
            "application/json",
            br#"[{"series":"bad.b","ts":1,"value":"NaN"}]"#.to_vec(),
            422,
            "invalid_batch",
        ),
        (
            "wrong type: series as number",
            "application/json",
            br#"[{"series":7,"ts":1,"value":1}]"#.to_vec(),
            422,
            "invalid_batch",
        ),
        (
            "NaN via CBOR",
            "application/cbor",
            nan_body,
            422,
            "invalid_batch",
        ),
        (
            "empty batch",
            "application/json",
            b"[]".to_vec(),
            422,
            "invalid_batch",
        ),
        (
            "empty columnar batch",
            "application/json",
            br#"{"series": []}"#.to_vec(),
            422,
            "invalid_batch",
        ),
        (
            "one bad reading spoils the batch",
            "application/json",
            br#"[{"series":"bad.c","ts":1,"value":1},{"series":"bad.c","ts":2,"value":null}]"#
                .to_vec(),
            422,
            "invalid_batch",
        ),
        (
            "duplicate timestamp",
            "application/json",
            br#"[{"series":"bad.d","ts":1,"value":1},{"series":"bad.d","ts":1,"value":2}]"#
                .to_vec(),
            422,
            "invalid_batch",
        ),
        (
            "bad time in the body",
            "application/json",
            br#"[{"series":"bad.e","ts":"yesterday","value":1}]"#.to_vec(),
            422,
            "invalid_batch",
        ),
        (
            "body over the limit",
            "application/json",
            huge,
            413,
            "body_too_large",
        ),
        (
            "unknown content type",
            "text/plain",
            br#"[{"series":"bad.f","ts":1,"value":1}]"#.to_vec(),
            415,
            "unsupported_media_type",
        ),
    ];
    for (what, ct, body, status, want) in cases {
        let (got_status, v) = post(&c, &url, ct, body).await;
        assert_eq!((got_status, code(&v)), (status, want), "{what}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: {v}"
        );
    }

    // Too many readings in one batch (the store's limit, 50,000), within the body limit
    // of an agent with default limits.
    let big = Agent::builder().start();
    let n = 50_001i64;
    let body = cbor(
        &json!({"series": [{"name": "bad.many", "ts": (0..n).collect::<Vec<i64>>(), "values": vec![1.0; n as usize]}]}),
    );
    let (s, v) = post(&c, &big.at("/v1/readings"), "application/cbor", body).await;
    assert_eq!((s, code(&v)), (422, "invalid_batch"), "{v}");
    let (_, st) = get_json(&c, &big.at("/v1/status")).await;
    assert_eq!(st["counts"]["readings"], 0);
    drop(big);

    // Query-side errors.
    let (s, v) = get_json(&c, &agent.at("/v1/readings?series=never.written")).await;
    assert_eq!((s, code(&v)), (404, "unknown_series"));
    let (s, v) = get_json(
        &c,
        &agent.at("/v1/readings/aggregate?series=never.written&bucket=1m"),
    )
    .await;
    assert_eq!((s, code(&v)), (404, "unknown_series"));
    let (s, v) = get_json(&c, &agent.at("/v1/readings?series=x&from=last%20week")).await;
    assert_eq!((s, code(&v)), (400, "bad_time"));
    let (s, v) = get_json(
        &c,
        &agent.at("/v1/readings?series=x&to=2025-13-01T00:00:00Z"),
    )
    .await;
    assert_eq!((s, code(&v)), (400, "bad_time"));
    let (s, v) = get_json(&c, &agent.at("/v1/docs/any?as_of=tomorrow-ish")).await;
    assert_eq!((s, code(&v)), (400, "bad_time"));

    // As-of before the first version of a document; the document is unchanged.
    let (_, v1) = put_json(&c, &agent.at("/v1/docs/cfg/a"), &json!({"x": 1})).await;
    let (s, v) = get_json(&c, &agent.at("/v1/docs/cfg/a?as_of=2001-01-01T00:00:00Z")).await;
    assert_eq!((s, code(&v)), (404, "before_history"), "{v}");
    let (s, v) = get_json(&c, &agent.at("/v1/docs/cfg/a?as_of=1:0")).await;
    assert_eq!((s, code(&v)), (404, "before_history"), "{v}");
    let (_, now) = get_json(&c, &agent.at("/v1/docs/cfg/a")).await;
    assert_eq!(
        (now["value"].clone(), now["hlc"].clone()),
        (json!({"x": 1}), v1["hlc"].clone())
    );
    let (s, v) = get_json(&c, &agent.at("/v1/docs/never/written")).await;
    assert_eq!((s, code(&v)), (404, "not_found"));

    // Nothing of any refused batch was stored: no readings, no series, one change (the doc).
    let (_, st) = get_json(&c, &agent.at("/v1/status")).await;
    assert_eq!(st["counts"]["readings"], 0, "{st}");
    assert_eq!(st["counts"]["series"], 0, "{st}");
    assert_eq!(st["counts"]["changes"], 1, "{st}");
    let (_, series) = get_json(&c, &agent.at("/v1/series")).await;
    assert_eq!(series["series"], json!([]));

    // The refusals are counted.
    let metrics = metrics_text(&c, &agent).await;
    assert!(
        metrics.contains(r#"kdelta_ingest_rejected_total{source="http",code="invalid_batch"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"kdelta_ingest_rejected_total{source="http",code="body_too_large"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_during_concurrent_ingest_keeps_every_acknowledged_reading() {
    let mut agent = Agent::start();
    let dir = agent.keep_dir().expect("fresh temp dir");
    let url = format!("{}/v1/readings", agent.url());
    let acked: Arc<Mutex<Vec<(String, i64, usize)>>> = Arc::new(Mutex::new(Vec::new()));
    const WRITERS: usize = 6;
    const BATCH: usize = 200;

    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (url, acked) = (url.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let c = client();
            let series = format!("crash.w{w}");
            for b in 0i64.. {
                let start = b * BATCH as i64;
                let ts: Vec<i64> = (start..start + BATCH as i64).collect();
                let values: Vec<f64> = ts.iter().map(|t| (*t as f64) * 0.5 + w as f64).collect();
                let body = if b % 2 == 0 {
                    (
                        "application/cbor",
                        cbor(&json!({"series": [{"name": series, "ts": ts, "values": values}]})),
                    )
                } else {
                    (
                        "application/json",
                        json!({"series": [{"name": series, "ts": ts, "values": values}]})
                            .to_string()
                            .into_bytes(),
                    )
                };
                match c
                    .post(&url)
                    .header("content-type", body.0)
                    .body(body.1)
                    .send()
                    .await
                {
                    Ok(r) if r.status().as_u16() == 201 => {
                        acked.lock().unwrap().push((series.clone(), start, BATCH))
                    }
                    Ok(r) => panic!("unexpected answer {} before the kill", r.status()),
                    Err(_) => return, // the agent died under us
                }
            }
        }));
    }
    // Let the writers get well under way, then pull the plug mid-stream.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 300 {
        assert!(
            Instant::now() < deadline,
            "ingest too slow: {} batches in 30 s\n{}",
            acked.lock().unwrap().len(),
            agent.stderr()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    agent.kill9();
    for t in tasks {
        t.await.expect("writer task");
    }
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "{} batches ({} readings) acknowledged before kill -9",
        acked.len(),
        acked.len() * BATCH
    );
    drop(agent);

    let agent = Agent::builder().dir(dir.path()).start();
    let c = client();
    let mut expected: BTreeMap<String, Vec<(i64, usize)>> = BTreeMap::new();
    for (series, start, n) in &acked {
        expected
            .entry(series.clone())
            .or_default()
            .push((*start, *n));
    }
    for (series, batches) in &expected {
        let w: f64 = series.trim_start_matches("crash.w").parse().unwrap();
        let got = all_readings(&c, &agent, series).await;
        for (start, n) in batches {
            for t in *start..*start + *n as i64 {
                assert_eq!(
                    got.get(&t),
                    Some(&(t as f64 * 0.5 + w)),
                    "{series} ts {t} was acknowledged but is missing"
                );
            }
        }
    }
    let (_, st) = get_json(&c, &agent.at("/v1/status")).await;
    let stored = st["counts"]["readings"].as_u64().unwrap() as usize;
    assert!(
        stored >= acked.len() * BATCH,
        "{stored} stored < {} acknowledged",
        acked.len() * BATCH
    );
}

#[tokio::test]
async fn sigterm_drains_and_data_survives_restart() {
    let mut agent = Agent::start();
    let dir = agent.keep_dir().unwrap();
    let c = client();
    let (s, _) = post(
        &c,
        &agent.at("/v1/readings"),
        "application/json",
        br#"[{"series":"t","ts":1,"value":1},{"series":"t","ts":2,"value":2}]"#.to_vec(),
    )
    .await;
    assert_eq!(s, 201);
    agent.sigterm();
    let status = agent.wait_exit(Duration::from_secs(10));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "exit within 10 s with 0\n{}",
        agent.stderr()
    );
    drop(agent);
    let agent = Agent::builder().dir(dir.path()).start();
    assert_eq!(all_readings(&c, &agent, "t").await.len(), 2);
}

#[tokio::test]
async fn second_instance_on_the_same_data_dir_fails_at_once() {
    let first = Agent::start();
    let started = Instant::now();
    let second = Agent::builder().dir(first.dir()).try_start();
    let err = match second {
        Ok(_) => panic!("a second agent started on {}", first.data_dir().display()),
        Err(e) => e,
    };
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(err.contains("already running"), "{err}");
    assert!(err.contains(&format!("(pid {})", first.pid())), "{err}");
    // The first one is unharmed.
    let (s, _) = get_json(&client(), &first.at("/healthz")).await;
    assert_eq!(s, 200);
}

#[test]
fn config_errors_name_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "sources = []\n[api]\nlisten = \"127.0.0.1:0\"\nlisten_adress = \"0.0.0.0:80\"\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let (code, stderr) = run_to_end(
        &[
            "start",
            "--config",
            bad.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
        dir.path(),
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(2), "exit code\n{stderr}");
    assert!(stderr.contains("listen_adress"), "names the key:\n{stderr}");
    assert!(stderr.contains("bad.toml"), "names the file:\n{stderr}");

    std::fs::write(&bad, "sources = []\n[api]\nmax_body_bytes = 12\n").unwrap();
    let (code, stderr) = run_to_end(
        &[
            "start",
            "--config",
            bad.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
        dir.path(),
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(2), "exit code\n{stderr}");
    assert!(
        stderr.contains("max_body_bytes"),
        "names the key:\n{stderr}"
    );
}

#[tokio::test]
async fn events_stream_delivers_filtered_changes() {
    let agent = Agent::start();
    let c = client();
    let mut stream = c
        .get(agent.at("/v1/events?kind=doc&prefix=twin/"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    post(
        &c,
        &agent.at("/v1/readings"),
        "application/json",
        br#"[{"series":"twin/t","value":1}]"#.to_vec(),
    )
    .await;
    put_json(&c, &agent.at("/v1/docs/other"), &json!(1)).await;
    put_json(
        &c,
        &agent.at("/v1/docs/twin/desired"),
        &json!({"interval": 5}),
    )
    .await;
    let mut text = String::new();
    let event = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let chunk = stream.chunk().await.unwrap().expect("stream open");
            text.push_str(&String::from_utf8_lossy(&chunk));
            if let Some(data) = text.lines().find_map(|l| l.strip_prefix("data: ")) {
                return serde_json::from_str::<Value>(data).unwrap();
            }
        }
    })
    .await
    .expect("an event within 10 s");
    assert!(text.starts_with("event: change"), "{text}");
    assert_eq!(
        (event["kind"].as_str(), event["key"].as_str()),
        (Some("doc"), Some("twin/desired")),
        "{event}"
    );
}

#[tokio::test]
async fn health_readiness_metrics_openapi_sources() {
    // Default sources (the system source runs); JSON logs, which the harness also reads.
    let agent = Agent::builder().config("").arg("--log-json").start();
    let c = client();
    let (s, _) = get_json(&c, &agent.at("/healthz")).await;
    assert_eq!(s, 200);
    eventually(Duration::from_secs(10), "/readyz 200", || {
        let c = c.clone();
        let url = agent.at("/readyz");
        async move { (c.get(url).send().await.ok()?.status() == 200).then_some(()) }
    })
    .await;
    // The zero-config system source records real data at once.
    eventually(Duration::from_secs(15), "system readings", || {
        let c = c.clone();
        let url = agent.at("/v1/status");
        async move {
            let (_, st) = get_json(&c, &url).await;
            (st["counts"]["readings"].as_u64()? > 0).then_some(())
        }
    })
    .await;
    let (_, st) = get_json(&c, &agent.at("/v1/status")).await;
    for field in [
        "actor",
        "version",
        "digest",
        "version_vector",
        "uptime_s",
        "db_bytes",
        "disk",
        "rss_bytes",
    ] {
        assert!(!st[field].is_null(), "status.{field} missing: {st}");
    }
    assert!(st["rss_bytes"].as_u64().unwrap() > 1_000_000);
    let (_, sources) = get_json(&c, &agent.at("/v1/sources")).await;
    assert!(
        sources["sources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["kind"] == "system"),
        "{sources}"
    );

    let metrics = metrics_text(&c, &agent).await;
    for name in [
        "kdelta_build_info{version=",
        "kdelta_readings_ingested_total{source=",
        "kdelta_commit_duration_seconds_bucket",
        "kdelta_http_requests_total{method=\"GET\",route=\"/readyz\",status=\"200\"}",
        "kdelta_http_request_duration_seconds_bucket",
        "kdelta_store_bytes ",
        "kdelta_store_readings ",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }

    let (s, doc) = get_json(&c, &agent.at("/v1/openapi.json")).await;
    assert_eq!(s, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.0"));
    for path in [
        "/v1/readings",
        "/v1/docs/{key}/history",
        "/v1/events",
        "/metrics",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} not in openapi.json"
        );
    }
    let (s, v) = get_json(&c, &agent.at("/v1/no/such/thing")).await;
    assert_eq!((s, code(&v)), (404, "no_route"));
}
