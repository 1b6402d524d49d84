//! MQTT over TLS with a client certificate, against a private Mosquitto that requires one
//! (`require_certificate true`) on a free port: an agent with `mqtt.client_cert` and
//! `mqtt.client_key` connects and its readings arrive; an agent without them is refused and
//! says so in its log. Certificates come from the TLS tests' PKI (rcgen).
//!
//! Needs the `mosquitto` binary (Debian package `mosquitto`, which `.ci/run` installs with
//! `scripts/ensure-mosquitto.sh`); without it the test says it is skipped and returns.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use super::harness::{Agent, eventually};
use super::metrics_text;
use super::sync::ingest;
use super::tls::Pki;

const DEADLINE: Duration = Duration::from_secs(30);

/// The Mosquitto binary, if installed.
fn mosquitto_bin() -> Option<PathBuf> {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("mosquitto"));
    candidates.into_iter().find(|p| p.is_file())
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private Mosquitto: `tls_port` requires a client certificate signed by the test CA,
/// `plain_port` is open (the test's own subscriber).
struct Broker {
    child: Child,
    tls_port: u16,
    plain_port: u16,
    log: PathBuf,
}

impl Broker {
    fn start(bin: &Path, pki: &Pki) -> Broker {
        let dir = pki.dir.path();
        // Mosquitto started as root drops to its own user: let it read the test's files.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        for f in ["ca.pem", "server.pem", "server-key.pem"] {
            std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let (tls_port, plain_port) = (free_port(), free_port());
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "allow_anonymous true\npersistence false\n\
                 listener {tls_port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n\
                 require_certificate true\n\
                 listener {plain_port} 127.0.0.1\n",
                ca = dir.join("ca.pem").display(),
                cert = dir.join("server.pem").display(),
                key = dir.join("server-key.pem").display(),
            ),
        )
        .unwrap();
        let log = dir.join("mosquitto.log");
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("mosquitto.err")).unwrap(),
            ))
            .spawn()
            .expect("start mosquitto");
        Broker {
            child,
            tls_port,
            plain_port,
            log,
        }
    }

    fn log(&self) -> String {
        let err = self.log.with_file_name("mosquitto.err");
        format!(
            "{}{}",
            std::fs::read_to_string(&self.log).unwrap_or_default(),
            std::fs::read_to_string(err).unwrap_or_default()
        )
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An agent publishing to the broker's TLS listener; `with_cert` adds the client certificate.
fn agent(pki: &Pki, broker: &Broker, device: &str, with_cert: bool) -> Agent {
    let cert = if with_cert {
        format!(
            "client_cert = {}\nclient_key = {}\n",
            pki.path("client.pem"),
            pki.path("client-key.pem")
        )
    } else {
        String::new()
    };
    Agent::builder()
        .config(&format!(
            "device_name = \"{device}\"\nsources = []\n[mqtt]\nenabled = true\n\
             url = \"mqtts://127.0.0.1:{port}\"\nca_file = {ca}\ndiscovery = false\n\
             reconnect_backoff_max = \"1s\"\n{cert}",
            port = broker.tls_port,
            ca = pki.path("ca.pem"),
        ))
        .start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_client_certificate_is_presented_to_a_broker_that_requires_one() {
    let Some(bin) = mosquitto_bin() else {
        eprintln!("skipped: no mosquitto binary (apt-get install mosquitto)");
        return;
    };
    let pki = Pki::new();
    let broker = Broker::start(&bin, &pki);
    eventually(DEADLINE, "the private Mosquitto to listen", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", broker.plain_port))
            .await
            .ok()
            .map(drop)
    })
    .await;

    // The test's subscriber, on the plain listener.
    let mut opts = MqttOptions::new("mqtt-tls-test", "127.0.0.1", broker.plain_port);
    opts.set_keep_alive(Duration::from_secs(30));
    let (sub, mut events) = AsyncClient::new(opts, 64);
    sub.subscribe("kdelta/#", QoS::AtLeastOnce).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, Vec<u8>)>(1024);
    let pump = tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send((p.topic, p.payload.to_vec())).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });

    let with_cert = agent(&pki, &broker, "tls-shed", true);
    let without = agent(&pki, &broker, "tls-nocert", false);
    let c = super::client();
    ingest(&c, &with_cert, "room.temp", 0, 3).await;
    ingest(&c, &without, "room.temp", 0, 3).await;

    // The agent with a certificate comes online and its readings arrive.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut online = false;
    let mut readings = 0;
    while !(online && readings == 3) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Ok(Some((topic, payload))) = tokio::time::timeout(left, rx.recv()).await else {
            panic!(
                "online = {online}, {readings} of 3 readings from the agent with a certificate\n\
                 agent log:\n{}\nbroker log:\n{}",
                with_cert.stderr(),
                broker.log()
            );
        };
        assert!(
            !topic.starts_with("kdelta/tls-nocert/") || payload == b"offline",
            "the agent without a certificate got through: {topic}"
        );
        match topic.as_str() {
            "kdelta/tls-shed/status" => online |= payload == b"online",
            "kdelta/tls-shed/room.temp" => readings += 1,
            _ => {}
        }
    }

    // The agent without one is refused by the broker, and its log says why.
    eventually(DEADLINE, "the refused connection in the log", || async {
        let log = without.stderr();
        log.lines()
            .any(|l| l.contains("MQTT broker") && l.contains("TLS: the server refused the TLS handshake (a client certificate may be missing"))
            .then_some(())
    })
    .await;
    let metrics = metrics_text(&c, &without).await;
    assert!(
        metrics.contains("kdelta_mqtt_connected 0"),
        "the agent without a certificate is not connected:\n{metrics}"
    );
    pump.abort();
}
