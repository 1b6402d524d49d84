//! Retention: the `[retention]` section ([`RetentionConfig`], with `[retention.docs]` in
//! [`DocsKeep`] and `[retention.twins]` in [`TwinsKeep`]) and the loop that applies it
//! ([`retention_loop`]): every `retention.every` it asks the store to prune what the policy no
//! longer keeps and, with a disk budget (`budget.rs`), the oldest readings beyond it (at once
//! when the disk fills up, in the room of the store's reserve: `reserve.rs`), in small
//! transactions (`retention.step_rows` rows each) queued with ingest,
//! and records what it did for `/v1/status` and `/metrics`. The pruning itself (what goes,
//! the digest, rollups) is the store's (`kdelta_sync::RetentionPolicy`); see
//! docs/storage.md. A hub replica on PostgreSQL runs the readings rules through
//! `kdelta_pg::PgStore::prune` instead (`hub.rs`, docs/hub.md "Retention").

mod budget;
mod config;
mod docs;
#[cfg(feature = "postgres")]
mod hub;
mod reserve;
mod size;
mod task;
mod twins;
mod unmet;

pub use budget::{BudgetPass, Limits, Measure};
pub use config::{Keep, RetentionConfig, SeriesKeep};
pub use docs::{DocKeyKeep, DocsKeep};
#[cfg(feature = "postgres")]
pub use hub::hub_retention_loop;
pub use reserve::{attach_reserve, full_disk_remedy};
pub use size::{DiskSize, human_bytes};
#[cfg(feature = "postgres")]
pub use task::HubRetention;
pub use task::{BudgetState, RetentionDeps, RetentionState, retention_loop};
pub use twins::TwinsKeep;
pub use unmet::CannotMeet;
