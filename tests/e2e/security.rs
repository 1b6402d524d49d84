//! Trust boundaries against the real binary: API tokens and scopes (HTTP and CLI), the
//! refusal of an unauthenticated non-loopback listener, browser-shaped attacks (a `no-cors`
//! text/plain POST, a form POST to a twin, a rebound `Host`), secrets redacted by `config
//! check`, token guessing throttled per address, and a thousand idle slow connections that
//! neither starve a real request nor stay open past the header timeout.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Agent, BIN, run_to_end};

const READ: &str = "reader-token-0123456789abcdef";
const WRITE: &str = "writer-token-0123456789abcdef";
const ADMIN: &str = "admin-token-0123456789abcdef";

/// A config with three tokens; the admin one from a file in the agent's directory.
fn tokens_config(extra: &str) -> String {
    format!(
        "sources = []\n[api]\nadmin_token_file = \"admin.token\"\ntokens = [\n  \
         {{ name = \"reader\", token = \"{READ}\", scopes = [\"read\"] }},\n  \
         {{ name = \"writer\", token = \"{WRITE}\", scopes = [\"write\"] }},\n]\n{extra}"
    )
}

/// An agent with [`tokens_config`]; the temp dir lives as long as the returned guard.
fn start_with_tokens(extra: &str) -> (Agent, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), format!("{ADMIN}\n")).unwrap();
    let agent = Agent::builder()
        .dir(dir.path())
        .config(&tokens_config(extra))
        .start();
    (agent, dir)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn send(req: reqwest::RequestBuilder) -> (u16, Value, reqwest::header::HeaderMap) {
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
        headers,
    )
}

#[tokio::test]
async fn tokens_and_scopes_guard_every_write() {
    let (agent, _dir) = start_with_tokens("");
    let c = client();
    let put = |t: Option<&str>| {
        let r = c
            .put(agent.at("/v1/docs/greenhouse/setpoint"))
            .header("content-type", "application/json")
            .body(r#"{"temp": 22}"#);
        match t {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    };
    let (status, v, headers) = send(put(None)).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "{v}"
    );
    assert!(headers.contains_key("www-authenticate"));
    let (status, v, _) = send(put(Some(READ))).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{v}"
    );
    // Nothing stored: the document does not exist. (Not the change count: the agent's own
    // device twin may commit changes of its own at any moment.)
    let (status, v, _) = send(
        c.get(agent.at("/v1/docs/greenhouse/setpoint"))
            .bearer_auth(ADMIN),
    )
    .await;
    assert_eq!(status, 404, "nothing stored: {v}");

    let (status, v, _) = send(put(Some(WRITE))).await;
    assert_eq!(status, 200, "{v}");
    // Admin-only: sync now.
    let now = |t: &str| c.post(agent.at("/v1/sync/now?timeout=1s")).bearer_auth(t);
    let (status, v, _) = send(now(WRITE)).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{v}"
    );
    let (status, v, _) = send(now(ADMIN)).await;
    assert_eq!(status, 200, "{v}");
    // Open routes stay open.
    let (status, _, _) = send(c.get(agent.at("/healthz"))).await;
    assert_eq!(status, 200);
    let (status, _, _) = send(c.get(agent.at("/metrics"))).await;
    assert_eq!(status, 401, "metrics need read unless api.metrics_public");

    // The CLI: no token → a 401 that says what to do; KDELTA_TOKEN or --token-file → works.
    let cli = |envs: &[(&str, &str)], args: &[&str]| {
        let mut cmd = Command::new(BIN);
        cmd.arg("status")
            .arg("--url")
            .arg(agent.url())
            .args(args)
            .env_remove("KDELTA_TOKEN")
            .env_remove("KDELTA_TOKEN_FILE")
            .env_remove("KDELTA_URL")
            .stdin(Stdio::null());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.output().expect("run kdelta status")
    };
    let out = cli(&[], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("401") && stderr.contains("KDELTA_TOKEN"),
        "{stderr}"
    );
    let out = cli(&[("KDELTA_TOKEN", READ)], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = agent.dir().join("admin.token");
    let out = cli(&[], &["--token-file", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn config_check_redacts_secrets_and_non_loopback_needs_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kdelta.toml");
    std::fs::write(
        &config,
        format!(
            "sources = []\n[api]\ntokens = [{{ name = \"ops\", token = \"{ADMIN}\", scopes = [\"admin\"] }}]\n\
             [mqtt]\nusername = \"kdelta\"\npassword = \"mqtt-secret-password\"\n\
             [sync]\naccept_tokens = [{{ name = \"dev\", token = \"sync-secret-0123456789\" }}]\n"
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["config", "check", "--config"])
        .arg(&config)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for secret in [ADMIN, "mqtt-secret-password", "sync-secret-0123456789"] {
        assert!(!text.contains(secret), "{secret} printed:\n{text}");
    }
    assert!(text.contains("<redacted>"), "{text}");

    std::fs::write(&config, "sources = []\n").unwrap();
    let data = dir.path().join("data");
    let (code, stderr) = run_to_end(
        &[
            "start",
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "0.0.0.0:0",
        ],
        dir.path(),
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("api.listen"), "{stderr}");
}

#[tokio::test]
async fn browser_shaped_attacks_store_nothing() {
    let agent = Agent::start();
    let c = client();
    // fetch(url, {method: "POST", mode: "no-cors", body: "[…]"}): text/plain, page's Origin.
    let (status, v, _) = send(
        c.post(agent.at("/v1/readings"))
            .header("content-type", "text/plain;charset=UTF-8")
            .header("origin", "http://attacker.example")
            .body(r#"[{"series":"evil","value":1}]"#),
    )
    .await;
    assert!(status == 415 || status == 403, "{status} {v}");
    // The same without an Origin (a form's navigation, an older browser): still refused.
    let (status, v, _) = send(
        c.post(agent.at("/v1/readings"))
            .header("content-type", "text/plain")
            .body(r#"[{"series":"evil","value":1}]"#),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (415, Some("unsupported_media_type")),
        "{v}"
    );
    // <form method=post enctype=text/plain action=…/v1/twins/evil>
    let (status, v, _) = send(
        c.post(agent.at("/v1/twins/evil"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(r#"{"a":1,"b":"="}"#),
    )
    .await;
    assert_eq!(status, 415, "{v}");
    // DNS rebinding: the page's own name now resolves to 127.0.0.1.
    let (status, v, _) = send(
        c.put(agent.at("/v1/docs/evil"))
            .header("host", "attacker.example")
            .header("content-type", "application/json")
            .body("1"),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("host_not_allowed")),
        "{v}"
    );
    // A foreign Origin with a JSON body (after a preflight the agent never answers).
    let (status, v, _) = send(
        c.put(agent.at("/v1/docs/evil"))
            .header("origin", "http://attacker.example")
            .header("content-type", "application/json")
            .body("1"),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("foreign_origin")),
        "{v}"
    );
    // Nothing stored (the agent writes its own device twin, so count only what the attacks
    // aimed at).
    let (_, series, _) = send(c.get(agent.at("/v1/series"))).await;
    assert!(!series.to_string().contains("evil"), "{series}");
    for path in ["/v1/docs/evil", "/v1/twins/evil"] {
        let (status, v, _) = send(c.get(agent.at(path))).await;
        assert_eq!(status, 404, "{path}: {v}");
    }
}

#[tokio::test]
async fn token_guessing_is_throttled_but_other_addresses_are_served() {
    let (agent, _dir) = start_with_tokens("max_auth_failures = 3\nauth_failure_window = \"1m\"\n");
    let guesser = client();
    for i in 0..3 {
        let (status, _, _) = send(
            guesser
                .get(agent.at("/v1/status"))
                .bearer_auth(format!("guess-{i:024}")),
        )
        .await;
        assert_eq!(status, 401);
    }
    let (status, v, headers) = send(guesser.get(agent.at("/v1/status")).bearer_auth(READ)).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (429, Some("too_many_auth_failures")),
        "{v}"
    );
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // The right token from another address (127.0.0.2 is loopback too) is served.
    let other = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let (status, v, _) = send(other.get(agent.at("/v1/status")).bearer_auth(READ)).await;
    assert_eq!(status, 200, "{v}");
    // One warning for the address, one when it is blocked: not one per guess.
    let warned = agent
        .stderr()
        .matches("API bearer token not accepted")
        .count();
    assert!((1..=2).contains(&warned), "{warned}:\n{}", agent.stderr());
}

#[tokio::test]
async fn idle_slow_connections_neither_starve_requests_nor_stay_open() {
    let agent = Agent::builder()
        .config("sources = []\n[api]\nmax_connections = 256\nheader_read_timeout = \"1s\"\n")
        .start();
    let addr = agent.url().trim_start_matches("http://").to_owned();
    // A thousand clients that start a request and never finish its head (slowloris).
    let opening = Instant::now();
    let mut idle = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let mut s = TcpStream::connect(&addr).expect("connect");
        s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            .expect("partial head");
        idle.push(s);
    }
    let opened_in = opening.elapsed();
    let started = Instant::now();
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let r = c
        .get(agent.at("/v1/status"))
        .send()
        .await
        .expect("served within its timeout");
    assert_eq!(r.status().as_u16(), 200);
    let waited = started.elapsed();
    eprintln!(
        "a real request after 1000 idle slow connections (opened in {opened_in:?}; cap 256, header timeout 1s): {waited:?}"
    );
    // The first slow client has been disconnected by the header timeout.
    let first = &mut idle[0];
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 512];
    let closed_at = Instant::now();
    match first.read(&mut buf) {
        Ok(_) => {} // EOF (0) or a 408 answer followed by the close
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!(
            "the slowloris connection is still open after {:?}: {e}",
            closed_at.elapsed()
        ),
    }
}

#[tokio::test]
async fn backup_route_needs_the_admin_scope() {
    let (agent, _dir) = start_with_tokens("");
    let c = client();
    for token in [READ, WRITE] {
        let (status, body, _) = send(c.get(agent.at("/v1/backup")).bearer_auth(token)).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (403, Some("forbidden"))
        );
    }
    let r = c
        .get(agent.at("/v1/backup"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/vnd.kdelta.backup"
    );
    let bytes = r.bytes().await.unwrap();
    let header =
        kdelta_sync::backup::read_header(&mut bytes.as_ref(), std::path::Path::new("response"))
            .unwrap();
    assert_eq!(header.digest.len(), 64, "{header:?}");
}

/// The agent's resident memory, bytes (Linux `/proc`).
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// Sends a request head announcing a 16 MiB body and `sent` bytes of it, then reads the
/// answer's status line (deadline 10 s) without sending the rest.
fn answer_before_the_body(addr: &str, head: &str, sent: usize) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&vec![b'['; sent]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 512];
    let n = s
        .read(&mut buf)
        .expect("an answer before the body was sent");
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn unauthenticated_bodies_are_answered_unread() {
    let (agent, _dir) = start_with_tokens("");
    let addr = agent.url().trim_start_matches("http://").to_owned();
    let head = |path: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: 16777216\r\n\r\n"
        )
    };
    // Routes that take no body, and a write route without a token: answered at once,
    // while 16 MiB minus 64 KiB of the body were never sent.
    for (path, status) in [
        ("/healthz", "413"),
        ("/readyz", "413"),
        ("/v1/openapi.json", "413"),
        ("/dashboard.js", "413"),
        ("/v1/sync", "413"),
        ("/v1/readings", "401"),
        ("/v1/docs/evil", "401"),
    ] {
        let line = answer_before_the_body(&addr, &head(path), 64 << 10);
        assert!(
            line.starts_with(&format!("HTTP/1.1 {status}")),
            "{path}: {line:?}"
        );
    }
    // Thirty clients each pushing 4 MiB of an announced 16 MiB body at an open route and an
    // authenticated one: nothing is buffered (before: the whole body, for each).
    let before = rss_bytes(agent.pid());
    let pushers: Vec<_> = (0..30)
        .map(|i| {
            let addr = addr.clone();
            let head = head(if i % 2 == 0 {
                "/healthz"
            } else {
                "/v1/readings"
            });
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&addr).expect("connect");
                s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
                s.write_all(head.as_bytes()).unwrap();
                let chunk = vec![b'['; 64 << 10];
                // Stops when the agent closes the connection (or after 4 MiB).
                for _ in 0..64 {
                    if s.write_all(&chunk).is_err() {
                        break;
                    }
                }
                s
            })
        })
        .collect();
    let open: Vec<TcpStream> = pushers.into_iter().map(|t| t.join().unwrap()).collect();
    let grown = rss_bytes(agent.pid()).saturating_sub(before);
    eprintln!(
        "RSS grew by {} KiB over 30 unread 4 MiB bodies",
        grown >> 10
    );
    assert!(grown < 32 << 20, "RSS grew by {} MiB", grown >> 20);
    drop(open);
    // The agent still serves.
    let (status, _, _) = send(client().get(agent.at("/v1/status")).bearer_auth(READ)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn bad_sync_tokens_are_throttled_and_logged_once() {
    let agent = Agent::builder()
        .config(
            "sources = []\n[api]\nmax_auth_failures = 3\nauth_failure_window = \"1m\"\n\
             [sync]\naccept_tokens = [{ name = \"dev\", token = \"sync-token-0123456789\" }]\n",
        )
        .start();
    let c = client();
    for i in 0..3 {
        let (status, v, _) = send(
            c.get(agent.at("/v1/sync"))
                .bearer_auth(format!("guess-{i:024}")),
        )
        .await;
        assert_eq!(status, 401, "{v}");
    }
    let (status, v, _) = send(
        c.get(agent.at("/v1/sync"))
            .bearer_auth("sync-token-0123456789"),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (429, Some("too_many_auth_failures")),
        "{v}"
    );
    let warned = agent.stderr().matches("inbound sync refused").count();
    assert!((1..=2).contains(&warned), "{warned}:\n{}", agent.stderr());
}

#[tokio::test]
async fn sync_tokens_may_come_from_a_file_or_as_a_digest() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dev.token"), "sync-file-token-0123456789\n").unwrap();
    let config = dir.path().join("kdelta.toml");
    // printf %s sync-secret-0123456789 | sha256sum
    let digest = "93b000274e67f6a37224f5c341c383052bde255470fec8f44fcfa01daf1ef944";
    let check = |toml: &str| {
        std::fs::write(&config, toml).unwrap();
        let out = Command::new(BIN)
            .args(["config", "check", "--config"])
            .arg(&config)
            .current_dir(dir.path())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = check(&format!(
        "sources = []\n[sync]\naccept_tokens = [\n  \
         {{ name = \"a\", token_file = \"dev.token\", role = \"device\" }},\n  \
         {{ name = \"b\", token_sha256 = \"{digest}\" }},\n]\n"
    ));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("token_file") && out.contains(digest), "{out}");
    // Two at once, or a digest that is not one: refused naming the key.
    let (code, _, err) = check(
        "sources = []\n[sync]\naccept_tokens = [{ name = \"a\", token = \"sync-secret-0123456789\", token_file = \"dev.token\" }]\n",
    );
    assert_ne!(code, Some(0));
    assert!(err.contains("sync.accept_tokens[0]"), "{err}");
    let (code, _, err) =
        check("sources = []\n[sync]\naccept_tokens = [{ name = \"a\", token_sha256 = \"abc\" }]\n");
    assert_ne!(code, Some(0));
    assert!(err.contains("sync.accept_tokens[0].token_sha256"), "{err}");

    // A running agent accepts the file's token and refuses others; a missing file stops
    // the start naming the key.
    let agent = Agent::builder()
        .dir(dir.path())
        .config(&format!(
            "sources = []\n[sync]\naccept_tokens = [\n  \
             {{ name = \"a\", token_file = \"dev.token\" }},\n  \
             {{ name = \"b\", token_sha256 = \"{digest}\" }},\n]\n"
        ))
        .start();
    let c = client();
    // Accepted: the answer is about the missing WebSocket upgrade, not the token.
    for token in ["sync-file-token-0123456789", "sync-secret-0123456789"] {
        let (status, v, _) = send(c.get(agent.at("/v1/sync")).bearer_auth(token)).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (400, Some("websocket_required")),
            "{token}: {v}"
        );
    }
    let (status, _, _) = send(
        c.get(agent.at("/v1/sync"))
            .bearer_auth("sync-other-token-0123"),
    )
    .await;
    assert_eq!(status, 401);
    drop(agent);
    let other = tempfile::tempdir().unwrap();
    let err = Agent::builder()
        .dir(other.path())
        .config("sources = []\n[sync]\naccept_tokens = [{ name = \"a\", token_file = \"missing.token\" }]\n")
        .try_start()
        .err()
        .expect("a missing token file stops the start");
    assert!(err.contains("sync.accept_tokens[0].token_file"), "{err}");
}

/// The CLI's token sources against a real agent with API tokens, told apart by scope: a
/// `put` needs `write`, so it succeeds only when the writer's token is the one sent. Order:
/// `--token`, `KDELTA_TOKEN`, `--token-file`, `KDELTA_TOKEN_FILE` (blank values skipped).
#[tokio::test]
async fn cli_token_sources_apply_in_order() {
    let (agent, dir) = start_with_tokens("");
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let writer = file("writer.token", &format!("  {WRITE}  \r\nnot this line\n"));
    let reader = file("reader.token", &format!("{READ}\n"));
    let empty = file("empty.token", "\n");
    let missing = dir.path().join("missing.token");
    let missing = missing.to_str().unwrap();
    let put = |key: &str, envs: &[(&str, &str)], args: &[&str]| {
        let mut cmd = Command::new(BIN);
        cmd.args(["put", key, "1", "--url", agent.url()])
            .args(args)
            .env_remove("KDELTA_TOKEN")
            .env_remove("KDELTA_TOKEN_FILE")
            .env_remove("KDELTA_URL")
            .stdin(Stdio::null());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run kdelta put");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // (doc key, environment, arguments, Ok or the error's text)
    type Case<'a> = (
        &'a str,
        &'a [(&'a str, &'a str)],
        &'a [&'a str],
        Result<(), &'a str>,
    );
    let cases: &[Case] = &[
        ("flag", &[], &["--token", WRITE], Ok(())),
        ("flag-read", &[], &["--token", READ], Err("403")),
        ("env", &[("KDELTA_TOKEN", WRITE)], &[], Ok(())),
        (
            "flag-over-env",
            &[("KDELTA_TOKEN", READ)],
            &["--token", WRITE],
            Ok(()),
        ),
        (
            "env-over-file",
            &[("KDELTA_TOKEN", WRITE)],
            &["--token-file", &reader],
            Ok(()),
        ),
        ("file", &[], &["--token-file", &writer], Ok(())),
        ("env-file", &[("KDELTA_TOKEN_FILE", &writer)], &[], Ok(())),
        (
            "file-flag-over-env-file",
            &[("KDELTA_TOKEN_FILE", &reader)],
            &["--token-file", &writer],
            Ok(()),
        ),
        (
            "blank-env-skipped",
            &[("KDELTA_TOKEN", "  ")],
            &["--token-file", &writer],
            Ok(()),
        ),
        ("empty-file", &[], &["--token-file", &empty], Err("401")),
        (
            "missing-file",
            &[],
            &["--token-file", missing],
            Err("cannot read the token file"),
        ),
    ];
    for (key, envs, args, expected) in cases {
        let (ok, stderr) = put(key, envs, args);
        match expected {
            Ok(()) => assert!(ok, "{key}: {stderr}"),
            Err(text) => assert!(!ok && stderr.contains(text), "{key}: {stderr}"),
        }
    }
    assert!(
        put("missing-file", &[], &["--token-file", missing])
            .1
            .contains(missing),
        "the error names the file"
    );
    // Only the writes whose writer token was sent are stored.
    let c = reqwest::Client::new();
    for (key, _, _, expected) in cases {
        let (status, v, _) = send(
            c.get(agent.at(&format!("/v1/docs/{key}")))
                .bearer_auth(READ),
        )
        .await;
        let want = if expected.is_ok() { 200 } else { 404 };
        assert_eq!(status, want, "{key}: {v}");
    }
}
