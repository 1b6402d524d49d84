//! Wall time for every crate above this one: the clock in unix milliseconds and the one
//! RFC 3339 parser. The decoders of device lines use them, and so does the agent (its HTTP
//! API, MQTT payloads and CLI read timestamps through `kdelta::time`, which re-exports these),
//! so a timestamp means the same wherever it arrives. Pure functions; no time zones beyond
//! numeric offsets, no locale.

/// The end of what a store can hold: timestamps are `0..MAX_TIMESTAMP_MS` unix ms (1970 up
/// to the start of the year 10000). Equal to `kdelta_sync::MAX_TS_MS` (checked by a test in
/// the agent, which sees both crates).
pub const MAX_TIMESTAMP_MS: i64 = 253_402_300_800_000;

/// The wall clock in unix milliseconds (0 if the clock reads before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Parses RFC 3339 (`2025-11-24T16:00:00.250+01:00`, `t`/space separator and `z` accepted)
/// or a bare date (`2025-11-24`, midnight UTC) into unix ms. A time without a zone is refused
/// (see [`parse_rfc3339_lenient`]); fractions below a millisecond are truncated.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let year = num(0, 4)?;
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let (month, day) = (num(5, 2)?, num(8, 2)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    if b.len() == 10 {
        return Some(days * 86_400_000);
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' '))
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return None;
    }
    let (h, m, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 3 {
                millis = millis * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..3 {
            millis *= 10;
        }
    }
    let offset_s = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), ..] if b.len() == i + 6 && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let off = oh * 3600 + om * 60;
            if *sign == b'+' { off } else { -off }
        }
        _ => return None,
    };
    let secs = days * 86_400 + h * 3600 + m * 60 + sec - offset_s;
    Some(secs * 1000 + millis)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// [`parse_rfc3339`], except that a time without a zone (`2025-11-24 16:00:00`) is read as UTC:
/// devices and third-party payloads often leave the zone out.
pub fn parse_rfc3339_lenient(s: &str) -> Option<i64> {
    parse_rfc3339(s).or_else(|| parse_rfc3339(&format!("{s}Z")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_forms() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2025-11-24T16:00:00Z"),
            Some(1_764_000_000_000)
        );
        assert_eq!(
            parse_rfc3339("2025-11-24T17:00:00+01:00"),
            Some(1_764_000_000_000)
        );
        assert_eq!(
            parse_rfc3339("2025-11-24t15:30:00-00:30"),
            Some(1_764_000_000_000)
        );
        assert_eq!(
            parse_rfc3339("2025-11-24 16:00:00.25z"),
            Some(1_764_000_000_250)
        );
        assert_eq!(
            parse_rfc3339("2025-11-24T16:00:00.123456789Z"),
            Some(1_764_000_000_123)
        );
        assert_eq!(parse_rfc3339("2024-02-29"), Some(1_709_164_800_000));
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Some(-1000));
        for bad in [
            "",
            "2025-11-24T16:00:00",
            "2025-11-24T16:00Z",
            "2025-13-01T00:00:00Z",
            "2023-02-29",
            "2025-11-24T24:00:00Z",
            "2025-11-24T16:00:00.Z",
            "2025-11-24T16:00:00+0100",
            "2025-11-24T16:00:00Zjunk",
            "yesterday",
            "2025-1-24",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn lenient_reads_a_missing_zone_as_utc() {
        assert_eq!(
            parse_rfc3339_lenient("2025-11-24 16:00:00"),
            Some(1_764_000_000_000)
        );
        assert_eq!(
            parse_rfc3339_lenient("2025-11-24T17:00:00+01:00"),
            Some(1_764_000_000_000)
        );
        assert_eq!(parse_rfc3339_lenient("2025-11-24T16:00Z"), None);
    }

    #[test]
    fn now_is_after_2020() {
        assert!(now_ms() > 1_577_836_800_000);
    }
}
