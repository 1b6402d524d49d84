//! Caps on inbound sync sessions: at most `api.max_sync_sessions` at once in total and
//! `api.max_sync_sessions_per_peer` under one credential. A session holds a [`SessionSlot`]
//! for its whole life; dropping it frees the place. A peer over a cap is answered
//! `503 too_many_sessions` before the WebSocket upgrade, so it never touches the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Counts running inbound sessions, in total and per credential name.
#[derive(Debug)]
pub struct SyncSlots {
    max_total: usize,
    max_per_peer: usize,
    running: Mutex<Running>,
}

#[derive(Debug, Default)]
struct Running {
    total: usize,
    per_peer: HashMap<String, usize>,
}

/// Why a session was not given a place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Full {
    /// `api.max_sync_sessions` sessions run already.
    Total(usize),
    /// This credential runs `api.max_sync_sessions_per_peer` sessions already.
    Peer(usize),
}

impl std::fmt::Display for Full {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Full::Total(n) => write!(
                f,
                "{n} inbound sync sessions run already (api.max_sync_sessions); retry later"
            ),
            Full::Peer(n) => write!(
                f,
                "this credential runs {n} sync sessions already (api.max_sync_sessions_per_peer); retry later"
            ),
        }
    }
}

/// A place held by one running session; freed on drop.
#[derive(Debug)]
pub struct SessionSlot {
    slots: Arc<SyncSlots>,
    peer: String,
}

impl SyncSlots {
    /// Slots for `max_total` sessions, `max_per_peer` per credential.
    pub fn new(max_total: usize, max_per_peer: usize) -> SyncSlots {
        SyncSlots {
            max_total: max_total.max(1),
            max_per_peer: max_per_peer.max(1),
            running: Mutex::new(Running::default()),
        }
    }

    /// Takes a place for a session of `peer`, or says which cap is reached.
    pub fn acquire(self: &Arc<Self>, peer: &str) -> Result<SessionSlot, Full> {
        let mut r = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if r.total >= self.max_total {
            return Err(Full::Total(self.max_total));
        }
        let n = r.per_peer.get(peer).copied().unwrap_or(0);
        if n >= self.max_per_peer {
            return Err(Full::Peer(self.max_per_peer));
        }
        r.total += 1;
        r.per_peer.insert(peer.to_owned(), n + 1);
        Ok(SessionSlot {
            slots: self.clone(),
            peer: peer.to_owned(),
        })
    }

    /// Sessions running now.
    pub fn running(&self) -> usize {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

impl Default for SyncSlots {
    fn default() -> Self {
        SyncSlots::new(64, 4)
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let mut r = self.slots.running.lock().unwrap_or_else(|p| p.into_inner());
        r.total = r.total.saturating_sub(1);
        if let Some(n) = r.per_peer.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                r.per_peer.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_in_total_and_per_peer_and_places_come_back() {
        let slots = Arc::new(SyncSlots::new(3, 2));
        let a1 = slots.acquire("a").unwrap();
        let _a2 = slots.acquire("a").unwrap();
        assert_eq!(slots.acquire("a").unwrap_err(), Full::Peer(2));
        let _b1 = slots.acquire("b").unwrap();
        assert_eq!(slots.acquire("c").unwrap_err(), Full::Total(3));
        drop(a1);
        assert_eq!(slots.running(), 2);
        let _c1 = slots.acquire("c").unwrap();
    }
}
