//! `POST /v1/docs`: puts and deletes over many keys as one atomic change
//! (`Store::write_batch`), answered once durable with the new versions.
//!
//! Body (JSON, or CBOR with `Content-Type: application/cbor`): an array of entries
//! `{"key", "value"}` (any JSON value, `null` included) or `{"key", "delete": true}`, each
//! with an optional `"context": [{"actor", "seq"}]` naming the versions it resolves (as read
//! from `…/siblings`; by default every current sibling). Syntax errors are
//! `400 malformed_body`; an entry of the wrong shape, a key twice, a delete of a missing key
//! or any other refusal answers the entry's error code with a message that starts
//! `entry <index>:`, and nothing is stored.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::Response;
use kdelta_sync::{ActorId, BatchEntry, Dot};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use super::docs::{View, version_json};
use super::format::{Accept, Format, decode_off_worker, read_body};
use super::{ApiError, ErrorCode};
use crate::state::Agent;

/// `POST /v1/docs`.
pub async fn post(
    State(state): State<Agent>,
    Accept(reply): Accept,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let format = Format::of_body(&headers)?;
    let body = read_body(body, state.max_body_bytes)?;
    let max = state.backend.limits().max_batch_docs;
    let entries = decode_off_worker(body, move |b| decode_entries(format, b, max)).await?;
    let versions = state.backend.doc_batch(entries).await?;
    let first = &versions[0];
    Ok(reply.ok(&json!({
        "actor": first.actor.to_string(),
        "seq": first.seq,
        "hlc": first.hlc.to_string(),
        "versions": versions.iter().map(version_json).collect::<Vec<_>>(),
    })))
}

/// One entry as sent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    key: String,
    /// Present (even `null`) for a put.
    #[serde(default, deserialize_with = "present")]
    value: Option<Value>,
    #[serde(default)]
    delete: bool,
    #[serde(default)]
    context: Option<Vec<WireDot>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireDot {
    actor: String,
    seq: u64,
}

/// A field that is present, whatever its value (so `"value": null` is a put of `null`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Decodes a body into batch entries; errors name the entry.
pub fn decode_entries(
    format: Format,
    body: &[u8],
    max_entries: usize,
) -> Result<Vec<BatchEntry>, ApiError> {
    let items: Vec<Value> = match format {
        Format::Json => serde_json::from_slice(body).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => ApiError::malformed_body(format!(
                "the body must be an array of {{\"key\", \"value\"}} or {{\"key\", \"delete\": true}} entries: {e}"
            )),
            _ => ApiError::malformed_body(format!("the body is not valid JSON: {e}")),
        })?,
        Format::Cbor => ciborium::from_reader(body).map_err(|e| {
            ApiError::malformed_body(format!(
                "the body is not a CBOR array of batch entries: {e}"
            ))
        })?,
    };
    if items.len() > max_entries {
        return Err(ApiError::invalid_batch(format!(
            "{} documents, over the maximum of {max_entries} per batch",
            items.len()
        )));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            entry(item).map_err(|(code, msg)| ApiError::new(code, format!("entry {index}: {msg}")))
        })
        .collect()
}

fn entry(item: Value) -> Result<BatchEntry, (ErrorCode, String)> {
    let bad = |msg: String| (ErrorCode::MalformedBody, msg);
    let e: Entry = serde_json::from_value(item).map_err(|e| bad(e.to_string()))?;
    if View::split(&e.key).1 != View::Value {
        return Err((
            ErrorCode::InvalidKey,
            format!(
                "key {:?} ends in /history, /diff or /siblings, which the HTTP API reserves for views of a key",
                e.key
            ),
        ));
    }
    let value = match (e.value, e.delete) {
        (Some(v), false) => Some(v),
        (None, true) => None,
        (Some(_), true) => return Err(bad("has both \"value\" and \"delete\": true".into())),
        (None, false) => return Err(bad("needs \"value\" or \"delete\": true".into())),
    };
    let context = e
        .context
        .map(|dots| {
            dots.into_iter()
                .map(|d| {
                    let actor: ActorId = d
                        .actor
                        .parse()
                        .map_err(|err| bad(format!("context actor {:?}: {err}", d.actor)))?;
                    Ok(Dot { actor, seq: d.seq })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    Ok(BatchEntry {
        key: e.key,
        value,
        context,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(body: &str) -> Result<Vec<BatchEntry>, ApiError> {
        decode_entries(Format::Json, body.as_bytes(), 1000)
    }

    #[test]
    fn entries_decode_puts_deletes_nulls_and_contexts() {
        let actor = ActorId([0xab; 16]);
        let got = decode(&format!(
            r#"[{{"key": "a", "value": {{"x": 1}}}}, {{"key": "b", "value": null}},
               {{"key": "c", "delete": true, "context": [{{"actor": "{actor}", "seq": 3}}]}}]"#
        ))
        .unwrap();
        assert_eq!(got[0], BatchEntry::put("a", json!({"x": 1})));
        assert_eq!(got[1], BatchEntry::put("b", Value::Null));
        assert_eq!(
            got[2],
            BatchEntry::delete("c").with_context(vec![Dot { actor, seq: 3 }])
        );

        let mut cbor = Vec::new();
        ciborium::into_writer(&json!([{"key": "a", "value": [1, 2]}]), &mut cbor).unwrap();
        let got = decode_entries(Format::Cbor, &cbor, 10).unwrap();
        assert_eq!(got, vec![BatchEntry::put("a", json!([1, 2]))]);
    }

    #[test]
    fn bad_entries_name_their_index() {
        let cases = [
            (
                r#"[{"key": "a", "value": 1}, {"key": "b"}]"#,
                "entry 1: needs",
            ),
            (
                r#"[{"key": "a", "value": 1, "delete": true}]"#,
                "entry 0: has both",
            ),
            (
                r#"[{"key": "a", "value": 1}, {"key": "b", "valeu": 1}]"#,
                "entry 1: unknown field",
            ),
            (r#"[{"value": 1}]"#, "entry 0: missing field `key`"),
            (r#"[1]"#, "entry 0:"),
            (
                r#"[{"key": "a", "value": 1, "context": [{"actor": "zz", "seq": 1}]}]"#,
                "entry 0: context actor",
            ),
            (r#"[{"key": "a/history", "value": 1}]"#, "entry 0: key"),
            (r#"{"key": "a"}"#, "must be an array"),
            (r#"[{"key": "a", "value": 1},"#, "not valid JSON"),
        ];
        for (body, want) in cases {
            let err = decode(body).unwrap_err();
            assert!(err.message.contains(want), "{body}: {}", err.message);
        }
        let err = decode_entries(
            Format::Json,
            br#"[{"key":"a","value":1},{"key":"b","value":2}]"#,
            1,
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidBatch);
        assert!(decode_entries(Format::Cbor, &[0xff, 0x00], 10).is_err());
    }
}
