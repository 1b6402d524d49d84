//! # kdelta-sync — the replicated versioned store
//!
//! "Git for data" on SQLite: every change is kept, replicas merge without coordination, and
//! two stores that hold the same changes hold byte-identical state.
//!
//! ## Data model
//! - **Actor**: each store has a random 128-bit [`ActorId`], created on first open.
//! - **Hybrid logical clock**: every change is stamped with an [`Hlc`] (unix ms + logical
//!   counter) from a [`HybridClock`]; it stays monotonic when the wall clock jumps back and
//!   refuses remote timestamps too far in the future.
//! - **Change log**: the unit of replication is a [`Change`] `(actor, seq)` with dense
//!   per-actor `seq`. A [`VersionVector`] (actor → highest contiguous seq) says exactly what a
//!   store holds, so a delta is [`Store::changes_since`] the other side's vector, and
//!   [`Store::apply_remote`] is idempotent and refuses gaps.
//! - **Readings**: a [`ReadingBatch`] is one change; readings are immutable `(series, ts,
//!   value)` facts in a grow-only set, stored once in a table clustered by series and time,
//!   with per-minute rollups maintained at ingest for fast aggregates.
//! - **Documents**: [`Store::put`]/[`Store::delete`] write versions of JSON values. Writes that
//!   did not see each other become siblings (a multi-value register with dotted contexts); a
//!   plain [`Store::get`] returns the deterministic winner (highest HLC, then actor) and the
//!   sibling count. Every version stays in history: as-of reads, diffs, history pages.
//!   [`Store::write_batch`] writes puts and deletes over many keys as one atomic change.
//! - **Untrusted time**: a batch sampled while the wall clock was not trusted carries a
//!   [`ReadingTiming`] (boot id, wall − monotonic offset); once a trusted time is known its
//!   actor writes a [`TimeCorrection`] change ([`Store::correct_reading_times`]) that moves
//!   those readings to their true time on every replica, keeping the original in the log
//!   and in [`Store::reading_timing`].
//! - **Merge documents (twins)**: [`Store::twin_create`]/[`Store::twin_patch`] keep an
//!   automerge document under a key; concurrent edits to different fields both survive. Each
//!   edit is an automerge change carried in the change log ([`TwinChange`]); reads return the
//!   merged JSON, as-of, history and diffs.
//! - **Durability**: a single writer coalesces concurrent writes into one transaction and one
//!   fsync (group commit); every write call returns only once its data is durable.
//! - **Digest**: an order-independent hash over all readings and document versions
//!   ([`Store::digest`]) lets replicas compare state cheaply.
//! - **Backups**: [`Store::snapshot`] takes a consistent online copy; [`backup`] packs it into
//!   a verifiable file, unpacks and verifies one, and replays a store as of a past HLC
//!   (point-in-time recovery).
//! - **Sync protocol**: [`protocol`] replicates between two stores over any transport that
//!   moves whole frames: handshake, version vectors, pages of changes, live push
//!   ([`SyncSession`]).
//!
//! ## Example
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use kdelta_sync::{ReadingBatch, Store, StoreConfig, RangeQuery};
//! let dir = tempfile::tempdir().unwrap();
//! let store = Store::open(dir.path().join("kdelta.db"), StoreConfig::default()).await.unwrap();
//!
//! let mut batch = ReadingBatch::new();
//! batch.push("greenhouse.temp", 1_764_000_000_000, 21.5, Some("°C"));
//! batch.push("greenhouse.temp", 1_764_000_010_000, 21.7, Some("°C"));
//! let change = store.append(batch).await.unwrap(); // durable here
//! assert_eq!(change.seq, 1);
//!
//! let page = store.range(&RangeQuery {
//!     series: "greenhouse.temp".into(), from: 0, to: i64::MAX, limit: 100, cursor: None,
//! }).await.unwrap();
//! assert_eq!(page.readings.len(), 2);
//!
//! store.put("greenhouse/setpoint", &serde_json::json!({"temp": 22})).await.unwrap();
//! let doc = store.get("greenhouse/setpoint").await.unwrap().unwrap();
//! assert_eq!(doc.winner.value, Some(serde_json::json!({"temp": 22})));
//! store.close().await;
//! # });
//! ```
#![deny(missing_docs)]

mod actor;
mod admit;
pub mod backup;
mod chain;
mod change;
mod change_log;
mod correct;
mod counts;
mod digest;
mod doc_batch;
mod doc_retention;
mod docs_query;
mod docwrite;
mod error;
mod forks;
mod gap;
mod health;
mod history_cursor;
mod hlc;
mod ingest;
mod log_read;
mod log_runs;
mod model;
mod multirow;
mod origins;
mod past;
pub mod protocol;
mod pruned_rollups;
#[cfg(test)]
mod query_plans;
mod readers;
mod readings_fit;
mod readings_query;
mod rebase;
mod reserve;
mod retention;
mod schema;
pub mod seal;
mod signer;
mod space;
mod store;
mod stored_cbor;
mod succession;
mod sync_store;
mod timeref;
mod timing;
mod twin;
mod vv;
mod writer;
mod written_cbor;

pub use actor::{ActorId, ParseActorError};
pub use admit::{Admission, AdmitRules, HeldActor, admit_remote, needs_past};
pub use chain::{ChainFault, ChainHead, ChainRefusal, ChainReport, VerifyFailure, VerifyReport};
pub use change::{
    Change, ChangeBody, DocWrite, Dot, Limits, MAX_DOT_BYTES, MAX_KEY_BYTES, MAX_SERIES_NAME_BYTES,
    MAX_TS_MS, MAX_TWIN_CHANGE_OPS, MAX_UNIT_BYTES, ReadingBatch, ReadingProblem, SeriesPoints,
    TwinChange, check_reading, validate_key, validate_series_name,
};
pub use change_log::ChangeLog;
pub use digest::Digest;
pub use doc_batch::{
    BatchEntry, DocBatch, check_resolved_size, encode_doc_value, not_a_version, prepare_batch,
    twin_not_document,
};
pub use doc_retention::{
    DocRetention, DocRule, KeyRetention, PrunedVersion, VersionOrder, pruned_version,
};
pub use docs_query::{
    MAX_HISTORY_PAGE, StoredVersion, decode_version, doc_heads, doc_state, live_state,
};
pub use error::{Result, StoreError};
pub use forks::{Fork, ForkCheck, HeldChange, change_kind};
pub use gap::{GapEntry, GapReason, GapRecord, MAX_GAP_ENTRIES, StoredGap};
pub use health::WriteHealth;
pub use history_cursor::HistoryCursor;
pub use hlc::{
    ClockSkewError, Hlc, HybridClock, ManualTime, ParseHlcError, SystemTime, TimeSource,
};
pub use ingest::{
    ManifestEntry, MinuteAgg, decode_manifest, encode_manifest, encode_manifest_entries,
    saturating_sum,
};
pub use log_runs::{trim_run, trim_runs};
pub use model::*;
pub use origins::NotedActors;
pub use past::link_unsigned;
pub use protocol::{ProtocolError, SyncConfig, SyncSession};
pub use pruned_rollups::{
    KEEP_MIN_READINGS_PER_MINUTE, PrunedRollup, PrunedUnitMinutes, check_pruned_rollups,
    group_pruned_rollups, push_pruned_minute,
};
pub use readings_fit::{fit_readings, sized_readings, split_readings};
pub use readings_query::{
    MAX_BUCKETS, MAX_PAGE_ROWS, MAX_SERIES_PAGE, check_aggregate, check_range, fold_bucket,
    parse_cursor, reading_page,
};
pub use rebase::ClockLead;
pub use reserve::{FreeBytes, RECREATE_FACTOR, Reserve, ReserveState, ReserveStatus};
pub use retention::{
    PruneReport, PrunedUnit, RetentionPolicy, SeriesRetention, Unacked, glob_match, prune_series,
    pruned_unit, readings_cutoff, rollups_cutoff, unit_expired,
};
pub use schema::supported_schema_version;
pub use space::{COMPACT_ON_OPEN_MAX_BYTES, HeldSpace, SpaceHolder, StoreSpace};
pub use store::Store;
pub use succession::{KeyHint, MAX_SUCCESSIONS, Succession, SuccessionError, chain_to};
pub use sync_store::{Announcement, Announcements, SyncStore};
pub use timeref::{ClockClaim, TimeReference};
pub use timing::{
    BootId, CorrectedRange, MAX_CORRECTION_RANGES, ReadingTiming, TimeBasis, TimeCorrection,
    TimingRecord, ranges_of,
};
pub use twin::{
    MAX_HISTORY_PATHS, MAX_PATCH_DEPTH, MAX_PATCH_OPS, MAX_PATCH_STRING_BYTES, MAX_PATH_SEGMENTS,
    MAX_VIEW_DEPTH, PathOp, TwinCompaction, TwinDoc, TwinEdit, TwinHistoryEntry, TwinPatch,
    TwinState, TwinStorage, TwinWrite,
};
pub use vv::VersionVector;
