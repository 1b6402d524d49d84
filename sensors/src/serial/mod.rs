//! Serial devices speaking line protocols (JSON lines, CSV, `key=value`, NMEA 0183).
//!
//! Owns the `kind = "serial"` config, line framing and the port lifecycle: open, read, decode
//! with [`crate::decode`], reopen with backoff after an unplug. It does not schedule itself or
//! store anything; the agent runs it as a [`StreamingSource`](crate::StreamingSource) and drains
//! the sink. The serial line settings here are shared with Modbus RTU.
//!
//! Tested over pseudo-terminal pairs (`tests/serial.rs`), which behave like a USB adapter
//! including the hang-up when the other end goes away.

mod config;
mod lines;
mod source;

pub use config::{Parity, SerialConfig};
pub(crate) use config::{port_builder, validate_line, validate_series_part};
pub use source::SerialSource;
