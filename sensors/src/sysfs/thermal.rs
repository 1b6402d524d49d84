//! Thermal zones: `<sysfs>/class/thermal/thermal_zone*/{type,temp}`. Owns their naming
//! (`thermal.<type>`) and unit (millidegrees → °C); it must not touch other sysfs classes.
//!
//! On a Raspberry Pi there is one zone, `cpu-thermal`. On x86 there are often several
//! (`acpitz`, `x86_pkg_temp`, `iwlwifi_1`), sometimes with the same type twice; those get the
//! zone number appended (`thermal.acpitz_0`, `thermal.acpitz_1`).

use std::path::Path;

use super::attr::{named_devices, read_number};
use super::{Scan, SeriesFilter};
use crate::Reading;

/// Unit of every thermal-zone reading.
pub const THERMAL_UNIT: &str = "°C";

/// Reads every thermal zone under `sysfs_root` whose series `filter` keeps, stamping readings
/// with `ts_ms`.
///
/// A zone whose `temp` answers `EINVAL`/`ENODATA` (disabled zone, device down) is skipped
/// without an error; any other failure becomes an error in the returned [`Scan`] while the
/// other zones still produce readings. No `class/thermal` directory means no zones, not an
/// error.
pub fn scan_thermal(sysfs_root: &Path, ts_ms: i64, filter: &SeriesFilter) -> Scan {
    let mut scan = Scan::default();
    let dir = sysfs_root.join("class/thermal");
    // A zone without a readable type is still a temperature; name it after its directory.
    let zones = match named_devices(&dir, "thermal_zone", "type", "thermal_zone") {
        Ok(zones) => zones,
        Err(e) => {
            scan.sample.errors.push(e);
            return scan;
        }
    };

    for (index, path, name) in &zones {
        let series = format!("thermal.{name}");
        if !filter.matches(&series) {
            continue;
        }
        scan.devices.push(path.clone());
        let temp_path = path.join("temp");
        match read_number(&temp_path) {
            Ok(Some(millidegrees)) => scan.sample.readings.push(Reading::new(
                series,
                ts_ms,
                millidegrees / 1000.0,
                Some(THERMAL_UNIT),
            )),
            Ok(None) => tracing::debug!(zone = index, "thermal zone has no value (EINVAL/ENODATA)"),
            Err(e) => scan.sample.errors.push(e),
        }
    }
    scan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SourceError;
    use std::fs;

    fn zone(root: &Path, n: u32, zone_type: &str, temp: Option<&str>) {
        let dir = root.join(format!("class/thermal/thermal_zone{n}"));
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join("type"), format!("{zone_type}\n")).expect("type");
        if let Some(temp) = temp {
            fs::write(dir.join("temp"), format!("{temp}\n")).expect("temp");
        }
    }

    #[test]
    fn reads_zones_in_numeric_order_with_units() {
        let root = tempfile::tempdir().expect("tempdir");
        zone(root.path(), 10, "x86_pkg_temp", Some("51000"));
        zone(root.path(), 2, "cpu-thermal", Some("48312"));
        let scan = scan_thermal(root.path(), 7, &SeriesFilter::all());
        assert!(scan.sample.errors.is_empty(), "{:?}", scan.sample.errors);
        let got: Vec<(&str, f64)> = scan
            .sample
            .readings
            .iter()
            .map(|r| (r.series.as_str(), r.value))
            .collect();
        assert_eq!(
            got,
            [
                ("thermal.cpu-thermal", 48.312),
                ("thermal.x86_pkg_temp", 51.0)
            ]
        );
        assert!(scan.sample.readings.iter().all(|r| r.ts_ms == 7));
        assert!(
            scan.sample
                .readings
                .iter()
                .all(|r| r.unit.as_deref() == Some("°C"))
        );
        assert_eq!(scan.devices.len(), 2);
    }

    #[test]
    fn duplicate_types_and_bad_values() {
        let root = tempfile::tempdir().expect("tempdir");
        zone(root.path(), 0, "acpitz", Some("27800"));
        zone(root.path(), 1, "acpitz", Some("garbage"));
        zone(root.path(), 2, "iwlwifi_1", None);
        let scan = scan_thermal(root.path(), 0, &SeriesFilter::all());
        assert_eq!(scan.sample.readings.len(), 1);
        assert_eq!(scan.sample.readings[0].series, "thermal.acpitz_0");
        assert_eq!(scan.sample.readings[0].value, 27.8);
        assert_eq!(scan.sample.errors.len(), 2, "{:?}", scan.sample.errors);
        assert!(matches!(
            &scan.sample.errors[0],
            SourceError::Parse { device, .. } if device.ends_with("thermal_zone1/temp")
        ));
        assert!(matches!(
            &scan.sample.errors[1],
            SourceError::DeviceMissing { device, .. } if device.ends_with("thermal_zone2/temp")
        ));
    }

    #[test]
    fn no_thermal_class_is_empty_not_error() {
        let root = tempfile::tempdir().expect("tempdir");
        let scan = scan_thermal(root.path(), 0, &SeriesFilter::all());
        assert!(scan.sample.is_empty());
        assert!(scan.devices.is_empty());
    }
}
