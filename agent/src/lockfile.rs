//! The data directory's lock: one running agent per store. `<data_dir>/kdelta.lock` is held
//! with `flock(LOCK_EX | LOCK_NB)` for the life of the process and holds its pid, so a second
//! `kdelta start` fails at once and says who holds it. The kernel releases the lock when the
//! process dies (even by `kill -9`), so a stale file never blocks a restart.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// File name of the lock inside the data directory.
pub const LOCK_FILE: &str = "kdelta.lock";

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error("kdelta is already running on {} (pid {})", dir.display(), pid.map_or("unknown".to_owned(), |p| p.to_string()))]
    AlreadyRunning {
        /// The data directory.
        dir: PathBuf,
        /// The holder's pid, as it wrote it (absent if it had not yet).
        pid: Option<u32>,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// The held lock. Dropping it (or exiting) releases it.
#[derive(Debug)]
pub struct DataDirLock {
    // Kept open: the flock lives as long as this open file description.
    file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Takes the lock of `data_dir` (which must exist) and writes our pid into it.
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, LockError> {
        let path = data_dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        // Not truncated on open: the holder's pid must stay readable for the error message.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        // SAFETY: a valid open descriptor owned by `file`.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::AlreadyRunning {
                    dir: data_dir.to_path_buf(),
                    pid: text.trim().parse().ok(),
                });
            }
            return Err(io(err));
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(DataDirLock { file, path })
    }

    /// Path of the lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DataDirLock {
    fn drop(&mut self) {
        // Clear the pid so a reader never sees ours after we are gone; the lock itself goes
        // with the descriptor. The file stays: unlinking would race with a starting agent.
        let _ = self.file.set_len(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_fails_with_the_holders_pid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let held = DataDirLock::acquire(dir.path()).expect("first lock");
        let err = DataDirLock::acquire(dir.path()).expect_err("second lock must fail");
        let pid = std::process::id();
        match &err {
            LockError::AlreadyRunning { pid: Some(p), .. } => assert_eq!(*p, pid),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            format!(
                "kdelta is already running on {} (pid {pid})",
                dir.path().display()
            )
        );
        drop(held);
        DataDirLock::acquire(dir.path()).expect("lock again after release");
    }

    #[test]
    fn missing_directory_is_an_io_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = DataDirLock::acquire(&dir.path().join("nope")).expect_err("no dir");
        assert!(matches!(err, LockError::Io { .. }), "{err:?}");
    }
}
