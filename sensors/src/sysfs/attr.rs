//! Reading sysfs attribute files and listing device directories, with the kernel's error
//! conventions mapped onto [`SourceError`]. Owns only file access; it must not know any sensor
//! kind's naming or units.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::SourceError;
use crate::sample::sanitize_segment;

/// sysfs attributes are at most one page; anything longer is not an attribute (a fixture tree
/// or a wrong root), and reading it whole would let a bad path cost unbounded memory.
const MAX_ATTR_BYTES: u64 = 8 * 1024;

/// How many characters of an unparseable value an error message quotes.
const QUOTE_CHARS: usize = 48;

/// Reads a whole attribute file as text, bounded to [`MAX_ATTR_BYTES`].
fn read_text(path: &Path) -> io::Result<String> {
    let mut buf = Vec::new();
    fs::File::open(path)?
        .take(MAX_ATTR_BYTES)
        .read_to_end(&mut buf)?;
    String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// What an I/O error on a sysfs attribute means.
enum Failure {
    /// The sensor exists but has no value right now: drivers answer `EINVAL` for a disabled
    /// zone and `ENODATA` when the device behind it is down (e.g. a Wi-Fi card's sensor with
    /// the interface down). Not worth an error; the next round may have one.
    NoValue,
    /// A real failure to report.
    Error(SourceError),
}

fn classify(path: &Path, err: io::Error) -> Failure {
    match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENODATA) => return Failure::NoValue,
        // The device went away between listing and reading (unplugged probe, unbound driver).
        Some(libc::ENODEV) | Some(libc::ENXIO) => {
            return Failure::Error(missing(path, &err.to_string()));
        }
        _ => {}
    }
    if err.kind() == io::ErrorKind::NotFound {
        return Failure::Error(missing(path, &err.to_string()));
    }
    if err.kind() == io::ErrorKind::InvalidData {
        return Failure::Error(parse_error(path, "attribute is not valid UTF-8"));
    }
    Failure::Error(SourceError::Io {
        path: path.to_path_buf(),
        source: err,
    })
}

/// A [`SourceError::DeviceMissing`] naming `path`.
pub(crate) fn missing(path: &Path, detail: &str) -> SourceError {
    SourceError::DeviceMissing {
        device: path.display().to_string(),
        detail: detail.to_owned(),
    }
}

/// A [`SourceError::Parse`] naming `path`.
pub(crate) fn parse_error(path: &Path, detail: &str) -> SourceError {
    SourceError::Parse {
        device: path.display().to_string(),
        detail: detail.to_owned(),
    }
}

/// `text` shortened for an error message.
pub(crate) fn quote(text: &str) -> String {
    let short: String = text.chars().take(QUOTE_CHARS).collect();
    if short.len() < text.len() {
        format!("{short:?}…")
    } else {
        format!("{short:?}")
    }
}

/// Reads an attribute, trimmed. `Ok(None)` means the sensor currently has no value
/// (`EINVAL`/`ENODATA`); a missing file is [`SourceError::DeviceMissing`].
pub fn read_attr(path: &Path) -> Result<Option<String>, SourceError> {
    match read_text(path) {
        Ok(text) => Ok(Some(text.trim().to_owned())),
        Err(err) => match classify(path, err) {
            Failure::NoValue => Ok(None),
            Failure::Error(e) => Err(e),
        },
    }
}

/// Like [`read_attr`] but a missing file is `Ok(None)` too: for optional attributes such as
/// labels, names and IIO scales.
pub fn read_optional_attr(path: &Path) -> Result<Option<String>, SourceError> {
    match read_attr(path) {
        Err(SourceError::DeviceMissing { .. }) if !path.exists() => Ok(None),
        other => other,
    }
}

/// Parses an attribute's text as a finite number (integers like `48312` and IIO fractions like
/// `100.856640625` alike).
pub fn parse_number(path: &Path, text: &str) -> Result<f64, SourceError> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(parse_error(
            path,
            &format!("expected a number, got {}", quote(text)),
        )),
    }
}

/// Reads a numeric attribute; `Ok(None)` as for [`read_attr`].
pub fn read_number(path: &Path) -> Result<Option<f64>, SourceError> {
    match read_attr(path)? {
        Some(text) => parse_number(path, &text).map(Some),
        None => Ok(None),
    }
}

/// Reads an optional numeric attribute (absent file → `Ok(None)`).
pub fn read_optional_number(path: &Path) -> Result<Option<f64>, SourceError> {
    match read_optional_attr(path)? {
        Some(text) => parse_number(path, &text).map(Some),
        None => Ok(None),
    }
}

/// Entry names and paths of `dir`, sorted by name. A missing directory is an empty list: the
/// kernel creates class directories only when a driver of that kind is loaded.
pub fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>, SourceError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(SourceError::Io {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| SourceError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        // Non-UTF-8 names are not kernel sysfs names; skip rather than fail the whole kind.
        if let Ok(name) = entry.file_name().into_string() {
            out.push((name, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Entries of `dir` named `<prefix><number>` (e.g. `thermal_zone3`, `hwmon0`,
/// `iio:device1`), sorted numerically so `hwmon10` follows `hwmon9`.
pub fn numbered_entries(dir: &Path, prefix: &str) -> Result<Vec<(u64, PathBuf)>, SourceError> {
    let mut out: Vec<(u64, PathBuf)> = list_dir(dir)?
        .into_iter()
        .filter_map(|(name, path)| {
            let digits = name.strip_prefix(prefix)?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            digits.parse().ok().map(|n| (n, path))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Numbered devices under `dir` (see [`numbered_entries`]) with unique names: each device's
/// `name_attr` file, sanitized, or `<fallback><index>` when it is absent or unreadable; names
/// shared by several devices are made unique by [`disambiguate`].
pub fn named_devices(
    dir: &Path,
    prefix: &str,
    name_attr: &str,
    fallback: &str,
) -> Result<Vec<(u64, PathBuf, String)>, SourceError> {
    let devices = numbered_entries(dir, prefix)?;
    let mut names: Vec<(u64, String)> = devices
        .iter()
        .map(|(index, path)| {
            let name = match read_optional_attr(&path.join(name_attr)) {
                Ok(name) => name.and_then(|n| sanitize_segment(&n)),
                Err(e) => {
                    tracing::debug!(error = %e, "device name unreadable");
                    None
                }
            };
            (*index, name.unwrap_or_else(|| format!("{fallback}{index}")))
        })
        .collect();
    disambiguate(&mut names);
    Ok(devices
        .into_iter()
        .zip(names)
        .map(|((index, path), (_, name))| (index, path, name))
        .collect())
}

/// Makes device names unique: a name shared by several devices gets `_<index>` appended on
/// every one of them (two `acpitz` zones become `acpitz_0` and `acpitz_1`), so no series ever
/// mixes two sensors and none silently changes meaning when a second device appears.
pub fn disambiguate(devices: &mut [(u64, String)]) {
    let counts = devices
        .iter()
        .fold(std::collections::HashMap::new(), |mut m, (_, n)| {
            *m.entry(n.clone()).or_insert(0usize) += 1;
            m
        });
    for (index, name) in devices.iter_mut() {
        if counts.get(name.as_str()).copied().unwrap_or(0) > 1 {
            *name = format!("{name}_{index}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_and_reject_garbage() {
        let p = Path::new("/sys/x/temp");
        assert_eq!(parse_number(p, "48312\n").expect("int"), 48312.0);
        assert_eq!(parse_number(p, "-1250").expect("neg"), -1250.0);
        assert_eq!(
            parse_number(p, "100.856640625").expect("frac"),
            100.856640625
        );
        for bad in ["", "abc", "NaN", "inf", "12 34"] {
            match parse_number(p, bad) {
                Err(SourceError::Parse { device, .. }) => assert_eq!(device, "/sys/x/temp"),
                other => panic!("{bad:?}: expected Parse, got {other:?}"),
            }
        }
    }

    #[test]
    fn missing_file_is_device_missing_but_optional_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("temp");
        match read_attr(&path) {
            Err(SourceError::DeviceMissing { device, .. }) => {
                assert_eq!(device, path.display().to_string())
            }
            other => panic!("expected DeviceMissing, got {other:?}"),
        }
        assert_eq!(read_optional_number(&path).expect("absent is ok"), None);
        fs::write(&path, "2.5\n").expect("write");
        assert_eq!(read_optional_number(&path).expect("present"), Some(2.5));
    }

    #[test]
    fn numbered_entries_sort_numerically_and_skip_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["hwmon10", "hwmon2", "hwmon", "hwmonX", "other"] {
            fs::create_dir(dir.path().join(name)).expect("mkdir");
        }
        let found: Vec<u64> = numbered_entries(dir.path(), "hwmon")
            .expect("list")
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(found, vec![2, 10]);
        assert!(
            numbered_entries(&dir.path().join("absent"), "hwmon")
                .expect("absent dir is empty")
                .is_empty()
        );
    }

    #[test]
    fn duplicates_get_index_suffix() {
        let mut devices = vec![
            (0, "acpitz".to_owned()),
            (1, "x86_pkg_temp".to_owned()),
            (2, "acpitz".to_owned()),
        ];
        disambiguate(&mut devices);
        let names: Vec<&str> = devices.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(names, ["acpitz_0", "x86_pkg_temp", "acpitz_2"]);
    }

    #[test]
    fn kernel_errors_are_classified() {
        let p = Path::new("/sys/class/thermal/thermal_zone1/temp");
        for errno in [libc::EINVAL, libc::ENODATA] {
            assert!(matches!(
                classify(p, io::Error::from_raw_os_error(errno)),
                Failure::NoValue
            ));
        }
        for errno in [libc::ENODEV, libc::ENOENT, libc::ENXIO] {
            assert!(matches!(
                classify(p, io::Error::from_raw_os_error(errno)),
                Failure::Error(SourceError::DeviceMissing { .. })
            ));
        }
        match classify(p, io::Error::from_raw_os_error(libc::EIO)) {
            Failure::Error(SourceError::Io { path, .. }) => assert_eq!(path, p),
            _ => panic!("EIO must be an Io error naming the path"),
        }
    }

    #[test]
    fn quote_shortens_long_text() {
        let long = "x".repeat(200);
        let q = quote(&long);
        assert!(q.len() < 60, "{q}");
        assert!(q.ends_with('…'));
        assert_eq!(quote("ab"), "\"ab\"");
    }
}
