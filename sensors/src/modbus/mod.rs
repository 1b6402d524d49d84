//! Modbus TCP and RTU devices read through a register map.
//!
//! Owns the `kind = "modbus_tcp"` / `"modbus_rtu"` configs, request planning (contiguous
//! registers share one read) and value decoding (`u16`…`f32`, word order, `raw * scale +
//! offset`). The agent's scheduler calls [`ModbusSource`] as a
//! [`PolledSource`](crate::PolledSource) at the configured `interval`; nothing here keeps time
//! or writes to devices.
//!
//! Error mapping: an exception response is [`SourceError::Protocol`](crate::SourceError)
//! naming the device address and the register; no answer within `timeout` is `Timeout`; a
//! refused connection or missing serial port is `DeviceMissing`.

mod config;
mod registers;
mod source;

pub use config::{
    DEFAULT_TCP_PORT, ModbusRtuConfig, ModbusTcpConfig, RegisterConfig, RegisterFunction,
    RegisterType, WordOrder,
};
pub use source::ModbusSource;
