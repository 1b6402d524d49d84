//! The `kind = "serial"` source section, and the line settings (baud, parity, …) it shares with
//! Modbus RTU.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::SourceError;
use crate::config::{config_error, validate_name};
use crate::decode::{DecoderOptions, LineFormat, clean_field};

/// Parity bit setting of a serial line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    /// No parity bit (8N1, the common case).
    #[default]
    None,
    /// Odd parity.
    Odd,
    /// Even parity (the Modbus RTU standard's default).
    Even,
}

/// A serial device sending a line protocol.
///
/// ```toml
/// [[sources]]
/// kind = "serial"
/// name = "greenhouse"
/// port = "/dev/ttyUSB0"
/// baud = 115200
/// format = "csv"
/// csv_columns = ["ts", "temp", "_", "hum"]
/// units = { temp = "°C", hum = "%" }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialConfig {
    /// Source name for status and metrics (letters, digits, `_`, `-`, `.`); default `serial`.
    #[serde(default)]
    pub name: Option<String>,
    /// Device path, e.g. `/dev/ttyUSB0` or a stable `/dev/serial/by-id/…` link (preferred: USB
    /// numbering changes across reboots). May be absent at start; it is retried.
    pub port: PathBuf,
    /// Line speed in baud. Default 9600.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Data bits per character, 5–8. Default 8.
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    /// `none`, `odd` or `even`. Default `none`.
    #[serde(default)]
    pub parity: Parity,
    /// Stop bits, 1 or 2. Default 1.
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// Line protocol: `json_lines`, `csv`, `key_value` or `nmea`.
    pub format: LineFormat,
    /// Series prefix (`<prefix>.<field>`; empty for none). Default: `gps` for NMEA, otherwise
    /// `name`, otherwise `serial`.
    #[serde(default)]
    pub series_prefix: Option<String>,
    /// Unit per field name, e.g. `{ temp = "°C" }`. Default none.
    #[serde(default)]
    pub units: BTreeMap<String, String>,
    /// CSV only: field separator, one ASCII character. Default `,`.
    #[serde(default)]
    pub csv_delimiter: Option<char>,
    /// CSV only: column names in order; `ts` is the timestamp, `_` skips a column. Default:
    /// the device's first line is a header.
    #[serde(default)]
    pub csv_columns: Option<Vec<String>>,
    /// Longest accepted line in bytes; longer lines are discarded and reported. Default 4096.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// Longest wait between attempts to reopen a missing or unplugged device (backoff starts
    /// at 250 ms and doubles). Default `30s`.
    #[serde(default = "default_reopen_backoff_max", with = "humantime_serde")]
    pub reopen_backoff_max: Duration,
}

fn default_baud() -> u32 {
    9600
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}
fn default_max_line_bytes() -> usize {
    crate::decode::DEFAULT_MAX_LINE_BYTES
}
fn default_reopen_backoff_max() -> Duration {
    Duration::from_secs(30)
}

/// Checks that `value`, which becomes part of series names, is already in the clean form
/// ([`clean_field`]): lowercase letters, digits, `_`, `-`, segments separated by `.`.
pub(crate) fn validate_series_part(key: &str, value: &str) -> Result<(), SourceError> {
    match clean_field(value) {
        Some(clean) if clean == value => Ok(()),
        suggestion => Err(config_error(
            key,
            format!(
                "`{value}` cannot be part of a series name; use lowercase letters, digits, `_`, \
                 `-`, and `.` between levels{}",
                suggestion
                    .map(|s| format!(" (e.g. `{s}`)"))
                    .unwrap_or_default()
            ),
        )),
    }
}

/// Checks the settings every serial line has, naming the offending key.
pub(crate) fn validate_line(
    port: &std::path::Path,
    baud: u32,
    data_bits: u8,
    stop_bits: u8,
) -> Result<(), SourceError> {
    if port.as_os_str().is_empty() {
        return Err(config_error(
            "port",
            "must name a device, e.g. /dev/ttyUSB0",
        ));
    }
    if !(50..=4_000_000).contains(&baud) {
        return Err(config_error(
            "baud",
            format!("{baud} is not a baud rate (50–4000000)"),
        ));
    }
    if !(5..=8).contains(&data_bits) {
        return Err(config_error(
            "data_bits",
            format!("{data_bits} is not 5, 6, 7 or 8"),
        ));
    }
    if !(1..=2).contains(&stop_bits) {
        return Err(config_error(
            "stop_bits",
            format!("{stop_bits} is not 1 or 2"),
        ));
    }
    Ok(())
}

/// The tokio-serial builder for validated line settings.
pub(crate) fn port_builder(
    port: &std::path::Path,
    baud: u32,
    data_bits: u8,
    parity: Parity,
    stop_bits: u8,
) -> tokio_serial::SerialPortBuilder {
    use tokio_serial::{DataBits, FlowControl, StopBits};
    let data_bits = match data_bits {
        5 => DataBits::Five,
        6 => DataBits::Six,
        7 => DataBits::Seven,
        _ => DataBits::Eight,
    };
    let parity = match parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Odd => tokio_serial::Parity::Odd,
        Parity::Even => tokio_serial::Parity::Even,
    };
    let stop_bits = if stop_bits == 2 {
        StopBits::Two
    } else {
        StopBits::One
    };
    tokio_serial::new(port.to_string_lossy(), baud)
        .data_bits(data_bits)
        .parity(parity)
        .stop_bits(stop_bits)
        .flow_control(FlowControl::None)
}

impl SerialConfig {
    /// A config for `port` speaking `format`, everything else at its default.
    pub fn new(port: impl Into<PathBuf>, format: LineFormat) -> Self {
        SerialConfig {
            name: None,
            port: port.into(),
            baud: default_baud(),
            data_bits: default_data_bits(),
            parity: Parity::None,
            stop_bits: default_stop_bits(),
            format,
            series_prefix: None,
            units: BTreeMap::new(),
            csv_delimiter: None,
            csv_columns: None,
            max_line_bytes: default_max_line_bytes(),
            reopen_backoff_max: default_reopen_backoff_max(),
        }
    }

    /// The source name: `name`, or the kind, `serial` (as [`crate::SourceConfig::name`]).
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| "serial".to_owned())
    }

    /// The series prefix in effect (see [`SerialConfig::series_prefix`]).
    pub fn effective_prefix(&self) -> String {
        if let Some(prefix) = &self.series_prefix {
            return prefix.clone();
        }
        let from_name = match self.format {
            LineFormat::Nmea => None,
            // Names may hold capitals (`Greenhouse-1`); series names do not.
            _ => self.name.as_deref().and_then(clean_field),
        };
        from_name.map_or_else(
            || self.format.default_prefix().to_owned(),
            |n| n.into_owned(),
        )
    }

    /// Options for this device's decoder.
    pub fn decoder_options(&self) -> DecoderOptions {
        let mut opts =
            DecoderOptions::new(self.port.display().to_string(), self.effective_prefix());
        opts.max_line_bytes = self.max_line_bytes;
        opts.units = self.units.clone();
        // validate() guarantees an ASCII delimiter; `,` covers an unvalidated config.
        opts.csv_delimiter = self
            .csv_delimiter
            .and_then(|c| u8::try_from(c).ok())
            .unwrap_or(b',');
        opts.csv_columns = self.csv_columns.clone();
        opts
    }

    /// Checks every value, returning [`SourceError::Config`] naming the first bad key.
    pub fn validate(&self) -> Result<(), SourceError> {
        validate_name(self.name.as_deref())?;
        validate_line(&self.port, self.baud, self.data_bits, self.stop_bits)?;
        if let Some(prefix) = self.series_prefix.as_deref()
            && !prefix.is_empty()
        {
            validate_series_part("series_prefix", prefix)?;
        }
        for (field, unit) in &self.units {
            crate::config::validate_unit(&format!("units.{field}"), unit)?;
        }
        if !(16..=1 << 20).contains(&self.max_line_bytes) {
            return Err(config_error(
                "max_line_bytes",
                "must be between 16 and 1048576",
            ));
        }
        if self.reopen_backoff_max < Duration::from_millis(10) {
            return Err(config_error("reopen_backoff_max", "must be at least 10ms"));
        }
        let csv = self.format == LineFormat::Csv;
        if let Some(d) = self.csv_delimiter {
            if !csv {
                return Err(config_error(
                    "csv_delimiter",
                    "only applies to format = \"csv\"",
                ));
            }
            if !d.is_ascii() || matches!(d, '"' | '\r' | '\n') || d.is_ascii_alphanumeric() {
                return Err(config_error(
                    "csv_delimiter",
                    format!("{d:?} cannot separate fields; use an ASCII punctuation or tab"),
                ));
            }
        }
        if let Some(columns) = &self.csv_columns {
            if !csv {
                return Err(config_error(
                    "csv_columns",
                    "only applies to format = \"csv\"",
                ));
            }
            validate_columns(columns)?;
        }
        Ok(())
    }
}

fn validate_columns(columns: &[String]) -> Result<(), SourceError> {
    if columns.is_empty() {
        return Err(config_error("csv_columns", "must name at least one column"));
    }
    let mut seen = BTreeSet::new();
    for column in columns {
        if column.is_empty() {
            return Err(config_error(
                "csv_columns",
                "empty column name; use \"_\" to skip one",
            ));
        }
        if column != "_" && column != "ts" {
            validate_series_part("csv_columns", column)?;
        }
        if column != "_" && !seen.insert(column.as_str()) {
            return Err(config_error(
                "csv_columns",
                format!("column `{column}` appears twice"),
            ));
        }
    }
    if seen.len() == usize::from(seen.contains("ts")) {
        return Err(config_error(
            "csv_columns",
            "no value column (only `ts` and `_`)",
        ));
    }
    Ok(())
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
