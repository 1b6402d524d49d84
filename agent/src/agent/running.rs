//! [`RunningAgent`]: what [`Agent::start`](super::Agent::start) hands back — the shared
//! [`Agent`] handle, the tasks it spawned and the configuration in force. Reload is in
//! `reload.rs`, shutdown in `stop.rs`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::anyhow;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::parts::{Mqtt, Peers, Sources};
use crate::config::Config;
use crate::lockfile::DataDirLock;
use crate::logging::Logging;
use crate::sources::IngestQueue;
use crate::state::Agent;

/// A running agent. Drop it only after [`RunningAgent::shutdown`]: dropping it without
/// cancels the shutdown token (the loops stop) but neither drains nor closes the store.
pub struct RunningAgent {
    /// The shared parts (store, metrics, peers, sources status, readiness, shutdown token).
    pub(super) agent: Agent,
    /// What runs now (a part whose reload failed keeps its old section).
    pub(super) config: Config,
    /// The address the API listens on.
    pub(super) addr: SocketAddr,
    /// "API on …", for the status line.
    pub(super) api: String,
    /// The data directory's lock, released last.
    pub(super) lock: Option<DataDirLock>,
    /// The log filter's reload handle, when this process's logging belongs to this agent.
    pub(super) logging: Option<Logging>,
    /// Sources → batcher; closed at shutdown so the batcher commits what it holds and ends.
    pub(super) queue: Arc<IngestQueue>,
    /// Tells the batcher to drop what it cannot commit in time.
    pub(super) give_up: CancellationToken,
    /// Stops accepting HTTP connections (graceful: in-flight requests finish).
    pub(super) http_stop: CancellationToken,
    pub(super) server: JoinHandle<anyhow::Result<()>>,
    /// Queue → SQLite store (`None` on a PostgreSQL hub, which has no sources).
    pub(super) batcher: Option<JoinHandle<anyhow::Result<()>>>,
    /// The server's or the batcher's handle already returned (in [`RunningAgent::stopped`]),
    /// or there is no batcher: a `JoinHandle` must not be polled again.
    pub(super) server_done: bool,
    pub(super) batcher_done: bool,
    pub(super) sources: Sources,
    pub(super) peers: Peers,
    pub(super) mqtt: Mqtt,
    pub(super) device_twin: Option<JoinHandle<()>>,
    /// Why the agent must stop, once [`RunningAgent::stopped`] found out.
    pub(super) fatal: Option<anyhow::Error>,
}

/// Why [`RunningAgent::stopped`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The shutdown token was cancelled.
    Requested,
    /// A task the agent cannot run without (the HTTP server, the batcher) ended; the error
    /// is kept and returned by [`RunningAgent::shutdown`].
    Fatal,
}

impl RunningAgent {
    /// The address the HTTP API listens on (the real port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared handle (store, metrics, peers …).
    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Gives the agent this process's log filter handle, so a reload can change `log.level`.
    /// Without it a changed level is reported as needing a restart.
    pub fn set_logging(&mut self, logging: Logging) {
        self.logging = Some(logging);
    }

    /// The one-line summary of what runs (the log's `ready` line, systemd's `STATUS=`).
    pub fn summary(&self) -> String {
        let n = self.sources.count();
        let peers = self.config.sync.peers.len();
        let mut s = match self.agent.backend.kind() {
            crate::backend::BackendKind::Sqlite => format!(
                "recording {n} source{} into {}; {}",
                if n == 1 { "" } else { "s" },
                self.agent.data_dir.display(),
                self.api
            ),
            crate::backend::BackendKind::Postgres => {
                format!("hub replica on PostgreSQL; {}", self.api)
            }
        };
        if peers > 0 {
            s.push_str(&format!(
                "; {peers} sync peer{}",
                if peers == 1 { "" } else { "s" }
            ));
        }
        if self.mqtt.is_running() {
            s.push_str("; MQTT on");
        }
        s
    }

    /// Waits until the agent should stop: its shutdown token was cancelled, or the HTTP
    /// server or the batcher ended (logged as fatal). Cancel-safe.
    pub async fn stopped(&mut self) -> Stop {
        if self.fatal.is_some() {
            return Stop::Fatal;
        }
        enum Ended {
            Server(Result<anyhow::Result<()>, tokio::task::JoinError>),
            Batcher(Result<anyhow::Result<()>, tokio::task::JoinError>),
        }
        let batcher = &mut self.batcher;
        let ended = tokio::select! {
            () = self.agent.shutdown.cancelled() => return Stop::Requested,
            result = &mut self.server, if !self.server_done => Ended::Server(result),
            Some(result) = async { Some(batcher.as_mut()?.await) }, if !self.batcher_done => {
                Ended::Batcher(result)
            }
        };
        let fatal = match ended {
            Ended::Server(result) => {
                self.server_done = true;
                match result {
                    Ok(Ok(())) => anyhow!("the HTTP server stopped unexpectedly"),
                    Ok(Err(e)) => e,
                    Err(join) => anyhow!("the HTTP server task failed: {join}"),
                }
            }
            Ended::Batcher(result) => {
                self.batcher_done = true;
                match result {
                    Ok(Ok(())) => anyhow!("the batcher stopped unexpectedly"),
                    Ok(Err(e)) => e.context("committing readings from sources"),
                    Err(join) => anyhow!("the batcher task failed: {join}"),
                }
            }
        };
        tracing::error!("fatal: {fatal:#}; shutting down");
        self.fatal = Some(fatal);
        Stop::Fatal
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        // Without a shutdown: at least stop the loops; the store closes when its last
        // handle goes.
        self.agent.shutdown.cancel();
        self.http_stop.cancel();
        self.give_up.cancel();
    }
}
