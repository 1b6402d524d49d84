//! Fixture paths, tree copies and reading lookups shared by the `sources` tests.

use std::fs;
use std::path::{Path, PathBuf};

use kdelta_sensors::Reading;

/// Path of a fixture under `sensors/tests/fixtures`.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// A temporary copy of a fixture tree, for tests that change files.
pub fn copy_fixture(rel: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&fixture(rel), dir.path());
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for entry in fs::read_dir(from).expect("read fixture dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy fixture file");
        }
    }
}

/// The reading of `series`, or a panic listing what was there.
pub fn get<'a>(readings: &'a [Reading], series: &str) -> &'a Reading {
    readings
        .iter()
        .find(|r| r.series == series)
        .unwrap_or_else(|| panic!("no {series} in {:?}", names(readings)))
}

/// Series names, in order.
pub fn names(readings: &[Reading]) -> Vec<&str> {
    readings.iter().map(|r| r.series.as_str()).collect()
}

/// Asserts `actual` is within 1e-9 of `expected`.
#[track_caller]
pub fn assert_close(actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() < 1e-9,
        "expected {expected}, got {actual}"
    );
}
