//! The `kind = "modbus_tcp"` and `kind = "modbus_rtu"` source sections and their register maps.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::SourceError;
use crate::config::{config_error, validate_interval, validate_name};
use crate::serial::{Parity, validate_line, validate_series_part};

/// The Modbus TCP port used when `address` names none.
pub const DEFAULT_TCP_PORT: u16 = 502;

/// Which Modbus table a register lives in, i.e. which read function fetches it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegisterFunction {
    /// Holding registers (function 0x03), 16-bit read/write.
    #[default]
    Holding,
    /// Input registers (0x04), 16-bit read-only.
    Input,
    /// Coils (0x01), single read/write bits.
    Coil,
    /// Discrete inputs (0x02), single read-only bits.
    Discrete,
}

impl RegisterFunction {
    /// True for coils and discrete inputs, which hold bits rather than 16-bit words.
    pub fn is_bit(self) -> bool {
        matches!(self, RegisterFunction::Coil | RegisterFunction::Discrete)
    }
}

/// How the raw register content is interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegisterType {
    /// One register, unsigned.
    U16,
    /// One register, two's complement.
    I16,
    /// Two registers, unsigned.
    U32,
    /// Two registers, two's complement.
    I32,
    /// Two registers, IEEE 754 single precision.
    F32,
    /// A coil or discrete input (0/1), or a register read as 0 = false, anything else = true.
    Bool,
}

impl RegisterType {
    /// How many 16-bit registers (or bits, for coils) one value occupies.
    pub fn width(self) -> u16 {
        match self {
            RegisterType::U32 | RegisterType::I32 | RegisterType::F32 => 2,
            _ => 1,
        }
    }
}

/// Order of the two 16-bit words of a 32-bit value. Bytes within a word are always big-endian,
/// as Modbus defines; devices only disagree about the words.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WordOrder {
    /// High word at the lower address (the Modbus convention, "ABCD").
    #[default]
    Big,
    /// Low word at the lower address ("CDAB", common on meters and PLCs).
    Little,
}

/// One value to read: `value = raw * scale + offset`.
///
/// ```toml
/// registers = [
///   { name = "temp", function = "input", address = 0, type = "i16", scale = 0.1, unit = "°C" },
///   { name = "energy", address = 10, type = "f32", word_order = "little", unit = "kWh" },
///   { name = "pump_on", function = "coil", address = 3 },
/// ]
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterConfig {
    /// Series name under the source's prefix: `<prefix>.<name>`; lowercase letters, digits,
    /// `_`, `-`, `.` between levels.
    pub name: String,
    /// `holding` (default), `input`, `coil` or `discrete`.
    #[serde(default)]
    pub function: RegisterFunction,
    /// Zero-based protocol address (register 40001 in a vendor's table is holding address 0).
    pub address: u16,
    /// `u16`, `i16`, `u32`, `i32`, `f32` or `bool`. Default `u16` for registers, `bool` for
    /// coils and discrete inputs.
    #[serde(default, rename = "type")]
    pub data_type: Option<RegisterType>,
    /// Word order of 32-bit types: `big` (default) or `little`.
    #[serde(default)]
    pub word_order: WordOrder,
    /// Multiplier applied to the raw value. Default 1.
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// Added after scaling. Default 0.
    #[serde(default)]
    pub offset: f64,
    /// Unit of the scaled value, e.g. `°C`. Default none.
    #[serde(default)]
    pub unit: Option<String>,
}

fn default_scale() -> f64 {
    1.0
}

impl RegisterConfig {
    /// A register `name` at `address` of `function`, with defaults for everything else.
    pub fn new(name: impl Into<String>, function: RegisterFunction, address: u16) -> Self {
        RegisterConfig {
            name: name.into(),
            function,
            address,
            data_type: None,
            word_order: WordOrder::Big,
            scale: 1.0,
            offset: 0.0,
            unit: None,
        }
    }

    /// The type in effect (explicit, or the default for the function).
    pub fn effective_type(&self) -> RegisterType {
        self.data_type.unwrap_or(if self.function.is_bit() {
            RegisterType::Bool
        } else {
            RegisterType::U16
        })
    }

    fn validate(&self, i: usize, names: &mut BTreeSet<String>) -> Result<(), SourceError> {
        let key = |field: &str| format!("registers[{i}].{field}");
        validate_series_part(&key("name"), &self.name)?;
        if !names.insert(self.name.clone()) {
            return Err(config_error(
                key("name"),
                format!("`{}` is used twice", self.name),
            ));
        }
        let ty = self.effective_type();
        if self.function.is_bit() && ty != RegisterType::Bool {
            return Err(config_error(
                key("type"),
                "coils and discrete inputs are `bool`",
            ));
        }
        if u32::from(self.address) + u32::from(ty.width()) > 65_536 {
            return Err(config_error(
                key("address"),
                "value runs past address 65535",
            ));
        }
        if !self.scale.is_finite() || self.scale == 0.0 {
            return Err(config_error(
                key("scale"),
                "must be a finite, non-zero number",
            ));
        }
        if !self.offset.is_finite() {
            return Err(config_error(key("offset"), "must be a finite number"));
        }
        if let Some(unit) = &self.unit {
            crate::config::validate_unit(&key("unit"), unit)?;
        }
        Ok(())
    }
}

fn validate_common(
    name: &Option<String>,
    unit_id: u8,
    timeout: Duration,
    interval: Duration,
    series_prefix: &Option<String>,
    registers: &[RegisterConfig],
) -> Result<(), SourceError> {
    validate_name(name.as_deref())?;
    if unit_id > 247 {
        return Err(config_error(
            "unit_id",
            format!("{unit_id} is not a unit id (0–247)"),
        ));
    }
    if !(Duration::from_millis(10)..=Duration::from_secs(60)).contains(&timeout) {
        return Err(config_error("timeout", "must be between 10ms and 60s"));
    }
    validate_interval(interval)?;
    if let Some(prefix) = series_prefix.as_deref()
        && !prefix.is_empty()
    {
        validate_series_part("series_prefix", prefix)?;
    }
    if registers.is_empty() {
        return Err(config_error("registers", "must list at least one register"));
    }
    let mut names = BTreeSet::new();
    for (i, register) in registers.iter().enumerate() {
        register.validate(i, &mut names)?;
    }
    Ok(())
}

fn default_unit_id() -> u8 {
    1
}
fn default_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_interval() -> Duration {
    Duration::from_secs(10)
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

/// A Modbus TCP device (or gateway).
///
/// ```toml
/// [[sources]]
/// kind = "modbus_tcp"
/// name = "plc"
/// address = "192.168.1.50:502"
/// unit_id = 1
/// interval = "5s"
/// registers = [{ name = "flow", function = "input", address = 4, type = "f32", unit = "l/min" }]
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusTcpConfig {
    /// Source name for status and metrics (letters, digits, `_`, `-`, `.`); default
    /// `modbus_tcp`.
    #[serde(default)]
    pub name: Option<String>,
    /// `host:port`, `host` (port 502) or `[v6addr]:port`; resolved at each connect.
    pub address: String,
    /// Unit identifier (slave id) addressed through the connection. Default 1.
    #[serde(default = "default_unit_id", alias = "slave")]
    pub unit_id: u8,
    /// How long to wait for a connection or a response. Default `1s`.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Sampling interval, used by the agent's scheduler; 100ms to 24h. Default `10s`.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Series prefix (`<prefix>.<register>`; empty for none). Default: `name`, else `modbus`.
    #[serde(default)]
    pub series_prefix: Option<String>,
    /// The values to read.
    pub registers: Vec<RegisterConfig>,
}

impl ModbusTcpConfig {
    /// A config for `address` reading `registers`, everything else at its default.
    pub fn new(address: impl Into<String>, registers: Vec<RegisterConfig>) -> Self {
        ModbusTcpConfig {
            name: None,
            address: address.into(),
            unit_id: default_unit_id(),
            timeout: default_timeout(),
            interval: default_interval(),
            series_prefix: None,
            registers,
        }
    }

    /// Host and port to connect to.
    pub fn host_port(&self) -> Result<(String, u16), SourceError> {
        let a = self.address.trim();
        let bad = || config_error("address", format!("`{a}` is not host:port"));
        if a.is_empty() {
            return Err(bad());
        }
        if let Ok(sa) = a.parse::<std::net::SocketAddr>() {
            return Ok((sa.ip().to_string(), sa.port()));
        }
        if let Ok(ip) = a.parse::<std::net::IpAddr>() {
            return Ok((ip.to_string(), DEFAULT_TCP_PORT));
        }
        match a.rsplit_once(':') {
            None => Ok((a.to_owned(), DEFAULT_TCP_PORT)),
            Some((host, port)) if !host.is_empty() && !host.contains(':') => {
                Ok((host.to_owned(), port.parse().map_err(|_| bad())?))
            }
            Some(_) => Err(bad()),
        }
    }

    /// Checks every value, returning [`SourceError::Config`] naming the first bad key.
    pub fn validate(&self) -> Result<(), SourceError> {
        self.host_port()?;
        validate_common(
            &self.name,
            self.unit_id,
            self.timeout,
            self.interval,
            &self.series_prefix,
            &self.registers,
        )
    }
}

/// A Modbus RTU device on a serial line (RS-485 adapter).
///
/// ```toml
/// [[sources]]
/// kind = "modbus_rtu"
/// name = "energy-meter"
/// port = "/dev/ttyUSB0"
/// baud = 9600
/// parity = "even"
/// unit_id = 3
/// registers = [{ name = "voltage", function = "input", address = 0, type = "f32", unit = "V" }]
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusRtuConfig {
    /// Source name for status and metrics (letters, digits, `_`, `-`, `.`); default
    /// `modbus_rtu`.
    #[serde(default)]
    pub name: Option<String>,
    /// Serial device path, e.g. `/dev/ttyUSB0`.
    pub port: PathBuf,
    /// Line speed in baud. Default 9600.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Data bits, 5–8. Default 8.
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    /// `none` (default), `odd` or `even`. The Modbus standard says even; most cheap devices
    /// ship with none.
    #[serde(default)]
    pub parity: Parity,
    /// Stop bits, 1 or 2. Default 1.
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// Slave address of the device on the bus, 1–247. Default 1.
    #[serde(default = "default_unit_id", alias = "slave")]
    pub unit_id: u8,
    /// How long to wait for a response. Default `1s`.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Sampling interval, used by the agent's scheduler; 100ms to 24h. Default `10s`.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Series prefix (`<prefix>.<register>`; empty for none). Default: `name`, else `modbus`.
    #[serde(default)]
    pub series_prefix: Option<String>,
    /// The values to read.
    pub registers: Vec<RegisterConfig>,
}

impl ModbusRtuConfig {
    /// A config for the device `unit_id` on `port` reading `registers`, defaults elsewhere.
    pub fn new(port: impl Into<PathBuf>, unit_id: u8, registers: Vec<RegisterConfig>) -> Self {
        ModbusRtuConfig {
            name: None,
            port: port.into(),
            baud: default_baud(),
            data_bits: default_data_bits(),
            parity: Parity::None,
            stop_bits: default_stop_bits(),
            unit_id,
            timeout: default_timeout(),
            interval: default_interval(),
            series_prefix: None,
            registers,
        }
    }

    /// Checks every value, returning [`SourceError::Config`] naming the first bad key.
    pub fn validate(&self) -> Result<(), SourceError> {
        validate_line(&self.port, self.baud, self.data_bits, self.stop_bits)?;
        if self.unit_id == 0 {
            // 0 is broadcast on RTU: devices execute but never answer, so reads cannot work.
            return Err(config_error(
                "unit_id",
                "0 is the broadcast address; use 1–247",
            ));
        }
        validate_common(
            &self.name,
            self.unit_id,
            self.timeout,
            self.interval,
            &self.series_prefix,
            &self.registers,
        )
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
