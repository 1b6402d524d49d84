//! Document history retention in real agents: `[retention.docs]` keeps the newest versions of
//! each key (a pattern keeps everything for its keys), history lists the pruned versions with
//! their metadata, an as-of read at a pruned point answers `410 history_pruned` naming the
//! horizon, `/v1/status` and `/metrics` count the pruned versions, and a hub that syncs
//! afterwards receives the pruned changes — same history, same value, same digest.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Agent, eventually};
use crate::sync::{TOKEN, converge, device_config, hub};
use crate::{client, get_json, metrics_text, put_json};

const DEADLINE: Duration = Duration::from_secs(30);

/// `pruned` of each version of `key`, newest first.
async fn pruned(c: &reqwest::Client, agent: &Agent, key: &str) -> Vec<bool> {
    let (s, h) = get_json(c, &agent.at(&format!("/v1/docs/{key}/history"))).await;
    assert_eq!(s, 200, "{h}");
    h["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["pruned"].as_bool().unwrap())
        .collect()
}

#[tokio::test]
async fn an_agent_prunes_document_history_and_a_hub_receives_what_remains() {
    let retention = "[retention]\nevery = \"1s\"\n[retention.docs]\nkeep_versions = 2\n\
                     [[retention.docs.keys]]\npattern = \"audit/*\"\nkeep = \"forever\"\n";
    let work = tempfile::tempdir().unwrap();
    let device = Agent::builder()
        .dir(work.path())
        .config(&format!("sources = []\ndevice_twin = false\n{retention}"))
        .start();
    let c = client();
    let mut hlcs = Vec::new();
    for i in 0..5 {
        for key in ["gh/setpoint", "audit/door"] {
            let (s, v) =
                put_json(&c, &device.at(&format!("/v1/docs/{key}")), &json!({"v": i})).await;
            assert_eq!(s, 200, "{v}");
            if key == "gh/setpoint" {
                hlcs.push(v["hlc"].as_str().unwrap().to_owned());
            }
        }
    }

    let st: Value = eventually(DEADLINE, "3 versions pruned in /v1/status", || {
        let (c, url) = (c.clone(), device.at("/v1/status"));
        async move {
            let (_, st) = get_json(&c, &url).await;
            (st["store"]["retention"]["total"]["doc_versions"] == 3).then_some(st)
        }
    })
    .await;
    assert_eq!(st["store"]["retention"]["enabled"], true, "{st}");
    assert_eq!(
        pruned(&c, &device, "gh/setpoint").await,
        [false, false, true, true, true]
    );
    assert_eq!(pruned(&c, &device, "audit/door").await, [false; 5]);
    let (_, h) = get_json(&c, &device.at("/v1/docs/gh/setpoint/history")).await;
    let oldest = &h["versions"][4];
    assert_eq!(oldest["value"], Value::Null, "{h}");
    assert_eq!(oldest["deleted"], false, "{h}");
    assert_eq!(oldest["hlc"], hlcs[0].as_str(), "{h}");

    // Current value and kept history answer; a pruned point is a clear 410.
    let doc = device.at("/v1/docs/gh/setpoint");
    let (s, now) = get_json(&c, &doc).await;
    assert_eq!((s, &now["value"]), (200, &json!({"v": 4})));
    let (s, then) = get_json(&c, &format!("{doc}?as_of={}", hlcs[3])).await;
    assert_eq!((s, &then["value"]), (200, &json!({"v": 3})));
    let (s, err) = get_json(&c, &format!("{doc}?as_of={}", hlcs[1])).await;
    assert_eq!(s, 410, "{err}");
    assert_eq!(err["error"]["code"], "history_pruned", "{err}");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains(&hlcs[3]), "names the horizon: {message}");

    let metrics = metrics_text(&c, &device).await;
    assert!(
        metrics.contains("kdelta_retention_pruned_doc_versions_total 3"),
        "{metrics}"
    );

    // Restarted with a hub as its peer: the hub, which never had the pruned values, gets
    // the changes with what remains of them.
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
    // Same version vector and digest: the hub holds exactly what remains on the device.
    converge(&c, &device, &hub).await;
    assert_eq!(
        pruned(&c, &hub, "gh/setpoint").await,
        [false, false, true, true, true]
    );
    let (s, v) = get_json(&c, &hub.at("/v1/docs/gh/setpoint")).await;
    assert_eq!((s, &v["value"]), (200, &json!({"v": 4})));
    let (s, err) = get_json(
        &c,
        &hub.at(&format!("/v1/docs/gh/setpoint?as_of={}", hlcs[0])),
    )
    .await;
    assert_eq!((s, &err["error"]["code"]), (410, &json!("history_pruned")));
}
