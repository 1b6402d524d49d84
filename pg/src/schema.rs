//! Opening the database: the newer-schema check, the migrations of `pg/migrations/` (run by
//! sqlx's migrator, which serialises concurrent replicas with an advisory lock and records
//! versions in `_sqlx_migrations`), the hub's shared actor id and the floor of its clock.

use kdelta_sync::seal::SigningKey;
use kdelta_sync::{ActorId, Hlc, StoreError};
use sqlx::PgPool;
use sqlx::migrate::Migrator;

use crate::error::{PgError, Result};

/// The embedded migrations of this build.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The highest schema version this build knows.
pub fn supported_schema_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// The highest version recorded as applied in the schema the pool's connections use (0 for
/// a new database).
pub(crate) async fn applied_version(pool: &PgPool) -> Result<i64> {
    let ctx = "reading the schema version";
    let table: Option<String> = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
        .fetch_one(pool)
        .await
        .map_err(PgError::db(ctx))?;
    if table.is_none() {
        return Ok(0);
    }
    sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await
        .map_err(PgError::db(ctx))
}

/// Refuses a database of a newer schema (naming both versions), then applies the
/// migrations it lacks.
pub(crate) async fn migrate(pool: &PgPool) -> Result<()> {
    let found = applied_version(pool).await?;
    let supported = supported_schema_version();
    if found > supported {
        return Err(PgError::SchemaTooNew { found, supported });
    }
    MIGRATOR.run(pool).await.map_err(PgError::Migrate)
}

/// The hub's actor id: the one stored, or a new random one when the database has none.
/// Replicas opening a new database at once agree on one (the first insert wins).
pub(crate) async fn hub_actor(pool: &PgPool) -> Result<ActorId> {
    let ctx = "reading the hub's actor id";
    sqlx::query("INSERT INTO meta (key, value) VALUES ('actor', $1) ON CONFLICT (key) DO NOTHING")
        .bind(ActorId::random().as_bytes().as_slice())
        .execute(pool)
        .await
        .map_err(PgError::db(ctx))?;
    let bytes: Vec<u8> = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'actor'")
        .fetch_one(pool)
        .await
        .map_err(PgError::db(ctx))?;
    ActorId::from_slice(&bytes).ok_or_else(|| {
        PgError::Store(StoreError::Decode {
            what: "stored actor id",
            detail: format!("{} bytes instead of 16", bytes.len()),
        })
    })
}

/// The hub's signing key (Ed25519, PKCS#8 in `meta`, as SQLite keeps a store's): the one
/// stored, or a new one when the database has none. Replicas opening a new database at once
/// agree on one (the first insert wins), so the hub's changes form one chain whichever
/// replica wrote them.
pub(crate) async fn hub_signing_key(pool: &PgPool) -> Result<SigningKey> {
    let ctx = "reading the hub's signing key";
    sqlx::query(
        "INSERT INTO meta (key, value) VALUES ('signing_key', $1) ON CONFLICT (key) DO NOTHING",
    )
    .bind(SigningKey::generate()?.pkcs8())
    .execute(pool)
    .await
    .map_err(PgError::db(ctx))?;
    let pkcs8: Vec<u8> = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'signing_key'")
        .fetch_one(pool)
        .await
        .map_err(PgError::db(ctx))?;
    Ok(SigningKey::from_pkcs8(&pkcs8)?)
}

/// The highest HLC the hub holds or stamped: every replica's clock starts above it.
pub(crate) async fn clock_floor(pool: &PgPool) -> Result<Hlc> {
    let hlc: i64 = sqlx::query_scalar(
        "SELECT GREATEST((SELECT hlc FROM hub_clock WHERE id = 1), (SELECT COALESCE(MAX(hlc), 0) FROM changes))",
    )
    .fetch_one(pool)
    .await
    .map_err(PgError::db("reading the hub's clock"))?;
    Ok(Hlc(hlc as u64))
}
