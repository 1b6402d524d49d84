//! Store-wide counters (changes, readings, series, document keys and versions) maintained by
//! the writer, so `Store::stats` (and with it `/v1/status` and `/metrics`) costs no table
//! scan. Counted once from the tables at open (and after a failed commit); each job moves
//! them, a failed job puts them back, a commit publishes them.

use rusqlite::Connection;

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

impl Counts {
    /// Counts the tables (a scan: at open and after a failed commit only).
    pub fn load(conn: &Connection) -> Result<Counts> {
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
