//! How change bodies are kept in PostgreSQL columns: a readings change's manifest (where its
//! readings are), a document version's context, a time correction's body — each CBOR in a
//! `BYTEA`. Only this crate reads them back; the sync format is `kdelta_sync::Change`'s.

use std::collections::BTreeMap;

use kdelta_sync::seal::Seal;
use kdelta_sync::{Dot, GapRecord, ReadingBatch, StoreError, TimeCorrection};
use serde::{Deserialize, Serialize};

/// Where the readings of one series of one readings change are, and its unit and metadata
/// as the change carried them (so the change is rebuilt exactly for a peer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ManifestEntry {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
    pub ts_min: i64,
    pub ts_max: i64,
    pub count: u64,
}

pub(crate) fn encode_manifest(batch: &ReadingBatch) -> Vec<u8> {
    let entries: Vec<ManifestEntry> = batch
        .series
        .iter()
        .map(|s| ManifestEntry {
            name: s.name.clone(),
            unit: s.unit.clone(),
            meta: s.meta.clone(),
            ts_min: s.ts.first().copied().unwrap_or(0),
            ts_max: s.ts.last().copied().unwrap_or(0),
            count: s.ts.len() as u64,
        })
        .collect();
    to_cbor(&entries)
}

pub(crate) fn decode_manifest(bytes: &[u8]) -> Result<Vec<ManifestEntry>, StoreError> {
    from_cbor(bytes, "stored readings manifest")
}

pub(crate) fn encode_context(dots: &[Dot]) -> Vec<u8> {
    to_cbor(&dots)
}

pub(crate) fn decode_context(bytes: &[u8]) -> Result<Vec<Dot>, StoreError> {
    from_cbor(bytes, "stored document context")
}

pub(crate) fn encode_gap(g: &GapRecord) -> Vec<u8> {
    to_cbor(g)
}

pub(crate) fn decode_gap(bytes: &[u8]) -> Result<GapRecord, StoreError> {
    from_cbor(bytes, "stored gap record")
}

pub(crate) fn encode_seal(s: &Seal) -> Vec<u8> {
    to_cbor(s)
}

pub(crate) fn decode_seal(bytes: &[u8]) -> Result<Seal, StoreError> {
    from_cbor(bytes, "stored seal")
}

pub(crate) fn encode_correction(c: &TimeCorrection) -> Vec<u8> {
    to_cbor(c)
}

pub(crate) fn decode_correction(bytes: &[u8]) -> Result<TimeCorrection, StoreError> {
    from_cbor(bytes, "stored time correction")
}

fn to_cbor<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail, and these types are serialisable.
    ciborium::into_writer(value, &mut out).expect("encoding into memory");
    out
}

fn from_cbor<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, StoreError> {
    ciborium::from_reader(bytes).map_err(|e| StoreError::Decode {
        what,
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kdelta_sync::ActorId;

    #[test]
    fn manifest_and_context_round_trip() {
        let mut b = ReadingBatch::new();
        b.push("t", 5, 1.0, Some("°C"));
        b.push("t", 9, 2.0, None);
        b.push("u", 7, 3.0, None);
        let m = decode_manifest(&encode_manifest(&b)).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].ts_min, m[0].ts_max, m[0].count), (5, 9, 2));
        assert_eq!(m[0].unit.as_deref(), Some("°C"));
        let dots = vec![Dot {
            actor: ActorId([7; 16]),
            seq: 3,
        }];
        assert_eq!(decode_context(&encode_context(&dots)).unwrap(), dots);
        assert!(decode_context(b"\xff").is_err());
    }
}
