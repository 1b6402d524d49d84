//! The `sysfs` source: sensors the Linux kernel already exposes as files. Owns thermal zones,
//! hwmon, 1-Wire (`w1_therm`) probes and IIO devices, each in its own module and each usable
//! alone (the [`system`](crate::system) source reuses thermal and hwmon). It must not touch
//! `/proc` or any device node; every path is under a configurable root so tests use fixture
//! trees.
//!
//! | kind | files | series | unit |
//! | --- | --- | --- | --- |
//! | thermal | `class/thermal/thermal_zone*/{type,temp}` | `thermal.<type>` | °C |
//! | hwmon | `class/hwmon/hwmon*/{name,<kind><n>_input,<kind><n>_label}` | `hwmon.<name>.<label>` | °C, V, RPM, %, W, A |
//! | 1-Wire | `bus/w1/devices/<id>/w1_slave` | `w1.<id>` | °C |
//! | IIO | `bus/iio/devices/iio:device*/{name,in_<chan>_{input,raw,scale,offset}}` | `iio.<name>.<chan>` | by channel type |
//!
//! ```no_run
//! use kdelta_sensors::sysfs::{SysfsConfig, SysfsSource};
//!
//! let mut source = SysfsSource::new(SysfsConfig::default()).expect("valid config");
//! let sample = source.sample_blocking(kdelta_sensors::now_ms());
//! for reading in &sample.readings {
//!     println!("{} = {} {}", reading.series, reading.value, reading.unit.as_deref().unwrap_or(""));
//! }
//! for error in &sample.errors {
//!     eprintln!("{error}");
//! }
//! ```

pub(crate) mod attr;
mod config;
mod hwmon;
mod iio;
mod source;
mod thermal;
mod w1;

pub use config::{DEFAULT_SYSFS_INTERVAL, SeriesFilter, SysfsConfig};
pub use hwmon::{HwmonChannel, scan_hwmon};
pub use iio::{channel_type as iio_channel_type, convert as iio_convert, scan_iio};
pub use source::{Scan, SysfsScanner, SysfsSource};
pub use thermal::{THERMAL_UNIT, scan_thermal};
pub use w1::{POWER_ON_RESET_MILLIDEGREES, W1_UNIT, is_therm_device, parse_w1_slave, scan_w1};
