//! Retention on real SQLite files with an injected clock (`now` is an argument of
//! `Store::prune`): raw readings by age with per-series rules, batches straddling the cutoff
//! kept whole, rollups answering aggregates over pruned ranges (and pruned later by their own
//! age), counters and digest exact across a reopen, small steps, and sync with retention:
//! pruned changes are still served (version vectors stay dense) and replicas with the same
//! policy converge to equal digests.

use kdelta_sync::*;

const MIN: i64 = 60_000;
const DAY: i64 = 86_400_000;
const T0: i64 = 1_764_000_000_000 / DAY * DAY;

async fn open(dir: &tempfile::TempDir, name: &str) -> Store {
    Store::open(dir.path().join(name), StoreConfig::default())
        .await
        .unwrap()
}

/// `n` readings of `series` one second apart from `from`, as one change.
async fn batch(s: &Store, series: &str, from: i64, n: i64) {
    let mut b = ReadingBatch::new();
    for i in 0..n {
        b.push(series, from + i * 1000, (from / 1000 + i) as f64, Some("u"));
    }
    s.append(b).await.unwrap();
}

async fn raw(s: &Store, series: &str) -> Vec<i64> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = s
            .range(&RangeQuery {
                series: series.into(),
                from: 0,
                to: i64::MAX,
                limit: 10_000,
                cursor: cursor.clone(),
            })
            .await
            .unwrap();
        out.extend(page.readings.iter().map(|r| r.ts));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

async fn count_in(s: &Store, series: &str, from: i64, to: i64) -> u64 {
    s.aggregate(&AggregateQuery {
        series: series.into(),
        from,
        to,
        bucket_ms: 60 * MIN,
    })
    .await
    .unwrap()
    .iter()
    .map(|b| b.count)
    .sum()
}

fn policy(days: i64) -> RetentionPolicy {
    RetentionPolicy {
        readings_max_age_ms: Some((days * DAY) as u64),
        series: vec![SeriesRetention {
            pattern: "keep.*".into(),
            max_age_ms: None,
        }],
        rollups_max_age_ms: Some((30 * DAY) as u64),
        ..RetentionPolicy::default()
    }
}

#[tokio::test]
async fn raw_readings_go_by_age_per_series_rules_and_rollups_still_answer() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, "a.db").await;
    // Day 0: two batches of gh.temp and one of keep.me; day 9: a batch straddling the
    // day-5 cutoff is impossible, so straddle the cutoff of "now = day 10 + 5 min" instead.
    batch(&s, "gh.temp", T0, 120).await;
    batch(&s, "gh.temp", T0 + 10 * MIN, 120).await;
    batch(&s, "keep.me", T0, 60).await;
    let cutoff = T0 + 5 * DAY;
    batch(&s, "gh.temp", cutoff - 30_000, 60).await; // straddles the cutoff
    batch(&s, "gh.temp", T0 + 9 * DAY, 30).await;
    let before = s.stats().await.unwrap();
    assert_eq!(before.readings, 120 + 120 + 60 + 60 + 30);

    let report = s.prune(&policy(5), T0 + 10 * DAY, 100).await.unwrap();
    assert_eq!((report.readings, report.units), (240, 2), "{report:?}");
    assert!(report.steps > 1, "small steps: {report:?}");

    let kept = raw(&s, "gh.temp").await;
    assert_eq!(kept.len(), 60 + 30, "the straddling batch is kept whole");
    assert!(kept.iter().all(|&t| t >= cutoff - 30_000));
    assert_eq!(raw(&s, "keep.me").await.len(), 60, "a forever rule keeps");
    // Aggregates over the pruned day still answer from the rollups.
    assert_eq!(count_in(&s, "gh.temp", T0, T0 + DAY).await, 240);
    let stats = s.stats().await.unwrap();
    assert_eq!(stats.readings, before.readings - 240);
    assert_eq!(
        stats.changes, before.changes,
        "pruned changes stay in the log"
    );
    assert_eq!(s.verify_digest().await.unwrap(), s.digest());
    assert_eq!(s.version_vector(), before.version_vector);

    // Idempotent: a second pass at the same time finds nothing.
    let again = s.prune(&policy(5), T0 + 10 * DAY, 100).await.unwrap();
    assert_eq!((again.readings, again.rollups), (0, 0));

    // 31 days later the rollups of day 0 go too (keep.me's raw readings stay, and so do
    // their rollups).
    let later = s.prune(&policy(5), T0 + 31 * DAY, 100).await.unwrap();
    assert_eq!(
        later.rollups, 4,
        "minutes 0, 1, 10 and 11 of day 0: {later:?}"
    );
    assert_eq!(count_in(&s, "gh.temp", T0, T0 + DAY).await, 0);
    assert_eq!(count_in(&s, "keep.me", T0, T0 + DAY).await, 60);
    assert_eq!(raw(&s, "gh.temp").await.len(), 0);
    let stats = s.stats().await.unwrap();
    assert_eq!(stats.readings, 60);
    assert_eq!(s.verify_digest().await.unwrap(), s.digest());

    // Counters and digest survive a reopen (no rescan of raw readings).
    let digest = s.digest();
    s.close().await;
    let s = open(&dir, "a.db").await;
    assert_eq!(s.stats().await.unwrap().readings, 60);
    assert_eq!(s.digest(), digest);
    assert_eq!(s.verify_digest().await.unwrap(), digest);
    s.close().await;
}

#[tokio::test]
async fn pruned_changes_are_still_served_and_same_policy_replicas_converge() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir, "a.db").await;
    let b = open(&dir, "b.db").await;
    for d in 0..6 {
        batch(&a, "gh.temp", T0 + d * DAY, 50).await;
        batch(&a, "keep.me", T0 + d * DAY, 10).await;
        a.put("cfg", &serde_json::json!({"day": d})).await.unwrap();
    }
    // B takes half of A's history before A prunes, the rest after.
    let first = a
        .changes_since(&VersionVector::new(), usize::MAX)
        .await
        .unwrap();
    b.apply_remote(first[..9].to_vec()).await.unwrap();
    let now = T0 + 6 * DAY;
    a.prune(&policy(3), now, 64).await.unwrap();
    // A fresh replica C gets everything after the prune: pruned changes arrive with what
    // remains (some with no readings at all) and are accepted, so its vector is A's.
    let c = open(&dir, "c.db").await;
    let rest = a
        .changes_since(&b.version_vector(), usize::MAX)
        .await
        .unwrap();
    b.apply_remote(rest).await.unwrap();
    let all = a
        .changes_since(&VersionVector::new(), 1 << 20)
        .await
        .unwrap();
    assert!(
        all.iter()
            .any(|ch| matches!(&ch.body, ChangeBody::Readings(r) if r.is_empty())),
        "a wholly pruned change is served, empty"
    );
    c.apply_remote(all).await.unwrap();
    assert_eq!(c.version_vector(), a.version_vector());
    assert_eq!(b.version_vector(), a.version_vector());
    // Nothing is re-requested: A has nothing more for either.
    assert!(
        a.changes_since(&c.version_vector(), 1 << 20)
            .await
            .unwrap()
            .is_empty()
    );

    for s in [&b, &c] {
        s.prune(&policy(3), now, 64).await.unwrap();
    }
    assert_eq!(b.digest(), a.digest(), "B pruned what A pruned");
    assert_eq!(c.digest(), a.digest());
    for s in [&a, &b, &c] {
        assert_eq!(s.verify_digest().await.unwrap(), s.digest());
        assert_eq!(raw(s, "gh.temp").await.len(), 3 * 50);
        assert_eq!(raw(s, "keep.me").await.len(), 6 * 10);
    }
    for s in [a, b, c] {
        s.close().await;
    }
}

#[tokio::test]
async fn a_policy_that_keeps_everything_prunes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, "a.db").await;
    batch(&s, "gh.temp", T0, 10).await;
    let digest = s.digest();
    let r = s
        .prune(&RetentionPolicy::default(), T0 + 1000 * DAY, 100)
        .await
        .unwrap();
    assert_eq!(r, PruneReport::default());
    assert_eq!(s.digest(), digest);
    assert_eq!(raw(&s, "gh.temp").await.len(), 10);
    s.close().await;
}

#[tokio::test]
async fn a_new_store_gives_pruned_space_back_to_the_file_system() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, "a.db").await;
    for d in 0..40 {
        batch(&s, "gh.temp", T0 + d * MIN * 100, 5000).await;
    }
    let before = s.stats().await.unwrap().db_bytes;
    let r = s.prune(&policy(1), T0 + 10 * DAY, 5000).await.unwrap();
    assert_eq!(r.readings, 200_000);
    let after = s.stats().await.unwrap().db_bytes;
    assert!(
        after * 3 < before,
        "the file shrank: {before} bytes before pruning, {after} after"
    );
    s.close().await;
}

/// What a change retention pruned wholly keeps: its stored body hash (32 bytes), not one
/// unit hash per series. It travels with that hash in its seal, relays on through a store
/// that received it so, and every store's `verify` passes. A store of an earlier release
/// (unit hashes kept with an emptied change) still serves and verifies the old way.
#[tokio::test]
async fn a_wholly_pruned_change_keeps_its_body_hash_not_a_hash_per_series() {
    const SERIES: i64 = 40;
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir, "a.db").await;
    // Four readings a minute per series: retention keeps the rollups of their minute with
    // each change (rollups are kept 30 days), so no change is compacted into a log run.
    for d in 0..4 {
        let mut b = ReadingBatch::new();
        for s in 0..SERIES {
            for i in 0..4 {
                b.push(&format!("s{s:02}"), T0 + d * DAY + i * 1000, i as f64, None);
            }
        }
        a.append(b).await.unwrap();
    }
    let before = a
        .changes_since(&VersionVector::new(), usize::MAX)
        .await
        .unwrap();
    let report = a.prune(&policy(1), T0 + 10 * DAY, 1000).await.unwrap();
    assert_eq!(report.units, 4 * SERIES as u64, "{report:?}");
    let served = a
        .changes_since(&VersionVector::new(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(served.len(), 4);
    for (was, now) in before.iter().zip(&served) {
        let ChangeBody::Readings(r) = &now.body else {
            panic!("a readings change")
        };
        assert!(r.series.is_empty());
        let (old, new) = (was.seal.as_ref().unwrap(), now.seal.as_ref().unwrap());
        assert!(new.pruned.is_empty(), "no unit hashes travel");
        assert_eq!(new.body, Some(old.body_hash_of(&was.body)));
        assert_eq!((new.prev, new.sig), (old.prev, old.sig));
    }
    // Stored: no unit hashes left in the file.
    let stored_pruned = |path: &std::path::Path| -> (i64, i64) {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(length(pruned)), 0) FROM changes \
             WHERE kind = 1 AND pruned IS NOT NULL",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    };

    // B receives them pruned, C receives them from B: each stores and serves the body hash.
    let b = open(&dir, "b.db").await;
    b.apply_remote(served.clone()).await.unwrap();
    let c = open(&dir, "c.db").await;
    let relayed = b
        .changes_since(&VersionVector::new(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(relayed, served, "B serves what A serves");
    c.apply_remote(relayed).await.unwrap();
    assert_eq!(c.version_vector(), a.version_vector());
    assert_eq!(c.digest(), a.digest());
    for s in [a, b, c] {
        let path = s.path().to_owned();
        s.close().await;
        assert_eq!(stored_pruned(&path), (0, 0), "{}", path.display());
        let report = Store::verify_file(&path).await.unwrap();
        assert!(report.ok(), "{}: {:?}", path.display(), report.failures);
        assert_eq!(report.signed, 4);
    }

    // A store of an earlier release kept the unit hashes of an emptied change: it serves
    // them as before (no body hash), and a receiver checks them.
    let path = dir.path().join("a.db");
    let units: Vec<u8> = {
        let ChangeBody::Readings(r) = &before[0].body else {
            unreachable!()
        };
        r.series.iter().flat_map(seal::unit_hash).collect()
    };
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute("UPDATE changes SET pruned = ?1 WHERE seq = 1", [&units])
        .unwrap();
    let a = open(&dir, "a.db").await;
    let old_form = a
        .changes_since(&VersionVector::new(), usize::MAX)
        .await
        .unwrap();
    let s = old_form[0].seal.as_ref().unwrap();
    assert_eq!((s.pruned.len(), s.body), (SERIES as usize, None));
    let d = open(&dir, "d.db").await;
    d.apply_remote(old_form).await.unwrap();
    assert_eq!(d.version_vector(), a.version_vector());
    for s in [a, d] {
        let path = s.path().to_owned();
        s.close().await;
        assert!(Store::verify_file(&path).await.unwrap().ok());
    }
}
