//! Screening a received page for changes stamped too far in the future, before it is
//! applied. A change whose timestamp runs ahead of every trusted time source by more than
//! the max offset is held back — with the later changes of the same actor in the page, which
//! could not apply without it — while every other actor's changes in the page apply as
//! usual: one peer with a clock a year ahead is one quarantined actor, not a wedged link.
//! Held-back changes are not acknowledged as held, so the sender offers them again next
//! session and they apply once trusted time catches up (or the sender's clock is fixed).
//!
//! Also the role check of a `device` credential ([`screen_origin`]): changes of any actor
//! but the one the credential is bound to are refused, and the rest of the page applies.
//!
//! Owns only the decisions; the time judge is the store's clock
//! ([`SyncStore::check_remote_time`]).

use std::collections::HashMap;

use crate::{ActorId, Change, ClockSkewError, SyncStore};

/// A change held back because of its timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// The actor whose changes were held back.
    pub actor: ActorId,
    /// The first held-back seq of that actor (later ones in the page wait behind it).
    pub seq: u64,
    /// How many of its changes in the page were held back.
    pub changes: usize,
    /// Why.
    pub error: ClockSkewError,
}

impl std::fmt::Display for Quarantined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "changes of actor {} from seq {} held back ({} in this page): {}",
            self.actor, self.seq, self.changes, self.error
        )
    }
}

/// Splits `changes` into those to apply and the actors held back, keeping page order.
pub(super) fn screen<S: SyncStore>(
    store: &S,
    changes: Vec<Change>,
) -> (Vec<Change>, Vec<Quarantined>) {
    let mut held: HashMap<ActorId, Quarantined> = HashMap::new();
    let mut order = Vec::new();
    let mut accepted = Vec::with_capacity(changes.len());
    for change in changes {
        if let Some(q) = held.get_mut(&change.actor) {
            q.changes += 1;
            continue;
        }
        match store.check_remote_time(change.actor, change.hlc) {
            Ok(()) => accepted.push(change),
            Err(error) => {
                order.push(change.actor);
                held.insert(
                    change.actor,
                    Quarantined {
                        actor: change.actor,
                        seq: change.seq,
                        changes: 1,
                        error,
                    },
                );
            }
        }
    }
    let refused = order.into_iter().filter_map(|a| held.remove(&a)).collect();
    (accepted, refused)
}

/// Changes of one actor refused because a `device` credential sent them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignChange {
    /// The actor the changes claim.
    pub actor: ActorId,
    /// The first refused seq of that actor in the page.
    pub seq: u64,
    /// How many of its changes in the page were refused.
    pub changes: usize,
    /// The credential's name.
    pub principal: String,
    /// The actor the credential is bound to.
    pub bound: ActorId,
}

impl std::fmt::Display for ForeignChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "refused {} change(s) of actor {} from seq {}: device credential {:?} may only send changes of its own actor {} (mark it role = \"hub\" if this peer relays)",
            self.changes, self.actor, self.seq, self.principal, self.bound
        )
    }
}

/// Splits `changes` into those the `device` credential `origin` may send (its bound actor's
/// and its predecessors') and those of other actors (refused), keeping page order.
pub(super) fn screen_origin(
    changes: Vec<Change>,
    origin: &super::DeviceOrigin,
) -> (Vec<Change>, Vec<ForeignChange>) {
    let mut refused: Vec<ForeignChange> = Vec::new();
    let mut accepted = Vec::with_capacity(changes.len());
    for change in changes {
        if origin.may_send(&change.actor) {
            accepted.push(change);
            continue;
        }
        match refused.iter_mut().find(|r| r.actor == change.actor) {
            Some(r) => r.changes += 1,
            None => refused.push(ForeignChange {
                actor: change.actor,
                seq: change.seq,
                changes: 1,
                principal: origin.principal.clone(),
                bound: origin.bound,
            }),
        }
    }
    (accepted, refused)
}
