//! The process's open-file limit (`RLIMIT_NOFILE`) against the API's connection cap: every
//! connection is a file descriptor, and a soft limit of 1024 (the usual default outside
//! systemd) is below what `api.max_connections` plus the rest of the agent may need. At
//! start the soft limit is raised to the hard limit when it is too low; when even the hard
//! limit is, a warning names the keys to change.

/// Descriptors the agent needs besides API connections and sync sessions: the store's
/// files (database, WAL, shared memory, backups), the listener, the runtime's epoll and
/// event descriptors, sources (serial ports, sysfs files), MQTT and outbound peers.
pub const RESERVED_FILES: u64 = 256;

/// What [`ensure`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoFile {
    /// The soft limit was enough already.
    Enough { soft: u64 },
    /// The soft limit was raised from `from` to `to` (the hard limit, or `needed` when
    /// the hard limit is unlimited).
    Raised { from: u64, to: u64 },
    /// Even the hard limit (now the soft one, when it could be raised) is below `needed`.
    TooLow { limit: u64 },
    /// The limit could not be read or set (`errno`).
    Failed { errno: i32 },
}

/// Makes the soft `RLIMIT_NOFILE` at least `needed` if the hard limit allows, else as high
/// as it allows; logs what it did.
pub fn ensure(needed: u64) -> NoFile {
    let outcome = raise(needed);
    match outcome {
        NoFile::Enough { soft } => {
            tracing::debug!(
                "open-file limit {soft} (RLIMIT_NOFILE) covers the ~{needed} the API's caps need"
            )
        }
        NoFile::Raised { from, to } => tracing::info!(
            "raised the open-file limit (RLIMIT_NOFILE soft) from {from} to {to}: api.max_connections and api.max_sync_sessions need ~{needed}"
        ),
        NoFile::TooLow { limit } => tracing::warn!(
            "the open-file limit (RLIMIT_NOFILE) is {limit}, below the ~{needed} that api.max_connections and api.max_sync_sessions may need: raise LimitNOFILE (systemd) or `ulimit -n`, or lower api.max_connections"
        ),
        NoFile::Failed { errno } => tracing::warn!(
            "could not read or raise the open-file limit (RLIMIT_NOFILE): {}",
            std::io::Error::from_raw_os_error(errno)
        ),
    }
    outcome
}

// `rlim_t` is `u64` here but `u32` on some 32-bit targets (armv7): the casts are kept.
#[allow(clippy::unnecessary_cast)]
fn raise(needed: u64) -> NoFile {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return failed();
    }
    let (soft, hard) = (lim.rlim_cur as u64, lim.rlim_max as u64);
    if lim.rlim_cur == libc::RLIM_INFINITY || soft >= needed {
        return NoFile::Enough { soft };
    }
    let to = if lim.rlim_max == libc::RLIM_INFINITY {
        needed
    } else {
        hard
    };
    if to <= soft {
        return NoFile::TooLow { limit: soft };
    }
    lim.rlim_cur = to as libc::rlim_t;
    // SAFETY: `lim` is a valid rlimit; raising the soft limit up to the hard one needs no
    // privilege.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return failed();
    }
    if to < needed {
        NoFile::TooLow { limit: to }
    } else {
        NoFile::Raised { from: soft, to }
    }
}

fn failed() -> NoFile {
    NoFile::Failed {
        errno: std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_need_below_the_soft_limit_changes_nothing() {
        assert!(matches!(raise(16), NoFile::Enough { soft } if soft >= 16));
    }

    #[test]
    #[allow(clippy::unnecessary_cast)]
    fn the_soft_limit_ends_at_least_at_the_need_when_the_hard_limit_allows() {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        let need = (lim.rlim_max as u64).min(4096);
        match raise(need) {
            NoFile::Enough { soft } => assert!(soft >= need),
            NoFile::Raised { to, .. } => assert!(to >= need),
            other => panic!("{other:?} for {need} with hard limit {}", lim.rlim_max),
        }
    }
}
