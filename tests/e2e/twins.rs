//! Twins between two in-process agents ([`Node`]): the hub sets a desired source interval
//! while the device, cut off, reports a temperature; after the partition heals both agents
//! show both fields and the device applied the interval (in its reported state and in
//! `GET /v1/sources`). Also the twin API's answers to bad input, and history, as-of and diff
//! over HTTP.

use std::time::Duration;

use serde_json::{Value, json};

use super::cluster::Node;
use super::harness::{Agent, Endpoint, eventually};
use super::{client, get_json, post, put_json};

const TOKEN: &str = "hub-token-twins-0123456789";
const DEADLINE: Duration = Duration::from_secs(40);
const DEVICE: &str = "pi-e2e";
const MERGE: &str = "application/merge-patch+json";

fn twin_url(agent: &impl Endpoint) -> String {
    agent.at(&format!("/v1/twins/device/{DEVICE}"))
}

pub(crate) async fn patch(
    c: &reqwest::Client,
    url: &str,
    content_type: &str,
    body: &str,
) -> (u16, Value) {
    let r = c
        .patch(url)
        .header("content-type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .unwrap_or_else(|e| panic!("PATCH {url}: {e}"));
    let status = r.status().as_u16();
    let bytes = r.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into())),
    )
}

fn device_config(hub_url: Option<&str>) -> String {
    let mut cfg = format!(
        "device_name = \"{DEVICE}\"\n[[sources]]\nkind = \"sim\"\nname = \"sim\"\ninterval = \"1s\"\n"
    );
    if let Some(url) = hub_url {
        cfg.push_str(&format!(
            "[[sync.peers]]\nname = \"hub\"\nurl = \"{url}\"\ntoken = \"{TOKEN}\"\n"
        ));
    }
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_and_reported_merge_after_a_partition() {
    let c = client();
    let hub = Node::with_config(&format!(
        "device_name = \"hub\"\nsources = []\n[sync]\naccept_tokens = [{{ name = \"{DEVICE}\", token = \"{TOKEN}\" }}]\n"
    ))
    .await;
    // Partition: the device runs without its peer.
    let mut device = Node::with_config(&device_config(None)).await;
    let dir = device.keep_dir().expect("fresh temp dir");
    let reported = eventually(DEADLINE, "the device to report itself", || async {
        let (s, v) = get_json(&c, &twin_url(&device)).await;
        (s == 200 && v["value"]["reported"]["sources"]["sim"]["interval"] == "1s").then_some(v)
    })
    .await;
    assert!(
        reported["value"]["reported"]["agent"]["version"].is_string(),
        "{reported}"
    );
    let (s, v) = patch(
        &c,
        &twin_url(&device),
        MERGE,
        r#"{"reported": {"temperature": 21.5}}"#,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // Meanwhile the hub, which has never heard of the device's twin, sets a desired interval.
    let (s, v) = post(
        &c,
        &twin_url(&hub),
        "application/json",
        br#"{"desired": {"sources": {"sim": {"interval": "3s"}}}}"#.to_vec(),
    )
    .await;
    assert_eq!(s, 201, "{v}");

    // Heal: restart the device with the hub as its peer.
    device.stop_within(Duration::from_secs(15)).await;
    let device = Node::builder()
        .dir(dir.path())
        .config(&device_config(Some(hub.url())))
        .start()
        .await;

    for agent in [&hub, &device] {
        let v = eventually(
            DEADLINE,
            "both fields and the applied interval on both agents",
            || async {
                let (s, v) = get_json(&c, &twin_url(agent)).await;
                let t = &v["value"];
                (s == 200
                    && t["reported"]["temperature"] == json!(21.5)
                    && t["desired"]["sources"]["sim"]["interval"] == "3s"
                    && t["reported"]["applied"]["sources"]["sim"]["status"] == "applied"
                    && t["reported"]["sources"]["sim"]["interval"] == "3s")
                    .then_some(v)
            },
        )
        .await;
        assert_eq!(
            v["value"]["reported"]["agent"]["version"],
            reported["value"]["reported"]["agent"]["version"]
        );
    }
    let (s, sources) = get_json(&c, &device.at("/v1/sources")).await;
    assert_eq!(s, 200);
    let sim = sources["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "sim")
        .cloned()
        .unwrap();
    assert_eq!(sim["interval_ms"], 3000, "{sources}");
    // Same bytes on both sides.
    eventually(DEADLINE, "identical digests", || async {
        let (_, a) = get_json(&c, &hub.at("/v1/status")).await;
        let (_, b) = get_json(&c, &device.at("/v1/status")).await;
        (a["digest"] == b["digest"] && a["version_vector"] == b["version_vector"]).then_some(())
    })
    .await;

    // A refused desired value is reported, and the running interval stays.
    let (s, v) = patch(
        &c,
        &twin_url(&hub),
        MERGE,
        r#"{"desired": {"sources": {"sim": {"interval": "soon"}}}}"#,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let v = eventually(DEADLINE, "the refusal reported back to the hub", || async {
        let (_, v) = get_json(&c, &twin_url(&hub)).await;
        (v["value"]["reported"]["applied"]["sources"]["sim"]["status"] == "refused").then_some(v)
    })
    .await;
    let err = v["value"]["reported"]["applied"]["sources"]["sim"]["error"]
        .as_str()
        .unwrap_or("");
    assert!(err.contains("not a duration"), "{v}");
    let (_, sources) = get_json(&c, &device.at("/v1/sources")).await;
    assert!(
        sources.to_string().contains("\"interval_ms\":3000"),
        "{sources}"
    );
}

#[tokio::test]
async fn twin_api_answers_history_diff_and_refusals() {
    let c = client();
    let a = Agent::builder().config("sources = []\n").start();
    let url = a.at("/v1/twins/app/settings");
    let (s, v) = post(
        &c,
        &url,
        "application/json",
        br#"{"mode": "eco", "limits": {"max": 5}}"#.to_vec(),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["changed"], true);
    let first = v["hlc"].as_str().unwrap().to_owned();
    let (s, v) = patch(
        &c,
        &url,
        "application/json",
        r#"{"ops": [{"op": "set", "path": "/limits/min", "value": 1}, {"op": "increment", "path": "/boots", "by": 2}]}"#,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["value"],
        json!({"mode": "eco", "limits": {"max": 5, "min": 1}, "boots": 2})
    );

    let (s, v) = get_json(&c, &format!("{url}?as_of={first}")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["value"], json!({"mode": "eco", "limits": {"max": 5}}));
    let (s, v) = get_json(&c, &format!("{url}/history")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["changes"][0]["paths"],
        json!(["/limits/min", "/boots"]),
        "{v}"
    );
    assert_eq!(v["changes"].as_array().unwrap().len(), 2);
    let (s, v) = get_json(&c, &format!("{url}/diff?from={first}")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["changes"].as_array().unwrap().len(), 2, "{v}");
    let (s, v) = get_json(&c, &a.at("/v1/twins?prefix=app/")).await;
    assert_eq!((s, v["twins"].clone()), (200, json!(["app/settings"])));

    let (_, before) = get_json(&c, &url).await;
    let deep = format!("{}1{}", "{\"a\":".repeat(40), "}".repeat(40));
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        ("not JSON", MERGE, "{nope".into(), 400, "malformed_body"),
        ("deep nesting", MERGE, deep, 422, "invalid_patch"),
        (
            "huge string",
            MERGE,
            format!("{{\"s\": \"{}\"}}", "x".repeat(70_000)),
            422,
            "invalid_patch",
        ),
        (
            "bad path",
            "application/json",
            r#"{"ops": [{"op": "delete", "path": "/nope"}]}"#.into(),
            422,
            "invalid_patch",
        ),
        (
            "plain JSON without ops",
            "application/json",
            r#"{"mode": "x"}"#.into(),
            422,
            "invalid_patch",
        ),
        (
            "unsupported type",
            "text/plain",
            "{}".into(),
            415,
            "unsupported_media_type",
        ),
    ];
    for (what, ct, body, status, code) in cases {
        let (s, v) = patch(&c, &url, ct, &body).await;
        assert_eq!(
            (s, v["error"]["code"].as_str().unwrap_or("")),
            (status, code),
            "{what}: {v}"
        );
        assert!(
            !v["error"]["message"].as_str().unwrap_or("").is_empty(),
            "{what}"
        );
    }
    let (_, after) = get_json(&c, &url).await;
    assert_eq!(before, after, "a refused patch changed the twin");

    let (s, v) = patch(&c, &a.at("/v1/twins/none"), MERGE, "{}").await;
    assert_eq!((s, v["error"]["code"].clone()), (404, json!("not_found")));
    let (s, v) = post(&c, &url, "application/json", Vec::new()).await;
    assert_eq!((s, v["error"]["code"].clone()), (409, json!("twin_exists")));
    let (s, _) = put_json(&c, &a.at("/v1/docs/plain"), &json!(1)).await;
    assert_eq!(s, 200);
    let (s, v) = post(&c, &a.at("/v1/twins/plain"), "application/json", Vec::new()).await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (409, json!("wrong_kind")),
        "{v}"
    );
    let (s, v) = put_json(&c, &a.at("/v1/docs/app/settings"), &json!(1)).await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (409, json!("wrong_kind")),
        "{v}"
    );
}
