//! The built-in schedule (`[backup] every`): a backup every `every` into `dir`, written as
//! `kdelta-<device>-<UTC time>.kdbk.partial`, fsynced, then renamed, so a file with the final
//! name is always complete; afterwards the oldest complete backups beyond `keep` are deleted.
//!
//! The schedule survives restarts: the next backup is due `every` after the newest complete
//! one in `dir` (its time is in its name), so a device restarting more often than `every`
//! still backs up — [`SETTLE`] after start when one is due. A failed backup is retried after
//! [`RETRY_FIRST`], doubling up to [`RETRY_MAX`] (never longer than `every`); the partial file
//! is removed. Before writing, the free space is checked: the snapshot needs a copy of the
//! store in the data directory and the file about half that in `dir` — without the room the
//! backup is refused (logged, `kdelta_backup_scheduled_total{outcome="no_space"}`) rather than
//! filling the card, and retried like a failure.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kdelta_sync::Store;
use tokio_util::sync::CancellationToken;

use super::{BACKUP_EXTENSION, BackupConfig, write_backup};
use crate::state::Agent;

/// How long after start a due backup waits (the agent settles, a crash loop does not back
/// up at every start).
pub const SETTLE: Duration = Duration::from_secs(30);
/// The first retry after a failure; doubled after each further failure.
pub const RETRY_FIRST: Duration = Duration::from_secs(60);
/// The longest wait between retries.
pub const RETRY_MAX: Duration = Duration::from_secs(3600);

/// When the schedule acts: [`SETTLE`], [`RETRY_FIRST`], [`RETRY_MAX`] (tests shorten them).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub settle: Duration,
    pub retry_first: Duration,
    pub retry_max: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            settle: SETTLE,
            retry_first: RETRY_FIRST,
            retry_max: RETRY_MAX,
        }
    }
}

/// What one scheduled backup works with.
pub(crate) struct Target<'a> {
    /// The open store.
    pub store: &'a Store,
    /// The data directory (the snapshot's scratch copy goes there).
    pub data_dir: &'a Path,
    /// `device_name`: part of the file names.
    pub device: &'a str,
    /// Where backups go (absolute).
    pub dir: PathBuf,
    /// Complete backups kept.
    pub keep: usize,
}

/// Why a scheduled backup was not written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ScheduleError {
    /// Not enough free space; nothing was written.
    #[error(
        "not enough free space for a backup: {need} bytes needed on the file system of {where_}, {available} available; free space there, or point [backup] dir at another disk"
    )]
    NoSpace {
        where_: String,
        need: u64,
        available: u64,
    },
    /// Writing it failed.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// Runs the schedule until `cancel`; returns at once when `every` is not set.
pub async fn backup_loop(agent: Agent, config: BackupConfig, cancel: CancellationToken) {
    let Some(every) = config.every else { return };
    let Ok(store) = agent.sqlite() else { return };
    let target = Target {
        store,
        data_dir: &agent.data_dir,
        device: &agent.device,
        dir: agent.data_dir.join(&config.dir),
        keep: config.keep,
    };
    let metrics = agent.metrics.clone();
    run_schedule(
        &target,
        every,
        Timing::default(),
        |outcome| metrics.scheduled_backup(outcome),
        cancel,
    )
    .await
}

/// The schedule's loop (see the module docs); `count` gets each backup's outcome.
pub(crate) async fn run_schedule(
    target: &Target<'_>,
    every: Duration,
    timing: Timing,
    count: impl Fn(&'static str),
    cancel: CancellationToken,
) {
    let now = crate::time::now_ms();
    let due = next_due(&target.dir, target.device, every, now);
    let mut wait = Duration::from_millis(due.saturating_sub(now).max(0) as u64).max(timing.settle);
    tracing::info!(
        dir = %target.dir.display(),
        "scheduled backups every {}; next in {}",
        humantime::format_duration(every),
        humantime::format_duration(Duration::from_secs(wait.as_secs()))
    );
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        match backup_once(target).await {
            Ok((path, bytes)) => {
                failures = 0;
                count("written");
                wait = every;
                tracing::info!(file = %path.display(), bytes, "scheduled backup written; next in {}", humantime::format_duration(every));
            }
            Err(e) => {
                count(match e {
                    ScheduleError::NoSpace { .. } => "no_space",
                    ScheduleError::Failed(_) => "failed",
                });
                wait = retry_after(timing, every, failures);
                failures = failures.saturating_add(1);
                tracing::warn!(dir = %target.dir.display(), "scheduled backup not written, trying again in {}: {e:#}", humantime::format_duration(wait));
            }
        }
    }
}

/// The wait before retry number `failures` (0 first): `retry_first` doubled per failure, at
/// most `retry_max` and `every`.
fn retry_after(timing: Timing, every: Duration, failures: u32) -> Duration {
    timing
        .retry_first
        .saturating_mul(1u32 << failures.min(16))
        .min(timing.retry_max)
        .min(every)
}

/// When the next backup is due (unix ms): `every` after the newest complete backup of
/// `device` in `dir`, now when there is none. A backup stamped after `now` (the clock was
/// set back, or a Pi without a real-time clock before NTP) counts as made now.
pub(crate) fn next_due(dir: &Path, device: &str, every: Duration, now_ms: i64) -> i64 {
    let newest = backups_of(dir, device)
        .last()
        .and_then(|name| stamp_ms(name, device));
    match newest {
        Some(t) => t.min(now_ms).saturating_add(every.as_millis() as i64),
        None => now_ms,
    }
}

/// The time in a backup's name (`kdelta-<device>-2026-01-02T03-04-05-678Z.kdbk`), unix ms.
fn stamp_ms(name: &str, device: &str) -> Option<i64> {
    let stamp = name
        .strip_prefix(&format!("kdelta-{device}-"))?
        .strip_suffix(&format!(".{BACKUP_EXTENSION}"))?;
    // 2026-01-02T03-04-05-678Z → 2026-01-02T03:04:05.678Z
    if stamp.len() != 24 || !stamp.is_ascii() {
        return None;
    }
    let rfc = format!(
        "{}:{}:{}.{}",
        &stamp[..13],
        &stamp[14..16],
        &stamp[17..19],
        &stamp[20..]
    );
    crate::time::parse_rfc3339(&rfc)
}

/// Refuses a backup the file systems have no room for: the snapshot's copy of the store in
/// the data directory, and about half of it for the file in `dir` (both on one file system
/// when they share it), plus 5 % of the file system (at most 1 GiB) kept free.
fn check_space(target: &Target<'_>, store_bytes: u64) -> Result<(), ScheduleError> {
    use std::os::unix::fs::MetadataExt;
    let usage = |p: &Path| kdelta_sensors::system::disk_usage(p).ok();
    let device_of = |p: &Path| std::fs::metadata(p).ok().map(|m| m.dev());
    let file_bytes = store_bytes / 2;
    let same = device_of(target.data_dir) == device_of(&target.dir);
    let mut checks = vec![(
        target.data_dir,
        store_bytes + if same { file_bytes } else { 0 },
    )];
    if !same {
        checks.push((target.dir.as_path(), file_bytes));
    }
    for (path, need) in checks {
        let Some(u) = usage(path) else { continue };
        let need = need + (u.total / 20).min(1 << 30);
        if u.available < need {
            return Err(ScheduleError::NoSpace {
                where_: path.display().to_string(),
                need,
                available: u.available,
            });
        }
    }
    Ok(())
}

/// One scheduled backup into `target.dir`, then the pruning; returns the file and its size.
pub(crate) async fn backup_once(target: &Target<'_>) -> Result<(PathBuf, u64), ScheduleError> {
    use anyhow::Context;
    let dir = &target.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let space = target.store.space().await.context("measuring the store")?;
    check_space(target, space.db_bytes + space.wal_bytes)?;
    let stamp =
        crate::time::format_rfc3339_ms(crate::time::now_ms_u64() as i64).replace([':', '.'], "-");
    let name = format!("kdelta-{}-{stamp}.{BACKUP_EXTENSION}", target.device);
    let done = dir.join(&name);
    let partial = dir.join(format!("{name}.partial"));
    let file = super::create_private(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let out = file.try_clone().context("duplicating a file handle")?;
    let result = write_backup(target.store, target.data_dir, out, |_, _| {}).await;
    let finished = result.map_err(anyhow::Error::from).and_then(|(_, bytes)| {
        file.sync_all()
            .with_context(|| format!("syncing {}", partial.display()))?;
        std::fs::rename(&partial, &done)
            .with_context(|| format!("renaming {}", partial.display()))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(bytes)
    });
    let bytes = match finished {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e.into());
        }
    };
    prune(dir, target.device, target.keep);
    Ok((done, bytes))
}

/// The complete scheduled backups of `device` in `dir`, oldest first (names sort by time).
fn backups_of(dir: &Path, device: &str) -> Vec<String> {
    let prefix = format!("kdelta-{device}-");
    let suffix = format!(".{BACKUP_EXTENSION}");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            // `kdelta-<device>-<24-character UTC stamp>.kdbk`: another device whose name
            // starts with this one's (`pi` and `pi-2`) does not match.
            n.strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix(&suffix))
                .is_some_and(|stamp| stamp.len() == 24 && stamp.ends_with('Z'))
        })
        .collect();
    names.sort();
    names
}

/// Deletes the oldest complete scheduled backups of `device` in `dir` beyond `keep`.
fn prune(dir: &Path, device: &str, keep: usize) {
    let names = backups_of(dir, device);
    let excess = names.len().saturating_sub(keep);
    for old in &names[..excess] {
        match std::fs::remove_file(dir.join(old)) {
            Ok(()) => tracing::info!(file = old, "removed an old scheduled backup"),
            Err(e) => tracing::warn!(file = old, error = %e, "cannot remove an old backup"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn name_at(device: &str, ms: i64) -> String {
        let stamp = crate::time::format_rfc3339_ms(ms).replace([':', '.'], "-");
        format!("kdelta-{device}-{stamp}.{BACKUP_EXTENSION}")
    }

    fn backups(dir: &Path) -> Vec<String> {
        backups_of(dir, "pi")
    }

    async fn store_in(dir: &Path) -> Store {
        let store = Store::open(dir.join("kdelta.db"), kdelta_sync::StoreConfig::default())
            .await
            .unwrap();
        let mut batch = kdelta_sync::ReadingBatch::new();
        batch.push("t", 1_764_000_000_000, 1.0, None);
        store.append(batch).await.unwrap();
        store
    }

    fn fast() -> Timing {
        Timing {
            settle: Duration::ZERO,
            retry_first: Duration::from_millis(50),
            retry_max: Duration::from_millis(200),
        }
    }

    #[test]
    fn the_next_backup_is_due_every_after_the_newest_file_of_this_device() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_800_000_000_000i64;
        assert_eq!(
            next_due(dir.path(), "pi", DAY, now),
            now,
            "none yet: due now"
        );
        let two_days_ago = now - 2 * 86_400_000;
        let an_hour_ago = now - 3_600_000;
        for name in [
            name_at("pi", two_days_ago),
            name_at("pi", an_hour_ago),
            name_at("pi-2", now),
            format!("{}.partial", name_at("pi", now)),
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        assert_eq!(
            stamp_ms(&name_at("pi", an_hour_ago), "pi"),
            Some(an_hour_ago)
        );
        assert_eq!(
            next_due(dir.path(), "pi", DAY, now),
            an_hour_ago + 86_400_000
        );
        // A file from the future (the clock went back) counts as made now.
        std::fs::write(dir.path().join(name_at("pi", now + 10 * 86_400_000)), b"x").unwrap();
        assert_eq!(next_due(dir.path(), "pi", DAY, now), now + 86_400_000);
    }

    #[test]
    fn retries_back_off_and_never_wait_longer_than_every() {
        let t = Timing::default();
        assert_eq!(retry_after(t, DAY, 0), RETRY_FIRST);
        assert_eq!(retry_after(t, DAY, 1), RETRY_FIRST * 2);
        assert_eq!(retry_after(t, DAY, 30), RETRY_MAX);
        assert_eq!(
            retry_after(t, Duration::from_secs(90), 5),
            Duration::from_secs(90)
        );
    }

    /// A backup due before the restart runs right after it (not `every` later); old files
    /// beyond `keep` go.
    #[tokio::test]
    async fn a_due_backup_runs_after_a_restart_and_old_ones_beyond_keep_go() {
        let data = tempfile::tempdir().unwrap();
        let store = store_in(data.path()).await;
        let dir = data.path().join("backups");
        std::fs::create_dir_all(&dir).unwrap();
        let now = crate::time::now_ms();
        for days in [3, 2] {
            std::fs::write(dir.join(name_at("pi", now - days * 86_400_000)), b"old").unwrap();
        }
        let target = Target {
            store: &store,
            data_dir: data.path(),
            device: "pi",
            dir: dir.clone(),
            keep: 2,
        };
        let cancel = CancellationToken::new();
        let written = std::sync::atomic::AtomicU64::new(0);
        let schedule = run_schedule(
            &target,
            DAY,
            fast(),
            |o| {
                assert_eq!(o, "written");
                written.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            },
            cancel.clone(),
        );
        let watch = async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while written.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no backup after the restart"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            cancel.cancel();
        };
        tokio::join!(schedule, watch);
        let left = backups(&dir);
        assert_eq!(left.len(), 2, "{left:?}");
        assert_eq!(
            left[0],
            name_at("pi", now - 2 * 86_400_000),
            "the oldest went"
        );
        let newest = std::fs::read(dir.join(&left[1])).unwrap();
        assert!(newest.len() > 3, "a real backup, not an old placeholder");
        // The next one is due a day after the one just written.
        let due = next_due(&dir, "pi", DAY, crate::time::now_ms());
        assert!(due > now + 86_400_000 - 60_000, "{due} vs {now}");
        store.close().await;
    }

    /// A failed backup is retried after the backoff, not `every` later.
    #[tokio::test]
    async fn a_failed_backup_is_retried() {
        let data = tempfile::tempdir().unwrap();
        let store = store_in(data.path()).await;
        // `dir` is a file at first: creating the directory fails.
        let dir = data.path().join("backups");
        std::fs::write(&dir, b"in the way").unwrap();
        let target = Target {
            store: &store,
            data_dir: data.path(),
            device: "pi",
            dir: dir.clone(),
            keep: 3,
        };
        let cancel = CancellationToken::new();
        let outcomes = std::sync::Mutex::new(Vec::new());
        let schedule = run_schedule(
            &target,
            DAY,
            fast(),
            |o| {
                let mut seen = outcomes.lock().unwrap();
                seen.push(o);
                if seen.len() == 2 {
                    // Two failures in: the way is cleared.
                    std::fs::remove_file(&dir).unwrap();
                }
            },
            cancel.clone(),
        );
        let watch = async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while !outcomes.lock().unwrap().contains(&"written") {
                assert!(tokio::time::Instant::now() < deadline, "never retried");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            cancel.cancel();
        };
        tokio::join!(schedule, watch);
        assert_eq!(*outcomes.lock().unwrap(), ["failed", "failed", "written"]);
        assert_eq!(backups(&dir).len(), 1);
        store.close().await;
    }

    /// Without room for the snapshot and the file, nothing is written.
    #[tokio::test]
    async fn a_backup_without_room_is_refused_before_writing() {
        let data = tempfile::tempdir().unwrap();
        let store = store_in(data.path()).await;
        let dir = data.path().join("backups");
        let target = Target {
            store: &store,
            data_dir: data.path(),
            device: "pi",
            dir: dir.clone(),
            keep: 3,
        };
        // Needing more than any disk has: a store as large as a petabyte.
        std::fs::create_dir_all(&dir).unwrap();
        let err = check_space(&target, 1 << 50).unwrap_err();
        assert!(matches!(err, ScheduleError::NoSpace { .. }), "{err}");
        assert!(
            err.to_string().contains("[backup] dir"),
            "says what to do: {err}"
        );
        check_space(&target, 4096).unwrap();
        store.close().await;
    }

    #[test]
    fn prune_keeps_the_newest_of_this_device_only() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "kdelta-pi-2026-01-01T00-00-00-000Z.kdbk",
            "kdelta-pi-2026-01-02T00-00-00-000Z.kdbk",
            "kdelta-pi-2026-01-03T00-00-00-000Z.kdbk",
            "kdelta-pi-2026-01-04T00-00-00-000Z.kdbk.partial",
            "kdelta-other-2026-01-01T00-00-00-000Z.kdbk",
            "kdelta-pi-2-2026-01-01T00-00-00-000Z.kdbk",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        prune(dir.path(), "pi", 2);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "kdelta-other-2026-01-01T00-00-00-000Z.kdbk",
                "kdelta-pi-2-2026-01-01T00-00-00-000Z.kdbk",
                "kdelta-pi-2026-01-02T00-00-00-000Z.kdbk",
                "kdelta-pi-2026-01-03T00-00-00-000Z.kdbk",
                "kdelta-pi-2026-01-04T00-00-00-000Z.kdbk.partial",
                "notes.txt",
            ]
        );
    }
}
