//! The `sysfs` source against the Pi fixture tree: every kind, filters, CRC failures,
//! unplugged probes and the async `PolledSource` path.

use std::fs;

use kdelta_sensors::sysfs::{SysfsConfig, SysfsSource};
use kdelta_sensors::{PolledSource, SourceError};

use crate::harness::{assert_close, copy_fixture, fixture, get, names};

const TS: i64 = 1_718_012_345_000;

#[test]
fn pi_fixture_reads_every_kind_with_units() {
    let mut source = SysfsSource::new(SysfsConfig::with_root(fixture("pi/sys"))).expect("valid");
    let sample = source.sample_blocking(TS);
    assert!(sample.errors.is_empty(), "{:?}", sample.errors);

    let expected: [(&str, f64, &str); 17] = [
        ("thermal.cpu-thermal", 48.312, "°C"),
        ("hwmon.cpu_thermal.temp1", 48.312, "°C"),
        ("hwmon.sht3x.temp1", 22.45, "°C"),
        ("hwmon.sht3x.humidity1", 45.25, "%"),
        ("hwmon.ina219.shunt_voltage", 0.002, "V"),
        ("hwmon.ina219.bus_voltage", 5.062, "V"),
        ("hwmon.ina219.power1", 6.325, "W"),
        ("hwmon.ina219.curr1", 1.25, "A"),
        ("w1.28-000005e2fdc3", 23.125, "°C"),
        ("w1.28-0316a2790fff", 19.5, "°C"),
        ("iio.bme280.humidityrelative", 46.33203125, "%"),
        ("iio.bme280.pressure", 100.856640625, "kPa"),
        ("iio.bme280.temp", 23.45, "°C"),
        ("iio.ads1115.voltage0", 1.65, "V"),
        ("iio.ads1115.voltage1", -0.0015, "V"),
        ("iio.mlx90614.temp_ambient", 25.85, "°C"),
        ("iio.mlx90614.temp_object", 31.85, "°C"),
    ];
    assert_eq!(
        names(&sample.readings),
        expected.iter().map(|e| e.0).collect::<Vec<_>>()
    );
    for ((series, value, unit), reading) in expected.iter().zip(&sample.readings) {
        assert_close(reading.value, *value);
        assert_eq!(reading.unit.as_deref(), Some(*unit), "{series}");
        assert_eq!(reading.ts_ms, TS);
    }
}

#[test]
fn each_kind_works_alone() {
    let only = |thermal, hwmon, w1, iio| {
        let config = SysfsConfig {
            thermal,
            hwmon,
            w1,
            iio,
            ..SysfsConfig::with_root(fixture("pi/sys"))
        };
        let mut source = SysfsSource::new(config).expect("valid");
        source.sample_blocking(TS).readings.len()
    };
    assert_eq!(only(true, false, false, false), 1);
    assert_eq!(only(false, true, false, false), 7);
    assert_eq!(only(false, false, true, false), 2);
    assert_eq!(only(false, false, false, true), 7);
}

#[test]
fn include_filter_keeps_prefixes_and_globs() {
    let config = SysfsConfig {
        include: vec!["w1.28-0316".into(), "iio.*.temp*".into()],
        ..SysfsConfig::with_root(fixture("pi/sys"))
    };
    let mut source = SysfsSource::new(config).expect("valid");
    let sample = source.sample_blocking(TS);
    assert_eq!(
        names(&sample.readings),
        [
            "w1.28-0316a2790fff",
            "iio.bme280.temp",
            "iio.mlx90614.temp_ambient",
            "iio.mlx90614.temp_object",
        ]
    );
}

#[test]
fn crc_failure_is_a_checksum_error_while_the_other_probe_reads() {
    let mut source =
        SysfsSource::new(SysfsConfig::with_root(fixture("w1_crc_no/sys"))).expect("valid");
    let sample = source.sample_blocking(TS);
    assert_eq!(names(&sample.readings), ["w1.28-000005e2fdc3"]);
    assert_close(sample.readings[0].value, 23.125);
    match &sample.errors[..] {
        [SourceError::Checksum { device, detail }] => {
            assert!(device.ends_with("28-0316a2790fff/w1_slave"), "{device}");
            assert!(detail.contains("crc=d7 NO"), "{detail}");
        }
        other => panic!("expected one Checksum error, got {other:?}"),
    }
    assert_eq!(source.last_errors().len(), 1);
}

#[tokio::test]
async fn crc_failure_alone_makes_the_round_fail() {
    let config = SysfsConfig {
        include: vec!["w1.28-0316a2790fff".into()],
        ..SysfsConfig::with_root(fixture("w1_crc_no/sys"))
    };
    let mut source = SysfsSource::new(config).expect("valid");
    match source.sample().await {
        Err(e @ SourceError::Checksum { .. }) => {
            assert_eq!(e.code(), "checksum");
            assert!(e.is_transient());
        }
        other => panic!("expected Checksum, got {other:?}"),
    }
}

#[test]
fn unplugged_probe_is_device_missing_until_it_returns() {
    let tree = copy_fixture("pi/sys");
    let probe = tree.path().join("bus/w1/devices/28-0316a2790fff");
    let config = SysfsConfig {
        include: vec!["w1.".into()],
        ..SysfsConfig::with_root(tree.path())
    };
    let mut source = SysfsSource::new(config).expect("valid");
    assert_eq!(source.sample_blocking(TS).readings.len(), 2);

    let saved = fs::read(probe.join("w1_slave")).expect("read probe");
    fs::remove_dir_all(&probe).expect("unplug");
    for round in 1..=2 {
        let sample = source.sample_blocking(TS + round);
        assert_eq!(names(&sample.readings), ["w1.28-000005e2fdc3"]);
        match &sample.errors[..] {
            [SourceError::DeviceMissing { device, .. }] => {
                assert_eq!(device, &probe.display().to_string())
            }
            other => panic!("round {round}: expected DeviceMissing, got {other:?}"),
        }
    }

    fs::create_dir(&probe).expect("replug");
    fs::write(probe.join("w1_slave"), saved).expect("restore probe");
    let sample = source.sample_blocking(TS + 3);
    assert!(sample.errors.is_empty(), "{:?}", sample.errors);
    assert_close(get(&sample.readings, "w1.28-0316a2790fff").value, 19.5);
}

#[test]
fn power_on_reset_value_is_rejected() {
    let tree = copy_fixture("pi/sys");
    let slave = tree.path().join("bus/w1/devices/28-000005e2fdc3/w1_slave");
    fs::write(
        &slave,
        "50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n50 05 4b 46 7f ff 0c 10 1c t=85000\n",
    )
    .expect("write");
    let mut source = SysfsSource::new(SysfsConfig::with_root(tree.path())).expect("valid");
    let sample = source.sample_blocking(TS);
    assert_eq!(sample.readings.len(), 16, "the other sensors still read");
    match &sample.errors[..] {
        [SourceError::Parse { device, detail }] => {
            assert_eq!(device, &slave.display().to_string());
            assert!(detail.contains("power-on reset value"), "{detail}");
        }
        other => panic!("expected one Parse error, got {other:?}"),
    }
}

#[tokio::test]
async fn polled_source_stamps_now_and_keeps_partial_results() {
    let mut source =
        SysfsSource::new(SysfsConfig::with_root(fixture("w1_crc_no/sys"))).expect("valid");
    assert_eq!(source.name(), "sysfs");
    let before = kdelta_sensors::now_ms();
    let readings = source.sample().await.expect("one probe still reads");
    let after = kdelta_sensors::now_ms();
    assert_eq!(names(&readings), ["w1.28-000005e2fdc3"]);
    assert!((before..=after).contains(&readings[0].ts_ms));
}

#[tokio::test]
async fn empty_root_fails_naming_the_root() {
    let empty = tempfile::tempdir().expect("tempdir");
    let mut source = SysfsSource::new(SysfsConfig::with_root(empty.path())).expect("valid");
    match source.sample().await {
        Err(SourceError::DeviceMissing { device, detail }) => {
            assert_eq!(device, empty.path().display().to_string());
            assert!(detail.contains("thermal, hwmon, w1, iio"), "{detail}");
        }
        other => panic!("expected DeviceMissing, got {other:?}"),
    }
}
