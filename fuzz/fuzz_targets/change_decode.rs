//! Changes from the network (inside pages, and stored): decoding any bytes must not panic,
//! and whatever decodes and validates must survive a round trip unchanged. A change that
//! carries a seal (key, previous hash, signature, pruned unit hashes) is also hashed and its
//! signature checked, as a receiver does: hostile seals must not panic either.
#![no_main]

use kdelta_sync::{Change, Limits, seal};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let Ok(change) = Change::from_cbor(data, &limits) else {
        return;
    };
    let again = Change::from_cbor(&change.to_cbor(), &limits).expect("a re-encoded change decodes");
    assert_eq!(again, change);
    if let Some(s) = &change.seal {
        let body = s.body_hash_of(&change.body);
        let hash = seal::change_hash(&change.actor, change.seq, change.hlc, &s.prev, &body);
        let _ = seal::verify(&s.key, &hash, &s.sig);
    }
});
