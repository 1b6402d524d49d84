//! Interop with a real Mosquitto, driving the real `kdelta` binary: publish/subscribe, ingest,
//! retained discovery, the last will on SIGKILL, and no delivered message lost to a SIGKILL
//! during ingest (persistent session, acknowledge after commit).
//!
//! Runs only when `KDELTA_MOSQUITTO=host:port` names a running broker (`.ci/run` starts one
//! with `scripts/ensure-mosquitto.sh`):
//! `KDELTA_MOSQUITTO=127.0.0.1:1883 cargo test -p kdelta --test mqtt_interop`.
//! Without it every test returns at once (and says so), so `cargo test` needs nothing installed.

#[path = "mqtt/durable.rs"]
mod durable;
#[path = "mqtt/support.rs"]
mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use support::Sub;

/// The broker under test, or `None` (test skipped) when `KDELTA_MOSQUITTO` is unset.
fn broker() -> Option<SocketAddr> {
    match std::env::var("KDELTA_MOSQUITTO") {
        Ok(addr) => Some(
            addr.parse()
                .expect("KDELTA_MOSQUITTO is host:port, e.g. 127.0.0.1:1883"),
        ),
        Err(_) => {
            eprintln!(
                "skipped: set KDELTA_MOSQUITTO=127.0.0.1:1883 to run the Mosquitto interop tests"
            );
            None
        }
    }
}

/// A `kdelta start --mqtt` process with its own data dir and a unique device name.
struct AgentProcess {
    child: Child,
    device: String,
    _dir: tempfile::TempDir,
}

impl AgentProcess {
    fn start(broker: SocketAddr) -> AgentProcess {
        let dir = tempfile::tempdir().unwrap();
        let device = format!("interop-{:08x}", rand::random::<u32>());
        let config = dir.path().join("kdelta.toml");
        std::fs::write(
            &config,
            format!("device_name = \"{device}\"\nsources = []\n"),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_kdelta"))
            .args(["start", "--config"])
            .arg(&config)
            .args([
                "--mqtt",
                &format!("mqtt://{broker}"),
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir.path().join("data"))
            // Any other KDELTA_* variable would be read as a config key (and refused).
            .env_remove("KDELTA_URL")
            .env_remove("KDELTA_MOSQUITTO")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kdelta");
        AgentProcess {
            child,
            device,
            _dir: dir,
        }
    }

    fn topic(&self, rest: &str) -> String {
        format!("kdelta/{}/{rest}", self.device)
    }

    fn sigterm(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deletes the retained messages a test left on the broker (Mosquitto persists them).
async fn clear_retained(sub: &Sub, topics: &[String]) {
    for t in topics {
        sub.client
            .publish(t, rumqttc::QoS::AtLeastOnce, true, Vec::new())
            .await
            .unwrap();
    }
}

async fn wait_online(broker: SocketAddr, agent: &AgentProcess) {
    let status = agent.topic("status");
    let mut sub = Sub::connect(broker, &[&status]).await;
    loop {
        if sub.next_on(&status).await.0 == b"online" {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_interop_publish_ingest_and_retained_discovery() {
    let Some(broker) = broker() else { return };
    let mut agent = AgentProcess::start(broker);
    wait_online(broker, &agent).await;

    let state = agent.topic("room.temp");
    let mut sub = Sub::connect(broker, &[&state]).await;
    sub.publish(
        &agent.topic("ingest/room.temp"),
        r#"{"ts": 1764000000000, "value": 21.5}"#,
    )
    .await;
    let v = sub.json_on(&state).await;
    assert_eq!(
        v,
        serde_json::json!({"ts": 1764000000000i64, "value": 21.5, "unit": null})
    );

    // A subscriber arriving later gets the discovery config, retained.
    let config_topic = format!("homeassistant/sensor/{}/room_temp/config", agent.device);
    let mut late = Sub::connect(broker, &[&config_topic]).await;
    let (payload, retained) = late.next_on(&config_topic).await;
    assert!(retained, "discovery configs are retained");
    let cfg: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(cfg["state_topic"], state);
    assert_eq!(
        cfg["unique_id"],
        format!("kdelta_{}_room_temp", agent.device)
    );
    assert_eq!(cfg["availability_topic"], agent.topic("status"));

    // The availability topic is retained too.
    let status = agent.topic("status");
    let mut st = Sub::connect(broker, &[&status]).await;
    let (online, retained) = st.next_on(&status).await;
    assert_eq!((online.as_slice(), retained), (&b"online"[..], true));

    agent.sigterm();
    assert_eq!(
        st.next_on(&status).await.0,
        b"offline",
        "a clean stop publishes offline"
    );
    clear_retained(&sub, &[config_topic, status]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_interop_last_will_on_sigkill() {
    let Some(broker) = broker() else { return };
    let mut agent = AgentProcess::start(broker);
    wait_online(broker, &agent).await;
    let status = agent.topic("status");
    let mut sub = Sub::connect(broker, &[&status]).await;
    assert_eq!(sub.next_on(&status).await.0, b"online");

    agent.child.kill().expect("SIGKILL"); // no DISCONNECT: the broker sends the last will
    let _ = agent.child.wait();
    let (payload, _) = sub.next_on(&status).await;
    assert_eq!(payload, b"offline", "last will after kill -9");

    // Retained: a new subscriber sees offline too.
    let mut late = Sub::connect(broker, &[&status]).await;
    let (payload, retained) = late.next_on(&status).await;
    assert_eq!((payload.as_slice(), retained), (&b"offline"[..], true));
    clear_retained(&sub, &[status]).await;
}

/// Resident set size of this process, bytes (Linux).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Fills a store with `changes` × `per_change` readings before the MQTT task starts.
async fn prefilled(changes: usize, per_change: usize) -> std::sync::Arc<tempfile::TempDir> {
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let store = kdelta_sync::Store::open(dir.path().join("kdelta.db"), Default::default())
        .await
        .unwrap();
    for c in 0..changes {
        let mut b = kdelta_sync::ReadingBatch::new();
        for i in 0..per_change {
            b.push(
                "bench.load",
                1_764_000_000_000 + (c * per_change + i) as i64,
                i as f64,
                Some("W"),
            );
        }
        store.append(b).await.unwrap();
    }
    store.close().await;
    dir
}

/// Load figures for docs/PERFORMANCE.md:
/// `KDELTA_MOSQUITTO=127.0.0.1:1883 cargo test -p kdelta --release --test mqtt_interop -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load measurement; run explicitly"]
async fn mqtt_interop_bench() {
    let Some(broker) = broker() else { return };
    // Batch topics: readings/s until the broker acknowledged everything.
    for (format, changes, per_change) in [
        (kdelta::mqtt::PublishFormat::Batch, 500, 1000),
        (kdelta::mqtt::PublishFormat::PerSeries, 50, 1000),
    ] {
        let n = changes * per_change;
        let dir = prefilled(changes, per_change).await;
        let cfg = kdelta::mqtt::MqttConfig {
            publish_format: format,
            backfill: true,
            discovery: false,
            inflight: 1000,
            ..support::config(broker)
        };
        let started = std::time::Instant::now();
        let agent = support::Agent::start_in(cfg, dir).await;
        agent
            .wait_metric(&format!("kdelta_mqtt_readings_acked_total {n}"))
            .await;
        let secs = started.elapsed().as_secs_f64();
        let messages = agent.metric("kdelta_mqtt_messages_acked_total");
        println!(
            "BENCH {format:?}: {n} readings in {secs:.2} s = {:.0} readings/s, {:.0} messages/s",
            n as f64 / secs,
            messages / secs
        );
        agent.stop().await;
    }

    // Broker down while 1,000,000 readings are stored: the outbox is a cursor, RSS stays flat.
    let cfg = support::config(
        format!("127.0.0.1:{}", support::free_port())
            .parse()
            .unwrap(),
    );
    let agent = support::Agent::start(cfg).await;
    let mut samples = Vec::new();
    for step in 0..=4 {
        if step > 0 {
            for c in 0..250 {
                agent
                    .append("bench.down", None, ((step * 250 + c) * 1000) as i64, 1000)
                    .await;
            }
        }
        samples.push((step * 250_000, rss_bytes() / (1 << 20)));
    }
    println!("BENCH broker down: RSS MiB after N stored readings: {samples:?}");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_interop_kill9_during_ingest_keeps_every_delivered_message() {
    let Some(broker) = broker() else { return };
    durable::kill9_during_ingest_keeps_every_delivered_message(broker).await;
}
