//! A config with one source of each kind starts, records what it can and reports the status
//! of every source — the ones whose devices are absent included (a status, not a crash).

use std::time::Duration;

use serde_json::Value;

use super::harness::{Agent, eventually};
use super::{client, get_json};

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
