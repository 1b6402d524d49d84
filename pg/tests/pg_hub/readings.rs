//! Readings on a PostgreSQL hub: the per-minute rollups kept by the apply transactions
//! (recomputed from the readings, also for the minutes a time correction moves readings
//! out of and into; exact while two replicas apply readings of the same minutes at once;
//! rebuilt by migration 0003 for readings stored before it) and the readings queries, which
//! answer as a SQLite store holding the same changes does.

use std::collections::BTreeMap;

use sqlx::Row;

use super::*;

/// One rollup row: n, total, min, max, (first ts, value), (last ts, value).
type Rollup = (i64, f64, f64, f64, (i64, f64), (i64, f64));

/// A rollup row's key: series id, minute, actor (`actors.idx`).
type RollupKey = (i64, i64, i64);

/// The rollup rows of the hub.
async fn stored_rollups(db: &TestDb) -> BTreeMap<RollupKey, Rollup> {
    let sql = format!(
        "SELECT series_id, minute, actor_idx, n, total, vmin, vmax, first_ts, first_value, \
         last_ts, last_value FROM {}.rollup_1m",
        db.schema
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(&db.admin)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                (r.get(0), r.get(1), r.get(2)),
                (
                    r.get(3),
                    r.get(4),
                    r.get(5),
                    r.get(6),
                    (r.get(7), r.get(8)),
                    (r.get(9), r.get(10)),
                ),
            )
        })
        .collect()
}

/// The rollups computed from scratch, here, from every stored reading: per series, minute
/// and actor, the actor's readings in (seq, ts) order, the total their sequential sum with
/// every addition held within ±f64::MAX (the rule of `rollups.rs`, SQLite's
/// `saturating_sum`).
async fn rollups_from_scratch(db: &TestDb) -> BTreeMap<RollupKey, Rollup> {
    let sql = format!(
        "SELECT r.series_id, r.ts, r.value, c.actor_idx FROM {s}.readings r \
         JOIN {s}.changes c ON c.id = r.change_id ORDER BY c.actor_idx, c.seq, r.ts",
        s = db.schema
    );
    let mut minutes: BTreeMap<RollupKey, Vec<(i64, f64)>> = BTreeMap::new();
    for r in sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(&db.admin)
        .await
        .unwrap()
    {
        let (s, ts, v, a): (i64, i64, f64, i64) = (r.get(0), r.get(1), r.get(2), r.get(3));
        minutes
            .entry((s, ts.div_euclid(60_000) * 60_000, a))
            .or_default()
            .push((ts, v));
    }
    minutes
        .into_iter()
        .map(|(key, rs)| {
            let total = rs
                .iter()
                .fold(0.0f64, |sum, r| (sum + r.1).clamp(-f64::MAX, f64::MAX));
            let min = rs.iter().map(|r| r.1).fold(f64::INFINITY, f64::min);
            let max = rs.iter().map(|r| r.1).fold(f64::NEG_INFINITY, f64::max);
            // The earliest (smaller value at a tie), the latest (larger value at a tie).
            let by_time = |a: &&(i64, f64), b: &&(i64, f64)| a.partial_cmp(b).unwrap();
            let first = *rs.iter().min_by(by_time).unwrap();
            let last = *rs.iter().max_by(by_time).unwrap();
            (key, (rs.len() as i64, total, min, max, first, last))
        })
        .collect()
}

async fn assert_rollups_exact(db: &TestDb) {
    let (stored, expected) = (stored_rollups(db).await, rollups_from_scratch(db).await);
    assert!(!expected.is_empty());
    assert_eq!(stored.len(), expected.len(), "rollup rows");
    for (key, want) in &expected {
        assert_eq!(stored.get(key), Some(want), "rollup of {key:?}");
    }
}

/// Readings whose sums are exact in any order (multiples of 1/4), ties at one time between
/// devices, a series crossing minutes, one summing past f64::MAX.
async fn readings_device(s: &Store, tag: i64) {
    for round in 0..6i64 {
        let mut b = ReadingBatch::new();
        for i in 0..30i64 {
            let ts = T0 + round * 45_000 + i * 1_500;
            b.push(
                "shared.x",
                ts,
                ((i * 7 + tag) % 13) as f64 * 0.25,
                Some("u"),
            );
            b.push(
                &format!("dev{tag}.y"),
                ts + tag,
                (i - 10) as f64 * 0.5,
                None,
            );
        }
        if round == 2 {
            b.push("huge", T0 + 61_000 + tag, 1.5e308, None);
            b.push("huge", T0 + 62_000 + tag, -1e308, None);
        }
        b.series[0].meta.insert("room".into(), format!("r{tag}"));
        s.append(b).await.unwrap();
    }
}

#[tokio::test]
async fn rollups_and_queries_on_postgres_answer_as_sqlite() {
    let Some(db) = TestDb::new("readings_queries").await else {
        return;
    };
    assert_eq!(kdelta_pg::supported_schema_version(), 8);
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (device(&dir, "a.db").await, device(&dir, "b.db").await);
    busy_device(&a, 1).await; // with a time correction moving readings across minutes
    busy_device(&b, 2).await;
    readings_device(&a, 1).await;
    readings_device(&b, 2).await;
    let reference = device(&dir, "ref.db").await;
    let hub = db.replica().await;
    sync(&a, &reference, 1 << 20).await;
    sync(&b, &reference, 1 << 20).await;
    // The hub gets b's changes first and in small pages: another order than the reference.
    sync(&b, &hub, 3_000).await;
    sync(&a, &hub, 5_000).await;
    assert_eq!(hub.digest().await.unwrap(), reference.digest());
    assert_rollups_exact(&db).await;

    // The series list, all at once and paged.
    let series = reference.series().await.unwrap();
    assert!(series.len() >= 6, "{series:?}");
    assert_eq!(hub.series().await.unwrap(), series);
    let mut after: Option<String> = None;
    loop {
        let (want, got) = (
            reference.series_page(after.as_deref(), 2).await.unwrap(),
            hub.series_page(after.as_deref(), 2).await.unwrap(),
        );
        assert_eq!(got, want);
        match want.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }

    // Every series: ranges page by page, latest values, aggregates over whole minutes,
    // partial edges and buckets that are not whole minutes.
    let names: Vec<String> = series.iter().map(|s| s.name.clone()).collect();
    for name in &names {
        for (from, to, limit) in [(i64::MIN, i64::MAX, 7), (T0 + 1, T0 + 100_000, 1000)] {
            let mut q = RangeQuery {
                series: name.clone(),
                from,
                to,
                limit,
                cursor: None,
            };
            let (mut want, mut got) = (Vec::new(), Vec::new());
            loop {
                let page = reference.range(&q).await.unwrap();
                want.extend(page.readings);
                assert_eq!(page.unit, hub.range(&q).await.unwrap().unit, "{name}");
                match page.next_cursor {
                    Some(c) => q.cursor = Some(c),
                    None => break,
                }
            }
            q.cursor = None;
            loop {
                let page = hub.range(&q).await.unwrap();
                got.extend(page.readings);
                match page.next_cursor {
                    Some(c) => q.cursor = Some(c),
                    None => break,
                }
            }
            // Readings at one time come in local-id order, which is each store's arrival
            // order (on SQLite too): compare them ordered by value within a time.
            let by_time_value = |v: &mut Vec<ReadingRow>| {
                v.sort_by(|a, b| (a.ts, a.value).partial_cmp(&(b.ts, b.value)).unwrap())
            };
            assert!(want.windows(2).all(|w| w[0].ts <= w[1].ts));
            assert!(got.windows(2).all(|w| w[0].ts <= w[1].ts));
            by_time_value(&mut want);
            by_time_value(&mut got);
            assert_eq!(got, want, "range of {name}");
        }
        for (from, to, bucket_ms) in [
            (T0 - 120_000, T0 + 400_000, 60_000),
            (T0 + 7_001, T0 + 333_333, 60_000),
            (T0 - 600_000, T0 + 600_000, 300_000),
            (T0 + 1, T0 + 300_000, 7_000),
            (0, T0 + 100 * 86_400_000, 3_600_000 * 24),
            (T0, T0 + 30_000, 60_000),
        ] {
            let q = AggregateQuery {
                series: name.clone(),
                from,
                to,
                bucket_ms,
            };
            assert_eq!(
                hub.aggregate(&q).await.unwrap(),
                reference.aggregate(&q).await.unwrap(),
                "{q:?}"
            );
        }
    }
    assert_eq!(
        hub.latest(None).await.unwrap(),
        reference.latest(None).await.unwrap()
    );
    let asked = vec![names[2].clone(), names[0].clone(), names[2].clone()];
    assert_eq!(
        hub.latest(Some(asked.as_slice())).await.unwrap(),
        reference.latest(Some(asked.as_slice())).await.unwrap()
    );

    // The same refusals, with the same messages.
    let unknown = vec!["nope".to_owned()];
    let bad_range = RangeQuery {
        series: names[0].clone(),
        from: 5,
        to: 5,
        limit: 10,
        cursor: None,
    };
    let bad_cursor = RangeQuery {
        cursor: Some("x".into()),
        to: 6,
        ..bad_range.clone()
    };
    let aggregate = |series: &str, bucket_ms, to| AggregateQuery {
        series: series.into(),
        from: 0,
        to,
        bucket_ms,
    };
    let errors = [
        (
            hub.latest(Some(unknown.as_slice()))
                .await
                .map(|_| ())
                .unwrap_err(),
            reference
                .latest(Some(unknown.as_slice()))
                .await
                .map(|_| ())
                .unwrap_err(),
        ),
        (
            hub.range(&bad_range).await.map(|_| ()).unwrap_err(),
            reference.range(&bad_range).await.map(|_| ()).unwrap_err(),
        ),
        (
            hub.range(&bad_cursor).await.map(|_| ()).unwrap_err(),
            reference.range(&bad_cursor).await.map(|_| ()).unwrap_err(),
        ),
        (
            hub.aggregate(&aggregate("nope", 60_000, 1))
                .await
                .map(|_| ())
                .unwrap_err(),
            reference
                .aggregate(&aggregate("nope", 60_000, 1))
                .await
                .map(|_| ())
                .unwrap_err(),
        ),
        (
            hub.aggregate(&aggregate(&names[0], 0, 1))
                .await
                .map(|_| ())
                .unwrap_err(),
            reference
                .aggregate(&aggregate(&names[0], 0, 1))
                .await
                .map(|_| ())
                .unwrap_err(),
        ),
        (
            hub.aggregate(&aggregate(&names[0], 1, i64::MAX))
                .await
                .map(|_| ())
                .unwrap_err(),
            reference
                .aggregate(&aggregate(&names[0], 1, i64::MAX))
                .await
                .map(|_| ())
                .unwrap_err(),
        ),
    ];
    for (got, want) in errors {
        let got = StoreError::from(got);
        assert_eq!(
            (got.code(), got.to_string()),
            (want.code(), want.to_string())
        );
    }

    // A database of schema v2 with readings gets its rollups when it is migrated (0003 by
    // minute, then 0004 per actor; 0005 adds the commit order, 0006 actor origins, 0007
    // credential predecessors, 0008 the rollups of pruned readings).
    hub.close().await;
    for sql in [
        "DROP TABLE {s}.pruned_rollups",
        "DROP TABLE {s}.credential_predecessors",
        "DROP TABLE {s}.actor_origins",
        "DROP TABLE {s}.rollup_1m",
        "DROP INDEX {s}.series_by_name_bytes",
        "DROP AGGREGATE {s}.kdelta_saturating_sum(float8)",
        "DROP FUNCTION {s}.kdelta_saturating_add(float8, float8)",
        "DROP TABLE {s}.log_cursors",
        "DROP INDEX {s}.changes_gaps",
        "ALTER TABLE {s}.changes DROP COLUMN commit_xid",
        "DELETE FROM {s}._sqlx_migrations WHERE version >= 3",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql.replace("{s}", &db.schema)))
            .execute(&db.admin)
            .await
            .unwrap();
    }
    let hub = db.replica().await;
    assert_rollups_exact(&db).await;
    assert_eq!(hub.series().await.unwrap(), series);
    hub.close().await;
    db.drop().await;
}

/// Two replicas (two pools) apply pages of different devices at the same time, every page
/// with readings of the same series and minutes as the other's: each transaction recomputes
/// the minutes it touched, and the rollups end equal to a computation from scratch (without
/// the row locks of `rollups.rs`, a recompute misses the other replica's readings).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_applying_the_same_minutes_at_once_keep_exact_rollups() {
    let Some(db) = TestDb::new("rollup_concurrency").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut devices = Vec::new();
    for d in 0..4i64 {
        let s = device(&dir, &format!("d{d}.db")).await;
        for i in 0..30i64 {
            let mut b = ReadingBatch::new();
            for j in 0..12i64 {
                // Every device in the same minutes of the same series, at its own times;
                // values whose sums round (the order of addition matters).
                let ts = T0 + i * 20_000 + j * 1_000 + d * 100;
                b.push(
                    &format!("s{}", j % 3),
                    ts,
                    0.1 * (d * 31 + i * 7 + j) as f64,
                    None,
                );
            }
            s.append(b).await.unwrap();
        }
        devices.push(s);
    }
    let (r1, r2) = (db.replica().await, db.replica().await);
    let mut pages = Vec::new();
    for d in &devices {
        pages.push(pages_for(d, &VersionVector::new(), 700).await);
    }
    // Replica 1 takes devices 0 and 1, replica 2 devices 2 and 3, page k of each at once.
    let rounds = pages.iter().map(Vec::len).max().unwrap();
    for k in 0..rounds {
        let page = |d: usize| pages[d].get(k).cloned().unwrap_or_default();
        let (mut p1, mut p2) = (page(0), page(2));
        p1.extend(page(1));
        p2.extend(page(3));
        let (o1, o2) = tokio::join!(r1.apply_remote(p1), r2.apply_remote(p2));
        o1.unwrap();
        o2.unwrap();
    }
    let mut expected = Digest::default();
    for d in &devices {
        expected.add_digest(&d.digest());
    }
    assert_eq!(r1.digest().await.unwrap(), expected);
    assert_eq!(
        db.count("SELECT count(*) FROM {s}.readings").await,
        4 * 30 * 12
    );
    assert_rollups_exact(&db).await;
    r1.close().await;
    r2.close().await;
    db.drop().await;
}

/// A catch-up page of thousands of readings goes in with `COPY` (binary): read back bit for
/// bit (the smallest and largest magnitudes), routed to the month partitions and
/// the default one (1990), with the rollups of per-actor folds — and a page below the
/// threshold, applied after it, with the `INSERT` beside it.
#[tokio::test]
async fn a_large_page_is_copied_and_reads_back_bit_for_bit() {
    let Some(db) = TestDb::new("copy_readings").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (device(&dir, "a.db").await, device(&dir, "b.db").await);
    const Y1990: i64 = 631_152_000_000;
    let awkward = [-0.0, f64::MIN_POSITIVE, -f64::MAX, 1e308, -1e-300, 0.1, 3.0];
    for (store, tag) in [(&a, 0i64), (&b, 1)] {
        for change in 0..3i64 {
            let mut batch = ReadingBatch::new();
            for i in 0..1_000i64 {
                let v = awkward[((i + change) % awkward.len() as i64) as usize];
                batch.push(
                    "shared.v",
                    T0 + change * 1_000_000 + i * 1_000 + tag,
                    v,
                    None,
                );
                batch.push(
                    &format!("old{tag}"),
                    Y1990 + change * 1_000_000 + i,
                    -v,
                    None,
                );
            }
            store.append(batch).await.unwrap();
        }
    }
    let hub = db.replica().await;
    let reference = device(&dir, "ref.db").await;
    for d in [&a, &b] {
        let theirs = hub.version_vector().await.unwrap();
        let pages = pages_for(d, &theirs, 1 << 24).await;
        assert_eq!(pages.len(), 1, "one page per device");
        assert!(pages[0].len() > 1);
        hub.apply_remote(pages[0].clone()).await.unwrap();
        sync(d, &reference, 1 << 24).await;
    }
    let mut small = ReadingBatch::new();
    small.push("shared.v", T0 + 9_000_000, 42.0, None);
    a.append(small).await.unwrap();
    sync(&a, &hub, 1 << 24).await;
    sync(&a, &reference, 1 << 24).await;
    assert_eq!(hub.digest().await.unwrap(), reference.digest());
    assert_eq!(hub.verify_digest().await.unwrap(), reference.digest());
    assert_eq!(
        db.count("SELECT count(*) FROM {s}.readings").await,
        2 * 3 * 2_000 + 1
    );
    assert_eq!(
        db.count("SELECT count(*) FROM {s}.readings_default").await,
        2 * 3 * 1_000,
        "1990 is outside the partition window"
    );
    assert_rollups_exact(&db).await;
    for series in ["shared.v", "old0", "old1"] {
        let q = RangeQuery {
            series: series.into(),
            from: i64::MIN,
            to: i64::MAX,
            limit: 10_000,
            cursor: None,
        };
        let bits = |page: ReadingPage| -> Vec<(i64, u64)> {
            let mut v: Vec<_> = page
                .readings
                .iter()
                .map(|r| (r.ts, r.value.to_bits()))
                .collect();
            v.sort();
            v
        };
        let (got, want) = (
            bits(hub.range(&q).await.unwrap()),
            bits(reference.range(&q).await.unwrap()),
        );
        assert_eq!(got.len(), if series == "shared.v" { 6_001 } else { 3_000 });
        assert_eq!(got, want, "{series}");
    }
    hub.close().await;
    db.drop().await;
}
