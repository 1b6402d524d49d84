//! Store-wide counters (changes, readings, series, document keys and versions) maintained by
//! the writer, so `Store::stats` (and with it `/v1/status` and `/metrics`) costs no table
//! scan. Each job moves them, a failed job puts them back, and every commit stores them in
//! `meta` (`counts`, beside the digest, in the same transaction), so an open reads them back
//! instead of counting: counting meant a scan of every per-minute rollup, ~0.5 s for a year
//! of 15 series on the bench VM and far longer from an SD card, at every start. A store
//! without the row (written by an earlier release) is counted once, at its first open.

use rusqlite::{Connection, OptionalExtension};

use crate::{Result, StoreError};

/// The counters. Exact for committed state plus the work of the writer's current group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub changes: u64,
    pub readings: u64,
    pub series: u64,
    pub doc_keys: u64,
    pub doc_versions: u64,
}

/// The `meta` key of the stored counters.
pub(crate) const META_KEY: &str = "counts";

impl Counts {
    /// The counters of the last commit, from `meta`; counted from the tables when the store
    /// has no (valid) row yet.
    pub fn load(conn: &Connection) -> Result<Counts> {
        let stored: Option<Vec<u8>> = conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [META_KEY], |r| {
                r.get(0)
            })
            .optional()
            .map_err(StoreError::db("reading the stored counters"))?;
        match stored.as_deref().and_then(Counts::decode) {
            Some(c) => Ok(c),
            None => Counts::count(conn),
        }
    }

    /// The stored form: the five counters, 8 bytes each, little-endian.
    pub fn encode(&self) -> [u8; 40] {
        let mut out = [0u8; 40];
        let all = [
            self.changes,
            self.readings,
            self.series,
            self.doc_keys,
            self.doc_versions,
        ];
        for (chunk, n) in out.chunks_exact_mut(8).zip(all) {
            chunk.copy_from_slice(&n.to_le_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<Counts> {
        let bytes: &[u8; 40] = bytes.try_into().ok()?;
        let n = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        Some(Counts {
            changes: n(0),
            readings: n(1),
            series: n(2),
            doc_keys: n(3),
            doc_versions: n(4),
        })
    }

    /// Counts the tables (a scan: only for a store without stored counters).
    pub fn count(conn: &Connection) -> Result<Counts> {
        let one = |sql: &str| -> Result<u64> {
            conn.query_row(sql, [], |r| r.get::<_, i64>(0))
                .map_err(StoreError::db("counting"))
                .map(|n| n.max(0) as u64)
        };
        Ok(Counts {
            changes: one("SELECT COUNT(*) FROM changes")?,
            // Rollups count every reading ingested; `readings_pruned` those retention
            // deleted while their rollups remain (see retention.rs).
            readings: one(
                "SELECT COALESCE((SELECT SUM(n) FROM rollup_1m), 0) -                  COALESCE((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'readings_pruned'), 0)",
            )?,
            series: one("SELECT COUNT(*) FROM series")?,
            doc_keys: one("SELECT COUNT(*) FROM doc_keys")?,
            doc_versions: one("SELECT COUNT(*) FROM doc_versions")?,
        })
    }
}
