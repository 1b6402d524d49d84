//! The inbound side: `GET /v1/sync` (WebSocket upgrade) and `GET /v1/sync/peers`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use kdelta_sync::ActorId;
use kdelta_sync::protocol::{Authenticator, PeerCredentials, SessionStats, SyncSession};

use super::Direction;
use super::frames::{WsSink, WsSource};
use crate::api::ApiError;
use crate::state::AppState;

/// `GET /v1/sync`: upgrades to a WebSocket and runs the responder side of a sync session.
/// The peer authenticates with the token in its `Hello` (and, when it sends one, an
/// `Authorization: Bearer` header, checked before the upgrade).
pub async fn sync_socket(
    State(state): State<AppState>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let inbound = state.peers.inbound();
    let Some(auth) = inbound.auth else {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "sync_disabled",
            "inbound sync is off: configure [sync] accept_tokens on this agent",
        )
        .into_response();
    };
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let creds = PeerCredentials {
            actor: ActorId([0; 16]),
            peer_name: "",
            token,
        };
        if token.is_none() || auth.authenticate(&creds).is_none() {
            state.metrics.sync_refused();
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the bearer token is not accepted for sync",
            )
            .into_response();
        }
    }
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(e) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "websocket_required",
                format!("/v1/sync is a WebSocket endpoint: {e}"),
            )
            .into_response();
        }
    };
    let config = inbound.session;
    let epoch = inbound.epoch;
    let max = config.max_frame_bytes;
    upgrade
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| async move {
            let stats = Arc::new(SessionStats::new());
            state.peers.add_inbound(stats.clone());
            let (sink, source) = socket.split();
            let auth: Arc<dyn Authenticator> = auth;
            let session =
                SyncSession::responder(state.store.clone(), config, auth).with_stats(stats.clone());
            let shutdown = state.shutdown.clone();
            let result = session
                .run(WsSink::new(sink), WsSource(source), async move {
                    // Shutdown, or a reload changed the accepted tokens.
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = epoch.cancelled() => {}
                    }
                })
                .await;
            match result {
                Ok(summary) => tracing::info!(end = ?summary.end, "inbound sync session ended"),
                Err(e) => {
                    state.metrics.sync_session_failed(Direction::Inbound);
                    tracing::warn!("inbound sync session failed: {e}");
                }
            }
            state.peers.finish_inbound(&stats);
        })
}

/// `GET /v1/sync/peers`: every configured or connected peer.
pub async fn list_peers(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "peers": state.peers.status(&state.store) }))
}
