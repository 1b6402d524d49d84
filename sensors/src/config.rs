//! The `[[sources]]` configuration the agent reads: one tagged enum over every source kind, plus
//! the validation helpers every kind shares (name, interval). Owns the TOML shape
//! (`kind = "system"`, …); each kind's own struct lives in its module. It must not build
//! sources (see [`crate::factory`]) or know how the agent layers config files.
//!
//! ```toml
//! [[sources]]
//! kind = "system"            # zero-config default: cpu, memory, disk, uptime, net, temperatures
//!
//! [[sources]]
//! kind = "sysfs"
//! name = "greenhouse-probes"
//! interval = "30s"
//! include = ["w1."]          # only the 1-Wire probes
//!
//! [[sources]]
//! kind = "sim"
//! count = 100                # sim.0 … sim.99 for load tests
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::SourceError;
use crate::modbus::{ModbusRtuConfig, ModbusTcpConfig};
use crate::serial::SerialConfig;
use crate::sim::SimConfig;
use crate::sysfs::SysfsConfig;
use crate::system::SystemConfig;

/// Shortest sampling interval accepted: below this, sysfs and /proc reads would dominate a
/// Pi Zero's CPU and the store would grow by megabytes per hour per series.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// Longest sampling interval accepted (one day); longer is almost always a typo (`10h` for
/// `10s`), and the scheduler's health checks assume a source speaks at least daily.
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// Longest source name; names appear in metrics labels and status lines.
pub const MAX_NAME_LEN: usize = 64;

/// One configured source. In TOML, an entry of the `[[sources]]` array with a `kind` key;
/// unknown keys are errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceConfig {
    /// `kind = "system"`: host metrics, see [`SystemConfig`].
    System(SystemConfig),
    /// `kind = "sysfs"`: thermal, hwmon, 1-Wire and IIO sensors, see [`SysfsConfig`].
    Sysfs(SysfsConfig),
    /// `kind = "sim"`: simulated series, see [`SimConfig`].
    Sim(SimConfig),
    /// `kind = "serial"`: a serial device speaking a line protocol, see [`SerialConfig`].
    Serial(SerialConfig),
    /// `kind = "modbus_tcp"`: a Modbus TCP register map, see [`ModbusTcpConfig`].
    ModbusTcp(ModbusTcpConfig),
    /// `kind = "modbus_rtu"`: a Modbus RTU register map, see [`ModbusRtuConfig`].
    ModbusRtu(ModbusRtuConfig),
}

impl SourceConfig {
    /// The `kind` tag as written in TOML.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::System(_) => "system",
            SourceConfig::Sysfs(_) => "sysfs",
            SourceConfig::Sim(_) => "sim",
            SourceConfig::Serial(_) => "serial",
            SourceConfig::ModbusTcp(_) => "modbus_tcp",
            SourceConfig::ModbusRtu(_) => "modbus_rtu",
        }
    }

    /// The instance name: the configured `name`, or the kind when none is set.
    pub fn name(&self) -> &str {
        let configured = match self {
            SourceConfig::System(c) => c.name.as_deref(),
            SourceConfig::Sysfs(c) => c.name.as_deref(),
            SourceConfig::Sim(c) => c.name.as_deref(),
            SourceConfig::Serial(c) => c.name.as_deref(),
            SourceConfig::ModbusTcp(c) => c.name.as_deref(),
            SourceConfig::ModbusRtu(c) => c.name.as_deref(),
        };
        configured.unwrap_or(self.kind())
    }

    /// The sampling interval of a polled source; `None` for streaming kinds, which speak when
    /// their device does.
    pub fn interval(&self) -> Option<Duration> {
        match self {
            SourceConfig::System(c) => Some(c.interval),
            SourceConfig::Sysfs(c) => Some(c.interval),
            SourceConfig::Sim(c) => Some(c.interval),
            SourceConfig::Serial(_) => None,
            SourceConfig::ModbusTcp(c) => Some(c.interval),
            SourceConfig::ModbusRtu(c) => Some(c.interval),
        }
    }

    /// Checks every value. Error keys are relative to the source's table (`interval`,
    /// `series[1].period`); use [`validate_in`](Self::validate_in) to get full paths.
    pub fn validate(&self) -> Result<(), SourceError> {
        match self {
            SourceConfig::System(c) => c.validate(),
            SourceConfig::Sysfs(c) => c.validate(),
            SourceConfig::Sim(c) => c.validate(),
            SourceConfig::Serial(c) => c.validate(),
            SourceConfig::ModbusTcp(c) => c.validate(),
            SourceConfig::ModbusRtu(c) => c.validate(),
        }
    }

    /// [`validate`](Self::validate) with every error key prefixed, e.g. `sources[2]` turns
    /// `interval` into `sources[2].interval`.
    pub fn validate_in(&self, prefix: &str) -> Result<(), SourceError> {
        self.validate().map_err(|e| prefix_key(e, prefix))
    }
}

/// Prefixes the key of a [`SourceError::Config`] with `prefix.`; other errors pass unchanged.
pub fn prefix_key(error: SourceError, prefix: &str) -> SourceError {
    match error {
        SourceError::Config { key, detail } => SourceError::Config {
            key: format!("{prefix}.{key}"),
            detail,
        },
        other => other,
    }
}

/// A [`SourceError::Config`] for `key`.
pub(crate) fn config_error(key: impl Into<String>, detail: impl Into<String>) -> SourceError {
    SourceError::Config {
        key: key.into(),
        detail: detail.into(),
    }
}

/// Checks an optional instance `name`: 1–64 characters of `A–Z a–z 0–9 _ - .`, because it
/// becomes a metrics label and a status key.
pub(crate) fn validate_name(name: Option<&str>) -> Result<(), SourceError> {
    let Some(name) = name else {
        return Ok(());
    };
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(config_error(
            "name",
            format!("must be 1 to {MAX_NAME_LEN} characters, got {}", name.len()),
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(config_error(
            "name",
            format!("{name:?} contains {bad:?}; use letters, digits, `_`, `-` or `.`"),
        ));
    }
    Ok(())
}

/// Longest unit a store keeps for a series, in bytes (equal to the store's limit, checked by
/// a test in the agent): a longer configured unit would make every reading invalid.
pub const MAX_UNIT_BYTES: usize = 32;

/// Checks a configured `unit` at `key`: at most [`MAX_UNIT_BYTES`] bytes.
pub(crate) fn validate_unit(key: &str, unit: &str) -> Result<(), SourceError> {
    if unit.len() > MAX_UNIT_BYTES {
        return Err(config_error(
            key,
            format!(
                "{unit:?} is {} bytes; a unit may have at most {MAX_UNIT_BYTES}, or every reading \
                 of the series would be refused",
                unit.len()
            ),
        ));
    }
    Ok(())
}

/// Checks a sampling `interval` against [`MIN_INTERVAL`]…[`MAX_INTERVAL`].
pub(crate) fn validate_interval(interval: Duration) -> Result<(), SourceError> {
    if interval < MIN_INTERVAL || interval > MAX_INTERVAL {
        return Err(config_error(
            "interval",
            format!(
                "{} is out of range; use {} to {}",
                humantime::format_duration(interval),
                humantime::format_duration(MIN_INTERVAL),
                humantime::format_duration(MAX_INTERVAL),
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<SourceConfig, String> {
        toml::from_str::<SourceConfig>(toml_text).map_err(|e| e.to_string())
    }

    /// A configured unit no store would keep would make every reading of its series
    /// invalid: refused at config time, naming the key.
    #[test]
    fn units_longer_than_a_store_keeps_are_refused_naming_the_key() {
        let long = "u".repeat(MAX_UNIT_BYTES + 1);
        let sim = parse(&format!(
            "kind = \"sim\"\nseries = [{{ name = \"t\", unit = \"{long}\" }}]"
        ))
        .expect("sim");
        let err = sim.validate_in("sources[0]").unwrap_err();
        assert!(
            matches!(&err, SourceError::Config { key, .. } if key == "sources[0].series[0].unit"),
            "{err:?}"
        );
        let ok = parse(&format!(
            "kind = \"sim\"\nseries = [{{ name = \"t\", unit = \"{}\" }}]",
            "u".repeat(MAX_UNIT_BYTES)
        ))
        .expect("sim");
        ok.validate().expect("32 bytes are fine");
    }

    #[test]
    fn kinds_parse_with_defaults() {
        let system = parse("kind = \"system\"").expect("system");
        assert_eq!(system.kind(), "system");
        assert_eq!(system.name(), "system");
        assert_eq!(system.interval(), Some(Duration::from_secs(10)));
        system.validate().expect("defaults are valid");

        let sysfs =
            parse("kind = \"sysfs\"\nname = \"probes\"\ninterval = \"30s\"").expect("sysfs");
        assert_eq!(sysfs.name(), "probes");
        assert_eq!(sysfs.interval(), Some(Duration::from_secs(30)));

        let sim = parse("kind = \"sim\"").expect("sim");
        assert_eq!(sim.interval(), Some(Duration::from_secs(1)));
        sim.validate().expect("sim defaults are valid");
    }

    #[test]
    fn unknown_keys_and_kinds_are_errors() {
        let err = parse("kind = \"system\"\nintervall = \"5s\"").expect_err("typo");
        assert!(err.contains("intervall"), "{err}");
        let err = parse("kind = \"sysfs\"\nw1 = true\nbogus = 1").expect_err("unknown");
        assert!(err.contains("bogus"), "{err}");
        let err = parse("kind = \"gps\"").expect_err("kind");
        assert!(err.contains("gps"), "{err}");
        let err = parse("interval = \"5s\"").expect_err("no kind");
        assert!(err.contains("kind"), "{err}");
    }

    #[test]
    fn bad_interval_is_a_parse_error_or_names_the_key() {
        let err = parse("kind = \"system\"\ninterval = \"soon\"").expect_err("not a duration");
        assert!(err.contains("soon") || err.contains("interval"), "{err}");

        let fast = parse("kind = \"system\"\ninterval = \"10ms\"").expect("parses");
        match fast.validate_in("sources[0]") {
            Err(SourceError::Config { key, detail }) => {
                assert_eq!(key, "sources[0].interval");
                assert!(detail.contains("10ms"), "{detail}");
            }
            other => panic!("expected Config error, got {other:?}"),
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name(None).is_ok());
        assert!(validate_name(Some("greenhouse-1.probes")).is_ok());
        for bad in ["", "has space", "ünï", &"x".repeat(65)] {
            match validate_name(Some(bad)) {
                Err(SourceError::Config { key, .. }) => assert_eq!(key, "name"),
                other => panic!("{bad:?}: expected Config error, got {other:?}"),
            }
        }
    }

    #[test]
    fn round_trips_through_toml() {
        let original =
            parse("kind = \"sysfs\"\nroot = \"/tmp/sys\"\nw1 = false\ninclude = [\"thermal.\"]")
                .expect("parse");
        let text = toml::to_string(&original).expect("serialize");
        assert!(text.contains("kind = \"sysfs\""), "{text}");
        assert_eq!(parse(&text).expect("reparse"), original);
    }
}
