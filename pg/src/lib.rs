//! # kdelta-pg — the hub's change log on PostgreSQL
//!
//! When one hub machine is not enough, several stateless hub processes share one PostgreSQL
//! database. The change log is a grow-only set keyed by `(actor, seq)`, so replicas insert
//! concurrently without coordinating beyond a row lock per actor: [`PgStore`] applies pages
//! of changes atomically and idempotently (two replicas receiving the same change store it
//! once; seq gaps are refused as on SQLite), serves the changes a peer lacks page by page, and
//! computes the version vector and the digest from the database — the same digest as the
//! devices' SQLite stores, so a PostgreSQL hub and its devices agree on one value.
//!
//! It implements [`kdelta_sync::ChangeLog`], the replication half of a store, and
//! [`kdelta_sync::SyncStore`], so a hub replica runs the devices' own `SyncSession`: live
//! mode across replicas, signed-log checks on apply, credential bindings and fork
//! detection as on SQLite. Readings live once, in a table partitioned by month; documents
//! and twin changes in plain tables. The hub's actor id, signing key and clock are shared by
//! its replicas in the database, and every commit is announced to all of them
//! ([`PgStore::listen`], LISTEN/NOTIFY). Readings have per-minute rollups, one row per actor,
//! folded in the apply transaction under the actor's lock, and the API's readings queries
//! ([`PgStore::series_page`], [`PgStore::range`], [`PgStore::aggregate`],
//! [`PgStore::latest`]) answer as the embedded store's do, and so do the document reads
//! ([`PgStore::get`], [`PgStore::siblings`], [`PgStore::history`], [`PgStore::get_as_of`],
//! [`PgStore::diff`], [`PgStore::list`]); the hub writes documents as its own actor
//! ([`PgStore::put`], [`PgStore::delete`], [`PgStore::write_batch`]). Retention
//! ([`PgStore::prune`]) prunes raw readings by age — dropping whole month partitions where
//! it can — rollups by a longer age, and document history (`[retention.docs]`), with the
//! embedded store's rules and digest. Twins are read ([`PgStore::twin_get`],
//! [`PgStore::twin_history`], …) and edited as the hub's actor ([`PgStore::twin_create`],
//! [`PgStore::twin_patch`]) with the embedded store's own functions
//! (`kdelta_sync::TwinDoc`). See `docs/hub.md`.
//!
//! ## Example
//! ```no_run
//! # async fn example() -> Result<(), kdelta_pg::PgError> {
//! use kdelta_pg::{PgConfig, PgStore};
//! use kdelta_sync::{ReadingBatch, VersionVector};
//!
//! let hub = PgStore::connect("postgres://kdelta@127.0.0.1:5432/kdelta", PgConfig::default()).await?;
//! let mut batch = ReadingBatch::new();
//! batch.push("greenhouse.temp", 1_764_000_000_000, 21.5, Some("°C"));
//! let change = hub.append(batch).await?; // a change of the hub's own actor, durable here
//! let page = hub.changes_since(&VersionVector::new(), 1 << 20).await?;
//! assert_eq!(page.last(), Some(&change));
//! // A device's SQLite store applies the page; both then have the same digest.
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod apply;
mod codec;
mod copy;
mod doc_retention;
mod docs;
mod error;
mod feed;
mod log;
mod origins;
pub mod partitions;
mod peer;
mod query;
mod read;
mod records;
mod retention;
mod rollups;
mod rows;
mod schema;
mod store;
mod succession;
mod twins;

pub use error::{PgError, Result};
pub use feed::{CHANNEL, ChangeFeed, FeedEvent};
pub use log::Leadership;
pub use peer::PgAnnouncements;
pub use retention::PgPruneReport;
pub use schema::supported_schema_version;
pub use store::{PgConfig, PgStore};
