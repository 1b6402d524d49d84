//! Storing readings changes inside the writer's transaction: the change-log row with its
//! manifest, series rows (unit/metadata last-writer-wins), the readings themselves and the
//! per-minute rollups. Readings are stored once; the manifest only says where to find them
//! again (series, time range, count). Changes are staged in memory and a run of them (one
//! local append, or the consecutive readings changes of one `apply_remote` call) is written
//! with multi-row statements (`multirow.rs`) on the writer thread.

use std::collections::{BTreeMap, HashMap};

use rusqlite::OptionalExtension;

use serde::{Deserialize, Serialize};

use crate::chain::LocalSeal;
use crate::digest::{readings_hash, timing_hash};
use crate::multirow::{Binder, statement_chunks, values_sql, with_statement};
use crate::seal;
use crate::stored_cbor;
use crate::writer::{SeriesSlot, Writer};
use crate::{
    ActorId, ChangeEvent, ChangeEventKind, Hlc, PrunedRollup, ReadingBatch, ReadingTiming, Result,
    SeriesPoints, StoreError,
};

/// Rows per multi-row INSERT of readings (4 parameters each, well under SQLite's 32,766).
const INSERT_CHUNK: usize = 2000;
/// Change-log rows per INSERT (8 parameters each).
const CHANGE_CHUNK: usize = 1000;
/// Series rows per attribute UPDATE (5 parameters each).
const SERIES_CHUNK: usize = 1000;
/// Rollup rows per upsert statement (10 parameters each).
const ROLLUP_CHUNK: usize = 500;
/// Merges a minute aggregate into an existing rollup row. Ties on time resolve by value, as
/// in [`MinuteAgg::add`]; the total saturates as in [`saturating_sum`] (SQLite turns the NaN
/// of `inf + -inf`, possible only with rows stored by earlier releases, into NULL: 0).
const ROLLUP_UPSERT: &str = " ON CONFLICT(series_id, minute) DO UPDATE SET \
     n = n + excluded.n, \
     total = COALESCE(max(-1.7976931348623157e308, min(1.7976931348623157e308, total + excluded.total)), 0.0), \
     vmin = min(vmin, excluded.vmin), vmax = max(vmax, excluded.vmax), \
     first_value = CASE WHEN excluded.first_ts < first_ts OR (excluded.first_ts = first_ts AND excluded.first_value < first_value) THEN excluded.first_value ELSE first_value END, \
     first_ts = min(first_ts, excluded.first_ts), \
     last_value = CASE WHEN excluded.last_ts > last_ts OR (excluded.last_ts = last_ts AND excluded.last_value > last_value) THEN excluded.last_value ELSE last_value END, \
     last_ts = max(last_ts, excluded.last_ts)";
/// Replaces stored rollup rows with rows already folded onto them.
pub(crate) const ROLLUP_REPLACE: &str = " ON CONFLICT(series_id, minute) DO UPDATE SET \
     n = excluded.n, total = excluded.total, vmin = excluded.vmin, vmax = excluded.vmax, \
     first_ts = excluded.first_ts, first_value = excluded.first_value, \
     last_ts = excluded.last_ts, last_value = excluded.last_value";
/// One minute in ms: the rollup granularity.
pub(crate) const MINUTE_MS: i64 = 60_000;

/// Where the readings of one series of a change are, so the change can be rebuilt for sync.
/// A readings change's manifest is the CBOR list of these ([`encode_manifest`]), the same
/// bytes on every backend (fork detection compares them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Series name.
    pub name: String,
    /// Unit as the change carried it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Metadata as the change carried it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
    /// First timestamp (unix ms).
    pub ts_min: i64,
    /// Last timestamp (unix ms).
    pub ts_max: i64,
    /// How many readings.
    pub count: u64,
}

/// Aggregate of the readings of one series in one minute (a rollup row), or of one bucket
/// of an aggregate query: the fold every backend's rollups and queries share. On the wire
/// (a [`PrunedRollup`](crate::PrunedRollup)'s minutes) one CBOR array of its nine columns.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(
    from = "crate::pruned_rollups::MinuteRow",
    into = "crate::pruned_rollups::MinuteRow"
)]
pub struct MinuteAgg {
    /// Start (unix ms) of the minute, or of the bucket.
    pub minute: i64,
    /// How many readings.
    pub n: i64,
    /// Their sum, held within ±`f64::MAX` at every addition ([`saturating_sum`]).
    pub sum: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// The earliest reading (time, value); at equal times the smaller value.
    pub first: (i64, f64),
    /// The latest reading (time, value); at equal times the larger value.
    pub last: (i64, f64),
}

impl MinuteAgg {
    /// Reads the nine columns `minute, n, sum, min, max, first_ts, first_v, last_ts, last_v`
    /// of a rollup row, starting at column `at`.
    pub(crate) fn from_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<MinuteAgg> {
        Ok(MinuteAgg {
            minute: r.get(at)?,
            n: r.get(at + 1)?,
            sum: r.get(at + 2)?,
            min: r.get(at + 3)?,
            max: r.get(at + 4)?,
            first: (r.get(at + 5)?, r.get(at + 6)?),
            last: (r.get(at + 7)?, r.get(at + 8)?),
        })
    }

    /// The aggregate of one reading, in the minute (or bucket) starting at `minute`.
    pub fn new(minute: i64, ts: i64, v: f64) -> MinuteAgg {
        MinuteAgg {
            minute,
            n: 1,
            sum: v,
            min: v,
            max: v,
            first: (ts, v),
            last: (ts, v),
        }
    }

    /// Folds one reading in. Ties on time resolve by value (smaller first, larger last) so
    /// every replica computes the same rollup whatever the arrival order.
    pub fn add(&mut self, ts: i64, v: f64) {
        self.n += 1;
        self.sum = saturating_sum(self.sum, v);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        if ts < self.first.0 || (ts == self.first.0 && v < self.first.1) {
            self.first = (ts, v);
        }
        if ts > self.last.0 || (ts == self.last.0 && v > self.last.1) {
            self.last = (ts, v);
        }
    }

    /// Folds another aggregate in (same minute, or the same bucket of a query), computing
    /// exactly what [`ROLLUP_UPSERT`] computes for a stored row (self) and a new one (`o`).
    pub fn merge(&mut self, o: &MinuteAgg) {
        self.n += o.n;
        self.sum = saturating_sum(self.sum, o.sum);
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        if o.first.0 < self.first.0 || (o.first.0 == self.first.0 && o.first.1 < self.first.1) {
            self.first = o.first;
        }
        if o.last.0 > self.last.0 || (o.last.0 == self.last.0 && o.last.1 > self.last.1) {
            self.last = o.last;
        }
    }
}

/// `a + b`, held within the finite range: readings are finite, but the sum of two large
/// ones is not (`1e308 + 1e308`), and a later `inf + -inf` would be NaN — a NULL the
/// rollup table refuses, failing the whole write. So a rollup total saturates at
/// ±`f64::MAX` (its average is then approximate; min, max, first and last stay exact), and a
/// NaN from totals stored by earlier releases counts as 0.
pub fn saturating_sum(a: f64, b: f64) -> f64 {
    let sum = a + b;
    if sum.is_nan() {
        0.0
    } else {
        sum.clamp(-f64::MAX, f64::MAX)
    }
}

/// Minute aggregates of one series' sorted readings.
pub(crate) fn minute_aggs(ts: &[i64], values: &[f64]) -> Vec<MinuteAgg> {
    let mut out: Vec<MinuteAgg> = Vec::new();
    for (&t, &v) in ts.iter().zip(values) {
        let minute = t.div_euclid(MINUTE_MS) * MINUTE_MS;
        match out.last_mut() {
            Some(a) if a.minute == minute => a.add(t, v),
            _ => out.push(MinuteAgg::new(minute, t, v)),
        }
    }
    out
}

/// The manifest of a readings change: one [`ManifestEntry`] per series, CBOR.
pub fn encode_manifest(batch: &ReadingBatch) -> Vec<u8> {
    let entries: Vec<ManifestEntry> = batch
        .series
        .iter()
        .map(|s| ManifestEntry {
            name: s.name.clone(),
            unit: s.unit.clone(),
            meta: s.meta.clone(),
            ts_min: s.ts.first().copied().unwrap_or(0),
            ts_max: s.ts.last().copied().unwrap_or(0),
            count: s.ts.len() as u64,
        })
        .collect();
    encode_manifest_entries(&entries)
}

/// A manifest of these entries (what retention leaves of a change's manifest once it pruned
/// some of its series), encoded as [`encode_manifest`] does.
pub fn encode_manifest_entries(entries: &[ManifestEntry]) -> Vec<u8> {
    stored_cbor::encode(entries)
}

/// `batch` as the log reader will serve it back: SQLite keeps a REAL that equals an integer
/// as that integer, so a `-0.0` comes back as `0.0` (the only finite value it does not give
/// back bit for bit). `None` when nothing changes. The digest and a local change's seal are
/// computed over this, so they match what is read back.
fn as_stored(batch: &ReadingBatch) -> Option<ReadingBatch> {
    let negative_zero = |v: &f64| *v == 0.0 && v.is_sign_negative();
    if !batch
        .series
        .iter()
        .any(|s| s.values.iter().any(negative_zero))
    {
        return None;
    }
    let mut stored = batch.clone();
    for v in stored.series.iter_mut().flat_map(|s| s.values.iter_mut()) {
        *v += 0.0;
    }
    Some(stored)
}

/// Reads a manifest written by [`encode_manifest`]: the shape it writes without serde,
/// anything else through it (`written_cbor.rs`).
pub fn decode_manifest(bytes: &[u8]) -> Result<Vec<ManifestEntry>> {
    match crate::written_cbor::decode_manifest(bytes) {
        Some(entries) => Ok(entries),
        None => stored_cbor::decode(bytes, "readings manifest"),
    }
}

/// Readings changes the writer has taken in but not written yet: a run of consecutive
/// readings changes of one job is written by [`Writer::flush_readings`] with a few multi-row
/// statements instead of several statements per change and series.
#[derive(Default)]
pub(crate) struct StagedReadings {
    changes: Vec<StagedChange>,
    /// (index into `changes`, series id, ts, value), in change order.
    rows: Vec<(usize, i64, i64, f64)>,
    /// Per-change minute aggregates in change order, so the upserts fold exactly as they would
    /// change by change.
    aggs: Vec<(i64, MinuteAgg)>,
    /// Series whose unit/metadata a staged change won (last-writer-wins), by id.
    attrs: BTreeMap<i64, SeriesAttrs>,
    /// Rollups of pruned units received with a change: (index into `changes`, series id,
    /// minutes), kept with the change once it has an id (`pruned_rollups.rs`).
    pruned_rollups: Vec<(usize, i64, Vec<MinuteAgg>)>,
}

struct StagedChange {
    actor: ActorId,
    actor_idx: i64,
    seq: u64,
    hlc: Hlc,
    manifest: Vec<u8>,
    remote: bool,
    series: Vec<String>,
    count: usize,
    timing: Option<ReadingTiming>,
    /// The seal of a local change, written with its row.
    seal: Option<LocalSeal>,
}

struct SeriesAttrs {
    unit: Option<String>,
    meta_json: String,
    hlc: u64,
    actor: [u8; 16],
}

impl Writer {
    /// Takes in one readings change (local or remote; the batch must be normalized): caches,
    /// digest and version vector move now, the rows are written by the next
    /// [`flush_readings`](Self::flush_readings), which must run before the job ends and before
    /// any other kind of change is stored (so local ids stay in arrival order).
    /// `pruned_rollups`: those a received change carries (checked by `Change::validate`):
    /// folded into the rollups at the change's place, as its raw readings would have been,
    /// and kept with it; their readings count as pruned, not held.
    pub(crate) fn stage_readings(
        &mut self,
        actor: ActorId,
        seq: u64,
        hlc: Hlc,
        batch: &ReadingBatch,
        (remote, pruned_rollups): (bool, &[PrunedRollup]),
    ) -> Result<()> {
        let stored = as_stored(batch);
        let batch = stored.as_ref().unwrap_or(batch);
        let slot = self.actor_slot(actor)?;
        let mut ids = Vec::with_capacity(batch.series.len());
        for s in &batch.series {
            ids.push(self.series_id(s, hlc, actor)?);
        }
        let staged = &mut self.staged;
        let pos = staged.changes.len();
        for (s, &id) in batch.series.iter().zip(&ids) {
            staged
                .rows
                .extend(s.ts.iter().zip(&s.values).map(|(&t, &v)| (pos, id, t, v)));
            staged
                .aggs
                .extend(minute_aggs(&s.ts, &s.values).into_iter().map(|a| (id, a)));
            self.digest
                .add(&readings_hash(&actor, seq, &s.name, &s.ts, &s.values));
        }
        for r in pruned_rollups {
            // Only a name: a summary has no opinion about the series' unit or metadata.
            let named = SeriesPoints {
                name: r.series.clone(),
                unit: None,
                meta: BTreeMap::new(),
                ts: Vec::new(),
                values: Vec::new(),
            };
            let id = self.series_id(&named, hlc, actor)?;
            let staged = &mut self.staged;
            staged.aggs.extend(r.minutes.iter().map(|m| (id, *m)));
            staged.pruned_rollups.push((pos, id, r.minutes.clone()));
        }
        if let Some(t) = &batch.timing {
            self.digest.add(&timing_hash(&actor, seq, t));
        }
        let seal = match remote {
            true => None,
            false => {
                let body = seal::readings_body_hash(&batch.series, batch.timing.as_ref(), &[]);
                Some(self.seal_local(seq, hlc, body)?)
            }
        };
        self.staged.changes.push(StagedChange {
            actor,
            actor_idx: slot.idx,
            seq,
            hlc,
            manifest: encode_manifest(batch),
            remote,
            series: batch.series.iter().map(|s| s.name.clone()).collect(),
            count: batch.len(),
            timing: batch.timing,
            seal,
        });
        if let Some(s) = self.actors.get_mut(&actor) {
            s.max_seq = seq;
        }
        self.touched.push(actor);
        Ok(())
    }

    /// Writes the staged readings changes: change-log rows, readings, rollups, series
    /// attributes and version-vector rows, each as multi-row statements.
    pub(crate) fn flush_readings(&mut self) -> Result<()> {
        let staged = std::mem::take(&mut self.staged);
        if staged.changes.is_empty() {
            return Ok(());
        }
        let mut ids: HashMap<(i64, i64), i64> = HashMap::with_capacity(staged.changes.len());
        for chunk in statement_chunks(&staged.changes, CHANGE_CHUNK) {
            // RETURNING rows come in no promised order: match them by (actor, seq).
            let sql = values_sql(
                "INSERT INTO changes \
                 (actor_idx, seq, hlc, kind, manifest, prev_hash, body_hash, signature) VALUES ",
                8,
                chunk.len(),
                " RETURNING id, actor_idx, seq",
            );
            with_statement(&self.conn, &sql, |st| {
                let mut b = Binder::new(st);
                for c in chunk {
                    let seal = c.seal.as_ref();
                    b.bind(c.actor_idx)?
                        .bind(c.seq as i64)?
                        .bind(c.hlc.0 as i64)?
                        .bind(1i64)?
                        .bind(&c.manifest)?
                        .bind(seal.map(|s| s.prev.as_slice()))?
                        .bind(seal.map(|s| s.body_hash.as_slice()))?
                        .bind(seal.and_then(LocalSeal::signature_column))?;
                }
                let mut rows = st.raw_query();
                while let Some(r) = rows.next()? {
                    ids.insert((r.get(1)?, r.get(2)?), r.get(0)?);
                }
                Ok(())
            })
            .map_err(StoreError::db("appending to the change log"))?;
        }
        let change_ids = staged
            .changes
            .iter()
            .map(|c| {
                ids.get(&(c.actor_idx, c.seq as i64))
                    .copied()
                    .ok_or(StoreError::Decode {
                        what: "change log insert",
                        detail: format!("no id returned for seq {}", c.seq),
                    })
            })
            .collect::<Result<Vec<i64>>>()?;

        for chunk in statement_chunks(&staged.rows, INSERT_CHUNK) {
            let sql = values_sql(
                "INSERT INTO readings (series_id, ts, change_id, value) VALUES ",
                4,
                chunk.len(),
                "",
            );
            with_statement(&self.conn, &sql, |st| {
                let mut b = Binder::new(st);
                for &(pos, id, t, v) in chunk {
                    b.bind(id)?.bind(t)?.bind(change_ids[pos])?.bind(v)?;
                }
                st.raw_execute()
            })
            .map_err(StoreError::db("inserting readings"))?;
        }

        self.write_rollups(&staged.aggs)?;
        let mut summarised = 0i64;
        for (pos, series_id, minutes) in &staged.pruned_rollups {
            summarised += minutes.iter().map(|m| m.n).sum::<i64>();
            self.keep_pruned_rollups(change_ids[*pos], *series_id, minutes)?;
        }
        if summarised > 0 {
            // In the rollups but not held raw: the readings count stays what is held.
            self.add_readings_pruned(summarised)?;
        }
        for (c, &id) in staged.changes.iter().zip(&change_ids) {
            if let Some(t) = &c.timing {
                self.insert_timing(id, t)?;
            }
        }

        let attrs: Vec<(i64, SeriesAttrs)> = staged.attrs.into_iter().collect();
        for chunk in statement_chunks(&attrs, SERIES_CHUNK) {
            let sql = values_sql(
                "UPDATE series SET unit = v.column2, meta = v.column3, attr_hlc = v.column4, \
                 attr_actor = v.column5 FROM (VALUES ",
                5,
                chunk.len(),
                ") AS v WHERE series.id = v.column1",
            );
            with_statement(&self.conn, &sql, |st| {
                let mut b = Binder::new(st);
                for (id, a) in chunk {
                    b.bind(*id)?
                        .bind(&a.unit)?
                        .bind(&a.meta_json)?
                        .bind(a.hlc as i64)?
                        .bind(a.actor.as_slice())?;
                }
                st.raw_execute()
            })
            .map_err(StoreError::db("updating series attributes"))?;
        }

        // The version vector: each actor's last staged seq (and highest HLC).
        let mut last: Vec<(i64, u64, Hlc)> = Vec::new();
        for c in &staged.changes {
            match last.iter_mut().find(|(idx, ..)| *idx == c.actor_idx) {
                Some(l) => {
                    l.1 = l.1.max(c.seq);
                    l.2 = l.2.max(c.hlc);
                }
                None => last.push((c.actor_idx, c.seq, c.hlc)),
            }
        }
        for (idx, seq, hlc) in last {
            self.store_max_seq(idx, seq, hlc)?;
        }

        self.counts.changes += staged.changes.len() as u64;
        self.counts.readings += staged.rows.len() as u64;
        for (c, local_id) in staged.changes.into_iter().zip(change_ids) {
            self.pending_events.push(ChangeEvent {
                local_id,
                actor: c.actor,
                seq: c.seq,
                hlc: c.hlc,
                remote: c.remote,
                kind: ChangeEventKind::Readings {
                    series: c.series,
                    count: c.count,
                },
            });
        }
        Ok(())
    }

    /// Adds minute aggregates (in change order) to `rollup_1m`. When no (series, minute)
    /// repeats — one change — they are upserted as they are. Otherwise (a run of changes
    /// hitting the same minutes) they are folded in memory onto the stored rows first: the
    /// same float operations in the same order as one upsert per aggregate, so the result is
    /// bit for bit what applying change by change gives, with one row written per minute.
    fn write_rollups(&mut self, aggs: &[(i64, MinuteAgg)]) -> Result<()> {
        let mut keys: HashMap<(i64, i64), usize> = HashMap::with_capacity(aggs.len());
        for (id, a) in aggs {
            let n = keys.len();
            keys.entry((*id, a.minute)).or_insert(n);
        }
        if keys.len() == aggs.len() {
            return self.upsert_rollups(aggs, ROLLUP_UPSERT);
        }
        let mut rows: Vec<Option<(i64, MinuteAgg)>> = vec![None; keys.len()];
        let mut wanted: Vec<(i64, i64)> = keys.keys().copied().collect();
        wanted.sort_unstable();
        for chunk in statement_chunks(&wanted, ROLLUP_CHUNK) {
            let sql = values_sql(
                "WITH k (series_id, minute) AS (VALUES ",
                2,
                chunk.len(),
                ") SELECT r.series_id, r.minute, r.n, r.total, r.vmin, r.vmax, r.first_ts, \
                 r.first_value, r.last_ts, r.last_value FROM k CROSS JOIN rollup_1m r \
                 ON r.series_id = k.series_id AND r.minute = k.minute",
            );
            with_statement(&self.conn, &sql, |st| {
                let mut b = Binder::new(st);
                for &(id, minute) in chunk {
                    b.bind(id)?.bind(minute)?;
                }
                let mut found = st.raw_query();
                while let Some(r) = found.next()? {
                    let key: (i64, i64) = (r.get(0)?, r.get(1)?);
                    let stored = MinuteAgg::from_row(r, 1)?;
                    if let Some(&k) = keys.get(&key) {
                        rows[k] = Some((key.0, stored));
                    }
                }
                Ok(())
            })
            .map_err(StoreError::db("reading rollups"))?;
        }
        for (id, a) in aggs {
            match &mut rows[keys[&(*id, a.minute)]] {
                Some((_, row)) => row.merge(a),
                slot => *slot = Some((*id, *a)),
            }
        }
        let rows: Vec<(i64, MinuteAgg)> = rows.into_iter().flatten().collect();
        self.upsert_rollups(&rows, ROLLUP_REPLACE)
    }

    /// Writes rollup rows with `conflict` deciding what happens to a stored row.
    pub(crate) fn upsert_rollups(
        &mut self,
        rows: &[(i64, MinuteAgg)],
        conflict: &str,
    ) -> Result<()> {
        for chunk in statement_chunks(rows, ROLLUP_CHUNK) {
            let sql = values_sql(
                "INSERT INTO rollup_1m (series_id, minute, n, total, vmin, vmax, first_ts, first_value, last_ts, last_value) VALUES ",
                10,
                chunk.len(),
                conflict,
            );
            with_statement(&self.conn, &sql, |st| {
                let mut b = Binder::new(st);
                for (id, a) in chunk {
                    b.bind(*id)?
                        .bind(a.minute)?
                        .bind(a.n)?
                        .bind(a.sum)?
                        .bind(a.min)?
                        .bind(a.max)?
                        .bind(a.first.0)?
                        .bind(a.first.1)?
                        .bind(a.last.0)?
                        .bind(a.last.1)?;
                }
                st.raw_execute()
            })
            .map_err(StoreError::db("updating rollups"))?;
        }
        Ok(())
    }

    /// The id of a series, creating it when new and applying unit/metadata last-writer-wins
    /// (in the cache now; the row is updated by the next flush).
    fn series_id(&mut self, s: &SeriesPoints, hlc: Hlc, actor: ActorId) -> Result<i64> {
        // A batch without unit or metadata has no opinion about them and changes nothing.
        let opinion = s.unit.is_some() || !s.meta.is_empty();
        let meta_json = || serde_json::to_string(&s.meta).expect("string map to JSON");
        if !self.series.contains_key(&s.name) {
            let row: Option<(i64, i64, Vec<u8>)> = self
                .conn
                .prepare_cached("SELECT id, attr_hlc, attr_actor FROM series WHERE name = ?1")
                .and_then(|mut st| {
                    st.query_row([&s.name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                        .optional()
                })
                .map_err(StoreError::db("looking up a series"))?;
            let slot = match row {
                Some((id, attr_hlc, attr_actor)) => SeriesSlot {
                    id,
                    attr_hlc: attr_hlc as u64,
                    attr_actor: attr_actor.try_into().unwrap_or([0; 16]),
                },
                None => {
                    let (attr_hlc, attr_actor) = if opinion {
                        (hlc.0, actor.0)
                    } else {
                        (0, [0; 16])
                    };
                    self.conn
                        .prepare_cached(
                            "INSERT INTO series (name, unit, meta, attr_hlc, attr_actor) VALUES (?1, ?2, ?3, ?4, ?5)",
                        )
                        .and_then(|mut st| {
                            st.execute(rusqlite::params![
                                &s.name,
                                &s.unit,
                                meta_json(),
                                attr_hlc as i64,
                                attr_actor.as_slice()
                            ])
                        })
                        .map_err(StoreError::db("creating a series"))?;
                    let id = self.conn.last_insert_rowid();
                    self.counts.series += 1;
                    self.series.insert(
                        s.name.clone(),
                        SeriesSlot {
                            id,
                            attr_hlc,
                            attr_actor,
                        },
                    );
                    return Ok(id);
                }
            };
            self.series.insert(s.name.clone(), slot);
        }
        let slot = self.series.get_mut(&s.name).expect("cached above");
        if opinion && (hlc.0, actor.0) > (slot.attr_hlc, slot.attr_actor) {
            slot.attr_hlc = hlc.0;
            slot.attr_actor = actor.0;
            self.staged.attrs.insert(
                slot.id,
                SeriesAttrs {
                    unit: s.unit.clone(),
                    meta_json: meta_json(),
                    hlc: hlc.0,
                    actor: actor.0,
                },
            );
        }
        Ok(slot.id)
    }
}
