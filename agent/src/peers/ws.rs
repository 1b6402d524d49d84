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
use crate::tls::TlsPeer;

/// `GET /v1/sync`: upgrades to a WebSocket and runs the responder side of a sync session.
///
/// The peer is accepted, before the upgrade, by a verified client certificate listed in
/// `[[sync.accept_certs]]` (mutual TLS; it is then known by that entry's name) or by an
/// `Authorization: Bearer` token from `accept_tokens` (checked again in its `Hello`).
/// Anything else is refused with 401 and counted; the store is not touched.
pub async fn sync_socket(
    State(state): State<AppState>,
    TlsPeer(client_cert): TlsPeer,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let inbound = state.peers.inbound();
    if !inbound.enabled() {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "sync_disabled",
            "inbound sync is off: configure [sync] accept_tokens or accept_certs on this agent",
        )
        .into_response();
    }
    let cert_principal = client_cert.and_then(|c| inbound.cert_principal(&c));
    let auth: Arc<dyn Authenticator> = match (cert_principal, inbound.auth.clone()) {
        (Some(name), _) => Arc::new(move |_: &PeerCredentials<'_>| Some(name.clone())),
        (None, token_auth) => {
            let token = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            let creds = PeerCredentials {
                actor: ActorId([0; 16]),
                peer_name: "",
                token,
            };
            match token_auth {
                Some(auth) if token.is_some() && auth.authenticate(&creds).is_some() => auth,
                _ => {
                    let peer = if client_cert.is_some() {
                        "(certificate not allowed)"
                    } else {
                        "(unauthenticated)"
                    };
                    state.metrics.sync_refused(Direction::Inbound, peer);
                    let why = match (client_cert.is_some(), token.is_some()) {
                        (true, _) => {
                            "the client certificate is not in [[sync.accept_certs]] and no accepted bearer token was sent"
                        }
                        (false, true) => "the bearer token is not accepted for sync",
                        (false, false) => "no bearer token and no allowed client certificate",
                    };
                    tracing::warn!(peer, "inbound sync refused: {why}");
                    return ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", why)
                        .into_response();
                }
            }
        }
    };
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
            let session =
                SyncSession::responder(state.store.clone(), config, auth).with_stats(stats.clone());
            let shutdown = state.shutdown.clone();
            let result = session
                .run(WsSink::new(sink), WsSource(source), async move {
                    // Shutdown, or a reload changed the accepted tokens or certificates.
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = epoch.cancelled() => {}
                    }
                })
                .await;
            match result {
                Ok(summary) => tracing::info!(end = ?summary.end, "inbound sync session ended"),
                Err(e) => {
                    let peer = stats
                        .snapshot()
                        .principal
                        .unwrap_or_else(|| "(unauthenticated)".to_owned());
                    state.metrics.sync_session_failed(Direction::Inbound, &peer);
                    if e.code() == "unauthorized" {
                        state.metrics.sync_refused(Direction::Inbound, &peer);
                    }
                    tracing::warn!(peer, "inbound sync session failed: {e}");
                }
            }
            state.peers.finish_inbound(&stats);
        })
}

/// `GET /v1/sync/peers`: every configured or connected peer.
pub async fn list_peers(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "peers": state.peers.status(&state.store) }))
}
