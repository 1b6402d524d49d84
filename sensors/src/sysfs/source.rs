//! The `sysfs` [`PolledSource`]: runs the enabled kind scanners off the async runtime, applies
//! the series filter and reports devices that disappeared. Owns only that orchestration; the
//! file formats live in the kind modules.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::hwmon::{HwmonChannel, scan_hwmon};
use super::iio::scan_iio;
use super::thermal::scan_thermal;
use super::w1::scan_w1;
use super::{SeriesFilter, SysfsConfig};
use crate::sample::Sample;
use crate::{BoxFuture, PolledSource, Reading, SourceError, now_ms};

/// What one kind scanner found: the round's readings and errors, plus the device directories
/// it looked at (only those with at least one series the filter keeps), so the caller can
/// notice a device that vanished.
#[derive(Debug, Default)]
pub struct Scan {
    /// Readings and per-sensor errors of this round.
    pub sample: Sample,
    /// Device directories present this round (`…/thermal_zone0`, `…/28-000005e2fdc3`).
    pub devices: Vec<PathBuf>,
}

impl Scan {
    /// Appends `other`.
    pub fn extend(&mut self, other: Scan) {
        self.sample.extend(other.sample);
        self.devices.extend(other.devices);
    }
}

/// The synchronous core of [`SysfsSource`]: reads everything once per call and remembers which
/// devices it has seen, so an unplugged probe is reported as
/// [`SourceError::DeviceMissing`] (naming its directory) on every round until it returns.
#[derive(Debug)]
pub struct SysfsScanner {
    config: SysfsConfig,
    filter: SeriesFilter,
    /// Every device directory seen since start. Kept for the source's lifetime on purpose: a
    /// probe that is gone for a day is as much a fault as one gone for a minute.
    seen: BTreeSet<PathBuf>,
}

impl SysfsScanner {
    /// A scanner for `config` (not validated here; [`SysfsSource::new`] validates).
    pub fn new(config: SysfsConfig) -> Self {
        let filter = config.filter();
        SysfsScanner {
            config,
            filter,
            seen: BTreeSet::new(),
        }
    }

    /// Reads every enabled kind once, stamping readings with `ts_ms`. Blocking (1-Wire probes
    /// take ~750 ms each).
    ///
    /// The round's errors include one [`SourceError::DeviceMissing`] per device seen before
    /// but absent now, and, when nothing at all was found, one naming the root, because a
    /// `sysfs` source that reads nothing is misconfigured.
    pub fn scan(&mut self, ts_ms: i64) -> Sample {
        let root = &self.config.root;
        let mut scan = Scan::default();
        if self.config.thermal {
            scan.extend(scan_thermal(root, ts_ms, &self.filter));
        }
        if self.config.hwmon {
            scan.extend(scan_hwmon(root, ts_ms, &HwmonChannel::ALL, &self.filter));
        }
        if self.config.w1 {
            scan.extend(scan_w1(root, ts_ms, &self.filter));
        }
        if self.config.iio {
            scan.extend(scan_iio(root, ts_ms, &self.filter));
        }

        let present: BTreeSet<PathBuf> = scan.devices.into_iter().collect();
        for gone in self.seen.difference(&present) {
            scan.sample.errors.push(SourceError::DeviceMissing {
                device: gone.display().to_string(),
                detail: "was present earlier; unplugged, or its driver was unloaded".into(),
            });
        }
        self.seen.extend(present);

        if scan.sample.is_empty() {
            scan.sample.errors.push(SourceError::DeviceMissing {
                device: root.display().to_string(),
                detail: format!("no sensors found ({})", self.enabled_kinds()),
            });
        }
        scan.sample
    }

    fn enabled_kinds(&self) -> String {
        let c = &self.config;
        let kinds: Vec<&str> = [
            (c.thermal, "thermal"),
            (c.hwmon, "hwmon"),
            (c.w1, "w1"),
            (c.iio, "iio"),
        ]
        .into_iter()
        .filter_map(|(on, kind)| on.then_some(kind))
        .collect();
        let filtered = if c.include.is_empty() {
            ""
        } else {
            " with include filter"
        };
        format!("looked for {}{filtered}", kinds.join(", "))
    }
}

/// Reads thermal zones, hwmon, 1-Wire probes and IIO devices under a sysfs root.
///
/// Partial failures (one probe with a bad CRC) keep the other readings and are logged at
/// `debug`; [`last_errors`](Self::last_errors) shows them for status pages. All readings of a
/// round carry the round's start time, even when 1-Wire probes make the round take seconds.
#[derive(Debug)]
pub struct SysfsSource {
    name: String,
    /// The sysfs root, named in errors that concern the whole source.
    root: PathBuf,
    scanner: Arc<Mutex<SysfsScanner>>,
    last_errors: Vec<String>,
}

impl SysfsSource {
    /// Validates `config` and builds the source.
    pub fn new(config: SysfsConfig) -> Result<Self, SourceError> {
        config.validate()?;
        Ok(SysfsSource {
            name: config.name.clone().unwrap_or_else(|| "sysfs".into()),
            root: config.root.clone(),
            scanner: Arc::new(Mutex::new(SysfsScanner::new(config))),
            last_errors: Vec::new(),
        })
    }

    /// Reads once on the calling thread, with readings and errors kept apart. Blocking; the
    /// async [`PolledSource::sample`] runs this on tokio's blocking pool.
    pub fn sample_blocking(&mut self, ts_ms: i64) -> Sample {
        let sample = lock(&self.scanner).scan(ts_ms);
        self.remember(&sample);
        sample
    }

    /// The errors of the previous round, rendered, for status output.
    pub fn last_errors(&self) -> &[String] {
        &self.last_errors
    }

    fn remember(&mut self, sample: &Sample) {
        self.last_errors = sample.errors.iter().map(ToString::to_string).collect();
    }
}

/// Locks the scanner; a panic in an earlier round leaves only the `seen` set possibly stale,
/// which is harmless, so a poisoned lock is taken over rather than failing forever.
fn lock(scanner: &Mutex<SysfsScanner>) -> std::sync::MutexGuard<'_, SysfsScanner> {
    scanner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl PolledSource for SysfsSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn sample(&mut self) -> BoxFuture<'_, Result<Vec<Reading>, SourceError>> {
        Box::pin(async move {
            let scanner = Arc::clone(&self.scanner);
            let ts_ms = now_ms();
            // 1-Wire reads block for ~750 ms per probe; keep them off the runtime's workers.
            let sample = tokio::task::spawn_blocking(move || lock(&scanner).scan(ts_ms))
                .await
                .map_err(|e| SourceError::Io {
                    path: self.root.clone(),
                    source: std::io::Error::other(format!("sysfs scan task failed: {e}")),
                })?;
            self.remember(&sample);
            sample.into_result(&self.name)
        })
    }
}
