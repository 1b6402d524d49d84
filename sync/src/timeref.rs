//! The best time this store knows, and the judge of remote timestamps.
//!
//! A Raspberry Pi has no real-time clock: it boots with the time it had at shutdown
//! (fake-hwclock) or with 1970, and may never reach an NTP server. Comparing a peer's
//! timestamps with such a wall clock refuses every change of a correct hub ("clock skew"),
//! forever. So remote timestamps are judged against *trusted* sources only:
//!
//! - the local wall clock, while the agent says it can be trusted
//!   ([`TimeReference::set_local_trusted`]: kernel NTP state and sanity bounds, decided by the
//!   agent, not here);
//! - the wall time a peer claimed in its handshake when it said its own clock was
//!   synchronised ([`TimeReference::observe_peer`]), carried forward with the local
//!   monotonic clock (which does not jump when the wall clock is set).
//!
//! A remote timestamp is refused only when it runs ahead of every trusted source by more
//! than the max offset; a peer's own claim never vouches for its own changes, so a peer
//! whose clock runs a year ahead cannot wave its changes through by saying so. With no
//! trusted source at all (a device offline since boot, no synchronised peer yet) there is
//! nothing to judge by, and timestamps are accepted: refusing them is what wedged links.
//!
//! Owns no I/O; the store shares one `Arc<TimeReference>` between its clock and its sync
//! sessions. Must not know where trust comes from (that is the agent's `clock` module).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::{ActorId, TimeBasis};

/// At most this many peer claims are kept (the oldest is dropped): one per peer is plenty,
/// and a hub with thousands of devices needs no more than a few recent ones.
const MAX_PEER_CLAIMS: usize = 64;

/// A peer's statement about its wall clock, sent in the sync handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClockClaim {
    /// The peer's wall time when it sent the claim, unix ms.
    pub wall_ms: u64,
    /// Whether the peer considers its wall clock synchronised (NTP or configured so).
    pub trusted: bool,
}

/// A trusted time learnt from a peer, anchored to the local monotonic clock.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    wall_ms: u64,
    at: Instant,
}

impl Anchor {
    fn now_ms(self) -> u64 {
        self.wall_ms
            .saturating_add(self.at.elapsed().as_millis().min(u128::from(u64::MAX)) as u64)
    }
}

/// The trusted time sources of one store; see the module docs.
#[derive(Debug)]
pub struct TimeReference {
    local_trusted: AtomicBool,
    peers: Mutex<HashMap<ActorId, Anchor>>,
}

impl Default for TimeReference {
    /// The local wall clock trusted (what a store without an agent deciding otherwise
    /// assumes), no peer claims.
    fn default() -> Self {
        TimeReference {
            local_trusted: AtomicBool::new(true),
            peers: Mutex::new(HashMap::new()),
        }
    }
}

impl TimeReference {
    /// Says whether the local wall clock can be trusted; returns the previous value.
    pub fn set_local_trusted(&self, trusted: bool) -> bool {
        self.local_trusted.swap(trusted, Ordering::AcqRel)
    }

    /// Whether the local wall clock is trusted.
    pub fn local_trusted(&self) -> bool {
        self.local_trusted.load(Ordering::Acquire)
    }

    /// What to tell a peer about our clock in a handshake, given the wall time `wall_ms`.
    /// An untrusted local clock that has learnt a trusted time from a peer does not pass
    /// that on as its own: only first-hand synchronised clocks are claimed as trusted.
    pub fn claim(&self, wall_ms: u64) -> ClockClaim {
        ClockClaim {
            wall_ms,
            trusted: self.local_trusted(),
        }
    }

    /// Records a peer's handshake claim; untrusted claims are ignored. Returns whether the
    /// claim was recorded.
    pub fn observe_peer(&self, peer: ActorId, claim: ClockClaim) -> bool {
        if !claim.trusted {
            return false;
        }
        let mut peers = self.lock();
        if peers.len() >= MAX_PEER_CLAIMS
            && !peers.contains_key(&peer)
            && let Some(oldest) = peers.iter().min_by_key(|(_, a)| a.at).map(|(k, _)| *k)
        {
            peers.remove(&oldest);
        }
        peers.insert(
            peer,
            Anchor {
                wall_ms: claim.wall_ms,
                at: Instant::now(),
            },
        );
        true
    }

    /// The best estimate of the true time when the local wall clock reads `wall_ms`: the
    /// wall clock itself while it is trusted, else the latest-running trusted peer time,
    /// else `None` (nothing trusted is known).
    pub fn best_known_ms(&self, wall_ms: u64) -> Option<u64> {
        if self.local_trusted() {
            return Some(wall_ms);
        }
        self.lock().values().map(|a| a.now_ms()).max()
    }

    /// Like [`best_known_ms`](Self::best_known_ms), saying where the time comes from: the
    /// local clock, or the peer whose claim runs latest.
    pub fn best_known(&self, wall_ms: u64) -> Option<(u64, TimeBasis)> {
        if self.local_trusted() {
            return Some((wall_ms, TimeBasis::LocalClock));
        }
        self.lock()
            .iter()
            .map(|(peer, a)| (a.now_ms(), TimeBasis::Peer(*peer)))
            .max_by_key(|(ms, _)| *ms)
    }

    /// The highest trusted time that may vouch for a change of `actor` (every trusted
    /// source except that actor's own claim), or `None` when there is none.
    pub fn bound_for(&self, actor: Option<ActorId>, wall_ms: u64) -> Option<u64> {
        if self.local_trusted() {
            return Some(wall_ms);
        }
        self.lock()
            .iter()
            .filter(|(peer, _)| Some(**peer) != actor)
            .map(|(_, a)| a.now_ms())
            .max()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ActorId, Anchor>> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(n: u8) -> ActorId {
        ActorId::from_slice(&[n; 16]).unwrap()
    }

    #[test]
    fn a_trusted_local_clock_is_the_only_bound() {
        let r = TimeReference::default();
        r.observe_peer(
            actor(1),
            ClockClaim {
                wall_ms: 9_000_000,
                trusted: true,
            },
        );
        assert_eq!(r.best_known_ms(1_000), Some(1_000));
        assert_eq!(r.bound_for(Some(actor(2)), 1_000), Some(1_000));
    }

    #[test]
    fn an_untrusted_clock_uses_trusted_peer_claims_but_not_a_peers_own() {
        let r = TimeReference::default();
        r.set_local_trusted(false);
        assert_eq!(r.best_known_ms(0), None, "nothing trusted is known yet");
        assert!(!r.observe_peer(
            actor(1),
            ClockClaim {
                wall_ms: 5_000_000,
                trusted: false
            }
        ));
        assert_eq!(r.best_known_ms(0), None, "untrusted claims are ignored");
        assert!(r.observe_peer(
            actor(1),
            ClockClaim {
                wall_ms: 1_764_000_000_000,
                trusted: true
            }
        ));
        let best = r.best_known_ms(0).unwrap();
        assert!((1_764_000_000_000..1_764_000_060_000).contains(&best));
        assert_eq!(
            r.bound_for(Some(actor(1)), 0),
            None,
            "a peer cannot vouch for itself"
        );
        assert!(r.bound_for(Some(actor(2)), 0).unwrap() >= 1_764_000_000_000);
        assert!(
            r.claim(0).trusted.eq(&false),
            "second-hand time is not claimed"
        );
    }

    #[test]
    fn peer_claims_are_bounded() {
        let r = TimeReference::default();
        r.set_local_trusted(false);
        for i in 0..(MAX_PEER_CLAIMS as u32 + 50) {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&i.to_be_bytes());
            r.observe_peer(
                ActorId::from_slice(&b).unwrap(),
                ClockClaim {
                    wall_ms: 1_000 + u64::from(i),
                    trusted: true,
                },
            );
        }
        assert_eq!(r.lock().len(), MAX_PEER_CLAIMS);
    }
}
