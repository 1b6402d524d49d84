//! Readings sampled under an untrusted wall clock, and their correction.
//!
//! A Raspberry Pi that boots offline reads 1970 (or an old fake-hwclock time) until a time
//! source answers. Its readings are still recorded, in order, with the time the clock gave
//! them — but not silently: the batch carries a [`ReadingTiming`] saying the clock was not
//! trusted, which boot sampled it (`/proc/sys/kernel/random/boot_id`) and how the wall clock
//! related to the monotonic clock of that boot when it did (`wall = monotonic + offset_ms`).
//!
//! Once the device knows a trusted time (its own NTP sync, or a synchronised peer's claim in
//! a sync handshake), the true offset of the current boot is `trusted_now - monotonic_now`;
//! every reading of that boot was really taken at `ts - offset_ms + true_offset`. The device
//! then writes a [`TimeCorrection`] change: for ranges of its own readings changes, the
//! milliseconds to add. It replicates like any change (in seq order after the readings it
//! corrects), every replica moves those readings to the corrected time — queries, aggregates
//! and rollups use it — and keeps the original: the readings change itself is unchanged in
//! the log (it re-syncs and hashes as it was made), and the timing record of each batch shows
//! original time, correction and the correcting change (`Store::reading_timing`).
//!
//! Readings of an earlier boot that ended before any trusted time was known cannot be
//! corrected (their monotonic clock is gone): they keep their timing record, visibly
//! uncorrected. Only the actor that sampled readings may correct them.
//!
//! Owns the two wire types and their validation; storage is in `correct.rs`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{ActorId, Limits, MAX_TS_MS, StoreError};

/// The id of one kernel boot (`/proc/sys/kernel/random/boot_id`, a random UUID): monotonic
/// times are comparable only within one boot.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BootId(pub [u8; 16]);

impl BootId {
    /// Parses the kernel's text form (`8-4-4-4-12` hex digits; dashes optional).
    pub fn parse(text: &str) -> Option<BootId> {
        let hex: String = text.trim().chars().filter(|c| *c != '-').collect();
        let bytes = hex::decode(hex).ok()?;
        bytes.try_into().ok().map(BootId)
    }
}

impl fmt::Display for BootId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for BootId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BootId({self})")
    }
}

// Encoded exactly like an actor id: 16 raw bytes in CBOR, 32 hex digits in JSON.
impl Serialize for BootId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ActorId(self.0).serialize(s)
    }
}

impl<'de> Deserialize<'de> for BootId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ActorId::deserialize(d).map(|a| BootId(a.0))
    }
}

/// How the readings of one batch were timed while the wall clock was not trusted. A batch
/// without it was timed by a trusted clock (or carries timestamps its sender vouched for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadingTiming {
    /// The boot the readings were sampled in.
    pub boot_id: BootId,
    /// Wall clock minus the boot's monotonic clock (`CLOCK_BOOTTIME`), ms, when the readings
    /// were sampled: a reading stamped `ts` was taken at monotonic `ts - offset_ms`.
    pub offset_ms: i64,
}

/// Most ranges one [`TimeCorrection`] may carry.
pub const MAX_CORRECTION_RANGES: usize = 4096;

/// One run of readings changes corrected by the same amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorrectedRange {
    /// First seq of the run (the correcting actor's own readings changes).
    pub first_seq: u64,
    /// Last seq of the run, inclusive.
    pub last_seq: u64,
    /// Milliseconds added to every reading of the run's changes that carry a timing record
    /// of the correction's boot and are not corrected yet.
    pub delta_ms: i64,
}

/// What the correcting actor knew to be the true time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeBasis {
    /// Its own wall clock, once trusted (NTP synchronised, plausible).
    LocalClock,
    /// The wall time a synchronised peer claimed in a sync handshake.
    Peer(ActorId),
}

/// A change that corrects the timestamps of readings its actor sampled under an untrusted
/// clock (see the module docs). Applies only to the same actor's earlier changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeCorrection {
    /// The boot whose readings are corrected.
    pub boot_id: BootId,
    /// The true time's source.
    pub basis: TimeBasis,
    /// Runs of readings changes and their corrections, ascending and disjoint.
    pub ranges: Vec<CorrectedRange>,
}

impl TimeCorrection {
    /// Checks the ranges: 1..=[`MAX_CORRECTION_RANGES`], ascending, disjoint, each before
    /// `seq` (the correction's own seq) and each delta within the timestamp range.
    pub fn validate(&self, seq: u64, _limits: &Limits) -> Result<(), StoreError> {
        let bad = |detail: String| StoreError::Decode {
            what: "time correction",
            detail,
        };
        if self.ranges.is_empty() || self.ranges.len() > MAX_CORRECTION_RANGES {
            return Err(bad(format!(
                "{} ranges (1 to {MAX_CORRECTION_RANGES} allowed)",
                self.ranges.len()
            )));
        }
        let mut after = 0u64;
        for r in &self.ranges {
            if r.first_seq == 0 || r.first_seq > r.last_seq || r.last_seq >= seq {
                return Err(bad(format!(
                    "range {}..={} is empty or not before the correction's seq {seq}",
                    r.first_seq, r.last_seq
                )));
            }
            if r.first_seq <= after {
                return Err(bad(format!(
                    "range {}..={} overlaps or precedes the one before it",
                    r.first_seq, r.last_seq
                )));
            }
            if r.delta_ms.unsigned_abs() >= MAX_TS_MS as u64 {
                return Err(bad(format!(
                    "correction of {} ms is outside the timestamp range",
                    r.delta_ms
                )));
            }
            after = r.last_seq;
        }
        Ok(())
    }
}

/// Groups `(seq, delta)` pairs (ascending seq) into ranges of consecutive entries with the
/// same delta. Seqs between two entries that are not listed (documents, trusted batches)
/// do not break a run: a range applies only to changes that have an open timing record.
pub fn ranges_of(entries: &[(u64, i64)]) -> Vec<CorrectedRange> {
    let mut out: Vec<CorrectedRange> = Vec::new();
    for &(seq, delta_ms) in entries {
        match out.last_mut() {
            Some(r) if r.delta_ms == delta_ms && seq > r.last_seq => r.last_seq = seq,
            _ => out.push(CorrectedRange {
                first_seq: seq,
                last_seq: seq,
                delta_ms,
            }),
        }
    }
    out
}

/// The timing of one stored readings change, as `Store::reading_timing` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimingRecord {
    /// The actor that sampled the readings.
    pub actor: ActorId,
    /// The readings change.
    pub seq: u64,
    /// How it was timed.
    pub timing: ReadingTiming,
    /// Readings of the series asked for in that change.
    pub count: u64,
    /// The first and last original timestamps (as sampled), unix ms.
    pub original_from_ms: i64,
    /// See `original_from_ms`.
    pub original_to_ms: i64,
    /// The correction, once one applied: ms added to every reading.
    pub delta_ms: Option<i64>,
    /// The seq of the correcting change (same actor).
    pub corrected_by: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_ids_parse_the_kernel_form() {
        let b = BootId::parse("3f1c1a5e-9b0e-4c4e-8f7a-0123456789ab\n").unwrap();
        assert_eq!(b.to_string(), "3f1c1a5e9b0e4c4e8f7a0123456789ab");
        assert!(BootId::parse("nope").is_none());
        assert!(BootId::parse("3f1c1a5e").is_none());
    }

    #[test]
    fn ranges_group_equal_deltas() {
        let r = ranges_of(&[(3, 10), (4, 10), (7, 10), (8, 12), (9, 10)]);
        assert_eq!(
            r,
            vec![
                CorrectedRange {
                    first_seq: 3,
                    last_seq: 7,
                    delta_ms: 10
                },
                CorrectedRange {
                    first_seq: 8,
                    last_seq: 8,
                    delta_ms: 12
                },
                CorrectedRange {
                    first_seq: 9,
                    last_seq: 9,
                    delta_ms: 10
                },
            ]
        );
    }

    #[test]
    fn corrections_are_validated() {
        let boot = BootId([1; 16]);
        let c = |ranges: Vec<(u64, u64, i64)>| TimeCorrection {
            boot_id: boot,
            basis: TimeBasis::LocalClock,
            ranges: ranges
                .into_iter()
                .map(|(first_seq, last_seq, delta_ms)| CorrectedRange {
                    first_seq,
                    last_seq,
                    delta_ms,
                })
                .collect(),
        };
        let l = Limits::default();
        assert!(c(vec![(1, 3, 5), (5, 9, -2)]).validate(10, &l).is_ok());
        assert!(c(vec![]).validate(10, &l).is_err());
        assert!(c(vec![(1, 10, 5)]).validate(10, &l).is_err(), "not before");
        assert!(c(vec![(3, 2, 5)]).validate(10, &l).is_err(), "empty");
        assert!(c(vec![(1, 3, 5), (3, 4, 1)]).validate(10, &l).is_err());
        assert!(c(vec![(0, 3, 5)]).validate(10, &l).is_err());
        assert!(c(vec![(1, 3, MAX_TS_MS)]).validate(10, &l).is_err());
    }
}
