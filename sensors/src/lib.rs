//! # kdelta-sensors
//!
//! Sensor drivers and decoders for kdelta. This crate turns hardware and operating-system
//! interfaces into timestamped [`Reading`]s; it knows nothing of storage, HTTP or MQTT — the
//! agent schedules sources and feeds their readings to the store.
//!
//! Two shapes of source exist:
//! - [`PolledSource`]: sampled by the agent's scheduler on a fixed grid (`system`, `sysfs`,
//!   Modbus, simulator);
//! - [`StreamingSource`]: produces readings when the device talks (serial line protocols).
//!
//! Every failure is a [`SourceError`] that names the device path or address.
#![deny(missing_docs)]

pub mod config;
pub mod decode;
mod error;
pub mod factory;
pub mod modbus;
mod reading;
mod sample;
pub mod serial;
pub mod sim;
mod source;
pub mod sysfs;
pub mod system;
pub mod time;

pub use config::SourceConfig;
pub use error::SourceError;
pub use factory::{build_polled, build_streaming};
pub use reading::Reading;
pub use sample::{Sample, sanitize_segment};
pub use source::{BoxFuture, PolledSource, ReadingSink, StreamingSource};
pub use time::now_ms;
