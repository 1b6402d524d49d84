//! The documents on either store: current value and siblings, as-of reads, history pages,
//! diffs and listings, and the writes (put, delete, batch), answered by the embedded SQLite
//! store or by a hub replica's PostgreSQL database with the same results and errors
//! ([`StoreError`]; `kdelta_pg`'s become theirs through `From`). On PostgreSQL a write is a
//! change of the hub's own actor, shared by its replicas. The one place the API's document
//! handlers (`api/docs.rs`, `api/doc_batch.rs`) meet the backend, so each route has one
//! handler whichever store answers it.

use kdelta_sync::{
    AsOf, BatchEntry, DocDiff, DocState, DocVersion, HistoryCursor, Limits, StoreError,
};

use super::Backend;

impl Backend {
    /// The size limits writes are checked against (`[store]` limits on either backend).
    pub fn limits(&self) -> &Limits {
        match self {
            Backend::Sqlite(store) => &store.config().limits,
            #[cfg(feature = "postgres")]
            Backend::Postgres(hub) => &hub.store.config().limits,
        }
    }

    /// The current state of `key` (`Store::get`): winner and sibling count; `None` when
    /// the key was never written.
    pub async fn doc(&self, key: &str) -> Result<Option<DocState>, StoreError> {
        match self {
            Backend::Sqlite(store) => store.get(key).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(hub) => Ok(hub.store.get(key).await?),
        }
    }

    /// The state of `key` at `at` (`Store::get_as_of`).
    pub async fn doc_as_of(&self, key: &str, at: AsOf) -> Result<Option<DocState>, StoreError> {
        match self {
            Backend::Sqlite(store) => store.get_as_of(key, at).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(hub) => Ok(hub.store.get_as_of(key, at).await?),
        }
    }

    /// Current siblings of `key`, newest first (`Store::siblings`).
    pub async fn doc_siblings(&self, key: &str) -> Result<Vec<DocVersion>, StoreError> {
        match self {
            Backend::Sqlite(store) => store.siblings(key).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(hub) => Ok(hub.store.siblings(key).await?),
        }
    }

    /// One page of the versions of `key`, newest first (`Store::history`).
    pub async fn doc_history(
        &self,
        key: &str,
        limit: usize,
        before: Option<HistoryCursor>,
    ) -> Result<Vec<DocVersion>, StoreError> {
        match self {
            Backend::Sqlite(store) => store.history(key, limit, before).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(hub) => Ok(hub.store.history(key, limit, before).await?),
        }
    }

    /// How `key` changed between two points (`Store::diff`).
    pub async fn doc_diff(&self, key: &str, from: AsOf, to: AsOf) -> Result<DocDiff, StoreError> {
        match self {
            Backend::Sqlite(store) => store.diff(key, from, to).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(hub) => Ok(hub.store.diff(key, from, to).await?),
        }
    }

    /// Live documents under `prefix` in key order (`Store::list`).
    pub async fn doc_list(
        &self,
        prefix: &str,
        at: Option<AsOf>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Vec<DocState>, StoreError> {
        match self {
            Backend::Sqlite(store) => store.list(prefix, at, limit, after).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(hub) => Ok(hub.store.list(prefix, at, limit, after).await?),
        }
    }

    /// Writes a new version of `key` (`Store::put`); durable on return.
    pub async fn doc_put(
        &self,
        key: &str,
        value: &serde_json::Value,
    ) -> Result<DocVersion, StoreError> {
        match self {
            Backend::Sqlite(store) => store.put(key, value).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(hub) => Ok(hub.store.put(key, value).await?),
        }
    }

    /// Deletes `key` with a tombstone version (`Store::delete`); durable on return.
    pub async fn doc_delete(&self, key: &str) -> Result<DocVersion, StoreError> {
        match self {
            Backend::Sqlite(store) => store.delete(key).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(hub) => Ok(hub.store.delete(key).await?),
        }
    }

    /// Puts and deletes over many keys as one atomic change (`Store::write_batch`).
    pub async fn doc_batch(&self, entries: Vec<BatchEntry>) -> Result<Vec<DocVersion>, StoreError> {
        match self {
            Backend::Sqlite(store) => store.write_batch(entries).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(hub) => Ok(hub.store.write_batch(entries).await?),
        }
    }
}
