//! A full disk is a state, not a crash: a real agent on a small tmpfs the test mounts (root
//! only; skipped with a message otherwise) is driven until its file system is full. Writes
//! then answer `507 disk_full`, `/readyz` says not ready and why, the watchdog keeps being
//! pinged, reads work, a sampling source keeps running into its bounded queue (drops
//! counted), nothing acknowledged is lost across `kill -9` (the agent restarts on the full
//! disk), and once space is freed writes resume by themselves.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Agent, eventually};
use crate::systemd::{Notifications, is_ping};
use crate::{all_readings, client, code, get_json, metrics_text, post};

/// A tmpfs mounted on a temp dir for one test; unmounted (lazily) on drop.
pub(crate) struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `"16m"`), or says why not and returns `None` (not root,
    /// or mounting is not permitted here).
    pub(crate) fn mount(size: &str) -> Option<Tmpfs> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: mounting a small tmpfs needs root (run the suite as root)");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            Ok(o) => {
                eprintln!(
                    "SKIPPED: mount -t tmpfs failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system with `filler`, then gives back `leave` bytes.
    pub(crate) fn fill(&self, leave: u64) -> PathBuf {
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).expect("create the filler");
        let chunk = vec![0xa5u8; 64 * 1024];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        let len = f.metadata().expect("filler size").len();
        f.set_len(len.saturating_sub(leave))
            .expect("shrink the filler");
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// `WATCHDOG_USEC` given to the agent: it pings every half of it.
const WATCHDOG_USEC: &str = "1000000";

/// Posts `n` readings of `series` at ts `from..from + n` (ms), each worth `ts * 0.25`.
pub(crate) async fn ingest(
    c: &reqwest::Client,
    agent: &Agent,
    series: &str,
    from: i64,
    n: i64,
) -> (u16, Value) {
    let ts: Vec<i64> = (from..from + n).collect();
    let values: Vec<f64> = ts.iter().map(|t| *t as f64 * 0.25).collect();
    let body = json!({"series": [{"name": series, "ts": ts, "values": values}]});
    post(
        c,
        &agent.at("/v1/readings"),
        "application/json",
        body.to_string().into_bytes(),
    )
    .await
}

/// The value of the metric line starting with `line_prefix` (0 when absent).
pub(crate) async fn metric(c: &reqwest::Client, agent: &Agent, line_prefix: &str) -> f64 {
    let text = metrics_text(c, agent).await;
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_a_state_and_writes_resume_when_space_returns() {
    let Some(fs) = Tmpfs::mount("24m") else {
        return;
    };
    let sock_dir = tempfile::tempdir().unwrap();
    let sock_path = sock_dir.path().join("notify.sock");
    let mut notes = Notifications::bind(&sock_path);
    // A fast simulated source behind a small queue that drops the oldest when full.
    let config = "[[sources]]\nkind = \"sim\"\nname = \"sim\"\ninterval = \"100ms\"\ncount = 20\n\
                  [ingest]\nqueue_capacity = 1000\nbatch_max_readings = 500\nbatch_max_age = \"100ms\"\noverflow = \"drop_oldest\"\n";
    let start = |dir: &Path| {
        Agent::builder()
            .dir(dir)
            .config(config)
            .env("NOTIFY_SOCKET", sock_path.to_str().unwrap())
            .env("WATCHDOG_USEC", WATCHDOG_USEC)
            .start()
    };
    let mut agent = start(fs.path());
    notes.expect(&agent, "READY=1", Duration::from_secs(10));
    let c = client();

    // The source has committed before the disk fills (its series exists for the checks).
    eventually(Duration::from_secs(20), "first sim readings", || {
        let (c, url) = (c.clone(), agent.at("/v1/readings/latest?series=sim.0"));
        async move { (get_json(&c, &url).await.0 == 200).then_some(()) }
    })
    .await;

    // Leave 2 MB, then write until even a one-reading batch is refused.
    let filler = fs.fill(2 << 20);
    let mut acked: Vec<(i64, i64)> = Vec::new();
    let mut next = 0i64;
    let mut first_refusal: Option<Value> = None;
    for batch in [2000i64, 1] {
        loop {
            assert!(next < 50_000_000, "the disk never filled");
            let (s, v) = ingest(&c, &agent, "full.http", next, batch).await;
            match s {
                201 => acked.push((next, batch)),
                507 => {
                    first_refusal.get_or_insert(v);
                    next += batch;
                    break;
                }
                other => panic!("unexpected answer {other}: {v}\n{}", agent.stderr()),
            }
            next += batch;
        }
    }
    let refusal = first_refusal.expect("a 507");
    assert_eq!(code(&refusal), "disk_full", "{refusal}");
    let message = refusal["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("disk") && message.contains("free space"),
        "the message says what to do: {message}"
    );
    let acked_readings: i64 = acked.iter().map(|(_, n)| n).sum();
    eprintln!("{acked_readings} readings acknowledged before the disk filled");
    assert!(acked_readings > 0);

    // Not ready, naming the reason; alive; the watchdog is still pinged.
    let why = eventually(
        Duration::from_secs(15),
        "/readyz not ready: disk_full",
        || {
            let (c, url) = (c.clone(), agent.at("/readyz"));
            async move {
                let (s, v) = get_json(&c, &url).await;
                (s == 503 && v["error"]["message"].as_str()?.starts_with("disk_full:")).then_some(v)
            }
        },
    )
    .await;
    assert_eq!(code(&why), "not_ready", "{why}");
    let (s, _) = get_json(&c, &agent.at("/healthz")).await;
    assert_eq!(s, 200);
    notes.drain_for(Duration::from_millis(200));
    let pings = notes.drain_for(Duration::from_secs(3));
    assert!(
        pings.iter().any(|m| is_ping(m)),
        "no watchdog ping while only the disk is full: {pings:?}\n{}",
        agent.stderr()
    );
    let (_, st) = get_json(&c, &agent.at("/v1/status")).await;
    assert!(st["store"]["write_health"]["disk_full"].is_string(), "{st}");

    // The source keeps sampling into its bounded queue; what does not fit is counted.
    eventually(
        Duration::from_secs(20),
        "sim readings dropped and counted",
        || {
            let (c, agent) = (c.clone(), &agent);
            async move {
                (metric(
                    &c,
                    agent,
                    "kdelta_source_dropped_readings_total{source=\"sim\"}",
                )
                .await
                    > 0.0)
                    .then_some(())
            }
        },
    )
    .await;

    // Reads keep working and hold everything acknowledged.
    let got = all_readings(&c, &agent, "full.http").await;
    assert_eq!(got.len() as i64, acked_readings);

    // kill -9 on the full disk; the agent comes back on it with everything acknowledged.
    agent.kill9();
    drop(agent);
    let agent = start(fs.path());
    let got = all_readings(&c, &agent, "full.http").await;
    for (from, n) in &acked {
        for t in *from..from + n {
            assert_eq!(
                got.get(&t),
                Some(&(t as f64 * 0.25)),
                "acknowledged reading ts {t} lost"
            );
        }
    }
    assert_eq!(got.len() as i64, acked_readings);
    let (s, v) = ingest(&c, &agent, "full.http", next, 1).await;
    assert_eq!((s, code(&v)), (507, "disk_full"), "{v}");

    // Free space: readiness and writes come back by themselves, sources included.
    std::fs::remove_file(&filler).expect("remove the filler");
    eventually(
        Duration::from_secs(15),
        "/readyz 200 after freeing space",
        || {
            let (c, url) = (c.clone(), agent.at("/readyz"));
            async move { (get_json(&c, &url).await.0 == 200).then_some(()) }
        },
    )
    .await;
    let (s, v) = ingest(&c, &agent, "full.http", next + 1, 100).await;
    assert_eq!(s, 201, "{v}");
    let sim_before = all_readings(&c, &agent, "sim.0").await.len();
    eventually(
        Duration::from_secs(15),
        "sim readings committed again",
        || {
            let (c, agent) = (c.clone(), &agent);
            async move { (all_readings(&c, agent, "sim.0").await.len() > sim_before).then_some(()) }
        },
    )
    .await;
    let (_, st) = get_json(&c, &agent.at("/v1/status")).await;
    assert!(st["store"]["write_health"]["disk_full"].is_null(), "{st}");
}
