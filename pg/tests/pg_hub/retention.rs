//! Retention on a PostgreSQL hub (`pg/src/retention.rs`): readings months in the past
//! pruned by age with the embedded store's rule — whole month partitions dropped, the
//! default partition pruned by delete, a per-series rule keeping longer, rollups kept past
//! their raw readings and pruned by their own age — while the change log still serves every
//! change and the hub shows the digest of a SQLite replica that pruned the same changes
//! under the same policy. One pass at a time across replicas, and applies meanwhile. The
//! rollups of pruned readings: kept and served by a pruning hub, stored and folded by a hub
//! receiving pruned changes, and kept through a time correction's recompute.

use super::*;

const DAY: i64 = 86_400_000;

/// What the tests prune with: raw readings 90 days (`keep.*` forever), rollups 400 days.
fn policy() -> RetentionPolicy {
    RetentionPolicy {
        readings_max_age_ms: Some(90 * DAY as u64),
        series: vec![SeriesRetention {
            pattern: "keep.*".into(),
            max_age_ms: None,
        }],
        rollups_max_age_ms: Some(400 * DAY as u64),
        ..RetentionPolicy::default()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `n` readings of `series` one second apart from `from`, as one change.
async fn readings(s: &Store, series: &str, from: i64, n: i64) {
    let mut b = ReadingBatch::new();
    for i in 0..n {
        b.push(series, from + i * 1000, (i % 17) as f64 + 0.25, Some("°C"));
    }
    s.append(b).await.unwrap();
}

/// A device with readings months in the past: `gh.temp` 500, 200, 150 and 20 days ago
/// (several batches), `keep.me` 200 days ago (the month of which must stay), one change
/// holding both series, a batch straddling the 90-day cutoff (kept whole), and a reading
/// of 1970 (default partition).
async fn history(s: &Store, now: i64) {
    for days in [500, 200, 150, 20] {
        for k in 0..3 {
            readings(s, "gh.temp", now - days * DAY + k * 600_000, 250).await;
        }
    }
    readings(s, "keep.me", now - 200 * DAY + 3_600_000, 120).await;
    let mut b = ReadingBatch::new();
    b.push("gh.temp", now - 95 * DAY, 1.0, None);
    b.push("gh.temp", now - 85 * DAY, 2.0, None);
    s.append(b).await.unwrap();
    let mut b = ReadingBatch::new();
    b.push("gh.temp", now - 200 * DAY + 7_200_000, 3.0, None);
    b.push("keep.me", now - 200 * DAY + 7_200_000, 4.0, None);
    s.append(b).await.unwrap();
    let mut b = ReadingBatch::new();
    b.push("gh.temp", 65_000, 5.0, None);
    s.append(b).await.unwrap();
}

/// The partition holding the readings of `series` at `ts`.
async fn partition_of(db: &TestDb, series: &str, ts: i64) -> String {
    let sql = format!(
        "SELECT c.relname::text FROM {s}.readings r JOIN {s}.series x ON x.id = r.series_id \
         JOIN pg_class c ON c.oid = r.tableoid WHERE x.name = $1 AND r.ts = $2 LIMIT 1",
        s = db.schema
    );
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(series)
        .bind(ts)
        .fetch_one(&db.admin)
        .await
        .unwrap()
}

/// The attached partitions of the hub's `readings`.
async fn partitions(db: &TestDb) -> Vec<String> {
    let sql = format!(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = '{}.readings'::regclass ORDER BY 1",
        db.schema
    );
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_all(&db.admin)
        .await
        .unwrap()
}

/// Raw readings of `series` held in `[from, to)`.
async fn raw(db: &TestDb, series: &str, from: i64, to: i64) -> i64 {
    let sql = format!(
        "SELECT count(*) FROM {s}.readings r JOIN {s}.series x ON x.id = r.series_id \
         WHERE x.name = $1 AND r.ts >= $2 AND r.ts < $3",
        s = db.schema
    );
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(series)
        .bind(from)
        .bind(to)
        .fetch_one(&db.admin)
        .await
        .unwrap()
}

/// Every change `log` serves, from nothing; asserts each actor's seqs are 1..=max.
pub(super) async fn all_changes(log: &impl ChangeLog) -> Vec<Change> {
    let changes: Vec<Change> = pages_for(log, &VersionVector::new(), 1 << 16)
        .await
        .into_iter()
        .flatten()
        .collect();
    let vector = log.version_vector().await.unwrap();
    for (actor, max) in vector.iter() {
        // The survivor of a log run (a SQLite store compacted it) stands for its seqs.
        let seqs: Vec<u64> = changes
            .iter()
            .filter(|c| c.actor == actor)
            .flat_map(|c| c.first_seq()..=c.seq)
            .collect();
        assert_eq!(seqs, (1..=max).collect::<Vec<_>>(), "dense log of {actor}");
    }
    changes
}

#[tokio::test]
async fn a_pg_hub_prunes_by_age_drops_whole_months_and_agrees_with_sqlite() {
    let Some(db) = TestDb::new("retention").await else {
        return;
    };
    let now = now_ms();
    let cutoff = readings_cutoff(&policy(), "gh.temp", now).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let device = device(&dir, "device.db").await;
    history(&device, now).await;
    let hub = db.replica().await;
    let replica = super::device(&dir, "replica.db").await;
    // Compared row for row with the hub, which keeps one row per change.
    replica.set_log_runs(false);
    sync(&device, &hub, 4_000).await;
    sync(&device, &replica, 1 << 20).await;
    let served_before = all_changes(&hub).await.len();

    let p500 = partition_of(&db, "gh.temp", now - 500 * DAY).await;
    let p200 = partition_of(&db, "keep.me", now - 200 * DAY + 3_600_000).await;
    let p150 = partition_of(&db, "gh.temp", now - 150 * DAY).await;
    let p20 = partition_of(&db, "gh.temp", now - 20 * DAY).await;
    assert_eq!(
        partition_of(&db, "gh.temp", 65_000).await,
        "readings_default"
    );
    for p in [&p500, &p200, &p150, &p20] {
        assert_ne!(
            p, "readings_default",
            "months near the present get partitions"
        );
    }
    let agg = |from: i64, to: i64| AggregateQuery {
        series: "gh.temp".into(),
        from,
        to,
        bucket_ms: DAY,
    };
    let before = hub
        .aggregate(&agg(now - 210 * DAY, now - 140 * DAY))
        .await
        .unwrap();

    let sqlite = replica.prune(&policy(), now, 100).await.unwrap();
    let pass = hub.prune(&policy(), now, 100).await.unwrap();
    assert!(pass.ran);
    assert_eq!(
        pass.pruned.readings, sqlite.readings,
        "{pass:?} vs {sqlite:?}"
    );
    assert_eq!(pass.pruned.units, sqlite.units);
    assert_eq!(pass.pruned.readings, 3 * 250 * 3 + 1 + 1, "{pass:?}");
    assert!(pass.pruned.steps > 3, "small transactions: {pass:?}");

    // Whole months older than the cutoff went as partitions; the month a keep.* series
    // has rows in stayed (its gh.temp rows deleted); the present months stayed.
    let attached = partitions(&db).await;
    for gone in [&p500, &p150] {
        assert!(!attached.contains(gone), "{gone} dropped: {attached:?}");
        assert!(pass.partitions_dropped.contains(gone), "{pass:?}");
    }
    for kept in [&p200, &p20] {
        assert!(attached.contains(kept), "{kept} kept: {attached:?}");
    }
    assert!(attached.contains(&"readings_default".to_string()));
    assert_eq!(raw(&db, "gh.temp", i64::MIN, now - 95 * DAY).await, 0);
    assert_eq!(raw(&db, "keep.me", i64::MIN, i64::MAX).await, 121);
    // The batch straddling the cutoff stays whole; younger readings stay.
    assert_eq!(raw(&db, "gh.temp", now - 95 * DAY, cutoff).await, 1);
    assert_eq!(raw(&db, "gh.temp", cutoff, i64::MAX).await, 3 * 250 + 1);

    // Rollups answer over the pruned range, as SQLite's do; those older than 400 days went.
    let after = hub
        .aggregate(&agg(now - 210 * DAY, now - 140 * DAY))
        .await
        .unwrap();
    assert_eq!(after, before);
    assert_eq!(
        after,
        replica
            .aggregate(&agg(now - 210 * DAY, now - 140 * DAY))
            .await
            .unwrap()
    );
    assert!(after.iter().map(|b| b.count).sum::<u64>() >= 3 * 250 * 2);
    assert!(
        hub.aggregate(&agg(now - 510 * DAY, now - 490 * DAY))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(pass.pruned.rollups > 0);
    assert_eq!(pass.pruned.rollups, sqlite.rollups);

    // Every change is still served, vectors dense; the same digest as the SQLite replica
    // and as recomputed from what is served.
    let served = all_changes(&hub).await;
    assert_eq!(served.len(), served_before);
    assert_eq!(hub.digest().await.unwrap(), replica.digest());
    assert_eq!(hub.verify_digest().await.unwrap(), replica.digest());
    assert_eq!(
        served,
        all_changes(&replica).await,
        "served as SQLite serves them"
    );
    // Those pruned wholly travel with their body hash, not one unit hash per series.
    let wholly = served
        .iter()
        .filter_map(|c| c.seal.as_ref())
        .filter(|s| s.body.is_some())
        .inspect(|s| assert!(s.pruned.is_empty()))
        .count();
    assert!(wholly > 0, "some changes were pruned wholly");

    // A device learning from the pruned hub checks every seal and agrees.
    let late = super::device(&dir, "late.db").await;
    // Compared row for row with the hub, which keeps one row per change.
    late.set_log_runs(false);
    sync(&hub, &late, 3_000).await;
    assert_eq!(late.digest(), hub.digest().await.unwrap());
    late.prune(&policy(), now, 100).await.unwrap();
    assert_eq!(late.digest(), hub.digest().await.unwrap());

    // A second pass finds nothing; the hub still agrees.
    let again = hub.prune(&policy(), now, 100).await.unwrap();
    assert_eq!(
        (again.pruned.readings, again.pruned.units),
        (0, 0),
        "{again:?}"
    );
    assert!(again.partitions_dropped.is_empty());
    assert_eq!(hub.verify_digest().await.unwrap(), replica.digest());

    hub.close().await;
    db.drop().await;
}

#[tokio::test]
async fn one_replica_prunes_at_a_time_and_applies_go_on_meanwhile() {
    let Some(db) = TestDb::new("retention_replicas").await else {
        return;
    };
    let now = now_ms();
    let dir = tempfile::tempdir().unwrap();
    let device = device(&dir, "device.db").await;
    history(&device, now).await;
    let (r1, r2) = (db.replica().await, db.replica().await);
    sync(&device, &r1, 1 << 20).await;

    // While the lock is held elsewhere, a pass does nothing.
    let mut holder = db.admin.begin().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT pg_advisory_xact_lock(hashtext('{}' || '/kdelta/retention'))",
        db.schema
    )))
    .execute(&mut *holder)
    .await
    .unwrap();
    let skipped = r2.prune(&policy(), now, 100).await.unwrap();
    assert!(!skipped.ran);
    assert_eq!(skipped.pruned, PruneReport::default());
    holder.rollback().await.unwrap();

    // A second device syncs old and new readings through r2 while both replicas prune.
    let other = super::device(&dir, "other.db").await;
    history(&other, now).await;
    let mut b = ReadingBatch::new();
    for i in 0..500 {
        b.push("live.x", now - 1_000 * i, i as f64, None);
    }
    other.append(b).await.unwrap();
    let ingest = async {
        for page in pages_for(&other, &VersionVector::new(), 3_000).await {
            r2.apply_remote(page).await.unwrap();
        }
    };
    let policy = policy();
    let (a, b, ()) = tokio::join!(
        r1.prune(&policy, now, 100),
        r2.prune(&policy, now, 100),
        ingest
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.ran || b.ran);
    // What a pass missed (readings that arrived after it looked), the next one takes.
    let last = r1.prune(&policy, now, 100).await.unwrap();

    // A SQLite replica holding the same changes under the same policy: same digest, and
    // each unit pruned once in all (no unit counted by two passes).
    let reference = super::device(&dir, "reference.db").await;
    // Compared row for row with the hub, which keeps one row per change.
    reference.set_log_runs(false);
    sync(&device, &reference, 1 << 20).await;
    sync(&other, &reference, 1 << 20).await;
    let want = reference.prune(&policy, now, 100).await.unwrap();
    let units = a.pruned.units + b.pruned.units + last.pruned.units;
    assert_eq!(units, want.units, "{a:?} {b:?} {last:?} {want:?}");
    assert_eq!(
        a.pruned.readings + b.pruned.readings + last.pruned.readings,
        want.readings
    );
    assert_eq!(r1.digest().await.unwrap(), reference.digest());
    assert_eq!(r2.verify_digest().await.unwrap(), reference.digest());
    assert_eq!(
        all_changes(&r2).await.len(),
        all_changes(&reference).await.len()
    );
    assert_eq!(raw(&db, "live.x", now - 600_000, now + 1).await, 500);

    r1.close().await;
    r2.close().await;
    db.drop().await;
}

#[tokio::test]
async fn a_pass_that_stopped_after_detaching_is_finished_by_the_next() {
    let Some(db) = TestDb::new("retention_detached").await else {
        return;
    };
    let now = now_ms();
    let dir = tempfile::tempdir().unwrap();
    let device = device(&dir, "device.db").await;
    history(&device, now).await;
    let hub = db.replica().await;
    sync(&device, &hub, 1 << 20).await;
    let p200 = partition_of(&db, "keep.me", now - 200 * DAY + 3_600_000).await;
    // A pass that stopped right after the detach: the table is out of `readings`, its
    // rows (units not pruned yet, and keep.me's, which stay) still in it.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER TABLE {s}.readings DETACH PARTITION {s}.{p200}",
        s = db.schema
    )))
    .execute(&db.admin)
    .await
    .unwrap();
    let pass = hub.prune(&policy(), now, 100).await.unwrap();
    let exists: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT to_regclass('{}.{p200}')::text",
        db.schema
    )))
    .fetch_one(&db.admin)
    .await
    .unwrap();
    assert_eq!(exists, None, "{pass:?}");
    // Its live units went back into `readings` first and were pruned there: nothing lost,
    // nothing held twice, the same digest as SQLite.
    let replica = super::device(&dir, "replica.db").await;
    // Compared row for row with the hub, which keeps one row per change.
    replica.set_log_runs(false);
    sync(&device, &replica, 1 << 20).await;
    let want = replica.prune(&policy(), now, 100).await.unwrap();
    hub.prune(&policy(), now, 100).await.unwrap();
    assert_eq!(hub.digest().await.unwrap(), replica.digest(), "{want:?}");
    assert_eq!(hub.verify_digest().await.unwrap(), replica.digest());
    assert_eq!(
        raw(&db, "keep.me", i64::MIN, i64::MAX).await,
        121,
        "keep.me of the detached month came back"
    );
    hub.close().await;
    db.drop().await;
}

/// Hourly aggregates of `series` over the last 510 days.
fn hours(series: &str, now: i64) -> AggregateQuery {
    AggregateQuery {
        series: series.into(),
        from: now - 510 * DAY,
        to: now,
        bucket_ms: 3_600_000,
    }
}

#[tokio::test]
async fn pruned_changes_carry_the_rollups_of_their_pruned_readings_through_a_pg_hub() {
    let (Some(db), Some(db2)) = (
        TestDb::new("retention_rollups").await,
        TestDb::new("retention_rollups_received").await,
    ) else {
        return;
    };
    let now = now_ms();
    let dir = tempfile::tempdir().unwrap();
    let device = device(&dir, "device.db").await;
    // Compared row for row with the pruning hub, which keeps one row per change.
    device.set_log_runs(false);
    // The history of the test above without its units of one or two readings in minutes of
    // their own, whose rollups are not kept (too sparse: `group_pruned_rollups`): every
    // pruned unit here carries its rollups.
    for days in [500, 200, 150, 20] {
        for k in 0..3 {
            readings(&device, "gh.temp", now - days * DAY + k * 600_000, 250).await;
        }
    }
    readings(&device, "keep.me", now - 200 * DAY + 3_600_000, 120).await;
    let mut both = ReadingBatch::new();
    for i in 0..60i64 {
        let t = now - 200 * DAY + 7_200_000 + i * 1000;
        both.push("gh.temp", t, i as f64 * 0.5, None);
        both.push("keep.me", t, i as f64 * 0.25, None);
    }
    device.append(both).await.unwrap();
    // One hub takes the raw readings and prunes them itself; the device prunes too.
    let pruning = db.replica().await;
    sync(&device, &pruning, 4_000).await;
    assert!(pruning.prune(&policy(), now, 100).await.unwrap().ran);
    device.prune(&policy(), now, 100).await.unwrap();
    // Another hub receives the device's changes already pruned, with their rollups.
    let received = db2.replica().await;
    sync(&device, &received, 4_000).await;
    // A fresh device learns from the pruning hub only.
    let fresh = super::device(&dir, "fresh.db").await;
    sync(&pruning, &fresh, 4_000).await;

    let want = (
        device.digest(),
        device.aggregate(&hours("gh.temp", now)).await.unwrap(),
        device.aggregate(&hours("keep.me", now)).await.unwrap(),
    );
    assert!(
        want.1.iter().any(|b| b.start < now - 95 * DAY),
        "rollups over the pruned range"
    );
    assert_eq!(pruning.digest().await.unwrap(), want.0);
    assert_eq!(received.digest().await.unwrap(), want.0);
    assert_eq!(received.verify_digest().await.unwrap(), want.0);
    assert_eq!(fresh.digest(), want.0);
    assert_eq!(
        pruning.aggregate(&hours("gh.temp", now)).await.unwrap(),
        want.1,
        "pruning hub"
    );
    assert_eq!(
        received.aggregate(&hours("gh.temp", now)).await.unwrap(),
        want.1,
        "hub that received pruned changes"
    );
    assert_eq!(
        fresh.aggregate(&hours("gh.temp", now)).await.unwrap(),
        want.1,
        "fresh device"
    );
    assert_eq!(
        received.aggregate(&hours("keep.me", now)).await.unwrap(),
        want.2
    );
    assert_eq!(
        fresh.aggregate(&hours("keep.me", now)).await.unwrap(),
        want.2
    );

    // Both hubs serve what the device serves, rollups of pruned readings included, and
    // nothing is requested twice.
    let served = all_changes(&device).await;
    assert!(served.iter().any(|c| !c.pruned_rollups.is_empty()));
    assert_eq!(all_changes(&pruning).await, served);
    assert_eq!(all_changes(&received).await, served);
    let vector = received.version_vector().await.unwrap();
    assert!(pages_for(&device, &vector, 1 << 20).await.is_empty());
    assert_eq!(
        received.apply_remote(served.clone()).await.unwrap().applied,
        0
    );
    assert_eq!(
        received.aggregate(&hours("gh.temp", now)).await.unwrap(),
        want.1,
        "once only"
    );

    pruning.close().await;
    received.close().await;
    db.drop().await;
    db2.drop().await;
}

/// One-reading changes, as the agent's one-second batching makes them, pruned by the hub:
/// their rollups go per minute with the first change of each minute it pruned, and a device
/// that learns from the hub afterwards answers the same per-minute aggregates.
#[tokio::test]
async fn a_pg_hub_keeps_the_rollups_of_one_reading_changes_per_minute() {
    let Some(db) = TestDb::new("retention_one_a_second").await else {
        return;
    };
    let now = now_ms();
    let from = (now - 200 * DAY) / 60_000 * 60_000 + 30_000;
    let dir = tempfile::tempdir().unwrap();
    let device = device(&dir, "device.db").await;
    for i in 0..150i64 {
        let mut b = ReadingBatch::new();
        b.push("gh.temp", from + i * 1000, (i % 13) as f64 * 0.5, None);
        device.append(b).await.unwrap();
    }
    let minutes = AggregateQuery {
        series: "gh.temp".into(),
        from: from - 60_000,
        to: from + 600_000,
        bucket_ms: 60_000,
    };
    let want = device.aggregate(&minutes).await.unwrap();
    assert_eq!(want.len(), 3);
    let hub = db.replica().await;
    sync(&device, &hub, 4_000).await;
    // Steps of 40 readings: minutes split between steps.
    assert!(hub.prune(&policy(), now, 40).await.unwrap().ran);
    let served = all_changes(&hub).await;
    let carriers = served
        .iter()
        .filter(|c| !c.pruned_rollups.is_empty())
        .count();
    assert!((3..=8).contains(&carriers), "{carriers} carriers");
    let fresh = super::device(&dir, "fresh.db").await;
    sync(&hub, &fresh, 4_000).await;
    assert_eq!(fresh.aggregate(&minutes).await.unwrap(), want);
    assert_eq!(hub.aggregate(&minutes).await.unwrap(), want);
    assert_eq!(fresh.digest(), hub.digest().await.unwrap());
    hub.close().await;
    db.drop().await;
}

/// A correction moving a device's readings into a minute whose other readings it had
/// pruned before the hub received them: the hub recomputes its rows of that minute from the
/// readings and folds the kept rollups of the pruned ones back (`rollups.rs`).
#[tokio::test]
async fn a_correction_into_a_pruned_minute_keeps_the_rollups_of_its_pruned_readings() {
    let Some(db) = TestDb::new("retention_correction").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    let minute = (now - 3 * DAY) / 60_000 * 60_000;
    let pi = Store::open_with_time(
        dir.path().join("pi.db"),
        StoreConfig::default(),
        ManualTime::new(65_000),
    )
    .await
    .unwrap();
    pi.time_reference().set_local_trusted(false);
    let boot = BootId([0x42; 16]);
    let mut vouched = ReadingBatch::new();
    for i in 0..10i64 {
        vouched.push("pi.temp", minute + i * 1_000, i as f64, None);
    }
    pi.append(vouched).await.unwrap();
    let mut untrusted = ReadingBatch::new();
    for i in 0..5i64 {
        untrusted.push("pi.temp", 65_000 + i * 1_000, 100.0 + i as f64, None);
    }
    untrusted.timing = Some(ReadingTiming {
        boot_id: boot,
        offset_ms: 5_000,
    });
    pi.append(untrusted).await.unwrap();
    let keep_a_day = RetentionPolicy {
        readings_max_age_ms: Some(DAY as u64),
        ..RetentionPolicy::default()
    };
    assert_eq!(pi.prune(&keep_a_day, now, 1000).await.unwrap().readings, 10);
    let hub = db.replica().await;
    sync(&pi, &hub, 1 << 20).await;
    // The boot clock's 60 s was 30 s into that minute.
    pi.correct_reading_times(boot, minute - 30_000, TimeBasis::LocalClock)
        .await
        .unwrap()
        .expect("a correction");
    sync(&pi, &hub, 1 << 20).await;
    let q = AggregateQuery {
        series: "pi.temp".into(),
        from: minute,
        to: minute + 60_000,
        bucket_ms: 60_000,
    };
    let want = pi.aggregate(&q).await.unwrap();
    assert_eq!(want.iter().map(|b| b.count).collect::<Vec<_>>(), [15]);
    assert_eq!(hub.aggregate(&q).await.unwrap(), want);
    assert_eq!(hub.digest().await.unwrap(), pi.digest());
    hub.close().await;
    db.drop().await;
}

/// A device compacted a log run (`kdelta_sync` `log_runs.rs`) of changes the hub had only
/// part of: the hub takes the run's last change in place of the rest, as a SQLite store
/// does, serves it on trimmed to what each peer lacks, and a device that syncs from the hub
/// alone ends with the source's vector and digest, its log verifying.
#[tokio::test]
async fn a_pg_hub_takes_a_log_run_and_serves_it_on() {
    let Some(db) = TestDb::new("log_runs").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let source = device(&dir, "source.db").await;
    let now = T0 + 10 * DAY;
    for m in 0..10 {
        readings(&source, "gh.temp", T0 + m * 60_000, 3).await; // seqs 1..=10: pruned below
    }
    readings(&source, "gh.temp", now - 60_000, 3).await; // seq 11: kept
    let hub = db.replica().await;
    let first_three: Vec<Change> = source
        .changes_since(&VersionVector::new(), usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .take(3)
        .collect();
    hub.apply_remote(first_three).await.unwrap();

    let policy = RetentionPolicy {
        readings_max_age_ms: Some(DAY as u64),
        rollups_max_age_ms: Some(2 * DAY as u64),
        ..RetentionPolicy::default()
    };
    let report = source.prune(&policy, now, 100).await.unwrap();
    assert_eq!(report.changes_compacted, 9, "{report:?}");
    let me = source.actor();
    let mut held = VersionVector::new();
    held.set(me, 3);
    let served = source.changes_since(&held, usize::MAX).await.unwrap();
    assert_eq!(
        served
            .iter()
            .map(|c| (c.seq, c.first_seq()))
            .collect::<Vec<_>>(),
        vec![(10, 4), (11, 11)]
    );
    hub.apply_remote(served).await.unwrap();
    assert_eq!(hub.version_vector().await.unwrap(), source.version_vector());
    // Under the same policy the hub holds what the source holds.
    hub.prune(&policy, now, 100).await.unwrap();
    assert_eq!(hub.digest().await.unwrap(), source.digest());

    // Served on: from nothing, the run from 4; from seq 5, the rest of it.
    let from_hub = hub
        .changes_since(&VersionVector::new(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(
        from_hub
            .iter()
            .map(|c| (c.seq, c.first_seq()))
            .collect::<Vec<_>>(),
        vec![(1, 1), (2, 2), (3, 3), (10, 4), (11, 11)]
    );
    held.set(me, 5);
    let rest = hub.changes_since(&held, usize::MAX).await.unwrap();
    assert_eq!((rest[0].seq, rest[0].first_seq()), (10, 6));
    let fresh = device(&dir, "fresh.db").await;
    fresh.apply_remote(from_hub).await.unwrap();
    assert_eq!(fresh.version_vector(), source.version_vector());
    assert_eq!(fresh.digest(), source.digest());
    let path = fresh.path().to_owned();
    fresh.close().await;
    let report = Store::verify_file(&path).await.unwrap();
    assert!(report.ok(), "{:?}", report.failures);
    assert_eq!(report.compacted, 6, "seqs 4..=9 stand in the run");
    db.drop().await;
}
