//! Commits announced across hub replicas: every apply transaction that stores changes sends
//! `NOTIFY kdelta_changes, '<actor hex>:<max seq>'` per actor it advanced (PostgreSQL delivers
//! it at commit and drops it on rollback), and [`ChangeFeed`] LISTENs for them on a connection
//! of its own. A replica's live sync sessions can so push a change another replica stored.
//! Notifications are hints, as the SQLite store's broadcast events are: a lost connection is
//! reported as [`FeedEvent::Lost`] (the listener reconnects), after which the change log —
//! queried from what a peer was sent — is the truth, and sessions keep their periodic recheck.

use kdelta_sync::ActorId;
use sqlx::postgres::PgListener;

use crate::error::{PgError, Result};
use crate::store::PgStore;

/// The channel apply transactions notify.
pub const CHANNEL: &str = "kdelta_changes";

/// What the feed reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedEvent {
    /// Some replica committed changes of `actor` up to `max_seq`.
    Committed {
        /// The actor whose changes were stored.
        actor: ActorId,
        /// Its highest contiguous seq after the commit.
        max_seq: u64,
    },
    /// The listening connection was lost (and is being re-established): announcements may
    /// have been missed, so whoever waits should look at the change log again.
    Lost,
}

/// The payload of one notification.
pub(crate) fn payload(actor: ActorId, max_seq: u64) -> String {
    format!("{actor}:{max_seq}")
}

fn parse(payload: &str) -> Option<FeedEvent> {
    let (actor, seq) = payload.split_once(':')?;
    Some(FeedEvent::Committed {
        actor: actor.parse().ok()?,
        max_seq: seq.parse().ok()?,
    })
}

/// Commits of every replica on this database, as they happen (see the module docs).
pub struct ChangeFeed {
    listener: PgListener,
}

impl ChangeFeed {
    /// The next event. Malformed payloads (someone else notifying the channel) are skipped.
    pub async fn next(&mut self) -> Result<FeedEvent> {
        loop {
            match self.listener.try_recv().await {
                Ok(Some(n)) => {
                    if let Some(e) = parse(n.payload()) {
                        return Ok(e);
                    }
                }
                Ok(None) => return Ok(FeedEvent::Lost),
                Err(e) => return Err(PgError::db("waiting for commit announcements")(e)),
            }
        }
    }
}

impl PgStore {
    /// Listens for the commits of every replica on this database. The feed holds one of
    /// the pool's connections until it is dropped ([`close`](PgStore::close) waits for it),
    /// and buffers announcements until they are read (sqlx's buffer is not bounded): read
    /// it continuously or drop it.
    pub async fn listen(&self) -> Result<ChangeFeed> {
        let ctx = "listening for commit announcements";
        let mut listener = PgListener::connect_with(&self.inner.pool)
            .await
            .map_err(PgError::db(ctx))?;
        listener.listen(CHANNEL).await.map_err(PgError::db(ctx))?;
        Ok(ChangeFeed { listener })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_junk_is_skipped() {
        let a = ActorId([0xAB; 16]);
        assert_eq!(
            parse(&payload(a, 42)),
            Some(FeedEvent::Committed {
                actor: a,
                max_seq: 42
            })
        );
        assert_eq!(parse("hello"), None);
        assert_eq!(parse("zz:1"), None);
        assert_eq!(parse(&format!("{a}:-1")), None);
    }
}
