//! MQTT on a hub of PostgreSQL replicas (issue 17), end to end: two real `kdelta start`
//! replicas on one database with `[mqtt]` on, an embedded rumqttd broker and a SQLite
//! device syncing to one of them. Exactly one replica runs the MQTT client (the database's
//! `mqtt` lease; the other stands by), and through it the hub does what an agent does on
//! MQTT: it publishes the readings devices synced (`publish_remote`) and its own, stores
//! ingest and document commands once (read back through the *other* replica), and keeps
//! its availability topic. The leader is killed with SIGKILL: the broker publishes its last
//! will (`offline`), the standby takes the lease, says `online`, and every reading the
//! device writes afterwards is published — the outbox cursor lives in the database, so
//! nothing is skipped (at-least-once: readings around the takeover may come twice).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use super::cluster::Node;
use super::harness::{Agent, Endpoint, eventually};
use super::mqtt_support::{Broker, Sub};
use super::pg_hub::{TestDb, device_config, replica_config};
use super::sync::HEAL_DEADLINE;
use super::{client, get_json};

const LEADS: &str = "this replica holds the hub's MQTT lease";
const STANDS_BY: &str = "stands by";
const T: i64 = 1_764_000_000_000;

/// A replica's config: the database, one device token, MQTT to `broker`, device name `hub`.
fn config(db: &TestDb, broker: std::net::SocketAddr) -> String {
    format!(
        "device_name = \"hub\"\n{}[mqtt]\nenabled = true\nurl = \"mqtt://{broker}\"\n\
         publish_remote = true\ncommands = true\nreconnect_backoff_max = \"300ms\"\n",
        replica_config(&db.url(), 1)
    )
}

/// Posts `n` readings of `room.temp` from `ts0` on, a second apart, to `device`.
async fn post_readings(c: &reqwest::Client, device: &Node, ts0: i64, n: i64) -> BTreeSet<i64> {
    let ts: Vec<i64> = (0..n).map(|i| ts0 + i * 1_000).collect();
    let values: Vec<f64> = ts.iter().map(|t| ((t - T) / 1_000) as f64).collect();
    let body = json!({"series": [{"name": "room.temp", "unit": "°C", "ts": ts, "values": values}]});
    let r = c
        .post(device.at("/v1/readings"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{:?}", r.text().await);
    ts.into_iter().collect()
}

/// Reads `sub` until every timestamp of `want` was published on `topic` (others skipped).
async fn published(sub: &mut Sub, topic: &str, want: &BTreeSet<i64>) {
    let mut seen = BTreeSet::new();
    while !want.is_subset(&seen) {
        let v = sub.json_on(topic).await;
        seen.insert(v["ts"].as_i64().unwrap_or_else(|| panic!("{topic}: {v}")));
    }
}

/// The next payload on `topic`, as text.
async fn text_on(sub: &mut Sub, topic: &str) -> String {
    String::from_utf8(sub.next_on(topic).await.0).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_runs_the_hubs_mqtt_client_and_the_other_takes_over_after_a_kill9() {
    let Some(db) = TestDb::new("one_replica_runs_the_hubs_mqtt_client").await else {
        return;
    };
    let c = client();
    let broker = Broker::start().await;
    let mut sub = Sub::connect(broker.addr, &["kdelta/hub/#"]).await;
    let mut replicas = vec![
        Agent::builder().config(&config(&db, broker.addr)).start(),
        Agent::builder().config(&config(&db, broker.addr)).start(),
    ];
    // One leads, the other stands by.
    let leader = eventually(Duration::from_secs(30), "one replica to lead", || {
        let logs: Vec<String> = replicas.iter().map(|r| r.stderr()).collect();
        async move {
            let leading: Vec<usize> = (0..2).filter(|&i| logs[i].contains(LEADS)).collect();
            match leading[..] {
                [one] if logs[1 - one].contains(STANDS_BY) => Some(one),
                _ => None,
            }
        }
    })
    .await;
    assert_eq!(text_on(&mut sub, "kdelta/hub/status").await, "online");
    let standby = 1 - leader;
    // The device syncs to the replica that stays.
    let device = Node::with_config(&device_config(replicas[standby].url(), 0)).await;
    let first = post_readings(&c, &device, T, 20).await;
    published(&mut sub, "kdelta/hub/room.temp", &first).await;

    // Ingest through the leader's client, read back through the standby.
    sub.publish(
        "kdelta/hub/ingest/hub.load",
        json!({"ts": T, "value": 0.5}).to_string(),
    )
    .await;
    let from_to = format!("from={}&to={}", T - 1, T + 1);
    eventually(
        Duration::from_secs(20),
        "the ingested reading on the standby",
        || {
            let (c, url) = (
                c.clone(),
                replicas[standby].at(&format!("/v1/readings?series=hub.load&{from_to}")),
            );
            async move {
                let (s, body) = get_json(&c, &url).await;
                (s == 200 && body["readings"].as_array().is_some_and(|r| r.len() == 1))
                    .then_some(body)
            }
        },
    )
    .await;
    // The hub's own change is published like the device's.
    published(&mut sub, "kdelta/hub/hub.load", &BTreeSet::from([T])).await;

    // A document command, answered on the result topic and read through the standby.
    sub.publish("kdelta/hub/docs/set/cfg/fan", r#"{"speed": 3}"#)
        .await;
    let result: Value = sub.json_on("kdelta/hub/docs/result").await;
    assert_eq!(result["key"], "cfg/fan", "{result}");
    assert_eq!(result["ok"], true, "{result}");
    let (s, doc) = get_json(&c, &replicas[standby].at("/v1/docs/cfg/fan")).await;
    assert_eq!(s, 200, "{doc}");
    assert_eq!(doc["value"], json!({"speed": 3}), "{doc}");

    // The leader dies: its last will says offline, the standby takes over.
    replicas[leader].kill9();
    assert_eq!(text_on(&mut sub, "kdelta/hub/status").await, "offline");
    eventually(
        Duration::from_secs(30),
        "the standby to take the lease",
        || {
            let log = replicas[standby].stderr();
            async move { log.contains(LEADS).then_some(()) }
        },
    )
    .await;
    assert_eq!(text_on(&mut sub, "kdelta/hub/status").await, "online");
    let second = post_readings(&c, &device, T + 60_000, 20).await;
    published(&mut sub, "kdelta/hub/room.temp", &second).await;
    eventually(HEAL_DEADLINE, "the device's changes on the hub", || {
        let (c, d, r) = (
            c.clone(),
            device.at("/v1/status"),
            replicas[standby].at("/v1/status"),
        );
        async move {
            let (_, d) = get_json(&c, &d).await;
            let (_, r) = get_json(&c, &r).await;
            (!d["digest"].is_null() && d["digest"] == r["digest"]).then_some(())
        }
    })
    .await;
    let log = replicas[standby].stderr();
    assert!(!log.contains("the MQTT client stopped"), "{log}");
    drop(device);
    drop(replicas);
    db.drop_schema().await;
}
