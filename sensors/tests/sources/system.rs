//! The `system` source against the Pi `/proc` + `/sys` fixtures, and against the real host.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use kdelta_sensors::system::{SystemConfig, SystemSource};
use kdelta_sensors::{PolledSource, SourceError};

use crate::harness::{assert_close, copy_fixture, fixture, get, names};

const TS: i64 = 1_718_012_345_000;

fn config(proc_root: &Path, sysfs_root: &Path) -> SystemConfig {
    SystemConfig {
        proc_root: proc_root.to_path_buf(),
        sysfs_root: sysfs_root.to_path_buf(),
        disk_path: fixture(""),
        ..SystemConfig::default()
    }
}

#[test]
fn pi_fixture_first_round() {
    let mut source =
        SystemSource::new(config(&fixture("pi/proc"), &fixture("pi/sys"))).expect("valid");
    let sample = source.sample_blocking(TS);
    assert!(sample.errors.is_empty(), "{:?}", sample.errors);
    let r = &sample.readings;

    assert!(
        !names(r).contains(&"system.cpu_usage"),
        "usage needs two rounds"
    );
    assert_close(get(r, "system.load1").value, 0.52);
    assert_close(get(r, "system.load5").value, 0.58);
    assert_close(get(r, "system.load15").value, 0.59);
    assert_eq!(get(r, "system.load1").unit, None);

    let used = get(r, "system.mem_used");
    assert_close(used.value, ((3_884_096 - 3_242_848) * 1024) as f64);
    assert_eq!(used.unit.as_deref(), Some("B"));
    let pct = get(r, "system.mem_used_pct");
    assert_close(pct.value, 641_248.0 / 3_884_096.0 * 100.0);
    assert_eq!(pct.unit.as_deref(), Some("%"));

    assert_close(get(r, "system.uptime").value, 350_735.47);
    assert_eq!(get(r, "system.uptime").unit.as_deref(), Some("s"));

    assert_close(get(r, "system.net.eth0.rx_bytes").value, 1_827_461_023.0);
    assert_close(get(r, "system.net.eth0.tx_bytes").value, 98_765_432.0);
    assert_close(get(r, "system.net.wlan0.rx_bytes").value, 0.0);
    assert!(!names(r).iter().any(|n| n.starts_with("system.net.lo.")));

    let disk = get(r, "system.disk_used");
    assert!(disk.value > 0.0);
    let disk_pct = get(r, "system.disk_used_pct").value;
    assert!((0.0..=100.0).contains(&disk_pct), "{disk_pct}");

    // Temperatures only: the SHT3x humidity and INA219 rails belong to the sysfs source.
    let temps: Vec<&str> = names(r)
        .into_iter()
        .filter(|n| !n.starts_with("system."))
        .collect();
    assert_eq!(
        temps,
        [
            "thermal.cpu-thermal",
            "hwmon.cpu_thermal.temp1",
            "hwmon.sht3x.temp1"
        ]
    );
    assert_close(get(r, "thermal.cpu-thermal").value, 48.312);
    assert!(r.iter().all(|reading| reading.ts_ms == TS));
}

#[test]
fn cpu_usage_from_two_stat_samples() {
    let proc = copy_fixture("pi/proc");
    let mut source = SystemSource::new(config(proc.path(), &fixture("pi/sys"))).expect("valid");
    source.sample_blocking(TS);
    // 10 s later: +200 user, +50 system, +700 idle, +50 iowait, +20 softirq.
    let stat = fs::read_to_string(proc.path().join("stat")).expect("read stat");
    let stat = stat.replacen(
        "cpu  1084570 2173 368592 49620311 41871 0 14360 0 0 0",
        "cpu  1084770 2173 368642 49621011 41921 0 14380 0 0 0",
        1,
    );
    fs::write(proc.path().join("stat"), stat).expect("write stat");
    let sample = source.sample_blocking(TS + 10_000);
    let usage = get(&sample.readings, "system.cpu_usage");
    assert_close(usage.value, 270.0 / 1020.0 * 100.0);
    assert_eq!(usage.unit.as_deref(), Some("%"));

    // Unchanged counters: no time passed, so no usage figure rather than a made-up 0 %.
    let sample = source.sample_blocking(TS + 20_000);
    assert!(!names(&sample.readings).contains(&"system.cpu_usage"));
}

#[test]
fn no_thermal_or_hwmon_is_not_an_error() {
    let empty_sys = tempfile::tempdir().expect("tempdir");
    let mut source =
        SystemSource::new(config(&fixture("pi/proc"), empty_sys.path())).expect("valid");
    let sample = source.sample_blocking(TS);
    assert!(sample.errors.is_empty(), "{:?}", sample.errors);
    assert!(
        names(&sample.readings)
            .iter()
            .all(|n| n.starts_with("system."))
    );
    assert_eq!(sample.readings.len(), 12);
}

#[test]
fn temperatures_can_be_turned_off() {
    let mut source = SystemSource::new(SystemConfig {
        temperatures: false,
        ..config(&fixture("pi/proc"), &fixture("pi/sys"))
    })
    .expect("valid");
    let sample = source.sample_blocking(TS);
    assert!(
        names(&sample.readings)
            .iter()
            .all(|n| n.starts_with("system."))
    );
}

#[test]
fn missing_proc_file_is_a_partial_failure_naming_it() {
    let proc = copy_fixture("pi/proc");
    let loadavg = proc.path().join("loadavg");
    fs::remove_file(&loadavg).expect("remove");
    fs::write(proc.path().join("uptime"), "garbage\n").expect("corrupt uptime");
    let mut source = SystemSource::new(config(proc.path(), &fixture("pi/sys"))).expect("valid");
    let sample = source.sample_blocking(TS);
    assert!(names(&sample.readings).contains(&"system.mem_used"));
    assert!(!names(&sample.readings).contains(&"system.load1"));
    match &sample.errors[..] {
        [
            SourceError::DeviceMissing { device, .. },
            SourceError::Parse { device: bad, .. },
        ] => {
            assert_eq!(device, &loadavg.display().to_string());
            assert!(bad.ends_with("uptime"), "{bad}");
        }
        other => panic!("expected DeviceMissing + Parse, got {other:?}"),
    }
    assert_eq!(source.last_errors().len(), 2);
}

#[tokio::test]
async fn missing_proc_root_fails_the_round() {
    let nowhere = tempfile::tempdir().expect("tempdir");
    let mut source = SystemSource::new(SystemConfig {
        disk_path: nowhere.path().join("unmounted"),
        temperatures: false,
        ..config(&nowhere.path().join("proc"), nowhere.path())
    })
    .expect("valid");
    match source.sample().await {
        Err(SourceError::DeviceMissing { device, .. }) => assert!(device.ends_with("proc/stat")),
        other => panic!("expected DeviceMissing, got {other:?}"),
    }
}

/// The zero-config promise: on any Linux host, `kind = "system"` with defaults records CPU,
/// memory, disk and uptime. Temperatures are not required (CI machines are often VMs).
#[tokio::test]
async fn real_host_proc_and_sys() {
    let mut source = SystemSource::new(SystemConfig::default()).expect("defaults are valid");
    let first = source.sample().await.expect("host /proc readable");
    for series in [
        "system.load1",
        "system.mem_used",
        "system.mem_used_pct",
        "system.uptime",
        "system.disk_used_pct",
    ] {
        assert!(
            names(&first).contains(&series),
            "{series} in {:?}",
            names(&first)
        );
    }
    let mem = get(&first, "system.mem_used_pct").value;
    assert!(mem > 0.0 && mem < 100.0, "{mem}");
    assert!(get(&first, "system.uptime").value > 0.0);

    // CPU usage needs ticks to elapse between two rounds; poll with a deadline.
    let deadline = Instant::now() + Duration::from_secs(5);
    let usage = loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let round = source.sample().await.expect("second round");
        if let Some(r) = round.iter().find(|r| r.series == "system.cpu_usage") {
            break r.value;
        }
        assert!(Instant::now() < deadline, "no system.cpu_usage within 5 s");
    };
    assert!((0.0..=100.0).contains(&usage), "{usage}");
}
