//! Sync session events: a session ended, failed (or could not connect), an inbound peer
//! refused before its session began.

use std::fmt::{Debug, Display};

use kdelta_sync::protocol::Direction;

use super::InternalEvent;
use crate::metrics::Metrics;

/// A session ended normally (the peer left, or shutdown).
#[derive(Debug, Clone, Copy)]
pub struct SyncSessionEnded<'a> {
    /// Who started it.
    pub direction: Direction,
    /// The peer's name (outbound) or principal (inbound).
    pub peer: &'a str,
    /// How it ended (the session summary's `end`).
    pub end: &'a dyn Debug,
}

impl InternalEvent for SyncSessionEnded<'_> {
    fn emit(self, _metrics: &Metrics) {
        // The session's byte and change counters are updated while it runs.
        match self.direction {
            Direction::Inbound => {
                tracing::info!(peer = self.peer, end = ?self.end, "inbound sync session ended")
            }
            Direction::Outbound => {
                tracing::info!(peer = self.peer, end = ?self.end, "sync session ended")
            }
        }
    }
}

/// A session failed, or an outbound peer could not connect (`url` set).
#[derive(Clone, Copy)]
pub struct SyncSessionFailed<'a> {
    /// Who started it.
    pub direction: Direction,
    /// The peer's name (outbound) or principal (inbound).
    pub peer: &'a str,
    /// The URL that could not be reached, for a failed connect.
    pub url: Option<&'a str>,
    /// The failure was a refusal of credentials (also counted as refused).
    pub refused: bool,
    /// What went wrong.
    pub error: &'a dyn Display,
}

impl InternalEvent for SyncSessionFailed<'_> {
    fn emit(self, metrics: &Metrics) {
        let (peer, e) = (self.peer, self.error);
        match (self.direction, self.url) {
            (Direction::Inbound, _) => tracing::warn!(peer, "inbound sync session failed: {e}"),
            (Direction::Outbound, Some(url)) => {
                tracing::warn!(peer, url, "cannot connect for sync: {e}")
            }
            (Direction::Outbound, None) => tracing::warn!(peer, "sync session failed: {e}"),
        }
        metrics.sync_session_failed(self.direction, peer);
        if self.refused {
            metrics.sync_refused(self.direction, peer);
        }
    }
}

/// An inbound connection refused before a session began (no accepted token or certificate).
/// Counted here and logged at debug only: the API gate logs the refusal at warn, throttled
/// per address with the other failed authentications (`access::throttle`), so a client
/// guessing tokens cannot flood the journal.
#[derive(Debug, Clone, Copy)]
pub struct SyncRefused<'a> {
    /// What the connection is known as (`(unauthenticated)`, `(certificate not allowed)`).
    pub peer: &'a str,
    /// Why, as the log says it.
    pub why: &'a str,
}

impl InternalEvent for SyncRefused<'_> {
    fn emit(self, metrics: &Metrics) {
        tracing::debug!(peer = self.peer, "inbound sync refused: {}", self.why);
        metrics.sync_refused(Direction::Inbound, self.peer);
    }
}
