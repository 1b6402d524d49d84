//! Storing a readings change inside the writer's transaction: the change-log row with its
//! manifest, series rows (unit/metadata last-writer-wins), the readings themselves in
//! multi-row inserts, and the per-minute rollups. Readings are stored once; the manifest only
//! says where to find them again (series, time range, count).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::{QueryBuilder, Row, Sqlite};

use crate::digest::readings_hash;
use crate::writer::{SeriesSlot, Writer};
use crate::{
    ActorId, ChangeEvent, ChangeEventKind, Hlc, ReadingBatch, Result, SeriesPoints, StoreError,
};

/// Rows per multi-row INSERT (4 parameters each, well under SQLite's 32,766).
const INSERT_CHUNK: usize = 1000;
/// Rollup rows per upsert statement (10 parameters each).
const ROLLUP_CHUNK: usize = 500;
/// Merges a minute aggregate into an existing rollup row. Ties on time resolve by value, as
/// in [`MinuteAgg::add`].
const ROLLUP_UPSERT: &str = " ON CONFLICT(series_id, minute) DO UPDATE SET \
     n = n + excluded.n, total = total + excluded.total, \
     vmin = min(vmin, excluded.vmin), vmax = max(vmax, excluded.vmax), \
     first_value = CASE WHEN excluded.first_ts < first_ts OR (excluded.first_ts = first_ts AND excluded.first_value < first_value) THEN excluded.first_value ELSE first_value END, \
     first_ts = min(first_ts, excluded.first_ts), \
     last_value = CASE WHEN excluded.last_ts > last_ts OR (excluded.last_ts = last_ts AND excluded.last_value > last_value) THEN excluded.last_value ELSE last_value END, \
     last_ts = max(last_ts, excluded.last_ts)";
/// One minute in ms: the rollup granularity.
pub(crate) const MINUTE_MS: i64 = 60_000;

/// Where the readings of one series of a change are, so the change can be rebuilt for sync.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ManifestEntry {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
    pub ts_min: i64,
    pub ts_max: i64,
    pub count: u64,
}

/// Aggregate of the readings of one series in one minute.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MinuteAgg {
    pub minute: i64,
    pub n: i64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub first: (i64, f64),
    pub last: (i64, f64),
}

impl MinuteAgg {
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
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        if ts < self.first.0 || (ts == self.first.0 && v < self.first.1) {
            self.first = (ts, v);
        }
        if ts > self.last.0 || (ts == self.last.0 && v > self.last.1) {
            self.last = (ts, v);
        }
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

pub(crate) fn encode_manifest(batch: &ReadingBatch) -> Vec<u8> {
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
    let mut out = Vec::new();
    ciborium::into_writer(&entries, &mut out).expect("encoding a manifest into memory");
    out
}

pub(crate) fn decode_manifest(bytes: &[u8]) -> Result<Vec<ManifestEntry>> {
    ciborium::from_reader(bytes).map_err(|e| StoreError::Decode {
        what: "readings manifest",
        detail: e.to_string(),
    })
}

impl Writer {
    /// Stores one readings change (local or remote). The batch must be normalized.
    pub(crate) async fn store_readings(
        &mut self,
        actor: ActorId,
        seq: u64,
        hlc: Hlc,
        batch: &ReadingBatch,
        remote: bool,
    ) -> Result<()> {
        let slot = self.actor_slot(actor).await?;
        let change_id = self
            .insert_change_row(slot.idx, seq, hlc, 1, Some(encode_manifest(batch)))
            .await?;
        let mut ids = Vec::with_capacity(batch.series.len());
        for s in &batch.series {
            ids.push(self.series_id(s, hlc, actor).await?);
        }

        // Readings: one multi-row INSERT per chunk across all series of the batch. Rows and
        // rollups are materialised first: iterator adaptors must not live across an await.
        let rows: Vec<(i64, i64, f64)> = batch
            .series
            .iter()
            .zip(&ids)
            .flat_map(|(s, &id)| s.ts.iter().zip(&s.values).map(move |(&t, &v)| (id, t, v)))
            .collect();
        for chunk in rows.chunks(INSERT_CHUNK) {
            let mut qb: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT INTO readings (series_id, ts, change_id, value) ");
            qb.push_values(chunk, |mut b, &(id, t, v)| {
                b.push_bind(id)
                    .push_bind(t)
                    .push_bind(change_id)
                    .push_bind(v);
            });
            qb.build()
                .execute(&mut self.conn)
                .await
                .map_err(StoreError::db("inserting readings"))?;
        }

        let aggs: Vec<(i64, MinuteAgg)> = batch
            .series
            .iter()
            .zip(&ids)
            .flat_map(|(s, &id)| {
                minute_aggs(&s.ts, &s.values)
                    .into_iter()
                    .map(move |a| (id, a))
            })
            .collect();
        for chunk in aggs.chunks(ROLLUP_CHUNK) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO rollup_1m (series_id, minute, n, total, vmin, vmax, first_ts, first_value, last_ts, last_value) ",
            );
            qb.push_values(chunk, |mut b, (id, a)| {
                b.push_bind(*id)
                    .push_bind(a.minute)
                    .push_bind(a.n)
                    .push_bind(a.sum)
                    .push_bind(a.min)
                    .push_bind(a.max)
                    .push_bind(a.first.0)
                    .push_bind(a.first.1)
                    .push_bind(a.last.0)
                    .push_bind(a.last.1);
            });
            qb.push(ROLLUP_UPSERT);
            qb.build()
                .execute(&mut self.conn)
                .await
                .map_err(StoreError::db("updating rollups"))?;
        }

        self.advance(actor, seq).await?;
        for s in &batch.series {
            self.digest
                .add(&readings_hash(&actor, seq, &s.name, &s.ts, &s.values));
        }
        self.pending_events.push(ChangeEvent {
            local_id: change_id,
            actor,
            seq,
            hlc,
            remote,
            kind: ChangeEventKind::Readings {
                series: batch.series.iter().map(|s| s.name.clone()).collect(),
                count: batch.len(),
            },
        });
        Ok(())
    }

    /// The id of a series, creating it when new and applying unit/metadata last-writer-wins.
    async fn series_id(&mut self, s: &SeriesPoints, hlc: Hlc, actor: ActorId) -> Result<i64> {
        // A batch without unit or metadata has no opinion about them and changes nothing.
        let opinion = s.unit.is_some() || !s.meta.is_empty();
        let meta_json = || serde_json::to_string(&s.meta).expect("string map to JSON");
        if !self.series.contains_key(&s.name) {
            let row = sqlx::query("SELECT id, attr_hlc, attr_actor FROM series WHERE name = ?")
                .bind(&s.name)
                .fetch_optional(&mut self.conn)
                .await
                .map_err(StoreError::db("looking up a series"))?;
            let slot = match row {
                Some(r) => SeriesSlot {
                    id: r.get(0),
                    attr_hlc: r.get::<i64, _>(1) as u64,
                    attr_actor: r.get::<Vec<u8>, _>(2).try_into().unwrap_or([0; 16]),
                },
                None => {
                    let (attr_hlc, attr_actor) = if opinion {
                        (hlc.0, actor.0)
                    } else {
                        (0, [0; 16])
                    };
                    let id = sqlx::query(
                        "INSERT INTO series (name, unit, meta, attr_hlc, attr_actor) VALUES (?, ?, ?, ?, ?)",
                    )
                    .bind(&s.name)
                    .bind(&s.unit)
                    .bind(meta_json())
                    .bind(attr_hlc as i64)
                    .bind(attr_actor.to_vec())
                    .execute(&mut self.conn)
                    .await
                    .map_err(StoreError::db("creating a series"))?
                    .last_insert_rowid();
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
        let slot = self.series.get(&s.name).cloned().expect("cached above");
        if opinion && (hlc.0, actor.0) > (slot.attr_hlc, slot.attr_actor) {
            sqlx::query(
                "UPDATE series SET unit = ?, meta = ?, attr_hlc = ?, attr_actor = ? WHERE id = ?",
            )
            .bind(&s.unit)
            .bind(meta_json())
            .bind(hlc.0 as i64)
            .bind(actor.0.to_vec())
            .bind(slot.id)
            .execute(&mut self.conn)
            .await
            .map_err(StoreError::db("updating series attributes"))?;
            self.series.insert(
                s.name.clone(),
                SeriesSlot {
                    id: slot.id,
                    attr_hlc: hlc.0,
                    attr_actor: actor.0,
                },
            );
        }
        Ok(slot.id)
    }
}
