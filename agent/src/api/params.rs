//! Query-string and path helpers shared by the handlers: extractor rejections turned into
//! our error shape, limits, comma lists. Time parameters are in `time.rs`.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query};

use super::ApiError;

/// The parsed query string, or `400 bad_request`.
pub fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::bad_request(format!("bad query string: {}", e.body_text())))
}

/// The path parameter, or `400 bad_request` (e.g. invalid percent-encoding).
pub fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    p.map(|Path(t)| t)
        .map_err(|e| ApiError::bad_request(format!("bad path: {}", e.body_text())))
}

/// A required parameter.
pub fn required<'a>(name: &str, v: &'a Option<String>) -> Result<&'a str, ApiError> {
    match v.as_deref().map(str::trim) {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(ApiError::bad_request(format!(
            "query parameter `{name}` is required"
        ))),
    }
}

/// A page size: `default` when absent, at least 1, larger values capped at `max`.
pub fn limit(
    name: &str,
    v: &Option<String>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match v.as_deref() {
        None => Ok(default),
        Some(s) => match s.trim().parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n.min(max)),
            _ => Err(ApiError::bad_request(format!(
                "`{name}` must be a whole number from 1 to {max}, got {:?}",
                s.chars().take(32).collect::<String>()
            ))),
        },
    }
}

/// A comma-separated list without empty items; `None` when absent or empty.
pub fn list(v: &Option<String>) -> Option<Vec<String>> {
    let items: Vec<String> = v
        .as_deref()?
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    (!items.is_empty()).then_some(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_lists() {
        assert_eq!(limit("limit", &None, 10, 100).unwrap(), 10);
        assert_eq!(limit("limit", &Some("500".into()), 10, 100).unwrap(), 100);
        assert_eq!(
            limit("limit", &Some("0".into()), 10, 100).unwrap_err().code,
            "bad_request"
        );
        assert!(limit("limit", &Some("ten".into()), 10, 100).is_err());
        assert_eq!(
            list(&Some(" a, b,,".into())),
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(list(&Some(",".into())), None);
        assert!(required("series", &Some("  ".into())).is_err());
    }
}
