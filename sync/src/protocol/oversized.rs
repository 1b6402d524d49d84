//! Changes that cannot be sent on this link: one too large for the peer's frame limit, or
//! one retention pruned wholly to a peer of an earlier release (which cannot check it). Its
//! actor is left out of the session (later changes of the actor wait behind it) while every
//! other actor keeps syncing. Owns only the reports; the decision is made where pages are
//! built (`exchange.rs`).

use crate::ActorId;

/// A change left unsent because no frame the peer accepts can carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeTooLarge {
    /// The change's actor (its later changes are not sent this session either).
    pub actor: ActorId,
    /// The change's seq.
    pub seq: u64,
    /// Its exact encoded size, in bytes.
    pub size: usize,
    /// The most a page frame of the peer's leaves for changes, in bytes.
    pub max: usize,
}

impl std::fmt::Display for ChangeTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "change {}:{} is {} bytes, more than the {} bytes the peer's frame limit leaves for \
             changes: it is not sent, and later changes of actor {} wait behind it (other actors \
             keep syncing; raise the peer's sync.max_frame_bytes to let it through)",
            self.actor, self.seq, self.size, self.max, self.actor
        )
    }
}

/// A change left unsent because retention pruned it wholly (it travels with the body hash
/// its seal carries) and the peer runs an earlier release, which would hash the empty body
/// it receives and refuse the change as forged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeNeedsUpgrade {
    /// The change's actor (its later changes are not sent this session either).
    pub actor: ActorId,
    /// The change's seq.
    pub seq: u64,
}

impl std::fmt::Display for ChangeNeedsUpgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "change {}:{} was pruned wholly by retention and the peer runs an earlier kdelta \
             release, which cannot check such a change: it is not sent, and later changes of \
             actor {} wait behind it (other actors keep syncing; upgrade the peer)",
            self.actor, self.seq, self.actor
        )
    }
}
