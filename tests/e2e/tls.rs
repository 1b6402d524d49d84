//! TLS between real agent processes: a hub serving HTTPS (`[api.tls]`), devices syncing to it
//! over `wss://` with a configured CA, refusal of peers that do not trust the hub, mutual TLS
//! with `[[sync.accept_certs]]`, `kdelta sync now` against a long backoff, and the per-peer
//! Prometheus families. Certificates are made here with rcgen (ring): a CA, a server
//! certificate for 127.0.0.1/localhost, client certificates, and a second, untrusted CA.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::Value;

use super::harness::{Agent, BIN, eventually};
use super::sync::{ingest, status};
use super::{client, get_json};

const TOKEN: &str = "tls-hub-token-0123456789";
const DEADLINE: Duration = Duration::from_secs(30);

/// A certificate authority that signs test certificates.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            issuer: Issuer::new(params, key),
            pem: cert.pem(),
        }
    }

    /// A leaf certificate and key (PEM) with `names` as subject alternative names.
    fn leaf(&self, cn: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        self.leaf_with(cn, names, usage, |_| {})
    }

    /// [`Ca::leaf`] with `edit` applied to the parameters (validity, …).
    fn leaf_with(
        &self,
        cn: &str,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
        edit: impl FnOnce(&mut CertificateParams),
    ) -> Leaf {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        edit(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let digest = ring::digest::digest(&ring::digest::SHA256, cert.der());
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
            fingerprint: hex::encode(digest.as_ref()),
        }
    }
}

struct Leaf {
    cert: String,
    key: String,
    fingerprint: String,
}

/// Certificate files on disk.
pub(crate) struct Pki {
    pub(crate) dir: tempfile::TempDir,
    /// The CA pem, as text (for the test's own HTTPS client).
    ca_pem: String,
    /// SHA-256 fingerprint of `client.pem`.
    pub(crate) client_fingerprint: String,
}

impl Pki {
    pub(crate) fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("kdelta test CA");
        let rogue = Ca::new("kdelta rogue CA");
        let server = ca.leaf(
            "hub",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let rogue_server = rogue.leaf(
            "hub",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        // Valid, but not for 127.0.0.1; and one for the right names that has expired.
        let wrong_host = ca.leaf("hub", &["hub.invalid"], ExtendedKeyUsagePurpose::ServerAuth);
        let expired = ca.leaf_with(
            "hub",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
            |p| {
                p.not_before = rcgen::date_time_ymd(2020, 1, 1);
                p.not_after = rcgen::date_time_ymd(2021, 1, 1);
            },
        );
        let client = ca.leaf("device-1", &[], ExtendedKeyUsagePurpose::ClientAuth);
        let unlisted = ca.leaf("device-2", &[], ExtendedKeyUsagePurpose::ClientAuth);
        let rogue_client = rogue.leaf("device-1", &[], ExtendedKeyUsagePurpose::ClientAuth);
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("ca.pem", &ca.pem);
        write("rogue-ca.pem", &rogue.pem);
        for (name, leaf) in [
            ("server", &server),
            ("rogue-server", &rogue_server),
            ("wrong-host", &wrong_host),
            ("expired", &expired),
            ("client", &client),
            ("unlisted", &unlisted),
            ("rogue-client", &rogue_client),
        ] {
            write(&format!("{name}.pem"), &leaf.cert);
            write(&format!("{name}-key.pem"), &leaf.key);
        }
        Pki {
            dir,
            ca_pem: ca.pem,
            client_fingerprint: client.fingerprint,
        }
    }

    /// The path of `name` as a TOML string literal.
    pub(crate) fn path(&self, name: &str) -> String {
        let p: PathBuf = self.dir.path().join(name);
        format!("{:?}", p.display().to_string())
    }

    /// An HTTPS client that trusts the test CA and presents the certificate `name`
    /// (`client`, `unlisted`, `rogue-client`).
    pub(crate) fn client_as(&self, name: &str) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap();
        let read = |f: String| std::fs::read(self.dir.path().join(f)).unwrap();
        let mut pem = read(format!("{name}.pem"));
        pem.extend(read(format!("{name}-key.pem")));
        reqwest::Client::builder()
            .add_root_certificate(ca)
            .identity(reqwest::Identity::from_pem(&pem).unwrap())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    }

    /// An HTTPS client that trusts the test CA.
    pub(crate) fn client(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap();
        reqwest::Client::builder()
            .add_root_certificate(ca)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    }
}

/// An HTTPS client that accepts any certificate: only for reading the status of hubs whose
/// certificate is deliberately wrong.
fn https_insecure() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// `[api.tls]` with the certificate `server` (`server.pem` is the good one); with `mtls`,
/// client certificates from the test CA are verified and `client.pem` is accepted for sync
/// as `device-cert`.
fn hub_config(pki: &Pki, server: &str, mtls: bool) -> String {
    let mut c = format!(
        "sources = []\ndevice_twin = false\n[api.tls]\ncert = {}\nkey = {}\n",
        pki.path(&format!("{server}.pem")),
        pki.path(&format!("{server}-key.pem"))
    );
    if mtls {
        c.push_str(&format!("client_ca = {}\n", pki.path("ca.pem")));
    }
    c.push_str(&format!(
        "[sync]\naccept_tokens = [{{ name = \"device\", token = \"{TOKEN}\" }}]\n"
    ));
    if mtls {
        c.push_str(&format!(
            "[[sync.accept_certs]]\nname = \"device-cert\"\nfingerprint = \"{}\"\n",
            pki.client_fingerprint
        ));
    }
    c
}

fn hub(pki: &Pki, mtls: bool) -> Agent {
    hub_with(pki, "server", mtls)
}

fn hub_with(pki: &Pki, server: &str, mtls: bool) -> Agent {
    let hub = Agent::builder()
        .config(&hub_config(pki, server, mtls))
        .start();
    assert!(hub.url().starts_with("https://"), "{}", hub.url());
    hub
}

/// One `[[sync.peers]]` entry named `name`; `extra` adds lines (token, ca, client_cert…).
fn peer_entry(name: &str, url: &str, extra: &[String]) -> String {
    let mut c = format!("[[sync.peers]]\nname = \"{name}\"\nurl = \"{url}\"\n");
    for line in extra {
        c.push_str(line);
        c.push('\n');
    }
    c
}

fn device(entries: &[String]) -> Agent {
    Agent::builder()
        .config(&format!("sources = []\n{}", entries.concat()))
        .start()
}

/// Waits until `a` (reached with `ca`) and `b` (with `cb`) hold the same data.
async fn converge(ca: &reqwest::Client, a: &Agent, cb: &reqwest::Client, b: &Agent) {
    eventually(DEADLINE, "both agents to hold the same data", || async {
        let sa = status(ca, a).await;
        let sb = status(cb, b).await;
        (sa == sb).then_some(())
    })
    .await;
}

/// The outbound peer `name` in `/v1/sync/peers` (listed once the agent has started its peer
/// tasks, just after it logs its address).
async fn outbound(c: &reqwest::Client, agent: &Agent, name: &str) -> Option<Value> {
    let (s, v) = get_json(c, &agent.at("/v1/sync/peers")).await;
    assert_eq!(s, 200, "{v}");
    v["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name && p["direction"] == "outbound")
        .cloned()
}

/// Waits until the outbound peer `name` reports an error with `code`; returns it.
async fn peer_error(c: &reqwest::Client, agent: &Agent, name: &str, code: &str) -> Value {
    eventually(
        DEADLINE,
        &format!("peer {name} to fail with {code}"),
        || async {
            let e = outbound(c, agent, name).await?["last_error"].clone();
            (e["code"] == code).then_some(e)
        },
    )
    .await
}

/// The value of the sample `name{labels}` in `/metrics` (0 when absent).
async fn metric(c: &reqwest::Client, agent: &Agent, sample: &str) -> f64 {
    let text = c
        .get(agent.at("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn a_device_syncs_to_a_tls_hub_over_wss_and_metrics_follow() {
    let pki = Pki::new();
    let https = pki.client();
    let http = client();
    let hub = hub(&pki, false);
    let dev = device(&[peer_entry(
        "hub",
        hub.url(),
        &[
            format!("token = \"{TOKEN}\""),
            format!("ca = {}", pki.path("ca.pem")),
        ],
    )]);
    ingest(&http, &dev, "dev.temp", 0, 400).await;
    ingest(&https, &hub, "hub.temp", 0, 100).await;
    converge(&http, &dev, &https, &hub).await;

    let p = outbound(&http, &dev, "hub")
        .await
        .expect("the peer is listed");
    assert!(p["url"].as_str().unwrap().starts_with("wss://"), "{p}");
    assert_eq!(p["connected"], true, "{p}");

    // Per-peer metrics on both ends, once the acks have arrived.
    let labels = "{peer=\"hub\",direction=\"outbound\"}";
    eventually(DEADLINE, "the device's lag gauges to reach 0", || async {
        let connected = metric(&http, &dev, &format!("kdelta_sync_peer_connected{labels}")).await;
        let to = metric(
            &http,
            &dev,
            &format!("kdelta_sync_peer_lag_to_peer_changes{labels}"),
        )
        .await;
        let from = metric(
            &http,
            &dev,
            &format!("kdelta_sync_peer_lag_from_peer_changes{labels}"),
        )
        .await;
        (connected == 1.0 && to == 0.0 && from == 0.0).then_some(())
    })
    .await;
    let out = metric(
        &http,
        &dev,
        &format!("kdelta_sync_peer_bytes_out_total{labels}"),
    )
    .await;
    let hub_in = metric(
        &https,
        &hub,
        "kdelta_sync_peer_bytes_in_total{peer=\"device\",direction=\"inbound\"}",
    )
    .await;
    assert!(out > 1000.0, "bytes out {out}");
    assert!(hub_in > 1000.0, "hub bytes in {hub_in}");
    let inbound_up = metric(
        &https,
        &hub,
        "kdelta_sync_peer_connected{peer=\"device\",direction=\"inbound\"}",
    )
    .await;
    assert_eq!(inbound_up, 1.0);
    // A write made now reaches the hub over the same link.
    ingest(&http, &dev, "dev.temp2", 0, 10).await;
    converge(&http, &dev, &https, &hub).await;

    // The CLI reaches the HTTPS hub with KDELTA_CA, and refuses it without (not trusted).
    let ca = pki.dir.path().join("ca.pem");
    let dir = pki.dir.path().to_path_buf();
    let url = hub.url().to_owned();
    let (trusted, untrusted) = tokio::task::spawn_blocking(move || {
        (
            run_env(&["peers", "--url", &url], &dir, &[("KDELTA_CA", &ca)]),
            run(&["peers", "--url", &url], &dir),
        )
    })
    .await
    .unwrap();
    assert_eq!(trusted.0, Some(0), "{}", trusted.1);
    assert!(trusted.1.contains("device"), "{}", trusted.1);
    assert_eq!(untrusted.0, Some(1), "{}", untrusted.1);
    // Not trusted by the system roots, or no system roots at all: both say what to set.
    assert!(untrusted.1.contains("KDELTA_CA"), "{}", untrusted.1);
}

#[tokio::test]
async fn a_peer_that_does_not_trust_the_hub_is_refused_and_the_hub_is_untouched() {
    let pki = Pki::new();
    let https = pki.client();
    let http = client();
    let hub = hub(&pki, false);
    let before = status(&https, &hub).await;
    // Trusts another CA only.
    let dev = device(&[peer_entry(
        "hub",
        hub.url(),
        &[
            format!("token = \"{TOKEN}\""),
            format!("ca = {}", pki.path("rogue-ca.pem")),
        ],
    )]);
    ingest(&http, &dev, "dev.temp", 0, 50).await;
    let err = peer_error(&http, &dev, "hub", "tls").await;
    let message = err["message"].as_str().unwrap();
    assert!(message.contains("not trusted"), "{err}");
    assert!(
        dev.stderr().contains("not trusted"),
        "not logged:\n{}",
        dev.stderr()
    );
    let failed = metric(
        &http,
        &dev,
        "kdelta_sync_sessions_failed_total{peer=\"hub\",direction=\"outbound\"}",
    )
    .await;
    assert!(failed >= 1.0, "{failed}");
    assert_eq!(
        status(&https, &hub).await,
        before,
        "the hub's store changed"
    );
    // The hub saw a failed handshake and counted it.
    eventually(
        DEADLINE,
        "the hub to count the failed handshake",
        || async {
            let n = metric(
                &https,
                &hub,
                "kdelta_tls_handshakes_failed_total{reason=\"error\"}",
            )
            .await;
            (n >= 1.0).then_some(())
        },
    )
    .await;

    // A certificate for another host name, and an expired one, are named as such.
    for (server, why) in [
        ("wrong-host", "not valid for the host name"),
        ("expired", "has expired"),
    ] {
        let bad_hub = hub_with(&pki, server, false);
        let bad_before = status(&https_insecure(), &bad_hub).await;
        let dev = device(&[peer_entry(
            "hub",
            bad_hub.url(),
            &[
                format!("token = \"{TOKEN}\""),
                format!("ca = {}", pki.path("ca.pem")),
            ],
        )]);
        ingest(&http, &dev, "dev.temp", 0, 10).await;
        let err = peer_error(&http, &dev, "hub", "tls").await;
        assert!(err["message"].as_str().unwrap().contains(why), "{err}");
        assert_eq!(status(&https_insecure(), &bad_hub).await, bad_before);
    }

    // A plain ws:// client cannot talk to the TLS port either.
    let plain = hub.url().replace("https://", "http://");
    assert!(http.get(format!("{plain}/healthz")).send().await.is_err());
    assert_eq!(
        status(&https, &hub).await,
        before,
        "the hub's store changed"
    );
}

#[tokio::test]
async fn mutual_tls_accepts_a_listed_client_certificate_without_a_token() {
    let pki = Pki::new();
    let https = pki.client();
    let http = client();
    let hub = hub(&pki, true);
    let before = status(&https, &hub).await;
    let with_cert = |cert: &str| {
        vec![
            format!("ca = {}", pki.path("ca.pem")),
            format!("client_cert = {}", pki.path(&format!("{cert}.pem"))),
            format!("client_key = {}", pki.path(&format!("{cert}-key.pem"))),
        ]
    };
    // A certificate from another CA fails the handshake; a certificate from the right CA
    // that is not listed in accept_certs is refused with 401.
    let rogue = device(&[peer_entry("hub", hub.url(), &with_cert("rogue-client"))]);
    let unlisted = device(&[peer_entry("hub", hub.url(), &with_cert("unlisted"))]);
    ingest(&http, &rogue, "rogue.temp", 0, 20).await;
    ingest(&http, &unlisted, "unlisted.temp", 0, 20).await;
    let e = peer_error(&http, &rogue, "hub", "refused").await;
    assert!(e["message"].as_str().unwrap().contains("TLS"), "{e}");
    let e = peer_error(&http, &unlisted, "hub", "refused").await;
    assert!(e["message"].as_str().unwrap().contains("401"), "{e}");
    eventually(DEADLINE, "the hub to count both refusals", || async {
        let tls = metric(
            &https,
            &hub,
            "kdelta_tls_handshakes_failed_total{reason=\"client_certificate\"}",
        )
        .await;
        let refused = metric(
            &https,
            &hub,
            "kdelta_sync_refused_total{peer=\"(certificate not allowed)\",direction=\"inbound\"}",
        )
        .await;
        (tls >= 1.0 && refused >= 1.0).then_some(())
    })
    .await;
    let refused = metric(
        &http,
        &unlisted,
        "kdelta_sync_refused_total{peer=\"hub\",direction=\"outbound\"}",
    )
    .await;
    assert!(refused >= 1.0, "{refused}");
    assert_eq!(
        status(&https, &hub).await,
        before,
        "the hub's store changed"
    );

    // The listed certificate needs no token.
    let dev = device(&[peer_entry("hub", hub.url(), &with_cert("client"))]);
    ingest(&http, &dev, "dev.temp", 0, 300).await;
    converge(&http, &dev, &https, &hub).await;
    let (_, peers) = get_json(&https, &hub.at("/v1/sync/peers")).await;
    assert!(
        peers["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "device-cert" && p["connected"] == true),
        "{peers}"
    );

    // Tokens keep working on the same port without a client certificate: the bearer check
    // passes (the answer is about the missing WebSocket upgrade); without one it is 401.
    let r = https
        .get(hub.at("/v1/sync"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = https.get(hub.at("/v1/sync")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let (_, series) = get_json(&https, &hub.at("/v1/series")).await;
    let text = series.to_string();
    assert!(
        !text.contains("rogue.temp") && !text.contains("unlisted.temp"),
        "{series}"
    );
}

/// A TCP forwarder on 127.0.0.1: closes every connection while `open` is false, forwards
/// to `to` once it is true.
struct Gate {
    addr: std::net::SocketAddr,
    open: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Gate {
    async fn new(to: std::net::SocketAddr) -> Gate {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(false));
        let flag = open.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Gate { addr, open, task }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs `kdelta ARGS` with `env`; returns exit code and stdout + stderr.
fn run_env(args: &[&str], dir: &Path, env: &[(&str, &Path)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("KDELTA_URL")
        .env_remove("KDELTA_CA")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run kdelta");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// Runs `kdelta ARGS`; returns exit code and stdout + stderr.
fn run(args: &[&str], dir: &Path) -> (Option<i32>, String) {
    run_env(args, dir, &[])
}

#[tokio::test]
async fn sync_now_ends_a_long_backoff_and_reports_each_peer() {
    let pki = Pki::new();
    let https = pki.client();
    let http = client();
    let hub = hub(&pki, false);
    let hub_addr: std::net::SocketAddr = hub.url().trim_start_matches("https://").parse().unwrap();
    let gate = Gate::new(hub_addr).await;
    // A port where nothing listens: every attempt fails at once.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dev = device(&[
        peer_entry(
            "hub",
            &format!("https://{}", gate.addr),
            &[
                format!("token = \"{TOKEN}\""),
                format!("ca = {}", pki.path("ca.pem")),
            ],
        ),
        peer_entry(
            "dead",
            &format!("ws://{dead}"),
            &[format!("token = \"{TOKEN}\"")],
        ),
    ]);
    ingest(&http, &dev, "dev.temp", 0, 200).await;
    // Five failed attempts: the wait before the next one is now 8–16 s (the backoff doubles
    // from 1 s; each wait is drawn from its upper half).
    let failures = "kdelta_sync_sessions_failed_total{peer=\"hub\",direction=\"outbound\"}";
    eventually(Duration::from_secs(40), "five failed attempts", || async {
        (metric(&http, &dev, failures).await >= 5.0).then_some(())
    })
    .await;
    gate.open.store(true, Ordering::SeqCst);
    let dir = dev.dir().to_path_buf();
    let url = dev.url().to_owned();

    let started = Instant::now();
    let (code, out) = tokio::task::spawn_blocking({
        let (dir, url) = (dir.clone(), url.clone());
        move || {
            run(
                &[
                    "sync",
                    "now",
                    "--url",
                    &url,
                    "--peer",
                    "hub",
                    "--timeout",
                    "20s",
                ],
                &dir,
            )
        }
    })
    .await
    .unwrap();
    let took = started.elapsed();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("hub") && out.contains("synced"), "{out}");
    // Well inside the 8 s the backoff still had to run, and because of the wake.
    assert!(took < Duration::from_secs(4), "sync now took {took:?}");
    assert!(
        dev.stderr().contains("woken for sync now"),
        "{}",
        dev.stderr()
    );
    assert_eq!(status(&http, &dev).await, status(&https, &hub).await);

    // All peers: the dead one fails, so the exit code is 1 and its error is shown.
    let (code, out) = tokio::task::spawn_blocking({
        let (dir, url) = (dir.clone(), url.clone());
        move || run(&["sync", "now", "--url", &url, "--timeout", "20s"], &dir)
    })
    .await
    .unwrap();
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("dead") && out.contains("failed"), "{out}");
    assert!(out.contains("1 of 2 sync peers did not sync"), "{out}");

    // An unknown peer is an error naming it.
    let (code, out) = tokio::task::spawn_blocking(move || {
        run(&["sync", "now", "--url", &url, "--peer", "nope"], &dir)
    })
    .await
    .unwrap();
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("unknown_peer") && out.contains("nope"),
        "{out}"
    );
}
