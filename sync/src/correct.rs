//! Storing timing records and time corrections inside the writer's transaction (the rule is
//! in `timing.rs`). A correction moves the readings of each corrected change to
//! `ts + delta_ms` (rows are read, deleted and re-inserted, so a shift never collides with a
//! row of the same change not moved yet), recomputes the rollup minutes it left and entered
//! (from the readings and the kept rollups of pruned units, `pruned_rollups.rs`),
//! and marks the change's timing record corrected. The readings change in the log is not
//! altered: rebuilding it for sync subtracts the delta again (`log_read.rs`).
//!
//! Also the read side: [`timing_records`] lists timing records for `Store::reading_timing`.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};

use crate::digest::correction_hash;
use crate::ingest::{MINUTE_MS, MinuteAgg, ROLLUP_REPLACE, decode_manifest, minute_aggs};
use crate::stored_cbor;
use crate::timing::ranges_of;
use crate::writer::Writer;
use crate::{
    ActorId, BootId, ChangeEvent, ChangeEventKind, ChangeMeta, Hlc, MAX_CORRECTION_RANGES,
    MAX_TS_MS, ReadingTiming, Result, StoreError, TimeBasis, TimeCorrection, TimingRecord,
};

/// `changes.kind` of a time correction.
pub(crate) const KIND_TIME_CORRECTION: i64 = 4;

/// Most readings changes one local correction covers; the caller asks again for the rest.
const MAX_CORRECTED_PER_CHANGE: usize = 10_000;

/// This store's uncorrected readings changes of one boot, oldest first, at most `?3`: from
/// the open-timing index, in local id order (an actor's changes are stored in seq order, and
/// the caller sorts by seq all the same), so the scan stops at the limit. Left to choose,
/// SQLite walks every change of the actor from seq 1 in the writer — a year of a device's
/// log before the first reading of a boot whose clock was wrong (`query_plans.rs`).
pub(crate) const OPEN_TIMINGS: &str = "SELECT c.seq, t.offset_ms FROM reading_timing t \
     CROSS JOIN changes c ON c.id = t.change_id \
     WHERE t.boot_id = ?1 AND t.delta_ms IS NULL AND c.actor_idx = ?2 \
     ORDER BY t.change_id LIMIT ?3";

/// Encodes a correction's body as stored in `changes.manifest` (and hashed).
pub(crate) fn encode_correction(c: &TimeCorrection) -> Vec<u8> {
    stored_cbor::encode(c)
}

/// Decodes a stored correction body.
pub(crate) fn decode_correction(bytes: &[u8]) -> Result<TimeCorrection> {
    stored_cbor::decode(bytes, "stored time correction")
}

impl Writer {
    /// Records the timing of readings change `change_id`.
    pub(crate) fn insert_timing(&mut self, change_id: i64, t: &ReadingTiming) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO reading_timing (change_id, boot_id, offset_ms) VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut st| st.execute(params![change_id, t.boot_id.0.as_slice(), t.offset_ms]))
            .map(drop)
            .map_err(StoreError::db("recording the timing of readings"))
    }

    /// Writes a local correction of this store's uncorrected readings of boot `boot`, whose
    /// true offset (true time minus monotonic time) is `true_offset_ms`. `None` when there is
    /// nothing to correct. Covers at most [`MAX_CORRECTED_PER_CHANGE`] changes; call again.
    pub(crate) fn correct_local(
        &mut self,
        boot: BootId,
        true_offset_ms: i64,
        basis: TimeBasis,
    ) -> Result<Option<ChangeMeta>> {
        let own = self.actor_slot(self.actor)?.idx;
        let mut entries: Vec<(u64, i64)> = {
            let mut st = self
                .conn
                .prepare_cached(OPEN_TIMINGS)
                .map_err(StoreError::db("finding readings to correct"))?;
            st.query_map(
                params![boot.0.as_slice(), own, MAX_CORRECTED_PER_CHANGE as i64],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)?)),
            )
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(StoreError::db("finding readings to correct"))?
            .into_iter()
            .map(|(seq, offset)| (seq, true_offset_ms.saturating_sub(offset)))
            .collect()
        };
        entries.sort_unstable_by_key(|&(seq, _)| seq);
        let mut ranges = ranges_of(&entries);
        ranges.truncate(MAX_CORRECTION_RANGES);
        if ranges.is_empty() {
            return Ok(None);
        }
        let correction = TimeCorrection {
            boot_id: boot,
            basis,
            ranges,
        };
        let (seq, hlc) = self.next_local();
        let actor = self.actor;
        self.flush_readings()?;
        self.store_correction(actor, seq, hlc, &correction, false)?;
        Ok(Some(ChangeMeta { actor, seq, hlc }))
    }

    /// Stores a correction change (local and sealed here, or remote and validated) and
    /// applies it.
    pub(crate) fn store_correction(
        &mut self,
        actor: ActorId,
        seq: u64,
        hlc: Hlc,
        correction: &TimeCorrection,
        remote: bool,
    ) -> Result<()> {
        let slot = self.actor_slot(actor)?;
        let body = encode_correction(correction);
        self.digest.add(&correction_hash(&actor, seq, hlc, &body));
        let seal = match remote {
            true => None,
            false => {
                let body = crate::ChangeBody::TimeCorrection(correction.clone());
                Some(self.seal_local(seq, hlc, crate::seal::body_hash(&body, &[]))?)
            }
        };
        let id = self.insert_sealed_change_row(
            slot.idx,
            seq,
            hlc,
            KIND_TIME_CORRECTION,
            Some(body),
            seal.as_ref(),
        )?;
        self.advance(actor, seq, hlc)?;

        // Per series, the time spans whose rollup minutes must be recomputed.
        let mut spans: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
        let mut corrected = 0usize;
        for r in &correction.ranges {
            let targets: Vec<(i64, Vec<u8>)> = {
                let mut st = self
                    .conn
                    .prepare_cached(
                        "SELECT t.change_id, c.manifest FROM reading_timing t \
                         JOIN changes c ON c.id = t.change_id \
                         WHERE c.actor_idx = ?1 AND c.seq BETWEEN ?2 AND ?3 \
                         AND t.boot_id = ?4 AND t.delta_ms IS NULL ORDER BY c.seq",
                    )
                    .map_err(StoreError::db("finding corrected readings"))?;
                st.query_map(
                    params![
                        slot.idx,
                        r.first_seq as i64,
                        r.last_seq as i64,
                        correction.boot_id.0.as_slice()
                    ],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(StoreError::db("finding corrected readings"))?
            };
            for (change_id, manifest) in targets {
                let entries = decode_manifest(&manifest)?;
                let fits = entries.iter().all(|e| {
                    (0..MAX_TS_MS).contains(&e.ts_min.saturating_add(r.delta_ms))
                        && (0..MAX_TS_MS).contains(&e.ts_max.saturating_add(r.delta_ms))
                });
                if !fits {
                    // Every replica decides the same: the change stays uncorrected.
                    continue;
                }
                for e in &entries {
                    let Some(series_id) = self.series_id_of(&e.name)? else {
                        continue;
                    };
                    self.shift_readings(series_id, change_id, e.ts_min, e.ts_max, r.delta_ms)?;
                    let span = spans.entry(series_id).or_default();
                    span.push((e.ts_min, e.ts_max));
                    span.push((e.ts_min + r.delta_ms, e.ts_max + r.delta_ms));
                }
                self.conn
                    .prepare_cached(
                        "UPDATE reading_timing SET delta_ms = ?1, corrected_by = ?2 WHERE change_id = ?3",
                    )
                    .and_then(|mut st| st.execute(params![r.delta_ms, id, change_id]))
                    .map_err(StoreError::db("marking readings corrected"))?;
                corrected += 1;
            }
        }
        for (series_id, spans) in spans {
            for (lo, hi) in merge_minute_spans(spans) {
                self.recompute_rollups(series_id, lo, hi)?;
            }
        }
        self.pending_events.push(ChangeEvent {
            local_id: id,
            actor,
            seq,
            hlc,
            remote,
            kind: ChangeEventKind::TimeCorrection { corrected },
        });
        Ok(())
    }

    /// How far the readings of change `change_id` are stored from their original times:
    /// `Some(0)` without a timing record, `Some(delta)` once corrected, `None` while they
    /// wait for a correction (their true time, and so their age, is unknown).
    pub(crate) fn correction_delta(&mut self, change_id: i64) -> Result<Option<i64>> {
        let row: Option<Option<i64>> = self
            .conn
            .prepare_cached("SELECT delta_ms FROM reading_timing WHERE change_id = ?1")
            .and_then(|mut st| st.query_row([change_id], |r| r.get(0)).optional())
            .map_err(StoreError::db("reading the timing of readings"))?;
        Ok(match row {
            None => Some(0),
            Some(delta) => delta,
        })
    }

    fn series_id_of(&mut self, name: &str) -> Result<Option<i64>> {
        if let Some(s) = self.series.get(name) {
            return Ok(Some(s.id));
        }
        self.conn
            .prepare_cached("SELECT id FROM series WHERE name = ?1")
            .and_then(|mut st| st.query_row([name], |r| r.get(0)).optional())
            .map_err(StoreError::db("looking up a series"))
    }

    /// Moves the readings of one series of one change by `delta` ms.
    fn shift_readings(
        &mut self,
        series_id: i64,
        change_id: i64,
        lo: i64,
        hi: i64,
        delta: i64,
    ) -> Result<()> {
        let rows: Vec<(i64, f64)> = self
            .conn
            .prepare_cached(
                "DELETE FROM readings WHERE series_id = ?1 AND ts BETWEEN ?2 AND ?3 \
                 AND change_id = ?4 RETURNING ts, value",
            )
            .and_then(|mut st| {
                st.query_map(params![series_id, lo, hi, change_id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect()
            })
            .map_err(StoreError::db("moving corrected readings"))?;
        let mut insert = self
            .conn
            .prepare_cached(
                "INSERT INTO readings (series_id, ts, change_id, value) VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(StoreError::db("moving corrected readings"))?;
        for (ts, value) in rows {
            insert
                .execute(params![series_id, ts + delta, change_id, value])
                .map_err(StoreError::db("moving corrected readings"))?;
        }
        Ok(())
    }

    /// Rebuilds the rollup rows of one series for the minutes `lo..=hi` (minute starts) from
    /// the readings, in (time, value, change) order so every replica folds alike.
    fn recompute_rollups(&mut self, series_id: i64, lo: i64, hi: i64) -> Result<()> {
        self.conn
            .prepare_cached(
                "DELETE FROM rollup_1m WHERE series_id = ?1 AND minute BETWEEN ?2 AND ?3",
            )
            .and_then(|mut st| st.execute(params![series_id, lo, hi]))
            .map_err(StoreError::db("recomputing rollups"))?;
        let (ts, values): (Vec<i64>, Vec<f64>) = self
            .conn
            .prepare_cached(
                "SELECT ts, value FROM readings WHERE series_id = ?1 AND ts BETWEEN ?2 AND ?3 \
                 ORDER BY ts, value, change_id",
            )
            .and_then(|mut st| {
                st.query_map(params![series_id, lo, hi + MINUTE_MS - 1], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, f64>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(StoreError::db("recomputing rollups"))?
            .into_iter()
            .unzip();
        let mut aggs: BTreeMap<i64, MinuteAgg> = minute_aggs(&ts, &values)
            .into_iter()
            .map(|a| (a.minute, a))
            .collect();
        // Readings pruned from these minutes are gone, their rollups are not
        // (`pruned_rollups.rs`): folded back in an order every replica shares.
        let kept: Vec<MinuteAgg> = self
            .conn
            .prepare_cached(
                "SELECT minute, n, total, vmin, vmax, first_ts, first_value, last_ts, last_value \
                 FROM pruned_rollups WHERE series_id = ?1 AND minute BETWEEN ?2 AND ?3 \
                 ORDER BY minute, first_ts, first_value, last_ts, last_value, n, total",
            )
            .and_then(|mut st| {
                st.query_map(params![series_id, lo, hi], |r| MinuteAgg::from_row(r, 0))?
                    .collect()
            })
            .map_err(StoreError::db("recomputing rollups"))?;
        for k in kept {
            aggs.entry(k.minute)
                .and_modify(|a| a.merge(&k))
                .or_insert(k);
        }
        let aggs: Vec<_> = aggs.into_values().map(|a| (series_id, a)).collect();
        self.upsert_rollups(&aggs, ROLLUP_REPLACE)
    }
}

/// Turns time spans into minute-start spans, merging those that overlap or touch.
fn merge_minute_spans(mut spans: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    let minute = |t: i64| t.div_euclid(MINUTE_MS) * MINUTE_MS;
    spans.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::new();
    for (lo, hi) in spans {
        let (lo, hi) = (minute(lo), minute(hi));
        match out.last_mut() {
            Some(last) if lo <= last.1 + MINUTE_MS => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// Timing records of readings changes, by local id after `after`, at most `limit`; only
/// changes holding `series` when given (counts and time spans are then that series').
pub(crate) fn timing_records(
    conn: &Connection,
    series: Option<&str>,
    after: i64,
    limit: usize,
) -> Result<Vec<(i64, TimingRecord)>> {
    let mut st = conn
        .prepare_cached(
            "SELECT t.change_id, a.actor, c.seq, t.boot_id, t.offset_ms, t.delta_ms, \
             (SELECT seq FROM changes x WHERE x.id = t.corrected_by), c.manifest \
             FROM reading_timing t JOIN changes c ON c.id = t.change_id \
             JOIN actors a ON a.idx = c.actor_idx WHERE t.change_id > ?1 ORDER BY t.change_id",
        )
        .map_err(StoreError::db("reading timing records"))?;
    let mut rows = st
        .query([after])
        .map_err(StoreError::db("reading timing records"))?;
    let mut out = Vec::new();
    let col = |source| StoreError::Database {
        context: "reading timing records",
        source,
    };
    while out.len() < limit {
        let Some(r) = rows
            .next()
            .map_err(StoreError::db("reading timing records"))?
        else {
            break;
        };
        let bad = |what: &str| StoreError::Decode {
            what: "timing record",
            detail: format!("{what} is not 16 bytes"),
        };
        let id: i64 = r.get(0).map_err(col)?;
        let actor = ActorId::from_slice(&r.get::<_, Vec<u8>>(1).map_err(col)?)
            .ok_or_else(|| bad("actor"))?;
        let boot: [u8; 16] = r
            .get::<_, Vec<u8>>(3)
            .map_err(col)?
            .try_into()
            .map_err(|_| bad("boot id"))?;
        let entries = decode_manifest(&r.get::<_, Vec<u8>>(7).map_err(col)?)?;
        let chosen: Vec<_> = entries
            .iter()
            .filter(|e| series.is_none_or(|s| s == e.name))
            .collect();
        if chosen.is_empty() {
            continue;
        }
        out.push((
            id,
            TimingRecord {
                actor,
                seq: r.get::<_, i64>(2).map_err(col)? as u64,
                timing: ReadingTiming {
                    boot_id: BootId(boot),
                    offset_ms: r.get(4).map_err(col)?,
                },
                count: chosen.iter().map(|e| e.count).sum(),
                original_from_ms: chosen.iter().map(|e| e.ts_min).min().unwrap_or(0),
                original_to_ms: chosen.iter().map(|e| e.ts_max).max().unwrap_or(0),
                delta_ms: r.get(5).map_err(col)?,
                corrected_by: r.get::<_, Option<i64>>(6).map_err(col)?.map(|s| s as u64),
            },
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minute_spans_merge_when_they_touch() {
        let m = MINUTE_MS;
        assert_eq!(
            merge_minute_spans(vec![(5, 10), (m + 1, m + 2), (100 * m, 100 * m + 5)]),
            vec![(0, m), (100 * m, 100 * m)]
        );
    }
}
