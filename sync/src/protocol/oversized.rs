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

/// A change left unsent because the peer runs an earlier release that lacks `feature`:
/// retention pruned the change wholly (it travels with the body hash its seal carries,
/// [`FEATURE_PRUNED_BODY`](super::FEATURE_PRUNED_BODY): the peer would hash the empty body
/// and refuse it as forged), or it survives a log run reaching below what the peer holds
/// ([`FEATURE_LOG_RUNS`](super::FEATURE_LOG_RUNS): the peer would refuse the gap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeNeedsUpgrade {
    /// The change's actor (its later changes are not sent this session either).
    pub actor: ActorId,
    /// The change's seq.
    pub seq: u64,
    /// The feature the peer does not list.
    pub feature: &'static str,
}

impl std::fmt::Display for ChangeNeedsUpgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.feature == super::FEATURE_LOG_RUNS {
            "stands for a run of changes retention pruned wholly and compacted away"
        } else {
            "was pruned wholly by retention"
        };
        write!(
            f,
            "change {}:{} {what}, and the peer runs an earlier kdelta release, which cannot \
             take such a change (it lacks the `{}` feature): it is not sent, and later changes \
             of actor {} wait behind it (other actors keep syncing; upgrade the peer)",
            self.actor, self.seq, self.feature, self.actor
        )
    }
}
