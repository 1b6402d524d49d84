//! The decoding side of the frame envelope `{ "v": u16, "body": Frame }`: reads the version
//! first and interprets the body only when it is ours, so a frame of an unknown version
//! becomes [`ProtocolError::UnsupportedVersion`](super::ProtocolError::UnsupportedVersion)
//! instead of a confusing decode error. Encoding is plain serde (see `frame.rs`).

use std::fmt;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::{Frame, PROTOCOL_VERSION};

/// The decoded envelope: a frame of our version, or just the version of another one. The
/// body of an unknown version is skipped, never interpreted.
pub(super) enum Envelope {
    /// A frame of our version.
    Frame(Box<Frame>),
    /// Only the version of a frame we do not speak.
    Unsupported(u16),
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EnvelopeVisitor;
        impl<'de> Visitor<'de> for EnvelopeVisitor {
            type Value = Envelope;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a frame envelope { v, body }")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope, A::Error> {
                let mut version: Option<u16> = None;
                let mut out: Option<Envelope> = None;
                while let Some(key) = map.next_key::<EnvelopeKey>()? {
                    match key {
                        EnvelopeKey::V if version.is_some() => {
                            return Err(de::Error::duplicate_field("v"));
                        }
                        EnvelopeKey::V => version = Some(map.next_value()?),
                        EnvelopeKey::Body if out.is_some() => {
                            return Err(de::Error::duplicate_field("body"));
                        }
                        EnvelopeKey::Body => match version {
                            None => return Err(de::Error::custom("\"v\" must precede \"body\"")),
                            Some(PROTOCOL_VERSION) => {
                                out = Some(Envelope::Frame(map.next_value()?))
                            }
                            Some(v) => {
                                map.next_value::<IgnoredAny>()?;
                                out = Some(Envelope::Unsupported(v));
                            }
                        },
                        EnvelopeKey::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                match (version, out) {
                    (_, Some(e)) => Ok(e),
                    // A newer version may move the body; still report the version.
                    (Some(v), None) if v != PROTOCOL_VERSION => Ok(Envelope::Unsupported(v)),
                    (None, _) => Err(de::Error::missing_field("v")),
                    (Some(_), None) => Err(de::Error::missing_field("body")),
                }
            }
        }
        d.deserialize_map(EnvelopeVisitor)
    }
}

enum EnvelopeKey {
    V,
    Body,
    Other,
}

impl<'de> Deserialize<'de> for EnvelopeKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = EnvelopeKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an envelope field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EnvelopeKey, E> {
                Ok(match v {
                    "v" => EnvelopeKey::V,
                    "body" => EnvelopeKey::Body,
                    _ => EnvelopeKey::Other,
                })
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}
