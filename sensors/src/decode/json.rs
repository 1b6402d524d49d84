//! JSON lines: one object per line, one reading per numeric field.
//!
//! `{"temp": 21.5, "hum": 40, "env": {"co2": 415}}` → `<prefix>.temp`, `<prefix>.hum`,
//! `<prefix>.env.co2`. Booleans become 0/1; strings, nulls and arrays are ignored (a device's
//! status text is not a measurement). A top-level `ts` (see
//! [`parse_timestamp`](super::parse_timestamp)) sets the timestamp of every reading in the line.

use serde_json::{Map, Value};

use super::LineDecoder;
use super::options::{DecoderOptions, clean_field};
use super::timestamp::{number_to_ms, parse_timestamp};
use crate::{Reading, SourceError};

/// Field holding the line's own timestamp.
const TS_FIELD: &str = "ts";

/// Decoder for [`LineFormat::JsonLines`](super::LineFormat::JsonLines).
#[derive(Debug, Clone)]
pub struct JsonLinesDecoder {
    opts: DecoderOptions,
}

impl JsonLinesDecoder {
    /// A decoder with `opts`.
    pub fn new(opts: DecoderOptions) -> Self {
        JsonLinesDecoder { opts }
    }

    /// Pushes a reading for every numeric leaf under `value`, naming it `path`.
    fn flatten(&self, path: &mut String, value: &Value, ts_ms: i64, out: &mut Vec<Reading>) {
        match value {
            Value::Number(n) => {
                // serde_json has no NaN or infinity, but u64/i64 → f64 and big exponents are
                // still checked so the "never non-finite" promise does not rest on that.
                if let Some(v) = n.as_f64().filter(|v| v.is_finite()) {
                    out.push(self.opts.reading(path, ts_ms, v, None));
                }
            }
            Value::Bool(b) => out.push(self.opts.reading(path, ts_ms, f64::from(*b), None)),
            Value::Object(map) => self.object(path, map, false, ts_ms, out),
            Value::Null | Value::String(_) | Value::Array(_) => {}
        }
    }

    /// Flattens every field of `map` under `path`; `top_level` skips the `ts` field, which is
    /// the line's timestamp rather than a value.
    fn object(
        &self,
        path: &mut String,
        map: &Map<String, Value>,
        top_level: bool,
        ts_ms: i64,
        out: &mut Vec<Reading>,
    ) {
        let base = path.len();
        for (key, child) in map {
            if top_level && key == TS_FIELD {
                continue;
            }
            let Some(key) = clean_field(key) else {
                continue;
            };
            if base > 0 {
                path.push('.');
            }
            path.push_str(&key);
            self.flatten(path, child, ts_ms, out);
            path.truncate(base);
        }
    }

    /// The line's own timestamp, if it has a `ts` field.
    fn timestamp(&self, map: &Map<String, Value>, line: &[u8]) -> Result<Option<i64>, SourceError> {
        let Some(ts) = map.get(TS_FIELD) else {
            return Ok(None);
        };
        let parsed = match ts {
            Value::Number(n) => n.as_f64().and_then(number_to_ms),
            Value::String(s) => parse_timestamp(s),
            _ => None,
        };
        match parsed {
            Some(ms) => Ok(Some(ms)),
            None => Err(self
                .opts
                .parse_error(format!("unusable timestamp `ts`: {ts}"), line)),
        }
    }
}

impl LineDecoder for JsonLinesDecoder {
    fn decode(&mut self, line: &[u8], now_ms: i64) -> Result<Vec<Reading>, SourceError> {
        let text = self.opts.text(line)?;
        if text.is_empty() {
            return Ok(Vec::new());
        }
        // serde_json bounds nesting depth (128), so a line of `[[[[…` cannot blow the stack.
        let value: Value = serde_json::from_str(text)
            .map_err(|e| self.opts.parse_error(format!("invalid JSON ({e})"), line))?;
        let Value::Object(map) = value else {
            return Err(self.opts.parse_error("expected a JSON object", line));
        };
        let ts_ms = self.timestamp(&map, line)?.unwrap_or(now_ms);
        let mut out = Vec::with_capacity(map.len());
        self.object(&mut String::new(), &map, true, ts_ms, &mut out);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const NOW: i64 = 1_000;

    fn decoder() -> JsonLinesDecoder {
        let mut opts = DecoderOptions::new("/dev/ttyUSB0", "gh");
        opts.units.insert("temp".into(), "°C".into());
        JsonLinesDecoder::new(opts)
    }

    fn pairs(readings: &[Reading]) -> Vec<(&str, f64)> {
        readings
            .iter()
            .map(|r| (r.series.as_str(), r.value))
            .collect()
    }

    #[test]
    fn numeric_fields_become_readings() {
        let out = decoder()
            .decode(
                br#"{"temp": 21.5, "hum": 40, "ok": true, "msg": "hi", "n": null}"#,
                NOW,
            )
            .unwrap();
        assert_eq!(
            pairs(&out),
            [("gh.hum", 40.0), ("gh.ok", 1.0), ("gh.temp", 21.5)]
        );
        assert!(out.iter().all(|r| r.ts_ms == NOW));
        assert_eq!(out[2].unit.as_deref(), Some("°C"));
        assert_eq!(out[0].unit, None);
    }

    #[test]
    fn nested_objects_are_flattened_and_arrays_ignored() {
        let line = br#"{"env": {"co2": 415, "air": {"pm25": 3.5}}, "list": [1, 2], "off": false}"#;
        let out = decoder().decode(line, NOW).unwrap();
        assert_eq!(
            pairs(&out),
            [
                ("gh.env.air.pm25", 3.5),
                ("gh.env.co2", 415.0),
                ("gh.off", 0.0)
            ]
        );
    }

    #[test]
    fn device_keys_are_cleaned_for_series_names() {
        let line = br##"{"Temp Out": 1, "a/b": {"#": 2, "CO2": 3}, "***": 4}"##;
        let out = decoder().decode(line, NOW).unwrap();
        assert_eq!(pairs(&out), [("gh.temp_out", 1.0), ("gh.a_b.co2", 3.0)]);
    }

    #[test]
    fn ts_field_sets_the_timestamp() {
        let mut d = decoder();
        let out = d.decode(br#"{"ts": 1700000000, "temp": 1}"#, NOW).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].ts_ms, 1_700_000_000_000);
        let out = d
            .decode(br#"{"ts": 1700000000123, "temp": 1}"#, NOW)
            .unwrap();
        assert_eq!(out[0].ts_ms, 1_700_000_000_123);
        let out = d
            .decode(br#"{"ts": "2023-11-14T22:13:20Z", "temp": 1}"#, NOW)
            .unwrap();
        assert_eq!(out[0].ts_ms, 1_700_000_000_000);
        let err = d.decode(br#"{"ts": "soon", "temp": 1}"#, NOW).unwrap_err();
        assert!(err.to_string().contains("timestamp"), "{err}");
    }

    #[test]
    fn malformed_lines_are_parse_errors_naming_the_device() {
        let mut d = decoder();
        for line in [
            &b"{\"temp\": 21.5"[..],
            b"42",
            b"[1,2]",
            b"\xff{}",
            b"temp=1",
            b"{\"a\":1e400}",
        ] {
            match d.decode(line, NOW) {
                Err(SourceError::Parse { device, .. }) => assert_eq!(device, "/dev/ttyUSB0"),
                other => panic!("{line:?}: {other:?}"),
            }
        }
        assert!(d.decode(b"", NOW).unwrap().is_empty());
        assert!(d.decode(b"  \r", NOW).unwrap().is_empty());
        assert!(d.decode(b"{}", NOW).unwrap().is_empty());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let line = "[".repeat(3000);
        let mut opts = DecoderOptions::new("d", "p");
        opts.max_line_bytes = 10_000;
        assert!(
            JsonLinesDecoder::new(opts)
                .decode(line.as_bytes(), NOW)
                .is_err()
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decoder().decode(&bytes, NOW);
        }

        #[test]
        fn json_like_text_never_panics(text in r#"[{}\[\]":,0-9.eE+\-a-z ]{0,200}"#) {
            let _ = decoder().decode(text.as_bytes(), NOW);
        }

        #[test]
        fn generated_objects_decode_to_their_numeric_fields(
            // Not `ts`: that field is the line's timestamp (tested above), and most generated
            // numbers are not usable timestamps.
            fields in proptest::collection::btree_map("[a-z][a-z0-9]{0,8}", -1e12f64..1e12, 0..12)
                .prop_map(|m| m.into_iter().filter(|(k, _)| k != "ts").collect::<BTreeMap<_, _>>()),
            strings in proptest::collection::btree_map("[A-Z][a-z]{0,5}", "[ -~]{0,10}", 0..4),
        ) {
            let mut obj = serde_json::Map::new();
            for (k, v) in &fields {
                obj.insert(k.clone(), serde_json::json!(v));
            }
            for (k, v) in &strings {
                obj.insert(k.clone(), serde_json::json!(v));
            }
            let line = serde_json::to_vec(&Value::Object(obj)).unwrap();
            let out = decoder().decode(&line, NOW).unwrap();
            let got: BTreeMap<String, f64> =
                out.into_iter().map(|r| (r.series, r.value)).collect();
            let want: BTreeMap<String, f64> =
                fields.iter().map(|(k, v)| (format!("gh.{k}"), *v)).collect();
            prop_assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
            // serde_json's default float parser may be one ulp off, hence a relative tolerance.
            for (k, v) in &want {
                prop_assert!((got[k] - v).abs() <= v.abs() * 1e-12, "{}: {} vs {}", k, got[k], v);
            }
        }
    }
}
