//! The one error type of the sync protocol. Owns the classification used by the agent: a
//! stable [`code`](ProtocolError::code) for metrics and `Refuse` frames, and
//! [`is_transient`](ProtocolError::is_transient) for its reconnect policy. Knows nothing of
//! the transport beyond `io::Error`.

use std::io;

use crate::{ActorId, StoreError};

/// Everything that can end a sync session early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A frame (on the wire, or once decompressed) is larger than the receiver accepts, or
    /// an outgoing frame would be larger than the peer accepts.
    #[error("frame of {size} bytes is over the limit of {max} bytes")]
    FrameTooLarge {
        /// Size of the frame (or, for compressed frames, of its content).
        size: usize,
        /// The limit in force.
        max: usize,
    },
    /// The peer speaks a protocol version this build does not.
    #[error("the peer speaks sync protocol version {theirs}; this kdelta speaks version {ours}")]
    UnsupportedVersion {
        /// The peer's version.
        theirs: u16,
        /// Ours ([`PROTOCOL_VERSION`](super::PROTOCOL_VERSION)).
        ours: u16,
    },
    /// Bytes that are not a valid frame: garbage, truncated, trailing data, out-of-range
    /// fields, or a change that fails validation.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The credentials were refused: on the responder, the peer's; on the initiator, ours.
    #[error("the credentials were refused")]
    Unauthorized,
    /// The peer ended the session with a `Refuse` frame.
    #[error("the peer refused the session ({code}): {message}")]
    Refused {
        /// The peer's machine-readable reason (a [`code`](ProtocolError::code) of its error).
        code: String,
        /// Its human-readable explanation.
        message: String,
    },
    /// A valid frame arrived at a point of the protocol where it has no meaning.
    #[error("protocol violation: expected {expected}, got {got}")]
    UnexpectedFrame {
        /// What the session was waiting for.
        expected: &'static str,
        /// The kind of frame that arrived.
        got: &'static str,
    },
    /// The peer presents this store's own actor id: two replicas writing as one actor would
    /// corrupt each other (typically a copied database that was not re-keyed).
    #[error(
        "the peer uses this store's own actor id {0}; a copied database must be re-keyed before it syncs"
    )]
    SameActor(ActorId),
    /// A `device` credential already bound to another actor was presented: the token was
    /// copied to a second machine (or a store was re-keyed or cloned).
    #[error(
        "device credential {principal:?} is bound to actor {bound}; actor {presented} presented it (a copied token or a cloned store?) — give that machine its own credential"
    )]
    CredentialBound {
        /// The credential's configured name.
        principal: String,
        /// The actor it is bound to.
        bound: ActorId,
        /// The actor that presented it now.
        presented: ActorId,
    },
    /// A `device` peer presented a succession record for the actor its credential is bound
    /// to that does not check (a forged record, or one signed by another key): nothing was
    /// rebound.
    #[error(
        "device credential {principal:?} is bound to actor {old}; a succession record handing it to actor {new} was refused: {reason}"
    )]
    ForgedSuccession {
        /// The credential's configured name.
        principal: String,
        /// The actor it is bound to (and stays bound to).
        old: ActorId,
        /// The actor the record names as successor.
        new: ActorId,
        /// Why the record was refused.
        reason: crate::SuccessionError,
    },
    /// The local store failed, or refused the peer's changes (seq gap, clock skew). The
    /// store is unchanged by the refused page: `apply_remote` is atomic.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The peer did not answer in time; the string says what the session was waiting for.
    #[error("timed out {0}")]
    Timeout(&'static str),
    /// The link closed before the session ended.
    #[error("the link closed")]
    Closed,
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(#[source] io::Error),
}

impl ProtocolError {
    /// A short stable code for metrics, logs and `Refuse` frames. Store errors keep the
    /// store's code (`seq_gap`, `clock_skew`, …) so a dashboard can tell them apart.
    pub fn code(&self) -> &'static str {
        match self {
            ProtocolError::FrameTooLarge { .. } => "frame_too_large",
            ProtocolError::UnsupportedVersion { .. } => "unsupported_version",
            ProtocolError::Malformed(_) => "malformed",
            ProtocolError::Unauthorized => "unauthorized",
            ProtocolError::Refused { .. } => "refused",
            ProtocolError::UnexpectedFrame { .. } => "unexpected_frame",
            ProtocolError::SameActor(_) => "same_actor",
            ProtocolError::CredentialBound { .. } => "credential_bound",
            ProtocolError::ForgedSuccession { .. } => "forged_succession",
            ProtocolError::Store(e) => e.code(),
            ProtocolError::Timeout(_) => "timeout",
            ProtocolError::Closed => "closed",
            ProtocolError::Transport(_) => "transport",
        }
    }

    /// True when a new session may succeed without anyone changing anything: the link broke
    /// or stalled, or the local store was briefly busy. False for refusals, bad
    /// credentials, version mismatches and hostile or broken data, which need a person (the
    /// agent still retries them, with its longest backoff).
    pub fn is_transient(&self) -> bool {
        match self {
            ProtocolError::Timeout(_) | ProtocolError::Closed | ProtocolError::Transport(_) => true,
            ProtocolError::Store(e) => e.is_transient(),
            _ => false,
        }
    }

    /// True when the error is the peer's own statement (a refusal we received) or a dead
    /// link, so telling the peer about it again is pointless.
    pub(crate) fn came_from_peer(&self) -> bool {
        matches!(
            self,
            ProtocolError::Refused { .. } | ProtocolError::Closed | ProtocolError::Transport(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_transience() {
        assert_eq!(ProtocolError::Closed.code(), "closed");
        assert!(ProtocolError::Closed.is_transient());
        assert!(ProtocolError::Timeout("waiting").is_transient());
        assert!(!ProtocolError::Unauthorized.is_transient());
        let gap = ProtocolError::Store(StoreError::SeqGap {
            actor: ActorId([1; 16]),
            have: 1,
            got: 3,
        });
        assert_eq!(gap.code(), "seq_gap");
        assert!(!gap.is_transient());
        assert!(!ProtocolError::Store(StoreError::Closed).is_transient());
        assert!(
            !ProtocolError::Store(StoreError::Decode {
                what: "rollup",
                detail: "corrupt".into()
            })
            .is_transient()
        );
    }
}
