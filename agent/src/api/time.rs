//! Time parameters of the API: parsing of instants (unix ms, RFC 3339, `now`, `now-1h`),
//! as-of points (an HLC `<ms>:<logical>` or an instant) and bucket widths (`10s`, `1m`,
//! `1h`, or ms). Pure functions; errors are `400 bad_time` naming the parameter.

use kdelta_sync::{AsOf, Hlc};

use super::ApiError;

/// Current wall time, unix ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

const FORMS: &str =
    "use unix milliseconds (1764000000000), RFC 3339 (2025-11-24T16:00:00Z), `now` or `now-1h`";

/// Parses an instant given in parameter `param`: unix ms (an integer), RFC 3339 (`Z` or a
/// numeric offset; fractions below a millisecond are truncated; a bare date is midnight UTC),
/// `now`, or `now-<duration>` / `now+<duration>` (humantime: `90s`, `15m`, `1h 30m`, `7d`).
pub fn parse_instant(param: &str, text: &str) -> Result<i64, ApiError> {
    parse_instant_at(param, text, now_ms())
}

/// [`parse_instant`] with an explicit "now" (tests).
pub fn parse_instant_at(param: &str, text: &str, now: i64) -> Result<i64, ApiError> {
    let s = text.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    if let Some(rest) = s.strip_prefix("now") {
        let rest = rest.trim_start();
        if rest.is_empty() {
            return Ok(now);
        }
        let (sign, dur) = match rest.split_at(1) {
            ("-", d) => (-1i64, d),
            ("+", d) => (1i64, d),
            _ => return Err(bad(param, text)),
        };
        let d = humantime::parse_duration(dur.trim()).map_err(|_| bad(param, text))?;
        let ms = i64::try_from(d.as_millis()).map_err(|_| bad(param, text))?;
        return Ok(now.saturating_add(sign * ms));
    }
    parse_rfc3339(s).ok_or_else(|| bad(param, text))
}

fn bad(param: &str, text: &str) -> ApiError {
    let shown: String = text.chars().take(64).collect();
    ApiError::bad_time(format!(
        "`{param}`: cannot read {shown:?} as a time; {FORMS}"
    ))
}

/// Parses an as-of point: an HLC in its text form `<ms>:<logical>`, or an instant as in
/// [`parse_instant`] (must not be before 1970).
pub fn parse_as_of(param: &str, text: &str) -> Result<AsOf, ApiError> {
    let s = text.trim();
    if s.contains(':') && s.bytes().all(|b| b.is_ascii_digit() || b == b':') {
        return s
            .parse::<Hlc>()
            .map(AsOf::Hlc)
            .map_err(|e| ApiError::bad_time(format!("`{param}`: {e}")));
    }
    let ms = parse_instant(param, s).map_err(|_| {
        let shown: String = text.chars().take(64).collect();
        ApiError::bad_time(format!(
            "`{param}`: cannot read {shown:?} as a point in history; use an HLC (1764000000000:0) or {FORMS}"
        ))
    })?;
    let ms =
        u64::try_from(ms).map_err(|_| ApiError::bad_time(format!("`{param}` is before 1970")))?;
    Ok(AsOf::WallMs(ms))
}

/// Parses a bucket width: a humantime duration (`10s`, `1m`, `1h`, `500ms`) or plain ms.
pub fn parse_bucket(text: &str) -> Result<i64, ApiError> {
    let s = text.trim();
    let ms = match s.parse::<i64>() {
        Ok(ms) => Some(ms),
        Err(_) => humantime::parse_duration(s)
            .ok()
            .and_then(|d| i64::try_from(d.as_millis()).ok()),
    };
    match ms {
        Some(ms) if ms >= 1 => Ok(ms),
        _ => Err(ApiError::bad_request(format!(
            "`bucket`: cannot read {:?} as a bucket width; use 10s, 1m, 1h or milliseconds (at least 1)",
            s.chars().take(64).collect::<String>()
        ))),
    }
}

/// Parses RFC 3339 (`2025-11-24T16:00:00.250+01:00`, `t`/space separator and `z` accepted)
/// or a bare date (`2025-11-24`, midnight UTC) into unix ms.
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
    fn instants() {
        let now = 1_764_000_000_000;
        assert_eq!(parse_instant_at("from", "1764000000000", now).unwrap(), now);
        assert_eq!(parse_instant_at("from", "-5", now).unwrap(), -5);
        assert_eq!(parse_instant_at("from", "now", now).unwrap(), now);
        assert_eq!(
            parse_instant_at("from", "now-1h", now).unwrap(),
            now - 3_600_000
        );
        assert_eq!(
            parse_instant_at("from", "now+90s", now).unwrap(),
            now + 90_000
        );
        assert_eq!(
            parse_instant_at("from", "2025-11-24T16:00:00Z", now).unwrap(),
            now
        );
        let e = parse_instant_at("from", "yesterday", now).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (400, "bad_time"));
        assert!(e.message.contains("`from`"), "{e}");
        assert!(parse_instant_at("to", "now*2", now).is_err());
        assert!(parse_instant_at("to", "now-banana", now).is_err());
        assert!(parse_instant_at("to", "1.5", now).is_err());
    }

    #[test]
    fn as_of_points() {
        assert_eq!(
            parse_as_of("as_of", "1764000000000:3").unwrap(),
            AsOf::Hlc(Hlc::new(1_764_000_000_000, 3))
        );
        assert_eq!(
            parse_as_of("as_of", "1764000000000").unwrap(),
            AsOf::WallMs(1_764_000_000_000)
        );
        assert_eq!(
            parse_as_of("as_of", "2025-11-24T16:00:00Z").unwrap(),
            AsOf::WallMs(1_764_000_000_000)
        );
        for bad in [
            "1:2:3",
            "1:99999",
            "-5",
            "1969-12-31T00:00:00Z",
            "last tuesday",
        ] {
            let e = parse_as_of("as_of", bad).unwrap_err();
            assert_eq!(e.code, "bad_time", "{bad:?}");
        }
    }

    #[test]
    fn buckets() {
        assert_eq!(parse_bucket("10s").unwrap(), 10_000);
        assert_eq!(parse_bucket("1m").unwrap(), 60_000);
        assert_eq!(parse_bucket("1h").unwrap(), 3_600_000);
        assert_eq!(parse_bucket("250").unwrap(), 250);
        assert_eq!(parse_bucket("500ms").unwrap(), 500);
        assert!(parse_bucket("0").is_err());
        assert!(parse_bucket("-1").is_err());
        assert!(parse_bucket("fortnightly").is_err());
    }
}
