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

const TOKEN_C: &str = "device-c-token-0123456789";

/// The audit of issue 14 with real agents: device A writes `{"setpoint":22}` then
/// `{"setpoint":23}` (seq 2, linking to seq 1) and syncs them to hub H. With H stopped, the
/// seal columns of A's seq 1 are nulled in H's file and its value changed to 99. `kdelta
/// verify` on H's file exits 1, naming A's next change (its link proves the stripped seal).
/// A fresh device C syncing from the restarted H refuses the unsigned change (defaults:
/// `require_signatures` on) and A's seq 2 waits behind it: C shows neither 99 nor 23, the
/// refusal is counted (`kdelta_sync_changes_unverified_total`), shown as `last_refusal`
/// naming A and the seq, and logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_stripping_and_altering_a_change_is_refused_by_a_fresh_device() {
    let c = client();
    let hub_config = format!(
        "sources = []\ndevice_twin = false\n[sync]\naccept_tokens = [\
         {{ name = \"dev-a\", token = \"{TOKEN_A}\", role = \"device\" }}, \
         {{ name = \"dev-c\", token = \"{TOKEN_C}\", role = \"device\" }}]\n"
    );
    let mut hub = Agent::builder().config(&hub_config).start();
    let device = |url: &str, token: &str| {
        Agent::builder()
            .config(&format!(
                "sources = []\ndevice_twin = false\n[[sync.peers]]\nname = \"hub\"\nurl = \"{url}\"\ntoken = \"{token}\"\n"
            ))
            .start()
    };
    let a = device(hub.url(), TOKEN_A);
    let (_, st) = get_json(&c, &a.at("/v1/status")).await;
    let a_actor = st["actor"].as_str().unwrap().to_owned();
    for v in [22, 23] {
        let (s, body) = super::put_json(
            &c,
            &a.at("/v1/docs/setpoint"),
            &serde_json::json!({ "setpoint": v }),
        )
        .await;
        assert!((200..300).contains(&s), "{s} {body}");
    }
    converge(&c, &a, &hub).await;

    // H stopped; its file edited: A's first document change loses its seal and says 99.
    let kept = hub.keep_dir();
    hub.sigterm();
    assert!(hub.wait_exit(DEADLINE).is_some(), "H stops on SIGTERM");
    let hub_dir = hub.dir().to_path_buf();
    drop(hub);
    let (code, out) = verify(&hub_dir.join("data")).await;
    assert_eq!(code, Some(0), "H verifies before the edit: {out}");
    let conn = rusqlite::Connection::open(hub_dir.join("data/kdelta.db")).unwrap();
    let seq: i64 = conn
        .query_row("SELECT MIN(seq) FROM doc_versions", [], |r| r.get(0))
        .unwrap();
    let n = conn
        .execute(
            "UPDATE changes SET prev_hash = NULL, body_hash = NULL, signature = NULL \
             WHERE seq = ?1 AND actor_idx = (SELECT actor_idx FROM doc_versions WHERE seq = ?1)",
            [seq],
        )
        .unwrap();
    assert_eq!(n, 1);
    // {"setpoint": 99} as CBOR.
    let n = conn
        .execute(
            "UPDATE doc_versions SET value = x'a168736574706f696e741863' WHERE seq = ?1",
            [seq],
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(conn);
    let (code, out) = verify(&hub_dir.join("data")).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&a_actor)
            && out.contains(&format!("seq {}", seq + 1))
            && out.contains("stripped"),
        "{out}"
    );

    // H restarted on its edited file; a fresh device C syncs from it.
    let hub = Agent::builder().dir(&hub_dir).config(&hub_config).start();
    let fresh = device(hub.url(), TOKEN_C);
    let peer = eventually(DEADLINE, "C to refuse A's stripped change", || async {
        let (_, peers) = get_json(&c, &fresh.at("/v1/sync/peers")).await;
        peers["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == "hub" && p["changes_unverified"].as_u64().unwrap_or(0) >= 1)
            .cloned()
    })
    .await;
    assert_eq!(peer["changes_unsigned"], Value::from(0u64), "{peer}");
    let refusal = &peer["last_refusal"];
    assert_eq!(refusal["code"], "unsigned", "{peer}");
    let message = refusal["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&a_actor) && message.contains(&format!("seq {seq}")),
        "{message}"
    );
    assert!(metric(&fresh, "kdelta_sync_changes_unverified_total").await >= 1);
    let (status, doc) = get_json(&c, &fresh.at("/v1/docs/setpoint")).await;
    assert_eq!(status, 404, "C holds nothing of A: {doc}");
    assert!(
        fresh.stderr().contains(&a_actor) && fresh.stderr().contains("unsigned"),
        "the refusal is logged: {}",
        fresh.stderr()
    );
    drop(kept);
}
