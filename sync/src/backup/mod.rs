//! Backups of a store: a consistent online snapshot, packed into one verifiable file, and the
//! way back (unpack, verify, point-in-time replay).
//!
//! A backup file is `MAGIC | format (u32 LE) | header length (u32 LE) | header (JSON) | zstd
//! stream of the SQLite database`. The header ([`BackupHeader`]) says what the snapshot holds
//! (actor, version vector, digest, size and BLAKE3 of the database) so a copy can be checked
//! end to end: [`unpack`] refuses a foreign, truncated or corrupt file before anything is
//! used, and [`verify_unpacked`] recomputes the digest from the rows.
//!
//! - `format.rs`: the header and the byte layout (reading is hostile-input safe).
//! - `snapshot.rs`: [`Store::snapshot`](crate::Store::snapshot) (SQLite online backup API,
//!   one read transaction, so ingest keeps running) and [`pack`].
//! - `restore.rs`: [`unpack`], [`verify_unpacked`] and [`replay_as_of`] (point-in-time
//!   recovery: exactly the changes with HLC ≤ a bound, replayed into a fresh store).
//!
//! Must not touch: a running store's files other than through its own connections; the data
//! directory layout (the agent decides where files go).

mod error;
mod format;
mod restore;
mod snapshot;

pub use error::BackupError;
pub use format::{BackupHeader, FORMAT_VERSION, MAGIC, read_header};
pub use restore::{AsOfCut, ReplayOutcome, replay_as_of, unpack, verify_unpacked};
pub use snapshot::pack;
