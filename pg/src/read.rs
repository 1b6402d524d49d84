//! Reading the change log: the version vector and digest (from the `actors` rows, which
//! apply transactions keep exact), the changes a peer lacks page by page, and anchors. A
//! page is read in one `REPEATABLE READ` snapshot, so it is consistent while other replicas
//! write. Bodies are loaded with one statement per kind for the whole page: readings by
//! (series, time range, change) through the partitioned table, documents, twin changes.

use std::collections::HashMap;

use kdelta_sync::{
    ActorId, BootId, Change, ChangeBody, Digest, DocBatch, DocWrite, Hlc, PrunedRollup,
    ReadingBatch, ReadingTiming, SeriesPoints, StoreError, TwinChange, VersionVector,
    decode_manifest,
};
use sqlx::{PgConnection, Row};

use crate::codec::{decode_context, decode_correction, decode_gap, decode_seal};
use crate::error::{PgError, Result};
use crate::rollups::agg_from_row;
use crate::store::PgStore;

/// Change-log rows read per statement.
const LOG_PAGE: i64 = 256;

/// A change-log row whose body is not loaded yet.
pub(crate) struct LogRow {
    pub(crate) id: i64,
    pub(crate) actor: ActorId,
    pub(crate) seq: u64,
    pub(crate) hlc: Hlc,
    pub(crate) kind: i16,
    pub(crate) manifest: Option<Vec<u8>>,
    pub(crate) seal: Option<Vec<u8>>,
}

pub(crate) fn actor_of(bytes: &[u8]) -> Result<ActorId> {
    ActorId::from_slice(bytes).ok_or_else(|| {
        PgError::Store(StoreError::Decode {
            what: "stored actor id",
            detail: format!("{} bytes instead of 16", bytes.len()),
        })
    })
}

impl PgStore {
    /// What the hub holds: actor → highest contiguous seq (from the database, so every
    /// replica answers the same).
    pub async fn version_vector(&self) -> Result<VersionVector> {
        let ctx = "reading the version vector";
        let rows = sqlx::query("SELECT actor, max_seq FROM actors WHERE max_seq > 0")
            .fetch_all(&self.inner.pool)
            .await
            .map_err(PgError::db(ctx))?;
        vector_of(rows, ctx)
    }

    /// What the hub holds of `actors` only (actors it holds nothing of are left out).
    pub async fn version_vector_of(&self, actors: &[ActorId]) -> Result<VersionVector> {
        let ctx = "reading the version vector";
        let bytes: Vec<Vec<u8>> = actors.iter().map(|a| a.as_bytes().to_vec()).collect();
        let rows =
            sqlx::query("SELECT actor, max_seq FROM actors WHERE max_seq > 0 AND actor = ANY($1)")
                .bind(&bytes)
                .fetch_all(&self.inner.pool)
                .await
                .map_err(PgError::db(ctx))?;
        vector_of(rows, ctx)
    }

    /// The canonical digest of everything the hub holds: the sum of the per-actor digests
    /// kept by the apply transactions (one row per actor, no scan of the changes).
    pub async fn digest(&self) -> Result<Digest> {
        let rows: Vec<Vec<u8>> = sqlx::query_scalar("SELECT digest FROM actors")
            .fetch_all(&self.inner.pool)
            .await
            .map_err(PgError::db("reading the digest"))?;
        let mut digest = Digest::default();
        for d in rows {
            digest.add_digest(&Digest::from_slice(&d));
        }
        Ok(digest)
    }

    /// Recomputes the digest from the stored changes (a full scan): a check that the
    /// per-actor digests match what is really stored.
    pub async fn verify_digest(&self) -> Result<Digest> {
        let mut digest = Digest::default();
        let mut seen = VersionVector::new();
        loop {
            let page = self.changes_since(&seen, 1 << 20).await?;
            if page.is_empty() {
                return Ok(digest);
            }
            for c in &page {
                digest.add_change(c);
                seen.set(c.actor, c.seq);
            }
        }
    }

    /// The changes the hub holds that a replica with vector `theirs` lacks, in per-actor
    /// seq order (actors in id order), filling at most `byte_budget` bytes of
    /// [`Change::encoded_len`] (exact, kept in the log); at least one change is returned
    /// when any is missing, whatever its size.
    pub async fn changes_since(
        &self,
        theirs: &VersionVector,
        byte_budget: usize,
    ) -> Result<Vec<Change>> {
        self.changes_since_in(theirs, byte_budget, None).await
    }

    /// [`changes_since`](Self::changes_since) of `actors` only: other actors' changes are
    /// never read (a `device` peer under `device_relay = "own"`).
    pub async fn changes_since_of(
        &self,
        actors: &[ActorId],
        theirs: &VersionVector,
        byte_budget: usize,
    ) -> Result<Vec<Change>> {
        self.changes_since_in(theirs, byte_budget, Some(actors))
            .await
    }

    async fn changes_since_in(
        &self,
        theirs: &VersionVector,
        byte_budget: usize,
        only: Option<&[ActorId]>,
    ) -> Result<Vec<Change>> {
        let ctx = "reading the change log";
        let mut tx = self.inner.pool.begin().await.map_err(PgError::db(ctx))?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(PgError::db(ctx))?;
        // Only the actors asked for, when asked: a fleet hub holds thousands.
        let only: Option<Vec<Vec<u8>>> =
            only.map(|actors| actors.iter().map(|a| a.as_bytes().to_vec()).collect());
        let actors = sqlx::query(
            "SELECT idx, actor, max_seq FROM actors \
             WHERE max_seq > 0 AND ($1::bytea[] IS NULL OR actor = ANY($1)) ORDER BY actor",
        )
        .bind(&only)
        .fetch_all(&mut *tx)
        .await
        .map_err(PgError::db(ctx))?;
        let mut chosen: Vec<LogRow> = Vec::new();
        let mut used = 0usize;
        'actors: for a in actors {
            let idx: i64 = a.try_get(0).map_err(PgError::db(ctx))?;
            let actor = actor_of(&a.try_get::<Vec<u8>, _>(1).map_err(PgError::db(ctx))?)?;
            let max = a.try_get::<i64, _>(2).map_err(PgError::db(ctx))? as u64;
            let mut from = theirs.get(&actor);
            while from < max {
                let rows = sqlx::query(
                    "SELECT id, seq, hlc, kind, bytes, manifest, seal FROM changes \
                     WHERE actor_idx = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4",
                )
                .bind(idx)
                .bind(from as i64)
                .bind(max as i64)
                .bind(LOG_PAGE)
                .fetch_all(&mut *tx)
                .await
                .map_err(PgError::db(ctx))?;
                let full = rows.len() as i64 == LOG_PAGE;
                for r in rows {
                    let size = r.try_get::<i32, _>(4).map_err(PgError::db(ctx))?.max(0) as usize;
                    if !chosen.is_empty() && used + size > byte_budget {
                        break 'actors;
                    }
                    used += size;
                    let row = LogRow {
                        id: r.try_get(0).map_err(PgError::db(ctx))?,
                        actor,
                        seq: r.try_get::<i64, _>(1).map_err(PgError::db(ctx))? as u64,
                        hlc: Hlc(r.try_get::<i64, _>(2).map_err(PgError::db(ctx))? as u64),
                        kind: r.try_get(3).map_err(PgError::db(ctx))?,
                        manifest: r.try_get(5).map_err(PgError::db(ctx))?,
                        seal: r.try_get(6).map_err(PgError::db(ctx))?,
                    };
                    from = row.seq;
                    chosen.push(row);
                }
                if !full {
                    break;
                }
            }
        }
        let mut changes = load(&mut tx, chosen).await?;
        tx.commit().await.map_err(PgError::db(ctx))?;
        // A log run received from a device is served from what the peer lacks (its seal is
        // stored as received; the run may reach below what the peer holds).
        kdelta_sync::trim_runs(&mut changes, theirs);
        Ok(changes)
    }

    /// The HLCs of the changes held at the given `(actor, seq)`s, in the order asked (those
    /// not held are left out): the anchors a sync page carries.
    pub async fn hlcs_at(&self, dots: &[(ActorId, u64)]) -> Result<Vec<(ActorId, u64, Hlc)>> {
        if dots.is_empty() {
            return Ok(Vec::new());
        }
        let ctx = "reading the change log";
        let actors: Vec<Vec<u8>> = dots.iter().map(|d| d.0.as_bytes().to_vec()).collect();
        let seqs: Vec<i64> = dots.iter().map(|d| d.1 as i64).collect();
        let rows = sqlx::query(
            "SELECT d.actor, d.seq, c.hlc FROM unnest($1::bytea[], $2::int8[]) WITH ORDINALITY AS d(actor, seq, ord) \
             JOIN actors a ON a.actor = d.actor JOIN changes c ON c.actor_idx = a.idx AND c.seq = d.seq \
             ORDER BY d.ord",
        )
        .bind(&actors)
        .bind(&seqs)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(PgError::db(ctx))?;
        rows.into_iter()
            .map(|r| {
                Ok((
                    actor_of(&r.try_get::<Vec<u8>, _>(0).map_err(PgError::db(ctx))?)?,
                    r.try_get::<i64, _>(1).map_err(PgError::db(ctx))? as u64,
                    Hlc(r.try_get::<i64, _>(2).map_err(PgError::db(ctx))? as u64),
                ))
            })
            .collect()
    }
}

/// The changes stored under the log ids `ids`, as [`PgStore::changes_since`] serves them
/// (what retention left of them), by id; ids not held are left out.
pub(crate) async fn changes_by_id(
    conn: &mut PgConnection,
    ids: &[i64],
) -> Result<HashMap<i64, Change>> {
    let ctx = "reading changes by id";
    let found = sqlx::query(
        "SELECT c.id, a.actor, c.seq, c.hlc, c.kind, c.manifest, c.seal FROM changes c \
         JOIN actors a ON a.idx = c.actor_idx WHERE c.id = ANY($1) ORDER BY c.id",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await
    .map_err(PgError::db(ctx))?;
    let mut rows = Vec::with_capacity(found.len());
    for r in found {
        rows.push(LogRow {
            id: r.try_get(0).map_err(PgError::db(ctx))?,
            actor: actor_of(&r.try_get::<Vec<u8>, _>(1).map_err(PgError::db(ctx))?)?,
            seq: r.try_get::<i64, _>(2).map_err(PgError::db(ctx))? as u64,
            hlc: Hlc(r.try_get::<i64, _>(3).map_err(PgError::db(ctx))? as u64),
            kind: r.try_get(4).map_err(PgError::db(ctx))?,
            manifest: r.try_get(5).map_err(PgError::db(ctx))?,
            seal: r.try_get(6).map_err(PgError::db(ctx))?,
        });
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let changes = load(conn, rows).await?;
    Ok(ids.into_iter().zip(changes).collect())
}

fn vector_of(rows: Vec<sqlx::postgres::PgRow>, ctx: &'static str) -> Result<VersionVector> {
    let mut vv = VersionVector::new();
    for r in rows {
        let a = actor_of(&r.try_get::<Vec<u8>, _>(0).map_err(PgError::db(ctx))?)?;
        vv.set(a, r.try_get::<i64, _>(1).map_err(PgError::db(ctx))? as u64);
    }
    Ok(vv)
}

/// Loads the bodies of `rows`; returns their changes in the same order.
pub(crate) async fn load(conn: &mut PgConnection, rows: Vec<LogRow>) -> Result<Vec<Change>> {
    let ids = |kinds: &[i16]| -> Vec<i64> {
        rows.iter()
            .filter(|r| kinds.contains(&r.kind))
            .map(|r| r.id)
            .collect()
    };
    let mut docs = load_docs(conn, &ids(&[2, 5])).await?;
    let mut twins = load_twins(conn, &ids(&[3])).await?;
    let mut readings = load_readings(conn, &rows).await?;
    let mut pruned_rollups = load_pruned_rollups(conn, &ids(&[1])).await?;
    let missing = |id: i64, what: &str| {
        PgError::Store(StoreError::Decode {
            what: "change log row",
            detail: format!("change {id} has no {what}"),
        })
    };
    let mut out = Vec::with_capacity(rows.len());
    for (i, row) in rows.into_iter().enumerate() {
        let body = match row.kind {
            1 => ChangeBody::Readings(std::mem::take(&mut readings[i])),
            2 => ChangeBody::Doc(
                docs.remove(&row.id)
                    .and_then(|mut w| w.pop())
                    .ok_or_else(|| missing(row.id, "document version"))?,
            ),
            5 => ChangeBody::DocBatch(DocBatch {
                writes: docs
                    .remove(&row.id)
                    .ok_or_else(|| missing(row.id, "document versions"))?,
            }),
            3 => ChangeBody::Twin(
                twins
                    .remove(&row.id)
                    .ok_or_else(|| missing(row.id, "twin change"))?,
            ),
            4 => ChangeBody::TimeCorrection(decode_correction(
                row.manifest.as_deref().unwrap_or_default(),
            )?),
            6 => ChangeBody::Gap(decode_gap(row.manifest.as_deref().unwrap_or_default())?),
            other => {
                return Err(PgError::Store(StoreError::Decode {
                    what: "change log row",
                    detail: format!("unknown change kind {other}"),
                }));
            }
        };
        out.push(Change {
            actor: row.actor,
            seq: row.seq,
            hlc: row.hlc,
            body,
            seal: row.seal.as_deref().map(decode_seal).transpose()?,
            pruned_rollups: pruned_rollups.remove(&row.id).unwrap_or_default(),
        });
    }
    Ok(out)
}

/// The rollups of pruned units kept with each readings change of `ids` that has some
/// (migration 0008), series in bytewise name order (as SQLite serves them) and minutes in
/// order.
async fn load_pruned_rollups(
    conn: &mut PgConnection,
    ids: &[i64],
) -> Result<HashMap<i64, Vec<PrunedRollup>>> {
    let mut out: HashMap<i64, Vec<PrunedRollup>> = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let ctx = "reading the rollups of pruned readings";
    let rows = sqlx::query(
        "SELECT p.change_id, s.name, p.minute, p.n, p.total, p.vmin, p.vmax, p.first_ts, \
           p.first_value, p.last_ts, p.last_value FROM pruned_rollups p \
         JOIN series s ON s.id = p.series_id WHERE p.change_id = ANY($1) \
         ORDER BY p.change_id, s.name COLLATE \"C\", p.minute",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await
    .map_err(PgError::db(ctx))?;
    for r in rows {
        let id: i64 = r.try_get(0).map_err(PgError::db(ctx))?;
        let series: String = r.try_get(1).map_err(PgError::db(ctx))?;
        let minute = agg_from_row(&r, 2).map_err(PgError::db(ctx))?;
        kdelta_sync::push_pruned_minute(out.entry(id).or_default(), series, minute);
    }
    Ok(out)
}

/// The versions each document change wrote, in write order.
async fn load_docs(conn: &mut PgConnection, ids: &[i64]) -> Result<HashMap<i64, Vec<DocWrite>>> {
    let mut out: HashMap<i64, Vec<DocWrite>> = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let ctx = "reading document changes";
    let rows = sqlx::query(
        "SELECT v.change_id, k.key, v.value, v.context, v.pruned FROM doc_versions v \
         JOIN doc_keys k ON k.id = v.key_id WHERE v.change_id = ANY($1) ORDER BY v.change_id, v.ord",
    )
    .bind(ids)
    .fetch_all(conn)
    .await
    .map_err(PgError::db(ctx))?;
    for r in rows {
        let id: i64 = r.try_get(0).map_err(PgError::db(ctx))?;
        out.entry(id).or_default().push(DocWrite {
            key: r.try_get(1).map_err(PgError::db(ctx))?,
            value: r.try_get(2).map_err(PgError::db(ctx))?,
            context: decode_context(&r.try_get::<Vec<u8>, _>(3).map_err(PgError::db(ctx))?)?,
            pruned: r.try_get(4).map_err(PgError::db(ctx))?,
        });
    }
    Ok(out)
}

async fn load_twins(conn: &mut PgConnection, ids: &[i64]) -> Result<HashMap<i64, TwinChange>> {
    let mut out = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let ctx = "reading twin changes";
    let rows =
        sqlx::query("SELECT change_id, key, bytes FROM twin_changes WHERE change_id = ANY($1)")
            .bind(ids)
            .fetch_all(conn)
            .await
            .map_err(PgError::db(ctx))?;
    for r in rows {
        out.insert(
            r.try_get::<i64, _>(0).map_err(PgError::db(ctx))?,
            TwinChange {
                key: r.try_get(1).map_err(PgError::db(ctx))?,
                change: r.try_get(2).map_err(PgError::db(ctx))?,
            },
        );
    }
    Ok(out)
}

/// Windows of one series this close (ms) are read as one.
const WINDOW_MERGE_GAP_MS: i64 = 60_000;

/// `(series, lo, hi)` windows merged per series where they overlap or lie within
/// [`WINDOW_MERGE_GAP_MS`] of each other.
fn merge_windows(mut windows: Vec<(String, i64, i64)>) -> Vec<(String, i64, i64)> {
    windows.sort_unstable();
    let mut out: Vec<(String, i64, i64)> = Vec::new();
    for (name, lo, hi) in windows {
        match out.last_mut() {
            Some((n, _, h)) if *n == name && lo <= h.saturating_add(WINDOW_MERGE_GAP_MS) => {
                *h = (*h).max(hi);
            }
            _ => out.push((name, lo, hi)),
        }
    }
    out
}

/// The readings batch of every row (empty for other kinds), series in manifest order, at
/// the times the change carried (a corrected change's readings are stored moved by its
/// delta and given back at the original times).
async fn load_readings(conn: &mut PgConnection, rows: &[LogRow]) -> Result<Vec<ReadingBatch>> {
    let ctx = "reading the readings of changes";
    let timed: Vec<i64> = rows.iter().filter(|r| r.kind == 1).map(|r| r.id).collect();
    let mut timings: HashMap<i64, (ReadingTiming, i64)> = HashMap::new();
    if !timed.is_empty() {
        let found = sqlx::query(
            "SELECT change_id, boot_id, offset_ms, delta_ms FROM reading_timing WHERE change_id = ANY($1)",
        )
        .bind(&timed)
        .fetch_all(&mut *conn)
        .await
        .map_err(PgError::db(ctx))?;
        for r in found {
            let boot: Vec<u8> = r.try_get(1).map_err(PgError::db(ctx))?;
            let boot: [u8; 16] = boot.try_into().map_err(|_| {
                PgError::Store(StoreError::Decode {
                    what: "timing record",
                    detail: "boot id is not 16 bytes".into(),
                })
            })?;
            timings.insert(
                r.try_get(0).map_err(PgError::db(ctx))?,
                (
                    ReadingTiming {
                        boot_id: BootId(boot),
                        offset_ms: r.try_get(2).map_err(PgError::db(ctx))?,
                    },
                    r.try_get::<Option<i64>, _>(3)
                        .map_err(PgError::db(ctx))?
                        .unwrap_or(0),
                ),
            );
        }
    }
    let mut batches = Vec::with_capacity(rows.len());
    let mut deltas = Vec::with_capacity(rows.len());
    // Where each (change, series) goes, and the time windows to read per series.
    let mut at: HashMap<(i64, String), (usize, usize)> = HashMap::new();
    let mut windows: Vec<(String, i64, i64)> = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let mut batch = ReadingBatch::new();
        let timing = timings.get(&row.id);
        batch.timing = timing.map(|t| t.0);
        let delta = timing.map_or(0, |t| t.1);
        deltas.push(delta);
        if row.kind == 1 {
            let entries = decode_manifest(row.manifest.as_deref().unwrap_or_default())?;
            for (j, e) in entries.into_iter().enumerate() {
                at.insert((row.id, e.name.clone()), (i, j));
                windows.push((
                    e.name.clone(),
                    e.ts_min.saturating_add(delta),
                    e.ts_max.saturating_add(delta),
                ));
                batch.series.push(SeriesPoints {
                    name: e.name,
                    unit: e.unit,
                    meta: e.meta,
                    ts: Vec::with_capacity(e.count.min(1 << 16) as usize),
                    values: Vec::with_capacity(e.count.min(1 << 16) as usize),
                });
            }
        }
        batches.push(batch);
    }
    if windows.is_empty() {
        return Ok(batches);
    }
    // One scan per series and merged window, keeping the page's changes: the changes of a
    // page (many devices writing one series name in the same minutes, read in commit
    // order) share their windows, and a window read once per change would read every
    // device's readings once per change.
    let windows = merge_windows(windows);
    let ids: Vec<i64> = rows.iter().filter(|r| r.kind == 1).map(|r| r.id).collect();
    let (names, los, his): (Vec<String>, Vec<i64>, Vec<i64>) = windows.into_iter().fold(
        (Vec::new(), Vec::new(), Vec::new()),
        |(mut n, mut l, mut h), (name, lo, hi)| {
            n.push(name);
            l.push(lo);
            h.push(hi);
            (n, l, h)
        },
    );
    let found = sqlx::query(
        "SELECT r.change_id, w.name, r.ts, r.value \
         FROM unnest($2::text[], $3::int8[], $4::int8[]) AS w(name, lo, hi) \
         JOIN series s ON s.name = w.name \
         JOIN readings r ON r.series_id = s.id AND r.ts BETWEEN w.lo AND w.hi \
         JOIN unnest($1::int8[]) AS page(change_id) ON page.change_id = r.change_id",
    )
    .bind(&ids)
    .bind(&names)
    .bind(&los)
    .bind(&his)
    .fetch_all(&mut *conn)
    .await
    .map_err(PgError::db(ctx))?;
    let mut points: Vec<Vec<Vec<(i64, f64)>>> = batches
        .iter()
        .map(|b| vec![Vec::new(); b.series.len()])
        .collect();
    for r in found {
        let change: i64 = r.try_get(0).map_err(PgError::db(ctx))?;
        let name: String = r.try_get(1).map_err(PgError::db(ctx))?;
        // A reading of a page's change in another of its series' windows: not listed in
        // that change's manifest under this name, so not one of its readings.
        let Some(&(i, j)) = at.get(&(change, name)) else {
            continue;
        };
        let ts: i64 = r.try_get(2).map_err(PgError::db(ctx))?;
        points[i][j].push((ts - deltas[i], r.try_get(3).map_err(PgError::db(ctx))?));
    }
    for (batch, series_points) in batches.iter_mut().zip(points) {
        for (s, mut p) in batch.series.iter_mut().zip(series_points) {
            p.sort_unstable_by_key(|&(ts, _)| ts);
            (s.ts, s.values) = p.into_iter().unzip();
        }
    }
    Ok(batches)
}

/// The implied hash of actor `idx`'s changes held here (`kdelta_sync::link_unsigned`): the
/// hash they would chain to had they been signed from seq 1, as SQLite's `past.rs` computes
/// it. `None` when one of them is signed or a seq is missing. Read inside the apply
/// transaction, under the actor row's lock.
pub(crate) async fn unsigned_past_hash(
    conn: &mut PgConnection,
    actor: ActorId,
    idx: i64,
) -> Result<Option<[u8; 32]>> {
    let ctx = "reading an actor's unsigned past";
    let mut hash = kdelta_sync::seal::CHAIN_START;
    let mut after = 0i64;
    loop {
        let found = sqlx::query(
            "SELECT id, seq, hlc, kind, manifest, seal FROM changes \
             WHERE actor_idx = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(idx)
        .bind(after)
        .bind(LOG_PAGE)
        .fetch_all(&mut *conn)
        .await
        .map_err(PgError::db(ctx))?;
        if found.is_empty() {
            return Ok(Some(hash));
        }
        let mut rows = Vec::with_capacity(found.len());
        for r in found {
            let row = LogRow {
                id: r.try_get(0).map_err(PgError::db(ctx))?,
                actor,
                seq: r.try_get::<i64, _>(1).map_err(PgError::db(ctx))? as u64,
                hlc: Hlc(r.try_get::<i64, _>(2).map_err(PgError::db(ctx))? as u64),
                kind: r.try_get(3).map_err(PgError::db(ctx))?,
                manifest: r.try_get(4).map_err(PgError::db(ctx))?,
                seal: r.try_get(5).map_err(PgError::db(ctx))?,
            };
            if row.seal.is_some() || row.seq != after as u64 + 1 {
                return Ok(None);
            }
            after = row.seq as i64;
            rows.push(row);
        }
        for c in load(conn, rows).await? {
            hash = kdelta_sync::link_unsigned(&hash, &c, &[]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(name: &str, lo: i64, hi: i64) -> (String, i64, i64) {
        (name.to_owned(), lo, hi)
    }

    #[test]
    fn windows_merge_per_series_when_they_overlap_or_are_close() {
        let merged = merge_windows(vec![
            w("b", 0, 10),
            w("a", 100_000, 100_100),
            w("a", 0, 9_999),
            w("a", 5_000, 20_000),
            w("a", 80_000, 90_000), // within the gap of 20_000
            w("b", 0, 10),          // a duplicate window
        ]);
        assert_eq!(merged, vec![w("a", 0, 100_100), w("b", 0, 10)]);
        let apart = merge_windows(vec![w("a", 0, 1), w("a", 60_002, 60_003)]);
        assert_eq!(apart.len(), 2);
    }
}
