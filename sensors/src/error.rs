//! The one error type of the sensors area. Every variant names the device (path, port or
//! address) so a log line alone tells the user which cable to check.

use std::path::PathBuf;

/// Why a source could not produce readings.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The device or file does not exist (unplugged, wrong path, driver not loaded).
    #[error("device {device} is missing: {detail}")]
    DeviceMissing {
        /// Path, port or address of the device.
        device: String,
        /// What the operating system said.
        detail: String,
    },
    /// The device did not answer in time.
    #[error("device {device} timed out after {timeout_ms} ms")]
    Timeout {
        /// Path, port or address of the device.
        device: String,
        /// The timeout that elapsed.
        timeout_ms: u64,
    },
    /// The device answered with something that could not be decoded.
    #[error("cannot parse data from {device}: {detail}")]
    Parse {
        /// Path, port or address of the device.
        device: String,
        /// What was wrong, with the offending text shortened.
        detail: String,
    },
    /// A checksum or CRC did not match.
    #[error("checksum mismatch from {device}: {detail}")]
    Checksum {
        /// Path, port or address of the device.
        device: String,
        /// Expected and received checksum.
        detail: String,
    },
    /// A Modbus exception response or other protocol-level refusal.
    #[error("device {device} refused the request: {detail}")]
    Protocol {
        /// Path, port or address of the device.
        device: String,
        /// The exception or refusal.
        detail: String,
    },
    /// Any other I/O error while talking to the device.
    #[error("I/O error on {path}: {source}", path = path.display())]
    Io {
        /// The file or device path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The source's configuration is invalid; `key` names the config key.
    #[error("invalid source config `{key}`: {detail}")]
    Config {
        /// The config key, e.g. `sources[2].baud`.
        key: String,
        /// What is wrong and what is allowed.
        detail: String,
    },
}

impl SourceError {
    /// True when retrying later may succeed (device missing, timeout, I/O): the agent keeps the
    /// source scheduled and reports the error as a status instead of stopping.
    pub fn is_transient(&self) -> bool {
        !matches!(self, SourceError::Config { .. })
    }

    /// Short machine-readable code for metrics and status (`device_missing`, `timeout`, …).
    pub fn code(&self) -> &'static str {
        match self {
            SourceError::DeviceMissing { .. } => "device_missing",
            SourceError::Timeout { .. } => "timeout",
            SourceError::Parse { .. } => "parse",
            SourceError::Checksum { .. } => "checksum",
            SourceError::Protocol { .. } => "protocol",
            SourceError::Io { .. } => "io",
            SourceError::Config { .. } => "config",
        }
    }
}
