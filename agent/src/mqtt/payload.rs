//! Message bodies: what kdelta publishes (one reading as JSON, batches as JSON or CBOR) and
//! how it reads what it receives (ingest topics and third-party payloads through
//! [`IngestRule`]s). Every byte received is hostile: decoding errors are values, never panics.

use serde::Serialize;
use serde_json::Value;

use super::config::{BatchEncoding, IngestRule, TsUnit};

/// One reading ready for the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Series name.
    pub series: String,
    /// Unix ms.
    pub ts: i64,
    /// Finite value.
    pub value: f64,
    /// Unit, if known.
    pub unit: Option<String>,
}

/// `{"ts": <unix ms>, "value": <number>, "unit": <text or null>}`.
pub fn reading_json(ts: i64, value: f64, unit: Option<&str>) -> Vec<u8> {
    #[derive(Serialize)]
    struct One<'a> {
        ts: i64,
        value: f64,
        unit: Option<&'a str>,
    }
    // Serialising plain numbers and strings into memory cannot fail.
    serde_json::to_vec(&One { ts, value, unit }).unwrap_or_default()
}

/// One series inside a batch message (columnar, like the HTTP API's columnar form).
#[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct BatchSeries<'a> {
    /// Series name.
    pub name: std::borrow::Cow<'a, str>,
    /// Unit, if known.
    pub unit: Option<std::borrow::Cow<'a, str>>,
    /// Unix ms, increasing.
    pub ts: std::borrow::Cow<'a, [i64]>,
    /// Values, same length as `ts`.
    pub values: std::borrow::Cow<'a, [f64]>,
}

/// A batch message: part `part` of change `(actor, seq)` of `device`. Consumers deduplicate
/// on `(actor, seq, part)`.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct BatchMessage<'a> {
    /// Device name.
    pub device: std::borrow::Cow<'a, str>,
    /// Actor id (hex) of the store that made the change.
    pub actor: String,
    /// The change's seq.
    pub seq: u64,
    /// Part of the change, from 0 (a change larger than `batch_max_readings` is split).
    pub part: u32,
    /// The readings.
    pub series: Vec<BatchSeries<'a>>,
}

/// Encodes a batch message.
pub fn encode_batch(msg: &BatchMessage<'_>, encoding: BatchEncoding) -> Vec<u8> {
    match encoding {
        BatchEncoding::Json => serde_json::to_vec(msg).unwrap_or_default(),
        BatchEncoding::Cbor => {
            let mut out = Vec::new();
            // Writing numbers and strings into a Vec cannot fail.
            let _ = ciborium::into_writer(msg, &mut out);
            out
        }
    }
}

/// Why a received payload (or one element of an array) was dropped: a reason, counted per
/// reason in `GET /v1/sources` and `kdelta sources` (the `mqtt` row), and a sentence for the
/// log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadPayload {
    /// `malformed` (not UTF-8, not JSON, not the expected shape), `not_a_number`,
    /// `bad_timestamp`, `bad_series_name` or `unit_too_long`.
    pub reason: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl BadPayload {
    fn new(reason: &'static str, message: impl Into<String>) -> BadPayload {
        BadPayload {
            reason,
            message: message.into(),
        }
    }

    fn malformed(message: impl Into<String>) -> BadPayload {
        BadPayload::new("malformed", message)
    }
}

impl std::fmt::Display for BadPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What an ingest message held: the readings to store, and the elements of an array that
/// were refused (index and why) — one bad element is one lost reading, not a lost message.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ingested {
    /// Readings that can be stored.
    pub readings: Vec<Reading>,
    /// Array elements refused, by index, with the reason.
    pub refused: Vec<(usize, BadPayload)>,
}

/// Decodes a message on `<prefix>/<device>/ingest/<series>`: a number (`21.5`), an object
/// `{"ts", "value"}` (`ts` optional: unix ms or RFC 3339) or an array of such objects. A
/// message that is not one of these (or a single reading that is bad) is an error; in an
/// array, each bad element is refused alone (see [`Ingested::refused`]).
pub fn decode_ingest(series: &str, payload: &[u8], now: i64) -> Result<Ingested, BadPayload> {
    let text = std::str::from_utf8(payload)
        .map_err(|_| BadPayload::malformed("the payload is not UTF-8"))?;
    let value: Value = serde_json::from_str(text.trim())
        .map_err(|e| BadPayload::malformed(format!("the payload is not a number or JSON: {e}")))?;
    let one = |v: &Value| -> Result<Reading, BadPayload> {
        match v {
            Value::Object(map) => {
                if let Some(k) = map
                    .keys()
                    .find(|k| !matches!(k.as_str(), "ts" | "value" | "unit"))
                {
                    return Err(BadPayload::malformed(format!(
                        "unknown field {k:?}; use ts, value and unit"
                    )));
                }
                let value = number(
                    map.get("value")
                        .ok_or_else(|| BadPayload::malformed("the object has no `value`"))?,
                )?;
                let ts = match map.get("ts") {
                    None | Some(Value::Null) => now,
                    Some(t) => timestamp(t, TsUnit::Ms)?,
                };
                let unit = match map.get("unit") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(u)) => Some(u.clone()),
                    Some(_) => return Err(BadPayload::malformed("`unit` must be text")),
                };
                reading(series, ts, value, unit)
            }
            other => reading(series, now, number(other)?, None),
        }
    };
    match &value {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(BadPayload::malformed("the batch is empty"));
            }
            if items.len() > 50_000 {
                return Err(BadPayload::malformed(format!(
                    "{} readings in one message; send at most 50000",
                    items.len()
                )));
            }
            let mut out = Ingested::default();
            for (i, item) in items.iter().enumerate() {
                match one(item) {
                    Ok(r) => out.readings.push(r),
                    Err(e) => out.refused.push((i, e)),
                }
            }
            Ok(out)
        }
        other => Ok(Ingested {
            readings: vec![one(other)?],
            refused: Vec::new(),
        }),
    }
}

/// Applies an ingest rule to a payload whose topic matched it; `series` is the rendered name.
pub fn decode_rule(
    rule: &IngestRule,
    series: &str,
    payload: &[u8],
    now: i64,
) -> Result<Reading, BadPayload> {
    let text = std::str::from_utf8(payload)
        .map_err(|_| BadPayload::malformed("the payload is not UTF-8"))?;
    let trimmed = text.trim();
    // Tasmota's POWER topics carry bare ON/OFF; JSON would refuse them.
    let doc: Value = match serde_json::from_str(trimmed) {
        Ok(v) => v,
        Err(_) if rule.value.is_empty() => Value::String(trimmed.to_owned()),
        Err(e) => {
            return Err(BadPayload::malformed(format!(
                "the payload is not JSON: {e}"
            )));
        }
    };
    let found = doc.pointer(&rule.value).ok_or_else(|| {
        BadPayload::malformed(format!("no value at JSON pointer {:?}", rule.value))
    })?;
    let value = number(found)?;
    let ts = match &rule.ts {
        None => now,
        Some(p) => match doc.pointer(p) {
            Some(t) => timestamp(t, rule.ts_unit)?,
            None => {
                return Err(BadPayload::new(
                    "bad_timestamp",
                    format!("no timestamp at JSON pointer {p:?}"),
                ));
            }
        },
    };
    reading(series, ts, value, rule.unit.clone())
}

fn reading(series: &str, ts: i64, value: f64, unit: Option<String>) -> Result<Reading, BadPayload> {
    kdelta_sync::validate_series_name(series)
        .map_err(|e| BadPayload::new("bad_series_name", e.to_string()))?;
    if !(0..kdelta_sync::MAX_TS_MS).contains(&ts) {
        return Err(BadPayload::new(
            "bad_timestamp",
            format!("timestamp {ts} is outside 1970..9999 (unix ms)"),
        ));
    }
    if unit.as_ref().is_some_and(|u| u.len() > 32) {
        return Err(BadPayload::new(
            "unit_too_long",
            "the unit is longer than 32 bytes",
        ));
    }
    Ok(Reading {
        series: series.to_owned(),
        ts,
        value,
        unit,
    })
}

/// A finite number from a JSON number, a numeric string, a boolean or `ON`/`OFF`.
fn number(v: &Value) -> Result<f64, BadPayload> {
    let n = match v {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        Value::String(s) => match s.trim() {
            t if t.eq_ignore_ascii_case("on") || t.eq_ignore_ascii_case("true") => Some(1.0),
            t if t.eq_ignore_ascii_case("off") || t.eq_ignore_ascii_case("false") => Some(0.0),
            t => t.parse::<f64>().ok(),
        },
        _ => None,
    };
    match n {
        Some(x) if x.is_finite() => Ok(x),
        _ => Err(BadPayload::new(
            "not_a_number",
            format!("{} is not a finite number", short(v)),
        )),
    }
}

/// A timestamp from a number (unix ms or s) or RFC 3339 text (no offset: UTC).
fn timestamp(v: &Value, unit: TsUnit) -> Result<i64, BadPayload> {
    let ms = match v {
        Value::Number(n) => n.as_f64().filter(|x| x.is_finite()).map(|x| match unit {
            TsUnit::Ms => x,
            TsUnit::S => x * 1000.0,
        }),
        Value::String(s) => {
            let s = s.trim();
            let parsed = crate::time::parse_rfc3339_lenient(s);
            parsed.map(|ms| ms as f64)
        }
        _ => None,
    };
    match ms {
        Some(x) if (0.0..kdelta_sync::MAX_TS_MS as f64).contains(&x) => Ok(x as i64),
        _ => Err(BadPayload::new(
            "bad_timestamp",
            format!("{} is not a timestamp (unix ms or RFC 3339)", short(v)),
        )),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 48 {
        format!("{}…", s.chars().take(48).collect::<String>())
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_000_000_000;

    #[test]
    fn ingest_forms() {
        let r = decode_ingest("t", b"21.5", NOW).unwrap().readings;
        assert_eq!(
            r,
            vec![Reading {
                series: "t".into(),
                ts: NOW,
                value: 21.5,
                unit: None
            }]
        );
        let r = decode_ingest("t", br#"{"ts": 5, "value": 1}"#, NOW)
            .unwrap()
            .readings;
        assert_eq!((r[0].ts, r[0].value), (5, 1.0));
        let r = decode_ingest(
            "t",
            br#"{"ts": "2025-11-24T16:00:00Z", "value": 2, "unit": "V"}"#,
            NOW,
        )
        .unwrap()
        .readings;
        assert_eq!(
            (r[0].ts, r[0].unit.as_deref()),
            (1_764_000_000_000, Some("V"))
        );
        let r = decode_ingest(
            "t",
            br#"[{"ts": 1, "value": 1}, {"ts": 2, "value": 2}]"#,
            NOW,
        )
        .unwrap();
        assert_eq!((r.readings.len(), r.refused.len()), (2, 0));
        // One bad element of an array is one refused reading; the others are kept.
        let r = decode_ingest(
            "t",
            br#"[{"ts": 1, "value": 1}, {"ts": -5, "value": 2}, {"value": "x"}, {"ts": 4, "value": 4, "unit": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}, {"ts": 5, "value": 5}]"#,
            NOW,
        )
        .unwrap();
        assert_eq!(
            r.readings.iter().map(|r| r.ts).collect::<Vec<_>>(),
            vec![1, 5]
        );
        assert_eq!(
            r.refused.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert!(r.refused[0].1.message.contains("-5"), "{}", r.refused[0].1);
        // Each counted under its reason.
        assert_eq!(
            r.refused.iter().map(|(_, e)| e.reason).collect::<Vec<_>>(),
            vec!["bad_timestamp", "not_a_number", "unit_too_long"]
        );
        for (bad, reason) in [
            (&b"abc"[..], "malformed"),
            (b"", "malformed"),
            (b"[]", "malformed"),
            (br#"{"value": "x"}"#, "not_a_number"),
            (br#"{"ts": 1}"#, "malformed"),
            (b"\xff", "malformed"),
            (br#"{"value":1,"x":2}"#, "malformed"),
            (br#"{"ts":-5,"value":1}"#, "bad_timestamp"),
        ] {
            let err = decode_ingest("t", bad, NOW).unwrap_err();
            assert_eq!(
                err.reason,
                reason,
                "{:?}: {err}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            decode_ingest("", b"1", NOW).unwrap_err().reason,
            "bad_series_name"
        );
    }

    #[test]
    fn rules_read_pointers() {
        let rule = IngestRule {
            topic: "tele/+/SENSOR".into(),
            series: "tasmota.{1}.power".into(),
            value: "/ENERGY/Power".into(),
            ts: Some("/Time".into()),
            ts_unit: TsUnit::Ms,
            unit: Some("W".into()),
        };
        let payload = br#"{"Time":"2025-11-24T16:00:00","ENERGY":{"Power":42}}"#;
        let r = decode_rule(&rule, "tasmota.plug.power", payload, NOW).unwrap();
        assert_eq!(
            (r.ts, r.value, r.unit.as_deref()),
            (1_764_000_000_000, 42.0, Some("W"))
        );
        assert!(decode_rule(&rule, "s", br#"{"ENERGY":{}}"#, NOW).is_err());
        let shelly = IngestRule {
            ts: Some("/unixtime".into()),
            ts_unit: TsUnit::S,
            value: "/apower".into(),
            ..rule.clone()
        };
        let r = decode_rule(
            &shelly,
            "s",
            br#"{"apower": 3.5, "unixtime": 1764000000}"#,
            NOW,
        )
        .unwrap();
        assert_eq!((r.ts, r.value), (1_764_000_000_000, 3.5));
        let bare = IngestRule {
            value: String::new(),
            ts: None,
            ..rule
        };
        assert_eq!(decode_rule(&bare, "s", b"ON", NOW).unwrap().value, 1.0);
        assert_eq!(decode_rule(&bare, "s", b"17.25", NOW).unwrap().value, 17.25);
        assert!(decode_rule(&bare, "s", b"hello", NOW).is_err());
    }

    #[test]
    fn batch_round_trip() {
        let msg = BatchMessage {
            device: "pi".into(),
            actor: "ab".into(),
            seq: 3,
            part: 0,
            series: vec![BatchSeries {
                name: "t".into(),
                unit: Some("°C".into()),
                ts: vec![1, 2].into(),
                values: vec![1.5, 2.5].into(),
            }],
        };
        let json = encode_batch(&msg, BatchEncoding::Json);
        assert_eq!(serde_json::from_slice::<BatchMessage>(&json).unwrap(), msg);
        let cbor = encode_batch(&msg, BatchEncoding::Cbor);
        assert_eq!(
            ciborium::from_reader::<BatchMessage, _>(&cbor[..]).unwrap(),
            msg
        );
        let one: Value = serde_json::from_slice(&reading_json(5, 1.5, Some("V"))).unwrap();
        assert_eq!(one, serde_json::json!({"ts": 5, "value": 1.5, "unit": "V"}));
    }
}
