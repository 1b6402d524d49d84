//! What `POST /v1/sync/now` (`kdelta sync now`) waits for, after waking the outbound peers
//! out of their backoff wait: each one connected and caught up, or failed, within a bound.
//! The HTTP route is `api/sync.rs`.
//!
//! "Caught up" means: a session is up, the peer is known to hold everything this store held
//! when the request arrived, and we hold everything the peer is known to hold. "Failed"
//! means: a connection attempt or session that ended after the request arrived failed, and
//! no session is up. Writes made while waiting do not move the goal.

use std::time::Duration;

use kdelta_sync::protocol::{Direction, LastError};
use kdelta_sync::{Store, VersionVector};
use serde::Serialize;

use super::Registry;

/// How often the peers' status is checked while waiting.
const POLL: Duration = Duration::from_millis(50);

/// How one peer ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Connected and caught up both ways.
    Synced,
    /// An attempt after the request failed (see `error`).
    Failed,
    /// Neither within the wait.
    Timeout,
}

/// One peer in the answer of `POST /v1/sync/now`.
#[derive(Debug, Clone, Serialize)]
pub struct NowResult {
    /// Configured name.
    pub name: String,
    /// Its URL.
    pub url: Option<String>,
    /// What happened.
    pub result: Outcome,
    /// Milliseconds from the request until the result was known.
    pub elapsed_ms: u64,
    /// Changes the peer still lacks of what we held at the request, as far as known.
    pub lag_to_peer: u64,
    /// Changes we lack of the peer's, as far as known.
    pub lag_from_peer: u64,
    /// The failure, for `failed` (and the last one seen, for `timeout`).
    pub error: Option<LastError>,
}

impl Registry {
    /// The names of the outbound peers, or only `only` when it is one of them.
    pub fn outbound_names(&self, store: &Store, only: Option<&str>) -> Vec<String> {
        self.status(&store.version_vector())
            .into_iter()
            .filter(|p| p.direction == Direction::Outbound && only.is_none_or(|o| o == p.name))
            .map(|p| p.name)
            .collect()
    }
}

/// Waits at most `wait` until each outbound peer in `names` is caught up with what `store`
/// holds now, or has failed after now. Results keep the order of `names`.
pub async fn wait_synced(
    registry: &Registry,
    store: &Store,
    names: &[String],
    wait: Duration,
) -> Vec<NowResult> {
    let started = tokio::time::Instant::now();
    let started_ms = crate::time::now_ms_u64();
    let goal: VersionVector = store.version_vector();
    let mut done: Vec<Option<NowResult>> = vec![None; names.len()];
    loop {
        let timed_out = started.elapsed() >= wait;
        let local = store.version_vector();
        let statuses = registry.status(&local);
        for (slot, name) in done.iter_mut().zip(names) {
            if slot.is_some() {
                continue;
            }
            let Some(p) = statuses
                .iter()
                .find(|p| p.direction == Direction::Outbound && &p.name == name)
            else {
                // Removed while waiting (a reload): nothing more will happen.
                *slot = Some(NowResult {
                    name: name.clone(),
                    url: None,
                    result: Outcome::Failed,
                    elapsed_ms: started.elapsed().as_millis() as u64,
                    lag_to_peer: 0,
                    lag_from_peer: 0,
                    error: None,
                });
                continue;
            };
            let lag_to_peer = goal.changes_ahead_of(&p.stats.their_vector);
            let lag_from_peer = p.stats.their_vector.changes_ahead_of(&local);
            let failed_since = p
                .stats
                .last_error
                .as_ref()
                .filter(|e| e.at_ms >= started_ms && !p.connected);
            let result = if p.connected && lag_to_peer == 0 && lag_from_peer == 0 {
                Some(Outcome::Synced)
            } else if failed_since.is_some() {
                Some(Outcome::Failed)
            } else if timed_out {
                Some(Outcome::Timeout)
            } else {
                None
            };
            *slot = result.map(|result| NowResult {
                name: name.clone(),
                url: p.url.clone(),
                result,
                elapsed_ms: started.elapsed().as_millis() as u64,
                lag_to_peer,
                lag_from_peer,
                error: p.stats.last_error.clone(),
            });
        }
        if timed_out || done.iter().all(Option::is_some) {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    done.into_iter().flatten().collect()
}
