//! Batch documents: puts and deletes over many keys as ONE change — one seq, one HLC, all or
//! nothing. Owns the change body ([`DocBatch`], serde name `doc_batch`), its validation, the
//! caller's entry type ([`BatchEntry`]) and [`Store::write_batch`]. The rows are written by
//! the writer (`docwrite.rs`): each key's version is stored exactly as a single put's, under
//! the batch's one change, so a version's dot is `(actor, seq)` and the key tells the
//! versions of one batch apart.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::writer::{Job, LocalDocWrite};
use crate::{DocVersion, DocWrite, Dot, Limits, Result, Store, StoreError, validate_key};

/// Most bytes one context dot takes in an encoded change (a CBOR map of a 16-byte actor and
/// a u64 seq); bounds the growth of a batch whose contexts the writer fills in.
pub(crate) const MAX_DOT_CBOR_BYTES: usize = 40;

/// Writes to several documents made as one atomic change. Each write is a version of its key
/// exactly as a single [`DocWrite`] would be; a key appears at most once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocBatch {
    /// The writes, in the order the writer gave them.
    pub writes: Vec<DocWrite>,
}

impl DocBatch {
    /// Checks the batch: 1 to `max_batch_docs` writes, each valid (key, value size, context
    /// size), no key twice. Errors about one write name its index
    /// ([`StoreError::BatchEntry`]).
    pub fn validate(&self, limits: &Limits) -> Result<()> {
        check_count(self.writes.len(), limits)?;
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(self.writes.len());
        for (index, w) in self.writes.iter().enumerate() {
            w.validate(limits).map_err(|e| e.at_entry(index))?;
            if let Some(first) = seen.insert(w.key.as_str(), index) {
                return Err(StoreError::InvalidDocBatch(format!(
                    "key {:?} is written twice (entries {first} and {index})",
                    w.key.chars().take(64).collect::<String>()
                ))
                .at_entry(index));
            }
        }
        Ok(())
    }
}

fn check_count(n: usize, limits: &Limits) -> Result<()> {
    if n == 0 {
        return Err(StoreError::InvalidDocBatch(
            "the batch holds no documents".into(),
        ));
    }
    if n > limits.max_batch_docs {
        return Err(StoreError::InvalidDocBatch(format!(
            "{n} documents, over the maximum of {} per batch",
            limits.max_batch_docs
        )));
    }
    Ok(())
}

/// A key and value checked for a local write: the key is valid and the value's CBOR (the
/// stored form, returned) is within `max_value_bytes` ([`StoreError::ValueTooLarge`]).
/// What [`Store::put`] checks; a PostgreSQL hub checks the same.
pub fn encode_doc_value(key: &str, value: &serde_json::Value, limits: &Limits) -> Result<Vec<u8>> {
    validate_key(key)?;
    let mut bytes = Vec::new();
    ciborium::into_writer(value, &mut bytes).map_err(|e| StoreError::Decode {
        what: "document value",
        detail: e.to_string(),
    })?;
    if bytes.len() > limits.max_value_bytes {
        return Err(StoreError::ValueTooLarge {
            key: key.to_owned(),
            size: bytes.len(),
            max: limits.max_value_bytes,
        });
    }
    Ok(bytes)
}

/// The checks of a local batch before any context is resolved: 1 to `max_batch_docs`
/// entries, valid keys and values, no key twice, the contexts given within bounds, and the
/// change's encoded size within `max_change_bytes`. Returns the body (each write with its
/// entry's context, or none yet) and its encoded size bound, to pass to
/// [`check_resolved_size`] once the writer knows the contexts it fills in. What
/// [`Store::write_batch`] checks; a PostgreSQL hub checks the same.
pub fn prepare_batch(entries: &[BatchEntry], limits: &Limits) -> Result<(DocBatch, usize)> {
    check_count(entries.len(), limits)?;
    let mut writes = Vec::with_capacity(entries.len());
    for (index, e) in entries.iter().enumerate() {
        validate_key(&e.key).map_err(|err| err.at_entry(index))?;
        let value = match &e.value {
            Some(v) => {
                let mut bytes = Vec::new();
                ciborium::into_writer(v, &mut bytes).map_err(|err| {
                    StoreError::Decode {
                        what: "document value",
                        detail: err.to_string(),
                    }
                    .at_entry(index)
                })?;
                Some(bytes)
            }
            None => None,
        };
        writes.push(DocWrite {
            key: e.key.clone(),
            value,
            context: e.context.clone().unwrap_or_default(),
            pruned: false,
        });
    }
    let body = DocBatch { writes };
    body.validate(limits)?;
    // Exact size of the body as given (contexts the writer fills in are added there), so
    // a batch a peer would refuse to decode is never written.
    let mut encoded = Vec::new();
    ciborium::into_writer(&body, &mut encoded).expect("encoding a batch into memory");
    let encoded_bytes = encoded.len() + 64 + crate::seal::SEAL_MAX_BYTES;
    if encoded_bytes > limits.max_change_bytes {
        return Err(StoreError::InvalidDocBatch(format!(
            "the batch encodes to {encoded_bytes} bytes, over the limit of {} per change; split it",
            limits.max_change_bytes
        )));
    }
    Ok((body, encoded_bytes))
}

/// The size check of a local batch once its writer resolved the contexts not given:
/// `encoded_bytes` from [`prepare_batch`] plus `resolved_dots` dots must stay within
/// `max_change_bytes` ([`StoreError::InvalidDocBatch`]).
pub fn check_resolved_size(
    encoded_bytes: usize,
    resolved_dots: usize,
    limits: &Limits,
) -> Result<()> {
    let size = encoded_bytes + resolved_dots * MAX_DOT_CBOR_BYTES;
    if size > limits.max_change_bytes {
        return Err(StoreError::InvalidDocBatch(format!(
            "with the siblings it resolves, the batch may encode to {size} bytes, over the limit of {} per change; split it",
            limits.max_change_bytes
        )));
    }
    Ok(())
}

/// The refusal of a batch entry whose context names `dot`, which is not a version of `key`.
pub fn not_a_version(dot: Dot, key: &str) -> StoreError {
    StoreError::InvalidDocBatch(format!(
        "context names {}:{}, which is not a version of {:?}",
        dot.actor, dot.seq, key
    ))
}

/// The refusal of a document write to `key`, which holds a twin (merge document).
pub fn twin_not_document(key: &str) -> StoreError {
    StoreError::WrongKind {
        key: key.to_owned(),
        problem: "is a twin (merge document); change it with a twin patch",
    }
}

/// One write of [`Store::write_batch`].
#[derive(Debug, Clone, PartialEq)]
pub struct BatchEntry {
    /// Document key.
    pub key: String,
    /// The new value; `None` deletes the key (a tombstone version).
    pub value: Option<serde_json::Value>,
    /// The versions (siblings) this write resolves, as a client read them; `None` resolves
    /// every current sibling, as [`Store::put`] does. Every dot must be a version of `key`.
    pub context: Option<Vec<Dot>>,
}

impl BatchEntry {
    /// A put of `value` under `key` that resolves every current sibling.
    pub fn put(key: impl Into<String>, value: serde_json::Value) -> BatchEntry {
        BatchEntry {
            key: key.into(),
            value: Some(value),
            context: None,
        }
    }

    /// A delete of `key` that resolves every current sibling.
    pub fn delete(key: impl Into<String>) -> BatchEntry {
        BatchEntry {
            key: key.into(),
            value: None,
            context: None,
        }
    }

    /// The same write resolving exactly the versions `dots` instead of the current siblings.
    pub fn with_context(mut self, dots: Vec<Dot>) -> BatchEntry {
        self.context = Some(dots);
        self
    }
}

impl Store {
    /// Writes every entry as ONE change: one seq, one HLC, all or nothing. Each key gets a
    /// version exactly as [`put`](Self::put)/[`delete`](Self::delete) would write it (its
    /// siblings resolved, or the entry's explicit context); a delete of a key without a live
    /// value, a twin key, a context dot that is not a version of its key, a bad key or value,
    /// a key written twice, more than `max_batch_docs` entries or a change over
    /// `max_change_bytes` refuses the whole batch ([`StoreError::BatchEntry`] names the entry)
    /// and stores nothing. Returns the new versions in entry order once durable.
    pub async fn write_batch(&self, entries: Vec<BatchEntry>) -> Result<Vec<DocVersion>> {
        let (body, encoded_bytes) = prepare_batch(&entries, &self.inner.config.limits)?;
        let jobs: Vec<LocalDocWrite> = body
            .writes
            .into_iter()
            .zip(&entries)
            .map(|(w, e)| LocalDocWrite {
                key: w.key,
                value: w.value,
                context: e.context.clone(),
            })
            .collect();
        let (meta, contexts) = self
            .submit(|reply| Job::DocBatch {
                writes: jobs,
                encoded_bytes,
                reply,
            })
            .await?;
        Ok(entries
            .into_iter()
            .zip(contexts)
            .map(|(e, supersedes)| DocVersion {
                key: e.key,
                actor: meta.actor,
                seq: meta.seq,
                hlc: meta.hlc,
                value: e.value,
                supersedes,
                pruned: false,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ActorId, Change, ChangeBody, Hlc};

    fn write(key: &str) -> DocWrite {
        DocWrite {
            key: key.into(),
            value: Some(vec![0xf6]),
            context: Vec::new(),
            pruned: false,
        }
    }

    fn change(writes: Vec<DocWrite>) -> Change {
        Change {
            actor: ActorId([7; 16]),
            seq: 1,
            hlc: Hlc(1),
            body: ChangeBody::DocBatch(DocBatch { writes }),
            seal: None,
            pruned_rollups: Vec::new(),
        }
    }

    #[test]
    fn validation_names_the_entry_and_the_problem() {
        let l = Limits::default();
        let err = change(vec![]).validate(&l).unwrap_err();
        assert!(err.to_string().contains("no documents"), "{err}");

        let err = change(vec![write("a"), write("b"), write("a")])
            .validate(&l)
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::BatchEntry { index: 2, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("entries 0 and 2"), "{err}");

        let err = change(vec![write("a"), write("")])
            .validate(&l)
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::BatchEntry { index: 1, source } if source.code() == "invalid_key")
        );
        assert_eq!(err.code(), "invalid_key");

        let big = DocWrite {
            value: Some(vec![0; l.max_value_bytes + 1]),
            ..write("big")
        };
        let err = change(vec![write("a"), big]).validate(&l).unwrap_err();
        assert!(
            matches!(&err, StoreError::BatchEntry { index: 1, source } if source.code() == "value_too_large")
        );

        let small = Limits {
            max_batch_docs: 2,
            ..Limits::default()
        };
        let err = change(vec![write("a"), write("b"), write("c")])
            .validate(&small)
            .unwrap_err();
        assert!(err.to_string().contains("over the maximum of 2"), "{err}");

        let crowded = DocWrite {
            context: (1..=(l.max_context_dots as u64 + 1))
                .map(|seq| Dot {
                    actor: ActorId([1; 16]),
                    seq,
                })
                .collect(),
            ..write("x")
        };
        assert!(change(vec![crowded]).validate(&l).is_err());
    }

    #[test]
    fn hostile_batches_are_refused_when_decoded() {
        let l = Limits {
            max_batch_docs: 3,
            ..Limits::default()
        };
        // Too many writes, a duplicate key, a bad key: decoded, then refused.
        for writes in [
            vec![write("a"), write("b"), write("c"), write("d")],
            vec![write("a"), write("a")],
            vec![write("bad\nkey")],
            vec![],
        ] {
            let bytes = change(writes).to_cbor();
            assert!(Change::from_cbor(&bytes, &l).is_err());
        }
        // A value that is not a byte string.
        let mut v = ciborium::Value::serialized(&change(vec![write("a")])).unwrap();
        let text = format!("{v:?}");
        assert!(text.contains("doc_batch"), "serde name: {text}");
        if let ciborium::Value::Map(m) = &mut v {
            for (k, body) in m.iter_mut() {
                if k.as_text() == Some("body") {
                    *body = ciborium::Value::Map(vec![(
                        "doc_batch".into(),
                        ciborium::Value::Map(vec![(
                            "writes".into(),
                            ciborium::Value::Array(vec![ciborium::Value::Map(vec![
                                ("key".into(), "a".into()),
                                ("value".into(), ciborium::Value::Integer(5.into())),
                                ("context".into(), ciborium::Value::Array(vec![])),
                            ])]),
                        )]),
                    )]);
                }
            }
        }
        let mut bytes = Vec::new();
        ciborium::into_writer(&v, &mut bytes).unwrap();
        assert!(Change::from_cbor(&bytes, &l).is_err());
        // A huge declared array length with no elements: an error, no allocation of it.
        let mut bytes = change(vec![write("a")]).to_cbor();
        let at = bytes
            .windows(7)
            .position(|w| w == b"fwrites")
            .expect("writes field")
            + 7;
        bytes.truncate(at);
        bytes.extend_from_slice(&[0x9b, 0x0f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert!(Change::from_cbor(&bytes, &l).is_err());
    }
}
