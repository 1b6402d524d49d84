//! Applying a page of changes in one PostgreSQL transaction, safely while other hub replicas
//! apply pages of the same actors: the rows of the page's actors are upserted and locked in
//! actor order (`INSERT … ON CONFLICT DO UPDATE … RETURNING` waits for a concurrent
//! transaction on the same actor and returns its committed `max_seq`), so the duplicate
//! and gap checks below read the state no other transaction can change before commit. Each
//! change is therefore stored once whoever receives it; a gap refuses the whole page and
//! nothing of it is stored, as `Store::apply_remote` does on SQLite. Which changes of a page
//! are stored is decided by the embedded store's own rules ([`admit_remote`]: duplicates,
//! gaps, clock, and the signed-log check against the actors' bound keys and chain heads
//! kept in their rows). A transaction aborted by PostgreSQL for a conflict (deadlock,
//! serialization) is run again.
//!
//! The rows themselves are written by `rows.rs`, the rollup rows of the page's actors
//! brought up to date by `rollups.rs`; the version vector, the per-actor digests and the commit
//! announcement (`feed.rs`) move in the same transaction.

use std::collections::{BTreeSet, HashMap};

use kdelta_sync::seal::{self, CHAIN_START, Seal};
use kdelta_sync::{
    ActorId, AdmitRules, ApplyOutcome, ChainHead, ChainReport, Change, ChangeBody, Digest,
    HeldActor, Hlc, ReadingBatch, StoreError, TwinChange, admit_remote,
};
use sqlx::{Postgres, Row, Transaction};

use crate::docs::{Resolve, resolve_contexts};
use crate::error::{PgError, Result};
use crate::partitions::month_of;
use crate::rollups::{RollupWork, update as update_rollups};
use crate::rows::{apply_correction, insert_changes, insert_docs, insert_readings, insert_twins};
use crate::store::PgStore;
use crate::twins::{OwnTwinEdit, own_twin_change};

/// Times a page is tried again after PostgreSQL aborted it for a conflict.
const CONFLICT_RETRIES: usize = 8;

/// One locked actor row.
struct ActorRow {
    idx: i64,
    max_seq: u64,
    digest: Digest,
    /// Bound key and chain head (schema v2).
    head: ChainHead,
}

const CTX: &str = "applying a page of changes";

impl PgStore {
    /// Applies changes received from another replica, atomically: either every new change
    /// of the call is stored or none. Changes already held are skipped (idempotent, also
    /// when another replica stores them at the same time). A change whose predecessor from
    /// the same actor is missing fails the call with [`StoreError::SeqGap`]; a timestamp
    /// too far ahead with [`StoreError::ClockSkew`]; an invalid change with its validation
    /// error; a forged, altered or re-ordered change (or an unsigned one where signatures
    /// are required) with [`StoreError::ChainRefused`] naming the actor and seq. Durable on
    /// return (PostgreSQL's commit).
    pub async fn apply_remote(&self, changes: Vec<Change>) -> Result<ApplyOutcome> {
        self.apply_checked(changes, false).await.map(|r| r.0)
    }

    /// Like [`apply_remote`](Self::apply_remote), but a change failing its signature or
    /// chain check refuses only its actor's changes of the call (listed in the report, with
    /// the count of unsigned changes accepted); the other actors' changes apply,
    /// atomically. What sync sessions use, as `Store::apply_remote_verified` on SQLite.
    pub async fn apply_remote_verified(
        &self,
        changes: Vec<Change>,
    ) -> Result<(ApplyOutcome, ChainReport)> {
        self.apply_checked(changes, true).await
    }

    async fn apply_checked(
        &self,
        changes: Vec<Change>,
        partial: bool,
    ) -> Result<(ApplyOutcome, ChainReport)> {
        if changes.is_empty() {
            return Ok(Default::default());
        }
        for c in &changes {
            c.validate(&self.inner.config.limits)?;
        }
        if let Some(all_held) = self.all_held(&changes).await? {
            return Ok((all_held, ChainReport::default()));
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
            match self
                .apply_once(&changes, None, partial)
                .await
                .map(|r| (r.0, r.1))
            {
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
        let max = self.inner.config.limits.max_change_bytes;
        let batch = kdelta_sync::fit_readings(self.inner.actor, batch, max)?;
        let mut stored = self.append_parts(vec![batch]).await?;
        stored
            .pop()
            .ok_or_else(|| not_stamped("a readings change of the hub"))
    }

    /// Like [`append`](Self::append), but a batch too large for one change is stored as
    /// several, each within `max_change_bytes` (`kdelta_sync::split_readings`, as
    /// `Store::append_in_parts`): the parts are consecutive changes of the hub's actor
    /// committed in one transaction, so a failure stores none of them and a retry never
    /// stores a part twice.
    pub async fn append_in_parts(&self, mut batch: ReadingBatch) -> Result<Vec<Change>> {
        batch.normalize(&self.inner.config.limits)?;
        let max = self.inner.config.limits.max_change_bytes;
        let parts = kdelta_sync::split_readings(self.inner.actor, batch, max)?;
        self.append_parts(parts).await
    }

    /// Stores `parts` (validated) as consecutive changes of the hub's actor, in one
    /// transaction.
    async fn append_parts(&self, parts: Vec<ReadingBatch>) -> Result<Vec<Change>> {
        let months = parts
            .iter()
            .flat_map(|b| &b.series)
            .flat_map(|s| [s.ts.first(), s.ts.last()].into_iter().flatten())
            .map(|&ts| month_of(ts))
            .collect();
        let now = self.clock().wall_ms() as i64;
        self.inner
            .partitions
            .ensure(&self.inner.pool, fill_months(months), now)
            .await?;
        let bodies = parts.into_iter().map(ChangeBody::Readings).collect();
        self.write_own_as(bodies, None, None).await
    }

    /// Writes `body` (validated by the caller) as a change of the hub's own actor: seq,
    /// HLC and seal are issued in the transaction that holds the hub actor's lock, and a
    /// document body's contexts resolved there (`resolve`, `docs.rs`). Returns the change
    /// as stored; durable on return.
    pub(crate) async fn write_own(
        &self,
        body: ChangeBody,
        resolve: Option<&Resolve>,
    ) -> Result<Change> {
        self.write_own_as(vec![body], resolve, None)
            .await?
            .pop()
            .ok_or_else(|| not_stamped("a change of the hub"))
    }

    /// Writes the twin edit `twin` as a change of the hub's own actor, its automerge change
    /// made in the transaction that holds the hub actor's lock (`twins.rs`). `None` when the
    /// edit changes nothing: nothing is stored.
    pub(crate) async fn write_own_twin(&self, twin: &OwnTwinEdit) -> Result<Option<Change>> {
        // The body is made under the lock; this one only names the kind.
        let body = ChangeBody::Twin(TwinChange {
            key: String::new(),
            change: Vec::new(),
        });
        Ok(self.write_own_as(vec![body], None, Some(twin)).await?.pop())
    }

    /// Writes `bodies` as consecutive changes of the hub's own actor in one transaction
    /// (`resolve` and `twin` only with one body); the changes as stored, none when a twin
    /// edit changes nothing.
    async fn write_own_as(
        &self,
        bodies: Vec<ChangeBody>,
        resolve: Option<&Resolve>,
        twin: Option<&OwnTwinEdit>,
    ) -> Result<Vec<Change>> {
        debug_assert!(bodies.len() == 1 || (resolve.is_none() && twin.is_none()));
        let changes: Vec<Change> = bodies
            .into_iter()
            .map(|body| Change {
                actor: self.inner.actor,
                seq: 0,
                hlc: Hlc(0),
                body,
                // Sealed in `apply_once`, under the hub actor's lock, with the key its
                // replicas share (`meta`).
                seal: None,
                pruned_rollups: Vec::new(),
            })
            .collect();
        let mut attempt = 0;
        let stored = loop {
            // Never behind what this replica issued or observed, nor its best trusted time.
            let floor = self.clock().now();
            let local = Local {
                floor,
                resolve,
                twin,
            };
            match self.apply_once(&changes, Some(local), false).await {
                Err(e) if e.is_conflict() && attempt < CONFLICT_RETRIES => attempt += 1,
                Err(e) => return Err(e),
                Ok((.., stamped)) => break stamped,
            }
        };
        if let Some(c) = stored.last() {
            let _ = self.clock().observe(c.hlc);
        }
        Ok(stored)
    }

    /// One attempt: lock the actors, check, write, commit. With `local`, `changes` are
    /// changes of the hub's own actor whose seqs, HLCs, seals (and document contexts or twin
    /// change, for one change) are assigned here; the changes as stored are returned.
    async fn apply_once(
        &self,
        changes: &[Change],
        local: Option<Local<'_>>,
        partial: bool,
    ) -> Result<(ApplyOutcome, ChainReport, Vec<Change>)> {
        let mut tx = self.inner.pool.begin().await.map_err(PgError::db(CTX))?;
        let mut actors = lock_actors(&mut tx, &unique_actors(changes)).await?;
        let stamped;
        let changes = match &local {
            Some(local) => {
                let mut own = Vec::with_capacity(changes.len());
                let row = &actors[&self.inner.actor];
                let mut head = row.head;
                for (i, c) in changes.iter().enumerate() {
                    let mut c = c.clone();
                    if let Some(resolve) = local.resolve {
                        // After the lock: every earlier write of the hub is visible.
                        resolve_contexts(&mut tx, &mut c.body, resolve, &self.inner.config.limits)
                            .await?;
                    }
                    c.seq = row.max_seq + 1 + i as u64;
                    c.hlc = stamp(&mut tx, local.floor).await?;
                    if let Some(twin) = local.twin {
                        let max = self.inner.config.limits.max_value_bytes;
                        match own_twin_change(&mut tx, twin, c.actor, c.hlc, max).await? {
                            Some(body) => c.body = body,
                            // The edit changes nothing: nothing is stored, no seq used.
                            None => {
                                tx.rollback().await.map_err(PgError::db(CTX))?;
                                return Ok(Default::default());
                            }
                        }
                    }
                    let (seal, hash) = self.seal_own(&c, head);
                    c.seal = Some(seal);
                    head.hash = Some(hash);
                    own.push(c);
                }
                stamped = own;
                &stamped[..]
            }
            None => changes,
        };
        let mut held: HashMap<ActorId, HeldActor> = actors
            .iter()
            .map(|(a, r)| {
                let held = HeldActor {
                    max_seq: r.max_seq,
                    head: r.head,
                };
                (*a, held)
            })
            .collect();
        // Held unsigned and linked to by a signed change: the implied hash of the past held
        // (as on SQLite: `kdelta_sync::needs_past`).
        for a in kdelta_sync::needs_past(changes, &held) {
            let past = crate::read::unsigned_past_hash(&mut tx, a, actors[&a].idx).await?;
            if let Some(h) = held.get_mut(&a) {
                h.head.past = past;
            }
        }
        let rules = AdmitRules {
            // Validated before the transaction.
            limits: None,
            require_signatures: self.inner.config.require_signatures && local.is_none(),
            partial,
            // The hub verifies every signature of a page in its transaction.
            prechecked: None,
        };
        let admission = {
            let clock = self.clock();
            admit_remote(changes, &held, rules, |c| match &local {
                Some(_) => Ok(()),
                None => clock.check(c.hlc),
            })?
        };
        let fresh: Vec<&Change> = admission.fresh.iter().map(|&i| &changes[i]).collect();
        let skipped = admission.skipped;
        let report = admission.report.clone();
        if fresh.is_empty() {
            tx.rollback().await.map_err(PgError::db(CTX))?;
            let outcome = ApplyOutcome {
                applied: 0,
                skipped,
            };
            return Ok((outcome, report, Vec::new()));
        }
        let idx: HashMap<ActorId, i64> = actors.iter().map(|(a, r)| (*a, r.idx)).collect();
        let ids = insert_changes(&mut tx, &fresh, &idx).await?;
        let mut rollups = RollupWork::default();
        insert_readings(&mut tx, &fresh, &ids, &idx, &mut rollups).await?;
        insert_docs(&mut tx, &fresh, &ids).await?;
        insert_twins(&mut tx, &fresh, &ids).await?;
        for (c, &id) in fresh.iter().zip(&ids) {
            if let ChangeBody::TimeCorrection(t) = &c.body {
                apply_correction(&mut tx, idx[&c.actor], id, t, &mut rollups).await?;
            }
        }
        // The rollup rows of the page's actors: readings folded in, moved ones recomputed.
        update_rollups(&mut tx, rollups).await?;
        // The version vector and the per-actor digests.
        for c in &fresh {
            if let Some(row) = actors.get_mut(&c.actor) {
                row.digest.add_change(c);
                row.max_seq = c.seq;
            }
        }
        // The version vector, the per-actor digests, and the chain: each touched actor's
        // head after the page, and its key bound by its first signed change (trust on
        // first use; a bound key is never replaced).
        let touched: BTreeSet<ActorId> = fresh.iter().map(|c| c.actor).collect();
        for a in touched {
            let row = &actors[&a];
            let head = admission.heads.get(&a).copied().unwrap_or_default();
            sqlx::query(
                "UPDATE actors SET max_seq = $1, digest = $2, head_hash = $3, \
                 public_key = COALESCE(public_key, $4) WHERE idx = $5",
            )
            .bind(row.max_seq as i64)
            .bind(row.digest.0.as_slice())
            .bind(head.hash.as_ref().map(|h| h.as_slice()))
            .bind(head.key.as_ref().map(|k| k.as_slice()))
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
        let stamped = match local {
            Some(_) => fresh.iter().map(|c| (*c).clone()).collect(),
            None => Vec::new(),
        };
        let outcome = ApplyOutcome {
            applied: fresh.len(),
            skipped,
        };
        Ok((outcome, report, stamped))
    }

    /// The seal of the hub's own change `c` (seq and HLC assigned), linked to the hub
    /// actor's chain head `head` and signed with the key its replicas share.
    /// Returns the seal and the change's hash (the chain head after it).
    fn seal_own(&self, c: &Change, head: ChainHead) -> (Seal, [u8; 32]) {
        let key = &self.inner.signing;
        let prev = head.hash.unwrap_or(CHAIN_START);
        let body = seal::body_hash(&c.body, &[]);
        let hash = seal::change_hash(&c.actor, c.seq, c.hlc, &prev, &body);
        let seal = Seal {
            key: key.public(),
            prev,
            sig: key.sign(&hash),
            pruned: Vec::new(),
            body: None,
            run_from: None,
        };
        (seal, hash)
    }
}

/// The error of an own write that stored no change where one was expected.
fn not_stamped(what: &'static str) -> PgError {
    PgError::Store(StoreError::Decode {
        what,
        detail: "it was not stamped".into(),
    })
}

/// Changes of the hub's own actor, stamped in their transaction.
struct Local<'a> {
    /// The lowest HLC it may get (this replica's clock).
    floor: Hlc,
    /// How a document body's contexts are resolved; `None` for other bodies.
    resolve: Option<&'a Resolve>,
    /// The twin edit whose change becomes the body; `None` for other bodies.
    twin: Option<&'a OwnTwinEdit>,
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
         RETURNING idx, actor, max_seq, digest, public_key, head_hash",
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
        let key: Option<Vec<u8>> = r.try_get(4).map_err(PgError::db(CTX))?;
        let hash: Option<Vec<u8>> = r.try_get(5).map_err(PgError::db(CTX))?;
        out.insert(
            actor,
            ActorRow {
                idx,
                max_seq: max_seq as u64,
                digest: Digest::from_slice(&digest),
                head: ChainHead {
                    hash: hash.and_then(|h| h.try_into().ok()),
                    key: key.and_then(|k| k.try_into().ok()),
                    past: None,
                },
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
