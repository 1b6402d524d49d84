//! What every decoder shares: the options naming the device and series, the format switch, and
//! the small checks (length, UTF-8, number parsing) each decoder runs on a line.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{CsvDecoder, JsonLinesDecoder, KeyValueDecoder, LineDecoder, NmeaDecoder};
use crate::{Reading, SourceError};

/// Default for [`DecoderOptions::max_line_bytes`]: longer than any sane sensor line, short
/// enough that a device spewing bytes without newlines cannot grow memory.
pub const DEFAULT_MAX_LINE_BYTES: usize = 4096;

/// How many bytes of an offending line an error message quotes.
const SNIPPET_BYTES: usize = 64;

/// The line protocol a serial device speaks (`format` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineFormat {
    /// One JSON object per line: `{"temp": 21.5, "hum": 40}`.
    JsonLines,
    /// Comma- (or otherwise) separated values, with a header line or configured columns.
    Csv,
    /// `temp=21.5 hum=40`, pairs separated by spaces or commas.
    KeyValue,
    /// NMEA 0183 sentences from a GPS receiver (GGA and RMC are decoded).
    Nmea,
}

impl LineFormat {
    /// The series prefix used when the config names none: `gps` for NMEA, else `serial`.
    pub fn default_prefix(self) -> &'static str {
        match self {
            LineFormat::Nmea => "gps",
            _ => "serial",
        }
    }
}

/// What every decoder needs to know besides the line itself.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderOptions {
    /// The device the lines come from (port path), named in every error.
    pub device: String,
    /// Series prefix: a field `temp` becomes series `<prefix>.temp`. Empty means no prefix, for
    /// devices that already send fully qualified names. Used as given (configs validate it);
    /// field names from the device go through [`clean_field`].
    pub prefix: String,
    /// Lines longer than this are rejected with [`SourceError::Parse`].
    pub max_line_bytes: usize,
    /// Unit per field, keyed by the field as it appears in the series name after the prefix
    /// (cleaned, nested JSON fields joined with `.`), e.g. `temp → °C`. Fields not listed get
    /// no unit.
    pub units: BTreeMap<String, String>,
    /// CSV only: the field separator (an ASCII character).
    pub csv_delimiter: u8,
    /// CSV only: column names in order (`ts` is the timestamp, `_` skips a column). `None`
    /// means the device sends a header line first.
    pub csv_columns: Option<Vec<String>>,
}

impl DecoderOptions {
    /// Options for `device` with series prefix `prefix` and defaults for the rest (4096-byte
    /// lines, no units, CSV with `,` and a header line).
    pub fn new(device: impl Into<String>, prefix: impl Into<String>) -> Self {
        DecoderOptions {
            device: device.into(),
            prefix: prefix.into(),
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            units: BTreeMap::new(),
            csv_delimiter: b',',
            csv_columns: None,
        }
    }

    /// The series name of `field`: `<prefix>.<field>`, or `field` alone with an empty prefix.
    pub fn series(&self, field: &str) -> String {
        if self.prefix.is_empty() {
            field.to_owned()
        } else {
            let mut s = String::with_capacity(self.prefix.len() + 1 + field.len());
            s.push_str(&self.prefix);
            s.push('.');
            s.push_str(field);
            s
        }
    }

    /// A reading of `field`, with the configured unit if any and `default_unit` otherwise.
    pub(crate) fn reading(
        &self,
        field: &str,
        ts_ms: i64,
        value: f64,
        default_unit: Option<&str>,
    ) -> Reading {
        let unit = self.units.get(field).map(String::as_str).or(default_unit);
        Reading::new(self.series(field), ts_ms, value, unit)
    }

    /// Checks length and encoding and trims surrounding whitespace (a stray CR from a CRLF
    /// device, trailing blanks).
    pub(crate) fn text<'a>(&self, line: &'a [u8]) -> Result<&'a str, SourceError> {
        if line.len() > self.max_line_bytes {
            return Err(SourceError::Parse {
                device: self.device.clone(),
                detail: format!(
                    "line of {} bytes exceeds max_line_bytes ({}): {}",
                    line.len(),
                    self.max_line_bytes,
                    snippet(line)
                ),
            });
        }
        match std::str::from_utf8(line) {
            Ok(s) => Ok(s.trim()),
            Err(e) => Err(self.parse_error(format!("invalid UTF-8 ({e})"), line)),
        }
    }

    /// A [`SourceError::Parse`] naming the device, quoting the start of the offending line.
    pub(crate) fn parse_error(&self, detail: impl AsRef<str>, line: &[u8]) -> SourceError {
        SourceError::Parse {
            device: self.device.clone(),
            detail: format!("{} in line {}", detail.as_ref(), snippet(line)),
        }
    }
}

/// Turns a field name sent by a device into the form series names take everywhere in kdelta:
/// `.`-separated segments of lowercase ASCII letters, digits, `_` and `-` (see
/// [`sanitize_segment`](crate::sanitize_segment), applied per segment; empty segments are
/// dropped). `Temp Out` becomes `temp_out`, `env.CO2` stays hierarchical as `env.co2`.
/// Returns `None` when nothing usable is left (`"***"`), and borrows when the name is already
/// clean, which is the common case and keeps decoding allocation-light.
///
/// Device names reach MQTT topics and URLs; a key like `a/b` or `#` must not.
pub fn clean_field(raw: &str) -> Option<Cow<'_, str>> {
    if is_clean(raw) {
        return Some(Cow::Borrowed(raw));
    }
    let mut out = String::with_capacity(raw.len());
    for segment in raw.split('.').filter_map(crate::sanitize_segment) {
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(&segment);
    }
    (!out.is_empty()).then_some(Cow::Owned(out))
}

/// True when `raw` is already what [`clean_field`] would make of it.
fn is_clean(raw: &str) -> bool {
    !raw.is_empty()
        && raw.split('.').all(|seg| {
            !seg.is_empty()
                && !seg.starts_with('_')
                && !seg.ends_with('_')
                && !seg.contains("__")
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        })
}

/// The first bytes of `line`, lossily decoded and escaped so control characters and garbage
/// cannot mangle a log line.
pub(crate) fn snippet(line: &[u8]) -> String {
    let cut = line.len().min(SNIPPET_BYTES);
    let text = String::from_utf8_lossy(&line[..cut]);
    if cut < line.len() {
        format!("{text:?}…")
    } else {
        format!("{text:?}")
    }
}

/// Parses a decimal number as sent by sensors (`21.5`, `-3`, `1e3`). `Ok(None)` for values that
/// mean "no reading" — empty fields and the `nan`/`inf` an Arduino prints for a failed sensor —
/// so one dead probe does not discard the other fields of the line.
pub(crate) fn parse_number(s: &str) -> Result<Option<f64>, ()> {
    if s.is_empty() {
        return Ok(None);
    }
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(Some(v)),
        Ok(_) => Ok(None),
        Err(_) => Err(()),
    }
}

/// Any of the four decoders, chosen at run time from the config's `format`.
#[derive(Debug)]
pub enum Decoder {
    /// See [`JsonLinesDecoder`].
    JsonLines(JsonLinesDecoder),
    /// See [`CsvDecoder`].
    Csv(CsvDecoder),
    /// See [`KeyValueDecoder`].
    KeyValue(KeyValueDecoder),
    /// See [`NmeaDecoder`].
    Nmea(NmeaDecoder),
}

impl Decoder {
    /// The decoder for `format` with `options`.
    pub fn new(format: LineFormat, options: DecoderOptions) -> Self {
        match format {
            LineFormat::JsonLines => Decoder::JsonLines(JsonLinesDecoder::new(options)),
            LineFormat::Csv => Decoder::Csv(CsvDecoder::new(options)),
            LineFormat::KeyValue => Decoder::KeyValue(KeyValueDecoder::new(options)),
            LineFormat::Nmea => Decoder::Nmea(NmeaDecoder::new(options)),
        }
    }
}

impl LineDecoder for Decoder {
    fn decode(&mut self, line: &[u8], now_ms: i64) -> Result<Vec<Reading>, SourceError> {
        match self {
            Decoder::JsonLines(d) => d.decode(line, now_ms),
            Decoder::Csv(d) => d.decode(line, now_ms),
            Decoder::KeyValue(d) => d.decode(line, now_ms),
            Decoder::Nmea(d) => d.decode(line, now_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_joins_prefix_and_field() {
        let opts = DecoderOptions::new("/dev/x", "gh");
        assert_eq!(opts.series("temp"), "gh.temp");
        let bare = DecoderOptions::new("/dev/x", "");
        assert_eq!(bare.series("temp"), "temp");
    }

    #[test]
    fn text_rejects_long_lines_and_bad_utf8_naming_the_device() {
        let mut opts = DecoderOptions::new("/dev/ttyACM0", "p");
        opts.max_line_bytes = 8;
        let err = opts.text(b"0123456789").unwrap_err();
        assert!(matches!(err, SourceError::Parse { ref device, .. } if device == "/dev/ttyACM0"));
        assert!(err.to_string().contains("max_line_bytes"), "{err}");
        let err = opts.text(b"\xff\xfe").unwrap_err();
        assert!(err.to_string().contains("invalid UTF-8"), "{err}");
        assert_eq!(opts.text(b" ok\r").unwrap(), "ok");
    }

    #[test]
    fn snippet_is_bounded_and_escaped() {
        let long = vec![b'a'; 500];
        assert!(snippet(&long).len() < 80);
        assert_eq!(snippet(b"a\x01"), "\"a\\u{1}\"");
    }

    #[test]
    fn field_names_are_cleaned_and_borrowed_when_clean() {
        assert!(matches!(clean_field("temp"), Some(Cow::Borrowed("temp"))));
        assert!(matches!(clean_field("env.co2_ppm"), Some(Cow::Borrowed(_))));
        assert_eq!(clean_field("Temp Out").as_deref(), Some("temp_out"));
        assert_eq!(clean_field("env.CO2").as_deref(), Some("env.co2"));
        assert_eq!(clean_field("a/b#+").as_deref(), Some("a_b"));
        assert_eq!(clean_field("..a..b_.").as_deref(), Some("a.b"));
        assert_eq!(clean_field("***"), None);
        assert_eq!(clean_field(""), None);
        assert_eq!(clean_field("é"), None);
    }

    #[test]
    fn numbers_treat_nan_and_empty_as_missing() {
        assert_eq!(parse_number("21.5"), Ok(Some(21.5)));
        assert_eq!(parse_number("-1e3"), Ok(Some(-1000.0)));
        assert_eq!(parse_number(""), Ok(None));
        assert_eq!(parse_number("nan"), Ok(None));
        assert_eq!(parse_number("-inf"), Ok(None));
        assert_eq!(parse_number("abc"), Err(()));
    }
}
