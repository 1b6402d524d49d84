//! The rows of one apply transaction (`apply.rs` decides what is fresh and holds the actor
//! locks): change-log rows, readings with their timing records and series attributes,
//! document versions and superseded dots, twin changes, and the readings a time correction
//! moves. Each kind is written with multi-row statements over `unnest` arrays, and the
//! readings of a large page with `COPY` (`copy.rs`). Knows nothing of locking, retries or
//! the version vector.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kdelta_sync::{
    ActorId, Change, ChangeBody, MAX_TS_MS, ReadingBatch, StoreError, change_kind, decode_manifest,
    encode_manifest,
};
use sqlx::{Postgres, Row, Transaction};

use crate::codec::{encode_context, encode_correction, encode_gap, encode_seal};
use crate::copy::{COPY_FROM_ROWS, copy_readings};
use crate::error::{PgError, Result};
use crate::rollups::{RollupWork, keep_pruned_rollups, minute_of};

const CTX: &str = "applying a page of changes";

/// Inserts the change-log rows; returns their ids in the order of `fresh`.
pub(crate) async fn insert_changes(
    tx: &mut Transaction<'_, Postgres>,
    fresh: &[&Change],
    idx: &HashMap<ActorId, i64>,
) -> Result<Vec<i64>> {
    let n = fresh.len();
    let mut seal = Vec::with_capacity(n);
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
        kind.push(change_kind(&c.body) as i16);
        bytes.push(i32::try_from(c.encoded_len()).unwrap_or(i32::MAX));
        manifest.push(match &c.body {
            ChangeBody::Readings(b) => Some(encode_manifest(b)),
            ChangeBody::TimeCorrection(t) => Some(encode_correction(t)),
            ChangeBody::Gap(g) => Some(encode_gap(g)),
            _ => None,
        });
        seal.push(c.seal.as_ref().map(encode_seal));
    }
    let rows = sqlx::query(
        "INSERT INTO changes (actor_idx, seq, hlc, kind, bytes, manifest, seal) \
         SELECT * FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::int2[], $5::int4[], $6::bytea[], $7::bytea[]) \
         RETURNING id, actor_idx, seq",
    )
    .bind(&actor)
    .bind(&seq)
    .bind(&hlc)
    .bind(&kind)
    .bind(&bytes)
    .bind(&manifest)
    .bind(&seal)
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

/// Readings, timing records and series attributes of the readings changes. The readings
/// go to `rollups` too, with the row index of their actor in `actors` (folded before commit).
pub(crate) async fn insert_readings(
    tx: &mut Transaction<'_, Postgres>,
    fresh: &[&Change],
    ids: &[i64],
    actors: &HashMap<ActorId, i64>,
    rollups: &mut RollupWork,
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
        .flat_map(|(c, b, _)| {
            let pruned = c.pruned_rollups.iter().map(|r| r.series.as_str());
            b.series.iter().map(|s| s.name.as_str()).chain(pruned)
        })
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
            rollups.add(series_id, actors[&c.actor], &s.ts, &s.values);
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
        // Received pruned: what its pruned units added to the rollups, kept with it (so the
        // hub relays them) and folded into its actor's rows, after its remaining readings.
        for r in &c.pruned_rollups {
            let series_id = series[r.series.as_str()];
            keep_pruned_rollups(tx, *id, series_id, &r.minutes).await?;
            rollups.add_pruned(series_id, actors[&c.actor], &r.minutes);
        }
    }
    if sid.len() >= COPY_FROM_ROWS {
        copy_readings(tx, &sid, &ts, &cid, &val).await?;
    } else {
        sqlx::query(
            "INSERT INTO readings (series_id, ts, change_id, value) \
             SELECT * FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::float8[])",
        )
        .bind(&sid)
        .bind(&ts)
        .bind(&cid)
        .bind(&val)
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
pub(crate) async fn insert_docs(
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
    let mut pruned = Vec::new();
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
        pruned.push(d.pruned);
        for dot in &d.context {
            superseded.insert((key_id, dot.actor.as_bytes().to_vec(), dot.seq as i64));
        }
    }
    sqlx::query(
        "INSERT INTO doc_versions (change_id, ord, key_id, hlc, value, context, pruned) \
         SELECT * FROM unnest($1::int8[], $2::int4[], $3::int8[], $4::int8[], $5::bytea[], $6::bytea[], $7::bool[])",
    )
    .bind(&cid)
    .bind(&ord)
    .bind(&kid)
    .bind(&hlc)
    .bind(&value)
    .bind(&context)
    .bind(&pruned)
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
pub(crate) async fn insert_twins(
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
/// change in the log keeps its original times (`read.rs` subtracts the delta again). Adds
/// the minutes readings left and entered to `rollups` (recomputed before commit).
pub(crate) async fn apply_correction(
    tx: &mut Transaction<'_, Postgres>,
    actor_idx: i64,
    id: i64,
    correction: &kdelta_sync::TimeCorrection,
    rollups: &mut RollupWork,
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
                let shift = Shift {
                    series: &e.name,
                    change_id,
                    span: (e.ts_min, e.ts_max),
                    delta_ms: r.delta_ms,
                    actor_idx,
                };
                shift_readings(tx, shift, rollups).await?;
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

/// One series of one corrected change: its readings in `span` move by `delta_ms`.
struct Shift<'a> {
    series: &'a str,
    change_id: i64,
    span: (i64, i64),
    delta_ms: i64,
    /// The change's actor (`actors.idx`): whose rollup rows the readings leave and enter.
    actor_idx: i64,
}

/// Moves the readings of `series` in change `change_id` within `span` by `delta_ms`. Deleted
/// and inserted again: shifting in place could collide with a row of the same change not
/// moved yet. A moved reading whose month has no partition lands in the default one. The
/// minutes each reading left and entered go to `rollups`.
async fn shift_readings(
    tx: &mut Transaction<'_, Postgres>,
    shift: Shift<'_>,
    rollups: &mut RollupWork,
) -> Result<()> {
    let Shift {
        series,
        change_id,
        span,
        delta_ms,
        actor_idx,
    } = shift;
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
        let series_id = row.try_get::<i64, _>(0).map_err(PgError::db(ctx))?;
        let was = row.try_get::<i64, _>(1).map_err(PgError::db(ctx))?;
        rollups.moved(series_id, actor_idx, minute_of(was));
        rollups.moved(series_id, actor_idx, minute_of(was + delta_ms));
        sid.push(series_id);
        ts.push(was + delta_ms);
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
