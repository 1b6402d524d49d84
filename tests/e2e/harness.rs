//! Test harness: runs the real `kdelta` binary in a temp data dir on `127.0.0.1:0`.
//!
//! [`Agent::builder`] writes a config file (by default `sources = []`, so only the test writes
//! to the store), starts `kdelta start --config … --data-dir … --listen 127.0.0.1:0` with the
//! temp dir as working directory, and waits (deadline 20 s) for the `listening on http://ADDR`
//! log line. A thread drains stderr into a buffer that failing assertions print. Everything
//! polls with a deadline; nothing sleeps and hopes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_kdelta");

/// How long an agent may take to announce its address.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// Config written when a test does not give its own: no sources, so the store holds only
/// what the test writes.
pub const QUIET_CONFIG: &str = "sources = []\n";

/// Builds an [`Agent`].
pub struct Builder {
    dir: Option<PathBuf>,
    config: String,
    env: Vec<(String, String)>,
    args: Vec<String>,
    before_exec: Option<String>,
}

impl Builder {
    /// Uses `dir` (its `data/` subdirectory holds the store) instead of a new temp dir, e.g.
    /// to restart on the data of an agent that was killed.
    pub fn dir(mut self, dir: &Path) -> Builder {
        self.dir = Some(dir.to_path_buf());
        self
    }

    /// Replaces the config file's content.
    pub fn config(mut self, toml: &str) -> Builder {
        self.config = toml.to_owned();
        self
    }

    /// Sets an environment variable for the agent.
    pub fn env(mut self, key: &str, value: &str) -> Builder {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Adds command-line arguments after `start …`.
    pub fn arg(mut self, a: &str) -> Builder {
        self.args.push(a.to_owned());
        self
    }

    /// Runs the agent from a shell that first runs `script` (in the agent's directory) and
    /// then `exec`s it, as scripts/start.sh does after its build: same process, same pid.
    pub fn before_exec(mut self, script: &str) -> Builder {
        self.before_exec = Some(script.to_owned());
        self
    }

    /// Starts the agent and waits until it listens; panics with its stderr otherwise.
    pub fn start(self) -> Agent {
        match self.try_start() {
            Ok(a) => a,
            Err(e) => panic!("{e}"),
        }
    }

    /// Starts the agent; `Err` (with stderr) when it exits or stays silent past the deadline.
    pub fn try_start(self) -> Result<Agent, String> {
        let (tmp, dir) = match self.dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::tempdir().map_err(|e| e.to_string())?;
                let d = t.path().to_path_buf();
                (Some(t), d)
            }
        };
        let config_path = dir.join("kdelta-test.toml");
        std::fs::write(&config_path, &self.config).map_err(|e| e.to_string())?;
        let data_dir = dir.join("data");
        let mut cmd = match &self.before_exec {
            None => Command::new(BIN),
            Some(script) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("{script}\nexec \"$0\" \"$@\""))
                    .arg(BIN);
                sh
            }
        };
        cmd.arg("start")
            .arg("--config")
            .arg(&config_path)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(&self.args)
            .current_dir(&dir)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("KDELTA_URL")
            // The interop suites' server addresses are the tests', not config overrides.
            .env_remove("KDELTA_POSTGRES")
            .env_remove("KDELTA_MOSQUITTO")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().map_err(|e| format!("cannot run {BIN}: {e}"))?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let pipe = child.stderr.take().expect("stderr is piped");
        let buf = stderr.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = listening_url(&line)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(url);
                }
                let mut b = buf.lock().unwrap_or_else(|p| p.into_inner());
                b.push_str(&line);
                b.push('\n');
            }
        });
        let mut agent = Agent {
            child,
            url: String::new(),
            dir,
            stderr,
            _tmp: tmp,
        };
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(url) => {
                    agent.url = url;
                    return Ok(agent);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stderr closed without the line: the process is exiting.
                    let status = agent.wait_exit(Duration::from_secs(5));
                    return Err(format!(
                        "kdelta exited ({status:?}) before listening:\n{}",
                        agent.stderr()
                    ));
                }
            }
            if let Ok(Some(status)) = agent.child.try_wait() {
                // Give the reader a moment to collect the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return Err(format!(
                    "kdelta exited ({status}) before listening:\n{}",
                    agent.stderr()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "kdelta did not log `listening on http://…` within {START_DEADLINE:?}:\n{}",
                    agent.stderr()
                ));
            }
        }
    }
}

/// The address in a `listening on http://ADDR` or `listening on https://ADDR` log line (ANSI
/// colour codes tolerated).
pub fn listening_addr(line: &str) -> Option<String> {
    let url = listening_url(line)?;
    Some(url.split_once("://")?.1.to_owned())
}

/// The base URL (`http://ADDR` or `https://ADDR`) in a `listening on …` log line.
pub fn listening_url(line: &str) -> Option<String> {
    let start = line.find("listening on http")? + "listening on ".len();
    let rest = &line[start..];
    let scheme = ["http://", "https://"]
        .into_iter()
        .find(|s| rest.starts_with(s))?;
    let addr: String = rest[scheme.len()..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '\u{1b}' && *c != '"' && *c != ';')
        .collect();
    (!addr.is_empty()).then(|| format!("{scheme}{addr}"))
}

/// Anything with an agent's base URL: a process ([`Agent`]) or an in-process
/// [`super::cluster::Node`]; the multi-agent helpers take either.
pub trait Endpoint {
    /// Base URL, `http://127.0.0.1:PORT` (or `https://…`).
    fn url(&self) -> &str;

    /// `url()` + `path`.
    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url())
    }
}

impl Endpoint for Agent {
    fn url(&self) -> &str {
        &self.url
    }
}

impl<E: Endpoint + ?Sized> Endpoint for &E {
    fn url(&self) -> &str {
        (**self).url()
    }
}

/// A running agent process. Killed (SIGKILL) when dropped.
pub struct Agent {
    child: Child,
    url: String,
    dir: PathBuf,
    stderr: Arc<Mutex<String>>,
    _tmp: Option<tempfile::TempDir>,
}

impl Agent {
    /// A builder with a fresh temp dir and [`QUIET_CONFIG`].
    pub fn builder() -> Builder {
        Builder {
            dir: None,
            config: QUIET_CONFIG.to_owned(),
            env: Vec::new(),
            args: Vec::new(),
            before_exec: None,
        }
    }

    /// Starts an agent with defaults.
    pub fn start() -> Agent {
        Agent::builder().start()
    }

    /// Base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `url()` + `path`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// The test's directory (holds `data/` and the config file).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The URL of its latest `listening on` line, once it logged more than one: the process
    /// re-executed itself (same PID) and listens again, on a new port (it was started on
    /// port 0).
    pub fn relistened_url(&self) -> Option<String> {
        let urls: Vec<String> = self.stderr().lines().filter_map(listening_url).collect();
        urls.last().filter(|_| urls.len() > 1).cloned()
    }

    /// Follows the process to the URL it listens on now ([`Agent::relistened_url`]).
    pub fn follow(&mut self, url: String) {
        self.url = url;
    }

    /// Everything it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Takes the temp dir out of this agent so it outlives it (for a restart on the same data).
    pub fn keep_dir(&mut self) -> Option<tempfile::TempDir> {
        self._tmp.take()
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn sigterm(&self) {
        // SAFETY: kill(2) with a pid we spawned and have not reaped.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
    }

    /// Waits for the process to exit, at most `timeout`; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `kdelta ARGS` to completion (at most `timeout`) in `dir`; returns exit status and
/// stderr.
pub fn run_to_end(args: &[&str], dir: &Path, timeout: Duration) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("KDELTA_POSTGRES")
        .env_remove("KDELTA_MOSQUITTO")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kdelta");
    let pipe = child.stderr.take().expect("stderr is piped");
    let reader = std::thread::spawn(move || std::io::read_to_string(pipe).unwrap_or_default());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = reader.join().unwrap_or_default();
    match status {
        Some(s) => (s.code(), stderr),
        None => (None, format!("(killed after {timeout:?})\n{stderr}")),
    }
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[test]
fn finds_the_address_in_log_lines() {
    assert_eq!(
        listening_addr(
            "2025-11-24T16:00:00Z  INFO kdelta::daemon: listening on http://127.0.0.1:40123"
        )
        .as_deref(),
        Some("127.0.0.1:40123")
    );
    assert_eq!(
        listening_addr("\u{1b}[32m INFO\u{1b}[0m listening on http://[::1]:7878\u{1b}[0m")
            .as_deref(),
        Some("[::1]:7878")
    );
    assert_eq!(
        listening_addr(
            r#"{"level":"INFO","fields":{"message":"listening on http://127.0.0.1:1"}}"#
        )
        .as_deref(),
        Some("127.0.0.1:1")
    );
    assert_eq!(listening_addr("starting"), None);
    assert_eq!(
        listening_url("INFO kdelta::daemon: listening on https://127.0.0.1:7443").as_deref(),
        Some("https://127.0.0.1:7443")
    );
}
