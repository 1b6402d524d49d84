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

/// Creates (or truncates) the backup file `path` readable and writable by its owner only
/// (0600, whatever the umask, also when a leftover file had wider bits): a backup carries
/// the store's private signing key (see docs/security.md).
pub fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        open.mode(0o600);
        let file = open.open(path)?;
        // `mode` applies to a new file only; a leftover one keeps its bits without this.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        Ok(file)
    }
    #[cfg(not(unix))]
    open.open(path)
}

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

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn backup_files_are_private_also_over_a_leftover_file() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("new.kdbk.partial");
        create_private(&new).unwrap().write_all(b"x").unwrap();
        assert_eq!(mode(&new), 0o600);
        let leftover = dir.path().join("old.kdbk.partial");
        std::fs::write(&leftover, b"old content").unwrap();
        std::fs::set_permissions(&leftover, std::fs::Permissions::from_mode(0o644)).unwrap();
        create_private(&leftover).unwrap();
        assert_eq!(mode(&leftover), 0o600);
        assert_eq!(std::fs::metadata(&leftover).unwrap().len(), 0, "truncated");
    }
}
