//! How much disk the store takes, and getting space back from old stores.
//!
//! [`StoreSpace`] is what the agent's disk budget measures: the database file, its WAL and
//! shared-memory files, and the free pages inside the file (which new writes reuse, so they
//! count as room, not as use).
//!
//! Stores created before `auto_vacuum = INCREMENTAL` became the default (`schema.rs`) never
//! shrink: pruning frees pages inside the file only. Switching them takes a full `VACUUM`
//! (a rewrite of the whole file, needing about twice its size free). [`compact_old_store`]
//! does it when the writer opens a store of at most [`COMPACT_ON_OPEN_MAX_BYTES`]; a larger
//! one is compacted by `kdelta compact` (agent stopped, [`Store::compact`]).
//!
//! [`Store::space_held`] says which kind of data holds the pages (SQLite's `dbstat`): what
//! the agent names when its disk budget cannot be met.

use std::path::Path;

use rusqlite::Connection;
use serde::Serialize;

use crate::{Result, Store, StoreError};

/// Old stores (`auto_vacuum = NONE`) up to this size are switched to incremental auto-vacuum
/// when opened (a full `VACUUM`: seconds for this size even on an SD card).
pub const COMPACT_ON_OPEN_MAX_BYTES: u64 = 256 << 20;

/// The store's footprint on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StoreSpace {
    /// The database file.
    pub db_bytes: u64,
    /// Its write-ahead log.
    pub wal_bytes: u64,
    /// Its shared-memory index (`-shm`).
    pub shm_bytes: u64,
    /// Free pages inside the database file (reused by new writes; given back to the file
    /// system by incremental vacuum).
    pub free_bytes: u64,
    /// True when freed pages are given back to the file system (`auto_vacuum =
    /// INCREMENTAL`); false for stores made by old releases until compacted.
    pub incremental_vacuum: bool,
}

impl StoreSpace {
    /// Bytes the store's files take: database + WAL + shm.
    pub fn file_bytes(&self) -> u64 {
        self.db_bytes + self.wal_bytes + self.shm_bytes
    }

    /// Bytes the store really uses: its files less the free pages inside them.
    pub fn used_bytes(&self) -> u64 {
        self.file_bytes().saturating_sub(self.free_bytes)
    }
}

/// A kind of data in the store, as [`Store::space_held`] groups its tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SpaceHolder {
    /// Raw readings (`readings`).
    Readings,
    /// Per-minute rollups (`rollup_1m`), and those kept of pruned readings for sync
    /// (`pruned_rollups`), which go with them.
    Rollups,
    /// The change log: one row per change, pruned or not (actor, seq, HLC, seal, the hashes
    /// of what retention pruned), the timing records of readings changes, actors and series.
    ChangeLog,
    /// Documents: every version (values, or the metadata of pruned ones), heads, keys.
    Documents,
    /// Device twins: changes and snapshots.
    Twins,
    /// Everything else (`meta`, the schema).
    Other,
}

impl SpaceHolder {
    /// The holder of table `table`.
    fn of_table(table: &str) -> SpaceHolder {
        match table {
            "readings" => SpaceHolder::Readings,
            "rollup_1m" | "pruned_rollups" => SpaceHolder::Rollups,
            "changes" | "actors" | "reading_timing" | "series" => SpaceHolder::ChangeLog,
            t if t.starts_with("doc_") => SpaceHolder::Documents,
            t if t.starts_with("twin") => SpaceHolder::Twins,
            _ => SpaceHolder::Other,
        }
    }

    /// Its name in status and metrics (`change_log`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            SpaceHolder::Readings => "readings",
            SpaceHolder::Rollups => "rollups",
            SpaceHolder::ChangeLog => "change_log",
            SpaceHolder::Documents => "documents",
            SpaceHolder::Twins => "twins",
            SpaceHolder::Other => "other",
        }
    }
}

/// The bytes of the database's pages one kind of data holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HeldSpace {
    /// The kind of data.
    pub holder: SpaceHolder,
    /// Bytes of its tables' and indexes' pages.
    pub bytes: u64,
}

fn file_len(path: &Path, suffix: &str) -> u64 {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    std::fs::metadata(&p).map_or(0, |m| m.len())
}

fn pragma(conn: &Connection, name: &str) -> Result<i64> {
    conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
        .map_err(StoreError::db("reading the database's page counts"))
}

impl Store {
    /// The store's footprint now (one read connection, three pragmas and three `stat`s).
    pub async fn space(&self) -> Result<StoreSpace> {
        let (free_pages, page_size, auto_vacuum) = self
            .inner
            .readers
            .read(|conn| {
                Ok((
                    pragma(conn, "freelist_count")?,
                    pragma(conn, "page_size")?,
                    pragma(conn, "auto_vacuum")?,
                ))
            })
            .await?;
        let path = self.path();
        Ok(StoreSpace {
            db_bytes: file_len(path, ""),
            wal_bytes: file_len(path, "-wal"),
            shm_bytes: file_len(path, "-shm"),
            free_bytes: (free_pages.max(0) as u64) * (page_size.max(0) as u64),
            incremental_vacuum: auto_vacuum == 2,
        })
    }

    /// Which kind of data holds the database's pages, largest first (kinds holding none
    /// left out). Reads every page of the file (SQLite's `dbstat`) on a read connection:
    /// milliseconds for a store of a few MB, about a full read of the file for a large one —
    /// for occasional use (the disk budget asks when it cannot be met), not every tick.
    /// Excludes the WAL and the free pages.
    pub async fn space_held(&self) -> Result<Vec<HeldSpace>> {
        let rows: Vec<(String, i64)> = self
            .inner
            .readers
            .read(|conn| {
                conn.prepare(
                    "SELECT COALESCE(m.tbl_name, d.name), SUM(d.pgsize) FROM dbstat d \
                     LEFT JOIN sqlite_master m ON m.name = d.name GROUP BY 1",
                )
                .and_then(|mut st| st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
                .map_err(StoreError::db("measuring the space each table holds"))
            })
            .await?;
        let mut held: Vec<HeldSpace> = Vec::new();
        for (table, bytes) in rows {
            let holder = SpaceHolder::of_table(&table);
            let bytes = bytes.max(0) as u64;
            match held.iter_mut().find(|h| h.holder == holder) {
                Some(h) => h.bytes += bytes,
                None => held.push(HeldSpace { holder, bytes }),
            }
        }
        held.retain(|h| h.bytes > 0);
        held.sort_by_key(|h| std::cmp::Reverse(h.bytes));
        Ok(held)
    }

    /// Bytes of the pages of the per-minute rollups (`rollup_1m`): walks that table's pages
    /// only (SQLite's `dbstat`), about 1/60 of the raw readings' for a 1 Hz series.
    pub async fn rollup_bytes(&self) -> Result<u64> {
        self.inner
            .readers
            .read(|conn| {
                conn.query_row(
                    "SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name = 'rollup_1m'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .map(|b| b.max(0) as u64)
                .map_err(StoreError::db("measuring the rollups' pages"))
            })
            .await
    }

    /// Rewrites the database at `path` (which must not be open) with incremental
    /// auto-vacuum, whatever its size: what `kdelta compact` runs. Needs about the file's
    /// size free twice over (a copy and its WAL); on a full disk it fails with
    /// [`StoreError::DiskFull`] and leaves the store as it was. Returns the database size
    /// before and after (bytes).
    pub async fn compact(path: impl AsRef<Path>) -> Result<(u64, u64)> {
        let path = path.as_ref().to_path_buf();
        tokio::task::spawn_blocking(move || {
            let before = file_len(&path, "");
            let (conn, _) = crate::schema::open_writer(&path, &crate::StoreConfig::default())?;
            vacuum_into_incremental(&conn)?;
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .map_err(StoreError::db("checkpointing after compacting"))?;
            drop(conn);
            Ok((before, file_len(&path, "")))
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

/// `PRAGMA auto_vacuum = INCREMENTAL` then `VACUUM` (atomic: a failure leaves the file as
/// it was).
fn vacuum_into_incremental(conn: &Connection) -> Result<()> {
    conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")
        .map_err(|e| StoreError::db("compacting the store (VACUUM)")(e).classify())
}

/// At open: switches an old store (`auto_vacuum = NONE`) of at most
/// [`COMPACT_ON_OPEN_MAX_BYTES`] to incremental auto-vacuum. A failure (a full disk) is
/// logged and the store opens as it was; a larger store is left for `kdelta compact`, with
/// a log line saying so.
pub(crate) fn compact_old_store(conn: &Connection, path: &Path) {
    let Ok(mode) = pragma(conn, "auto_vacuum") else {
        return;
    };
    let size = file_len(path, "");
    if mode == 2 || size == 0 {
        return;
    }
    if size > COMPACT_ON_OPEN_MAX_BYTES {
        tracing::warn!(
            bytes = size,
            "this store was made by an older release and does not give pruned space back to the file system; stop the agent and run `kdelta compact` once (needs about {} MB free)",
            size * 2 / 1_000_000
        );
        return;
    }
    let started = std::time::Instant::now();
    match vacuum_into_incremental(conn) {
        Ok(()) => tracing::info!(
            before = size,
            after = file_len(path, ""),
            "store switched to incremental auto-vacuum (pruned space now goes back to the file system) in {} ms",
            started.elapsed().as_millis()
        ),
        Err(e) => tracing::warn!(
            error = %e,
            "could not switch this old store to incremental auto-vacuum; it keeps reusing freed pages (run `kdelta compact` once there is room)"
        ),
    }
}
