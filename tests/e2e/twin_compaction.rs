//! Twin history compaction in a real agent: with `[retention.twins] compact_after = "0s"` the
//! raw chunks of the twin changes its snapshot holds are dropped by the retention loop
//! (`/v1/status` and `/metrics` count them), history, as-of and the value answer as before,
//! a hub that syncs afterwards receives every change — same value, history, version vector
//! and digest — and `kdelta verify` passes on the stopped device.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Agent, eventually, run_to_end};
use crate::sync::{TOKEN, converge, device_config, hub};
use crate::twins::patch;
use crate::{client, get_json, metrics_text, post};

const DEADLINE: Duration = Duration::from_secs(60);
const KEY: &str = "app/state";
const MERGE: &str = "application/merge-patch+json";
/// 1 creation + 299 patches: the snapshot saved at the 256th change covers 256 of them.
const PATCHES: usize = 299;

/// Every change of the twin's history, newest first (one page: fewer than 1,000).
async fn history(c: &reqwest::Client, agent: &Agent) -> Vec<Value> {
    let (s, h) = get_json(c, &agent.at(&format!("/v1/twins/{KEY}/history?limit=1000"))).await;
    assert_eq!(s, 200, "{h}");
    h["changes"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_compacts_twin_history_and_a_hub_receives_all_of_it() {
    let retention = "[retention]\nevery = \"1s\"\n[retention.twins]\ncompact_after = \"0s\"\n";
    let work = tempfile::tempdir().unwrap();
    let device = Agent::builder()
        .dir(work.path())
        .config(&format!("sources = []\ndevice_twin = false\n{retention}"))
        .start();
    let c = client();
    let url = device.at(&format!("/v1/twins/{KEY}"));
    let (s, v) = post(
        &c,
        &url,
        "application/json",
        br#"{"reported": {}}"#.to_vec(),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let mut hlcs = Vec::new();
    for i in 0..PATCHES {
        let body = json!({"reported": {"n": i, "note": format!("report {i}")}}).to_string();
        let (s, v) = patch(&c, &url, MERGE, &body).await;
        assert_eq!(s, 200, "{v}");
        hlcs.push(v["hlc"].as_str().unwrap().to_owned());
    }

    let st: Value = eventually(DEADLINE, "256 twin changes compacted in /v1/status", || {
        let (c, url) = (c.clone(), device.at("/v1/status"));
        async move {
            let (_, st) = get_json(&c, &url).await;
            (st["store"]["retention"]["total"]["twin_changes_compacted"] == 256).then_some(st)
        }
    })
    .await;
    assert_eq!(st["store"]["retention"]["enabled"], true, "{st}");
    let total = &st["store"]["retention"]["total"];
    assert!(
        total["twin_bytes_compacted"].as_u64().unwrap() > 256 * 20,
        "{st}"
    );
    assert_eq!(total["twin_changes_kept"], 0, "{st}");
    let metrics = metrics_text(&c, &device).await;
    assert!(
        metrics.contains("kdelta_retention_compacted_twin_changes_total 256"),
        "{metrics}"
    );

    // Value, history (paths of compacted changes included) and as-of answer as before.
    let (s, now) = get_json(&c, &url).await;
    assert_eq!(s, 200, "{now}");
    assert_eq!(now["value"]["reported"]["n"], PATCHES - 1, "{now}");
    let h = history(&c, &device).await;
    assert_eq!(h.len(), PATCHES + 1);
    assert_eq!(
        h[PATCHES - 1]["paths"],
        json!(["/reported/n", "/reported/note"])
    );
    assert_eq!(h[PATCHES - 1]["hlc"], hlcs[0].as_str());
    assert_eq!(h[PATCHES]["paths"], json!(["/reported"]), "the creation");
    let (s, then) = get_json(&c, &format!("{url}?as_of={}", hlcs[10])).await;
    assert_eq!(s, 200, "{then}");
    assert_eq!(then["value"]["reported"]["n"], 10, "{then}");

    // Restarted with a hub as its peer: the hub gets every change, rebuilt from the
    // snapshot where compacted, and verifies each one's seal.
    device.sigterm();
    let mut device = device;
    assert!(device.wait_exit(DEADLINE).is_some_and(|s| s.success()));
    let hub = hub();
    let device = Agent::builder()
        .dir(work.path())
        .config(&format!(
            "device_twin = false\n{}{retention}",
            device_config(&hub, TOKEN)
        ))
        .start();
    converge(&c, &device, &hub).await;
    let (s, there) = get_json(&c, &hub.at(&format!("/v1/twins/{KEY}"))).await;
    assert_eq!(s, 200, "{there}");
    assert_eq!(there["value"], now["value"]);
    assert_eq!(history(&c, &hub).await, h);
    let (_, then) = get_json(&c, &hub.at(&format!("/v1/twins/{KEY}?as_of={}", hlcs[10]))).await;
    assert_eq!(then["value"]["reported"]["n"], 10, "{then}");

    // `kdelta verify` on the stopped device: every chain, signature and body hash holds.
    device.sigterm();
    let mut device = device;
    assert!(device.wait_exit(DEADLINE).is_some_and(|s| s.success()));
    let data_dir = device.data_dir().display().to_string();
    let cwd = tempfile::tempdir().unwrap();
    let (code, out) = tokio::task::spawn_blocking(move || {
        run_to_end(
            &["verify", "--data-dir", &data_dir],
            cwd.path(),
            Duration::from_secs(120),
        )
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{out}");
}
