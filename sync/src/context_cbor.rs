//! A document version's context as the store writes it — the CBOR of its sorted dots, each
//! `{"actor": 16 bytes, "seq": n}` — read without serde. Every version a get, an as-of
//! read or a history page returns has its context decoded (an as-of read of a key with 100
//! versions decodes up to 100), and serde's general path was about a fifth of an as-of
//! read. Anything not in exactly that shape (another field order, indefinite lengths,
//! trailing bytes) is left to the general decoder, so both always agree (property test
//! below).

use crate::{ActorId, Dot};

/// The smallest encoding of one dot: map header, `"actor"`, 16-byte string, `"seq"`, seq.
const MIN_DOT_BYTES: usize = 1 + 6 + 17 + 4 + 1;

/// The dots of a context in the shape the store writes; `None` for anything else.
pub(crate) fn decode_written(bytes: &[u8]) -> Option<Vec<Dot>> {
    let mut r = Reader { bytes, at: 0 };
    let n = r.head(ARRAY)?;
    // A length the bytes cannot hold is refused before anything is allocated.
    if n > (bytes.len() / MIN_DOT_BYTES) as u64 {
        return None;
    }
    let mut dots = Vec::with_capacity(n as usize);
    for _ in 0..n {
        if r.head(MAP)? != 2 {
            return None;
        }
        r.literal(b"\x65actor")?;
        if r.head(BYTES)? != 16 {
            return None;
        }
        let actor = ActorId::from_slice(r.take(16)?)?;
        r.literal(b"\x63seq")?;
        let seq = r.head(UNSIGNED)?;
        dots.push(Dot { actor, seq });
    }
    (r.at == bytes.len()).then_some(dots)
}

/// CBOR major types.
const UNSIGNED: u8 = 0;
const BYTES: u8 = 2;
const ARRAY: u8 = 4;
const MAP: u8 = 5;

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(out)
    }

    fn literal(&mut self, expected: &[u8]) -> Option<()> {
        (self.take(expected.len())? == expected).then_some(())
    }

    /// The argument of a head of major type `major` (definite lengths only).
    fn head(&mut self, major: u8) -> Option<u64> {
        let first = *self.take(1)?.first()?;
        if first >> 5 != major {
            return None;
        }
        let width = match first & 0x1f {
            info @ 0..24 => return Some(u64::from(info)),
            24 => 1,
            25 => 2,
            26 => 4,
            27 => 8,
            _ => return None,
        };
        let mut be = [0u8; 8];
        be[8 - width..].copy_from_slice(self.take(width)?);
        Some(u64::from_be_bytes(be))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn general(bytes: &[u8]) -> Option<Vec<Dot>> {
        crate::stored_cbor::decode(bytes, "document context").ok()
    }

    fn dots() -> impl Strategy<Value = Vec<Dot>> {
        proptest::collection::vec(
            (any::<[u8; 16]>(), any::<u64>()).prop_map(|(a, seq)| Dot {
                actor: ActorId::from_slice(&a).unwrap(),
                seq,
            }),
            0..6,
        )
    }

    proptest! {
        #[test]
        fn every_written_context_is_read_back_without_serde(d in dots()) {
            let bytes = crate::docwrite::encode_context(&d);
            let read = decode_written(&bytes);
            prop_assert!(read.is_some());
            prop_assert_eq!(&read, &general(&bytes));
        }

        /// Damaged or foreign bytes: where the fast path answers, serde answers the same.
        #[test]
        fn it_never_disagrees_with_the_general_decoder(
            d in dots(),
            cut in any::<prop::sample::Index>(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
            junk in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let mut bytes = crate::docwrite::encode_context(&d);
            for (at, x) in flips {
                if !bytes.is_empty() {
                    let i = at.index(bytes.len());
                    bytes[i] ^= x;
                }
            }
            let truncated = &bytes[..cut.index(bytes.len() + 1)];
            for candidate in [&bytes[..], truncated, &junk[..]] {
                if let Some(fast) = decode_written(candidate) {
                    prop_assert_eq!(Some(fast), general(candidate));
                }
            }
        }
    }

    #[test]
    fn other_shapes_are_left_to_the_general_decoder() {
        let actor = ActorId::from_slice(&[7; 16]).unwrap();
        // The fields the other way round, an indefinite-length array, a trailing byte.
        let swapped =
            crate::stored_cbor::encode(&ciborium::Value::Array(vec![ciborium::Value::Map(vec![
                ("seq".into(), ciborium::Value::Integer(3.into())),
                ("actor".into(), ciborium::Value::Bytes(vec![7; 16])),
            ])]));
        assert_eq!(decode_written(&swapped), None);
        assert_eq!(general(&swapped), Some(vec![Dot { actor, seq: 3 }]));
        let mut written = crate::docwrite::encode_context(&[Dot { actor, seq: 3 }]);
        written.push(0);
        assert_eq!(decode_written(&written), None);
        let mut indefinite = vec![0x9f];
        indefinite
            .extend_from_slice(&crate::docwrite::encode_context(&[Dot { actor, seq: 3 }])[1..]);
        indefinite.push(0xff);
        assert_eq!(decode_written(&indefinite), None);
        assert_eq!(general(&indefinite), Some(vec![Dot { actor, seq: 3 }]));
        // A length no input can hold allocates nothing.
        assert_eq!(
            decode_written(&[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            None
        );
    }
}
