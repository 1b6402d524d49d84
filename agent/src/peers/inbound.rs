//! The inbound side of sync: who may open a session on `/v1/sync` (a verified client
//! certificate listed in `[[sync.accept_certs]]`, or a bearer token from `accept_tokens`,
//! checked again in its `Hello`) and the responder session over the upgraded WebSocket. The
//! HTTP route itself (status codes, the upgrade) is `api/sync.rs`; this module answers with
//! values, never with HTTP.

use std::sync::Arc;

use axum::extract::ws::WebSocket;
use futures::StreamExt;
use kdelta_sync::protocol::{
    Authenticator, Direction, PeerCredentials, PeerRole, SessionStats, SyncConfig, SyncSession,
};
use kdelta_sync::{ActorId, SyncStore};
use tokio_util::sync::CancellationToken;

use super::Registry;
use super::frames::{WsSink, WsSource};
use crate::internal_events::{InternalEvent, SyncRefused, SyncSessionEnded, SyncSessionFailed};
use crate::metrics::Metrics;
use crate::tls::ClientCert;

/// Why an inbound peer is not let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No token or certificate is accepted at all: inbound sync is off.
    Disabled,
    /// The credentials presented are not accepted (the reason, for the peer).
    Unauthorized(&'static str),
}

/// An inbound peer that may open a session, with the settings it runs under.
pub struct InboundPeer {
    auth: Arc<dyn Authenticator>,
    session: SyncConfig,
    /// Cancelled when the accepted tokens or certificates change.
    epoch: CancellationToken,
    /// The credential's configured name (token or certificate), for per-peer limits.
    principal: String,
    /// What the credential may send (`device`: its own actor's changes only).
    role: PeerRole,
}

/// Decides whether a peer presenting `client_cert` (verified by the TLS listener) and
/// `bearer` (the `Authorization: Bearer` token) may sync. A refusal is counted and logged.
pub fn admit(
    registry: &Registry,
    metrics: &Metrics,
    client_cert: Option<ClientCert>,
    bearer: Option<&str>,
) -> Result<InboundPeer, Refusal> {
    let inbound = registry.inbound();
    if !inbound.enabled() {
        return Err(Refusal::Disabled);
    }
    let cert_principal = client_cert.and_then(|c| inbound.cert_principal(&c));
    let principal: String;
    let auth: Arc<dyn Authenticator> = match (cert_principal, inbound.auth.clone()) {
        (Some(name), _) => {
            principal = name.clone();
            Arc::new(move |_: &PeerCredentials<'_>| Some(name.clone()))
        }
        (None, token_auth) => {
            let creds = PeerCredentials {
                actor: ActorId([0; 16]),
                peer_name: "",
                token: bearer,
            };
            let named = token_auth.and_then(|auth| {
                let name = token_name(&*auth, bearer, &creds)?;
                Some((auth, name))
            });
            match named {
                Some((auth, name)) => {
                    principal = name;
                    auth
                }
                None => {
                    let peer = if client_cert.is_some() {
                        "(certificate not allowed)"
                    } else {
                        "(unauthenticated)"
                    };
                    let why = match (client_cert.is_some(), bearer.is_some()) {
                        (true, _) => {
                            "the client certificate is not in [[sync.accept_certs]] and no accepted bearer token was sent"
                        }
                        (false, true) => "the bearer token is not accepted for sync",
                        (false, false) => "no bearer token and no allowed client certificate",
                    };
                    SyncRefused { peer, why }.emit(metrics);
                    return Err(Refusal::Unauthorized(why));
                }
            }
        }
    };
    let role = inbound.role(&principal);
    Ok(InboundPeer {
        auth,
        session: inbound.session,
        epoch: inbound.epoch,
        role,
        principal,
    })
}

/// The name `auth` gives a bearer token, if one was sent and is accepted.
fn token_name(
    auth: &dyn Authenticator,
    bearer: Option<&str>,
    creds: &PeerCredentials<'_>,
) -> Option<String> {
    bearer.and_then(|_| auth.authenticate(creds))
}

impl InboundPeer {
    /// The name of the credential the peer was admitted with.
    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// The largest frame (and WebSocket message) this session accepts, bytes.
    pub fn max_frame_bytes(&self) -> usize {
        self.session.max_frame_bytes
    }

    /// Runs the responder side of a session over `socket` until the peer leaves, `shutdown`
    /// fires or the accepted credentials change. Its counters appear in the registry while
    /// it runs; a failure is counted and logged here. `store` is any [`SyncStore`]: the
    /// SQLite store of a device or hub, or a hub replica's change log on PostgreSQL.
    pub async fn serve<S: SyncStore>(
        self,
        socket: WebSocket,
        store: S,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) {
        let stats = Arc::new(SessionStats::new());
        registry.add_inbound(stats.clone());
        let (sink, source) = socket.split();
        let session = SyncSession::responder(store, self.session, self.auth)
            .with_peer_role(self.role)
            .with_stats(stats.clone());
        let epoch = self.epoch;
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
            Ok(summary) => SyncSessionEnded {
                direction: Direction::Inbound,
                peer: &stats
                    .snapshot()
                    .principal
                    .unwrap_or_else(|| "(unauthenticated)".to_owned()),
                end: &summary.end,
            }
            .emit(&metrics),
            Err(e) => {
                let peer = stats
                    .snapshot()
                    .principal
                    .unwrap_or_else(|| "(unauthenticated)".to_owned());
                SyncSessionFailed {
                    direction: Direction::Inbound,
                    peer: &peer,
                    url: None,
                    // A device credential presented by a second actor, or handed on by a
                    // forged succession record, is a credential refusal.
                    refused: matches!(
                        e.code(),
                        "unauthorized" | "credential_bound" | "forged_succession"
                    ),
                    error: &e,
                }
                .emit(&metrics);
            }
        }
        registry.finish_inbound(&stats);
    }
}
