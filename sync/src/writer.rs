//! The single writer thread and group commit. Every write — local readings, local document
//! writes, remote changes — is a job on a bounded queue; the writer drains up to
//! `max_group_jobs` jobs, runs each in its own savepoint inside one `BEGIN IMMEDIATE`
//! transaction, commits once (one fsync), and only then answers each caller. A failing job is
//! rolled back alone; a failing commit fails the whole group and nothing is acknowledged.
//!
//! The writer is a plain thread owning one rusqlite connection: callers send a job over a
//! bounded tokio channel and await a oneshot; every statement of a group runs on this thread
//! with cached prepared statements, so there is no hand-over per statement.
//!
//! Owns the write connection and the in-memory caches (actor slots, series ids, document key
//! ids, digest, counters). A failed job restores the digest and counters it started from
//! (earlier jobs of the group keep their contributions) and reloads the other caches from
//! the database inside the open transaction; a failed commit reloads everything from the
//! last committed state. So the caches stay exact across rollbacks. The
//! row-level work lives in `ingest.rs` (readings), `docwrite.rs` (documents) and `twin/write.rs`
//! (merge documents).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::chain::{ChainReport, LocalSeal};
use crate::counts::Counts;
use crate::health::{GroupOutcome, HealthCell, WriteHealth};
use crate::ingest::StagedReadings;
use crate::seal::{Prechecked, SigningKey};
use crate::signer::Signer;
use crate::twin::{TwinCache, TwinEdit, TwinWrite};
use crate::{
    ActorId, ApplyOutcome, BootId, Change, ChangeBody, ChangeEvent, ChangeMeta, Digest, Dot, Hlc,
    HybridClock, Limits, ReadingBatch, Result, StoreError, TimeBasis, VersionVector,
};

/// State shared between the writer and the read side of the store.
pub(crate) struct Shared {
    /// What the store holds, updated after each commit.
    pub vv: RwLock<VersionVector>,
    /// Running digest, updated after each commit.
    pub digest: RwLock<Digest>,
    /// The clock; the writer stamps local changes and observes remote ones.
    pub clock: Mutex<HybridClock>,
    /// Durable-change announcements.
    pub events: broadcast::Sender<ChangeEvent>,
    /// Store-wide counters, updated after each commit.
    pub counts: RwLock<Counts>,
    /// Whether writes work (full disk, last failure), updated after each write group.
    pub health: HealthCell,
}

/// A request to the writer.
pub(crate) enum Job {
    /// Readings, one change per part, all parts in one savepoint: all stored or none (a
    /// retry after an error never stores a part twice).
    Append {
        parts: Vec<ReadingBatch>,
        reply: oneshot::Sender<Result<Vec<ChangeMeta>>>,
    },
    Doc {
        key: String,
        value: Option<Vec<u8>>,
        reply: oneshot::Sender<Result<(ChangeMeta, Vec<Dot>)>>,
    },
    DocBatch {
        writes: Vec<LocalDocWrite>,
        /// Encoded size of the batch with the contexts given (see `doc_batch.rs`).
        encoded_bytes: usize,
        reply: oneshot::Sender<Result<(ChangeMeta, Vec<Vec<Dot>>)>>,
    },
    Remote {
        changes: Vec<Change>,
        /// Refuse only the actors whose changes fail their chain check (see `chain.rs`).
        partial: bool,
        /// Signatures found valid ahead, not verified again.
        prechecked: Prechecked,
        reply: oneshot::Sender<Result<(ApplyOutcome, ChainReport)>>,
    },
    Twin {
        key: String,
        edit: TwinEdit,
        reply: oneshot::Sender<Result<TwinWrite>>,
    },
    /// A local correction of readings sampled under an untrusted clock (`correct.rs`).
    Correct {
        boot: BootId,
        true_offset_ms: i64,
        basis: TimeBasis,
        reply: oneshot::Sender<Result<Option<ChangeMeta>>>,
    },
    /// Binds a `device` sync credential to an actor unless it is bound already.
    Bind {
        principal: String,
        actor: ActorId,
        /// Moves a credential bound to this actor on to `actor` (a checked succession).
        from: Option<ActorId>,
        reply: oneshot::Sender<Result<ActorId>>,
    },
    /// A tiny durable write, proving the database is writable (watchdog health check).
    Heartbeat { reply: oneshot::Sender<Result<()>> },
    /// Sets a local (not replicated) value in `meta` (see `Store::set_local_meta`).
    PutMeta {
        key: String,
        value: Vec<u8>,
        reply: oneshot::Sender<Result<()>>,
    },
    /// One bounded step of a retention pass (see `retention.rs`).
    Prune {
        rule: Arc<crate::retention::PruneRule>,
        cursor: crate::retention::PruneCursor,
        budget: usize,
        reply: oneshot::Sender<Result<(crate::PruneReport, crate::retention::PruneCursor)>>,
    },
    /// One bounded step of the document part of a retention pass (see `doc_retention.rs`).
    PruneDocs {
        policy: Arc<crate::RetentionPolicy>,
        now_ms: i64,
        cursor: crate::doc_retention::DocPruneCursor,
        budget: usize,
        reply: oneshot::Sender<Result<(crate::PruneReport, crate::doc_retention::DocPruneCursor)>>,
    },
    /// One bounded step of the twin part of a retention pass (see `twin/compact.rs`).
    CompactTwins {
        rule: crate::TwinCompaction,
        now_ms: i64,
        cursor: crate::twin::TwinCompactCursor,
        budget: usize,
        reply: oneshot::Sender<Result<(crate::PruneReport, crate::twin::TwinCompactCursor)>>,
    },
    /// One step of the log-run sweep (see `log_runs.rs`): answers what it compacted and
    /// whether the sweep wrapped.
    CompactLog {
        budget: usize,
        reply: oneshot::Sender<Result<(crate::PruneReport, bool)>>,
    },
    /// Gives up to `pages` free pages back to the file system (stores with incremental
    /// auto-vacuum) and, once none are left, checkpoints and truncates the WAL. Runs outside
    /// any write group; answers the pages still free.
    Reclaim {
        pages: u32,
        reply: oneshot::Sender<Result<u64>>,
    },
    /// Answered with the write health once the jobs queued before it ran, without writing
    /// (except a heartbeat, at most every few seconds, while the disk is full).
    Probe { reply: oneshot::Sender<WriteHealth> },
    /// Stop after the jobs queued before this one.
    Shutdown { done: oneshot::Sender<()> },
}

impl Job {
    /// True for the jobs a full disk refuses at admission: those that add data. Pruning,
    /// heartbeats (how the writer finds space is back) and credential bindings (a lookup,
    /// written once) still run.
    fn needs_room(&self) -> bool {
        match self {
            Job::Append { .. }
            | Job::Doc { .. }
            | Job::DocBatch { .. }
            | Job::Remote { .. }
            | Job::Twin { .. }
            | Job::Correct { .. }
            | Job::PutMeta { .. } => true,
            Job::Bind { .. }
            | Job::Heartbeat { .. }
            | Job::Prune { .. }
            | Job::PruneDocs { .. }
            | Job::CompactTwins { .. }
            | Job::CompactLog { .. }
            | Job::Reclaim { .. }
            | Job::Probe { .. }
            | Job::Shutdown { .. } => false,
        }
    }
}

/// One write of a local document batch: the context is the caller's, or `None` for the
/// key's current siblings.
pub(crate) struct LocalDocWrite {
    pub key: String,
    pub value: Option<Vec<u8>>,
    pub context: Option<Vec<Dot>>,
}

type BatchReply = Result<(ChangeMeta, Vec<Vec<Dot>>)>;

enum Done {
    Append(
        oneshot::Sender<Result<Vec<ChangeMeta>>>,
        Result<Vec<ChangeMeta>>,
    ),
    Doc(
        oneshot::Sender<Result<(ChangeMeta, Vec<Dot>)>>,
        Result<(ChangeMeta, Vec<Dot>)>,
    ),
    DocBatch(oneshot::Sender<BatchReply>, BatchReply),
    Remote(
        oneshot::Sender<Result<(ApplyOutcome, ChainReport)>>,
        Result<(ApplyOutcome, ChainReport)>,
    ),
    Twin(oneshot::Sender<Result<TwinWrite>>, Result<TwinWrite>),
    Correct(
        oneshot::Sender<Result<Option<ChangeMeta>>>,
        Result<Option<ChangeMeta>>,
    ),
    Bind(oneshot::Sender<Result<ActorId>>, Result<ActorId>),
    Heartbeat(oneshot::Sender<Result<()>>, Result<()>),
    PutMeta(oneshot::Sender<Result<()>>, Result<()>),
    Prune(
        oneshot::Sender<Result<(crate::PruneReport, crate::retention::PruneCursor)>>,
        Result<(crate::PruneReport, crate::retention::PruneCursor)>,
    ),
    PruneDocs(
        oneshot::Sender<Result<(crate::PruneReport, crate::doc_retention::DocPruneCursor)>>,
        Result<(crate::PruneReport, crate::doc_retention::DocPruneCursor)>,
    ),
    CompactTwins(
        oneshot::Sender<Result<(crate::PruneReport, crate::twin::TwinCompactCursor)>>,
        Result<(crate::PruneReport, crate::twin::TwinCompactCursor)>,
    ),
    CompactLog(
        oneshot::Sender<Result<(crate::PruneReport, bool)>>,
        Result<(crate::PruneReport, bool)>,
    ),
}

impl Done {
    fn is_ok(&self) -> bool {
        self.error().is_none()
    }

    fn error(&self) -> Option<&StoreError> {
        match self {
            Done::Append(_, r) => r.as_ref().err(),
            Done::Doc(_, r) => r.as_ref().err(),
            Done::DocBatch(_, r) => r.as_ref().err(),
            Done::Remote(_, r) => r.as_ref().err(),
            Done::Twin(_, r) => r.as_ref().err(),
            Done::Correct(_, r) => r.as_ref().err(),
            Done::Bind(_, r) => r.as_ref().err(),
            Done::Heartbeat(_, r) => r.as_ref().err(),
            Done::PutMeta(_, r) => r.as_ref().err(),
            Done::Prune(_, r) => r.as_ref().err(),
            Done::PruneDocs(_, r) => r.as_ref().err(),
            Done::CompactTwins(_, r) => r.as_ref().err(),
            Done::CompactLog(_, r) => r.as_ref().err(),
        }
    }

    // After a failed commit nothing of the group is durable: every caller gets an error.
    fn fail(self, cause: &StoreError) -> Done {
        let err = || group_error("committing a write group", cause);
        match self {
            Done::Append(tx, r) => Done::Append(tx, r.and(Err(err()))),
            Done::Doc(tx, r) => Done::Doc(tx, r.and(Err(err()))),
            Done::DocBatch(tx, r) => Done::DocBatch(tx, r.and(Err(err()))),
            Done::Remote(tx, r) => Done::Remote(tx, r.and(Err(err()))),
            Done::Twin(tx, r) => Done::Twin(tx, r.and(Err(err()))),
            Done::Correct(tx, r) => Done::Correct(tx, r.and(Err(err()))),
            Done::Bind(tx, r) => Done::Bind(tx, r.and(Err(err()))),
            Done::Heartbeat(tx, r) => Done::Heartbeat(tx, r.and(Err(err()))),
            Done::PutMeta(tx, r) => Done::PutMeta(tx, r.and(Err(err()))),
            Done::Prune(tx, r) => Done::Prune(tx, r.and(Err(err()))),
            Done::PruneDocs(tx, r) => Done::PruneDocs(tx, r.and(Err(err()))),
            Done::CompactTwins(tx, r) => Done::CompactTwins(tx, r.and(Err(err()))),
            Done::CompactLog(tx, r) => Done::CompactLog(tx, r.and(Err(err()))),
        }
    }

    fn send(self) {
        // A caller that gave up (dropped its future) is not an error of the store.
        // `SQLITE_FULL` from any statement reaches callers as `DiskFull`.
        let _ = match self {
            Done::Append(tx, r) => tx.send(r.map_err(StoreError::classify)).map_err(drop),
            Done::Doc(tx, r) => tx.send(r.map_err(StoreError::classify)).map_err(drop),
            Done::DocBatch(tx, r) => tx.send(r.map_err(StoreError::classify)).map_err(drop),
            Done::Remote(tx, r) => tx.send(r.map_err(StoreError::classify)).map_err(drop),
            Done::Twin(tx, r) => tx.send(r.map_err(StoreError::classify)).map_err(drop),
            Done::Correct(tx, r) => tx.send(r.map_err(StoreError::classify)).map_err(drop),
            Done::Bind(tx, r) => tx.send(r.map_err(StoreError::classify)).map_err(drop),
            Done::Heartbeat(tx, r) => tx.send(r.map_err(StoreError::classify)).map_err(drop),
            Done::PutMeta(tx, r) => tx.send(r.map_err(StoreError::classify)).map_err(drop),
            Done::Prune(tx, r) => tx.send(r.map_err(StoreError::classify)).map_err(drop),
            Done::PruneDocs(tx, r) => tx.send(r.map_err(StoreError::classify)).map_err(drop),
            Done::CompactTwins(tx, r) => tx.send(r.map_err(StoreError::classify)).map_err(drop),
            Done::CompactLog(tx, r) => tx.send(r.map_err(StoreError::classify)).map_err(drop),
        };
    }
}

/// The error every job of a group gets when the group could not start or commit: a
/// [`StoreError::DiskFull`] when the disk was the cause, else a [`StoreError::WriteGroup`].
fn group_error(context: &'static str, cause: &StoreError) -> StoreError {
    if cause.is_disk_full() {
        return StoreError::DiskFull {
            context,
            detail: match cause {
                StoreError::DiskFull { detail, .. } => detail.clone(),
                other => other.to_string(),
            },
        };
    }
    StoreError::WriteGroup {
        context,
        detail: cause.to_string(),
        transient: cause.is_transient(),
    }
}

/// Most free pages one reclaim step gives back when room is tight (1 MiB of 4 KiB pages:
/// what the moved pages need in the WAL, well within a reserve).
const TIGHT_RECLAIM_PAGES: u32 = 256;

/// How long the writer keeps looking for the next job after a group before it sleeps. A
/// caller answered by the group typically sends its next write within a few tens of µs;
/// catching it here saves the wake-up of a sleeping thread (~50–100 µs when the other
/// core is idle, docs/PERFORMANCE.md) on every sequential write. The writer yields while it
/// looks, so on one core the caller runs. Costs at most this much CPU per write group.
const LOOK_FOR_NEXT_JOB: std::time::Duration = std::time::Duration::from_micros(60);

/// The next job: briefly looked for without sleeping ([`LOOK_FOR_NEXT_JOB`]), then waited
/// for. `None` once every sender is gone.
fn next_job(rx: &mut mpsc::Receiver<Job>) -> Option<Job> {
    let until = std::time::Instant::now() + LOOK_FOR_NEXT_JOB;
    loop {
        match rx.try_recv() {
            Ok(job) => return Some(job),
            Err(mpsc::error::TryRecvError::Disconnected) => return None,
            Err(mpsc::error::TryRecvError::Empty) if std::time::Instant::now() < until => {
                std::thread::yield_now()
            }
            Err(mpsc::error::TryRecvError::Empty) => return rx.blocking_recv(),
        }
    }
}

/// Index and highest contiguous seq of one known actor.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ActorSlot {
    pub idx: i64,
    pub max_seq: u64,
}

/// Cached row of the series table.
#[derive(Debug, Clone)]
pub(crate) struct SeriesSlot {
    pub id: i64,
    pub attr_hlc: u64,
    pub attr_actor: [u8; 16],
}

/// The writer: owns the write connection and caches that are valid for committed state plus
/// the work of the current transaction.
pub(crate) struct Writer {
    pub conn: Connection,
    pub shared: Arc<Shared>,
    pub actor: ActorId,
    pub limits: Limits,
    pub actors: HashMap<ActorId, ActorSlot>,
    pub series: HashMap<String, SeriesSlot>,
    /// Document key → `doc_keys.id`.
    pub key_ids: HashMap<String, i64>,
    pub digest: Digest,
    /// Store-wide counters (see `counts.rs`).
    pub counts: Counts,
    /// Where the log-run sweep goes on: change ids up to this were looked at (`log_runs.rs`).
    pub log_sweep: i64,
    /// Events of the current group, sent after commit.
    pub pending_events: Vec<ChangeEvent>,
    /// Actors whose max_seq moved in the current group.
    pub touched: Vec<ActorId>,
    /// Loaded merge documents (twins).
    pub twins: TwinCache,
    /// Readings changes of the current job not written yet (see `ingest.rs`).
    pub staged: StagedReadings,
    /// This store's Ed25519 key: every local change is signed with it (`chain.rs`).
    pub signing: SigningKey,
    /// Signs the group's local changes beside this thread (`signer.rs`).
    pub(crate) signer: Signer,
    /// Local changes of the open transaction waiting for their signature: `(seq, ticket)`,
    /// stored before COMMIT ([`Writer::store_signatures`]).
    pub(crate) unsigned: Vec<(u64, u64)>,
    /// Whether the open group signs its local changes on this thread
    /// ([`SIGN_IN_PLACE_MAX_JOBS`](crate::chain::SIGN_IN_PLACE_MAX_JOBS)).
    pub(crate) sign_in_place: bool,
    /// Whether this store's public key is bound to its actor in the database as the open
    /// transaction sees it (false after any rollback: binding again is a no-op UPDATE).
    pub own_key_bound: bool,
    /// Seq and change hash of this actor's last change as the open transaction sees it, so
    /// sealing the next one reads nothing back (`chain.rs`); cleared after any rollback.
    pub own_tip: Option<(u64, crate::seal::Hash)>,
    /// Chain heads of actors as the open transaction sees them, each with the seq it is the
    /// head of (stale once the actor moves on); cleared after any rollback.
    pub chain_heads: HashMap<ActorId, (u64, crate::chain::ChainHead)>,
    /// Refuse unsigned remote changes (`StoreConfig::require_signatures`).
    pub require_signatures: bool,
    /// Implied hashes of actors' unsigned pasts (`past.rs`), each with the seq it covers up
    /// to (stale once the actor moves on); cleared after any rollback.
    pub past_hashes: HashMap<ActorId, (u64, Option<crate::seal::Hash>)>,
}

impl Writer {
    pub fn new(
        conn: Connection,
        shared: Arc<Shared>,
        actor: ActorId,
        limits: Limits,
        require_signatures: bool,
    ) -> Result<Writer> {
        let signing = crate::schema::load_or_create_signing_key(&conn)?;
        let signed = crate::past::sign_own_past(&conn, actor, &signing)?;
        if signed > 0 {
            tracing::info!(
                actor = %actor,
                changes = signed,
                "signed this store's unsigned past (its changes from before signing), from seq 1"
            );
        }
        let mut w = Writer {
            signer: Signer::start(&signing)?,
            unsigned: Vec::new(),
            sign_in_place: false,
            signing,
            own_key_bound: false,
            own_tip: None,
            chain_heads: HashMap::new(),
            past_hashes: HashMap::new(),
            require_signatures,
            conn,
            shared,
            actor,
            limits,
            actors: HashMap::new(),
            series: HashMap::new(),
            key_ids: HashMap::new(),
            digest: Digest::default(),
            counts: Counts::default(),
            log_sweep: 0,
            pending_events: Vec::new(),
            touched: Vec::new(),
            twins: TwinCache::default(),
            staged: StagedReadings::default(),
        };
        w.reload()?;
        w.counts = Counts::load(&w.conn)?;
        w.actor_slot(actor)?;
        // A rebased store's predecessors (future-stamped) do not raise its clock.
        let floor = crate::rebase::clock_floor(&w.conn, actor)?;
        w.shared.clock.lock().expect("clock lock").seed(floor);
        *w.shared.vv.write().expect("vv lock") = w.version_vector();
        *w.shared.digest.write().expect("digest lock") = w.digest;
        *w.shared.counts.write().expect("counts lock") = w.counts;
        Ok(w)
    }

    fn version_vector(&self) -> VersionVector {
        self.actors.iter().map(|(a, s)| (*a, s.max_seq)).collect()
    }

    /// Re-reads every cache from the database, the digest included (at start, or after a
    /// failed commit, when the database holds the last committed state).
    fn reload(&mut self) -> Result<()> {
        self.reload_caches()?;
        let digest: Option<Vec<u8>> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'digest'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(StoreError::db("loading the digest"))?;
        self.digest = digest.map(|d| Digest::from_slice(&d)).unwrap_or_default();
        Ok(())
    }

    /// Re-reads the caches that mirror table rows (actors, series, keys, twins). Not the
    /// digest: the stored one is the last committed digest, which inside a group lacks the
    /// group's earlier jobs (the writer stores it once per group, at commit).
    fn reload_caches(&mut self) -> Result<()> {
        self.actors.clear();
        self.series.clear();
        self.key_ids.clear();
        self.twins.clear();
        self.staged = StagedReadings::default();
        // What a rolled-back job bound or sealed is gone with it.
        self.own_key_bound = false;
        self.own_tip = None;
        self.chain_heads.clear();
        self.past_hashes.clear();
        let load = |conn: &Connection| -> rusqlite::Result<Vec<(i64, Vec<u8>, i64)>> {
            let mut st = conn.prepare_cached("SELECT idx, actor, max_seq FROM actors")?;
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        };
        for (idx, bytes, max_seq) in load(&self.conn).map_err(StoreError::db("loading actors"))? {
            if let Some(a) = ActorId::from_slice(&bytes) {
                self.actors.insert(
                    a,
                    ActorSlot {
                        idx,
                        max_seq: max_seq as u64,
                    },
                );
            }
        }
        Ok(())
    }

    /// The slot of `actor`, creating its row when unknown.
    pub fn actor_slot(&mut self, actor: ActorId) -> Result<ActorSlot> {
        if let Some(s) = self.actors.get(&actor) {
            return Ok(*s);
        }
        self.conn
            .prepare_cached("INSERT INTO actors (actor, max_seq) VALUES (?1, 0)")
            .and_then(|mut st| st.execute([actor.as_bytes().as_slice()]))
            .map_err(StoreError::db("registering an actor"))?;
        let idx = self.conn.last_insert_rowid();
        let slot = ActorSlot { idx, max_seq: 0 };
        self.actors.insert(actor, slot);
        Ok(slot)
    }

    /// Records that `actor` now holds up to `seq`, stamped `hlc` (called once per stored
    /// change).
    pub fn advance(&mut self, actor: ActorId, seq: u64, hlc: Hlc) -> Result<()> {
        let slot = self.actor_slot(actor)?;
        self.store_max_seq(slot.idx, seq, hlc)?;
        if let Some(s) = self.actors.get_mut(&actor) {
            s.max_seq = seq;
        }
        self.touched.push(actor);
        Ok(())
    }

    /// Writes an actor's highest contiguous seq (the caller keeps the cache in step) and
    /// raises its highest stored HLC to `hlc` (schema 11: the clock's floor at open, read
    /// without a scan of the log).
    pub fn store_max_seq(&mut self, actor_idx: i64, seq: u64, hlc: Hlc) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE actors SET max_seq = ?1, max_hlc = MAX(max_hlc, ?3) WHERE idx = ?2",
            )
            .and_then(|mut st| st.execute(params![seq as i64, actor_idx, hlc.0 as i64]))
            .map(drop)
            .map_err(StoreError::db("advancing the version vector"))
    }

    /// Inserts the change-log row of an unsigned (remote, or sealed later) change and
    /// returns its local id.
    pub fn insert_change_row(
        &mut self,
        actor_idx: i64,
        seq: u64,
        hlc: Hlc,
        kind: i64,
        manifest: Option<Vec<u8>>,
    ) -> Result<i64> {
        self.insert_sealed_change_row(actor_idx, seq, hlc, kind, manifest, None)
    }

    /// Inserts the change-log row with its seal columns (a local change, sealed by
    /// [`Writer::seal_local`]) and returns its local id.
    pub(crate) fn insert_sealed_change_row(
        &mut self,
        actor_idx: i64,
        seq: u64,
        hlc: Hlc,
        kind: i64,
        manifest: Option<Vec<u8>>,
        seal: Option<&LocalSeal>,
    ) -> Result<i64> {
        // A signature not made in place follows before COMMIT (`Writer::store_signatures`).
        let (prev, body, signature) = match seal {
            Some(s) => (
                Some(s.prev.as_slice()),
                Some(s.body_hash.as_slice()),
                s.signature_column(),
            ),
            None => (None, None, None),
        };
        self.conn
            .prepare_cached(
                "INSERT INTO changes \
                 (actor_idx, seq, hlc, kind, manifest, prev_hash, body_hash, signature) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    actor_idx,
                    seq as i64,
                    hlc.0 as i64,
                    kind,
                    manifest,
                    prev,
                    body,
                    signature
                ])
            })
            .map_err(StoreError::db("appending to the change log"))?;
        self.counts.changes += 1;
        Ok(self.conn.last_insert_rowid())
    }

    pub(crate) fn next_local(&mut self) -> (u64, Hlc) {
        let seq = self.actors.get(&self.actor).map_or(0, |s| s.max_seq) + 1;
        let hlc = self.shared.clock.lock().expect("clock lock").now();
        (seq, hlc)
    }

    fn exec(&mut self, sql: &'static str) -> Result<()> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut st| st.execute([]))
            .map(drop)
            .map_err(StoreError::db("controlling a transaction"))
    }

    /// Runs the writer (on its own thread) until every sender is gone or a shutdown job.
    pub fn run(mut self, mut rx: mpsc::Receiver<Job>, max_group: usize) {
        let mut stop: Option<oneshot::Sender<()>> = None;
        while let Some(first) = next_job(&mut rx) {
            let mut jobs = Vec::new();
            let mut probes = Vec::new();
            let mut reclaims = Vec::new();
            let mut next = Some(first);
            while let Some(job) = next.take() {
                match job {
                    Job::Shutdown { done } => {
                        stop = Some(done);
                        break;
                    }
                    Job::Probe { reply } => probes.push(reply),
                    Job::Reclaim { pages, reply } => reclaims.push((pages, reply)),
                    job => jobs.push(job),
                }
                if jobs.len() < max_group {
                    next = rx.try_recv().ok();
                }
            }
            // While the disk is full writes are refused at admission: a tiny write now and
            // then finds out when space is back, so the state ends by itself.
            if self.shared.health.should_retry_full_disk() {
                self.heartbeat();
            }
            let jobs = self.admit(jobs);
            if !jobs.is_empty() {
                self.run_group(jobs);
                self.truncate_wal_while_full();
            }
            let reclaimed = !reclaims.is_empty();
            for (pages, reply) in reclaims {
                let _ = reply.send(self.reclaim_job(pages));
            }
            // Space given back by a recovery may end the full-disk state.
            if reclaimed && self.shared.health.is_disk_full() {
                self.heartbeat();
            }
            for reply in probes {
                let _ = reply.send(self.shared.health.snapshot());
            }
            if stop.is_some() {
                break;
            }
        }
        // Refuse whatever is still queued: callers get `Closed` instead of hanging.
        rx.close();
        drop(rx);
        // Fold the WAL back into the database so a stopped store is one self-contained file
        // (readers are closed first by `Store::close`, so the checkpoint can complete).
        if let Err(e) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        {
            tracing::warn!(error = %e, "checkpointing the WAL at close");
        }
        if let Err((_, e)) = self.conn.close() {
            tracing::warn!(error = %e, "closing the write connection");
        }
        if let Some(done) = stop {
            let _ = done.send(());
        }
        tracing::debug!("store writer stopped");
    }

    /// A group of one tiny write, whose outcome updates the write health.
    fn heartbeat(&mut self) {
        let (reply, _) = oneshot::channel();
        self.run_group(vec![Job::Heartbeat { reply }]);
    }

    /// While the disk is full, refuses the jobs that need room (ingest, document and twin
    /// writes, changes received by sync, corrections) without starting a transaction, so
    /// none of them runs into `SQLITE_FULL` and none takes the room a recovery pass needs;
    /// returns the others (pruning, heartbeats, credential bindings) to run.
    fn admit(&mut self, jobs: Vec<Job>) -> Vec<Job> {
        let Some(detail) = self.shared.health.snapshot().disk_full else {
            return jobs;
        };
        let cause = StoreError::DiskFull {
            context: "admitting a write while the disk is full",
            detail,
        };
        let (admitted, refused): (Vec<Job>, Vec<Job>) =
            jobs.into_iter().partition(|j| !j.needs_room());
        for job in refused {
            self.refuse(job, "admitting a write while the disk is full", &cause)
                .send();
        }
        admitted
    }

    fn run_group(&mut self, jobs: Vec<Job>) {
        let mut done = Vec::with_capacity(jobs.len());
        if let Err(e) = self.exec("BEGIN IMMEDIATE") {
            self.shared.health.record(GroupOutcome::Failed {
                disk_full: e.is_disk_full(),
                failure: &e.to_string(),
            });
            for job in jobs {
                done.push(self.refuse(job, "starting a write transaction", &e));
            }
            done.into_iter().for_each(Done::send);
            return;
        }
        self.pending_events.clear();
        self.touched.clear();
        self.twins.start_group();
        self.sign_in_place = jobs.len() <= crate::chain::SIGN_IN_PLACE_MAX_JOBS;
        let mut jobs = jobs.into_iter();
        let mut aborted: Option<StoreError> = None;
        while let Some(job) = jobs.next() {
            let digest_before = self.digest;
            let counts_before = self.counts;
            let events_before = self.pending_events.len();
            let touched_before = self.touched.len();
            let unsigned_before = self.unsigned.len();
            if let Err(e) = self.exec("SAVEPOINT job") {
                done.push(self.refuse(job, "starting a write transaction", &e));
                continue;
            }
            let result = self.run_job(job);
            if result.is_ok() {
                if let Err(e) = self.exec("RELEASE job") {
                    done.push(result.fail(&e));
                    continue;
                }
            } else {
                // Undo this job alone; earlier jobs of the group stay, and so do their
                // contributions to the digest and counters (restored, not reloaded: the
                // stored digest predates the group).
                let rolled = self.exec("ROLLBACK TO job");
                let released = self.exec("RELEASE job");
                let reloaded = self.reload_caches();
                self.digest = digest_before;
                self.counts = counts_before;
                self.pending_events.truncate(events_before);
                self.touched.truncate(touched_before);
                self.unsigned.truncate(unsigned_before);
                if self.conn.is_autocommit() {
                    // SQLite rolled the whole transaction back (it may on a full disk or an
                    // I/O error): the earlier jobs of the group are gone too.
                    let cause = result
                        .error()
                        .map(|e| group_error("running a write group", e))
                        .unwrap_or(StoreError::Closed);
                    done.push(result);
                    for job in jobs.by_ref() {
                        done.push(self.refuse(job, "starting a write transaction", &cause));
                    }
                    aborted = Some(cause);
                    break;
                }
                if rolled.is_err() || released.is_err() || reloaded.is_err() {
                    tracing::error!("store writer could not roll back a failed job cleanly");
                }
            }
            done.push(result);
        }
        let committed = match aborted {
            Some(cause) => Err(cause),
            None => self
                .finish_twins(&mut done)
                .and_then(|()| self.finish_group()),
        };
        match &committed {
            Ok(()) => {
                let full = done
                    .iter()
                    .filter_map(Done::error)
                    .find(|e| e.is_disk_full())
                    .map(|e| e.to_string());
                self.shared.health.record(GroupOutcome::Committed {
                    disk_full: full.as_deref(),
                });
            }
            Err(e) => self.shared.health.record(GroupOutcome::Failed {
                disk_full: e.is_disk_full(),
                failure: &e.to_string(),
            }),
        }
        match committed {
            Ok(()) => {
                {
                    let mut vv = self.shared.vv.write().expect("vv lock");
                    for a in &self.touched {
                        if let Some(s) = self.actors.get(a) {
                            vv.set(*a, s.max_seq);
                        }
                    }
                }
                *self.shared.digest.write().expect("digest lock") = self.digest;
                *self.shared.counts.write().expect("counts lock") = self.counts;
                // Announced before the callers are answered, so a change's event is out by
                // the time its write call returns.
                for ev in self.pending_events.drain(..) {
                    // No subscriber is fine: events are hints, the log is the truth.
                    let _ = self.shared.events.send(ev);
                }
                done.into_iter().for_each(Done::send);
            }
            Err(e) => {
                tracing::error!(error = %e, "store commit failed; the whole write group is refused");
                let _ = self.exec("ROLLBACK");
                self.drop_signatures();
                done.into_iter().map(|d| d.fail(&e)).for_each(Done::send);
                self.pending_events.clear();
                let reloaded = self
                    .reload()
                    .and_then(|()| Counts::load(&self.conn).map(|c| self.counts = c));
                if let Err(e) = reloaded {
                    tracing::error!(error = %e, "store could not reload its state after a failed commit");
                }
            }
        }
    }

    /// Writes the JSON of every twin the group changed (once per twin) and gives each local
    /// patch of the group its twin's merged JSON.
    fn finish_twins(&mut self, done: &mut [Done]) -> Result<()> {
        let values = self.flush_twins()?;
        for d in done {
            if let Done::Twin(_, Ok(w)) = d
                && w.change.is_some()
                && let Some(v) = values.get(&w.key)
            {
                w.value = v.clone();
            }
        }
        Ok(())
    }

    fn finish_group(&mut self) -> Result<()> {
        self.store_signatures()?;
        // The digest and the counters: two small rows of `meta`, one page.
        let mut st = self
            .conn
            .prepare_cached("INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
            .map_err(StoreError::db("storing the digest"))?;
        st.execute(params!["digest", self.digest.0.as_slice()])
            .map_err(StoreError::db("storing the digest"))?;
        st.execute(params![
            crate::counts::META_KEY,
            self.counts.encode().as_slice()
        ])
        .map_err(StoreError::db("storing the counters"))?;
        drop(st);
        self.exec("COMMIT")
    }

    fn refuse(&mut self, job: Job, context: &'static str, cause: &StoreError) -> Done {
        let err = || group_error(context, cause);
        match job {
            Job::Append { reply, .. } => Done::Append(reply, Err(err())),
            Job::Doc { reply, .. } => Done::Doc(reply, Err(err())),
            Job::DocBatch { reply, .. } => Done::DocBatch(reply, Err(err())),
            Job::Remote { reply, .. } => Done::Remote(reply, Err(err())),
            Job::Twin { reply, .. } => Done::Twin(reply, Err(err())),
            Job::Correct { reply, .. } => Done::Correct(reply, Err(err())),
            Job::Bind { reply, .. } => Done::Bind(reply, Err(err())),
            Job::Heartbeat { reply } => Done::Heartbeat(reply, Err(err())),
            Job::PutMeta { reply, .. } => Done::PutMeta(reply, Err(err())),
            Job::Prune { reply, .. } => Done::Prune(reply, Err(err())),
            Job::PruneDocs { reply, .. } => Done::PruneDocs(reply, Err(err())),
            Job::CompactTwins { reply, .. } => Done::CompactTwins(reply, Err(err())),
            Job::CompactLog { reply, .. } => Done::CompactLog(reply, Err(err())),
            Job::Shutdown { .. } | Job::Probe { .. } | Job::Reclaim { .. } => {
                unreachable!("shutdown, probes and reclaims are handled by the run loop")
            }
        }
    }

    /// While the disk is full, folds the WAL back into the database and truncates it, so
    /// the next prune step's WAL frames reuse the room instead of needing more.
    fn truncate_wal_while_full(&mut self) {
        if self.shared.health.is_disk_full() {
            self.truncate_wal();
        }
    }

    /// `PRAGMA wal_checkpoint(TRUNCATE)`, best effort: a reader in the middle of a long read
    /// keeps the WAL for now.
    fn truncate_wal(&mut self) {
        if let Err(e) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        {
            tracing::debug!(error = %e, "checkpointing and truncating the WAL");
        }
    }

    /// A reclaim job: see [`Job::Reclaim`]. A full disk found on the way starts the
    /// full-disk state (and so releases the reserve) like a failed write group.
    fn reclaim_job(&mut self, pages: u32) -> Result<u64> {
        let r = self.reclaim(pages);
        if let Err(e) = &r
            && e.is_disk_full()
        {
            self.shared.health.record(GroupOutcome::Failed {
                disk_full: true,
                failure: &e.to_string(),
            });
        }
        r
    }

    /// Gives up to `pages` free pages back. The pages moved go through the WAL: when the
    /// disk is full, or the file system has less than twice their size free, a step moves at
    /// most [`TIGHT_RECLAIM_PAGES`] and the WAL is truncated after each, so the steps fit in
    /// the room there is (the released reserve, on a full disk).
    fn reclaim(&mut self, pages: u32) -> Result<u64> {
        let page_size: i64 = self
            .conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(StoreError::db("reading the page size"))?;
        let step_bytes = u64::from(pages) * page_size.max(0) as u64;
        let tight = self.shared.health.is_disk_full()
            || self
                .shared
                .health
                .available_bytes()
                .is_some_and(|free| free < 2 * step_bytes);
        let pages = if tight {
            pages.min(TIGHT_RECLAIM_PAGES)
        } else {
            pages
        };
        let free = |conn: &Connection| -> Result<u64> {
            conn.query_row("PRAGMA freelist_count", [], |r| r.get::<_, i64>(0))
                .map(|n| n.max(0) as u64)
                .map_err(StoreError::db("reading the free-page count"))
        };
        let auto_vacuum: i64 = self
            .conn
            .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
            .map_err(StoreError::db("reading auto_vacuum"))?;
        if auto_vacuum == 2 && free(&self.conn)? > 0 {
            // Stepped to the end whether or not this SQLite version returns rows for it.
            self.conn
                .prepare(&format!("PRAGMA incremental_vacuum({pages})"))
                .and_then(|mut st| {
                    let mut rows = st.query([])?;
                    while rows.next()?.is_some() {}
                    Ok(())
                })
                .map_err(|e| StoreError::db("giving free pages back")(e).classify())?;
        }
        let left = if auto_vacuum == 2 {
            free(&self.conn)?
        } else {
            0
        };
        if left == 0 || tight {
            self.truncate_wal();
        }
        Ok(left)
    }

    fn run_job(&mut self, job: Job) -> Done {
        match job {
            Job::Append { parts, reply } => {
                let r = parts
                    .iter()
                    .map(|batch| {
                        let (seq, hlc) = self.next_local();
                        let actor = self.actor;
                        self.stage_readings(actor, seq, hlc, batch, (false, &[]))?;
                        self.flush_readings()?;
                        Ok(ChangeMeta { actor, seq, hlc })
                    })
                    .collect();
                Done::Append(reply, r)
            }
            Job::Doc { key, value, reply } => {
                let r = match self.is_twin(&key) {
                    Ok(true) => Err(crate::doc_batch::twin_not_document(&key)),
                    Ok(false) => {
                        let (seq, hlc) = self.next_local();
                        let actor = self.actor;
                        self.store_doc(actor, seq, hlc, &key, value.as_deref(), None, false, false)
                            .map(|ctx| (ChangeMeta { actor, seq, hlc }, ctx))
                    }
                    Err(e) => Err(e),
                };
                Done::Doc(reply, r)
            }
            Job::DocBatch {
                writes,
                encoded_bytes,
                reply,
            } => {
                let r = self.store_local_batch(&writes, encoded_bytes);
                Done::DocBatch(reply, r)
            }
            Job::Twin { key, edit, reply } => {
                let r = self.store_twin_local(&key, &edit).and_then(|w| {
                    if let Some(meta) = &w.change {
                        self.seal_written_twin(&w.key, meta.seq, meta.hlc)?;
                    }
                    Ok(w)
                });
                Done::Twin(reply, r)
            }
            Job::Remote {
                changes,
                partial,
                prechecked,
                reply,
            } => {
                let r = self.apply_remote(changes, partial, &prechecked);
                Done::Remote(reply, r)
            }
            Job::Correct {
                boot,
                true_offset_ms,
                basis,
                reply,
            } => {
                let r = self.correct_local(boot, true_offset_ms, basis);
                Done::Correct(reply, r)
            }
            Job::Bind {
                principal,
                actor,
                from,
                reply,
            } => {
                let r = self.bind_credential(&principal, actor, from);
                Done::Bind(reply, r)
            }
            Job::PutMeta { key, value, reply } => {
                let r = self
                    .conn
                    .prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")
                    .and_then(|mut st| st.execute(params![key, value]))
                    .map(drop)
                    .map_err(StoreError::db("storing a local value"));
                Done::PutMeta(reply, r)
            }
            Job::Heartbeat { reply } => {
                let wall = self.shared.clock.lock().expect("clock lock").wall_ms() as i64;
                let r = self
                    .conn
                    .prepare_cached("INSERT INTO meta (key, value) VALUES ('heartbeat', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
                    .and_then(|mut st| st.execute([wall]))
                    .map(drop)
                    .map_err(StoreError::db("writing the heartbeat"));
                Done::Heartbeat(reply, r)
            }
            Job::Prune {
                rule,
                cursor,
                budget,
                reply,
            } => Done::Prune(reply, self.prune_step(&rule, cursor, budget)),
            Job::PruneDocs {
                policy,
                now_ms,
                cursor,
                budget,
                reply,
            } => Done::PruneDocs(
                reply,
                self.prune_docs_step(&policy.docs, now_ms, cursor, budget),
            ),
            Job::CompactTwins {
                rule,
                now_ms,
                cursor,
                budget,
                reply,
            } => Done::CompactTwins(reply, self.compact_twins_step(rule, now_ms, cursor, budget)),
            Job::CompactLog { budget, reply } => {
                Done::CompactLog(reply, self.compact_log_step(budget))
            }
            Job::Shutdown { .. } | Job::Probe { .. } | Job::Reclaim { .. } => {
                unreachable!("shutdown, probes and reclaims are handled by the run loop")
            }
        }
    }

    /// The actor `principal` is bound to, binding it to `actor` if it is not bound yet —
    /// or, with `from`, moving it from `from` to `actor` if it is bound to `from` (the old
    /// actor is kept as a predecessor, whose changes the credential may still send).
    /// Bindings are local facts (not replicated), kept in `meta`.
    fn bind_credential(
        &mut self,
        principal: &str,
        actor: ActorId,
        from: Option<ActorId>,
    ) -> Result<ActorId> {
        let key = format!("credential_binding/{principal}");
        let found: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")
            .and_then(|mut st| st.query_row([&key], |r| r.get(0)).optional())
            .map_err(StoreError::db("reading a credential binding"))?;
        if let Some(bound) = found.as_deref().and_then(ActorId::from_slice)
            && Some(bound) != from
        {
            return Ok(bound);
        }
        if let Some(old) = from {
            let past_key = format!("{}{principal}", crate::rebase::CREDENTIAL_PREDECESSORS);
            let past: Option<Vec<u8>> = self
                .conn
                .prepare_cached("SELECT value FROM meta WHERE key = ?1")
                .and_then(|mut st| st.query_row([&past_key], |r| r.get(0)).optional())
                .map_err(StoreError::db("reading a credential's predecessors"))?;
            let mut past = past.unwrap_or_default();
            past.extend_from_slice(old.as_bytes());
            self.conn
                .prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")
                .and_then(|mut st| st.execute(params![past_key, past]))
                .map_err(StoreError::db("recording a credential's predecessor"))?;
        }
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")
            .and_then(|mut st| st.execute(params![key, actor.as_bytes().as_slice()]))
            .map_err(StoreError::db("recording a credential binding"))?;
        Ok(actor)
    }

    /// Checks the whole call first (contiguity per actor, clock offset, limits, signatures
    /// and chain links) so a bad change refuses the call before anything is written; then
    /// stores the new changes. With `partial`, a change failing its chain check refuses only
    /// its actor's changes (listed in the report) and the others apply.
    fn apply_remote(
        &mut self,
        changes: Vec<Change>,
        partial: bool,
        prechecked: &Prechecked,
    ) -> Result<(ApplyOutcome, ChainReport)> {
        let mut held = HashMap::new();
        for c in &changes {
            if let std::collections::hash_map::Entry::Vacant(e) = held.entry(c.actor) {
                e.insert(crate::admit::HeldActor {
                    max_seq: self.actors.get(&c.actor).map_or(0, |s| s.max_seq),
                    head: self.chain_head(c.actor)?,
                });
            }
        }
        for actor in crate::admit::needs_past(&changes, &held) {
            let past = self.unsigned_past_hash(actor)?;
            if let Some(h) = held.get_mut(&actor) {
                h.head.past = past;
            }
        }
        let rules = crate::admit::AdmitRules {
            limits: Some(&self.limits),
            require_signatures: self.require_signatures,
            partial,
            prechecked: Some(prechecked),
        };
        let admission = {
            let clock = self.shared.clock.lock().expect("clock lock");
            crate::admit::admit_remote(&changes, &held, rules, |c| clock.check(c.hlc))?
        };
        let (fresh, skipped, report, seals, heads) = (
            admission.fresh,
            admission.skipped,
            admission.report,
            admission.seals,
            admission.heads,
        );
        let applied = fresh.len();
        for i in fresh {
            let c = &changes[i];
            // Checked above, so this cannot fail; it moves the clock past the change.
            let _ = self.shared.clock.lock().expect("clock lock").observe(c.hlc);
            // Consecutive readings changes are staged and written together; anything else
            // writes them first, so local ids keep the order of arrival.
            if !matches!(c.body, ChangeBody::Readings(_)) {
                self.flush_readings()?;
            }
            match &c.body {
                ChangeBody::Readings(batch) => {
                    let remote = (true, c.pruned_rollups.as_slice());
                    self.stage_readings(c.actor, c.seq, c.hlc, batch, remote)?
                }
                ChangeBody::Doc(d) => self
                    .store_doc(
                        c.actor,
                        c.seq,
                        c.hlc,
                        &d.key,
                        d.value.as_deref(),
                        Some(&d.context),
                        true,
                        d.pruned,
                    )
                    .map(drop)?,
                ChangeBody::DocBatch(b) => self.store_remote_batch(c.actor, c.seq, c.hlc, b)?,
                ChangeBody::Twin(t) => self.store_twin_remote(c.actor, c.seq, c.hlc, t)?,
                ChangeBody::TimeCorrection(t) => {
                    self.store_correction(c.actor, c.seq, c.hlc, t, true)?
                }
                ChangeBody::Gap(g) => self.store_gap(c.actor, c.seq, c.hlc, g, true)?,
            }
        }
        self.flush_readings()?;
        self.store_remote_seals(seals)?;
        // Each actor's head now stands at its highest stored seq (admission stops an actor at
        // its first refusal, so nothing past the head is stored).
        for (actor, head) in heads {
            if let Some(slot) = self.actors.get(&actor) {
                self.chain_heads.insert(actor, (slot.max_seq, head));
            }
        }
        Ok((ApplyOutcome { applied, skipped }, report))
    }
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
