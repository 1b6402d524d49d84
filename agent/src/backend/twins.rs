//! The twins (merge documents) on either store: merged value, as-of reads, history pages,
//! diffs, listings, and the edits (create, patch), answered by the embedded SQLite store or
//! by a hub replica's PostgreSQL database with the same results and errors
//! ([`StoreError`]; `kdelta_pg`'s become theirs through `From`). On PostgreSQL an edit is a
//! change of the hub's own actor, shared by its replicas. The one place the API's twin
//! handlers (`api/twins.rs`) meet the backend.

use kdelta_sync::{
    AsOf, DocDiff, HistoryCursor, StoreError, TwinHistoryEntry, TwinPatch, TwinState, TwinWrite,
};

use super::Backend;

impl Backend {
    /// The merged value of twin `key` (`Store::twin_get`); `None` when the key is not a
    /// twin.
    pub async fn twin(&self, key: &str) -> Result<Option<TwinState>, StoreError> {
        match self {
            Backend::Sqlite(store) => store.twin_get(key).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(hub) => Ok(hub.store.twin_get(key).await?),
        }
    }

    /// The value of twin `key` at `at` (`Store::twin_get_as_of`).
    pub async fn twin_as_of(&self, key: &str, at: AsOf) -> Result<serde_json::Value, StoreError> {
        match self {
            Backend::Sqlite(store) => store.twin_get_as_of(key, at).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(hub) => Ok(hub.store.twin_get_as_of(key, at).await?),
        }
    }

    /// One page of the changes of twin `key`, newest first (`Store::twin_history`).
    pub async fn twin_history(
        &self,
        key: &str,
        limit: usize,
        before: Option<HistoryCursor>,
    ) -> Result<Vec<TwinHistoryEntry>, StoreError> {
        match self {
            Backend::Sqlite(store) => store.twin_history(key, limit, before).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(hub) => Ok(hub.store.twin_history(key, limit, before).await?),
        }
    }

    /// How twin `key` changed between two points (`Store::twin_diff`).
    pub async fn twin_diff(&self, key: &str, from: AsOf, to: AsOf) -> Result<DocDiff, StoreError> {
        match self {
            Backend::Sqlite(store) => store.twin_diff(key, from, to).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(hub) => Ok(hub.store.twin_diff(key, from, to).await?),
        }
    }

    /// Twin keys under `prefix` in key order (`Store::twin_keys`).
    pub async fn twin_keys(
        &self,
        prefix: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        match self {
            Backend::Sqlite(store) => store.twin_keys(prefix, limit, after).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(hub) => Ok(hub.store.twin_keys(prefix, limit, after).await?),
        }
    }

    /// Creates twin `key` (`Store::twin_create`); durable on return.
    pub async fn twin_create(
        &self,
        key: &str,
        initial: Option<serde_json::Value>,
    ) -> Result<TwinWrite, StoreError> {
        match self {
            Backend::Sqlite(store) => store.twin_create(key, initial).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(hub) => Ok(hub.store.twin_create(key, initial).await?),
        }
    }

    /// Applies `patch` to twin `key` as one change (`Store::twin_patch`); durable on return.
    pub async fn twin_patch(&self, key: &str, patch: TwinPatch) -> Result<TwinWrite, StoreError> {
        match self {
            Backend::Sqlite(store) => store.twin_patch(key, patch).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(hub) => Ok(hub.store.twin_patch(key, patch).await?),
        }
    }
}
