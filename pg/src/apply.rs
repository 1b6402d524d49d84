//! Applying a page of changes in one PostgreSQL transaction, safely while other hub replicas
//! apply pages of the same actors: the rows of the page's actors are upserted and locked in
//! actor order (`INSERT … ON CONFLICT DO UPDATE … RETURNING` waits for a concurrent
//! transaction on the same actor and returns its committed `max_seq`), so the duplicate
//! and gap checks below read the state no other transaction can change before commit. Each
//! change is therefore stored once whoever receives it; a gap refuses the whole page and
//! nothing of it is stored, as `Store::apply_remote` does on SQLite. A transaction aborted
//! by PostgreSQL for a conflict (deadlock, serialization) is run again.
//!
//! Rows are written with a few multi-row statements per page (`unnest` of arrays): change
//! rows, readings, timing records, document versions, twin changes. The version vector and
//! the per-actor digests move in the same transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kdelta_sync::{
    ActorId, ApplyOutcome, Change, ChangeBody, Digest, Hlc, MAX_TS_MS, ReadingBatch, StoreError,
};
use sqlx::{Postgres, Row, Transaction};

use crate::codec::{decode_manifest, encode_context, encode_correction, encode_manifest};
use crate::error::{PgError, Result};
use crate::partitions::month_of;
use crate::store::PgStore;

/// Times a page is tried again after PostgreSQL aborted it for a conflict.
const CONFLICT_RETRIES: usize = 8;
/// Readings per multi-row INSERT.
const READINGS_CHUNK: usize = 50_000;

/// `changes.kind` of each body, as in the SQLite store.
pub(crate) fn kind_of(body: &ChangeBody) -> i16 {
    match body {
        ChangeBody::Readings(_) => 1,
        ChangeBody::Doc(_) => 2,
        ChangeBody::Twin(_) => 3,
        ChangeBody::TimeCorrection(_) => 4,
        ChangeBody::DocBatch(_) => 5,
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

/// Inserts the change-log rows; returns their ids in the order of `fresh`.
async fn insert_changes(
    tx: &mut Transaction<'_, Postgres>,
    fresh: &[&Change],
    idx: &HashMap<ActorId, i64>,
) -> Result<Vec<i64>> {
    let n = fresh.len();
    let (mut actor, mut seq, mut hlc, mut kind, mut bytes, mut manifest) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for c in fresh {
        actor.push(idx[&c.actor]);
        seq.push(c.seq as i64);
        hlc.push(c.hlc.0 as i64);
        kind.push(kind_of(&c.body));
        bytes.push(i32::try_from(c.encoded_len()).unwrap_or(i32::MAX));
        manifest.push(match &c.body {
            ChangeBody::Readings(b) => Some(encode_manifest(b)),
            ChangeBody::TimeCorrection(t) => Some(encode_correction(t)),
            _ => None,
        });
    }
    let rows = sqlx::query(
        "INSERT INTO changes (actor_idx, seq, hlc, kind, bytes, manifest) \
         SELECT * FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::int2[], $5::int4[], $6::bytea[]) \
         RETURNING id, actor_idx, seq",
    )
    .bind(&actor)
    .bind(&seq)
    .bind(&hlc)
    .bind(&kind)
    .bind(&bytes)
    .bind(&manifest)
    .fetch_all(&mut **tx)
    .await
    .map_err(PgError::db("appending to the change log"))?;
    // RETURNING rows come in no promised order: match them by (actor, seq).
    let mut ids: HashMap<(i64, i64), i64> = HashMap::with_capacity(n);
    for r in rows {
        let get = |i| r.try_get::<i64, _>(i).map_err(PgError::db(CTX));
        ids.insert((get(1)?, get(2)?), get(0)?);
    }
    fresh
        .iter()
        .map(|c| {
            ids.get(&(idx[&c.actor], c.seq as i64))
                .copied()
                .ok_or_else(|| {
                    PgError::Store(StoreError::Decode {
                        what: "change log insert",
                        detail: format!("no id returned for {}:{}", c.actor, c.seq),
                    })
                })
        })
        .collect()
}

/// Ids of `names`, creating the rows that do not exist (in name order).
async fn ids_by_name(
    tx: &mut Transaction<'_, Postgres>,
    table: &'static str,
    names: BTreeSet<&str>,
) -> Result<HashMap<String, i64>> {
    if names.is_empty() {
        return Ok(HashMap::new());
    }
    let names: Vec<&str> = names.into_iter().collect();
    let (insert, select, column) = match table {
        "series" => (
            "INSERT INTO series (name) SELECT n FROM unnest($1::text[]) AS n ORDER BY n ON CONFLICT (name) DO NOTHING",
            "SELECT id, name FROM series WHERE name = ANY($1)",
            "registering series",
        ),
        _ => (
            "INSERT INTO doc_keys (key) SELECT n FROM unnest($1::text[]) AS n ORDER BY n ON CONFLICT (key) DO NOTHING",
            "SELECT id, key FROM doc_keys WHERE key = ANY($1)",
            "registering document keys",
        ),
    };
    sqlx::query(insert)
        .bind(&names)
        .execute(&mut **tx)
        .await
        .map_err(PgError::db(column))?;
    let rows = sqlx::query(select)
        .bind(&names)
        .fetch_all(&mut **tx)
        .await
        .map_err(PgError::db(column))?;
    rows.into_iter()
        .map(|r| {
            Ok((
                r.try_get(1).map_err(PgError::db(column))?,
                r.try_get(0).map_err(PgError::db(column))?,
            ))
        })
        .collect()
}

/// Readings, timing records and series attributes of the readings changes.
async fn insert_readings(
    tx: &mut Transaction<'_, Postgres>,
    fresh: &[&Change],
    ids: &[i64],
) -> Result<()> {
    let batches: Vec<(&Change, &ReadingBatch, i64)> = fresh
        .iter()
        .zip(ids)
        .filter_map(|(c, &id)| match &c.body {
            ChangeBody::Readings(b) => Some((*c, b, id)),
            _ => None,
        })
        .collect();
    if batches.is_empty() {
        return Ok(());
    }
    let names: BTreeSet<&str> = batches
        .iter()
        .flat_map(|(_, b, _)| b.series.iter().map(|s| s.name.as_str()))
        .collect();
    let series = ids_by_name(tx, "series", names).await?;
    let (mut sid, mut ts, mut cid, mut val) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Unit and metadata, last writer (highest HLC) per series and actor of the page.
    let mut attrs: BTreeMap<(i64, ActorId), (u64, Option<&str>, String)> = BTreeMap::new();
    for (c, b, id) in &batches {
        for s in &b.series {
            let series_id = series[s.name.as_str()];
            sid.extend(std::iter::repeat_n(series_id, s.ts.len()));
            ts.extend_from_slice(&s.ts);
            cid.extend(std::iter::repeat_n(*id, s.ts.len()));
            val.extend_from_slice(&s.values);
            if s.unit.is_some() || !s.meta.is_empty() {
                let meta = serde_json::to_string(&s.meta).unwrap_or_else(|_| "{}".into());
                let entry = attrs.entry((series_id, c.actor)).or_insert((
                    c.hlc.0,
                    s.unit.as_deref(),
                    meta.clone(),
                ));
                if c.hlc.0 >= entry.0 {
                    *entry = (c.hlc.0, s.unit.as_deref(), meta);
                }
            }
        }
    }
    for start in (0..sid.len()).step_by(READINGS_CHUNK) {
        let end = (start + READINGS_CHUNK).min(sid.len());
        sqlx::query(
            "INSERT INTO readings (series_id, ts, change_id, value) \
             SELECT * FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::float8[])",
        )
        .bind(&sid[start..end])
        .bind(&ts[start..end])
        .bind(&cid[start..end])
        .bind(&val[start..end])
        .execute(&mut **tx)
        .await
        .map_err(PgError::db("inserting readings"))?;
    }
    if !attrs.is_empty() {
        let (mut s, mut a, mut h, mut u, mut m) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((series_id, actor), (hlc, unit, meta)) in attrs {
            s.push(series_id);
            a.push(actor.as_bytes().to_vec());
            h.push(hlc as i64);
            u.push(unit);
            m.push(meta);
        }
        // One row per series and actor, written only under that actor's lock: no contention
        // between replicas; readers take the highest (hlc, actor) per series.
        sqlx::query(
            "INSERT INTO series_attrs (series_id, actor, hlc, unit, meta) \
             SELECT * FROM unnest($1::int8[], $2::bytea[], $3::int8[], $4::text[], $5::text[]) \
             ON CONFLICT (series_id, actor) DO UPDATE SET hlc = EXCLUDED.hlc, unit = EXCLUDED.unit, \
             meta = EXCLUDED.meta WHERE series_attrs.hlc < EXCLUDED.hlc",
        )
        .bind(&s)
        .bind(&a)
        .bind(&h)
        .bind(&u)
        .bind(&m)
        .execute(&mut **tx)
        .await
        .map_err(PgError::db("updating series attributes"))?;
    }
    let timed: Vec<_> = batches
        .iter()
        .filter_map(|(_, b, id)| b.timing.map(|t| (*id, t)))
        .collect();
    if !timed.is_empty() {
        sqlx::query(
            "INSERT INTO reading_timing (change_id, boot_id, offset_ms) \
             SELECT * FROM unnest($1::int8[], $2::bytea[], $3::int8[])",
        )
        .bind(timed.iter().map(|t| t.0).collect::<Vec<_>>())
        .bind(
            timed
                .iter()
                .map(|t| t.1.boot_id.0.to_vec())
                .collect::<Vec<_>>(),
        )
        .bind(timed.iter().map(|t| t.1.offset_ms).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await
        .map_err(PgError::db("recording the timing of readings"))?;
    }
    Ok(())
}

/// Document versions (single writes and batches) and the dots they supersede.
async fn insert_docs(
    tx: &mut Transaction<'_, Postgres>,
    fresh: &[&Change],
    ids: &[i64],
) -> Result<()> {
    let mut writes = Vec::new();
    for (c, &id) in fresh.iter().zip(ids) {
        match &c.body {
            ChangeBody::Doc(d) => writes.push((*c, id, 0i32, d)),
            ChangeBody::DocBatch(b) => {
                for (ord, d) in b.writes.iter().enumerate() {
                    writes.push((*c, id, ord as i32, d));
                }
            }
            _ => {}
        }
    }
    if writes.is_empty() {
        return Ok(());
    }
    let keys = ids_by_name(
        tx,
        "doc_keys",
        writes.iter().map(|w| w.3.key.as_str()).collect(),
    )
    .await?;
    let mut superseded: BTreeSet<(i64, Vec<u8>, i64)> = BTreeSet::new();
    let (mut cid, mut ord, mut kid, mut hlc, mut value, mut context) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for (c, id, o, d) in &writes {
        let key_id = keys[d.key.as_str()];
        cid.push(*id);
        ord.push(*o);
        kid.push(key_id);
        hlc.push(c.hlc.0 as i64);
        value.push(d.value.clone());
        context.push(encode_context(&d.context));
        for dot in &d.context {
            superseded.insert((key_id, dot.actor.as_bytes().to_vec(), dot.seq as i64));
        }
    }
    sqlx::query(
        "INSERT INTO doc_versions (change_id, ord, key_id, hlc, value, context) \
         SELECT * FROM unnest($1::int8[], $2::int4[], $3::int8[], $4::int8[], $5::bytea[], $6::bytea[])",
    )
    .bind(&cid)
    .bind(&ord)
    .bind(&kid)
    .bind(&hlc)
    .bind(&value)
    .bind(&context)
    .execute(&mut **tx)
    .await
    .map_err(PgError::db("storing document versions"))?;
    if !superseded.is_empty() {
        let (k, a, s): (Vec<i64>, Vec<Vec<u8>>, Vec<i64>) = superseded.into_iter().fold(
            (Vec::new(), Vec::new(), Vec::new()),
            |(mut k, mut a, mut s), (ki, ai, si)| {
                k.push(ki);
                a.push(ai);
                s.push(si);
                (k, a, s)
            },
        );
        sqlx::query(
            "INSERT INTO doc_superseded (key_id, actor, seq) \
             SELECT * FROM unnest($1::int8[], $2::bytea[], $3::int8[]) ON CONFLICT DO NOTHING",
        )
        .bind(&k)
        .bind(&a)
        .bind(&s)
        .execute(&mut **tx)
        .await
        .map_err(PgError::db("storing superseded document versions"))?;
    }
    Ok(())
}

/// Twin (automerge) changes, as received.
async fn insert_twins(
    tx: &mut Transaction<'_, Postgres>,
    fresh: &[&Change],
    ids: &[i64],
) -> Result<()> {
    let (mut cid, mut key, mut hlc, mut bytes) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (c, &id) in fresh.iter().zip(ids) {
        if let ChangeBody::Twin(t) = &c.body {
            cid.push(id);
            key.push(t.key.as_str());
            hlc.push(c.hlc.0 as i64);
            bytes.push(t.change.as_slice());
        }
    }
    if cid.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO twin_changes (change_id, key, hlc, bytes) \
         SELECT * FROM unnest($1::int8[], $2::text[], $3::int8[], $4::bytea[])",
    )
    .bind(&cid)
    .bind(&key)
    .bind(&hlc)
    .bind(&bytes)
    .execute(&mut **tx)
    .await
    .map_err(PgError::db("storing twin changes"))?;
    Ok(())
}

/// A time correction: moves the readings of each corrected change of its actor by the
/// range's delta (as on SQLite, `sync/src/correct.rs`: same targets, same refusal of a
/// change whose moved times would leave 1970..9999) and marks the change corrected. The
/// change in the log keeps its original times (`read.rs` subtracts the delta again).
async fn apply_correction(
    tx: &mut Transaction<'_, Postgres>,
    actor_idx: i64,
    id: i64,
    correction: &kdelta_sync::TimeCorrection,
) -> Result<()> {
    let ctx = "applying a time correction";
    for r in &correction.ranges {
        let targets = sqlx::query(
            "SELECT t.change_id, c.manifest FROM reading_timing t JOIN changes c ON c.id = t.change_id \
             WHERE c.actor_idx = $1 AND c.seq BETWEEN $2 AND $3 AND t.boot_id = $4 \
             AND t.delta_ms IS NULL ORDER BY c.seq",
        )
        .bind(actor_idx)
        .bind(r.first_seq as i64)
        .bind(r.last_seq as i64)
        .bind(correction.boot_id.0.as_slice())
        .fetch_all(&mut **tx)
        .await
        .map_err(PgError::db(ctx))?;
        for t in targets {
            let change_id: i64 = t.try_get(0).map_err(PgError::db(ctx))?;
            let manifest: Option<Vec<u8>> = t.try_get(1).map_err(PgError::db(ctx))?;
            let entries = decode_manifest(manifest.as_deref().unwrap_or_default())?;
            let fits = entries.iter().all(|e| {
                (0..MAX_TS_MS).contains(&e.ts_min.saturating_add(r.delta_ms))
                    && (0..MAX_TS_MS).contains(&e.ts_max.saturating_add(r.delta_ms))
            });
            if !fits {
                // Every replica decides the same: the change stays uncorrected.
                continue;
            }
            for e in &entries {
                shift_readings(tx, &e.name, change_id, (e.ts_min, e.ts_max), r.delta_ms).await?;
            }
            sqlx::query(
                "UPDATE reading_timing SET delta_ms = $1, corrected_by = $2 WHERE change_id = $3",
            )
            .bind(r.delta_ms)
            .bind(id)
            .bind(change_id)
            .execute(&mut **tx)
            .await
            .map_err(PgError::db(ctx))?;
        }
    }
    Ok(())
}

/// Moves the readings of `series` in change `change_id` within `span` by `delta_ms`. Deleted
/// and inserted again: shifting in place could collide with a row of the same change not
/// moved yet. A moved reading whose month has no partition lands in the default one.
async fn shift_readings(
    tx: &mut Transaction<'_, Postgres>,
    series: &str,
    change_id: i64,
    span: (i64, i64),
    delta_ms: i64,
) -> Result<()> {
    let ctx = "applying a time correction";
    let rows = sqlx::query(
        "DELETE FROM readings r USING series s WHERE s.name = $1 AND r.series_id = s.id \
         AND r.change_id = $2 AND r.ts BETWEEN $3 AND $4 RETURNING r.series_id, r.ts, r.value",
    )
    .bind(series)
    .bind(change_id)
    .bind(span.0)
    .bind(span.1)
    .fetch_all(&mut **tx)
    .await
    .map_err(PgError::db(ctx))?;
    let (mut sid, mut ts, mut val) = (Vec::new(), Vec::new(), Vec::new());
    for row in rows {
        sid.push(row.try_get::<i64, _>(0).map_err(PgError::db(ctx))?);
        ts.push(row.try_get::<i64, _>(1).map_err(PgError::db(ctx))? + delta_ms);
        val.push(row.try_get::<f64, _>(2).map_err(PgError::db(ctx))?);
    }
    if sid.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO readings (series_id, ts, change_id, value) \
         SELECT s, t, $3, v FROM unnest($1::int8[], $2::int8[], $4::float8[]) AS u(s, t, v)",
    )
    .bind(&sid)
    .bind(&ts)
    .bind(change_id)
    .bind(&val)
    .execute(&mut **tx)
    .await
    .map_err(PgError::db(ctx))?;
    Ok(())
}
