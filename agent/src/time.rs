//! The agent's one time module: the wall clock in unix milliseconds, RFC 3339 in and out.
//! Reading the clock and parsing come from [`kdelta_sensors::time`] (the lowest crate that
//! needs them, so device lines, the HTTP API and MQTT payloads read a timestamp alike); this
//! module adds the formatting the CLI prints. A leaf: it uses no other module of the agent.

use std::time::{Duration, UNIX_EPOCH};

pub use kdelta_sensors::time::{now_ms, parse_rfc3339, parse_rfc3339_lenient};

/// The wall clock in unix milliseconds as `u64` (the sync protocol's unit; 0 before 1970).
pub fn now_ms_u64() -> u64 {
    u64::try_from(now_ms()).unwrap_or(0)
}

/// Unix ms as RFC 3339 UTC with milliseconds (`2025-11-24T16:00:00.123Z`); times before 1970
/// are shown as the plain number.
pub fn format_rfc3339_ms(ms: i64) -> String {
    if ms < 0 {
        return ms.to_string();
    }
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms as u64)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_back() {
        assert_eq!(
            format_rfc3339_ms(1_764_000_000_123),
            "2025-11-24T16:00:00.123Z"
        );
        assert_eq!(
            parse_rfc3339(&format_rfc3339_ms(1_764_000_000_123)),
            Some(1_764_000_000_123)
        );
        assert_eq!(format_rfc3339_ms(-5), "-5");
        assert!(now_ms_u64() > 0);
    }
}
