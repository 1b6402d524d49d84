//! Opening the SQLite database: pragmas (WAL, synchronous=FULL, busy timeout), embedded
//! migrations, the newer-schema check and the actor id. Owns nothing after open.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Row};

use crate::{ActorId, Result, StoreConfig, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Rows a read connection's worker may queue ahead of the reader (sqlx's default is 50).
const READ_ROW_BUFFER: usize = 1024;

/// The highest schema version this build knows.
pub fn supported_schema_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

fn options(path: &Path, config: &StoreConfig) -> Result<SqliteConnectOptions> {
    let url = format!("sqlite://{}", path.display());
    let opts = SqliteConnectOptions::from_str(&url)
        .map_err(StoreError::db("parsing the database path"))?
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: every commit fsyncs the WAL, so an acknowledged write survives power loss.
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_millis(config.busy_timeout_ms))
        .foreign_keys(false)
        .pragma("temp_store", "memory")
        .pragma("cache_size", "-8000")
        .disable_statement_logging();
    Ok(opts)
}

/// Everything `open` produces.
pub(crate) struct Opened {
    pub read_pool: SqlitePool,
    pub writer: SqliteConnection,
    pub actor: ActorId,
}

pub(crate) async fn open(path: &Path, config: &StoreConfig) -> Result<Opened> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let opts = options(path, config)?;
    let mut writer = opts
        .connect()
        .await
        .map_err(StoreError::db("opening the database"))?;

    check_not_newer(&mut writer).await?;
    MIGRATOR
        .run(&mut writer)
        .await
        .map_err(|e| StoreError::Database {
            context: "applying schema migrations",
            source: e.into(),
        })?;
    let actor = load_or_create_actor(&mut writer).await?;

    let read_pool = SqlitePoolOptions::new()
        .max_connections(config.read_connections.max(1))
        .min_connections(1)
        // Readers fetch many rows per statement (a page of changes): a deeper row buffer
        // lets sqlx's worker thread run ahead instead of handing rows over a few at a time.
        .connect_with(opts.read_only(true).row_buffer_size(READ_ROW_BUFFER))
        .await
        .map_err(StoreError::db("opening read connections"))?;
    Ok(Opened {
        read_pool,
        writer,
        actor,
    })
}

async fn check_not_newer(conn: &mut SqliteConnection) -> Result<()> {
    let exists: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_optional(&mut *conn)
    .await
    .map_err(StoreError::db("reading the schema version"))?;
    if exists.is_none() {
        return Ok(());
    }
    let found: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(&mut *conn)
        .await
        .map_err(StoreError::db("reading the schema version"))?;
    let supported = supported_schema_version();
    match found {
        Some(found) if found > supported => Err(StoreError::SchemaTooNew { found, supported }),
        _ => Ok(()),
    }
}

async fn load_or_create_actor(conn: &mut SqliteConnection) -> Result<ActorId> {
    let row = sqlx::query("SELECT value FROM meta WHERE key = 'actor'")
        .fetch_optional(&mut *conn)
        .await
        .map_err(StoreError::db("reading the actor id"))?;
    if let Some(row) = row {
        let bytes: Vec<u8> = row.get(0);
        return ActorId::from_slice(&bytes).ok_or(StoreError::Decode {
            what: "stored actor id",
            detail: format!("{} bytes instead of 16", bytes.len()),
        });
    }
    let actor = ActorId::random();
    sqlx::query("INSERT INTO meta (key, value) VALUES ('actor', ?)")
        .bind(actor.as_bytes().to_vec())
        .execute(&mut *conn)
        .await
        .map_err(StoreError::db("storing the actor id"))?;
    Ok(actor)
}

/// Gives the store a new random actor id (used after restoring a backup on another device,
/// so two devices never share one).
pub(crate) async fn rekey(conn: &mut SqliteConnection) -> Result<ActorId> {
    let actor = ActorId::random();
    sqlx::query("UPDATE meta SET value = ? WHERE key = 'actor'")
        .bind(actor.as_bytes().to_vec())
        .execute(&mut *conn)
        .await
        .map_err(StoreError::db("storing the new actor id"))?;
    Ok(actor)
}
