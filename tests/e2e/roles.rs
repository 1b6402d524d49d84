//! Peer roles with real agent processes: a `device` credential carries only its own actor's
//! changes (another device's changes sent through it are refused, counted and named, and
//! nothing of them is stored, while its own keep flowing); the same token replayed by a
//! second machine is refused and reported; a `hub` credential relays.

use std::time::Duration;

use serde_json::Value;

use super::harness::{Agent, eventually};
use super::sync::{converge, ingest};
use super::{client, get_json, metrics_text};

const DEADLINE: Duration = Duration::from_secs(60);
const TOKEN_A: &str = "device-a-token-0123456789";
const TOKEN_B: &str = "device-b-token-0123456789";

/// An agent accepting `name`/`token` with `role`, plus the given outbound peers
/// (`(name, url, token)`).
fn agent(accept: Option<(&str, &str, &str)>, peers: &[(&str, &str, &str)]) -> Agent {
    let mut config = String::from("sources = []\ndevice_twin = false\n");
    if let Some((name, token, role)) = accept {
        config.push_str(&format!(
            "[sync]\naccept_tokens = [{{ name = \"{name}\", token = \"{token}\", role = \"{role}\" }}]\n"
        ));
    }
    for (name, url, token) in peers {
        config.push_str(&format!(
            "[[sync.peers]]\nname = \"{name}\"\nurl = \"{url}\"\ntoken = \"{token}\"\n"
        ));
    }
    Agent::builder().config(&config).start()
}

async fn status(c: &reqwest::Client, a: &Agent) -> Value {
    get_json(c, &a.at("/v1/status")).await.1
}

async fn actor(c: &reqwest::Client, a: &Agent) -> String {
    status(c, a).await["actor"].as_str().unwrap().to_owned()
}

async fn metric(a: &Agent, prefix: &str) -> u64 {
    let text = metrics_text(&client(), a).await;
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_token_carries_only_its_own_devices_changes() {
    let c = client();
    // The hub knows A's token as a device credential; the relay knows it as a hub.
    let hub = agent(Some(("dev-a", TOKEN_A, "device")), &[]);
    let relay = agent(Some(("dev-a", TOKEN_A, "hub")), &[]);
    // A takes B's changes (B syncs into A) and syncs out to both with its token.
    let a = agent(
        Some(("dev-b", TOKEN_B, "device")),
        &[("hub", hub.url(), TOKEN_A), ("relay", relay.url(), TOKEN_A)],
    );
    let b = agent(None, &[("a", a.url(), TOKEN_B)]);
    let (a_actor, b_actor) = (actor(&c, &a).await, actor(&c, &b).await);
    ingest(&c, &b, "b.temp", 0, 30).await;
    ingest(&c, &a, "a.temp", 0, 20).await;
    converge(&c, &a, &b).await;
    // A hub credential relays: the relay holds B's changes too.
    converge(&c, &a, &relay).await;

    // The hub refuses B's changes coming through A's device token, names them, counts them…
    let entry = eventually(DEADLINE, "the hub to refuse B's changes", || async {
        let (_, peers) = get_json(&c, &hub.at("/v1/sync/peers")).await;
        peers["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == "dev-a" && p["changes_refused"].as_u64().unwrap_or(0) > 0)
            .cloned()
    })
    .await;
    assert_eq!(entry["role"], "device", "{entry}");
    assert_eq!(entry["bound_actor"], a_actor.as_str(), "{entry}");
    let refusal = &entry["last_refusal"];
    assert_eq!(refusal["code"], "foreign_actor", "{entry}");
    let message = refusal["message"].as_str().unwrap();
    assert!(
        message.contains(&b_actor) && message.contains("dev-a"),
        "{message}"
    );
    assert!(metric(&hub, "kdelta_sync_changes_refused_total{peer=\"dev-a\"").await > 0);
    // …stores none of them, and takes all of A's own.
    eventually(DEADLINE, "A's own changes at the hub", || async {
        let (hub_st, a_st) = (status(&c, &hub).await, status(&c, &a).await);
        (hub_st["version_vector"][&a_actor] == a_st["version_vector"][&a_actor]).then_some(())
    })
    .await;
    let hub_st = status(&c, &hub).await;
    assert!(hub_st["version_vector"].get(&b_actor).is_none(), "{hub_st}");
    let (s, v) = get_json(&c, &hub.at("/v1/readings?series=b.temp")).await;
    assert_eq!(s, 404, "{v}");
    let (_, peers) = get_json(&c, &hub.at("/v1/sync/peers")).await;
    let cred = &peers["credentials"][0];
    assert_eq!(
        (
            cred["name"].as_str(),
            cred["role"].as_str(),
            cred["bound_actor"].as_str()
        ),
        (Some("dev-a"), Some("device"), Some(a_actor.as_str())),
        "{peers}"
    );

    // A second machine replaying A's token is refused at the handshake and reported.
    let copy = agent(None, &[("hub", hub.url(), TOKEN_A)]);
    let copy_actor = actor(&c, &copy).await;
    ingest(&c, &copy, "copy.temp", 0, 5).await;
    let err = eventually(DEADLINE, "the copy to be refused", || async {
        let (_, peers) = get_json(&c, &copy.at("/v1/sync/peers")).await;
        let msg = peers["peers"][0]["last_error"]["message"]
            .as_str()?
            .to_owned();
        msg.contains("credential_bound").then_some(msg)
    })
    .await;
    assert!(err.contains(&a_actor) && err.contains(&copy_actor), "{err}");
    assert!(metric(&hub, "kdelta_sync_refused_total{peer=\"dev-a\"").await > 0);
    let hub_st = status(&c, &hub).await;
    assert!(
        hub_st["version_vector"].get(&copy_actor).is_none(),
        "{hub_st}"
    );
    // The real device keeps syncing under its binding.
    ingest(&c, &a, "a.temp", 20, 5).await;
    eventually(DEADLINE, "A's new changes at the hub", || async {
        let (hub_st, a_st) = (status(&c, &hub).await, status(&c, &a).await);
        (hub_st["version_vector"][&a_actor] == a_st["version_vector"][&a_actor]).then_some(())
    })
    .await;
}
