//! Applying a page of changes in one PostgreSQL transaction, safely while other hub replicas
//! apply pages of the same actors: the rows of the page's actors are upserted and locked in
//! actor order (`INSERT … ON CONFLICT DO UPDATE … RETURNING` waits for a concurrent
//! transaction on the same actor and returns its committed `max_seq`), so the duplicate
//! and gap checks below read the state no other transaction can change before commit. Each
//! change is therefore stored once whoever receives it; a gap refuses the whole page and
//! nothing of it is stored, as `Store::apply_remote` does on SQLite. A transaction aborted
//! by PostgreSQL for a conflict (deadlock, serialization) is run again.
//!
//! The rows themselves are written by `rows.rs`; the version vector, the per-actor digests
//! and the commit announcement (`feed.rs`) move in the same transaction.

use std::collections::{BTreeSet, HashMap};

use kdelta_sync::{
    ActorId, ApplyOutcome, Change, ChangeBody, Digest, Hlc, ReadingBatch, StoreError,
};
use sqlx::{Postgres, Row, Transaction};

use crate::error::{PgError, Result};
use crate::partitions::month_of;
use crate::rows::{apply_correction, insert_changes, insert_docs, insert_readings, insert_twins};
use crate::store::PgStore;

/// Times a page is tried again after PostgreSQL aborted it for a conflict.
const CONFLICT_RETRIES: usize = 8;

/// `changes.kind` of each body, as in the SQLite store.
pub(crate) fn kind_of(body: &ChangeBody) -> i16 {
    match body {
        ChangeBody::Readings(_) => 1,
        ChangeBody::Doc(_) => 2,
        ChangeBody::Twin(_) => 3,
        ChangeBody::TimeCorrection(_) => 4,
        ChangeBody::DocBatch(_) => 5,
        ChangeBody::Gap(_) => 6,
    }
}

/// One locked actor row.
struct ActorRow {
    idx: i64,
    max_seq: u64,
    digest: Digest,
}

const CTX: &str = "applying a page of changes";

impl PgStore {
    /// Applies changes received from another replica, atomically: either every new change
    /// of the call is stored or none. Changes already held are skipped (idempotent, also
    /// when another replica stores them at the same time). A change whose predecessor from
    /// the same actor is missing fails the call with [`StoreError::SeqGap`]; a timestamp
    /// too far ahead with [`StoreError::ClockSkew`]; an invalid change with its validation
    /// error. Durable on return (PostgreSQL's commit).
    pub async fn apply_remote(&self, changes: Vec<Change>) -> Result<ApplyOutcome> {
        if changes.is_empty() {
            return Ok(ApplyOutcome::default());
        }
        for c in &changes {
            c.validate(&self.inner.config.limits)?;
        }
        if let Some(all_held) = self.all_held(&changes).await? {
            return Ok(all_held);
        }
        let months: BTreeSet<i64> = changes
            .iter()
            .filter_map(|c| match &c.body {
                ChangeBody::Readings(b) => Some(b),
                _ => None,
            })
            .flat_map(|b| b.series.iter())
            .flat_map(|s| [s.ts.first(), s.ts.last()].into_iter().flatten())
            .map(|&ts| month_of(ts))
            .collect::<BTreeSet<_>>();
        let months = fill_months(months);
        let now = self.clock().wall_ms() as i64;
        self.inner
            .partitions
            .ensure(&self.inner.pool, months, now)
            .await?;
        let mut attempt = 0;
        let outcome = loop {
            match self.apply_once(&changes, None).await.map(|r| r.0) {
                Err(e) if e.is_conflict() && attempt < CONFLICT_RETRIES => {
                    attempt += 1;
                    tracing::debug!(attempt, error = %e, "page conflicted with another replica; again");
                    tokio::time::sleep(std::time::Duration::from_millis(
                        5 * attempt as u64 + rand_jitter(),
                    ))
                    .await;
                }
                r => break r?,
            }
        };
        let mut clock = self.clock();
        for c in &changes {
            // Checked before storing; this only moves the clock past the change.
            let _ = clock.observe(c.hlc);
        }
        Ok(outcome)
    }

    /// `Some` when every change is held already (read without locking: `max_seq` only
    /// grows), so a page of duplicates costs one query and no write.
    async fn all_held(&self, changes: &[Change]) -> Result<Option<ApplyOutcome>> {
        let actors: Vec<Vec<u8>> = unique_actors(changes)
            .iter()
            .map(|a| a.as_bytes().to_vec())
            .collect();
        let rows = sqlx::query("SELECT actor, max_seq FROM actors WHERE actor = ANY($1)")
            .bind(&actors)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(PgError::db(CTX))?;
        let mut held: HashMap<ActorId, u64> = HashMap::new();
        for r in rows {
            let a: Vec<u8> = r.try_get(0).map_err(PgError::db(CTX))?;
            let s: i64 = r.try_get(1).map_err(PgError::db(CTX))?;
            if let Some(a) = ActorId::from_slice(&a) {
                held.insert(a, s as u64);
            }
        }
        let all = changes
            .iter()
            .all(|c| c.seq <= held.get(&c.actor).copied().unwrap_or(0));
        Ok(all.then_some(ApplyOutcome {
            applied: 0,
            skipped: changes.len(),
        }))
    }

    /// Writes a local readings batch as a change of the hub's own actor: the seq is the
    /// next of the actor's row (locked, so replicas never issue one seq twice) and the HLC
    /// is above everything the hub holds or stamped (`hub_clock`, shared by replicas).
    /// Validates like `Store::append`; durable on return.
    pub async fn append(&self, mut batch: ReadingBatch) -> Result<Change> {
        batch.normalize(&self.inner.config.limits)?;
        let months = batch
            .series
            .iter()
            .flat_map(|s| [s.ts.first(), s.ts.last()].into_iter().flatten())
            .map(|&ts| month_of(ts))
            .collect();
        let now = self.clock().wall_ms() as i64;
        self.inner
            .partitions
            .ensure(&self.inner.pool, fill_months(months), now)
            .await?;
        let mut change = Change {
            actor: self.inner.actor,
            seq: 0,
            hlc: Hlc(0),
            body: ChangeBody::Readings(batch),
            // The hub's own changes on PostgreSQL are not signed yet (its key is not shared by
            // its replicas; docs/hub.md): receivers accept them as unsigned, and counted.
            seal: None,
        };
        let mut attempt = 0;
        let (seq, hlc) = loop {
            // Never behind what this replica issued or observed, nor its best trusted time.
            let floor = self.clock().now();
            match self
                .apply_once(std::slice::from_ref(&change), Some(floor))
                .await
            {
                Err(e) if e.is_conflict() && attempt < CONFLICT_RETRIES => attempt += 1,
                Err(e) => return Err(e),
                Ok((_, stamped)) => {
                    break stamped.ok_or_else(|| {
                        PgError::Store(StoreError::Decode {
                            what: "a change of the hub",
                            detail: "it was not stamped".into(),
                        })
                    })?;
                }
            }
        };
        let _ = self.clock().observe(hlc);
        change.seq = seq;
        change.hlc = hlc;
        Ok(change)
    }

    /// One attempt: lock the actors, check, write, commit. With `local` (an HLC floor),
    /// `changes` is one change of the hub's own actor whose seq and HLC are assigned here
    /// and returned.
    async fn apply_once(
        &self,
        changes: &[Change],
        local: Option<Hlc>,
    ) -> Result<(ApplyOutcome, Option<(u64, Hlc)>)> {
        let mut tx = self.inner.pool.begin().await.map_err(PgError::db(CTX))?;
        let mut actors = lock_actors(&mut tx, &unique_actors(changes)).await?;
        let stamped;
        let changes = match local {
            Some(floor) => {
                let mut c = changes[0].clone();
                c.seq = actors[&c.actor].max_seq + 1;
                c.hlc = stamp(&mut tx, floor).await?;
                stamped = [c];
                &stamped[..]
            }
            None => changes,
        };
        let mut expect: HashMap<ActorId, u64> = HashMap::new();
        let mut fresh: Vec<&Change> = Vec::with_capacity(changes.len());
        let mut skipped = 0;
        {
            let clock = self.clock();
            for c in changes {
                let have = *expect
                    .entry(c.actor)
                    .or_insert_with(|| actors.get(&c.actor).map_or(0, |a| a.max_seq));
                if c.seq <= have {
                    skipped += 1;
                    continue;
                }
                if c.seq != have + 1 {
                    return Err(StoreError::SeqGap {
                        actor: c.actor,
                        have,
                        got: c.seq,
                    }
                    .into());
                }
                if local.is_none() {
                    clock.check(c.hlc).map_err(|e| StoreError::ClockSkew {
                        actor: c.actor,
                        remote: e.remote,
                        ahead_ms: e.ahead_ms,
                        max_offset_ms: e.max_offset_ms,
                    })?;
                }
                expect.insert(c.actor, c.seq);
                fresh.push(c);
            }
        }
        if fresh.is_empty() {
            tx.rollback().await.map_err(PgError::db(CTX))?;
            let outcome = ApplyOutcome {
                applied: 0,
                skipped,
            };
            return Ok((outcome, None));
        }
        let idx: HashMap<ActorId, i64> = actors.iter().map(|(a, r)| (*a, r.idx)).collect();
        let ids = insert_changes(&mut tx, &fresh, &idx).await?;
        insert_readings(&mut tx, &fresh, &ids).await?;
        insert_docs(&mut tx, &fresh, &ids).await?;
        insert_twins(&mut tx, &fresh, &ids).await?;
        for (c, &id) in fresh.iter().zip(&ids) {
            if let ChangeBody::TimeCorrection(t) = &c.body {
                apply_correction(&mut tx, idx[&c.actor], id, t).await?;
            }
        }
        // The version vector and the per-actor digests.
        for c in &fresh {
            if let Some(row) = actors.get_mut(&c.actor) {
                row.digest.add_change(c);
                row.max_seq = c.seq;
            }
        }
        let touched: BTreeSet<ActorId> = fresh.iter().map(|c| c.actor).collect();
        for a in touched {
            let row = &actors[&a];
            sqlx::query("UPDATE actors SET max_seq = $1, digest = $2 WHERE idx = $3")
                .bind(row.max_seq as i64)
                .bind(row.digest.0.as_slice())
                .bind(row.idx)
                .execute(&mut *tx)
                .await
                .map_err(PgError::db(CTX))?;
        }
        // Delivered to every replica's `ChangeFeed` at commit, dropped on rollback.
        let announcements: Vec<String> = actors
            .iter()
            .filter(|(a, _)| fresh.iter().any(|c| c.actor == **a))
            .map(|(a, row)| crate::feed::payload(*a, row.max_seq))
            .collect();
        sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
            .bind(crate::feed::CHANNEL)
            .bind(&announcements)
            .execute(&mut *tx)
            .await
            .map_err(PgError::db("announcing a page of changes"))?;
        tx.commit()
            .await
            .map_err(PgError::db("committing a page of changes"))?;
        let stamped = local.map(|_| (fresh[0].seq, fresh[0].hlc));
        let outcome = ApplyOutcome {
            applied: fresh.len(),
            skipped,
        };
        Ok((outcome, stamped))
    }
}

/// A few milliseconds of jitter so two replicas that conflicted do not retry in step.
fn rand_jitter() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()) % 7)
}

/// Every month from the first to the last of `months` (a batch spanning months has readings
/// in the months between).
fn fill_months(months: BTreeSet<i64>) -> BTreeSet<i64> {
    match (months.first(), months.last()) {
        // Bounded: the partition window is 133 months, and months outside it are skipped.
        (Some(&lo), Some(&hi)) if hi - lo < 2_000 => (lo..=hi).collect(),
        _ => months,
    }
}

fn unique_actors(changes: &[Change]) -> Vec<ActorId> {
    changes
        .iter()
        .map(|c| c.actor)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Creates the rows of `actors` that do not exist and locks all of them, in actor order
/// (so two transactions over the same actors cannot deadlock on them).
async fn lock_actors(
    tx: &mut Transaction<'_, Postgres>,
    actors: &[ActorId],
) -> Result<HashMap<ActorId, ActorRow>> {
    let bytes: Vec<Vec<u8>> = actors.iter().map(|a| a.as_bytes().to_vec()).collect();
    let rows = sqlx::query(
        "INSERT INTO actors (actor) SELECT a FROM unnest($1::bytea[]) AS a ORDER BY a \
         ON CONFLICT (actor) DO UPDATE SET actor = EXCLUDED.actor \
         RETURNING idx, actor, max_seq, digest",
    )
    .bind(&bytes)
    .fetch_all(&mut **tx)
    .await
    .map_err(PgError::db("locking the page's actors"))?;
    let mut out = HashMap::with_capacity(rows.len());
    for r in rows {
        let get = PgError::db("locking the page's actors");
        let actor: Vec<u8> = r.try_get(1).map_err(get)?;
        let actor = ActorId::from_slice(&actor).ok_or_else(|| StoreError::Decode {
            what: "stored actor id",
            detail: "not 16 bytes".into(),
        })?;
        let idx: i64 = r.try_get(0).map_err(PgError::db(CTX))?;
        let max_seq: i64 = r.try_get(2).map_err(PgError::db(CTX))?;
        let digest: Vec<u8> = r.try_get(3).map_err(PgError::db(CTX))?;
        out.insert(
            actor,
            ActorRow {
                idx,
                max_seq: max_seq as u64,
                digest: Digest::from_slice(&digest),
            },
        );
    }
    Ok(out)
}

/// The next HLC of the hub's own actor: above the shared clock, above every HLC stored,
/// and not below `floor` (this replica's clock). The hub actor's row is locked by the
/// caller, so replicas stamp one at a time.
async fn stamp(tx: &mut Transaction<'_, Postgres>, floor: Hlc) -> Result<Hlc> {
    let wall = floor.0 as i64;
    let hlc: i64 = sqlx::query_scalar(
        "UPDATE hub_clock SET hlc = GREATEST(hlc + 1, $1, \
         (SELECT COALESCE(MAX(hlc), 0) + 1 FROM changes)) WHERE id = 1 RETURNING hlc",
    )
    .bind(wall)
    .fetch_one(&mut **tx)
    .await
    .map_err(PgError::db("stamping a change of the hub"))?;
    Ok(Hlc(hlc as u64))
}
