//! Hybrid logical clock (Kulkarni et al. 2014): physical milliseconds plus a logical counter.
//!
//! Owns timestamp generation for local changes and the check of remote timestamps. It never
//! reads the database; the store seeds it from the highest HLC it holds so restarts with a
//! wall clock that went backwards (a Pi without RTC boots in the past) stay monotonic.
//! Remote timestamps are judged against the trusted sources of a [`TimeReference`], not the
//! raw wall clock (see `timeref.rs`), and local timestamps never fall behind the best time
//! known.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{ActorId, TimeReference};

/// Bits of an [`Hlc`] given to the logical counter.
const LOGICAL_BITS: u32 = 16;
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;

/// A hybrid logical timestamp packed in a `u64`: the upper 48 bits are unix milliseconds, the
/// lower 16 a logical counter. Orders like the pair `(ms, logical)`. Text form: `<ms>:<logical>`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Hlc(pub u64);

impl Hlc {
    /// The timestamp `(ms, logical)`.
    pub fn new(ms: u64, logical: u16) -> Hlc {
        Hlc((ms << LOGICAL_BITS) | u64::from(logical))
    }

    /// The latest HLC at wall time `ms` (every logical counter of that millisecond included);
    /// used for as-of reads by wall time.
    pub fn end_of_ms(ms: u64) -> Hlc {
        Hlc((ms << LOGICAL_BITS) | LOGICAL_MASK)
    }

    /// Physical part, unix milliseconds.
    pub fn ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// Logical counter.
    pub fn logical(self) -> u16 {
        (self.0 & LOGICAL_MASK) as u16
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.ms(), self.logical())
    }
}

impl fmt::Debug for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hlc({self})")
    }
}

/// Error parsing an [`Hlc`] from text.
#[derive(Debug, thiserror::Error)]
#[error("an HLC is written <unix-ms>:<logical>, got {0:?}")]
pub struct ParseHlcError(String);

impl FromStr for Hlc {
    type Err = ParseHlcError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseHlcError(s.chars().take(40).collect());
        let (ms, logical) = s.split_once(':').ok_or_else(err)?;
        let ms: u64 = ms.parse().map_err(|_| err())?;
        let logical: u16 = logical.parse().map_err(|_| err())?;
        if ms >> (64 - LOGICAL_BITS) != 0 {
            return Err(err());
        }
        Ok(Hlc::new(ms, logical))
    }
}

/// Where the clock reads wall time. Injectable so tests can jump time backwards and forwards.
pub trait TimeSource: Send + Sync + 'static {
    /// Current wall time in unix milliseconds.
    fn now_ms(&self) -> u64;
}

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemTime;

impl TimeSource for SystemTime {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A manually driven clock for tests.
#[derive(Debug, Default)]
pub struct ManualTime(std::sync::atomic::AtomicU64);

impl ManualTime {
    /// A clock reading `ms`.
    pub fn new(ms: u64) -> Arc<ManualTime> {
        Arc::new(ManualTime(std::sync::atomic::AtomicU64::new(ms)))
    }
    /// Sets the wall time (may go backwards).
    pub fn set(&self, ms: u64) {
        self.0.store(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl TimeSource for ManualTime {
    fn now_ms(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Why a remote timestamp was refused by [`HybridClock::observe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "remote timestamp {remote} is {ahead_ms} ms ahead of the best trusted time known here (max {max_offset_ms} ms)"
)]
pub struct ClockSkewError {
    /// The refused timestamp.
    pub remote: Hlc,
    /// How far ahead of the best trusted time it is.
    pub ahead_ms: u64,
    /// The configured maximum offset.
    pub max_offset_ms: u64,
}

/// The hybrid logical clock of one store. Not internally synchronised: the store keeps it
/// behind its own lock.
pub struct HybridClock {
    time: Arc<dyn TimeSource>,
    reference: Arc<TimeReference>,
    last: Hlc,
    max_offset_ms: u64,
}

impl fmt::Debug for HybridClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HybridClock")
            .field("last", &self.last)
            .field("max_offset_ms", &self.max_offset_ms)
            .finish()
    }
}

impl HybridClock {
    /// A clock reading `time`, refusing remote timestamps more than `max_offset_ms` ahead.
    /// The local wall clock is trusted until [`reference`](Self::reference) says otherwise.
    pub fn new(time: Arc<dyn TimeSource>, max_offset_ms: u64) -> HybridClock {
        HybridClock {
            time,
            reference: Arc::new(TimeReference::new(max_offset_ms)),
            last: Hlc(0),
            max_offset_ms,
        }
    }

    /// The trusted time sources this clock stamps and judges by (shared with sync sessions).
    pub fn reference(&self) -> &Arc<TimeReference> {
        &self.reference
    }

    /// The max offset a remote timestamp may run ahead of the best trusted time.
    pub fn max_offset_ms(&self) -> u64 {
        self.max_offset_ms
    }

    /// Makes every future timestamp greater than `floor` (the highest HLC already stored).
    pub fn seed(&mut self, floor: Hlc) {
        self.last = self.last.max(floor);
    }

    /// The last timestamp issued or observed.
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// Current wall time of the underlying time source, in unix ms.
    pub fn wall_ms(&self) -> u64 {
        self.time.now_ms()
    }

    /// What to tell a peer about this clock in a sync handshake.
    pub fn claim(&self) -> crate::ClockClaim {
        self.reference.claim(self.wall_ms())
    }

    /// A new timestamp for a local event: greater than every timestamp issued or observed,
    /// and never behind the wall clock nor the best trusted time known (a device whose clock
    /// is behind stamps its changes at or after the time a synchronised peer told it).
    pub fn now(&mut self) -> Hlc {
        let wall = self.time.now_ms();
        let wall = self
            .reference
            .best_known_ms(wall)
            .map_or(wall, |b| b.max(wall));
        self.last = if wall > self.last.ms() {
            Hlc::new(wall, 0)
        } else {
            Self::tick(self.last)
        };
        self.last
    }

    /// Folds in a timestamp received from another replica. Refuses (and leaves the clock
    /// unchanged) when it is more than the max offset ahead of every trusted time source.
    pub fn observe(&mut self, remote: Hlc) -> Result<(), ClockSkewError> {
        self.check(remote)?;
        if remote > self.last {
            self.last = remote;
        }
        Ok(())
    }

    /// Checks a remote timestamp against the max offset without advancing the clock: it is
    /// refused only when it runs ahead of every trusted source (any, including a peer's
    /// claim about itself) by more than the max offset, and accepted when nothing trusted is
    /// known.
    pub fn check(&self, remote: Hlc) -> Result<(), ClockSkewError> {
        self.check_from(remote, None)
    }

    /// Like [`check`](Self::check) for a change of `actor`, whose own clock claim does not
    /// count as a trusted source for it.
    pub fn check_from(&self, remote: Hlc, actor: Option<ActorId>) -> Result<(), ClockSkewError> {
        let wall = self.time.now_ms();
        let Some(bound) = self.reference.bound_for(actor, wall) else {
            return Ok(());
        };
        if remote.ms() > bound.saturating_add(self.max_offset_ms) {
            return Err(ClockSkewError {
                remote,
                ahead_ms: remote.ms() - bound,
                max_offset_ms: self.max_offset_ms,
            });
        }
        Ok(())
    }

    // The next timestamp after `t`; when the logical counter is exhausted, borrow the next
    // millisecond (ordering is what matters, and 65,536 events in one ms is rare).
    fn tick(t: Hlc) -> Hlc {
        if t.logical() == u16::MAX {
            Hlc::new(t.ms() + 1, 0)
        } else {
            Hlc(t.0 + 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn clock(ms: u64) -> (Arc<ManualTime>, HybridClock) {
        let t = ManualTime::new(ms);
        let c = HybridClock::new(t.clone(), 60_000);
        (t, c)
    }

    #[test]
    fn monotonic_when_wall_clock_jumps_back() {
        let (t, mut c) = clock(1_000_000);
        let a = c.now();
        t.set(5_000); // RTC-less boot: the clock is back in 1970
        let b = c.now();
        assert!(b > a);
        assert_eq!(b.ms(), a.ms());
        t.set(2_000_000); // NTP arrives
        let d = c.now();
        assert_eq!(d, Hlc::new(2_000_000, 0));
    }

    #[test]
    fn observe_advances_and_refuses_far_future() {
        let (_t, mut c) = clock(1_000_000);
        c.observe(Hlc::new(1_030_000, 7)).unwrap();
        assert!(c.now() > Hlc::new(1_030_000, 7));
        let err = c.observe(Hlc::new(1_000_000 + 60_001, 0)).unwrap_err();
        assert_eq!(err.ahead_ms, 60_001);
        assert!(
            c.last() < Hlc::new(1_060_001, 0),
            "refused timestamp must not move the clock"
        );
    }

    #[test]
    fn an_untrusted_clock_in_1970_accepts_a_correct_hub_and_moves_forward() {
        let (_t, mut c) = clock(5_000); // booted offline: 1970
        let hub_now = 1_764_000_000_000;
        assert!(
            c.observe(Hlc::new(hub_now, 0)).is_err(),
            "a trusted 1970 clock refuses"
        );
        c.reference().set_local_trusted(false);
        c.observe(Hlc::new(hub_now, 3))
            .expect("nothing trusted known: accepted");
        assert!(c.now() > Hlc::new(hub_now, 3));
    }

    #[test]
    fn a_trusted_peer_time_stamps_local_changes_and_bounds_others() {
        let (t, mut c) = clock(1_209_600_000); // two weeks after the epoch, say
        c.reference().set_local_trusted(false);
        let hub = ActorId::from_slice(&[1; 16]).unwrap();
        let liar = ActorId::from_slice(&[2; 16]).unwrap();
        let hub_now = 1_764_000_000_000;
        c.reference().observe_peer(
            hub,
            crate::ClockClaim {
                wall_ms: hub_now,
                trusted: true,
            },
        );
        // Our own changes are stamped at or after the hub's time, and keep moving.
        assert!(c.now().ms() >= hub_now);
        t.set(1_209_600_500);
        assert!(c.now().ms() >= hub_now);
        // The hub's changes are accepted whatever our wall clock says.
        c.check_from(Hlc::new(hub_now + 1_000, 0), Some(hub))
            .unwrap();
        // A peer a year ahead is refused, measured against the hub's time.
        let year = 365 * 86_400_000;
        let err = c
            .check_from(Hlc::new(hub_now + year, 0), Some(liar))
            .unwrap_err();
        assert!(err.ahead_ms >= year - 120_000 && err.ahead_ms <= year);
        // ... even when it claims its clock is synchronised: a claim does not vouch for itself.
        c.reference().observe_peer(
            liar,
            crate::ClockClaim {
                wall_ms: hub_now + year,
                trusted: true,
            },
        );
        assert!(
            c.check_from(Hlc::new(hub_now + year, 0), Some(liar))
                .is_err()
        );
    }

    #[test]
    fn logical_overflow_borrows_a_millisecond() {
        let (_t, mut c) = clock(10);
        c.seed(Hlc::new(10, u16::MAX));
        assert_eq!(c.now(), Hlc::new(11, 0));
    }

    #[test]
    fn text_form() {
        let h = Hlc::new(1_764_103_000_123, 42);
        assert_eq!(h.to_string(), "1764103000123:42");
        assert_eq!("1764103000123:42".parse::<Hlc>().unwrap(), h);
        assert!("1764103000123".parse::<Hlc>().is_err());
        assert!("a:b".parse::<Hlc>().is_err());
        assert!("1:70000".parse::<Hlc>().is_err());
    }

    proptest! {
        // Whatever the wall clock does and whatever is observed, issued timestamps strictly
        // increase and exceed everything observed.
        #[test]
        fn issued_timestamps_strictly_increase(steps in proptest::collection::vec((0u64..3_000_000, any::<bool>(), 0u64..3_000_000, any::<u16>()), 1..200)) {
            let (t, mut c) = clock(1_000_000);
            let mut last = Hlc(0);
            for (wall, do_observe, rms, rl) in steps {
                t.set(wall);
                if do_observe {
                    let remote = Hlc::new(rms, rl);
                    if c.observe(remote).is_ok() {
                        let n = c.now();
                        prop_assert!(n > remote);
                        prop_assert!(n > last);
                        last = n;
                        continue;
                    }
                }
                let n = c.now();
                prop_assert!(n > last);
                prop_assert!(n.ms() >= wall);
                last = n;
            }
        }

        #[test]
        fn hlc_text_round_trip(ms in 0u64..(1u64 << 47), l in any::<u16>()) {
            let h = Hlc::new(ms, l);
            prop_assert_eq!(h.to_string().parse::<Hlc>().unwrap(), h);
            prop_assert_eq!((h.ms(), h.logical()), (ms, l));
        }
    }
}
