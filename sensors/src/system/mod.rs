//! The `system` source: host metrics that need no configuration — CPU usage, load, memory,
//! disk, uptime, network byte counters and every temperature sysfs exposes. Owns the
//! `system.*` series; reuses [`sysfs`](crate::sysfs) for temperatures. It must not depend on
//! anything that is not present on every Linux (no systemd, no D-Bus); procfs and sysfs roots
//! are configurable so tests use fixture trees.
//!
//! ```
//! use kdelta_sensors::system::{SystemConfig, SystemSource};
//!
//! let mut source = SystemSource::new(SystemConfig::default()).expect("valid config");
//! let first = source.sample_blocking(kdelta_sensors::now_ms());
//! assert!(first.readings.iter().any(|r| r.series == "system.uptime"));
//! ```

mod config;
mod disk;
mod procfs;
mod source;

pub use config::{DEFAULT_SYSTEM_INTERVAL, SystemConfig};
pub use disk::{DiskUsage, disk_usage};
pub use procfs::{
    CpuTimes, LoadAvg, MemInfo, NetCounters, parse_loadavg, parse_meminfo, parse_net_dev,
    parse_proc_stat, parse_uptime,
};
pub use source::{SystemScanner, SystemSource};
