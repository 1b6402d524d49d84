//! Twin history compaction (`[retention.twins]`, `sync/src/twin/compact.rs`) on real SQLite
//! files with an injected clock: the raw chunk of a twin change its snapshot holds is dropped
//! and rebuilt from the snapshot whenever it is read, byte for byte — for local, remote and
//! concurrent changes. A compacted replica serves the same changes (same seals, same body
//! hashes), history, as-of reads, diffs, digest and `verify` as before, a fresh replica
//! syncing from it ends equal to one that never compacted, the age and `keep_raw` limits
//! choose exactly what goes, space is given back, and a chunk that would not come back
//! unchanged is kept.

use std::collections::BTreeMap;
use std::sync::Arc;

use kdelta_sync::*;
use proptest::prelude::*;
use serde_json::{Value, json};

const KEY: &str = "device/pi";
const OTHER: &str = "device/other";
const MINUTE: u64 = 60_000;
const T0: u64 = 1_764_000_000_000;

async fn open(dir: &tempfile::TempDir, name: &str, time: &Arc<ManualTime>) -> Store {
    Store::open_with_time(
        dir.path().join(format!("{name}.db")),
        StoreConfig::default(),
        time.clone(),
    )
    .await
    .unwrap()
}

/// Delivers everything `from` has that `to` lacks, a page at a time (the receiver checks
/// every seal and body hash).
async fn deliver(from: &Store, to: &Store) {
    loop {
        let page = from
            .changes_since(&to.version_vector(), 64 << 10)
            .await
            .unwrap();
        if page.is_empty() {
            return;
        }
        to.apply_remote(page).await.unwrap();
    }
}

/// Compacts every twin change older than `cutoff_ms` that the snapshots hold, keeping the
/// newest `keep_raw` of each twin raw.
async fn compact(s: &Store, cutoff_ms: u64, keep_raw: u64) -> PruneReport {
    let policy = RetentionPolicy {
        twins: TwinCompaction {
            after_ms: Some(0),
            keep_raw,
        },
        ..RetentionPolicy::default()
    };
    s.prune(&policy, cutoff_ms as i64, 5000).await.unwrap()
}

/// Every change the store holds, as served to a peer that has nothing.
async fn all_changes(s: &Store) -> Vec<Change> {
    s.changes_since(&VersionVector::new(), usize::MAX)
        .await
        .unwrap()
}

/// The whole history of twin `key`, newest first.
async fn history(s: &Store, key: &str) -> Vec<TwinHistoryEntry> {
    let mut out: Vec<TwinHistoryEntry> = Vec::new();
    loop {
        let before = out
            .last()
            .map(|e| HistoryCursor::after_entry(e.hlc, e.actor));
        let page = s.twin_history(key, 1000, before).await.unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// What a reader can observe of twin `key`: value, history, and as-of values and a diff at
/// the HLCs `points`.
async fn observed(s: &Store, key: &str, points: &[Hlc]) -> Value {
    let value = s.twin_get(key).await.unwrap().map(|t| t.value);
    let history = history(s, key).await;
    let mut as_of = Vec::new();
    for p in points {
        as_of.push(
            s.twin_get_as_of(key, AsOf::Hlc(*p))
                .await
                .map_err(|e| e.code()),
        );
    }
    let diff = match points {
        [a, .., b] => Some(
            s.twin_diff(key, AsOf::Hlc(*a), AsOf::Hlc(*b))
                .await
                .unwrap(),
        ),
        _ => None,
    };
    json!({
        "value": value,
        "history": history,
        "as_of": format!("{as_of:?}"),
        "diff": diff,
    })
}

/// Reads the store file directly: per twin change, (twin key, local id, HLC, compacted?),
/// and per twin its `snapshot_upto`.
fn rows(path: &std::path::Path) -> (Vec<(String, i64, i64, bool)>, BTreeMap<String, i64>) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let changes = conn
        .prepare(
            "SELECT w.key, t.change_id, t.hlc, length(t.bytes) = 0 FROM twin_changes t \
             JOIN twins w ON w.id = t.twin_id ORDER BY t.change_id",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let upto = conn
        .prepare("SELECT key, snapshot_upto FROM twins")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    (changes, upto)
}

/// The changes a compaction at `cutoff_ms` with `keep_raw` must have compacted, by the rule:
/// covered by the snapshot, written before the cutoff, not among the twin's newest
/// `keep_raw`.
fn expected_compacted(path: &std::path::Path, cutoff_ms: u64, keep_raw: u64) -> Vec<i64> {
    let (changes, upto) = rows(path);
    let below = Hlc::new(cutoff_ms, 0).0 as i64;
    let mut out = Vec::new();
    for (key, limit) in &upto {
        let mine: Vec<&(String, i64, i64, bool)> = changes.iter().filter(|c| &c.0 == key).collect();
        let raw_from = mine.len().saturating_sub(keep_raw as usize);
        for (i, c) in mine.iter().enumerate() {
            if c.1 <= *limit && c.2 < below && (keep_raw == 0 || i < raw_from) {
                out.push(c.1);
            }
        }
    }
    out.sort();
    out
}

fn compacted_ids(path: &std::path::Path) -> Vec<i64> {
    rows(path)
        .0
        .into_iter()
        .filter(|c| c.3)
        .map(|c| c.1)
        .collect()
}

/// One edit of a burst, from a seed: merge patches on both sides, deletes, nested sets,
/// counter increments and list appends.
fn edit(seed: u64, replica: usize) -> TwinPatch {
    let field = format!("f{}", seed % 5);
    let side = if seed & 8 == 0 { "desired" } else { "reported" };
    match (seed >> 4) % 6 {
        0 | 1 => TwinPatch::Merge(json!({ side: { field: { "v": seed % 1000, "by": replica } } })),
        2 => TwinPatch::Merge(json!({ side: { field: null } })),
        3 => TwinPatch::Ops {
            ops: vec![PathOp::Set {
                path: format!("/nested/r{replica}/{field}"),
                value: json!(seed % 97),
            }],
        },
        4 => TwinPatch::Ops {
            ops: vec![PathOp::Increment {
                path: format!("/counters/c{}", seed % 2),
                by: (seed % 7) as i64 - 3,
            }],
        },
        _ => TwinPatch::Ops {
            ops: vec![PathOp::Insert {
                path: "/list/-".into(),
                value: json!(seed % 13),
            }],
        },
    }
}

fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// Applies `n` edits to `store` concurrently (one write group), mostly to [`KEY`].
async fn burst(store: &Store, replica: usize, n: usize, seed: u64) {
    let mut seed = seed | 1;
    let edits: Vec<(&str, TwinPatch)> = (0..n)
        .map(|_| {
            let s = next(&mut seed);
            (if s % 5 == 0 { OTHER } else { KEY }, edit(s, replica))
        })
        .collect();
    let results =
        futures::future::join_all(edits.into_iter().map(|(k, p)| store.twin_patch(k, p))).await;
    for r in results {
        r.unwrap();
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, .. ProptestConfig::default() })]
    /// Two replicas edit two twins concurrently, syncing now and then; one is compacted at a
    /// random cutoff with a random `keep_raw`. Its every change comes back byte for byte
    /// (same body, same seal), and its history, as-of reads, diff, digest and `verify` are as
    /// before. A fresh third replica syncing both ways with both ends equal to them, with the
    /// uncompacted replica's history.
    #[test]
    fn a_compacted_replica_serves_and_syncs_exactly_what_it_held(
        bursts in proptest::collection::vec((0usize..2, 20usize..70, any::<u64>(), any::<bool>()), 10..16),
        keep_raw in prop_oneof![Just(0u64), 1u64..300],
        cut in 0.0f64..1.2,
    ) {
        rt().block_on(async move {
            let dir = tempfile::tempdir().unwrap();
            let time = ManualTime::new(T0);
            let a = open(&dir, "a", &time).await;
            let b = open(&dir, "b", &time).await;
            a.twin_create(KEY, Some(json!({"list": [], "counters": {}}))).await.unwrap();
            b.twin_create(OTHER, Some(json!({"list": []}))).await.unwrap();
            deliver(&a, &b).await;
            deliver(&b, &a).await;
            let mut points = Vec::new();
            for (i, (replica, n, seed, sync)) in bursts.iter().enumerate() {
                time.set(T0 + (i as u64 + 1) * MINUTE);
                burst([&a, &b][*replica], *replica, *n, *seed).await;
                points.push(Hlc::end_of_ms(T0 + (i as u64 + 1) * MINUTE));
                if *sync {
                    deliver(&a, &b).await;
                    deliver(&b, &a).await;
                }
            }
            let end = T0 + (bursts.len() as u64 + 1) * MINUTE;
            let cutoff = T0 + ((end - T0) as f64 * cut) as u64;

            let served = all_changes(&a).await;
            let before = (observed(&a, KEY, &points).await, observed(&a, OTHER, &points).await);
            let digest = a.digest();
            let report = compact(&a, cutoff, keep_raw).await;
            let path = dir.path().join("a.db");
            assert_eq!(report.twin_changes_kept, 0, "every chunk came back unchanged");
            assert_eq!(compacted_ids(&path), expected_compacted(&path, cutoff, keep_raw));
            assert_eq!(report.twin_changes_compacted, compacted_ids(&path).len() as u64);

            // Everything a reader or a peer sees of `a` is as it was.
            assert_eq!(all_changes(&a).await, served, "same bodies and seals");
            assert_eq!((observed(&a, KEY, &points).await, observed(&a, OTHER, &points).await), before);
            assert_eq!(a.digest(), digest);
            assert_eq!(a.verify_digest().await.unwrap(), digest);
            let report = Store::verify_file(&path).await.unwrap();
            assert!(report.ok(), "{:?}", report.failures);

            // A fresh replica syncs both ways with both.
            let c = open(&dir, "c", &time).await;
            deliver(&a, &c).await;
            deliver(&b, &c).await;
            deliver(&c, &a).await;
            deliver(&c, &b).await;
            for s in [&b, &c] {
                assert_eq!(s.version_vector(), a.version_vector());
                assert_eq!(s.digest(), a.digest());
                assert_eq!(s.verify_digest().await.unwrap(), a.digest());
            }
            for key in [KEY, OTHER] {
                // `b` never compacted: the reference.
                let reference = observed(&b, key, &points).await;
                assert_eq!(observed(&a, key, &points).await, reference, "{key} on a");
                assert_eq!(observed(&c, key, &points).await, reference, "{key} on c");
            }
            for name in ["b", "c"] {
                let report = Store::verify_file(dir.path().join(format!("{name}.db"))).await.unwrap();
                assert!(report.ok(), "{name}: {:?}", report.failures);
            }
            for s in [a, b, c] {
                s.close().await;
            }
        });
    }
}

/// `n` patches of `key`, one a minute from `from`; returns the HLC of each stored change.
async fn patches(s: &Store, t: &ManualTime, key: &str, from: u64, n: u64) -> Vec<Hlc> {
    let mut out = Vec::new();
    for i in 0..n {
        t.set(from + i * MINUTE);
        let w = s
            .twin_patch(
                key,
                TwinPatch::Merge(json!({"reported": {"n": i, "pad": format!("{i:x>200}")}})),
            )
            .await
            .unwrap();
        out.push(w.change.unwrap().hlc);
    }
    out
}

#[test]
fn the_age_and_keep_raw_limits_choose_what_is_compacted_and_space_is_given_back() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let t = ManualTime::new(T0);
        let s = open(&dir, "s", &t).await;
        let path = dir.path().join("s.db");
        s.twin_create(KEY, Some(json!({"reported": {}})))
            .await
            .unwrap();
        // 1 + 599 changes: snapshots after the 256th and 512th.
        let hlcs = patches(&s, &t, KEY, T0 + MINUTE, 599).await;
        let storage = s.twin_storage(KEY).await.unwrap();
        assert_eq!(
            (storage.changes, storage.replayed, storage.compacted),
            (600, 88, 0)
        );

        // The default rule never compacts; a rule that keeps everything younger than the
        // change at index 400 and the newest 250 raw compacts exactly the 350 before those.
        assert_eq!(
            s.prune(&RetentionPolicy::default(), i64::MAX, 5000)
                .await
                .unwrap(),
            PruneReport::default()
        );
        let now = hlcs[399].ms() + 10 * MINUTE;
        let rule = RetentionPolicy {
            twins: TwinCompaction {
                after_ms: Some(10 * MINUTE),
                keep_raw: 250,
            },
            ..RetentionPolicy::default()
        };
        let before = s.stats().await.unwrap().db_bytes;
        let report = s.prune(&rule, now as i64, 100).await.unwrap();
        assert_eq!(report.twin_changes_compacted, 350);
        assert_eq!(report.twin_changes_kept, 0);
        assert!(report.twin_bytes_compacted > 350 * 200, "{report:?}");
        assert!(
            report.steps >= 4,
            "small steps of at most step_rows changes: {report:?}"
        );
        assert_eq!(
            compacted_ids(&path),
            expected_compacted(&path, now - 10 * MINUTE, 250)
        );
        let storage = s.twin_storage(KEY).await.unwrap();
        assert_eq!(storage.compacted, 350);
        let after = s.stats().await.unwrap().db_bytes;
        assert!(
            after + report.twin_bytes_compacted / 2 < before,
            "space given back: {before} → {after} bytes after dropping {} bytes of chunks",
            report.twin_bytes_compacted
        );
        // A second pass finds nothing new.
        let again = s.prune(&rule, now as i64, 100).await.unwrap();
        assert_eq!(again.twin_changes_compacted, 0);

        // Later: a wider cutoff reaches the snapshot's mark (change 512) and stops there.
        let everything = TwinCompaction {
            after_ms: Some(0),
            keep_raw: 0,
        };
        let wide = RetentionPolicy {
            twins: everything,
            ..RetentionPolicy::default()
        };
        let report = s.prune(&wide, i64::MAX / 2, 5000).await.unwrap();
        assert_eq!(report.twin_changes_compacted, 512 - 350);
        assert_eq!(s.twin_storage(KEY).await.unwrap().compacted, 512);

        // Reopened: the writer loads the twin from its snapshot, goes on writing, and the
        // next snapshot lets the next pass compact further.
        let value = s.twin_get(KEY).await.unwrap().unwrap().value;
        let digest = s.digest();
        s.close().await;
        let s = open(&dir, "s", &t).await;
        assert_eq!(s.digest(), digest);
        assert_eq!(s.verify_digest().await.unwrap(), digest);
        assert_eq!(s.twin_get(KEY).await.unwrap().unwrap().value, value);
        patches(&s, &t, KEY, T0 + 700 * MINUTE, 200).await;
        let report = s.prune(&wide, i64::MAX / 2, 5000).await.unwrap();
        assert_eq!(report.twin_changes_compacted, 768 - 512);
        let report = Store::verify_file(&path).await.unwrap();
        assert!(report.ok(), "{:?}", report.failures);
        s.close().await;
    });
}

#[test]
fn a_chunk_that_would_not_come_back_unchanged_keeps_its_bytes() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let t = ManualTime::new(T0);
        let s = open(&dir, "s", &t).await;
        let path = dir.path().join("s.db");
        s.twin_create(KEY, None).await.unwrap();
        patches(&s, &t, KEY, T0 + MINUTE, 300).await;
        s.close().await;
        // Change 10's stored chunk altered behind the store's back (its hash left as it was).
        let conn = rusqlite::Connection::open(&path).unwrap();
        let id: i64 = conn
            .query_row(
                "SELECT change_id FROM twin_changes ORDER BY change_id LIMIT 1 OFFSET 9",
                [],
                |r| r.get(0),
            )
            .unwrap();
        conn.execute(
            "UPDATE twin_changes SET bytes = CAST(bytes || X'00' AS BLOB) WHERE change_id = ?1",
            [id],
        )
        .unwrap();
        drop(conn);
        let s = open(&dir, "s", &t).await;
        let rule = RetentionPolicy {
            twins: TwinCompaction {
                after_ms: Some(0),
                keep_raw: 0,
            },
            ..RetentionPolicy::default()
        };
        let report = s.prune(&rule, i64::MAX / 2, 5000).await.unwrap();
        assert_eq!(
            (report.twin_changes_compacted, report.twin_changes_kept),
            (255, 1)
        );
        assert!(
            !compacted_ids(&path).contains(&id),
            "the altered chunk is kept as it is"
        );
        // A later pass looks at it again and keeps it again; nothing else changes.
        let report = s.prune(&rule, i64::MAX / 2, 5000).await.unwrap();
        assert_eq!(
            (report.twin_changes_compacted, report.twin_changes_kept),
            (0, 1)
        );
        s.close().await;
    });
}

#[test]
fn point_in_time_replay_from_a_compacted_store_equals_its_as_of_reads() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let t = ManualTime::new(T0);
        let a = open(&dir, "a", &t).await;
        let b = open(&dir, "b", &t).await;
        a.twin_create(KEY, Some(json!({"list": [], "counters": {}})))
            .await
            .unwrap();
        b.twin_create(OTHER, Some(json!({"list": [], "counters": {}})))
            .await
            .unwrap();
        deliver(&a, &b).await;
        deliver(&b, &a).await;
        for i in 0..12u64 {
            t.set(T0 + (i + 1) * MINUTE);
            burst(
                if i % 2 == 0 { &a } else { &b },
                (i % 2) as usize,
                40,
                i * 7919 + 1,
            )
            .await;
            deliver(&b, &a).await;
        }
        let report = compact(&a, T0 + 100 * MINUTE, 0).await;
        assert!(report.twin_changes_compacted >= 256, "{report:?}");
        for minute in [3u64, 8, 13] {
            let at = Hlc::end_of_ms(T0 + minute * MINUTE);
            let target = dir.path().join(format!("pitr-{minute}.db"));
            backup::replay_as_of(&a, &target, at, None, |_| {})
                .await
                .unwrap();
            let r = Store::open(&target, StoreConfig::default()).await.unwrap();
            for key in [KEY, OTHER] {
                let then = a.twin_get_as_of(key, AsOf::Hlc(at)).await.ok();
                let now = r.twin_get(key).await.unwrap().map(|t| t.value);
                assert_eq!(then, now, "{key} at minute {minute}");
            }
            r.close().await;
        }
        a.close().await;
        b.close().await;
    });
}
