//! Batch documents end to end: `POST /v1/docs` (JSON and CBOR) and `kdelta put --batch` against
//! a real agent process, bad entries refused by index with nothing stored, then sync to a
//! second agent, whose history, as-of reads and listing show the batch's versions.

use std::time::Duration;

use serde_json::{Value, json};

use super::cluster::Node;
use super::harness::{Agent, Endpoint};
use super::sync::{TOKEN, converge, device_config, status};
use super::{cbor, client, code, get_json, post, run_to_end};

async fn post_batch(c: &reqwest::Client, agent: &Agent, body: &Value) -> (u16, Value) {
    post(
        c,
        &agent.at("/v1/docs"),
        "application/json",
        body.to_string().into_bytes(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_over_http_and_the_cli_sync_to_a_second_agent() {
    let c = client();
    let hub = Node::with_config(&format!(
        "sources = []\ndevice_twin = false\n[sync]\naccept_tokens = [{{ name = \"device\", token = \"{TOKEN}\" }}]\n"
    ))
    .await;
    let device = Agent::builder()
        .config(&format!(
            "device_twin = false\n{}",
            device_config(&hub, TOKEN)
        ))
        .start();

    // One atomic change over three keys.
    let (s, first) = post_batch(
        &c,
        &device,
        &json!([
            {"key": "room/a", "value": {"on": true}},
            {"key": "room/b", "value": 1},
            {"key": "room/c", "value": null},
        ]),
    )
    .await;
    assert_eq!(s, 200, "{first}");
    let versions = first["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 3);
    assert!(
        versions
            .iter()
            .all(|v| v["seq"] == first["seq"] && v["hlc"] == first["hlc"])
    );
    assert_eq!(versions[2]["value"], Value::Null);
    assert_eq!(
        versions[2]["deleted"], false,
        "null is a value, not a delete"
    );

    // Refusals: nothing stored, the entry named.
    let (vv_before, digest_before) = status(&c, &device).await;
    for (body, want_status, want_code, want_msg) in [
        (
            json!([{"key": "room/new", "value": 1}, {"key": "room/zz", "delete": true}]),
            404,
            "not_found",
            "entry 1: ",
        ),
        (
            json!([{"key": "room/new", "value": 1}, {"key": "room/new", "value": 2}]),
            422,
            "invalid_batch",
            "entry 1: ",
        ),
        (
            json!([{"key": "room/new", "value": 1}, {"key": "", "value": 2}]),
            422,
            "invalid_key",
            "entry 1: ",
        ),
        (
            json!([{"key": "room/new"}]),
            400,
            "malformed_body",
            "entry 0: needs",
        ),
        (json!([]), 422, "invalid_batch", "no documents"),
    ] {
        let (s, err) = post_batch(&c, &device, &body).await;
        assert_eq!((s, code(&err)), (want_status, want_code), "{body}: {err}");
        let msg = err["error"]["message"].as_str().unwrap();
        assert!(msg.contains(want_msg), "{msg}");
    }
    assert_eq!(status(&c, &device).await, (vv_before, digest_before));
    let (s, _) = get_json(&c, &device.at("/v1/docs/room/new")).await;
    assert_eq!(s, 404);

    // CBOR body, with a context naming the version it resolves.
    let a1 = &versions[0];
    let (s, second) = post(
        &c,
        &device.at("/v1/docs"),
        "application/cbor",
        cbor(&json!([
            {"key": "room/a", "value": {"on": false},
             "context": [{"actor": a1["actor"], "seq": a1["seq"]}]},
            {"key": "room/b", "delete": true},
        ])),
    )
    .await;
    assert_eq!(s, 200, "{second}");
    assert_eq!(second["versions"][1]["deleted"], true);

    // The CLI: JSON lines in batches of 2, then a file with a bad line.
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..5)
        .map(|i| json!({"key": format!("cli/{i}"), "value": i}).to_string())
        .collect();
    let good = dir.path().join("good.jsonl");
    std::fs::write(
        &good,
        format!("{}\n\n{}\n", lines[..3].join("\n"), lines[3..].join("\n")),
    )
    .unwrap();
    let url = device.url().to_owned();
    let (code_, stderr) = run_to_end(
        &[
            "put",
            "--batch",
            good.to_str().unwrap(),
            "--batch-size",
            "2",
            "--url",
            &url,
        ],
        dir.path(),
        Duration::from_secs(30),
    );
    assert_eq!(code_, Some(0), "{stderr}");
    let (_, listed) = get_json(&c, &device.at("/v1/docs?prefix=cli/")).await;
    assert_eq!(listed["docs"].as_array().unwrap().len(), 5, "{listed}");
    let seqs: std::collections::BTreeSet<u64> = listed["docs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs.len(), 3, "5 documents in batches of 2: 3 changes");

    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"key\": \"cli/x\", \"value\": 1}\n{\"key\": \"cli/gone\", \"delete\": true}\n",
    )
    .unwrap();
    let (code_, stderr) = run_to_end(
        &["put", "--batch", bad.to_str().unwrap(), "--url", &url],
        dir.path(),
        Duration::from_secs(30),
    );
    assert_eq!(code_, Some(1), "{stderr}");
    assert!(
        stderr.contains("line 2") && stderr.contains("cli/gone"),
        "{stderr}"
    );
    assert!(
        stderr.contains("nothing of lines 1–2 was stored"),
        "{stderr}"
    );
    let (s, _) = get_json(&c, &device.at("/v1/docs/cli/x")).await;
    assert_eq!(s, 404, "the batch with the bad line stored nothing");

    // Sync: the hub holds the batches' versions, with history and as-of.
    converge(&c, &device, &hub).await;
    let (s, h) = get_json(&c, &hub.at("/v1/docs/room/a/history")).await;
    assert_eq!(s, 200, "{h}");
    let hv = h["versions"].as_array().unwrap();
    assert_eq!(hv.len(), 2, "{h}");
    assert_eq!(
        (hv[0]["seq"].clone(), hv[1]["seq"].clone()),
        (second["seq"].clone(), first["seq"].clone())
    );
    assert_eq!(hv[0]["supersedes"][0]["seq"], first["seq"]);
    let as_of = first["hlc"].as_str().unwrap();
    let (s, old) = get_json(&c, &hub.at(&format!("/v1/docs/room/a?as_of={as_of}"))).await;
    assert_eq!(
        (s, old["value"].clone()),
        (200, json!({"on": true})),
        "{old}"
    );
    let (s, _) = get_json(&c, &hub.at("/v1/docs/room/b")).await;
    assert_eq!(s, 404, "deleted by the second batch");
    let (s, old_b) = get_json(&c, &hub.at(&format!("/v1/docs/room/b?as_of={as_of}"))).await;
    assert_eq!((s, old_b["value"].clone()), (200, json!(1)));
    let (_, listed) = get_json(&c, &hub.at("/v1/docs?prefix=cli/")).await;
    assert_eq!(listed["docs"].as_array().unwrap().len(), 5);
    hub.stop().await;
}
