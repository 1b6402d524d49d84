//! How far this device's wall clock can be trusted (`[clock]`), and keeping the store's
//! [`TimeReference`] told. A Raspberry Pi has no real-time clock: it boots with the time it
//! had at shutdown (fake-hwclock) or 1970, and many sheds never reach an NTP server. The
//! verdict decides whether sync judges peers' timestamps against this clock or against what
//! synchronised peers said (see `kdelta_sync::TimeReference`).
//!
//! Trusted means, with `trust = "auto"`: the kernel says the clock is synchronised
//! (`adjtimex`: no `STA_UNSYNC`, not `TIME_ERROR`; or systemd-timesyncd's
//! `/run/systemd/timesync/synchronized` flag) with a maximum error estimate within
//! `clock.max_error_ms` (the kernel's `maxerror` grows by 500 µs/s while no NTP update
//! arrives, so a clock whose time source went away loses trust before the kernel gives up on
//! it at 16 s), and the time is plausible — not before
//! [`earliest_plausible_ms`] (this release's date or the binary's build time, whichever is
//! later) nor behind the newest change this store already holds. `"always"` and `"never"` override the kernel (a clock disciplined by
//! something the kernel does not report; a device known to have no time source).
//!
//! Owns reading the kernel's NTP state and the `[clock]` section; must not touch sync
//! sessions (they read the reference).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use kdelta_sync::{Store, TimeReference};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// 2026-12-01T00:00:00Z: no correct clock running this release reads earlier. A clock that
/// does is a Pi that booted without a time source (1970, or an old fake-hwclock file).
pub const EARLIEST_PLAUSIBLE_MS: u64 = 1_796_083_200_000;

/// When this binary was built, unix ms (`build.rs`: `SOURCE_DATE_EPOCH`, or the time the
/// build script ran).
pub const BUILD_MS: u64 = parse_ms(env!("BUILD_TIME_MS_OF_KDELTA"));

/// The plausibility floor: a wall clock reading earlier than this release's date or than
/// the binary's build is wrong.
pub const fn earliest_plausible_ms() -> u64 {
    if BUILD_MS > EARLIEST_PLAUSIBLE_MS {
        BUILD_MS
    } else {
        EARLIEST_PLAUSIBLE_MS
    }
}

/// Decimal digits to a number at compile time (`build.rs` writes only digits).
const fn parse_ms(digits: &str) -> u64 {
    let bytes = digits.as_bytes();
    let mut n: u64 = 0;
    let mut i = 0;
    while i < bytes.len() {
        assert!(
            bytes[i].is_ascii_digit(),
            "BUILD_TIME_MS_OF_KDELTA is not a number"
        );
        n = n * 10 + (bytes[i] - b'0') as u64;
        i += 1;
    }
    n
}

/// How often the clock is re-assessed.
pub const CHECK_EVERY: Duration = Duration::from_secs(30);

/// systemd-timesyncd touches this file once it has synchronised the clock.
const TIMESYNCD_FLAG: &str = "/run/systemd/timesync/synchronized";

/// `[clock]`: whether to trust the wall clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClockConfig {
    /// `auto` (kernel NTP state and sanity bounds), `always` or `never`.
    pub trust: ClockTrust,
    /// With `auto`: the largest maximum error estimate of a synchronised kernel clock that
    /// is still trusted, ms.
    pub max_error_ms: u64,
    /// When a store stamped in the future is rebased (`crate::clock_rebase`): `restart`
    /// (also while running, by a clean restart of the process) or `at_start_only`.
    pub rebase: ClockRebase,
}

/// Default of [`ClockConfig::max_error_ms`]: well above what a disciplined clock reports
/// (tens to hundreds of ms, about 1 s after timesyncd's longest poll interval), well below the
/// kernel's 16 s limit.
pub const DEFAULT_MAX_ERROR_MS: u64 = 5_000;

impl Default for ClockConfig {
    fn default() -> Self {
        ClockConfig {
            trust: ClockTrust::Auto,
            max_error_ms: DEFAULT_MAX_ERROR_MS,
            rebase: ClockRebase::Restart,
        }
    }
}

/// See [`ClockConfig::trust`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockTrust {
    /// Trusted when the kernel says synchronised and the time is plausible.
    #[default]
    Auto,
    /// Always trusted (the operator vouches for it).
    Always,
    /// Never trusted: time comes from synchronised peers.
    Never,
}

/// See [`ClockConfig::rebase`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockRebase {
    /// At start, and while running: the agent stops cleanly and re-executes itself (same
    /// PID), and the start rebases.
    #[default]
    Restart,
    /// Only when the agent starts (or by hand, `kdelta rekey --rebase-clock`).
    AtStartOnly,
}

/// Why the running agent stopped to restart itself: its store's own changes ran more than
/// the max offset ahead of the trusted wall clock (`crate::clock_rebase::while_running`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartForRebase {
    /// How far the store's own newest change ran ahead of the wall clock, ms.
    pub lead_ms: u64,
}

/// What the kernel says about the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelSync {
    /// Synchronised, with the kernel's maximum error estimate in microseconds.
    Synchronised {
        /// `maxerror` of `adjtimex`, µs; `None` when only timesyncd's flag said so (the
        /// kernel's own estimate then describes an unsynchronised clock).
        max_error_us: Option<i64>,
    },
    /// Not synchronised (no NTP client has disciplined it, or it lost sync).
    Unsynchronised,
}

/// The verdict, as shown in `/v1/status`, `kdelta status` and the `STATUS=` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClockStatus {
    /// Whether sync judges timestamps by this clock.
    pub trusted: bool,
    /// `synchronised`, `unsynchronised`, `imprecise` (synchronised, but the kernel's error
    /// estimate is over `clock.max_error_ms`), `implausible`, `forced_trusted` or
    /// `forced_untrusted`.
    pub state: &'static str,
    /// A sentence saying why.
    pub reason: String,
    /// The kernel's maximum error estimate, ms, while synchronised.
    pub max_error_ms: Option<u64>,
    /// The best time known (the wall clock if trusted, else what a synchronised peer said),
    /// unix ms; `null` when nothing trusted is known.
    pub best_known_ms: Option<u64>,
    /// What the wall clock read when this status was made, unix ms (beside `best_known_ms`
    /// it shows how far off an untrusted clock is).
    pub wall_ms: u64,
    /// The rebase this start made, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebased: Option<Rebased>,
}

/// A rebase of the store's clock made at this start (`crate::clock_rebase`): its own
/// changes ran more than the max offset ahead of the trusted wall clock, so it took a new
/// actor. Shown in `/v1/status` (`clock.rebased`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rebased {
    /// The actor given up (its future-stamped changes stay, held back by correct peers
    /// until their time).
    pub old_actor: kdelta_sync::ActorId,
    /// The actor the store writes as now.
    pub new_actor: kdelta_sync::ActorId,
    /// The old actor's newest change's time, unix ms.
    pub old_newest_ms: u64,
    /// The trusted time of the rebase, unix ms.
    pub at_ms: u64,
}

/// Decides trust from the settings, the kernel, the wall clock and the store's newest
/// change.
pub fn assess(
    config: &ClockConfig,
    kernel: KernelSync,
    wall_ms: u64,
    newest_change_ms: u64,
    max_offset_ms: u64,
) -> ClockStatus {
    let trust = config.trust;
    let kernel_error_ms = match kernel {
        KernelSync::Synchronised {
            max_error_us: Some(us),
        } => Some(us.max(0) as u64 / 1000),
        _ => None,
    };
    let verdict = |trusted, state, reason: String| ClockStatus {
        trusted,
        state,
        reason,
        max_error_ms: kernel_error_ms,
        best_known_ms: None,
        wall_ms,
        rebased: None,
    };
    match trust {
        ClockTrust::Always => {
            return verdict(true, "forced_trusted", "clock.trust = \"always\"".into());
        }
        ClockTrust::Never => {
            return verdict(
                false,
                "forced_untrusted",
                "clock.trust = \"never\": time comes from synchronised peers".into(),
            );
        }
        ClockTrust::Auto => {}
    }
    if wall_ms < earliest_plausible_ms() {
        return verdict(
            false,
            "implausible",
            format!(
                "the wall clock reads {}, before this release was made ({}; booted without a time source?)",
                crate::time::format_rfc3339_ms(wall_ms as i64),
                crate::time::format_rfc3339_ms(earliest_plausible_ms() as i64)
            ),
        );
    }
    if wall_ms.saturating_add(max_offset_ms) < newest_change_ms {
        return verdict(
            false,
            "implausible",
            format!(
                "the wall clock reads {}, behind the newest change in the store ({})",
                crate::time::format_rfc3339_ms(wall_ms as i64),
                crate::time::format_rfc3339_ms(newest_change_ms as i64)
            ),
        );
    }
    match kernel {
        KernelSync::Synchronised { .. }
            if kernel_error_ms.is_some_and(|e| e > config.max_error_ms) =>
        {
            verdict(
                false,
                "imprecise",
                format!(
                    "the kernel reports the clock synchronised, but its maximum error estimate is {} ms, over clock.max_error_ms ({} ms): its time source stopped answering?",
                    kernel_error_ms.unwrap_or_default(),
                    config.max_error_ms
                ),
            )
        }
        KernelSync::Synchronised { .. } => verdict(
            true,
            "synchronised",
            "the kernel reports the clock synchronised".into(),
        ),
        KernelSync::Unsynchronised => verdict(
            false,
            "unsynchronised",
            "the kernel reports the clock unsynchronised (no NTP yet)".into(),
        ),
    }
}

/// Reads the kernel's NTP state (`adjtimex` with no modes set: read only), or timesyncd's
/// flag file.
pub fn kernel_sync() -> KernelSync {
    // SAFETY: `tx` is a zeroed, properly sized timex with `modes = 0`, which makes adjtimex
    // read the kernel's state without changing anything.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut tx) };
    let unsynced = state == libc::TIME_ERROR || state < 0 || tx.status & libc::STA_UNSYNC != 0;
    if !unsynced {
        return KernelSync::Synchronised {
            max_error_us: Some(tx.maxerror),
        };
    }
    if std::path::Path::new(TIMESYNCD_FLAG).exists() {
        return KernelSync::Synchronised { max_error_us: None };
    }
    KernelSync::Unsynchronised
}

/// The current verdict, shared with the API and the status line.
#[derive(Debug)]
pub struct ClockMonitor {
    config: ClockConfig,
    reference: Arc<TimeReference>,
    status: RwLock<ClockStatus>,
    rebased: std::sync::OnceLock<Rebased>,
    restart: std::sync::OnceLock<RestartForRebase>,
}

impl ClockMonitor {
    /// A monitor telling `reference`; not assessed until [`refresh`](Self::refresh).
    pub fn new(config: &ClockConfig, reference: Arc<TimeReference>) -> Arc<ClockMonitor> {
        Arc::new(ClockMonitor {
            config: config.clone(),
            status: RwLock::new(ClockStatus {
                trusted: reference.local_trusted(),
                state: "not_assessed",
                reason: "not assessed yet".into(),
                max_error_ms: None,
                best_known_ms: None,
                wall_ms: 0,
                rebased: None,
            }),
            reference,
            rebased: std::sync::OnceLock::new(),
            restart: std::sync::OnceLock::new(),
        })
    }

    /// A monitor for `store`, assessed once already (so the first sync session knows).
    pub fn start(config: &ClockConfig, store: &Store, metrics: &Metrics) -> Arc<ClockMonitor> {
        let monitor = ClockMonitor::new(config, store.time_reference());
        monitor.refresh(store, metrics, true);
        monitor
    }

    /// The latest verdict, with the best time known now.
    pub fn status(&self) -> ClockStatus {
        let mut s = self
            .status
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // The reference is what sync acts on: report that.
        s.trusted = self.reference.local_trusted();
        s.wall_ms = crate::time::now_ms_u64();
        s.best_known_ms = self.reference.best_known_ms(s.wall_ms);
        s.rebased = self.rebased.get().cloned();
        s
    }

    /// Records the rebase this start made (shown in every later status).
    pub fn set_rebased(&self, rebased: Rebased) {
        let _ = self.rebased.set(rebased);
    }

    /// The settings this monitor judges by.
    pub fn config(&self) -> &ClockConfig {
        &self.config
    }

    /// Records that the agent stops to restart itself for a rebase (the first call wins).
    pub fn request_restart(&self, restart: RestartForRebase) {
        let _ = self.restart.set(restart);
    }

    /// Set when the agent stopped to restart itself for a rebase: the process re-executes.
    pub fn restart_requested(&self) -> Option<RestartForRebase> {
        self.restart.get().copied()
    }

    /// Re-assesses, tells the store's reference, sets the metric and logs a change of
    /// verdict (`first`: log the initial verdict too).
    pub fn refresh(&self, store: &Store, metrics: &Metrics, first: bool) {
        let status = assess(
            &self.config,
            kernel_sync(),
            crate::time::now_ms_u64(),
            store.last_hlc().ms(),
            store.config().max_clock_offset_ms,
        );
        let was = self.reference.set_local_trusted(status.trusted);
        metrics.set_clock_trusted(status.trusted);
        let mut current = self.status.write().unwrap_or_else(|e| e.into_inner());
        if first || was != status.trusted || current.state != status.state {
            if status.trusted {
                tracing::info!(
                    state = status.state,
                    "wall clock trusted: {}",
                    status.reason
                );
            } else {
                tracing::warn!(
                    state = status.state,
                    "wall clock not trusted: {}; timestamps are judged by synchronised peers",
                    status.reason
                );
            }
        }
        *current = status;
    }
}

/// Re-assesses the clock every [`CHECK_EVERY`] until `cancel`.
pub async fn clock_loop(
    monitor: Arc<ClockMonitor>,
    store: Store,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => monitor.refresh(&store, &metrics, false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plausible "now" whenever and wherever the tests are built.
    const NOW: u64 = earliest_plausible_ms() + 86_400_000;
    const SYNCED: KernelSync = KernelSync::Synchronised {
        max_error_us: Some(12_000),
    };

    fn auto() -> ClockConfig {
        ClockConfig::default()
    }

    #[test]
    fn a_synchronised_plausible_clock_is_trusted() {
        let s = assess(&auto(), SYNCED, NOW, NOW - 5, 300_000);
        assert!(s.trusted);
        assert_eq!((s.state, s.max_error_ms), ("synchronised", Some(12)));
    }

    #[test]
    fn an_unsynchronised_or_implausible_clock_is_not() {
        let s = assess(&auto(), KernelSync::Unsynchronised, NOW, 0, 300_000);
        assert_eq!((s.trusted, s.state), (false, "unsynchronised"));
        // 1970, even when the kernel claims synchronised.
        let s = assess(&auto(), SYNCED, 5_000, 0, 300_000);
        assert_eq!((s.trusted, s.state), (false, "implausible"));
        assert!(s.reason.contains("before this release"), "{}", s.reason);
        // Behind the newest change in the store by more than the max offset.
        let s = assess(&auto(), SYNCED, NOW, NOW + 300_001, 300_000);
        assert_eq!((s.trusted, s.state), (false, "implausible"));
        assert!(
            s.reason.contains("behind the newest change"),
            "{}",
            s.reason
        );
        let s = assess(&auto(), SYNCED, NOW, NOW + 300_000, 300_000);
        assert!(s.trusted);
    }

    #[test]
    fn the_floor_is_the_later_of_the_release_date_and_the_build() {
        assert!(earliest_plausible_ms() >= EARLIEST_PLAUSIBLE_MS);
        assert!(earliest_plausible_ms() >= BUILD_MS);
        // Recorded by build.rs on this machine, before the test ran.
        assert!(BUILD_MS <= crate::time::now_ms_u64(), "{BUILD_MS}");
        assert_eq!(parse_ms("1796083200000"), 1_796_083_200_000);
        // A minute before the floor is implausible; the floor itself is not.
        let s = assess(&auto(), SYNCED, earliest_plausible_ms() - 60_000, 0, 0);
        assert_eq!((s.trusted, s.state), (false, "implausible"));
        let s = assess(&auto(), SYNCED, earliest_plausible_ms(), 0, 0);
        assert!(s.trusted, "{s:?}");
    }

    #[test]
    fn the_setting_overrides_the_kernel() {
        let s = assess(
            &ClockConfig {
                trust: ClockTrust::Always,
                ..auto()
            },
            KernelSync::Unsynchronised,
            5_000,
            0,
            0,
        );
        assert_eq!((s.trusted, s.state), (true, "forced_trusted"));
        let s = assess(
            &ClockConfig {
                trust: ClockTrust::Never,
                ..auto()
            },
            SYNCED,
            NOW,
            0,
            0,
        );
        assert_eq!((s.trusted, s.state), (false, "forced_untrusted"));
    }

    #[test]
    fn config_parses_and_refuses_unknown_values() {
        let c: ClockConfig = toml::from_str("trust = \"never\"").unwrap();
        assert_eq!(c.trust, ClockTrust::Never);
        let err = toml::from_str::<ClockConfig>("trust = \"sometimes\"").unwrap_err();
        assert!(err.to_string().contains("sometimes"), "{err}");
        assert_eq!(c.rebase, ClockRebase::Restart, "the default");
        let c: ClockConfig = toml::from_str("rebase = \"at_start_only\"").unwrap();
        assert_eq!(c.rebase, ClockRebase::AtStartOnly);
        assert!(toml::from_str::<ClockConfig>("rebase = \"never\"").is_err());
    }

    #[test]
    fn a_synchronised_clock_whose_error_grew_past_the_bound_is_not_trusted() {
        let drifting = KernelSync::Synchronised {
            max_error_us: Some(9_000_000),
        };
        let s = assess(&auto(), drifting, NOW, NOW - 5, 300_000);
        assert_eq!(
            (s.trusted, s.state, s.max_error_ms),
            (false, "imprecise", Some(9_000))
        );
        assert!(s.reason.contains("clock.max_error_ms"), "{}", s.reason);
        let lenient = ClockConfig {
            max_error_ms: 10_000,
            ..auto()
        };
        assert!(assess(&lenient, drifting, NOW, NOW - 5, 300_000).trusted);
        // Only timesyncd's flag: no kernel estimate to judge, trusted.
        let flag = KernelSync::Synchronised { max_error_us: None };
        let s = assess(&auto(), flag, NOW, NOW - 5, 300_000);
        assert_eq!((s.trusted, s.max_error_ms), (true, None));
    }
}
