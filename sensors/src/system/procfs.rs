//! Parsers for the `/proc` files the `system` source reads: `stat`, `loadavg`, `meminfo`,
//! `uptime` and `net/dev`. Pure functions over text, so they are tested without a kernel;
//! they must not open files themselves. `path` arguments only name the file in errors.

use std::path::Path;

use crate::SourceError;
use crate::sysfs::attr::{parse_error, quote};

/// Aggregate CPU time counters from the first line of `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    /// Ticks spent doing anything but idling or waiting for I/O.
    pub busy: u64,
    /// All ticks (guest time excluded: the kernel already counts it in user/nice).
    pub total: u64,
}

impl CpuTimes {
    /// CPU usage in percent (0–100, all cores together) between `earlier` and `self`.
    /// `None` when no time passed or a counter went backwards (a restored container or a
    /// counter reset), because no honest figure exists for that interval.
    pub fn usage_since(&self, earlier: &CpuTimes) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        let busy = self.busy.checked_sub(earlier.busy)?;
        if total == 0 || busy > total {
            return None;
        }
        Some(busy as f64 / total as f64 * 100.0)
    }
}

/// Parses `/proc/stat`'s aggregate `cpu` line:
/// `cpu  user nice system idle iowait irq softirq steal guest guest_nice`.
/// Kernels before 2.6 have only the first four fields; missing ones count as zero.
pub fn parse_proc_stat(path: &Path, text: &str) -> Result<CpuTimes, SourceError> {
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some("cpu"))
        .ok_or_else(|| parse_error(path, "no aggregate `cpu` line"))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8) // guest and guest_nice are already inside user and nice
        .map(|f| f.parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|_| parse_error(path, &format!("bad `cpu` line: {}", quote(line))))?;
    if fields.len() < 4 {
        return Err(parse_error(
            path,
            &format!(
                "`cpu` line has {} fields, need 4: {}",
                fields.len(),
                quote(line)
            ),
        ));
    }
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0); // idle + iowait
    let total = fields.iter().try_fold(0u64, |acc, v| acc.checked_add(*v));
    let total = total.ok_or_else(|| parse_error(path, "cpu counters overflow"))?;
    Ok(CpuTimes {
        busy: total.saturating_sub(idle),
        total,
    })
}

/// The three load averages of `/proc/loadavg`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadAvg {
    /// 1-minute load average.
    pub load1: f64,
    /// 5-minute load average.
    pub load5: f64,
    /// 15-minute load average.
    pub load15: f64,
}

/// Parses `/proc/loadavg` (`0.52 0.58 0.59 1/1234 5678`).
pub fn parse_loadavg(path: &Path, text: &str) -> Result<LoadAvg, SourceError> {
    let bad = || {
        parse_error(
            path,
            &format!("expected three load averages: {}", quote(text)),
        )
    };
    let mut it = text.split_whitespace().map(|f| f.parse::<f64>());
    let mut next = || match it.next() {
        Some(Ok(v)) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(bad()),
    };
    Ok(LoadAvg {
        load1: next()?,
        load5: next()?,
        load15: next()?,
    })
}

/// Memory figures from `/proc/meminfo`, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    /// `MemTotal`.
    pub total: u64,
    /// `MemAvailable`, or `MemFree + Buffers + Cached` on kernels before 3.14.
    pub available: u64,
}

impl MemInfo {
    /// Bytes in use: total minus available.
    pub fn used(&self) -> u64 {
        self.total.saturating_sub(self.available)
    }

    /// Used memory in percent of total; `None` when total is zero.
    pub fn used_pct(&self) -> Option<f64> {
        (self.total > 0).then(|| self.used() as f64 / self.total as f64 * 100.0)
    }
}

/// Parses `/proc/meminfo` (`MemTotal:        3884096 kB`).
pub fn parse_meminfo(path: &Path, text: &str) -> Result<MemInfo, SourceError> {
    let field = |key: &str| -> Result<Option<u64>, SourceError> {
        let Some(line) = text.lines().find(|l| l.split(':').next() == Some(key)) else {
            return Ok(None);
        };
        let rest = line.split_once(':').map(|(_, r)| r).unwrap_or("");
        let mut parts = rest.split_whitespace();
        let value: u64 = parts
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| parse_error(path, &format!("bad {key} line: {}", quote(line))))?;
        // Every size in meminfo is in kibibytes despite the "kB" spelling.
        let scale = match parts.next() {
            Some("kB") => 1024,
            None => 1,
            Some(_) => return Err(parse_error(path, &format!("unknown unit: {}", quote(line)))),
        };
        Ok(Some(value.saturating_mul(scale)))
    };
    let total = field("MemTotal")?.ok_or_else(|| parse_error(path, "no MemTotal line"))?;
    let available = match field("MemAvailable")? {
        Some(v) => v,
        None => {
            let free = field("MemFree")?.ok_or_else(|| parse_error(path, "no MemFree line"))?;
            free + field("Buffers")?.unwrap_or(0) + field("Cached")?.unwrap_or(0)
        }
    };
    Ok(MemInfo { total, available })
}

/// Parses `/proc/uptime` (`350735.47 234388.90`) into seconds since boot.
pub fn parse_uptime(path: &Path, text: &str) -> Result<f64, SourceError> {
    match text.split_whitespace().next().map(str::parse::<f64>) {
        Some(Ok(v)) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(parse_error(
            path,
            &format!("expected seconds: {}", quote(text)),
        )),
    }
}

/// Byte counters of one network interface from `/proc/net/dev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetCounters {
    /// Interface name as the kernel spells it (`eth0`, `wlan0`, `eth0.100`).
    pub iface: String,
    /// Bytes received since the interface came up.
    pub rx_bytes: u64,
    /// Bytes sent since the interface came up.
    pub tx_bytes: u64,
}

/// Parses `/proc/net/dev`: two header lines, then `iface: rx_bytes rx_packets … tx_bytes …`
/// (16 counters; `tx_bytes` is the 9th). Large counters can touch the colon
/// (`eth0:1234567`), so the line is split on the colon, not on whitespace.
pub fn parse_net_dev(path: &Path, text: &str) -> Result<Vec<NetCounters>, SourceError> {
    let mut out = Vec::new();
    for line in text.lines().skip(2) {
        if line.trim().is_empty() {
            continue;
        }
        let Some((iface, counters)) = line.split_once(':') else {
            return Err(parse_error(
                path,
                &format!("no `iface:` in {}", quote(line)),
            ));
        };
        let fields: Vec<u64> = counters
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|_| parse_error(path, &format!("bad counters: {}", quote(line))))?;
        if fields.len() < 9 {
            return Err(parse_error(
                path,
                &format!("{} counters, need 9: {}", fields.len(), quote(line)),
            ));
        }
        out.push(NetCounters {
            iface: iface.trim().to_owned(),
            rx_bytes: fields[0],
            tx_bytes: fields[8],
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("/proc/x")
    }

    const STAT_1: &str = "cpu  4705 150 1120 16250 520 0 25 0 0 0\n\
                          cpu0 1200 40 300 4000 130 0 10 0 0 0\n\
                          intr 123456 0 0\nctxt 987654\nbtime 1700000000\n";
    const STAT_2: &str = "cpu  4905 150 1180 16950 540 0 25 0 0 0\n";

    #[test]
    fn proc_stat_delta() {
        let a = parse_proc_stat(p(), STAT_1).expect("stat 1");
        let b = parse_proc_stat(p(), STAT_2).expect("stat 2");
        assert_eq!(a.total, 4705 + 150 + 1120 + 16250 + 520 + 25);
        assert_eq!(a.busy, a.total - 16250 - 520);
        // Δbusy = 200 + 60 = 260; Δtotal = 260 + 700 + 20 = 980.
        let usage = b.usage_since(&a).expect("usage");
        assert!((usage - 260.0 / 980.0 * 100.0).abs() < 1e-9, "{usage}");
        assert_eq!(a.usage_since(&a), None, "no time passed");
        assert_eq!(a.usage_since(&b), None, "counters went backwards");
    }

    #[test]
    fn proc_stat_guest_excluded_and_old_kernels() {
        let with_guest = parse_proc_stat(p(), "cpu 10 0 10 80 0 0 0 0 500 500\n").expect("ok");
        assert_eq!(with_guest.total, 100);
        let old = parse_proc_stat(p(), "cpu 10 0 10 80\n").expect("four fields");
        assert_eq!((old.busy, old.total), (20, 100));
        assert!(parse_proc_stat(p(), "cpu 1 2\n").is_err());
        assert!(parse_proc_stat(p(), "cpu 1 2 x 4\n").is_err());
        assert!(parse_proc_stat(p(), "intr 5\n").is_err());
    }

    #[test]
    fn loadavg() {
        let l = parse_loadavg(p(), "0.52 0.58 0.59 1/1234 5678\n").expect("ok");
        assert_eq!((l.load1, l.load5, l.load15), (0.52, 0.58, 0.59));
        assert!(parse_loadavg(p(), "0.52 0.58").is_err());
        assert!(parse_loadavg(p(), "a b c").is_err());
    }

    #[test]
    fn meminfo_available_and_fallback() {
        let text = "MemTotal:        3884096 kB\nMemFree:         2481220 kB\n\
                    MemAvailable:    3242848 kB\nBuffers:           52276 kB\nCached:           826456 kB\n";
        let m = parse_meminfo(p(), text).expect("ok");
        assert_eq!(m.total, 3_884_096 * 1024);
        assert_eq!(m.available, 3_242_848 * 1024);
        assert_eq!(m.used(), (3_884_096 - 3_242_848) * 1024);
        let pct = m.used_pct().expect("pct");
        assert!((pct - 641_248.0 / 3_884_096.0 * 100.0).abs() < 1e-9);

        let old = "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 250 kB\n";
        assert_eq!(parse_meminfo(p(), old).expect("old").available, 400 * 1024);
        assert!(parse_meminfo(p(), "MemFree: 1 kB\n").is_err());
        assert!(parse_meminfo(p(), "MemTotal: lots kB\n").is_err());
    }

    #[test]
    fn uptime() {
        assert_eq!(
            parse_uptime(p(), "350735.47 234388.90\n").expect("ok"),
            350735.47
        );
        assert!(parse_uptime(p(), "").is_err());
        assert!(parse_uptime(p(), "-5 1").is_err());
    }

    #[test]
    fn net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo:   27560     320    0    0    0     0          0         0    27560     320    0    0    0     0       0          0\n  \
eth0:1234567890 900000 0 12 0 0 0 4000 98765432 450000 0 0 0 0 0 0\n";
        let ifaces = parse_net_dev(p(), text).expect("ok");
        assert_eq!(ifaces.len(), 2);
        assert_eq!(ifaces[1].iface, "eth0");
        assert_eq!(ifaces[1].rx_bytes, 1_234_567_890);
        assert_eq!(ifaces[1].tx_bytes, 98_765_432);
        assert!(parse_net_dev(p(), "h1\nh2\neth0: 1 2 3\n").is_err());
    }
}
