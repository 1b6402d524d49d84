//! How change bodies are kept in PostgreSQL columns: a document version's context, a time
//! correction's or gap record's body, a seal — each CBOR in a `BYTEA`. A readings change's
//! manifest is the embedded store's ([`kdelta_sync::encode_manifest`]), byte for byte, so
//! fork detection compares manifests the same way on both backends. Only this crate reads
//! these back; the sync format is `kdelta_sync::Change`'s.

use kdelta_sync::seal::Seal;
use kdelta_sync::{Dot, GapRecord, StoreError, TimeCorrection};
use serde::{Deserialize, Serialize};

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
    fn context_round_trips() {
        let dots = vec![Dot {
            actor: ActorId([7; 16]),
            seq: 3,
        }];
        assert_eq!(decode_context(&encode_context(&dots)).unwrap(), dots);
        assert!(decode_context(b"\xff").is_err());
    }
}
