//! The readings on either store: ingest ([`Backend::append`]) and the queries — series list,
//! raw range, aggregate and latest values, timing and gap records —
//! answered by the embedded SQLite store or by a hub replica's PostgreSQL database with the
//! same results and errors ([`StoreError`]; `kdelta_pg`'s become theirs through `From`). The
//! one place the API's readings handlers (`api/readings.rs`) meet the backend, so each route
//! has one handler whichever store answers it.

use std::sync::Arc;

use kdelta_sync::{
    AggregateQuery, Bucket, ChangeMeta, LatestReading, RangeQuery, ReadingBatch, ReadingPage,
    SeriesPage, StoreError, StoredGap, TimeReference, TimingRecord,
};

use super::Backend;

impl Backend {
    /// One page of series in name order (`Store::series_page`).
    pub async fn series_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<SeriesPage, StoreError> {
        match self {
            Backend::Sqlite(store) => store.series_page(after, limit).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(hub) => Ok(hub.store.series_page(after, limit).await?),
        }
    }

    /// Raw readings of one series, paged (`Store::range`). Cursors belong to the store that
    /// issued them.
    pub async fn range(&self, q: &RangeQuery) -> Result<ReadingPage, StoreError> {
        match self {
            Backend::Sqlite(store) => store.range(q).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(hub) => Ok(hub.store.range(q).await?),
        }
    }

    /// Time buckets of one series (`Store::aggregate`).
    pub async fn aggregate(&self, q: &AggregateQuery) -> Result<Vec<Bucket>, StoreError> {
        match self {
            Backend::Sqlite(store) => store.aggregate(q).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(hub) => Ok(hub.store.aggregate(q).await?),
        }
    }

    /// The latest reading of each series, or of `series` (`Store::latest`).
    pub async fn latest(
        &self,
        series: Option<&[String]>,
    ) -> Result<Vec<LatestReading>, StoreError> {
        match self {
            Backend::Sqlite(store) => store.latest(series).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(hub) => Ok(hub.store.latest(series).await?),
        }
    }

    /// Stores a readings batch as one change of this store's own actor (`Store::append`; on
    /// a PostgreSQL hub, of the actor its replicas share, seq and HLC issued under the
    /// database's locks). Validated whole before anything is written; durable on return.
    pub async fn append(&self, batch: ReadingBatch) -> Result<ChangeMeta, StoreError> {
        match self {
            Backend::Sqlite(store) => store.append(batch).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(hub) => {
                let change = hub.store.append(batch).await?;
                Ok(ChangeMeta {
                    actor: change.actor,
                    seq: change.seq,
                    hlc: change.hlc,
                })
            }
        }
    }

    /// Timing records of readings sampled under an untrusted clock after position `after`
    /// (`Store::reading_timing`; on PostgreSQL positions are the database's change ids).
    pub async fn reading_timing(
        &self,
        series: Option<String>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, TimingRecord)>, StoreError> {
        match self {
            Backend::Sqlite(store) => store.reading_timing(series, after, limit).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(hub) => Ok(hub
                .store
                .reading_timing(series.as_deref(), after, limit)
                .await?),
        }
    }

    /// Gap records after position `after` (`Store::gaps`; on PostgreSQL positions are the
    /// database's change ids).
    pub async fn gaps(
        &self,
        series: Option<String>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<StoredGap>, StoreError> {
        match self {
            Backend::Sqlite(store) => store.gaps(series, after, limit).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(hub) => Ok(hub.store.gaps(series.as_deref(), after, limit).await?),
        }
    }

    /// The trusted time sources of this store (on a hub replica: the replica's), which
    /// decide whether readings stamped by the agent's clock carry a timing record.
    pub fn time_reference(&self) -> Arc<TimeReference> {
        match self {
            Backend::Sqlite(store) => store.time_reference(),
            #[cfg(feature = "postgres")]
            Backend::Postgres(hub) => kdelta_sync::SyncStore::time_reference(&hub.store),
        }
    }
}
