//! Timestamps a device may put in a line (`ts` field or column): unix seconds, unix milliseconds
//! or RFC 3339. Devices disagree on the unit, so a number is classified by magnitude. A time no
//! store can hold (before 1970, year 10000 or later) is refused here, at decode.

use crate::time::MAX_TIMESTAMP_MS;

/// Numbers with a magnitude below this are unix seconds, at or above it unix milliseconds.
/// 1e11 seconds is the year 5138 and 1e11 milliseconds is March 1973, so neither reading is
/// plausible for the other unit.
const SECONDS_LIMIT: f64 = 1e11;

/// Largest magnitude converted as milliseconds: ±1e15 ms is about ±31,700 years — far beyond any
/// real clock but well inside `i64`, so the conversion below cannot overflow.
const MAX_MS: f64 = 1e15;

/// Parses a timestamp sent by a device into unix milliseconds.
///
/// Accepts a number of unix seconds (`1700000000`, fractions allowed) or milliseconds
/// (`1700000000000`), told apart by magnitude (below 1e11 means seconds), or an RFC 3339 date
/// (`2023-11-14T22:13:20Z`, `2023-11-14T23:13:20.5+01:00`; a space instead of `T` and a missing
/// zone, meaning UTC, are tolerated). Returns `None` for anything else, including non-finite
/// numbers and any time outside what a store holds (before 1970, from the year 10000 on:
/// [`MAX_TIMESTAMP_MS`]), so such a line is refused where it is decoded.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(n) = text.parse::<f64>() {
        return number_to_ms(n);
    }
    parse_rfc3339(text)
}

/// Whether a store can hold a reading at `ms`.
fn storable(ms: i64) -> bool {
    (0..MAX_TIMESTAMP_MS).contains(&ms)
}

/// Converts a numeric timestamp (seconds or milliseconds, see [`parse_timestamp`]).
pub(crate) fn number_to_ms(n: f64) -> Option<i64> {
    if !n.is_finite() {
        return None;
    }
    let ms = if n.abs() < SECONDS_LIMIT {
        n * 1000.0
    } else {
        n
    };
    if ms.abs() > MAX_MS {
        return None;
    }
    Some(ms.round() as i64).filter(|ms| storable(*ms))
}

/// RFC 3339 with any UTC offset or none (UTC); dates a store cannot hold are refused.
fn parse_rfc3339(text: &str) -> Option<i64> {
    crate::time::parse_rfc3339_lenient(text).filter(|ms| storable(*ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T: i64 = 1_700_000_000_000; // 2023-11-14T22:13:20Z

    #[test]
    fn numbers_are_seconds_or_millis_by_magnitude() {
        assert_eq!(parse_timestamp("1700000000"), Some(T));
        assert_eq!(parse_timestamp("1700000000.25"), Some(T + 250));
        assert_eq!(parse_timestamp("1700000000000"), Some(T));
        assert_eq!(parse_timestamp("0"), Some(0));
        assert_eq!(parse_timestamp("NaN"), None);
        assert_eq!(parse_timestamp("inf"), None);
        assert_eq!(parse_timestamp("1e300"), None);
    }

    #[test]
    fn rfc3339_with_zones() {
        assert_eq!(parse_timestamp("2023-11-14T22:13:20Z"), Some(T));
        assert_eq!(parse_timestamp("2023-11-14T22:13:20.5Z"), Some(T + 500));
        assert_eq!(parse_timestamp("2023-11-14T23:13:20+01:00"), Some(T));
        assert_eq!(parse_timestamp("2023-11-14T20:43:20-01:30"), Some(T));
        assert_eq!(parse_timestamp("2023-11-14 22:13:20"), Some(T));
        assert_eq!(
            parse_timestamp("2023-11-14T22:13:20.123+00:00"),
            Some(T + 123)
        );
    }

    #[test]
    fn garbage_is_none() {
        for s in [
            "",
            "-1",
            "-1700000000000",
            "253402300800000",
            "999999999999999",
            "10000-01-01T00:00:00Z",
            "yesterday",
            "2023-13-14T22:13:20Z",
            "2023-11-14T22:13:20+25:00",
            "1969-12-31T23:59:59Z",
            "2023-11-14T22:13:2é",
            "ééééééééééééééééééééééééé",
        ] {
            assert_eq!(parse_timestamp(s), None, "{s}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = parse_timestamp(&s);
        }

        #[test]
        fn seconds_and_millis_agree(secs in 0i64..4_000_000_000) {
            prop_assert_eq!(parse_timestamp(&secs.to_string()), Some(secs * 1000));
            if secs * 1000 >= 100_000_000_000 {
                prop_assert_eq!(parse_timestamp(&(secs * 1000).to_string()), Some(secs * 1000));
            }
        }
    }
}
