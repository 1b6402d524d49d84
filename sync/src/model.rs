//! Plain data types of the store's API: configuration, query parameters and results, events.
//! No behaviour beyond small helpers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ActorId, Digest, Dot, Hlc, Limits, VersionVector};

/// Store settings. Every field has a safe default; the agent maps its `[store]` config here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Size limits for batches, values and changes.
    #[serde(flatten)]
    pub limits: Limits,
    /// Remote timestamps further ahead of local wall time than this are refused (ms).
    pub max_clock_offset_ms: u64,
    /// How long a connection waits for a lock before failing (ms).
    pub busy_timeout_ms: u64,
    /// Read connections in the pool (readers never block the writer in WAL mode).
    pub read_connections: u32,
    /// Most write requests coalesced into one transaction (group commit).
    pub max_group_jobs: usize,
    /// Capacity of the write queue; writers wait (backpressure) when it is full.
    pub write_queue: usize,
    /// Refuse remote changes that carry no signature (refused as `unsigned`, named and
    /// counted). On by default: an unsigned change proves nothing of its actor, so anyone
    /// relaying it could have written or altered it. `false` is the opt-out for a fleet
    /// still holding peers on a release that does not sign (their unsigned changes are then
    /// accepted and counted). An actor that has signed once is never accepted unsigned
    /// again, whatever this says; a store's own unsigned past is signed when this release
    /// first opens it (`chain.rs`, `sign_own_past`), so upgraded stores keep syncing.
    pub require_signatures: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            limits: Limits::default(),
            max_clock_offset_ms: 300_000,
            busy_timeout_ms: 5_000,
            read_connections: 4,
            max_group_jobs: 256,
            write_queue: 1024,
            require_signatures: true,
        }
    }
}

/// Identity and time of a committed change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeMeta {
    /// The actor that made it.
    pub actor: ActorId,
    /// Its sequence number.
    pub seq: u64,
    /// Its timestamp.
    pub hlc: Hlc,
}

/// A point in a store's history for as-of reads and diffs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// Everything with an HLC at or before this one.
    Hlc(Hlc),
    /// Everything stamped at or before this wall time (unix ms).
    WallMs(u64),
}

impl AsOf {
    /// The latest HLC included.
    pub fn bound(self) -> Hlc {
        match self {
            AsOf::Hlc(h) => h,
            AsOf::WallMs(ms) => Hlc::end_of_ms(ms),
        }
    }
}

impl std::fmt::Display for AsOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AsOf::Hlc(h) => write!(f, "HLC {h}"),
            AsOf::WallMs(ms) => write!(f, "unix ms {ms}"),
        }
    }
}

/// One version of a document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocVersion {
    /// Document key.
    pub key: String,
    /// Writer and its seq.
    pub actor: ActorId,
    /// The writer's sequence number.
    pub seq: u64,
    /// When it was written.
    pub hlc: Hlc,
    /// The value; `None` for a delete.
    pub value: Option<serde_json::Value>,
    /// The versions this one supersedes.
    pub supersedes: Vec<Dot>,
    /// Retention pruned this version: its value is gone (`value` is `None`, and it is not a
    /// delete); the version itself — who, when, what it superseded — remains in history.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pruned: bool,
}

impl DocVersion {
    /// True for a delete (tombstone) version.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none() && !self.pruned
    }
}

/// A document as a plain read returns it: the deterministic winner among the current
/// siblings (highest HLC, then actor) and how many siblings there are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocState {
    /// The winning version (may be a tombstone: the key is deleted).
    pub winner: DocVersion,
    /// Number of concurrent versions (1 when there is no conflict).
    pub siblings: usize,
}

impl DocState {
    /// True when a delete may be written: the key has a live value, or several siblings
    /// (a delete resolves them). A key never written, or deleted without siblings, has
    /// nothing to delete ([`StoreError::UnknownKey`](crate::StoreError::UnknownKey)).
    pub fn is_deletable(&self) -> bool {
        !self.winner.is_tombstone() || self.siblings > 1
    }
}

/// One JSON-level difference between two versions of a document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocChange {
    /// JSON pointer of the changed location (`""` for the whole value).
    pub path: String,
    /// `added`, `removed` or `changed`.
    pub op: String,
    /// Value before (absent for `added`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<serde_json::Value>,
    /// Value after (absent for `removed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<serde_json::Value>,
}

/// The difference of one document between two points in history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocDiff {
    /// Document key.
    pub key: String,
    /// Value at the first point (`None`: absent or deleted).
    pub from: Option<serde_json::Value>,
    /// Value at the second point.
    pub to: Option<serde_json::Value>,
    /// Structural changes, JSON pointer by pointer.
    pub changes: Vec<DocChange>,
}

impl DocDiff {
    /// The diff of `key` between the values `from` and `to` (each backend reads the two
    /// values; the comparison is this one).
    pub fn between(
        key: &str,
        from: Option<serde_json::Value>,
        to: Option<serde_json::Value>,
    ) -> DocDiff {
        let mut changes = Vec::new();
        crate::docs_query::json_diff("", from.as_ref(), to.as_ref(), &mut changes);
        DocDiff {
            key: key.to_owned(),
            from,
            to,
            changes,
        }
    }
}

/// A series as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesInfo {
    /// Series name.
    pub name: String,
    /// Unit, if known.
    pub unit: Option<String>,
    /// Metadata.
    pub meta: BTreeMap<String, String>,
    /// Number of readings.
    pub count: u64,
    /// First reading time (unix ms), if any.
    pub first_ts: Option<i64>,
    /// Last reading time (unix ms), if any.
    pub last_ts: Option<i64>,
}

/// One page of [`Store::series_page`](crate::Store::series_page).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesPage {
    /// Series in name order.
    pub series: Vec<SeriesInfo>,
    /// The name to pass as `after` for the next page; `None` when this page is the last.
    pub next_after: Option<String>,
}

/// A raw range query.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeQuery {
    /// Series name.
    pub series: String,
    /// Inclusive start, unix ms.
    pub from: i64,
    /// Exclusive end, unix ms.
    pub to: i64,
    /// Most rows returned (capped by the store at 100,000).
    pub limit: usize,
    /// Continue after this cursor (from a previous page).
    pub cursor: Option<String>,
}

/// One stored reading.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReadingRow {
    /// Time, unix ms.
    pub ts: i64,
    /// Value.
    pub value: f64,
}

/// A page of a range query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadingPage {
    /// Series name.
    pub series: String,
    /// Unit, if known.
    pub unit: Option<String>,
    /// Readings in time order.
    pub readings: Vec<ReadingRow>,
    /// Pass back to get the next page; `None` at the end of the range.
    pub next_cursor: Option<String>,
}

/// An aggregate query: `from..to` cut into buckets of `bucket_ms` aligned to the unix epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateQuery {
    /// Series name.
    pub series: String,
    /// Inclusive start, unix ms.
    pub from: i64,
    /// Exclusive end, unix ms.
    pub to: i64,
    /// Bucket width in ms (at least 1; at most 100,000 buckets per query).
    pub bucket_ms: i64,
}

/// One aggregate bucket. Buckets without readings are omitted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Bucket start, unix ms.
    pub start: i64,
    /// Number of readings.
    pub count: u64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Mean value.
    pub avg: f64,
    /// Sum of values.
    pub sum: f64,
    /// Value of the earliest reading.
    pub first: f64,
    /// Value of the latest reading.
    pub last: f64,
}

/// The latest reading of a series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatestReading {
    /// Series name.
    pub series: String,
    /// Unit, if known.
    pub unit: Option<String>,
    /// Time, unix ms.
    pub ts: i64,
    /// Value.
    pub value: f64,
}

/// What [`Store::apply_remote`](crate::Store::apply_remote) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyOutcome {
    /// Changes newly stored.
    pub applied: usize,
    /// Changes already held (duplicates), skipped.
    pub skipped: usize,
}

/// Store-wide figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreStats {
    /// This store's actor.
    pub actor: ActorId,
    /// What it holds.
    pub version_vector: VersionVector,
    /// Canonical digest of its content.
    pub digest: String,
    /// Number of changes in the log.
    pub changes: u64,
    /// Number of readings.
    pub readings: u64,
    /// Number of series.
    pub series: u64,
    /// Number of document keys.
    pub doc_keys: u64,
    /// Number of document versions.
    pub doc_versions: u64,
    /// Database size in bytes (main file + WAL).
    pub db_bytes: u64,
}

/// Kind of a committed change, as announced to subscribers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChangeEventKind {
    /// A batch of readings.
    Readings {
        /// Series in the batch.
        series: Vec<String>,
        /// Number of readings.
        count: usize,
    },
    /// A document write.
    Doc {
        /// The key.
        key: String,
        /// True for a delete.
        deleted: bool,
    },
    /// A batch of document writes (one change).
    DocBatch {
        /// The keys written, in batch order.
        keys: Vec<String>,
        /// How many of the writes are deletes.
        deleted: usize,
    },
    /// An automerge change to a merge document (twin).
    Twin {
        /// The twin's key.
        key: String,
    },
    /// A correction of readings sampled under an untrusted clock.
    TimeCorrection {
        /// Readings changes it moved to their true time.
        corrected: usize,
    },
    /// A gap record: readings dropped at the source before upstream had them.
    Gap {
        /// How many readings it records as dropped.
        readings: u64,
    },
}

impl ChangeEventKind {
    /// What a change of `body` is, as read back from a change log (a follower of a hub's
    /// log on PostgreSQL): the embedded store's own event but for a time correction, whose
    /// `corrected` counts the seqs its runs cover (the store counts the changes it moved).
    pub fn of(body: &crate::ChangeBody) -> ChangeEventKind {
        use crate::ChangeBody as B;
        match body {
            B::Readings(b) => ChangeEventKind::Readings {
                series: b.series.iter().map(|s| s.name.clone()).collect(),
                count: b.len(),
            },
            B::Doc(w) => ChangeEventKind::Doc {
                key: w.key.clone(),
                deleted: w.value.is_none() && !w.pruned,
            },
            B::DocBatch(b) => ChangeEventKind::DocBatch {
                keys: b.writes.iter().map(|w| w.key.clone()).collect(),
                deleted: b
                    .writes
                    .iter()
                    .filter(|w| w.value.is_none() && !w.pruned)
                    .count(),
            },
            B::Twin(t) => ChangeEventKind::Twin { key: t.key.clone() },
            B::TimeCorrection(t) => ChangeEventKind::TimeCorrection {
                corrected: t
                    .ranges
                    .iter()
                    .map(|r| (r.last_seq.saturating_sub(r.first_seq) + 1) as usize)
                    .sum(),
            },
            B::Gap(g) => ChangeEventKind::Gap {
                readings: g.readings(),
            },
        }
    }
}

/// Announced on [`Store::subscribe`](crate::Store::subscribe) after a change is durable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// Local position in the change log (for cursors over [`Store::log_after`](crate::Store::log_after)).
    pub local_id: i64,
    /// Who made it.
    pub actor: ActorId,
    /// Its seq.
    pub seq: u64,
    /// Its timestamp.
    pub hlc: Hlc,
    /// True when it came from another replica.
    pub remote: bool,
    /// What it was.
    #[serde(flatten)]
    pub kind: ChangeEventKind,
}

/// The digest type, re-exported here for API users.
pub type StateDigest = Digest;
