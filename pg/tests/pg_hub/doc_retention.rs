//! Document history retention on a PostgreSQL hub (`pg/src/doc_retention.rs`): the same
//! changes on a hub and on a SQLite store, pruned under one `[retention.docs]` policy at one
//! `now`, leave the same versions, the same pruned flags, the same reads (history, as-of
//! `HistoryPruned`, siblings), the same changes served byte for byte, and equal digests —
//! kept and recomputed. Heads are never pruned (concurrent siblings and a deleting tombstone
//! stay); a device learning from the pruned hub stores the pruned versions as such and
//! agrees; a prune while replicas apply stays exact.

use super::*;

const MINUTE: i64 = 60_000;

async fn device_at(
    dir: &tempfile::TempDir,
    name: &str,
    time: &std::sync::Arc<ManualTime>,
) -> Store {
    Store::open_with_time(dir.path().join(name), StoreConfig::default(), time.clone())
        .await
        .unwrap()
}

fn rule(keep_versions: Option<u64>, max_age_ms: Option<i64>) -> DocRule {
    DocRule {
        keep_versions,
        max_age_ms: max_age_ms.map(|ms| ms as u64),
    }
}

/// Two versions of every key by default; `audit/*` forever; `age/*` ten minutes;
/// `both/*` the newest one and ten minutes.
fn policy() -> RetentionPolicy {
    let key = |pattern: &str, rule| KeyRetention {
        pattern: pattern.into(),
        rule,
    };
    RetentionPolicy {
        docs: DocRetention {
            default: rule(Some(2), None),
            keys: vec![
                key("audit/*", DocRule::default()),
                key("age/*", rule(None, Some(10 * MINUTE))),
                key("both/*", rule(Some(1), Some(10 * MINUTE))),
            ],
        },
        ..RetentionPolicy::default()
    }
}

/// A put of `key` by `s` at `T0 + minute` minutes.
async fn put_at(s: &Store, t: &ManualTime, key: &str, minute: i64, v: i64) {
    t.set((T0 + minute * MINUTE) as u64);
    s.put(key, &json!({"v": v, "at": minute})).await.unwrap();
}

/// Every version of `key`'s pruned flag, newest first.
async fn flags(hub: &PgStore, key: &str) -> Vec<bool> {
    hub.history(key, MAX_HISTORY_PAGE, None)
        .await
        .unwrap()
        .iter()
        .map(|v| v.pruned)
        .collect()
}

/// The keys the history of [`write_history`] touches.
const KEYS: [&str; 8] = [
    "k/p",
    "audit/log",
    "age/x",
    "both/y",
    "k/b1",
    "k/b2",
    "k/del",
    "k/x",
];

/// Two devices' documents over an hour from `T0`; `b` writes `k/x` without seeing `a`'s
/// versions of it, so the key ends with two siblings.
async fn write_history(a: &Store, b: &Store, t: &ManualTime) {
    for m in 0..6 {
        put_at(a, t, "k/p", m, m).await;
    }
    for m in 6..10 {
        put_at(a, t, "audit/log", m, m).await;
    }
    for m in 10..13 {
        t.set((T0 + m * MINUTE) as u64);
        a.write_batch(vec![
            BatchEntry::put("k/b1", json!(m)),
            BatchEntry::put("k/b2", json!([m])),
        ])
        .await
        .unwrap();
    }
    put_at(a, t, "k/del", 13, 1).await;
    put_at(a, t, "k/del", 14, 2).await;
    t.set((T0 + 15 * MINUTE) as u64);
    a.delete("k/del").await.unwrap();
    for m in 16..19 {
        put_at(b, t, "k/x", m, m).await;
    }
    for m in 19..21 {
        put_at(a, t, "k/x", m, m).await;
    }
    for m in (40..56).step_by(2) {
        put_at(a, t, "age/x", m, m).await;
    }
    // On `b`, whose clock has not passed minute 30 (HLCs never go back).
    for m in [30, 45, 52, 56] {
        put_at(b, t, "both/y", m, m).await;
    }
}

#[tokio::test]
async fn pg_doc_retention_prunes_what_sqlite_prunes_with_one_digest() {
    let Some(db) = TestDb::new("doc_retention").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let t = ManualTime::new(T0 as u64);
    let (a, b) = (
        device_at(&dir, "a.db", &t).await,
        device_at(&dir, "b.db", &t).await,
    );
    write_history(&a, &b, &t).await;
    let reference = device(&dir, "ref.db").await;
    let hub = db.replica().await;
    for log in [&a, &b] {
        sync(log, &reference, 1 << 20).await;
        sync(log, &hub, 600).await;
    }
    assert_eq!(hub.digest().await.unwrap(), reference.digest());
    let now = T0 + 60 * MINUTE;

    let sqlite = reference.prune(&policy(), now, 3).await.unwrap();
    let pass = hub.prune(&policy(), now, 3).await.unwrap();
    assert!(pass.ran);
    // k/p 4, age/x 5 (older than minute 50), both/y 2, k/b1 1, k/b2 1, k/del 1, k/x 2 (b's
    // two older ones; its newest is a sibling); audit/log none.
    assert_eq!(
        pass.pruned.doc_versions, sqlite.doc_versions,
        "{pass:?} {sqlite:?}"
    );
    assert_eq!(pass.pruned.doc_versions, 16, "{pass:?}");
    assert!(
        pass.pruned.steps >= 6,
        "steps of at most 3 versions: {pass:?}"
    );
    assert_eq!(pass.pruned.readings, 0);

    assert_eq!(
        flags(&hub, "k/p").await,
        [false, false, true, true, true, true]
    );
    assert_eq!(flags(&hub, "audit/log").await, [false; 4]);
    assert_eq!(flags(&hub, "both/y").await, [false, false, true, true]);
    assert_eq!(
        flags(&hub, "age/x").await,
        [false, false, false, true, true, true, true, true]
    );
    // Heads are never pruned: both siblings of k/x, the tombstone of k/del.
    let x = hub.siblings("k/x").await.unwrap();
    assert_eq!(x.len(), 2, "{x:?}");
    assert!(x.iter().all(|v| !v.pruned && v.value.is_some()), "{x:?}");
    assert_eq!(flags(&hub, "k/x").await, [false, false, false, true, true]);
    assert_eq!(flags(&hub, "k/del").await, [false, false, true]);
    // As-of a pruned point answers HistoryPruned, as SQLite does (compare_key checks every
    // read of every key against the reference).
    let p = hub.history("k/p", MAX_HISTORY_PAGE, None).await.unwrap();
    let err = hub.get_as_of("k/p", AsOf::Hlc(p[3].hlc)).await.unwrap_err();
    assert!(
        matches!(err, PgError::Store(StoreError::HistoryPruned { .. })),
        "{err:?}"
    );
    for key in KEYS {
        super::docs::compare_key(&reference, &hub, key).await;
    }

    // One digest, kept and recomputed; every change served as SQLite serves it, byte for
    // byte, with the size the log keeps for it.
    assert_eq!(hub.digest().await.unwrap(), reference.digest());
    assert_eq!(hub.verify_digest().await.unwrap(), reference.digest());
    let served = super::retention::all_changes(&hub).await;
    let want = super::retention::all_changes(&reference).await;
    assert_eq!(served.len(), want.len());
    for (s, w) in served.iter().zip(&want) {
        assert_eq!(s.to_cbor(), w.to_cbor(), "{}:{}", s.actor, s.seq);
    }
    let kept: i64 = db.count("SELECT sum(bytes)::int8 FROM {s}.changes").await;
    let encoded: usize = served.iter().map(Change::encoded_len).sum();
    assert_eq!(
        kept, encoded as i64,
        "changes.bytes follows the pruned bodies"
    );

    // A device learning from the pruned hub checks every seal, stores the pruned versions
    // pruned, and agrees; pruning under the same policy changes nothing there.
    let late = device(&dir, "late.db").await;
    sync(&hub, &late, 500).await;
    assert_eq!(late.digest(), hub.digest().await.unwrap());
    assert_eq!(late.verify_digest().await.unwrap(), late.digest());
    let late_p: Vec<bool> = late
        .history("k/p", MAX_HISTORY_PAGE, None)
        .await
        .unwrap()
        .iter()
        .map(|v| v.pruned)
        .collect();
    assert_eq!(late_p, flags(&hub, "k/p").await);
    let again = late.prune(&policy(), now, 100).await.unwrap();
    assert_eq!(again.doc_versions, 0, "{again:?}");
    assert_eq!(late.digest(), hub.digest().await.unwrap());

    // A second pass finds nothing.
    let second = hub.prune(&policy(), now, 3).await.unwrap();
    assert_eq!(second.pruned.doc_versions, 0, "{second:?}");
    assert_eq!(hub.verify_digest().await.unwrap(), reference.digest());

    hub.close().await;
    db.drop().await;
}

#[tokio::test]
async fn pg_doc_retention_during_applies_stays_exact() {
    let Some(db) = TestDb::new("doc_retention_applies").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let t = ManualTime::new(T0 as u64);
    let (a, b) = (
        device_at(&dir, "a.db", &t).await,
        device_at(&dir, "b.db", &t).await,
    );
    // `a` writes ten keys twelve times each; `b` later writes the same keys, unaware of `a`.
    for round in 0..12 {
        for k in 0..10 {
            put_at(&a, &t, &format!("c/{k}"), round, round).await;
        }
    }
    for round in 12..20 {
        for k in 0..10 {
            put_at(&b, &t, &format!("c/{k}"), round, round).await;
        }
        // ... and `a` goes on with keys of its own.
        put_at(&a, &t, &format!("d/{round}"), round, round).await;
        put_at(&a, &t, &format!("d/{round}"), round, round + 1).await;
    }
    let (r1, r2) = (db.replica().await, db.replica().await);
    let a_pages = pages_for(&a, &VersionVector::new(), 800).await;
    let half = a_pages.len() / 2;
    for page in &a_pages[..half] {
        r1.apply_remote(page.clone()).await.unwrap();
    }
    let keep = RetentionPolicy {
        docs: DocRetention {
            default: rule(Some(3), None),
            keys: Vec::new(),
        },
        ..RetentionPolicy::default()
    };
    let now = T0 + 60 * MINUTE;
    // The rest of a's changes and all of b's through r2, page by page, while r1 prunes in
    // steps of 4 versions.
    let ingest = async {
        for page in &a_pages[half..] {
            r2.apply_remote(page.clone()).await.unwrap();
        }
        for page in pages_for(&b, &VersionVector::new(), 800).await {
            r2.apply_remote(page).await.unwrap();
        }
    };
    let (during, ()) = tokio::join!(r1.prune(&keep, now, 4), ingest);
    let during = during.unwrap();
    assert!(during.ran);
    assert!(during.pruned.doc_versions > 0, "{during:?}");
    assert_eq!(
        r2.verify_digest().await.unwrap(),
        r1.digest().await.unwrap()
    );
    // What the pass did not see, the next one prunes.
    let after = r2.prune(&keep, now, 4).await.unwrap();

    let reference = device(&dir, "ref.db").await;
    sync(&a, &reference, 1 << 20).await;
    sync(&b, &reference, 1 << 20).await;
    let want = reference.prune(&keep, now, 1000).await.unwrap();
    assert_eq!(
        during.pruned.doc_versions + after.pruned.doc_versions,
        want.doc_versions,
        "{during:?} {after:?} {want:?}"
    );
    assert_eq!(r1.digest().await.unwrap(), reference.digest());
    assert_eq!(r2.verify_digest().await.unwrap(), reference.digest());
    for k in 0..10 {
        super::docs::compare_key(&reference, &r1, &format!("c/{k}")).await;
    }

    r1.close().await;
    r2.close().await;
    db.drop().await;
}
