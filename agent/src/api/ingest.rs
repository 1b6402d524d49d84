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
//! the store refuses (empty, too many readings, duplicate timestamps).
//!
//! **One bad reading is one lost reading** (issue 15): a well-formed reading the store
//! cannot hold ([`check_reading`]: a bad series name, NaN/∞ from CBOR, a timestamp outside
//! 1970..9999, a unit over 32 bytes) is left out and named in the answer's `rejected` list
//! (`readings[17]`, `series[2].values[5]`), counted per reason under source `http` (`GET
//! /v1/sources`, `kdelta sources`); the rest of the batch is stored. `?atomic=true` asks
//! for all or nothing instead: any such reading refuses the whole batch (`422`, nothing
//! stored). A batch whose every reading is refused is `422` either way.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use kdelta_sync::{ReadingBatch, ReadingProblem, SeriesPoints, check_reading};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use super::ApiError;
use super::format::{Accept, Format, decode_off_worker, read_body};
use crate::internal_events::{IngestCommitted, IngestRejected, InternalEvent, ReadingsDropped};
use crate::state::Agent;
use crate::time::{now_ms, parse_rfc3339};

/// Label of HTTP ingest in the `source` metric label.
const SOURCE: &str = "http";

/// Rejected readings listed one by one in an answer; beyond, only counted.
const LISTED_REJECTS: usize = 100;

/// Query of `POST /v1/readings`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestQuery {
    /// All or nothing: a reading the store cannot hold refuses the whole batch.
    #[serde(default)]
    atomic: bool,
}

/// `POST /v1/readings`.
pub async fn post_readings(
    State(state): State<Agent>,
    Accept(reply): Accept,
    query: Result<Query<IngestQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let result = match super::params::query(query) {
        Ok(q) => ingest(&state, &headers, q, body).await,
        Err(e) => Err(e),
    };
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
    query: IngestQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<serde_json::Value, ApiError> {
    let format = Format::of_body(headers)?;
    let body = read_body(body, state.max_body_bytes)?;
    let now = now_ms();
    let Screened {
        mut batch,
        rejected,
    } = decode_off_worker(body, move |b| decode_screened(format, b, now)).await?;
    if !rejected.is_empty() && (query.atomic || batch.is_empty()) {
        // Nothing is stored: the whole batch is refused, naming the first offender.
        let first = &rejected[0];
        let why = if query.atomic {
            "atomic=true: nothing was stored"
        } else {
            "no reading of the batch can be stored"
        };
        return Err(ApiError::invalid_batch(format!(
            "{}: {} ({} reading(s) refused; {why})",
            first.at,
            first.problem,
            rejected.len()
        )));
    }
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
    let mut answer = serde_json::json!({
        "actor": change.actor.to_string(),
        "seq": change.seq,
        "hlc": change.hlc.to_string(),
        "count": count,
    });
    if !rejected.is_empty() {
        count_rejects(state, &rejected);
        answer["rejected_count"] = rejected.len().into();
        answer["rejected"] = rejected
            .iter()
            .take(LISTED_REJECTS)
            .map(|r| {
                serde_json::json!({
                    "at": r.at,
                    "series": r.series,
                    "reason": r.problem.reason(),
                    "message": r.problem.to_string(),
                })
            })
            .collect();
    }
    Ok(answer)
}

/// Counts readings left out of a stored batch, per reason, under source `http`.
fn count_rejects(state: &Agent, rejected: &[Rejected]) {
    let mut by_problem: BTreeMap<ReadingProblem, (u64, &str)> = BTreeMap::new();
    for r in rejected {
        by_problem.entry(r.problem).or_insert((0, &r.series)).0 += 1;
    }
    for (problem, (readings, series)) in by_problem {
        ReadingsDropped {
            source: SOURCE,
            readings,
            problem,
            series,
        }
        .emit(&state.metrics);
    }
}

/// A reading left out of a batch: where it was in the body, its series, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// Its place in the body: `readings[17]` (row form) or `series[2].values[5]` (columnar).
    pub at: String,
    /// Its series name (at most 64 characters of it).
    pub series: String,
    /// Why the store cannot hold it.
    pub problem: ReadingProblem,
}

/// A decoded body: the readings to store and those left out.
#[derive(Debug)]
pub struct Screened {
    /// What remains to be stored.
    pub batch: ReadingBatch,
    /// What was left out, in body order.
    pub rejected: Vec<Rejected>,
}

/// Decodes a request body in `format` into a batch; readings without `ts` get `now`.
/// Readings the store could not hold are an error here (see [`decode_screened`] to keep
/// the rest).
pub fn decode_batch(format: Format, body: &[u8], now: i64) -> Result<ReadingBatch, ApiError> {
    let Screened { batch, rejected } = decode_screened(format, body, now)?;
    match rejected.first() {
        None => Ok(batch),
        Some(r) => Err(ApiError::invalid_batch(format!("{}: {}", r.at, r.problem))),
    }
}

/// Decodes a request body in `format`, leaving out (and listing) the well-formed readings
/// the store could not hold; readings without `ts` get `now`.
pub fn decode_screened(format: Format, body: &[u8], now: i64) -> Result<Screened, ApiError> {
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
    Ok(parsed.into_screened(now))
}

/// A decoded body in either form.
enum Body {
    Rows(Vec<Row>),
    Columns(Vec<Columns>),
}

impl Body {
    fn into_screened(self, now: i64) -> Screened {
        let mut rejected = Vec::new();
        let mut reject = |at: String, series: &str, problem| {
            rejected.push(Rejected {
                at,
                series: series.chars().take(64).collect(),
                problem,
            })
        };
        let batch = match self {
            Body::Rows(rows) => {
                let mut batch = ReadingBatch::new();
                for (i, row) in rows.into_iter().enumerate() {
                    let ts = row.ts.map_or(now, |t| t.0);
                    match check_reading(&row.series, ts, row.value.0, row.unit.as_deref()) {
                        Ok(()) => batch.push(&row.series, ts, row.value.0, row.unit.as_deref()),
                        Err(p) => reject(format!("readings[{i}]"), &row.series, p),
                    }
                }
                batch
            }
            Body::Columns(columns) => {
                let mut series = Vec::with_capacity(columns.len());
                for (i, c) in columns.into_iter().enumerate() {
                    // Unequal columns are a malformed series, not a bad reading: the store
                    // refuses the batch, naming it.
                    let uneven = c.ts.len() != c.values.len();
                    let mut points = SeriesPoints {
                        name: c.name,
                        unit: c.unit,
                        meta: c.meta,
                        ts: Vec::with_capacity(c.ts.len()),
                        values: Vec::with_capacity(c.values.len()),
                    };
                    if uneven {
                        points.ts = c.ts.into_iter().map(|t| t.0).collect();
                        points.values = c.values.into_iter().map(|v| v.0).collect();
                        series.push(points);
                        continue;
                    }
                    for (j, (t, v)) in c.ts.into_iter().zip(c.values).enumerate() {
                        match check_reading(&points.name, t.0, v.0, points.unit.as_deref()) {
                            Ok(()) => {
                                points.ts.push(t.0);
                                points.values.push(v.0);
                            }
                            Err(p) => reject(format!("series[{i}].values[{j}]"), &points.name, p),
                        }
                    }
                    if !points.ts.is_empty() {
                        series.push(points);
                    }
                }
                ReadingBatch {
                    timing: None,
                    series,
                }
            }
        };
        Screened { batch, rejected }
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
    fn cbor_nan_is_left_out_and_named_by_its_place() {
        use ciborium::Value as C;
        let row = |v: f64| {
            C::Map(vec![
                (C::Text("series".into()), C::Text("t".into())),
                (C::Text("ts".into()), C::Integer(5.into())),
                (C::Text("value".into()), C::Float(v)),
            ])
        };
        let body = cbor(&C::Array(vec![row(1.0), row(f64::NAN)]));
        let s = decode_screened(Format::Cbor, &body, NOW).unwrap();
        assert_eq!((s.batch.len(), s.batch.series[0].values[0]), (1, 1.0));
        assert_eq!(
            s.rejected,
            vec![Rejected {
                at: "readings[1]".into(),
                series: "t".into(),
                problem: ReadingProblem::NotFinite,
            }]
        );
        // The all-or-nothing decoder names the same reading.
        let e = decode_batch(Format::Cbor, &body, NOW).unwrap_err();
        assert_eq!(e.code, "invalid_batch");
        assert!(e.message.contains("readings[1]"), "{}", e.message);
    }

    #[test]
    fn each_bad_reading_is_left_out_alone_in_both_forms() {
        let long_unit = "u".repeat(33);
        let rows = format!(
            r#"[{{"series":"ok","ts":1,"value":1}},
                {{"series":" padded","ts":2,"value":2}},
                {{"series":"ok","ts":-5,"value":3}},
                {{"series":"ok","ts":4,"value":4}},
                {{"series":"w","ts":5,"value":5,"unit":"{long_unit}"}}]"#
        );
        let s = decode_screened(Format::Json, rows.as_bytes(), NOW).unwrap();
        assert_eq!(s.batch.len(), 2);
        assert_eq!(s.batch.series[0].ts, vec![1, 4]);
        let got: Vec<(&str, ReadingProblem)> = s
            .rejected
            .iter()
            .map(|r| (r.at.as_str(), r.problem))
            .collect();
        assert_eq!(
            got,
            vec![
                ("readings[1]", ReadingProblem::SeriesName),
                ("readings[2]", ReadingProblem::Timestamp),
                ("readings[4]", ReadingProblem::UnitTooLong),
            ]
        );
        let columns = br#"{"series":[
            {"name":"a","ts":[1,2,253402300800000],"values":[1,2,3]},
            {"name":"","ts":[1],"values":[1]},
            {"name":"b","ts":[7],"values":[7]}]}"#;
        let s = decode_screened(Format::Json, columns, NOW).unwrap();
        let names: Vec<&str> = s.batch.series.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(s.batch.series[0].ts, vec![1, 2]);
        let got: Vec<&str> = s.rejected.iter().map(|r| r.at.as_str()).collect();
        assert_eq!(got, ["series[0].values[2]", "series[1].values[0]"]);
        // Unequal columns are left to the store, which refuses the batch naming the series.
        let uneven = br#"{"series":[{"name":"a","ts":[1,2],"values":[1]}]}"#;
        let s = decode_screened(Format::Json, uneven, NOW).unwrap();
        assert!(s.rejected.is_empty());
        assert!(s.batch.clone().normalize(&Default::default()).is_err());
    }
}
