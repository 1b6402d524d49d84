//! A disk budget that cannot be met: the store is still over `max_disk` (or short of
//! `min_free`) after a budget pass pruned everything it may ([`BudgetPass::cannot_meet`]).
//! This module names what holds the space (the store's pages by kind of data,
//! `Store::space_held`) and says so once per change of state in the log; the figures go to
//! `/v1/status` (`store.budget.cannot_meet`), `kdelta status` and `/metrics` through
//! [`BudgetState`](super::BudgetState). It prunes nothing.

use kdelta_sync::{HeldSpace, SpaceHolder, Store};
use serde::Serialize;

use super::budget::BudgetPass;

/// How often the space held is measured again while the state lasts (`dbstat` reads every
/// page of the file: cheap on the small stores a budget is usually about, a full read of a
/// large one).
const REMEASURE_MS: i64 = 10 * 60_000;

/// The budget cannot be met, and what holds the space (`store.budget.cannot_meet`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CannotMeet {
    /// Unix ms of the first pass that found it (in this stretch of the state).
    pub since_ms: i64,
    /// Bytes the store uses beyond `max_disk` (0 when only `min_free` is missed).
    pub over_bytes: u64,
    /// What holds the database's pages, largest first: `holder` (`change_log`, `documents`,
    /// `twins`, `readings`, `rollups`, `other`) and `bytes`. Empty when it could not be
    /// measured.
    pub held_by: Vec<HeldSpace>,
    /// Unix ms when `held_by` was measured (at the start of the state, then every 10 min).
    pub measured_ms: i64,
}

impl CannotMeet {
    /// The state after `pass`: `None` when the budget is met (or could be with more
    /// rounds); else `prev` carried on, its `held_by` measured again when stale.
    pub async fn after(
        store: &Store,
        pass: &BudgetPass,
        prev: Option<&CannotMeet>,
        now_ms: i64,
    ) -> Option<CannotMeet> {
        if !pass.cannot_meet {
            return None;
        }
        let over_bytes = pass
            .limits
            .max_bytes
            .map_or(0, |m| pass.after.used().saturating_sub(m));
        let mut next = match prev {
            Some(p) => CannotMeet {
                over_bytes,
                ..p.clone()
            },
            None => CannotMeet {
                since_ms: now_ms,
                over_bytes,
                ..CannotMeet::default()
            },
        };
        if prev.is_none() || now_ms - next.measured_ms >= REMEASURE_MS {
            match store.space_held().await {
                Ok(held) => next.held_by = held,
                Err(e) => tracing::debug!(error = %e, "measuring what holds the store's space"),
            }
            next.measured_ms = now_ms;
        }
        Some(next)
    }

    /// `change log 2.1 MiB (…), documents 300.0 KiB (…)`: the holders, largest first.
    pub fn holders_text(&self) -> String {
        if self.held_by.is_empty() {
            return "not measured".into();
        }
        self.held_by
            .iter()
            .map(|h| {
                format!(
                    "{} {} ({})",
                    h.holder.as_str().replace('_', " "),
                    super::human_bytes(h.bytes),
                    why_kept(h.holder)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Why the budget leaves a holder's data alone.
fn why_kept(holder: SpaceHolder) -> &'static str {
    match holder {
        SpaceHolder::ChangeLog => "a row per change, pruned ones included, so sync stays exact",
        SpaceHolder::Documents => "never pruned by the budget",
        SpaceHolder::Twins => "never pruned by the budget",
        SpaceHolder::Readings => {
            "held: not acknowledged by upstream, or awaiting a time correction"
        }
        SpaceHolder::Rollups => "minutes whose raw readings are held",
        SpaceHolder::Other => "store metadata",
    }
}

/// One log line when the state begins or ends (none while it lasts).
pub fn log_change(prev: Option<&CannotMeet>, next: Option<&CannotMeet>, pass: &BudgetPass) {
    match (prev, next) {
        (None, Some(c)) => tracing::warn!(
            used_bytes = pass.after.used(),
            over_bytes = c.over_bytes,
            "disk budget cannot be met: the store uses {} ({} over max_disk) and the budget may prune nothing more; the space is held by {}",
            super::human_bytes(pass.after.used()),
            super::human_bytes(c.over_bytes),
            c.holders_text()
        ),
        (Some(_), None) => tracing::info!(
            used_bytes = pass.after.used(),
            "disk budget met again: the store uses {}",
            super::human_bytes(pass.after.used())
        ),
        _ => {}
    }
}
