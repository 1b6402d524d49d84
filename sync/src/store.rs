//! The public handle of the versioned store: opening, writing (through the group-commit
//! writer thread, `writer.rs`), the change log for replication (on the read pool,
//! `readers.rs`), and store-wide figures. Queries live in `readings_query.rs` and
//! `docs_query.rs`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use rusqlite::params;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::chain::{ChainReport, VerifyReport};
use crate::log_read::{self, LOG_COLUMNS};
use crate::readers::Readers;
use crate::seal::Prechecked;
use crate::writer::{Job, Shared, Writer};
use crate::{
    ActorId, ApplyOutcome, Change, ChangeEvent, ChangeMeta, ClockClaim, ClockSkewError, Digest,
    DocVersion, Hlc, HybridClock, ReadingBatch, Result, StoreConfig, StoreError, StoreStats,
    SystemTime, TimeReference, TimeSource, VersionVector, WriteHealth, validate_key,
};

/// Change-log rows `changes_since` reads per statement.
const LOG_PAGE: usize = 256;

/// A handle to an open store. Cheap to clone; all clones share one writer and one read pool.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub readers: Arc<Readers>,
    jobs: mpsc::Sender<Job>,
    pub shared: Arc<Shared>,
    actor: ActorId,
    pub config: StoreConfig,
    path: PathBuf,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Actors whose origin is recorded (`origins.rs`), remembered in this process.
    pub origins_noted: crate::NotedActors,
    /// Prune passes compact log runs (`log_runs.rs`; [`Store::set_log_runs`]).
    log_runs: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .field("actor", &self.inner.actor)
            .finish()
    }
}

impl Store {
    /// Opens (or creates) the store at `path`, applying migrations. Fails with
    /// [`StoreError::SchemaTooNew`] on a database written by a newer kdelta.
    pub async fn open(path: impl AsRef<Path>, config: StoreConfig) -> Result<Store> {
        Self::open_with_time(path, config, Arc::new(SystemTime)).await
    }

    /// Like [`open`](Self::open) with an injected wall clock (tests).
    pub async fn open_with_time(
        path: impl AsRef<Path>,
        config: StoreConfig,
        time: Arc<dyn TimeSource>,
    ) -> Result<Store> {
        let path = path.as_ref().to_path_buf();
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            vv: RwLock::new(VersionVector::new()),
            digest: RwLock::new(Digest::default()),
            clock: Mutex::new(HybridClock::new(time, config.max_clock_offset_ms)),
            events,
            counts: RwLock::new(Default::default()),
            health: Default::default(),
        });
        // Opening (migrations, cache loads) is blocking work: off the async workers.
        let (writer, actor) = {
            let (path, config, shared) = (path.clone(), config.clone(), shared.clone());
            tokio::task::spawn_blocking(move || {
                let (conn, actor) = crate::schema::open_writer(&path, &config)?;
                let writer = Writer::new(
                    conn,
                    shared,
                    actor,
                    config.limits.clone(),
                    config.require_signatures,
                )?;
                Ok::<_, StoreError>((writer, actor))
            })
            .await
            .map_err(|_| StoreError::Closed)??
        };
        let (jobs, rx) = mpsc::channel(config.write_queue.max(1));
        let max_group = config.max_group_jobs.max(1);
        let handle = std::thread::Builder::new()
            .name("kdelta-store-writer".into())
            .spawn(move || writer.run(rx, max_group))
            .map_err(|source| StoreError::Io {
                path: "the store writer thread".into(),
                source,
            })?;
        Ok(Store {
            inner: Arc::new(Inner {
                readers: Readers::new(path.clone(), config.clone()),
                jobs,
                shared,
                actor,
                config,
                path,
                writer: Mutex::new(Some(handle)),
                origins_noted: Default::default(),
                log_runs: std::sync::atomic::AtomicBool::new(true),
            }),
        })
    }

    /// Gives the database at `path` (which must not be open) a new random actor id, so a
    /// restored backup or an imaged card does not write as the original device. Changes
    /// already stored keep their actor; new local changes are written as the new one.
    pub async fn rekey(path: impl AsRef<Path>) -> Result<ActorId> {
        let actor = ActorId::random();
        Self::identity(path.as_ref(), actor, true).await?;
        Ok(actor)
    }

    /// Sets the actor id of the database at `path` (which must not be open; created when
    /// absent). [`rekey`](Self::rekey) with a chosen id: restores keep the backed-up id with
    /// it (`--same-identity`).
    /// It keeps the signing key: the same actor goes on signing with the same key.
    pub async fn set_identity(path: impl AsRef<Path>, actor: ActorId) -> Result<()> {
        Self::identity(path.as_ref(), actor, false).await
    }

    /// Sets the actor id, with a new signing key pair when `new_key` (a new identity must
    /// not sign with the old one's key).
    async fn identity(path: &Path, actor: ActorId, new_key: bool) -> Result<()> {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let (conn, _) = crate::schema::open_writer(&path, &StoreConfig::default())?;
            crate::schema::set_actor(&conn, actor)?;
            if new_key {
                crate::schema::new_signing_key(&conn)?;
            }
            // Fold the WAL back so the file is complete on its own.
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .map_err(StoreError::db("checkpointing after a new identity"))?;
            Ok(())
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    /// Writes this store's signing key into the closed database `target` (a replay that
    /// keeps this store's identity).
    pub(crate) async fn copy_signing_key_to(&self, target: &Path) -> Result<()> {
        let key: Vec<u8> = self
            .inner
            .readers
            .read(|conn| {
                conn.query_row(
                    "SELECT value FROM meta WHERE key = 'signing_key'",
                    [],
                    |r| r.get(0),
                )
                .map_err(StoreError::db("reading the signing key"))
            })
            .await?;
        let target = target.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let (conn, _) = crate::schema::open_writer(&target, &StoreConfig::default())?;
            conn.execute(
                "UPDATE meta SET value = ?1 WHERE key = 'signing_key'",
                [key],
            )
            .map_err(StoreError::db("storing the signing key"))?;
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .map_err(StoreError::db("checkpointing after copying the key"))?;
            Ok(())
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    /// This store's actor id.
    pub fn actor(&self) -> ActorId {
        self.inner.actor
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// The trusted time sources this store stamps local changes and judges remote ones by
    /// (see [`TimeReference`]): the agent says whether the local wall clock is trusted, sync
    /// sessions add what synchronised peers claim.
    pub fn time_reference(&self) -> Arc<TimeReference> {
        self.clock().reference().clone()
    }

    /// What to tell a peer about this store's clock in a sync handshake.
    pub fn clock_claim(&self) -> ClockClaim {
        self.clock().claim()
    }

    /// Whether a remote change of `actor` stamped `hlc` would be accepted by
    /// [`apply_remote`](Self::apply_remote)'s clock check, without applying anything; the
    /// actor's own clock claim does not vouch for it.
    pub fn check_remote_time(
        &self,
        actor: ActorId,
        hlc: Hlc,
    ) -> std::result::Result<(), ClockSkewError> {
        self.clock().check_from(hlc, Some(actor))
    }

    /// The highest timestamp this store has issued or accepted.
    pub fn last_hlc(&self) -> Hlc {
        self.clock().last()
    }

    fn clock(&self) -> std::sync::MutexGuard<'_, HybridClock> {
        self.inner
            .shared
            .clock
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) async fn submit<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T>>) -> Job,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .jobs
            .send(make(tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Appends a batch of readings as one change. Validates the whole batch first (non-empty,
    /// within `max_batch_readings`, finite values, no two readings of a series at one time);
    /// a bad batch stores nothing. Returns once the change is durable (fsynced).
    ///
    /// A batch whose change would encode to more than `max_change_bytes` is refused with
    /// [`StoreError::InvalidBatch`] (split it, or use [`append_in_parts`](Self::append_in_parts)):
    /// such a change could be stored but never synced. The size checked is exact but for the
    /// seq and HLC, counted at their largest.
    pub async fn append(&self, mut batch: ReadingBatch) -> Result<ChangeMeta> {
        batch.normalize(&self.inner.config.limits)?;
        let max = self.inner.config.limits.max_change_bytes;
        let batch = crate::readings_fit::fit_readings(self.actor(), batch, max)?;
        let mut metas = self
            .submit(|reply| Job::Append {
                parts: vec![batch],
                reply,
            })
            .await?;
        metas.pop().ok_or(StoreError::Closed)
    }

    /// Like [`append`](Self::append), but a batch too large for one change is stored as
    /// several, each within `max_change_bytes` (split by series, then by time): for ingest
    /// paths that must not lose readings to a size limit (sources, MQTT). The parts are
    /// committed together in one write job, so a failure stores none of them and a retry
    /// never stores a part twice.
    pub async fn append_in_parts(&self, mut batch: ReadingBatch) -> Result<Vec<ChangeMeta>> {
        batch.normalize(&self.inner.config.limits)?;
        let max = self.inner.config.limits.max_change_bytes;
        let parts = crate::readings_fit::split_readings(self.actor(), batch, max)?;
        self.submit(|reply| Job::Append { parts, reply }).await
    }

    /// Writes a new version of `key`. The version supersedes every sibling this store holds
    /// for the key. Durable on return.
    pub async fn put(&self, key: &str, value: &serde_json::Value) -> Result<DocVersion> {
        let bytes = crate::doc_batch::encode_doc_value(key, value, &self.inner.config.limits)?;
        let (meta, ctx) = self
            .submit(|reply| Job::Doc {
                key: key.to_owned(),
                value: Some(bytes),
                reply,
            })
            .await?;
        Ok(DocVersion {
            key: key.to_owned(),
            actor: meta.actor,
            seq: meta.seq,
            hlc: meta.hlc,
            value: Some(value.clone()),
            supersedes: ctx,
            pruned: false,
        })
    }

    /// Deletes `key` by writing a tombstone version (history is kept). Fails with
    /// [`StoreError::UnknownKey`] when the key has no live value.
    pub async fn delete(&self, key: &str) -> Result<DocVersion> {
        validate_key(key)?;
        match self.get(key).await? {
            Some(state) if state.is_deletable() => {}
            _ => return Err(StoreError::UnknownKey(key.to_owned())),
        }
        let (meta, ctx) = self
            .submit(|reply| Job::Doc {
                key: key.to_owned(),
                value: None,
                reply,
            })
            .await?;
        Ok(DocVersion {
            key: key.to_owned(),
            actor: meta.actor,
            seq: meta.seq,
            hlc: meta.hlc,
            value: None,
            supersedes: ctx,
            pruned: false,
        })
    }

    /// Applies changes received from another replica, atomically: either every new change
    /// of the call is stored or none. Changes already held are skipped (idempotent). A change
    /// whose predecessor from the same actor is missing fails the call with
    /// [`StoreError::SeqGap`]; a timestamp too far ahead with [`StoreError::ClockSkew`]; a
    /// forged, altered or re-ordered change (or an unsigned one where signatures are
    /// required) with [`StoreError::ChainRefused`] naming the actor and seq (see `chain.rs`).
    pub async fn apply_remote(&self, changes: Vec<Change>) -> Result<ApplyOutcome> {
        if changes.is_empty() {
            return Ok(ApplyOutcome::default());
        }
        self.submit(|reply| Job::Remote {
            changes,
            partial: false,
            prechecked: Prechecked::none(),
            reply,
        })
        .await
        .map(|(outcome, _)| outcome)
    }

    /// Like [`apply_remote`](Self::apply_remote), but a change failing its signature or
    /// chain check refuses only its actor's changes of the call (listed in the report, with
    /// the count of unsigned changes accepted); the other actors' changes apply, atomically.
    /// What sync sessions use, so one forged actor does not stall a link.
    pub async fn apply_remote_verified(
        &self,
        changes: Vec<Change>,
    ) -> Result<(ApplyOutcome, ChainReport)> {
        self.apply_remote_prechecked(changes, Prechecked::none())
            .await
    }

    /// [`apply_remote_verified`](Self::apply_remote_verified) with the signatures
    /// `prechecked` found valid ahead (off the writer thread, see [`Prechecked`]) not
    /// verified again; anything else is checked as usual.
    pub async fn apply_remote_prechecked(
        &self,
        changes: Vec<Change>,
        prechecked: Prechecked,
    ) -> Result<(ApplyOutcome, ChainReport)> {
        if changes.is_empty() {
            return Ok(Default::default());
        }
        self.submit(|reply| Job::Remote {
            changes,
            partial: true,
            prechecked,
            reply,
        })
        .await
    }

    /// Re-checks the store at `path` without opening it for writing (beside a running agent,
    /// or stopped): every actor's chain, every signature and body hash, and the digest, in
    /// one read snapshot. See [`VerifyReport`].
    pub async fn verify_file(path: impl AsRef<Path>) -> Result<VerifyReport> {
        let path = path.as_ref().to_path_buf();
        tokio::task::spawn_blocking(move || {
            if !path.exists() {
                return Err(StoreError::Io {
                    path: path.display().to_string(),
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                });
            }
            let mut conn = crate::schema::connect(&path, &StoreConfig::default(), true)?;
            crate::chain::verify_store(&mut conn)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    /// Corrects this store's readings that were sampled in boot `boot` under an untrusted
    /// clock and are not corrected yet: `true_offset_ms` is the true time minus that boot's
    /// monotonic clock (`CLOCK_BOOTTIME`), now known from `basis`. Writes one
    /// [`TimeCorrection`](crate::TimeCorrection) change (durable on return) covering up to
    /// 10,000 readings changes, or returns `None` when nothing is left to correct — call it
    /// until then. See `timing.rs` for the rule.
    pub async fn correct_reading_times(
        &self,
        boot: crate::BootId,
        true_offset_ms: i64,
        basis: crate::TimeBasis,
    ) -> Result<Option<ChangeMeta>> {
        self.submit(|reply| Job::Correct {
            boot,
            true_offset_ms,
            basis,
            reply,
        })
        .await
    }

    /// The actor the `device` sync credential `principal` is bound to: the one bound
    /// before, or `actor` (bound now, durably) when the credential was never used. A local
    /// fact, not replicated.
    pub async fn bind_credential(&self, principal: &str, actor: ActorId) -> Result<ActorId> {
        self.submit(|reply| Job::Bind {
            principal: principal.to_owned(),
            actor,
            from: None,
            reply,
        })
        .await
    }

    /// Stores `value` under `local/<key>` in the store's `meta` table, durably (one small
    /// writer job, grouped with other writes). A local fact of this store: not replicated,
    /// not in the digest; carried by backups with the rest of the file.
    pub async fn set_local_meta(&self, key: &str, value: Vec<u8>) -> Result<()> {
        self.submit(|reply| Job::PutMeta {
            key: format!("local/{key}"),
            value,
            reply,
        })
        .await
    }

    /// The values stored by [`set_local_meta`](Self::set_local_meta) under keys starting
    /// with `prefix`, as `(key, value)` with the key as given there.
    pub async fn local_meta(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let like = format!(
            "local/{}%",
            prefix
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        self.inner
            .readers
            .read(move |conn| {
                let mut st = conn
                    .prepare_cached(
                        "SELECT key, value FROM meta WHERE key LIKE ?1 ESCAPE '\\' ORDER BY key",
                    )
                    .map_err(StoreError::db("reading local values"))?;
                let rows = st
                    .query_map([&like], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
                    })
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                    .map_err(StoreError::db("reading local values"))?;
                Ok(rows
                    .into_iter()
                    .filter_map(|(k, v)| Some((k.strip_prefix("local/")?.to_owned(), v)))
                    .collect())
            })
            .await
    }

    /// Every credential binding, by credential name.
    pub async fn credential_bindings(&self) -> Result<Vec<(String, ActorId)>> {
        self.inner
            .readers
            .read(|conn| {
                let mut st = conn
                    .prepare_cached(
                        "SELECT key, value FROM meta WHERE key LIKE 'credential_binding/%' ORDER BY key",
                    )
                    .map_err(StoreError::db("reading credential bindings"))?;
                let rows = st
                    .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?)))
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                    .map_err(StoreError::db("reading credential bindings"))?;
                Ok(rows
                    .into_iter()
                    .filter_map(|(k, v)| {
                        Some((
                            k.strip_prefix("credential_binding/")?.to_owned(),
                            ActorId::from_slice(&v)?,
                        ))
                    })
                    .collect())
            })
            .await
    }

    /// Timing records of readings changes sampled under an untrusted clock (original time
    /// span, correction if any), in local order after position `after` (0 from the start), at
    /// most `limit`; with `series`, only changes holding it. Returns (position, record) pairs.
    pub async fn reading_timing(
        &self,
        series: Option<String>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, crate::TimingRecord)>> {
        self.inner
            .readers
            .read(move |conn| {
                crate::correct::timing_records(conn, series.as_deref(), after, limit.min(10_000))
            })
            .await
    }

    /// A small durable write through the writer: proves the store accepts and commits
    /// writes (the watchdog health check).
    pub async fn heartbeat(&self) -> Result<()> {
        self.submit(|reply| Job::Heartbeat { reply }).await
    }

    /// Asks the writer thread how writes are doing, once the writes queued before this call
    /// ran. Proves the writer is alive without writing to the disk — except while the disk
    /// is full, when at most every 2 s it tries a tiny write to find out whether space is
    /// back (so a full-disk state ends by itself even when nothing else writes).
    pub async fn probe(&self) -> Result<WriteHealth> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .jobs
            .send(Job::Probe { reply: tx })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)
    }

    /// The write health as of the last write group (no round trip to the writer).
    pub fn write_health(&self) -> WriteHealth {
        self.inner.shared.health.snapshot()
    }

    /// Gives the store a reserve file (`reserve.rs`): created now if there is room,
    /// released when the disk fills up so that pruning has room, and held again before a
    /// full-disk state ends. Without one, the state ends at the first clean commit.
    pub async fn attach_reserve(&self, reserve: crate::Reserve) {
        let shared = self.inner.shared.clone();
        let _ = tokio::task::spawn_blocking(move || shared.health.attach_reserve(reserve)).await;
    }

    /// `true` while the disk is full; changes when the state begins and ends (what a
    /// recovery waits on).
    pub fn subscribe_disk_full(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.shared.health.subscribe_full()
    }

    /// Whether a write group committed within `within` (a recent commit proves the store
    /// writes, so a health check need not write again).
    pub fn committed_within(&self, within: std::time::Duration) -> bool {
        self.inner.shared.health.committed_within(within)
    }

    /// Prunes what `policy` no longer keeps as of `now_ms` (unix ms; tests pass any clock):
    /// raw readings by age, then rollups (see [`RetentionPolicy`]), then the values of old
    /// document versions (see [`DocRetention`](crate::DocRetention)), then the raw chunks of
    /// old twin changes their snapshots hold (see [`TwinCompaction`](crate::TwinCompaction)). Runs as a series of
    /// small writer jobs, each looking at about `step_rows` readings, queued behind the
    /// writes already waiting — ingest is never stalled behind one long delete. Each step
    /// is durable on its own; a failed step ends the pass with its error (what earlier steps
    /// pruned stays pruned). Ends with [`reclaim`](Self::reclaim) when anything went.
    pub async fn prune(
        &self,
        policy: &crate::RetentionPolicy,
        now_ms: i64,
        step_rows: usize,
    ) -> Result<crate::PruneReport> {
        self.prune_with(policy, now_ms, step_rows, &crate::Unacked::NoUpstream)
            .await
    }

    /// Like [`prune`](Self::prune), keeping (or, at the disk budget's hard limit, dropping
    /// and recording) the readings upstream peers have not acknowledged: see [`Unacked`](crate::Unacked).
    pub async fn prune_with(
        &self,
        policy: &crate::RetentionPolicy,
        now_ms: i64,
        step_rows: usize,
        unacked: &crate::Unacked,
    ) -> Result<crate::PruneReport> {
        self.run_prune(
            crate::retention::PruneRule {
                policy: policy.clone(),
                now_ms,
                before_ms: None,
                rollups_before_ms: None,
                unacked: unacked.clone(),
            },
            step_rows,
        )
        .await
    }

    /// The disk budget's pruning: raw readings of every series stored before `before_ms`
    /// (unix ms; whole (change, series) units only, as age retention prunes them) go, oldest series units first by time, except what `unacked`
    /// keeps. Rollups stay (aggregates over the range still answer). Small writer jobs as
    /// [`prune`](Self::prune); ends with [`reclaim`](Self::reclaim) when anything went. With
    /// [`Unacked::Drop`](crate::Unacked::Drop), every step that drops unacknowledged
    /// readings writes a gap record (change kind 6) in the same transaction.
    pub async fn prune_before(
        &self,
        before_ms: i64,
        step_rows: usize,
        unacked: &crate::Unacked,
    ) -> Result<crate::PruneReport> {
        self.run_prune(
            crate::retention::PruneRule {
                policy: crate::RetentionPolicy::default(),
                now_ms: before_ms,
                before_ms: Some(before_ms),
                rollups_before_ms: None,
                unacked: unacked.clone(),
            },
            step_rows,
        )
        .await
    }

    /// The disk budget's last resort for readings, once raw readings are gone: per-minute
    /// rollup rows of every series for minutes before `before_ms` go (oldest first; never a
    /// minute of a series that still has raw readings in it, so an aggregate over a range
    /// never mixes raw readings with a partial rollup). Rollups are derived data outside the
    /// digest and never synced, so this changes nothing a peer sees. Small writer jobs as
    /// [`prune`](Self::prune); ends with [`reclaim`](Self::reclaim) when anything went.
    /// Counted in [`PruneReport::rollups`](crate::PruneReport::rollups).
    pub async fn prune_rollups_before(
        &self,
        before_ms: i64,
        step_rows: usize,
    ) -> Result<crate::PruneReport> {
        self.run_prune(
            crate::retention::PruneRule {
                policy: crate::RetentionPolicy::default(),
                now_ms: before_ms,
                before_ms: None,
                rollups_before_ms: Some(before_ms),
                unacked: crate::Unacked::NoUpstream,
            },
            step_rows,
        )
        .await
    }

    async fn run_prune(
        &self,
        rule: crate::retention::PruneRule,
        step_rows: usize,
    ) -> Result<crate::PruneReport> {
        let mut total = crate::PruneReport::default();
        if rule.prunes_nothing() {
            return Ok(total);
        }
        let rule = Arc::new(rule);
        let mut cursor = crate::retention::PruneCursor {
            done: !rule.prunes_readings(),
            ..Default::default()
        };
        while !cursor.done {
            let (report, next) = self
                .submit(|reply| Job::Prune {
                    rule: rule.clone(),
                    cursor,
                    budget: step_rows,
                    reply,
                })
                .await?;
            total.add(&report);
            cursor = next;
        }
        // Document history goes by age and count only (the disk budget prunes readings).
        if !rule.is_budget() {
            let policy = Arc::new(rule.policy.clone());
            self.prune_docs(&policy, rule.now_ms, step_rows, &mut total)
                .await?;
            self.compact_twins(policy.twins, rule.now_ms, step_rows, &mut total)
                .await?;
        }
        self.compact_log(step_rows, &mut total).await?;
        if total.readings
            + total.rollups
            + total.doc_versions
            + total.twin_changes_compacted
            + total.changes_compacted
            > 0
        {
            self.reclaim().await?;
        }
        Ok(total)
    }

    /// The log-run part of a prune pass (`log_runs.rs`): a few bounded steps of the sweep
    /// that compacts runs of wholly pruned changes to their last row.
    async fn compact_log(&self, step_rows: usize, total: &mut crate::PruneReport) -> Result<()> {
        if !self
            .inner
            .log_runs
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Ok(());
        }
        for _ in 0..crate::log_runs::MAX_STEPS_PER_PASS {
            let (report, wrapped) = self
                .submit(|reply| Job::CompactLog {
                    budget: step_rows,
                    reply,
                })
                .await?;
            total.add(&report);
            if wrapped {
                break;
            }
        }
        Ok(())
    }

    /// Whether prune passes compact runs of changes retention pruned wholly (their rollups
    /// and timing gone too) to the run's last change (`log_runs.rs`; on by default). Off,
    /// every change keeps its row — each one's signature stays checkable, at ~200 B each for
    /// good (`[retention] log_runs = false`). Runs compacted already stay as they are.
    pub fn set_log_runs(&self, on: bool) {
        self.inner
            .log_runs
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Gap records (readings dropped at their source before upstream had them, see
    /// [`GapRecord`](crate::GapRecord)) held by this store — its own and those synced from
    /// other stores — after local position `after`, at most `limit` (≤ 1000); with `series`,
    /// only the entries naming it.
    pub async fn gaps(
        &self,
        series: Option<String>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<crate::StoredGap>> {
        self.inner
            .readers
            .read(move |conn| {
                crate::gap::stored_gaps(conn, series.as_deref(), after, limit.clamp(1, 1000))
            })
            .await
    }

    /// Gives the space of deleted rows back to the file system, a few MB per writer job
    /// (stores created with incremental auto-vacuum, i.e. by this release or later; older
    /// stores reuse freed pages instead), then checkpoints and truncates the WAL.
    pub async fn reclaim(&self) -> Result<()> {
        const PAGES_PER_JOB: u32 = 2048;
        while self
            .submit(|reply| Job::Reclaim {
                pages: PAGES_PER_JOB,
                reply,
            })
            .await?
            > 0
        {}
        Ok(())
    }

    /// The oldest raw reading kept per series (unix ms; `None` for a series whose raw
    /// readings are all gone): the retention horizon. One index probe per series.
    pub async fn retention_horizon(&self) -> Result<Vec<(String, Option<i64>)>> {
        self.inner
            .readers
            .read(|conn| {
                conn.prepare_cached(
                    "SELECT s.name, (SELECT MIN(r.ts) FROM readings r WHERE r.series_id = s.id) FROM series s ORDER BY s.name",
                )
                .and_then(|mut st| {
                    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect()
                })
                .map_err(StoreError::db("reading the retention horizon"))
            })
            .await
    }

    /// The oldest and the newest raw reading kept, over all series (unix ms; `None` when no
    /// raw reading is left). Two index probes per series.
    pub async fn reading_span(&self) -> Result<Option<(i64, i64)>> {
        self.span("readings", "ts", "reading the span of raw readings")
            .await
    }

    /// The oldest and the newest minute of per-minute rollups kept, over all series (unix
    /// ms of the minute's start; `None` when there are none). Two index probes per series.
    pub async fn rollup_span(&self) -> Result<Option<(i64, i64)>> {
        self.span("rollup_1m", "minute", "reading the span of rollups")
            .await
    }

    /// The least and greatest `column` of `table` (indexed by `(series_id, column)`) over
    /// every series, or `None` when the table is empty.
    async fn span(
        &self,
        table: &'static str,
        column: &'static str,
        what: &'static str,
    ) -> Result<Option<(i64, i64)>> {
        let sql = format!(
            "SELECT MIN((SELECT MIN(r.{column}) FROM {table} r WHERE r.series_id = s.id)), \
                    MAX((SELECT MAX(r.{column}) FROM {table} r WHERE r.series_id = s.id)) FROM series s"
        );
        self.inner
            .readers
            .read(move |conn| {
                conn.prepare_cached(&sql)
                    .and_then(|mut st| {
                        st.query_row([], |r| {
                            Ok(
                                match (r.get::<_, Option<i64>>(0)?, r.get::<_, Option<i64>>(1)?) {
                                    (Some(lo), Some(hi)) => Some((lo, hi)),
                                    _ => None,
                                },
                            )
                        })
                    })
                    .map_err(StoreError::db(what))
            })
            .await
    }

    /// What this store holds: actor → highest contiguous seq.
    pub fn version_vector(&self) -> VersionVector {
        self.inner.shared.vv.read().expect("vv lock").clone()
    }

    /// What this store holds of `actors` only (actors it holds nothing of are left out).
    pub fn version_vector_of(&self, actors: impl IntoIterator<Item = ActorId>) -> VersionVector {
        let vv = self.inner.shared.vv.read().expect("vv lock");
        actors.into_iter().map(|a| (a, vv.get(&a))).collect()
    }

    /// The canonical digest of everything stored (maintained incrementally).
    pub fn digest(&self) -> Digest {
        *self.inner.shared.digest.read().expect("digest lock")
    }

    /// Announcements of changes after they are durable. Lagging receivers miss events (the
    /// change log, via [`log_after`](Self::log_after), is the reliable source).
    pub fn subscribe(&self) -> broadcast::Receiver<ChangeEvent> {
        self.inner.shared.events.subscribe()
    }

    /// The changes this store holds that a replica with vector `theirs` lacks, in per-actor
    /// seq order, filling at most `byte_budget` (exact encoded bytes, [`Change::encoded_len`];
    /// at least one change is returned when any is missing, whatever its size).
    ///
    /// Log rows are read [`LOG_PAGE`] at a time; the bodies of as many of them as can fit the
    /// budget (by a lower bound of their size known from the log) are loaded together, then
    /// taken while their exact size fits.
    pub async fn changes_since(
        &self,
        theirs: &VersionVector,
        byte_budget: usize,
    ) -> Result<Vec<Change>> {
        let theirs = theirs.clone();
        self.inner
            .readers
            .read(move |conn| {
                // One snapshot for the whole call (bounded by the byte budget).
                let tx = conn
                    .transaction()
                    .map_err(StoreError::db("starting a read"))?;
                changes_since_on(&tx, &theirs, byte_budget, None)
            })
            .await
    }

    /// [`changes_since`](Self::changes_since) of `actors` only: what a peer that is sent
    /// only those actors' changes (`device_relay = "own"`) lacks. Other actors' changes are
    /// never read.
    pub async fn changes_since_of(
        &self,
        actors: &[ActorId],
        theirs: &VersionVector,
        byte_budget: usize,
    ) -> Result<Vec<Change>> {
        let (theirs, actors) = (theirs.clone(), actors.to_vec());
        self.inner
            .readers
            .read(move |conn| {
                let tx = conn
                    .transaction()
                    .map_err(StoreError::db("starting a read"))?;
                changes_since_on(&tx, &theirs, byte_budget, Some(&actors))
            })
            .await
    }

    /// The local position of the last change in the log (0 when empty): where
    /// [`log_after`](Self::log_after) ends now.
    pub async fn log_end(&self) -> Result<i64> {
        self.inner
            .readers
            .read(|conn| {
                conn.prepare_cached("SELECT COALESCE(MAX(id), 0) FROM changes")
                    .and_then(|mut st| st.query_row([], |r| r.get::<_, i64>(0)))
                    .map_err(StoreError::db("reading the end of the change log"))
            })
            .await
    }

    /// Changes in local commit order after local position `after` (0 for the beginning),
    /// at most `max`: the cursor source for the MQTT outbox and live sync.
    pub async fn log_after(&self, after: i64, max: usize) -> Result<Vec<(i64, Change)>> {
        self.inner
            .readers
            .read(move |conn| {
                let tx = conn
                    .transaction()
                    .map_err(StoreError::db("starting a read"))?;
                let rows = {
                    // Built from constants only.
                    let sql = format!(
                        "SELECT {LOG_COLUMNS}, a.actor FROM changes c JOIN actors a ON a.idx = c.actor_idx WHERE c.id > ?1 ORDER BY c.id LIMIT ?2"
                    );
                    let mut st = tx
                        .prepare_cached(&sql)
                        .map_err(StoreError::db("reading the change log"))?;
                    let mut found = st
                        .query(params![after, max.min(10_000) as i64])
                        .map_err(StoreError::db("reading the change log"))?;
                    let mut rows = Vec::new();
                    while let Some(r) = found
                        .next()
                        .map_err(StoreError::db("reading the change log"))?
                    {
                        let bytes: Vec<u8> =
                            r.get(log_read::LOG_COLUMN_COUNT)
                                .map_err(StoreError::db("reading the change log"))?;
                        let actor = ActorId::from_slice(&bytes).ok_or(StoreError::Decode {
                            what: "stored actor id",
                            detail: "not 16 bytes".into(),
                        })?;
                        rows.push(log_read::LogRow::from_row(r, actor)?);
                    }
                    rows
                };
                let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
                let changes = log_read::load(&tx, rows)?;
                Ok(ids.into_iter().zip(changes).collect())
            })
            .await
    }

    /// Store-wide figures: counters maintained by the writer (no table scan) and the file
    /// sizes.
    pub async fn stats(&self) -> Result<StoreStats> {
        let page_bytes = self
            .inner
            .readers
            .read(|conn| {
                conn.prepare_cached(
                    "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
                )
                .and_then(|mut st| st.query_row([], |r| r.get::<_, i64>(0)))
                .map_err(StoreError::db("reading the database size"))
                .map(|n| n.max(0) as u64)
            })
            .await?;
        let wal = format!("{}-wal", self.inner.path.display());
        let wal_bytes = std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0);
        let counts = *self.inner.shared.counts.read().expect("counts lock");
        Ok(StoreStats {
            actor: self.actor(),
            version_vector: self.version_vector(),
            digest: self.digest().to_string(),
            changes: counts.changes,
            readings: counts.readings,
            series: counts.series,
            doc_keys: counts.doc_keys,
            doc_versions: counts.doc_versions,
            db_bytes: page_bytes + wal_bytes,
        })
    }

    /// Recomputes the digest from the stored rows (a full scan) — a check that the
    /// incrementally maintained [`digest`](Self::digest) matches what is really stored.
    pub async fn verify_digest(&self) -> Result<Digest> {
        self.digest_where(|_| true).await
    }

    /// The digest of the changes within `vv` only (a full scan): what a replica holding
    /// exactly `vv` of this store's changes has as its digest.
    pub async fn digest_at(&self, vv: &VersionVector) -> Result<Digest> {
        self.digest_where(|c| c.seq <= vv.get(&c.actor)).await
    }

    /// The version vector of this store as of `at`: per actor, its changes up to the first
    /// one stamped after `at` (what a point-in-time restore to `at` keeps; a full scan).
    pub async fn version_vector_as_of(&self, at: Hlc) -> Result<VersionVector> {
        let mut cut = crate::backup::AsOfCut::new(at);
        let mut vv = VersionVector::new();
        let mut after = 0;
        loop {
            let page = self.log_after(after, 512).await?;
            let Some(last) = page.last() else { break };
            after = last.0;
            for (_, c) in &page {
                if cut.keeps(c) {
                    vv.set(c.actor, c.seq);
                }
            }
        }
        Ok(vv)
    }

    async fn digest_where(&self, mut keep: impl FnMut(&Change) -> bool) -> Result<Digest> {
        let mut digest = Digest::default();
        let mut after = 0;
        loop {
            let page = self.log_after(after, 512).await?;
            let Some(last) = page.last() else { break };
            after = last.0;
            for (_, c) in page.iter().filter(|(_, c)| keep(c)) {
                digest.add_change(c);
            }
        }
        Ok(digest)
    }

    /// Stops the writer after the writes already queued and closes the database. Later
    /// writes through any clone fail with [`StoreError::Closed`].
    pub async fn close(&self) {
        self.inner.readers.close();
        let (tx, rx) = oneshot::channel();
        if self
            .inner
            .jobs
            .send(Job::Shutdown { done: tx })
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
        let handle = self.inner.writer.lock().expect("writer handle lock").take();
        if let Some(h) = handle {
            // The writer has answered `done` (or is gone): the join is immediate.
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

/// [`Store::changes_since`] inside one read transaction.
///
/// Log rows are read [`LOG_PAGE`] at a time; the bodies of as many of them as can fit the
/// budget (by a lower bound of their size known from the log) are loaded together, then
/// taken while their exact size fits.
fn changes_since_on(
    conn: &rusqlite::Connection,
    theirs: &VersionVector,
    byte_budget: usize,
    only: Option<&[ActorId]>,
) -> Result<Vec<Change>> {
    let actors: Vec<(i64, Vec<u8>, i64)> = conn
        .prepare_cached("SELECT idx, actor, max_seq FROM actors WHERE max_seq > 0 ORDER BY actor")
        .and_then(|mut st| {
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })
        .map_err(StoreError::db("reading actors"))?;
    // Built from constants only.
    let sql = format!(
        "SELECT {LOG_COLUMNS} FROM changes c WHERE c.actor_idx = ?1 AND c.seq > ?2 AND c.seq <= ?3 ORDER BY c.seq LIMIT {LOG_PAGE}"
    );
    let mut out = Vec::new();
    let mut used = 0usize;
    for (idx, actor, max) in actors {
        let Some(actor) = ActorId::from_slice(&actor) else {
            continue;
        };
        if only.is_some_and(|only| !only.contains(&actor)) {
            continue;
        }
        let max = max as u64;
        let mut from = theirs.get(&actor);
        while from < max {
            let page = {
                let mut st = conn
                    .prepare_cached(&sql)
                    .map_err(StoreError::db("reading the change log"))?;
                let mut found = st
                    .query(params![idx, from as i64, max as i64])
                    .map_err(StoreError::db("reading the change log"))?;
                let mut page = Vec::new();
                while let Some(r) = found
                    .next()
                    .map_err(StoreError::db("reading the change log"))?
                {
                    page.push(log_read::LogRow::from_row(r, actor)?);
                }
                page
            };
            if page.is_empty() {
                break;
            }
            let mut rows = page.into_iter().peekable();
            while rows.peek().is_some() {
                // Rows that may fit: a lower bound of their sizes fits the budget, plus
                // one more (the first change of a call is taken whatever its size).
                let mut floor = used;
                let mut batch = Vec::new();
                while let Some(r) = rows.next_if(|_| batch.is_empty() || floor <= byte_budget) {
                    floor += r.size_floor();
                    batch.push(r);
                }
                for mut change in log_read::load(conn, batch)? {
                    crate::log_runs::trim_run(&mut change, from);
                    let size = change.encoded_len();
                    if !out.is_empty() && used + size > byte_budget {
                        return Ok(out);
                    }
                    used += size;
                    from = change.seq;
                    out.push(change);
                }
            }
        }
    }
    Ok(out)
}
