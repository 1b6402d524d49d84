//! Retention: the `[retention]` section ([`RetentionConfig`], with `[retention.docs]` in
//! [`DocsKeep`]) and the loop that applies it
//! ([`retention_loop`]): every `retention.every` it asks the store to prune what the policy no
//! longer keeps, in small transactions (`retention.step_rows` rows each) queued with ingest,
//! and records what it did for `/v1/status` and `/metrics`. The pruning itself (what goes,
//! the digest, rollups) is the store's (`kdelta_sync::RetentionPolicy`); see
//! docs/storage.md.

mod config;
mod docs;
mod task;

pub use config::{Keep, RetentionConfig, SeriesKeep};
pub use docs::{DocKeyKeep, DocsKeep};
pub use task::{RetentionState, retention_loop};
