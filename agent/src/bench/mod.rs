//! Load tools behind `kdelta bench`: end-to-end figures a user can reproduce on their own
//! machine, printed with the process memory they cost.
//!
//! | command | module |
//! |---|---|
//! | `kdelta bench ingest` — readings/s through `POST /v1/readings` of a running agent | `ingest.rs` |
//! | `kdelta bench sync` — readings/s, bytes on the wire and RSS of a device → hub sync over a loopback WebSocket | `sync.rs` |
//! | `kdelta bench prune` — retention's prune rate and the ingest latency during a prune | `prune.rs` |
//! | `kdelta bench fleet` — many devices' backlogs into hub replicas on PostgreSQL (cargo feature `postgres`) | `fleet/` |

mod args;
#[cfg(feature = "postgres")]
mod fleet;
mod ingest;
mod prune;
mod sync;

pub use args::{BenchCommand, BenchIngestArgs, BenchSyncArgs};
#[cfg(feature = "postgres")]
pub use fleet::{BenchFleetArgs, fleet};
pub use ingest::ingest;
pub use prune::{BenchPruneArgs, prune};
pub use sync::sync;

/// Figures of the server process from /proc.
pub(crate) struct ProcSample {
    /// Resident set size (`VmRSS`).
    pub rss_bytes: u64,
    /// Peak resident set size (`VmHWM`).
    pub hwm_bytes: u64,
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
}

/// Memory and CPU figures of process `pid`; `None` without /proc.
pub(crate) fn proc_sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|k| k * 1024)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ProcSample {
        rss_bytes: kb("VmRSS:")?,
        hwm_bytes: kb("VmHWM:").unwrap_or(0),
        cpu_ticks: ticks,
    })
}

/// `bytes` as `12.3 MiB`.
pub(crate) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
