//! Industrial I/O devices: `<sysfs>/bus/iio/devices/iio:device*/` (ADCs, BME280, DHT11,
//! light sensors). Owns the IIO naming (`iio.<name>.<channel>`), the raw/scale/offset
//! arithmetic and the IIO ABI units; it must not touch other buses.
//!
//! A channel is read from its processed `in_<chan>_input` when the driver offers one (bmp280,
//! dht11), otherwise as `(in_<chan>_raw + offset) * scale`, the IIO convention, where scale
//! and offset come from `in_<chan>_scale`/`in_<chan>_offset` or the type-wide
//! `in_<type>_scale`/`in_<type>_offset` (defaults 1 and 0).

use std::collections::BTreeMap;
use std::path::Path;

use super::attr::{list_dir, named_devices, read_number, read_optional_number};
use super::{Scan, SeriesFilter};
use crate::sample::sanitize_segment;
use crate::{Reading, SourceError};

/// How a channel's value is exposed.
#[derive(Debug, Default, Clone, Copy)]
struct Files {
    input: bool,
    raw: bool,
}

/// The channel type of an IIO channel spec: `voltage0` → `voltage`, `temp_ambient` → `temp`,
/// `voltage0-voltage1` → `voltage`, `humidityrelative` → `humidityrelative`.
pub fn channel_type(chan: &str) -> &str {
    let end = chan
        .find(|c: char| !c.is_ascii_lowercase())
        .unwrap_or(chan.len());
    &chan[..end]
}

/// Converts a value in IIO ABI units into kdelta's unit for that channel type: returns the
/// value and the unit. IIO reports temperature in m°C, voltage in mV, current in mA and
/// relative humidity in milli-percent; pressure (kPa), illuminance (lx) and the others pass
/// through. Unknown types keep their value and have no unit.
pub fn convert(chan_type: &str, iio_value: f64) -> (f64, Option<&'static str>) {
    match chan_type {
        "temp" => (iio_value / 1000.0, Some("°C")),
        "voltage" => (iio_value / 1000.0, Some("V")),
        "current" => (iio_value / 1000.0, Some("A")),
        "power" => (iio_value / 1000.0, Some("W")),
        "humidityrelative" => (iio_value / 1000.0, Some("%")),
        "pressure" => (iio_value, Some("kPa")),
        "illuminance" => (iio_value, Some("lx")),
        "resistance" => (iio_value, Some("Ω")),
        "accel" => (iio_value, Some("m/s²")),
        "anglvel" => (iio_value, Some("rad/s")),
        "magn" => (iio_value, Some("Gs")),
        _ => (iio_value, None),
    }
}

/// Sort key that puts `voltage2` before `voltage10`.
fn natural_key(chan: &str) -> (String, u64, String) {
    let ty = channel_type(chan);
    let rest = &chan[ty.len()..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    (
        ty.to_owned(),
        digits.parse().unwrap_or(0),
        rest[digits.len()..].to_owned(),
    )
}

/// The channels of one device, by natural order.
fn channels(dir: &Path) -> Result<Vec<(String, Files)>, SourceError> {
    let mut found: BTreeMap<(String, u64, String), (String, Files)> = BTreeMap::new();
    for (file, _) in list_dir(dir)? {
        let Some(spec) = file.strip_prefix("in_") else {
            continue;
        };
        let (chan, is_input) = if let Some(chan) = spec.strip_suffix("_input") {
            (chan, true)
        } else if let Some(chan) = spec.strip_suffix("_raw") {
            (chan, false)
        } else {
            continue;
        };
        if chan.is_empty() {
            continue;
        }
        let entry = found
            .entry(natural_key(chan))
            .or_insert_with(|| (chan.to_owned(), Files::default()));
        if is_input {
            entry.1.input = true;
        } else {
            entry.1.raw = true;
        }
    }
    Ok(found.into_values().collect())
}

/// A channel attribute (`scale`, `offset`) from the channel itself or, failing that, shared by
/// its type.
fn channel_attr(dir: &Path, chan: &str, attr: &str) -> Result<Option<f64>, SourceError> {
    if let Some(v) = read_optional_number(&dir.join(format!("in_{chan}_{attr}")))? {
        return Ok(Some(v));
    }
    let ty = channel_type(chan);
    if ty != chan {
        return read_optional_number(&dir.join(format!("in_{ty}_{attr}")));
    }
    Ok(None)
}

/// The value of one channel in IIO units, or `None` when the driver has none right now.
fn read_channel(dir: &Path, chan: &str, files: Files) -> Result<Option<f64>, SourceError> {
    if files.input {
        return read_number(&dir.join(format!("in_{chan}_input")));
    }
    let Some(raw) = read_number(&dir.join(format!("in_{chan}_raw")))? else {
        return Ok(None);
    };
    let offset = channel_attr(dir, chan, "offset")?.unwrap_or(0.0);
    let scale = channel_attr(dir, chan, "scale")?.unwrap_or(1.0);
    Ok(Some((raw + offset) * scale))
}

/// Reads every channel of every IIO device under `sysfs_root` that `filter` keeps, once. Series are
/// `iio.<name>.<channel>` (`iio.bme280.temp`, `iio.ads1015.voltage0`). A failing channel
/// (a DHT11 that missed its timing answers `EIO`) adds an error to the [`Scan`] while the rest
/// still read. No `bus/iio/devices` directory means no devices, not an error.
pub fn scan_iio(sysfs_root: &Path, ts_ms: i64, filter: &SeriesFilter) -> Scan {
    let mut scan = Scan::default();
    let devices = match named_devices(
        &sysfs_root.join("bus/iio/devices"),
        "iio:device",
        "name",
        "iio_device",
    ) {
        Ok(devices) => devices,
        Err(e) => {
            scan.sample.errors.push(e);
            return scan;
        }
    };

    for (_, dir, name) in &devices {
        let chans = match channels(dir) {
            Ok(chans) => chans,
            Err(e) => {
                scan.sample.errors.push(e);
                continue;
            }
        };
        let mut any_included = false;
        for (chan, files) in chans {
            let Some(label) = sanitize_segment(&chan) else {
                continue;
            };
            let series = format!("iio.{name}.{label}");
            if !filter.matches(&series) {
                continue;
            }
            any_included = true;
            match read_channel(dir, &chan, files) {
                Ok(Some(value)) => {
                    let (value, unit) = convert(channel_type(&chan), value);
                    scan.sample
                        .readings
                        .push(Reading::new(series, ts_ms, value, unit));
                }
                Ok(None) => {
                    tracing::debug!(device = %dir.display(), chan, "IIO channel has no value")
                }
                Err(e) => scan.sample.errors.push(e),
            }
        }
        if any_included {
            scan.devices.push(dir.to_path_buf());
        }
    }
    scan
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn channel_types() {
        assert_eq!(channel_type("voltage0"), "voltage");
        assert_eq!(channel_type("temp_ambient"), "temp");
        assert_eq!(channel_type("voltage0-voltage1"), "voltage");
        assert_eq!(channel_type("humidityrelative"), "humidityrelative");
        assert_eq!(channel_type("illuminance0"), "illuminance");
    }

    #[test]
    fn conversions() {
        assert_eq!(convert("temp", 23450.0), (23.45, Some("°C")));
        assert_eq!(convert("voltage", 1650.0), (1.65, Some("V")));
        assert_eq!(convert("humidityrelative", 46250.0), (46.25, Some("%")));
        assert_eq!(convert("pressure", 100.8566), (100.8566, Some("kPa")));
        assert_eq!(convert("illuminance", 312.0), (312.0, Some("lx")));
        assert_eq!(convert("proximity", 7.0), (7.0, None));
    }

    #[test]
    fn raw_offset_scale_with_shared_and_own_attributes() {
        let root = tempfile::tempdir().expect("tempdir");
        let dev = root.path().join("bus/iio/devices/iio:device0");
        fs::create_dir_all(&dev).expect("mkdir");
        let w = |f: &str, t: &str| fs::write(dev.join(f), format!("{t}\n")).expect("write");
        w("name", "adc");
        w("in_voltage0_raw", "2048");
        w("in_voltage10_raw", "1000");
        w("in_voltage_scale", "0.5");
        w("in_voltage10_scale", "2");
        w("in_temp_raw", "1500");
        w("in_temp_offset", "-500");
        w("in_temp_scale", "25");
        let scan = scan_iio(root.path(), 3, &SeriesFilter::all());
        assert!(scan.sample.errors.is_empty(), "{:?}", scan.sample.errors);
        let got: Vec<(&str, f64)> = scan
            .sample
            .readings
            .iter()
            .map(|r| (r.series.as_str(), r.value))
            .collect();
        // (1500 - 500) * 25 = 25000 m°C; 2048 * 0.5 = 1024 mV; 1000 * 2 = 2000 mV.
        assert_eq!(
            got,
            [
                ("iio.adc.temp", 25.0),
                ("iio.adc.voltage0", 1.024),
                ("iio.adc.voltage10", 2.0),
            ]
        );
    }

    #[test]
    fn input_preferred_over_raw_and_bad_scale_reported() {
        let root = tempfile::tempdir().expect("tempdir");
        let dev = root.path().join("bus/iio/devices/iio:device1");
        fs::create_dir_all(&dev).expect("mkdir");
        let w = |f: &str, t: &str| fs::write(dev.join(f), format!("{t}\n")).expect("write");
        w("name", "dht11");
        w("in_temp_input", "21000");
        w("in_temp_raw", "999999");
        w("in_humidityrelative_raw", "40");
        w("in_humidityrelative_scale", "oops");
        let scan = scan_iio(root.path(), 3, &SeriesFilter::all());
        assert_eq!(scan.sample.readings.len(), 1);
        assert_eq!(scan.sample.readings[0].series, "iio.dht11.temp");
        assert_eq!(scan.sample.readings[0].value, 21.0);
        assert!(matches!(
            &scan.sample.errors[..],
            [SourceError::Parse { device, .. }] if device.ends_with("in_humidityrelative_scale")
        ));
    }
}
