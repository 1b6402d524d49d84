//! `POST /v1/readings`: decoding JSON or CBOR batches (row form and columnar form) into one
//! [`ReadingBatch`] and committing it on either store (`Backend::append`: the embedded store,
//! or a hub replica's PostgreSQL database). The answer is sent only after the append returns,
//! which is when the batch is durable; a refused batch stores nothing (the store validates
//! the whole batch before writing).
//!
//! Row form: `[{"series": "t", "ts": 1764000000000, "value": 21.5, "unit": "°C"}, …]` —
//! `ts` is unix ms or RFC 3339 text, optional (→ the time of the request); `unit` optional.
//! Columnar form: `{"series": [{"name": "t", "unit": "°C", "meta": {"room": "a"},
//! "ts": [..], "values": [..]}]}`.
//!
//! Syntax errors are `400 malformed_body`; well-formed bodies with wrong types (a string
//! where a number belongs, `"NaN"`, unknown fields) are `422 invalid_batch`, as are batches
//! the store refuses (empty, too many readings, NaN/∞ from CBOR, duplicate timestamps).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use kdelta_sync::{ReadingBatch, SeriesPoints};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use super::ApiError;
use super::format::{Accept, Format, decode_off_worker, read_body};
use crate::internal_events::{IngestCommitted, IngestRejected, InternalEvent};
use crate::state::Agent;
use crate::time::{now_ms, parse_rfc3339};

/// Label of HTTP ingest in the `source` metric label.
const SOURCE: &str = "http";

/// `POST /v1/readings`.
pub async fn post_readings(
    State(state): State<Agent>,
    Accept(reply): Accept,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let result = ingest(&state, &headers, body).await;
    match result {
        Ok(value) => Ok(reply.respond(StatusCode::CREATED, &value)),
        Err(e) => {
            IngestRejected {
                source: SOURCE,
                code: e.code.as_str(),
                readings: None,
                // The API's middleware logs the error once.
                error: None,
            }
            .emit(&state.metrics);
            Err(e)
        }
    }
}

async fn ingest(
    state: &Agent,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<serde_json::Value, ApiError> {
    let format = Format::of_body(headers)?;
    let body = read_body(body, state.max_body_bytes)?;
    let now = now_ms();
    let mut batch = decode_off_worker(body, move |b| decode_batch(format, b, now)).await?;
    // Readings stamped by the agent's clock (no `ts` given) while that clock is not
    // trusted carry a timing record, to be corrected later (docs/clock.md).
    if batch.series.iter().all(|s| s.ts.iter().all(|&t| t == now)) {
        batch.timing =
            crate::sample_timing::SampleTimer::new(state.backend.time_reference()).timing_now();
    }
    let count = batch.len();
    let started = Instant::now();
    let change = state.backend.append(batch).await?;
    IngestCommitted {
        source: SOURCE,
        readings: count as u64,
        batches: 1,
        seconds: started.elapsed().as_secs_f64(),
    }
    .emit(&state.metrics);
    Ok(serde_json::json!({
        "actor": change.actor.to_string(),
        "seq": change.seq,
        "hlc": change.hlc.to_string(),
        "count": count,
    }))
}

/// Decodes a request body in `format` into a batch; readings without `ts` get `now`.
pub fn decode_batch(format: Format, body: &[u8], now: i64) -> Result<ReadingBatch, ApiError> {
    let parsed: Body = match format {
        Format::Json => serde_json::from_slice(body).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => ApiError::invalid_batch(e.to_string()),
            _ => ApiError::malformed_body(format!("the body is not valid JSON: {e}")),
        })?,
        Format::Cbor => {
            let mut rest = body;
            let parsed = ciborium::from_reader(&mut rest).map_err(|e| match e {
                ciborium::de::Error::Semantic(_, msg) => ApiError::invalid_batch(msg),
                ciborium::de::Error::Io(_) => {
                    ApiError::malformed_body("the body is not valid CBOR: it ends early")
                }
                ciborium::de::Error::Syntax(at) => ApiError::malformed_body(format!(
                    "the body is not valid CBOR: syntax error at byte {at}"
                )),
                ciborium::de::Error::RecursionLimitExceeded => {
                    ApiError::malformed_body("the body is not valid CBOR: nested too deeply")
                }
            })?;
            if !rest.is_empty() {
                return Err(ApiError::malformed_body(format!(
                    "the body is not valid CBOR: {} bytes after the batch",
                    rest.len()
                )));
            }
            parsed
        }
    };
    Ok(parsed.into_batch(now))
}

/// A decoded body in either form.
enum Body {
    Rows(Vec<Row>),
    Columns(Vec<Columns>),
}

impl Body {
    fn into_batch(self, now: i64) -> ReadingBatch {
        match self {
            Body::Rows(rows) => {
                let mut batch = ReadingBatch::new();
                for row in rows {
                    let ts = row.ts.map_or(now, |t| t.0);
                    batch.push(&row.series, ts, row.value.0, row.unit.as_deref());
                }
                batch
            }
            Body::Columns(series) => ReadingBatch {
                timing: None,
                series: series
                    .into_iter()
                    .map(|c| SeriesPoints {
                        name: c.name,
                        unit: c.unit,
                        meta: c.meta,
                        ts: c.ts.into_iter().map(|t| t.0).collect(),
                        values: c.values.into_iter().map(|v| v.0).collect(),
                    })
                    .collect(),
            },
        }
    }
}

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Body, D::Error> {
        d.deserialize_any(BodyVisitor)
    }
}

struct BodyVisitor;

impl<'de> Visitor<'de> for BodyVisitor {
    type Value = Body;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"an array of readings [{"series", "ts", "value"}] or {"series": [{"name", "ts": [..], "values": [..]}]}"#)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Body, A::Error> {
        // The body limit bounds the size hint's honesty; cap the pre-allocation anyway.
        let mut rows = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(row) = seq.next_element::<Row>()? {
            rows.push(row);
        }
        Ok(Body::Rows(rows))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Body, A::Error> {
        let mut series: Option<Vec<Columns>> = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "series" if series.is_none() => series = Some(map.next_value()?),
                "series" => return Err(de::Error::duplicate_field("series")),
                other => return Err(de::Error::unknown_field(other, &["series"])),
            }
        }
        series
            .map(Body::Columns)
            .ok_or_else(|| de::Error::missing_field("series"))
    }
}

/// One reading in row form.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    series: String,
    #[serde(default)]
    ts: Option<Ts>,
    value: Number,
    #[serde(default)]
    unit: Option<String>,
}

/// One series in columnar form.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Columns {
    name: String,
    #[serde(default)]
    unit: Option<String>,
    #[serde(default)]
    meta: BTreeMap<String, String>,
    ts: Vec<Ts>,
    values: Vec<Number>,
}

/// A reading value: any JSON/CBOR number (integer or float, NaN/∞ left for the store to
/// refuse). Strings — `"21.5"`, `"NaN"` — and booleans are wrong types.
struct Number(f64);

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Number, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Number;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Number, E> {
                Ok(Number(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Number, E> {
                Ok(Number(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Number, E> {
                Ok(Number(v as f64))
            }
        }
        d.deserialize_any(V)
    }
}

/// A reading time: unix ms (an integer, or a float without fraction) or RFC 3339 text.
struct Ts(i64);

impl<'de> Deserialize<'de> for Ts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Ts, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Ts;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a time: unix milliseconds or RFC 3339 text")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Ts, E> {
                Ok(Ts(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Ts, E> {
                i64::try_from(v)
                    .map(Ts)
                    .map_err(|_| E::custom(format!("ts {v} is out of range")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Ts, E> {
                if v.is_finite() && v.fract() == 0.0 && v.abs() < 9.0e15 {
                    Ok(Ts(v as i64))
                } else {
                    Err(E::custom(format!(
                        "ts {v} is not a whole number of milliseconds"
                    )))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Ts, E> {
                parse_rfc3339(v).map(Ts).ok_or_else(|| {
                    let shown: String = v.chars().take(64).collect();
                    E::custom(format!(
                        "ts {shown:?} is not RFC 3339 (2025-11-24T16:00:00Z) or unix ms"
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_000_000_000;

    fn cbor(v: &ciborium::Value) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(v, &mut out).unwrap();
        out
    }

    #[test]
    fn row_form_json() {
        let body = br#"[{"series":"t","ts":1000,"value":1.5,"unit":"C"},
                        {"series":"t","ts":"1970-01-01T00:00:02Z","value":2},
                        {"series":"h","value":40}]"#;
        let b = decode_batch(Format::Json, body, NOW).unwrap();
        assert_eq!(b.len(), 3);
        assert_eq!(b.series[0].name, "t");
        assert_eq!(b.series[0].ts, vec![1000, 2000]);
        assert_eq!(b.series[0].values, vec![1.5, 2.0]);
        assert_eq!(b.series[0].unit.as_deref(), Some("C"));
        assert_eq!(b.series[1].ts, vec![NOW]);
    }

    #[test]
    fn columnar_form_json_and_cbor() {
        let json = br#"{"series":[{"name":"t","unit":"C","meta":{"room":"a"},"ts":[1,2],"values":[3,4.5]}]}"#;
        let b = decode_batch(Format::Json, json, NOW).unwrap();
        assert_eq!(b.series[0].meta.get("room").map(String::as_str), Some("a"));
        assert_eq!(b.series[0].values, vec![3.0, 4.5]);
        let v: ciborium::Value = serde_json::from_slice::<serde_json::Value>(json)
            .map(|j| ciborium::Value::serialized(&j).unwrap())
            .unwrap();
        assert_eq!(decode_batch(Format::Cbor, &cbor(&v), NOW).unwrap(), b);
    }

    #[test]
    fn syntax_errors_are_malformed() {
        for body in [
            &b""[..],
            b"[",
            b"{\"series\": [",
            br#"[{"series":"t","value":1},]"#,
            b"[] x",
        ] {
            let e = decode_batch(Format::Json, body, NOW).unwrap_err();
            assert_eq!(
                e.code,
                "malformed_body",
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        for body in [&[0x1cu8][..], &[0x81, 0xa1], &[0x80, 0x00], &[]] {
            let e = decode_batch(Format::Cbor, body, NOW).unwrap_err();
            assert_eq!(
                (e.status().as_u16(), e.code.as_str()),
                (400, "malformed_body"),
                "{body:?}"
            );
        }
    }

    #[test]
    fn wrong_types_are_invalid_batch() {
        for body in [
            &br#"[{"series":"t","value":"NaN"}]"#[..],
            br#"[{"series":"t","value":"21.5"}]"#,
            br#"[{"series":"t","value":true}]"#,
            br#"[{"series":1,"value":1}]"#,
            br#"[{"series":"t"}]"#,
            br#"[{"series":"t","value":1,"colour":"red"}]"#,
            br#"[{"series":"t","ts":"yesterday","value":1}]"#,
            br#"[{"series":"t","ts":1.5,"value":1}]"#,
            br#"{"rows":[]}"#,
            br#"{}"#,
            br#"{"series":[{"name":"t","ts":[1],"values":["x"]}]}"#,
            br#""hello""#,
            br#"42"#,
        ] {
            let e = decode_batch(Format::Json, body, NOW).unwrap_err();
            assert_eq!(
                (e.status().as_u16(), e.code.as_str()),
                (422, "invalid_batch"),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let text = cbor(&ciborium::Value::Text("x".into()));
        assert_eq!(
            decode_batch(Format::Cbor, &text, NOW).unwrap_err().code,
            "invalid_batch"
        );
    }

    #[test]
    fn cbor_nan_reaches_the_store_as_nan() {
        use ciborium::Value as C;
        let row = C::Map(vec![
            (C::Text("series".into()), C::Text("t".into())),
            (C::Text("ts".into()), C::Integer(5.into())),
            (C::Text("value".into()), C::Float(f64::NAN)),
        ]);
        let b = decode_batch(Format::Cbor, &cbor(&C::Array(vec![row])), NOW).unwrap();
        assert!(b.series[0].values[0].is_nan());
        let err = b.clone().normalize(&Default::default()).unwrap_err();
        assert_eq!(ApiError::from(err).code, "invalid_batch");
    }
}
