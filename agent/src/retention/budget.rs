//! The disk budget: measuring the store against `[retention] max_disk`, `min_free` and
//! `hard_limit`, and pruning the oldest raw readings until it fits.
//!
//! A pass (run by the retention loop every `retention.every`):
//! 1. Measure: the store's use (database + WAL + shm, less the free pages inside the file,
//!    which new writes reuse) and the room left (the file system's available bytes plus those
//!    free pages and the held reserve).
//! 2. Over budget (use above `max_disk`, or room below `min_free`): prune raw readings before
//!    a cut that moves forward from the oldest reading kept towards the newest, in rounds, re-measuring after
//!    each (`Store::prune_before`: the age prune's small writer jobs, then incremental
//!    vacuum and a WAL checkpoint). Readings no upstream peer has acknowledged are kept
//!    (`Unacked::Keep`). Stops once use is at most 95 % of `max_disk` and room at least
//!    `min_free`, or when every reading before now has been looked at.
//! 3. Still over the hard limit (use above `hard_limit`, default `max_disk` + 25 %, or room
//!    below half of `min_free`): the same rounds with `Unacked::Drop` — the oldest
//!    unacknowledged readings go as well and every writer step that drops some writes a gap
//!    record that syncs — until use is back to the middle between `max_disk` and the hard
//!    limit (and room to the middle between the floor and `min_free`).
//!
//! A **recovery pass** (the disk is full: the store released its reserve, `reserve.rs`) is
//! the same pass run at once rather than at the next tick, with `min_free` raised to the
//! room the store needs to hold its reserve again and resume writes.
//!
//! Rollups (`Store::prune_rollups_before`, oldest first, never a minute whose raw readings
//! remain: within a range the raw readings always go first; rollups are derived data outside
//! the digest) answer aggregates over pruned ranges and take about 1/60 of the raw readings
//! of a 1 Hz series, so they outlive raw readings — but not without bound: before step 2,
//! rollups holding more than a quarter of `max_disk` are pruned down to it (so a slow series,
//! one rollup row per reading, cannot crowd out the newest raw readings), and once every raw
//! reading the budget may prune is gone and the store is still over, the oldest rollups go
//! too. Documents, twins and the change log are never pruned by the budget: when the store is
//! still over it after all that, the pass says the budget **cannot be met**
//! ([`BudgetPass::cannot_meet`]; the retention loop names what holds the space).

use std::path::Path;

use kdelta_sync::{PruneReport, Store, StoreSpace, Unacked, VersionVector};
use serde::Serialize;

use super::{DiskSize, RetentionConfig};

/// Rounds of (prune, reclaim, measure) one phase of a pass runs at most.
const MAX_ROUNDS: usize = 24;
/// The cut moves at least this far per round (a cut of `t` prunes the (batch, series) units
/// wholly before `t`).
const MIN_STEP_MS: i64 = 1_000;
/// Rollups may hold `max_disk / ROLLUP_SHARE` before the oldest of them go ahead of raw
/// readings.
const ROLLUP_SHARE: u64 = 4;
/// A minute: what a rollup covers, and the least a rollup round moves its cut.
const MINUTE_MS: i64 = 60_000;
/// How long a measure of the rollups' bytes stands (unless a pass pruned rollups since).
/// Measuring walks every page of the rollups: a year of 15 series is ~660 MB, read again on
/// every pass — each minute, for as long as the budget cannot be met — were it not kept.
/// Rollups grow by a sixtieth of the raw readings, so a few minutes' growth is noise beside
/// the quarter of `max_disk` they are held to.
const ROLLUP_REMEASURE: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// The rollups' bytes (`Store::rollup_bytes`), kept between passes by the retention loop.
#[derive(Debug, Default)]
pub struct RollupMeasure {
    taken: Option<(std::time::Instant, u64)>,
}

impl RollupMeasure {
    /// The last measure when it is recent, else a new one.
    pub async fn bytes(&mut self, store: &Store) -> Result<u64, String> {
        if let Some((at, bytes)) = self.taken
            && at.elapsed() < ROLLUP_REMEASURE
        {
            return Ok(bytes);
        }
        let bytes = store.rollup_bytes().await.map_err(|e| e.to_string())?;
        self.taken = Some((std::time::Instant::now(), bytes));
        Ok(bytes)
    }

    /// Forgets the measure (rollups were pruned).
    pub fn forget(&mut self) {
        self.taken = None;
    }
}

/// The budget's limits in bytes, resolved against the file system's size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// `max_disk`.
    pub max_bytes: Option<u64>,
    /// `hard_limit` (default `max_disk` + 25 %).
    pub hard_bytes: Option<u64>,
    /// `min_free`.
    pub min_free_bytes: Option<u64>,
    /// Half of `min_free`: below it, unacknowledged readings go too.
    pub floor_bytes: Option<u64>,
}

impl Limits {
    /// Resolves the configured sizes on a file system of `fs_total` bytes.
    pub fn resolve(config: &RetentionConfig, fs_total: u64) -> Limits {
        let max_bytes = config.max_disk.map(|s| s.bytes_of(fs_total));
        let hard_bytes = match (config.hard_limit, max_bytes) {
            (Some(h), Some(m)) => Some(h.bytes_of(fs_total).max(m)),
            (None, Some(m)) => Some(m.saturating_add(m / 4)),
            _ => None,
        };
        let min_free_bytes = config.min_free.map(|s: DiskSize| s.bytes_of(fs_total));
        Limits {
            max_bytes,
            hard_bytes,
            min_free_bytes,
            floor_bytes: min_free_bytes.map(|f| f / 2),
        }
    }
}

/// One measurement of the store and its file system.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Measure {
    /// The store's files and the free pages inside them.
    pub space: StoreSpace,
    /// The file system's available bytes (for unprivileged writers).
    pub fs_available: u64,
    /// The file system's size.
    pub fs_total: u64,
    /// The store's reserve file while it is held (`reserve.rs`): room kept for a full disk.
    pub reserve_bytes: u64,
}

impl Measure {
    /// Measures `store`, on the file system holding `dir`.
    pub async fn take(store: &Store, dir: &Path) -> Result<Measure, String> {
        let space = store.space().await.map_err(|e| e.to_string())?;
        let fs = kdelta_sensors::system::disk_usage(dir).map_err(|e| e.to_string())?;
        let reserve = store.write_health().reserve;
        Ok(Measure {
            space,
            fs_available: fs.available,
            fs_total: fs.total,
            reserve_bytes: reserve
                .filter(|r| r.state == kdelta_sync::ReserveState::Held)
                .map_or(0, |r| r.bytes),
        })
    }

    /// Bytes the store uses.
    pub fn used(&self) -> u64 {
        self.space.used_bytes()
    }

    /// Bytes still writable: the file system's available bytes, the store's free pages and
    /// the held reserve (free space kept for a full disk: releasing it changes no room).
    pub fn room(&self) -> u64 {
        self.fs_available
            .saturating_add(self.space.free_bytes)
            .saturating_add(self.reserve_bytes)
    }

    /// Over `max_disk`, or below `min_free`.
    pub fn over(&self, l: &Limits) -> bool {
        l.max_bytes.is_some_and(|m| self.used() > m)
            || l.min_free_bytes.is_some_and(|f| self.room() < f)
    }

    /// Over the hard limit, or below the free-space floor.
    pub fn over_hard(&self, l: &Limits) -> bool {
        l.hard_bytes.is_some_and(|h| self.used() > h)
            || l.floor_bytes.is_some_and(|f| self.room() < f)
    }

    /// The share of the store to free to get to `use_target` and `room_target` (0 when
    /// both are met).
    fn excess(&self, use_target: Option<u64>, room_target: Option<u64>) -> f64 {
        let used = self.used().max(1) as f64;
        let by_use = use_target.map_or(0.0, |t| (self.used().saturating_sub(t)) as f64 / used);
        let by_room = room_target.map_or(0.0, |t| (t.saturating_sub(self.room())) as f64 / used);
        by_use.max(by_room)
    }
}

/// What one budget pass found and did, for `/v1/status` (`store.budget`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct BudgetPass {
    /// Unix ms when the pass ended.
    pub at_ms: Option<i64>,
    /// How long it took (ms): measuring, pruning rounds, giving space back.
    pub took_ms: u64,
    /// The limits as resolved on the file system.
    pub limits: Limits,
    /// The measurement before pruning.
    pub before: Measure,
    /// The measurement after.
    pub after: Measure,
    /// What was pruned while keeping unacknowledged readings.
    pub pruned: PruneReport,
    /// What was pruned at the hard limit (unacknowledged readings included).
    pub hard: PruneReport,
    /// What was pruned of the rollups, once raw readings were gone (`rollups`).
    pub rollups: PruneReport,
    /// True when the budget is still exceeded and only unacknowledged readings are left to
    /// prune below the hard limit: upstream peers are behind and readings are being held.
    pub holding_unacked: bool,
    /// True when the store is still over budget after the pass looked at everything the
    /// budget may prune (raw readings, then rollups; at the hard limit unacknowledged
    /// readings too): what is left is held (readings upstream has not acknowledged,
    /// readings awaiting a time correction) or never pruned by the budget (documents,
    /// twins, the change log). False when the pass merely ran out of rounds.
    pub cannot_meet: bool,
    /// The pass's error (a failed measurement or prune), tried again next tick.
    pub error: Option<String>,
}

impl BudgetPass {
    /// Change rows the pass's cuts compacted into log runs.
    pub fn changes_compacted(&self) -> u64 {
        self.pruned.changes_compacted + self.hard.changes_compacted + self.rollups.changes_compacted
    }

    /// What `/metrics` takes of this pass.
    pub fn sample(&self) -> crate::metrics::BudgetSample {
        crate::metrics::BudgetSample {
            used_bytes: self.after.used(),
            limit_bytes: self.limits.max_bytes.unwrap_or(0),
            hard_limit_bytes: self.limits.hard_bytes.unwrap_or(0),
            holding_unacked: self.holding_unacked,
            held_readings: self.pruned.held,
            pruned_readings: self.pruned.readings + self.hard.readings,
            dropped_readings: self.hard.dropped_unacked,
            gap_records: self.hard.gaps,
            pruned_rollups: self.rollups.rollups,
            compacted_changes: self.changes_compacted(),
            cannot_meet: self.cannot_meet,
        }
    }
}

/// Runs one budget pass: see the module docs. `acked`: what every upstream peer is known to
/// hold (`None`: no upstream peer is configured). `recovery_room`: set when the disk is full
/// (a recovery pass, `task.rs`): the pass frees at least this much room, whatever `min_free`
/// says (the floor where unacknowledged readings go too stays half of `min_free`).
pub async fn budget_pass(
    store: &Store,
    dir: &Path,
    config: &RetentionConfig,
    acked: Option<VersionVector>,
    recovery_room: Option<u64>,
    rollups: &mut RollupMeasure,
) -> BudgetPass {
    let mut pass = BudgetPass::default();
    let started = std::time::Instant::now();
    if let Err(e) = run(store, dir, config, acked, recovery_room, rollups, &mut pass).await {
        pass.error = Some(e);
    }
    if pass.error.is_some() || pass.rollups.rollups > 0 {
        rollups.forget();
    }
    pass.took_ms = started.elapsed().as_millis() as u64;
    pass.at_ms = Some(crate::time::now_ms());
    pass
}

async fn run(
    store: &Store,
    dir: &Path,
    config: &RetentionConfig,
    acked: Option<VersionVector>,
    recovery_room: Option<u64>,
    rollup_measure: &mut RollupMeasure,
    pass: &mut BudgetPass,
) -> Result<(), String> {
    let mut m = Measure::take(store, dir).await?;
    let mut limits = Limits::resolve(config, m.fs_total);
    if let Some(room) = recovery_room {
        limits.min_free_bytes = Some(limits.min_free_bytes.unwrap_or(0).max(room));
    }
    pass.limits = limits;
    pass.before = m;
    pass.after = m;
    if !m.over(&limits) {
        return Ok(());
    }
    let keep = match &acked {
        Some(v) => Unacked::Keep(v.clone()),
        None => Unacked::NoUpstream,
    };
    let soft = Targets {
        used: limits.max_bytes.map(|b| b - b / 20),
        room: limits.min_free_bytes,
    };
    // Rollups beyond their share go first (oldest first, only minutes whose raw readings
    // are gone): they outlive raw readings, but must not crowd out the newest ones.
    if let Some(max) = limits.max_bytes {
        let share = max / ROLLUP_SHARE;
        let rollups = rollup_measure.bytes(store).await?;
        if rollups > share {
            let target = Targets {
                used: Some(
                    m.used()
                        .saturating_sub(rollups - share)
                        .max(soft.used.unwrap_or(0)),
                ),
                room: None,
            };
            prune_rounds(
                store,
                config,
                Phase::Rollups,
                target,
                dir,
                &mut m,
                &mut pass.rollups,
            )
            .await?;
        }
    }
    let raw = Phase::Raw(&keep);
    let mut exhausted =
        prune_rounds(store, config, raw, soft, dir, &mut m, &mut pass.pruned).await?;
    if exhausted && m.over(&limits) {
        exhausted = prune_rounds(
            store,
            config,
            Phase::Rollups,
            soft,
            dir,
            &mut m,
            &mut pass.rollups,
        )
        .await?;
    }
    if let Some(v) = acked
        && m.over(&limits)
    {
        if m.over_hard(&limits) {
            let mid = |a: Option<u64>, b: Option<u64>| Some(a? / 2 + b? / 2);
            let hard = Targets {
                used: mid(limits.max_bytes, limits.hard_bytes),
                room: mid(limits.min_free_bytes, limits.floor_bytes),
            };
            let drop = Unacked::Drop(v);
            exhausted = prune_rounds(
                store,
                config,
                Phase::Raw(&drop),
                hard,
                dir,
                &mut m,
                &mut pass.hard,
            )
            .await?;
            // The rollups of what was dropped, if the store is still over.
            if exhausted && m.excess(hard.used, hard.room) > 0.0 {
                exhausted = prune_rounds(
                    store,
                    config,
                    Phase::Rollups,
                    hard,
                    dir,
                    &mut m,
                    &mut pass.rollups,
                )
                .await?;
            }
        }
        pass.holding_unacked = m.over(&limits) && pass.pruned.held > 0;
    }
    pass.cannot_meet = exhausted && m.over(&limits);
    pass.after = m;
    Ok(())
}

/// Where a phase stops: use at most `used`, room at least `room`.
#[derive(Debug, Clone, Copy)]
struct Targets {
    used: Option<u64>,
    room: Option<u64>,
}

/// What a phase prunes.
#[derive(Debug, Clone, Copy)]
enum Phase<'a> {
    /// Raw readings (whole (change, series) units), keeping or dropping unacknowledged ones.
    Raw(&'a Unacked),
    /// Per-minute rollups (never a minute whose raw readings remain).
    Rollups,
}

/// Prunes in rounds, each moving a cut forward from the oldest data of the phase's kind and
/// re-measuring, until `targets` are met or `MAX_ROUNDS` ran. Returns true when the cut passed
/// the newest data: everything of that kind the phase may prune is gone.
async fn prune_rounds(
    store: &Store,
    config: &RetentionConfig,
    phase: Phase<'_>,
    targets: Targets,
    dir: &Path,
    m: &mut Measure,
    report: &mut PruneReport,
) -> Result<bool, String> {
    let span = match phase {
        Phase::Raw(_) => store.reading_span().await,
        // A rollup's minute is its start: it goes once the cut is past the minute's end.
        Phase::Rollups => store
            .rollup_span()
            .await
            .map(|s| s.map(|(lo, hi)| (lo, hi + MINUTE_MS - 1))),
    };
    let Some((oldest, newest)) = span.map_err(|e| e.to_string())? else {
        return Ok(true); // nothing of this kind left
    };
    let min_step = match phase {
        Phase::Raw(_) => MIN_STEP_MS,
        Phase::Rollups => MINUTE_MS,
    };
    let mut cut = oldest;
    // Doubles after a round that pruned nothing (everything before the cut is held for
    // upstream, or straddles it), so a store full of held readings is crossed in a few
    // rounds instead of rescanning them at the small step every time.
    let mut boost = 1.0f64;
    for _ in 0..MAX_ROUNDS {
        let excess = m.excess(targets.used, targets.room);
        if excess <= 0.0 || cut > newest {
            break;
        }
        // Move the cut by the share of the remaining data's time span that should hold
        // the excess (as if it came at a steady rate), at most a quarter of it and at least
        // `min_step`; re-measuring after each round corrects the guess, so a skewed spread
        // costs rounds, not readings.
        let span = newest.saturating_sub(cut).max(0) as f64;
        let step = (span * (excess * boost).clamp(0.01, 0.25 * boost)) as i64;
        cut = cut.saturating_add(step.max(min_step));
        let r = match phase {
            Phase::Raw(unacked) => store.prune_before(cut, config.step_rows, unacked).await,
            Phase::Rollups => store.prune_rollups_before(cut, config.step_rows).await,
        }
        .map_err(|e| e.to_string())?;
        if r.readings + r.rollups == 0 {
            boost = (boost * 2.0).min(4.0);
        }
        // `held` is recounted by every round over the same readings: keep the largest.
        let held = report.held.max(r.held);
        report.add(&r);
        report.held = held;
        *m = Measure::take(store, dir).await?;
    }
    Ok(cut > newest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Readings of `series` one a minute for `minutes` minutes from `from`: one rollup row each.
    fn minutes(series: &str, from: i64, minutes: i64) -> kdelta_sync::ReadingBatch {
        let mut b = kdelta_sync::ReadingBatch::new();
        for m in 0..minutes {
            b.push(series, from + m * MINUTE_MS, m as f64, None);
        }
        b
    }

    /// The rollups' pages are walked once per [`ROLLUP_REMEASURE`], not on every pass, and
    /// again at once after rollups were pruned.
    #[tokio::test]
    async fn the_rollups_are_measured_again_only_when_stale_or_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.db"), Default::default())
            .await
            .unwrap();
        const T0: i64 = 1_764_000_000_000;
        store.append(minutes("a", T0, 5_000)).await.unwrap();
        let mut measure = RollupMeasure::default();
        let first = measure.bytes(&store).await.unwrap();
        assert_eq!(first, store.rollup_bytes().await.unwrap());
        store.append(minutes("b", T0, 5_000)).await.unwrap();
        let grown = store.rollup_bytes().await.unwrap();
        assert!(grown > first, "{grown} > {first}");
        assert_eq!(measure.bytes(&store).await.unwrap(), first, "kept");
        measure.forget();
        assert_eq!(
            measure.bytes(&store).await.unwrap(),
            grown,
            "measured again"
        );
        store.close().await;
    }

    #[test]
    fn limits_resolve_shares_and_the_default_hard_limit() {
        let c = RetentionConfig {
            max_disk: Some(DiskSize::Percent(10.0)),
            min_free: Some(DiskSize::Bytes(1000)),
            ..RetentionConfig::default()
        };
        let l = Limits::resolve(&c, 10_000);
        assert_eq!(l.max_bytes, Some(1000));
        assert_eq!(l.hard_bytes, Some(1250));
        assert_eq!((l.min_free_bytes, l.floor_bytes), (Some(1000), Some(500)));
        let c = RetentionConfig {
            max_disk: Some(DiskSize::Bytes(1000)),
            hard_limit: Some(DiskSize::Bytes(3000)),
            ..RetentionConfig::default()
        };
        assert_eq!(Limits::resolve(&c, 0).hard_bytes, Some(3000));
    }

    #[test]
    fn over_and_hard_follow_use_and_room() {
        let l = Limits {
            max_bytes: Some(1000),
            hard_bytes: Some(1250),
            min_free_bytes: Some(100),
            floor_bytes: Some(50),
        };
        let at = |used: u64, avail: u64| Measure {
            space: StoreSpace {
                db_bytes: used,
                ..StoreSpace::default()
            },
            fs_available: avail,
            fs_total: 10_000,
            reserve_bytes: 0,
        };
        assert!(!at(900, 500).over(&l));
        assert!(at(1001, 500).over(&l) && !at(1001, 500).over_hard(&l));
        assert!(at(1300, 500).over_hard(&l));
        assert!(at(900, 90).over(&l) && !at(900, 90).over_hard(&l));
        assert!(at(900, 40).over_hard(&l));
        // Free pages inside the file count as room, not as use.
        let mut m = at(1100, 90);
        m.space.free_bytes = 200;
        assert!(!m.over(&l));
        // So does the held reserve: releasing it to a full disk changes no room.
        let mut m = at(900, 60);
        m.reserve_bytes = 40;
        assert!(!m.over(&l) && m.room() == 100);
        assert!(at(2000, 500).excess(Some(1000), None) > 0.49);
    }
}
