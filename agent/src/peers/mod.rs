//! Sync with other agents over WebSocket: the `[sync]` config section, the inbound endpoint
//! `GET /v1/sync`, outbound peer tasks with reconnect, and the per-peer status behind
//! `GET /v1/sync/peers`. The protocol itself is `kdelta_sync::protocol`; this module only
//! moves its frames over WebSocket binary messages.

mod config;
mod frames;
mod now;
mod outbound;
mod ws;

use std::sync::{Arc, Mutex};

use kdelta_sync::Store;
use kdelta_sync::protocol::{
    Compression, LastError, SessionStats, StatsSnapshot, SyncConfig, TokenAuthenticator,
};
use serde::Serialize;

pub use config::{AcceptCert, AcceptToken, PeerConfig, SyncSection};
pub use now::{sync_now, wait_synced};
pub use outbound::spawn_peers;
pub use ws::{list_peers, sync_socket};

/// Which side opened the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// We connect to the peer (`[[sync.peers]]`).
    Outbound,
    /// The peer connected to `/v1/sync`.
    Inbound,
}

struct Entry {
    name: String,
    direction: Direction,
    url: Option<String>,
    stats: Arc<SessionStats>,
    /// The last failed connection attempt (before any session could start).
    connect_error: Option<LastError>,
}

/// The sync settings and the status of every peer. Shared by the API and the peer tasks.
pub struct Registry {
    session: SyncConfig,
    auth: Option<Arc<TokenAuthenticator>>,
    entries: Mutex<Vec<Entry>>,
    /// `[[sync.accept_certs]]`: `(name, SHA-256 fingerprint)`.
    accept_certs: Vec<(String, [u8; 32])>,
    /// Per outbound peer name: bumped by `kdelta sync now` to cut a backoff wait short.
    wakers: Mutex<Vec<(String, tokio::sync::watch::Sender<u64>)>>,
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
        let auth = (!section.accept_tokens.is_empty()).then(|| {
            let mut auth = TokenAuthenticator::new();
            for t in &section.accept_tokens {
                auth.add(t.name.clone(), &t.token);
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
            compression,
            ..SyncConfig::default()
        };
        let accept_certs = section
            .accept_certs
            .iter()
            .filter_map(|c| Some((c.name.clone(), c.fingerprint_bytes().ok()?)))
            .collect();
        Registry {
            session,
            auth,
            entries: Mutex::new(Vec::new()),
            accept_certs,
            wakers: Mutex::new(Vec::new()),
        }
    }

    /// Session settings (without a token).
    pub fn session_config(&self) -> SyncConfig {
        self.session.clone()
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
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
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

    /// Status of every peer seen or configured, with lag against `store`.
    pub fn status(&self, store: &Store) -> Vec<PeerStatus> {
        let local = store.version_vector();
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
                let (lag_to_peer, lag_from_peer) = stats.lag(&local);
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
    /// The `[[sync.accept_certs]]` name of a verified client certificate, if it is allowed.
    pub fn cert_principal(&self, cert: &crate::tls::ClientCert) -> Option<String> {
        self.accept_certs
            .iter()
            .find(|(_, fp)| *fp == cert.fingerprint)
            .map(|(name, _)| name.clone())
    }

    /// True when some inbound peer could be accepted (a token or a certificate is configured).
    pub fn inbound_enabled(&self) -> bool {
        self.auth.is_some() || !self.accept_certs.is_empty()
    }

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

impl Registry {
    /// Every peer's figures for the Prometheus per-peer families.
    pub fn metric_samples(&self, store: &Store) -> Vec<crate::metrics::PeerSample> {
        self.status(store)
            .into_iter()
            .map(|p| crate::metrics::PeerSample {
                peer: p.name,
                direction: p.direction,
                connected: p.connected,
                lag_to_peer: p.lag_to_peer,
                lag_from_peer: p.lag_from_peer,
                bytes_in: p.stats.bytes_in,
                bytes_out: p.stats.bytes_out,
            })
            .collect()
    }
}
