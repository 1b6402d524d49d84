//! `GET /v1/events` on a hub of PostgreSQL replicas (issue 17): a subscriber on one replica
//! sees every replica's commits — a document written through the other replica (the hub's
//! own actor, `remote: false`) and the readings a device synced to it (`remote: true`) —
//! filtered as on SQLite, with ids that grow along the database's commit-ordered log.

use std::time::Duration;

use serde_json::{Value, json};

use super::cluster::Node;
use super::harness::{Agent, Endpoint};
use super::pg_hub::{TestDb, device_config, replica_config};
use super::{client, put_json};

/// Reads server-sent events from `stream` until `n` `change` events arrived (10 s each).
async fn changes(stream: &mut reqwest::Response, n: usize) -> Vec<(i64, Value)> {
    let mut text = String::new();
    let mut out = Vec::new();
    while out.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .expect("the stream stays open");
        text.push_str(&String::from_utf8_lossy(&chunk));
        // Whole events end with a blank line.
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            if !event.contains("event: change") {
                continue;
            }
            let id = event
                .lines()
                .find_map(|l| l.strip_prefix("id: "))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no id: {event}"));
            let data = event
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap_or_else(|| panic!("no data: {event}"));
            out.push((id, serde_json::from_str(data).unwrap()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_on_one_replica_sees_the_commits_of_every_replica() {
    let Some(db) = TestDb::new("a_subscriber_on_one_replica_sees").await else {
        return;
    };
    let c = client();
    let a = Agent::builder()
        .config(&replica_config(&db.url(), 1))
        .start();
    let b = Agent::builder()
        .config(&replica_config(&db.url(), 1))
        .start();
    let mut docs = c
        .get(b.at("/v1/events?kind=doc&prefix=cfg/"))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);
    assert_eq!(docs.headers()["content-type"], "text/event-stream");
    let mut all = c.get(b.at("/v1/events")).send().await.unwrap();
    assert_eq!(all.status(), 200);
    put_json(&c, &a.at("/v1/docs/other"), &json!(1)).await;
    put_json(&c, &a.at("/v1/docs/cfg/fan"), &json!({"speed": 2})).await;
    let got = changes(&mut docs, 1).await;
    let (_, ev) = &got[0];
    assert_eq!(
        (ev["kind"].as_str(), ev["key"].as_str()),
        (Some("doc"), Some("cfg/fan")),
        "{ev}"
    );
    assert_eq!(ev["remote"], false, "{ev}");
    assert_eq!(ev["deleted"], false, "{ev}");
    // A device's readings, synced to replica a.
    let device = Node::with_config(&device_config(a.url(), 0)).await;
    let body = json!({"series": [{"name": "room.temp", "ts": [1_764_000_000_000i64, 1_764_000_001_000i64], "values": [1.0, 2.0]}]});
    let r = c
        .post(device.at("/v1/readings"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let got = changes(&mut all, 3).await;
    let ids: Vec<i64> = got.iter().map(|(id, _)| *id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids {ids:?}");
    let kinds: Vec<(&str, bool)> = got
        .iter()
        .map(|(_, e)| (e["kind"].as_str().unwrap(), e["remote"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [("doc", false), ("doc", false), ("readings", true)],
        "{got:?}"
    );
    let (_, readings) = &got[2];
    assert_eq!(readings["series"], json!(["room.temp"]), "{readings}");
    assert_eq!(readings["count"], 2, "{readings}");
    drop(device);
    drop((a, b));
    db.drop_schema().await;
}
