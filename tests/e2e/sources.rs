//! A config with one source of each kind starts, records what it can and reports the status
//! of every source — the ones whose devices are absent included (a status, not a crash).

use std::time::Duration;

use serde_json::Value;

use super::harness::{Agent, eventually};
use super::{client, get_json, mqtt_support};

fn fixture_sys() -> String {
    format!(
        "{}/../sensors/tests/fixtures/pi/sys",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn config() -> String {
    format!(
        r#"
[[sources]]
kind = "system"
interval = "1s"

[[sources]]
kind = "sysfs"
name = "pi"
root = "{sys}"
interval = "1s"

[[sources]]
kind = "sim"
interval = "1s"

[[sources]]
kind = "serial"
name = "gps"
port = "/dev/kdelta-test-no-such-tty"
format = "nmea"

[[sources]]
kind = "modbus_tcp"
name = "meter"
address = "127.0.0.1:1"
interval = "1s"
timeout = "200ms"
registers = [{{ name = "power", address = 0 }}]

[[sources]]
kind = "modbus_rtu"
name = "rs485"
port = "/dev/kdelta-test-no-such-rs485"
interval = "1s"
registers = [{{ name = "temp", address = 0 }}]
"#,
        sys = fixture_sys()
    )
}

fn find<'a>(sources: &'a [Value], name: &str) -> &'a Value {
    sources
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("source {name} missing from {sources:?}"))
}

#[tokio::test]
async fn one_source_of_each_kind_starts_and_reports_status() {
    let agent = Agent::builder().config(&config()).start();
    let c = client();
    let url = agent.at("/v1/sources");
    let sources: Vec<Value> = eventually(Duration::from_secs(30), "every source to report", || {
        let (c, url) = (c.clone(), url.clone());
        async move {
            let (status, body) = get_json(&c, &url).await;
            assert_eq!(status, 200, "{body}");
            let list = body
                .as_array()
                .or_else(|| body["sources"].as_array())
                .cloned()
                .unwrap_or_default();
            let ok = |n: &str| {
                list.iter()
                    .any(|s| s["name"] == n && s["readings"].as_u64() > Some(0))
            };
            let failing = |n: &str| {
                list.iter()
                    .any(|s| s["name"] == n && s["errors"].as_u64() > Some(0))
            };
            (ok("system")
                && ok("pi")
                && ok("sim")
                && failing("gps")
                && failing("meter")
                && failing("rs485"))
            .then_some(list)
        }
    })
    .await;
    assert_eq!(sources.len(), 6, "{sources:?}");
    let kinds: Vec<&str> = sources.iter().filter_map(|s| s["kind"].as_str()).collect();
    for kind in [
        "system",
        "sysfs",
        "sim",
        "serial",
        "modbus_tcp",
        "modbus_rtu",
    ] {
        assert!(kinds.contains(&kind), "kind {kind} missing: {kinds:?}");
    }
    // Absent devices are named in the status, so the user knows which cable to check.
    let err = |n: &str| {
        find(&sources, n)["last_error"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        err("gps").contains("/dev/kdelta-test-no-such-tty"),
        "{}",
        err("gps")
    );
    assert!(err("meter").contains("127.0.0.1:1"), "{}", err("meter"));
    assert!(
        err("rs485").contains("/dev/kdelta-test-no-such-rs485"),
        "{}",
        err("rs485")
    );
    assert!(find(&sources, "pi")["last_error"].is_null());

    // The fixture Pi's CPU zone and both DS18B20 probes were recorded (the batcher commits
    // by age, so poll).
    let want = [
        "thermal.cpu-thermal",
        "w1.28-000005e2fdc3",
        "w1.28-0316a2790fff",
        "system.uptime",
    ];
    let url = agent.at("/v1/series");
    eventually(
        Duration::from_secs(30),
        "fixture series to be stored",
        || {
            let (c, url) = (c.clone(), url.clone());
            async move {
                let (_, body) = get_json(&c, &url).await;
                let names: Vec<String> = body["series"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s["name"].as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                want.iter()
                    .all(|w| names.iter().any(|n| n == w))
                    .then_some(())
            }
        },
    )
    .await;
    agent.sigterm();
}

/// MQTT ingest has a row of its own in `GET /v1/sources` and `kdelta sources`: what it
/// stored, and every reading it refused, counted per reason (one bad element of an array
/// costs only itself).
#[tokio::test]
async fn mqtt_ingest_shows_its_readings_and_rejects_in_kdelta_sources() {
    let broker = mqtt_support::Broker::start().await;
    let mut sub = mqtt_support::Sub::connect(broker.addr, &["t15/shed/status"]).await;
    let agent = Agent::builder()
        .config(&format!(
            "device_name = \"shed\"\nsources = []\n[mqtt]\nenabled = true\nurl = \"mqtt://{}\"\nprefix = \"t15\"\nbackfill = false\n",
            broker.addr
        ))
        .start();
    // Subscribed once it says online.
    while sub.next_on("t15/shed/status").await.0 != b"online" {}
    let c = client();
    let (_, body) = get_json(&c, &agent.at("/v1/sources")).await;
    let row = find(body["sources"].as_array().unwrap(), "mqtt").clone();
    assert_eq!(
        (row["kind"].as_str(), row["readings"].as_u64()),
        (Some("mqtt"), Some(0)),
        "{row}"
    );

    let topic = "t15/shed/ingest/shed.temp";
    sub.publish(topic, "20.5").await;
    sub.publish(topic, "warm").await;
    sub.publish(
        topic,
        r#"[{"ts": 1764000000000, "value": 1}, {"ts": -5, "value": 2}, {"value": "x"}]"#,
    )
    .await;
    let row = eventually(Duration::from_secs(30), "the mqtt row to count", || {
        let c = c.clone();
        let url = agent.at("/v1/sources");
        async move {
            let (_, body) = get_json(&c, &url).await;
            let row = find(body["sources"].as_array().unwrap(), "mqtt").clone();
            (row["readings"] == 2 && row["rejected"].as_object().map(|m| m.len()) == Some(3))
                .then_some(row)
        }
    })
    .await;
    assert_eq!(
        row["rejected"],
        serde_json::json!({"malformed": 1, "bad_timestamp": 1, "not_a_number": 1}),
        "{row}"
    );
    assert!(row["last_reading_ms"].as_i64().is_some(), "{row}");

    // The human table says the same.
    let out = std::process::Command::new(super::harness::BIN)
        .args(["sources", "--url", agent.url()])
        .env("NO_COLOR", "1")
        .env_remove("KDELTA_TOKEN")
        .env_remove("KDELTA_URL")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run kdelta sources");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = table
        .lines()
        .find(|l| l.starts_with("mqtt "))
        .unwrap_or_else(|| panic!("no mqtt row in\n{table}"));
    assert!(
        line.contains("3 (bad_timestamp 1, malformed 1, not_a_number 1)"),
        "{table}"
    );
    agent.sigterm();
}
