//! What upstream peers acknowledged, kept across restarts.
//!
//! Retention and the disk budget keep readings no `upstream = true` peer holds yet
//! ([`Registry::upstream_acked`]). What a peer holds is known from its sessions; without a
//! record, a restart while the hub is away would make everything count as unacknowledged,
//! and the budget's hard limit would drop readings the hub already holds — with gap records
//! falsely saying they were dropped at the source. So the vector each upstream peer was last
//! known to hold is stored in the store's `meta` (`local/upstream_acked/<peer name>`, not
//! replicated) by [`acked_loop`] — at most once per [`SAVE_EVERY`] per peer, and only when it
//! changed — and loaded at start ([`Registry::load_acked`]). Once a peer is reached again, its
//! session's vector replaces the record (a hub restored from an older backup holds less, and
//! says so at the handshake).
//!
//! Must not touch: sessions (it reads their counters only).

use std::time::Duration;

use kdelta_sync::{Store, VersionVector};
use tokio_util::sync::CancellationToken;

use super::Registry;

/// Most often one peer's record is written.
pub const SAVE_EVERY: Duration = Duration::from_secs(10);

/// The `meta` key prefix (under `local/`).
const PREFIX: &str = "upstream_acked/";

impl Registry {
    /// Loads the vectors upstream peers were last known to hold (stored by [`acked_loop`]):
    /// until a peer is reached in this process, [`upstream_acked`](Registry::upstream_acked)
    /// takes its record. An unreadable record is logged and ignored (that peer counts as
    /// holding nothing, as before records existed).
    pub async fn load_acked(&self, store: &Store) {
        let rows = match store.local_meta(PREFIX).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read what upstream peers acknowledged; readings count as unacknowledged until they are reached");
                return;
            }
        };
        let mut saved = self.saved_acks();
        for (key, value) in rows {
            let name = key.trim_start_matches(PREFIX).to_owned();
            match serde_json::from_slice::<VersionVector>(&value) {
                Ok(v) => {
                    tracing::debug!(peer = %name, "loaded what upstream peer {name:?} acknowledged");
                    saved.retain(|(n, _)| n != &name);
                    saved.push((name, v));
                }
                Err(e) => {
                    tracing::warn!(peer = %name, error = %e, "ignoring an unreadable record of what peer {name:?} acknowledged")
                }
            }
        }
    }
}

/// Stores, every [`SAVE_EVERY`], the vector of each upstream peer reached in this process
/// when it changed since it was last stored; once more when `cancel` fires (before the store
/// closes). A failed write (a full disk) is logged and tried again next time.
pub async fn acked_loop(
    registry: std::sync::Arc<Registry>,
    store: Store,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(SAVE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            _ = cancel.cancelled() => true,
            _ = tick.tick() => false,
        };
        save_changed(&registry, &store).await;
        if last {
            return;
        }
    }
}

/// Writes the records of upstream peers whose reached vector differs from their record.
pub(crate) async fn save_changed(registry: &Registry, store: &Store) {
    for (name, live) in registry.reached_upstream() {
        let stored = registry
            .saved_acks()
            .iter()
            .find(|(n, _)| n == &name)
            .map(|(_, v)| v.clone());
        if stored.as_ref() == Some(&live) {
            continue;
        }
        let value = match serde_json::to_vec(&live) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(peer = %name, error = %e, "cannot encode what peer {name:?} acknowledged");
                continue;
            }
        };
        match store
            .set_local_meta(&format!("{PREFIX}{name}"), value)
            .await
        {
            Ok(()) => {
                let mut saved = registry.saved_acks();
                saved.retain(|(n, _)| n != &name);
                saved.push((name, live));
            }
            Err(e) => {
                tracing::debug!(peer = %name, error = %e, "storing what peer {name:?} acknowledged failed; trying again later")
            }
        }
    }
}
