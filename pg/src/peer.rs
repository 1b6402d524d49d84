//! [`PgStore`] as a full sync peer: the [`SyncStore`] half beside its [`ChangeLog`], so a
//! hub replica runs the same `SyncSession` as a device. Owns the replica's commit
//! announcements for its sessions ([`Announcer`]: one LISTEN connection per replica, fanned
//! out to every session, whichever replica committed), credential bindings
//! (`credential_bindings`), fork detection over the stored log, and the time the replica
//! judges remote timestamps by. Applying with the chain check is `apply.rs`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kdelta_sync::seal::Prechecked;
use kdelta_sync::{
    ActorId, Announcement, Announcements, ApplyOutcome, ChainReport, Change, ClockClaim,
    ClockSkewError, Fork, ForkCheck, HeldChange, Hlc, Limits, StoreError, SyncStore, TimeReference,
};
use sqlx::Row;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::oneshot;

use crate::error::{PgError, Result};
use crate::feed::{ChangeFeed, FeedEvent};
use crate::store::PgStore;

/// Announcements buffered per session before it counts as lagging (it then re-reads the
/// change log, missing nothing).
const ANNOUNCEMENT_BUFFER: usize = 1024;

/// How long the listener waits before listening again after its connection failed.
const RELISTEN_DELAY: Duration = Duration::from_secs(1);

/// One replica's commit announcements for its sync sessions: started by the first
/// subscriber, a task reads the replica's [`ChangeFeed`] and broadcasts each event; stopped
/// by [`PgStore::close`] or when the store is dropped.
#[derive(Default)]
pub(crate) struct Announcer {
    running: tokio::sync::Mutex<Option<broadcast::Sender<FeedEvent>>>,
    /// Dropping it (close, or the store dropped) ends the task and frees its connection.
    stop: Mutex<Option<oneshot::Sender<()>>>,
}

impl Announcer {
    /// Ends the listening task (its connection goes back to the pool).
    pub(crate) fn stop(&self) {
        self.stop.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// A session's subscription to its replica's commit announcements.
pub struct PgAnnouncements(broadcast::Receiver<FeedEvent>);

impl Announcements for PgAnnouncements {
    async fn next(&mut self) -> kdelta_sync::Result<Announcement> {
        match self.0.recv().await {
            Ok(FeedEvent::Committed { actor, max_seq }) => Ok(Announcement::Committed {
                actor,
                seq: max_seq,
            }),
            Ok(FeedEvent::Lost) | Err(RecvError::Lagged(_)) => Ok(Announcement::Missed),
            Err(RecvError::Closed) => Err(StoreError::Closed),
        }
    }
}

/// Reads `feed` into `tx` until `stop` fires. A failed listener is reported as `Lost` and
/// listened again after a pause (sqlx re-establishes the LISTEN on the next read).
async fn announce_loop(
    mut feed: ChangeFeed,
    tx: broadcast::Sender<FeedEvent>,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut stop => return,
            event = feed.next() => match event {
                Ok(e) => {
                    let _ = tx.send(e);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "listening for commit announcements failed; sessions re-read the change log");
                    let _ = tx.send(FeedEvent::Lost);
                    tokio::select! {
                        _ = &mut stop => return,
                        () = tokio::time::sleep(RELISTEN_DELAY) => {}
                    }
                }
            },
        }
    }
}

impl PgStore {
    /// A subscription to every replica's commits, for a sync session: shares this
    /// replica's one listening connection. The first call starts listening and returns once
    /// the LISTEN is in place, so no commit after it goes unannounced (short of a lost
    /// connection, announced as [`Announcement::Missed`]).
    pub async fn announcements(&self) -> Result<PgAnnouncements> {
        let announcer = &self.inner.announcer;
        let mut running = announcer.running.lock().await;
        let stopped = announcer
            .stop
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_none_or(|s| s.is_closed());
        if let Some(tx) = running.as_ref().filter(|_| !stopped) {
            return Ok(PgAnnouncements(tx.subscribe()));
        }
        let feed = self.listen().await?;
        let (tx, rx) = broadcast::channel(ANNOUNCEMENT_BUFFER);
        let (stop_tx, stop_rx) = oneshot::channel();
        *announcer.stop.lock().unwrap_or_else(|p| p.into_inner()) = Some(stop_tx);
        tokio::spawn(announce_loop(feed, tx.clone(), stop_rx));
        *running = Some(tx);
        Ok(PgAnnouncements(rx))
    }

    /// The actor the `device` sync credential `principal` is bound to: the one bound
    /// before (by any replica), or `actor` (bound now, durably) when the credential was
    /// never used. Two replicas binding one credential at once agree on the first.
    pub async fn bind_credential(&self, principal: &str, actor: ActorId) -> Result<ActorId> {
        let ctx = "binding a sync credential";
        sqlx::query(
            "INSERT INTO credential_bindings (principal, actor) VALUES ($1, $2) \
             ON CONFLICT (principal) DO NOTHING",
        )
        .bind(principal)
        .bind(actor.as_bytes().as_slice())
        .execute(&self.inner.pool)
        .await
        .map_err(PgError::db(ctx))?;
        // A new statement, so a binding another replica committed meanwhile is seen.
        let bound: Vec<u8> =
            sqlx::query_scalar("SELECT actor FROM credential_bindings WHERE principal = $1")
                .bind(principal)
                .fetch_one(&self.inner.pool)
                .await
                .map_err(PgError::db(ctx))?;
        ActorId::from_slice(&bound).ok_or_else(|| {
            PgError::Store(StoreError::Decode {
                what: "bound actor of a sync credential",
                detail: format!("{} bytes instead of 16", bound.len()),
            })
        })
    }

    /// Every credential binding, by credential name.
    pub async fn credential_bindings(&self) -> Result<Vec<(String, ActorId)>> {
        let rows =
            sqlx::query("SELECT principal, actor FROM credential_bindings ORDER BY principal")
                .fetch_all(&self.inner.pool)
                .await
                .map_err(PgError::db("reading credential bindings"))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let principal: String = r
                .try_get(0)
                .map_err(PgError::db("reading credential bindings"))?;
            let actor: Vec<u8> = r
                .try_get(1)
                .map_err(PgError::db("reading credential bindings"))?;
            if let Some(actor) = ActorId::from_slice(&actor) {
                out.push((principal, actor));
            }
        }
        Ok(out)
    }

    /// The changes among `changes` whose `(actor, seq)` the hub holds with other content,
    /// and the `anchors` whose HLC differs from the one held: the comparison of
    /// `Store::find_forks` ([`ForkCheck`]), with the held copies read in one query.
    pub async fn find_forks(
        &self,
        changes: &[Change],
        anchors: &[(ActorId, u64, Hlc)],
    ) -> Result<Vec<Fork>> {
        // The hub's log has no holes (no retention yet): a dot it lacks is simply not
        // found, so every change and anchor is looked up without reading the vector first.
        let check = ForkCheck::new(changes, anchors, |_| u64::MAX);
        if check.is_empty() {
            return Ok(Vec::new());
        }
        let ctx = "comparing received changes";
        let (actors, seqs): (Vec<Vec<u8>>, Vec<i64>) = check
            .dots()
            .into_iter()
            .map(|(a, s)| (a.as_bytes().to_vec(), s as i64))
            .unzip();
        let rows = sqlx::query(
            "SELECT d.actor, d.seq, c.hlc, c.kind, c.manifest \
             FROM unnest($1::bytea[], $2::int8[]) AS d(actor, seq) \
             JOIN actors a ON a.actor = d.actor \
             JOIN changes c ON c.actor_idx = a.idx AND c.seq = d.seq",
        )
        .bind(&actors)
        .bind(&seqs)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(PgError::db(ctx))?;
        let mut held: HashMap<(ActorId, u64), HeldChange> = HashMap::with_capacity(rows.len());
        for r in rows {
            let actor: Vec<u8> = r.try_get(0).map_err(PgError::db(ctx))?;
            let seq: i64 = r.try_get(1).map_err(PgError::db(ctx))?;
            let hlc: i64 = r.try_get(2).map_err(PgError::db(ctx))?;
            let kind: i16 = r.try_get(3).map_err(PgError::db(ctx))?;
            let manifest: Option<Vec<u8>> = r.try_get(4).map_err(PgError::db(ctx))?;
            if let Some(actor) = ActorId::from_slice(&actor) {
                held.insert(
                    (actor, seq as u64),
                    (Hlc(hlc as u64), i64::from(kind), manifest),
                );
            }
        }
        Ok(check.compare(|actor, seq| Ok(held.get(&(actor, seq)).cloned()))?)
    }
}

impl SyncStore for PgStore {
    type Announcements = PgAnnouncements;

    async fn subscribe(&self) -> kdelta_sync::Result<PgAnnouncements> {
        Ok(self.announcements().await?)
    }

    fn limits(&self) -> Limits {
        self.inner.config.limits.clone()
    }

    fn time_reference(&self) -> Arc<TimeReference> {
        self.clock().reference().clone()
    }

    fn clock_claim(&self) -> ClockClaim {
        self.clock().claim()
    }

    fn check_remote_time(
        &self,
        actor: ActorId,
        hlc: Hlc,
    ) -> std::result::Result<(), ClockSkewError> {
        self.clock().check_from(hlc, Some(actor))
    }

    async fn bind_credential(
        &self,
        principal: &str,
        actor: ActorId,
    ) -> kdelta_sync::Result<ActorId> {
        Ok(PgStore::bind_credential(self, principal, actor).await?)
    }

    async fn succeed_credential(
        &self,
        principal: &str,
        old: ActorId,
        new: ActorId,
    ) -> kdelta_sync::Result<ActorId> {
        Ok(PgStore::succeed_credential(self, principal, old, new).await?)
    }

    async fn credential_predecessors(&self, principal: &str) -> kdelta_sync::Result<Vec<ActorId>> {
        Ok(PgStore::credential_predecessors(self, principal).await?)
    }

    async fn actor_key(&self, actor: ActorId) -> kdelta_sync::Result<Option<[u8; 32]>> {
        Ok(PgStore::actor_key(self, actor).await?)
    }

    async fn find_forks(
        &self,
        changes: &[Change],
        anchors: &[(ActorId, u64, Hlc)],
    ) -> kdelta_sync::Result<Vec<Fork>> {
        Ok(PgStore::find_forks(self, changes, anchors).await?)
    }

    async fn apply_remote_verified(
        &self,
        changes: Vec<Change>,
        // Verified again in the apply transaction: a page may be retried on a conflict.
        _prechecked: Prechecked,
    ) -> kdelta_sync::Result<(ApplyOutcome, ChainReport)> {
        Ok(PgStore::apply_remote_verified(self, changes).await?)
    }

    async fn note_origins(&self, actors: &[ActorId], peer: &str) -> kdelta_sync::Result<()> {
        Ok(PgStore::note_origins(self, actors, peer).await?)
    }

    async fn origin_of(&self, actor: ActorId) -> kdelta_sync::Result<Option<String>> {
        Ok(PgStore::origin_of(self, actor).await?)
    }
}
