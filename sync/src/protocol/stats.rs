//! Live counters of sync sessions, shared between a running session and whoever reports on
//! it (the agent's `GET /v1/sync/peers`, `kdelta peers`, Prometheus). Counters are atomics
//! updated per frame; the rest sits behind a mutex touched a few times per page.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

use super::ProtocolError;
use crate::{ActorId, SystemTime, TimeSource, VersionVector};

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionPhase {
    /// No session has run yet.
    Idle,
    /// Exchanging hello/welcome and version vectors.
    Handshake,
    /// Sending or receiving the backlog.
    CatchingUp,
    /// Both sides sent their backlog; new changes are pushed as they commit.
    Live,
    /// The last session ended (see `last_error`).
    Closed,
}

/// Which side opened a sync link: the initiator of a session is the `Outbound` end, the
/// responder the `Inbound` one. Serialized (and used as a metric label) as `outbound` /
/// `inbound`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// We connected to the peer.
    Outbound,
    /// The peer connected to us.
    Inbound,
}

impl Direction {
    /// `outbound` or `inbound`, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// Counters of the sessions with one peer. Share one `Arc<SessionStats>` across reconnects
/// (see [`SyncSession::with_stats`](super::SyncSession::with_stats)) to keep cumulative
/// figures per peer; counters never reset.
#[derive(Debug)]
pub struct SessionStats {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    pages_sent: AtomicU64,
    pages_received: AtomicU64,
    changes_sent: AtomicU64,
    changes_applied: AtomicU64,
    changes_skipped: AtomicU64,
    changes_quarantined: AtomicU64,
    changes_refused: AtomicU64,
    changes_unverified: AtomicU64,
    changes_unsigned: AtomicU64,
    changes_too_large: AtomicU64,
    changes_held_for_upgrade: AtomicU64,
    actor_forks: AtomicU64,
    sessions: AtomicU64,
    state: Mutex<State>,
}

#[derive(Debug, Clone)]
struct State {
    phase: SessionPhase,
    peer_actor: Option<ActorId>,
    peer_name: Option<String>,
    principal: Option<String>,
    their_vector: VersionVector,
    connected_since_ms: Option<u64>,
    last_sync_ms: Option<u64>,
    last_error: Option<LastError>,
    last_quarantine: Option<LastError>,
    role: Option<super::PeerRole>,
    bound_actor: Option<ActorId>,
    last_refusal: Option<LastError>,
    last_too_large: Option<LastError>,
    last_held_for_upgrade: Option<LastError>,
    last_fork: Option<LastError>,
    relay_only: Option<Vec<ActorId>>,
}

/// The error that ended the most recent failed session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastError {
    /// [`ProtocolError::code`].
    pub code: String,
    /// The error's text.
    pub message: String,
    /// When it happened, unix ms.
    pub at_ms: u64,
}

/// A consistent copy of a peer's counters, ready to serialise.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsSnapshot {
    /// Where the current (or last) session stands.
    pub phase: SessionPhase,
    /// True while a session is past its handshake.
    pub connected: bool,
    /// The peer's actor, once known.
    pub peer_actor: Option<ActorId>,
    /// The peer's self-declared name, once known.
    pub peer_name: Option<String>,
    /// The principal the authenticator accepted (responder side).
    pub principal: Option<String>,
    /// What the peer is known to hold (its vector, acks and the pages it sent).
    pub their_vector: VersionVector,
    /// When the current session's handshake completed, unix ms.
    pub connected_since_ms: Option<u64>,
    /// When both sides were last caught up (entering live mode, then each ack), unix ms.
    pub last_sync_ms: Option<u64>,
    /// Bytes received, frames included.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Frames received.
    pub frames_in: u64,
    /// Frames sent.
    pub frames_out: u64,
    /// Pages sent.
    pub pages_sent: u64,
    /// Pages received and applied.
    pub pages_received: u64,
    /// Changes sent in pages.
    pub changes_sent: u64,
    /// Changes received and newly stored.
    pub changes_applied: u64,
    /// Changes received that were already held (arrived by another path).
    pub changes_skipped: u64,
    /// Sessions started.
    pub sessions: u64,
    /// Received changes held back because their timestamps ran too far ahead of every
    /// trusted time source (see `quarantine.rs`); offered again next session.
    pub changes_quarantined: u64,
    /// The most recent such hold-back (code `clock_skew`), naming the actor and seq.
    pub last_quarantine: Option<LastError>,
    /// The role of the credential the peer was accepted with (responder side).
    pub role: Option<super::PeerRole>,
    /// The actor a `device` credential is bound to (responder side).
    pub bound_actor: Option<ActorId>,
    /// Received changes refused because a `device` credential sent another actor's changes
    /// (see `quarantine.rs`); nothing of them is stored.
    pub changes_refused: u64,
    /// Received changes refused by the signature and chain check (`chain.rs`): forged,
    /// altered, re-ordered, or unsigned where signatures are required; nothing of them is
    /// stored.
    pub changes_unverified: u64,
    /// Received unsigned changes accepted (peers that do not sign yet; see
    /// `require_signatures`).
    pub changes_unsigned: u64,
    /// The most recent refusal: code `foreign_actor` (a device credential sent another
    /// actor's changes) or `bad_signature` / `broken_chain` / `unsigned` (the chain check),
    /// naming actor and seq.
    pub last_refusal: Option<LastError>,
    /// Changes left unsent because they are larger than the peer's frame limit (each
    /// counted once per session; see [`ChangeTooLarge`](super::ChangeTooLarge)).
    pub changes_too_large: u64,
    /// The most recent such change (code `change_too_large`), naming the actor and seq.
    pub last_too_large: Option<LastError>,
    /// Changes left unsent because the peer runs an earlier release that cannot take a
    /// change retention pruned wholly, or a log run (each counted once per session; see
    /// [`ChangeNeedsUpgrade`](super::ChangeNeedsUpgrade)).
    pub changes_held_for_upgrade: u64,
    /// The most recent such change (code `peer_needs_upgrade`), naming the actor and seq.
    pub last_held_for_upgrade: Option<LastError>,
    /// Actors whose history from this peer forked from ours (two stores writing as one
    /// actor: a cloned card), each counted once per session; they are not merged from it.
    pub actor_forks: u64,
    /// The most recent such fork (code `actor_fork`), naming the actor, seq and peers.
    pub last_fork: Option<LastError>,
    /// The error that ended the most recent failed session.
    pub last_error: Option<LastError>,
    /// The only actors whose changes this session sends the peer (a `device` credential
    /// under `device_relay = "own"`: this store's actor and the device's); `None`: every
    /// actor's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_only: Option<Vec<ActorId>>,
}

impl StatsSnapshot {
    /// Lag in changes per direction, given the local store's vector: `(to_peer, from_peer)`
    /// — what the peer lacks of ours (of the actors it is sent, see `relay_only`), and what
    /// we lack of the peer's (as far as known).
    pub fn lag(&self, local: &VersionVector) -> (u64, u64) {
        let to_peer = match &self.relay_only {
            None => local.changes_ahead_of(&self.their_vector),
            Some(actors) => actors
                .iter()
                .map(|a| local.get(a).saturating_sub(self.their_vector.get(a)))
                .sum(),
        };
        (to_peer, self.their_vector.changes_ahead_of(local))
    }
}

impl Default for SessionStats {
    fn default() -> Self {
        SessionStats {
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            frames_in: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
            pages_sent: AtomicU64::new(0),
            pages_received: AtomicU64::new(0),
            changes_sent: AtomicU64::new(0),
            changes_applied: AtomicU64::new(0),
            changes_skipped: AtomicU64::new(0),
            changes_quarantined: AtomicU64::new(0),
            changes_refused: AtomicU64::new(0),
            changes_unverified: AtomicU64::new(0),
            changes_unsigned: AtomicU64::new(0),
            changes_too_large: AtomicU64::new(0),
            changes_held_for_upgrade: AtomicU64::new(0),
            actor_forks: AtomicU64::new(0),
            sessions: AtomicU64::new(0),
            state: Mutex::new(State {
                phase: SessionPhase::Idle,
                peer_actor: None,
                peer_name: None,
                principal: None,
                their_vector: VersionVector::new(),
                connected_since_ms: None,
                last_sync_ms: None,
                last_error: None,
                last_quarantine: None,
                role: None,
                bound_actor: None,
                last_refusal: None,
                last_too_large: None,
                last_held_for_upgrade: None,
                last_fork: None,
                relay_only: None,
            }),
        }
    }
}

impl SessionStats {
    /// Fresh counters.
    pub fn new() -> SessionStats {
        SessionStats::default()
    }

    /// A consistent copy of every figure.
    pub fn snapshot(&self) -> StatsSnapshot {
        let s = self.lock().clone();
        StatsSnapshot {
            connected: matches!(s.phase, SessionPhase::CatchingUp | SessionPhase::Live),
            phase: s.phase,
            peer_actor: s.peer_actor,
            peer_name: s.peer_name,
            principal: s.principal,
            their_vector: s.their_vector,
            connected_since_ms: s.connected_since_ms,
            last_sync_ms: s.last_sync_ms,
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            frames_in: self.frames_in.load(Relaxed),
            frames_out: self.frames_out.load(Relaxed),
            pages_sent: self.pages_sent.load(Relaxed),
            pages_received: self.pages_received.load(Relaxed),
            changes_sent: self.changes_sent.load(Relaxed),
            changes_applied: self.changes_applied.load(Relaxed),
            changes_skipped: self.changes_skipped.load(Relaxed),
            sessions: self.sessions.load(Relaxed),
            last_error: s.last_error,
            changes_quarantined: self.changes_quarantined.load(Relaxed),
            last_quarantine: s.last_quarantine,
            role: s.role,
            bound_actor: s.bound_actor,
            changes_refused: self.changes_refused.load(Relaxed),
            changes_unverified: self.changes_unverified.load(Relaxed),
            changes_unsigned: self.changes_unsigned.load(Relaxed),
            last_refusal: s.last_refusal,
            changes_too_large: self.changes_too_large.load(Relaxed),
            last_too_large: s.last_too_large,
            changes_held_for_upgrade: self.changes_held_for_upgrade.load(Relaxed),
            last_held_for_upgrade: s.last_held_for_upgrade,
            actor_forks: self.actor_forks.load(Relaxed),
            last_fork: s.last_fork,
            relay_only: s.relay_only,
        }
    }

    /// What the peer is known to hold of `actor` (its vector, acks and pages): the cheap
    /// form of `snapshot().their_vector.get(actor)`, for polling one actor.
    pub fn their_seq(&self, actor: &ActorId) -> u64 {
        self.lock().their_vector.get(actor)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the plain data inconsistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn session_started(&self) {
        self.sessions.fetch_add(1, Relaxed);
        let mut s = self.lock();
        s.phase = SessionPhase::Handshake;
        s.connected_since_ms = None;
    }

    pub(crate) fn connected(&self, actor: ActorId, name: &str, principal: Option<String>) {
        let mut s = self.lock();
        s.phase = SessionPhase::CatchingUp;
        s.peer_actor = Some(actor);
        s.peer_name = Some(name.to_owned());
        s.principal = principal;
        s.connected_since_ms = Some(SystemTime.now_ms());
    }

    pub(crate) fn relay_only(&self, actors: Option<Vec<ActorId>>) {
        self.lock().relay_only = actors;
    }

    pub(crate) fn their_vector(&self, v: &VersionVector) {
        self.lock().their_vector = v.clone();
    }

    pub(crate) fn live(&self) {
        let mut s = self.lock();
        s.phase = SessionPhase::Live;
        s.last_sync_ms = Some(SystemTime.now_ms());
    }

    pub(crate) fn synced(&self) {
        self.lock().last_sync_ms = Some(SystemTime.now_ms());
    }

    pub(crate) fn ended(&self, error: Option<&ProtocolError>) {
        let mut s = self.lock();
        s.phase = SessionPhase::Closed;
        s.connected_since_ms = None;
        if let Some(e) = error {
            s.last_error = Some(LastError {
                code: e.code().to_owned(),
                message: e.to_string(),
                at_ms: SystemTime.now_ms(),
            });
        }
    }

    pub(crate) fn frame_in(&self, bytes: usize) {
        self.frames_in.fetch_add(1, Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Relaxed);
    }

    pub(crate) fn frame_out(&self, bytes: usize) {
        self.frames_out.fetch_add(1, Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Relaxed);
    }

    pub(crate) fn page_sent(&self, changes: usize) {
        self.pages_sent.fetch_add(1, Relaxed);
        self.changes_sent.fetch_add(changes as u64, Relaxed);
    }

    pub(crate) fn quarantined(&self, q: &super::Quarantined) {
        self.changes_quarantined
            .fetch_add(q.changes as u64, Relaxed);
        self.lock().last_quarantine = Some(LastError {
            code: "clock_skew".into(),
            message: q.to_string(),
            at_ms: SystemTime.now_ms(),
        });
    }

    pub(crate) fn admitted_as(
        &self,
        principal: &str,
        role: super::PeerRole,
        bound: Option<ActorId>,
    ) {
        let mut s = self.lock();
        s.principal = Some(principal.to_owned());
        s.role = Some(role);
        s.bound_actor = bound;
    }

    pub(crate) fn refused_foreign(&self, f: &super::ForeignChange) {
        self.changes_refused.fetch_add(f.changes as u64, Relaxed);
        self.lock().last_refusal = Some(LastError {
            code: "foreign_actor".into(),
            message: f.to_string(),
            at_ms: SystemTime.now_ms(),
        });
    }

    /// Records what the chain check of one received page decided.
    pub(crate) fn chain_checked(&self, report: &crate::ChainReport) {
        self.changes_unsigned
            .fetch_add(report.unsigned as u64, Relaxed);
        for r in &report.refused {
            self.changes_unverified.fetch_add(r.changes as u64, Relaxed);
            self.lock().last_refusal = Some(LastError {
                code: r.fault.code().into(),
                message: r.to_string(),
                at_ms: SystemTime.now_ms(),
            });
        }
    }

    pub(crate) fn change_too_large(&self, c: &super::ChangeTooLarge) {
        self.changes_too_large.fetch_add(1, Relaxed);
        self.lock().last_too_large = Some(LastError {
            code: "change_too_large".into(),
            message: c.to_string(),
            at_ms: SystemTime.now_ms(),
        });
    }

    pub(crate) fn change_needs_upgrade(&self, c: &super::ChangeNeedsUpgrade) {
        self.changes_held_for_upgrade.fetch_add(1, Relaxed);
        self.lock().last_held_for_upgrade = Some(LastError {
            code: "peer_needs_upgrade".into(),
            message: c.to_string(),
            at_ms: SystemTime.now_ms(),
        });
    }

    pub(crate) fn forked(&self, fork: &super::exchange::ActorFork) {
        self.actor_forks.fetch_add(1, Relaxed);
        self.lock().last_fork = Some(LastError {
            code: "actor_fork".into(),
            message: fork.to_string(),
            at_ms: SystemTime.now_ms(),
        });
    }

    pub(crate) fn page_received(&self, applied: usize, skipped: usize) {
        self.pages_received.fetch_add(1, Relaxed);
        self.changes_applied.fetch_add(applied as u64, Relaxed);
        self.changes_skipped.fetch_add(skipped as u64, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reflects_counters_and_lag() {
        let s = SessionStats::new();
        s.session_started();
        s.connected(ActorId([2; 16]), "hub", Some("hub".into()));
        s.frame_out(100);
        s.page_sent(3);
        s.their_vector(&[(ActorId([1; 16]), 2)].into_iter().collect());
        let snap = s.snapshot();
        assert!(snap.connected);
        assert_eq!(
            (snap.bytes_out, snap.changes_sent, snap.sessions),
            (100, 3, 1)
        );
        let local: VersionVector = [(ActorId([1; 16]), 5), (ActorId([3; 16]), 1)]
            .into_iter()
            .collect();
        assert_eq!(snap.lag(&local), (4, 0));
        s.ended(Some(&ProtocolError::Closed));
        let snap = s.snapshot();
        assert!(!snap.connected);
        assert_eq!(snap.last_error.unwrap().code, "closed");
    }
}
