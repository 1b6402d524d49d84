//! A change too large for the peer's frame limit: it can never be sent on this link, so its
//! actor is left out of the session (later changes of the actor wait behind it) while every
//! other actor keeps syncing. Owns only the report; the decision is made where pages are
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
