//! Time parameters of the API: parsing of instants (unix ms, RFC 3339, `now`, `now-1h`),
//! as-of points (an HLC `<ms>:<logical>` or an instant), history page cursors and bucket widths (`10s`, `1m`,
//! `1h`, or ms). Pure functions; errors are `400 bad_time` naming the parameter.

use kdelta_sync::{ActorId, AsOf, HistoryCursor, Hlc};

use super::ApiError;
use crate::time::{now_ms, parse_rfc3339};

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

/// Parses a history page cursor: the `next_before` of a previous page
/// (`<ms>:<logical>~<actor hex>`), or an as-of point meaning "everything strictly before it".
pub fn parse_history_cursor(param: &str, text: &str) -> Result<HistoryCursor, ApiError> {
    if let Some((at, actor)) = text.trim().split_once('~') {
        let hlc = at
            .parse::<Hlc>()
            .map_err(|e| ApiError::bad_time(format!("`{param}`: {e}")))?;
        let actor = actor.parse::<ActorId>().map_err(|e| {
            ApiError::bad_request(format!("`{param}`: {e} (pass the page's `next_before`)"))
        })?;
        return Ok(HistoryCursor::after_entry(hlc, actor));
    }
    Ok(HistoryCursor::before(match parse_as_of(param, text)? {
        AsOf::Hlc(h) => h,
        AsOf::WallMs(ms) => Hlc::new(ms, 0),
    }))
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!((e.status().as_u16(), e.code.as_str()), (400, "bad_time"));
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
    fn history_cursors() {
        let actor: ActorId = "000102030405060708090a0b0c0d0e0f".parse().unwrap();
        let hlc = Hlc::new(1_764_000_000_000, 3);
        let next = HistoryCursor::after_entry(hlc, actor);
        // A page's `next_before` reads back as itself.
        assert_eq!(
            parse_history_cursor("before", &next.to_string()).unwrap(),
            next
        );
        assert_eq!(
            parse_history_cursor("before", "1764000000000:3").unwrap(),
            HistoryCursor::before(hlc)
        );
        assert_eq!(
            parse_history_cursor("before", "1764000000000").unwrap(),
            HistoryCursor::before(Hlc::new(1_764_000_000_000, 0))
        );
        let e = parse_history_cursor("before", "1764000000000:3~zz").unwrap_err();
        assert_eq!(e.code, "bad_request");
        let e =
            parse_history_cursor("before", "soon~000102030405060708090a0b0c0d0e0f").unwrap_err();
        assert_eq!(e.code, "bad_time");
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
