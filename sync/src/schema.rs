//! Opening the SQLite database: pragmas (WAL, synchronous=FULL, busy timeout), the embedded
//! migrations, the newer-schema check and the actor id. Owns nothing after open.
//!
//! Migrations are the files of `sync/migrations/`, applied in order, each in its own
//! transaction. Applied versions are recorded in `_sqlx_migrations`, the table (and checksums:
//! SHA-384 of the file) of the sqlx migrator earlier releases used, so a store written by
//! those releases opens unchanged and one written now still opens in them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use sha2::{Digest as _, Sha384};

use crate::seal::SigningKey;
use crate::{ActorId, Result, StoreConfig, StoreError};

/// One embedded migration: `NNNN_description.sql`.
struct Migration {
    version: i64,
    description: &'static str,
    sql: &'static str,
}

/// Every migration of this build, in version order.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "init",
        sql: include_str!("../migrations/0001_init.sql"),
    },
    Migration {
        version: 2,
        description: "twins",
        sql: include_str!("../migrations/0002_twins.sql"),
    },
    Migration {
        version: 3,
        description: "reading timing",
        sql: include_str!("../migrations/0003_reading_timing.sql"),
    },
    Migration {
        version: 4,
        description: "doc_batches",
        sql: include_str!("../migrations/0004_doc_batches.sql"),
    },
    Migration {
        version: 5,
        description: "gap records",
        sql: include_str!("../migrations/0005_gap_records.sql"),
    },
    Migration {
        version: 6,
        description: "signed_log",
        sql: include_str!("../migrations/0006_signed_log.sql"),
    },
    Migration {
        version: 7,
        description: "doc_retention",
        sql: include_str!("../migrations/0007_doc_retention.sql"),
    },
    Migration {
        version: 8,
        description: "twin_compaction",
        sql: include_str!("../migrations/0008_twin_compaction.sql"),
    },
    Migration {
        version: 9,
        description: "doc_versions_by_key",
        sql: include_str!("../migrations/0009_doc_versions_by_key.sql"),
    },
    Migration {
        version: 10,
        description: "pruned_rollups",
        sql: include_str!("../migrations/0010_pruned_rollups.sql"),
    },
    Migration {
        version: 11,
        description: "actor_max_hlc",
        sql: include_str!("../migrations/0011_actor_max_hlc.sql"),
    },
    Migration {
        version: 12,
        description: "log_runs",
        sql: include_str!("../migrations/0012_log_runs.sql"),
    },
];

/// The table sqlx's migrator kept (same columns, so both can read it).
const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    success BOOLEAN NOT NULL,
    checksum BLOB NOT NULL,
    execution_time BIGINT NOT NULL
)";

/// Prepared statements each connection keeps (multi-row statements of several sizes, the
/// document and change-log statements).
const STATEMENT_CACHE: usize = 128;

/// The highest schema version this build knows.
pub fn supported_schema_version() -> i64 {
    MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0)
}

/// SHA-384 of a migration's SQL, as sqlx recorded it.
pub(crate) fn checksum(sql: &str) -> Vec<u8> {
    Sha384::digest(sql.as_bytes()).to_vec()
}

/// Opens one connection with the store's pragmas. The writer's creates the file.
pub(crate) fn connect(path: &Path, config: &StoreConfig, read_only: bool) -> Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn =
        Connection::open_with_flags(path, flags).map_err(StoreError::db("opening the database"))?;
    conn.busy_timeout(Duration::from_millis(config.busy_timeout_ms))
        .map_err(StoreError::db("setting the busy timeout"))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    let mut pragmas = String::from(
        "PRAGMA foreign_keys = OFF; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -8000;",
    );
    if !read_only {
        // A new (empty) database: freed pages go back to the file system (`PRAGMA
        // incremental_vacuum` after retention prunes). Only possible before the switch to WAL
        // and the first table; stores created by earlier releases are switched by a full
        // VACUUM (`space.rs`: at open when small, else `kdelta compact`).
        let pages: i64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .map_err(StoreError::db("reading the page count"))?;
        if pages == 0 {
            pragmas.push_str(" PRAGMA auto_vacuum = INCREMENTAL;");
        }
        // FULL: every commit fsyncs the WAL, so an acknowledged write survives power loss.
        pragmas.push_str(" PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;");
    }
    conn.execute_batch(&pragmas)
        .map_err(StoreError::db("setting pragmas"))?;
    Ok(conn)
}

/// Opens the write connection: creates the file and directory, refuses a newer schema,
/// applies migrations, loads (or makes) the actor id.
pub(crate) fn open_writer(path: &Path, config: &StoreConfig) -> Result<(Connection, ActorId)> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let mut conn = connect(path, config, false)?;
    // The database holds the actor's private signing key: readable by the agent only (SQLite
    // gives its -wal and -shm files the same mode). Stores made by earlier releases are
    // tightened too, on their first open by this one.
    for file in [
        path.to_path_buf(),
        PathBuf::from(format!("{}-wal", path.display())),
        PathBuf::from(format!("{}-shm", path.display())),
    ] {
        if file.exists() {
            restrict_to_owner(&file)?;
        }
    }
    migrate(&mut conn)?;
    crate::space::compact_old_store(&conn, path);
    let actor = load_or_create_actor(&conn)?;
    load_or_create_signing_key(&conn)?;
    Ok((conn, actor))
}

/// `chmod 0600` unless group and others already have no access (Unix; elsewhere nothing).
fn restrict_to_owner(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map(|m| m.permissions().mode())
            .unwrap_or(0o600);
        if mode & 0o077 == 0 {
            return Ok(());
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| StoreError::Io {
                path: path.display().to_string(),
                source,
            },
        )?;
    }
    Ok(())
}

/// The store's Ed25519 key pair (PKCS#8 in `meta`), made on first open of this release: a
/// new store signs from seq 1, an upgraded one from its next change.
pub(crate) fn load_or_create_signing_key(conn: &Connection) -> Result<SigningKey> {
    let stored: Option<Vec<u8>> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'signing_key'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(StoreError::db("reading the signing key"))?;
    if let Some(bytes) = stored {
        return SigningKey::from_pkcs8(&bytes);
    }
    new_signing_key(conn)
}

/// Makes and stores a new key pair (a new store, or a new identity: `Store::rekey`).
pub(crate) fn new_signing_key(conn: &Connection) -> Result<SigningKey> {
    let key = SigningKey::generate()?;
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('signing_key', ?1) \
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [key.pkcs8()],
    )
    .map_err(StoreError::db("storing the signing key"))?;
    Ok(key)
}

/// The highest version recorded as applied (0 for a new database).
fn applied_version(conn: &Connection) -> Result<i64> {
    let exists: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(StoreError::db("reading the schema version"))?;
    if exists.is_none() {
        return Ok(0);
    }
    let v: Option<i64> = conn
        .query_row("SELECT MAX(version) FROM _sqlx_migrations", [], |r| {
            r.get(0)
        })
        .map_err(StoreError::db("reading the schema version"))?;
    Ok(v.unwrap_or(0))
}

/// Refuses a newer schema, then applies the migrations above the recorded version.
fn migrate(conn: &mut Connection) -> Result<()> {
    let found = applied_version(conn)?;
    let supported = supported_schema_version();
    if found > supported {
        return Err(StoreError::SchemaTooNew { found, supported });
    }
    conn.execute_batch(MIGRATIONS_TABLE)
        .map_err(StoreError::db("creating the migrations table"))?;
    for m in MIGRATIONS.iter().filter(|m| m.version > found) {
        let started = Instant::now();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(StoreError::db("starting a migration"))?;
        tx.execute_batch(m.sql)
            .map_err(StoreError::db("applying schema migrations"))?;
        tx.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (?1, ?2, TRUE, ?3, ?4)",
            params![
                m.version,
                m.description,
                checksum(m.sql),
                started.elapsed().as_nanos() as i64
            ],
        )
        .map_err(StoreError::db("recording a migration"))?;
        tx.commit()
            .map_err(StoreError::db("committing a migration"))?;
        tracing::info!(version = m.version, "applied store schema migration");
    }
    Ok(())
}

fn load_or_create_actor(conn: &Connection) -> Result<ActorId> {
    let stored: Option<Vec<u8>> = conn
        .query_row("SELECT value FROM meta WHERE key = 'actor'", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(StoreError::db("reading the actor id"))?;
    if let Some(bytes) = stored {
        return ActorId::from_slice(&bytes).ok_or(StoreError::Decode {
            what: "stored actor id",
            detail: format!("{} bytes instead of 16", bytes.len()),
        });
    }
    let actor = ActorId::random();
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('actor', ?1)",
        [actor.as_bytes().to_vec()],
    )
    .map_err(StoreError::db("storing the actor id"))?;
    Ok(actor)
}

/// Sets the store's actor id (a restored backup or an imaged card gets a new one, so two
/// devices never write as one). Stored changes keep their actor.
pub(crate) fn set_actor(conn: &Connection, actor: ActorId) -> Result<()> {
    conn.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'actor'",
        [actor.as_bytes().to_vec()],
    )
    .map_err(StoreError::db("storing the new actor id"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_in_order_and_match_their_files() {
        let versions: Vec<i64> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let expected: Vec<String> = MIGRATIONS
            .iter()
            .map(|m| format!("{:04}_{}.sql", m.version, m.description.replace(' ', "_")))
            .collect();
        assert_eq!(files, expected, "every file of migrations/ must be listed");
    }
}
