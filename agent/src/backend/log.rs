//! The change log as a follower reads it on either store — the MQTT outbox: positions
//! ([`Backend::log_end`], [`Backend::log_after`]; SQLite's local ids, PostgreSQL's
//! commit-ordered positions of `kdelta_pg`'s `log.rs`, both `i64`s that grow along the
//! log), wake-ups when changes commit ([`LogWakeups`]), and the series list and the ingest
//! write ([`Backend::append_in_parts`]) the follower also needs.

use kdelta_sync::{Change, ChangeEvent, ChangeMeta, ReadingBatch, SeriesInfo, StoreError};
use tokio::sync::broadcast;

use super::Backend;

/// Wake-ups of a log follower: something may have committed.
pub enum LogWakeups {
    /// The SQLite store's change events (each with its log position).
    Sqlite(broadcast::Receiver<ChangeEvent>),
    /// Every replica's commit announcements (no positions: read the log again).
    #[cfg(feature = "postgres")]
    Postgres(kdelta_pg::PgAnnouncements),
}

impl LogWakeups {
    /// The next wake-up: a change was committed, or announcements were missed — either way,
    /// read the log again. Cancel-safe. An error means no more will come (the store closed).
    pub async fn next(&mut self) -> Result<(), StoreError> {
        match self {
            LogWakeups::Sqlite(rx) => match rx.recv().await {
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => Ok(()),
                Err(broadcast::error::RecvError::Closed) => Err(StoreError::Closed),
            },
            #[cfg(feature = "postgres")]
            LogWakeups::Postgres(rx) => {
                use kdelta_sync::Announcements;
                rx.next().await.map(|_| ())
            }
        }
    }
}

impl Backend {
    /// Wake-ups for a follower of the log; subscribe before reading the log's end so no
    /// commit falls between the two.
    pub async fn log_wakeups(&self) -> Result<LogWakeups, StoreError> {
        match self {
            Backend::Sqlite(store) => Ok(LogWakeups::Sqlite(store.subscribe())),
            #[cfg(feature = "postgres")]
            Backend::Postgres(hub) => Ok(LogWakeups::Postgres(hub.store.announcements().await?)),
        }
    }

    /// The position of the newest change of the log (0 when empty).
    pub async fn log_end(&self) -> Result<i64, StoreError> {
        match self {
            Backend::Sqlite(store) => store.log_end().await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(hub) => Ok(hub.store.log_end().await?),
        }
    }

    /// How many changes lie after position `after` (a follower's lag).
    pub async fn log_count_after(&self, after: i64) -> Result<i64, StoreError> {
        match self {
            // Local ids: one per change, in order.
            Backend::Sqlite(store) => Ok((store.log_end().await? - after).max(0)),
            #[cfg(feature = "postgres")]
            Backend::Postgres(hub) => Ok(hub.store.log_count_after(after).await?),
        }
    }

    /// Up to `max` changes after position `after`, with their positions, in log order.
    pub async fn log_after(
        &self,
        after: i64,
        max: usize,
    ) -> Result<Vec<(i64, Change)>, StoreError> {
        match self {
            Backend::Sqlite(store) => store.log_after(after, max).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(hub) => Ok(hub.store.log_after(after, max).await?),
        }
    }

    /// Every series, in name order, with unit and metadata.
    pub async fn series(&self) -> Result<Vec<SeriesInfo>, StoreError> {
        match self {
            Backend::Sqlite(store) => store.series().await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(hub) => Ok(hub.store.series().await?),
        }
    }

    /// Stores a readings batch as changes of this store's own actor, as many as
    /// `max_change_bytes` needs, all or none (`Store::append_in_parts`; on PostgreSQL in one
    /// transaction). Durable on return.
    pub async fn append_in_parts(
        &self,
        batch: ReadingBatch,
    ) -> Result<Vec<ChangeMeta>, StoreError> {
        match self {
            Backend::Sqlite(store) => store.append_in_parts(batch).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(hub) => Ok(hub
                .store
                .append_in_parts(batch)
                .await?
                .into_iter()
                .map(|c| ChangeMeta {
                    actor: c.actor,
                    seq: c.seq,
                    hlc: c.hlc,
                })
                .collect()),
        }
    }
}
