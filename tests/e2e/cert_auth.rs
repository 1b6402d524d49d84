//! Client certificates as API credentials against the real binary (issue #14, reopened): a
//! certificate removed from `[[sync.accept_certs]]` loses its API access at the next SIGHUP;
//! with `require_client_cert` and no principal for a certificate the API is closed to it,
//! never open; TLS handshakes with a foreign-CA certificate count against their address in
//! the failed-auth throttle and are logged once, not once per try.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde_json::Value;

use super::harness::{Agent, eventually};
use super::reload::reload;
use super::tls::Pki;

const READ: &str = "reader-token-0123456789abcdef";
const DEADLINE: Duration = Duration::from_secs(30);

/// `[api.tls]` with the test CA for client certificates; `extra_tls` goes into `[api.tls]`,
/// `rest` after it.
fn mtls_config(pki: &Pki, api: &str, extra_tls: &str, rest: &str) -> String {
    format!(
        "sources = []\ndevice_twin = false\n[api]\n{api}\n[api.tls]\ncert = {}\nkey = {}\nclient_ca = {}\n{extra_tls}\n{rest}",
        pki.path("server.pem"),
        pki.path("server-key.pem"),
        pki.path("ca.pem"),
    )
}

async fn answer(r: reqwest::RequestBuilder) -> (u16, Value) {
    let r = r.send().await.expect("request");
    let status = r.status().as_u16();
    let body = r.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_certificate_removed_by_reload_loses_its_api_access() {
    let pki = Pki::new();
    let api =
        format!("tokens = [{{ name = \"reader\", token = \"{READ}\", scopes = [\"read\"] }}]");
    let listed = format!(
        "[[sync.accept_certs]]\nname = \"ops-laptop\"\nfingerprint = \"{}\"\nscopes = [\"read\"]\n",
        pki.client_fingerprint
    );
    let agent = Agent::builder()
        .config(&mtls_config(&pki, &api, "", &listed))
        .start();
    let laptop = pki.client_as("client");
    let (status, v) = answer(laptop.get(agent.at("/v1/status"))).await;
    assert_eq!(status, 200, "{v}");

    // The entry goes; the token stays (so the API is not open on loopback).
    reload(&agent, &mtls_config(&pki, &api, "", "")).await;
    assert!(
        agent
            .stderr()
            .contains("reload done: reloaded sync, api credentials"),
        "{}",
        agent.stderr()
    );
    // Same client, same (kept-alive) connection and certificate: refused now.
    let (status, v) = answer(laptop.get(agent.at("/v1/status"))).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{v}"
    );
    // A fresh connection with the certificate too.
    let (status, v) = answer(pki.client_as("client").get(agent.at("/v1/status"))).await;
    assert_eq!(status, 403, "{v}");
    // The token still works.
    let (status, v) = answer(pki.client().get(agent.at("/v1/status")).bearer_auth(READ)).await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test]
async fn a_required_certificate_without_principal_gets_no_api() {
    let pki = Pki::new();
    // No tokens; the listed certificate is for sync only (no scopes).
    let sync_only = format!(
        "[[sync.accept_certs]]\nname = \"device-cert\"\nfingerprint = \"{}\"\n",
        pki.client_fingerprint
    );
    let agent = Agent::builder()
        .config(&mtls_config(
            &pki,
            "",
            "require_client_cert = true",
            &sync_only,
        ))
        .start();
    for cert in ["client", "unlisted"] {
        let c = pki.client_as(cert);
        let (status, v) = answer(c.get(agent.at("/v1/status"))).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{cert}: {v}"
        );
        let (status, v) = answer(
            c.put(agent.at("/v1/docs/evil"))
                .header("content-type", "application/json")
                .body("1"),
        )
        .await;
        assert_eq!(status, 403, "{cert}: {v}");
        // Open routes stay open.
        let (status, _) = answer(c.get(agent.at("/healthz"))).await;
        assert_eq!(status, 200, "{cert}");
    }
    // Nothing was written: the store still has no document (read as the data directory's
    // owner would, with the agent stopped).
    agent.sigterm();
    let mut agent = agent;
    assert!(agent.wait_exit(Duration::from_secs(20)).is_some());
    let store = kdelta_sync::Store::open(
        agent.data_dir().join("kdelta.db"),
        kdelta_sync::StoreConfig::default(),
    )
    .await
    .unwrap();
    assert!(store.get("evil").await.unwrap().is_none());
}

#[tokio::test]
async fn foreign_ca_handshakes_are_throttled_and_logged_once() {
    let pki = Pki::new();
    let api = format!(
        "max_auth_failures = 3\nauth_failure_window = \"1m\"\n\
         tokens = [{{ name = \"reader\", token = \"{READ}\", scopes = [\"read\"] }}]"
    );
    let agent = Agent::builder()
        .config(&mtls_config(&pki, &api, "", ""))
        .start();
    // A client from 127.0.0.2 (loopback too) watches the metrics.
    let ca = reqwest::Certificate::from_pem(&std::fs::read(pki.dir.path().join("ca.pem")).unwrap())
        .unwrap();
    let other = reqwest::Client::builder()
        .add_root_certificate(ca)
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let metric = |name: &'static str| {
        let other = other.clone();
        let url = agent.at("/metrics");
        async move {
            let text = other
                .get(url)
                .bearer_auth(READ)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        }
    };

    for _ in 0..3 {
        let rogue = pki.client_as("rogue-client");
        assert!(rogue.get(agent.at("/healthz")).send().await.is_err());
    }
    eventually(DEADLINE, "three refused client certificates", || async {
        (metric("kdelta_tls_handshakes_failed_total{reason=\"client_certificate\"}").await >= 3.0)
            .then_some(())
    })
    .await;
    // 127.0.0.1 is now blocked: even with a good token it gets no handshake.
    for _ in 0..3 {
        let r = pki
            .client()
            .get(agent.at("/v1/status"))
            .bearer_auth(READ)
            .send()
            .await;
        assert!(r.is_err(), "a blocked address was served: {r:?}");
    }
    let throttled = metric("kdelta_tls_handshakes_failed_total{reason=\"throttled\"}").await;
    assert!(throttled >= 3.0, "{throttled}");
    let refused = metric("kdelta_tls_handshakes_failed_total{reason=\"client_certificate\"}").await;
    assert_eq!(refused, 3.0, "handshakes after the block did not run");
    // 127.0.0.2 is served.
    let (status, v) = answer(other.get(agent.at("/v1/status")).bearer_auth(READ)).await;
    assert_eq!(status, 200, "{v}");
    // Logged for the address's first failure and when it was blocked, not per try.
    let logged = agent.stderr().matches("client certificate refused").count();
    assert!((1..=2).contains(&logged), "{logged}:\n{}", agent.stderr());
}
