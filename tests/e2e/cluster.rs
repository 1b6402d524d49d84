//! In-process agents for multi-agent tests: each [`Node`] is a whole agent started with
//! `kdelta::agent::Agent::start` in this test process, in its own temp dir, listening on
//! `127.0.0.1:0`; its address comes from `RunningAgent::local_addr()`, not from a log line.
//! Clusters of them start in milliseconds and need no binary. What needs a real process
//! (kill -9, signals, systemd notify, the lock across processes) stays with
//! [`super::harness::Agent`].
//!
//! Run these tests on a multi-thread runtime: the agents' loops share it with the test.
//! `KDELTA_TEST_LOG=debug` prints the agents' logs (all nodes in one stream).

use std::path::{Path, PathBuf};
use std::time::Duration;

use kdelta::agent::{Agent, ConfigDiff, Listen, RunningAgent};
use tokio_util::sync::CancellationToken;

use super::harness::{Endpoint, QUIET_CONFIG};

/// Builds a [`Node`].
pub struct NodeBuilder {
    dir: Option<PathBuf>,
    config: String,
}

impl NodeBuilder {
    /// Uses `dir` (its `data/` subdirectory holds the store) instead of a new temp dir, e.g.
    /// to restart on the data of a node that was stopped.
    pub fn dir(mut self, dir: &Path) -> NodeBuilder {
        self.dir = Some(dir.to_path_buf());
        self
    }

    /// The configuration, as TOML (defaults for everything it does not set; no files, no
    /// `KDELTA_*` environment).
    pub fn config(mut self, toml: &str) -> NodeBuilder {
        self.config = toml.to_owned();
        self
    }

    /// Starts the node; panics with the error when it cannot start.
    pub async fn start(self) -> Node {
        init_test_log();
        let (tmp, dir) = match self.dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::tempdir().expect("temp dir");
                let d = t.path().to_path_buf();
                (Some(t), d)
            }
        };
        let config = node_config(&self.config, &dir);
        let listen = Listen::Bind("127.0.0.1:0".parse().expect("loopback address"));
        let running = Agent::start(config, listen, CancellationToken::new())
            .await
            .unwrap_or_else(|e| panic!("node did not start: {e:#}"));
        let scheme = if running.config().api.tls.is_some() {
            "https"
        } else {
            "http"
        };
        Node {
            url: format!("{scheme}://{}", running.local_addr()),
            running: Some(running),
            _tmp: tmp,
        }
    }
}

/// An agent running in this process. Dropping it without [`Node::stop`] cancels its loops
/// without draining (like a crash that loses nothing acknowledged).
pub struct Node {
    running: Option<RunningAgent>,
    url: String,
    _tmp: Option<tempfile::TempDir>,
}

impl Node {
    /// A builder with a fresh temp dir and [`QUIET_CONFIG`].
    pub fn builder() -> NodeBuilder {
        NodeBuilder {
            dir: None,
            config: QUIET_CONFIG.to_owned(),
        }
    }

    /// Starts a node with `toml` as configuration.
    pub async fn with_config(toml: &str) -> Node {
        Node::builder().config(toml).start().await
    }

    /// Takes the temp dir out of this node so it outlives it (for a restart on the same data).
    pub fn keep_dir(&mut self) -> Option<tempfile::TempDir> {
        self._tmp.take()
    }

    /// Reloads the agent with `toml` as its whole configuration (the data directory stays);
    /// returns what the agent found changed.
    pub async fn reload(&mut self, toml: &str) -> ConfigDiff {
        let running = self.running.as_mut().expect("the node runs");
        let dir = running
            .config()
            .data_dir
            .parent()
            .expect("the data dir is <dir>/data")
            .to_path_buf();
        running.reload(node_config(toml, &dir)).await
    }

    /// Shuts the agent down (drain, commit, close, unlock) within the agent's own budget;
    /// panics when it reports an error or overruns a generous deadline (20 s).
    pub async fn stop(self) {
        self.stop_within(Duration::from_secs(20)).await;
    }

    /// [`Node::stop`] with a deadline of `limit`.
    pub async fn stop_within(mut self, limit: Duration) {
        let running = self.running.take().expect("the node runs");
        match tokio::time::timeout(limit, running.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("shutdown failed: {e:#}"),
            Err(_) => panic!("the node did not stop within {limit:?}"),
        }
    }
}

impl Endpoint for Node {
    fn url(&self) -> &str {
        &self.url
    }
}

/// `toml` on the defaults, with the data directory `<dir>/data`.
fn node_config(toml: &str, dir: &Path) -> kdelta::config::Config {
    let mut config =
        kdelta::config::parse_toml(toml).unwrap_or_else(|e| panic!("node config: {e}\n{toml}"));
    config.data_dir = dir.join("data");
    config
}

/// Installs a test-writer subscriber once when `KDELTA_TEST_LOG` names a filter.
fn init_test_log() {
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
}
