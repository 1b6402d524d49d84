//! Harness of the MQTT tests: an embedded rumqttd broker on a free port, a link cutter that
//! simulates broker outages on a fixed port, a subscriber client that collects messages, and
//! an in-process agent (a store in a temp dir plus `kdelta::mqtt::run`). Every wait polls with
//! a deadline; nothing sleeps and hopes.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kdelta::metrics::Metrics;
use kdelta::mqtt::MqttConfig;
use kdelta::state::{Agent as AgentHandle, AgentInner};
use kdelta_sync::{Store, StoreConfig};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// How long any single expectation may take.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("local addr").port()
}

/// An embedded rumqttd broker (MQTT 3.1.1) on 127.0.0.1. It runs on its own threads until the
/// test process ends (rumqttd has no stop); outages are simulated with [`Cutter`].
pub struct Broker {
    pub addr: SocketAddr,
}

impl Broker {
    pub async fn start() -> Broker {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let connections = rumqttd::ConnectionSettings {
            connection_timeout_ms: 5_000,
            max_payload_size: 4 << 20,
            max_inflight_count: 500,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        };
        let server = rumqttd::ServerSettings {
            name: "v4".into(),
            listen: addr,
            tls: None,
            next_connection_delay_ms: 1,
            connections,
        };
        let config = rumqttd::Config {
            id: 0,
            router: rumqttd::RouterConfig {
                max_connections: 64,
                max_outgoing_packet_count: 200,
                max_segment_size: 64 << 20,
                max_segment_count: 10,
                custom_segment: None,
                initialized_filters: None,
                shared_subscriptions_strategy: Default::default(),
            },
            v4: Some(HashMap::from([("1".to_string(), server)])),
            ..Default::default()
        };
        std::thread::spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            let _ = broker.start();
        });
        wait_for_port(addr).await;
        Broker { addr }
    }
}

/// Waits until something accepts connections on `addr`.
pub async fn wait_for_port(addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing listens on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TCP forwarder on a fixed port in front of a broker. [`Cutter::cut`] closes every
/// connection and the listening socket (the agent sees the broker vanish); [`Cutter::restore`]
/// listens again on the same port.
pub struct Cutter {
    pub addr: SocketAddr,
    target: SocketAddr,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Cutter {
    pub async fn start(target: SocketAddr) -> Cutter {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut c = Cutter {
            addr,
            target,
            stop: CancellationToken::new(),
            task: None,
        };
        c.restore().await;
        c
    }

    pub async fn restore(&mut self) {
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("re-bind the cutter port");
        let stop = CancellationToken::new();
        self.stop = stop.clone();
        let target = self.target;
        self.task = Some(tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    accepted = listener.accept() => {
                        let Ok((mut inbound, _)) = accepted else { continue };
                        conns.spawn(async move {
                            if let Ok(mut outbound) = TcpStream::connect(target).await {
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            }
                        });
                    }
                }
            }
            conns.shutdown().await;
        }));
    }

    pub async fn cut(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// A plain MQTT client that subscribes and collects what arrives.
pub struct Sub {
    pub client: AsyncClient,
    rx: mpsc::Receiver<(String, Vec<u8>, bool)>,
    task: JoinHandle<()>,
}

impl Sub {
    pub async fn connect(addr: SocketAddr, filters: &[&str]) -> Sub {
        let mut opts = MqttOptions::new(
            format!("sub-{}", rand::random::<u32>()),
            addr.ip().to_string(),
            addr.port(),
        );
        opts.set_max_packet_size(8 << 20, 8 << 20);
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        let (tx, rx) = mpsc::channel(100_000);
        let (ready_tx, mut ready_rx) = mpsc::channel(4);
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx
                            .send((p.topic, p.payload.to_vec(), p.retain))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.try_send(());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        for f in filters {
            client
                .subscribe(*f, QoS::AtLeastOnce)
                .await
                .expect("subscribe");
        }
        for _ in filters {
            tokio::time::timeout(DEADLINE, ready_rx.recv())
                .await
                .expect("SUBACK in time");
        }
        Sub { client, rx, task }
    }

    /// The next message, or a panic naming `what` at the deadline.
    pub async fn next(&mut self, what: &str) -> (String, Vec<u8>, bool) {
        match tokio::time::timeout(DEADLINE, self.rx.recv()).await {
            Ok(Some(m)) => m,
            _ => panic!("no MQTT message in time: waiting for {what}"),
        }
    }

    /// The next message on `topic` (others are skipped).
    pub async fn next_on(&mut self, topic: &str) -> (Vec<u8>, bool) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some((t, p, r))) if t == topic => return (p, r),
                Ok(Some(_)) => {}
                _ => panic!("no MQTT message on {topic} in time"),
            }
        }
    }

    /// The next JSON message on `topic`.
    pub async fn json_on(&mut self, topic: &str) -> serde_json::Value {
        let (p, _) = self.next_on(topic).await;
        serde_json::from_slice(&p)
            .unwrap_or_else(|e| panic!("{topic}: not JSON ({e}): {}", String::from_utf8_lossy(&p)))
    }

    /// Publishes (QoS 1).
    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish");
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A store plus the MQTT task, in process.
pub struct Agent {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// The handle the MQTT task runs with (its `mqtt_ingest` row, the clock).
    pub deps: AgentHandle,
    pub dir: Arc<tempfile::TempDir>,
    cancel: CancellationToken,
    task: Option<JoinHandle<Result<(), kdelta::mqtt::MqttError>>>,
}

/// A config for a broker at `addr`, quick to reconnect.
pub fn config(addr: SocketAddr) -> MqttConfig {
    MqttConfig {
        enabled: true,
        url: format!("mqtt://{addr}"),
        reconnect_backoff_max: Duration::from_millis(300),
        ..MqttConfig::default()
    }
}

impl Agent {
    pub async fn start(cfg: MqttConfig) -> Agent {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        Self::start_in(cfg, dir).await
    }

    /// Starts on an existing data directory (a restart).
    pub async fn start_in(cfg: MqttConfig, dir: Arc<tempfile::TempDir>) -> Agent {
        // `KDELTA_TEST_LOG=debug` shows the agent's logs.
        if let Ok(text) = std::env::var("KDELTA_TEST_LOG")
            && let Ok(filter) = kdelta::logging::parse_filter(&text)
        {
            use tracing_subscriber::layer::SubscriberExt;
            use tracing_subscriber::util::SubscriberInitExt;
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(tracing_subscriber::fmt::layer().with_test_writer())
                .try_init();
        }
        let store = Store::open(dir.path().join("kdelta.db"), StoreConfig::default())
            .await
            .expect("open store");
        let metrics = Arc::new(Metrics::new());
        let cancel = CancellationToken::new();
        let deps = AgentHandle::new(AgentInner {
            backend: kdelta::backend::Backend::Sqlite(store.clone()),
            metrics: metrics.clone(),
            started: std::time::Instant::now(),
            data_dir: dir.path().to_path_buf(),
            device: "testpi".into(),
            sources: Default::default(),
            mqtt_ingest: Default::default(),
            ready: Default::default(),
            max_body_bytes: 1 << 20,
            shutdown: cancel.clone(),
            peers: Default::default(),
            guard: Default::default(),
            clock: Some(kdelta::clock::ClockMonitor::new(
                &Default::default(),
                store.time_reference(),
            )),
            retention: Default::default(),
        });
        let task = tokio::spawn(kdelta::mqtt::run(cfg, deps.clone(), cancel.clone()));
        Agent {
            store,
            metrics,
            deps,
            dir,
            cancel,
            task: Some(task),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Stops the MQTT task (clean: `offline`, cursor written) and closes the store.
    pub async fn stop(mut self) -> Arc<tempfile::TempDir> {
        self.cancel.cancel();
        if let Some(t) = self.task.take() {
            let r = tokio::time::timeout(DEADLINE, t)
                .await
                .expect("MQTT task stops in time");
            r.expect("task not panicked")
                .expect("task ends without error");
        }
        self.store.close().await;
        self.dir.clone()
    }

    /// Waits until the agent announced itself `online` on a broker at `addr`: its
    /// subscriptions are in place then (the broker handles SUBSCRIBE before the later PUBLISH).
    pub async fn wait_online(&self, addr: SocketAddr) {
        let mut sub = Sub::connect(addr, &["kdelta/testpi/status"]).await;
        loop {
            let (p, _) = sub.next_on("kdelta/testpi/status").await;
            if p == b"online" {
                return;
            }
        }
    }

    /// Waits until the metrics text has the line `needle` (`name{labels} value`).
    pub async fn wait_metric(&self, needle: &str) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let text = self.metrics.encode();
            if text.lines().any(|l| l == needle) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "metric {needle:?} never appeared in\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The value of a metric line starting with `name` (0 when absent).
    pub fn metric(&self, name: &str) -> f64 {
        self.metrics
            .encode()
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }

    /// Appends `n` readings of `series` (one change), timestamps `ts0..ts0+n`.
    pub async fn append(&self, series: &str, unit: Option<&str>, ts0: i64, n: usize) {
        let mut b = kdelta_sync::ReadingBatch::new();
        for i in 0..n {
            b.push(series, ts0 + i as i64, i as f64, unit);
        }
        self.store.append(b).await.expect("append");
    }
}
