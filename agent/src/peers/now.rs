//! `POST /v1/sync/now` (`kdelta sync now`): wakes outbound peers out of their backoff wait
//! and waits, bounded, until each one is connected and caught up or has failed.
//!
//! "Caught up" means: a session is up, the peer is known to hold everything this store held
//! when the request arrived, and we hold everything the peer is known to hold. "Failed"
//! means: a connection attempt or session that ended after the request arrived failed, and
//! no session is up. Writes made while waiting do not move the goal.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use kdelta_sync::protocol::LastError;
use kdelta_sync::{Store, VersionVector};
use serde::{Deserialize, Serialize};

use super::{Direction, Registry};
use crate::api::ApiError;
use crate::state::AppState;

/// Default and largest wait of one request.
const DEFAULT_WAIT: Duration = Duration::from_secs(30);
const MAX_WAIT: Duration = Duration::from_secs(600);
/// How often the peers' status is checked while waiting.
const POLL: Duration = Duration::from_millis(50);

/// Query of `POST /v1/sync/now`.
#[derive(Debug, Deserialize)]
pub struct NowQuery {
    /// Only this outbound peer.
    peer: Option<String>,
    /// How long to wait (`30s`, `2m`; default 30 s, at most 10 min).
    timeout: Option<String>,
}

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

/// `POST /v1/sync/now?peer=NAME&timeout=30s`: `{"ok": bool, "peers": [NowResult]}`; 404
/// `unknown_peer` when `peer` names no outbound peer.
pub async fn sync_now(
    State(state): State<AppState>,
    q: Result<Query<NowQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) =
        q.map_err(|e| ApiError::bad_request(format!("bad query string: {}", e.body_text())))?;
    let wait = match q.timeout.as_deref().map(str::trim) {
        None | Some("") => DEFAULT_WAIT,
        Some(t) => match humantime::parse_duration(t) {
            Ok(d) if !d.is_zero() && d <= MAX_WAIT => d,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "`timeout` must be a duration from 1ms to 10m such as 30s, got {:?}",
                    t.chars().take(32).collect::<String>()
                )));
            }
        },
    };
    let peer = q.peer.as_deref().map(str::trim).filter(|p| !p.is_empty());
    let names = outbound_names(&state.peers, &state.store, peer);
    if let Some(p) = peer
        && names.is_empty()
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_peer",
            format!("no outbound sync peer is named {p:?} (see GET /v1/sync/peers)"),
        ));
    }
    let woken = state.peers.wake(peer);
    tracing::info!(peers = ?woken, "sync now requested");
    let shutdown = state.shutdown.clone();
    let results = tokio::select! {
        r = wait_synced(&state.peers, &state.store, &names, wait) => r,
        _ = shutdown.cancelled() => {
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the agent is shutting down"));
        }
    };
    let ok = results.iter().all(|r| r.result == Outcome::Synced);
    Ok(Json(serde_json::json!({ "ok": ok, "peers": results })))
}

fn outbound_names(registry: &Registry, store: &Store, only: Option<&str>) -> Vec<String> {
    registry
        .status(store)
        .into_iter()
        .filter(|p| p.direction == Direction::Outbound && only.is_none_or(|o| o == p.name))
        .map(|p| p.name)
        .collect()
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
    let started_ms = now_ms();
    let goal: VersionVector = store.version_vector();
    let mut done: Vec<Option<NowResult>> = vec![None; names.len()];
    loop {
        let timed_out = started.elapsed() >= wait;
        let statuses = registry.status(store);
        let local = store.version_vector();
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

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
