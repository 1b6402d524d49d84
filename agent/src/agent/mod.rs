//! The agent as a library: [`Agent::start`] turns a [`Config`](crate::config::Config) into a
//! [`RunningAgent`] — store open, HTTP API listening, sources, sync peers, MQTT client and
//! device twin running — and the handle answers [`RunningAgent::local_addr`],
//! [`RunningAgent::reload`] and [`RunningAgent::shutdown`]. `kdelta start` is a thin binary
//! around it (`daemon.rs`: signals and systemd); tests start whole clusters in one process
//! on `127.0.0.1:0`.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use kdelta::agent::{Agent, Listen};
//! let mut config = kdelta::config::parse_toml("sources = []\n")?;
//! config.data_dir = "/tmp/kdelta-demo".into();
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let running = Agent::start(config, Listen::Bind("127.0.0.1:0".parse()?), shutdown).await?;
//! println!("API on http://{}", running.local_addr());
//! running.shutdown().await
//! # }
//! ```
//!
//! Startup ([`Agent::start`], `start.rs`) is setup, then run. Setup: data directory and its
//! lock → sources built and the MQTT/TLS settings checked (config errors before anything is
//! opened) → store opened → listener bound (when given an address) → the shared [`Agent`]
//! handle and the ingest queue built. Run: the HTTP server, the batcher, the sources, the
//! sync peers, the MQTT client and the device twin spawned; then ready.
//!
//! Shutdown ([`RunningAgent::shutdown`], `stop.rs`, at most [`SHUTDOWN_BUDGET`]): not ready
//! → stop accepting HTTP and finish in-flight requests ([`HTTP_DRAIN`]) while the sources
//! stop ([`SOURCES_SHUTDOWN_STOP`]) → close the ingest queue and let the batcher commit what
//! it holds → the MQTT client ([`MQTT_STOP`]) and the sync sessions ([`PEERS_STOP`]) end →
//! the device twin ([`TWIN_STOP`]) → close the store (the writer finishes queued writes) →
//! release the lock. Every step has its own limit so one stuck part cannot hold the others.
//!
//! Owns the life of an agent; must not know about signals or systemd (the binary's part).

mod diff;
mod parts;
mod reload;
mod running;
mod start;
mod stop;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::state::{Agent, AgentInner};
pub use diff::ConfigDiff;
pub use parts::{MQTT_STOP, Mqtt, PEERS_STOP, Part, Peers, SOURCES_RELOAD_STOP, Sources};
pub use running::{RunningAgent, Stop};

/// Name of the store's database file inside the data directory.
pub const DB_FILE: &str = "kdelta.db";
/// Everything after the stop request must fit in this (systemd's `TimeoutStopSec` is 20 s).
pub const SHUTDOWN_BUDGET: Duration = Duration::from_secs(10);
/// How long shutdown lets in-flight HTTP requests finish before closing their connections.
pub const HTTP_DRAIN: Duration = Duration::from_secs(5);
/// How long shutdown waits for the sources to stop (their queued readings are committed
/// either way).
pub const SOURCES_SHUTDOWN_STOP: Duration = Duration::from_secs(3);
/// How long shutdown waits for the device twin's loop.
pub const TWIN_STOP: Duration = Duration::from_secs(3);
/// Kept from the budget for closing the store after the batcher's last commit.
pub const STORE_CLOSE_RESERVE: Duration = Duration::from_secs(1);

/// Where the HTTP API listens.
#[derive(Debug)]
pub enum Listen {
    /// Bind this address during setup, after the store opened (so a second agent on the
    /// same data directory reports the lock, not a busy port). Port 0 picks a free port.
    Bind(SocketAddr),
    /// An already-bound listener (tests, socket activation).
    Bound(tokio::net::TcpListener),
}

impl From<SocketAddr> for Listen {
    fn from(addr: SocketAddr) -> Listen {
        Listen::Bind(addr)
    }
}

impl From<tokio::net::TcpListener> for Listen {
    fn from(listener: tokio::net::TcpListener) -> Listen {
        Listen::Bound(listener)
    }
}

/// The database path of a data directory.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DB_FILE)
}
