//! The built-in schedule (`[backup] every`): a backup every `every` into `dir`, written as
//! `kdelta-<device>-<UTC time>.kdbk.partial`, fsynced, then renamed, so a file with the final
//! name is always complete; afterwards the oldest complete backups beyond `keep` are deleted.
//! A failed backup is logged and retried at the next tick (the partial file is removed).

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use super::{BACKUP_EXTENSION, BackupConfig, write_backup};
use crate::state::Agent;

/// Runs the schedule until `cancel`; returns at once when `every` is not set.
pub async fn backup_loop(agent: Agent, config: BackupConfig, cancel: CancellationToken) {
    let Some(every) = config.every else { return };
    let dir = agent.data_dir.join(&config.dir);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        match backup_once(&agent, &dir, config.keep).await {
            Ok((path, bytes)) => {
                tracing::info!(file = %path.display(), bytes, "scheduled backup written")
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "scheduled backup failed; next try in {}", humantime::format_duration(every))
            }
        }
    }
}

/// One scheduled backup into `dir`, then the pruning; returns the file and its size.
pub(crate) async fn backup_once(
    agent: &Agent,
    dir: &Path,
    keep: usize,
) -> anyhow::Result<(PathBuf, u64)> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let stamp =
        crate::time::format_rfc3339_ms(crate::time::now_ms_u64() as i64).replace([':', '.'], "-");
    let name = format!("kdelta-{}-{stamp}.{BACKUP_EXTENSION}", agent.device);
    let done = dir.join(&name);
    let partial = dir.join(format!("{name}.partial"));
    let file = super::create_private(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let out = file.try_clone().context("duplicating a file handle")?;
    let result = write_backup(agent.sqlite()?, &agent.data_dir, out, |_, _| {}).await;
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
            return Err(e);
        }
    };
    prune(dir, &agent.device, keep);
    Ok((done, bytes))
}

/// Deletes the oldest complete scheduled backups of `device` in `dir` beyond `keep` (names
/// sort by time).
fn prune(dir: &Path, device: &str, keep: usize) {
    let prefix = format!("kdelta-{device}-");
    let suffix = format!(".{BACKUP_EXTENSION}");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
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
