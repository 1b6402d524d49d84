//! The outbound side: one task per `[[sync.peers]]` entry that connects, runs the initiator
//! side of a continuous session, and reconnects with exponential backoff and jitter.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kdelta_sync::Store;
use kdelta_sync::protocol::{SessionStats, SyncConfig, SyncSession};
use rand::Rng;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::frames::{WsSink, WsSource};
use super::{Direction, PeerConfig, Registry};
use crate::metrics::Metrics;

const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Starts one task per configured peer on `tracker`; they stop on `shutdown`.
pub fn spawn_peers(
    peers: &[PeerConfig],
    registry: &Arc<Registry>,
    store: &Store,
    metrics: &Arc<Metrics>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    for peer in peers {
        let Ok(url) = peer.ws_url() else {
            continue; // refused by validate()
        };
        let stats = registry.stats_for(&peer.name, Direction::Outbound, Some(&url));
        let config = SyncConfig {
            token: Some(peer.token.clone()),
            ..registry.session_config()
        };
        tracker.spawn(run_peer(
            registry.clone(),
            peer.name.clone(),
            url,
            config,
            store.clone(),
            stats,
            metrics.clone(),
            shutdown.clone(),
        ));
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_peer(
    registry: Arc<Registry>,
    name: String,
    url: String,
    config: SyncConfig,
    store: Store,
    stats: Arc<SessionStats>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut backoff = BACKOFF_MIN;
    while !shutdown.is_cancelled() {
        let ok = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = connect(&url, &config) => match r {
                Ok(socket) => {
                    tracing::info!(peer = %name, %url, "sync link up");
                    let (sink, source) = socket.split();
                    let session = SyncSession::initiator(store.clone(), config.clone())
                        .with_stats(stats.clone());
                    let stop = shutdown.clone();
                    match session
                        .run(WsSink::new(sink), WsSource(source), async move { stop.cancelled().await })
                        .await
                    {
                        Ok(summary) => {
                            tracing::info!(peer = %name, end = ?summary.end, "sync session ended");
                            true
                        }
                        Err(e) => {
                            metrics.sync_session_failed(Direction::Outbound);
                            tracing::warn!(peer = %name, "sync session failed: {e}");
                            stats.snapshot().last_sync_ms.is_some() && e.is_transient()
                        }
                    }
                }
                Err(e) => {
                    metrics.sync_session_failed(Direction::Outbound);
                    tracing::warn!(peer = %name, %url, "cannot connect for sync: {e}");
                    registry.connect_failed(&name, "connect", e);
                    false
                }
            }
        };
        if ok {
            backoff = BACKOFF_MIN;
        }
        // Full jitter on the upper half: spreads reconnects of many devices to one hub.
        let ms = backoff.as_millis() as u64;
        let wait = Duration::from_millis(rand::rng().random_range(ms / 2..=ms));
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
        if !ok {
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect(url: &str, config: &SyncConfig) -> Result<Socket, String> {
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    if let Some(token) = &config.token {
        let value = http::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| "the token is not a valid header value".to_owned())?;
        request
            .headers_mut()
            .insert(http::header::AUTHORIZATION, value);
    }
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(config.max_frame_bytes))
        .max_frame_size(Some(config.max_frame_bytes));
    let connecting = tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true);
    match tokio::time::timeout(config.handshake_timeout, connecting).await {
        Err(_) => Err("timed out".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok((socket, _))) => Ok(socket),
    }
}
