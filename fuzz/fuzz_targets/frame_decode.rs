//! Sync frames from the network: decoding any bytes must not panic, hang or allocate beyond
//! the frame limit, and whatever decodes must survive a round trip unchanged.
#![no_main]

use kdelta_sync::protocol::{Compression, FrameCodec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let codec = FrameCodec::default();
    let Ok(frame) = codec.decode(data) else {
        return;
    };
    for compression in [Compression::None, Compression::Zstd] {
        // Re-encoding may legitimately exceed the limit (the input may have used a denser
        // CBOR form); only frames that fit must decode again.
        if let Ok(bytes) = codec.encode(&frame, compression, codec.max_frame_bytes()) {
            let again = codec.decode(&bytes).expect("a re-encoded frame decodes");
            assert_eq!(again, frame);
        }
    }
});
