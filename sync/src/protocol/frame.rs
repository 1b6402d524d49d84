//! Frames: the messages of the sync protocol and their wire codec. Owns the envelope
//! (`{ v: protocol version, body }` in CBOR), the one-byte compression header, and the
//! validation of everything decoded. Every byte handed to [`FrameCodec::decode`] is treated
//! as hostile: sizes are checked before anything is allocated or decompressed, and bad input
//! is an error, never a panic. Knows nothing of sessions or transports.
//!
//! ```text
//! frame    = header(1 byte) payload
//! header   = 0 (payload is CBOR) | 1 (payload is one zstd frame holding the CBOR)
//! CBOR     = { "v": u16, "body": Frame }      "v" first, so an unknown version is
//!                                             recognised before its body is interpreted
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use super::ProtocolError;
use super::envelope::Envelope;
use crate::{ActorId, Change, ClockClaim, Hlc, Limits, VersionVector};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;
/// Default largest frame, in bytes, on the wire and once decompressed: the default
/// `max_change_bytes` (4 MiB) plus room for the page around it, so every change a store
/// accepts with default limits fits a frame.
pub const DEFAULT_MAX_FRAME_BYTES: usize = (4 << 20) + (64 << 10);
/// Largest `max_frame_bytes` this build allows itself (config) or honours from a peer: a
/// frame is held whole in memory, several per session.
pub const MAX_FRAME_BYTES: u64 = 64 << 20;
/// Most bytes a `Page` frame takes besides its changes' own encodings
/// ([`Change::encoded_len`]): header byte, envelope, page id and array header (53 at most;
/// proven by a test against the encoder). A page fits a peer's limit when its changes'
/// sizes plus this do.
pub const PAGE_FRAME_OVERHEAD: usize = 64;
/// Most bytes one version-vector entry (16-byte actor, seq) takes in CBOR.
pub const VECTOR_ENTRY_MAX_BYTES: usize = 26;
/// Most bytes a `Vector`, `VectorPart` or `Ack` frame takes besides its vector entries.
pub const VECTOR_FRAME_OVERHEAD: usize = 128;
/// Most actors a peer's version vector may name: its parts are assembled in memory before
/// the exchange starts (about 50 bytes each).
pub const MAX_VECTOR_ACTORS: usize = 4_000_000;
/// Default byte budget of one page of changes.
pub const DEFAULT_PAGE_BYTES: usize = 1 << 20;
/// Longest peer name, refusal message or bye reason, in bytes.
pub const MAX_TEXT_BYTES: usize = 1024;
/// Longest credential token, in bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Most compression names a `Hello` may offer.
pub const MAX_COMPRESSIONS: usize = 16;
/// Smallest `max_frame_bytes` a peer may announce (a smaller one could not carry a page).
pub const MIN_FRAME_BYTES: u64 = 64 << 10;
/// Most feature names a `Hello` or `Welcome` may list.
pub const MAX_FEATURES: usize = 32;
/// Feature: the peer checks a change retention pruned wholly by the body hash its seal
/// carries (`Seal::body`). Peers of earlier releases list no features and cannot.
pub const FEATURE_PRUNED_BODY: &str = "pruned_body";
/// Feature: the peer takes the survivor of a log run, a wholly pruned change standing for
/// the compacted changes below it (`Seal::run_from`), in place of those changes. Peers that
/// do not list it are sent every change of an actor or, where a run is all there is, none.
pub const FEATURE_LOG_RUNS: &str = "log_runs";
/// The features this release announces.
pub const FEATURES: &[&str] = &[FEATURE_PRUNED_BODY, FEATURE_LOG_RUNS];

const HEADER_PLAIN: u8 = 0;
const HEADER_ZSTD: u8 = 1;
/// Frames smaller than this are sent plain even after zstd was negotiated: compressing a
/// ping costs more than it saves.
const COMPRESS_MIN_BYTES: usize = 512;

/// Per-frame compression, negotiated in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// CBOR as is.
    None,
    /// Each frame's CBOR compressed as one zstd frame.
    Zstd,
}

impl Compression {
    /// The name used on the wire and in config (`"none"`, `"zstd"`).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd => "zstd",
        }
    }

    /// Parses a wire/config name; `None` for names this build does not know.
    pub fn from_name(name: &str) -> Option<Compression> {
        match name {
            "none" => Some(Compression::None),
            "zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// The initiator's opening frame.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version the initiator speaks.
    pub protocol_version: u16,
    /// The initiator's actor id.
    pub actor: ActorId,
    /// A human-readable name (hostname), for status pages and logs.
    pub peer_name: String,
    /// Bearer credential, checked by the responder's [`Authenticator`](super::Authenticator).
    pub token: Option<String>,
    /// Compression names the initiator accepts, in preference order. Names unknown to the
    /// responder are ignored, so new algorithms can be offered without a version bump.
    pub compression: Vec<String>,
    /// Largest frame the initiator accepts, in bytes.
    pub max_frame_bytes: u64,
    /// The initiator's wall clock and whether it is synchronised; absent from peers of
    /// earlier releases. A trusted claim lets a device without a working clock judge
    /// timestamps (see `TimeReference`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<ClockClaim>,
    /// The initiator's newest change of its own actor, so a responder holding that seq
    /// with other content sees two stores writing as one actor (a cloned SD card) even
    /// when neither has a change the other lacks; absent from earlier releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tip: Option<Anchor>,
    /// The initiator's succession records (its actors before a clock rebase, oldest first,
    /// at most [`MAX_SUCCESSIONS`](crate::MAX_SUCCESSIONS)), so a responder holding its
    /// `device` credential bound to an old actor moves it on; absent from earlier releases
    /// (and ignored by them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub successions: Vec<crate::Succession>,
    /// What the initiator can receive beyond protocol version 1 ([`FEATURES`]); names
    /// unknown to the responder are ignored. Absent from earlier releases (none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
}

// The token is a secret: never print it.
impl fmt::Debug for Hello {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hello")
            .field("protocol_version", &self.protocol_version)
            .field("actor", &self.actor)
            .field("peer_name", &self.peer_name)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("compression", &self.compression)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("clock", &self.clock)
            .field("tip", &self.tip)
            .field("successions", &self.successions)
            .field("features", &self.features)
            .finish()
    }
}

/// The responder's acceptance of a `Hello`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    /// The responder's actor id.
    pub actor: ActorId,
    /// Its human-readable name.
    pub peer_name: String,
    /// The compression both sides use from now on (one the initiator offered).
    pub compression: Compression,
    /// Largest frame the responder accepts, in bytes.
    pub max_frame_bytes: u64,
    /// The responder's wall clock and whether it is synchronised (as in `Hello`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<ClockClaim>,
    /// The responder's copy of the initiator's actor at the seq of the `Hello`'s tip (or
    /// below, when it holds less), so the initiator sees a fork of its own actor too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tip: Option<Anchor>,
    /// What the responder can receive beyond protocol version 1 (as in `Hello`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
}

/// Acknowledgement of a page: it is applied and durable on the receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    /// The page acknowledged (pages are acknowledged in the order they were sent).
    pub page_id: u64,
    /// Changes of the page newly stored.
    pub applied: u64,
    /// Changes of the page the receiver already held.
    pub skipped: u64,
    /// The receiver's version vector after applying the page, for the page's actors (as
    /// many as fit one frame); earlier releases sent the whole vector.
    pub vector: VersionVector,
}

/// A change the receiver of a page should already hold, named by actor, seq and HLC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// The change's actor.
    pub actor: ActorId,
    /// Its seq.
    pub seq: u64,
    /// Its HLC, as the sender holds it.
    pub hlc: Hlc,
}

/// One message of the sync protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Frame {
    /// Initiator → responder: who I am, my credential, what I accept.
    Hello(Hello),
    /// Responder → initiator: accepted, and the negotiated settings.
    Welcome(Welcome),
    /// Either side: the session ends because of an error (see [`ProtocolError::code`]).
    Refuse {
        /// Machine-readable reason.
        code: String,
        /// Human-readable explanation.
        message: String,
    },
    /// Either side, once after the handshake: what I hold (the last or only part of it).
    Vector(VersionVector),
    /// A leading part of a version vector too large for one frame; the `Vector` that
    /// follows completes it. Sent only when the vector does not fit one frame of the peer's.
    VectorPart(VersionVector),
    /// Changes the receiver lacks, applied in one transaction and answered with an `Ack`.
    Page {
        /// Sender-chosen id, increasing within a session.
        page_id: u64,
        /// The changes, in per-actor seq order.
        changes: Vec<Change>,
        /// For actors whose first new changes of the session are in this page: the change
        /// just below them, which the receiver holds, by seq and HLC. A receiver whose copy
        /// has another HLC has found a fork — two stores writing as one actor. Absent from
        /// pages of earlier releases (and ignored by them).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        anchors: Vec<Anchor>,
    },
    /// The answer to a `Page`.
    Ack(Ack),
    /// Every change the sender held when it sent this went out before it; from now on the
    /// sender pushes new changes as they commit.
    Live,
    /// Keepalive probe; answered with `Pong`.
    Ping,
    /// Keepalive answer.
    Pong,
    /// Either side: the session ends normally.
    Bye {
        /// Why (`"done"`, `"shutting down"`, …).
        reason: String,
    },
}

impl Frame {
    /// The frame's kind, as named in errors and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Hello(_) => "hello",
            Frame::Welcome(_) => "welcome",
            Frame::Refuse { .. } => "refuse",
            Frame::Vector(_) => "vector",
            Frame::VectorPart(_) => "vector_part",
            Frame::Page { .. } => "page",
            Frame::Ack(_) => "ack",
            Frame::Live => "live",
            Frame::Ping => "ping",
            Frame::Pong => "pong",
            Frame::Bye { .. } => "bye",
        }
    }
}

/// Encodes frames for the wire and decodes (and validates) frames from it.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    /// Largest frame accepted by [`decode`](Self::decode), on the wire and decompressed.
    max_frame_bytes: usize,
    /// Bounds every decoded change must respect (the local store's limits).
    limits: Limits,
    /// zstd level used by [`encode`](Self::encode).
    zstd_level: i32,
}

impl FrameCodec {
    /// A codec accepting frames up to `max_frame_bytes` whose changes respect `limits`.
    pub fn new(max_frame_bytes: usize, limits: Limits) -> FrameCodec {
        FrameCodec {
            max_frame_bytes,
            limits,
            zstd_level: 3,
        }
    }

    /// Sets the zstd level for encoding (1 = fastest; 3 is the default).
    pub fn with_zstd_level(mut self, level: i32) -> FrameCodec {
        self.zstd_level = level;
        self
    }

    /// The largest frame this codec decodes.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// Encodes `frame`, compressed when `compression` says so and it pays off. Fails with
    /// [`ProtocolError::FrameTooLarge`] when the result (or its uncompressed content) is
    /// over `peer_max` bytes, the most the receiving peer accepts.
    pub fn encode(
        &self,
        frame: &Frame,
        compression: Compression,
        peer_max: usize,
    ) -> Result<Vec<u8>, ProtocolError> {
        #[derive(Serialize)]
        struct EnvelopeRef<'a> {
            v: u16,
            body: &'a Frame,
        }
        let mut out = vec![HEADER_PLAIN];
        ciborium::into_writer(
            &EnvelopeRef {
                v: PROTOCOL_VERSION,
                body: frame,
            },
            &mut out,
        )
        .map_err(|e| ProtocolError::Malformed(format!("encoding a {} frame: {e}", frame.kind())))?;
        let content = out.len() - 1;
        if content + 1 > peer_max {
            return Err(ProtocolError::FrameTooLarge {
                size: content + 1,
                max: peer_max,
            });
        }
        if compression == Compression::Zstd && content >= COMPRESS_MIN_BYTES {
            let compressed = zstd::bulk::compress(&out[1..], self.zstd_level)
                .map_err(|e| ProtocolError::Malformed(format!("zstd compression: {e}")))?;
            if compressed.len() < content {
                let mut packed = Vec::with_capacity(compressed.len() + 1);
                packed.push(HEADER_ZSTD);
                packed.extend_from_slice(&compressed);
                out = packed;
            }
        }
        Ok(out)
    }

    /// Decodes and validates one frame. Checks the size before decoding, bounds zstd
    /// decompression to `max_frame_bytes`, refuses trailing bytes, unknown protocol versions
    /// ([`ProtocolError::UnsupportedVersion`]) and any change that fails
    /// [`Change::validate`]. Never panics.
    pub fn decode(&self, bytes: &[u8]) -> Result<Frame, ProtocolError> {
        if bytes.len() > self.max_frame_bytes {
            return Err(ProtocolError::FrameTooLarge {
                size: bytes.len(),
                max: self.max_frame_bytes,
            });
        }
        let (&header, payload) = bytes
            .split_first()
            .ok_or_else(|| ProtocolError::Malformed("empty frame".into()))?;
        let inflated;
        let cbor = match header {
            HEADER_PLAIN => payload,
            HEADER_ZSTD => {
                inflated = self.inflate(payload)?;
                &inflated[..]
            }
            other => {
                return Err(ProtocolError::Malformed(format!(
                    "unknown frame encoding {other}"
                )));
            }
        };
        let mut rest = cbor;
        let envelope: Envelope = ciborium::from_reader(&mut rest)
            .map_err(|e| ProtocolError::Malformed(format!("CBOR: {e}")))?;
        if !rest.is_empty() {
            return Err(ProtocolError::Malformed(format!(
                "{} trailing bytes after the frame",
                rest.len()
            )));
        }
        match envelope {
            Envelope::Frame(frame) => self.validate(*frame),
            Envelope::Unsupported(theirs) => Err(ProtocolError::UnsupportedVersion {
                theirs,
                ours: PROTOCOL_VERSION,
            }),
        }
    }

    /// Decompresses one zstd payload into at most `max_frame_bytes`. Single-pass
    /// decompression allocates only the bounded output buffer (no window buffers), so a
    /// "zip bomb" costs at most that much memory.
    fn inflate(&self, payload: &[u8]) -> Result<Vec<u8>, ProtocolError> {
        if let Ok(Some(declared)) = zstd::zstd_safe::get_frame_content_size(payload)
            && declared > self.max_frame_bytes as u64
        {
            return Err(ProtocolError::FrameTooLarge {
                size: usize::try_from(declared).unwrap_or(usize::MAX),
                max: self.max_frame_bytes,
            });
        }
        zstd::bulk::decompress(payload, self.max_frame_bytes).map_err(|e| {
            ProtocolError::Malformed(format!(
                "zstd payload (or content over {} bytes): {e}",
                self.max_frame_bytes
            ))
        })
    }

    /// Checks the bounds serde cannot express, and normalises version vectors.
    fn validate(&self, frame: Frame) -> Result<Frame, ProtocolError> {
        match &frame {
            Frame::Hello(h) => {
                text("peer_name", &h.peer_name, MAX_TEXT_BYTES)?;
                if let Some(t) = &h.token {
                    text("token", t, MAX_TOKEN_BYTES)?;
                }
                if h.compression.len() > MAX_COMPRESSIONS {
                    return Err(ProtocolError::Malformed(format!(
                        "hello offers {} compressions (at most {MAX_COMPRESSIONS})",
                        h.compression.len()
                    )));
                }
                for c in &h.compression {
                    text("compression name", c, 32)?;
                }
                if h.successions.len() > crate::MAX_SUCCESSIONS {
                    return Err(ProtocolError::Malformed(format!(
                        "hello carries {} succession records (at most {})",
                        h.successions.len(),
                        crate::MAX_SUCCESSIONS
                    )));
                }
                features(&h.features)?;
                frame_limit(h.max_frame_bytes)?;
            }
            Frame::Welcome(w) => {
                text("peer_name", &w.peer_name, MAX_TEXT_BYTES)?;
                features(&w.features)?;
                frame_limit(w.max_frame_bytes)?;
            }
            Frame::Refuse { code, message } => {
                text("refusal code", code, 64)?;
                text("refusal message", message, MAX_TEXT_BYTES)?;
            }
            Frame::Bye { reason } => text("bye reason", reason, MAX_TEXT_BYTES)?,
            Frame::Page {
                page_id,
                changes,
                anchors,
            } => {
                if anchors.len() > changes.len() {
                    return Err(ProtocolError::Malformed(format!(
                        "page {page_id} has {} anchors for {} changes",
                        anchors.len(),
                        changes.len()
                    )));
                }
                for (i, c) in changes.iter().enumerate() {
                    c.validate(&self.limits).map_err(|e| {
                        ProtocolError::Malformed(format!(
                            "change {i} ({}:{}) of page {page_id}: {e}",
                            c.actor, c.seq
                        ))
                    })?;
                }
            }
            Frame::Vector(_)
            | Frame::VectorPart(_)
            | Frame::Ack(_)
            | Frame::Live
            | Frame::Ping
            | Frame::Pong => {}
        }
        // A vector from the wire may carry explicit zeros; rebuild it so it is canonical.
        Ok(match frame {
            Frame::Vector(v) => Frame::Vector(v.iter().collect()),
            Frame::VectorPart(v) => Frame::VectorPart(v.iter().collect()),
            Frame::Ack(a) => Frame::Ack(Ack {
                vector: a.vector.iter().collect(),
                ..a
            }),
            other => other,
        })
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(DEFAULT_MAX_FRAME_BYTES, Limits::default())
    }
}

fn text(what: &str, s: &str, max: usize) -> Result<(), ProtocolError> {
    if s.len() > max {
        return Err(ProtocolError::Malformed(format!(
            "{what} of {} bytes (at most {max})",
            s.len()
        )));
    }
    Ok(())
}

fn features(list: &[String]) -> Result<(), ProtocolError> {
    if list.len() > MAX_FEATURES {
        return Err(ProtocolError::Malformed(format!(
            "{} features listed (at most {MAX_FEATURES})",
            list.len()
        )));
    }
    list.iter().try_for_each(|f| text("feature name", f, 64))
}

fn frame_limit(n: u64) -> Result<(), ProtocolError> {
    if n < MIN_FRAME_BYTES {
        return Err(ProtocolError::Malformed(format!(
            "max_frame_bytes {n} is below the minimum of {MIN_FRAME_BYTES}"
        )));
    }
    Ok(())
}

/// The version-vector frames for `vector`, each within `peer_max` bytes: one `Vector` when
/// it fits, else `VectorPart`s followed by a closing `Vector`, so a store that knows any
/// number of actors can still say what it holds.
pub(crate) fn vector_frames(vector: &VersionVector, peer_max: usize) -> Vec<Frame> {
    let per_frame =
        (peer_max.saturating_sub(VECTOR_FRAME_OVERHEAD) / VECTOR_ENTRY_MAX_BYTES).max(1);
    if vector.len() <= per_frame {
        return vec![Frame::Vector(vector.clone())];
    }
    let entries: Vec<(ActorId, u64)> = vector.iter().collect();
    let mut parts: Vec<Frame> = entries
        .chunks(per_frame)
        .map(|chunk| Frame::VectorPart(chunk.iter().copied().collect()))
        .collect();
    if let Some(Frame::VectorPart(last)) = parts.pop() {
        parts.push(Frame::Vector(last));
    }
    parts
}

/// At most as many entries of `vector` as fit one frame of `peer_max` bytes (an `Ack`'s
/// vector is a hint: what it leaves out the sender learns from later acks or sessions).
pub(crate) fn vector_within(vector: VersionVector, peer_max: usize) -> VersionVector {
    let fit = peer_max.saturating_sub(VECTOR_FRAME_OVERHEAD) / VECTOR_ENTRY_MAX_BYTES;
    if vector.len() <= fit {
        return vector;
    }
    vector.iter().take(fit).collect()
}

/// Shortens `s` to at most `max` bytes on a character boundary (for outgoing texts that
/// quote errors of unbounded length).
pub(crate) fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChangeBody, Hlc, ReadingBatch};

    fn page(n: usize) -> Frame {
        let mut batch = ReadingBatch::new();
        for i in 0..n {
            batch.push("t", 1_764_000_000_000 + i as i64 * 1000, 20.0, Some("°C"));
        }
        Frame::Page {
            page_id: 7,
            anchors: vec![],
            changes: vec![Change {
                actor: ActorId([1; 16]),
                seq: 1,
                hlc: Hlc::new(1_764_000_000_000, 0),
                body: ChangeBody::Readings(batch),
                seal: None,
                pruned_rollups: Vec::new(),
            }],
        }
    }

    #[test]
    fn round_trips_plain_and_compressed() {
        let codec = FrameCodec::default();
        for frame in [
            page(1000),
            Frame::Ping,
            Frame::Live,
            Frame::Vector(VersionVector::new()),
        ] {
            for c in [Compression::None, Compression::Zstd] {
                let bytes = codec.encode(&frame, c, DEFAULT_MAX_FRAME_BYTES).unwrap();
                assert_eq!(codec.decode(&bytes).unwrap(), frame);
            }
        }
        let plain = codec
            .encode(&page(1000), Compression::None, usize::MAX)
            .unwrap();
        let packed = codec
            .encode(&page(1000), Compression::Zstd, usize::MAX)
            .unwrap();
        assert_eq!((plain[0], packed[0]), (HEADER_PLAIN, HEADER_ZSTD));
        assert!(
            packed.len() * 4 < plain.len(),
            "{} vs {}",
            packed.len(),
            plain.len()
        );
    }

    #[test]
    fn sizes_are_checked_both_ways() {
        let codec = FrameCodec::new(64 << 10, Limits::default());
        let big = page(20_000);
        let err = codec.encode(&big, Compression::None, 64 << 10).unwrap_err();
        assert_eq!(err.code(), "frame_too_large");
        let bytes = FrameCodec::default()
            .encode(&big, Compression::None, usize::MAX)
            .unwrap();
        let err = codec.decode(&bytes).unwrap_err();
        assert!(matches!(err, ProtocolError::FrameTooLarge { max, .. } if max == 64 << 10));
    }

    #[test]
    fn zip_bombs_are_bounded() {
        // 64 MiB of zeros compresses to a few KiB; the declared size is refused up front.
        let zeros = vec![0u8; 64 << 20];
        let mut bomb = vec![HEADER_ZSTD];
        bomb.extend(zstd::bulk::compress(&zeros, 3).unwrap());
        assert!(bomb.len() < DEFAULT_MAX_FRAME_BYTES);
        let err = FrameCodec::default().decode(&bomb).unwrap_err();
        assert_eq!(err.code(), "frame_too_large");
        // Without a declared size (streaming encoder), decompression stops at the limit.
        let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        enc.include_contentsize(false).unwrap();
        std::io::Write::write_all(&mut enc, &zeros).unwrap();
        let mut bomb = vec![HEADER_ZSTD];
        bomb.extend(enc.finish().unwrap());
        assert!(FrameCodec::default().decode(&bomb).is_err());
    }

    #[test]
    fn unknown_versions_and_trailing_bytes_are_refused() {
        #[derive(Serialize)]
        struct Future {
            v: u16,
            body: &'static str,
        }
        let mut bytes = vec![HEADER_PLAIN];
        ciborium::into_writer(
            &Future {
                v: 9,
                body: "hello-from-the-future",
            },
            &mut bytes,
        )
        .unwrap();
        let err = FrameCodec::default().decode(&bytes).unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::UnsupportedVersion {
                theirs: 9,
                ours: PROTOCOL_VERSION
            }
        ));

        let mut bytes = FrameCodec::default()
            .encode(&Frame::Ping, Compression::None, usize::MAX)
            .unwrap();
        bytes.push(0);
        assert_eq!(
            FrameCodec::default().decode(&bytes).unwrap_err().code(),
            "malformed"
        );
        assert!(FrameCodec::default().decode(&[]).is_err());
        assert!(FrameCodec::default().decode(&[7, 1, 2]).is_err());
    }

    #[test]
    fn invalid_changes_and_oversized_texts_are_malformed() {
        let Frame::Page { mut changes, .. } = page(2) else {
            unreachable!()
        };
        if let ChangeBody::Readings(b) = &mut changes[0].body {
            b.series[0].values[1] = f64::NAN;
        }
        let bad = Frame::Page {
            page_id: 1,
            changes,
            anchors: vec![],
        };
        let bytes = FrameCodec::default()
            .encode(&bad, Compression::None, usize::MAX)
            .unwrap();
        assert_eq!(
            FrameCodec::default().decode(&bytes).unwrap_err().code(),
            "malformed"
        );

        let long = Frame::Bye {
            reason: "x".repeat(MAX_TEXT_BYTES + 1),
        };
        let bytes = FrameCodec::default()
            .encode(&long, Compression::None, usize::MAX)
            .unwrap();
        assert_eq!(
            FrameCodec::default().decode(&bytes).unwrap_err().code(),
            "malformed"
        );
    }

    /// A page frame is its changes' exact sizes plus at most [`PAGE_FRAME_OVERHEAD`], with
    /// the largest page id and an array header of several bytes (70,000 changes).
    #[test]
    fn page_frames_are_their_changes_plus_the_overhead() {
        let codec = FrameCodec::default();
        let Frame::Page { changes: one, .. } = page(300) else {
            unreachable!()
        };
        let many: Vec<Change> = (1..=70_000u64)
            .map(|seq| Change {
                seq,
                body: ChangeBody::Readings({
                    let mut b = ReadingBatch::new();
                    b.push("t", seq as i64, 1.0, None);
                    b
                }),
                ..one[0].clone()
            })
            .collect();
        for (page_id, changes) in [(0, vec![]), (u64::MAX, one), (u64::MAX, many)] {
            let sizes: usize = changes.iter().map(Change::encoded_len).sum();
            let frame = Frame::Page {
                page_id,
                changes,
                anchors: vec![],
            };
            let bytes = codec.encode(&frame, Compression::None, usize::MAX).unwrap();
            assert!(
                bytes.len() <= sizes + PAGE_FRAME_OVERHEAD,
                "{} > {sizes}",
                bytes.len()
            );
        }
        // Anchors add their own sizes and at most 16 bytes for the field (exchange.rs).
        let Frame::Page { changes: one, .. } = page(10) else {
            unreachable!()
        };
        let changes: Vec<Change> = (1..=5)
            .map(|seq| Change {
                seq,
                ..one[0].clone()
            })
            .collect();
        let anchors: Vec<Anchor> = (0..5u8)
            .map(|i| Anchor {
                actor: ActorId([i; 16]),
                seq: u64::MAX,
                hlc: Hlc(u64::MAX),
            })
            .collect();
        let sizes: usize = changes.iter().map(Change::encoded_len).sum::<usize>()
            + anchors.iter().map(crate::change::cbor_len).sum::<usize>();
        let frame = Frame::Page {
            page_id: u64::MAX,
            changes,
            anchors,
        };
        let bytes = codec.encode(&frame, Compression::None, usize::MAX).unwrap();
        assert!(bytes.len() <= sizes + PAGE_FRAME_OVERHEAD + 16);
        assert_eq!(codec.decode(&bytes).unwrap(), frame);
        // More anchors than changes is not a page a conforming peer sends.
        let Frame::Page {
            mut changes,
            anchors,
            ..
        } = frame
        else {
            unreachable!()
        };
        changes.truncate(1);
        let bytes = codec
            .encode(
                &Frame::Page {
                    page_id: 1,
                    changes,
                    anchors,
                },
                Compression::None,
                usize::MAX,
            )
            .unwrap();
        assert_eq!(codec.decode(&bytes).unwrap_err().code(), "malformed");
    }

    /// Any vector goes in frames within the peer's limit, and reads back whole.
    #[test]
    fn vectors_of_any_size_fit_the_peers_frames() {
        let codec = FrameCodec::default();
        let vector: VersionVector = (0..20_000u32)
            .map(|i| {
                let mut a = [0xFF; 16];
                a[..4].copy_from_slice(&i.to_le_bytes());
                (ActorId(a), u64::MAX - i as u64)
            })
            .collect();
        for max in [MIN_FRAME_BYTES as usize, 200_000, DEFAULT_MAX_FRAME_BYTES] {
            let frames = vector_frames(&vector, max);
            assert_eq!(frames.len() == 1, max == DEFAULT_MAX_FRAME_BYTES);
            let mut back = VersionVector::new();
            for (i, f) in frames.iter().enumerate() {
                let bytes = codec.encode(f, Compression::None, max).unwrap();
                match codec.decode(&bytes).unwrap() {
                    Frame::VectorPart(v) if i + 1 < frames.len() => back.merge(&v),
                    Frame::Vector(v) if i + 1 == frames.len() => back.merge(&v),
                    other => panic!("unexpected {}", other.kind()),
                }
            }
            assert_eq!(back, vector);
            let ack = vector_within(vector.clone(), max);
            let bytes = codec.encode(
                &Frame::Ack(Ack {
                    page_id: u64::MAX,
                    applied: u64::MAX,
                    skipped: u64::MAX,
                    vector: ack,
                }),
                Compression::None,
                max,
            );
            assert!(bytes.is_ok());
        }
    }

    #[test]
    fn tokens_are_not_printed() {
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            actor: ActorId([1; 16]),
            peer_name: "pi".into(),
            token: Some("s3cret".into()),
            compression: vec!["zstd".into()],
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES as u64,
            clock: None,
            tip: None,
            successions: Vec::new(),
            features: Vec::new(),
        };
        assert!(!format!("{hello:?}").contains("s3cret"));
    }

    #[test]
    fn clip_respects_char_boundaries() {
        assert_eq!(clip("héllo", 2), "h");
        assert_eq!(clip("abc", 10), "abc");
    }
}
