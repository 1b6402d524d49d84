//! systemd integration of the real binary: `sd_notify` datagrams on a `NOTIFY_SOCKET` the test
//! binds (`READY=1`, watchdog pings that stop while the store cannot commit, `RELOADING=1` on
//! SIGHUP, `STOPPING=1` on SIGTERM) and SIGHUP changing the log level of a running agent.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::Agent;

/// `WATCHDOG_USEC` given to the agent: it pings every half of it (500 ms).
const WATCHDOG_USEC: &str = "1000000";
const PING_PERIOD: Duration = Duration::from_millis(500);

/// The test's end of `NOTIFY_SOCKET`: every datagram received, in order.
pub(crate) struct Notifications {
    sock: UnixDatagram,
    seen: Vec<String>,
}

impl Notifications {
    pub(crate) fn bind(path: &Path) -> Notifications {
        let sock = UnixDatagram::bind(path).expect("bind the notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        Notifications {
            sock,
            seen: Vec::new(),
        }
    }

    /// The next datagram, or `None` once `deadline` passes.
    fn next(&mut self, deadline: Instant) -> Option<String> {
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            match self.sock.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    self.seen.push(msg.clone());
                    return Some(msg);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("recv on the notify socket: {e}"),
            }
        }
        None
    }

    /// Waits (at most `within`) for a datagram with the line `line`; returns the datagram.
    pub(crate) fn expect(&mut self, agent: &Agent, line: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        while let Some(msg) = self.next(deadline) {
            if msg.lines().any(|l| l == line) {
                return msg;
            }
        }
        panic!(
            "no `{line}` within {within:?}; datagrams so far: {:?}\nstderr:\n{}",
            self.seen,
            agent.stderr()
        );
    }

    /// Every datagram received so far, in order.
    pub(crate) fn seen(&self) -> &[String] {
        &self.seen
    }

    /// Drops whatever arrives during `d`.
    pub(crate) fn drain_for(&mut self, d: Duration) -> Vec<String> {
        let deadline = Instant::now() + d;
        let mut out = Vec::new();
        while let Some(msg) = self.next(deadline) {
            out.push(msg);
        }
        out
    }
}

pub(crate) fn is_ping(msg: &str) -> bool {
    msg.lines().any(|l| l == "WATCHDOG=1")
}

#[tokio::test]
async fn notify_ready_watchdog_stops_when_the_store_is_wedged_and_stopping() {
    let sock_dir = tempfile::tempdir().unwrap();
    let sock_path = sock_dir.path().join("notify.sock");
    let mut notes = Notifications::bind(&sock_path);
    let mut agent = Agent::builder()
        .config("sources = []\n[store]\nbusy_timeout_ms = 200\n")
        .env("NOTIFY_SOCKET", sock_path.to_str().unwrap())
        .env("WATCHDOG_USEC", WATCHDOG_USEC)
        .start();

    let ready = notes.expect(&agent, "READY=1", Duration::from_secs(10));
    assert!(
        ready.lines().any(|l| l.starts_with("STATUS=")),
        "READY=1 without a STATUS= line: {ready:?}"
    );
    for _ in 0..2 {
        notes.expect(&agent, "WATCHDOG=1", 4 * PING_PERIOD);
    }

    // Wedge the store: hold its write lock from another connection.
    let db = agent.data_dir().join("kdelta.db");
    let conn = rusqlite::Connection::open(&db).expect("open the agent's store");
    conn.execute_batch("BEGIN IMMEDIATE")
        .expect("take the write lock");
    // A heartbeat already past its write may still ping; the next ones give up after the
    // busy timeout (200 ms), well inside their own timeout (the ping period).
    notes.drain_for(2 * PING_PERIOD);
    let window = 3 * PING_PERIOD + PING_PERIOD / 2;
    let during = notes.drain_for(window);
    assert!(
        !during.iter().any(|m| is_ping(m)),
        "watchdog pinged while the store could not commit: {during:?}\nstderr:\n{}",
        agent.stderr()
    );
    assert!(
        agent.stderr().contains("not pinging the watchdog"),
        "no log line about the failed health check:\n{}",
        agent.stderr()
    );

    // Release the lock: the pings resume.
    conn.execute_batch("ROLLBACK")
        .expect("release the write lock");
    conn.close().map_err(|(_, e)| e).expect("close");
    notes.expect(&agent, "WATCHDOG=1", 6 * PING_PERIOD);

    agent.sigterm();
    let stopping = notes.expect(&agent, "STOPPING=1", Duration::from_secs(10));
    assert!(
        stopping.lines().any(|l| l.starts_with("STATUS=")),
        "{stopping:?}"
    );
    let status = agent.wait_exit(Duration::from_secs(15));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "exit after SIGTERM: {status:?}\nstderr:\n{}",
        agent.stderr()
    );
}

fn debug_http_lines(stderr: &str) -> usize {
    stderr
        .lines()
        .filter(|l| l.contains("DEBUG") && l.contains("http request"))
        .count()
}

#[tokio::test]
async fn sighup_changes_the_log_level() {
    let sock_dir = tempfile::tempdir().unwrap();
    let sock_path = sock_dir.path().join("notify.sock");
    let mut notes = Notifications::bind(&sock_path);
    let mut agent = Agent::builder()
        .config("sources = []\n[log]\nlevel = \"info\"\n")
        // The harness sets RUST_LOG=info, which would win over `log.level`; empty means unset.
        .env("RUST_LOG", "")
        .env("NOTIFY_SOCKET", sock_path.to_str().unwrap())
        .start();
    notes.expect(&agent, "READY=1", Duration::from_secs(10));
    let c = reqwest::Client::new();

    // At info, requests are not logged.
    c.get(agent.at("/healthz"))
        .send()
        .await
        .expect("GET /healthz");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !agent.stderr().contains("DEBUG"),
        "DEBUG lines at level info:\n{}",
        agent.stderr()
    );

    std::fs::write(
        agent.dir().join("kdelta-test.toml"),
        "sources = []\n[log]\nlevel = \"debug\"\n",
    )
    .unwrap();
    // SAFETY: kill(2) on the child we spawned and have not reaped.
    unsafe {
        libc::kill(agent.pid() as libc::pid_t, libc::SIGHUP);
    }
    notes.expect(&agent, "RELOADING=1", Duration::from_secs(10));
    notes.expect(&agent, "READY=1", Duration::from_secs(10));

    // The reload took effect: requests now log at debug.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        c.get(agent.at("/healthz"))
            .send()
            .await
            .expect("GET /healthz");
        if debug_http_lines(&agent.stderr()) > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no DEBUG `http request` line after SIGHUP with level debug:\n{}",
            agent.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        agent.stderr().contains("log filter is now debug"),
        "{}",
        agent.stderr()
    );

    agent.sigterm();
    let status = agent.wait_exit(Duration::from_secs(15));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", agent.stderr());
}

fn sim_source(name: &str) -> String {
    format!("[[sources]]\nkind = \"sim\"\nname = \"{name}\"\ninterval = \"100ms\"\n")
}

async fn source_names(c: &reqwest::Client, agent: &Agent) -> Vec<String> {
    let v: serde_json::Value = c
        .get(agent.at("/v1/sources"))
        .send()
        .await
        .expect("GET /v1/sources")
        .json()
        .await
        .expect("JSON");
    v["sources"]
        .as_array()
        .expect("sources array")
        .iter()
        .map(|s| s["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn sighup_replaces_the_sources() {
    let mut agent = Agent::builder().config(&sim_source("a")).start();
    // SIGHUP before the handler is installed would kill the agent: wait until it is ready.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent.stderr().contains("ready in ") {
        assert!(Instant::now() < deadline, "not ready:\n{}", agent.stderr());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let c = reqwest::Client::new();
    assert_eq!(source_names(&c, &agent).await, ["a"]);

    std::fs::write(agent.dir().join("kdelta-test.toml"), sim_source("b")).unwrap();
    // SAFETY: kill(2) on the child we spawned and have not reaped.
    unsafe {
        libc::kill(agent.pid() as libc::pid_t, libc::SIGHUP);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let names = source_names(&c, &agent).await;
        if names == ["b"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sources after SIGHUP: {names:?}\n{}",
            agent.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The new source records: its readings arrive in the store.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v: serde_json::Value = c
            .get(agent.at("/v1/sources"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["sources"][0]["readings"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "b records nothing: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !agent.stderr().contains("need a restart"),
        "{}",
        agent.stderr()
    );

    agent.sigterm();
    let status = agent.wait_exit(Duration::from_secs(15));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", agent.stderr());
}

/// Regression: SIGTERM or SIGHUP sent as soon as the agent prints its address (what this
/// harness, a script or systemd may do) arrived before the handlers were installed and killed
/// the process by the signal's default action. Now they are queued and handled after startup.
#[test]
fn signals_at_the_listening_line_are_handled_not_fatal() {
    for signal in [libc::SIGHUP, libc::SIGTERM] {
        let mut agent = Agent::builder()
            .config("sources = []\n")
            .env("NOTIFY_SOCKET", "")
            .start();
        // SAFETY: kill(2) on the child we spawned and have not reaped.
        unsafe {
            libc::kill(agent.pid() as libc::pid_t, signal);
        }
        if signal == libc::SIGHUP {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !agent.stderr().contains("reload done") {
                assert!(
                    agent.wait_exit(Duration::from_millis(20)).is_none(),
                    "SIGHUP at startup killed the agent:\n{}",
                    agent.stderr()
                );
                assert!(Instant::now() < deadline, "no reload:\n{}", agent.stderr());
            }
            agent.sigterm();
        }
        let status = agent.wait_exit(Duration::from_secs(15));
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "signal {signal} at startup: {status:?}\n{}",
            agent.stderr()
        );
    }
}
