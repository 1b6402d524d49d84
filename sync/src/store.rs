//! The public handle of the versioned store: opening, writing (through the group-commit
//! writer), the change log for replication, and store-wide figures. Queries live in
//! `readings_query.rs` and `docs_query.rs`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use sqlx::Row;
use sqlx::sqlite::{SqliteConnection, SqlitePool};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::docwrite::decode_context;
use crate::ingest::decode_manifest;
use crate::writer::{Job, Shared, Writer};
use crate::{
    ActorId, ApplyOutcome, Change, ChangeBody, ChangeEvent, ChangeMeta, Digest, DocVersion,
    DocWrite, HybridClock, ReadingBatch, Result, SeriesPoints, StoreConfig, StoreError, StoreStats,
    SystemTime, TimeSource, TwinChange, VersionVector, validate_key,
};

/// A handle to an open store. Cheap to clone; all clones share one writer and one read pool.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub pool: SqlitePool,
    jobs: mpsc::Sender<Job>,
    pub shared: Arc<Shared>,
    actor: ActorId,
    pub config: StoreConfig,
    path: PathBuf,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
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
        let opened = crate::schema::open(&path, &config).await?;
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            vv: RwLock::new(VersionVector::new()),
            digest: RwLock::new(Digest::default()),
            clock: Mutex::new(HybridClock::new(time, config.max_clock_offset_ms)),
            events,
        });
        let writer = Writer::new(
            opened.writer,
            shared.clone(),
            opened.actor,
            config.limits.clone(),
        )
        .await?;
        let (jobs, rx) = mpsc::channel(config.write_queue.max(1));
        let handle = tokio::spawn(writer.run(rx, config.max_group_jobs.max(1)));
        Ok(Store {
            inner: Arc::new(Inner {
                pool: opened.read_pool,
                jobs,
                shared,
                actor: opened.actor,
                config,
                path,
                writer: Mutex::new(Some(handle)),
            }),
        })
    }

    /// Gives the database at `path` (which must not be open) a new random actor id, so a
    /// restored backup on a second device does not write as the first one.
    pub async fn rekey(path: impl AsRef<Path>) -> Result<ActorId> {
        let config = StoreConfig::default();
        let mut opened = crate::schema::open(path.as_ref(), &config).await?;
        let actor = crate::schema::rekey(&mut opened.writer).await?;
        opened.read_pool.close().await;
        Ok(actor)
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
    pub async fn append(&self, mut batch: ReadingBatch) -> Result<ChangeMeta> {
        batch.normalize(&self.inner.config.limits)?;
        self.submit(|reply| Job::Append { batch, reply }).await
    }

    /// Writes a new version of `key`. The version supersedes every sibling this store holds
    /// for the key. Durable on return.
    pub async fn put(&self, key: &str, value: &serde_json::Value) -> Result<DocVersion> {
        validate_key(key)?;
        let mut bytes = Vec::new();
        ciborium::into_writer(value, &mut bytes).map_err(|e| StoreError::Decode {
            what: "document value",
            detail: e.to_string(),
        })?;
        let max = self.inner.config.limits.max_value_bytes;
        if bytes.len() > max {
            return Err(StoreError::ValueTooLarge {
                key: key.to_owned(),
                size: bytes.len(),
                max,
            });
        }
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
        })
    }

    /// Deletes `key` by writing a tombstone version (history is kept). Fails with
    /// [`StoreError::UnknownKey`] when the key has no live value.
    pub async fn delete(&self, key: &str) -> Result<DocVersion> {
        validate_key(key)?;
        match self.get(key).await? {
            Some(state) if !state.winner.is_tombstone() || state.siblings > 1 => {}
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
        })
    }

    /// Applies changes received from another replica, atomically: either every new change
    /// of the call is stored or none. Changes already held are skipped (idempotent). A change
    /// whose predecessor from the same actor is missing fails the call with
    /// [`StoreError::SeqGap`]; a timestamp too far ahead with [`StoreError::ClockSkew`].
    pub async fn apply_remote(&self, changes: Vec<Change>) -> Result<ApplyOutcome> {
        if changes.is_empty() {
            return Ok(ApplyOutcome::default());
        }
        self.submit(|reply| Job::Remote { changes, reply }).await
    }

    /// A small durable write through the writer: proves the store accepts and commits
    /// writes (the watchdog health check).
    pub async fn heartbeat(&self) -> Result<()> {
        self.submit(|reply| Job::Heartbeat { reply }).await
    }

    /// What this store holds: actor → highest contiguous seq.
    pub fn version_vector(&self) -> VersionVector {
        self.inner.shared.vv.read().expect("vv lock").clone()
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
    /// seq order, filling at most `byte_budget` (estimated encoded bytes; at least one change
    /// is returned when any is missing).
    pub async fn changes_since(
        &self,
        theirs: &VersionVector,
        byte_budget: usize,
    ) -> Result<Vec<Change>> {
        let mut tx = self
            .inner
            .pool
            .begin()
            .await
            .map_err(StoreError::db("starting a read"))?;
        let actors =
            sqlx::query("SELECT idx, actor, max_seq FROM actors WHERE max_seq > 0 ORDER BY actor")
                .fetch_all(&mut *tx)
                .await
                .map_err(StoreError::db("reading actors"))?;
        let mut out = Vec::new();
        let mut used = 0usize;
        for row in actors {
            let idx: i64 = row.get(0);
            let Some(actor) = ActorId::from_slice(&row.get::<Vec<u8>, _>(1)) else {
                continue;
            };
            let max = row.get::<i64, _>(2) as u64;
            let mut from = theirs.get(&actor);
            while from < max {
                let page = sqlx::query(
                    "SELECT id, seq, hlc, kind, manifest FROM changes WHERE actor_idx = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT 64",
                )
                .bind(idx)
                .bind(from as i64)
                .bind(max as i64)
                .fetch_all(&mut *tx)
                .await
                .map_err(StoreError::db("reading the change log"))?;
                if page.is_empty() {
                    break;
                }
                for r in &page {
                    let change = load_change(&mut tx, r, actor).await?;
                    let size = change.estimated_size();
                    if !out.is_empty() && used + size > byte_budget {
                        return Ok(out);
                    }
                    used += size;
                    from = change.seq;
                    out.push(change);
                }
            }
        }
        Ok(out)
    }

    /// Changes in local commit order after local position `after` (0 for the beginning),
    /// at most `max`: the cursor source for the MQTT outbox and live sync.
    pub async fn log_after(&self, after: i64, max: usize) -> Result<Vec<(i64, Change)>> {
        let mut tx = self
            .inner
            .pool
            .begin()
            .await
            .map_err(StoreError::db("starting a read"))?;
        let rows = sqlx::query(
            "SELECT c.id, c.seq, c.hlc, c.kind, c.manifest, a.actor FROM changes c JOIN actors a ON a.idx = c.actor_idx WHERE c.id > ? ORDER BY c.id LIMIT ?",
        )
        .bind(after)
        .bind(max.min(10_000) as i64)
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::db("reading the change log"))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let actor = ActorId::from_slice(&r.get::<Vec<u8>, _>(5)).ok_or(StoreError::Decode {
                what: "stored actor id",
                detail: "not 16 bytes".into(),
            })?;
            out.push((r.get::<i64, _>(0), load_change(&mut tx, r, actor).await?));
        }
        Ok(out)
    }

    /// Store-wide figures (counts from the rollups and the log; cheap).
    pub async fn stats(&self) -> Result<StoreStats> {
        let pool = &self.inner.pool;
        let one = |sql: &'static str| async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(pool)
                .await
                .map_err(StoreError::db("counting"))
                .map(|n| n.max(0) as u64)
        };
        let page_bytes =
            one("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()")
                .await?;
        let wal = format!("{}-wal", self.inner.path.display());
        let wal_bytes = std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0);
        Ok(StoreStats {
            actor: self.actor(),
            version_vector: self.version_vector(),
            digest: self.digest().to_string(),
            changes: one("SELECT COUNT(*) FROM changes").await?,
            readings: one("SELECT COALESCE(SUM(n), 0) FROM rollup_1m").await?,
            series: one("SELECT COUNT(*) FROM series").await?,
            doc_keys: one("SELECT COUNT(*) FROM doc_keys").await?,
            doc_versions: one("SELECT COUNT(*) FROM doc_versions").await?,
            db_bytes: page_bytes + wal_bytes,
        })
    }

    /// Recomputes the digest from the stored rows (a full scan) — a check that the
    /// incrementally maintained [`digest`](Self::digest) matches what is really stored.
    pub async fn verify_digest(&self) -> Result<Digest> {
        let mut digest = Digest::default();
        let mut after = 0;
        loop {
            let page = self.log_after(after, 512).await?;
            let Some(last) = page.last() else { break };
            after = last.0;
            for (_, c) in &page {
                match &c.body {
                    ChangeBody::Readings(b) => {
                        for s in &b.series {
                            digest.add(&crate::digest::readings_hash(
                                &c.actor, c.seq, &s.name, &s.ts, &s.values,
                            ));
                        }
                    }
                    ChangeBody::Doc(d) => {
                        let ctx = crate::docwrite::encode_context(&d.context);
                        digest.add(&crate::digest::doc_hash(
                            &c.actor,
                            c.seq,
                            c.hlc,
                            &d.key,
                            d.value.as_deref(),
                            &ctx,
                        ));
                    }
                    ChangeBody::Twin(t) => {
                        digest.add(&crate::digest::twin_hash(
                            &c.actor, c.seq, c.hlc, &t.key, &t.change,
                        ));
                    }
                }
            }
        }
        Ok(digest)
    }

    /// Stops the writer after the writes already queued and closes the database. Later
    /// writes through any clone fail with [`StoreError::Closed`].
    pub async fn close(&self) {
        self.inner.pool.close().await;
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
            let _ = h.await;
        }
    }
}

/// Rebuilds a change from its log row (`id, seq, hlc, kind, manifest` first) and the tables.
async fn load_change(
    conn: &mut SqliteConnection,
    row: &sqlx::sqlite::SqliteRow,
    actor: ActorId,
) -> Result<Change> {
    let id: i64 = row.get(0);
    let seq = row.get::<i64, _>(1) as u64;
    let hlc = crate::Hlc(row.get::<i64, _>(2) as u64);
    let kind: i64 = row.get(3);
    let body = match kind {
        1 => {
            let manifest: Vec<u8> = row.get(4);
            let mut batch = ReadingBatch::new();
            for e in decode_manifest(&manifest)? {
                let sid: i64 = sqlx::query_scalar("SELECT id FROM series WHERE name = ?")
                    .bind(&e.name)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(StoreError::db("resolving a series of the change log"))?;
                let rows = sqlx::query(
                    "SELECT ts, value FROM readings WHERE series_id = ? AND ts >= ? AND ts <= ? AND change_id = ? ORDER BY ts",
                )
                .bind(sid)
                .bind(e.ts_min)
                .bind(e.ts_max)
                .bind(id)
                .fetch_all(&mut *conn)
                .await
                .map_err(StoreError::db("reading the readings of a change"))?;
                batch.series.push(SeriesPoints {
                    name: e.name,
                    unit: e.unit,
                    meta: e.meta,
                    ts: rows.iter().map(|r| r.get(0)).collect(),
                    values: rows.iter().map(|r| r.get(1)).collect(),
                });
            }
            ChangeBody::Readings(batch)
        }
        2 => {
            let r = sqlx::query(
                "SELECT k.key, v.value, v.context FROM doc_versions v JOIN doc_keys k ON k.id = v.key_id WHERE v.change_id = ?",
            )
            .bind(id)
            .fetch_one(&mut *conn)
            .await
            .map_err(StoreError::db("reading a document change"))?;
            ChangeBody::Doc(DocWrite {
                key: r.get(0),
                value: r.get(1),
                context: decode_context(&r.get::<Vec<u8>, _>(2))?,
            })
        }
        3 => {
            let r = sqlx::query(
                "SELECT w.key, t.bytes FROM twin_changes t JOIN twins w ON w.id = t.twin_id WHERE t.change_id = ?",
            )
            .bind(id)
            .fetch_one(&mut *conn)
            .await
            .map_err(StoreError::db("reading a twin change"))?;
            ChangeBody::Twin(TwinChange {
                key: r.get(0),
                change: r.get(1),
            })
        }
        other => {
            return Err(StoreError::Decode {
                what: "change log row",
                detail: format!("unknown change kind {other}"),
            });
        }
    };
    Ok(Change {
        actor,
        seq,
        hlc,
        body,
    })
}
