//! The readings' side records, listed as the embedded store lists them: timing records of
//! readings sampled under an untrusted clock ([`PgStore::reading_timing`],
//! `GET /v1/readings/timing`) and gap records of readings dropped at their source
//! ([`PgStore::gaps`], `GET /v1/readings/gaps`). Positions are the database's change ids,
//! for paging (`after`); the records are kdelta-sync's types, built from the same stored
//! manifest and gap body as on SQLite.

use kdelta_sync::{
    ActorId, BootId, ChangeMeta, Hlc, ReadingTiming, StoreError, StoredGap, TimingRecord,
    decode_manifest,
};
use sqlx::Row;

use crate::codec::decode_gap;
use crate::error::{PgError, Result};
use crate::read::actor_of;
use crate::store::PgStore;

/// Rows read per statement while looking for records of one series.
const SCAN: i64 = 500;

impl PgStore {
    /// Timing records of readings changes sampled under an untrusted clock (original time
    /// span, correction if any), in change-id order after `after` (0 from the start), at
    /// most `limit` (≤ 10,000); with `series`, only changes holding it, their counts and
    /// spans of that series. Returns (position, record) pairs (`Store::reading_timing`).
    pub async fn reading_timing(
        &self,
        series: Option<&str>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, TimingRecord)>> {
        let ctx = "reading timing records";
        let limit = limit.clamp(1, 10_000);
        let mut out = Vec::new();
        let mut at = after;
        loop {
            let rows = sqlx::query(
                "SELECT t.change_id, a.actor, c.seq, t.boot_id, t.offset_ms, t.delta_ms, \
                 (SELECT x.seq FROM changes x WHERE x.id = t.corrected_by), c.manifest \
                 FROM reading_timing t JOIN changes c ON c.id = t.change_id \
                 JOIN actors a ON a.idx = c.actor_idx \
                 WHERE t.change_id > $1 ORDER BY t.change_id LIMIT $2",
            )
            .bind(at)
            .bind(SCAN)
            .fetch_all(self.pool())
            .await
            .map_err(PgError::db(ctx))?;
            let full = rows.len() as i64 == SCAN;
            for r in rows {
                let id: i64 = r.try_get(0).map_err(PgError::db(ctx))?;
                at = id;
                let boot: [u8; 16] = r
                    .try_get::<Vec<u8>, _>(3)
                    .map_err(PgError::db(ctx))?
                    .try_into()
                    .map_err(|_| {
                        PgError::Store(StoreError::Decode {
                            what: "timing record",
                            detail: "boot id is not 16 bytes".into(),
                        })
                    })?;
                let manifest: Option<Vec<u8>> = r.try_get(7).map_err(PgError::db(ctx))?;
                let entries = decode_manifest(manifest.as_deref().unwrap_or_default())?;
                let chosen: Vec<_> = entries
                    .iter()
                    .filter(|e| series.is_none_or(|s| s == e.name))
                    .collect();
                if chosen.is_empty() {
                    continue;
                }
                let record = TimingRecord {
                    actor: actor_of(&r.try_get::<Vec<u8>, _>(1).map_err(PgError::db(ctx))?)?,
                    seq: r.try_get::<i64, _>(2).map_err(PgError::db(ctx))? as u64,
                    timing: ReadingTiming {
                        boot_id: BootId(boot),
                        offset_ms: r.try_get(4).map_err(PgError::db(ctx))?,
                    },
                    count: chosen.iter().map(|e| e.count).sum(),
                    original_from_ms: chosen.iter().map(|e| e.ts_min).min().unwrap_or(0),
                    original_to_ms: chosen.iter().map(|e| e.ts_max).max().unwrap_or(0),
                    delta_ms: r.try_get(5).map_err(PgError::db(ctx))?,
                    corrected_by: r
                        .try_get::<Option<i64>, _>(6)
                        .map_err(PgError::db(ctx))?
                        .map(|s| s as u64),
                };
                out.push((id, record));
                if out.len() >= limit {
                    return Ok(out);
                }
            }
            if !full {
                return Ok(out);
            }
        }
    }

    /// Gap records after change id `after`, at most `limit` (1..=1000); with `series`,
    /// only records naming it, their other entries left out (`Store::gaps`).
    pub async fn gaps(
        &self,
        series: Option<&str>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<StoredGap>> {
        let ctx = "reading gap records";
        let limit = limit.clamp(1, 1000);
        let mut out = Vec::new();
        let mut at = after;
        loop {
            let rows = sqlx::query(
                "SELECT c.id, a.actor, c.seq, c.hlc, c.manifest FROM changes c \
                 JOIN actors a ON a.idx = c.actor_idx \
                 WHERE c.kind = 6 AND c.id > $1 ORDER BY c.id LIMIT $2",
            )
            .bind(at)
            .bind(SCAN)
            .fetch_all(self.pool())
            .await
            .map_err(PgError::db(ctx))?;
            let full = rows.len() as i64 == SCAN;
            for r in rows {
                let id: i64 = r.try_get(0).map_err(PgError::db(ctx))?;
                at = id;
                let body: Option<Vec<u8>> = r.try_get(4).map_err(PgError::db(ctx))?;
                let mut record = decode_gap(body.as_deref().unwrap_or_default())?;
                if let Some(s) = series {
                    record.entries.retain(|e| e.series == s);
                    if record.entries.is_empty() {
                        continue;
                    }
                }
                let actor: ActorId =
                    actor_of(&r.try_get::<Vec<u8>, _>(1).map_err(PgError::db(ctx))?)?;
                out.push(StoredGap {
                    local_id: id,
                    change: ChangeMeta {
                        actor,
                        seq: r.try_get::<i64, _>(2).map_err(PgError::db(ctx))? as u64,
                        hlc: Hlc(r.try_get::<i64, _>(3).map_err(PgError::db(ctx))? as u64),
                    },
                    record,
                });
                if out.len() >= limit {
                    return Ok(out);
                }
            }
            if !full {
                return Ok(out);
            }
        }
    }
}
