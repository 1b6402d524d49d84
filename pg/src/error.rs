//! The one error type of the PostgreSQL change log, [`PgError`]: opening (unreachable
//! server, refused credentials, a newer schema, migrations) and database failures, each
//! naming what the store was doing. Errors of the data itself (a seq gap, a clock too far
//! ahead, a change that does not decode) are the embedded store's [`StoreError`]s, so both
//! backends refuse the same input with the same error. Converts into [`StoreError`] for the
//! [`ChangeLog`](kdelta_sync::ChangeLog) interface.

use kdelta_sync::StoreError;

/// Everything that can go wrong in the PostgreSQL change log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// The connection URL does not parse.
    #[error("invalid PostgreSQL URL: {0}")]
    InvalidUrl(String),
    /// The server could not be reached (refused, unresolvable, timed out, TLS failed).
    #[error("cannot reach PostgreSQL at {target}: {detail}")]
    Unreachable {
        /// `host:port/database` (never the password).
        target: String,
        /// What the connection attempt ran into.
        detail: String,
    },
    /// The server refused the credentials or the database named does not exist.
    #[error("PostgreSQL at {target} refused to connect: {detail}")]
    Refused {
        /// `user@host:port/database` (never the password).
        target: String,
        /// The server's message, e.g. password authentication failed for user "kdelta".
        detail: String,
    },
    /// The database was written by a newer kdelta; nothing was touched.
    #[error(
        "the PostgreSQL database has schema version {found}, newer than this kdelta supports ({supported}); upgrade kdelta on every hub replica"
    )]
    SchemaTooNew {
        /// Highest migration version recorded in the database.
        found: i64,
        /// Highest migration version this build knows.
        supported: i64,
    },
    /// Applying the schema migrations failed.
    #[error("applying the PostgreSQL schema migrations: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// A statement failed; `context` says what the store was doing.
    #[error("PostgreSQL error while {context}: {source}")]
    Database {
        /// What the store was doing, e.g. "applying a page of changes".
        context: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// The data was refused (seq gap, clock skew, undecodable change) exactly as the
    /// embedded store refuses it.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PgError {
    pub(crate) fn db(context: &'static str) -> impl FnOnce(sqlx::Error) -> PgError {
        move |source| PgError::Database { context, source }
    }

    /// True when retrying the same operation may succeed: the server is unreachable or
    /// the connection dropped, the pool timed out, or PostgreSQL aborted the transaction
    /// for a conflict (serialization failure, deadlock) or is shutting down.
    pub fn is_transient(&self) -> bool {
        match self {
            PgError::Unreachable { .. } => true,
            PgError::Database { source, .. } => sqlx_transient(source),
            PgError::Store(e) => e.is_transient(),
            _ => false,
        }
    }

    /// True when PostgreSQL aborted a transaction because of a concurrent one
    /// (serialization failure or deadlock): running it again is the remedy.
    pub(crate) fn is_conflict(&self) -> bool {
        matches!(self, PgError::Database { source, .. } if sqlstate(source).is_some_and(|c| c == "40001" || c == "40P01"))
    }
}

/// The SQLSTATE of a database error.
pub(crate) fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(d) => d.code().map(|c| c.into_owned()),
        _ => None,
    }
}

fn sqlx_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        // 40001 serialization failure, 40P01 deadlock, 53xxx insufficient resources,
        // 57P0x shutdown / cannot connect now, 08xxx connection exceptions.
        sqlx::Error::Database(_) => sqlstate(e).is_some_and(|c| {
            c == "40001"
                || c == "40P01"
                || c.starts_with("53")
                || c.starts_with("57P")
                || c.starts_with("08")
        }),
        _ => false,
    }
}

impl From<PgError> for StoreError {
    fn from(e: PgError) -> StoreError {
        match e {
            PgError::Store(e) => e,
            PgError::SchemaTooNew { found, supported } => {
                StoreError::SchemaTooNew { found, supported }
            }
            PgError::Database { context, source } => StoreError::Backend {
                backend: "PostgreSQL",
                context,
                transient: sqlx_transient(&source),
                source: Box::new(source),
            },
            e => StoreError::Backend {
                backend: "PostgreSQL",
                context: if matches!(e, PgError::Migrate(_)) {
                    "opening the store"
                } else {
                    "connecting"
                },
                transient: e.is_transient(),
                source: Box::new(e),
            },
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = PgError> = std::result::Result<T, E>;
