//! Serial sources over pseudo-terminal pairs: the test writes to the master end what a device
//! would send, `SerialSource` reads the slave end like a real `/dev/ttyUSB0`.
//!
//! To assert *exactly* what a batch of lines produced, each batch ends with a sentinel line;
//! lines are processed in order, so once the sentinel's reading arrives every error for the
//! lines before it has already been reported.

use std::ffi::CStr;
use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kdelta_sensors::decode::LineFormat;
use kdelta_sensors::serial::{SerialConfig, SerialSource};
use kdelta_sensors::{Reading, SourceError, StreamingSource};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Generous: CI machines stall, and nothing here waits this long when it works.
const DEADLINE: Duration = Duration::from_secs(10);

/// A pseudo-terminal pair. The slave is kept open (in raw mode) so bytes written before the
/// source opens it are buffered unmodified instead of being cooked by the line discipline.
struct Pty {
    master: File,
    _slave: File,
    path: PathBuf,
}

fn check(rc: libc::c_int, what: &str) {
    assert!(rc == 0, "{what}: {}", std::io::Error::last_os_error());
}

fn open_pty() -> Pty {
    // SAFETY: plain libc calls on a descriptor we own; the name buffer outlives ptsname_r.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(
            master >= 0,
            "posix_openpt: {}",
            std::io::Error::last_os_error()
        );
        check(libc::grantpt(master), "grantpt");
        check(libc::unlockpt(master), "unlockpt");
        let mut name = [0 as libc::c_char; 128];
        check(
            libc::ptsname_r(master, name.as_mut_ptr(), name.len()),
            "ptsname_r",
        );
        let path = PathBuf::from(CStr::from_ptr(name.as_ptr()).to_str().unwrap());
        let master = File::from_raw_fd(master);
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(&path)
            .unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&slave);
        let mut termios: libc::termios = std::mem::zeroed();
        check(libc::tcgetattr(fd, &mut termios), "tcgetattr");
        libc::cfmakeraw(&mut termios);
        check(libc::tcsetattr(fd, libc::TCSANOW, &termios), "tcsetattr");
        Pty {
            master,
            _slave: slave,
            path,
        }
    }
}

impl Pty {
    /// Writes as the device would. Blocking is fine: the pty buffers far more than any test
    /// writes while the source is not reading.
    fn send(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).unwrap();
        self.master.flush().unwrap();
    }
}

/// A running source and the two channels it reports through.
struct Harness {
    readings: mpsc::Receiver<Reading>,
    errors: mpsc::Receiver<(&'static str, String)>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), SourceError>>,
}

fn config(port: &Path, format: LineFormat) -> SerialConfig {
    let mut c = SerialConfig::new(port, format);
    c.series_prefix = Some("dev".into());
    c.max_line_bytes = 64;
    c.reopen_backoff_max = Duration::from_millis(100);
    c
}

fn start(config: SerialConfig, sink_capacity: usize) -> Harness {
    let (tx, readings) = mpsc::channel(sink_capacity);
    let (error_tx, errors) = mpsc::channel(1024);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut source = SerialSource::new(config)?;
        let on_error = Box::new(move |e: &SourceError| {
            let _ = error_tx.try_send((e.code(), e.to_string()));
        });
        let shutdown = Box::pin(async move {
            let _ = stopped.await;
        });
        source.run(tx, on_error, shutdown).await
    });
    Harness {
        readings,
        errors,
        stop: Some(stop),
        task,
    }
}

impl Harness {
    async fn reading(&mut self) -> Reading {
        timeout(DEADLINE, self.readings.recv())
            .await
            .expect("no reading before the deadline")
            .expect("source stopped")
    }

    /// Readings up to and including the one of series `dev.end`.
    async fn readings_until_sentinel(&mut self) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        loop {
            let r = self.reading().await;
            let done = r.series == "dev.end";
            out.push((r.series, r.value));
            if done {
                return out;
            }
        }
    }

    async fn error(&mut self) -> (&'static str, String) {
        timeout(DEADLINE, self.errors.recv())
            .await
            .expect("no error before the deadline")
            .expect("source stopped")
    }

    /// Errors already reported, without waiting.
    fn reported_errors(&mut self) -> Vec<(&'static str, String)> {
        std::iter::from_fn(|| self.errors.try_recv().ok()).collect()
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let result = timeout(DEADLINE, self.task)
            .await
            .expect("source ignored shutdown");
        result.unwrap().unwrap();
    }
}

fn owned(v: &[(&str, f64)]) -> Vec<(String, f64)> {
    v.iter().map(|(s, x)| (s.to_string(), *x)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_with_garbage_partial_overlong_and_bad_utf8() {
    let mut pty = open_pty();
    let mut h = start(config(&pty.path, LineFormat::JsonLines), 64);
    pty.send(b"{\"temp\": 21.5, \"hum\": 40}\n");
    pty.send(b"\x00\x01garbage\xfe\n");
    pty.send(b"{\"te");
    pty.send(b"mp\": 22}\r\n");
    pty.send(format!("{{\"long\": \"{}\"}}\n", "x".repeat(200)).as_bytes());
    pty.send(b"{\"ok\": \"\xff\"}\r");
    pty.send(b"{\"nested\": {\"v\": -1.5}, \"s\": \"text\"}\n{\"end\": 1}\n");
    let got = h.readings_until_sentinel().await;
    assert_eq!(
        got,
        owned(&[
            ("dev.hum", 40.0),
            ("dev.temp", 21.5),
            ("dev.temp", 22.0),
            ("dev.nested.v", -1.5),
            ("dev.end", 1.0)
        ])
    );
    let errors = h.reported_errors();
    let codes: Vec<&str> = errors.iter().map(|e| e.0).collect();
    assert_eq!(codes, ["parse", "parse", "parse"], "{errors:?}");
    assert!(errors[1].1.contains("max_line_bytes"), "{errors:?}");
    assert!(errors[2].1.contains("UTF-8"), "{errors:?}");
    assert!(
        errors
            .iter()
            .all(|e| e.1.contains(pty.path.to_str().unwrap())),
        "{errors:?}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_with_header_and_bad_rows() {
    let mut pty = open_pty();
    let mut h = start(config(&pty.path, LineFormat::Csv), 64);
    pty.send(b"temp,hum,end\n21.5,40,\n1,2,3,4\n22,abc,\n,41,1\n");
    let got = h.readings_until_sentinel().await;
    assert_eq!(
        got,
        owned(&[
            ("dev.temp", 21.5),
            ("dev.hum", 40.0),
            ("dev.hum", 41.0),
            ("dev.end", 1.0)
        ])
    );
    let errors = h.reported_errors();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].1.contains("expected 3 fields, got 4"),
        "{errors:?}"
    );
    assert!(errors[1].1.contains("column `hum`"), "{errors:?}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_with_configured_columns_and_timestamps() {
    let mut pty = open_pty();
    let mut c = config(&pty.path, LineFormat::Csv);
    c.csv_columns = Some(vec!["ts".into(), "temp".into(), "_".into(), "end".into()]);
    c.csv_delimiter = Some(';');
    let mut h = start(c, 64);
    pty.send(b"1700000000;21.5;ok;\n1700000001000;22;ok;1\n");
    let a = h.reading().await;
    assert_eq!(
        (a.series.as_str(), a.value, a.ts_ms),
        ("dev.temp", 21.5, 1_700_000_000_000)
    );
    let b = h.reading().await;
    assert_eq!(
        (b.series.as_str(), b.ts_ms),
        ("dev.temp", 1_700_000_001_000)
    );
    let end = h.reading().await;
    assert_eq!(
        (end.series.as_str(), end.ts_ms),
        ("dev.end", 1_700_000_001_000)
    );
    assert!(h.reported_errors().is_empty());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_value_lines() {
    let mut pty = open_pty();
    let mut h = start(config(&pty.path, LineFormat::KeyValue), 64);
    pty.send(b"temp=21.5 hum=40\r\nDHT read failed\ntemp=nan,hum=41,end=1\n");
    let got = h.readings_until_sentinel().await;
    assert_eq!(
        got,
        owned(&[
            ("dev.temp", 21.5),
            ("dev.hum", 40.0),
            ("dev.hum", 41.0),
            ("dev.end", 1.0)
        ])
    );
    let errors = h.reported_errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].1.contains("expected key=value"), "{errors:?}");
    h.shutdown().await;
}

/// `$body*hh` with the correct checksum.
fn nmea(body: &str) -> String {
    let sum = body.bytes().fold(0u8, |a, b| a ^ b);
    format!("${body}*{sum:02X}\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nmea_good_and_bad_checksums() {
    let mut pty = open_pty();
    let mut c = config(&pty.path, LineFormat::Nmea);
    c.series_prefix = None; // NMEA defaults to `gps.*`
    c.max_line_bytes = 4096;
    let mut h = start(c, 64);
    pty.send(b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*48\r\n");
    pty.send(nmea("GNRMC,123519,V,,,,,,,230394,,").as_bytes());
    pty.send(nmea("GPGSV,1,1,01,03,03,111,00").as_bytes());
    pty.send(nmea("GNRMC,123519,A,3351.000,S,15112.000,W,10.0,84.4,230394,,").as_bytes());
    let mut got = Vec::new();
    while got.len() < 4 {
        let r = h.reading().await;
        got.push((r.series, r.value, r.unit));
    }
    assert_eq!(got[0].0, "gps.latitude");
    assert!((got[0].1 + 33.85).abs() < 1e-9);
    assert!((got[1].1 + 151.2).abs() < 1e-9);
    assert_eq!(
        (got[2].0.as_str(), got[2].2.as_deref()),
        ("gps.speed", Some("m/s"))
    );
    assert!((got[2].1 - 5.144_444).abs() < 1e-5);
    assert_eq!(got[3].0, "gps.course");
    let errors = h.reported_errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, "checksum");
    assert!(
        errors[0].1.contains(pty.path.to_str().unwrap()),
        "{errors:?}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_gets_every_reading_in_order() {
    let mut pty = open_pty();
    let mut h = start(config(&pty.path, LineFormat::KeyValue), 1);
    let lines: String = (0..200).map(|i| format!("n={i}\n")).collect();
    pty.send(lines.as_bytes());
    for i in 0..200 {
        let r = h.reading().await;
        assert_eq!(r.value, f64::from(i));
        if i % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    h.shutdown().await;
}

/// Points `link` at `target` atomically, as udev does for `/dev/serial/by-id/…`.
fn relink(link: &Path, target: &Path) {
    let tmp = link.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unplug_is_reported_and_a_replugged_device_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyUSB-by-id");
    let mut first = open_pty();
    relink(&link, &first.path);
    let mut h = start(config(&link, LineFormat::KeyValue), 64);
    first.send(b"temp=1\n");
    assert_eq!(h.reading().await.value, 1.0);

    // Unplug: the device end goes away and its /dev/pts node with it.
    drop(first);
    let (code, message) = h.error().await;
    assert_eq!(code, "device_missing", "{message}");
    assert!(message.contains("ttyUSB-by-id"), "{message}");
    // While the device is gone the source keeps retrying, reporting each failed open.
    let (code, message) = h.error().await;
    assert_eq!(code, "device_missing", "{message}");

    // Replug: the stable name now leads to a new device.
    let mut second = open_pty();
    relink(&link, &second.path);
    second.send(b"temp=2\n");
    assert_eq!(h.reading().await.value, 2.0);
    second.send(b"temp=3\n");
    assert_eq!(h.reading().await.value, 3.0);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_device_is_retried_until_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = start(config(&dir.path().join("nope"), LineFormat::Nmea), 64);
    for _ in 0..3 {
        let (code, message) = h.error().await;
        assert_eq!(code, "device_missing", "{message}");
        assert!(message.contains("nope"), "{message}");
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_interrupts_a_full_sink() {
    let mut pty = open_pty();
    let mut h = start(config(&pty.path, LineFormat::KeyValue), 1);
    pty.send(b"a=1 b=2 c=3\n");
    // Only one reading fits; the source now waits on the sink. Shutdown must still end it.
    assert_eq!(h.reading().await.value, 1.0);
    h.shutdown().await;
}
