//! The canonical state digest: an order-independent hash over every reading, document
//! version and twin change a store holds. Two replicas holding the same changes have the same digest, however
//! the changes arrived. Maintained incrementally by the writer and recomputable from the tables
//! (see [`Store::verify_digest`](crate::Store::verify_digest)).

use std::fmt;

use crate::{ActorId, Hlc, ReadingTiming};

/// A multiset hash: the lane-wise wrapping sum of BLAKE3 hashes of each element, so adding
/// elements in any order gives the same result.
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Adds one element hash.
    pub fn add(&mut self, h: &[u8; 32]) {
        for lane in 0..4 {
            let r = lane * 8..lane * 8 + 8;
            let a = u64::from_le_bytes(self.0[r.clone()].try_into().expect("8 bytes"));
            let b = u64::from_le_bytes(h[r.clone()].try_into().expect("8 bytes"));
            self.0[r].copy_from_slice(&a.wrapping_add(b).to_le_bytes());
        }
    }

    /// Removes one element hash added before (retention pruning what it covered).
    pub fn sub(&mut self, h: &[u8; 32]) {
        for lane in 0..4 {
            let r = lane * 8..lane * 8 + 8;
            let a = u64::from_le_bytes(self.0[r.clone()].try_into().expect("8 bytes"));
            let b = u64::from_le_bytes(h[r.clone()].try_into().expect("8 bytes"));
            self.0[r].copy_from_slice(&a.wrapping_sub(b).to_le_bytes());
        }
    }

    /// Adds every element hash of one change as served (what it still holds after
    /// retention): the readings it holds per series (and its timing record), each document
    /// version it writes (a pruned one as such), its twin change, its time correction or its
    /// gap record. This is the one definition of what a change contributes, whichever store
    /// holds it (SQLite on devices, PostgreSQL on a hub), so replicas on either agree.
    pub fn add_change(&mut self, c: &crate::Change) {
        use crate::ChangeBody;
        match &c.body {
            ChangeBody::Readings(b) => {
                for s in &b.series {
                    self.add(&readings_hash(&c.actor, c.seq, &s.name, &s.ts, &s.values));
                }
                if let Some(t) = &b.timing {
                    self.add(&timing_hash(&c.actor, c.seq, t));
                }
            }
            ChangeBody::TimeCorrection(t) => self.add(&correction_hash(
                &c.actor,
                c.seq,
                c.hlc,
                &crate::correct::encode_correction(t),
            )),
            ChangeBody::Doc(d) => self.add(&doc_write_hash(c, d)),
            ChangeBody::DocBatch(b) => {
                for d in &b.writes {
                    self.add(&doc_write_hash(c, d));
                }
            }
            ChangeBody::Twin(t) => {
                self.add(&twin_hash(&c.actor, c.seq, c.hlc, &t.key, &t.change));
            }
            ChangeBody::Gap(g) => self.add(&crate::gap::gap_hash(
                &c.actor,
                c.seq,
                c.hlc,
                &crate::gap::encode_gap(g),
            )),
        }
    }

    /// Adds another digest (the multiset union of what both cover, e.g. per-actor digests
    /// summed into a store's).
    pub fn add_digest(&mut self, other: &Digest) {
        self.add(&other.0);
    }

    /// Builds a digest from stored bytes (32 bytes; anything else is the empty digest).
    pub fn from_slice(b: &[u8]) -> Digest {
        b.try_into().map(Digest).unwrap_or_default()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// Hash of the readings one change holds for one series (timestamps ascending).
pub(crate) fn readings_hash(
    actor: &ActorId,
    seq: u64,
    series: &str,
    ts: &[i64],
    values: &[f64],
) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"kdelta/readings/v1");
    h.update(actor.as_bytes());
    h.update(&seq.to_le_bytes());
    h.update(&(series.len() as u64).to_le_bytes());
    h.update(series.as_bytes());
    {
        let mut w = crate::seal::BufferedHasher::new(&mut h);
        for (t, v) in ts.iter().zip(values) {
            w.add(&t.to_le_bytes());
            w.add(&v.to_bits().to_le_bytes());
        }
    }
    *h.finalize().as_bytes()
}

/// [`doc_hash`] of one document write of a change (single or in a batch: the key tells the
/// versions of one batch apart), or [`doc_pruned_hash`] of what remains of a pruned one.
pub(crate) fn doc_write_hash(c: &crate::Change, d: &crate::DocWrite) -> [u8; 32] {
    let ctx = crate::docwrite::encode_context(&d.context);
    if d.pruned {
        return doc_pruned_hash(&c.actor, c.seq, c.hlc, &d.key, &ctx);
    }
    doc_hash(&c.actor, c.seq, c.hlc, &d.key, d.value.as_deref(), &ctx)
}

/// Hash of what remains of a document version retention pruned: its dot, HLC, key and
/// context, without the value (see `doc_retention.rs`). Pruning subtracts the version's
/// [`doc_hash`] and adds this, so the digest stays "what the store holds".
pub(crate) fn doc_pruned_hash(
    actor: &ActorId,
    seq: u64,
    hlc: Hlc,
    key: &str,
    context: &[u8],
) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"kdelta/doc-pruned/v1");
    h.update(actor.as_bytes());
    h.update(&seq.to_le_bytes());
    h.update(&hlc.0.to_le_bytes());
    h.update(&(key.len() as u64).to_le_bytes());
    h.update(key.as_bytes());
    h.update(context);
    *h.finalize().as_bytes()
}

/// Hash of one document version.
pub(crate) fn doc_hash(
    actor: &ActorId,
    seq: u64,
    hlc: Hlc,
    key: &str,
    value: Option<&[u8]>,
    context: &[u8],
) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"kdelta/doc/v1");
    h.update(actor.as_bytes());
    h.update(&seq.to_le_bytes());
    h.update(&hlc.0.to_le_bytes());
    h.update(&(key.len() as u64).to_le_bytes());
    h.update(key.as_bytes());
    match value {
        Some(v) => {
            h.update(&[1]);
            h.update(&(v.len() as u64).to_le_bytes());
            h.update(v);
        }
        None => {
            h.update(&[0]);
        }
    }
    h.update(context);
    *h.finalize().as_bytes()
}

/// Hash of one twin (automerge) change.
pub(crate) fn twin_hash(actor: &ActorId, seq: u64, hlc: Hlc, key: &str, change: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"kdelta/twin/v1");
    h.update(actor.as_bytes());
    h.update(&seq.to_le_bytes());
    h.update(&hlc.0.to_le_bytes());
    h.update(&(key.len() as u64).to_le_bytes());
    h.update(key.as_bytes());
    h.update(&(change.len() as u64).to_le_bytes());
    h.update(change);
    *h.finalize().as_bytes()
}

/// Hash of a readings change's timing record (untrusted clock), beside its readings' hashes.
pub(crate) fn timing_hash(actor: &ActorId, seq: u64, timing: &ReadingTiming) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"kdelta/timing/v1");
    h.update(actor.as_bytes());
    h.update(&seq.to_le_bytes());
    h.update(&timing.boot_id.0);
    h.update(&timing.offset_ms.to_le_bytes());
    *h.finalize().as_bytes()
}

/// Hash of a time-correction change (its canonical CBOR body).
pub(crate) fn correction_hash(actor: &ActorId, seq: u64, hlc: Hlc, body: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"kdelta/time-correction/v1");
    h.update(actor.as_bytes());
    h.update(&seq.to_le_bytes());
    h.update(&hlc.0.to_le_bytes());
    h.update(&(body.len() as u64).to_le_bytes());
    h.update(body);
    *h.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn order_independent(items in proptest::collection::vec(any::<[u8; 32]>(), 0..20), seed in any::<u64>()) {
            let mut a = Digest::default();
            for i in &items { a.add(i); }
            let mut shuffled = items.clone();
            // deterministic shuffle
            let mut s = seed | 1;
            for i in (1..shuffled.len()).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                shuffled.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let mut b = Digest::default();
            for i in &shuffled { b.add(i); }
            prop_assert_eq!(a, b);
        }
    }
}
