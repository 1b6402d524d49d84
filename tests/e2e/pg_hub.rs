//! Hub replicas on PostgreSQL, end to end (issue 17): real `kdelta start` processes with
//! `[store] backend = "postgres"`. Without a server: a database that cannot be used stops the
//! start with exit code 2 and a message naming it (never the password). With one
//! (`KDELTA_POSTGRES`, e.g. `postgres://postgres@127.0.0.1:5432/test`; each test in a schema
//! of its own through the URL's `options=-c search_path=…`, dropped when it passes): a
//! replica's health, status and `501 not_on_this_backend` routes, documents and twins
//! written through one replica read through another and synced to a device, retention on a
//! replica (old readings by age; document history beyond `[retention.docs]`), and the chaos
//! test — two replicas on one database behind a round-robin [`Proxy`], three SQLite devices
//! ingesting and writing documents through it while the proxy cuts every link at random and one
//! replica is killed with SIGKILL mid-sync and restarted; after healing, every device and
//! the database hold one digest, and every acknowledged reading is there exactly once.
//! Without `KDELTA_POSTGRES` those tests print why and pass without running. Built only with
//! the cargo feature `postgres` (the default).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use super::cluster::Node;
use super::harness::{Agent, Endpoint, eventually, run_to_end};
use super::proxy::{Dir, Proxy};
use super::sync::{HEAL_DEADLINE, doc_history, series_counts, write_until};
use super::{client, get_json, put_json};

/// One test's schema on the server `KDELTA_POSTGRES` names.
pub(super) struct TestDb {
    base: String,
    schema: String,
    admin: sqlx::PgPool,
}

impl TestDb {
    /// A fresh schema, or `None` (with a message) when no server is configured.
    pub(super) async fn new(test: &str) -> Option<TestDb> {
        let Ok(base) = std::env::var("KDELTA_POSTGRES") else {
            println!(
                "skipping {test}: KDELTA_POSTGRES is not set (e.g. postgres://postgres@127.0.0.1:5432/test; scripts/ensure-postgres.sh starts a server)"
            );
            return None;
        };
        let schema = format!("kdelta_e2e_{}", hex::encode(rand::random::<[u8; 6]>()));
        let admin = sqlx::PgPool::connect(&base)
            .await
            .unwrap_or_else(|e| panic!("KDELTA_POSTGRES={base}: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await
            .expect("create the test schema");
        Some(TestDb {
            base,
            schema,
            admin,
        })
    }

    /// The replicas' `store.url`: the server, in this test's schema.
    pub(super) fn url(&self) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        format!(
            "{}{sep}options=-c%20search_path%3D{}",
            self.base, self.schema
        )
    }

    /// A count from this test's schema.
    async fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT count(*) FROM {}.{table}", self.schema);
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&self.admin)
            .await
            .unwrap_or_else(|e| panic!("counting {table}: {e}"))
    }

    /// Drops the schema (only when the test passed: a failure leaves it for inspection).
    pub(super) async fn drop_schema(self) {
        let sql = format!("DROP SCHEMA {} CASCADE", self.schema);
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&self.admin)
            .await
            .expect("drop the test schema");
    }
}

/// The config of a replica on `url` accepting one `device` token per device.
pub(super) fn replica_config(url: &str, devices: usize) -> String {
    let tokens: Vec<String> = (0..devices)
        .map(|i| {
            format!(
                "{{ name = \"dev{i}\", token = \"{}\", role = \"device\" }}",
                token(i)
            )
        })
        .collect();
    format!(
        "[store]\nbackend = \"postgres\"\nurl = \"{url}\"\n[sync]\naccept_tokens = [{}]\n",
        tokens.join(", ")
    )
}

fn token(device: usize) -> String {
    format!("device-{device}-token-0123456789")
}

/// A device's config: its hub is `hub_url` (the proxy).
pub(super) fn device_config(hub_url: &str, device: usize) -> String {
    format!(
        "sources = []\ndevice_twin = false\n[[sync.peers]]\nname = \"hub\"\nurl = \"{hub_url}\"\ntoken = \"{}\"\n",
        token(device)
    )
}

fn addr_of(a: &Agent) -> SocketAddr {
    a.url()
        .strip_prefix("http://")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an http://ip:port URL: {}", a.url()))
}

#[test]
fn a_database_that_cannot_be_used_stops_the_start_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let start = |store: &str| {
        let config = dir.path().join("kdelta.toml");
        std::fs::write(&config, format!("sources = []\n[store]\n{store}")).unwrap();
        let data = dir.path().join("data");
        let (code, stderr) = run_to_end(
            &[
                "start",
                "--config",
                config.to_str().unwrap(),
                "--data-dir",
                data.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ],
            dir.path(),
            Duration::from_secs(30),
        );
        assert!(
            !stderr.contains("listening on"),
            "nothing is bound before the database is open:\n{stderr}"
        );
        (code, stderr)
    };
    // Nothing listens on port 1: unreachable, named without the password.
    let (code, stderr) =
        start("backend = \"postgres\"\nurl = \"postgres://kdelta:pw-secret-42@127.0.0.1:1/hub\"\n");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot reach PostgreSQL at kdelta@127.0.0.1:1/hub"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("pw-secret-42"),
        "password shown:\n{stderr}"
    );
    // No URL: the key is named.
    let (code, stderr) = start("backend = \"postgres\"\n");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("store.url"), "{stderr}");
    // `kdelta config check` shows the URL without its password.
    let config = dir.path().join("check.toml");
    std::fs::write(
        &config,
        "[store]\nbackend = \"postgres\"\nurl = \"postgres://kdelta:pw-secret-42@db.lan/hub\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(super::harness::BIN)
        .args(["config", "check", "--config", config.to_str().unwrap()])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .env_remove("KDELTA_POSTGRES")
        .output()
        .expect("run kdelta config check");
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(
        shown.contains("postgres://kdelta:<redacted>@db.lan/hub"),
        "{shown}"
    );
    assert!(!shown.contains("pw-secret-42"), "password shown:\n{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_serves_health_and_status_and_answers_501_for_the_rest() {
    let Some(db) = TestDb::new("a_replica_serves_health_and_status").await else {
        return;
    };
    let c = client();
    let replica = Agent::builder()
        .config(&replica_config(&db.url(), 1))
        .start();
    let log = replica.stderr();
    assert!(log.contains("sources off"), "{log}");
    // Ready once startup finished (the address is logged a moment before).
    eventually(Duration::from_secs(10), "/readyz 200", || {
        let (c, url) = (c.clone(), replica.at("/readyz"));
        async move { (c.get(url).send().await.ok()?.status() == 200).then_some(()) }
    })
    .await;
    for path in ["/healthz", "/metrics"] {
        let r = c.get(replica.at(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
    let (s, st) = get_json(&c, &replica.at("/v1/status")).await;
    assert_eq!(s, 200, "{st}");
    assert_eq!(st["backend"], "postgres", "{st}");
    assert_eq!(st["database"]["reachable"], true, "{st}");
    assert_eq!(st["version_vector_size"], 0, "{st}");
    for (method, path) in [("GET", "/v1/backup"), ("POST", "/v1/sync/now")] {
        let r = c
            .request(method.parse().unwrap(), replica.at(path))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 501, "{method} {path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_on_this_backend", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("is not available on a PostgreSQL hub"),
            "{message}"
        );
    }
    // The readings queries are served (from PostgreSQL): an empty database, no series.
    let (s, body) = get_json(&c, &replica.at("/v1/series")).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["series"], serde_json::json!([]), "{body}");
    let (s, body) = get_json(&c, &replica.at("/v1/readings?series=x")).await;
    assert_eq!(s, 404, "{body}");
    assert_eq!(body["error"]["code"], "unknown_series", "{body}");
    // Timing and gap records are listed (none yet).
    let (s, body) = get_json(&c, &replica.at("/v1/readings/timing")).await;
    assert_eq!(
        (s, &body["timing"]),
        (200, &serde_json::json!([])),
        "{body}"
    );
    let (s, body) = get_json(&c, &replica.at("/v1/readings/gaps")).await;
    assert_eq!((s, &body["gaps"]), (200, &serde_json::json!([])), "{body}");
    // The dashboard is served: it uses only routes a replica answers.
    let r = c.get(replica.at("/")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().await.unwrap().contains("dashboard.js"));
    // So are the documents: none yet.
    let (s, body) = get_json(&c, &replica.at("/v1/docs/some/key")).await;
    assert_eq!(s, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    drop(replica);
    db.drop_schema().await;
}

/// A device syncs readings (two series, several minutes, a value large enough to saturate a
/// sum) to a replica; the replica then answers `GET /v1/series`, `/v1/readings` (every
/// page), `/v1/readings/latest` and `/v1/readings/aggregate` (whole minutes, partial edges,
/// sub-minute buckets) with the JSON the device's SQLite store gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_answers_readings_queries_as_the_device_that_synced_them() {
    let Some(db) = TestDb::new("a_replica_answers_readings_queries").await else {
        return;
    };
    let c = client();
    let replica = Agent::builder()
        .config(&replica_config(&db.url(), 1))
        .start();
    let device = Node::with_config(&device_config(replica.url(), 0)).await;
    const T: i64 = 1_764_000_000_000; // a minute boundary
    for round in 0..4i64 {
        let ts: Vec<i64> = (0..40)
            .map(|i| T + round * 40 * 2_500 + i * 2_500)
            .collect();
        let temp: Vec<f64> = ts
            .iter()
            .map(|t| ((t - T) / 2_500 % 17) as f64 * 0.25)
            .collect();
        let big: Vec<f64> = ts.iter().map(|_| 1.5e308).collect();
        let body = serde_json::json!({"series": [
            {"name": "room.temp", "unit": "°C", "ts": ts, "values": temp},
            {"name": "huge", "ts": ts, "values": big},
        ]});
        let r = c
            .post(device.at("/v1/readings"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "{:?}", r.text().await);
    }
    eventually(
        HEAL_DEADLINE,
        "the replica to hold the device's changes",
        || async {
            let (_, d) = get_json(&c, &device.at("/v1/status")).await;
            let (_, r) = get_json(&c, &replica.at("/v1/status")).await;
            (!d["digest"].is_null() && d["digest"] == r["digest"]).then_some(())
        },
    )
    .await;
    let mut paths = vec![
        "/v1/series".to_owned(),
        "/v1/series?limit=1".to_owned(),
        "/v1/series?after=huge".to_owned(),
        "/v1/readings/latest".to_owned(),
        "/v1/readings/latest?series=room.temp,huge".to_owned(),
        "/v1/readings/latest?series=nope".to_owned(),
        format!("/v1/readings?series=room.temp&from={}&to={}", T - 1, T + 1),
        format!("/v1/readings?series=room.temp&from={}&to={}", T + 1, T),
    ];
    for (from, to, bucket) in [
        (T, T + 400_000, "1m"),
        (T + 7_000, T + 333_333, "1m"),
        (T - 60_000, T + 600_000, "5m"),
        (T + 1, T + 200_000, "7s"),
        (T, T + 400_000, "1h"),
    ] {
        for series in ["room.temp", "huge"] {
            paths.push(format!(
                "/v1/readings/aggregate?series={series}&from={from}&to={to}&bucket={bucket}"
            ));
        }
    }
    paths.push(format!(
        "/v1/readings/aggregate?series=nope&from={T}&to={}",
        T + 60_000
    ));
    for path in &paths {
        let (sd, on_device) = get_json(&c, &device.at(path)).await;
        let (sr, on_replica) = get_json(&c, &replica.at(path)).await;
        assert_eq!((sr, &on_replica), (sd, &on_device), "{path}");
    }
    // Every page of a range, the same readings (cursors are each store's own).
    for series in ["room.temp", "huge"] {
        let mut all = Vec::new();
        for agent in [device.at(""), replica.at("")] {
            let mut readings = Vec::new();
            let mut cursor = String::new();
            loop {
                let url = format!("{agent}/v1/readings?series={series}&limit=7{cursor}");
                let (s, page) = get_json(&c, &url).await;
                assert_eq!(s, 200, "{url}: {page}");
                readings.extend(page["readings"].as_array().unwrap().iter().cloned());
                match page["next_cursor"].as_str() {
                    Some(next) => cursor = format!("&cursor={next}"),
                    None => break,
                }
            }
            all.push(readings);
        }
        assert_eq!(all[0].len(), 160, "{series}");
        assert_eq!(all[0], all[1], "{series}");
    }

    // Readings posted to the replica are a change of the hub's actor, which the device
    // receives; a refused batch stores nothing.
    let changes_before = db.count("changes").await;
    let bad =
        serde_json::json!({"series": [{"name": "hub.temp", "ts": [T, T], "values": [1.0, 2.0]}]});
    let r = c
        .post(replica.at("/v1/readings"))
        .header("content-type", "application/json")
        .body(bad.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422, "{:?}", r.text().await);
    assert_eq!(db.count("changes").await, changes_before);
    let ts: Vec<i64> = (0..5).map(|i| T + i * 1_000).collect();
    let good = serde_json::json!({"series": [{"name": "hub.temp", "unit": "°C", "ts": ts, "values": [1.0, 2.0, 3.0, 4.0, 5.0]}]});
    let r = c
        .post(replica.at("/v1/readings"))
        .header("content-type", "application/json")
        .body(good.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let posted: Value = r.json().await.unwrap();
    let (_, st) = get_json(&c, &replica.at("/v1/status")).await;
    assert_eq!(posted["actor"], st["actor"], "{posted} {st}");
    assert_eq!(
        (posted["seq"].as_u64(), posted["count"].as_u64()),
        (Some(1), Some(5))
    );
    assert_eq!(db.count("changes").await, changes_before + 1);
    let path = format!("/v1/readings?series=hub.temp&from={T}&to={}", T + 60_000);
    eventually(
        HEAL_DEADLINE,
        "the device to receive the hub's readings",
        || async {
            let (_, on_device) = get_json(&c, &device.at(&path)).await;
            (on_device["readings"].as_array().map_or(0, Vec::len) == 5).then_some(())
        },
    )
    .await;
    let (_, on_device) = get_json(&c, &device.at(&path)).await;
    let (_, on_replica) = get_json(&c, &replica.at(&path)).await;
    assert_eq!(on_device, on_replica);
    device.stop().await;
    drop(replica);
    db.drop_schema().await;
}

/// A document written through one replica (a put, a batch, a delete) is read back through
/// another — the same JSON — and a device syncing with the hub receives it as the hub's
/// change; the device's own write reaches both replicas; errors are SQLite's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_written_through_one_replica_are_read_through_another_and_synced() {
    let Some(db) = TestDb::new("documents_through_replicas").await else {
        return;
    };
    let c = client();
    let config = replica_config(&db.url(), 1);
    let (r1, r2) = (
        Agent::builder().config(&config).start(),
        Agent::builder().config(&config).start(),
    );
    for r in [&r1, &r2] {
        eventually(Duration::from_secs(10), "/readyz 200", || {
            let (c, url) = (c.clone(), r.at("/readyz"));
            async move { (c.get(url).send().await.ok()?.status() == 200).then_some(()) }
        })
        .await;
    }
    let send = |method: &str, url: String, body: Value| {
        let req = c
            .request(method.parse().unwrap(), url)
            .header("content-type", "application/json")
            .body(body.to_string());
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let (s, put) = send(
        "PUT",
        r1.at("/v1/docs/gh/setpoint"),
        serde_json::json!({"temp": 21}),
    )
    .await;
    assert_eq!(s, 200, "{put}");
    let (_, st) = get_json(&c, &r1.at("/v1/status")).await;
    assert_eq!(put["actor"], st["actor"], "the hub's own actor: {put} {st}");
    let (s, batch) = send(
        "POST",
        r2.at("/v1/docs"),
        serde_json::json!([
            {"key": "gh/setpoint", "value": {"temp": 22}},
            {"key": "gh/mode", "value": "eco"},
            {"key": "gh/old", "value": 1},
        ]),
    )
    .await;
    assert_eq!(s, 200, "{batch}");
    assert_eq!(batch["seq"], 2, "{batch}");
    let (s, del) = send("DELETE", r1.at("/v1/docs/gh/old"), Value::Null).await;
    assert_eq!(s, 200, "{del}");
    // Refusals as on SQLite: a bad entry stores nothing; a missing key is 404.
    let (s, err) = send(
        "POST",
        r1.at("/v1/docs"),
        serde_json::json!([{"key": "gh/x", "value": 1}, {"key": "gh/none", "delete": true}]),
    )
    .await;
    assert_eq!(s, 404, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("entry 1:"),
        "{err}"
    );
    let (s, _) = get_json(&c, &r2.at("/v1/docs/gh/x")).await;
    assert_eq!(s, 404);

    // Every view through the other replica.
    let views = [
        "/v1/docs/gh/setpoint".to_owned(),
        "/v1/docs/gh/setpoint/history".to_owned(),
        "/v1/docs/gh/setpoint/siblings".to_owned(),
        format!(
            "/v1/docs/gh/setpoint?as_of={}",
            put["hlc"].as_str().unwrap()
        ),
        format!(
            "/v1/docs/gh/setpoint/diff?from={}",
            put["hlc"].as_str().unwrap()
        ),
        "/v1/docs?prefix=gh/".to_owned(),
        "/v1/docs/gh/old".to_owned(),
        "/v1/docs/gh/old/history".to_owned(),
    ];
    let (s, doc) = get_json(&c, &r2.at(&views[0])).await;
    assert_eq!((s, &doc["value"]), (200, &serde_json::json!({"temp": 22})));
    for v in &views {
        assert_eq!(
            get_json(&c, &r1.at(v)).await,
            get_json(&c, &r2.at(v)).await,
            "{v}"
        );
    }

    // A device syncing with the hub receives the hub's writes, and the replicas its own.
    let device = Node::with_config(&device_config(r1.url(), 0)).await;
    let (s, mine) = send(
        "PUT",
        device.at("/v1/docs/dev/note"),
        serde_json::json!("from the device"),
    )
    .await;
    assert_eq!(s, 200, "{mine}");
    eventually(
        HEAL_DEADLINE,
        "the device and the hub to converge",
        || async {
            let (_, d) = get_json(&c, &device.at("/v1/status")).await;
            let (_, r) = get_json(&c, &r2.at("/v1/status")).await;
            (!d["digest"].is_null() && d["digest"] == r["digest"]).then_some(())
        },
    )
    .await;
    for v in views
        .iter()
        .chain(["/v1/docs/dev/note".to_owned(), "/v1/docs".to_owned()].iter())
    {
        assert_eq!(
            get_json(&c, &device.at(v)).await,
            get_json(&c, &r2.at(v)).await,
            "{v}"
        );
    }
    device.stop().await;
    drop((r1, r2));
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twins_edited_through_two_replicas_are_read_back_and_reach_a_device() {
    let Some(db) = TestDb::new("twins_through_replicas").await else {
        return;
    };
    let c = client();
    let config = replica_config(&db.url(), 1);
    let (r1, r2) = (
        Agent::builder().config(&config).start(),
        Agent::builder().config(&config).start(),
    );
    for r in [&r1, &r2] {
        eventually(Duration::from_secs(10), "/readyz 200", || {
            let (c, url) = (c.clone(), r.at("/readyz"));
            async move { (c.get(url).send().await.ok()?.status() == 200).then_some(()) }
        })
        .await;
    }
    let send = |method: &str, url: String, content_type: &str, body: Value| {
        let req = c
            .request(method.parse().unwrap(), url)
            .header("content-type", content_type)
            .body(body.to_string());
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let json = "application/json";
    let merge = "application/merge-patch+json";
    let (s, created) = send(
        "POST",
        r1.at("/v1/twins/device/pi-01"),
        json,
        serde_json::json!({"desired": {"interval": 10}}),
    )
    .await;
    assert_eq!(s, 201, "{created}");
    let (_, st) = get_json(&c, &r1.at("/v1/status")).await;
    assert_eq!(
        created["actor"], st["actor"],
        "the hub's own actor: {created}"
    );
    assert_eq!(created["seq"], 1, "{created}");
    let (s, patched) = send(
        "PATCH",
        r2.at("/v1/twins/device/pi-01"),
        merge,
        serde_json::json!({"desired": {"mode": "eco"}}),
    )
    .await;
    assert_eq!(s, 200, "{patched}");
    assert_eq!(patched["changed"], true, "{patched}");
    assert_eq!(patched["seq"], 2, "{patched}");
    let (s, counted) = send(
        "PATCH",
        r1.at("/v1/twins/device/pi-01"),
        json,
        serde_json::json!({"ops": [{"op": "increment", "path": "/restarts", "by": 2}]}),
    )
    .await;
    assert_eq!(s, 200, "{counted}");
    let expected = serde_json::json!({"desired": {"interval": 10, "mode": "eco"}, "restarts": 2});
    assert_eq!(counted["value"], expected, "{counted}");
    // Refusals as on SQLite.
    for (method, path, content_type, body, status, code) in [
        (
            "POST",
            "/v1/twins/device/pi-01",
            json,
            serde_json::json!({}),
            409,
            "twin_exists",
        ),
        (
            "PATCH",
            "/v1/twins/device/none",
            merge,
            serde_json::json!({"a": 1}),
            404,
            "not_found",
        ),
        (
            "PATCH",
            "/v1/twins/device/pi-01",
            merge,
            serde_json::json!([1]),
            422,
            "invalid_patch",
        ),
    ] {
        let (s, err) = send(method, r2.at(path), content_type, body).await;
        assert_eq!(
            (s, err["error"]["code"].as_str()),
            (status, Some(code)),
            "{method} {path}: {err}"
        );
    }
    let (s, _) = send("PUT", r1.at("/v1/docs/plain"), json, serde_json::json!(1)).await;
    assert_eq!(s, 200);
    let (s, err) = send(
        "POST",
        r2.at("/v1/twins/plain"),
        json,
        serde_json::json!({}),
    )
    .await;
    assert_eq!(
        (s, err["error"]["code"].as_str()),
        (409, Some("wrong_kind")),
        "{err}"
    );

    // Every view, read back through the other replica.
    let views = [
        "/v1/twins/device/pi-01".to_owned(),
        "/v1/twins/device/pi-01/history".to_owned(),
        format!(
            "/v1/twins/device/pi-01?as_of={}",
            created["hlc"].as_str().unwrap()
        ),
        format!(
            "/v1/twins/device/pi-01/diff?from={}",
            created["hlc"].as_str().unwrap()
        ),
        "/v1/twins?prefix=device/".to_owned(),
    ];
    let (s, twin) = get_json(&c, &r2.at(&views[0])).await;
    assert_eq!((s, &twin["value"]), (200, &expected), "{twin}");
    assert_eq!(twin["changes"], 3, "{twin}");
    let (_, history) = get_json(&c, &r2.at(&views[1])).await;
    assert_eq!(
        history["changes"].as_array().map(Vec::len),
        Some(3),
        "{history}"
    );
    for v in &views {
        assert_eq!(
            get_json(&c, &r1.at(v)).await,
            get_json(&c, &r2.at(v)).await,
            "{v}"
        );
    }

    // A device syncing with the hub receives the twin and renders it the same.
    let device = Node::with_config(&device_config(r1.url(), 0)).await;
    eventually(
        HEAL_DEADLINE,
        "the device and the hub to converge",
        || async {
            let (_, d) = get_json(&c, &device.at("/v1/status")).await;
            let (_, r) = get_json(&c, &r2.at("/v1/status")).await;
            (!d["digest"].is_null() && d["digest"] == r["digest"]).then_some(())
        },
    )
    .await;
    for v in &views {
        assert_eq!(
            get_json(&c, &device.at(v)).await,
            get_json(&c, &r2.at(v)).await,
            "{v}"
        );
    }
    device.stop().await;
    drop((r1, r2));
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_behind_a_proxy_converge_through_cuts_and_a_kill9() {
    let Some(db) = TestDb::new("two_replicas_behind_a_proxy").await else {
        return;
    };
    let c = client();
    let config = replica_config(&db.url(), 3);
    let mut replicas = vec![
        Agent::builder().config(&config).start(),
        Agent::builder().config(&config).start(),
    ];
    let proxy = Proxy::round_robin(replicas.iter().map(addr_of).collect()).await;
    let mut devices = Vec::new();
    for i in 0..3 {
        devices.push(Node::with_config(&device_config(&proxy.url(), i)).await);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            tokio::spawn(write_until(
                c.clone(),
                d.url().to_owned(),
                format!("dev{i}"),
                stop.clone(),
            ))
        })
        .collect();

    let seed = std::env::var("KDELTA_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("chaos seed {seed} (repeat with KDELTA_CHAOS_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let chaos_until = Instant::now() + Duration::from_secs(8);
    let kill_at = Instant::now() + Duration::from_millis(rng.random_range(1_500..4_000));
    let victim = rng.random_range(0..replicas.len());
    let mut killed = false;
    let mut faults = 0;
    while Instant::now() < chaos_until {
        if !killed && Instant::now() >= kill_at {
            replicas[victim].kill9();
            killed = true;
            println!("chaos: replica {victim} killed with SIGKILL");
        }
        let action = match rng.random_range(0..10) {
            0..=3 => {
                proxy.cut();
                "cut every link".to_owned()
            }
            4..=5 => {
                let dir = if rng.random_bool(0.5) {
                    Dir::Up
                } else {
                    Dir::Down
                };
                let n = rng.random_range(1..50_000);
                proxy.cut_after(dir, n);
                format!("cut after {n} bytes {dir:?}")
            }
            _ => {
                proxy.restore();
                "restore".to_owned()
            }
        };
        if action != "restore" {
            faults += 1;
        }
        println!("chaos: {action}");
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..600))).await;
    }
    proxy.restore();
    // The killed replica comes back on a new port; the proxy learns it.
    let restarted = Agent::builder().config(&config).start();
    proxy.set_target(victim, addr_of(&restarted));
    replicas[victim] = restarted;
    stop.store(true, Ordering::SeqCst);
    let mut acked = Vec::new();
    for w in writers {
        acked.push(w.await.expect("writer task"));
    }
    let want: BTreeMap<String, u64> = acked.iter().flat_map(|a| a.readings.clone()).collect();
    let total: u64 = want.values().sum();
    println!("chaos: {faults} faults; acknowledged {want:?}");

    // Every device and every replica (the database) hold one digest.
    eventually(
        HEAL_DEADLINE,
        "every device and replica to hold the same data",
        || async {
            let mut digests = Vec::new();
            let mut vectors = Vec::new();
            for d in &devices {
                let (_, st) = get_json(&c, &d.at("/v1/status")).await;
                digests.push(st["digest"].clone());
                vectors.push(st["version_vector"].clone());
            }
            for r in &replicas {
                let (_, st) = get_json(&c, &r.at("/v1/status")).await;
                digests.push(st["digest"].clone());
            }
            let one = digests.iter().all(|d| *d == digests[0] && !d.is_null())
                && vectors.iter().all(|v| *v == vectors[0]);
            one.then_some(())
        },
    )
    .await;
    for r in &replicas {
        let (_, st) = get_json(&c, &r.at("/v1/status")).await;
        assert_eq!(st["version_vector_size"], 3, "{st}");
        assert_eq!(st["database"]["reachable"], true, "{st}");
    }
    // Nothing acknowledged lost or duplicated: on every device, and in the database.
    for (i, d) in devices.iter().enumerate() {
        assert_eq!(series_counts(&c, d).await, want, "series counts at dev{i}");
        for w in &acked {
            for (key, (puts, _)) in &w.docs {
                let history = doc_history(&c, d, key).await;
                let all: usize = if key == "chaos/shared" {
                    acked.iter().map(|a| a.docs[key].0).sum()
                } else {
                    *puts
                };
                assert_eq!(history.len(), all, "dev{i}: history of {key}");
            }
        }
    }
    assert_eq!(
        db.count("readings").await as u64,
        total,
        "readings in PostgreSQL"
    );
    // The replicas count them as the devices do (from the rollups kept on apply).
    for r in &replicas {
        assert_eq!(
            series_counts(&c, r).await,
            want,
            "series counts at a replica"
        );
    }
    println!("converged: {total} readings in the devices and the database");
    assert!(faults > 0 && killed);
    for d in devices {
        d.stop().await;
    }
    drop(replicas);
    db.drop_schema().await;
}

/// `kdelta bench fleet` at a small scale: five devices through one, then two replica
/// processes; the figures it prints are of data it checked, and its schemas are gone after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_fleet_counts_what_the_devices_wrote_through_one_and_two_replicas() {
    let Ok(base) = std::env::var("KDELTA_POSTGRES") else {
        println!(
            "skipping bench_fleet: KDELTA_POSTGRES is not set (e.g. postgres://postgres@127.0.0.1:5432/test; scripts/ensure-postgres.sh starts a server)"
        );
        return;
    };
    let admin = sqlx::PgPool::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("KDELTA_POSTGRES={base}: {e}"));
    let fleet_schemas = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name LIKE 'kdelta\\_fleet\\_%'",
        )
        .fetch_one(&admin)
        .await
        .expect("counting schemas")
    };
    let schemas_before = fleet_schemas().await;
    let dir = tempfile::tempdir().unwrap();
    let (devices, series, per_change, changes) = (5u64, 3u64, 2u64, 4u64);
    let args = [
        "bench".to_owned(),
        "fleet".to_owned(),
        "--url".to_owned(),
        base.clone(),
        "--devices".to_owned(),
        devices.to_string(),
        "--series".to_owned(),
        series.to_string(),
        "--per-change".to_owned(),
        per_change.to_string(),
        "--backlog-changes".to_owned(),
        changes.to_string(),
        "--replicas".to_owned(),
        "1,2".to_owned(),
        "--concurrency".to_owned(),
        "3".to_owned(),
        "--follow-log".to_owned(),
        "--json".to_owned(),
    ];
    let out = tokio::task::spawn_blocking({
        let cwd = dir.path().to_path_buf();
        move || {
            std::process::Command::new(super::harness::BIN)
                .args(&args)
                .current_dir(cwd)
                .env("NO_COLOR", "1")
                .env_remove("KDELTA_POSTGRES")
                .output()
                .expect("run kdelta bench fleet")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    let phases = report["phases"].as_array().expect("phases");
    assert_eq!(phases.len(), 2, "{report}");
    for (phase, replicas) in phases.iter().zip([1, 2]) {
        assert_eq!(phase["replicas"], replicas, "{phase}");
        assert_eq!(
            phase["readings"].as_u64(),
            Some(devices * series * per_change * changes),
            "{phase}"
        );
        assert_eq!(
            phase["changes"].as_u64(),
            Some(devices * changes),
            "{phase}"
        );
        assert!(phase["readings_per_sec"].as_f64().unwrap() > 0.0, "{phase}");
        let lag = &phase["lag_ms"];
        assert!(lag["p50"].as_f64().unwrap() > 0.0, "{phase}");
        assert!(lag["p99"].as_f64() <= lag["max"].as_f64(), "{phase}");
        assert_eq!(phase["digest"].as_str().map(str::len), Some(64), "{phase}");
        // The replicas run with device_relay = "own" (the bench's default): no device is
        // sent another device's changes.
        assert_eq!(phase["relayed_changes"].as_u64(), Some(0), "{phase}");
        // The log follower read every change and reading once, in commit order.
        let follower = &phase["follower"];
        assert_eq!(follower["changes"], phase["changes"], "{phase}");
        assert_eq!(follower["readings"], phase["readings"], "{phase}");
        assert!(follower["read_secs"].as_f64().unwrap() > 0.0, "{phase}");
    }
    assert_eq!(report["device_relay"], "own", "{report}");
    // The same devices, so the same digest in both phases' databases.
    assert_eq!(phases[0]["digest"], phases[1]["digest"]);
    assert_eq!(
        fleet_schemas().await,
        schemas_before,
        "a phase's schema was left"
    );
}

/// A replica with `[retention]` prunes what it received from a device by age, one pass per
/// `every`: the old series' readings are gone from its queries, the recent ones stay, its
/// status counts the pass, and the device (without retention) still holds everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_prunes_readings_older_than_its_retention() {
    let Some(db) = TestDb::new("a_replica_prunes_readings").await else {
        return;
    };
    let c = client();
    let config = format!(
        "{}[retention]\nreadings = \"30d\"\nevery = \"1s\"\n",
        replica_config(&db.url(), 1)
    );
    let replica = Agent::builder().config(&config).start();
    let device = Node::with_config(&device_config(replica.url(), 0)).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for (series, from) in [
        ("old.temp", now - 100 * 86_400_000),
        ("new.temp", now - 3_600_000),
    ] {
        let ts: Vec<i64> = (0..10).map(|i| from + i * 1_000).collect();
        let values: Vec<f64> = (0..10).map(|i| 20.0 + f64::from(i)).collect();
        let body = serde_json::json!({"series": [{"name": series, "ts": ts, "values": values}]});
        let r = c
            .post(device.at("/v1/readings"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "{:?}", r.text().await);
    }
    let readings_of = |agent: String, series: &'static str| {
        let c = c.clone();
        async move {
            let url = format!("{agent}/v1/readings?series={series}&from=0&to=99999999999999");
            let (s, page) = get_json(&c, &url).await;
            assert_eq!(s, 200, "{url}: {page}");
            page["readings"].as_array().map_or(0, Vec::len)
        }
    };
    eventually(
        HEAL_DEADLINE,
        "the replica to prune the old series' readings",
        || async {
            let (_, status) = get_json(&c, &replica.at("/v1/status")).await;
            let pruned = status["store"]["retention"]["total"]["readings"].as_u64();
            (pruned == Some(10)).then_some(())
        },
    )
    .await;
    assert_eq!(readings_of(replica.at(""), "old.temp").await, 0);
    assert_eq!(readings_of(replica.at(""), "new.temp").await, 10);
    assert_eq!(readings_of(device.at(""), "old.temp").await, 10);
    // The pruned change is still a change: the database keeps both of the device's.
    let (_, r) = get_json(&c, &replica.at("/v1/status")).await;
    assert_eq!(r["store"]["retention"]["hub"]["ran"], true, "{r}");
    assert_eq!(db.count("changes").await, 2);
    assert_eq!(db.count("readings").await, 10);
    device.stop().await;
    drop(replica);
    db.drop_schema().await;
}

#[tokio::test]
async fn a_replica_prunes_document_history_beyond_keep_versions() {
    let Some(db) = TestDb::new("a_replica_prunes_document_history").await else {
        return;
    };
    let c = client();
    let config = format!(
        "{}[retention]\nevery = \"1s\"\n[retention.docs]\nkeep_versions = 2\n\
         [[retention.docs.keys]]\npattern = \"audit/*\"\nkeep = \"forever\"\n",
        replica_config(&db.url(), 1)
    );
    let replica = Agent::builder().config(&config).start();
    let device = Node::with_config(&device_config(replica.url(), 0)).await;
    let put = |url: String, v: i64| {
        let c = c.clone();
        async move {
            let (s, body) = put_json(&c, &url, &serde_json::json!({"v": v})).await;
            assert_eq!(s, 200, "{url}: {body}");
            body["hlc"].as_str().unwrap().to_owned()
        }
    };
    // Four versions written through the replica (the hub's actor), three on the device
    // (synced to the replica), three of a key kept forever.
    let mut hlcs = Vec::new();
    for v in 0..4 {
        hlcs.push(put(replica.at("/v1/docs/gh/setpoint"), v).await);
    }
    for v in 0..3 {
        put(device.at("/v1/docs/dev/mode"), v).await;
        put(replica.at("/v1/docs/audit/door"), v).await;
    }
    let pruned = |key: &'static str| {
        let c = c.clone();
        let replica = &replica;
        async move {
            doc_history(&c, replica, key)
                .await
                .iter()
                .map(|v| v["pruned"] == true)
                .collect::<Vec<bool>>()
        }
    };
    // 2 of gh/setpoint and 1 of dev/mode (once the device's versions reach the replica).
    let status = eventually(
        HEAL_DEADLINE,
        "the replica to prune document history",
        || async {
            let (_, status) = get_json(&c, &replica.at("/v1/status")).await;
            let n = status["store"]["retention"]["total"]["doc_versions"].as_u64();
            (n == Some(3)).then_some(status)
        },
    )
    .await;
    assert_eq!(status["store"]["retention"]["enabled"], true, "{status}");
    assert_eq!(status["store"]["retention"]["hub"]["ran"], true, "{status}");
    assert_eq!(pruned("gh/setpoint").await, [false, false, true, true]);
    assert_eq!(pruned("dev/mode").await, [false, false, true]);
    assert_eq!(pruned("audit/door").await, [false; 3]);
    // The current value answers; a pruned point is a clear 410, naming the horizon.
    let doc = replica.at("/v1/docs/gh/setpoint");
    let (s, now) = get_json(&c, &doc).await;
    assert_eq!((s, &now["value"]), (200, &serde_json::json!({"v": 3})));
    let (s, err) = get_json(&c, &format!("{doc}?as_of={}", hlcs[1])).await;
    assert_eq!(s, 410, "{err}");
    assert_eq!(err["error"]["code"], "history_pruned", "{err}");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains(&hlcs[2]), "names the horizon: {message}");
    // Every change stays in the log; the values are gone from the database.
    assert_eq!(db.count("changes").await, 10);
    let sql = format!(
        "SELECT count(*) FROM {}.doc_versions WHERE pruned AND value IS NULL",
        db.schema
    );
    let gone: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(&db.admin)
        .await
        .unwrap();
    assert_eq!(gone, 3);
    device.stop().await;
    drop(replica);
    db.drop_schema().await;
}
