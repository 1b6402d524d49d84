//! Configuration of the `sysfs` source and its series filter. Owns the keys of a
//! `kind = "sysfs"` table, their defaults and validation; it must not read sysfs.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::SourceError;
use crate::config::{config_error, validate_interval, validate_name};

/// Default sampling interval of the `sysfs` source.
pub const DEFAULT_SYSFS_INTERVAL: Duration = Duration::from_secs(10);

/// Most `include` patterns accepted; the filter runs for every channel of every round.
const MAX_INCLUDE: usize = 256;

/// A `kind = "sysfs"` source: thermal zones, hwmon, 1-Wire probes and IIO devices under a
/// sysfs root.
///
/// | key | default | meaning |
/// | --- | --- | --- |
/// | `name` | `"sysfs"` | instance name for status and metrics |
/// | `interval` | `"10s"` | sampling interval (100ms…24h); allow ~0.75 s per 1-Wire probe |
/// | `root` | `"/sys"` | sysfs mount point; tests point it at a fixture tree |
/// | `thermal` | `true` | read `class/thermal/thermal_zone*` |
/// | `hwmon` | `true` | read `class/hwmon/hwmon*` |
/// | `w1` | `true` | read `bus/w1/devices/<family>-*/w1_slave` |
/// | `iio` | `true` | read `bus/iio/devices/iio:device*` |
/// | `include` | `[]` (all) | series filters: a prefix (`"w1."`) or a `*` glob (`"hwmon.*.temp*"`) |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SysfsConfig {
    /// Instance name; defaults to `sysfs`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Sampling interval.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// The sysfs mount point.
    pub root: PathBuf,
    /// Read thermal zones.
    pub thermal: bool,
    /// Read hwmon devices.
    pub hwmon: bool,
    /// Read 1-Wire temperature probes.
    pub w1: bool,
    /// Read IIO devices.
    pub iio: bool,
    /// Series filters; empty means every series. Excluded sensors are not even read.
    pub include: Vec<String>,
}

impl Default for SysfsConfig {
    fn default() -> Self {
        SysfsConfig {
            name: None,
            interval: DEFAULT_SYSFS_INTERVAL,
            root: PathBuf::from("/sys"),
            thermal: true,
            hwmon: true,
            w1: true,
            iio: true,
            include: Vec::new(),
        }
    }
}

impl SysfsConfig {
    /// A config reading every kind under `root`, with defaults otherwise.
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        SysfsConfig {
            root: root.into(),
            ..SysfsConfig::default()
        }
    }

    /// Checks every key; errors name it (`root`, `include[2]`, …).
    pub fn validate(&self) -> Result<(), SourceError> {
        validate_name(self.name.as_deref())?;
        validate_interval(self.interval)?;
        if self.root.as_os_str().is_empty() {
            return Err(config_error(
                "root",
                "must not be empty (the default is /sys)",
            ));
        }
        if !(self.thermal || self.hwmon || self.w1 || self.iio) {
            return Err(config_error(
                "thermal",
                "thermal, hwmon, w1 and iio are all false; enable at least one",
            ));
        }
        if self.include.len() > MAX_INCLUDE {
            return Err(config_error(
                "include",
                format!("{} patterns; at most {MAX_INCLUDE}", self.include.len()),
            ));
        }
        for (i, pattern) in self.include.iter().enumerate() {
            if pattern.is_empty() || pattern.chars().any(char::is_whitespace) {
                return Err(config_error(
                    format!("include[{i}]"),
                    format!("{pattern:?} must be non-empty and contain no whitespace"),
                ));
            }
        }
        Ok(())
    }

    /// The series filter built from `include`.
    pub fn filter(&self) -> SeriesFilter {
        SeriesFilter::new(self.include.clone())
    }
}

/// Decides which series a source reads. A pattern without `*` is a prefix (`w1.` keeps every
/// 1-Wire probe); with `*`, it must match the whole name, `*` standing for any run of
/// characters (`hwmon.*.temp*`). No patterns means everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeriesFilter {
    patterns: Vec<String>,
}

impl SeriesFilter {
    /// A filter from `include` patterns.
    pub fn new(patterns: Vec<String>) -> Self {
        SeriesFilter { patterns }
    }

    /// A filter that keeps every series.
    pub fn all() -> Self {
        SeriesFilter::default()
    }

    /// True when `series` is kept.
    pub fn matches(&self, series: &str) -> bool {
        self.patterns.is_empty()
            || self.patterns.iter().any(|p| {
                if p.contains('*') {
                    glob_match(p.as_bytes(), series.as_bytes())
                } else {
                    series.starts_with(p.as_str())
                }
            })
    }
}

/// Whole-string match with `*` as the only wildcard. Iterative with one backtrack point, so it
/// is linear-ish and cannot blow the stack on hostile patterns.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_prefix_and_glob() {
        let f = SeriesFilter::new(vec!["w1.".into(), "hwmon.*.temp*".into()]);
        assert!(f.matches("w1.28-000005e2fdc3"));
        assert!(f.matches("hwmon.cpu_thermal.temp1"));
        assert!(f.matches("hwmon.coretemp.temp12"));
        assert!(!f.matches("hwmon.nct6775.in0"));
        assert!(!f.matches("thermal.cpu-thermal"));
        assert!(SeriesFilter::all().matches("anything"));
        let exact = SeriesFilter::new(vec!["iio.*.temp".into()]);
        assert!(exact.matches("iio.bme280.temp"));
        assert!(!exact.matches("iio.bme280.temp_ambient"));
    }

    #[test]
    fn defaults_are_valid_and_documented() {
        let c = SysfsConfig::default();
        assert_eq!(c.root, PathBuf::from("/sys"));
        assert_eq!(c.interval, Duration::from_secs(10));
        assert!(c.thermal && c.hwmon && c.w1 && c.iio);
        c.validate().expect("defaults valid");
    }

    #[test]
    fn validation_names_the_key() {
        let key_of = |c: SysfsConfig| match c.validate() {
            Err(SourceError::Config { key, .. }) => key,
            other => panic!("expected Config error, got {other:?}"),
        };
        let c = SysfsConfig {
            root: PathBuf::new(),
            ..SysfsConfig::default()
        };
        assert_eq!(key_of(c), "root");
        let c = SysfsConfig {
            thermal: false,
            hwmon: false,
            w1: false,
            iio: false,
            ..SysfsConfig::default()
        };
        assert_eq!(key_of(c), "thermal");
        let c = SysfsConfig {
            include: vec!["w1.".into(), "".into()],
            ..SysfsConfig::default()
        };
        assert_eq!(key_of(c), "include[1]");
        let c = SysfsConfig {
            interval: Duration::ZERO,
            ..SysfsConfig::default()
        };
        assert_eq!(key_of(c), "interval");
    }
}
