//! Hub replicas as real processes: `kdelta start` of this executable with
//! `[store] backend = "postgres"`, each on `127.0.0.1:0` with a data directory of its own,
//! accepting one `device` token per simulated device. Started one after the other (the first
//! migrates the phase's schema), ready when `/readyz` answers 200, stopped with SIGTERM (then
//! SIGKILL) at the end of the phase.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kdelta_sync::protocol::DeviceRelay;

/// How long a replica may take to listen and then to be ready.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long a replica may take to exit after SIGTERM before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// Lines of a replica's stderr kept for error messages.
const KEPT_LINES: usize = 40;

/// The token of simulated device `i` (also its credential name's suffix).
pub(super) fn device_token(i: u32) -> String {
    format!("fleet-bench-device-{i:05}-token")
}

/// The credential name of simulated device `i`.
pub(super) fn device_name(i: u32) -> String {
    format!("dev{i:05}")
}

/// The config file of every replica of a phase.
pub(super) fn replica_config(
    url: &str,
    devices: u32,
    max_sessions: usize,
    device_relay: DeviceRelay,
) -> String {
    let mut toml = String::from("sources = []\n");
    toml.push_str(&format!(
        "[api]\nmax_sync_sessions = {max_sessions}\nmax_connections = {}\n",
        max_sessions + 64
    ));
    toml.push_str(&format!(
        "[store]\nbackend = \"postgres\"\nurl = {}\n",
        toml_string(url)
    ));
    toml.push_str(&format!(
        "[sync]\ndevice_relay = \"{}\"\naccept_tokens = [\n",
        device_relay.as_str()
    ));
    for i in 0..devices {
        toml.push_str(&format!(
            "  {{ name = \"{}\", token = \"{}\", role = \"device\" }},\n",
            device_name(i),
            device_token(i)
        ));
    }
    toml.push_str("]\n");
    toml
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A running replica process; killed when dropped.
pub(super) struct Replica {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The last lines it wrote to stderr.
    log: Arc<Mutex<Vec<String>>>,
}

impl Replica {
    /// Starts replica `n` with `config` in `dir/replica-N` and waits until `/readyz`
    /// answers 200.
    pub(super) async fn start(
        n: usize,
        dir: &Path,
        config: &str,
        http: &reqwest::Client,
    ) -> anyhow::Result<Replica> {
        let home = dir.join(format!("replica-{n}"));
        std::fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
        let config_path = home.join("kdelta.toml");
        std::fs::write(&config_path, config)
            .with_context(|| format!("writing {}", config_path.display()))?;
        let exe = std::env::current_exe().context("finding this executable")?;
        let mut cmd = Command::new(&exe);
        cmd.arg("start")
            .arg("--config")
            .arg(&config_path)
            .arg("--data-dir")
            .arg(home.join("data"))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .current_dir(&home)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Every KDELTA_* variable is agent configuration to `kdelta start`, and an unknown
        // key (KDELTA_POSTGRES, the bench's own fallback) stops it: the replicas get none.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("KDELTA_") {
                cmd.env_remove(key);
            }
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("running {} start", exe.display()))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let pipe = child.stderr.take().context("the replica's stderr")?;
        std::thread::spawn({
            let log = log.clone();
            move || drain(pipe, tx, log)
        });
        let mut replica = Replica {
            child,
            url: String::new(),
            log,
        };
        let deadline = Instant::now() + START_DEADLINE;
        replica.url = loop {
            match rx.try_recv() {
                Ok(url) => break url,
                Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => {
                    bail!("replica {n} exited before listening:\n{}", replica.log())
                }
            }
            if let Ok(Some(status)) = replica.child.try_wait() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                bail!(
                    "replica {n} exited ({status}) before listening:\n{}",
                    replica.log()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "replica {n} did not listen within {START_DEADLINE:?}:\n{}",
                    replica.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        loop {
            let ready = http
                .get(format!("{}/readyz", replica.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(replica);
            }
            if Instant::now() > deadline {
                bail!(
                    "replica {n} at {} was not ready within {START_DEADLINE:?}:\n{}",
                    replica.url,
                    replica.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Its process id.
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of its stderr.
    pub(super) fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n")
    }

    /// SIGTERM, then SIGKILL after [`STOP_DEADLINE`]; reaps the process.
    pub(super) async fn stop(mut self) {
        // SAFETY: kill(2) on a child we spawned and have not reaped.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_DEADLINE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::warn!(url = %self.url, "a replica did not stop within 10 s after SIGTERM: killed");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads a replica's stderr: sends the URL of its `listening on http://ADDR` line, keeps
/// the last [`KEPT_LINES`] lines.
fn drain(pipe: impl std::io::Read, tx: mpsc::Sender<String>, log: Arc<Mutex<Vec<String>>>) {
    let mut tx = Some(tx);
    for line in BufReader::new(pipe).lines() {
        let Ok(line) = line else { break };
        if let Some(url) = listening_url(&line)
            && let Some(tx) = tx.take()
        {
            let _ = tx.send(url);
        }
        let mut kept = log.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() == KEPT_LINES {
            kept.remove(0);
        }
        kept.push(line);
    }
}

/// `http://ADDR` from a `listening on http://ADDR` log line.
fn listening_url(line: &str) -> Option<String> {
    let start = line.find("listening on http://")? + "listening on ".len();
    let url: String = line[start..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"' && *c != ';')
        .collect();
    (url.len() > "http://".len()).then_some(url)
}

/// The directory replicas of a phase keep their lock files in.
pub(super) fn phase_dir(root: &Path, replicas: usize) -> PathBuf {
    root.join(format!("phase-{replicas}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_and_log_lines() {
        let c = replica_config(
            "postgres://u@h/db?options=-c%20search_path%3Ds",
            2,
            40,
            DeviceRelay::Own,
        );
        let parsed: toml::Value = toml::from_str(&c).unwrap();
        assert_eq!(parsed["sync"]["device_relay"].as_str(), Some("own"));
        assert_eq!(parsed["store"]["backend"].as_str(), Some("postgres"));
        assert_eq!(parsed["sync"]["accept_tokens"].as_array().unwrap().len(), 2);
        assert_eq!(
            listening_url(
                "2026-12-05T18:00:00Z  INFO kdelta::daemon: listening on http://127.0.0.1:4242"
            )
            .as_deref(),
            Some("http://127.0.0.1:4242")
        );
        assert_eq!(listening_url("starting"), None);
    }
}
