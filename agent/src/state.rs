//! State shared by the HTTP API and the daemon's loops: the store, metrics, sources status,
//! readiness. Cheap to clone.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use kdelta_sync::Store;

use crate::metrics::Metrics;
use crate::sources::SourceStatus;

/// Everything the API handlers need.
#[derive(Clone)]
pub struct AppState {
    /// The open store.
    pub store: Store,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// When the agent started.
    pub started: Instant,
    /// The data directory (for disk-usage figures).
    pub data_dir: PathBuf,
    /// Status of each source, updated by the scheduler.
    pub sources: Arc<std::sync::RwLock<Vec<SourceStatus>>>,
    /// True once startup finished (listeners bound, sources started); false when draining.
    pub ready: Arc<AtomicBool>,
    /// Limit for request bodies, bytes.
    pub max_body_bytes: usize,
    /// Cancelled when the agent starts draining: long-lived responses (the SSE event stream)
    /// end on it, so graceful shutdown is not held open by a connected browser.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Sync settings and the status of every sync peer.
    pub peers: Arc<crate::peers::Registry>,
    /// Who may call the API and the listener's abuse limits (`api::guard`).
    pub guard: Arc<crate::access::ApiGuard>,
    /// Whether the wall clock is trusted (`/v1/status`).
    pub clock: Arc<crate::clock::ClockMonitor>,
}
