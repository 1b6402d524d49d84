//! Succession records: how a store that had to give up its actor (its clock was rebased,
//! see `docs/clock.md`, "A store stamped in the future") tells the peers that hold its
//! `device` credential which actor it writes as now. A record names the old actor, its
//! public key, the new actor and the new public key, and is signed by the OLD actor's key,
//! so only the holder of that key can hand the credential on. Owns the record, its hash
//! (domain-separated BLAKE3, Ed25519 as `seal.rs`) and its check; the stores keep the
//! records (`Store::rebase_clock`) and the bindings (`SyncStore::succeed_credential`), the
//! session follows them (`protocol/session.rs`).

use serde::{Deserialize, Serialize};

use crate::ActorId;
use crate::seal::{Hash, SigningKey, verify};

/// Most succession records a `Hello` carries (a store sends its newest ones): a device
/// rebased more often than this while away from a hub must be re-bound by hand.
pub const MAX_SUCCESSIONS: usize = 8;

/// "The store that wrote as `old` writes as `new` from now on", signed by `old`'s key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Succession {
    /// The actor given up.
    pub old: ActorId,
    /// Its Ed25519 public key (the key that signed this record).
    #[serde(with = "crate::seal::fixed")]
    pub old_key: [u8; 32],
    /// The actor taken.
    pub new: ActorId,
    /// The new actor's Ed25519 public key.
    #[serde(with = "crate::seal::fixed")]
    pub new_key: [u8; 32],
    /// When the record was made, unix ms of the trusted time the new actor was seeded from
    /// (informational: not judged).
    pub made_ms: u64,
    /// Ed25519 signature of [`hash`](Self::hash) by `old_key`.
    #[serde(with = "crate::seal::fixed")]
    pub sig: [u8; 64],
}

/// Why a succession record was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SuccessionError {
    /// The record names a key for the old actor other than the one bound to it here.
    #[error("it names key {named} for the old actor, whose key here is {bound}")]
    WrongOldKey {
        /// The key the record names (hex, first 8 bytes).
        named: KeyHint,
        /// The key bound here.
        bound: KeyHint,
    },
    /// The signature does not verify with the old actor's key.
    #[error("its signature does not verify with the old actor's key")]
    BadSignature,
    /// Old and new actor are the same.
    #[error("it names the same actor as old and new")]
    SameActor,
}

/// The first 8 bytes of a public key, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyHint([u8; 8]);

impl KeyHint {
    fn of(key: &[u8; 32]) -> KeyHint {
        let mut k = [0; 8];
        k.copy_from_slice(&key[..8]);
        KeyHint(k)
    }
}

impl std::fmt::Display for KeyHint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}…", hex::encode(self.0))
    }
}

impl Succession {
    /// A record handing `old` (signing with `old_key`) on to `new` (whose key is `new_key`).
    pub fn sign(
        old: ActorId,
        old_key: &SigningKey,
        new: ActorId,
        new_key: [u8; 32],
        made_ms: u64,
    ) -> Succession {
        let mut s = Succession {
            old,
            old_key: old_key.public(),
            new,
            new_key,
            made_ms,
            sig: [0; 64],
        };
        s.sig = old_key.sign(&s.hash());
        s
    }

    /// What is signed: BLAKE3 of a domain tag and every field but the signature.
    pub fn hash(&self) -> Hash {
        let mut h = blake3::Hasher::new();
        h.update(b"kdelta/succession/v1");
        h.update(self.old.as_bytes());
        h.update(&self.old_key);
        h.update(self.new.as_bytes());
        h.update(&self.new_key);
        h.update(&self.made_ms.to_le_bytes());
        *h.finalize().as_bytes()
    }

    /// Checks the record against `bound_key`, the old actor's public key as bound here
    /// (`None` when this store holds no signed change of it yet: the record's own key is
    /// taken, trust on first use as for changes).
    pub fn check(&self, bound_key: Option<[u8; 32]>) -> Result<(), SuccessionError> {
        if self.old == self.new {
            return Err(SuccessionError::SameActor);
        }
        if let Some(bound) = bound_key
            && bound != self.old_key
        {
            return Err(SuccessionError::WrongOldKey {
                named: KeyHint::of(&self.old_key),
                bound: KeyHint::of(&bound),
            });
        }
        if !verify(&self.old_key, &self.hash(), &self.sig) {
            return Err(SuccessionError::BadSignature);
        }
        Ok(())
    }

    /// The record as stored (CBOR).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(self, &mut out).expect("encoding a succession record");
        out
    }

    /// A stored record; `None` when the bytes are not one.
    pub fn from_bytes(bytes: &[u8]) -> Option<Succession> {
        ciborium::from_reader(bytes).ok()
    }
}

/// The records of `all` in chain order (each one's `new` is the next one's `old`), ending at
/// `current`: the store's own history of actors, newest last; records not on that chain are
/// left out.
pub fn chain_to(current: ActorId, all: &[Succession]) -> Vec<Succession> {
    let mut chain = Vec::new();
    let mut at = current;
    while let Some(s) = all.iter().find(|s| s.new == at) {
        if chain.iter().any(|c: &Succession| c.new == s.old) || chain.len() > all.len() {
            break;
        }
        chain.push(s.clone());
        at = s.old;
    }
    chain.reverse();
    chain
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn actor(n: u8) -> ActorId {
        ActorId([n; 16])
    }

    #[test]
    fn a_record_checks_only_with_the_old_actors_key() {
        let old = SigningKey::generate().unwrap();
        let new = SigningKey::generate().unwrap();
        let s = Succession::sign(actor(1), &old, actor(2), new.public(), 7);
        s.check(Some(old.public())).unwrap();
        s.check(None).unwrap();
        assert_eq!(
            s.check(Some(new.public())),
            Err(SuccessionError::WrongOldKey {
                named: KeyHint::of(&old.public()),
                bound: KeyHint::of(&new.public()),
            })
        );
        // Signed by another key than the one it names.
        let mut forged = Succession::sign(actor(1), &new, actor(3), new.public(), 7);
        forged.old_key = old.public();
        assert_eq!(forged.check(None), Err(SuccessionError::BadSignature));
        assert_eq!(
            Succession::sign(actor(1), &old, actor(1), old.public(), 7).check(None),
            Err(SuccessionError::SameActor)
        );
    }

    #[test]
    fn the_chain_runs_from_the_first_actor_to_the_current_one() {
        let k = SigningKey::generate().unwrap();
        let ab = Succession::sign(actor(1), &k, actor(2), k.public(), 1);
        let bc = Succession::sign(actor(2), &k, actor(3), k.public(), 2);
        let other = Succession::sign(actor(8), &k, actor(9), k.public(), 3);
        let chain = chain_to(actor(3), &[bc.clone(), other, ab.clone()]);
        assert_eq!(chain, vec![ab, bc]);
        assert!(chain_to(actor(1), &[]).is_empty());
        // A loop (never made, but bytes are bytes) ends.
        let ba = Succession::sign(actor(2), &k, actor(1), k.public(), 4);
        let ab = Succession::sign(actor(1), &k, actor(2), k.public(), 5);
        assert!(chain_to(actor(2), &[ab, ba]).len() <= 2);
    }

    proptest! {
        #[test]
        fn records_round_trip_and_any_change_breaks_the_signature(
            old in any::<[u8; 16]>(),
            new in any::<[u8; 16]>(),
            made_ms in any::<u64>(),
            flip in 0usize..(16 + 32 + 16 + 32 + 8),
        ) {
            prop_assume!(old != new);
            let k = SigningKey::generate().unwrap();
            let n = SigningKey::generate().unwrap();
            let s = Succession::sign(ActorId(old), &k, ActorId(new), n.public(), made_ms);
            let back = Succession::from_bytes(&s.to_bytes()).unwrap();
            prop_assert_eq!(&back, &s);
            prop_assert!(back.check(Some(k.public())).is_ok());
            let mut t = s.clone();
            match flip {
                i if i < 16 => t.old.0[i] ^= 1,
                i if i < 48 => t.old_key[i - 16] ^= 1,
                i if i < 64 => t.new.0[i - 48] ^= 1,
                i if i < 96 => t.new_key[i - 64] ^= 1,
                i => t.made_ms ^= 1 << (i - 96),
            }
            prop_assert!(t.check(None).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Succession::from_bytes(&bytes);
        }
    }
}
