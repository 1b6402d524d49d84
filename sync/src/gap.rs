//! Gap records: the change (kind 6, body `gap`) a store writes when its disk budget's hard
//! limit forces it to drop raw readings that no upstream peer had acknowledged yet. It says
//! which series lost which readings (whose changes, what time range, how many), and it syncs
//! like any change, so a hub can tell readings dropped at the source from readings lost in
//! transit. The readings changes themselves stay in the log without the dropped series, as
//! retention leaves them (`retention.rs`).
//!
//! Owns the body type, its validation, its stored form (CBOR in `changes.manifest`, as a time
//! correction's) and the writer/reader code for it. Does not decide *when* to drop: that is
//! the budget pass (`retention.rs`, [`Unacked::Drop`](crate::Unacked)).

use std::collections::BTreeMap;

use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};

use crate::stored_cbor;
use crate::writer::Writer;
use crate::{
    ActorId, ChangeEvent, ChangeEventKind, ChangeMeta, Hlc, MAX_TS_MS, Result, StoreError,
    validate_series_name,
};

/// `changes.kind` of a gap record.
pub(crate) const KIND_GAP: i64 = 6;

/// Most entries one gap record holds; a pruning step that would need more ends early and the
/// next step writes the next record.
pub const MAX_GAP_ENTRIES: usize = 1024;

/// Why readings were dropped before an upstream peer had them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GapReason {
    /// The store was over its disk budget's hard limit (`[retention] hard_limit` or
    /// `min_free`'s floor) with nothing else left to prune.
    DiskBudget,
}

/// Readings of one series from one actor's changes that were dropped together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapEntry {
    /// The series.
    pub series: String,
    /// The actor whose readings changes held them (the source device, or a relayed one).
    pub actor: ActorId,
    /// The lowest and highest seq of those changes.
    pub first_seq: u64,
    /// See `first_seq`.
    pub last_seq: u64,
    /// Timestamp of the oldest reading dropped (unix ms, as sampled).
    pub from_ms: i64,
    /// Timestamp of the newest reading dropped (unix ms, as sampled).
    pub to_ms: i64,
    /// How many readings were dropped.
    pub readings: u64,
}

/// The body of a gap change: readings dropped at the source before upstream had them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapRecord {
    /// Why they were dropped.
    pub reason: GapReason,
    /// What was dropped, per (series, actor); 1 to [`MAX_GAP_ENTRIES`] entries.
    pub entries: Vec<GapEntry>,
}

impl GapRecord {
    /// Readings dropped in total.
    pub fn readings(&self) -> u64 {
        self.entries
            .iter()
            .fold(0u64, |n, e| n.saturating_add(e.readings))
    }

    /// Checks what a peer sent (or what this store is about to write).
    pub fn validate(&self) -> Result<()> {
        let bad = |detail: String| StoreError::Decode {
            what: "gap record",
            detail,
        };
        if self.entries.is_empty() || self.entries.len() > MAX_GAP_ENTRIES {
            return Err(bad(format!(
                "{} entries; a gap record holds 1 to {MAX_GAP_ENTRIES}",
                self.entries.len()
            )));
        }
        for (i, e) in self.entries.iter().enumerate() {
            validate_series_name(&e.series).map_err(|err| bad(format!("entry {i}: {err}")))?;
            if e.first_seq == 0 || e.first_seq > e.last_seq {
                return Err(bad(format!(
                    "entry {i}: seqs {}..{} are not an ascending range from 1",
                    e.first_seq, e.last_seq
                )));
            }
            if !(0..MAX_TS_MS).contains(&e.from_ms)
                || !(0..MAX_TS_MS).contains(&e.to_ms)
                || e.from_ms > e.to_ms
            {
                return Err(bad(format!(
                    "entry {i}: time range {}..{} is not an ascending range within 1970..9999",
                    e.from_ms, e.to_ms
                )));
            }
            if e.readings == 0 {
                return Err(bad(format!("entry {i}: no readings")));
            }
        }
        Ok(())
    }
}

/// Gap entries collected while one pruning step drops unacknowledged readings.
#[derive(Debug, Default)]
pub(crate) struct GapCollector {
    entries: BTreeMap<(String, ActorId), GapEntry>,
}

impl GapCollector {
    /// True when another (series, actor) pair would not fit one record.
    pub fn full(&self) -> bool {
        self.entries.len() >= MAX_GAP_ENTRIES
    }

    /// Records `readings` readings of `series` in `actor`'s change `seq`, sampled from
    /// `from_ms` to `to_ms`, as dropped.
    pub fn add(
        &mut self,
        series: &str,
        actor: ActorId,
        seq: u64,
        from_ms: i64,
        to_ms: i64,
        readings: u64,
    ) {
        let e = self
            .entries
            .entry((series.to_owned(), actor))
            .or_insert_with(|| GapEntry {
                series: series.to_owned(),
                actor,
                first_seq: seq,
                last_seq: seq,
                from_ms,
                to_ms,
                readings: 0,
            });
        e.first_seq = e.first_seq.min(seq);
        e.last_seq = e.last_seq.max(seq);
        e.from_ms = e.from_ms.min(from_ms);
        e.to_ms = e.to_ms.max(to_ms);
        e.readings = e.readings.saturating_add(readings);
    }

    /// The record, or `None` when nothing was dropped.
    pub fn finish(self) -> Option<GapRecord> {
        (!self.entries.is_empty()).then(|| GapRecord {
            reason: GapReason::DiskBudget,
            entries: self.entries.into_values().collect(),
        })
    }
}

/// Encodes a gap record as stored in `changes.manifest` (and hashed).
pub(crate) fn encode_gap(g: &GapRecord) -> Vec<u8> {
    stored_cbor::encode(g)
}

/// Decodes a stored gap record.
pub(crate) fn decode_gap(bytes: &[u8]) -> Result<GapRecord> {
    stored_cbor::decode(bytes, "stored gap record")
}

/// The digest element of a gap change.
pub(crate) fn gap_hash(actor: &ActorId, seq: u64, hlc: Hlc, body: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"kdelta/gap/v1");
    h.update(actor.as_bytes());
    h.update(&seq.to_le_bytes());
    h.update(&hlc.0.to_le_bytes());
    h.update(&(body.len() as u64).to_le_bytes());
    h.update(body);
    *h.finalize().as_bytes()
}

impl Writer {
    /// Writes a local gap change (inside the current job's savepoint, with the deletions it
    /// records).
    pub(crate) fn write_local_gap(&mut self, gap: &GapRecord) -> Result<ChangeMeta> {
        gap.validate()?;
        let (seq, hlc) = self.next_local();
        let actor = self.actor;
        self.flush_readings()?;
        self.store_gap(actor, seq, hlc, gap, false)?;
        Ok(ChangeMeta { actor, seq, hlc })
    }

    /// Stores a gap change (local and sealed here, or remote and validated).
    pub(crate) fn store_gap(
        &mut self,
        actor: ActorId,
        seq: u64,
        hlc: Hlc,
        gap: &GapRecord,
        remote: bool,
    ) -> Result<()> {
        let slot = self.actor_slot(actor)?;
        let body = encode_gap(gap);
        self.digest.add(&gap_hash(&actor, seq, hlc, &body));
        let seal = match remote {
            true => None,
            false => {
                let hash = crate::seal::body_hash(&crate::ChangeBody::Gap(gap.clone()), &[]);
                Some(self.seal_local(seq, hlc, hash)?)
            }
        };
        let id =
            self.insert_sealed_change_row(slot.idx, seq, hlc, KIND_GAP, Some(body), seal.as_ref())?;
        self.advance(actor, seq, hlc)?;
        self.pending_events.push(ChangeEvent {
            local_id: id,
            actor,
            seq,
            hlc,
            remote,
            kind: ChangeEventKind::Gap {
                readings: gap.readings(),
            },
        });
        Ok(())
    }
}

/// One stored gap change, for `Store::gaps`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredGap {
    /// Local position in the change log (page with `after`).
    pub local_id: i64,
    /// The change that recorded it (the store that dropped the readings).
    #[serde(flatten)]
    pub change: ChangeMeta,
    /// What was dropped.
    #[serde(flatten)]
    pub record: GapRecord,
}

/// Gap changes after local position `after`, at most `limit`; with `series`, only records
/// naming it (their other entries left out).
pub(crate) fn stored_gaps(
    conn: &Connection,
    series: Option<&str>,
    after: i64,
    limit: usize,
) -> Result<Vec<StoredGap>> {
    let err = StoreError::db("reading gap records");
    let mut st = conn
        .prepare_cached(
            "SELECT c.id, a.actor, c.seq, c.hlc, c.manifest FROM changes c \
             JOIN actors a ON a.idx = c.actor_idx WHERE c.kind = 6 AND c.id > ?1 ORDER BY c.id",
        )
        .map_err(err)?;
    let mut rows = st
        .query(params![after])
        .map_err(StoreError::db("reading gap records"))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(StoreError::db("reading gap records"))? {
        let col = StoreError::db("reading gap records");
        let (id, actor, seq, hlc, body): (i64, Vec<u8>, i64, i64, Vec<u8>) = (
            r.get(0).map_err(col)?,
            r.get(1).map_err(StoreError::db("reading gap records"))?,
            r.get(2).map_err(StoreError::db("reading gap records"))?,
            r.get(3).map_err(StoreError::db("reading gap records"))?,
            r.get(4).map_err(StoreError::db("reading gap records"))?,
        );
        let actor = ActorId::from_slice(&actor).ok_or(StoreError::Decode {
            what: "stored actor id",
            detail: "not 16 bytes".into(),
        })?;
        let mut record = decode_gap(&body)?;
        if let Some(s) = series {
            record.entries.retain(|e| e.series == s);
            if record.entries.is_empty() {
                continue;
            }
        }
        out.push(StoredGap {
            local_id: id,
            change: ChangeMeta {
                actor,
                seq: seq as u64,
                hlc: Hlc(hlc as u64),
            },
            record,
        });
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> GapEntry {
        GapEntry {
            series: "gh.temp".into(),
            actor: ActorId::random(),
            first_seq: 3,
            last_seq: 9,
            from_ms: 1_000,
            to_ms: 2_000,
            readings: 42,
        }
    }

    #[test]
    fn a_gap_record_round_trips_and_bad_ones_are_refused_by_name() {
        let g = GapRecord {
            reason: GapReason::DiskBudget,
            entries: vec![entry()],
        };
        g.validate().unwrap();
        assert_eq!(decode_gap(&encode_gap(&g)).unwrap(), g);
        assert_eq!(g.readings(), 42);
        let refused = |f: fn(&mut GapEntry)| {
            let mut e = entry();
            f(&mut e);
            GapRecord {
                reason: GapReason::DiskBudget,
                entries: vec![e],
            }
            .validate()
            .unwrap_err()
            .to_string()
        };
        assert!(refused(|e| e.first_seq = 0).contains("seqs"));
        assert!(refused(|e| e.to_ms = 0).contains("time range"));
        assert!(refused(|e| e.readings = 0).contains("no readings"));
        assert!(refused(|e| e.series = String::new()).contains("entry 0"));
        let empty = GapRecord {
            reason: GapReason::DiskBudget,
            entries: vec![],
        };
        assert!(
            empty
                .validate()
                .unwrap_err()
                .to_string()
                .contains("entries")
        );
    }

    #[test]
    fn the_collector_merges_per_series_and_actor() {
        let a = ActorId::random();
        let mut c = GapCollector::default();
        c.add("s", a, 5, 100, 200, 10);
        c.add("s", a, 2, 50, 60, 3);
        c.add("t", a, 2, 50, 60, 3);
        let g = c.finish().unwrap();
        assert_eq!(g.entries.len(), 2);
        let s = &g.entries[0];
        assert_eq!(
            (s.first_seq, s.last_seq, s.from_ms, s.to_ms, s.readings),
            (2, 5, 50, 200, 13)
        );
        assert!(GapCollector::default().finish().is_none());
    }
}
