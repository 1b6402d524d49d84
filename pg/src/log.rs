//! The change log in commit order, for cursors that follow it across replicas — a hub's
//! MQTT outbox ([`PgStore::log_after`], [`PgStore::log_end`], [`PgStore::log_cursor`]) —
//! and the lease that lets one replica at a time run such a follower ([`Leadership`]).
//!
//! `changes.id` is not a commit order: two replicas' transactions commit out of id order,
//! so a cursor over ids would pass a change that becomes visible later with a lower id.
//! Each row records the transaction that wrote it (`commit_xid`, schema 5). Every
//! transaction below the snapshot's xmin has ended, so the rows with `commit_xid < xmin`
//! are a final set that only grows above it; ordered by `(commit_xid, id)` they form a log
//! whose positions never move. A position is `commit_xid << 20 | rank`, the rank of the row
//! among its transaction's rows: an `i64` that grows along the log, as SQLite's local ids
//! do, so the outbox code is the same on both stores. A change becomes visible to the log
//! once every transaction that started writing before it has ended (milliseconds: apply
//! transactions are short).

use kdelta_sync::{Change, Hlc, StoreError};
use sqlx::pool::PoolConnection;
use sqlx::{Postgres, Row};

use crate::error::{PgError, Result};
use crate::read::{LogRow, actor_of, load};
use crate::store::PgStore;

/// Bits of a position that hold the rank of a row in its transaction: a transaction writes
/// far fewer changes than 2^20 (a sync page is bounded by its frame size), and transaction
/// ids stay below 2^43 for decades of writes.
const RANK_BITS: u32 = 20;
const RANK_MASK: i64 = (1 << RANK_BITS) - 1;

/// The position of the `rank`-th change (0-based, by id) that transaction `xid` wrote.
fn position(xid: i64, rank: i64) -> i64 {
    (xid << RANK_BITS) | rank.min(RANK_MASK)
}

impl PgStore {
    /// The position of the last change of the commit-ordered log (0 when it holds none).
    pub async fn log_end(&self) -> Result<i64> {
        let ctx = "reading the end of the change log";
        // The snapshot's xmin: every transaction below it has ended.
        let row = sqlx::query(
            "SELECT commit_xid, count(*) FROM changes WHERE commit_xid = \
             (SELECT max(commit_xid) FROM changes WHERE commit_xid > 0 \
              AND commit_xid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint) \
             GROUP BY commit_xid",
        )
        .fetch_optional(self.pool())
        .await
        .map_err(PgError::db(ctx))?;
        match row {
            None => Ok(0),
            Some(r) => {
                let xid: i64 = r.try_get(0).map_err(PgError::db(ctx))?;
                let n: i64 = r.try_get(1).map_err(PgError::db(ctx))?;
                Ok(position(xid, n - 1))
            }
        }
    }

    /// Up to `max` changes of the commit-ordered log after position `after`, with their
    /// positions (ascending), bodies loaded in one read-only snapshot. Positions are those
    /// of [`log_end`](Self::log_end); `0` reads from the start.
    pub async fn log_after(&self, after: i64, max: usize) -> Result<Vec<(i64, Change)>> {
        let ctx = "reading the change log in commit order";
        let max = max.clamp(1, 10_000) as i64;
        let (xid, rank) = (after >> RANK_BITS, after & RANK_MASK);
        let mut tx = self.pool().begin().await.map_err(PgError::db(ctx))?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(PgError::db(ctx))?;
        // The rest of the transaction the cursor stands in, then the transactions after it.
        let mut rows = if xid > 0 {
            sqlx::query(
                "SELECT c.id, c.commit_xid, a.actor, c.seq, c.hlc, c.kind, c.manifest, c.seal \
                 FROM changes c JOIN actors a ON a.idx = c.actor_idx \
                 WHERE c.commit_xid = $1 ORDER BY c.id OFFSET $2 LIMIT $3",
            )
            .bind(xid)
            .bind(rank + 1)
            .bind(max)
            .fetch_all(&mut *tx)
            .await
            .map_err(PgError::db(ctx))?
        } else {
            Vec::new()
        };
        let first_rank = rank + 1;
        let from_current = rows.len();
        if (rows.len() as i64) < max {
            // Only transactions below the snapshot's xmin: every one of them has ended.
            let more = sqlx::query(
                "SELECT c.id, c.commit_xid, a.actor, c.seq, c.hlc, c.kind, c.manifest, c.seal \
                 FROM changes c JOIN actors a ON a.idx = c.actor_idx \
                 WHERE c.commit_xid > $1 \
                 AND c.commit_xid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint \
                 ORDER BY c.commit_xid, c.id LIMIT $2",
            )
            .bind(xid.max(0))
            .bind(max - rows.len() as i64)
            .fetch_all(&mut *tx)
            .await
            .map_err(PgError::db(ctx))?;
            rows.extend(more);
        }
        let mut positions = Vec::with_capacity(rows.len());
        let mut log_rows = Vec::with_capacity(rows.len());
        let mut group = (0i64, 0i64);
        for (i, r) in rows.into_iter().enumerate() {
            let row_xid: i64 = r.try_get(1).map_err(PgError::db(ctx))?;
            let pos = if i < from_current {
                position(xid, first_rank + i as i64)
            } else {
                if group.0 != row_xid {
                    group = (row_xid, 0);
                }
                let p = position(row_xid, group.1);
                group.1 += 1;
                p
            };
            positions.push(pos);
            log_rows.push(LogRow {
                id: r.try_get(0).map_err(PgError::db(ctx))?,
                actor: actor_of(&r.try_get::<Vec<u8>, _>(2).map_err(PgError::db(ctx))?)?,
                seq: r.try_get::<i64, _>(3).map_err(PgError::db(ctx))? as u64,
                hlc: Hlc(r.try_get::<i64, _>(4).map_err(PgError::db(ctx))? as u64),
                kind: r.try_get(5).map_err(PgError::db(ctx))?,
                manifest: r.try_get(6).map_err(PgError::db(ctx))?,
                seal: r.try_get(7).map_err(PgError::db(ctx))?,
            });
        }
        let changes = load(&mut tx, log_rows).await?;
        tx.commit().await.map_err(PgError::db(ctx))?;
        Ok(positions.into_iter().zip(changes).collect())
    }

    /// How many changes of the commit-ordered log lie after position `after` (a follower's
    /// lag; one index range count).
    pub async fn log_count_after(&self, after: i64) -> Result<i64> {
        let (xid, rank) = (after >> RANK_BITS, after & RANK_MASK);
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FILTER (WHERE commit_xid > $1) \
                    + GREATEST(count(*) FILTER (WHERE commit_xid = $1) - $2 - 1, 0) \
             FROM changes WHERE commit_xid >= GREATEST($1, 1) \
             AND commit_xid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
        )
        .bind(xid)
        .bind(rank)
        .fetch_one(self.pool())
        .await
        .map_err(PgError::db("counting the change log after a position"))?;
        Ok(n)
    }

    /// The named cursor's `(acked, sent)` positions, `None` when it was never stored.
    pub async fn log_cursor(&self, name: &str) -> Result<Option<(i64, i64)>> {
        let ctx = "reading a log cursor";
        let row = sqlx::query("SELECT acked, sent FROM log_cursors WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await
            .map_err(PgError::db(ctx))?;
        row.map(|r| {
            Ok((
                r.try_get(0).map_err(PgError::db(ctx))?,
                r.try_get(1).map_err(PgError::db(ctx))?,
            ))
        })
        .transpose()
    }

    /// Stores the named cursor (durable on return). `sent < acked` or a negative position
    /// is refused.
    pub async fn store_log_cursor(&self, name: &str, acked: i64, sent: i64) -> Result<()> {
        if acked < 0 || sent < acked {
            return Err(PgError::Store(StoreError::InvalidQuery(format!(
                "log cursor {name:?}: acked {acked} and sent {sent} are inconsistent"
            ))));
        }
        sqlx::query(
            "INSERT INTO log_cursors (name, acked, sent) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET acked = EXCLUDED.acked, sent = EXCLUDED.sent",
        )
        .bind(name)
        .bind(acked)
        .bind(sent)
        .execute(self.pool())
        .await
        .map_err(PgError::db("storing a log cursor"))?;
        Ok(())
    }

    /// Takes the lease `role` (e.g. `mqtt`) of this database schema when no other
    /// connection holds it: a session-level advisory lock on a connection of its own, held
    /// until the [`Leadership`] is dropped or that connection is lost (a replica killed
    /// with SIGKILL loses it when PostgreSQL sees its connection close). `None` when another
    /// holds it.
    pub async fn try_lead(&self, role: &str) -> Result<Option<Leadership>> {
        let ctx = "taking a replica lease";
        let mut conn = self.pool().acquire().await.map_err(PgError::db(ctx))?;
        let got: bool = sqlx::query_scalar(
            "SELECT pg_try_advisory_lock(hashtextextended(current_schema() || '/kdelta/lead/' || $1, 0))",
        )
        .bind(role)
        .fetch_one(&mut *conn)
        .await
        .map_err(PgError::db(ctx))?;
        if !got {
            return Ok(None);
        }
        Ok(Some(Leadership {
            conn: Some(conn),
            role: role.to_owned(),
        }))
    }
}

/// A lease of one role among a hub's replicas ([`PgStore::try_lead`]). Dropping it closes
/// its connection, which releases the lease.
pub struct Leadership {
    conn: Option<PoolConnection<Postgres>>,
    role: String,
}

impl Leadership {
    /// The role leased.
    pub fn role(&self) -> &str {
        &self.role
    }

    /// True while the lease's connection answers (the lock is held as long as it is
    /// open). `false` once it failed: the lease is gone, another replica may take it.
    pub async fn still_held(&mut self) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        let ok = sqlx::query("SELECT 1").execute(&mut **conn).await.is_ok();
        if !ok {
            self.conn = None;
        }
        ok
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        // Closed, not returned to the pool: a pooled connection would keep the lock.
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
        }
    }
}
