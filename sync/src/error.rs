//! The one error type of the store area. Variants name the thing involved (key, series, actor)
//! so a log line or an API error tells the user what to fix.

use crate::{ActorId, Hlc};

/// Everything that can go wrong in the versioned store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite failed; `context` says what the store was doing.
    #[error("database error while {context}: {source}")]
    Database {
        /// What the store was doing, e.g. "committing a write group".
        context: &'static str,
        /// The underlying SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// A write group could not start or commit, so this write was not stored (the cause,
    /// logged by the writer, is an error of another statement of the group).
    #[error("database error while {context}: {detail}")]
    WriteGroup {
        /// What the writer was doing, e.g. "committing a write group".
        context: &'static str,
        /// The underlying error, as text.
        detail: String,
        /// Whether that underlying error was transient (busy, locked, I/O).
        transient: bool,
    },
    /// A store backend other than the embedded SQLite one (the hub's PostgreSQL, crate
    /// `kdelta-pg`) failed; `context` says what the store was doing.
    #[error("{backend} error while {context}: {source}")]
    Backend {
        /// The backend, e.g. "PostgreSQL".
        backend: &'static str,
        /// What the store was doing, e.g. "applying a page of changes".
        context: &'static str,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
        /// Whether retrying may succeed (connection lost, serialization failure, timeout).
        transient: bool,
    },
    /// Creating the data directory or reading a file failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The path involved.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The database was written by a newer kdelta; refusing to touch it.
    #[error(
        "database schema version {found} is newer than this kdelta supports ({supported}); upgrade kdelta or restore a backup"
    )]
    SchemaTooNew {
        /// Highest migration version recorded in the database.
        found: i64,
        /// Highest migration version this build knows.
        supported: i64,
    },
    /// A reading batch was refused as a whole; nothing of it was stored.
    #[error("invalid reading batch: {0}")]
    InvalidBatch(String),
    /// A document batch was refused as a whole (empty, too many documents, too large, a key
    /// twice, a context that names no version of its key); nothing of it was stored.
    #[error("invalid document batch: {0}")]
    InvalidDocBatch(String),
    /// One entry of a document batch was refused, so the whole batch was; `index` counts
    /// from 0 in the order the entries were given.
    #[error("entry {index}: {source}")]
    BatchEntry {
        /// Position of the entry in the batch, from 0.
        index: usize,
        /// What is wrong with it.
        #[source]
        source: Box<StoreError>,
    },
    /// A document key is empty, too long or contains control characters.
    #[error("invalid document key {key:?}: {reason}")]
    InvalidKey {
        /// The offending key (possibly shortened).
        key: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A document value exceeds the configured maximum.
    #[error("document value for {key:?} is {size} bytes, over the limit of {max}")]
    ValueTooLarge {
        /// The key being written.
        key: String,
        /// Encoded size.
        size: usize,
        /// Configured limit.
        max: usize,
    },
    /// A query's parameters are inconsistent (bucket of zero, `from` after `to`, …).
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// A document key has no live value (never written, or deleted).
    #[error("document {0:?} does not exist")]
    UnknownKey(String),
    /// A series named in a query does not exist.
    #[error("unknown series {0:?}")]
    UnknownSeries(String),
    /// An as-of time lies before the first version of a key.
    #[error("document {key:?} has no version at or before {at}")]
    BeforeHistory {
        /// The key.
        key: String,
        /// The requested point, as text.
        at: String,
    },
    /// An as-of read reaches a version whose value document retention pruned.
    #[error(
        "the history of document {key:?} at {at} was pruned by retention; as-of reads answer from HLC {horizon} on (unix ms {horizon_ms})",
        horizon_ms = horizon.ms()
    )]
    HistoryPruned {
        /// The key.
        key: String,
        /// The requested point, as text.
        at: String,
        /// The oldest point as-of reads of this key still answer: the first version kept
        /// after the newest pruned one.
        horizon: crate::Hlc,
    },
    /// A remote change's HLC is further ahead of the local wall clock than allowed.
    #[error(
        "remote timestamp {remote} from actor {actor} is {ahead_ms} ms ahead of local wall time (max offset {max_offset_ms} ms)"
    )]
    ClockSkew {
        /// The actor whose change carried the timestamp.
        actor: ActorId,
        /// The remote HLC.
        remote: Hlc,
        /// How far ahead of local wall time it is.
        ahead_ms: u64,
        /// The configured maximum.
        max_offset_ms: u64,
    },
    /// A change failed its signature or chain check (see `seal.rs`): forged, altered,
    /// re-ordered, or unsigned where signatures are required. Nothing of the call was stored.
    #[error("change {seq} of actor {actor} refused ({reason}): {detail}")]
    ChainRefused {
        /// The actor the change claims.
        actor: ActorId,
        /// Its seq.
        seq: u64,
        /// `bad_signature`, `broken_chain` or `unsigned`.
        reason: &'static str,
        /// What exactly did not hold.
        detail: String,
    },
    /// A remote change arrived before its predecessor from the same actor.
    #[error("change {actor}:{got} refused: the store holds {actor} only up to seq {have}, so seq {} is missing", have + 1)]
    SeqGap {
        /// The actor.
        actor: ActorId,
        /// Highest contiguous seq held locally.
        have: u64,
        /// The seq that arrived.
        got: u64,
    },
    /// A received change carries rollups of pruned readings that cannot be right
    /// (`pruned_rollups.rs`): the change is refused whole.
    #[error("change {actor}:{seq} refused: invalid rollups of pruned readings: {detail}")]
    InvalidPrunedRollups {
        /// The actor the change claims.
        actor: ActorId,
        /// Its seq.
        seq: u64,
        /// What did not hold.
        detail: String,
    },
    /// Bytes could not be decoded (CBOR body, change, frame).
    #[error("cannot decode {what}: {detail}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// Why it failed.
        detail: String,
    },
    /// A twin patch (or initial twin value) was refused as a whole; nothing was stored.
    #[error("invalid patch for twin {key:?}: {problem}")]
    InvalidPatch {
        /// The twin's key.
        key: String,
        /// What is wrong, naming the path or limit involved.
        problem: String,
    },
    /// The key exists as the other kind of document (a plain register where a twin was
    /// expected, or the reverse).
    #[error("document {key:?} {problem}")]
    WrongKind {
        /// The key.
        key: String,
        /// What it is and what was asked, e.g. "is a plain document, not a twin".
        problem: &'static str,
    },
    /// A twin was created on a key that already holds one.
    #[error("twin {0:?} already exists")]
    TwinExists(String),
    /// The file system holding the store is full (`SQLITE_FULL`, ENOSPC): nothing of this
    /// write was stored. A state, not a crash: reads keep working, and writes succeed again
    /// as soon as space is freed (by retention, or by hand).
    #[error(
        "the disk holding the store is full, so nothing was stored while {context} ({detail}); free space on that file system or keep less ([retention] readings, max_disk, min_free) — writes resume by themselves once there is room"
    )]
    DiskFull {
        /// What the store was doing.
        context: &'static str,
        /// What SQLite said.
        detail: String,
    },
    /// The store's writer task has stopped (the store is closing or crashed).
    #[error("the store is closed")]
    Closed,
}

impl StoreError {
    pub(crate) fn db(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
        move |source| StoreError::Database { context, source }
    }

    /// This error, as the problem of entry `index` of a batch. Kept as is when it already
    /// names an entry, or when it is not the caller's fault (a database failure is not an
    /// entry's problem).
    pub fn at_entry(self, index: usize) -> StoreError {
        match self {
            e @ StoreError::BatchEntry { .. } => e,
            e if !e.is_client_error() => e,
            e => StoreError::BatchEntry {
                index,
                source: Box::new(e),
            },
        }
    }

    /// The error itself, or for [`StoreError::BatchEntry`] the error of the entry.
    pub fn innermost(&self) -> &StoreError {
        match self {
            StoreError::BatchEntry { source, .. } => source.innermost(),
            e => e,
        }
    }

    /// True when the same operation may succeed if simply retried: the database is busy or
    /// locked (another connection held the write lock past the busy timeout), or the disk
    /// is full (a state retention resolves; callers retry with backoff instead of dropping
    /// data). Everything else is not transient — constraint violations, corruption, I/O
    /// errors, misuse, decoding errors, a closed store: retrying gives the same answer, so
    /// the job stops with its error instead of being retried forever.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database { source, .. } => sqlite_transient(source),
            StoreError::WriteGroup { transient, .. } => *transient,
            StoreError::Backend { transient, .. } => *transient,
            StoreError::DiskFull { .. } => true,
            StoreError::BatchEntry { source, .. } => source.is_transient(),
            _ => false,
        }
    }

    /// True when the cause is a full disk: a [`StoreError::DiskFull`], or an SQLite
    /// `SQLITE_FULL` not classified yet.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::DiskFull { .. } => true,
            StoreError::Database {
                source: rusqlite::Error::SqliteFailure(f, _),
                ..
            } => f.code == rusqlite::ErrorCode::DiskFull,
            _ => false,
        }
    }

    /// Turns an SQLite `SQLITE_FULL` into [`StoreError::DiskFull`] (everything else is
    /// returned unchanged), so callers see one distinct error for a full disk.
    pub(crate) fn classify(self) -> StoreError {
        match self {
            StoreError::Database { context, source } if is_sqlite_full(&source) => {
                StoreError::DiskFull {
                    context,
                    detail: source.to_string(),
                }
            }
            e => e,
        }
    }

    /// True when the caller sent something invalid (as opposed to a failure of the store).
    pub fn is_client_error(&self) -> bool {
        matches!(
            self.innermost(),
            StoreError::InvalidBatch(_)
                | StoreError::InvalidDocBatch(_)
                | StoreError::InvalidKey { .. }
                | StoreError::ValueTooLarge { .. }
                | StoreError::InvalidQuery(_)
                | StoreError::UnknownSeries(_)
                | StoreError::UnknownKey(_)
                | StoreError::BeforeHistory { .. }
                | StoreError::HistoryPruned { .. }
                | StoreError::Decode { .. }
                | StoreError::InvalidPrunedRollups { .. }
                | StoreError::InvalidPatch { .. }
                | StoreError::WrongKind { .. }
                | StoreError::TwinExists(_)
        )
    }

    /// A short stable machine-readable code, used in API errors and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Database { .. }
            | StoreError::WriteGroup { .. }
            | StoreError::Backend { .. } => "database",
            StoreError::Io { .. } => "io",
            StoreError::SchemaTooNew { .. } => "schema_too_new",
            StoreError::InvalidBatch(_) | StoreError::InvalidDocBatch(_) => "invalid_batch",
            StoreError::BatchEntry { source, .. } => source.code(),
            StoreError::InvalidKey { .. } => "invalid_key",
            StoreError::ValueTooLarge { .. } => "value_too_large",
            StoreError::InvalidQuery(_) => "invalid_query",
            StoreError::UnknownSeries(_) => "unknown_series",
            StoreError::UnknownKey(_) => "unknown_key",
            StoreError::BeforeHistory { .. } => "before_history",
            StoreError::HistoryPruned { .. } => "history_pruned",
            StoreError::ClockSkew { .. } => "clock_skew",
            StoreError::SeqGap { .. } => "seq_gap",
            StoreError::ChainRefused { reason, .. } => reason,
            StoreError::Decode { .. } => "decode",
            StoreError::InvalidPrunedRollups { .. } => "invalid_pruned_rollups",
            StoreError::InvalidPatch { .. } => "invalid_patch",
            StoreError::WrongKind { .. } => "wrong_kind",
            StoreError::TwinExists(_) => "twin_exists",
            StoreError::DiskFull { .. } => "disk_full",
            StoreError::Closed => "closed",
        }
    }
}

/// Whether an SQLite error may go away on retry (see [`StoreError::is_transient`]).
pub(crate) fn sqlite_transient(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode as C;
    match e {
        rusqlite::Error::SqliteFailure(f, _) => {
            matches!(f.code, C::DatabaseBusy | C::DatabaseLocked | C::DiskFull)
        }
        _ => false,
    }
}

fn is_sqlite_full(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull)
}

/// Result alias for the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(code: i32) -> StoreError {
        StoreError::Database {
            context: "testing",
            source: rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None),
        }
    }

    #[test]
    fn busy_and_locked_are_transient_constraint_and_corruption_are_not() {
        use rusqlite::ffi;
        assert!(sqlite(ffi::SQLITE_BUSY).is_transient());
        assert!(sqlite(ffi::SQLITE_LOCKED).is_transient());
        assert!(sqlite(ffi::SQLITE_FULL).is_transient());
        assert!(!sqlite(ffi::SQLITE_IOERR).is_transient());
        assert!(!sqlite(ffi::SQLITE_NOMEM).is_transient());
        assert!(!StoreError::Closed.is_transient());
        assert!(!sqlite(ffi::SQLITE_CONSTRAINT).is_transient());
        assert!(!sqlite(ffi::SQLITE_CORRUPT).is_transient());
        assert!(!sqlite(ffi::SQLITE_NOTADB).is_transient());
        assert!(!sqlite(ffi::SQLITE_MISUSE).is_transient());
        let decode = StoreError::Database {
            context: "testing",
            source: rusqlite::Error::InvalidColumnType(0, "x".into(), rusqlite::types::Type::Blob),
        };
        assert!(!decode.is_transient());
        assert_eq!(sqlite(ffi::SQLITE_BUSY).code(), "database");
    }

    #[test]
    fn sqlite_full_becomes_disk_full_and_nothing_else_does() {
        use rusqlite::ffi;
        let full = sqlite(ffi::SQLITE_FULL);
        assert!(full.is_disk_full());
        let full = full.classify();
        assert!(matches!(full, StoreError::DiskFull { .. }), "{full:?}");
        assert_eq!(full.code(), "disk_full");
        assert!(full.is_transient() && full.is_disk_full());
        assert!(full.to_string().contains("free space"), "{full}");
        let busy = sqlite(ffi::SQLITE_BUSY).classify();
        assert!(!busy.is_disk_full());
        assert_eq!(busy.code(), "database");
    }
}
