//! Readings sampled while the wall clock is not trusted: timing them, and correcting them
//! once a trusted time is known (the rule is in `kdelta_sync`'s `timing.rs` and
//! `docs/clock.md`).
//!
//! While the clock verdict (`clock.rs`) is "not trusted", every reading a source samples is
//! committed in a batch carrying a [`ReadingTiming`]: this boot's id
//! (`/proc/sys/kernel/random/boot_id`) and the wall clock minus `CLOCK_BOOTTIME` (which runs
//! from boot, through suspend, and is never set). A reading whose timestamp is far from the
//! local wall clock came with its own time (a GPS sentence, a device's timestamp) and is
//! left alone; so are readings posted over HTTP with their own `ts` (those without one,
//! stamped by the agent, are timed). [`correction_loop`] then watches for a trusted time — the local clock once
//! NTP synchronises it, or a synchronised peer's handshake claim — and asks the store to
//! correct this boot's readings (`Store::correct_reading_times`).
//!
//! Owns the boot id, the monotonic clock reading and the loop; must not decide trust
//! (`clock.rs` does) nor touch the store's tables.

use std::sync::Arc;
use std::time::Duration;

use kdelta_sync::{BootId, ReadingTiming, Store, StoreError, TimeReference};
use tokio_util::sync::CancellationToken;

/// How often the correction loop looks for a trusted time.
pub const CORRECT_EVERY: Duration = Duration::from_secs(5);

/// A reading stamped more than this before the local wall clock, or [`AHEAD_TOLERANCE_MS`]
/// after it, was not timed by this clock (it brought its own timestamp).
pub const BEHIND_TOLERANCE_MS: i64 = 10 * 60_000;
/// See [`BEHIND_TOLERANCE_MS`].
pub const AHEAD_TOLERANCE_MS: i64 = 60_000;

/// Readings of one batch share one timing when their offsets differ by at most this (a
/// slewing clock moves a few ms; a step by NTP or by hand moves far more).
pub const SAME_TIMING_MS: i64 = 1_000;

/// Whether readings timed `a` and `b` may share one batch (whose one timing record describes
/// every reading in it): both untimed, or the same boot with offsets within
/// [`SAME_TIMING_MS`]. A clock step between them splits the batch.
pub fn same_timing(a: Option<ReadingTiming>, b: Option<ReadingTiming>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            a.boot_id == b.boot_id && (a.offset_ms - b.offset_ms).abs() <= SAME_TIMING_MS
        }
        _ => false,
    }
}

/// The kernel's id of the current boot, if the kernel says (read once per process).
pub fn read_boot_id() -> Option<BootId> {
    static BOOT: std::sync::OnceLock<Option<BootId>> = std::sync::OnceLock::new();
    *BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .and_then(|s| BootId::parse(&s))
    })
}

/// `CLOCK_BOOTTIME` in ms: time since boot, suspend included, never set by anyone.
// `time_t` and `c_long` are 32 bits on armv7: the conversions are not useless there.
#[allow(clippy::useless_conversion)]
pub fn boottime_ms() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_BOOTTIME exists on every Linux the
    // agent supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        return 0;
    }
    i64::from(ts.tv_sec).saturating_mul(1000) + i64::from(ts.tv_nsec) / 1_000_000
}

/// Decides the timing of sampled readings from the clock verdict.
#[derive(Debug)]
pub struct SampleTimer {
    reference: Arc<TimeReference>,
    boot: Option<BootId>,
}

impl SampleTimer {
    /// A timer for this boot, judging by `reference` (the store's).
    pub fn new(reference: Arc<TimeReference>) -> Arc<SampleTimer> {
        Self::with_boot(reference, read_boot_id())
    }

    /// A timer for a given boot (tests; `None`: the kernel gave no boot id, nothing is
    /// timed).
    pub fn with_boot(reference: Arc<TimeReference>, boot: Option<BootId>) -> Arc<SampleTimer> {
        Arc::new(SampleTimer { reference, boot })
    }

    /// This boot's id.
    pub fn boot(&self) -> Option<BootId> {
        self.boot
    }

    /// The timing of readings sampled when the wall clock reads `wall_ms` and the boot clock
    /// `mono_ms`: `None` while the clock is trusted.
    pub fn timing_at(&self, wall_ms: i64, mono_ms: i64) -> Option<ReadingTiming> {
        if self.reference.local_trusted() {
            return None;
        }
        Some(ReadingTiming {
            boot_id: self.boot?,
            offset_ms: wall_ms - mono_ms,
        })
    }

    /// [`timing_at`](Self::timing_at) now.
    pub fn timing_now(&self) -> Option<ReadingTiming> {
        self.timing_at(crate::time::now_ms(), boottime_ms())
    }

    /// Whether a reading stamped `ts_ms` was timed by the local clock reading `wall_ms`.
    pub fn locally_timed(ts_ms: i64, wall_ms: i64) -> bool {
        (wall_ms - BEHIND_TOLERANCE_MS..=wall_ms + AHEAD_TOLERANCE_MS).contains(&ts_ms)
    }

    /// Corrects this boot's untrusted readings if a trusted time is known; returns how many
    /// correction changes were written.
    pub async fn correct(&self, store: &Store) -> Result<usize, StoreError> {
        let Some(boot) = self.boot else { return Ok(0) };
        let wall = crate::time::now_ms_u64();
        let mono = boottime_ms();
        let Some((true_ms, basis)) = self.reference.best_known(wall) else {
            return Ok(0);
        };
        let true_offset = true_ms as i64 - mono;
        let mut written = 0;
        while let Some(meta) = store
            .correct_reading_times(boot, true_offset, basis)
            .await?
        {
            written += 1;
            tracing::info!(
                seq = meta.seq,
                ?basis,
                "corrected the time of readings sampled under an untrusted clock"
            );
        }
        Ok(written)
    }
}

/// Every [`CORRECT_EVERY`], corrects readings sampled under an untrusted clock once a
/// trusted time is known, until `cancel`.
pub async fn correction_loop(timer: Arc<SampleTimer>, store: Store, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(CORRECT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = timer.correct(&store).await {
            // Retried at the next tick; a closed store is shutdown.
            if matches!(e, StoreError::Closed) {
                return;
            }
            tracing::warn!("correcting the time of readings failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kdelta_sync::ClockClaim;

    fn boot() -> BootId {
        BootId([7; 16])
    }

    #[test]
    fn readings_are_timed_only_while_the_clock_is_untrusted() {
        let reference = Arc::new(TimeReference::default());
        let timer = SampleTimer::with_boot(reference.clone(), Some(boot()));
        assert_eq!(timer.timing_at(5_000, 1_000), None, "trusted");
        reference.set_local_trusted(false);
        assert_eq!(
            timer.timing_at(5_000, 1_000),
            Some(ReadingTiming {
                boot_id: boot(),
                offset_ms: 4_000
            })
        );
        let no_boot = SampleTimer::with_boot(reference, None);
        assert_eq!(no_boot.timing_at(5_000, 1_000), None);
    }

    #[test]
    fn a_batch_holds_one_timing() {
        let t = |boot: u8, offset_ms| {
            Some(ReadingTiming {
                boot_id: BootId([boot; 16]),
                offset_ms,
            })
        };
        assert!(same_timing(None, None));
        assert!(
            same_timing(t(1, 0), t(1, SAME_TIMING_MS)),
            "a slewing clock"
        );
        assert!(!same_timing(t(1, 0), t(1, SAME_TIMING_MS + 1)), "a step");
        assert!(!same_timing(t(1, 0), t(2, 0)), "another boot");
        assert!(!same_timing(t(1, 0), None), "timed and untimed");
    }

    #[test]
    fn readings_with_their_own_time_are_not_timed_locally() {
        let wall = 86_400_000;
        assert!(SampleTimer::locally_timed(wall, wall));
        assert!(SampleTimer::locally_timed(wall - 9 * 60_000, wall));
        assert!(!SampleTimer::locally_timed(wall - 11 * 60_000, wall));
        assert!(
            !SampleTimer::locally_timed(1_800_000_000_000, wall),
            "GPS time"
        );
    }

    #[test]
    fn the_boot_clock_runs() {
        let a = boottime_ms();
        assert!(a > 0);
        assert!(boottime_ms() >= a);
    }

    /// A store in "1970" appends untrusted readings, meets a trusted peer time, and the
    /// timer corrects them to the peer's time line (injected clocks: no sleeping).
    #[tokio::test]
    async fn a_trusted_peer_time_corrects_this_boots_readings() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.db"), Default::default())
            .await
            .unwrap();
        let reference = store.time_reference();
        reference.set_local_trusted(false);
        let timer = SampleTimer::with_boot(reference.clone(), Some(boot()));
        assert_eq!(timer.correct(&store).await.unwrap(), 0, "nothing to do");

        // Sampled at wall 60 s (1970) when the boot clock read 50 s.
        let timing = timer.timing_at(60_000, 50_000).unwrap();
        let mut batch = kdelta_sync::ReadingBatch::new();
        batch.push("t", 60_000, 1.0, None);
        batch.push("t", 61_000, 2.0, None);
        batch.timing = Some(timing);
        store.append(batch).await.unwrap();
        assert_eq!(
            timer.correct(&store).await.unwrap(),
            0,
            "no trusted time yet"
        );

        let real = crate::time::now_ms_u64();
        reference.observe_peer(
            kdelta_sync::ActorId([9; 16]),
            ClockClaim {
                wall_ms: real,
                trusted: true,
            },
        );
        assert_eq!(timer.correct(&store).await.unwrap(), 1);
        assert_eq!(timer.correct(&store).await.unwrap(), 0, "done once");
        let expected = real as i64 - boottime_ms() + 50_000;
        let page = store
            .range(&kdelta_sync::RangeQuery {
                series: "t".into(),
                from: 0,
                to: i64::MAX,
                limit: 10,
                cursor: None,
            })
            .await
            .unwrap();
        let first = page.readings[0].ts;
        assert!(
            (first - expected).abs() < 2_000,
            "corrected to {first}, expected about {expected}"
        );
        assert_eq!(page.readings[1].ts - first, 1_000, "order and spacing kept");
        let records = store.reading_timing(None, 0, 10).await.unwrap();
        assert_eq!(records.len(), 1);
        let r = &records[0].1;
        assert_eq!((r.original_from_ms, r.original_to_ms), (60_000, 61_000));
        assert_eq!(r.corrected_by, Some(2));
        assert_eq!(store.verify_digest().await.unwrap(), store.digest());
        store.close().await;
    }
}
