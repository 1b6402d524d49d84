//! Version vectors: actor → highest contiguous seq held. A store's vector summarises exactly
//! which changes it holds, so "what the other side lacks" is every change above its vector.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ActorId;

/// Actor → highest contiguous seq. Actors at 0 are omitted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VersionVector(BTreeMap<ActorId, u64>);

impl VersionVector {
    /// An empty vector (holds nothing).
    pub fn new() -> VersionVector {
        VersionVector::default()
    }

    /// Highest contiguous seq of `actor` (0 when none).
    pub fn get(&self, actor: &ActorId) -> u64 {
        self.0.get(actor).copied().unwrap_or(0)
    }

    /// Sets the seq of `actor`; 0 removes it.
    pub fn set(&mut self, actor: ActorId, seq: u64) {
        if seq == 0 {
            self.0.remove(&actor);
        } else {
            self.0.insert(actor, seq);
        }
    }

    /// Point-wise maximum with `other`.
    pub fn merge(&mut self, other: &VersionVector) {
        for (a, s) in other.iter() {
            if s > self.get(&a) {
                self.0.insert(a, s);
            }
        }
    }

    /// True when this vector holds every change `other` holds.
    pub fn dominates(&self, other: &VersionVector) -> bool {
        other.iter().all(|(a, s)| self.get(&a) >= s)
    }

    /// Number of changes `self` holds that `other` lacks.
    pub fn changes_ahead_of(&self, other: &VersionVector) -> u64 {
        self.iter()
            .map(|(a, s)| s.saturating_sub(other.get(&a)))
            .sum()
    }

    /// Total number of changes summarised.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// Entries in actor order.
    pub fn iter(&self) -> impl Iterator<Item = (ActorId, u64)> + '_ {
        self.0.iter().map(|(a, s)| (*a, *s))
    }

    /// Number of actors with at least one change.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no change is summarised.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(ActorId, u64)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (ActorId, u64)>>(iter: I) -> Self {
        let mut vv = VersionVector::new();
        for (a, s) in iter {
            vv.set(a, s);
        }
        vv
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn actor(n: u8) -> ActorId {
        ActorId([n; 16])
    }

    fn vv_strategy() -> impl Strategy<Value = VersionVector> {
        proptest::collection::vec((0u8..5, 0u64..20), 0..6)
            .prop_map(|v| v.into_iter().map(|(a, s)| (actor(a), s)).collect())
    }

    proptest! {
        #[test]
        fn merge_is_a_join(a in vv_strategy(), b in vv_strategy(), c in vv_strategy()) {
            let mut ab = a.clone(); ab.merge(&b);
            let mut ba = b.clone(); ba.merge(&a);
            prop_assert_eq!(&ab, &ba);
            let mut ab_c = ab.clone(); ab_c.merge(&c);
            let mut bc = b.clone(); bc.merge(&c);
            let mut a_bc = a.clone(); a_bc.merge(&bc);
            prop_assert_eq!(&ab_c, &a_bc);
            let mut aa = a.clone(); aa.merge(&a);
            prop_assert_eq!(&aa, &a);
            prop_assert!(ab.dominates(&a) && ab.dominates(&b));
            prop_assert_eq!(ab.changes_ahead_of(&a), ab.total() - a.total());
        }

        #[test]
        fn cbor_round_trip(a in vv_strategy()) {
            let mut buf = Vec::new();
            ciborium::into_writer(&a, &mut buf).unwrap();
            let back: VersionVector = ciborium::from_reader(&buf[..]).unwrap();
            prop_assert_eq!(back, a);
        }
    }
}
