//! CPU time of processes from /proc: the PostgreSQL server (every process whose `comm` is
//! `postgres`), the replica processes and this one. Linux only; elsewhere every figure is
//! `None` and the report says so.

/// User plus system CPU time of process `pid` and of its reaped children
/// (`utime + stime + cutime + cstime`, fields 14–17 of `/proc/PID/stat`), in seconds, and
/// its `comm`. The children's part matters for the postmaster: a backend that exits during
/// a phase (a pool closing a connection) leaves its time there.
fn cpu_of(pid: u32, hz: f64) -> Option<(String, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, after) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_owned();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let mut ticks = 0u64;
    for i in 11..=14 {
        ticks += fields.get(i)?.parse::<u64>().ok()?;
    }
    Some((comm, ticks as f64 / hz))
}

/// Clock ticks per second of /proc's CPU times.
fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// CPU seconds of the PostgreSQL server on this machine: the sum over processes named
/// `postgres` (postmaster, backends, background workers), with `(seconds, processes)`;
/// `None` when none is visible (no /proc, or the server runs elsewhere).
pub(super) fn postgres_seconds() -> Option<(f64, usize)> {
    let hz = clock_ticks();
    let mut total = 0.0;
    let mut seen = 0;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some((comm, secs)) = cpu_of(pid, hz)
            && comm == "postgres"
        {
            total += secs;
            seen += 1;
        }
    }
    (seen > 0).then_some((total, seen))
}

/// CPU seconds of the processes `pids` together; `None` when one cannot be read.
pub(super) fn seconds_of(pids: &[u32]) -> Option<f64> {
    let hz = clock_ticks();
    pids.iter().map(|&p| cpu_of(p, hz).map(|(_, s)| s)).sum()
}

/// One sample of every figure a phase reports, taken at its start and at its end.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct CpuSample {
    pub postgres: Option<f64>,
    pub replicas: Option<f64>,
    pub bench: Option<f64>,
}

impl CpuSample {
    pub(super) fn now(replicas: &[u32]) -> CpuSample {
        CpuSample {
            postgres: postgres_seconds().map(|(s, _)| s),
            replicas: seconds_of(replicas),
            bench: seconds_of(&[std::process::id()]),
        }
    }

    /// Seconds consumed from `self` to `later`, per figure.
    pub(super) fn until(self, later: CpuSample) -> CpuSample {
        let d = |a: Option<f64>, b: Option<f64>| Some((b? - a?).max(0.0));
        CpuSample {
            postgres: d(self.postgres, later.postgres),
            replicas: d(self.replicas, later.replicas),
            bench: d(self.bench, later.bench),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_cpu_time() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            return;
        }
        let (comm, secs) = cpu_of(std::process::id(), clock_ticks()).unwrap();
        assert!(!comm.is_empty());
        assert!(secs >= 0.0);
    }
}
