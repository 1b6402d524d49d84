//! The one error type of backups and restores. Every variant names the file, so the user
//! knows which copy is bad and why.

use std::path::PathBuf;

use crate::StoreError;

/// Why a backup could not be made, read or restored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The file does not start with the kdelta backup signature (another kind of file).
    #[error("{} is not a kdelta backup (it does not start with the kdelta backup signature)", path.display())]
    NotABackup {
        /// The file.
        path: PathBuf,
    },
    /// A backup written in a format this build does not read.
    #[error("{} is a kdelta backup of format {found}; this kdelta reads format {supported}: use a newer kdelta", path.display())]
    UnsupportedFormat {
        /// The file.
        path: PathBuf,
        /// Format found in the file.
        found: u32,
        /// Format this build reads.
        supported: u32,
    },
    /// The header is missing, too large or not what a backup header holds.
    #[error("{}: the backup header is unreadable: {detail}", path.display())]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The file ends early: a copy that was cut short.
    #[error("{} is truncated: {detail}", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Where it ends, e.g. "it ends after 1024 of the database's 4096 bytes".
        detail: String,
    },
    /// The compressed data or the database it yields does not match the header.
    #[error("{} is corrupt: {detail}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What did not match.
        detail: String,
    },
    /// Reading or writing a file failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The store itself failed (snapshot, verification, replay).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl BackupError {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
        move |source| BackupError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
