//! One backup of the open store: snapshot into a scratch directory inside the data directory
//! (same file system as the store, removed whatever happens), then pack into `out` on a
//! blocking thread. One backup at a time per process: each needs room for a whole copy.

use std::io::Write;
use std::path::Path;

use kdelta_sync::Store;
use kdelta_sync::backup::{self, BackupError, BackupHeader};
use tokio::sync::Semaphore;

/// File name extension of backup files.
pub const BACKUP_EXTENSION: &str = "kdbk";

/// Only one snapshot copy on disk at a time.
static ONE_AT_A_TIME: Semaphore = Semaphore::const_new(1);

/// Writes a backup of `store` to `out` (which may block: it runs on a blocking thread). The
/// snapshot's scratch copy lives in `data_dir`. `progress` gets database bytes packed so far
/// and the total. Fails at once with [`BackupError::Io`] (`WouldBlock`) when another backup is
/// running in this process.
pub async fn write_backup<W: Write + Send + 'static>(
    store: &Store,
    data_dir: &Path,
    out: W,
    mut progress: impl FnMut(u64, u64) + Send + 'static,
) -> Result<(BackupHeader, u64), BackupError> {
    let _permit = ONE_AT_A_TIME.try_acquire().map_err(|_| BackupError::Io {
        path: data_dir.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            "another backup is running; retry when it has finished",
        ),
    })?;
    remove_stale_scratch(data_dir);
    let scratch = tempfile::Builder::new()
        .prefix(".backup-")
        .tempdir_in(data_dir)
        .map_err(|source| BackupError::Io {
            path: data_dir.to_path_buf(),
            source,
        })?;
    let snapshot = scratch.path().join("snapshot.db");
    let header = store.snapshot(&snapshot).await?;
    let packed = {
        let header = header.clone();
        tokio::task::spawn_blocking(move || {
            let total = header.db_bytes;
            let written = backup::pack(&header, &snapshot, out, |done| progress(done, total));
            drop(scratch);
            written
        })
        .await
        .map_err(|e| BackupError::Io {
            path: data_dir.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })??
    };
    Ok((header, packed))
}

/// Removes scratch directories a killed process left behind (`kill -9` during a backup):
/// only called while holding the one-backup permit, in a data directory this process locks.
fn remove_stale_scratch(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(".backup-") && entry.path().is_dir() {
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => {
                    tracing::info!(dir = %entry.path().display(), "removed a stale backup scratch directory")
                }
                Err(e) => {
                    tracing::warn!(dir = %entry.path().display(), error = %e, "cannot remove a stale backup scratch directory")
                }
            }
        }
    }
}
