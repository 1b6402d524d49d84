//! Acknowledged means durable on MQTT: a real `kdelta` process ingesting QoS 1 messages with a
//! persistent session is killed with SIGKILL mid-stream and restarted; every message the
//! broker accepted must end up in the store — the ones kdelta had acknowledged (so the broker
//! counts them delivered and never sends them again) because they were committed before the
//! PUBACK, the rest because the broker redelivers them. Shared by the embedded-broker suite
//! (`main.rs`, rumqttd) and the Mosquitto interop suite.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// Messages published (each one reading). Mosquitto queues at most 1,000 messages for an
/// offline persistent session by default.
const MESSAGES: i64 = 600;
/// First reading time (unix ms); message `i` is at `T0 + i` seconds.
const T0: i64 = 1_764_000_000_000;
const DEADLINE: Duration = Duration::from_secs(90);

fn start_agent(dir: &Path, config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_kdelta"))
        .args(["start", "--config"])
        .arg(config)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        // Any other KDELTA_* variable would be read as a config key (and refused).
        .env_remove("KDELTA_URL")
        .env_remove("KDELTA_MOSQUITTO")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kdelta")
}

/// Distinct reading times of series `load` in the store, read beside the running agent (WAL
/// readers do not disturb it); empty while the store does not exist yet.
fn stored_times(dir: &Path) -> Vec<i64> {
    let db = dir.join("data").join("kdelta.db");
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return Vec::new();
    };
    let _ = conn.busy_timeout(Duration::from_secs(5));
    let sql = "SELECT DISTINCT r.ts FROM readings r JOIN series s ON s.id = r.series_id \
               WHERE s.name = 'load' ORDER BY r.ts";
    conn.prepare(sql)
        .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
        .unwrap_or_default()
}

/// A QoS 1 publisher that counts the broker's PUBACKs.
struct Publisher {
    client: AsyncClient,
    acked: tokio::sync::watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    fn connect(broker: SocketAddr) -> Publisher {
        let mut opts = MqttOptions::new(
            format!("pub-{:08x}", rand::random::<u32>()),
            broker.ip().to_string(),
            broker.port(),
        );
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_inflight(50);
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        let (tx, acked) = tokio::sync::watch::channel(0u64);
        let task = tokio::spawn(async move {
            let mut n = 0;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        n += 1;
                        let _ = tx.send(n);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        Publisher {
            client,
            acked,
            task,
        }
    }

    async fn publish(&self, topic: &str, ts: i64, value: f64) {
        let body = format!("{{\"ts\": {ts}, \"value\": {value}}}");
        self.client
            .publish(topic, QoS::AtLeastOnce, false, body)
            .await
            .expect("publish");
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The scenario against the broker at `broker`.
pub async fn kill9_during_ingest_keeps_every_delivered_message(broker: SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let device = format!("durable-{:08x}", rand::random::<u32>());
    let config = dir.path().join("kdelta.toml");
    // A long batch age: without acknowledge-after-commit, a kill would find acknowledged
    // messages waiting in memory. The agent republishes what it stores; at QoS 0, so this
    // test is about the ingest side only (rumqttd 0.20 leaves a resumed persistent session's
    // QoS 1 publishes unacknowledged, and rumqttc queues the agent's PUBACKs behind them).
    std::fs::write(
        &config,
        format!(
            "device_name = \"{device}\"\nsources = []\ndevice_twin = false\n[mqtt]\nenabled = true\n\
             url = \"mqtt://{broker}\"\nclean_session = false\ndiscovery = false\nqos = 0\n\
             ingest_batch_max_age = \"2s\"\nreconnect_backoff_max = \"300ms\"\n"
        ),
    )
    .unwrap();
    let topic = format!("kdelta/{device}/ingest/load");
    let publisher = Publisher::connect(broker);
    let mut agent = start_agent(dir.path(), &config);

    // The agent's subscription is in place once a probe message gets stored.
    let deadline = Instant::now() + DEADLINE;
    let mut probe = 0;
    while stored_times(dir.path()).is_empty() {
        assert!(Instant::now() < deadline, "the agent never stored a probe");
        publisher.publish(&topic, T0 - 1_000 - probe, -1.0).await;
        probe += 1;
        let wait = Instant::now() + Duration::from_secs(3);
        while stored_times(dir.path()).is_empty() && Instant::now() < wait {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let probes = stored_times(dir.path()).len();
    let expected_acks = probe as u64;

    // Publish everything; SIGKILL the agent once part of it is stored.
    let sender = {
        let client = publisher.client.clone();
        let topic = topic.clone();
        tokio::spawn(async move {
            for i in 0..MESSAGES {
                let body = format!("{{\"ts\": {}, \"value\": {i}}}", T0 + i * 1_000);
                client
                    .publish(&topic, QoS::AtLeastOnce, false, body)
                    .await
                    .expect("publish");
            }
        })
    };
    while stored_times(dir.path()).len() < probes + 100 {
        assert!(Instant::now() < deadline, "ingest too slow before the kill");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    agent.kill().expect("SIGKILL");
    agent.wait().expect("reap");
    let at_kill = stored_times(dir.path()).len() - probes;
    sender.await.unwrap();
    // The broker accepted every message (it holds them for the persistent session).
    let mut acked = publisher.acked.clone();
    let want = expected_acks + MESSAGES as u64;
    while *acked.borrow() < want {
        assert!(Instant::now() < deadline, "broker PUBACKs missing");
        let _ = tokio::time::timeout(Duration::from_millis(200), acked.changed()).await;
    }

    // Restart on the same data: the broker delivers the rest of the session. rumqttd 0.20
    // reads a resumed session's backlog further only when new data arrives on the topic, so a
    // heartbeat message (stamped before T0, not counted) goes out every 250 ms meanwhile;
    // Mosquitto does not need it.
    let mut agent = start_agent(dir.path(), &config);
    let want: Vec<i64> = (0..MESSAGES).map(|i| T0 + i * 1_000).collect();
    let mut heartbeat = 0;
    let mut last_heartbeat = Instant::now();
    loop {
        if last_heartbeat.elapsed() >= Duration::from_millis(250) {
            heartbeat += 1;
            publisher
                .publish(&topic, T0 - 100_000_000 - heartbeat, -2.0)
                .await;
            last_heartbeat = Instant::now();
        }
        let got: Vec<i64> = stored_times(dir.path())
            .into_iter()
            .filter(|t| *t >= T0)
            .collect();
        if got == want {
            break;
        }
        if Instant::now() > deadline {
            let missing: Vec<i64> = want
                .iter()
                .filter(|t| !got.contains(t))
                .map(|t| (t - T0) / 1_000)
                .collect();
            let _ = agent.kill();
            panic!(
                "{} of {MESSAGES} messages stored ({at_kill} at the kill); missing message numbers {:?}",
                got.len(),
                &missing[..missing.len().min(40)]
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "{at_kill} of {MESSAGES} messages stored at the kill; all {MESSAGES} after the restart"
    );
    // SAFETY: kill(2) with a pid we spawned and have not reaped.
    unsafe {
        libc::kill(agent.id() as libc::pid_t, libc::SIGTERM);
    }
    let _ = agent.wait();
}
