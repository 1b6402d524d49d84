//! The batched change-log paths against simple references. `changes_since` and `log_after`
//! load the bodies of many changes with a few statements; here they are compared with the
//! straightforward per-change reading (kept in this file only: one query per change and per
//! series of its manifest) over random mixes of readings, documents and twin changes from
//! several actors, random version vectors and page budgets. `apply_remote` writes runs of
//! readings changes with multi-row statements; applying one page must leave exactly what
//! applying the same changes one call at a time leaves.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use kdelta_sync::*;
use proptest::prelude::*;
use rusqlite::{Connection, OpenFlags, params};
use serde::Deserialize;

const T0: i64 = 1_764_000_000_000;

fn now_hlc(logical: u16) -> Hlc {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    Hlc::new(ms - 60_000, logical)
}

fn remote_actor(i: u8) -> ActorId {
    ActorId([i + 1; 16])
}

// ---- reference: the per-change reading of the log --------------------------------------

#[derive(Deserialize)]
struct Entry {
    name: String,
    #[serde(default)]
    unit: Option<String>,
    #[serde(default)]
    meta: BTreeMap<String, String>,
    ts_min: i64,
    ts_max: i64,
}

fn reference_load(
    pool: &Connection,
    id: i64,
    actor: ActorId,
    seq: i64,
    hlc: i64,
    kind: i64,
    manifest: Option<Vec<u8>>,
) -> Change {
    let body = match kind {
        1 => {
            let entries: Vec<Entry> = ciborium::from_reader(&manifest.unwrap()[..]).unwrap();
            let mut batch = ReadingBatch::new();
            for e in entries {
                let sid: i64 = pool
                    .query_row("SELECT id FROM series WHERE name = ?1", [&e.name], |r| {
                        r.get(0)
                    })
                    .unwrap();
                let mut st = pool
                    .prepare(
                        "SELECT ts, value FROM readings WHERE series_id = ?1 AND ts >= ?2 AND ts <= ?3 AND change_id = ?4 ORDER BY ts",
                    )
                    .unwrap();
                let rows: Vec<(i64, f64)> = st
                    .query_map(params![sid, e.ts_min, e.ts_max, id], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                batch.series.push(SeriesPoints {
                    name: e.name,
                    unit: e.unit,
                    meta: e.meta,
                    ts: rows.iter().map(|r| r.0).collect(),
                    values: rows.iter().map(|r| r.1).collect(),
                });
            }
            ChangeBody::Readings(batch)
        }
        2 => {
            let (key, value, ctx): (String, Option<Vec<u8>>, Vec<u8>) = pool
                .query_row("SELECT k.key, v.value, v.context FROM doc_versions v JOIN doc_keys k ON k.id = v.key_id WHERE v.change_id = ?1", [id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap();
            ChangeBody::Doc(DocWrite {
                key,
                value,
                context: ciborium::from_reader(&ctx[..]).unwrap(),
                pruned: false,
            })
        }
        3 => {
            let (key, change): (String, Vec<u8>) = pool
                .query_row("SELECT w.key, t.bytes FROM twin_changes t JOIN twins w ON w.id = t.twin_id WHERE t.change_id = ?1", [id], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap();
            ChangeBody::Twin(TwinChange { key, change })
        }
        k => panic!("kind {k}"),
    };
    // The seal, one change at a time (the batched path joins the key in its log query).
    type SealRow = (
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
    );
    let (prev, sig, pruned, key): SealRow = pool
        .query_row(
            "SELECT c.prev_hash, c.signature, c.pruned, a.public_key FROM changes c \
             JOIN actors a ON a.idx = c.actor_idx WHERE c.id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    let seal = match (prev, sig) {
        (Some(prev), Some(sig)) => Some(kdelta_sync::seal::Seal {
            key: key.unwrap().try_into().unwrap(),
            prev: prev.try_into().unwrap(),
            sig: sig.try_into().unwrap(),
            pruned: pruned
                .unwrap_or_default()
                .chunks(32)
                .map(|c| c.try_into().unwrap())
                .collect(),
            body: None,
            run_from: None,
        }),
        _ => None,
    };
    Change {
        actor,
        seq: seq as u64,
        hlc: Hlc(hlc as u64),
        body,
        seal,
        pruned_rollups: Vec::new(),
    }
}

/// (id, seq, hlc, kind, manifest) of a change-log row.
type LogRow = (i64, i64, i64, i64, Option<Vec<u8>>);

fn reference_changes_since(
    pool: &Connection,
    theirs: &VersionVector,
    budget: usize,
) -> Vec<Change> {
    let mut st = pool
        .prepare("SELECT idx, actor, max_seq FROM actors WHERE max_seq > 0 ORDER BY actor")
        .unwrap();
    let actors: Vec<(i64, Vec<u8>, i64)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut out = Vec::new();
    let mut used = 0;
    for (idx, actor, max_seq) in actors {
        let actor = ActorId::from_slice(&actor).unwrap();
        let mut st = pool.prepare("SELECT id, seq, hlc, kind, manifest FROM changes WHERE actor_idx = ?1 AND seq > ?2 AND seq <= ?3 ORDER BY seq").unwrap();
        let rows: Vec<LogRow> = st
            .query_map(params![idx, theirs.get(&actor) as i64, max_seq], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for (id, seq, hlc, kind, manifest) in rows {
            let c = reference_load(pool, id, actor, seq, hlc, kind, manifest);
            let size = c.encoded_len();
            if !out.is_empty() && used + size > budget {
                return out;
            }
            used += size;
            out.push(c);
        }
    }
    out
}

fn reference_log_after(pool: &Connection, after: i64, max: usize) -> Vec<(i64, Change)> {
    let mut st = pool.prepare("SELECT c.id, c.seq, c.hlc, c.kind, c.manifest, a.actor FROM changes c JOIN actors a ON a.idx = c.actor_idx WHERE c.id > ?1 ORDER BY c.id LIMIT ?2").unwrap();
    let rows: Vec<(LogRow, Vec<u8>)> = st
        .query_map(params![after, max as i64], |r| {
            Ok((
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?),
                r.get(5)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut out = Vec::new();
    for ((id, seq, hlc, kind, manifest), actor) in rows {
        let actor = ActorId::from_slice(&actor).unwrap();
        out.push((
            id,
            reference_load(pool, id, actor, seq, hlc, kind, manifest),
        ));
    }
    out
}

fn reader(store: &Store) -> Connection {
    Connection::open_with_flags(store.path(), OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
}

// ---- random histories -------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    /// Readings from `who` (0 = the store itself, 1..=3 remote actors): `series` picks names
    /// from a pool shared by all actors, so ranges of different changes interleave.
    Readings {
        who: u8,
        series: Vec<u8>,
        start: u32,
        far: bool,
        n: u8,
        step: u16,
        unit: bool,
    },
    Doc {
        who: u8,
        key: u8,
        value: Option<u16>,
    },
    Twin {
        value: u16,
    },
    /// Apply what the remote actors made so far, in pages of `page` changes.
    Deliver {
        page: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..4, proptest::collection::btree_set(0u8..6, 1..5).prop_map(|s| s.into_iter().collect::<Vec<_>>()), any::<u32>(), any::<bool>(), 1u8..9, 1u16..3000, any::<bool>())
            .prop_map(|(who, series, start, far, n, step, unit)| Op::Readings { who, series, start, far, n, step, unit }),
        2 => (0u8..4, 0u8..3, proptest::option::of(any::<u16>())).prop_map(|(who, key, value)| Op::Doc { who, key, value }),
        1 => any::<u16>().prop_map(|value| Op::Twin { value }),
        2 => (1u8..20).prop_map(|page| Op::Deliver { page }),
    ]
}

fn readings(
    series: &[u8],
    start: u32,
    far: bool,
    n: u8,
    step: u16,
    unit: bool,
    salt: f64,
) -> ReadingBatch {
    let base = if far {
        T0 + start as i64 * 1000
    } else {
        T0 + (start % 5000) as i64
    };
    let mut b = ReadingBatch::new();
    for (k, s) in series.iter().enumerate() {
        for i in 0..n as i64 {
            b.push(
                &format!("s{s}"),
                base + k as i64 * 7 + i * step as i64,
                salt + i as f64 * 0.25,
                unit.then_some("V"),
            );
        }
    }
    b.normalize(&Limits::default()).unwrap();
    b
}

/// The remote actors here make unsigned changes (these tests are about reading the log in
/// batches, not about trust): their stores take them as the opt-out does.
fn unsigned_peers() -> StoreConfig {
    StoreConfig {
        require_signatures: false,
        ..StoreConfig::default()
    }
}

/// Builds a store from `ops`; returns it with what the remote actors made.
async fn build(dir: &tempfile::TempDir, ops: &[Op]) -> (Store, Vec<Change>) {
    let store = Store::open(dir.path().join("s.db"), unsigned_peers())
        .await
        .unwrap();
    let mut made: Vec<Change> = Vec::new();
    let mut delivered = 0;
    let mut seqs = [0u64; 4];
    let mut twin = false;
    for (i, op) in ops.iter().enumerate() {
        let salt = i as f64;
        let mut remote = |who: u8, body: ChangeBody| {
            seqs[who as usize] += 1;
            made.push(Change {
                actor: remote_actor(who),
                seq: seqs[who as usize],
                hlc: now_hlc(i as u16),
                body,
                seal: None,
                pruned_rollups: Vec::new(),
            });
        };
        match op {
            Op::Readings {
                who,
                series,
                start,
                far,
                n,
                step,
                unit,
            } => {
                let b = readings(series, *start, *far, *n, *step, *unit, salt);
                if *who == 0 {
                    store.append(b).await.unwrap();
                } else {
                    remote(*who, ChangeBody::Readings(b));
                }
            }
            Op::Doc { who, key, value } => {
                let key = format!("k{key}");
                if *who == 0 {
                    store
                        .put(&key, &serde_json::json!({ "v": value }))
                        .await
                        .unwrap();
                } else {
                    let mut bytes = Vec::new();
                    ciborium::into_writer(&serde_json::json!({ "v": value }), &mut bytes).unwrap();
                    remote(
                        *who,
                        ChangeBody::Doc(DocWrite {
                            key,
                            value: value.map(|_| bytes),
                            context: Vec::new(),
                            pruned: false,
                        }),
                    );
                }
            }
            Op::Twin { value } => {
                if !twin {
                    store.twin_create("t", None).await.unwrap();
                    twin = true;
                }
                store
                    .twin_patch("t", TwinPatch::Merge(serde_json::json!({ "v": value })))
                    .await
                    .unwrap();
            }
            Op::Deliver { page } => {
                for chunk in made[delivered..].chunks(*page as usize) {
                    store.apply_remote(chunk.to_vec()).await.unwrap();
                }
                delivered = made.len();
            }
        }
    }
    store
        .apply_remote(made[delivered..].to_vec())
        .await
        .unwrap();
    (store, made)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, .. ProptestConfig::default() })]
    #[test]
    fn batched_log_reads_match_the_per_change_reference(
        ops in proptest::collection::vec(op(), 1..40),
        cut in proptest::collection::vec(any::<u16>(), 4),
        budget_pick in 0usize..5,
        after_pick in any::<u16>(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let dir = tempfile::tempdir().unwrap();
            let (store, made) = build(&dir, &ops).await;
            let pool = reader(&store);
            // Every remote change is stored as it was made.
            let all = reference_changes_since(&pool, &VersionVector::new(), usize::MAX);
            for c in &made {
                prop_assert!(all.contains(c), "remote change {}:{} not returned as made", c.actor, c.seq);
            }
            // A random vector: a prefix of each actor's changes is held.
            let mut theirs = VersionVector::new();
            for (k, (actor, max)) in store.version_vector().iter().enumerate() {
                theirs.set(actor, cut[k % cut.len()] as u64 % (max + 1));
            }
            let budget = [1, 200, 2_000, 20_000, usize::MAX][budget_pick];
            let page = store.changes_since(&theirs, budget).await.unwrap();
            prop_assert_eq!(&page, &reference_changes_since(&pool, &theirs, budget));
            // Paging to the end gives everything missing, once, in the same order.
            let mut paged = Vec::new();
            let mut held = theirs.clone();
            loop {
                let page = store.changes_since(&held, budget.min(3_000)).await.unwrap();
                if page.is_empty() {
                    break;
                }
                for c in &page {
                    held.set(c.actor, c.seq);
                }
                paged.extend(page);
            }
            prop_assert_eq!(paged, reference_changes_since(&pool, &theirs, usize::MAX));
            // The local log, from the start and from a random position.
            let n = all.len() as i64;
            for after in [0, after_pick as i64 % (n + 1)] {
                for max in [3, 10_000] {
                    prop_assert_eq!(
                        store.log_after(after, max).await.unwrap(),
                        reference_log_after(&pool, after, max)
                    );
                }
            }
            prop_assert_eq!(store.verify_digest().await.unwrap(), store.digest());
            drop(pool);
            Ok(())
        })?;
    }
}

// ---- batched apply ------------------------------------------------------------------------

/// 2 actors × 150 changes over 60 series (units and metadata competing last-writer-wins),
/// with document writes in between: far more rows than one multi-row statement takes.
fn many_series_changes() -> Vec<Change> {
    let mut out = Vec::new();
    let mut seqs = [0u64; 2];
    for k in 0..300u64 {
        let who = (k % 2) as usize;
        seqs[who] += 1;
        let body = if k % 37 == 36 {
            let mut bytes = Vec::new();
            ciborium::into_writer(&serde_json::json!({ "k": k }), &mut bytes).unwrap();
            ChangeBody::Doc(DocWrite {
                key: format!("doc{}", k % 3),
                value: Some(bytes),
                context: Vec::new(),
                pruned: false,
            })
        } else {
            let mut b = ReadingBatch::new();
            for s in 0..60u64 {
                for i in 0..(1 + (k + s) % 3) as i64 {
                    b.push(
                        &format!("m{s:02}"),
                        T0 + (k / 2) as i64 * 1000 + i * 250 + who as i64,
                        (k * 60 + s) as f64 * 0.1 + i as f64 / 3.0,
                        Some(if who == 0 { "V" } else { "mV" }),
                    );
                }
            }
            if k % 5 == 0 {
                b.series[3]
                    .meta
                    .insert("site".into(), format!("by{who}@{k}"));
            }
            b.normalize(&Limits::default()).unwrap();
            ChangeBody::Readings(b)
        };
        out.push(Change {
            actor: remote_actor(who as u8),
            seq: seqs[who],
            hlc: now_hlc(k as u16),
            body,
            seal: None,
            pruned_rollups: Vec::new(),
        });
    }
    out
}

async fn state(s: &Store) -> impl PartialEq + std::fmt::Debug {
    let mut buckets = Vec::new();
    for name in ["m00", "m03", "m59"] {
        let q = AggregateQuery {
            series: name.into(),
            from: T0 - 3_600_000,
            to: T0 + 3_600_000,
            bucket_ms: 60_000,
        };
        buckets.push(s.aggregate(&q).await.unwrap());
        let q = AggregateQuery {
            series: name.into(),
            from: T0,
            to: T0 + 200_000,
            bucket_ms: 7_000,
        };
        buckets.push(s.aggregate(&q).await.unwrap());
    }
    (
        s.version_vector(),
        s.digest(),
        s.verify_digest().await.unwrap(),
        s.log_after(0, 10_000).await.unwrap(),
        s.series().await.unwrap(),
        s.stats().await.unwrap().readings,
        buckets,
        s.get("doc1").await.unwrap(),
    )
}

#[tokio::test]
async fn one_page_applies_like_change_by_change() {
    let dir = tempfile::tempdir().unwrap();
    let changes = many_series_changes();
    let open = |name: &str| Store::open(dir.path().join(name), unsigned_peers());
    let (whole, single, chunked) = (
        open("whole.db").await.unwrap(),
        open("single.db").await.unwrap(),
        open("chunked.db").await.unwrap(),
    );

    let mut events = whole.subscribe();
    let outcome = whole.apply_remote(changes.clone()).await.unwrap();
    assert_eq!(
        outcome,
        ApplyOutcome {
            applied: 300,
            skipped: 0
        }
    );
    for c in &changes {
        let ev = events.try_recv().unwrap();
        assert_eq!((ev.actor, ev.seq, ev.remote), (c.actor, c.seq, true));
    }
    // Applying again is a no-op.
    let before = whole.digest();
    assert_eq!(
        whole.apply_remote(changes.clone()).await.unwrap(),
        ApplyOutcome {
            applied: 0,
            skipped: 300
        }
    );
    assert_eq!(whole.digest(), before);

    for c in &changes {
        single.apply_remote(vec![c.clone()]).await.unwrap();
    }
    // Pages overlapping what is held: the held part is skipped.
    for start in (0..changes.len()).step_by(7) {
        let from = start.saturating_sub(3);
        chunked
            .apply_remote(changes[from..(start + 7).min(changes.len())].to_vec())
            .await
            .unwrap();
    }
    let expected = state(&single).await;
    assert_eq!(state(&whole).await, expected);
    assert_eq!(state(&chunked).await, expected);

    // A page refused part-way (a gap after many good changes) stores nothing of it.
    let refused = open("refused.db").await.unwrap();
    let mut page = changes[..200].to_vec();
    page.push(changes[250].clone());
    assert!(matches!(
        refused.apply_remote(page).await,
        Err(StoreError::SeqGap { .. })
    ));
    assert_eq!(refused.version_vector(), VersionVector::new());
    assert_eq!(refused.stats().await.unwrap().readings, 0);
}

/// A change read back from the log describes itself as the event the store announced when
/// it stored it (`ChangeEventKind::of`, what a follower of a hub's log on PostgreSQL
/// announces): readings, puts, deletes, batches with deletes, twin edits.
#[tokio::test]
async fn a_change_read_from_the_log_is_the_event_announced_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s.db"), StoreConfig::default())
        .await
        .unwrap();
    let mut events = store.subscribe();
    let mut b = ReadingBatch::new();
    b.push("a", T0, 1.0, None);
    b.push("b", T0, 2.0, Some("V"));
    b.push("a", T0 + 1, 3.0, None);
    store.append(b).await.unwrap();
    store.put("k/1", &serde_json::json!(1)).await.unwrap();
    store.put("k/2", &serde_json::json!(2)).await.unwrap();
    store.delete("k/1").await.unwrap();
    store
        .write_batch(vec![
            BatchEntry::put("k/3", serde_json::json!(3)),
            BatchEntry::delete("k/2"),
        ])
        .await
        .unwrap();
    store
        .twin_create("t", Some(serde_json::json!({"x": 1})))
        .await
        .unwrap();
    let log = store.log_after(0, 100).await.unwrap();
    assert_eq!(log.len(), 6);
    for (id, change) in log {
        let ev = events.try_recv().unwrap();
        assert_eq!(ev.local_id, id);
        assert_eq!(
            (ev.actor, ev.seq, ev.hlc),
            (change.actor, change.seq, change.hlc)
        );
        assert_eq!(ev.kind, ChangeEventKind::of(&change.body), "change {id}");
    }
}
