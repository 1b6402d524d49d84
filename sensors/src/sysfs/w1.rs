//! 1-Wire temperature probes (DS18B20 and the other `w1_therm` families) through
//! `<sysfs>/bus/w1/devices/<id>/w1_slave`. Owns the `w1_slave` format and its failure modes;
//! it must not touch other buses.
//!
//! The kernel prints two lines per read (about 750 ms each: the probe converts first):
//!
//! ```text
//! 72 01 4b 46 7f ff 0e 10 57 : crc=57 YES
//! 72 01 4b 46 7f ff 0e 10 57 t=23125
//! ```
//!
//! The first line carries the kernel's CRC verdict; the second the temperature in
//! millidegrees. Three answers look like temperatures but are not, and are rejected:
//! a failed CRC (`NO`, typically a long or noisy cable), the power-on reset value
//! `t=85000` (the conversion never ran: parasite power or a loose VDD) and an all-zero
//! scratchpad (the data line is shorted; all-zero bytes pass the CRC).

use std::path::Path;

use super::attr::{list_dir, parse_error, quote, read_attr};
use super::{Scan, SeriesFilter};
use crate::{Reading, SourceError};

/// Unit of every 1-Wire reading.
pub const W1_UNIT: &str = "°C";

/// The DS18B20's scratchpad temperature after power-on, before any conversion: 85.000 °C.
pub const POWER_ON_RESET_MILLIDEGREES: i64 = 85_000;

/// 1-Wire family codes served by the kernel's `w1_therm` driver, all with the same
/// `w1_slave` format: DS18S20, DS1822, DS18B20, DS1825, DS28EA00.
const THERM_FAMILIES: [&str; 5] = ["10", "22", "28", "3b", "42"];

/// The datasheet range of the w1_therm probes; anything outside is a misread.
const RANGE_MILLIDEGREES: std::ops::RangeInclusive<i64> = -55_000..=125_000;

/// True for a w1 device directory name like `28-000005e2fdc3` of a temperature family.
pub fn is_therm_device(id: &str) -> bool {
    let Some((family, serial)) = id.split_once('-') else {
        return false;
    };
    THERM_FAMILIES.contains(&family)
        && serial.len() == 12
        && serial.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Parses the text of a `w1_slave` file into degrees Celsius. `device` names the file in
/// errors.
///
/// # Errors
/// - [`SourceError::Checksum`] when the kernel reports `crc=.. NO`;
/// - [`SourceError::Parse`] for a missing or malformed line, the power-on reset value
///   85000, an all-zero scratchpad or a value outside −55…125 °C.
pub fn parse_w1_slave(text: &str, device: &Path) -> Result<f64, SourceError> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let crc_line = lines
        .next()
        .ok_or_else(|| parse_error(device, "empty w1_slave"))?;
    let Some((bytes, verdict)) = crc_line.split_once(':') else {
        return Err(parse_error(
            device,
            &format!("first line has no `: crc=` part: {}", quote(crc_line)),
        ));
    };
    let verdict = verdict.trim();
    if !verdict.starts_with("crc=") {
        return Err(parse_error(
            device,
            &format!("first line has no `crc=`: {}", quote(crc_line)),
        ));
    }
    if verdict.ends_with(" NO") {
        return Err(SourceError::Checksum {
            device: device.display().to_string(),
            detail: format!("kernel CRC check failed ({verdict}); check cable length and pull-up"),
        });
    }
    if !verdict.ends_with(" YES") {
        return Err(parse_error(
            device,
            &format!("CRC verdict is neither YES nor NO: {}", quote(crc_line)),
        ));
    }
    let scratchpad: Vec<&str> = bytes.split_whitespace().collect();
    if !scratchpad.is_empty() && scratchpad.iter().all(|b| *b == "00") {
        return Err(parse_error(
            device,
            "all-zero scratchpad (data line shorted or probe not responding)",
        ));
    }

    let temp_line = lines
        .next()
        .ok_or_else(|| parse_error(device, "second line with `t=` is missing"))?;
    let Some((_, value)) = temp_line.rsplit_once("t=") else {
        return Err(parse_error(
            device,
            &format!("second line has no `t=`: {}", quote(temp_line)),
        ));
    };
    let millidegrees: i64 = value.trim().parse().map_err(|_| {
        parse_error(
            device,
            &format!("`t=` value is not an integer: {}", quote(value)),
        )
    })?;
    if millidegrees == POWER_ON_RESET_MILLIDEGREES {
        return Err(parse_error(
            device,
            "t=85000 is the power-on reset value, not a measurement (check VDD / parasite power)",
        ));
    }
    if !RANGE_MILLIDEGREES.contains(&millidegrees) {
        return Err(parse_error(
            device,
            &format!("t={millidegrees} is outside the probe's range −55…125 °C"),
        ));
    }
    Ok(millidegrees as f64 / 1000.0)
}

/// Reads every 1-Wire temperature probe under `sysfs_root` whose series `filter` keeps, once. Series are `w1.<device id>`
/// (e.g. `w1.28-000005e2fdc3`), unit °C. Each probe that fails adds an error to the [`Scan`]
/// while the others still read. No `bus/w1/devices` directory (w1 overlay not loaded) means
/// no probes, not an error.
///
/// Blocking: the kernel takes about 750 ms per probe, so call this off the async runtime.
pub fn scan_w1(sysfs_root: &Path, ts_ms: i64, filter: &SeriesFilter) -> Scan {
    let mut scan = Scan::default();
    let devices = match list_dir(&sysfs_root.join("bus/w1/devices")) {
        Ok(devices) => devices,
        Err(e) => {
            scan.sample.errors.push(e);
            return scan;
        }
    };
    for (id, path) in devices {
        let series = format!("w1.{id}");
        if !is_therm_device(&id) || !filter.matches(&series) {
            continue;
        }
        scan.devices.push(path.clone());
        let file = path.join("w1_slave");
        let result = read_attr(&file).and_then(|text| match text {
            Some(text) => parse_w1_slave(&text, &file),
            None => Err(parse_error(
                &file,
                "probe returned no data (EINVAL/ENODATA)",
            )),
        });
        match result {
            Ok(celsius) => {
                scan.sample
                    .readings
                    .push(Reading::new(series, ts_ms, celsius, Some(W1_UNIT)))
            }
            Err(e) => scan.sample.errors.push(e),
        }
    }
    scan
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n\
                        72 01 4b 46 7f ff 0e 10 57 t=23125\n";

    fn dev() -> &'static Path {
        Path::new("/sys/bus/w1/devices/28-000005e2fdc3/w1_slave")
    }

    fn parse_err(text: &str) -> String {
        match parse_w1_slave(text, dev()) {
            Err(SourceError::Parse { device, detail }) => {
                assert_eq!(device, dev().display().to_string());
                detail
            }
            other => panic!("expected Parse for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn good_reading() {
        assert_eq!(parse_w1_slave(GOOD, dev()).expect("good"), 23.125);
    }

    #[test]
    fn negative_reading() {
        let text = "5e ff 4b 46 7f ff 02 10 9e : crc=9e YES\n\
                    5e ff 4b 46 7f ff 02 10 9e t=-10125\n";
        assert_eq!(parse_w1_slave(text, dev()).expect("negative"), -10.125);
    }

    #[test]
    fn crc_no_is_checksum_error_naming_device() {
        let text = "ff ff ff ff ff ff ff ff ff : crc=c9 NO\n\
                    ff ff ff ff ff ff ff ff ff t=-62\n";
        match parse_w1_slave(text, dev()) {
            Err(SourceError::Checksum { device, detail }) => {
                assert!(device.contains("28-000005e2fdc3"), "{device}");
                assert!(detail.contains("crc=c9 NO"), "{detail}");
            }
            other => panic!("expected Checksum, got {other:?}"),
        }
    }

    #[test]
    fn power_on_reset_value_rejected() {
        let text = "50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n\
                    50 05 4b 46 7f ff 0c 10 1c t=85000\n";
        assert!(parse_err(text).contains("power-on reset value"));
    }

    #[test]
    fn all_zero_scratchpad_rejected() {
        let text = "00 00 00 00 00 00 00 00 00 : crc=00 YES\n\
                    00 00 00 00 00 00 00 00 00 t=0\n";
        assert!(parse_err(text).contains("all-zero"));
    }

    #[test]
    fn garbage_rejected() {
        assert!(parse_err("").contains("empty"));
        assert!(parse_err("hello world").contains("crc"));
        assert!(parse_err("72 01 : crc=57 MAYBE\n72 01 t=1").contains("neither YES nor NO"));
        assert!(parse_err("72 01 4b : crc=57 YES\n").contains("missing"));
        assert!(parse_err("72 01 4b : crc=57 YES\n72 01 4b x=5").contains("no `t=`"));
        assert!(parse_err("72 01 4b : crc=57 YES\n72 01 4b t=abc").contains("not an integer"));
        assert!(parse_err("72 01 4b : crc=57 YES\n72 01 4b t=130000").contains("outside"));
    }

    #[test]
    fn therm_family_ids() {
        assert!(is_therm_device("28-000005e2fdc3"));
        assert!(is_therm_device("10-000802b3c5a1"));
        assert!(!is_therm_device("w1_bus_master1"));
        assert!(
            !is_therm_device("01-000005e2fdc3"),
            "DS2401 id chip, no temperature"
        );
        assert!(!is_therm_device("28-00000"));
    }
}
