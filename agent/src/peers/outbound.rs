//! The outbound side: one task per `[[sync.peers]]` entry that connects (`ws://`, or
//! `wss://` through rustls with the peer's CA and client certificate), runs the initiator
//! side of a continuous session, and reconnects with exponential backoff and jitter. A wake
//! from `kdelta sync now` ends the backoff wait early. [`sync_once`] is one connection and
//! one session of the same code, without the retry loop (`kdelta bench fleet`'s devices).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kdelta_sync::Store;
use kdelta_sync::protocol::{
    Direction, ProtocolError, SessionStats, SessionSummary, SyncConfig, SyncSession,
};
use rand::Rng;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::frames::{WsSink, WsSource};
use super::{PeerConfig, Registry};
use crate::internal_events::{InternalEvent, SyncSessionEnded, SyncSessionFailed};
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
    for (i, peer) in peers.iter().enumerate() {
        let Ok(url) = peer.ws_url() else {
            continue; // refused by validate()
        };
        let stats = registry.stats_for(&peer.name, Direction::Outbound, Some(&url));
        let config = SyncConfig {
            token: peer.token.clone(),
            ..registry.session_config()
        };
        let target = Target {
            name: peer.name.clone(),
            url,
            key: format!("sync.peers[{i}]"),
            peer: peer.clone(),
        };
        tracker.spawn(run_peer(
            registry.clone(),
            target,
            config,
            store.clone(),
            stats,
            metrics.clone(),
            shutdown.clone(),
        ));
    }
}

/// Where one peer task connects to.
struct Target {
    name: String,
    url: String,
    /// The entry's dotted config key, named in TLS file errors.
    key: String,
    peer: PeerConfig,
}

async fn run_peer(
    registry: Arc<Registry>,
    target: Target,
    config: SyncConfig,
    store: Store,
    stats: Arc<SessionStats>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let Target { name, url, .. } = &target;
    let mut wake = registry.waker(name);
    let mut backoff = BACKOFF_MIN;
    while !shutdown.is_cancelled() {
        // A wake that arrives from here on cuts the next backoff wait short.
        wake.borrow_and_update();
        let ok = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = connect(&target, &config) => match r {
                Ok(socket) => {
                    tracing::info!(peer = %name, %url, "sync link up");
                    let before = Progress::of(&stats);
                    let stop = shutdown.clone();
                    match run_session(socket, store.clone(), config.clone(), stats.clone(), async move {
                        stop.cancelled().await
                    })
                    .await
                    {
                        Ok(summary) => {
                            SyncSessionEnded {
                                direction: Direction::Outbound,
                                peer: name,
                                end: &summary.end,
                            }
                            .emit(&metrics);
                            Progress::of(&stats).beyond(before)
                        }
                        Err(e) => {
                            SyncSessionFailed {
                                direction: Direction::Outbound,
                                peer: name,
                                url: None,
                                refused: e.code() == "unauthorized" || e.code() == "refused",
                                error: &e,
                            }
                            .emit(&metrics);
                            Progress::of(&stats).beyond(before)
                        }
                    }
                }
                Err(e) => {
                    SyncSessionFailed {
                        direction: Direction::Outbound,
                        peer: name,
                        url: Some(url.as_str()),
                        refused: e.code == "refused",
                        error: &e.message,
                    }
                    .emit(&metrics);
                    registry.connect_failed(name, e.code, e.message);
                    false
                }
            }
        };
        // Only real progress resets the backoff: a link that connects and then fails the
        // same way every time (a refused page, a peer that drops us) backs off like one
        // that cannot connect at all.
        if ok {
            backoff = BACKOFF_MIN;
        }
        // Full jitter on the upper half: spreads reconnects of many devices to one hub.
        let ms = backoff.as_millis() as u64;
        let wait = Duration::from_millis(rand::rng().random_range(ms / 2..=ms));
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
            Ok(()) = wake.changed() => {
                tracing::info!(peer = %name, "woken for sync now: connecting");
                backoff = BACKOFF_MIN;
                continue;
            }
        }
        if !ok {
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

/// One initiator session over an open socket, until `config.mode` ends it, the peer leaves,
/// `shutdown` completes (a `Bye` is sent) or an error.
async fn run_session(
    socket: Socket,
    store: Store,
    config: SyncConfig,
    stats: Arc<SessionStats>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<SessionSummary, ProtocolError> {
    let (sink, source) = socket.split();
    SyncSession::initiator(store, config)
        .with_stats(stats)
        .run(WsSink::new(sink), WsSource(source), shutdown)
        .await
}

/// Why [`sync_once`] failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncOnceError {
    /// No session started: `code` is `connect`, `tls` or `refused`, as in the peer status.
    #[error("connecting to {url}: {message}")]
    Connect {
        /// The WebSocket URL tried.
        url: String,
        /// `connect`, `tls` or `refused`.
        code: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The session started and failed.
    #[error("sync session with {url}: {error}")]
    Session {
        /// The WebSocket URL.
        url: String,
        /// The protocol's error.
        error: ProtocolError,
    },
}

/// Connects to `peer` once (as the peer tasks do: TLS, token, handshake timeout) and runs one
/// initiator session with `config` (its `token` is taken from `peer`), recording into
/// `stats`. Ends when `config.mode` says (`OneShot`: both sides caught up), when the peer
/// leaves, or when `shutdown` completes (a `Bye` is sent). No retry, no backoff.
pub async fn sync_once(
    peer: &PeerConfig,
    config: SyncConfig,
    store: Store,
    stats: Arc<SessionStats>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<SessionSummary, SyncOnceError> {
    let url = peer.ws_url().map_err(|message| SyncOnceError::Connect {
        url: peer.url.clone(),
        code: "connect",
        message,
    })?;
    let target = Target {
        name: peer.name.clone(),
        url: url.clone(),
        key: format!("peer {:?}", peer.name),
        peer: peer.clone(),
    };
    let config = SyncConfig {
        token: peer.token.clone(),
        ..config
    };
    let socket = connect(&target, &config)
        .await
        .map_err(|e| SyncOnceError::Connect {
            url: url.clone(),
            code: e.code,
            message: e.message,
        })?;
    run_session(socket, store, config, stats, shutdown)
        .await
        .map_err(|error| SyncOnceError::Session { url, error })
}

/// What a session achieved, from the peer's cumulative counters: changes of the peer's
/// stored here, and the last time both sides were in sync (live mode, or an ack in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    applied: u64,
    last_sync_ms: Option<u64>,
}

impl Progress {
    fn of(stats: &SessionStats) -> Progress {
        let s = stats.snapshot();
        Progress {
            applied: s.changes_applied,
            last_sync_ms: s.last_sync_ms,
        }
    }

    /// True when the session stored something new or got in sync since `before`.
    fn beyond(self, before: Progress) -> bool {
        self.applied > before.applied || self.last_sync_ms != before.last_sync_ms
    }
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A failed connection attempt: `code` is `connect`, `tls` (the peer's certificate is not
/// trusted, or TLS files are unusable) or `refused` (the peer refused our credentials).
struct ConnectError {
    code: &'static str,
    message: String,
}

impl ConnectError {
    fn new(code: &'static str, message: impl Into<String>) -> ConnectError {
        ConnectError {
            code,
            message: message.into(),
        }
    }
}

async fn connect(target: &Target, config: &SyncConfig) -> Result<Socket, ConnectError> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let tls = target
        .peer
        .tls_config(&target.key)
        .map_err(|e| ConnectError::new("tls", e.to_string()))?;
    let mut request = target
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| ConnectError::new("connect", e.to_string()))?;
    if let Some(token) = &config.token {
        let value = http::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| ConnectError::new("connect", "the token is not a valid header value"))?;
        request
            .headers_mut()
            .insert(http::header::AUTHORIZATION, value);
    }
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(config.max_frame_bytes))
        .max_frame_size(Some(config.max_frame_bytes));
    let connector = match tls {
        Some(tls) => Connector::Rustls(tls),
        None => Connector::Plain,
    };
    let connecting = tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(ws_config),
        true,
        Some(connector),
    );
    match tokio::time::timeout(config.handshake_timeout, connecting).await {
        Err(_) => Err(ConnectError::new("connect", "timed out")),
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(WsError::Http(response))) => {
            let status = response.status();
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned())
                .unwrap_or_default();
            let code = if status == http::StatusCode::UNAUTHORIZED
                || status == http::StatusCode::FORBIDDEN
            {
                "refused"
            } else {
                "connect"
            };
            Err(ConnectError::new(
                code,
                format!("the peer answered HTTP {status}: {body}"),
            ))
        }
        Ok(Err(e)) => Err(match crate::tls::describe_handshake_error(&e) {
            Some(tls) if tls.contains("refused the TLS handshake") => {
                ConnectError::new("refused", tls)
            }
            Some(tls) => ConnectError::new("tls", tls),
            None => ConnectError::new("connect", e.to_string()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session that connects and fails without storing anything or getting in sync is no
    /// progress: the backoff keeps growing (it used to reset on any transient error once
    /// the peer had ever synced).
    #[test]
    fn only_real_progress_resets_the_backoff() {
        let before = Progress {
            applied: 5,
            last_sync_ms: Some(10),
        };
        assert!(!before.beyond(before));
        assert!(
            Progress {
                applied: 6,
                ..before
            }
            .beyond(before)
        );
        assert!(
            Progress {
                last_sync_ms: Some(11),
                ..before
            }
            .beyond(before)
        );
        assert_eq!(
            Progress::of(&SessionStats::new()),
            Progress {
                applied: 0,
                last_sync_ms: None
            }
        );
    }
}
