//! File-system usage of one mount through `statvfs(3)`. Owns the only `unsafe` call of the
//! `system` source and the `df`-compatible arithmetic; it must not read `/proc`.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::SourceError;

/// Usage of the file system holding a path, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    /// Size of the file system.
    pub total: u64,
    /// Bytes in use (total minus free, reserved blocks counted as free for root only).
    pub used: u64,
    /// Bytes an unprivileged process can still write.
    pub available: u64,
}

impl DiskUsage {
    /// Used space in percent as `df` shows it: `used / (used + available)`, so the 5 %
    /// ext4 reserves for root count as full. `None` for pseudo file systems with no blocks.
    pub fn used_pct(&self) -> Option<f64> {
        let usable = self.used.checked_add(self.available)?;
        (usable > 0).then(|| self.used as f64 / usable as f64 * 100.0)
    }
}

/// Calls `statvfs` on `path`.
///
/// # Errors
/// [`SourceError::DeviceMissing`] when the path does not exist (an unmounted USB disk),
/// [`SourceError::Io`] for other failures.
pub fn disk_usage(path: &Path) -> Result<DiskUsage, SourceError> {
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| SourceError::Io {
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"),
    })?;
    // SAFETY: `statvfs` is plain data; all-zero is a valid value that the call overwrites.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a valid NUL-terminated string and `stat` a valid, writable
    // `statvfs`; both outlive the call, which keeps no pointer to either.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::NotFound {
            return Err(SourceError::DeviceMissing {
                device: path.display().to_string(),
                detail: "disk path does not exist (not mounted?)".into(),
            });
        }
        return Err(SourceError::Io {
            path: path.to_path_buf(),
            source: err,
        });
    }
    // The field types differ between targets (u32 on 32-bit ARM without LFS, u64 elsewhere),
    // hence the widening casts.
    #[allow(clippy::unnecessary_cast)]
    let (blocks, bfree, bavail, frsize) = (
        stat.f_blocks as u64,
        stat.f_bfree as u64,
        stat.f_bavail as u64,
        stat.f_frsize as u64,
    );
    Ok(DiskUsage {
        total: blocks.saturating_mul(frsize),
        used: blocks.saturating_sub(bfree).saturating_mul(frsize),
        available: bavail.saturating_mul(frsize),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_pct_matches_df() {
        let d = DiskUsage {
            total: 100,
            used: 45,
            available: 50,
        };
        let pct = d.used_pct().expect("pct");
        assert!((pct - 45.0 / 95.0 * 100.0).abs() < 1e-9);
        let empty = DiskUsage {
            total: 0,
            used: 0,
            available: 0,
        };
        assert_eq!(empty.used_pct(), None);
    }

    #[test]
    fn real_root_file_system() {
        let d = disk_usage(Path::new("/")).expect("statvfs /");
        assert!(d.total > 0);
        assert!(d.used <= d.total);
        assert!(d.available <= d.total);
    }

    #[test]
    fn missing_path_is_device_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let gone = dir.path().join("not-mounted");
        match disk_usage(&gone) {
            Err(SourceError::DeviceMissing { device, .. }) => {
                assert_eq!(device, gone.display().to_string())
            }
            other => panic!("expected DeviceMissing, got {other:?}"),
        }
    }
}
