//! Sync with other agents over WebSocket: the `[sync]` config section, admission and the
//! responder session of inbound peers, outbound peer tasks with reconnect, and the per-peer
//! status behind `GET /v1/sync/peers`. The protocol itself is `kdelta_sync::protocol`; this
//! module only moves its frames over WebSocket binary messages. The HTTP routes are
//! `api/sync.rs`: nothing here answers HTTP.

mod acked;
mod config;
mod frames;
mod inbound;
mod now;
mod outbound;

use std::sync::{Arc, Mutex, RwLock};

use kdelta_sync::VersionVector;
use kdelta_sync::protocol::{
    Compression, Direction, LastError, PeerRole, SessionStats, StatsSnapshot, SyncConfig,
    TokenAuthenticator,
};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use acked::acked_loop;
pub use config::{AcceptCert, AcceptToken, PeerConfig, SyncSection};
pub use inbound::{InboundPeer, Refusal, admit};
pub use now::{NowResult, Outcome, wait_synced};
pub use outbound::{SyncOnceError, spawn_peers, sync_once};

struct Entry {
    name: String,
    direction: Direction,
    url: Option<String>,
    stats: Arc<SessionStats>,
    /// The last failed connection attempt (before any session could start).
    connect_error: Option<LastError>,
}

/// The sync settings and the status of every peer. Shared by the API and the peer tasks.
/// SIGHUP replaces the settings with [`Registry::reconfigure`].
pub struct Registry {
    settings: RwLock<Settings>,
    entries: Mutex<Vec<Entry>>,
    /// Per outbound peer name: bumped by `kdelta sync now` to cut a backoff wait short.
    wakers: Mutex<Vec<(String, tokio::sync::watch::Sender<u64>)>>,
    /// Per upstream peer name: the vector it was last known to hold, as stored in the store
    /// (`acked.rs`); stands for the peer until it is reached in this process.
    saved_acks: Mutex<Vec<(String, VersionVector)>>,
}

/// What `[sync]` says, as the running sessions use it.
struct Settings {
    session: SyncConfig,
    auth: Option<Arc<TokenAuthenticator>>,
    /// `[[sync.accept_certs]]`: `(name, SHA-256 fingerprint)`.
    accept_certs: Arc<Vec<(String, [u8; 32])>>,
    /// The role of every accepted credential, by name (tokens and certificates).
    roles: Arc<Vec<(String, PeerRole)>>,
    /// Cancelled when the accepted tokens or certificates change: inbound sessions end and
    /// their peers reconnect under the new settings (a removed credential must not keep a
    /// session alive).
    inbound_epoch: CancellationToken,
    /// Names of the `[[sync.peers]]` marked `upstream = true`.
    upstream: Vec<String>,
}

impl Settings {
    fn new(section: &SyncSection, device: &str) -> Settings {
        let auth = (!section.accept_tokens.is_empty()).then(|| {
            let mut auth = TokenAuthenticator::new();
            for (i, t) in section.accept_tokens.iter().enumerate() {
                // Start and reload read the token files first (`check_token_files`), so
                // this fails only if a file vanished in between: that entry accepts nothing.
                match t.digest(&format!("sync.accept_tokens[{i}]")) {
                    Ok(digest) => auth.add_sha256(t.name.clone(), digest),
                    Err(e) => tracing::error!("sync token {:?} not accepted: {e}", t.name),
                }
            }
            Arc::new(auth)
        });
        let compression = section
            .compression
            .iter()
            .filter_map(|c| Compression::from_name(c))
            .collect();
        let session = SyncConfig {
            peer_name: device.to_owned(),
            page_bytes: section.page_bytes,
            max_frame_bytes: section.max_frame_bytes,
            compression,
            device_relay: section.device_relay,
            ..SyncConfig::default()
        };
        let accept_certs = section
            .accept_certs
            .iter()
            .filter_map(|c| Some((c.name.clone(), c.fingerprint_bytes().ok()?)))
            .collect();
        let roles = section
            .accept_tokens
            .iter()
            .map(|t| (t.name.clone(), t.role))
            .chain(section.accept_certs.iter().map(|c| (c.name.clone(), c.role)))
            .map(|(name, role)| {
                if role.is_none() {
                    tracing::warn!(
                        credential = %name,
                        "sync credential {name:?} has no role: treated as \"hub\" (may relay any actor's changes, as before roles existed); set role = \"device\" for a single device (docs/security.md)"
                    );
                }
                (name, role.unwrap_or(PeerRole::Hub))
            })
            .collect();
        Settings {
            session,
            auth,
            accept_certs: Arc::new(accept_certs),
            roles: Arc::new(roles),
            inbound_epoch: CancellationToken::new(),
            upstream: section
                .peers
                .iter()
                .filter(|p| p.upstream)
                .map(|p| p.name.clone())
                .collect(),
        }
    }
}

/// What an inbound session needs from the registry when it starts.
pub(crate) struct InboundSettings {
    pub session: SyncConfig,
    /// `None`: no token is accepted.
    pub auth: Option<Arc<TokenAuthenticator>>,
    /// `[[sync.accept_certs]]`: `(name, SHA-256 fingerprint)`.
    pub accept_certs: Arc<Vec<(String, [u8; 32])>>,
    /// Every accepted credential's role, by name.
    pub roles: Arc<Vec<(String, PeerRole)>>,
    /// Cancelled when the accepted tokens or certificates change.
    pub epoch: CancellationToken,
}

impl InboundSettings {
    /// True when some inbound peer could be accepted (a token or a certificate is configured).
    pub fn enabled(&self) -> bool {
        self.auth.is_some() || !self.accept_certs.is_empty()
    }

    /// The role of the accepted credential `name` (`device` if unknown: the narrower).
    pub fn role(&self, name: &str) -> PeerRole {
        self.roles
            .iter()
            .find(|(n, _)| n == name)
            .map_or(PeerRole::Device, |(_, r)| *r)
    }

    /// The `[[sync.accept_certs]]` name of a verified client certificate, if it is allowed.
    pub fn cert_principal(&self, cert: &crate::tls::ClientCert) -> Option<String> {
        self.accept_certs
            .iter()
            .find(|(_, fp)| *fp == cert.fingerprint)
            .map(|(name, _)| name.clone())
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new(&SyncSection::default(), "kdelta")
    }
}

/// One peer in `GET /v1/sync/peers`.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    /// Configured name (outbound) or the accepted token's name (inbound).
    pub name: String,
    /// Who opened the link.
    pub direction: Direction,
    /// The peer's URL (outbound only).
    pub url: Option<String>,
    /// True while a session is past its handshake.
    pub connected: bool,
    /// Changes the peer lacks of ours, as far as known.
    pub lag_to_peer: u64,
    /// Changes we lack of the peer's, as far as known.
    pub lag_from_peer: u64,
    /// Counters and state of the sessions with this peer.
    #[serde(flatten)]
    pub stats: StatsSnapshot,
}

impl Registry {
    /// Builds the registry from `[sync]`; `device` is the name announced to peers.
    pub fn new(section: &SyncSection, device: &str) -> Registry {
        Registry {
            settings: RwLock::new(Settings::new(section, device)),
            entries: Mutex::new(Vec::new()),
            wakers: Mutex::new(Vec::new()),
            saved_acks: Mutex::new(Vec::new()),
        }
    }

    /// Applies a reloaded `[sync]`: new sessions use the new settings; when the accepted
    /// tokens or certificates, or what devices are relayed (`device_relay`), changed,
    /// running inbound sessions are ended (their peers reconnect and authenticate again).
    /// Status entries of outbound peers no longer configured are dropped. Returns true
    /// when running inbound sessions were ended.
    pub fn reconfigure(&self, old: &SyncSection, new: &SyncSection, device: &str) -> bool {
        let tokens_changed = old.accept_tokens != new.accept_tokens
            || old.accept_certs != new.accept_certs
            || old.device_relay != new.device_relay;
        let fresh = Settings::new(new, device);
        let previous = {
            let mut settings = self.settings.write().unwrap_or_else(|e| e.into_inner());
            if tokens_changed {
                std::mem::replace(&mut *settings, fresh).inbound_epoch
            } else {
                settings.session = fresh.session;
                settings.upstream = fresh.upstream;
                CancellationToken::new()
            }
        };
        previous.cancel();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|e| {
            e.direction == Direction::Inbound || new.peers.iter().any(|p| p.name == e.name)
        });
        tokens_changed
    }

    /// Session settings (without a token).
    pub fn session_config(&self) -> SyncConfig {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .session
            .clone()
    }

    /// The settings a new inbound session runs with.
    pub(crate) fn inbound(&self) -> InboundSettings {
        let settings = self.settings.read().unwrap_or_else(|e| e.into_inner());
        InboundSettings {
            session: settings.session.clone(),
            auth: settings.auth.clone(),
            accept_certs: settings.accept_certs.clone(),
            roles: settings.roles.clone(),
            epoch: settings.inbound_epoch.clone(),
        }
    }

    /// The counters of a peer, created on first use (kept across reconnects).
    pub fn stats_for(
        &self,
        name: &str,
        direction: Direction,
        url: Option<&str>,
    ) -> Arc<SessionStats> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = entries
            .iter()
            .find(|e| e.name == name && e.direction == direction)
        {
            return e.stats.clone();
        }
        let stats = Arc::new(SessionStats::new());
        entries.push(Entry {
            name: name.to_owned(),
            direction,
            url: url.map(str::to_owned),
            stats: stats.clone(),
            connect_error: None,
        });
        stats
    }

    /// Records a failed connection attempt to the outbound peer `name`.
    pub(crate) fn connect_failed(&self, name: &str, code: &str, message: String) {
        let at_ms = crate::time::now_ms_u64();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = entries
            .iter_mut()
            .find(|e| e.name == name && e.direction == Direction::Outbound)
        {
            e.connect_error = Some(LastError {
                code: code.to_owned(),
                message,
                at_ms,
            });
        }
    }

    /// `(connected, known)` peers, for the systemd status line.
    pub fn connected_count(&self) -> (usize, usize) {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let connected = entries
            .iter()
            .filter(|e| e.stats.snapshot().connected)
            .count();
        (connected, entries.len())
    }

    /// Status of every peer seen or configured, with lag against `local` (what this
    /// agent's store holds).
    pub fn status(&self, local: &VersionVector) -> Vec<PeerStatus> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .map(|e| {
                let mut stats = e.stats.snapshot();
                if let Some(ce) = &e.connect_error
                    && stats
                        .last_error
                        .as_ref()
                        .is_none_or(|le| le.at_ms < ce.at_ms)
                {
                    stats.last_error = Some(ce.clone());
                }
                let (lag_to_peer, lag_from_peer) = stats.lag(local);
                let name = match e.direction {
                    Direction::Outbound => e.name.clone(),
                    Direction::Inbound => stats
                        .principal
                        .clone()
                        .unwrap_or_else(|| "(unauthenticated)".to_owned()),
                };
                PeerStatus {
                    name,
                    direction: e.direction,
                    url: e.url.clone(),
                    connected: stats.connected,
                    lag_to_peer,
                    lag_from_peer,
                    stats,
                }
            })
            .collect()
    }
}

impl Registry {
    /// What every upstream peer (`upstream = true`) is known to hold, point-wise the least
    /// of their vectors (from the handshake, acks and pages of the current or last session):
    /// readings of changes above it are not acknowledged upstream yet. `None` when no peer is
    /// upstream. An upstream peer not reached since the agent started holds what it was last
    /// known to hold before (stored by `acked.rs`; nothing without a record).
    pub fn upstream_acked(&self) -> Option<VersionVector> {
        let names = self.upstream_names();
        if names.is_empty() {
            return None;
        }
        let reached = self.reached_upstream();
        let saved = self.saved_acks();
        let mut least: Option<VersionVector> = None;
        for name in &names {
            let theirs = reached
                .iter()
                .chain(saved.iter())
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            least = Some(match least {
                None => theirs,
                Some(acc) => acc
                    .iter()
                    .map(|(actor, seq)| (actor, seq.min(theirs.get(&actor))))
                    .collect(),
            });
        }
        least
    }
}

impl Registry {
    fn upstream_names(&self) -> Vec<String> {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .upstream
            .clone()
    }

    /// The vector of every upstream peer reached (past a handshake) in this process.
    pub(crate) fn reached_upstream(&self) -> Vec<(String, VersionVector)> {
        let names = self.upstream_names();
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .filter(|e| e.direction == Direction::Outbound && names.contains(&e.name))
            .map(|e| (e.name.clone(), e.stats.snapshot()))
            .filter(|(_, s)| s.peer_actor.is_some())
            .map(|(name, s)| (name, s.their_vector))
            .collect()
    }

    /// The stored vectors of upstream peers (`acked.rs`).
    pub(crate) fn saved_acks(&self) -> std::sync::MutexGuard<'_, Vec<(String, VersionVector)>> {
        self.saved_acks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Registry {
    /// Records an inbound session's counters (named by its principal once authenticated).
    pub(crate) fn add_inbound(&self, stats: Arc<SessionStats>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.push(Entry {
            name: String::new(),
            direction: Direction::Inbound,
            url: None,
            stats,
            connect_error: None,
        });
    }

    /// An inbound session ended: keep only the latest entry per principal (and one for
    /// unauthenticated peers), so reconnects do not pile up.
    pub(crate) fn finish_inbound(&self, stats: &Arc<SessionStats>) {
        let principal = stats.snapshot().principal;
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|e| {
            e.direction != Direction::Inbound
                || Arc::ptr_eq(&e.stats, stats)
                || e.stats.snapshot().principal != principal
                || e.stats.snapshot().connected
        });
    }
}

impl Registry {
    /// The wake-up signal of the outbound peer `name` (created on first use).
    pub(crate) fn waker(&self, name: &str) -> tokio::sync::watch::Receiver<u64> {
        let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, tx)) = wakers.iter().find(|(n, _)| n == name) {
            return tx.subscribe();
        }
        let (tx, rx) = tokio::sync::watch::channel(0);
        wakers.push((name.to_owned(), tx));
        rx
    }

    /// Wakes the outbound peer `name` (every one when `None`) out of its backoff wait; a
    /// peer that is connecting or connected retries at once when that attempt ends. Returns
    /// the names woken.
    pub fn wake(&self, name: Option<&str>) -> Vec<String> {
        let wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        wakers
            .iter()
            .filter(|(n, _)| name.is_none_or(|want| want == n))
            .map(|(n, tx)| {
                tx.send_modify(|g| *g = g.wrapping_add(1));
                n.clone()
            })
            .collect()
    }
}

/// One accepted sync credential in `GET /v1/sync/peers` (`credentials`).
#[derive(Debug, Clone, Serialize)]
pub struct CredentialStatus {
    /// Its configured name.
    pub name: String,
    /// `token` or `certificate`.
    pub kind: &'static str,
    /// `device` or `hub`.
    pub role: PeerRole,
    /// The actor a `device` credential is bound to (`null` until first used).
    pub bound_actor: Option<String>,
}

impl Registry {
    /// Every accepted credential with its role and binding (`bindings`: the store's).
    pub fn credentials(
        &self,
        bindings: &[(String, kdelta_sync::ActorId)],
    ) -> Vec<CredentialStatus> {
        let settings = self.settings.read().unwrap_or_else(|e| e.into_inner());
        let certs: Vec<&str> = settings
            .accept_certs
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        settings
            .roles
            .iter()
            .map(|(name, role)| CredentialStatus {
                name: name.clone(),
                kind: if certs.contains(&name.as_str()) {
                    "certificate"
                } else {
                    "token"
                },
                role: *role,
                bound_actor: (*role == PeerRole::Device)
                    .then(|| {
                        bindings
                            .iter()
                            .find(|(n, _)| n == name)
                            .map(|(_, a)| a.to_string())
                    })
                    .flatten(),
            })
            .collect()
    }
}

impl Registry {
    /// Every peer's figures for the Prometheus per-peer families.
    pub fn metric_samples(&self, local: &VersionVector) -> Vec<crate::metrics::PeerSample> {
        self.status(local)
            .into_iter()
            .map(|p| crate::metrics::PeerSample {
                peer: p.name,
                direction: p.direction,
                connected: p.connected,
                lag_to_peer: p.lag_to_peer,
                lag_from_peer: p.lag_from_peer,
                bytes_in: p.stats.bytes_in,
                bytes_out: p.stats.bytes_out,
                quarantined: p.stats.changes_quarantined,
                refused: p.stats.changes_refused,
                too_large: p.stats.changes_too_large,
                held_for_upgrade: p.stats.changes_held_for_upgrade,
                unverified: p.stats.changes_unverified,
                unsigned: p.stats.changes_unsigned,
                forks: p.stats.actor_forks,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(name: &str, token: &str) -> AcceptToken {
        AcceptToken::clear(name, token)
    }

    fn peer(name: &str) -> PeerConfig {
        PeerConfig {
            name: name.into(),
            url: "ws://127.0.0.1:9".into(),
            token: Some("t".into()),
            ca: None,
            client_cert: None,
            client_key: None,
            upstream: false,
        }
    }

    #[test]
    fn reconfigure_ends_inbound_sessions_only_when_the_tokens_change() {
        let old = SyncSection {
            accept_tokens: vec![token("a", "token-aaaaaaaa")],
            peers: vec![peer("hub"), peer("old")],
            ..SyncSection::default()
        };
        let registry = Registry::new(&old, "dev");
        registry.stats_for("hub", Direction::Outbound, None);
        registry.stats_for("old", Direction::Outbound, None);
        let first = registry.inbound();
        assert!(first.auth.is_some());

        // Page size only: running inbound sessions keep going, new ones use the new size.
        let bigger = SyncSection {
            page_bytes: 1 << 20,
            ..old.clone()
        };
        assert!(!registry.reconfigure(&old, &bigger, "dev"));
        assert!(!first.epoch.is_cancelled());
        assert_eq!(registry.session_config().page_bytes, 1 << 20);

        // New tokens, one peer fewer: the epoch ends, `old` leaves the status list.
        let rotated = SyncSection {
            accept_tokens: vec![token("a", "token-bbbbbbbb")],
            peers: vec![peer("hub")],
            ..bigger.clone()
        };
        assert!(registry.reconfigure(&bigger, &rotated, "dev"));
        assert!(first.epoch.is_cancelled());
        let second = registry.inbound();
        assert!(!second.epoch.is_cancelled());
        let names: Vec<String> = registry
            .entries
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.name.clone())
            .collect();
        assert_eq!(names, ["hub"]);

        // No tokens at all: inbound sync is off.
        let closed = SyncSection {
            accept_tokens: Vec::new(),
            ..rotated.clone()
        };
        assert!(registry.reconfigure(&rotated, &closed, "dev"));
        assert!(registry.inbound().auth.is_none());
        assert!(second.epoch.is_cancelled());
    }
}
