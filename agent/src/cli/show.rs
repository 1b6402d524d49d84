//! Small helpers shared by the client subcommands: time arguments, timestamps, and reading
//! pieces out of the API's JSON answers.

use serde_json::Value;

use crate::time::format_rfc3339_ms;

/// A time argument as the API takes it: `-1h` (shorthand) becomes `now-1h`; everything else
/// (unix ms, RFC 3339, `now`, `now-1h`, an HLC) passes unchanged, the agent validates it.
pub fn time_arg(text: &str) -> String {
    let t = text.trim();
    match t.strip_prefix('-') {
        Some(rest) if humantime::parse_duration(rest.trim()).is_ok() => {
            format!("now-{}", rest.trim())
        }
        _ => t.to_owned(),
    }
}

/// A timestamp from the API (unix ms number or text) for display.
pub fn ts(value: &Value) -> String {
    match value {
        Value::Number(n) => n.as_i64().map_or_else(|| n.to_string(), format_rfc3339_ms),
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// A value for one table cell: strings bare, everything else as compact JSON, shortened.
pub fn cell(value: &Value, max: usize) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    if text.chars().count() > max {
        let cut: String = text.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// The array in an answer: the answer itself, or its first field among `keys` that is one.
pub fn array<'a>(value: &'a Value, keys: &[&str]) -> &'a [Value] {
    if let Value::Array(items) = value {
        return items;
    }
    keys.iter()
        .find_map(|k| value.get(*k).and_then(Value::as_array))
        .map_or(&[], Vec::as_slice)
}

/// Pretty JSON for stdout.
pub fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// Prints rows as left-aligned columns.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i == last {
                out.push_str(&c);
            } else {
                let pad = widths[i] - c.chars().count();
                out.push_str(&c);
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_shorthand() {
        assert_eq!(time_arg("-1h"), "now-1h");
        assert_eq!(time_arg("-15m"), "now-15m");
        assert_eq!(time_arg("now-2d"), "now-2d");
        assert_eq!(time_arg("1764000000000"), "1764000000000");
        assert_eq!(
            time_arg("-5"),
            "-5",
            "not a duration: passed on for the agent to refuse"
        );
    }

    #[test]
    fn timestamps() {
        assert_eq!(ts(&serde_json::json!(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            ts(&serde_json::json!("2025-01-01T00:00:00Z")),
            "2025-01-01T00:00:00Z"
        );
    }
}
