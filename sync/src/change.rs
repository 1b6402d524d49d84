//! Changes: the unit of replication. A change is `(actor, seq)` with its HLC and a body — a
//! batch of readings, one document write, a batch of document writes or a twin change. Owns the change types, their validation and their
//! CBOR codec; knows nothing of SQLite.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::seal::Seal;
use crate::timing::{ReadingTiming, TimeCorrection};
use crate::{ActorId, DocBatch, Hlc, StoreError};

/// The identity of a change (or of a document version): actor and its dense sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    /// The actor that made the change.
    pub actor: ActorId,
    /// Its sequence number, from 1, dense per actor.
    pub seq: u64,
}

/// One replicated change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Actor that made the change.
    pub actor: ActorId,
    /// Dense per-actor sequence number (1, 2, 3, …).
    pub seq: u64,
    /// When it was made.
    pub hlc: Hlc,
    /// What it did.
    pub body: ChangeBody,
    /// Its signature and chain link (see `seal.rs`); `None` for a change made before its
    /// actor's store was upgraded to signing (or by a peer that does not sign yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<Seal>,
    /// Of a readings change retention pruned units from: their per-minute rollups
    /// (`pruned_rollups.rs`), so a receiver's rollups still count those readings. Derived
    /// data outside the signature and the digest, trusted as far as the sending peer;
    /// absent when nothing was pruned (older peers neither send nor expect it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pruned_rollups: Vec<crate::PrunedRollup>,
}

impl Change {
    /// The first seq this change stands for: its own, or the start of the run of wholly
    /// pruned changes it survives ([`Seal::run_from`]).
    pub fn first_seq(&self) -> u64 {
        self.seal
            .as_ref()
            .and_then(|s| s.run_from)
            .unwrap_or(self.seq)
    }

    /// This change's dot.
    pub fn dot(&self) -> Dot {
        Dot {
            actor: self.actor,
            seq: self.seq,
        }
    }

    /// The exact length of this change's CBOR encoding — what [`to_cbor`](Self::to_cbor)
    /// produces, units, metadata and every CBOR header included. Computed by running the
    /// encoder into a byte counter, so it is exact for every body variant by construction
    /// and allocates nothing.
    pub fn encoded_len(&self) -> usize {
        cbor_len(self)
    }

    /// CBOR encoding of this change.
    pub fn to_cbor(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing into a Vec cannot fail, and every field is serialisable.
        ciborium::into_writer(self, &mut out).expect("encoding a change into memory");
        out
    }

    /// Decodes a change from CBOR and validates it. The input is treated as hostile: its size
    /// bounds every allocation, and bad input is an error, never a panic.
    pub fn from_cbor(bytes: &[u8], limits: &Limits) -> Result<Change, StoreError> {
        if bytes.len() > limits.max_change_bytes {
            return Err(StoreError::Decode {
                what: "change",
                detail: format!(
                    "{} bytes, over the limit of {}",
                    bytes.len(),
                    limits.max_change_bytes
                ),
            });
        }
        let change: Change = ciborium::from_reader(bytes).map_err(|e| StoreError::Decode {
            what: "change",
            detail: e.to_string(),
        })?;
        change.validate(limits)?;
        Ok(change)
    }

    /// Checks the invariants every change must hold, whoever made it.
    pub fn validate(&self, limits: &Limits) -> Result<(), StoreError> {
        if self.seq == 0 {
            return Err(StoreError::Decode {
                what: "change",
                detail: "seq 0 is not a valid sequence number".into(),
            });
        }
        if let Some(seal) = &self.seal
            && seal.body.is_some()
        {
            // Pruned wholly: no readings, no pruned hashes, only the body hash.
            let empty = matches!(&self.body, ChangeBody::Readings(b) if b.series.is_empty());
            if !empty || !seal.pruned.is_empty() {
                return Err(StoreError::Decode {
                    what: "change",
                    detail: "a wholly pruned change's body hash on a change that still \
                             carries readings, pruned hashes or another kind of body"
                        .into(),
                });
            }
        }
        if let Some(from) = self.seal.as_ref().and_then(|s| s.run_from) {
            // The survivor of a run of wholly pruned changes stands for seqs from..seq.
            let wholly = self.seal.as_ref().is_some_and(|s| s.body.is_some());
            if !wholly || from == 0 || from >= self.seq {
                return Err(StoreError::Decode {
                    what: "change",
                    detail: format!(
                        "a log run from seq {from} on change seq {}: a run starts at seq 1 or \
                         later, below its change, which must be pruned wholly",
                        self.seq
                    ),
                });
            }
        }
        if let Some(seal) = &self.seal
            && !seal.pruned.is_empty()
        {
            let writes: &[DocWrite] = match &self.body {
                ChangeBody::Doc(d) => std::slice::from_ref(d),
                ChangeBody::DocBatch(b) => &b.writes,
                _ => &[],
            };
            let present = match &self.body {
                ChangeBody::Readings(b) => b.series.len(),
                // One write hash per version whose value retention pruned.
                ChangeBody::Doc(_) | ChangeBody::DocBatch(_) => {
                    let marked = writes.iter().filter(|w| w.pruned).count();
                    if marked != seal.pruned.len() {
                        return Err(StoreError::Decode {
                            what: "change",
                            detail: format!(
                                "{} pruned write hashes for {marked} pruned document versions",
                                seal.pruned.len()
                            ),
                        });
                    }
                    writes.len() - marked
                }
                _ => {
                    return Err(StoreError::Decode {
                        what: "change",
                        detail: "pruned hashes on a change that is neither readings nor documents"
                            .into(),
                    });
                }
            };
            if present + seal.pruned.len() > limits.max_batch_readings {
                return Err(StoreError::Decode {
                    what: "change",
                    detail: format!(
                        "{} series and {} pruned units, over the limit of {}",
                        present,
                        seal.pruned.len(),
                        limits.max_batch_readings
                    ),
                });
            }
        }
        crate::check_pruned_rollups(self, limits)?;
        match &self.body {
            // A readings change retention pruned wholly is served with no readings: still a
            // change (its seq keeps the version vector dense).
            ChangeBody::Readings(b) if b.is_empty() => Ok(()),
            ChangeBody::Readings(b) => b.validate(limits),
            ChangeBody::Doc(d) => d.validate(limits),
            ChangeBody::DocBatch(b) => b.validate(limits),
            ChangeBody::Twin(t) => t.validate(self.actor, limits).map(drop),
            ChangeBody::TimeCorrection(c) => c.validate(self.seq, limits),
            ChangeBody::Gap(g) => g.validate(),
        }
    }
}

/// The exact length of a value's CBOR encoding (the protocol sizes pages with it).
pub(crate) use crate::stored_cbor::encoded_len as cbor_len;

/// What a change did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeBody {
    /// A batch of readings (grow-only set).
    Readings(ReadingBatch),
    /// One write to a versioned document (multi-value register).
    Doc(DocWrite),
    /// Writes to several documents as one atomic change (one seq, one HLC). Agents older
    /// than schema 4 cannot decode it.
    DocBatch(DocBatch),
    /// One automerge change to a merge document (device twin).
    Twin(TwinChange),
    /// Corrects the timestamps of the same actor's readings sampled under an untrusted
    /// clock (see `timing.rs`).
    TimeCorrection(TimeCorrection),
    /// Readings this actor dropped under its disk budget's hard limit before an upstream
    /// peer had them (`changes.kind = 6`, see `gap.rs`). Agents older than schema 5 cannot
    /// decode it.
    Gap(crate::GapRecord),
}

/// One automerge change to the merge document `key`. The bytes are an uncompressed automerge
/// change chunk whose automerge actor is the kdelta actor that made the change, so one
/// replica's changes can never claim another's automerge sequence numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TwinChange {
    /// Document key.
    pub key: String,
    /// The raw automerge change chunk.
    #[serde(with = "bytes")]
    pub change: Vec<u8>,
}

impl TwinChange {
    /// Checks key, size (at most `max_value_bytes`) and that the bytes are one uncompressed
    /// automerge change by `actor` with at most [`MAX_TWIN_CHANGE_OPS`] operations; returns
    /// the decoded change.
    pub fn validate(
        &self,
        actor: ActorId,
        limits: &Limits,
    ) -> Result<automerge::Change, StoreError> {
        validate_key(&self.key)?;
        if self.change.len() > limits.max_value_bytes {
            return Err(StoreError::ValueTooLarge {
                key: self.key.clone(),
                size: self.change.len(),
                max: limits.max_value_bytes,
            });
        }
        let bad = |detail: String| StoreError::Decode {
            what: "twin change",
            detail: format!(
                "{:?}: {detail}",
                self.key.chars().take(64).collect::<String>()
            ),
        };
        // Chunk layout: 4 magic bytes, 4 checksum bytes, 1 type byte (1 = change). Compressed
        // chunks (type 2) are refused before decoding: their inflated size is not bounded by
        // the size checked above.
        match self.change.get(8) {
            Some(1) => {}
            Some(t) => return Err(bad(format!("chunk type {t} is not an uncompressed change"))),
            None => return Err(bad("too short to be an automerge change".into())),
        }
        let change = automerge::Change::try_from(&self.change[..])
            .map_err(|e| bad(format!("not an automerge change: {e}")))?;
        if change.actor_id().to_bytes() != actor.as_bytes() {
            return Err(bad(format!(
                "automerge actor {} is not the change's actor {actor}",
                change.actor_id()
            )));
        }
        if change.len() > MAX_TWIN_CHANGE_OPS {
            return Err(bad(format!(
                "{} operations, over the limit of {MAX_TWIN_CHANGE_OPS}",
                change.len()
            )));
        }
        Ok(change)
    }
}

/// Most automerge operations one twin change may carry.
pub const MAX_TWIN_CHANGE_OPS: usize = 100_000;

/// A document version: a new value, or a tombstone, superseding the versions it saw.
///
/// A version document retention pruned (`doc_retention.rs`) travels as what remains of it:
/// key and context, `pruned` set and no value. On the wire it is `{key, pruned: true,
/// context}` — without the `value` field every other version carries, so an agent older than
/// schema 7 refuses the change ("missing field `value`") instead of reading it as a delete.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DocWrite {
    /// Document key.
    pub key: String,
    /// CBOR-encoded JSON value; `None` is a delete (tombstone), or a pruned version's.
    #[serde(default, with = "opt_bytes")]
    pub value: Option<Vec<u8>>,
    /// Dots of the versions (siblings) the writer saw and resolves.
    pub context: Vec<Dot>,
    /// Retention dropped this version's value; the version (its dot and context) remains.
    #[serde(default)]
    pub pruned: bool,
}

impl Serialize for DocWrite {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        /// The value field as `opt_bytes` writes it.
        struct Value<'a>(&'a Option<Vec<u8>>);
        impl Serialize for Value<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                opt_bytes::serialize(self.0, s)
            }
        }
        // Field order and names as the derived encoding of earlier releases.
        let mut st = s.serialize_struct("DocWrite", 3)?;
        st.serialize_field("key", &self.key)?;
        if self.pruned {
            st.serialize_field("pruned", &true)?;
        } else {
            st.serialize_field("value", &Value(&self.value))?;
        }
        st.serialize_field("context", &self.context)?;
        st.end()
    }
}

impl DocWrite {
    pub(crate) fn validate(&self, limits: &Limits) -> Result<(), StoreError> {
        validate_key(&self.key)?;
        if self.pruned && self.value.is_some() {
            return Err(StoreError::Decode {
                what: "document write",
                detail: format!(
                    "{:?} is marked pruned but carries a value",
                    self.key.chars().take(64).collect::<String>()
                ),
            });
        }
        if let Some(v) = &self.value
            && v.len() > limits.max_value_bytes
        {
            return Err(StoreError::ValueTooLarge {
                key: self.key.clone(),
                size: v.len(),
                max: limits.max_value_bytes,
            });
        }
        if self.context.len() > limits.max_context_dots {
            return Err(StoreError::Decode {
                what: "document write",
                detail: format!("context of {} dots is over the limit", self.context.len()),
            });
        }
        Ok(())
    }
}

/// Size limits that protect the store from oversized or hostile input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Most readings in one batch (one change).
    pub max_batch_readings: usize,
    /// Largest encoded document value, in bytes.
    pub max_value_bytes: usize,
    /// Largest encoded change, in bytes.
    pub max_change_bytes: usize,
    /// Most sibling dots one document write may resolve.
    pub max_context_dots: usize,
    /// Most document writes in one batch (one change, see [`DocBatch`]).
    pub max_batch_docs: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch_readings: 50_000,
            max_value_bytes: 1 << 20,
            max_change_bytes: 4 << 20,
            max_context_dots: 1024,
            max_batch_docs: 1000,
        }
    }
}

impl Limits {
    /// An upper bound of the encoded size of any document or twin change these limits let
    /// through: a value of `max_value_bytes`, a key of [`MAX_KEY_BYTES`], `max_context_dots`
    /// context dots, the largest seq and HLC (proven by a test against the encoder).
    pub fn max_doc_change_bytes(&self) -> usize {
        self.max_value_bytes
            .saturating_add(self.max_context_dots.saturating_mul(MAX_DOT_BYTES))
            .saturating_add(MAX_KEY_BYTES + DOC_CHANGE_OVERHEAD_BYTES)
    }

    /// Checks that the limits fit together: every document or twin change the other limits
    /// allow must also fit `max_change_bytes`, or it could be written but never synced. The
    /// error names the field and says what would work.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.max_value_bytes == 0 {
            return Err(("max_value_bytes", "must be at least 1".into()));
        }
        let doc = self.max_doc_change_bytes();
        if self.max_change_bytes < doc {
            return Err((
                "max_change_bytes",
                format!(
                    "{} is below {doc}, the size of the largest document change max_value_bytes \
                     ({}) and max_context_dots ({}) allow; raise it or lower those",
                    self.max_change_bytes, self.max_value_bytes, self.max_context_dots
                ),
            ));
        }
        Ok(())
    }
}

/// Most bytes one context dot (`{actor, seq}`) takes in a change's CBOR.
pub const MAX_DOT_BYTES: usize = 40;
/// Most bytes of a document change besides its value, key and context dots (field names,
/// headers, actor, seq, HLC, the seal).
const DOC_CHANGE_OVERHEAD_BYTES: usize = 256 + crate::seal::SEAL_MAX_BYTES;

/// Longest document key, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// Longest series name, in bytes.
pub const MAX_SERIES_NAME_BYTES: usize = 256;

/// Checks a document key: 1–512 bytes, no control characters.
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    let reason = if key.is_empty() {
        "must not be empty"
    } else if key.len() > MAX_KEY_BYTES {
        "is longer than 512 bytes"
    } else if key.chars().any(char::is_control) {
        "contains control characters"
    } else {
        return Ok(());
    };
    Err(StoreError::InvalidKey {
        key: key.chars().take(64).collect(),
        reason,
    })
}

/// Readings of one series inside a batch, in columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoints {
    /// Series name.
    pub name: String,
    /// Unit of measurement, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Free-form metadata (location, sensor model, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
    /// Timestamps, unix ms, strictly increasing after [`ReadingBatch::normalize`]. Delta-encoded
    /// on the wire.
    #[serde(with = "delta")]
    pub ts: Vec<i64>,
    /// Values, same length as `ts`, all finite.
    pub values: Vec<f64>,
}

/// A batch of readings: one change.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ReadingBatch {
    /// Per-series columns.
    pub series: Vec<SeriesPoints>,
    /// Set when the readings were timed by a wall clock that was not trusted: how to correct
    /// them once a trusted time is known. Absent for trusted (or sender-vouched) times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<ReadingTiming>,
}

impl ReadingBatch {
    /// An empty batch.
    pub fn new() -> ReadingBatch {
        ReadingBatch::default()
    }

    /// Adds one reading (row form). Readings of one series are grouped with the last entry
    /// of that series among the [`PUSH_LOOKBACK`] most recent entries; beyond that (many
    /// interleaved series) a new entry is started, so a push costs O(1) however many series
    /// the batch holds. Call [`normalize`](Self::normalize) (the store does) to merge entries
    /// of one series, sort and check.
    pub fn push(&mut self, series: &str, ts_ms: i64, value: f64, unit: Option<&str>) {
        let from = self.series.len().saturating_sub(PUSH_LOOKBACK);
        let idx = match self.series[from..].iter().rposition(|s| s.name == series) {
            Some(i) => from + i,
            None => {
                self.series.push(SeriesPoints {
                    name: series.to_owned(),
                    unit: unit.map(str::to_owned),
                    meta: BTreeMap::new(),
                    ts: Vec::new(),
                    values: Vec::new(),
                });
                self.series.len() - 1
            }
        };
        let s = &mut self.series[idx];
        if s.unit.is_none() {
            s.unit = unit.map(str::to_owned);
        }
        s.ts.push(ts_ms);
        s.values.push(value);
    }

    /// Number of readings.
    pub fn len(&self) -> usize {
        self.series.iter().map(|s| s.ts.len()).sum()
    }

    /// True when the batch holds no reading.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Splits a batch of at least two readings into two non-empty halves: by series when
    /// it has several, else by time (unit, metadata and the timing record go with both
    /// halves).
    pub fn split_in_two(mut self) -> (ReadingBatch, ReadingBatch) {
        let timing = self.timing;
        if self.series.len() > 1 {
            let second = self.series.split_off(self.series.len() / 2);
            return (
                self,
                ReadingBatch {
                    series: second,
                    timing,
                },
            );
        }
        let Some(mut first) = self.series.pop() else {
            return (ReadingBatch::new(), ReadingBatch::new());
        };
        let half = first.ts.len() / 2;
        let second = SeriesPoints {
            name: first.name.clone(),
            unit: first.unit.clone(),
            meta: first.meta.clone(),
            ts: first.ts.split_off(half),
            values: first.values.split_off(half),
        };
        (
            ReadingBatch {
                series: vec![first],
                timing,
            },
            ReadingBatch {
                series: vec![second],
                timing,
            },
        )
    }

    /// Merges entries of the same series, sorts each series by time and validates the whole
    /// batch. Any problem rejects the batch as a whole.
    pub fn normalize(&mut self, limits: &Limits) -> Result<(), StoreError> {
        // Merge duplicate series entries, keeping first-seen order (a map: O(n) in entries).
        let mut merged: Vec<SeriesPoints> = Vec::with_capacity(self.series.len());
        let mut at: HashMap<String, usize> = HashMap::with_capacity(self.series.len());
        for s in self.series.drain(..) {
            if s.ts.len() != s.values.len() {
                return Err(StoreError::InvalidBatch(format!(
                    "series {:?} has {} timestamps but {} values",
                    s.name,
                    s.ts.len(),
                    s.values.len()
                )));
            }
            match at.get(&s.name).map(|&i| &mut merged[i]) {
                Some(m) => {
                    m.ts.extend(s.ts);
                    m.values.extend(s.values);
                    if m.unit.is_none() {
                        m.unit = s.unit;
                    }
                    m.meta.extend(s.meta);
                }
                None => {
                    at.insert(s.name.clone(), merged.len());
                    merged.push(s);
                }
            }
        }
        for s in &mut merged {
            if !s.ts.windows(2).all(|w| w[0] < w[1]) {
                let mut pairs: Vec<(i64, f64)> =
                    s.ts.iter().copied().zip(s.values.iter().copied()).collect();
                pairs.sort_by_key(|p| p.0);
                s.ts = pairs.iter().map(|p| p.0).collect();
                s.values = pairs.iter().map(|p| p.1).collect();
            }
        }
        self.series = merged;
        self.validate(limits)
    }

    /// Validates without reordering: non-empty, within the size limit, finite values, valid
    /// names, strictly increasing timestamps per series (no duplicate reading).
    pub fn validate(&self, limits: &Limits) -> Result<(), StoreError> {
        let n = self.len();
        if n == 0 {
            return Err(StoreError::InvalidBatch(
                "the batch holds no readings".into(),
            ));
        }
        if n > limits.max_batch_readings {
            return Err(StoreError::InvalidBatch(format!(
                "{n} readings, over the maximum of {} per batch",
                limits.max_batch_readings
            )));
        }
        let mut seen: HashSet<&str> = HashSet::with_capacity(self.series.len());
        for s in &self.series {
            validate_series_name(&s.name)?;
            if !seen.insert(s.name.as_str()) {
                return Err(StoreError::InvalidBatch(format!(
                    "series {:?} appears twice",
                    s.name
                )));
            }
            if s.ts.len() != s.values.len() {
                return Err(StoreError::InvalidBatch(format!(
                    "series {:?} has {} timestamps but {} values",
                    s.name,
                    s.ts.len(),
                    s.values.len()
                )));
            }
            if s.unit.as_ref().is_some_and(|u| u.len() > MAX_UNIT_BYTES) {
                return Err(StoreError::InvalidBatch(format!(
                    "unit of series {:?} is longer than {MAX_UNIT_BYTES} bytes",
                    s.name
                )));
            }
            if s.meta.len() > 32 || s.meta.iter().any(|(k, v)| k.len() > 64 || v.len() > 256) {
                return Err(StoreError::InvalidBatch(format!(
                    "metadata of series {:?} is too large (≤ 32 entries, keys ≤ 64 and values ≤ 256 bytes)",
                    s.name
                )));
            }
            for (ts, v) in s.ts.iter().zip(&s.values) {
                if !v.is_finite() {
                    return Err(StoreError::InvalidBatch(format!(
                        "series {:?} at {ts}: value {v} is not a finite number",
                        s.name
                    )));
                }
                if !(0..MAX_TS_MS).contains(ts) {
                    return Err(StoreError::InvalidBatch(format!(
                        "series {:?}: timestamp {ts} is outside 1970..9999 (unix milliseconds)",
                        s.name
                    )));
                }
            }
            if let Some(w) = s.ts.windows(2).find(|w| w[0] >= w[1]) {
                return Err(StoreError::InvalidBatch(format!(
                    "series {:?} has two readings at {} (or is unsorted)",
                    s.name, w[1]
                )));
            }
        }
        Ok(())
    }
}

/// Longest unit of a series, in bytes.
pub const MAX_UNIT_BYTES: usize = 32;

/// Why one reading cannot be stored (see [`check_reading`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ReadingProblem {
    /// The series name is empty, too long, or has control characters or outer blanks.
    SeriesName,
    /// The value is NaN or infinite.
    NotFinite,
    /// The timestamp is outside what a store holds (`0..MAX_TS_MS`, 1970 to the year 9999).
    Timestamp,
    /// The unit is longer than [`MAX_UNIT_BYTES`].
    UnitTooLong,
}

impl ReadingProblem {
    /// A short stable reason, used as a metric label and in status pages.
    pub fn reason(self) -> &'static str {
        match self {
            ReadingProblem::SeriesName => "bad_series_name",
            ReadingProblem::NotFinite => "not_finite",
            ReadingProblem::Timestamp => "bad_timestamp",
            ReadingProblem::UnitTooLong => "unit_too_long",
        }
    }
}

impl std::fmt::Display for ReadingProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReadingProblem::SeriesName => "not a valid series name",
            ReadingProblem::NotFinite => "the value is not a finite number",
            ReadingProblem::Timestamp => "the timestamp is outside 1970..9999 (unix ms)",
            ReadingProblem::UnitTooLong => "the unit is longer than 32 bytes",
        })
    }
}

/// Checks one reading by the rules [`ReadingBatch::validate`] applies to each reading, so
/// an ingest path can refuse the offending readings alone instead of a whole batch.
pub fn check_reading(
    series: &str,
    ts_ms: i64,
    value: f64,
    unit: Option<&str>,
) -> Result<(), ReadingProblem> {
    if validate_series_name(series).is_err() {
        Err(ReadingProblem::SeriesName)
    } else if !value.is_finite() {
        Err(ReadingProblem::NotFinite)
    } else if !(0..MAX_TS_MS).contains(&ts_ms) {
        Err(ReadingProblem::Timestamp)
    } else if unit.is_some_and(|u| u.len() > MAX_UNIT_BYTES) {
        Err(ReadingProblem::UnitTooLong)
    } else {
        Ok(())
    }
}

/// Entries [`ReadingBatch::push`] searches for the series of a reading (from the last).
pub const PUSH_LOOKBACK: usize = 16;

/// Largest accepted timestamp: the start of year 10000, in unix ms.
pub const MAX_TS_MS: i64 = 253_402_300_800_000;

/// Checks a series name: 1–256 bytes, no control characters, no leading/trailing blanks.
pub fn validate_series_name(name: &str) -> Result<(), StoreError> {
    let problem = if name.is_empty() {
        "is empty"
    } else if name.len() > MAX_SERIES_NAME_BYTES {
        "is longer than 256 bytes"
    } else if name.chars().any(char::is_control) {
        "contains control characters"
    } else if name.trim() != name {
        "has leading or trailing blanks"
    } else {
        return Ok(());
    };
    Err(StoreError::InvalidBatch(format!(
        "series name {:?} {problem}",
        name.chars().take(64).collect::<String>()
    )))
}

/// Timestamps as first value + deltas: small integers encode in 1–3 CBOR bytes instead of 9.
mod delta {
    use serde::{Deserialize, Deserializer, Serializer, ser::SerializeSeq};

    pub fn serialize<S: Serializer>(ts: &[i64], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(ts.len()))?;
        let mut prev = 0i64;
        for &t in ts {
            seq.serialize_element(&t.wrapping_sub(prev))?;
            prev = t;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<i64>, D::Error> {
        let deltas = Vec::<i64>::deserialize(d)?;
        let mut prev = 0i64;
        Ok(deltas
            .into_iter()
            .map(|dt| {
                prev = prev.wrapping_add(dt);
                prev
            })
            .collect())
    }
}

/// `Vec<u8>` as a CBOR byte string.
mod bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        match ciborium::Value::deserialize(d)? {
            ciborium::Value::Bytes(b) => Ok(b),
            _ => Err(serde::de::Error::custom(
                "twin change must be a byte string",
            )),
        }
    }
}

/// `Option<Vec<u8>>` as a CBOR byte string (not an array of integers).
mod opt_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(&serde_bytes_ref(b)),
            None => s.serialize_none(),
        }
    }

    struct Bytes<'a>(&'a [u8]);
    impl serde::Serialize for Bytes<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }
    fn serde_bytes_ref(b: &[u8]) -> Bytes<'_> {
        Bytes(b)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<ciborium::Value>::deserialize(d)?
            .map(|v| match v {
                ciborium::Value::Bytes(b) => Ok(b),
                _ => Err(serde::de::Error::custom(
                    "document value must be a byte string",
                )),
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn batch_strategy() -> impl Strategy<Value = ReadingBatch> {
        proptest::collection::btree_map(
            "[a-z]{1,8}",
            proptest::collection::btree_map(0i64..MAX_TS_MS, -1e12f64..1e12, 1..20),
            1..4,
        )
        .prop_flat_map(|m| {
            let timing = proptest::option::of((any::<[u8; 16]>(), any::<i64>()).prop_map(
                |(b, offset_ms)| ReadingTiming {
                    boot_id: crate::timing::BootId(b),
                    offset_ms,
                },
            ));
            (Just(m), timing)
        })
        .prop_map(|(m, timing)| ReadingBatch {
            timing,
            series: m
                .into_iter()
                .map(|(name, pts)| SeriesPoints {
                    name,
                    unit: Some("°C".into()),
                    meta: BTreeMap::new(),
                    ts: pts.keys().copied().collect(),
                    values: pts.values().copied().collect(),
                })
                .collect(),
        })
    }

    fn doc_write_strategy(key: impl Strategy<Value = String>) -> impl Strategy<Value = DocWrite> {
        (
            key,
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
            proptest::collection::vec((any::<[u8; 16]>(), 1u64..100), 0..3),
        )
            .prop_map(|(key, value, ctx)| DocWrite {
                key,
                // Some versions come pruned (no value, the marker set).
                pruned: value.as_ref().is_some_and(|v| v.len() % 5 == 4),
                value: value.filter(|v| v.len() % 5 != 4),
                context: ctx
                    .into_iter()
                    .map(|(a, seq)| Dot {
                        actor: ActorId(a),
                        seq,
                    })
                    .collect(),
            })
    }

    fn change_strategy() -> impl Strategy<Value = Change> {
        let body = prop_oneof![
            batch_strategy().prop_map(ChangeBody::Readings),
            doc_write_strategy("[a-z/]{1,20}".boxed()).prop_map(ChangeBody::Doc),
            // Distinct keys: a batch writes each key once.
            proptest::collection::btree_set("[a-z/]{1,20}", 1..6)
                .prop_flat_map(|keys| {
                    keys.into_iter()
                        .map(|k| doc_write_strategy(Just(k)))
                        .collect::<Vec<_>>()
                })
                .prop_map(|writes| ChangeBody::DocBatch(DocBatch { writes })),
            (
                any::<[u8; 16]>(),
                any::<[u8; 16]>(),
                proptest::collection::vec(
                    (
                        1u64..1000,
                        0u64..1000,
                        -1_000_000_000_000i64..1_000_000_000_000
                    ),
                    1..5
                )
            )
                .prop_map(|(boot, peer, runs)| {
                    let mut at = 0;
                    let ranges = runs
                        .into_iter()
                        .map(|(gap, len, delta_ms)| {
                            let first_seq = at + gap;
                            at = first_seq + len;
                            crate::timing::CorrectedRange {
                                first_seq,
                                last_seq: at,
                                delta_ms,
                            }
                        })
                        .collect();
                    ChangeBody::TimeCorrection(TimeCorrection {
                        boot_id: crate::timing::BootId(boot),
                        basis: crate::timing::TimeBasis::Peer(ActorId(peer)),
                        ranges,
                    })
                }),
            gap_strategy().prop_map(ChangeBody::Gap),
        ];
        (any::<[u8; 16]>(), 1u64..1_000_000, any::<u64>(), body).prop_map(
            |(a, mut seq, hlc, body)| {
                if let ChangeBody::TimeCorrection(c) = &body {
                    seq = seq.max(c.ranges.last().map_or(0, |r| r.last_seq) + 1);
                }
                Change {
                    actor: ActorId(a),
                    seq,
                    hlc: Hlc(hlc),
                    body,
                    seal: None,
                    pruned_rollups: Vec::new(),
                }
            },
        )
    }

    /// Valid gap records (change kind 6): 1 to 8 entries with any names, actors, seq and
    /// time ranges and counts.
    fn gap_strategy() -> impl Strategy<Value = crate::GapRecord> {
        let entry = (
            "[a-z.é]{1,12}",
            any::<[u8; 16]>(),
            1u64..u64::MAX / 2,
            0u64..1_000_000,
            0i64..MAX_TS_MS / 2,
            0i64..MAX_TS_MS / 2,
            1u64..u64::MAX,
        )
            .prop_map(
                |(series, actor, first_seq, more, from_ms, span, readings)| crate::GapEntry {
                    series,
                    actor: ActorId(actor),
                    first_seq,
                    last_seq: first_seq + more,
                    from_ms,
                    to_ms: from_ms + span,
                    readings,
                },
            );
        proptest::collection::vec(entry, 1..8).prop_map(|entries| crate::GapRecord {
            reason: crate::GapReason::DiskBudget,
            entries,
        })
    }

    /// Every body variant with every optional part (units, metadata, tombstones, contexts,
    /// twin bytes), and extreme seqs and HLCs.
    fn sized_change_strategy() -> impl Strategy<Value = Change> {
        let series = (
            "[a-zé°]{1,12}",
            proptest::option::of("[a-z°µ/%]{0,32}"),
            proptest::collection::btree_map("[a-z]{1,8}", "[ -~]{0,40}", 0..4),
            proptest::collection::btree_map(0i64..MAX_TS_MS, any::<f64>(), 1..12),
        )
            .prop_map(|(name, unit, meta, pts)| SeriesPoints {
                name,
                unit,
                meta,
                ts: pts.keys().copied().collect(),
                values: pts.values().copied().collect(),
            });
        let body = prop_oneof![
            proptest::collection::vec(series, 0..5).prop_map(|series| ChangeBody::Readings(
                ReadingBatch {
                    series,
                    timing: None,
                }
            )),
            (
                "[ -~]{1,40}",
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
                proptest::collection::vec((any::<[u8; 16]>(), any::<u64>()), 0..30)
            )
                .prop_map(|(key, value, ctx)| ChangeBody::Doc(DocWrite {
                    key,
                    pruned: value.as_ref().is_some_and(|v| v.len() % 7 == 6),
                    value: value.filter(|v| v.len() % 7 != 6),
                    context: ctx
                        .into_iter()
                        .map(|(a, seq)| Dot {
                            actor: ActorId(a),
                            seq
                        })
                        .collect(),
                })),
            (
                "[ -~]{1,40}",
                proptest::collection::vec(any::<u8>(), 0..300)
            )
                .prop_map(|(key, change)| ChangeBody::Twin(TwinChange { key, change })),
            gap_strategy().prop_map(ChangeBody::Gap),
        ];
        (any::<[u8; 16]>(), any::<u64>(), any::<u64>(), body).prop_map(|(a, seq, hlc, body)| {
            Change {
                actor: ActorId(a),
                seq,
                hlc: Hlc(hlc),
                body,
                seal: None,
                pruned_rollups: Vec::new(),
            }
        })
    }

    /// Readings changes as a signed store serves them: whole, pruned in part (unit hashes
    /// in the seal) or pruned wholly (no series, the body hash in the seal).
    fn sealed_readings_strategy() -> impl Strategy<Value = Change> {
        (
            change_strategy(),
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
            proptest::collection::vec(any::<u8>(), 64),
            proptest::collection::vec(any::<[u8; 32]>(), 0..4),
            any::<bool>(),
            any::<Option<u64>>(),
        )
            .prop_filter_map(
                "a readings change",
                |(mut c, key, prev, sig, pruned, wholly, run_from)| {
                    let ChangeBody::Readings(b) = &mut c.body else {
                        return None;
                    };
                    let body = wholly.then(|| {
                        b.series.clear();
                        key // any 32 bytes: the codec does not check it
                    });
                    c.seal = Some(Seal {
                        key,
                        prev,
                        sig: sig.try_into().unwrap(),
                        pruned: if wholly { Vec::new() } else { pruned },
                        body,
                        // Only the survivor of a run of wholly pruned changes has one.
                        run_from: run_from.filter(|f| wholly && (1..c.seq).contains(f)),
                    });
                    Some(c)
                },
            )
    }

    proptest! {
        #[test]
        fn sealed_readings_changes_round_trip_at_their_exact_size(c in sealed_readings_strategy()) {
            let bytes = c.to_cbor();
            prop_assert_eq!(c.encoded_len(), bytes.len());
            let back = Change::from_cbor(&bytes, &Limits::default()).unwrap();
            prop_assert_eq!(back, c);
        }

        #[test]
        fn encoded_len_is_the_encoding_length(c in sized_change_strategy()) {
            prop_assert_eq!(c.encoded_len(), c.to_cbor().len());
        }

        #[test]
        fn change_cbor_round_trip(c in change_strategy()) {
            let bytes = c.to_cbor();
            let back = Change::from_cbor(&bytes, &Limits::default()).unwrap();
            prop_assert_eq!(back, c);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Change::from_cbor(&bytes, &Limits::default());
        }

        #[test]
        fn decoding_mutated_changes_never_panics(c in change_strategy(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let mut bytes = c.to_cbor();
            for (i, b) in flips {
                let n = bytes.len();
                bytes[i % n] ^= b;
            }
            let _ = Change::from_cbor(&bytes, &Limits::default());
            let cut = bytes.len() / 2;
            let _ = Change::from_cbor(&bytes[..cut], &Limits::default());
        }
    }

    #[test]
    fn normalize_rejects_bad_batches() {
        let l = Limits::default();
        assert!(
            matches!(ReadingBatch::new().normalize(&l), Err(StoreError::InvalidBatch(m)) if m.contains("no readings"))
        );
        let mut b = ReadingBatch::new();
        b.push("t", 1, f64::NAN, None);
        assert!(
            matches!(b.normalize(&l), Err(StoreError::InvalidBatch(m)) if m.contains("not a finite"))
        );
        let mut b = ReadingBatch::new();
        b.push("t", 1, f64::INFINITY, None);
        assert!(b.normalize(&l).is_err());
        let mut b = ReadingBatch::new();
        b.push("t", 5, 1.0, None);
        b.push("t", 5, 2.0, None);
        assert!(
            matches!(b.normalize(&l), Err(StoreError::InvalidBatch(m)) if m.contains("two readings at 5"))
        );
        let mut b = ReadingBatch::new();
        b.push("", 5, 1.0, None);
        assert!(b.normalize(&l).is_err());
        let mut b = ReadingBatch::new();
        for i in 0..11 {
            b.push("t", i, 1.0, None);
        }
        let small = Limits {
            max_batch_readings: 10,
            ..Limits::default()
        };
        assert!(
            matches!(b.normalize(&small), Err(StoreError::InvalidBatch(m)) if m.contains("over the maximum"))
        );
        let mut b = ReadingBatch::new();
        b.push("t", -1, 1.0, None);
        assert!(b.normalize(&l).is_err());
    }

    /// A maximal batch of distinct series (the HTTP default maximum, 50,000), and interleaved
    /// series beyond the push look-back: grouped, merged and checked exactly. (The grouping is
    /// linear; its timing is in `benches/store.rs`, `batch/distinct_series`.)
    #[test]
    fn many_distinct_and_interleaved_series_group_exactly() {
        let limits = Limits::default();
        let mut b = ReadingBatch::new();
        for i in 0..50_000 {
            b.push(&format!("s{i}"), 1_000 + i, i as f64, None);
        }
        b.normalize(&limits).unwrap();
        assert_eq!(b.series.len(), 50_000);
        assert!(
            b.series
                .iter()
                .enumerate()
                .all(|(i, s)| s.name == format!("s{i}")
                    && s.ts == [1_000 + i as i64]
                    && s.values == [i as f64])
        );

        // 40 series round robin, 10 readings each, newest first: split entries get merged.
        let mut b = ReadingBatch::new();
        for round in (0..10).rev() {
            for k in 0..40 {
                let unit = (round == 3).then_some("°C");
                b.push(
                    &format!("r{k}"),
                    1_000 + round,
                    (k * 100 + round) as f64,
                    unit,
                );
            }
        }
        assert!(
            b.series.len() > 40,
            "entries beyond the look-back are split"
        );
        b.normalize(&limits).unwrap();
        assert_eq!(b.series.len(), 40);
        for (k, s) in b.series.iter().enumerate() {
            assert_eq!(s.name, format!("r{k}"));
            assert_eq!(s.ts, (1_000..1_010).collect::<Vec<i64>>());
            assert_eq!(
                s.values,
                (0..10)
                    .map(|r| (k as i64 * 100 + r) as f64)
                    .collect::<Vec<_>>()
            );
            assert_eq!(s.unit.as_deref(), Some("°C"));
        }

        // A duplicate entry that `normalize` did not merge is refused by `validate`.
        let mut dup = b.clone();
        dup.series.push(dup.series[0].clone());
        assert!(
            matches!(dup.validate(&limits), Err(StoreError::InvalidBatch(m)) if m.contains("appears twice"))
        );
    }

    #[test]
    fn normalize_sorts_and_merges() {
        let mut b = ReadingBatch::new();
        b.push("a", 3, 3.0, Some("V"));
        b.push("b", 1, 1.0, None);
        b.push("a", 1, 1.0, None);
        b.series.push(SeriesPoints {
            name: "b".into(),
            unit: None,
            meta: BTreeMap::new(),
            ts: vec![0],
            values: vec![0.5],
        });
        b.normalize(&Limits::default()).unwrap();
        assert_eq!(b.series.len(), 2);
        assert_eq!(b.series[0].ts, vec![1, 3]);
        assert_eq!(b.series[0].values, vec![1.0, 3.0]);
        assert_eq!(b.series[1].ts, vec![0, 1]);
    }

    #[test]
    fn keys_are_checked() {
        assert!(validate_key("greenhouse/setpoint").is_ok());
        assert!(validate_key("").is_err());
        assert!(validate_key("a\nb").is_err());
        assert!(validate_key(&"k".repeat(513)).is_err());
    }

    /// [`Limits::max_doc_change_bytes`] bounds the largest document change the limits let
    /// through: longest key (4-byte characters), largest value, most context dots, largest
    /// seqs and HLC.
    #[test]
    fn the_document_change_bound_holds_for_the_largest_change() {
        let limits = Limits {
            max_value_bytes: 10_000,
            max_context_dots: 50,
            ..Limits::default()
        };
        let dot = Dot {
            actor: ActorId([0xFF; 16]),
            seq: u64::MAX,
        };
        let largest = Change {
            actor: ActorId([0xFF; 16]),
            seq: u64::MAX,
            hlc: Hlc(u64::MAX),
            body: ChangeBody::Doc(DocWrite {
                key: "😀".repeat(MAX_KEY_BYTES / 4),
                value: Some(vec![0xAB; limits.max_value_bytes]),
                context: vec![dot; limits.max_context_dots],
                pruned: false,
            }),
            seal: None,
            pruned_rollups: Vec::new(),
        };
        assert!(validate_key(&"😀".repeat(MAX_KEY_BYTES / 4)).is_ok());
        assert!(largest.encoded_len() <= limits.max_doc_change_bytes());
        let twin = Change {
            body: ChangeBody::Twin(TwinChange {
                key: "😀".repeat(MAX_KEY_BYTES / 4),
                change: vec![0xAB; limits.max_value_bytes],
            }),
            ..largest
        };
        assert!(twin.encoded_len() <= limits.max_doc_change_bytes());
        Limits::default().validate().unwrap();
        let tight = Limits {
            max_change_bytes: Limits::default().max_value_bytes,
            ..Limits::default()
        };
        assert_eq!(tight.validate().unwrap_err().0, "max_change_bytes");
    }

    /// The document write of the releases before schema 7, as they derived it.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct OldDocWrite {
        key: String,
        #[serde(with = "opt_bytes")]
        value: Option<Vec<u8>>,
        context: Vec<Dot>,
    }

    /// A version that is not pruned encodes byte for byte as before; a pruned one has no
    /// `value` field, so an older agent refuses it instead of storing a delete.
    #[test]
    fn pruned_writes_are_refused_by_older_agents_and_others_encode_as_before() {
        let dot = Dot {
            actor: ActorId([3; 16]),
            seq: 9,
        };
        for value in [Some(vec![0xf5]), None] {
            let w = DocWrite {
                key: "k".into(),
                value: value.clone(),
                context: vec![dot],
                pruned: false,
            };
            let old = OldDocWrite {
                key: "k".into(),
                value,
                context: vec![dot],
            };
            let (mut a, mut b) = (Vec::new(), Vec::new());
            ciborium::into_writer(&w, &mut a).unwrap();
            ciborium::into_writer(&old, &mut b).unwrap();
            assert_eq!(a, b);
            let back: DocWrite = ciborium::from_reader(&b[..]).unwrap();
            assert_eq!(back, w);
        }
        let pruned = DocWrite {
            key: "k".into(),
            value: None,
            context: vec![dot],
            pruned: true,
        };
        let mut bytes = Vec::new();
        ciborium::into_writer(&pruned, &mut bytes).unwrap();
        let err = ciborium::from_reader::<OldDocWrite, _>(&bytes[..]).unwrap_err();
        assert!(err.to_string().contains("value"), "{err}");
        let back: DocWrite = ciborium::from_reader(&bytes[..]).unwrap();
        assert_eq!(back, pruned);
        // A write claiming both a value and the marker is refused.
        let both = DocWrite {
            value: Some(vec![1]),
            ..pruned
        };
        let change = Change {
            actor: ActorId([3; 16]),
            seq: 1,
            hlc: Hlc(1),
            body: ChangeBody::Doc(both),
            seal: None,
            pruned_rollups: Vec::new(),
        };
        let mut v = ciborium::Value::serialized(&change).unwrap();
        // The encoder leaves `value` out of a pruned write: put it back by hand.
        fn add_value(v: &mut ciborium::Value) {
            if let ciborium::Value::Map(m) = v {
                if m.iter().any(|(k, _)| k.as_text() == Some("pruned")) {
                    m.push(("value".into(), ciborium::Value::Bytes(vec![1])));
                }
                for (_, x) in m.iter_mut() {
                    add_value(x);
                }
            }
        }
        add_value(&mut v);
        let mut bytes = Vec::new();
        ciborium::into_writer(&v, &mut bytes).unwrap();
        let err = Change::from_cbor(&bytes, &Limits::default()).unwrap_err();
        assert!(err.to_string().contains("marked pruned"), "{err}");
    }

    #[test]
    fn oversized_change_bytes_refused_before_decoding() {
        let l = Limits {
            max_change_bytes: 10,
            ..Limits::default()
        };
        let err = Change::from_cbor(&[0u8; 11], &l).unwrap_err();
        assert_eq!(err.code(), "decode");
    }
}
