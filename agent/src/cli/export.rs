//! `kdelta export SERIES`: pages through `GET /v1/readings` with its cursor and writes CSV
//! (re-importable with `kdelta import`) or a JSON array, streaming (constant memory).

use std::io::{BufWriter, Write};

use anyhow::Context;
use serde_json::{Value, json};

use super::args::{ExportArgs, ExportFormat};
use super::show::time_arg;
use crate::time::format_rfc3339_ms;

/// Readings per request.
const PAGE: usize = 10_000;

/// A CSV field, quoted when it needs to be.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// `kdelta export SERIES`.
pub async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::new(out);
    let from = time_arg(args.from.as_deref().unwrap_or("0"));
    let to = time_arg(args.to.as_deref().unwrap_or("now"));
    let mut cursor: Option<String> = None;
    let mut count = 0u64;
    match args.format {
        ExportFormat::Csv => writeln!(out, "series,ts,value,unit")?,
        ExportFormat::Json => write!(out, "[")?,
    }
    loop {
        let mut query = vec![
            ("series", args.series.clone()),
            ("from", from.clone()),
            ("to", to.clone()),
            ("limit", PAGE.to_string()),
        ];
        if let Some(c) = &cursor {
            query.push(("cursor", c.clone()));
        }
        let page = client.get(client.url("v1/readings", &query)).await?;
        let unit = page.get("unit").and_then(Value::as_str).unwrap_or("");
        let series = page
            .get("series")
            .and_then(Value::as_str)
            .unwrap_or(&args.series)
            .to_owned();
        for r in page
            .get("readings")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice)
        {
            let ts = r.get("ts").cloned().unwrap_or(Value::Null);
            let value = r.get("value").cloned().unwrap_or(Value::Null);
            match args.format {
                ExportFormat::Csv => {
                    let ts = ts
                        .as_i64()
                        .map_or_else(|| ts.to_string(), format_rfc3339_ms);
                    writeln!(
                        out,
                        "{},{ts},{value},{}",
                        csv_field(&series),
                        csv_field(unit)
                    )?;
                }
                ExportFormat::Json => {
                    let mut row = json!({ "series": series, "ts": ts, "value": value });
                    if !unit.is_empty() {
                        row["unit"] = json!(unit);
                    }
                    write!(out, "{}\n  {row}", if count == 0 { "" } else { "," })?;
                }
            }
            count += 1;
        }
        cursor = page
            .get("next_cursor")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    if args.format == ExportFormat::Json {
        writeln!(out, "{}]", if count == 0 { "" } else { "\n" })?;
    }
    out.flush()?;
    if args.output.is_some() {
        eprintln!("exported {count} readings of {}", args.series);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quoting() {
        assert_eq!(csv_field("a.b"), "a.b");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
