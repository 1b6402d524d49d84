//! The signed change log with real agent processes: a hub relays a device's signed changes
//! and the receiving device verifies them (nothing refused, nothing unsigned); `kdelta
//! verify` passes on the synced stores — beside a running agent, read-only, and stopped —
//! and fails, naming actor and seq, on a store whose file was edited behind the agent's back.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::harness::{Agent, eventually, run_to_end};
use super::sync::{converge, ingest};
use super::{client, get_json, metrics_text};

const DEADLINE: Duration = Duration::from_secs(60);
const CLI: Duration = Duration::from_secs(120);
const TOKEN_A: &str = "device-a-token-0123456789";
const TOKEN_B: &str = "device-b-token-0123456789";

async fn verify(data_dir: &Path) -> (Option<i32>, String) {
    let data_dir = data_dir.display().to_string();
    let cwd = tempfile::tempdir().unwrap();
    tokio::task::spawn_blocking(move || {
        run_to_end(&["verify", "--data-dir", &data_dir], cwd.path(), CLI)
    })
    .await
    .unwrap()
}

async fn metric(a: &Agent, prefix: &str) -> u64 {
    let text = metrics_text(&client(), a).await;
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_relays_signed_changes_and_verify_catches_an_edited_store() {
    let c = client();
    let hub = Agent::builder()
        .config(&format!(
            "sources = []\ndevice_twin = false\n[sync]\naccept_tokens = [\
             {{ name = \"dev-a\", token = \"{TOKEN_A}\", role = \"device\" }}, \
             {{ name = \"dev-b\", token = \"{TOKEN_B}\", role = \"device\" }}]\n"
        ))
        .start();
    let device = |token: &str| {
        Agent::builder()
            .config(&format!(
                "sources = []\ndevice_twin = false\n[[sync.peers]]\nname = \"hub\"\nurl = \"{}\"\ntoken = \"{token}\"\n",
                hub.url()
            ))
            .start()
    };
    let a = device(TOKEN_A);
    let mut b = device(TOKEN_B);
    let (_, st) = get_json(&c, &a.at("/v1/status")).await;
    let a_actor = st["actor"].as_str().unwrap().to_owned();
    ingest(&c, &a, "a.temp", 0, 50).await;
    let (s, v) = super::put_json(
        &c,
        &a.at("/v1/docs/greenhouse/setpoint"),
        &serde_json::json!({"temp": 22}),
    )
    .await;
    assert!((200..300).contains(&s), "{s} {v}");
    converge(&c, &a, &b).await;

    // B got A's changes through the hub, every one signed and verified.
    let peer = eventually(DEADLINE, "B's session with the hub to report", || async {
        let (_, peers) = get_json(&c, &b.at("/v1/sync/peers")).await;
        peers["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == "hub" && p["changes_applied"].as_u64().unwrap_or(0) >= 2)
            .cloned()
    })
    .await;
    assert_eq!(peer["changes_unverified"], Value::from(0u64), "{peer}");
    assert_eq!(peer["changes_unsigned"], Value::from(0u64), "{peer}");
    assert_eq!(metric(&b, "kdelta_sync_changes_unverified_total").await, 0);

    // `kdelta verify` beside the running hub (read-only), then on the stopped device.
    let (code, err) = verify(&hub.data_dir()).await;
    assert_eq!(code, Some(0), "{err}");
    b.sigterm();
    assert!(b.wait_exit(DEADLINE).is_some(), "B stops on SIGTERM");
    let (code, err) = verify(&b.data_dir()).await;
    assert_eq!(code, Some(0), "{err}");

    // An edit behind the agent's back: the document's value in B's file.
    let db = b.data_dir().join("kdelta.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let n = conn
        .execute("UPDATE doc_versions SET value = x'a164746578701863'", [])
        .unwrap();
    assert_eq!(n, 1);
    drop(conn);
    let (code, err) = verify(&b.data_dir()).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&a_actor) && err.contains("seq") && err.contains("altered"),
        "{err}"
    );
}
