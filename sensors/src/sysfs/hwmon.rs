//! hwmon: `<sysfs>/class/hwmon/hwmon*/` with a `name` file and `<kind><n>_input` attributes.
//! Owns the hwmon channel kinds, their unit conversions (the kernel's hwmon sysfs ABI) and
//! their naming `hwmon.<name>.<label or kind+n>`; it must not touch other sysfs classes.

use std::path::{Path, PathBuf};

use super::attr::{list_dir, named_devices, read_number, read_optional_attr};
use super::{Scan, SeriesFilter};
use crate::Reading;
use crate::sample::sanitize_segment;

/// The hwmon channel kinds kdelta reads, with the kernel's units (Documentation/hwmon/sysfs-interface).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HwmonChannel {
    /// `temp<n>_input`, millidegrees Celsius → °C.
    Temp,
    /// `in<n>_input`, millivolts → V.
    In,
    /// `fan<n>_input`, RPM.
    Fan,
    /// `humidity<n>_input`, milli-percent relative humidity → %.
    Humidity,
    /// `power<n>_input` (or `power<n>_average` when a driver only averages), microwatts → W.
    Power,
    /// `curr<n>_input`, milliamperes → A.
    Curr,
}

impl HwmonChannel {
    /// Every kind, in the order readings are emitted for one device.
    pub const ALL: [HwmonChannel; 6] = [
        HwmonChannel::Temp,
        HwmonChannel::In,
        HwmonChannel::Fan,
        HwmonChannel::Humidity,
        HwmonChannel::Power,
        HwmonChannel::Curr,
    ];

    /// The attribute prefix (`temp`, `in`, …).
    pub fn prefix(self) -> &'static str {
        match self {
            HwmonChannel::Temp => "temp",
            HwmonChannel::In => "in",
            HwmonChannel::Fan => "fan",
            HwmonChannel::Humidity => "humidity",
            HwmonChannel::Power => "power",
            HwmonChannel::Curr => "curr",
        }
    }

    /// Unit of the converted value.
    pub fn unit(self) -> &'static str {
        match self {
            HwmonChannel::Temp => "°C",
            HwmonChannel::In => "V",
            HwmonChannel::Fan => "RPM",
            HwmonChannel::Humidity => "%",
            HwmonChannel::Power => "W",
            HwmonChannel::Curr => "A",
        }
    }

    /// Converts a raw sysfs value into [`unit`](Self::unit).
    pub fn convert(self, raw: f64) -> f64 {
        match self {
            HwmonChannel::Temp | HwmonChannel::In | HwmonChannel::Humidity | HwmonChannel::Curr => {
                raw / 1000.0
            }
            HwmonChannel::Fan => raw,
            HwmonChannel::Power => raw / 1_000_000.0,
        }
    }

    /// Splits an attribute file name like `temp3_input` into kind, channel number and suffix.
    fn parse_attr(file: &str) -> Option<(HwmonChannel, u32, &str)> {
        let (head, suffix) = file.split_once('_')?;
        let digits_at = head.find(|c: char| c.is_ascii_digit())?;
        let (prefix, digits) = head.split_at(digits_at);
        let kind = HwmonChannel::ALL
            .into_iter()
            .find(|k| k.prefix() == prefix)?;
        let n = digits.parse().ok()?;
        Some((kind, n, suffix))
    }
}

/// One value file found on a device.
struct Channel {
    kind: HwmonChannel,
    n: u32,
    value_file: PathBuf,
}

/// Lists the value files of a device directory, sorted by kind then number.
fn channels(dir: &Path, wanted: &[HwmonChannel]) -> Result<Vec<Channel>, crate::SourceError> {
    let files = list_dir(dir)?;
    let mut out: Vec<Channel> = Vec::new();
    for (file, path) in &files {
        let Some((kind, n, suffix)) = HwmonChannel::parse_attr(file) else {
            continue;
        };
        if !wanted.contains(&kind) {
            continue;
        }
        let is_value = suffix == "input"
            // Some power meters (amdgpu, ina2xx variants) only publish an average.
            || (kind == HwmonChannel::Power
                && suffix == "average"
                && !files.iter().any(|(f, _)| *f == format!("power{n}_input")));
        if is_value {
            out.push(Channel {
                kind,
                n,
                value_file: path.clone(),
            });
        }
    }
    out.sort_by_key(|c| (c.kind, c.n));
    Ok(out)
}

/// Reads the `wanted` channel kinds of every hwmon device under `sysfs_root` that `filter`
/// keeps, once.
///
/// Labels come from `<kind><n>_label` when present (sanitized: lowercase, spaces → `_`),
/// otherwise the attribute stem (`temp1`). Drivers that keep their attributes in the
/// `device/` subdirectory (older kernels) are read there. A channel answering
/// `EINVAL`/`ENODATA` is skipped; other failures become errors in the [`Scan`] while the rest
/// still read. No `class/hwmon` directory means no devices, not an error.
pub fn scan_hwmon(
    sysfs_root: &Path,
    ts_ms: i64,
    wanted: &[HwmonChannel],
    filter: &SeriesFilter,
) -> Scan {
    let mut scan = Scan::default();
    let devices = match named_devices(&sysfs_root.join("class/hwmon"), "hwmon", "name", "hwmon") {
        Ok(devices) => devices,
        Err(e) => {
            scan.sample.errors.push(e);
            return scan;
        }
    };

    for (_, path, name) in &devices {
        let mut found = match channels(path, wanted) {
            Ok(found) => found,
            Err(e) => {
                scan.sample.errors.push(e);
                continue;
            }
        };
        let mut attr_dir = path.clone();
        if found.is_empty() {
            let legacy = path.join("device");
            if let Ok(legacy_found) = channels(&legacy, wanted) {
                found = legacy_found;
                attr_dir = legacy;
            }
        }
        if read_device(&mut scan, &attr_dir, name, &found, ts_ms, filter) {
            scan.devices.push(path.clone());
        }
    }
    scan
}

/// Reads the channels of one device; true when `filter` kept at least one.
fn read_device(
    scan: &mut Scan,
    dir: &Path,
    device: &str,
    found: &[Channel],
    ts_ms: i64,
    filter: &SeriesFilter,
) -> bool {
    let mut any_included = false;
    let mut labels: Vec<String> = Vec::with_capacity(found.len());
    for ch in found {
        let stem = format!("{}{}", ch.kind.prefix(), ch.n);
        let label = read_optional_attr(&dir.join(format!("{stem}_label")))
            .ok()
            .flatten()
            .and_then(|l| sanitize_segment(&l))
            .unwrap_or_else(|| stem.clone());
        // Two channels with one label (seen on some boards) must not share a series.
        let label = if labels.contains(&label) {
            format!("{label}_{stem}")
        } else {
            label
        };
        labels.push(label.clone());
        let series = format!("hwmon.{device}.{label}");
        if !filter.matches(&series) {
            continue;
        }
        any_included = true;

        match read_number(&ch.value_file) {
            Ok(Some(raw)) => scan.sample.readings.push(Reading::new(
                series,
                ts_ms,
                ch.kind.convert(raw),
                Some(ch.kind.unit()),
            )),
            Ok(None) => tracing::debug!(
                file = %ch.value_file.display(),
                "hwmon channel has no value (EINVAL/ENODATA)"
            ),
            Err(e) => scan.sample.errors.push(e),
        }
    }
    any_included
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(dir: &Path, file: &str, text: &str) {
        fs::create_dir_all(dir).expect("mkdir");
        fs::write(dir.join(file), format!("{text}\n")).expect("write");
    }

    #[test]
    fn unit_conversions_follow_the_hwmon_abi() {
        assert_eq!(HwmonChannel::Temp.convert(48312.0), 48.312);
        assert_eq!(HwmonChannel::In.convert(5062.0), 5.062);
        assert_eq!(HwmonChannel::Fan.convert(1850.0), 1850.0);
        assert_eq!(HwmonChannel::Humidity.convert(45250.0), 45.25);
        assert_eq!(HwmonChannel::Power.convert(2_450_000.0), 2.45);
        assert_eq!(HwmonChannel::Curr.convert(1250.0), 1.25);
        assert_eq!(HwmonChannel::Temp.convert(-5500.0), -5.5);
    }

    #[test]
    fn attribute_names_parse() {
        assert_eq!(
            HwmonChannel::parse_attr("temp12_input"),
            Some((HwmonChannel::Temp, 12, "input"))
        );
        assert_eq!(
            HwmonChannel::parse_attr("in0_lcrit_alarm"),
            Some((HwmonChannel::In, 0, "lcrit_alarm"))
        );
        assert_eq!(HwmonChannel::parse_attr("name"), None);
        assert_eq!(HwmonChannel::parse_attr("pwm1_enable"), None);
        assert_eq!(HwmonChannel::parse_attr("temp_input"), None);
    }

    #[test]
    fn labels_units_and_filters() {
        let root = tempfile::tempdir().expect("tempdir");
        let dev = root.path().join("class/hwmon/hwmon3");
        write(&dev, "name", "coretemp");
        write(&dev, "temp1_input", "52000");
        write(&dev, "temp1_label", "Package id 0");
        write(&dev, "temp2_input", "49000");
        write(&dev, "temp2_label", "Core 0");
        write(&dev, "temp3_input", "47000");
        write(&dev, "in0_input", "1212");
        write(&dev, "fan1_input", "1850");
        write(&dev, "power1_average", "2450000");
        write(&dev, "temp1_crit", "100000");

        let all = scan_hwmon(root.path(), 1, &HwmonChannel::ALL, &SeriesFilter::all());
        assert!(all.sample.errors.is_empty(), "{:?}", all.sample.errors);
        let got: Vec<(&str, f64, &str)> = all
            .sample
            .readings
            .iter()
            .map(|r| (r.series.as_str(), r.value, r.unit.as_deref().unwrap_or("")))
            .collect();
        assert_eq!(
            got,
            [
                ("hwmon.coretemp.package_id_0", 52.0, "°C"),
                ("hwmon.coretemp.core_0", 49.0, "°C"),
                ("hwmon.coretemp.temp3", 47.0, "°C"),
                ("hwmon.coretemp.in0", 1.212, "V"),
                ("hwmon.coretemp.fan1", 1850.0, "RPM"),
                ("hwmon.coretemp.power1", 2.45, "W"),
            ]
        );

        let temps = scan_hwmon(root.path(), 1, &[HwmonChannel::Temp], &SeriesFilter::all());
        assert_eq!(temps.sample.readings.len(), 3);
    }

    #[test]
    fn legacy_device_subdirectory_and_duplicate_labels() {
        let root = tempfile::tempdir().expect("tempdir");
        let dev = root.path().join("class/hwmon/hwmon0");
        write(&dev, "name", "lm75");
        write(&dev.join("device"), "temp1_input", "21500");
        write(&dev.join("device"), "temp1_label", "board");
        write(&dev.join("device"), "temp2_input", "22500");
        write(&dev.join("device"), "temp2_label", "board");
        let scan = scan_hwmon(root.path(), 1, &HwmonChannel::ALL, &SeriesFilter::all());
        let series: Vec<&str> = scan
            .sample
            .readings
            .iter()
            .map(|r| r.series.as_str())
            .collect();
        assert_eq!(series, ["hwmon.lm75.board", "hwmon.lm75.board_temp2"]);
    }
}
