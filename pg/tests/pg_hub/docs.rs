//! Documents on a PostgreSQL hub: the reads (current value, siblings, history pages, as-of,
//! diffs, listings) answer as a SQLite store holding the same changes — concurrent siblings,
//! deletes, batches and pruned versions included, errors message for message — and the
//! hub's own writes (put, delete, batch) are checked, resolved and refused as SQLite's,
//! atomically, serialised between replicas, and reach devices signed.

use super::*;

/// Both answers: equal values, or errors with the same code and message.
pub(super) fn same<T: PartialEq + std::fmt::Debug>(
    what: &str,
    sqlite: kdelta_sync::Result<T>,
    pg: Result<T, PgError>,
) {
    match (sqlite, pg.map_err(StoreError::from)) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "{what}"),
        (Err(a), Err(b)) => {
            assert_eq!(a.code(), b.code(), "{what}");
            assert_eq!(a.to_string(), b.to_string(), "{what}");
        }
        (a, b) => panic!("{what}: SQLite {a:?}, PostgreSQL {b:?}"),
    }
}

/// Every read of `key` on both: state, siblings, every history page of 1, 2 and 1000, the
/// state as of every version's HLC (and just before, and its millisecond), diffs between
/// consecutive points.
pub(super) async fn compare_key(r: &Store, hub: &PgStore, key: &str) {
    same(&format!("get {key}"), r.get(key).await, hub.get(key).await);
    same(
        &format!("siblings {key}"),
        r.siblings(key).await,
        hub.siblings(key).await,
    );
    for limit in [1, 2, 1000] {
        let mut before = None;
        loop {
            let a = r.history(key, limit, before).await.unwrap();
            let b = hub.history(key, limit, before).await.unwrap();
            assert_eq!(a, b, "history {key} limit {limit} before {before:?}");
            match a.last() {
                Some(v) if a.len() == limit => {
                    before = Some(HistoryCursor::after_entry(v.hlc, v.actor))
                }
                _ => break,
            }
        }
    }
    let all = r.history(key, 1000, None).await.unwrap();
    let mut points = vec![AsOf::Hlc(Hlc(1)), AsOf::Hlc(Hlc(i64::MAX as u64))];
    for v in &all {
        points.push(AsOf::Hlc(v.hlc));
        points.push(AsOf::Hlc(Hlc(v.hlc.0 - 1)));
        points.push(AsOf::WallMs(v.hlc.ms()));
    }
    for &at in &points {
        same(
            &format!("{key} as of {at}"),
            r.get_as_of(key, at).await,
            hub.get_as_of(key, at).await,
        );
    }
    for w in points.windows(2) {
        same(
            &format!("{key} diff {} .. {}", w[0], w[1]),
            r.diff(key, w[0], w[1]).await,
            hub.diff(key, w[0], w[1]).await,
        );
    }
}

/// Listings on both, page by page, now and at `points`.
async fn compare_lists(r: &Store, hub: &PgStore, points: &[AsOf]) {
    let ats: Vec<Option<AsOf>> = std::iter::once(None)
        .chain(points.iter().copied().map(Some))
        .collect();
    for prefix in ["", "k/", "k/x", "nothing/"] {
        for &at in &ats {
            for limit in [1, 2, 1000] {
                let mut after: Option<String> = None;
                loop {
                    let a = r.list(prefix, at, limit, after.as_deref()).await;
                    let b = hub.list(prefix, at, limit, after.as_deref()).await;
                    let next = match (&a, &b) {
                        (Ok(page), _) if page.len() == limit => {
                            page.last().map(|d| d.winner.key.clone())
                        }
                        _ => None,
                    };
                    same(&format!("list {prefix:?} at {at:?} limit {limit}"), a, b);
                    match next {
                        Some(n) => after = Some(n),
                        None => break,
                    }
                }
            }
        }
    }
}

#[tokio::test]
async fn document_reads_answer_as_a_sqlite_store_with_the_same_changes() {
    let Some(db) = TestDb::new("doc_reads").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (device(&dir, "a.db").await, device(&dir, "b.db").await);
    let reference = device(&dir, "ref.db").await;
    let hub = db.replica().await;

    // Two devices write without seeing each other: siblings on k/x, a delete, a batch, a
    // key one deletes while the other writes, keys that sort differently bytewise than in
    // most collations.
    a.put("k/x", &json!({"v": 1, "nested": {"t": 1}}))
        .await
        .unwrap();
    a.put("k/x", &json!({"v": 2, "nested": {"t": 1}}))
        .await
        .unwrap();
    a.put("k/y", &json!("y")).await.unwrap();
    a.delete("k/y").await.unwrap();
    a.write_batch(vec![
        BatchEntry::put("k/xa", json!([1, 2])),
        BatchEntry::put("k/Z", json!(null)),
        BatchEntry::put("k/é", json!(true)),
    ])
    .await
    .unwrap();
    b.put("k/x", &json!({"v": "b"})).await.unwrap();
    b.put("k/gone", &json!(1)).await.unwrap();
    sync(&b, &a, 1 << 20).await;
    a.delete("k/gone").await.unwrap();
    b.put("k/gone", &json!(2)).await.unwrap();
    // Versions a prunes: k/p keeps its newest one.
    for i in 0..4 {
        a.put("k/p", &json!(i)).await.unwrap();
    }
    let keep_one = RetentionPolicy {
        docs: DocRetention {
            default: DocRule {
                keep_versions: Some(1),
                max_age_ms: None,
            },
            keys: Vec::new(),
        },
        ..RetentionPolicy::default()
    };
    let far = a.last_hlc().ms() as i64 + 86_400_000;
    a.prune(&keep_one, far, 1000).await.unwrap();

    // The same changes to both, in other page sizes. From `a` first: it serves b's
    // versions it pruned as pruned, and whoever stores a version first keeps that form.
    sync(&a, &reference, 1 << 20).await;
    sync(&b, &reference, 1 << 20).await;
    sync(&a, &hub, 700).await;
    sync(&b, &hub, 900).await;
    assert_eq!(hub.digest().await.unwrap(), reference.digest());

    let x = hub.siblings("k/x").await.unwrap();
    assert_eq!(x.len(), 2, "concurrent writes are siblings: {x:?}");
    let pruned = hub.history("k/p", 1000, None).await.unwrap();
    assert_eq!(pruned.iter().filter(|v| v.pruned).count(), 3, "{pruned:?}");
    let err = hub
        .get_as_of("k/p", AsOf::Hlc(pruned[3].hlc))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PgError::Store(StoreError::HistoryPruned { .. })),
        "{err:?}"
    );

    for key in [
        "k/x", "k/y", "k/xa", "k/Z", "k/é", "k/gone", "k/p", "missing",
    ] {
        compare_key(&reference, &hub, key).await;
    }
    let points: Vec<AsOf> = reference
        .history("k/x", 1000, None)
        .await
        .unwrap()
        .iter()
        .map(|v| AsOf::Hlc(v.hlc))
        .collect();
    compare_lists(&reference, &hub, &points).await;
    hub.close().await;
    db.drop().await;
}

#[tokio::test]
async fn hub_writes_are_checked_resolved_and_refused_as_on_sqlite() {
    let Some(db) = TestDb::new("doc_writes").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let hub = db.replica().await;
    // The same writes on a SQLite store: same versions (but for the actor), same errors.
    let s = device(&dir, "s.db").await;
    let dev = device(&dir, "dev.db").await;
    dev.twin_create("twin/1", Some(json!({"a": 1})))
        .await
        .unwrap();
    sync(&dev, &hub, 1 << 20).await;
    sync(&dev, &s, 1 << 20).await;

    let strip = |v: DocVersion| (v.key, v.seq, v.value, v.supersedes.len(), v.pruned);
    let p1s = s.put("h/a", &json!({"x": 1})).await.unwrap();
    let p1 = hub.put("h/a", &json!({"x": 1})).await.unwrap();
    assert_eq!(p1.actor, hub.actor());
    assert_eq!((p1.seq, p1.supersedes.clone()), (1, vec![]));
    let p2 = hub.put("h/a", &json!({"x": 2})).await.unwrap();
    assert_eq!(
        p2.supersedes,
        vec![Dot {
            actor: hub.actor(),
            seq: 1
        }]
    );
    assert!(p2.hlc > p1.hlc);
    s.put("h/a", &json!({"x": 2})).await.unwrap();
    assert_eq!(strip(p1s), strip(p1));

    let big = json!("x".repeat(hub.config().limits.max_value_bytes + 1));
    let cases: Vec<(
        &str,
        kdelta_sync::Result<DocVersion>,
        Result<DocVersion, PgError>,
    )> = vec![
        (
            "delete missing",
            s.delete("h/none").await,
            hub.delete("h/none").await,
        ),
        (
            "bad key",
            s.put("", &json!(1)).await,
            hub.put("", &json!(1)).await,
        ),
        (
            "too large",
            s.put("h/big", &big).await,
            hub.put("h/big", &big).await,
        ),
        (
            "put on a twin",
            s.put("twin/1", &json!(1)).await,
            hub.put("twin/1", &json!(1)).await,
        ),
        (
            "delete a twin",
            s.delete("twin/1").await,
            hub.delete("twin/1").await,
        ),
    ];
    for (what, a, b) in cases {
        same(what, a.map(strip), b.map(strip));
    }
    let d = hub.delete("h/a").await.unwrap();
    s.delete("h/a").await.unwrap();
    assert_eq!(d.supersedes.len(), 1);
    same(
        "delete a deleted key",
        s.delete("h/a").await,
        hub.delete("h/a").await,
    );

    // Batches: every bad entry refuses the whole batch and stores nothing.
    let stranger = Dot {
        actor: ActorId([9; 16]),
        seq: 1,
    };
    let bad_batches = vec![
        vec![],
        vec![
            BatchEntry::put("h/b", json!(1)),
            BatchEntry::delete("h/none"),
        ],
        vec![
            BatchEntry::put("h/b", json!(1)),
            BatchEntry::put("h/b", json!(2)),
        ],
        vec![
            BatchEntry::put("h/b", json!(1)),
            BatchEntry::put("", json!(2)),
        ],
        vec![
            BatchEntry::put("h/b", json!(1)),
            BatchEntry::put("twin/1", json!(2)),
        ],
        vec![
            BatchEntry::put("h/b", json!(1)),
            BatchEntry::put("h/a", json!(2)).with_context(vec![stranger]),
        ],
        vec![
            BatchEntry::put("h/b", json!(1)),
            BatchEntry::put("h/c", big.clone()),
        ],
    ];
    let vv = hub.version_vector().await.unwrap();
    let changes = db.count("SELECT count(*) FROM {s}.changes").await;
    let versions = db.count("SELECT count(*) FROM {s}.doc_versions").await;
    for entries in bad_batches {
        let what = format!("batch {entries:?}");
        let a = s.write_batch(entries.clone()).await.map(|v| v.len());
        let b = hub.write_batch(entries).await.map(|v| v.len());
        assert!(b.is_err(), "{what}");
        same(&what, a, b);
    }
    assert_eq!(hub.version_vector().await.unwrap(), vv);
    assert_eq!(db.count("SELECT count(*) FROM {s}.changes").await, changes);
    assert_eq!(
        db.count("SELECT count(*) FROM {s}.doc_versions").await,
        versions
    );
    assert!(hub.get("h/b").await.unwrap().is_none());

    // A good batch: one change, a delete resolving the tombstone's sibling, an explicit
    // context naming a real version.
    let entries = vec![
        BatchEntry::put("h/b", json!({"b": 1})),
        BatchEntry::put("h/a", json!("again")).with_context(vec![Dot {
            actor: hub.actor(),
            seq: 2,
        }]),
    ];
    let got = hub.write_batch(entries.clone()).await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].seq, got[1].seq);
    assert_eq!(got[1].supersedes.len(), 1);
    // A device that syncs from the hub verifies every change and reads the same.
    let reader = device(&dir, "reader.db").await;
    sync(&hub, &reader, 1 << 20).await;
    let report = Store::verify_file(dir.path().join("reader.db"))
        .await
        .unwrap();
    assert!(report.ok(), "{:?}", report.failures);
    assert_eq!(report.unsigned, 0);
    for key in ["h/a", "h/b", "h/none"] {
        compare_key(&reader, &hub, key).await;
    }

    // A device writing concurrently with the hub: siblings on both.
    let dev2 = device(&dir, "dev2.db").await;
    sync(&hub, &dev2, 1 << 20).await;
    dev2.put("h/b", &json!("device")).await.unwrap();
    hub.put("h/b", &json!("hub")).await.unwrap();
    sync(&dev2, &hub, 1 << 20).await;
    sync(&hub, &dev2, 1 << 20).await;
    assert_eq!(hub.siblings("h/b").await.unwrap().len(), 2);
    compare_key(&dev2, &hub, "h/b").await;
    // A hub delete resolves both.
    hub.delete("h/b").await.unwrap();
    assert!(hub.get("h/b").await.unwrap().unwrap().winner.is_tombstone());
    assert_eq!(hub.siblings("h/b").await.unwrap().len(), 1);
    hub.close().await;
    db.drop().await;
}

#[tokio::test]
async fn two_replicas_writing_one_key_at_once_keep_every_version() {
    let Some(db) = TestDb::new("doc_race").await else {
        return;
    };
    let (r1, r2) = (db.replica().await, db.replica().await);
    const EACH: usize = 20;
    let write = |hub: PgStore, tag: &'static str| async move {
        let mut seqs = Vec::new();
        for i in 0..EACH {
            let v = hub.put("race", &json!({"by": tag, "i": i})).await.unwrap();
            seqs.push(v.seq);
        }
        seqs
    };
    let (s1, s2) = tokio::join!(
        tokio::spawn(write(r1.clone(), "r1")),
        tokio::spawn(write(r2.clone(), "r2"))
    );
    let mut seqs: Vec<u64> = s1.unwrap().into_iter().chain(s2.unwrap()).collect();
    seqs.sort();
    assert_eq!(seqs, (1..=2 * EACH as u64).collect::<Vec<_>>(), "distinct");
    // Every version is kept; each write saw the one before it (the hub actor's lock
    // serialises them, as one SQLite writer does), so exactly one head remains.
    let history = r1.history("race", 1000, None).await.unwrap();
    assert_eq!(history.len(), 2 * EACH);
    for pair in history.windows(2) {
        assert_eq!(
            pair[0].supersedes,
            vec![Dot {
                actor: r1.actor(),
                seq: pair[1].seq
            }]
        );
    }
    assert_eq!(r2.siblings("race").await.unwrap().len(), 1);
    assert_eq!(r1.get("race").await.unwrap(), r2.get("race").await.unwrap());
    // Batches through both at once: each all or nothing, none lost.
    let batch = |hub: PgStore, tag: &'static str| async move {
        for i in 0..5 {
            hub.write_batch(vec![
                BatchEntry::put("race", json!({"batch": tag, "i": i})),
                BatchEntry::put(format!("race/{tag}"), json!(i)),
            ])
            .await
            .unwrap();
        }
    };
    let (x, y) = tokio::join!(
        tokio::spawn(batch(r1.clone(), "r1")),
        tokio::spawn(batch(r2.clone(), "r2"))
    );
    x.unwrap();
    y.unwrap();
    assert_eq!(r1.history("race", 1000, None).await.unwrap().len(), 50);
    assert_eq!(r1.siblings("race").await.unwrap().len(), 1);
    assert_eq!(
        r1.version_vector().await.unwrap().get(&r1.actor()),
        2 * EACH as u64 + 10
    );
    r1.close().await;
    r2.close().await;
    db.drop().await;
}
