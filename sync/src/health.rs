//! Whether the store can write right now, as the writer last found it: when it last
//! committed, whether the disk is full (and since when), and the last failure of another
//! kind. The writer updates it after every write group; readiness, the watchdog and the
//! status page read it, so none of them has to write to the disk to know.
//!
//! A full disk is a state, not a crash: while it lasts every write is refused with
//! [`StoreError::DiskFull`](crate::StoreError::DiskFull) at admission (`writer.rs`), reads
//! keep working, and the first commit that succeeds again (space freed by retention or by
//! hand) clears it — once the store's reserve file (`reserve.rs`), released when the state
//! began so that pruning has room, is held again. Those waiting for the state (the agent's
//! disk budget) subscribe to it ([`HealthCell::subscribe_full`]).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use crate::reserve::{Reserve, ReserveState, ReserveStatus};

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
    /// The reserve file, when the agent gave the store one (`reserve.rs`).
    pub reserve: Option<ReserveStatus>,
}

impl WriteHealth {
    /// True when the last write group committed (or none has run yet).
    pub fn is_healthy(&self) -> bool {
        self.disk_full.is_none() && self.last_failure.is_none()
    }
}

/// The mutable record behind [`WriteHealth`], shared by the writer and the handles.
#[derive(Debug)]
pub(crate) struct HealthCell {
    inner: Mutex<HealthState>,
    /// The reserve file, if one was attached; its I/O runs on the writer thread.
    reserve: Mutex<Option<Reserve>>,
    /// The reserve's status as last seen (snapshots never wait for the reserve's I/O).
    reserve_status: Mutex<Option<ReserveStatus>>,
    /// True while the disk is full.
    full: watch::Sender<bool>,
}

impl Default for HealthCell {
    fn default() -> Self {
        HealthCell {
            inner: Mutex::default(),
            reserve: Mutex::default(),
            reserve_status: Mutex::default(),
            full: watch::channel(false).0,
        }
    }
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
        locked(&self.inner)
    }

    /// Records the outcome of a write group.
    pub fn record(&self, outcome: GroupOutcome<'_>) {
        let now = Instant::now();
        match outcome {
            GroupOutcome::Committed { disk_full } => {
                {
                    let mut s = self.lock();
                    s.last_commit = Some(now);
                    s.last_failure = None;
                }
                match disk_full {
                    Some(detail) => self.set_disk_full(now, detail),
                    None => self.resume_if_room(),
                }
            }
            GroupOutcome::Failed {
                disk_full: true,
                failure,
            } => self.set_disk_full(now, failure),
            GroupOutcome::Failed { failure, .. } => {
                self.lock().last_failure = Some(failure.to_owned())
            }
        }
    }

    /// Enters (or stays in) the full-disk state; on entering, releases the reserve so that
    /// pruning has room, and tells the subscribers.
    fn set_disk_full(&self, now: Instant, detail: &str) {
        let began = {
            let mut s = self.lock();
            let began = s.disk_full.is_none();
            if began {
                tracing::warn!(
                    "the disk holding the store is full: writes are refused until there is room again ({detail})"
                );
                s.disk_full_since = Some(now);
            }
            s.disk_full = Some(detail.to_owned());
            began
        };
        if began {
            self.with_reserve(Reserve::release);
            self.full.send_replace(true);
        }
    }

    /// After a clean commit: ends the full-disk state once the reserve is held again (or
    /// there is none).
    fn resume_if_room(&self) {
        if !self.is_disk_full() || !self.with_reserve(Reserve::allows_writes).unwrap_or(true) {
            return;
        }
        let mut s = self.lock();
        if s.disk_full.take().is_some() {
            tracing::info!("the disk has space again: writes resumed");
            self.full.send_replace(false);
        }
        s.disk_full_since = None;
    }

    /// Runs `f` on the reserve, if there is one, and refreshes its status.
    fn with_reserve<T>(&self, f: impl FnOnce(&mut Reserve) -> T) -> Option<T> {
        let mut reserve = locked(&self.reserve);
        let out = reserve.as_mut().map(f);
        *locked(&self.reserve_status) = reserve.as_ref().map(Reserve::status);
        out
    }

    /// Gives the store its reserve file, created now if there is room (see
    /// [`Reserve::ensure`]). Without the room, the store starts in the full-disk state: the
    /// disk is as good as full (a restart in the middle of a recovery finds it so), and the
    /// room the reserve needs is not for ingest.
    pub fn attach_reserve(&self, mut reserve: Reserve) {
        reserve.ensure();
        let status = reserve.status();
        *locked(&self.reserve) = Some(reserve);
        *locked(&self.reserve_status) = Some(status.clone());
        if status.state == ReserveState::NoRoom {
            let why = status.why.unwrap_or_default();
            self.set_disk_full(
                Instant::now(),
                &format!("too little free space to hold the disk reserve: {why}"),
            );
        }
    }

    /// Bytes available on the file system of the reserve (`None` without a reserve, or when
    /// they cannot be read).
    pub fn available_bytes(&self) -> Option<u64> {
        locked(&self.reserve).as_ref()?.available_bytes().ok()
    }

    /// True while the disk is full.
    pub fn is_disk_full(&self) -> bool {
        self.lock().disk_full.is_some()
    }

    /// `true` while the disk is full, `false` otherwise; changes when the state begins and
    /// ends.
    pub fn subscribe_full(&self) -> watch::Receiver<bool> {
        self.full.subscribe()
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
            reserve: locked(&self.reserve_status).clone(),
        }
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

    #[test]
    fn a_full_disk_releases_the_reserve_and_lasts_until_it_is_held_again() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU64, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reserve");
        let free = Arc::new(AtomicU64::new(1 << 30));
        let f = free.clone();
        let cell = HealthCell::default();
        let mut full = cell.subscribe_full();
        cell.attach_reserve(Reserve::new(
            &path,
            4096,
            Box::new(move |_| Ok(f.load(Ordering::SeqCst))),
        ));
        assert!(path.exists());
        assert_eq!(
            cell.snapshot().reserve.map(|r| r.state),
            Some(ReserveState::Held)
        );

        free.store(0, Ordering::SeqCst);
        cell.record(GroupOutcome::Failed {
            disk_full: true,
            failure: "database or disk is full",
        });
        assert!(!path.exists(), "released for the recovery");
        assert!(full.has_changed().unwrap() && *full.borrow_and_update());
        // Pruning commits with the reserve's room, but the room is not back yet.
        free.store(4096, Ordering::SeqCst);
        cell.record(GroupOutcome::Committed { disk_full: None });
        let h = cell.snapshot();
        assert!(h.disk_full.is_some(), "still refusing writes: {h:?}");
        assert_eq!(h.reserve.unwrap().state, ReserveState::Released);
        // Space came back: the next clean commit holds the reserve again and ends the state.
        free.store(3 * 4096, Ordering::SeqCst);
        cell.record(GroupOutcome::Committed { disk_full: None });
        let h = cell.snapshot();
        assert!(h.is_healthy(), "{h:?}");
        assert!(path.exists());
        assert!(!*full.borrow_and_update());
    }

    #[test]
    fn a_reserve_without_room_at_start_starts_the_full_disk_state() {
        let dir = tempfile::tempdir().unwrap();
        let cell = HealthCell::default();
        cell.attach_reserve(Reserve::new(
            dir.path().join("reserve"),
            4096,
            Box::new(|_| Ok(4096)),
        ));
        let h = cell.snapshot();
        let full = h.disk_full.expect("full at start");
        assert!(full.contains("8192 needed"), "{full}");
        assert_eq!(h.reserve.unwrap().state, ReserveState::NoRoom);
    }
}
