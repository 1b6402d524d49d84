//! Agents with wrong wall clocks, faked with libfaketime (Debian's `faketime`, installed by
//! `scripts/test.sh`): a device booted offline in 1970, a device two weeks behind (an old
//! fake-hwclock file) and a device a year ahead, each syncing with a hub on the right time,
//! and a hub two weeks behind its devices. Each faked agent's own wall clock is checked
//! (`/v1/status` `clock.wall_ms`), so a test cannot pass because faketime did not apply.
//! Without libfaketime the tests say so and pass, unless `FAKETIME_REQUIRED` is set
//! (as `scripts/test.sh` does), so CI cannot skip them silently.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::harness::{Agent, eventually};
use super::sync::{TOKEN, converge, ingest};
use super::{client, get_json, metrics_text, mqtt_support, put_json};

const DEADLINE: Duration = Duration::from_secs(60);
const DAY_MS: u64 = 86_400_000;

/// libfaketime's preload library, wherever the architecture's multiarch directory is.
fn libfaketime() -> Option<PathBuf> {
    let found = std::fs::read_dir("/usr/lib")
        .ok()?
        .flatten()
        .map(|e| e.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("FAKETIME_REQUIRED").is_none(),
            "libfaketime is not installed (apt-get install faketime; scripts/test.sh does)"
        );
        eprintln!("skipped: libfaketime is not installed (apt-get install faketime)");
    }
    found
}

/// A hub whose clock is right (and trusted whatever this machine's NTP state is).
fn hub() -> Agent {
    Agent::builder()
        .config(&format!(
            "sources = []\ndevice_twin = false\n[clock]\ntrust = \"always\"\n[sync]\naccept_tokens = [{{ name = \"device\", token = \"{TOKEN}\" }}]\n"
        ))
        .start()
}

/// A device syncing with `hub`, its clock faked by `faketime` (libfaketime's `FAKETIME`
/// syntax: `@1970-01-02 00:00:00` starts there and runs, `-14d` is an offset).
fn device(lib: &Path, hub: &Agent, faketime: &str, trust: &str) -> Agent {
    Agent::builder()
        .config(&format!(
            "sources = []\ndevice_twin = false\n[clock]\ntrust = \"{trust}\"\n[[sync.peers]]\nname = \"hub\"\nurl = \"{}\"\ntoken = \"{TOKEN}\"\n",
            hub.url()
        ))
        .env("LD_PRELOAD", &lib.display().to_string())
        .env("FAKETIME", faketime)
        // Timers and timeouts keep running on the real monotonic clock.
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .start()
}

/// Asserts that `agent`'s wall clock reads about `expected` (unix ms): faketime applied.
async fn assert_wall_clock(c: &reqwest::Client, agent: &Agent, expected: u64) {
    let (_, st) = get_json(c, &agent.at("/v1/status")).await;
    let wall = st["clock"]["wall_ms"].as_u64().expect("clock.wall_ms");
    assert!(
        wall.abs_diff(expected) < 600_000,
        "the faked wall clock reads {wall}, expected about {expected}: {st}"
    );
}

/// What an untrusted agent tells its operator: the `clock` line of `kdelta status` and
/// `kdelta_clock_trusted 0`.
async fn assert_untrusted_is_shown(c: &reqwest::Client, agent: &Agent, reason_has: &str) {
    let out = std::process::Command::new(super::harness::BIN)
        .args(["status", "--url", agent.url()])
        .env("NO_COLOR", "1")
        .env_remove("KDELTA_TOKEN")
        .env_remove("KDELTA_URL")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run kdelta status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("clock "))
        .unwrap_or_else(|| panic!("no clock line in\n{text}"));
    assert!(
        line.contains("NOT trusted") && line.contains(reason_has),
        "{line}"
    );
    let metrics = metrics_text(c, agent).await;
    assert!(
        metrics.lines().any(|l| l == "kdelta_clock_trusted 0"),
        "{metrics}"
    );
}

/// The wall-clock part (ms) of the HLC a write answered with (`"ms:counter"`).
fn stamp_ms(answer: &Value) -> u64 {
    let hlc = answer["hlc"].as_str().expect("an hlc in the answer");
    let ms = hlc.split(':').next().unwrap_or_default();
    ms.parse().unwrap_or_else(|e| panic!("hlc {hlc:?}: {e}"))
}

fn real_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn winner_is(c: &reqwest::Client, agent: &Agent, key: &str, want: Value) -> bool {
    let (s, v) = get_json(c, &agent.at(&format!("/v1/docs/{key}"))).await;
    s == 200 && v["value"] == want
}

async fn winner(c: &reqwest::Client, agent: &Agent, key: &str) -> Value {
    let (s, v) = get_json(c, &agent.at(&format!("/v1/docs/{key}"))).await;
    assert_eq!(s, 200, "{v}");
    v["value"].clone()
}

/// Both ways with a correct hub, and the device's later writes win over the hub's earlier
/// ones (they are stamped after the time the hub told it). `faked_wall` maps the real time
/// to what the device's clock should read; `reason_has` is part of the verdict's reason.
async fn syncs_both_ways(
    faketime: &str,
    trust: &str,
    expect_state: &str,
    faked_wall: impl Fn(u64) -> u64,
    reason_has: &str,
) {
    let Some(lib) = libfaketime() else { return };
    let c = client();
    let hub = hub();
    ingest(&c, &hub, "hub.temp", 0, 50).await;
    let (s, _) = put_json(&c, &hub.at("/v1/docs/fleet/setpoint"), &json!(21)).await;
    assert!(s < 300);
    let dev = device(&lib, &hub, faketime, trust);
    assert_wall_clock(&c, &dev, faked_wall(real_now_ms())).await;
    let (_, st) = get_json(&c, &dev.at("/v1/status")).await;
    assert_eq!(st["clock"]["trusted"], false, "{st}");
    assert_eq!(st["clock"]["state"], expect_state, "{st}");
    assert_untrusted_is_shown(&c, &dev, reason_has).await;
    ingest(&c, &dev, "dev.temp", 0, 50).await;
    converge(&c, &hub, &dev).await;
    assert_eq!(winner(&c, &dev, "fleet/setpoint").await, json!(21));

    let before = real_now_ms();
    let (_, st) = get_json(&c, &dev.at("/v1/status")).await;
    let best = st["clock"]["best_known_ms"]
        .as_u64()
        .expect("a best known time");
    assert!(
        best + 60_000 > before,
        "best known time {best} is not the hub's ({before}): {st}"
    );
    let (s, v) = put_json(&c, &dev.at("/v1/docs/fleet/setpoint"), &json!(23)).await;
    assert!(s < 300, "{v}");
    let stamped = stamp_ms(&v);
    assert!(
        stamped + 1_000 >= before,
        "the device stamped {stamped}, the hub's time is {before}"
    );
    converge(&c, &hub, &dev).await;
    assert_eq!(winner(&c, &hub, "fleet/setpoint").await, json!(23));
    let (_, peers) = get_json(&c, &dev.at("/v1/sync/peers")).await;
    assert_eq!(peers["peers"][0]["changes_quarantined"], 0, "{peers}");
}

#[tokio::test]
async fn a_device_booted_offline_in_1970_syncs_both_ways() {
    // Implausible under "auto", whatever the kernel says: before this release was made.
    // The clock starts at 1970-01-02 and runs.
    syncs_both_ways(
        "@1970-01-02 00:00:00",
        "auto",
        "implausible",
        |_| DAY_MS,
        "the wall clock reads 1970-01-02",
    )
    .await;
}

#[tokio::test]
async fn a_device_two_weeks_behind_syncs_both_ways() {
    // A fake-hwclock time two weeks old on a device that never reaches NTP ("never": the
    // kernel's NTP state cannot be faked, and this machine's may say synchronised).
    syncs_both_ways(
        "-14d",
        "never",
        "forced_untrusted",
        |real| real - 14 * DAY_MS,
        "clock.trust = \"never\"",
    )
    .await;
}

/// A hub whose clock is two weeks behind (never synchronised) and two devices on the right
/// time: the hub judges their changes by the time they claim, stamps its own after it, and
/// all three converge to one digest with nothing held back anywhere.
#[tokio::test]
async fn a_hub_two_weeks_behind_its_devices_converges_with_them() {
    let Some(lib) = libfaketime() else { return };
    let c = client();
    let hub = Agent::builder()
        .config(&format!(
            "sources = []\ndevice_twin = false\n[clock]\ntrust = \"never\"\n[sync]\naccept_tokens = [{{ name = \"device\", token = \"{TOKEN}\" }}]\n"
        ))
        .env("LD_PRELOAD", &lib.display().to_string())
        .env("FAKETIME", "-14d")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .start();
    assert_wall_clock(&c, &hub, real_now_ms() - 14 * DAY_MS).await;
    let correct = || {
        Agent::builder()
            .config(&format!(
                "sources = []\ndevice_twin = false\n[clock]\ntrust = \"always\"\n[[sync.peers]]\nname = \"hub\"\nurl = \"{}\"\ntoken = \"{TOKEN}\"\n",
                hub.url()
            ))
            .start()
    };
    let (a, b) = (correct(), correct());
    ingest(&c, &a, "a.temp", 0, 30).await;
    ingest(&c, &b, "b.temp", 0, 30).await;
    ingest(&c, &hub, "hub.temp", 0, 30).await;
    let (s, v) = put_json(&c, &a.at("/v1/docs/fleet/setpoint"), &json!(20)).await;
    assert!(s < 300, "{v}");
    converge(&c, &hub, &a).await;
    converge(&c, &hub, &b).await;
    // The hub's own write, made after it heard the devices' time, wins over a's.
    let (s, v) = put_json(&c, &hub.at("/v1/docs/fleet/setpoint"), &json!(22)).await;
    assert!(s < 300, "{v}");
    let stamped = stamp_ms(&v);
    assert!(
        stamped + 60_000 > real_now_ms(),
        "the hub stamped {stamped}, two weeks behind the devices"
    );
    let digests = eventually(
        DEADLINE,
        "one digest on the hub and both devices",
        || async {
            let mut digests = Vec::new();
            for agent in [&hub, &a, &b] {
                let (_, st) = get_json(&c, &agent.at("/v1/status")).await;
                digests.push(st["digest"].clone());
            }
            (digests.iter().all(|d| *d == digests[0])
                && digests[0].is_string()
                && winner_is(&c, &b, "fleet/setpoint", json!(22)).await)
                .then_some(digests)
        },
    )
    .await;
    assert_eq!(digests.len(), 3);
    for agent in [&hub, &a, &b] {
        let (_, peers) = get_json(&c, &agent.at("/v1/sync/peers")).await;
        for p in peers["peers"].as_array().unwrap() {
            assert_eq!(p["changes_quarantined"], 0, "{peers}");
        }
    }
    let (_, st) = get_json(&c, &hub.at("/v1/status")).await;
    assert_eq!(st["clock"]["trusted"], false, "{st}");
    for agent in [&a, &b] {
        let (_, dst) = get_json(&c, &agent.at("/v1/status")).await;
        let vv = &dst["version_vector"];
        assert_eq!(vv, &st["version_vector"], "{dst} {st}");
    }
}

#[tokio::test]
async fn a_device_a_year_ahead_is_quarantined_and_others_keep_syncing() {
    let Some(lib) = libfaketime() else { return };
    let c = client();
    let hub = hub();
    let good = Agent::builder()
        .config(&format!(
            "sources = []\ndevice_twin = false\n[clock]\ntrust = \"always\"\n[[sync.peers]]\nname = \"hub\"\nurl = \"{}\"\ntoken = \"{TOKEN}\"\n",
            hub.url()
        ))
        .start();
    // A year ahead, and sure of itself.
    let ahead = device(&lib, &hub, "+365d", "always");
    ingest(&c, &hub, "hub.temp", 0, 20).await;
    ingest(&c, &good, "good.temp", 0, 20).await;
    ingest(&c, &ahead, "ahead.temp", 0, 20).await;

    // The hub holds the ahead device's changes back and says so…
    let entry = eventually(DEADLINE, "the hub to report the quarantine", || async {
        let (_, peers) = get_json(&c, &hub.at("/v1/sync/peers")).await;
        peers["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["changes_quarantined"].as_u64().unwrap_or(0) > 0)
            .cloned()
    })
    .await;
    let q = &entry["last_quarantine"];
    assert_eq!(q["code"], "clock_skew", "{entry}");
    let (_, ahead_status) = get_json(&c, &ahead.at("/v1/status")).await;
    let ahead_actor = ahead_status["actor"].as_str().unwrap();
    assert!(
        q["message"].as_str().unwrap().contains(ahead_actor),
        "{entry}"
    );
    let metrics = metrics_text(&client(), &hub).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("kdelta_sync_changes_quarantined_total{") && !l.ends_with(" 0")),
        "{metrics}"
    );
    // …while the good device and the hub converge, and the ahead device still receives.
    converge(&c, &hub, &good).await;
    eventually(
        DEADLINE,
        "the hub's and the good device's changes to reach it",
        || async {
            let (_, st) = get_json(&c, &ahead.at("/v1/status")).await;
            let (_, hub_st) = get_json(&c, &hub.at("/v1/status")).await;
            let (_, good_st) = get_json(&c, &good.at("/v1/status")).await;
            let vv = &st["version_vector"];
            let hub_actor = hub_st["actor"].as_str().unwrap();
            let good_actor = good_st["actor"].as_str().unwrap();
            (vv[hub_actor] == 1 && vv[good_actor] == 1).then_some(())
        },
    )
    .await;
    let (_, hub_st) = get_json(&c, &hub.at("/v1/status")).await;
    assert!(
        hub_st["version_vector"].get(ahead_actor).is_none(),
        "{hub_st}"
    );
}

/// A device booted offline in 1970 samples a sim source; its batches carry timing records.
/// Once it meets the hub (trusted time in the handshake) it corrects them: on the device
/// and on the hub the readings sit at today's time, and the timing records keep the 1970
/// originals beside the correction.
#[tokio::test]
async fn readings_sampled_in_1970_are_corrected_on_the_device_and_the_hub() {
    let Some(lib) = libfaketime() else { return };
    let c = client();
    let started = real_now_ms() as i64;
    let hub = hub();
    let dev = Agent::builder()
        .config(&format!(
            "device_twin = false\n[[sources]]\nkind = \"sim\"\nname = \"sim\"\ninterval = \"200ms\"\n[ingest]\nbatch_max_age = \"500ms\"\n[[sync.peers]]\nname = \"hub\"\nurl = \"{}\"\ntoken = \"{TOKEN}\"\n",
            hub.url()
        ))
        .env("LD_PRELOAD", &lib.display().to_string())
        .env("FAKETIME", "@1970-01-02 00:00:00")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .start();
    let one_day = 86_400_000i64;
    let corrected = |v: &Value| -> Vec<Value> {
        v["timing"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["state"] == "corrected")
            .cloned()
            .collect()
    };
    let on_hub = eventually(DEADLINE, "corrected 1970 batches at the hub", || async {
        let (_, v) = get_json(&c, &hub.at("/v1/readings/timing?series=sim.temperature")).await;
        let done = corrected(&v);
        (done.len() >= 3).then_some(done)
    })
    .await;
    let now = real_now_ms() as i64;
    for r in &on_hub {
        let original = r["original_from"].as_i64().unwrap();
        assert!(
            (one_day..2 * one_day).contains(&original),
            "sampled on 1970-01-02: {r}"
        );
        let from = r["corrected_from"].as_i64().unwrap();
        let to = r["corrected_to"].as_i64().unwrap();
        assert!(
            from >= started - 5_000 && to <= now + 5_000,
            "corrected to the real time of sampling ({started}..{now}): {r}"
        );
        assert_eq!(r["delta_ms"].as_i64().unwrap(), from - original, "{r}");
        // The readings are at the corrected time on the hub…
        let (s, page) = get_json(
            &c,
            &hub.at(&format!(
                "/v1/readings?series=sim.temperature&from={from}&to={}",
                to + 1
            )),
        )
        .await;
        assert_eq!(s, 200, "{page}");
        assert!(
            page["readings"].as_array().unwrap().len() as u64 >= r["count"].as_u64().unwrap(),
            "{r} {page}"
        );
        // …and the device made the same correction of the same batch.
        let (_, dv) = get_json(&c, &dev.at("/v1/readings/timing?series=sim.temperature")).await;
        let same = dv["timing"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["seq"] == r["seq"])
            .unwrap_or_else(|| panic!("seq {} on the device: {dv}", r["seq"]))
            .clone();
        assert_eq!(same["delta_ms"], r["delta_ms"], "{same} {r}");
        assert_eq!(same["corrected_by"], r["corrected_by"], "{same} {r}");
    }
    // The device's readings of those batches are no longer in 1970.
    let first = on_hub[0]["corrected_from"].as_i64().unwrap();
    let (_, page) = get_json(
        &c,
        &dev.at(&format!(
            "/v1/readings?series=sim.temperature&from={first}&limit=5"
        )),
    )
    .await;
    assert!(!page["readings"].as_array().unwrap().is_empty(), "{page}");
}

/// A device booted offline in 1970 receives readings over MQTT (stamped on arrival by its
/// 1970 clock). They carry timing records like a source's, and once the device meets the
/// hub they are corrected to the real time of arrival, on the device and on the hub.
#[tokio::test]
async fn mqtt_readings_received_in_1970_are_corrected_on_the_device_and_the_hub() {
    let Some(lib) = libfaketime() else { return };
    let c = client();
    let broker = mqtt_support::Broker::start().await;
    let mut sub = mqtt_support::Sub::connect(broker.addr, &["t1970/shed/status"]).await;
    let hub = hub();
    let dev = Agent::builder()
        .config(&format!(
            "device_name = \"shed\"\nsources = []\ndevice_twin = false\n[mqtt]\nenabled = true\nurl = \"mqtt://{}\"\nprefix = \"t1970\"\nbackfill = false\n[[sync.peers]]\nname = \"hub\"\nurl = \"{}\"\ntoken = \"{TOKEN}\"\n",
            broker.addr,
            hub.url()
        ))
        .env("LD_PRELOAD", &lib.display().to_string())
        .env("FAKETIME", "@1970-01-02 00:00:00")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .start();
    assert_wall_clock(&c, &dev, DAY_MS).await;
    while sub.next_on("t1970/shed/status").await.0 != b"online" {}
    let started = real_now_ms() as i64;
    // Three messages, a batch each (the ingest batch is committed within 200 ms).
    for value in ["20.5", "21", "21.5"] {
        sub.publish("t1970/shed/ingest/shed.temp", value).await;
        let want = value.to_owned();
        eventually(DEADLINE, "the reading to be stored", || async {
            let (_, page) = get_json(&c, &dev.at("/v1/readings?series=shed.temp")).await;
            page["readings"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| r["value"].as_f64() == want.parse().ok())
                .then_some(())
        })
        .await;
    }
    let sent = real_now_ms() as i64;
    let corrected = |v: &Value| -> Vec<Value> {
        v["timing"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["state"] == "corrected")
            .cloned()
            .collect()
    };
    for agent in [&dev, &hub] {
        let done = eventually(DEADLINE, "the MQTT readings corrected", || async {
            let (_, v) = get_json(&c, &agent.at("/v1/readings/timing?series=shed.temp")).await;
            let done = corrected(&v);
            (done
                .iter()
                .map(|r| r["count"].as_u64().unwrap())
                .sum::<u64>()
                == 3)
                .then_some(done)
        })
        .await;
        for r in &done {
            let original = r["original_from"].as_i64().unwrap();
            assert!(
                (DAY_MS as i64..2 * DAY_MS as i64).contains(&original),
                "received on 1970-01-02: {r}"
            );
            let from = r["corrected_from"].as_i64().unwrap();
            assert!(
                from >= started - 5_000 && from <= sent + 5_000,
                "corrected to the real time of arrival ({started}..{sent}): {r}"
            );
        }
    }
    // The readings themselves are at today's time on the hub.
    let (_, page) = get_json(
        &c,
        &hub.at(&format!(
            "/v1/readings?series=shed.temp&from={}",
            started - 5_000
        )),
    )
    .await;
    assert_eq!(page["readings"].as_array().unwrap().len(), 3, "{page}");
}

/// Sync token of a correct device beside the one that ran a year ahead.
const GOOD_TOKEN: &str = "good-token-0123456789";

/// A hub (right time, trusted) accepting the year-ahead device `pi` ([`TOKEN`]) and a
/// correct device `good` ([`GOOD_TOKEN`]).
fn rebase_hub() -> Agent {
    Agent::builder()
        .config(&format!(
            "sources = []\ndevice_twin = false\n[clock]\ntrust = \"always\"\n[sync]\naccept_tokens = [{{ name = \"pi\", token = \"{TOKEN}\", role = \"device\" }}, {{ name = \"good\", token = \"{GOOD_TOKEN}\", role = \"device\" }}]\n"
        ))
        .start()
}

/// A device syncing with `hub` with `token`, sure of its clock.
fn trusting_device_config(hub: &Agent, token: &str) -> String {
    format!(
        "sources = []\ndevice_twin = false\n[clock]\ntrust = \"always\"\n[[sync.peers]]\nname = \"hub\"\nurl = \"{}\"\ntoken = \"{token}\"\n",
        hub.url()
    )
}

/// `ahead` (a year ahead, and sure of itself) writes readings and `pi/state`; returns its
/// actor once the hub holds its changes back.
async fn write_ahead_until_held_back(c: &reqwest::Client, hub: &Agent, ahead: &Agent) -> String {
    assert_wall_clock(c, ahead, real_now_ms() + 365 * DAY_MS).await;
    ingest(c, ahead, "ahead.temp", 0, 20).await;
    let (s, v) = put_json(c, &ahead.at("/v1/docs/pi/state"), &json!("ahead")).await;
    assert!(s < 300, "{v}");
    let (_, st) = get_json(c, &ahead.at("/v1/status")).await;
    let old = st["actor"].as_str().unwrap().to_owned();
    eventually(
        DEADLINE,
        "the hub to hold the year-ahead changes back",
        || async {
            let (_, peers) = get_json(c, &hub.at("/v1/sync/peers")).await;
            peers["peers"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| {
                    p["principal"] == "pi" && p["changes_quarantined"].as_u64().unwrap_or(0) > 0
                })
                .cloned()
        },
    )
    .await;
    old
}

/// `dev`, whose store's actor `old` wrote a year ahead, rebased (with its clock right now):
/// a new actor, a log line, a status entry and a metric. Its succession record moved its
/// `device` credential on at the hub: its new changes reach the hub (and `good` through
/// it), the hub's reach it, while the year-ahead changes stay held back at the hub.
async fn assert_rebased_and_syncs_both_ways(
    c: &reqwest::Client,
    hub: &Agent,
    good: &Agent,
    dev: &Agent,
    old: &str,
) {
    assert_wall_clock(c, dev, real_now_ms()).await;
    let (_, st) = get_json(c, &dev.at("/v1/status")).await;
    let new = st["actor"].as_str().unwrap().to_owned();
    assert_ne!(new, old, "{st}");
    let rebased = &st["clock"]["rebased"];
    assert_eq!(
        (rebased["old_actor"].as_str(), rebased["new_actor"].as_str()),
        (Some(old), Some(new.as_str())),
        "{st}"
    );
    assert!(
        dev.stderr().contains("writes as a new actor"),
        "{}",
        dev.stderr()
    );
    let metrics = metrics_text(c, dev).await;
    assert!(
        metrics.lines().any(|l| l == "kdelta_clock_rebases_total 1"),
        "{metrics}"
    );

    // Both ways, stamped by the right time.
    let before = real_now_ms();
    let (s, v) = put_json(c, &dev.at("/v1/docs/pi/state"), &json!("rebased")).await;
    assert!(s < 300, "{v}");
    let stamped = stamp_ms(&v);
    assert!(
        stamped < before + 600_000,
        "stamped {stamped}, now {before}: {v}"
    );
    ingest(c, dev, "dev.temp", 0, 20).await;
    let (s, _) = put_json(c, &hub.at("/v1/docs/fleet/setpoint"), &json!(21)).await;
    assert!(s < 300);
    ingest(c, good, "good.temp", 0, 20).await;
    eventually(
        DEADLINE,
        "the rebased device and the hub to trade changes",
        || async {
            (winner_is(c, hub, "pi/state", json!("rebased")).await
                && winner_is(c, dev, "fleet/setpoint", json!(21)).await)
                .then_some(())
        },
    )
    .await;
    // The hub and the correct device converge (the rebased actor's changes included); the
    // year-ahead changes stay held back, only on the device that made them.
    converge(c, hub, good).await;
    let (_, hub_st) = get_json(c, &hub.at("/v1/status")).await;
    let (_, good_st) = get_json(c, &good.at("/v1/status")).await;
    assert!(
        hub_st["version_vector"][&new].as_u64().unwrap_or(0) >= 2,
        "{hub_st}"
    );
    assert!(hub_st["version_vector"].get(old).is_none(), "{hub_st}");
    assert!(good_st["version_vector"].get(old).is_none(), "{good_st}");
    let (_, dev_st) = get_json(c, &dev.at("/v1/status")).await;
    assert!(
        dev_st["version_vector"][old].as_u64().unwrap_or(0) >= 2,
        "{dev_st}"
    );
    assert_ne!(dev_st["digest"], hub_st["digest"]);
    // The rebased device's session (the credential now bound to the new actor) still
    // offers the year-ahead changes, and the hub still holds them back.
    let entry = eventually(
        DEADLINE,
        "the hub to hold them back from the new session",
        || async {
            let (_, peers) = get_json(c, &hub.at("/v1/sync/peers")).await;
            peers["peers"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| {
                    p["bound_actor"] == json!(new)
                        && p["changes_quarantined"].as_u64().unwrap_or(0) > 0
                })
                .cloned()
        },
    )
    .await;
    assert_eq!(entry["changes_refused"], 0, "{entry}");
    assert!(
        entry["last_quarantine"]["message"]
            .as_str()
            .unwrap()
            .contains(old),
        "{entry}"
    );
}

/// A device whose clock ran a year ahead (and said it was right) wrote then; its clock is
/// corrected and it restarts. Its store's own changes now run a year ahead of its trusted
/// clock, so it rebases at start and syncs both ways
/// ([`assert_rebased_and_syncs_both_ways`]).
#[tokio::test]
async fn a_device_stamped_a_year_ahead_rebases_at_start_and_syncs_both_ways() {
    let Some(lib) = libfaketime() else { return };
    let c = client();
    let hub = rebase_hub();
    let good = Agent::builder()
        .config(&trusting_device_config(&hub, GOOD_TOKEN))
        .start();

    // A year ahead, and sure of itself: everything it writes is held back by the hub.
    let mut ahead = Agent::builder()
        .config(&trusting_device_config(&hub, TOKEN))
        .env("LD_PRELOAD", &lib.display().to_string())
        .env("FAKETIME", "+365d")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .start();
    let keep = ahead.keep_dir().expect("a fresh temp dir");
    let old = write_ahead_until_held_back(&c, &hub, &ahead).await;
    ahead.sigterm();
    assert!(ahead.wait_exit(Duration::from_secs(30)).is_some());

    // NTP corrected the clock; the agent restarts on the same data.
    let dev = Agent::builder()
        .dir(keep.path())
        .config(&trusting_device_config(&hub, TOKEN))
        .start();
    assert_rebased_and_syncs_both_ways(&c, &hub, &good, &dev, &old).await;
    drop(keep);
}

/// Within how long a running agent notices its clock was corrected and comes back
/// rebased: the next clock check (every 30 s), a clean stop and a start.
const RESTART_DEADLINE: Duration = Duration::from_secs(120);

/// As above, but NTP corrects the clock while the agent runs (libfaketime re-reads its
/// timestamp file on every call): without anyone restarting it, the same process stops
/// cleanly, re-executes itself and rebases at its start, says so in its log and syncs
/// both ways ([`assert_rebased_and_syncs_both_ways`]). systemd is told a reload
/// (`RELOADING=1`, then the new image's `READY=1`), never `STOPPING=1`.
#[tokio::test]
async fn a_running_device_whose_clock_is_corrected_restarts_itself_rebased() {
    let Some(lib) = libfaketime() else { return };
    let c = client();
    let hub = rebase_hub();
    let good = Agent::builder()
        .config(&trusting_device_config(&hub, GOOD_TOKEN))
        .start();
    let clock_dir = tempfile::tempdir().unwrap();
    let clock_file = clock_dir.path().join("faketime");
    let set_clock = |spec: &str| {
        // Replaced whole (rename), so libfaketime never reads a half-written file.
        let tmp = clock_dir.path().join("faketime.new");
        std::fs::write(&tmp, format!("{spec}\n")).unwrap();
        std::fs::rename(&tmp, &clock_file).unwrap();
    };
    set_clock("+365d");
    let mut notes = super::systemd::Notifications::bind(&clock_dir.path().join("notify.sock"));
    let mut dev = Agent::builder()
        .config(&trusting_device_config(&hub, TOKEN))
        .env("LD_PRELOAD", &lib.display().to_string())
        .env("FAKETIME_TIMESTAMP_FILE", clock_file.to_str().unwrap())
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env(
            "NOTIFY_SOCKET",
            clock_dir.path().join("notify.sock").to_str().unwrap(),
        )
        .start();
    let pid = dev.pid();
    notes.expect(&dev, "READY=1", Duration::from_secs(10));
    let old = write_ahead_until_held_back(&c, &hub, &dev).await;

    // NTP corrects the clock under the running agent.
    set_clock("+0");
    let reloading = notes.expect(&dev, "RELOADING=1", RESTART_DEADLINE);
    assert!(
        reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC="))
            && reloading
                .lines()
                .any(|l| l == "STATUS=restarting to rebase the store's clock"),
        "{reloading:?}"
    );
    notes.expect(&dev, "READY=1", Duration::from_secs(30));
    assert!(
        !notes
            .seen()
            .iter()
            .any(|m| m.lines().any(|l| l == "STOPPING=1")),
        "{:?}",
        notes.seen()
    );
    let url = eventually(
        RESTART_DEADLINE,
        "the agent to re-execute itself and listen again",
        || {
            let url = dev.relistened_url();
            async move { url }
        },
    )
    .await;
    dev.follow(url);
    assert!(
        dev.wait_exit(Duration::ZERO).is_none(),
        "the process {pid} exited:\n{}",
        dev.stderr()
    );
    // The same PID runs the re-executed image (marked so it never restarts itself again).
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(
        environ
            .split(|b| *b == 0)
            .any(|var| var == b"KDELTA_RESTARTED_FOR_CLOCK_REBASE=1"),
        "{}",
        String::from_utf8_lossy(&environ)
    );
    let log = dev.stderr();
    assert!(
        log.contains("restarting the process to rebase its clock")
            && log.contains("re-executing the process"),
        "{log}"
    );
    assert!(log.contains("stopped cleanly"), "{log}");
    assert_rebased_and_syncs_both_ways(&c, &hub, &good, &dev, &old).await;
    // Rebased once: no second restart.
    assert_eq!(dev.stderr().matches("listening on").count(), 2);
}

/// `kdelta rekey --rebase-clock` (agent stopped), once the clock is right: the store that
/// wrote a year ahead writes as a new actor, stamped by the wall clock, with a succession
/// record naming the old one; run again, there is nothing to rebase.
#[tokio::test]
async fn rekey_rebase_clock_by_hand_gives_a_store_stamped_ahead_a_new_actor() {
    let Some(lib) = libfaketime() else { return };
    let c = client();
    let mut ahead = Agent::builder()
        .config("sources = []\ndevice_twin = false\n[clock]\ntrust = \"always\"\n")
        .env("LD_PRELOAD", &lib.display().to_string())
        .env("FAKETIME", "+365d")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .start();
    let keep = ahead.keep_dir().expect("a fresh temp dir");
    assert_wall_clock(&c, &ahead, real_now_ms() + 365 * DAY_MS).await;
    ingest(&c, &ahead, "ahead.temp", 0, 5).await;
    let (_, st) = get_json(&c, &ahead.at("/v1/status")).await;
    let old: kdelta_sync::ActorId = st["actor"].as_str().unwrap().parse().unwrap();
    ahead.sigterm();
    assert!(ahead.wait_exit(Duration::from_secs(30)).is_some());

    let data = keep.path().join("data");
    let rebase = {
        let (data, work) = (data.clone(), keep.path().to_path_buf());
        move || {
            super::harness::run_to_end(
                &[
                    "rekey",
                    "--rebase-clock",
                    "--data-dir",
                    data.to_str().unwrap(),
                ],
                &work,
                Duration::from_secs(60),
            )
        }
    };
    let (code, err) = tokio::task::spawn_blocking(rebase.clone()).await.unwrap();
    assert_eq!(code, Some(0), "{err}");
    let store = kdelta_sync::Store::open(data.join("kdelta.db"), Default::default())
        .await
        .unwrap();
    assert_ne!(store.actor(), old);
    let chain = store.successions().await.unwrap();
    assert_eq!(chain.len(), 1);
    assert_eq!((chain[0].old, chain[0].new), (old, store.actor()));
    assert!(
        store.last_hlc().ms() < real_now_ms() + 600_000,
        "the clock is seeded without the year-ahead changes: {}",
        store.last_hlc()
    );
    store.close().await;
    let (code, err) = tokio::task::spawn_blocking(rebase).await.unwrap();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("nothing to rebase"), "{err}");
}
