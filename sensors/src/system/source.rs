//! The `system` [`PolledSource`]: what `kdelta start` records with no configuration at all.
//! Owns the `system.*` series names and the CPU-usage state between rounds; parsing lives in
//! [`procfs`](super::procfs), disk arithmetic in [`disk`](super::disk), temperatures in
//! [`sysfs`](crate::sysfs). It must not write anything.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use super::SystemConfig;
use super::disk::disk_usage;
use super::procfs::{
    CpuTimes, parse_loadavg, parse_meminfo, parse_net_dev, parse_proc_stat, parse_uptime,
};
use crate::sample::{Sample, sanitize_segment};
use crate::sysfs::{HwmonChannel, SeriesFilter, scan_hwmon, scan_thermal};
use crate::{BoxFuture, PolledSource, Reading, SourceError, now_ms};

/// `/proc/stat` grows with the core count and `/proc/net/dev` with interfaces; 1 MiB covers
/// hundreds of each while bounding what a wrong `proc_root` can make us read.
const MAX_PROC_BYTES: u64 = 1024 * 1024;

fn read_proc(path: &Path) -> Result<String, SourceError> {
    let mut text = String::new();
    let result =
        fs::File::open(path).and_then(|f| f.take(MAX_PROC_BYTES).read_to_string(&mut text));
    match result {
        Ok(_) => Ok(text),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Err(SourceError::DeviceMissing {
            device: path.display().to_string(),
            detail: "not found (is procfs mounted at proc_root?)".into(),
        }),
        Err(source) => Err(SourceError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The synchronous core of [`SystemSource`]: reads everything once per call and keeps the
/// previous `/proc/stat` counters for the CPU-usage delta.
#[derive(Debug)]
pub struct SystemScanner {
    config: SystemConfig,
    /// Counters from the previous round; usage needs two samples, so the first round emits no
    /// `system.cpu_usage`.
    prev_cpu: Option<CpuTimes>,
}

impl SystemScanner {
    /// A scanner for `config` (not validated here; [`SystemSource::new`] validates).
    pub fn new(config: SystemConfig) -> Self {
        SystemScanner {
            config,
            prev_cpu: None,
        }
    }

    /// Reads every metric once, stamping readings with `ts_ms`. Each failing file adds one
    /// error and the rest still read. Missing thermal zones or hwmon devices are not errors
    /// (most VMs and containers have none).
    pub fn scan(&mut self, ts_ms: i64) -> Sample {
        let mut sample = Sample::new();
        let proc = self.config.proc_root.clone();
        let mut push = |series: &str, value: f64, unit: Option<&str>| {
            sample
                .readings
                .push(Reading::new(series, ts_ms, value, unit));
        };
        let mut errors = Vec::new();

        let stat = proc.join("stat");
        match read_proc(&stat).and_then(|t| parse_proc_stat(&stat, &t)) {
            Ok(cpu) => {
                if let Some(usage) = self.prev_cpu.and_then(|prev| cpu.usage_since(&prev)) {
                    push("system.cpu_usage", usage, Some("%"));
                }
                self.prev_cpu = Some(cpu);
            }
            Err(e) => errors.push(e),
        }

        let loadavg = proc.join("loadavg");
        match read_proc(&loadavg).and_then(|t| parse_loadavg(&loadavg, &t)) {
            Ok(l) => {
                push("system.load1", l.load1, None);
                push("system.load5", l.load5, None);
                push("system.load15", l.load15, None);
            }
            Err(e) => errors.push(e),
        }

        let meminfo = proc.join("meminfo");
        match read_proc(&meminfo).and_then(|t| parse_meminfo(&meminfo, &t)) {
            Ok(m) => {
                push("system.mem_used", m.used() as f64, Some("B"));
                if let Some(pct) = m.used_pct() {
                    push("system.mem_used_pct", pct, Some("%"));
                }
            }
            Err(e) => errors.push(e),
        }

        match disk_usage(&self.config.disk_path) {
            Ok(d) => {
                push("system.disk_used", d.used as f64, Some("B"));
                if let Some(pct) = d.used_pct() {
                    push("system.disk_used_pct", pct, Some("%"));
                }
            }
            Err(e) => errors.push(e),
        }

        let uptime = proc.join("uptime");
        match read_proc(&uptime).and_then(|t| parse_uptime(&uptime, &t)) {
            Ok(secs) => push("system.uptime", secs, Some("s")),
            Err(e) => errors.push(e),
        }

        let net = proc.join("net/dev");
        match read_proc(&net).and_then(|t| parse_net_dev(&net, &t)) {
            Ok(ifaces) => {
                for iface in ifaces.iter().filter(|i| i.iface != "lo") {
                    let Some(name) = sanitize_segment(&iface.iface) else {
                        continue;
                    };
                    let rx = format!("system.net.{name}.rx_bytes");
                    let tx = format!("system.net.{name}.tx_bytes");
                    push(&rx, iface.rx_bytes as f64, Some("B"));
                    push(&tx, iface.tx_bytes as f64, Some("B"));
                }
            }
            Err(e) => errors.push(e),
        }

        sample.errors = errors;
        if self.config.temperatures {
            let root = &self.config.sysfs_root;
            let all = SeriesFilter::all();
            sample.extend(scan_thermal(root, ts_ms, &all).sample);
            sample.extend(scan_hwmon(root, ts_ms, &[HwmonChannel::Temp], &all).sample);
        }
        sample
    }
}

/// Host metrics for zero-config operation. Series:
///
/// | series | unit | from |
/// | --- | --- | --- |
/// | `system.cpu_usage` | % | `/proc/stat` delta (from the second round on) |
/// | `system.load1`, `system.load5`, `system.load15` | — | `/proc/loadavg` |
/// | `system.mem_used`, `system.mem_used_pct` | B, % | `/proc/meminfo` (MemTotal − MemAvailable) |
/// | `system.disk_used`, `system.disk_used_pct` | B, % | `statvfs(disk_path)`, as `df` |
/// | `system.uptime` | s | `/proc/uptime` |
/// | `system.net.<iface>.rx_bytes`, `…tx_bytes` | B | `/proc/net/dev`, `lo` skipped |
/// | `thermal.<type>`, `hwmon.<name>.<label>` | °C | sysfs, when present |
#[derive(Debug)]
pub struct SystemSource {
    name: String,
    proc_root: PathBuf,
    scanner: Arc<Mutex<SystemScanner>>,
    last_errors: Vec<String>,
}

impl SystemSource {
    /// Validates `config` and builds the source.
    pub fn new(config: SystemConfig) -> Result<Self, SourceError> {
        config.validate()?;
        Ok(SystemSource {
            name: config.name.clone().unwrap_or_else(|| "system".into()),
            proc_root: config.proc_root.clone(),
            scanner: Arc::new(Mutex::new(SystemScanner::new(config))),
            last_errors: Vec::new(),
        })
    }

    /// Reads once on the calling thread, with readings and errors kept apart.
    pub fn sample_blocking(&mut self, ts_ms: i64) -> Sample {
        let sample = lock(&self.scanner).scan(ts_ms);
        self.last_errors = sample.errors.iter().map(ToString::to_string).collect();
        sample
    }

    /// The errors of the previous round, rendered, for status output.
    pub fn last_errors(&self) -> &[String] {
        &self.last_errors
    }
}

/// A panic in an earlier round can only have left `prev_cpu` stale (one odd usage figure), so
/// a poisoned lock is taken over.
fn lock(scanner: &Mutex<SystemScanner>) -> std::sync::MutexGuard<'_, SystemScanner> {
    scanner.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PolledSource for SystemSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn sample(&mut self) -> BoxFuture<'_, Result<Vec<Reading>, SourceError>> {
        Box::pin(async move {
            let scanner = Arc::clone(&self.scanner);
            let ts_ms = now_ms();
            // Some hwmon drivers talk I2C or NVMe admin commands on read; keep that off the
            // runtime's workers.
            let sample = tokio::task::spawn_blocking(move || lock(&scanner).scan(ts_ms))
                .await
                .map_err(|e| SourceError::Io {
                    path: self.proc_root.clone(),
                    source: io::Error::other(format!("system scan task failed: {e}")),
                })?;
            self.last_errors = sample.errors.iter().map(ToString::to_string).collect();
            sample.into_result(&self.name)
        })
    }
}
