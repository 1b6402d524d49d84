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
//! Peers that claim a synchronised clock may still disagree (one configured `trust =
//! "always"` whose clock runs a year ahead). Claims are therefore *selected*, not maxed:
//! the best time known is the latest claim of the largest group of claims that agree within
//! the max offset, and between groups of equal size the earliest wins — a device stamping
//! behind the true time only loses last-writer-wins ties, while one stamping a year ahead
//! has every change held back by every correct peer. A lone claimant cannot be outvoted.
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
    /// Claims closer than this agree (the store's max clock offset).
    agreement_ms: u64,
}

/// The agreement window of [`TimeReference::default`]: the store's default max offset.
const DEFAULT_AGREEMENT_MS: u64 = 300_000;

impl Default for TimeReference {
    /// The local wall clock trusted (what a store without an agent deciding otherwise
    /// assumes), no peer claims, claims agreeing within the default max offset (5 min).
    fn default() -> Self {
        TimeReference::new(DEFAULT_AGREEMENT_MS)
    }
}

impl TimeReference {
    /// Like [`default`](Self::default), with peer claims closer than `agreement_ms` (the
    /// store's max clock offset) counted as agreeing.
    pub fn new(agreement_ms: u64) -> TimeReference {
        TimeReference {
            local_trusted: AtomicBool::new(true),
            peers: Mutex::new(HashMap::new()),
            agreement_ms,
        }
    }

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
    /// wall clock itself while it is trusted, else the time selected from the trusted peer
    /// claims (see the module docs), else `None` (nothing trusted is known).
    pub fn best_known_ms(&self, wall_ms: u64) -> Option<u64> {
        self.best_known(wall_ms).map(|(ms, _)| ms)
    }

    /// Like [`best_known_ms`](Self::best_known_ms), saying where the time comes from: the
    /// local clock, or the peer whose claim was selected.
    pub fn best_known(&self, wall_ms: u64) -> Option<(u64, TimeBasis)> {
        if self.local_trusted() {
            return Some((wall_ms, TimeBasis::LocalClock));
        }
        self.select(None)
            .map(|(ms, peer)| (ms, TimeBasis::Peer(peer)))
    }

    /// The trusted time that may vouch for a change of `actor`: the local clock while it is
    /// trusted, else the time selected from the claims of every peer but `actor` itself, or
    /// `None` when there is none.
    pub fn bound_for(&self, actor: Option<ActorId>, wall_ms: u64) -> Option<u64> {
        if self.local_trusted() {
            return Some(wall_ms);
        }
        self.select(actor).map(|(ms, _)| ms)
    }

    /// The time selected from the peer claims (all but `except`'s): the latest claim of the
    /// largest group agreeing within `agreement_ms`, the earliest group on a tie.
    fn select(&self, except: Option<ActorId>) -> Option<(u64, ActorId)> {
        let mut claims: Vec<(u64, ActorId)> = self
            .lock()
            .iter()
            .filter(|(peer, _)| Some(**peer) != except)
            .map(|(peer, a)| (a.now_ms(), *peer))
            .collect();
        claims.sort_unstable();
        // For each claim, the group of claims from it up to `agreement_ms` later; the
        // window's end only moves forward, so this is linear after the sort.
        let mut best: Option<(usize, usize)> = None; // (size, index of the group's latest)
        let mut end = 0;
        for start in 0..claims.len() {
            end = end.max(start);
            while end + 1 < claims.len()
                && claims[end + 1].0 <= claims[start].0.saturating_add(self.agreement_ms)
            {
                end += 1;
            }
            let size = end - start + 1;
            if best.is_none_or(|(s, _)| size > s) {
                best = Some((size, end));
            }
        }
        best.map(|(_, latest)| claims[latest])
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

    fn claim(r: &TimeReference, n: u8, wall_ms: u64) {
        assert!(r.observe_peer(
            actor(n),
            ClockClaim {
                wall_ms,
                trusted: true
            }
        ));
    }

    const NOW: u64 = 1_796_552_592_751;
    const YEAR: u64 = 365 * 24 * 3_600_000;
    const SLACK: u64 = 60_000;

    #[test]
    fn a_claim_far_ahead_of_another_trusted_one_is_not_the_best_time() {
        let r = TimeReference::new(300_000);
        r.set_local_trusted(false);
        claim(&r, 1, NOW); // the hub, correct
        claim(&r, 2, NOW + YEAR); // a peer configured `trust = "always"`, a year ahead
        let best = r.best_known_ms(0).unwrap();
        assert!((NOW..NOW + SLACK).contains(&best), "{best}");
        assert_eq!(r.best_known(0).unwrap().1, TimeBasis::Peer(actor(1)));
        // The year-ahead peer's changes are judged by the hub's time, and the hub's by the
        // only other claim there is (a lone claimant cannot be outvoted).
        let for_2 = r.bound_for(Some(actor(2)), 0).unwrap();
        assert!((NOW..NOW + SLACK).contains(&for_2), "{for_2}");
        assert!(r.bound_for(Some(actor(1)), 0).unwrap() >= NOW + YEAR);
    }

    #[test]
    fn the_larger_agreeing_group_wins_and_its_latest_claim_is_taken() {
        let r = TimeReference::new(300_000);
        r.set_local_trusted(false);
        claim(&r, 1, NOW + YEAR);
        claim(&r, 2, NOW + YEAR + 1_000);
        claim(&r, 3, NOW);
        let best = r.best_known_ms(0).unwrap();
        assert!(
            (NOW + YEAR + 1_000..NOW + YEAR + SLACK).contains(&best),
            "two against one: {best}"
        );
        claim(&r, 4, NOW + 2_000);
        claim(&r, 5, NOW + 200_000);
        let best = r.best_known_ms(0).unwrap();
        assert!(
            (NOW + 200_000..NOW + 200_000 + SLACK).contains(&best),
            "three against two, latest of them: {best}"
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
