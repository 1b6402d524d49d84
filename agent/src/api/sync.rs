//! The sync routes: `GET /v1/sync` (the WebSocket a peer syncs over), `GET /v1/sync/peers`
//! and `POST /v1/sync/now`. HTTP only — who is admitted, the sessions and what "synced" means
//! are `peers`'. Both backends serve `/v1/sync` with the same responder session: the
//! SQLite store, or a hub replica's change log on PostgreSQL.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use kdelta_sync::SyncStore;
use serde::Deserialize;

use super::{ApiError, ErrorCode};
use crate::access::sessions::SessionSlot;
use crate::backend::Backend;
use crate::peers::{InboundPeer, Outcome, Refusal};
use crate::state::Agent;
use crate::tls::TlsPeer;

/// Default and largest wait of one `POST /v1/sync/now`.
const DEFAULT_WAIT: Duration = Duration::from_secs(30);
const MAX_WAIT: Duration = Duration::from_secs(600);

/// `GET /v1/sync`: upgrades to a WebSocket and runs the responder side of a sync session.
///
/// The peer is admitted before the upgrade (see `peers::admit`): by a verified client
/// certificate in `[[sync.accept_certs]]` or an `Authorization: Bearer` token from
/// `accept_tokens`. Anything else is `401 unauthorized` (`403 sync_disabled` when inbound
/// sync is off) and the store is not touched.
pub async fn sync_socket(
    State(state): State<Agent>,
    TlsPeer(client_cert): TlsPeer,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let peer = match crate::peers::admit(&state.peers, &state.metrics, client_cert, bearer) {
        Ok(peer) => peer,
        Err(Refusal::Disabled) => {
            return ApiError::new(
                ErrorCode::SyncDisabled,
                "inbound sync is off: configure [sync] accept_tokens or accept_certs on this agent",
            )
            .into_response();
        }
        Err(Refusal::Unauthorized(why)) => {
            return ApiError::new(ErrorCode::Unauthorized, why).into_response();
        }
    };
    let slot = match state.guard.sync_slots.acquire(peer.principal()) {
        Ok(slot) => slot,
        Err(full) => {
            tracing::warn!(peer = peer.principal(), "inbound sync refused: {full}");
            return ApiError::new(ErrorCode::TooManySessions, full.to_string()).into_response();
        }
    };
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(e) => {
            return ApiError::new(
                ErrorCode::WebsocketRequired,
                format!("/v1/sync is a WebSocket endpoint: {e}"),
            )
            .into_response();
        }
    };
    match &state.backend {
        Backend::Sqlite(store) => serve_on(upgrade, peer, slot, store.clone(), state),
        #[cfg(feature = "postgres")]
        Backend::Postgres(hub) => serve_on(upgrade, peer, slot, hub.store.clone(), state),
    }
}

/// Upgrades to the WebSocket and runs the responder session on `store` (either backend's),
/// holding the session's place (`slot`) until it ends.
fn serve_on<S: SyncStore>(
    upgrade: WebSocketUpgrade,
    peer: InboundPeer,
    slot: SessionSlot,
    store: S,
    state: Agent,
) -> Response {
    let max = peer.max_frame_bytes();
    upgrade
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| async move {
            // The place is held for the whole session.
            let _slot = slot;
            peer.serve(
                socket,
                store,
                state.peers.clone(),
                state.metrics.clone(),
                state.shutdown.clone(),
            )
            .await
        })
}

/// `GET /v1/sync/peers`: every configured or connected peer.
pub async fn list_peers(State(state): State<Agent>) -> Result<Json<serde_json::Value>, ApiError> {
    let (local, bindings) = match &state.backend {
        Backend::Sqlite(store) => (store.version_vector(), store.credential_bindings().await?),
        #[cfg(feature = "postgres")]
        Backend::Postgres(hub) => {
            let unavailable = |e: kdelta_pg::PgError| ApiError::unavailable(e.to_string());
            let (local, bindings) =
                tokio::join!(hub.store.version_vector(), hub.store.credential_bindings());
            (local.map_err(unavailable)?, bindings.map_err(unavailable)?)
        }
    };
    Ok(Json(serde_json::json!({
        "peers": state.peers.status(&local),
        "credentials": state.peers.credentials(&bindings),
    })))
}

/// Query of `POST /v1/sync/now`.
#[derive(Debug, Deserialize)]
pub struct NowQuery {
    /// Only this outbound peer.
    peer: Option<String>,
    /// How long to wait (`30s`, `2m`; default 30 s, at most 10 min).
    timeout: Option<String>,
}

/// `POST /v1/sync/now?peer=NAME&timeout=30s`: wakes the outbound peers and waits until each
/// is synced or failed; `{"ok": bool, "peers": [NowResult]}`. `404 unknown_peer` when `peer`
/// names no outbound peer.
pub async fn sync_now(
    State(state): State<Agent>,
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
    let store = state.sqlite()?;
    let names = state.peers.outbound_names(store, peer);
    if let Some(p) = peer
        && names.is_empty()
    {
        return Err(ApiError::new(
            ErrorCode::UnknownPeer,
            format!("no outbound sync peer is named {p:?} (see GET /v1/sync/peers)"),
        ));
    }
    let woken = state.peers.wake(peer);
    tracing::info!(peers = ?woken, "sync now requested");
    let shutdown = state.shutdown.clone();
    let results = tokio::select! {
        r = crate::peers::wait_synced(&state.peers, store, &names, wait) => r,
        _ = shutdown.cancelled() => {
            return Err(ApiError::new(ErrorCode::Unavailable, "the agent is shutting down"));
        }
    };
    let ok = results.iter().all(|r| r.result == Outcome::Synced);
    Ok(Json(serde_json::json!({ "ok": ok, "peers": results })))
}
