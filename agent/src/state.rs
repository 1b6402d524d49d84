//! The running agent's shared parts behind one cheap-to-clone handle, [`Agent`]: the open
//! store (SQLite, or PostgreSQL on a hub replica: [`Backend`]), metrics, the sync peer registry, the sources' status list, readiness and the
//! shutdown token. The HTTP handlers, the MQTT client, the systemd status line and the
//! reload code all take this one handle instead of a bundle each.
//!
//! A leaf: it names the types it holds and nothing that uses it (`api`, `mqtt`, `agent`), so
//! the module graph stays one-way. Starting and stopping an agent lives in [`crate::agent`].

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use kdelta_sync::Store;
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, NotOnThisBackend};
use crate::metrics::Metrics;
use crate::peers::Registry;
use crate::sources::SourceStatus;

/// A handle on a running agent's shared parts. Cloning copies one `Arc`; fields are read
/// through `Deref` (`agent.backend`, `agent.metrics`).
#[derive(Clone)]
pub struct Agent(Arc<AgentInner>);

/// What every part of a running agent shares. Built once by `Agent::start` (or by a test or a
/// benchmark that runs only some parts); never changed after, except through the interior
/// mutability of its fields.
pub struct AgentInner {
    /// The open store: SQLite, or a hub replica's PostgreSQL database.
    pub backend: Backend,
    /// Prometheus metrics of this agent (one registry per agent, so in-process clusters do
    /// not mix their figures).
    pub metrics: Arc<Metrics>,
    /// When the agent started (uptime in `/v1/status`).
    pub started: Instant,
    /// The data directory, absolute (disk-usage figures, the MQTT outbox cursor).
    pub data_dir: PathBuf,
    /// `device_name`: MQTT topics and client id, the device twin's key.
    pub device: String,
    /// Status of each source, updated by the scheduler (shared with the device twin).
    pub sources: Arc<RwLock<Vec<SourceStatus>>>,
    /// MQTT ingest's row in `GET /v1/sources` and `kdelta sources` (name and kind `mqtt`):
    /// set by the MQTT client while it ingests (topics or rules), `None` otherwise.
    pub mqtt_ingest: Arc<RwLock<Option<SourceStatus>>>,
    /// True once startup finished (listener bound, sources started); false when draining.
    pub ready: AtomicBool,
    /// Limit for request bodies, bytes (`api.max_body_bytes`; needs a restart).
    pub max_body_bytes: usize,
    /// Cancelled when the agent starts draining: long-lived responses (the SSE event stream)
    /// end on it, and the MQTT client, the peers and the device twin stop on children of it.
    pub shutdown: CancellationToken,
    /// Sync settings and the status of every sync peer.
    pub peers: Arc<Registry>,
    /// Who may call the API and the listener's abuse limits (`api::guard`).
    pub guard: Arc<crate::access::ApiGuard>,
    /// Whether the wall clock is trusted (`/v1/status`); kept with the SQLite store, whose
    /// time reference it feeds (`None` on a PostgreSQL hub, whose replicas share the
    /// database's clock).
    pub clock: Option<Arc<crate::clock::ClockMonitor>>,
    /// What retention last did (`/v1/status`).
    pub retention: Arc<crate::retention::RetentionState>,
}

impl Agent {
    /// Wraps the shared parts into a handle.
    pub fn new(inner: AgentInner) -> Agent {
        Agent(Arc::new(inner))
    }
}

impl AgentInner {
    /// The SQLite store, for what only it serves (twins, readings timing, backups); on a
    /// PostgreSQL hub the error answers `501 not_on_this_backend`.
    pub fn sqlite(&self) -> Result<&Store, NotOnThisBackend> {
        self.backend.sqlite().ok_or_else(|| NotOnThisBackend {
            what: "this request".to_owned(),
        })
    }
}

impl Deref for Agent {
    type Target = AgentInner;

    fn deref(&self) -> &AgentInner {
        &self.0
    }
}

/// The name the dashboard module (changed on another branch) still uses for [`Agent`].
pub type AppState = Agent;
