//! The readings queries on either store: series list, raw range, aggregate and latest values,
//! answered by the embedded SQLite store or by a hub replica's PostgreSQL database with the
//! same results and errors ([`StoreError`]; `kdelta_pg`'s become theirs through `From`). The
//! one place the API's readings handlers (`api/readings.rs`) meet the backend, so each route
//! has one handler whichever store answers it.

use kdelta_sync::{
    AggregateQuery, Bucket, LatestReading, RangeQuery, ReadingPage, SeriesPage, StoreError,
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
}
