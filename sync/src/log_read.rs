//! Rebuilding changes from the change log in batches, for `Store::changes_since` and
//! `Store::log_after`, on a read connection. The bodies of a whole run of log rows are loaded
//! with a few statements, not per change:
//!
//! - readings: the manifests' (series, time range) entries are grouped per series into runs of
//!   nearby time ranges; one statement joins a `VALUES` list of runs with `series` (by name) and
//!   `readings` (a range scan per run, filtered to the run's change ids) and the rows are split
//!   into changes in memory by change id;
//! - the rollups of pruned units (`pruned_rollups.rs`) of readings changes retention pruned:
//!   one `IN (…)` query per chunk of those ids;
//! - documents (single and batches) and twin changes: one `IN (…)` query each per chunk of
//!   ids; a batch's versions come back as several rows of one change id. Compacted twin
//!   changes are rebuilt from their twin's snapshot (`twin/rebuild.rs`, cached).

use std::collections::HashMap;

use rusqlite::Connection;

use crate::correct::{KIND_TIME_CORRECTION, decode_correction};
use crate::docwrite::{KIND_DOC_BATCH, decode_context};
use crate::gap::{KIND_GAP, decode_gap};
use crate::ingest::{ManifestEntry, decode_manifest};
use crate::multirow::{Binder, list_sql, statement_chunks, values_sql, with_statement};
use crate::pruned_rollups::load_pruned_rollups;
use crate::seal::{Hash, Seal, split_hashes};
use crate::twin::{rebuild_compacted, stored_twin_hash as stored_hash};
use crate::{
    ActorId, BootId, Change, ChangeBody, DocBatch, DocWrite, Hlc, ReadingBatch, ReadingTiming,
    Result, SeriesPoints, StoreError, TwinChange,
};

/// The columns every log query selects first (`load` reads them by position); the sixth is a
/// lower bound of the bytes of a document, document batch or twin body (0 for readings; a
/// compacted twin change counts its key only, its chunk being in the snapshot).
pub(crate) const LOG_COLUMNS: &str = "c.id, c.seq, c.hlc, c.kind, c.manifest, \
     CASE c.kind \
       WHEN 2 THEN (SELECT length(k.key) + COALESCE(length(v.value), 0) FROM doc_versions v \
                    JOIN doc_keys k ON k.id = v.key_id WHERE v.change_id = c.id) \
       WHEN 3 THEN (SELECT length(w.key) + length(t.bytes) FROM twin_changes t \
                    JOIN twins w ON w.id = t.twin_id WHERE t.change_id = c.id) \
       WHEN 4 THEN length(c.manifest) \
       WHEN 5 THEN (SELECT SUM(16 + length(k.key) + COALESCE(length(v.value), 0)) \
                    FROM doc_versions v JOIN doc_keys k ON k.id = v.key_id WHERE v.change_id = c.id) \
       ELSE 0 END, \
     c.prev_hash, c.body_hash, c.signature, c.pruned, \
     (SELECT public_key FROM actors WHERE idx = c.actor_idx), c.run_from";

/// How many columns [`LOG_COLUMNS`] selects (a query's next column is at this index).
pub(crate) const LOG_COLUMN_COUNT: usize = 12;

/// Runs per readings statement (6 parameters each, far below SQLite's 32,766).
const RUN_CHUNK: usize = 1000;
/// Ids per document or twin statement.
const ID_CHUNK: usize = 500;
/// Two time ranges of one series join into one run when the gap between them is at most the
/// run's span so far or this, whichever is larger: the scan then crosses at most as much time
/// as it covers (plus a minute), while changes of nearby readings share one range scan.
const MERGE_GAP_MS: i64 = 60_000;

/// A change-log row whose body is not loaded yet.
#[derive(Clone)]
pub(crate) struct LogRow {
    pub id: i64,
    pub actor: ActorId,
    pub seq: u64,
    pub hlc: Hlc,
    kind: i64,
    manifest: Vec<ManifestEntry>,
    /// The stored body of a time correction (kind 4) or a gap record (kind 6).
    correction: Vec<u8>,
    /// Bytes of a document or twin body known from the log query (key, value or change).
    body_bytes: usize,
    /// The seal of a signed change (its actor's key, chain link, signature, pruned units).
    pub seal: Option<Seal>,
    /// The body hash stored with a signed change (`kdelta verify` recomputes it).
    pub body_hash: Option<Hash>,
    /// Hashes of the units retention pruned from this change, signed or not (`past.rs`
    /// needs them for unsigned ones).
    pub pruned: Vec<Hash>,
}

impl LogRow {
    /// Reads the [`LOG_COLUMNS`] of a row.
    pub fn from_row(row: &rusqlite::Row<'_>, actor: ActorId) -> Result<LogRow> {
        let col = StoreError::db("reading the change log");
        let kind: i64 = row.get(3).map_err(col)?;
        let stored = |row: &rusqlite::Row<'_>| {
            row.get::<_, Vec<u8>>(4)
                .map_err(StoreError::db("reading the change log"))
        };
        let (manifest, correction) = match kind {
            1 => (decode_manifest(&stored(row)?)?, Vec::new()),
            KIND_TIME_CORRECTION | KIND_GAP => (Vec::new(), stored(row)?),
            _ => (Vec::new(), Vec::new()),
        };
        let get = |i: usize| -> Result<Option<i64>> {
            row.get(i).map_err(StoreError::db("reading the change log"))
        };
        let blob = |i: usize| -> Result<Option<Vec<u8>>> {
            row.get(i).map_err(StoreError::db("reading the change log"))
        };
        let (prev, body_hash, sig, pruned, key) =
            (blob(6)?, blob(7)?, blob(8)?, blob(9)?, blob(10)?);
        let fixed32 = |b: Option<Vec<u8>>| b.and_then(|b| <Hash>::try_from(b).ok());
        let pruned = pruned.as_deref().map(split_hashes).unwrap_or_default();
        let body_hash = fixed32(body_hash);
        // A signed readings change with no series left and no pruned hashes kept was pruned
        // wholly (`retention.rs` drops its unit hashes then): it travels with its body hash.
        let wholly_pruned = kind == 1 && manifest.is_empty() && pruned.is_empty();
        let seal = match (
            fixed32(prev),
            sig.and_then(|b| <[u8; 64]>::try_from(b).ok()),
        ) {
            (Some(prev), Some(sig)) => Some(Seal {
                // A signed change whose actor has no key is reported by `kdelta verify`;
                // served with a zero key it fails every receiver's check.
                key: fixed32(key).unwrap_or([0; 32]),
                prev,
                sig,
                pruned: pruned.clone(),
                body: body_hash.filter(|_| wholly_pruned),
                run_from: get(11)?.map(|f| f as u64).filter(|_| wholly_pruned),
            }),
            _ => None,
        };
        Ok(LogRow {
            pruned,
            seal,
            body_hash,
            id: get(0)?.unwrap_or(0),
            actor,
            seq: get(1)?.unwrap_or(0) as u64,
            hlc: Hlc(get(2)?.unwrap_or(0) as u64),
            kind,
            manifest,
            correction,
            body_bytes: get(5)?.unwrap_or(0).max(0) as usize,
        })
    }

    /// A lower bound of [`Change::encoded_len`] of the loaded change, known from the log
    /// row alone: a readings change takes at least its series names and 4 bytes per reading
    /// (a one-byte time delta and a half-precision value), a document or twin change at
    /// least its body bytes.
    pub fn size_floor(&self) -> usize {
        match self.kind {
            1 => self
                .manifest
                .iter()
                .map(|e| e.name.len() + e.count as usize * 4)
                .sum::<usize>(),
            _ => self.body_bytes,
        }
    }
}

/// Rows of one actor's log read per statement by [`actor_pages`].
const ACTOR_PAGE: i64 = 512;

/// Calls `page` with the log rows of actor row `idx` (actor `actor`), in seq order, one
/// page of at most 512 at a time, until the log ends or `page` returns `false`. The
/// paging every whole-actor walk shares (`past.rs`, `chain.rs`'s verification); bodies are
/// the caller's to [`load`].
pub(crate) fn actor_pages(
    conn: &Connection,
    actor: ActorId,
    idx: i64,
    mut page: impl FnMut(Vec<LogRow>) -> Result<bool>,
) -> Result<()> {
    let sql = format!(
        "SELECT {LOG_COLUMNS} FROM changes c WHERE c.actor_idx = ?1 AND c.seq > ?2 \
         ORDER BY c.seq LIMIT {ACTOR_PAGE}"
    );
    let mut after = 0i64;
    loop {
        let rows: Vec<LogRow> = {
            let mut st = conn
                .prepare_cached(&sql)
                .map_err(StoreError::db("reading the change log"))?;
            let mut found = st
                .query(rusqlite::params![idx, after])
                .map_err(StoreError::db("reading the change log"))?;
            let mut rows = Vec::new();
            while let Some(r) = found
                .next()
                .map_err(StoreError::db("reading the change log"))?
            {
                rows.push(LogRow::from_row(r, actor)?);
            }
            rows
        };
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = last.seq as i64;
        if !page(rows)? {
            return Ok(());
        }
    }
}

/// Loads the bodies of `rows` and returns their changes in the same order.
pub(crate) fn load(conn: &Connection, rows: Vec<LogRow>) -> Result<Vec<Change>> {
    let mut docs = load_docs(conn, &rows)?;
    let mut batches = load_doc_batches(conn, &rows)?;
    let mut twins = load_twins(conn, &rows)?;
    let timings = load_timings(conn, &rows)?;
    let mut readings = load_readings(conn, &rows, &timings)?;
    // Only a readings change retention pruned can have rollups of pruned units: a signed
    // one lists its pruned unit hashes or, pruned wholly, carries its body hash; an
    // unsigned one (received pruned) may not.
    let may_have_rollups: Vec<i64> = rows
        .iter()
        .filter(|r| {
            r.kind == 1
                && r.seal
                    .as_ref()
                    .is_none_or(|s| !s.pruned.is_empty() || s.body.is_some())
        })
        .map(|r| r.id)
        .collect();
    let mut pruned_rollups = load_pruned_rollups(conn, &may_have_rollups)?;
    let missing = |id: i64, what: &str| StoreError::Decode {
        what: "change log row",
        detail: format!("change {id} has no {what}"),
    };
    let mut out = Vec::with_capacity(rows.len());
    for (i, row) in rows.into_iter().enumerate() {
        let body = match row.kind {
            1 => ChangeBody::Readings(std::mem::take(&mut readings[i])),
            2 => ChangeBody::Doc(
                docs.remove(&row.id)
                    .ok_or_else(|| missing(row.id, "document version"))?,
            ),
            KIND_DOC_BATCH => ChangeBody::DocBatch(
                batches
                    .remove(&row.id)
                    .ok_or_else(|| missing(row.id, "document versions"))?,
            ),
            3 => ChangeBody::Twin(
                twins
                    .remove(&row.id)
                    .ok_or_else(|| missing(row.id, "twin change"))?,
            ),
            KIND_TIME_CORRECTION => ChangeBody::TimeCorrection(decode_correction(&row.correction)?),
            KIND_GAP => ChangeBody::Gap(decode_gap(&row.correction)?),
            other => {
                return Err(StoreError::Decode {
                    what: "change log row",
                    detail: format!("unknown change kind {other}"),
                });
            }
        };
        out.push(Change {
            actor: row.actor,
            seq: row.seq,
            hlc: row.hlc,
            body,
            seal: row.seal,
            pruned_rollups: pruned_rollups.remove(&row.id).unwrap_or_default(),
        });
    }
    Ok(out)
}

fn ids_of(rows: &[LogRow], kind: i64) -> Vec<i64> {
    rows.iter()
        .filter(|r| r.kind == kind)
        .map(|r| r.id)
        .collect()
}

fn load_docs(conn: &Connection, rows: &[LogRow]) -> Result<HashMap<i64, DocWrite>> {
    let select = "SELECT v.change_id, k.key, v.value, v.context, v.pruned FROM doc_versions v \
                  JOIN doc_keys k ON k.id = v.key_id WHERE v.change_id IN (";
    load_bodies(
        conn,
        ids_of(rows, 2),
        select,
        "reading document changes",
        |r| doc_write(r, "reading document changes"),
    )
}

/// The timing record (and correction, if any) of each readings row that has one.
fn load_timings(
    conn: &Connection,
    rows: &[LogRow],
) -> Result<HashMap<i64, (ReadingTiming, Option<i64>)>> {
    let select = "SELECT change_id, boot_id, offset_ms, delta_ms FROM reading_timing \
                  WHERE change_id IN (";
    load_bodies(
        conn,
        ids_of(rows, 1),
        select,
        "reading timing records",
        |r| {
            let col = |e| StoreError::Database {
                context: "reading timing records",
                source: e,
            };
            let boot: [u8; 16] = r
                .get::<_, Vec<u8>>(1)
                .map_err(col)?
                .try_into()
                .map_err(|_| StoreError::Decode {
                    what: "timing record",
                    detail: "boot id is not 16 bytes".into(),
                })?;
            Ok((
                ReadingTiming {
                    boot_id: BootId(boot),
                    offset_ms: r.get(2).map_err(col)?,
                },
                r.get(3).map_err(col)?,
            ))
        },
    )
}

/// The versions of each batch change, in the order they were written (`doc_versions.pos`).
fn load_doc_batches(conn: &Connection, rows: &[LogRow]) -> Result<HashMap<i64, DocBatch>> {
    let select = "SELECT v.change_id, k.key, v.value, v.context, v.pruned FROM doc_versions v \
                  JOIN doc_keys k ON k.id = v.key_id WHERE v.change_id IN (";
    let mut out: HashMap<i64, DocBatch> = HashMap::new();
    for_each_body(
        conn,
        ids_of(rows, KIND_DOC_BATCH),
        select,
        " ORDER BY v.change_id, v.pos",
        "reading document batches",
        |id, r| {
            let write = doc_write(r, "reading document batches")?;
            out.entry(id)
                .or_insert_with(|| DocBatch { writes: Vec::new() })
                .writes
                .push(write);
            Ok(())
        },
    )?;
    Ok(out)
}

/// A `DocWrite` from a row selecting `change_id, key, value, context, pruned`.
fn doc_write(r: &rusqlite::Row<'_>, context: &'static str) -> Result<DocWrite> {
    let col = |source| StoreError::Database { context, source };
    Ok(DocWrite {
        key: r.get(1).map_err(col)?,
        value: r.get(2).map_err(col)?,
        context: decode_context(&r.get::<_, Vec<u8>>(3).map_err(col)?)?,
        pruned: r.get(4).map_err(col)?,
    })
}

/// Twin changes, their chunks as stored or — compacted ones (`twin/compact.rs`) — rebuilt
/// from their twins' snapshots, one snapshot load per twin.
fn load_twins(conn: &Connection, rows: &[LogRow]) -> Result<HashMap<i64, TwinChange>> {
    let select = "SELECT t.change_id, w.key, t.bytes, t.twin_id, t.hash FROM twin_changes t \
                  JOIN twins w ON w.id = t.twin_id WHERE t.change_id IN (";
    let mut compacted = Vec::new();
    let mut out = HashMap::new();
    for_each_body(
        conn,
        ids_of(rows, 3),
        select,
        "",
        "reading twin changes",
        |id, r| {
            let col = |e| StoreError::Database {
                context: "reading twin changes",
                source: e,
            };
            let change: Vec<u8> = r.get(2).map_err(col)?;
            if change.is_empty() {
                let hash: Vec<u8> = r.get(4).map_err(col)?;
                compacted.push((id, r.get(3).map_err(col)?, stored_hash(&hash)?));
            }
            out.insert(
                id,
                TwinChange {
                    key: r.get(1).map_err(col)?,
                    change,
                },
            );
            Ok(())
        },
    )?;
    for (id, chunk) in rebuild_compacted(conn, compacted)? {
        if let Some(t) = out.get_mut(&id) {
            t.change = chunk;
        }
    }
    Ok(out)
}

/// Runs `select` (ending in `IN (`, change id first) for `ids` in chunks of [`ID_CHUNK`] and
/// decodes each row into the body of its change.
fn load_bodies<T>(
    conn: &Connection,
    ids: Vec<i64>,
    select: &str,
    what: &'static str,
    decode: impl Fn(&rusqlite::Row<'_>) -> Result<T>,
) -> Result<HashMap<i64, T>> {
    let mut out = HashMap::new();
    for_each_body(conn, ids, select, "", what, |id, r| {
        out.insert(id, decode(r)?);
        Ok(())
    })?;
    Ok(out)
}

/// Runs `select` (ending in `IN (`, change id first, then `order`) for `ids` in chunks of
/// [`ID_CHUNK`] and hands each row with its change id to `each`.
fn for_each_body(
    conn: &Connection,
    ids: Vec<i64>,
    select: &str,
    order: &str,
    what: &'static str,
    mut each: impl FnMut(i64, &rusqlite::Row<'_>) -> Result<()>,
) -> Result<()> {
    let tail = format!("){order}");
    for chunk in statement_chunks(&ids, ID_CHUNK) {
        let sql = list_sql(select, chunk.len(), &tail);
        // Decoding errors are not SQLite errors: keep the first one aside.
        let mut failed: Option<StoreError> = None;
        with_statement(conn, &sql, |st| {
            let mut b = Binder::new(st);
            for id in chunk {
                b.bind(*id)?;
            }
            let mut rows = st.raw_query();
            while let Some(r) = rows.next()? {
                let id: i64 = r.get(0)?;
                if let Err(e) = each(id, r) {
                    failed = Some(e);
                    break;
                }
            }
            Ok(())
        })
        .map_err(StoreError::db(what))?;
        if let Some(e) = failed {
            return Err(e);
        }
    }
    Ok(())
}

/// One range scan: readings of one series in `[lo, hi]` of changes with ids in `[first, last]`.
struct Run<'a> {
    name: &'a str,
    lo: i64,
    hi: i64,
    first: i64,
    last: i64,
    /// The (change id, row index, series index) of each change read, by change id.
    members: Vec<(i64, usize, usize)>,
}

impl Run<'_> {
    /// Where a row of change `id` goes; `None` for changes outside the set (other actors'
    /// or other pages' readings inside the scanned range).
    fn place(&self, id: i64) -> Option<(usize, usize)> {
        let k = self.members.binary_search_by_key(&id, |m| m.0).ok()?;
        Some((self.members[k].1, self.members[k].2))
    }
}

/// The readings batch of every row (empty for other kinds), series in manifest order.
///
/// A corrected change's readings are stored moved by its correction: they are read at the
/// moved times and given back at the original ones, so the change is what its actor made.
fn load_readings(
    conn: &Connection,
    rows: &[LogRow],
    timings: &HashMap<i64, (ReadingTiming, Option<i64>)>,
) -> Result<Vec<ReadingBatch>> {
    // Empty batches shaped like the manifests, and what to read for each series.
    let mut batches: Vec<ReadingBatch> = Vec::with_capacity(rows.len());
    let mut deltas: Vec<i64> = Vec::with_capacity(rows.len());
    let mut per_series: HashMap<&str, Vec<Wanted>> = HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        let mut batch = ReadingBatch::new();
        let timing = timings.get(&row.id);
        batch.timing = timing.map(|t| t.0);
        let delta = timing.and_then(|t| t.1).unwrap_or(0);
        deltas.push(delta);
        for (j, e) in row.manifest.iter().enumerate() {
            per_series.entry(e.name.as_str()).or_default().push(Wanted {
                lo: e.ts_min.saturating_add(delta),
                hi: e.ts_max.saturating_add(delta),
                id: row.id,
                at: (i, j),
            });
            batch.series.push(SeriesPoints {
                name: e.name.clone(),
                unit: e.unit.clone(),
                meta: e.meta.clone(),
                ts: Vec::with_capacity(e.count.min(1 << 16) as usize),
                values: Vec::with_capacity(e.count.min(1 << 16) as usize),
            });
        }
        batches.push(batch);
    }
    let runs = runs(per_series);
    for chunk in statement_chunks(&runs, RUN_CHUNK) {
        // CROSS JOIN fixes the loop order: each run is one seek and one range scan.
        let sql = values_sql(
            "WITH w (run, name, lo, hi, first, last) AS (VALUES ",
            6,
            chunk.len(),
            ") SELECT w.run, r.change_id, r.ts, r.value FROM w \
             CROSS JOIN series s ON s.name = w.name \
             CROSS JOIN readings r ON r.series_id = s.id AND r.ts BETWEEN w.lo AND w.hi \
             AND r.change_id BETWEEN w.first AND w.last",
        );
        with_statement(conn, &sql, |st| {
            let mut b = Binder::new(st);
            for (k, run) in chunk.iter().enumerate() {
                b.bind(k as i64)?
                    .bind(run.name)?
                    .bind(run.lo)?
                    .bind(run.hi)?
                    .bind(run.first)?
                    .bind(run.last)?;
            }
            // Streamed, not collected: a page can be hundreds of thousands of rows.
            let mut found = st.raw_query();
            while let Some(r) = found.next()? {
                let run = &chunk[r.get::<_, i64>(0)? as usize];
                if let Some((i, j)) = run.place(r.get(1)?) {
                    let s = &mut batches[i].series[j];
                    s.ts.push(r.get::<_, i64>(2)? - deltas[i]);
                    s.values.push(r.get(3)?);
                }
            }
            Ok(())
        })
        .map_err(StoreError::db("reading the readings of changes"))?;
    }
    // A range scan returns rows by time; keep that order whatever plan SQLite picks.
    for s in batches.iter_mut().flat_map(|b| b.series.iter_mut()) {
        if !s.ts.windows(2).all(|w| w[0] < w[1]) {
            let mut pairs: Vec<(i64, f64)> =
                s.ts.iter().copied().zip(s.values.iter().copied()).collect();
            pairs.sort_by_key(|p| p.0);
            (s.ts, s.values) = pairs.into_iter().unzip();
        }
    }
    Ok(batches)
}

/// The readings of one series in one change: its time range and place in the output.
struct Wanted {
    lo: i64,
    hi: i64,
    id: i64,
    at: (usize, usize),
}

/// Groups each series' wanted ranges into runs of nearby time ranges (see
/// [`MERGE_GAP_MS`]). A series' runs are disjoint in time, so no row is read twice.
fn runs(per_series: HashMap<&str, Vec<Wanted>>) -> Vec<Run<'_>> {
    let mut out: Vec<Run> = Vec::new();
    for (name, mut entries) in per_series {
        entries.sort_unstable_by_key(|w| (w.lo, w.hi, w.id));
        let mut current: Option<Run> = None;
        for Wanted { lo, hi, id, at } in entries {
            match &mut current {
                Some(run)
                    if lo.saturating_sub(run.hi)
                        <= run.hi.saturating_sub(run.lo).max(MERGE_GAP_MS) =>
                {
                    run.hi = run.hi.max(hi);
                    run.first = run.first.min(id);
                    run.last = run.last.max(id);
                    run.members.push((id, at.0, at.1));
                }
                _ => {
                    out.extend(current.take());
                    current = Some(Run {
                        name,
                        lo,
                        hi,
                        first: id,
                        last: id,
                        members: vec![(id, at.0, at.1)],
                    });
                }
            }
        }
        out.extend(current);
    }
    for run in &mut out {
        run.members.sort_unstable_by_key(|m| m.0);
    }
    out
}
