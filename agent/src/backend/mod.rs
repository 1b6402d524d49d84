//! Which store an agent runs on: the `[store]` keys that choose it ([`StoreSection`]:
//! `backend`, `url`) and the opened store behind one enum, [`Backend`] — the embedded SQLite
//! [`Store`] of every device, or, with the cargo feature `postgres`, a hub replica's change
//! log on PostgreSQL ([`PgHub`]; issue 17, docs/hub.md).
//!
//! Everything that needs a particular store asks the enum once, by type: the HTTP routes
//! that exist only on SQLite (readings timing, gaps, events, backup) take the store from
//! [`Backend::sqlite`], and on a PostgreSQL hub the router answers them with `501
//! not_on_this_backend` ([`NotOnThisBackend`]); readings ingest and queries (append, series,
//! range, aggregate, latest; `readings.rs`), the documents (reads, puts, deletes, batches;
//! `docs.rs`) and the twins (reads, creates, patches; `twins.rs`) are methods of the enum
//! answered by either store — on PostgreSQL ingest and writes are changes of the hub's own
//! actor; the parts that need SQLite (sources, the disk budget, backups, the device
//! twin, outbound peers) are switched off in the configuration a hub runs with
//! (`Config::for_backend`), one log line each. The rest — health, readiness, status,
//! metrics, inbound sync and the MQTT client (`mqtt/lease.rs`: one replica at a time) —
//! serves either store.
//!
//! A leaf below `config`, `state` and `api`: it uses only the store crates and
//! [`crate::section`].

mod config;
mod docs;
mod log;
#[cfg(feature = "postgres")]
mod pg;
mod readings;
mod twins;

use std::path::Path;

use anyhow::Context;
use kdelta_sync::{ActorId, Store};

pub use config::{BackendKind, NOT_BUILT_IN, StoreSection, redact_url};
pub use log::LogWakeups;
#[cfg(feature = "postgres")]
pub use pg::{HEALTH_EVERY, PgHub};

/// The store an agent runs on. Cheap to clone.
#[derive(Clone)]
pub enum Backend {
    /// The embedded store in the data directory.
    Sqlite(Store),
    /// A hub replica's change log on PostgreSQL.
    #[cfg(feature = "postgres")]
    Postgres(PgHub),
}

/// A request for something only the SQLite store serves, made on another backend: `501
/// not_on_this_backend` at the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} is not available on a PostgreSQL hub (issue 17); query the database or a SQLite replica"
)]
pub struct NotOnThisBackend {
    /// What was asked for, e.g. `GET /v1/docs/{key}`.
    pub what: String,
}

impl Backend {
    /// Opens the store `section` names: the SQLite database `sqlite_path`, or the PostgreSQL
    /// database at `section.url` (connected and migrated; any failure is a `PgError`
    /// naming the server, never the password, which `kdelta start` exits 2 on — see
    /// [`is_refused_start`]).
    pub async fn open(section: &StoreSection, sqlite_path: &Path) -> anyhow::Result<Backend> {
        match section.backend {
            BackendKind::Sqlite => {
                let store = Store::open(sqlite_path, section.settings())
                    .await
                    .with_context(|| format!("cannot open the store {}", sqlite_path.display()))?;
                Ok(Backend::Sqlite(store))
            }
            BackendKind::Postgres => open_postgres(section).await,
        }
    }

    /// Which backend this is.
    pub fn kind(&self) -> BackendKind {
        match self {
            Backend::Sqlite(_) => BackendKind::Sqlite,
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => BackendKind::Postgres,
        }
    }

    /// The SQLite store, or `None` on a PostgreSQL hub.
    pub fn sqlite(&self) -> Option<&Store> {
        match self {
            Backend::Sqlite(store) => Some(store),
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => None,
        }
    }

    /// The actor this store writes its own changes as (on PostgreSQL: the hub's, shared by
    /// its replicas).
    pub fn actor(&self) -> ActorId {
        match self {
            Backend::Sqlite(store) => store.actor(),
            #[cfg(feature = "postgres")]
            Backend::Postgres(hub) => hub.store.actor(),
        }
    }

    /// Closes the store: the SQLite writer finishes its queued writes; the PostgreSQL pool
    /// waits for its connections in use.
    pub async fn close(&self) {
        match self {
            Backend::Sqlite(store) => store.close().await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(hub) => hub.store.close().await,
        }
    }
}

#[cfg(feature = "postgres")]
async fn open_postgres(section: &StoreSection) -> anyhow::Result<Backend> {
    let url = section
        .url
        .as_deref()
        .context("store.url is required with backend = \"postgres\"")?;
    Ok(Backend::Postgres(
        PgHub::connect(url, &section.settings()).await?,
    ))
}

/// Unreachable through `kdelta start`: `StoreSection::validate` refuses the value already.
#[cfg(not(feature = "postgres"))]
async fn open_postgres(_: &StoreSection) -> anyhow::Result<Backend> {
    anyhow::bail!("store.backend: {NOT_BUILT_IN}")
}

/// True when `cause` (one link of a start error's chain) is the configured database
/// refusing the start — unreachable, credentials refused, a newer schema, a bad URL: a
/// configuration problem, exit code 2 like a bad key.
pub fn is_refused_start(cause: &(dyn std::error::Error + 'static)) -> bool {
    #[cfg(feature = "postgres")]
    return cause.is::<kdelta_pg::PgError>();
    #[cfg(not(feature = "postgres"))]
    {
        let _ = cause;
        false
    }
}
