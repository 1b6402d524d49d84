//! Functional tests of the store on real SQLite files: readings, aggregates, documents,
//! history, and every error path the store promises.

use std::sync::Arc;

use kdelta_sync::*;
use serde_json::json;

const T0: i64 = 1_764_000_000_000; // 2025-11-24T16:00:00Z, a whole minute

async fn open(dir: &tempfile::TempDir, name: &str) -> Store {
    Store::open(dir.path().join(name), StoreConfig::default())
        .await
        .unwrap()
}

/// Applies to `into` every change of `from` it lacks.
async fn pull(into: &Store, from: &Store) {
    let changes = from
        .changes_since(&into.version_vector(), usize::MAX)
        .await
        .unwrap();
    into.apply_remote(changes).await.unwrap();
}

fn batch(series: &str, points: &[(i64, f64)]) -> ReadingBatch {
    let mut b = ReadingBatch::new();
    for &(t, v) in points {
        b.push(series, t, v, Some("°C"));
    }
    b
}

fn q(series: &str) -> RangeQuery {
    RangeQuery {
        series: series.into(),
        from: 0,
        to: i64::MAX,
        limit: 1000,
        cursor: None,
    }
}

#[tokio::test]
async fn readings_round_trip_with_cursor_paging() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, "a.db").await;
    let pts: Vec<(i64, f64)> = (0..250).map(|i| (T0 + i * 1000, i as f64)).collect();
    let meta = s.append(batch("t", &pts)).await.unwrap();
    assert_eq!((meta.seq, meta.actor), (1, s.actor()));

    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let page = s
            .range(&RangeQuery {
                limit: 100,
                cursor,
                ..q("t")
            })
            .await
            .unwrap();
        all.extend(page.readings);
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(all.len(), 250);
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, r)| r.value == i as f64 && r.ts == T0 + i as i64 * 1000)
    );

    let series = s.series().await.unwrap();
    assert_eq!(series.len(), 1);
    assert_eq!(
        (series[0].count, series[0].unit.as_deref()),
        (250, Some("°C"))
    );
    assert_eq!(series[0].first_ts, Some(T0));

    let latest = s.latest(None).await.unwrap();
    assert_eq!((latest[0].ts, latest[0].value), (T0 + 249_000, 249.0));
    let bad = s
        .range(&RangeQuery {
            cursor: Some("garbage".into()),
            ..q("t")
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), "invalid_query");
}

#[tokio::test]
async fn aggregates_from_rollups_match_raw_scans() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, "a.db").await;
    // 3 batches, out of order, 7 s apart over ~35 minutes, with values that vary.
    let pts: Vec<(i64, f64)> = (0..300)
        .map(|i| (T0 + 13 + i * 7_000, ((i * 37) % 101) as f64 - 50.0))
        .collect();
    for chunk in [&pts[200..], &pts[..100], &pts[100..200]] {
        s.append(batch("x", chunk)).await.unwrap();
    }
    // A window that starts and ends mid-minute: edges come from raw rows, the middle from rollups.
    let (from, to) = (T0 + 95_000, T0 + 1_900_500);
    for bucket in [60_000, 300_000] {
        let got = s
            .aggregate(&AggregateQuery {
                series: "x".into(),
                from,
                to,
                bucket_ms: bucket,
            })
            .await
            .unwrap();
        // The same buckets computed by hand.
        let mut want: std::collections::BTreeMap<i64, Vec<(i64, f64)>> = Default::default();
        for &(t, v) in pts.iter().filter(|p| p.0 >= from && p.0 < to) {
            want.entry(t.div_euclid(bucket) * bucket)
                .or_default()
                .push((t, v));
        }
        assert_eq!(got.len(), want.len(), "bucket {bucket}");
        for (b, (start, pts)) in got.iter().zip(want) {
            assert_eq!(b.start, start);
            assert_eq!(b.count, pts.len() as u64);
            let sum: f64 = pts.iter().map(|p| p.1).sum();
            assert!((b.avg - sum / pts.len() as f64).abs() < 1e-9);
            assert_eq!(b.min, pts.iter().map(|p| p.1).fold(f64::MAX, f64::min));
            assert_eq!(b.max, pts.iter().map(|p| p.1).fold(f64::MIN, f64::max));
            assert_eq!(b.first, pts[0].1);
            assert_eq!(b.last, pts[pts.len() - 1].1);
        }
    }
    // Sub-minute buckets go to raw rows.
    let got = s
        .aggregate(&AggregateQuery {
            series: "x".into(),
            from: T0,
            to: T0 + 21_000,
            bucket_ms: 10_000,
        })
        .await
        .unwrap();
    assert_eq!(got.iter().map(|b| b.count).collect::<Vec<_>>(), vec![2, 1]);

    for bad in [
        AggregateQuery {
            series: "x".into(),
            from: 10,
            to: 5,
            bucket_ms: 60_000,
        },
        AggregateQuery {
            series: "x".into(),
            from: 0,
            to: 10,
            bucket_ms: 0,
        },
        AggregateQuery {
            series: "x".into(),
            from: 0,
            to: i64::MAX,
            bucket_ms: 1,
        },
    ] {
        assert_eq!(s.aggregate(&bad).await.unwrap_err().code(), "invalid_query");
    }
    let unknown = s
        .aggregate(&AggregateQuery {
            series: "nope".into(),
            from: 0,
            to: 10,
            bucket_ms: 1,
        })
        .await
        .unwrap_err();
    assert!(matches!(unknown, StoreError::UnknownSeries(ref n) if n == "nope"));
}

#[tokio::test]
async fn rejected_batches_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        limits: Limits {
            max_batch_readings: 10,
            ..Limits::default()
        },
        ..StoreConfig::default()
    };
    let s = Store::open(dir.path().join("a.db"), config).await.unwrap();
    let mut nan = batch("ok", &[(T0, 1.0)]);
    nan.push("bad", T0, f64::NAN, None);
    let too_big = batch("ok", &(0..11).map(|i| (T0 + i, 1.0)).collect::<Vec<_>>());
    let dup = batch("ok", &[(T0, 1.0), (T0, 2.0)]);
    for b in [nan, too_big, dup, ReadingBatch::new()] {
        let err = s.append(b).await.unwrap_err();
        assert_eq!(err.code(), "invalid_batch", "{err}");
        assert!(err.is_client_error());
    }
    let stats = s.stats().await.unwrap();
    assert_eq!((stats.readings, stats.changes, stats.series), (0, 0, 0));
    assert!(s.version_vector().is_empty());
}

#[tokio::test]
async fn documents_versions_history_as_of_and_diff() {
    let dir = tempfile::tempdir().unwrap();
    let time = ManualTime::new(T0 as u64);
    let s = Store::open_with_time(
        dir.path().join("a.db"),
        StoreConfig::default(),
        time.clone(),
    )
    .await
    .unwrap();
    assert!(s.get("cfg").await.unwrap().is_none());
    let v1 = s
        .put("cfg", &json!({"interval": 10, "mode": "eco"}))
        .await
        .unwrap();
    time.set(T0 as u64 + 1000);
    let v2 = s
        .put("cfg", &json!({"interval": 5, "mode": "eco", "fan": true}))
        .await
        .unwrap();
    assert_eq!(
        v2.supersedes,
        vec![Dot {
            actor: s.actor(),
            seq: v1.seq
        }]
    );
    time.set(T0 as u64 + 2000);
    let del = s.delete("cfg").await.unwrap();
    assert!(del.is_tombstone());

    let state = s.get("cfg").await.unwrap().unwrap();
    assert!(state.winner.is_tombstone());
    assert_eq!(state.siblings, 1);
    assert_eq!(s.delete("cfg").await.unwrap_err().code(), "unknown_key");

    let at = |ms: i64| AsOf::WallMs(ms as u64);
    assert_eq!(
        s.get_as_of("cfg", at(T0 + 500))
            .await
            .unwrap()
            .unwrap()
            .winner
            .value,
        Some(json!({"interval": 10, "mode": "eco"}))
    );
    assert_eq!(
        s.get_as_of("cfg", AsOf::Hlc(v2.hlc))
            .await
            .unwrap()
            .unwrap()
            .winner
            .seq,
        v2.seq
    );
    assert!(matches!(
        s.get_as_of("cfg", at(T0 - 1)).await,
        Err(StoreError::BeforeHistory { .. })
    ));
    assert!(s.get_as_of("never", at(T0)).await.unwrap().is_none());

    let hist = s.history("cfg", 2, None).await.unwrap();
    assert_eq!(
        hist.iter().map(|v| v.seq).collect::<Vec<_>>(),
        vec![del.seq, v2.seq]
    );
    let older = s
        .history("cfg", 10, Some(HistoryCursor::before(hist[1].hlc)))
        .await
        .unwrap();
    assert_eq!(
        older.iter().map(|v| v.seq).collect::<Vec<_>>(),
        vec![v1.seq]
    );

    let diff = s.diff("cfg", at(T0), at(T0 + 1000)).await.unwrap();
    let ops: Vec<(&str, &str)> = diff
        .changes
        .iter()
        .map(|c| (c.path.as_str(), c.op.as_str()))
        .collect();
    assert_eq!(ops, vec![("/fan", "added"), ("/interval", "changed")]);
    let gone = s.diff("cfg", at(T0 + 1000), at(T0 + 2000)).await.unwrap();
    assert_eq!(gone.to, None);
    assert_eq!(gone.changes[0].op, "removed");
    assert_eq!(
        s.diff("nope", at(T0), at(T0)).await.unwrap_err().code(),
        "unknown_key"
    );

    s.put("dev/a", &json!(1)).await.unwrap();
    s.put("dev/b", &json!(2)).await.unwrap();
    s.put("other", &json!(3)).await.unwrap();
    let listed = s.list("dev/", None, 100, None).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|d| d.winner.key.as_str())
            .collect::<Vec<_>>(),
        vec!["dev/a", "dev/b"]
    );
    let old = s.list("", Some(at(T0 + 1500)), 100, None).await.unwrap();
    assert_eq!(
        old.iter()
            .map(|d| d.winner.key.as_str())
            .collect::<Vec<_>>(),
        vec!["cfg"]
    );

    for bad in ["", "a\u{0}b"] {
        assert_eq!(
            s.put(bad, &json!(1)).await.unwrap_err().code(),
            "invalid_key"
        );
    }
    let small = Store::open(
        dir.path().join("b.db"),
        StoreConfig {
            limits: Limits {
                max_value_bytes: 16,
                ..Limits::default()
            },
            ..StoreConfig::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        small
            .put("k", &json!("x".repeat(100)))
            .await
            .unwrap_err()
            .code(),
        "value_too_large"
    );
}

#[tokio::test]
async fn concurrent_puts_become_siblings_and_a_later_put_resolves_them() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(&dir, "a.db").await, open(&dir, "b.db").await);
    a.put("k", &json!("from a")).await.unwrap();
    b.put("k", &json!("from b")).await.unwrap();
    let from_a = a
        .changes_since(&VersionVector::new(), usize::MAX)
        .await
        .unwrap();
    let from_b = b
        .changes_since(&VersionVector::new(), usize::MAX)
        .await
        .unwrap();
    b.apply_remote(from_a).await.unwrap();
    a.apply_remote(from_b).await.unwrap();
    let (sa, sb) = (
        a.get("k").await.unwrap().unwrap(),
        b.get("k").await.unwrap().unwrap(),
    );
    assert_eq!(sa.siblings, 2);
    assert_eq!(sa, sb, "both replicas pick the same winner");
    assert_eq!(a.siblings("k").await.unwrap().len(), 2);

    let resolved = a.put("k", &json!("merged")).await.unwrap();
    assert_eq!(resolved.supersedes.len(), 2);
    pull(&b, &a).await;
    let sb = b.get("k").await.unwrap().unwrap();
    assert_eq!((sb.siblings, sb.winner.value), (1, Some(json!("merged"))));
    assert_eq!(a.digest(), b.digest());
}

#[tokio::test]
async fn apply_remote_is_idempotent_atomic_and_refuses_gaps_and_skew() {
    let dir = tempfile::tempdir().unwrap();
    let time = ManualTime::new(T0 as u64);
    let a = Store::open_with_time(
        dir.path().join("a.db"),
        StoreConfig::default(),
        time.clone(),
    )
    .await
    .unwrap();
    let b = Store::open_with_time(
        dir.path().join("b.db"),
        StoreConfig::default(),
        time.clone(),
    )
    .await
    .unwrap();
    for i in 0..5 {
        a.append(batch("t", &[(T0 + i, i as f64)])).await.unwrap();
    }
    let all = a
        .changes_since(&VersionVector::new(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|c| c.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );

    // A gap refuses the whole call, including the good change before it.
    let gap = vec![all[0].clone(), all[2].clone()];
    let err = b.apply_remote(gap).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SeqGap {
                have: 1,
                got: 3,
                ..
            }
        ),
        "{err}"
    );
    assert!(b.version_vector().is_empty());

    assert_eq!(
        b.apply_remote(all[..3].to_vec()).await.unwrap(),
        ApplyOutcome {
            applied: 3,
            skipped: 0
        }
    );
    assert_eq!(
        b.apply_remote(all.clone()).await.unwrap(),
        ApplyOutcome {
            applied: 2,
            skipped: 3
        }
    );
    assert_eq!(
        b.apply_remote(all.clone()).await.unwrap(),
        ApplyOutcome {
            applied: 0,
            skipped: 5
        }
    );
    assert_eq!(a.digest(), b.digest());
    assert_eq!(b.verify_digest().await.unwrap(), b.digest());

    // Byte budget pages: small budget → one change at a time, in seq order.
    let page = a.changes_since(&VersionVector::new(), 1).await.unwrap();
    assert_eq!(page.len(), 1);

    // A change from the future is refused and leaves the store untouched.
    let mut future = all[0].clone();
    future.actor = ActorId([9; 16]);
    future.hlc = Hlc::new(T0 as u64 + 3_600_000, 0);
    let err = b.apply_remote(vec![future]).await.unwrap_err();
    assert_eq!(err.code(), "clock_skew");
    assert_eq!(b.version_vector().len(), 1);
}

#[tokio::test]
async fn clock_stays_monotonic_across_restart_with_clock_in_the_past() {
    let dir = tempfile::tempdir().unwrap();
    let time = ManualTime::new(T0 as u64);
    let s = Store::open_with_time(
        dir.path().join("a.db"),
        StoreConfig::default(),
        time.clone(),
    )
    .await
    .unwrap();
    let first = s.put("k", &json!(1)).await.unwrap();
    s.close().await;
    time.set(1_000); // RTC-less boot in 1970
    let s = Store::open_with_time(dir.path().join("a.db"), StoreConfig::default(), time)
        .await
        .unwrap();
    let second = s.put("k", &json!(2)).await.unwrap();
    assert!(second.hlc > first.hlc);
    assert_eq!(
        s.get("k").await.unwrap().unwrap().winner.value,
        Some(json!(2))
    );
}

#[tokio::test]
async fn actor_id_persists_and_rekey_changes_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let s = Store::open(&path, StoreConfig::default()).await.unwrap();
    let actor = s.actor();
    s.append(batch("t", &[(T0, 1.0)])).await.unwrap();
    s.close().await;
    // A closed store is one self-contained file: the WAL was checkpointed away.
    let wal = std::fs::metadata(dir.path().join("a.db-wal"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert_eq!(wal, 0, "WAL left behind after close");
    let s = Store::open(&path, StoreConfig::default()).await.unwrap();
    assert_eq!(s.actor(), actor);
    s.close().await;
    let new = Store::rekey(&path).await.unwrap();
    assert_ne!(new, actor);
    assert_eq!(
        Store::open(&path, StoreConfig::default())
            .await
            .unwrap()
            .actor(),
        new
    );
}

#[tokio::test]
async fn newer_schema_is_refused_with_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    Store::open(&path, StoreConfig::default())
        .await
        .unwrap()
        .close()
        .await;
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute("INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (9999, 'future', 1, x'00', 0)", [])
            .unwrap();
    }
    let err = Store::open(&path, StoreConfig::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 9999, .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("9999") && msg.contains(&supported_schema_version().to_string()),
        "{msg}"
    );
}

#[tokio::test]
async fn group_commit_serves_many_concurrent_writers() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, "a.db").await;
    let mut tasks = Vec::new();
    for w in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                s.append(batch(&format!("w{w}"), &[(T0 + i, i as f64)]))
                    .await
                    .unwrap();
                s.put(&format!("doc/{w}"), &json!(i)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats = s.stats().await.unwrap();
    assert_eq!(
        (stats.readings, stats.changes, stats.doc_versions),
        (320, 640, 320)
    );
    assert_eq!(s.version_vector().get(&s.actor()), 640);
    assert_eq!(s.verify_digest().await.unwrap(), s.digest());
}

#[tokio::test]
async fn subscribers_see_durable_changes_and_log_after_pages_in_commit_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, "a.db").await;
    let mut rx = s.subscribe();
    s.append(batch("t", &[(T0, 1.0)])).await.unwrap();
    s.put("k", &json!(true)).await.unwrap();
    let e1 = rx.recv().await.unwrap();
    let e2 = rx.recv().await.unwrap();
    assert!(matches!(
        e1.kind,
        ChangeEventKind::Readings { count: 1, .. }
    ));
    assert!(matches!(e2.kind, ChangeEventKind::Doc { ref key, deleted: false } if key == "k"));
    let log = s.log_after(0, 10).await.unwrap();
    assert_eq!(
        log.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![e1.local_id, e2.local_id]
    );
    assert!(s.log_after(e2.local_id, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn heartbeat_and_close() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, "a.db").await;
    s.heartbeat().await.unwrap();
    let other = s.clone();
    s.close().await;
    assert!(matches!(
        other.put("k", &json!(1)).await,
        Err(StoreError::Closed)
    ));
    let _ = Arc::new(other);
}

/// `stats()` comes from counters the writer maintains: after writes, a refused job (rolled
/// back alone inside its group), a remote apply, a reopen and a prune they equal the table
/// counts, whether read back from the store or counted at open.
#[tokio::test]
async fn stats_counters_match_the_tables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let counted = |path: &std::path::Path| -> [u64; 5] {
        let conn = rusqlite::Connection::open(path).unwrap();
        let one = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap() as u64;
        [
            one("SELECT COUNT(*) FROM changes"),
            one("SELECT COUNT(*) FROM readings"),
            one("SELECT COUNT(*) FROM series"),
            one("SELECT COUNT(*) FROM doc_keys"),
            one("SELECT COUNT(*) FROM doc_versions"),
        ]
    };
    let of = |s: &StoreStats| [s.changes, s.readings, s.series, s.doc_keys, s.doc_versions];
    let s = open(&dir, "a.db").await;
    let b = open(&dir, "b.db").await;
    s.append(batch("t", &[(T0, 1.0), (T0 + 1000, 2.0)]))
        .await
        .unwrap();
    s.put("k1", &json!(1)).await.unwrap();
    s.put("k1", &json!(2)).await.unwrap();
    s.twin_create("tw", None).await.unwrap();
    // Concurrent with a refused twin write to a plain key: one group, one job rolled back.
    let three = json!(3);
    let (ok, refused) = tokio::join!(s.put("k2", &three), s.twin_create("k1", None));
    ok.unwrap();
    assert!(refused.is_err());
    b.append(batch("u", &[(T0, 5.0)])).await.unwrap();
    b.put("k3", &json!(4)).await.unwrap();
    pull(&s, &b).await;
    let stats = s.stats().await.unwrap();
    assert_eq!(of(&stats), [7, 3, 2, 3, 4]);
    assert_eq!(of(&stats), counted(&path));
    s.close().await;
    let s = open(&dir, "a.db").await;
    assert_eq!(of(&s.stats().await.unwrap()), counted(&path));
    // A prune moves the readings count (through `meta.readings_pruned`). The counters are
    // stored with every commit and read back at open; a store without that row (written by
    // an earlier release) counts its tables instead, and both agree with the tables.
    s.prune_before(T0 + 2_000, 1000, &Unacked::NoUpstream)
        .await
        .unwrap();
    let pruned = of(&s.stats().await.unwrap());
    assert!(pruned[1] < 3, "{pruned:?}");
    assert_eq!(pruned, counted(&path));
    s.close().await;
    let s = open(&dir, "a.db").await;
    assert_eq!(of(&s.stats().await.unwrap()), pruned, "read back");
    s.close().await;
    let conn = rusqlite::Connection::open(&path).unwrap();
    assert_eq!(
        conn.execute("DELETE FROM meta WHERE key = 'counts'", [])
            .unwrap(),
        1
    );
    drop(conn);
    let s = open(&dir, "a.db").await;
    assert_eq!(of(&s.stats().await.unwrap()), pruned, "counted");
    s.close().await;
    b.close().await;
}

/// Two replicas whose clocks agree stamp their concurrent puts with the same HLC; history pages
/// must list both, whatever the page size (the cursor holds the actor, not only the HLC).
#[tokio::test]
async fn history_pages_keep_versions_of_two_actors_sharing_one_hlc() {
    let dir = tempfile::tempdir().unwrap();
    let time = ManualTime::new(T0 as u64);
    let mut stores = Vec::new();
    for name in ["a.db", "b.db", "c.db"] {
        let s = Store::open_with_time(dir.path().join(name), StoreConfig::default(), time.clone())
            .await
            .unwrap();
        stores.push(s);
    }
    let mut puts = Vec::new();
    for (i, s) in stores.iter().enumerate() {
        puts.push(s.put("shared", &json!({ "from": i })).await.unwrap());
    }
    assert!(
        puts.iter().all(|v| v.hlc == puts[0].hlc),
        "the test needs one HLC for all three puts: {puts:?}"
    );
    let (a, others) = stores.split_first().unwrap();
    for o in others {
        let missing = o
            .changes_since(&VersionVector::new(), usize::MAX)
            .await
            .unwrap();
        a.apply_remote(missing).await.unwrap();
    }
    let mut listed = Vec::new();
    let mut cursor = None;
    loop {
        let page = a.history("shared", 1, cursor).await.unwrap();
        let Some(last) = page.last() else { break };
        cursor = Some(HistoryCursor::after_entry(last.hlc, last.actor));
        listed.extend(page.iter().map(|v| v.actor));
    }
    let mut want: Vec<ActorId> = puts.iter().map(|v| v.actor).collect();
    want.sort();
    want.reverse();
    assert_eq!(
        listed, want,
        "newest first, then by actor descending, each once"
    );
}

/// A new identity signs with a new key: `Store::rekey` replaces the key pair with the actor,
/// the old actor's changes keep their signatures, and both chains verify. The database file
/// holding the private key is readable by its owner only.
#[tokio::test]
async fn rekey_makes_a_new_key_pair_and_both_chains_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let key = |p: &std::path::Path| -> Vec<u8> {
        let conn = rusqlite::Connection::open(p).unwrap();
        conn.query_row(
            "SELECT value FROM meta WHERE key = 'signing_key'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    let store = open(&dir, "s.db").await;
    store.put("k", &json!(1)).await.unwrap();
    let old = store.actor();
    store.close().await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    let before = key(&path);
    let new = Store::rekey(&path).await.unwrap();
    assert_ne!(new, old);
    assert_ne!(key(&path), before, "a new identity gets a new key pair");
    let store = Store::open(&path, StoreConfig::default()).await.unwrap();
    store.put("k", &json!(2)).await.unwrap();
    store.close().await;
    let report = Store::verify_file(&path).await.unwrap();
    assert!(report.ok(), "{:?}", report.failures);
    assert_eq!((report.actors, report.signed, report.unsigned), (2, 2, 0));
}

/// Three replicas whose clocks read the same millisecond each write one key concurrently:
/// three siblings with one HLC. As of that HLC — and as of any later point — the winner is
/// the highest actor, as `get` says, with every sibling counted; after one replica resolves
/// them, as of the old point still gives the three.
#[tokio::test]
async fn siblings_stamped_with_one_hlc_resolve_to_the_highest_actor_as_of_any_point() {
    let dir = tempfile::tempdir().unwrap();
    let time = ManualTime::new(T0 as u64);
    let mut replicas = Vec::new();
    for i in 0..3 {
        let s = Store::open_with_time(
            dir.path().join(format!("r{i}.db")),
            StoreConfig::default(),
            time.clone(),
        )
        .await
        .unwrap();
        s.put("cfg", &json!({ "by": i })).await.unwrap();
        replicas.push(s);
    }
    let hlc = replicas[0].get("cfg").await.unwrap().unwrap().winner.hlc;
    for from in 1..3 {
        pull(&replicas[0], &replicas[from]).await;
    }
    let s = &replicas[0];
    let now = s.get("cfg").await.unwrap().unwrap();
    assert_eq!(now.siblings, 3);
    assert_eq!(now.winner.hlc, hlc, "one HLC for all three");
    let highest = replicas.iter().map(|r| r.actor()).max().unwrap();
    assert_eq!(now.winner.actor, highest);
    assert_eq!(
        s.get_as_of("cfg", AsOf::Hlc(hlc)).await.unwrap(),
        Some(now.clone())
    );

    time.set(T0 as u64 + 1000);
    let resolved = s.put("cfg", &json!({ "by": "merge" })).await.unwrap();
    assert_eq!(resolved.supersedes.len(), 3);
    let after = s
        .get_as_of("cfg", AsOf::Hlc(resolved.hlc))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((after.siblings, after.winner.seq), (1, resolved.seq));
    assert_eq!(s.get_as_of("cfg", AsOf::Hlc(hlc)).await.unwrap(), Some(now));
    for r in replicas {
        r.close().await;
    }
}
