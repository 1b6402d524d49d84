//! Whether the store can write right now, as the writer last found it: when it last
//! committed, whether the disk is full (and since when), and the last failure of another
//! kind. The writer updates it after every write group; readiness, the watchdog and the
//! status page read it, so none of them has to write to the disk to know.
//!
//! A full disk is a state, not a crash: while it lasts every write is refused with
//! [`StoreError::DiskFull`](crate::StoreError::DiskFull), reads keep working, and the
//! first commit that succeeds again (space freed by retention or by hand) clears it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// How often, at most, [`Store::probe`](crate::Store::probe) tries a tiny write to find out
/// whether space came back while the disk is full (no other write may be coming).
pub(crate) const DISK_FULL_RETRY: Duration = Duration::from_secs(2);

/// The writer's view of write health. Cheap to copy out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WriteHealth {
    /// Milliseconds since the last successful commit, `None` before the first one.
    pub since_last_commit_ms: Option<u64>,
    /// Set while the file system holding the store is full: what SQLite said.
    pub disk_full: Option<String>,
    /// How long the disk has been full (ms); `None` when it is not.
    pub disk_full_for_ms: Option<u64>,
    /// The last write group failure of another kind (busy, I/O), cleared by the next
    /// successful commit.
    pub last_failure: Option<String>,
}

impl WriteHealth {
    /// True when the last write group committed (or none has run yet).
    pub fn is_healthy(&self) -> bool {
        self.disk_full.is_none() && self.last_failure.is_none()
    }
}

/// The mutable record behind [`WriteHealth`], shared by the writer and the handles.
#[derive(Debug, Default)]
pub(crate) struct HealthCell {
    inner: Mutex<HealthState>,
}

#[derive(Debug, Default)]
struct HealthState {
    last_commit: Option<Instant>,
    disk_full_since: Option<Instant>,
    disk_full: Option<String>,
    last_failure: Option<String>,
    /// When the writer last tried a write to see whether a full disk has space again.
    last_retry: Option<Instant>,
}

/// What one write group ended with, for [`HealthCell::record`].
pub(crate) enum GroupOutcome<'a> {
    /// Committed; `disk_full` when some job of it still failed for lack of space.
    Committed { disk_full: Option<&'a str> },
    /// Nothing committed: `disk_full` when the disk was the cause, else `failure`.
    Failed { disk_full: bool, failure: &'a str },
}

impl HealthCell {
    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the outcome of a write group.
    pub fn record(&self, outcome: GroupOutcome<'_>) {
        let now = Instant::now();
        let mut s = self.lock();
        match outcome {
            GroupOutcome::Committed { disk_full } => {
                s.last_commit = Some(now);
                s.last_failure = None;
                match disk_full {
                    Some(detail) => s.set_disk_full(now, detail),
                    None => {
                        if s.disk_full.take().is_some() {
                            tracing::info!("the disk has space again: writes resumed");
                        }
                        s.disk_full_since = None;
                    }
                }
            }
            GroupOutcome::Failed {
                disk_full: true,
                failure,
            } => s.set_disk_full(now, failure),
            GroupOutcome::Failed { failure, .. } => s.last_failure = Some(failure.to_owned()),
        }
    }

    /// True when the disk is full and no write tried for space within [`DISK_FULL_RETRY`];
    /// marks the attempt.
    pub fn should_retry_full_disk(&self) -> bool {
        let now = Instant::now();
        let mut s = self.lock();
        if s.disk_full.is_none() || s.last_retry.is_some_and(|t| now - t < DISK_FULL_RETRY) {
            return false;
        }
        s.last_retry = Some(now);
        true
    }

    /// Whether a commit succeeded within `within`.
    pub fn committed_within(&self, within: Duration) -> bool {
        self.lock()
            .last_commit
            .is_some_and(|t| t.elapsed() < within)
    }

    /// A copy for callers.
    pub fn snapshot(&self) -> WriteHealth {
        let s = self.lock();
        let ms = |t: Instant| t.elapsed().as_millis() as u64;
        WriteHealth {
            since_last_commit_ms: s.last_commit.map(ms),
            disk_full: s.disk_full.clone(),
            disk_full_for_ms: s.disk_full_since.map(ms),
            last_failure: s.last_failure.clone(),
        }
    }
}

impl HealthState {
    fn set_disk_full(&mut self, now: Instant, detail: &str) {
        if self.disk_full.is_none() {
            tracing::warn!(
                "the disk holding the store is full: writes are refused until space is freed ({detail})"
            );
            self.disk_full_since = Some(now);
        }
        self.disk_full = Some(detail.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_lasts_until_a_clean_commit() {
        let cell = HealthCell::default();
        assert!(cell.snapshot().is_healthy());
        assert!(!cell.should_retry_full_disk(), "nothing to retry");
        cell.record(GroupOutcome::Failed {
            disk_full: true,
            failure: "database or disk is full",
        });
        let h = cell.snapshot();
        assert_eq!(h.disk_full.as_deref(), Some("database or disk is full"));
        assert!(h.disk_full_for_ms.is_some() && !h.is_healthy());
        assert!(cell.should_retry_full_disk());
        assert!(!cell.should_retry_full_disk(), "rate limited");
        // A busy failure does not end the full-disk state.
        cell.record(GroupOutcome::Failed {
            disk_full: false,
            failure: "busy",
        });
        assert!(cell.snapshot().disk_full.is_some());
        cell.record(GroupOutcome::Committed { disk_full: None });
        let h = cell.snapshot();
        assert!(h.is_healthy(), "{h:?}");
        assert!(h.since_last_commit_ms.is_some());
        assert!(cell.committed_within(Duration::from_secs(5)));
    }
}
