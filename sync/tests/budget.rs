//! The disk budget's store side on real SQLite files with small limits: `prune_before` keeps
//! readings an upstream peer has not acknowledged (`Unacked::Keep`) and drops them only when
//! told (`Unacked::Drop`), recording each drop in a gap record (change kind 6) that syncs to
//! another store and keeps digests equal; hostile gap records are refused; space is really
//! given back; and an old store (`auto_vacuum = NONE`) is switched to incremental
//! auto-vacuum at open and by `Store::compact`.

use kdelta_sync::*;

const MIN: i64 = 60_000;
const T0: i64 = 1_764_000_000_000;

async fn open(dir: &tempfile::TempDir, name: &str) -> Store {
    Store::open(dir.path().join(name), StoreConfig::default())
        .await
        .unwrap()
}

/// `n` readings of `series` one second apart from `from`, as one change.
async fn batch(s: &Store, series: &str, from: i64, n: i64) -> ChangeMeta {
    let mut b = ReadingBatch::new();
    for i in 0..n {
        b.push(series, from + i * 1000, (from / 1000 + i) as f64, Some("u"));
    }
    s.append(b).await.unwrap()
}

/// Ten minutes of `a` and `b` (one change per series and minute, 60 readings each): seqs
/// 1..=20, minute `m` holding seqs `2m+1` (a) and `2m+2` (b).
async fn ten_minutes(s: &Store) {
    for m in 0..10 {
        batch(s, "a", T0 + m * MIN, 60).await;
        batch(s, "b", T0 + m * MIN, 60).await;
    }
}

#[tokio::test]
async fn unacknowledged_readings_are_kept_until_dropped_and_a_gap_record_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, "device.db").await;
    ten_minutes(&s).await;
    let me = s.actor();
    // Upstream holds the first three minutes (seqs 1..=6).
    let acked: VersionVector = [(me, 6)].into_iter().collect();

    // Over budget: everything before minute 8 may go, but only what upstream holds does.
    let r = s
        .prune_before(T0 + 8 * MIN, 100, &Unacked::Keep(acked.clone()))
        .await
        .unwrap();
    assert_eq!(r.readings, 6 * 60, "{r:?}");
    assert_eq!(
        r.held,
        10 * 60,
        "minutes 3..8 of both series are held: {r:?}"
    );
    assert_eq!((r.dropped_unacked, r.gaps), (0, 0));
    assert_eq!(s.stats().await.unwrap().readings, 14 * 60);
    assert!(s.gaps(None, 0, 100).await.unwrap().is_empty());
    assert_eq!(s.verify_digest().await.unwrap(), s.digest());

    // The hard limit: the held ones before the cut go, recorded.
    let before = s.version_vector().get(&me);
    let r = s
        .prune_before(T0 + 5 * MIN, 100, &Unacked::Drop(acked.clone()))
        .await
        .unwrap();
    assert_eq!(r.readings, 4 * 60, "minutes 3 and 4 of both series: {r:?}");
    assert_eq!(r.dropped_unacked, 4 * 60);
    assert!(r.gaps >= 1, "{r:?}");
    assert_eq!(
        s.version_vector().get(&me),
        before + r.gaps,
        "gap records are changes"
    );
    let gaps = s.gaps(None, 0, 100).await.unwrap();
    let entries: Vec<&GapEntry> = gaps.iter().flat_map(|g| &g.record.entries).collect();
    let of = |name: &str| -> (u64, i64, i64, u64, u64) {
        let es: Vec<_> = entries.iter().filter(|e| e.series == name).collect();
        (
            es.iter().map(|e| e.readings).sum(),
            es.iter().map(|e| e.from_ms).min().unwrap(),
            es.iter().map(|e| e.to_ms).max().unwrap(),
            es.iter().map(|e| e.first_seq).min().unwrap(),
            es.iter().map(|e| e.last_seq).max().unwrap(),
        )
    };
    assert_eq!(of("a"), (120, T0 + 3 * MIN, T0 + 5 * MIN - 1000, 7, 9));
    assert_eq!(of("b"), (120, T0 + 3 * MIN, T0 + 5 * MIN - 1000, 8, 10));
    assert!(entries.iter().all(|e| e.actor == me));
    assert!(
        gaps.iter()
            .all(|g| g.record.reason == GapReason::DiskBudget)
    );
    assert_eq!(
        s.gaps(Some("a".into()), 0, 100).await.unwrap()[0]
            .record
            .entries
            .len(),
        1
    );
    assert_eq!(s.verify_digest().await.unwrap(), s.digest());

    // A hub receives the pruned changes and the gap records; both sides agree.
    let hub = open(&dir, "hub.db").await;
    loop {
        let page = s
            .changes_since(&hub.version_vector(), 64 << 10)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        hub.apply_remote(page).await.unwrap();
    }
    assert_eq!(hub.version_vector(), s.version_vector());
    assert_eq!(hub.digest(), s.digest());
    assert_eq!(hub.verify_digest().await.unwrap(), hub.digest());
    let at_hub = hub.gaps(None, 0, 100).await.unwrap();
    assert_eq!(
        at_hub.iter().map(|g| &g.record).collect::<Vec<_>>(),
        gaps.iter().map(|g| &g.record).collect::<Vec<_>>()
    );
    assert_eq!(at_hub[0].change.actor, me);
    assert_eq!(hub.stats().await.unwrap().readings, 10 * 60);
    // Reopened, everything holds.
    s.close().await;
    let s = open(&dir, "device.db").await;
    assert_eq!(s.verify_digest().await.unwrap(), s.digest());
    assert_eq!(s.gaps(None, 0, 100).await.unwrap().len(), gaps.len());
}

#[tokio::test]
async fn without_upstream_everything_before_the_cut_goes_and_no_gap_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, "a.db").await;
    ten_minutes(&s).await;
    let r = s
        .prune_before(T0 + 4 * MIN + 30_000, 100, &Unacked::NoUpstream)
        .await
        .unwrap();
    // Units wholly before the cut: minutes 0..4 of both series (minute 4 straddles it).
    assert_eq!((r.readings, r.held, r.gaps), (8 * 60, 0, 0));
    assert!(r.steps > 1, "small steps: {r:?}");
    assert!(s.gaps(None, 0, 10).await.unwrap().is_empty());
    // Rollups stay: aggregates over the pruned range still answer.
    let agg = s
        .aggregate(&AggregateQuery {
            series: "a".into(),
            from: T0,
            to: T0 + 10 * MIN,
            bucket_ms: 10 * MIN,
        })
        .await
        .unwrap();
    assert_eq!(agg.iter().map(|b| b.count).sum::<u64>(), 600);
}

#[tokio::test]
async fn hostile_gap_records_are_refused_with_nothing_stored() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, "a.db").await;
    let actor = ActorId::random();
    let entry = GapEntry {
        series: "a".into(),
        actor,
        first_seq: 1,
        last_seq: 1,
        from_ms: T0,
        to_ms: T0 + 1,
        readings: 2,
    };
    let change = |entries: Vec<GapEntry>| Change {
        actor,
        seq: 1,
        hlc: Hlc::new(T0 as u64, 0),
        body: ChangeBody::Gap(GapRecord {
            reason: GapReason::DiskBudget,
            entries,
        }),
        seal: None,
        pruned_rollups: Vec::new(),
    };
    let too_many = vec![entry.clone(); MAX_GAP_ENTRIES + 1];
    let backwards = GapEntry {
        from_ms: T0 + 5,
        ..entry.clone()
    };
    for bad in [vec![], too_many, vec![backwards]] {
        let e = s.apply_remote(vec![change(bad)]).await.unwrap_err();
        assert!(e.to_string().contains("gap record"), "{e}");
        assert_eq!(s.version_vector().get(&actor), 0);
    }
    // Unknown reasons do not decode.
    let mut bytes = change(vec![entry.clone()]).to_cbor();
    let at = bytes.windows(11).position(|w| w == b"disk_budget").unwrap();
    bytes[at..at + 11].copy_from_slice(b"disk_budgeX");
    assert!(Change::from_cbor(&bytes, &Limits::default()).is_err());
    // A good one, signed as its actor would, round-trips and is stored.
    let mut good = change(vec![entry]);
    let key = kdelta_sync::seal::SigningKey::generate().unwrap();
    let prev = kdelta_sync::seal::CHAIN_START;
    let body = kdelta_sync::seal::body_hash(&good.body, &[]);
    let hash = kdelta_sync::seal::change_hash(&actor, 1, good.hlc, &prev, &body);
    good.seal = Some(kdelta_sync::seal::Seal {
        key: key.public(),
        prev,
        sig: key.sign(&hash),
        pruned: vec![],
        body: None,
        run_from: None,
    });
    assert_eq!(
        Change::from_cbor(&good.to_cbor(), &Limits::default()).unwrap(),
        good
    );
    s.apply_remote(vec![good]).await.unwrap();
    assert_eq!(s.gaps(None, 0, 10).await.unwrap().len(), 1);
    assert_eq!(s.verify_digest().await.unwrap(), s.digest());
}

#[tokio::test]
async fn pruned_space_goes_back_to_the_file_system() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, "a.db").await;
    for m in 0..60 {
        batch(&s, "a", T0 + m * MIN, 60).await;
        batch(&s, "b", T0 + m * MIN, 60).await;
    }
    s.reclaim().await.unwrap();
    let before = s.space().await.unwrap();
    assert!(before.incremental_vacuum);
    s.prune_before(T0 + 50 * MIN, 1000, &Unacked::NoUpstream)
        .await
        .unwrap();
    let after = s.space().await.unwrap();
    assert!(
        after.db_bytes < before.db_bytes,
        "the file shrank: {before:?} → {after:?}"
    );
    assert_eq!(after.wal_bytes, 0, "WAL truncated: {after:?}");
    assert!(after.used_bytes() <= after.file_bytes());
}

/// Makes the store at `path` look like one from before incremental auto-vacuum.
fn make_old(path: &std::path::Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA auto_vacuum = NONE; VACUUM;")
        .unwrap();
    let mode: i64 = conn
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, 0);
}

#[tokio::test]
async fn an_old_store_is_switched_to_incremental_vacuum_at_open_and_by_compact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let s = Store::open(&path, StoreConfig::default()).await.unwrap();
    ten_minutes(&s).await;
    let (vv, digest) = (s.version_vector(), s.digest());
    s.close().await;
    make_old(&path);

    let s = Store::open(&path, StoreConfig::default()).await.unwrap();
    assert!(
        s.space().await.unwrap().incremental_vacuum,
        "switched at open"
    );
    assert_eq!((s.version_vector(), s.digest()), (vv.clone(), digest));
    assert_eq!(s.verify_digest().await.unwrap(), digest);
    s.close().await;

    make_old(&path);
    let (before, after) = Store::compact(&path).await.unwrap();
    assert!(before > 0 && after > 0);
    let s = Store::open(&path, StoreConfig::default()).await.unwrap();
    assert!(s.space().await.unwrap().incremental_vacuum);
    assert_eq!(s.verify_digest().await.unwrap(), digest);
    assert_eq!(s.stats().await.unwrap().readings, 1200);
}

/// Issue #16: rollups were never pruned by the budget, so a store whose raw readings were all
/// gone stayed over it. `prune_rollups_before` takes them oldest first, never a minute whose
/// raw readings remain, keeps the readings count exact and leaves the digest alone (rollups
/// are derived data outside it).
#[tokio::test]
async fn the_budget_prunes_rollups_only_where_no_raw_reading_remains() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, "a.db").await;
    ten_minutes(&s).await;
    s.prune_before(T0 + 5 * MIN, 100, &Unacked::NoUpstream)
        .await
        .unwrap();
    assert_eq!(s.stats().await.unwrap().readings, 10 * 60);
    assert_eq!(
        s.rollup_span().await.unwrap(),
        Some((T0, T0 + 9 * MIN)),
        "the budget's raw prune keeps rollups"
    );
    let digest = s.digest();

    // A cut past minutes that still have raw readings takes only the rollups of the others.
    let r = s.prune_rollups_before(T0 + 8 * MIN, 3).await.unwrap();
    assert_eq!((r.rollups, r.readings), (2 * 5, 0), "{r:?}");
    assert!(r.steps > 1, "small steps: {r:?}");
    assert_eq!(
        s.rollup_span().await.unwrap(),
        Some((T0 + 5 * MIN, T0 + 9 * MIN))
    );
    assert_eq!(
        s.stats().await.unwrap().readings,
        10 * 60,
        "count stays exact"
    );
    assert_eq!(s.digest(), digest, "rollups are outside the digest");
    assert_eq!(s.verify_digest().await.unwrap(), digest);
    let agg = s
        .aggregate(&AggregateQuery {
            series: "a".into(),
            from: T0,
            to: T0 + 10 * MIN,
            bucket_ms: MIN,
        })
        .await
        .unwrap();
    assert_eq!(agg.iter().map(|b| b.count).sum::<u64>(), 5 * 60);
    assert_eq!(agg.first().map(|b| b.start), Some(T0 + 5 * MIN));

    // Once the raw readings are gone too, their rollups can go: nothing is left.
    s.prune_before(T0 + 11 * MIN, 100, &Unacked::NoUpstream)
        .await
        .unwrap();
    let r = s.prune_rollups_before(T0 + 11 * MIN, 100).await.unwrap();
    assert_eq!(r.rollups, 2 * 5);
    assert_eq!(s.rollup_span().await.unwrap(), None);
    assert_eq!(s.stats().await.unwrap().readings, 0);
    assert_eq!(s.verify_digest().await.unwrap(), s.digest());
}

/// Issue #16 (measured): what a store holds once the budget pruned every reading and rollup.
/// A readings change pruned wholly keeps its change-log row (actor, seq, HLC, seal: ~200 B,
/// whatever the series it held, `Seal::body`) only until its run is compacted
/// (`log_runs.rs`): a run of such changes keeps its last row. So what remains is one row per
/// run, not per change: here 2,000 changes become one row, and a document written every
/// 100 changes (never compacted) splits them into 20 runs. `space_held` names the change log
/// as what holds the space. Prints the figures (`--nocapture`).
#[tokio::test]
async fn what_remains_of_pruned_changes_is_held_by_the_change_log() {
    let four = change_log_per_pruned_change(4, None).await;
    let fifteen = change_log_per_pruned_change(15, None).await;
    let forty = change_log_per_pruned_change(40, None).await;
    let split = change_log_per_pruned_change(15, Some(100)).await;
    eprintln!(
        "change log left by 2,000 wholly pruned changes: {four} B (4 series), {fifteen} B (15), \
         {forty} B (40), {split} B (15, a document every 100 changes)"
    );
    // The tables' and indexes' own pages and a few rows, whatever the number of changes:
    // before log runs ~200 B per change, 400 kB here (before `Seal::body`, 32 B more per
    // series).
    for (series, bytes) in [(4, four), (15, fifteen), (40, forty), (15, split)] {
        assert!(
            bytes <= 12 * 4096,
            "{bytes} B of change log ({series} series)"
        );
    }
}

/// Bytes of change log once every reading and rollup of 2,000 changes of `series` series
/// (10 readings each) is pruned; with `doc_every`, a document is written after every that
/// many changes (its rows stay).
async fn change_log_per_pruned_change(series: i64, doc_every: Option<i64>) -> u64 {
    const CHANGES: i64 = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, "a.db").await;
    for c in 0..CHANGES {
        let mut b = ReadingBatch::new();
        for k in 0..series {
            for i in 0..10 {
                b.push(
                    &format!("s{k}"),
                    T0 + c * 10_000 + i * 1000,
                    (c + i) as f64,
                    Some("u"),
                );
            }
        }
        s.append(b).await.unwrap();
        if doc_every.is_some_and(|n| (c + 1) % n == 0) {
            s.put("site/state", &serde_json::json!({"change": c}))
                .await
                .unwrap();
        }
    }
    s.reclaim().await.unwrap();
    let full = s.space().await.unwrap();
    let held_full = s.space_held().await.unwrap();
    s.prune_before(T0 + CHANGES * 10_000, 1000, &Unacked::NoUpstream)
        .await
        .unwrap();
    s.prune_rollups_before(T0 + CHANGES * 10_000 + MIN, 1000)
        .await
        .unwrap();
    s.reclaim().await.unwrap();
    let pruned = s.space().await.unwrap();
    let held = s.space_held().await.unwrap();
    assert_eq!(s.stats().await.unwrap().readings, 0);
    let runs = doc_every.map_or(1, |n| CHANGES / n);
    let docs = doc_every.map_or(0, |n| CHANGES / n);
    assert_eq!(s.stats().await.unwrap().changes, (runs + docs) as u64);
    assert_eq!(s.rollup_span().await.unwrap(), None);
    let log = held
        .iter()
        .find(|h| h.holder == SpaceHolder::ChangeLog)
        .map_or(0, |h| h.bytes);
    // Empty tables keep their root pages: rollups are three (`rollup_1m`, `pruned_rollups`
    // and its index by change).
    assert!(
        !held.iter().any(
            |h| matches!(h.holder, SpaceHolder::Readings | SpaceHolder::Rollups)
                && h.bytes > 3 * 4096
        ),
        "{held:?}"
    );
    eprintln!(
        "{CHANGES} changes x {series} series x 10 readings: used {} B ({held_full:?}); \
         all pruned: used {} B ({held:?}); change log {} B per pruned change",
        full.used_bytes(),
        pruned.used_bytes(),
        log / CHANGES as u64
    );
    s.close().await;
    log
}
