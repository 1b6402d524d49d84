//! `key=value` lines, the format of countless Arduino sketches: `temp=21.5 hum=40` or
//! `temp=21.5,hum=40`.
//!
//! Pairs are separated by spaces, tabs or commas. Numbers become readings, `true`/`false`
//! become 1/0, `nan`/`inf` (a failed sensor) and other text are skipped. Key `ts` sets the
//! timestamp of the line. A token without `=` makes the whole line a parse error: it is noise
//! or a debug print, not data.

use super::LineDecoder;
use super::options::{DecoderOptions, clean_field, parse_number};
use super::timestamp::parse_timestamp;
use crate::{Reading, SourceError};

/// Key holding the line's own timestamp.
const TS_KEY: &str = "ts";

/// Decoder for [`LineFormat::KeyValue`](super::LineFormat::KeyValue).
#[derive(Debug, Clone)]
pub struct KeyValueDecoder {
    opts: DecoderOptions,
}

impl KeyValueDecoder {
    /// A decoder with `opts`.
    pub fn new(opts: DecoderOptions) -> Self {
        KeyValueDecoder { opts }
    }
}

fn is_separator(c: char) -> bool {
    c == ',' || c.is_ascii_whitespace()
}

impl LineDecoder for KeyValueDecoder {
    fn decode(&mut self, line: &[u8], now_ms: i64) -> Result<Vec<Reading>, SourceError> {
        let text = self.opts.text(line)?;
        let mut ts_ms = None;
        let mut out = Vec::new();
        for token in text.split(is_separator).filter(|t| !t.is_empty()) {
            let Some((key, value)) = token.split_once('=') else {
                return Err(self
                    .opts
                    .parse_error(format!("expected key=value, got `{token}`"), line));
            };
            if key.is_empty() {
                return Err(self.opts.parse_error("empty key", line));
            }
            if key == TS_KEY {
                let ms = parse_timestamp(value).ok_or_else(|| {
                    self.opts
                        .parse_error(format!("unusable timestamp `{value}`"), line)
                })?;
                ts_ms = Some(ms);
                continue;
            }
            let number = match value {
                "true" => Some(1.0),
                "false" => Some(0.0),
                // Text values (`status=ok`) are not measurements; skip them like JSON strings.
                _ => parse_number(value).unwrap_or(None),
            };
            // A key with nothing usable in it (`***=1`) names no series; skip it.
            if let (Some(v), Some(field)) = (number, clean_field(key)) {
                out.push(self.opts.reading(&field, 0, v, None));
            }
        }
        // The `ts` pair may come anywhere in the line, so timestamps are filled in last.
        let ts_ms = ts_ms.unwrap_or(now_ms);
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

    const NOW: i64 = 7;

    fn decoder() -> KeyValueDecoder {
        KeyValueDecoder::new(DecoderOptions::new("/dev/ttyACM0", "ard"))
    }

    fn pairs(readings: &[Reading]) -> Vec<(&str, f64, i64)> {
        readings
            .iter()
            .map(|r| (r.series.as_str(), r.value, r.ts_ms))
            .collect()
    }

    #[test]
    fn spaces_commas_and_tabs_separate_pairs() {
        let mut d = decoder();
        let want = [("ard.temp", 21.5, NOW), ("ard.hum", 40.0, NOW)];
        assert_eq!(pairs(&d.decode(b"temp=21.5 hum=40", NOW).unwrap()), want);
        assert_eq!(pairs(&d.decode(b"temp=21.5,hum=40", NOW).unwrap()), want);
        assert_eq!(
            pairs(&d.decode(b"temp=21.5, \thum=40\r", NOW).unwrap()),
            want
        );
    }

    #[test]
    fn text_booleans_nan_and_ts() {
        let out = decoder()
            .decode(b"status=ok relay=true t2=nan temp=1 ts=1700000000", NOW)
            .unwrap();
        let t = 1_700_000_000_000;
        assert_eq!(pairs(&out), [("ard.relay", 1.0, t), ("ard.temp", 1.0, t)]);
    }

    #[test]
    fn keys_are_cleaned() {
        let out = decoder().decode(b"Temp=1 env.CO2=2 ***=3", NOW).unwrap();
        assert_eq!(
            pairs(&out),
            [("ard.temp", 1.0, NOW), ("ard.env.co2", 2.0, NOW)]
        );
    }

    #[test]
    fn garbage_is_a_parse_error() {
        let mut d = decoder();
        for line in [
            &b"hello world"[..],
            b"temp=1 junk",
            b"=5",
            b"a=\xc3\x28",
            b"ts=later a=1",
        ] {
            let err = d.decode(line, NOW).unwrap_err();
            assert!(
                matches!(err, SourceError::Parse { ref device, .. } if device == "/dev/ttyACM0"),
                "{err:?}"
            );
        }
        assert!(d.decode(b"", NOW).unwrap().is_empty());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decoder().decode(&bytes, NOW);
        }

        #[test]
        fn key_value_like_text_never_panics(text in "[a-z0-9.=, \t:é-]{0,120}") {
            let _ = decoder().decode(text.as_bytes(), NOW);
        }

        #[test]
        fn generated_pairs_round_trip(
            fields in proptest::collection::btree_map("[a-z][a-z0-9]{0,3}(\\.[a-z][a-z0-9]{0,3})?", -1e9f64..1e9, 0..10),
        ) {
            let fields: Vec<(String, f64)> =
                fields.into_iter().filter(|(k, _)| k != "ts").collect();
            let line: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let out = decoder().decode(line.join(" ").as_bytes(), NOW).unwrap();
            let got: Vec<(String, f64)> = out.into_iter().map(|r| (r.series, r.value)).collect();
            let want: Vec<(String, f64)> =
                fields.into_iter().map(|(k, v)| (format!("ard.{k}"), v)).collect();
            prop_assert_eq!(got, want);
        }
    }
}
