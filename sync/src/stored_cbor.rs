//! CBOR as the store keeps it in its own columns (manifests, contexts, gap records, time
//! corrections): encoding into memory, which cannot fail for the store's own types, and
//! decoding with an error that names what was being read. One pair of functions, so every
//! stored body is written and read the same way.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Result, StoreError};

/// Encodes `value` as stored. Panics only if `value`'s `Serialize` implementation fails,
/// which the store's own types (plain structs, sequences and maps) never do.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).expect("encoding a stored CBOR body into memory");
    out
}

/// Decodes a stored body; `what` names it in the error (`"readings manifest"`).
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T> {
    ciborium::from_reader(bytes).map_err(|e| StoreError::Decode {
        what,
        detail: e.to_string(),
    })
}

/// The length of `value`'s CBOR encoding, exactly as [`encode`] writes it, without
/// allocating it.
pub(crate) fn encoded_len<T: Serialize + ?Sized>(value: &T) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Counting cannot fail, and every type passed here is serialisable.
    ciborium::into_writer(value, &mut counter).expect("sizing a CBOR encoding");
    counter.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_round_trips_and_its_length_is_exact() {
        let value = vec![(1u64, "a".to_string()), (u64::MAX, "é".repeat(300))];
        let bytes = encode(&value);
        assert_eq!(bytes.len(), encoded_len(&value));
        let back: Vec<(u64, String)> = decode(&bytes, "test body").unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn a_bad_body_is_refused_naming_what_was_read() {
        let err = decode::<Vec<u64>>(&[0xff, 0x00], "readings manifest").unwrap_err();
        match err {
            StoreError::Decode { what, .. } => assert_eq!(what, "readings manifest"),
            other => panic!("unexpected error {other:?}"),
        }
    }
}
