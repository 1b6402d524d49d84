//! [`ChangeLog`]: the replication-facing half of a store, as one small trait, so a sync
//! peer can be backed by the embedded SQLite [`Store`] on a device or by the PostgreSQL
//! change log of a hub (crate `kdelta-pg`, `PgStore`). Owns only the trait and its
//! implementation for [`Store`]; what a sync session asks of a store beyond it is
//! [`SyncStore`](crate::SyncStore) (`sync_store.rs`).
//!
//! The contract every implementation keeps (the sync protocol's correctness rests on it):
//! - a store holds, per actor, a contiguous run of seqs from 1, summarised by its
//!   [`VersionVector`];
//! - [`apply_remote`](ChangeLog::apply_remote) is atomic (all new changes of the call or
//!   none), idempotent (changes held already are skipped and counted) and refuses a change
//!   whose predecessor is missing with [`StoreError::SeqGap`](crate::StoreError::SeqGap),
//!   storing nothing of the call — also when several processes apply at once;
//! - [`digest`](ChangeLog::digest) is the same function of the changes held on every
//!   backend ([`Digest::add_change`]), so replicas holding the same changes agree.

use std::future::Future;

use crate::{ActorId, ApplyOutcome, Change, Digest, Hlc, Result, Store, VersionVector};

/// The change log of a replica: what it holds, what a peer lacks, applying a peer's pages.
pub trait ChangeLog: Send + Sync {
    /// The actor this replica writes its own changes as.
    fn actor(&self) -> ActorId;

    /// What this replica holds: actor → highest contiguous seq.
    fn version_vector(&self) -> impl Future<Output = Result<VersionVector>> + Send;

    /// What this replica holds of `actors` only (actors it holds nothing of are left out).
    fn version_vector_of(
        &self,
        actors: &[ActorId],
    ) -> impl Future<Output = Result<VersionVector>> + Send;

    /// The canonical digest of everything held (see [`Digest::add_change`]).
    fn digest(&self) -> impl Future<Output = Result<Digest>> + Send;

    /// The changes held that a replica with vector `theirs` lacks, in per-actor seq order,
    /// filling at most `byte_budget` bytes of [`Change::encoded_len`] (at least one change
    /// when any is missing, whatever its size).
    fn changes_since(
        &self,
        theirs: &VersionVector,
        byte_budget: usize,
    ) -> impl Future<Output = Result<Vec<Change>>> + Send;

    /// [`changes_since`](ChangeLog::changes_since) of `actors` only, never reading another
    /// actor's changes: what a peer sent only those actors' changes lacks (a `device` peer
    /// under `device_relay = "own"`).
    fn changes_since_of(
        &self,
        actors: &[ActorId],
        theirs: &VersionVector,
        byte_budget: usize,
    ) -> impl Future<Output = Result<Vec<Change>>> + Send;

    /// Applies a page of a peer's changes: atomic, idempotent, gaps refused (see the
    /// module docs). Returns how many were new and how many were held already.
    fn apply_remote(
        &self,
        changes: Vec<Change>,
    ) -> impl Future<Output = Result<ApplyOutcome>> + Send;

    /// The HLCs of the held changes at the given `(actor, seq)`s, in the order asked
    /// (those not held are left out): the anchors a sync page carries.
    fn hlcs_at(
        &self,
        dots: &[(ActorId, u64)],
    ) -> impl Future<Output = Result<Vec<(ActorId, u64, Hlc)>>> + Send;
}

impl ChangeLog for Store {
    fn actor(&self) -> ActorId {
        Store::actor(self)
    }

    async fn version_vector(&self) -> Result<VersionVector> {
        Ok(Store::version_vector(self))
    }

    async fn version_vector_of(&self, actors: &[ActorId]) -> Result<VersionVector> {
        Ok(Store::version_vector_of(self, actors.iter().copied()))
    }

    async fn digest(&self) -> Result<Digest> {
        Ok(Store::digest(self))
    }

    async fn changes_since(
        &self,
        theirs: &VersionVector,
        byte_budget: usize,
    ) -> Result<Vec<Change>> {
        Store::changes_since(self, theirs, byte_budget).await
    }

    async fn changes_since_of(
        &self,
        actors: &[ActorId],
        theirs: &VersionVector,
        byte_budget: usize,
    ) -> Result<Vec<Change>> {
        Store::changes_since_of(self, actors, theirs, byte_budget).await
    }

    async fn apply_remote(&self, changes: Vec<Change>) -> Result<ApplyOutcome> {
        Store::apply_remote(self, changes).await
    }

    async fn hlcs_at(&self, dots: &[(ActorId, u64)]) -> Result<Vec<(ActorId, u64, Hlc)>> {
        Store::hlcs_at(self, dots).await
    }
}
