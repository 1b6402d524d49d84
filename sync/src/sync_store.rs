//! [`SyncStore`]: everything a sync session ([`SyncSession`](crate::SyncSession)) asks of a
//! store beyond its [`ChangeLog`] — commit announcements for live mode, the signed-log check
//! on apply, fork detection, credential bindings, the clock and the size limits — so one
//! session serves the embedded SQLite [`Store`] of a device and the PostgreSQL change log
//! of a hub (crate `kdelta-pg`). Owns the trait, the [`Announcement`] a session wakes on,
//! and the implementation for [`Store`] (which only forwards to its inherent methods).

use std::future::Future;
use std::sync::Arc;

use tokio::sync::broadcast::{self, error::RecvError};

use crate::seal::Prechecked;
use crate::{
    ActorId, ApplyOutcome, ChainReport, Change, ChangeEvent, ChangeLog, ClockClaim, ClockSkewError,
    Fork, Hlc, Limits, Result, Store, StoreError, TimeReference,
};

/// What wakes a live session: a commit, or the news that commits may have gone unannounced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announcement {
    /// Changes of `actor` up to `seq` are durable (whoever stored them).
    Committed {
        /// The actor whose change was stored.
        actor: ActorId,
        /// Its seq (a backend announcing per page gives the highest).
        seq: u64,
    },
    /// Announcements were missed (a lagging receiver, a lost database listener): look at
    /// the change log again.
    Missed,
}

/// A subscription to a store's commit announcements (see [`SyncStore::subscribe`]).
pub trait Announcements: Send {
    /// The next announcement. Cancel-safe: dropping the future loses nothing. An error
    /// means no more announcements will come (the store closed).
    fn next(&mut self) -> impl Future<Output = Result<Announcement>> + Send;
}

impl Announcements for broadcast::Receiver<ChangeEvent> {
    async fn next(&mut self) -> Result<Announcement> {
        match self.recv().await {
            Ok(e) => Ok(Announcement::Committed {
                actor: e.actor,
                seq: e.seq,
            }),
            // Missed events: the change log, queried from what a peer was sent, has them.
            Err(RecvError::Lagged(_)) => Ok(Announcement::Missed),
            Err(RecvError::Closed) => Err(StoreError::Closed),
        }
    }
}

/// A store a sync session can run on: its [`ChangeLog`] plus the rest of what the protocol
/// needs. Cheap to clone (a handle).
pub trait SyncStore: ChangeLog + Clone + 'static {
    /// The subscription type of [`subscribe`](Self::subscribe).
    type Announcements: Announcements;

    /// Announcements of commits from now on. A session subscribes before its first read of
    /// the change log, so no commit falls between; announcements are hints, and a session
    /// re-reads the log periodically (`live_recheck`) whatever they say.
    fn subscribe(&self) -> impl Future<Output = Result<Self::Announcements>> + Send;

    /// The size limits received changes are validated against (the frame decoder's too).
    fn limits(&self) -> Limits;

    /// The trusted time sources this store judges remote timestamps by; sessions add what
    /// synchronised peers claim.
    fn time_reference(&self) -> Arc<TimeReference>;

    /// What to tell a peer about this store's clock in a handshake.
    fn clock_claim(&self) -> ClockClaim;

    /// Whether a remote change of `actor` stamped `hlc` would pass the apply's clock check
    /// (the actor's own clock claim does not vouch for it).
    fn check_remote_time(
        &self,
        actor: ActorId,
        hlc: Hlc,
    ) -> std::result::Result<(), ClockSkewError>;

    /// The actor the `device` credential `principal` is bound to: the one bound before, or
    /// `actor` (bound now, durably) when it was never used.
    fn bind_credential(
        &self,
        principal: &str,
        actor: ActorId,
    ) -> impl Future<Output = Result<ActorId>> + Send;

    /// Moves the `device` credential `principal` from `old` on to `new` when it is bound
    /// to `old`, durably, keeping `old` among its predecessors (the session checked a
    /// [`Succession`](crate::Succession) record first). Returns the actor it is bound to
    /// afterwards: `new`, or the other actor it was bound to (left unchanged).
    fn succeed_credential(
        &self,
        principal: &str,
        old: ActorId,
        new: ActorId,
    ) -> impl Future<Output = Result<ActorId>> + Send;

    /// The actors `principal` was bound to before its current one (successions followed),
    /// whose changes it may still send.
    fn credential_predecessors(
        &self,
        principal: &str,
    ) -> impl Future<Output = Result<Vec<ActorId>>> + Send;

    /// The Ed25519 public key bound here to `actor` by its first signed change, if any.
    fn actor_key(&self, actor: ActorId) -> impl Future<Output = Result<Option<[u8; 32]>>> + Send;

    /// This store's own succession records, oldest first, ending at its actor (sent in the
    /// `Hello`). A backend that never rebases its actor (the PostgreSQL hub) has none.
    fn own_successions(&self) -> impl Future<Output = Result<Vec<crate::Succession>>> + Send {
        async { Ok(Vec::new()) }
    }

    /// The changes and anchors that contradict this store's copy of the same `(actor, seq)`
    /// (see `forks.rs`): at most one fork per actor.
    fn find_forks(
        &self,
        changes: &[Change],
        anchors: &[(ActorId, u64, Hlc)],
    ) -> impl Future<Output = Result<Vec<Fork>>> + Send;

    /// Records `peer` as where this store first received the changes of those of `actors`
    /// with no origin recorded yet, for fork reports (see `origins.rs`). A backend that
    /// keeps no such record does nothing.
    fn note_origins(
        &self,
        actors: &[ActorId],
        peer: &str,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (actors, peer);
        async { Ok(()) }
    }

    /// The peer recorded by [`note_origins`](Self::note_origins) for `actor`, if any.
    fn origin_of(&self, actor: ActorId) -> impl Future<Output = Result<Option<String>>> + Send {
        let _ = actor;
        async { Ok(None) }
    }

    /// Applies a page like [`ChangeLog::apply_remote`], with each change's signature and
    /// chain link checked; an actor whose change fails is refused (in the report) and its
    /// later changes wait, while the other actors' changes apply, atomically. Signatures
    /// `prechecked` found valid ahead (the session's frame reader checks each page while
    /// the previous one is applied) need not be verified again.
    fn apply_remote_verified(
        &self,
        changes: Vec<Change>,
        prechecked: Prechecked,
    ) -> impl Future<Output = Result<(ApplyOutcome, ChainReport)>> + Send;
}

impl SyncStore for Store {
    type Announcements = broadcast::Receiver<ChangeEvent>;

    async fn subscribe(&self) -> Result<Self::Announcements> {
        Ok(Store::subscribe(self))
    }

    fn limits(&self) -> Limits {
        self.config().limits.clone()
    }

    fn time_reference(&self) -> Arc<TimeReference> {
        Store::time_reference(self)
    }

    fn clock_claim(&self) -> ClockClaim {
        Store::clock_claim(self)
    }

    fn check_remote_time(
        &self,
        actor: ActorId,
        hlc: Hlc,
    ) -> std::result::Result<(), ClockSkewError> {
        Store::check_remote_time(self, actor, hlc)
    }

    async fn bind_credential(&self, principal: &str, actor: ActorId) -> Result<ActorId> {
        Store::bind_credential(self, principal, actor).await
    }

    async fn succeed_credential(
        &self,
        principal: &str,
        old: ActorId,
        new: ActorId,
    ) -> Result<ActorId> {
        Store::succeed_credential(self, principal, old, new).await
    }

    async fn credential_predecessors(&self, principal: &str) -> Result<Vec<ActorId>> {
        Store::credential_predecessors(self, principal).await
    }

    async fn actor_key(&self, actor: ActorId) -> Result<Option<[u8; 32]>> {
        Store::actor_key(self, actor).await
    }

    async fn own_successions(&self) -> Result<Vec<crate::Succession>> {
        Store::successions(self).await
    }

    async fn find_forks(
        &self,
        changes: &[Change],
        anchors: &[(ActorId, u64, Hlc)],
    ) -> Result<Vec<Fork>> {
        Store::find_forks(self, changes, anchors).await
    }

    async fn apply_remote_verified(
        &self,
        changes: Vec<Change>,
        prechecked: Prechecked,
    ) -> Result<(ApplyOutcome, ChainReport)> {
        Store::apply_remote_prechecked(self, changes, prechecked).await
    }

    async fn note_origins(&self, actors: &[ActorId], peer: &str) -> Result<()> {
        Store::note_origins(self, actors, peer).await
    }

    async fn origin_of(&self, actor: ActorId) -> Result<Option<String>> {
        Store::origin_of(self, actor).await
    }
}
