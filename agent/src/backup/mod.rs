//! Backups of the running agent's store and the offline tools that use them.
//!
//! - `make.rs`: one backup of the open store ([`write_backup`]): a consistent online snapshot
//!   into a scratch directory inside the data directory, packed (zstd, header with actor,
//!   version vector and digest — `kdelta_sync::backup`) into any writer. `GET /v1/backup`
//!   streams it; the schedule writes it to a file.
//! - `schedule.rs`: `[backup] every, dir, keep` ([`BackupConfig`], [`backup_loop`]).
//! - `offline.rs`: with the agent stopped (the data directory's lock held): [`restore`]
//!   (verify, optional point-in-time replay, identity, outbox cursor check) and [`rekey`].
//!
//! Must not touch: the store's files while an agent has them open (offline tools take the
//! lock first); the file layout of the data directory beyond the names its owners export.

mod config;
mod make;
mod offline;
mod schedule;

pub use config::BackupConfig;
pub use make::{BACKUP_EXTENSION, create_private, write_backup};
pub use offline::{
    RekeyReport, RestoreOptions, RestorePhase, RestoreReport, compact, rekey, restore,
};
pub use schedule::backup_loop;
