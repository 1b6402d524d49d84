//! Sync between real agent processes over `/v1/sync`: convergence, a refused token, and
//! convergence after `kill -9` of the initiator mid-sync.

use std::time::Duration;

use serde_json::{Value, json};

use super::harness::{Agent, eventually};
use super::{client, get_json, post, put_json};

const TOKEN: &str = "hub-token-0123456789";
const DEADLINE: Duration = Duration::from_secs(30);

/// An agent that accepts `TOKEN` from a peer named `device`.
fn hub() -> Agent {
    Agent::builder()
        .config(&format!(
            "sources = []\ndevice_twin = false\n[sync]\naccept_tokens = [{{ name = \"device\", token = \"{TOKEN}\" }}]\n"
        ))
        .start()
}

fn device_config(hub: &Agent, token: &str) -> String {
    format!(
        "sources = []\n[[sync.peers]]\nname = \"hub\"\nurl = \"{}\"\ntoken = \"{token}\"\n",
        hub.url()
    )
}

async fn ingest(c: &reqwest::Client, agent: &Agent, series: &str, from: i64, n: i64) {
    let batch: Vec<Value> = (from..from + n)
        .map(|i| json!({"series": series, "ts": 1_764_000_000_000i64 + i, "value": i as f64}))
        .collect();
    let (s, body) = post(
        c,
        &agent.at("/v1/readings"),
        "application/json",
        serde_json::to_vec(&batch).unwrap(),
    )
    .await;
    assert_eq!(s, 201, "{body}");
}

async fn status(c: &reqwest::Client, agent: &Agent) -> (Value, Value) {
    let (s, v) = get_json(c, &agent.at("/v1/status")).await;
    assert_eq!(s, 200, "{v}");
    (v["version_vector"].clone(), v["digest"].clone())
}

async fn converge(c: &reqwest::Client, a: &Agent, b: &Agent) {
    eventually(DEADLINE, "both agents to hold the same data", || async {
        let (va, da) = status(c, a).await;
        let (vb, db) = status(c, b).await;
        (va == vb && da == db).then_some(())
    })
    .await;
}

#[tokio::test]
async fn two_agents_converge_over_websocket() {
    let c = client();
    let b = hub();
    let a = Agent::builder().config(&device_config(&b, TOKEN)).start();
    ingest(&c, &a, "a.temp", 0, 500).await;
    ingest(&c, &b, "b.temp", 0, 300).await;
    let (s, _) = put_json(&c, &a.at("/v1/docs/cfg/a"), &json!({"from": "a"})).await;
    assert!(s < 300);
    let (s, _) = put_json(&c, &b.at("/v1/docs/cfg/b"), &json!({"from": "b"})).await;
    assert!(s < 300);
    converge(&c, &a, &b).await;

    // Live mode: a later write reaches the other side without a reconnect.
    ingest(&c, &b, "b.temp", 300, 10).await;
    converge(&c, &a, &b).await;
    let (_, doc) = get_json(&c, &b.at("/v1/docs/cfg/a")).await;
    assert!(doc.to_string().contains("\"from\":\"a\""), "{doc}");

    let (s, peers) = get_json(&c, &a.at("/v1/sync/peers")).await;
    assert_eq!(s, 200);
    let p = &peers["peers"][0];
    assert_eq!(p["name"], "hub", "{peers}");
    assert_eq!(p["direction"], "outbound");
    assert_eq!(p["connected"], true, "{peers}");
    assert!(p["bytes_out"].as_u64().unwrap() > 0, "{peers}");
    let (_, peers) = get_json(&c, &b.at("/v1/sync/peers")).await;
    assert_eq!(peers["peers"][0]["name"], "device", "{peers}");
    assert_eq!(peers["peers"][0]["direction"], "inbound", "{peers}");
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_the_hub_is_untouched() {
    let c = client();
    let b = hub();
    let (before, _) = status(&c, &b).await;
    let a = Agent::builder()
        .config(&device_config(&b, "not-the-token"))
        .start();
    ingest(&c, &a, "a.temp", 0, 50).await;
    let err = eventually(DEADLINE, "the device to report the refusal", || async {
        let (_, peers) = get_json(&c, &a.at("/v1/sync/peers")).await;
        let e = peers["peers"][0]["last_error"].clone();
        (!e.is_null()).then_some(e)
    })
    .await;
    assert!(!err["message"].as_str().unwrap_or("").is_empty(), "{err}");
    let (after, _) = status(&c, &b).await;
    assert_eq!(before, after, "the hub's store changed");
    let (s, _) = get_json(&c, &b.at("/v1/series")).await;
    assert_eq!(s, 200);

    // An agent without accept_tokens refuses inbound sync outright.
    let closed = Agent::start();
    let r = c.get(closed.at("/v1/sync")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "sync_disabled", "{body}");
}

#[tokio::test]
async fn kill9_of_the_initiator_mid_sync_then_restart_converges() {
    let c = client();
    let b = hub();
    let mut a = Agent::builder().config(&device_config(&b, TOKEN)).start();
    let dir = a.keep_dir().expect("fresh temp dir");
    for i in 0..20 {
        ingest(&c, &a, "a.bulk", i * 2000, 2000).await;
    }
    ingest(&c, &b, "b.temp", 0, 100).await;
    // Kill as soon as the hub has received something, while the backlog is in flight.
    eventually(DEADLINE, "the first page at the hub", || async {
        let (_, peers) = get_json(&c, &b.at("/v1/sync/peers")).await;
        let got = peers["peers"][0]["bytes_in"].as_u64().unwrap_or(0);
        (got > 0).then_some(())
    })
    .await;
    a.kill9();
    drop(a);
    let a = Agent::builder()
        .dir(dir.path())
        .config(&device_config(&b, TOKEN))
        .start();
    converge(&c, &a, &b).await;
    let (_, series) = get_json(&c, &b.at("/v1/series")).await;
    let bulk = series["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["series"] == "a.bulk" || s["name"] == "a.bulk")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(bulk["count"], 40_000, "{series}");
}

#[tokio::test]
async fn three_devices_and_a_hub_converge() {
    let c = client();
    let hub = hub();
    let devices: Vec<Agent> = (0..3)
        .map(|_| Agent::builder().config(&device_config(&hub, TOKEN)).start())
        .collect();
    for (i, d) in devices.iter().enumerate() {
        ingest(&c, d, &format!("dev{i}.temp"), 0, 200).await;
        let (s, _) = put_json(&c, &d.at(&format!("/v1/docs/dev{i}")), &json!({"i": i})).await;
        assert!(s < 300);
    }
    ingest(&c, &hub, "hub.temp", 0, 50).await;
    // Device 0's data reaches devices 1 and 2 through the hub (relay).
    for d in &devices {
        converge(&c, &hub, d).await;
    }
    let (_, series) = get_json(&c, &devices[2].at("/v1/series")).await;
    for name in ["dev0.temp", "dev1.temp", "hub.temp"] {
        assert!(
            series.to_string().contains(name),
            "{name} missing: {series}"
        );
    }
}
