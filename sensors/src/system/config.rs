//! Configuration of the zero-config `system` source. Owns the keys of a `kind = "system"`
//! table, their defaults and validation; it must not read anything.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::SourceError;
use crate::config::{config_error, validate_interval, validate_name};

/// Default sampling interval of the `system` source.
pub const DEFAULT_SYSTEM_INTERVAL: Duration = Duration::from_secs(10);

/// A `kind = "system"` source: host CPU, load, memory, disk, uptime, network counters and
/// temperatures. Every key has a default, so `kind = "system"` alone works.
///
/// | key | default | meaning |
/// | --- | --- | --- |
/// | `name` | `"system"` | instance name for status and metrics |
/// | `interval` | `"10s"` | sampling interval (100ms…24h) |
/// | `proc_root` | `"/proc"` | procfs mount point |
/// | `sysfs_root` | `"/sys"` | sysfs mount point, for thermal zones and hwmon |
/// | `disk_path` | `"/"` | any path on the file system whose usage is reported |
/// | `temperatures` | `true` | report every thermal zone and hwmon temperature; turn off when a `sysfs` source reads them already |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SystemConfig {
    /// Instance name; defaults to `system`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Sampling interval.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// The procfs mount point.
    pub proc_root: PathBuf,
    /// The sysfs mount point.
    pub sysfs_root: PathBuf,
    /// A path on the file system to report usage of.
    pub disk_path: PathBuf,
    /// Whether to report thermal-zone and hwmon temperatures.
    pub temperatures: bool,
}

impl Default for SystemConfig {
    fn default() -> Self {
        SystemConfig {
            name: None,
            interval: DEFAULT_SYSTEM_INTERVAL,
            proc_root: PathBuf::from("/proc"),
            sysfs_root: PathBuf::from("/sys"),
            disk_path: PathBuf::from("/"),
            temperatures: true,
        }
    }
}

impl SystemConfig {
    /// Checks every key; errors name it.
    pub fn validate(&self) -> Result<(), SourceError> {
        validate_name(self.name.as_deref())?;
        validate_interval(self.interval)?;
        // Relative paths would resolve against the service's working directory, which under
        // systemd is `/` — almost never what the user meant.
        absolute("proc_root", &self.proc_root)?;
        absolute("sysfs_root", &self.sysfs_root)?;
        absolute("disk_path", &self.disk_path)?;
        Ok(())
    }
}

fn absolute(key: &str, path: &Path) -> Result<(), SourceError> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(config_error(
            key,
            format!("{} must be an absolute path", path.display()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = SystemConfig::default();
        assert_eq!(c.proc_root, PathBuf::from("/proc"));
        assert_eq!(c.sysfs_root, PathBuf::from("/sys"));
        assert_eq!(c.disk_path, PathBuf::from("/"));
        assert_eq!(c.interval, Duration::from_secs(10));
        assert!(c.temperatures);
        c.validate().expect("defaults valid");
    }

    #[test]
    fn relative_paths_name_the_key() {
        let c = SystemConfig {
            disk_path: PathBuf::from("data"),
            ..SystemConfig::default()
        };
        match c.validate() {
            Err(SourceError::Config { key, detail }) => {
                assert_eq!(key, "disk_path");
                assert!(detail.contains("data"), "{detail}");
            }
            other => panic!("expected Config error, got {other:?}"),
        }
    }
}
