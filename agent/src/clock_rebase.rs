//! Rebasing a store stamped in the future (`docs/clock.md`, "A store stamped in the
//! future"): a Pi whose clock once ran ahead (a year, say, until NTP corrected it) stamped
//! its changes then, and every later change after them, so every correct peer holds all of
//! them back. When the store's own newest change runs more than `store.max_clock_offset_ms`
//! ahead of a trusted wall clock, the store takes a new actor seeded from that clock
//! (`kdelta_sync::Store::rebase_clock`), with a succession record signed by the old key
//! that moves its `device` credential on at its peers. Automatic at start ([`at_start`]);
//! while running ([`while_running`], `[clock] rebase = "restart"`) by stopping the agent
//! cleanly so the daemon re-executes the process and the start rebases; or by hand with
//! `kdelta rekey --rebase-clock` ([`by_hand`]), agent stopped. Start and running judge by
//! the one function, [`judge`].
//!
//! Owns the decision (is the store ahead, is the clock to be believed); the store does the
//! rest, the daemon the re-execution.

use std::path::Path;

use std::sync::Arc;

use anyhow::{Context, bail};
use kdelta_sync::{ClockLead, Store};
use tokio_util::sync::CancellationToken;

use crate::clock::{
    CHECK_EVERY, ClockConfig, ClockMonitor, ClockRebase, ClockStatus, Rebased, RestartForRebase,
    assess, earliest_plausible_ms, kernel_sync,
};
use crate::lockfile::DataDirLock;
use crate::time::{format_rfc3339_ms, now_ms_u64};

/// At start, before the store opens: rebases the store at `db_path` when its own newest
/// change is more than `max_offset_ms` ahead of the wall clock and the wall clock is
/// trusted (`[clock]`, judged against the other actors' changes, not against the store's
/// own future ones). An untrusted clock rebases nothing: it is logged.
pub async fn at_start(
    clock: &ClockConfig,
    max_offset_ms: u64,
    db_path: &Path,
) -> anyhow::Result<Option<Rebased>> {
    if !db_path.is_file() {
        return Ok(None);
    }
    let lead = Store::clock_lead(db_path)
        .await
        .with_context(|| format!("reading the clock of {}", db_path.display()))?;
    let wall = now_ms_u64();
    match judge(clock, &lead, wall, max_offset_ms) {
        Judgement::NotAhead => Ok(None),
        Judgement::Untrusted(verdict) => {
            tracing::warn!(
                actor = %lead.actor,
                own_newest = %format_rfc3339_ms(lead.own_newest.ms() as i64),
                "this store's own changes run ahead of the wall clock, which is not trusted ({}): not rebased; peers hold them back until their time",
                verdict.reason
            );
            Ok(None)
        }
        Judgement::Rebase => {
            let rebased = rebase(db_path, lead.own_newest.ms(), wall).await?;
            tracing::warn!(
                old_actor = %rebased.old_actor,
                new_actor = %rebased.new_actor,
                "this store's own changes ran ahead of the trusted wall clock (newest {}, now {}): it writes as a new actor from now on; the old actor's changes stay held back at peers until their time",
                format_rfc3339_ms(rebased.old_newest_ms as i64),
                format_rfc3339_ms(wall as i64)
            );
            Ok(Some(rebased))
        }
    }
}

/// What a store's [`ClockLead`] calls for at wall time `wall_ms`.
#[derive(Debug)]
pub enum Judgement {
    /// Its own newest change is not more than the max offset ahead: nothing to do.
    NotAhead,
    /// It runs ahead, but the wall clock is not to be believed (the verdict says why).
    Untrusted(ClockStatus),
    /// It runs ahead of a trusted wall clock: rebase.
    Rebase,
}

/// Whether the store whose clock lead is `lead` is to be rebased: its own newest change runs
/// more than `max_offset_ms` ahead of the wall clock, and the wall clock is trusted
/// (`[clock]`), judged against the other actors' changes, not against the store's own
/// future ones. The one judgement of the start and of the running agent.
pub fn judge(clock: &ClockConfig, lead: &ClockLead, wall_ms: u64, max_offset_ms: u64) -> Judgement {
    if !lead.is_ahead_of(wall_ms, max_offset_ms) {
        return Judgement::NotAhead;
    }
    let verdict = assess(
        clock,
        kernel_sync(),
        wall_ms,
        lead.others_newest.ms(),
        max_offset_ms,
    );
    if verdict.trusted {
        Judgement::Rebase
    } else {
        Judgement::Untrusted(verdict)
    }
}

/// Set in the environment of a process re-executed for a rebase: it never restarts itself
/// for one again (at most once per process, whose PID stays the same across the exec).
pub const RESTARTED_ENV: &str = "KDELTA_RESTARTED_FOR_CLOCK_REBASE";

/// True when this process was re-executed for a rebase ([`RESTARTED_ENV`]).
pub fn restarted_for_rebase() -> bool {
    std::env::var_os(RESTARTED_ENV).is_some()
}

/// While the agent runs, with `[clock] rebase = "restart"`: every [`CHECK_EVERY`], judges the
/// open store's clock lead as [`at_start`] would ([`judge`]); when it calls for a rebase,
/// logs it, records the request on `monitor` and cancels `stop_agent` (the agent's shutdown
/// token), so the agent stops cleanly and the daemon re-executes the process, whose start
/// rebases. Does nothing in a process already re-executed for one; returns at the request
/// or on `cancel`.
pub async fn while_running(
    monitor: Arc<ClockMonitor>,
    store: Store,
    stop_agent: CancellationToken,
    cancel: CancellationToken,
) {
    if monitor.config().rebase != ClockRebase::Restart || restarted_for_rebase() {
        return;
    }
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(restart) = due_while_running(monitor.config(), &store).await else {
            continue;
        };
        tracing::warn!(
            actor = %store.actor(),
            "this store's own changes run {} ahead of the trusted wall clock: restarting the process to rebase its clock (docs/clock.md)",
            humantime::format_duration(std::time::Duration::from_secs(restart.lead_ms / 60_000 * 60))
        );
        monitor.request_restart(restart);
        stop_agent.cancel();
        return;
    }
}

/// One check of [`while_running`]: whether the open `store` is to be rebased now, and by
/// how much its own changes lead.
async fn due_while_running(clock: &ClockConfig, store: &Store) -> Option<RestartForRebase> {
    let lead = store
        .current_clock_lead()
        .await
        .inspect_err(|e| tracing::debug!("reading the store's clock lead: {e}"))
        .ok()?;
    let wall = now_ms_u64();
    match judge(clock, &lead, wall, store.config().max_clock_offset_ms) {
        Judgement::Rebase => Some(RestartForRebase {
            lead_ms: lead.own_newest.ms().saturating_sub(wall),
        }),
        Judgement::NotAhead | Judgement::Untrusted(_) => None,
    }
}

/// `kdelta rekey --rebase-clock` (agent stopped): rebases the store at `db_path` in
/// `data_dir` when its own newest change is more than `max_offset_ms` ahead of the wall
/// clock, which the operator vouches for (it must still read after this release's date).
pub async fn by_hand(
    data_dir: &Path,
    db_path: &Path,
    max_offset_ms: u64,
) -> anyhow::Result<Rebased> {
    if !db_path.is_file() {
        bail!("there is no store at {}", db_path.display());
    }
    let _lock = DataDirLock::acquire(data_dir).context("stop the agent before rebasing")?;
    let wall = now_ms_u64();
    if wall < earliest_plausible_ms() {
        bail!(
            "the wall clock reads {}, before this release was made: set the clock first",
            format_rfc3339_ms(wall as i64)
        );
    }
    let lead = Store::clock_lead(db_path).await?;
    if !lead.is_ahead_of(wall, max_offset_ms) {
        bail!(
            "nothing to rebase: this store's newest own change ({}) is not more than {max_offset_ms} ms ahead of the wall clock ({})",
            format_rfc3339_ms(lead.own_newest.ms() as i64),
            format_rfc3339_ms(wall as i64)
        );
    }
    rebase(db_path, lead.own_newest.ms(), wall).await
}

async fn rebase(db_path: &Path, old_newest_ms: u64, at_ms: u64) -> anyhow::Result<Rebased> {
    let record = Store::rebase_clock(db_path, at_ms)
        .await
        .with_context(|| format!("rebasing the clock of {}", db_path.display()))?;
    Ok(Rebased {
        old_actor: record.old,
        new_actor: record.new,
        old_newest_ms,
        at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ClockTrust;
    use kdelta_sync::{ManualTime, ReadingBatch, StoreConfig};

    const YEAR_MS: u64 = 365 * 86_400_000;

    /// A store at `path` that wrote one change a year ahead of now.
    async fn stamped_ahead(path: &Path) -> kdelta_sync::ActorId {
        let store = Store::open_with_time(
            path,
            StoreConfig::default(),
            ManualTime::new(now_ms_u64() + YEAR_MS),
        )
        .await
        .unwrap();
        let mut b = ReadingBatch::new();
        b.push("t", 1_800_000_000_000, 1.0, None);
        store.append(b).await.unwrap();
        let actor = store.actor();
        store.close().await;
        actor
    }

    fn trust(trust: ClockTrust) -> ClockConfig {
        ClockConfig {
            trust,
            ..ClockConfig::default()
        }
    }

    #[tokio::test]
    async fn only_a_trusted_clock_rebases_a_store_that_runs_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kdelta.db");
        assert_eq!(
            at_start(&trust(ClockTrust::Always), 300_000, &path)
                .await
                .unwrap(),
            None,
            "no store yet"
        );
        let old = stamped_ahead(&path).await;
        let never = at_start(&trust(ClockTrust::Never), 300_000, &path)
            .await
            .unwrap();
        assert_eq!(never, None, "an untrusted clock rebases nothing");
        let r = at_start(&trust(ClockTrust::Always), 300_000, &path)
            .await
            .unwrap()
            .expect("rebased");
        assert_eq!(r.old_actor, old);
        assert!(r.old_newest_ms > r.at_ms + YEAR_MS - 60_000, "{r:?}");
        // Once rebased, the store no longer runs ahead: nothing more to do.
        assert_eq!(
            at_start(&trust(ClockTrust::Always), 300_000, &path)
                .await
                .unwrap(),
            None
        );
        let store = Store::open(&path, StoreConfig::default()).await.unwrap();
        assert_eq!(store.actor(), r.new_actor);
        store.close().await;
    }

    #[tokio::test]
    async fn the_running_agent_judges_its_open_store_as_the_start_would() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kdelta.db");
        stamped_ahead(&path).await;
        let store = Store::open(&path, StoreConfig::default()).await.unwrap();
        assert_eq!(
            due_while_running(&trust(ClockTrust::Never), &store).await,
            None,
            "an untrusted clock restarts nothing"
        );
        let due = due_while_running(&trust(ClockTrust::Always), &store)
            .await
            .expect("due");
        assert!(due.lead_ms > YEAR_MS - 60_000, "{due:?}");
        store.close().await;
        // What the restart's start then does.
        let r = at_start(&trust(ClockTrust::Always), 300_000, &path)
            .await
            .unwrap()
            .expect("rebased");
        let store = Store::open(&path, StoreConfig::default()).await.unwrap();
        assert_eq!(store.actor(), r.new_actor);
        assert_eq!(
            due_while_running(&trust(ClockTrust::Always), &store).await,
            None,
            "once rebased, nothing more to do"
        );
        store.close().await;
    }

    #[tokio::test]
    async fn at_start_only_never_stops_the_running_agent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kdelta.db");
        stamped_ahead(&path).await;
        let store = Store::open(&path, StoreConfig::default()).await.unwrap();
        let config = ClockConfig {
            trust: ClockTrust::Always,
            rebase: ClockRebase::AtStartOnly,
            ..ClockConfig::default()
        };
        let monitor = ClockMonitor::new(&config, store.time_reference());
        let stop_agent = CancellationToken::new();
        // Returns at once, without waiting for a tick.
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            while_running(
                monitor.clone(),
                store.clone(),
                stop_agent.clone(),
                CancellationToken::new(),
            ),
        )
        .await
        .expect("returned at once");
        assert!(!stop_agent.is_cancelled());
        assert_eq!(monitor.restart_requested(), None);
        store.close().await;
    }
}
