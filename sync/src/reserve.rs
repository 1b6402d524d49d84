//! The reserve: a file of a few MB next to the store, held while the disk has room and
//! deleted the moment the store finds the disk full, so that the deletes, the WAL and the
//! checkpoint of a recovery pass (the agent's disk budget) — or an operator's admin commands —
//! have room to run on a disk that is really full.
//!
//! Never for ingest: while the full-disk state lasts, writes are refused at admission
//! (`writer.rs`), and the state ends only once the reserve is held again — which needs
//! [`RECREATE_FACTOR`] times its size free (the reserve, and as much again for writes), so a
//! recovered store does not fill the disk straight back.
//!
//! The file is written with zeros and fsynced (a sparse `set_len` would reserve nothing).
//! Every change of state is logged once; [`ReserveStatus`] is what `/v1/status` shows
//! (`store.write_health.reserve`).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// The reserve is (re)created only when the file system has this many times its size free.
pub const RECREATE_FACTOR: u64 = 2;

/// Bytes written per `write` call when creating the reserve.
const CHUNK: usize = 256 * 1024;

/// How a reserve finds the bytes available on the file system holding a directory (the
/// agent passes `statvfs`; tests pass what they need).
pub type FreeBytes = Box<dyn Fn(&Path) -> std::io::Result<u64> + Send + Sync>;

/// Where the reserve stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReserveState {
    /// The file is there, holding its bytes.
    Held,
    /// Deleted because the disk filled up; recreated once there is room again.
    Released,
    /// Not created: too little free space (`why` says how much there is and needs to be).
    NoRoom,
    /// Not created: the file could not be written (`why` says what the system said).
    Failed,
    /// `reserve = 0`: no reserve.
    Disabled,
}

/// The reserve as `/v1/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReserveStatus {
    /// The file.
    pub path: String,
    /// Its configured size.
    pub bytes: u64,
    /// Held, released, or why it is not there.
    pub state: ReserveState,
    /// Why it is not held (`None` while held or disabled).
    pub why: Option<String>,
}

/// The reserve file of one store. Used from the store's writer thread.
pub struct Reserve {
    path: PathBuf,
    bytes: u64,
    free: FreeBytes,
    state: ReserveState,
    why: Option<String>,
    /// False until the first attempt (so its outcome is logged whatever it is).
    attempted: bool,
}

impl std::fmt::Debug for Reserve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reserve")
            .field("path", &self.path)
            .field("bytes", &self.bytes)
            .field("state", &self.state)
            .finish()
    }
}

impl Reserve {
    /// The reserve file `path` of `bytes` (0: disabled, and a file left by an earlier
    /// configuration is deleted). Nothing is created until [`ensure`](Self::ensure).
    pub fn new(path: impl Into<PathBuf>, bytes: u64, free: FreeBytes) -> Reserve {
        let path = path.into();
        let state = if bytes == 0 {
            if path.exists() {
                match std::fs::remove_file(&path) {
                    Ok(()) => {
                        tracing::info!(path = %path.display(), "reserve disabled (reserve = 0): deleted the reserve file")
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "reserve disabled, but its old file could not be deleted")
                    }
                }
            }
            ReserveState::Disabled
        } else {
            ReserveState::NoRoom
        };
        Reserve {
            path,
            bytes,
            free,
            state,
            why: (bytes > 0).then(|| "not created yet".to_owned()),
            attempted: false,
        }
    }

    /// Its status for `/v1/status`.
    pub fn status(&self) -> ReserveStatus {
        ReserveStatus {
            path: self.path.display().to_string(),
            bytes: self.bytes,
            state: self.state.clone(),
            why: self.why.clone(),
        }
    }

    /// Bytes available on the file system holding the reserve.
    pub fn available_bytes(&self) -> std::io::Result<u64> {
        (self.free)(self.dir())
    }

    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// True while the file is held.
    pub fn is_held(&self) -> bool {
        self.state == ReserveState::Held
    }

    /// True when a full-disk state may end: the reserve is held (created again here if there
    /// is room), disabled, or cannot be written for a reason room will not cure.
    pub fn allows_writes(&mut self) -> bool {
        self.ensure();
        matches!(
            self.state,
            ReserveState::Held | ReserveState::Disabled | ReserveState::Failed
        )
    }

    /// Holds the reserve: keeps a file of the right size that is already there, else
    /// creates it when the file system has [`RECREATE_FACTOR`] times its size free. Returns
    /// whether it is held.
    pub fn ensure(&mut self) -> bool {
        if matches!(self.state, ReserveState::Held | ReserveState::Disabled) {
            return self.is_held();
        }
        let existing = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        if existing == self.bytes {
            self.set(ReserveState::Held, None);
            return true;
        }
        let free = match self.available_bytes() {
            Ok(f) => f.saturating_add(existing),
            Err(e) => {
                self.set(
                    ReserveState::Failed,
                    Some(format!("cannot read the free space: {e}")),
                );
                return false;
            }
        };
        let needed = self.bytes.saturating_mul(RECREATE_FACTOR);
        if free < needed {
            let figures =
                format!("{free} bytes free, {needed} needed ({RECREATE_FACTOR} × the reserve)");
            // A released reserve stays `Released` (the state a recovery is in), with the figures.
            if self.state == ReserveState::Released {
                self.why = Some(format!("released to a full disk; held again at {figures}"));
            } else {
                self.set(ReserveState::NoRoom, Some(figures));
            }
            return false;
        }
        match write_file(&self.path, self.bytes) {
            Ok(()) => self.set(ReserveState::Held, None),
            Err(e) => {
                let _ = std::fs::remove_file(&self.path);
                let state = if e.kind() == std::io::ErrorKind::StorageFull {
                    ReserveState::NoRoom // someone took the room meanwhile
                } else {
                    ReserveState::Failed
                };
                self.set(state, Some(format!("writing it failed: {e}")));
            }
        }
        self.is_held()
    }

    /// Deletes the reserve (the disk is full). Returns whether there was one to free.
    pub fn release(&mut self) -> bool {
        if !self.is_held() {
            return false;
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => {
                self.set(
                    ReserveState::Released,
                    Some("released to a full disk; held again once there is room".to_owned()),
                );
                true
            }
            Err(e) => {
                self.set(
                    ReserveState::Failed,
                    Some(format!("deleting it failed: {e}")),
                );
                false
            }
        }
    }

    /// Changes the state, logging once per change.
    fn set(&mut self, state: ReserveState, why: Option<String>) {
        let changed = !self.attempted || self.state != state;
        self.attempted = true;
        let reason = why.clone().unwrap_or_default();
        self.why = why;
        if !changed {
            return;
        }
        self.state = state;
        let (path, bytes) = (self.path.display(), self.bytes);
        match &self.state {
            ReserveState::Held => {
                tracing::info!(path = %path, bytes, "disk reserve held ({bytes} bytes)")
            }
            ReserveState::Released => tracing::warn!(
                path = %path, bytes,
                "the disk is full: released the disk reserve ({bytes} bytes) so pruning and admin commands have room; writes stay refused until it is held again"
            ),
            ReserveState::NoRoom => {
                tracing::warn!(path = %path, bytes, "disk reserve not created: {reason}")
            }
            ReserveState::Failed => {
                tracing::warn!(path = %path, bytes, "disk reserve not available: {reason}")
            }
            ReserveState::Disabled => {}
        }
    }
}

/// Writes `bytes` zeros to `path` (replacing what is there) and fsyncs the file and its
/// directory.
fn write_file(path: &Path, bytes: u64) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    let chunk = vec![0u8; CHUNK];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        f.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A reserve whose file system has whatever `free` holds.
    fn reserve(dir: &Path, bytes: u64) -> (Reserve, Arc<AtomicU64>) {
        let free = Arc::new(AtomicU64::new(u64::MAX));
        let f = free.clone();
        let r = Reserve::new(
            dir.join("reserve"),
            bytes,
            Box::new(move |_| Ok(f.load(Ordering::SeqCst))),
        );
        (r, free)
    }

    #[test]
    fn created_released_and_recreated_once_there_is_room() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reserve");
        let (mut r, free) = reserve(dir.path(), 100_000);
        assert!(r.ensure());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 100_000);
        assert_eq!(r.status().state, ReserveState::Held);
        assert!(r.allows_writes());

        assert!(r.release(), "held, so released");
        assert!(!path.exists());
        assert!(!r.release(), "nothing left to release");
        assert_eq!(r.status().state, ReserveState::Released);

        // Room for the reserve but not for writes beside it: stays released.
        free.store(150_000, Ordering::SeqCst);
        assert!(!r.allows_writes());
        assert!(!path.exists());
        let s = r.status();
        assert_eq!(s.state, ReserveState::Released);
        assert!(s.why.unwrap().contains("150000 bytes free, 200000 needed"));

        free.store(200_000, Ordering::SeqCst);
        assert!(r.allows_writes());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 100_000);
        assert_eq!(r.status().why, None);
    }

    #[test]
    fn not_created_without_room_and_kept_when_already_there() {
        let dir = tempfile::tempdir().unwrap();
        let (mut r, free) = reserve(dir.path(), 100_000);
        free.store(199_999, Ordering::SeqCst);
        assert!(!r.ensure());
        let s = r.status();
        assert_eq!(s.state, ReserveState::NoRoom);
        assert!(
            s.why.unwrap().contains("200000 needed"),
            "says what it needs"
        );
        assert!(!r.allows_writes(), "a full disk waits for the room");
        free.store(200_000, Ordering::SeqCst);
        assert!(r.ensure());

        // A restart finds the file of the right size: held whatever the free space.
        let (mut again, free) = reserve(dir.path(), 100_000);
        free.store(0, Ordering::SeqCst);
        assert!(again.ensure());
        // A new size replaces the file (its bytes count as free).
        let (mut larger, free) = reserve(dir.path(), 150_000);
        free.store(200_000, Ordering::SeqCst);
        assert!(larger.ensure());
        assert_eq!(
            std::fs::metadata(dir.path().join("reserve")).unwrap().len(),
            150_000
        );
    }

    #[test]
    fn disabled_deletes_an_old_file_and_never_holds_writes_back() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("reserve"), b"old").unwrap();
        let (mut r, _) = reserve(dir.path(), 0);
        assert!(!dir.path().join("reserve").exists());
        assert!(!r.ensure());
        assert!(r.allows_writes());
        assert!(!r.release());
        assert_eq!(r.status().state, ReserveState::Disabled);
    }

    #[test]
    fn a_failing_free_space_reading_does_not_hold_writes_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Reserve::new(
            dir.path().join("reserve"),
            1000,
            Box::new(|_| Err(std::io::Error::other("no statvfs"))),
        );
        assert!(!r.ensure());
        assert_eq!(r.status().state, ReserveState::Failed);
        assert!(r.allows_writes());
    }
}
