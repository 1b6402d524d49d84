//! CSV lines: positional values named by a header line or by configured columns.
//!
//! With `csv_columns` configured every line is data. Without, the first line is the header; a
//! later line with no numeric field is taken as a new header, because a device that reboots
//! prints its header again. Column `ts` holds the line's timestamp, `_` (or an empty header
//! name) skips a column. Fields are trimmed and may be wrapped in double quotes, but quoted
//! delimiters are not supported — sensor CSV never needs them.
//!
//! CSV is positional, so a data line with the wrong number of fields, or text in a numeric
//! column, is rejected whole rather than guessed at. An empty field or `nan` is a missing value.

use super::LineDecoder;
use super::options::{DecoderOptions, clean_field, parse_number};
use super::timestamp::parse_timestamp;
use crate::{Reading, SourceError};

/// Header name of the timestamp column.
const TS_COLUMN: &str = "ts";
/// Header name of a column to ignore.
const SKIP_COLUMN: &str = "_";

/// What to do with one column.
#[derive(Debug, Clone, PartialEq)]
enum Column {
    /// Ignore it.
    Skip,
    /// It holds the line's timestamp.
    Ts,
    /// A value: the column's header name, and its full series name and unit computed once so
    /// the per-line path does not format strings.
    Value {
        name: String,
        series: String,
        unit: Option<String>,
    },
}

/// Decoder for [`LineFormat::Csv`](super::LineFormat::Csv).
#[derive(Debug, Clone)]
pub struct CsvDecoder {
    opts: DecoderOptions,
    /// The current column layout; `None` until the header line arrives.
    columns: Option<Vec<Column>>,
    /// True when the layout comes from the config, so no line is taken as a header.
    fixed: bool,
}

impl CsvDecoder {
    /// A decoder with `opts`; uses `opts.csv_columns` if set, else waits for a header line.
    pub fn new(opts: DecoderOptions) -> Self {
        let mut decoder = CsvDecoder {
            opts,
            columns: None,
            fixed: false,
        };
        if let Some(names) = decoder.opts.csv_columns.clone() {
            decoder.columns = Some(decoder.layout(names.iter().map(String::as_str)));
            decoder.fixed = true;
        }
        decoder
    }

    fn layout<'a>(&self, names: impl Iterator<Item = &'a str>) -> Vec<Column> {
        names
            .map(|name| match name {
                "" | SKIP_COLUMN => Column::Skip,
                TS_COLUMN => Column::Ts,
                // A header name with nothing usable in it (`***`) names no series.
                _ => match clean_field(name) {
                    None => Column::Skip,
                    Some(field) => Column::Value {
                        name: name.to_owned(),
                        series: self.opts.series(&field),
                        unit: self.opts.units.get(field.as_ref()).cloned(),
                    },
                },
            })
            .collect()
    }
}

/// Trims whitespace and one pair of surrounding double quotes.
fn clean(field: &str) -> &str {
    let field = field.trim();
    field
        .strip_prefix('"')
        .and_then(|f| f.strip_suffix('"'))
        .unwrap_or(field)
}

impl LineDecoder for CsvDecoder {
    fn decode(&mut self, line: &[u8], now_ms: i64) -> Result<Vec<Reading>, SourceError> {
        let text = self.opts.text(line)?;
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let delimiter = char::from(self.opts.csv_delimiter);
        let fields = || text.split(delimiter).map(clean);

        let is_header =
            || fields().all(|f| f.parse::<f64>().is_err()) && fields().any(|f| !f.is_empty());
        if !self.fixed && is_header() {
            self.columns = Some(self.layout(fields()));
            return Ok(Vec::new());
        }
        let Some(columns) = &self.columns else {
            return Err(self
                .opts
                .parse_error("data before the CSV header line", line));
        };

        let mut n_fields = fields().count();
        // Tolerate one trailing delimiter (`1,2,3,`), a common quirk of hand-written firmware.
        if n_fields == columns.len() + 1 && text.split(delimiter).next_back().map(clean) == Some("")
        {
            n_fields -= 1;
        }
        if n_fields != columns.len() {
            return Err(self.opts.parse_error(
                format!("expected {} fields, got {}", columns.len(), n_fields),
                line,
            ));
        }

        let mut ts_ms = now_ms;
        let mut out = Vec::with_capacity(columns.len());
        for (column, field) in columns.iter().zip(fields()) {
            match column {
                Column::Skip => {}
                Column::Ts => {
                    ts_ms = parse_timestamp(field).ok_or_else(|| {
                        self.opts
                            .parse_error(format!("unusable timestamp `{field}`"), line)
                    })?;
                }
                Column::Value { name, series, unit } => match parse_number(field) {
                    Ok(Some(value)) => out.push(Reading {
                        series: series.clone(),
                        ts_ms: 0, // set below, once the ts column (which may come last) is read
                        value,
                        unit: unit.clone(),
                    }),
                    Ok(None) => {}
                    Err(()) => {
                        return Err(self.opts.parse_error(
                            format!("column `{name}` is not a number: `{field}`"),
                            line,
                        ));
                    }
                },
            }
        }
        for reading in &mut out {
            reading.ts_ms = ts_ms;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: i64 = 5_000;

    fn with_columns(cols: &[&str], delimiter: u8) -> CsvDecoder {
        let mut opts = DecoderOptions::new("/dev/ttyS0", "lab");
        opts.csv_columns = Some(cols.iter().map(|c| c.to_string()).collect());
        opts.csv_delimiter = delimiter;
        opts.units.insert("temp".into(), "°C".into());
        CsvDecoder::new(opts)
    }

    fn header_mode() -> CsvDecoder {
        CsvDecoder::new(DecoderOptions::new("/dev/ttyS0", "lab"))
    }

    fn pairs(readings: &[Reading]) -> Vec<(&str, f64, i64)> {
        readings
            .iter()
            .map(|r| (r.series.as_str(), r.value, r.ts_ms))
            .collect()
    }

    #[test]
    fn configured_columns_with_ts_and_skip() {
        let mut d = with_columns(&["ts", "temp", "_", "hum"], b';');
        let out = d.decode(b"1700000000; 21.5 ;status;40", NOW).unwrap();
        let t = 1_700_000_000_000;
        assert_eq!(pairs(&out), [("lab.temp", 21.5, t), ("lab.hum", 40.0, t)]);
        assert_eq!(out[0].unit.as_deref(), Some("°C"));
    }

    #[test]
    fn header_line_names_columns_and_can_change() {
        let mut d = header_mode();
        assert!(d.decode(b"temp,hum", NOW).unwrap().is_empty());
        let out = d.decode(b"21.5,40\r", NOW).unwrap();
        assert_eq!(
            pairs(&out),
            [("lab.temp", 21.5, NOW), ("lab.hum", 40.0, NOW)]
        );
        // The device rebooted with new firmware and a different header.
        assert!(d.decode(b"\"hum\",\"temp\",ts", NOW).unwrap().is_empty());
        let out = d.decode(b"41,22,1700000000000", NOW).unwrap();
        let t = 1_700_000_000_000;
        assert_eq!(pairs(&out), [("lab.hum", 41.0, t), ("lab.temp", 22.0, t)]);
    }

    #[test]
    fn header_names_are_cleaned() {
        let mut d = header_mode();
        d.decode(b"Temp (C),***,Hum", NOW).unwrap();
        let out = d.decode(b"1,2,3", NOW).unwrap();
        assert_eq!(
            pairs(&out),
            [("lab.temp_c", 1.0, NOW), ("lab.hum", 3.0, NOW)]
        );
    }

    #[test]
    fn missing_values_are_skipped() {
        let mut d = with_columns(&["temp", "hum"], b',');
        assert_eq!(
            pairs(&d.decode(b",40", NOW).unwrap()),
            [("lab.hum", 40.0, NOW)]
        );
        assert_eq!(
            pairs(&d.decode(b"nan,40,", NOW).unwrap()),
            [("lab.hum", 40.0, NOW)]
        );
    }

    #[test]
    fn malformed_lines_are_parse_errors() {
        let mut d = header_mode();
        let err = d.decode(b"1,2", NOW).unwrap_err();
        assert!(err.to_string().contains("before the CSV header"), "{err}");
        let mut d = with_columns(&["temp", "hum"], b',');
        for (line, why) in [
            (&b"1,2,3"[..], "expected 2 fields, got 3"),
            (b"1", "expected 2 fields, got 1"),
            (b"1,abc", "column `hum` is not a number"),
            (b"1,\xff", "invalid UTF-8"),
        ] {
            let err = d.decode(line, NOW).unwrap_err();
            assert!(matches!(err, SourceError::Parse { .. }), "{err:?}");
            assert!(err.to_string().contains(why), "{err}");
            assert!(err.to_string().contains("/dev/ttyS0"), "{err}");
        }
        let mut d = with_columns(&["ts", "temp"], b',');
        assert!(d.decode(b"later,1", NOW).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = header_mode().decode(&bytes, NOW);
            let _ = with_columns(&["ts", "a", "_"], b'\t').decode(&bytes, NOW);
        }

        #[test]
        fn csv_like_text_never_panics(lines in proptest::collection::vec("[a-z0-9.,\"\t :é-]{0,60}", 1..6)) {
            let mut d = header_mode();
            for line in &lines {
                let _ = d.decode(line.as_bytes(), NOW);
            }
        }

        #[test]
        fn generated_rows_round_trip(values in proptest::collection::vec(-1e9f64..1e9, 1..10)) {
            let mut d = header_mode();
            let header: Vec<String> = (0..values.len()).map(|i| format!("c{i}")).collect();
            d.decode(header.join(",").as_bytes(), NOW).unwrap();
            let row: Vec<String> = values.iter().map(|v| v.to_string()).collect();
            let out = d.decode(row.join(",").as_bytes(), NOW).unwrap();
            let got: Vec<f64> = out.iter().map(|r| r.value).collect();
            prop_assert_eq!(got, values);
        }
    }
}
