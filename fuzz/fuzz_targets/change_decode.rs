//! Changes from the network (inside pages, and stored): decoding any bytes must not panic,
//! and whatever decodes and validates must survive a round trip unchanged.
#![no_main]

use kdelta_sync::{Change, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let Ok(change) = Change::from_cbor(data, &limits) else {
        return;
    };
    let again = Change::from_cbor(&change.to_cbor(), &limits).expect("a re-encoded change decodes");
    assert_eq!(again, change);
});
