//! Bodies the store reads on hot paths, in the exact CBOR shape it writes them, read
//! without serde:
//! - a document version's context: its sorted dots, each `{"actor": 16 bytes, "seq": n}`.
//!   Every version a get, an as-of read or a history page returns has its context decoded
//!   (an as-of read of a key with 100 versions decodes up to 100), and serde's general
//!   path was about a fifth of an as-of read;
//! - a readings change's manifest: one map per series (`ManifestEntry`). Every readings
//!   change served to a peer has its manifest decoded, and serde's general path was ~9 % of
//!   a 24 h catch-up's CPU (docs/PERFORMANCE.md).
//!
//! Anything not in exactly the written shape (another field order, indefinite lengths,
//! trailing bytes) is left to the general decoder, so both always agree (property tests
//! below).

use std::collections::BTreeMap;

use crate::ingest::ManifestEntry;
use crate::{ActorId, Dot};

/// The smallest encoding of one dot: map header, `"actor"`, 16-byte string, `"seq"`, seq.
const MIN_DOT_BYTES: usize = 1 + 6 + 17 + 4 + 1;

/// The dots of a context in the shape the store writes; `None` for anything else.
pub(crate) fn decode_context(bytes: &[u8]) -> Option<Vec<Dot>> {
    let (mut r, n) = Reader::array(bytes, MIN_DOT_BYTES)?;
    let mut dots = Vec::with_capacity(n);
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

/// The smallest encoding of one manifest entry: map header, `"name"` with an empty name,
/// `"ts_min"`, `"ts_max"` and `"count"` with one-byte values.
const MIN_ENTRY_BYTES: usize = 1 + (5 + 1) + (7 + 1) + (7 + 1) + (6 + 1);

/// The entries of a readings manifest in the shape the store writes; `None` for anything
/// else.
pub(crate) fn decode_manifest(bytes: &[u8]) -> Option<Vec<ManifestEntry>> {
    let (mut r, n) = Reader::array(bytes, MIN_ENTRY_BYTES)?;
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        let fields = r.head(MAP)?;
        r.literal(b"\x64name")?;
        let name = r.text()?;
        let mut extra = fields.checked_sub(4)?;
        let unit = if extra > 0 && r.peek_literal(b"\x64unit") {
            extra -= 1;
            Some(r.text()?)
        } else {
            None
        };
        let mut meta = BTreeMap::new();
        if extra > 0 && r.peek_literal(b"\x64meta") {
            extra -= 1;
            let pairs = r.head(MAP)?;
            // Written only when not empty, keys in order (a `BTreeMap`).
            if pairs == 0 || pairs > bytes.len() as u64 {
                return None;
            }
            for _ in 0..pairs {
                let key = r.text()?;
                let value = r.text()?;
                if meta.last_key_value().is_some_and(|(last, _)| *last >= key) {
                    return None;
                }
                meta.insert(key, value);
            }
        }
        if extra != 0 {
            return None;
        }
        r.literal(b"\x66ts_min")?;
        let ts_min = r.int()?;
        r.literal(b"\x66ts_max")?;
        let ts_max = r.int()?;
        r.literal(b"\x65count")?;
        let count = r.head(UNSIGNED)?;
        entries.push(ManifestEntry {
            name,
            unit,
            meta,
            ts_min,
            ts_max,
            count,
        });
    }
    (r.at == bytes.len()).then_some(entries)
}

/// CBOR major types.
const UNSIGNED: u8 = 0;
const NEGATIVE: u8 = 1;
const BYTES: u8 = 2;
const TEXT: u8 = 3;
const ARRAY: u8 = 4;
const MAP: u8 = 5;

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the first item of the definite-length array `bytes` holds, and its
    /// length; `None` when the bytes cannot hold that many items of at least `min_item`
    /// bytes (refused before anything is allocated).
    fn array(bytes: &'a [u8], min_item: usize) -> Option<(Reader<'a>, usize)> {
        let mut r = Reader { bytes, at: 0 };
        let n = usize::try_from(r.head(ARRAY)?).ok()?;
        (n <= bytes.len() / min_item).then_some((r, n))
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(out)
    }

    fn literal(&mut self, expected: &[u8]) -> Option<()> {
        (self.take(expected.len())? == expected).then_some(())
    }

    /// Whether `expected` comes next; taken if so.
    fn peek_literal(&mut self, expected: &[u8]) -> bool {
        let next = self
            .bytes
            .get(self.at..self.at.saturating_add(expected.len()));
        let found = next == Some(expected);
        if found {
            self.at += expected.len();
        }
        found
    }

    /// A definite-length UTF-8 text string.
    fn text(&mut self) -> Option<String> {
        let len = usize::try_from(self.head(TEXT)?).ok()?;
        std::str::from_utf8(self.take(len)?).ok().map(str::to_owned)
    }

    /// An integer that fits an `i64`.
    fn int(&mut self) -> Option<i64> {
        match self.bytes.get(self.at)? >> 5 {
            UNSIGNED => i64::try_from(self.head(UNSIGNED)?).ok(),
            NEGATIVE => Some(-1 - i64::try_from(self.head(NEGATIVE)?).ok()?),
            _ => None,
        }
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
            let read = decode_context(&bytes);
            prop_assert!(read.is_some());
            prop_assert_eq!(&read, &general(&bytes));
        }

        /// Damaged or foreign bytes: where the fast path answers, serde answers the same.
        #[test]
        fn it_never_disagrees_with_the_general_decoder(
            d in dots(),
            m in manifests(),
            damage in damage(),
        ) {
            for candidate in damage.apply(crate::docwrite::encode_context(&d)) {
                if let Some(fast) = decode_context(&candidate) {
                    prop_assert_eq!(Some(fast), general(&candidate));
                }
            }
            for candidate in damage.apply(crate::ingest::encode_manifest_entries(&m)) {
                if let Some(fast) = decode_manifest(&candidate) {
                    prop_assert_eq!(Some(fast), general_manifest(&candidate));
                }
            }
        }

        #[test]
        fn every_written_manifest_is_read_back_without_serde(m in manifests()) {
            let bytes = crate::ingest::encode_manifest_entries(&m);
            let read = decode_manifest(&bytes);
            prop_assert_eq!(read.as_ref(), Some(&m));
            prop_assert_eq!(read, general_manifest(&bytes));
        }
    }

    /// A cut, a few flipped bytes and foreign bytes, applied to an encoding.
    #[derive(Debug, Clone)]
    struct Damage {
        cut: prop::sample::Index,
        flips: Vec<(prop::sample::Index, u8)>,
        junk: Vec<u8>,
    }

    fn damage() -> impl Strategy<Value = Damage> {
        (
            any::<prop::sample::Index>(),
            proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
            proptest::collection::vec(any::<u8>(), 0..40),
        )
            .prop_map(|(cut, flips, junk)| Damage { cut, flips, junk })
    }

    impl Damage {
        /// The encoding with the flips, the same truncated, and the junk.
        fn apply(&self, mut bytes: Vec<u8>) -> [Vec<u8>; 3] {
            for (at, x) in &self.flips {
                if !bytes.is_empty() {
                    let i = at.index(bytes.len());
                    bytes[i] ^= x;
                }
            }
            let truncated = bytes[..self.cut.index(bytes.len() + 1)].to_vec();
            [bytes, truncated, self.junk.clone()]
        }
    }

    fn general_manifest(bytes: &[u8]) -> Option<Vec<ManifestEntry>> {
        crate::stored_cbor::decode(bytes, "readings manifest").ok()
    }

    fn manifests() -> impl Strategy<Value = Vec<ManifestEntry>> {
        let text = "[a-zé._/ 0-9]{0,12}";
        let entry = (
            text,
            proptest::option::of(text),
            proptest::collection::btree_map(text, text, 0..3),
            any::<i64>(),
            any::<i64>(),
            any::<u64>(),
        )
            .prop_map(|(name, unit, meta, ts_min, ts_max, count)| ManifestEntry {
                name,
                unit,
                meta,
                ts_min,
                ts_max,
                count,
            });
        proptest::collection::vec(entry, 0..5)
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
        assert_eq!(decode_context(&swapped), None);
        assert_eq!(general(&swapped), Some(vec![Dot { actor, seq: 3 }]));
        let mut written = crate::docwrite::encode_context(&[Dot { actor, seq: 3 }]);
        written.push(0);
        assert_eq!(decode_context(&written), None);
        let mut indefinite = vec![0x9f];
        indefinite
            .extend_from_slice(&crate::docwrite::encode_context(&[Dot { actor, seq: 3 }])[1..]);
        indefinite.push(0xff);
        assert_eq!(decode_context(&indefinite), None);
        assert_eq!(general(&indefinite), Some(vec![Dot { actor, seq: 3 }]));
        // A length no input can hold allocates nothing.
        assert_eq!(
            decode_context(&[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            None
        );
    }

    #[test]
    fn a_manifest_in_another_shape_is_left_to_the_general_decoder() {
        use ciborium::Value;
        let entry = |fields: Vec<(&str, Value)>| {
            Value::Map(fields.into_iter().map(|(k, v)| (k.into(), v)).collect())
        };
        let expected = ManifestEntry {
            name: "t".into(),
            unit: None,
            meta: BTreeMap::new(),
            ts_min: -5,
            ts_max: 7,
            count: 2,
        };
        let fields = || {
            vec![
                ("name", Value::Text("t".into())),
                ("ts_min", Value::Integer((-5).into())),
                ("ts_max", Value::Integer(7.into())),
                ("count", Value::Integer(2.into())),
            ]
        };
        // As written, then with the fields reordered and with a field this release does not
        // know (a newer writer's).
        let written = crate::stored_cbor::encode(&Value::Array(vec![entry(fields())]));
        assert_eq!(decode_manifest(&written), Some(vec![expected.clone()]));
        let mut reordered = fields();
        reordered.reverse();
        let mut unknown = fields();
        unknown.insert(1, ("origin", Value::Text("x".into())));
        for shape in [reordered, unknown] {
            let bytes = crate::stored_cbor::encode(&Value::Array(vec![entry(shape)]));
            assert_eq!(decode_manifest(&bytes), None);
            assert_eq!(general_manifest(&bytes), Some(vec![expected.clone()]));
        }
        assert_eq!(
            decode_manifest(&[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            None
        );
        // The smallest entries there are fit the length check (it refuses nothing real).
        let smallest = ManifestEntry {
            name: String::new(),
            unit: None,
            meta: BTreeMap::new(),
            ts_min: 0,
            ts_max: 0,
            count: 0,
        };
        let entries = vec![smallest; 3];
        let bytes = crate::ingest::encode_manifest_entries(&entries);
        assert_eq!(bytes.len(), 1 + 3 * MIN_ENTRY_BYTES);
        assert_eq!(decode_manifest(&bytes), Some(entries));
    }
}
