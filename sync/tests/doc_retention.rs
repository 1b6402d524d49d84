//! Document history retention on real SQLite files with an injected clock (versions written
//! at chosen wall times; `now` is an argument of `Store::prune`): count and age limits, key
//! patterns, heads, siblings and tombstones kept, batches, what history and as-of answer after
//! a prune, the digest across a reopen, and sync of pruned document changes between stores —
//! served as changes with their metadata, stored by receivers without resurrecting or losing
//! heads, digests equal under the same policy.

use kdelta_sync::*;
use serde_json::json;

const DAY: i64 = 86_400_000;
const T0: i64 = 1_764_000_000_000 / DAY * DAY;

async fn open_at(dir: &tempfile::TempDir, name: &str, time: &std::sync::Arc<ManualTime>) -> Store {
    Store::open_with_time(dir.path().join(name), StoreConfig::default(), time.clone())
        .await
        .unwrap()
}

fn docs(default: DocRule, keys: Vec<(&str, DocRule)>) -> RetentionPolicy {
    RetentionPolicy {
        docs: DocRetention {
            default,
            keys: keys
                .into_iter()
                .map(|(pattern, rule)| KeyRetention {
                    pattern: pattern.into(),
                    rule,
                })
                .collect(),
        },
        ..RetentionPolicy::default()
    }
}

fn keep(n: u64) -> DocRule {
    DocRule {
        keep_versions: Some(n),
        max_age_ms: None,
    }
}

fn younger_than(ms: i64) -> DocRule {
    DocRule {
        keep_versions: None,
        max_age_ms: Some(ms as u64),
    }
}

/// Every version of `key`, newest first.
async fn history(s: &Store, key: &str) -> Vec<DocVersion> {
    s.history(key, MAX_HISTORY_PAGE, None).await.unwrap()
}

/// Which versions of `key` are pruned, oldest first.
async fn pruned_flags(s: &Store, key: &str) -> Vec<bool> {
    let mut h: Vec<bool> = history(s, key).await.iter().map(|v| v.pruned).collect();
    h.reverse();
    h
}

async fn check_digest(s: &Store) {
    assert_eq!(s.verify_digest().await.unwrap(), s.digest());
}

/// `n` versions of `key`, one a minute from `from`; returns their HLCs.
async fn puts(s: &Store, t: &ManualTime, key: &str, from: i64, n: i64) -> Vec<Hlc> {
    let mut out = Vec::new();
    for i in 0..n {
        t.set((from + i * 60_000) as u64);
        out.push(s.put(key, &json!({"v": i})).await.unwrap().hlc);
    }
    out
}

#[tokio::test]
async fn count_limit_keeps_the_newest_versions_and_as_of_names_the_horizon() {
    let dir = tempfile::tempdir().unwrap();
    let t = ManualTime::new(T0 as u64);
    let s = open_at(&dir, "a.db", &t).await;
    let hlcs = puts(&s, &t, "gh/setpoint", T0, 5).await;
    let before = s.digest();

    let report = s
        .prune(&docs(keep(2), vec![]), T0 + DAY, 1000)
        .await
        .unwrap();
    assert_eq!(report.doc_versions, 3);
    assert_eq!(report.readings, 0);
    assert_ne!(s.digest(), before);
    check_digest(&s).await;
    assert_eq!(
        pruned_flags(&s, "gh/setpoint").await,
        [true, true, true, false, false]
    );

    // History still lists every version: pruned ones with their metadata, no value, and
    // not as deletes.
    let h = history(&s, "gh/setpoint").await;
    assert_eq!(h.len(), 5);
    assert!(
        h[2..]
            .iter()
            .all(|v| v.pruned && v.value.is_none() && !v.is_tombstone())
    );
    assert_eq!(h[0].value, Some(json!({"v": 4})));
    assert_eq!(
        h[3].supersedes.len(),
        1,
        "the context of a pruned version is kept"
    );

    // The current value and the kept history answer; as-of before the horizon is a clear
    // error naming it, never another version's value.
    assert_eq!(
        s.get("gh/setpoint").await.unwrap().unwrap().winner.value,
        Some(json!({"v": 4}))
    );
    let at3 = s
        .get_as_of("gh/setpoint", AsOf::Hlc(hlcs[3]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(at3.winner.value, Some(json!({"v": 3})));
    let err = s
        .get_as_of("gh/setpoint", AsOf::Hlc(hlcs[1]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "history_pruned");
    match &err {
        StoreError::HistoryPruned { key, horizon, .. } => {
            assert_eq!(key, "gh/setpoint");
            assert_eq!(*horizon, hlcs[3]);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains(&hlcs[3].to_string()), "{err}");
    // Before the first version it is still before_history; a diff across the horizon fails.
    let early = AsOf::WallMs((T0 - 1) as u64);
    assert_eq!(
        s.get_as_of("gh/setpoint", early).await.unwrap_err().code(),
        "before_history"
    );
    assert_eq!(
        s.diff("gh/setpoint", AsOf::Hlc(hlcs[0]), AsOf::Hlc(hlcs[4]))
            .await
            .unwrap_err()
            .code(),
        "history_pruned"
    );
    // As-of listings too: the state of a pruned point is unknown, not absent.
    assert_eq!(
        s.list("gh/", Some(AsOf::Hlc(hlcs[0])), 10, None)
            .await
            .unwrap_err()
            .code(),
        "history_pruned"
    );

    // A second pass prunes nothing more; the digest survives a reopen.
    assert_eq!(
        s.prune(&docs(keep(2), vec![]), T0 + DAY, 1000)
            .await
            .unwrap()
            .doc_versions,
        0
    );
    let digest = s.digest();
    s.close().await;
    let s = open_at(&dir, "a.db", &t).await;
    assert_eq!(s.digest(), digest);
    check_digest(&s).await;
    // Writes go on as before: the new version supersedes the kept head.
    t.set((T0 + DAY) as u64);
    let v = s.put("gh/setpoint", &json!({"v": 5})).await.unwrap();
    assert_eq!(v.supersedes.len(), 1);
    assert_eq!(s.siblings("gh/setpoint").await.unwrap().len(), 1);
    s.close().await;
}

#[tokio::test]
async fn age_limits_key_patterns_and_both_limits_together() {
    let dir = tempfile::tempdir().unwrap();
    let t = ManualTime::new(T0 as u64);
    let s = open_at(&dir, "a.db", &t).await;
    // Four versions a day apart for each key.
    // (Day by day: the HLC never runs backwards, so a key written after others in a later
    // day would be stamped then.)
    for d in 0..4 {
        t.set((T0 + d * DAY + 1000) as u64);
        for key in ["audit/x", "tmp/y", "cfg/z", "other"] {
            s.put(key, &json!({"day": d})).await.unwrap();
        }
    }
    let now = T0 + 4 * DAY;
    let dir2 = tempfile::tempdir().unwrap();
    let s2 = open_at(&dir2, "b.db", &t).await;
    s2.apply_remote(
        s.changes_since(&VersionVector::new(), usize::MAX)
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    let policy = docs(
        // Default: keep 3 versions AND two days — a version goes only past both.
        DocRule {
            keep_versions: Some(3),
            max_age_ms: Some(2 * DAY as u64),
        },
        vec![
            ("audit/*", DocRule::default()),
            ("tmp/*", younger_than(DAY + DAY / 2)),
            ("cfg/?", keep(1)),
        ],
    );
    // Half a day in, nothing is past an age limit: only the count-only rule of cfg/z prunes.
    assert_eq!(
        s.prune(&policy, T0 + DAY / 2, 1000)
            .await
            .unwrap()
            .doc_versions,
        3
    );
    assert_eq!(pruned_flags(&s, "tmp/y").await, [false; 4]);
    assert_eq!(pruned_flags(&s, "other").await, [false; 4]);
    let report = s.prune(&policy, now, 1000).await.unwrap();
    assert_eq!(
        pruned_flags(&s, "audit/x").await,
        [false; 4],
        "keeps everything"
    );
    // Younger than 1.5 days at day 4: only day 3 (and the head is day 3 anyway).
    assert_eq!(pruned_flags(&s, "tmp/y").await, [true, true, true, false]);
    assert_eq!(pruned_flags(&s, "cfg/z").await, [true, true, true, false]);
    // Default: day 0 is past both limits; day 1 is among the newest 3.
    assert_eq!(pruned_flags(&s, "other").await, [true, false, false, false]);
    assert_eq!(report.doc_versions, 4);
    check_digest(&s).await;

    // Tiny steps on a copy made before any prune reach the same result (each step looks
    // at one key or prunes one version).
    let stepwise = s2.prune(&policy, now, 1).await.unwrap();
    assert_eq!(stepwise.doc_versions, 7);
    assert!(stepwise.steps > 8, "{stepwise:?}");
    assert_eq!(s2.digest(), s.digest());
    check_digest(&s2).await;
    s.close().await;
    s2.close().await;
}

#[tokio::test]
async fn heads_siblings_and_tombstones_are_never_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let t = ManualTime::new(T0 as u64);
    let a = open_at(&dir, "a.db", &t).await;
    let b = open_at(&dir, "b.db", &t).await;
    // Concurrent writes: two siblings, each on top of an older version of its own.
    puts(&a, &t, "k", T0, 2).await;
    t.set((T0 + 10 * 60_000) as u64);
    b.put("k", &json!("b1")).await.unwrap();
    b.put("k", &json!("b2")).await.unwrap();
    // A deleted key: its tombstone head stays, the values before it go.
    puts(&a, &t, "gone", T0 + DAY, 3).await;
    a.delete("gone").await.unwrap();
    a.apply_remote(
        b.changes_since(&VersionVector::new(), usize::MAX)
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(a.siblings("k").await.unwrap().len(), 2);

    let keep_one = docs(keep(1), vec![]);
    let far = T0 + 100 * DAY;
    a.prune(&keep_one, far, 1000).await.unwrap();
    let sib = a.siblings("k").await.unwrap();
    assert_eq!(sib.len(), 2, "both siblings kept");
    assert!(sib.iter().all(|v| !v.pruned && v.value.is_some()));
    // a's second and b's second version are the siblings; the first of each goes.
    assert_eq!(pruned_flags(&a, "k").await, [true, false, true, false]);
    assert_eq!(pruned_flags(&a, "gone").await, [true, true, true, false]);
    let head = a.get("gone").await.unwrap().unwrap();
    assert!(head.winner.is_tombstone() && !head.winner.pruned);
    assert!(
        a.list("", None, 10, None)
            .await
            .unwrap()
            .iter()
            .all(|d| d.winner.key != "gone")
    );
    // Age alone, far in the future, prunes no head either.
    a.prune(&docs(younger_than(60_000), vec![]), far, 1000)
        .await
        .unwrap();
    assert_eq!(a.siblings("k").await.unwrap().len(), 2);
    check_digest(&a).await;
    // Resolving the siblings makes them prunable; the resolution stays.
    t.set((T0 + 2 * DAY) as u64);
    a.put("k", &json!("merged")).await.unwrap();
    a.prune(&keep_one, far, 1000).await.unwrap();
    assert_eq!(pruned_flags(&a, "k").await, [true, true, true, true, false]);
    assert_eq!(
        a.get("k").await.unwrap().unwrap().winner.value,
        Some(json!("merged"))
    );
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn a_batch_change_keeps_its_place_when_one_of_its_versions_is_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let t = ManualTime::new(T0 as u64);
    let s = open_at(&dir, "a.db", &t).await;
    let batch = s
        .write_batch(vec![
            BatchEntry::put("a", json!(1)),
            BatchEntry::put("b", json!(2)),
            BatchEntry::put("c", json!(3)),
        ])
        .await
        .unwrap();
    t.set((T0 + 60_000) as u64);
    s.put("a", &json!(10)).await.unwrap();
    let report = s
        .prune(&docs(keep(1), vec![]), T0 + DAY, 1000)
        .await
        .unwrap();
    assert_eq!(report.doc_versions, 1);
    check_digest(&s).await;
    // The batch is still one change, in its order: `a` pruned, `b` and `c` whole.
    let log = s
        .changes_since(&VersionVector::new(), usize::MAX)
        .await
        .unwrap();
    let served = log.iter().find(|c| c.seq == batch[0].seq).unwrap();
    let ChangeBody::DocBatch(body) = &served.body else {
        panic!("{served:?}")
    };
    let keys: Vec<(&str, bool, bool)> = body
        .writes
        .iter()
        .map(|w| (w.key.as_str(), w.pruned, w.value.is_some()))
        .collect();
    assert_eq!(
        keys,
        [("a", true, false), ("b", false, true), ("c", false, true)]
    );
    assert_eq!(
        s.get("b").await.unwrap().unwrap().winner.value,
        Some(json!(2))
    );
    // A receiver stores it as it is and reaches the same digest and states.
    let r = open_at(&dir, "r.db", &t).await;
    r.apply_remote(log).await.unwrap();
    assert_eq!(r.digest(), s.digest());
    check_digest(&r).await;
    for k in ["a", "b", "c"] {
        assert_eq!(r.get(k).await.unwrap(), s.get(k).await.unwrap());
        assert_eq!(history(&r, k).await, history(&s, k).await);
    }
    s.close().await;
    r.close().await;
}

#[tokio::test]
async fn pruned_changes_sync_without_resurrecting_or_losing_heads() {
    let dir = tempfile::tempdir().unwrap();
    let t = ManualTime::new(T0 as u64);
    let a = open_at(&dir, "a.db", &t).await;
    let c = open_at(&dir, "c.db", &t).await;
    let b = open_at(&dir, "b.db", &t).await;
    // A writes k; C sees it and overwrites it; A learns of C's version and prunes its own.
    a.put("k", &json!("a1")).await.unwrap();
    a.put("solo", &json!("s1")).await.unwrap();
    t.set((T0 + 60_000) as u64);
    a.put("solo", &json!("s2")).await.unwrap();
    c.apply_remote(
        a.changes_since(&c.version_vector(), usize::MAX)
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    t.set((T0 + 120_000) as u64);
    c.put("k", &json!("c1")).await.unwrap();
    a.apply_remote(
        c.changes_since(&a.version_vector(), usize::MAX)
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    let policy = docs(keep(1), vec![]);
    assert_eq!(
        a.prune(&policy, T0 + DAY, 1000).await.unwrap().doc_versions,
        2
    );

    // B first gets A's own changes only: the pruned `k` arrives before the version of C
    // that superseded it. It is stored, but never shown as a value-less head.
    let mine: Vec<Change> = a
        .changes_since(&b.version_vector(), usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .filter(|ch| ch.actor == a.actor())
        .collect();
    assert!(
        mine.iter()
            .any(|ch| matches!(&ch.body, ChangeBody::Doc(d) if d.key == "k" && d.pruned))
    );
    b.apply_remote(mine).await.unwrap();
    assert_eq!(
        b.version_vector().get(&a.actor()),
        a.version_vector().get(&a.actor())
    );
    assert_eq!(b.get("k").await.unwrap(), None, "no value-less head");
    assert!(b.siblings("k").await.unwrap().is_empty());
    assert_eq!(
        b.get("solo").await.unwrap().unwrap().winner.value,
        Some(json!("s2"))
    );
    check_digest(&b).await;
    // Then the rest: exactly A's heads, A's digest, and nothing re-requested.
    b.apply_remote(
        a.changes_since(&b.version_vector(), usize::MAX)
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(b.version_vector(), a.version_vector());
    assert!(
        a.changes_since(&b.version_vector(), usize::MAX)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        b.get("k").await.unwrap().unwrap().winner.value,
        Some(json!("c1"))
    );
    assert_eq!(b.digest(), a.digest());
    for key in ["k", "solo"] {
        assert_eq!(history(&b, key).await, history(&a, key).await);
    }

    // C still holds A's first version whole; pruning with the same policy gives it A's
    // digest, and C's copy travelling on is the same change (no fork, nothing resent).
    assert_ne!(c.digest(), a.digest());
    c.apply_remote(
        a.changes_since(&c.version_vector(), usize::MAX)
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    c.prune(&policy, T0 + DAY, 1000).await.unwrap();
    assert_eq!(c.digest(), a.digest());
    check_digest(&c).await;

    // A late sibling from a fourth store whose write did not see C's: it stays a sibling.
    let d = open_at(&dir, "d.db", &t).await;
    t.set((T0 + 180_000) as u64);
    d.put("k", &json!("d1")).await.unwrap();
    b.apply_remote(
        d.changes_since(&b.version_vector(), usize::MAX)
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    let sib: Vec<serde_json::Value> = b
        .siblings("k")
        .await
        .unwrap()
        .into_iter()
        .filter_map(|v| v.value)
        .collect();
    assert_eq!(sib, [json!("d1"), json!("c1")]);
    for s in [a, b, c, d] {
        s.close().await;
    }
}
