//! One round of a multi-sensor source: the readings that worked plus the errors of the sensors
//! that did not. Owns the partial-failure policy shared by the `system` and `sysfs` sources;
//! it must not decide scheduling or retries (the agent does).

use crate::{Reading, SourceError};

/// The outcome of sampling a source that reads many sensors at once.
///
/// One broken probe must not hide the twenty that work, so a round keeps both: the readings
/// that were read and one error per sensor that failed. [`Sample::into_result`] turns this into
/// the [`PolledSource`](crate::PolledSource) contract.
#[derive(Debug, Default)]
pub struct Sample {
    /// Readings that were read successfully, in a stable order (by device, then channel).
    pub readings: Vec<Reading>,
    /// One error per sensor or file that failed this round; each names its device path.
    pub errors: Vec<SourceError>,
}

impl Sample {
    /// An empty round.
    pub fn new() -> Self {
        Sample::default()
    }

    /// Appends everything from `other` (readings and errors), keeping order.
    pub fn extend(&mut self, other: Sample) {
        self.readings.extend(other.readings);
        self.errors.extend(other.errors);
    }

    /// True when nothing was read and nothing failed (no sensors present).
    pub fn is_empty(&self) -> bool {
        self.readings.is_empty() && self.errors.is_empty()
    }

    /// Applies the [`PolledSource`](crate::PolledSource) contract: when at least one reading
    /// worked, returns them and logs each error at `debug` (the agent polls again soon, and a
    /// flapping probe must not flood the journal); when nothing worked but something failed,
    /// returns the first error. An empty round is `Ok(vec![])`.
    pub fn into_result(self, source: &str) -> Result<Vec<Reading>, SourceError> {
        if self.readings.is_empty() {
            if let Some(first) = self.errors.into_iter().next() {
                return Err(first);
            }
            return Ok(Vec::new());
        }
        for error in &self.errors {
            tracing::debug!(source, code = error.code(), %error, "sensor failed; keeping the others");
        }
        Ok(self.readings)
    }
}

/// Turns a device or label name into a series-name segment: lowercase ASCII letters, digits,
/// `-` and `_`; anything else (spaces, dots, slashes) becomes `_`, runs of `_` collapse and
/// leading/trailing `_` are trimmed. Dots are replaced because they separate series levels.
/// Returns `None` when nothing usable is left.
pub fn sanitize_segment(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    for c in raw.trim().chars() {
        let c = c.to_ascii_lowercase();
        let keep = c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
        let c = if keep { c } else { '_' };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    let trimmed = out.trim_matches('_');
    if trimmed.is_empty() {
        None
    } else {
        Some(trimmed.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn missing(device: &str) -> SourceError {
        SourceError::DeviceMissing {
            device: device.into(),
            detail: "gone".into(),
        }
    }

    #[test]
    fn partial_failure_keeps_readings() {
        let sample = Sample {
            readings: vec![Reading::new("a", 1, 2.5, Some("°C"))],
            errors: vec![missing("/sys/x")],
        };
        let readings = sample.into_result("t").expect("partial round is Ok");
        assert_eq!(readings.len(), 1);
        assert_eq!(readings[0].value, 2.5);
    }

    #[test]
    fn total_failure_returns_first_error() {
        let sample = Sample {
            readings: vec![],
            errors: vec![missing("/sys/first"), missing("/sys/second")],
        };
        match sample.into_result("t") {
            Err(SourceError::DeviceMissing { device, .. }) => assert_eq!(device, "/sys/first"),
            other => panic!("expected DeviceMissing, got {other:?}"),
        }
    }

    #[test]
    fn empty_round_is_ok_and_empty() {
        assert!(Sample::new().is_empty());
        assert_eq!(Sample::new().into_result("t").expect("ok"), vec![]);
    }

    #[test]
    fn sanitize_lowercases_and_replaces() {
        assert_eq!(
            sanitize_segment("Package id 0").as_deref(),
            Some("package_id_0")
        );
        assert_eq!(
            sanitize_segment("cpu-thermal").as_deref(),
            Some("cpu-thermal")
        );
        assert_eq!(sanitize_segment(" Core 0 ").as_deref(), Some("core_0"));
        assert_eq!(sanitize_segment("eth0.100").as_deref(), Some("eth0_100"));
        assert_eq!(sanitize_segment("a  /  b").as_deref(), Some("a_b"));
        assert_eq!(sanitize_segment("  "), None);
        assert_eq!(sanitize_segment("°"), None);
    }
}
