//! Backups and point-in-time recovery on real SQLite files: a snapshot taken while ingest runs
//! restores to exactly the source's state at the snapshot's version vector; an as-of replay
//! equals as-of reads of the original; a truncated, foreign or corrupt file is refused with
//! nothing left behind.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kdelta_sync::backup::{self, BackupError, BackupHeader};
use kdelta_sync::*;
use serde_json::json;

const T0: u64 = 1_764_000_000_000;

fn batch(series: &str, from: i64, n: i64) -> ReadingBatch {
    let mut b = ReadingBatch::new();
    for i in 0..n {
        b.push(series, from + i * 1000, (from + i) as f64 * 0.5, Some("°C"));
    }
    b
}

/// Snapshots `store` and packs it into `dir/name`; returns the file and its header.
async fn backup_file(store: &Store, dir: &Path, name: &str) -> (PathBuf, BackupHeader) {
    let snap = dir.join(format!("{name}.snapshot.db"));
    let header = store.snapshot(&snap).await.unwrap();
    let file = dir.join(name);
    let out = std::fs::File::create(&file).unwrap();
    let mut last = 0;
    backup::pack(&header, &snap, out, |done| last = done).unwrap();
    assert_eq!(last, header.db_bytes, "progress reaches the whole database");
    std::fs::remove_file(&snap).unwrap();
    (file, header)
}

async fn restore(file: &Path, db: &Path) -> Result<BackupHeader, BackupError> {
    let header = backup::unpack(file, db, |_, _| {})?;
    backup::verify_unpacked(file, db, &header, StoreConfig::default()).await?;
    Ok(header)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_ingest_runs_restores_the_state_at_its_version_vector() {
    let dir = tempfile::tempdir().unwrap();
    let source = Store::open(dir.path().join("source.db"), StoreConfig::default())
        .await
        .unwrap();
    source.put("cfg/a", &json!({"v": 1})).await.unwrap();
    source
        .twin_create("device/x", Some(json!({"desired": {"n": 1}})))
        .await
        .unwrap();
    for i in 0..50 {
        source.append(batch("t", i * 100_000, 100)).await.unwrap();
    }
    // Ingest keeps running (readings and documents) while the backup is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (s, stop, written) = (source.clone(), stop.clone(), written.clone());
        tokio::spawn(async move {
            let mut i = 1_000i64;
            while !stop.load(Ordering::Relaxed) {
                s.append(batch("t", i * 100_000, 50)).await.unwrap();
                if i % 10 == 0 {
                    s.put("cfg/a", &json!({"v": i})).await.unwrap();
                }
                i += 1;
                written.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Wait until ingest is really running before the snapshot.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while written.load(Ordering::Relaxed) < 5 {
        assert!(std::time::Instant::now() < deadline, "ingest did not start");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let (file, header) = backup_file(&source, dir.path(), "live.kdbk").await;
    while written.load(Ordering::Relaxed) < header.changes + 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "ingest stalled after the backup"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    let restored_db = dir.path().join("restored.db");
    let checked = restore(&file, &restored_db).await.unwrap();
    assert_eq!(checked, header);
    // The source moved on; the backup holds exactly its state at the backup's vector.
    let now = source.version_vector();
    assert!(now.dominates(&header.version_vector) && now != header.version_vector);
    let at_backup = source.digest_at(&header.version_vector).await.unwrap();
    assert_eq!(at_backup.to_string(), header.digest);
    let restored = Store::open(&restored_db, StoreConfig::default())
        .await
        .unwrap();
    assert_eq!(restored.version_vector(), header.version_vector);
    assert_eq!(restored.digest(), at_backup);
    assert_eq!(restored.verify_digest().await.unwrap(), at_backup);
    assert_eq!(restored.actor(), source.actor());
    restored.close().await;
    source.close().await;
}

#[tokio::test]
async fn as_of_replay_equals_as_of_reads_of_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let (ta, tb) = (ManualTime::new(T0), ManualTime::new(T0));
    let a = Store::open_with_time(dir.path().join("a.db"), StoreConfig::default(), ta.clone())
        .await
        .unwrap();
    let b = Store::open_with_time(dir.path().join("b.db"), StoreConfig::default(), tb.clone())
        .await
        .unwrap();
    let mut appended: Vec<(Hlc, usize)> = Vec::new();
    let sync_b_into_a = async |a: &Store, b: &Store| {
        let changes = b
            .changes_since(&a.version_vector(), usize::MAX)
            .await
            .unwrap();
        a.apply_remote(changes).await.unwrap();
    };
    for step in 0..40u64 {
        ta.set(T0 + step * 1000);
        tb.set(T0 + step * 1000 + 500);
        let m = a
            .append(batch("a.temp", (step * 10_000) as i64, 5))
            .await
            .unwrap();
        appended.push((m.hlc, 5));
        let m = b
            .append(batch("b.temp", (step * 10_000) as i64, 3))
            .await
            .unwrap();
        appended.push((m.hlc, 3));
        // Concurrent writes to one key: siblings until one side sees the other.
        a.put("shared", &json!({"from": "a", "step": step}))
            .await
            .unwrap();
        b.put("shared", &json!({"from": "b", "step": step}))
            .await
            .unwrap();
        if step % 7 == 0 {
            a.put(&format!("only-a/{step}"), &json!(step))
                .await
                .unwrap();
        }
        if step == 3 {
            a.twin_create("device/t", Some(json!({"desired": {"n": 0}})))
                .await
                .unwrap();
        } else if step > 3 {
            a.twin_patch(
                "device/t",
                TwinPatch::Merge(json!({"reported": {"n": step}})),
            )
            .await
            .unwrap();
        }
        if step % 3 == 2 {
            sync_b_into_a(&a, &b).await;
        }
        if step == 25 {
            a.delete("only-a/7").await.unwrap();
        }
    }
    sync_b_into_a(&a, &b).await;

    for at in [
        Hlc::end_of_ms(T0 + 2_500),
        Hlc::end_of_ms(T0 + 17_700),
        Hlc::end_of_ms(T0 + 26_000),
        Hlc::end_of_ms(T0 + 100_000),
    ] {
        let target = dir.path().join(format!("pitr-{}.db", at.ms()));
        let outcome = backup::replay_as_of(&a, &target, at, None, |_| {})
            .await
            .unwrap();
        let expected_vv = a.version_vector_as_of(at).await.unwrap();
        assert_eq!(outcome.version_vector, {
            let mut v = expected_vv.clone();
            v.set(outcome.actor, outcome.version_vector.get(&outcome.actor));
            v
        });
        assert_ne!(outcome.actor, a.actor(), "a new identity by default");
        let r = Store::open(&target, StoreConfig::default()).await.unwrap();
        assert_eq!(r.digest(), a.digest_at(&expected_vv).await.unwrap());
        assert_eq!(r.verify_digest().await.unwrap(), r.digest());
        // Documents: the restored store's current state is the original's as-of state.
        let keys: Vec<String> = std::iter::once("shared".to_owned())
            .chain((0..40).step_by(7).map(|s| format!("only-a/{s}")))
            .collect();
        for key in &keys {
            let then = a.get_as_of(key, AsOf::Hlc(at)).await.ok().flatten();
            let now = r.get(key).await.unwrap();
            assert_eq!(
                then.as_ref()
                    .map(|s| (&s.winner.value, s.winner.hlc, s.siblings)),
                now.as_ref()
                    .map(|s| (&s.winner.value, s.winner.hlc, s.siblings)),
                "{key} at {at}"
            );
        }
        // Twins: the merged value as of then.
        let then = a.twin_get_as_of("device/t", AsOf::Hlc(at)).await.ok();
        let now = r.twin_get("device/t").await.unwrap().map(|t| t.value);
        assert_eq!(then, now, "twin at {at}");
        // Readings: exactly those of changes stamped at or before the bound.
        let expected: usize = appended
            .iter()
            .filter(|(h, _)| *h <= at)
            .map(|(_, n)| n)
            .sum();
        let mut held = 0;
        for series in ["a.temp", "b.temp"] {
            match r
                .range(&RangeQuery {
                    series: series.into(),
                    from: 0,
                    to: i64::MAX,
                    limit: 100_000,
                    cursor: None,
                })
                .await
            {
                Ok(page) => held += page.readings.len(),
                Err(StoreError::UnknownSeries(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(held, expected, "readings at {at}");
        r.close().await;
    }

    // --same-identity keeps the actor, and the store continues its own sequence.
    let target = dir.path().join("pitr-same.db");
    let at = Hlc::end_of_ms(T0 + 10_000);
    let outcome = backup::replay_as_of(&a, &target, at, Some(a.actor()), |_| {})
        .await
        .unwrap();
    assert_eq!(outcome.actor, a.actor());
    let r = Store::open(&target, StoreConfig::default()).await.unwrap();
    let next = r.append(batch("a.temp", 9_999_000, 1)).await.unwrap();
    assert_eq!(next.seq, outcome.version_vector.get(&a.actor()) + 1);
    r.close().await;
    a.close().await;
    b.close().await;
}

/// Point-in-time recovery of a store retention pruned: the changes it emptied travel with
/// their body hash (`Seal::body`), partly pruned ones with their unit hashes; the replay
/// takes both, its vector is the original's as of the bound, and every seal checks.
#[tokio::test]
async fn as_of_replay_carries_changes_retention_pruned() {
    const DAY: u64 = 86_400_000;
    let dir = tempfile::tempdir().unwrap();
    let time = ManualTime::new(T0);
    let a = Store::open_with_time(
        dir.path().join("a.db"),
        StoreConfig::default(),
        time.clone(),
    )
    .await
    .unwrap();
    for step in 0..10u64 {
        time.set(T0 + step * 1000);
        let mut b = batch("gone", (T0 + step * 60_000) as i64, 3);
        if step % 2 == 0 {
            // Half the changes also hold a series kept forever: pruned in part only.
            b.push("kept.x", (T0 + step * 60_000) as i64, 1.0, None);
        }
        a.append(b).await.unwrap();
    }
    let policy = RetentionPolicy {
        readings_max_age_ms: Some(DAY),
        series: vec![SeriesRetention {
            pattern: "kept.*".into(),
            max_age_ms: None,
        }],
        ..RetentionPolicy::default()
    };
    let report = a.prune(&policy, (T0 + 2 * DAY) as i64, 100).await.unwrap();
    assert_eq!(report.units, 10, "{report:?}");
    let served = a
        .changes_since(&VersionVector::new(), usize::MAX)
        .await
        .unwrap();
    let wholly = served
        .iter()
        .filter(|c| c.seal.as_ref().is_some_and(|s| s.body.is_some()))
        .count();
    assert_eq!(wholly, 5, "the changes without kept.x");

    let at = Hlc::end_of_ms(T0 + 6_500);
    let target = dir.path().join("pitr.db");
    let outcome = backup::replay_as_of(&a, &target, at, None, |_| {})
        .await
        .unwrap();
    let expected = a.version_vector_as_of(at).await.unwrap();
    assert_eq!(expected.get(&a.actor()), 7);
    assert_eq!(outcome.version_vector.get(&a.actor()), 7);
    let r = Store::open(&target, StoreConfig::default()).await.unwrap();
    assert_eq!(r.digest(), a.digest_at(&expected).await.unwrap());
    r.close().await;
    let report = Store::verify_file(&target).await.unwrap();
    assert!(report.ok(), "{:?}", report.failures);
    a.close().await;
}

#[tokio::test]
async fn restore_refuses_truncated_foreign_and_corrupt_files_leaving_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let source = Store::open(dir.path().join("s.db"), StoreConfig::default())
        .await
        .unwrap();
    for i in 0..20 {
        source.append(batch("t", i * 1_000_000, 500)).await.unwrap();
    }
    let (file, header) = backup_file(&source, dir.path(), "good.kdbk").await;
    let bytes = std::fs::read(&file).unwrap();
    let out = dir.path().join("out.db");

    // Truncated anywhere: inside the header, at the start of the data, in the middle, one
    // byte short.
    for cut in [12, 100, bytes.len() / 2, bytes.len() - 1] {
        let bad = dir.path().join(format!("cut-{cut}.kdbk"));
        std::fs::write(&bad, &bytes[..cut]).unwrap();
        let err = restore(&bad, &out).await.unwrap_err();
        assert!(
            matches!(err, BackupError::Truncated { .. }),
            "cut at {cut}: {err:?}"
        );
        assert!(
            err.to_string().contains(&*bad.display().to_string()),
            "{err}"
        );
        assert!(!out.exists(), "nothing written for a file cut at {cut}");
    }
    let err = restore(&dir.path().join("cut-100.kdbk"), &out)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");

    // Foreign: the store's own SQLite file, and a text file.
    source.close().await;
    for foreign in [dir.path().join("s.db"), {
        let p = dir.path().join("notes.txt");
        std::fs::write(&p, "hello").unwrap();
        p
    }] {
        let err = restore(&foreign, &out).await.unwrap_err();
        assert!(matches!(err, BackupError::NotABackup { .. }), "{err:?}");
        assert!(err.to_string().contains("is not a kdelta backup"), "{err}");
        assert!(!out.exists());
    }

    // Corrupt: one byte flipped inside the compressed database.
    let mut flipped = bytes.clone();
    let at = bytes.len() - 200;
    flipped[at] ^= 0x55;
    let bad = dir.path().join("flipped.kdbk");
    std::fs::write(&bad, &flipped).unwrap();
    let err = restore(&bad, &out).await.unwrap_err();
    assert!(matches!(err, BackupError::Corrupt { .. }), "{err:?}");
    assert!(!out.exists());

    // A consistent file whose header lies about the digest: caught by the recomputation.
    let mut lying = header.clone();
    lying.digest = "ab".repeat(32);
    let snap = dir.path().join("again.db");
    let reopened = Store::open(dir.path().join("s.db"), StoreConfig::default())
        .await
        .unwrap();
    let fresh = reopened.snapshot(&snap).await.unwrap();
    reopened.close().await;
    lying.db_bytes = fresh.db_bytes;
    lying.db_blake3 = fresh.db_blake3.clone();
    let liar = dir.path().join("liar.kdbk");
    backup::pack(&lying, &snap, std::fs::File::create(&liar).unwrap(), |_| {}).unwrap();
    let err = restore(&liar, &out).await.unwrap_err();
    assert!(err.to_string().contains("digest"), "{err}");

    // And the good file still restores.
    restore(&file, &dir.path().join("fine.db")).await.unwrap();
}
