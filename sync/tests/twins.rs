//! Merge documents (twins): convergence under partitions and any delivery order, field-level
//! merge of concurrent edits, deterministic resolution of same-field conflicts, hostile
//! patches and hostile remote changes refused without a trace, snapshots, as-of, history and
//! diffs.

use kdelta_sync::*;
use proptest::prelude::*;
use serde_json::{Value, json};

const KEY: &str = "device/pi";

async fn open(dir: &tempfile::TempDir, name: &str) -> Store {
    Store::open(
        dir.path().join(format!("{name}.db")),
        StoreConfig::default(),
    )
    .await
    .unwrap()
}

/// Delivers what `from` has for `to`, change by change, in the order given by `shuffle`, with
/// duplicates when `dup`. Changes arriving before their predecessors from the same actor are
/// refused (seq gap) and must leave `to` untouched; the loop repeats until nothing is missing.
async fn deliver(from: &Store, to: &Store, mut shuffle: u64, dup: bool) {
    for _round in 0..64 {
        let mut changes = from
            .changes_since(&to.version_vector(), 1 << 20)
            .await
            .unwrap();
        if changes.is_empty() {
            return;
        }
        if dup {
            let again = changes[..changes.len().div_ceil(2)].to_vec();
            changes.extend(again);
        }
        for i in (1..changes.len()).rev() {
            shuffle ^= shuffle << 13;
            shuffle ^= shuffle >> 7;
            shuffle ^= shuffle << 17;
            changes.swap(i, (shuffle % (i as u64 + 1)) as usize);
        }
        for c in changes {
            let before = (to.version_vector(), to.digest());
            match to.apply_remote(vec![c]).await {
                Ok(_) => {}
                Err(StoreError::SeqGap { .. }) => {
                    assert_eq!(
                        before,
                        (to.version_vector(), to.digest()),
                        "a refused change changed the store"
                    )
                }
                Err(e) => panic!("apply failed: {e}"),
            }
        }
    }
    panic!("delivery did not finish");
}

async fn value(s: &Store) -> Option<Value> {
    s.twin_get(KEY).await.unwrap().map(|t| t.value)
}

#[derive(Debug, Clone)]
enum Edit {
    /// Merge patch `{"<side>": {"f<field>": v}}`.
    Merge { side: u8, field: u8, v: i32 },
    /// Merge patch deleting a field.
    Remove { side: u8, field: u8 },
    /// Path op set on a nested path.
    Set { field: u8, v: i32 },
    /// Counter increment.
    Increment { counter: u8, by: i8 },
    /// List append.
    Append { v: i32 },
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (0u8..2, 0u8..4, any::<i32>()).prop_map(|(side, field, v)| Edit::Merge { side, field, v }),
        1 => (0u8..2, 0u8..4).prop_map(|(side, field)| Edit::Remove { side, field }),
        1 => (0u8..3, any::<i32>()).prop_map(|(field, v)| Edit::Set { field, v }),
        1 => (0u8..2, any::<i8>()).prop_map(|(counter, by)| Edit::Increment { counter, by }),
        1 => any::<i32>().prop_map(|v| Edit::Append { v }),
    ]
}

fn patch_of(e: &Edit, replica: usize) -> TwinPatch {
    let side = |s: u8| if s == 0 { "desired" } else { "reported" };
    match e {
        Edit::Merge { side: s, field, v } => TwinPatch::Merge(
            json!({ side(*s): { format!("f{field}"): { "v": v, "by": replica } } }),
        ),
        Edit::Remove { side: s, field } => {
            TwinPatch::Merge(json!({ side(*s): { format!("f{field}"): null } }))
        }
        Edit::Set { field, v } => TwinPatch::Ops {
            ops: vec![PathOp::Set {
                path: format!("/nested/r{replica}/f{field}"),
                value: json!(v),
            }],
        },
        Edit::Increment { counter, by } => TwinPatch::Ops {
            ops: vec![PathOp::Increment {
                path: format!("/counters/c{counter}"),
                by: *by as i64,
            }],
        },
        Edit::Append { v } => TwinPatch::Ops {
            ops: vec![PathOp::Insert {
                path: "/list/-".into(),
                value: json!(v),
            }],
        },
    }
}

#[derive(Debug, Clone)]
enum Step {
    Edit {
        replica: usize,
        edit: Edit,
    },
    Sync {
        from: usize,
        to: usize,
        shuffle: u64,
        dup: bool,
    },
}

fn scenario() -> impl Strategy<Value = (usize, bool, Vec<Step>)> {
    (2usize..=4, any::<bool>()).prop_flat_map(|(n, shared_base)| {
        let step = prop_oneof![
            4 => (0..n, edit()).prop_map(|(replica, edit)| Step::Edit { replica, edit }),
            1 => (0..n, 0..n, any::<u64>(), any::<bool>())
                .prop_map(|(from, to, shuffle, dup)| Step::Sync { from, to, shuffle: shuffle | 1, dup }),
        ];
        (Just(n), Just(shared_base), proptest::collection::vec(step, 1..30))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]
    /// Replicas edit while partitioned (only the random `Sync` steps connect them), then
    /// exchange everything in random orders with duplicates: all end with identical JSON,
    /// version vectors and digests. With `shared_base` the twin and its `list` exist on every
    /// replica before the partition; otherwise each replica creates the twin on its own.
    #[test]
    fn twins_converge_whatever_the_delivery_order((n, shared_base, steps) in scenario()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let dir = tempfile::tempdir().unwrap();
            let mut stores = Vec::new();
            for i in 0..n {
                stores.push(open(&dir, &format!("r{i}")).await);
            }
            if shared_base {
                stores[0].twin_create(KEY, Some(json!({"list": []}))).await.unwrap();
                let counters = TwinPatch::Ops { ops: (0..2).map(|c| PathOp::Increment { path: format!("/counters/c{c}"), by: 0 }).collect() };
                stores[0].twin_patch(KEY, counters).await.unwrap();
                for i in 1..n {
                    deliver(&stores[0], &stores[i], 1, false).await;
                }
            } else {
                for s in &stores {
                    s.twin_create(KEY, None).await.unwrap();
                }
            }
            for step in &steps {
                match step {
                    Step::Edit { replica, edit } => {
                        let s = &stores[*replica];
                        let before = (s.digest(), value(s).await);
                        match s.twin_patch(KEY, patch_of(edit, *replica)).await {
                            Ok(_) => {}
                            // Appending needs the list, which a replica that created the twin
                            // alone does not have: refused, and nothing changed.
                            Err(StoreError::InvalidPatch { .. }) if matches!(edit, Edit::Append { .. }) => {
                                assert_eq!(before, (s.digest(), value(s).await));
                            }
                            Err(e) => panic!("patch {edit:?} failed: {e}"),
                        }
                    }
                    Step::Sync { from, to, shuffle, dup } if from != to => {
                        deliver(&stores[*from], &stores[*to], *shuffle, *dup).await
                    }
                    Step::Sync { .. } => {}
                }
            }
            for _ in 0..2 {
                for i in 0..n {
                    deliver(&stores[i], &stores[(i + 1) % n], 7, true).await;
                }
            }
            let v0 = value(&stores[0]).await;
            let digest0 = stores[0].digest();
            let vv0 = stores[0].version_vector();
            for s in &stores {
                assert_eq!(s.version_vector(), vv0);
                assert_eq!(s.digest(), digest0);
                assert_eq!(s.verify_digest().await.unwrap(), digest0);
                assert_eq!(value(s).await, v0);
            }
            // Each replica's own nested fields, written only by it, all survive.
            let v0 = v0.unwrap();
            for step in &steps {
                if let Step::Edit { replica, edit: Edit::Set { field, .. } } = step {
                    assert!(
                        v0.pointer(&format!("/nested/r{replica}/f{field}")).is_some(),
                        "field of replica {replica} lost: {v0}"
                    );
                }
            }
            // Counters that existed before the partition add up every increment, whoever
            // made it. (Two replicas creating the same counter while apart keep one of the
            // two creations, like any concurrent write to one field.)
            for c in (0..2u8).filter(|_| shared_base) {
                let sum: i64 = steps.iter().filter_map(|s| match s {
                    Step::Edit { edit: Edit::Increment { counter, by }, .. } if *counter == c => Some(*by as i64),
                    _ => None,
                }).sum();
                assert_eq!(v0.pointer(&format!("/counters/c{c}")), Some(&json!(sum)), "{v0}");
            }
        });
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn concurrent_edits_to_different_fields_both_survive() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (hub, dev) = (open(&dir, "hub").await, open(&dir, "dev").await);
        // Both sides create the twin and its `desired`/`reported` maps while apart: the view
        // merges the concurrently created maps instead of hiding one.
        hub.twin_create(KEY, None).await.unwrap();
        dev.twin_create(
            KEY,
            Some(json!({"reported": {"version": "1.0"}, "desired": {}})),
        )
        .await
        .unwrap();
        hub.twin_patch(
            KEY,
            TwinPatch::Merge(json!({"desired": {"interval": "30s"}})),
        )
        .await
        .unwrap();
        dev.twin_patch(
            KEY,
            TwinPatch::Merge(json!({"reported": {"temperature": 21.5}})),
        )
        .await
        .unwrap();
        deliver(&hub, &dev, 3, false).await;
        deliver(&dev, &hub, 5, true).await;
        let want = json!({
            "desired": {"interval": "30s"},
            "reported": {"version": "1.0", "temperature": 21.5},
        });
        assert_eq!(value(&hub).await, Some(want.clone()));
        assert_eq!(value(&dev).await, Some(want));
        assert_eq!(hub.digest(), dev.digest());
        // A later edit on either side lands in the merged view.
        dev.twin_patch(
            KEY,
            TwinPatch::Merge(json!({"desired": {"interval": null}})),
        )
        .await
        .unwrap();
        deliver(&dev, &hub, 9, false).await;
        assert_eq!(
            hub.twin_get(KEY).await.unwrap().unwrap().value["desired"],
            json!({})
        );
    });
}

#[test]
fn concurrent_edits_to_one_field_resolve_the_same_everywhere() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (open(&dir, "a").await, open(&dir, "b").await);
        a.twin_create(KEY, Some(json!({"mode": "init"})))
            .await
            .unwrap();
        deliver(&a, &b, 1, false).await;
        a.twin_patch(KEY, TwinPatch::Merge(json!({"mode": "eco"})))
            .await
            .unwrap();
        b.twin_patch(KEY, TwinPatch::Merge(json!({"mode": "boost"})))
            .await
            .unwrap();
        deliver(&b, &a, 1, false).await;
        deliver(&a, &b, 1, false).await;
        let (va, vb) = (value(&a).await.unwrap(), value(&b).await.unwrap());
        assert_eq!(va, vb);
        assert!(va["mode"] == "eco" || va["mode"] == "boost", "{va}");
        assert_eq!(a.digest(), b.digest());
    });
}

/// Store state that must not move when something is refused.
async fn fingerprint(s: &Store) -> (VersionVector, Digest, Option<Value>, u64) {
    let t = s.twin_get(KEY).await.unwrap();
    (
        s.version_vector(),
        s.digest(),
        t.as_ref().map(|t| t.value.clone()),
        t.map_or(0, |t| t.changes),
    )
}

#[test]
fn hostile_patches_are_refused_and_change_nothing() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir, "s").await;
        s.twin_create(KEY, Some(json!({"a": {"b": 1}, "list": [1, 2], "n": 5})))
            .await
            .unwrap();
        s.put("plain", &json!({"x": 1})).await.unwrap();
        let mut deep = json!(1);
        for _ in 0..100 {
            deep = json!({ "d": deep });
        }
        let op = |o: Value| TwinPatch::from_json(KEY, json!({ "ops": [o] })).unwrap();
        let cases: Vec<(&str, TwinPatch, &str, &str)> = vec![
            (
                "deep nesting",
                TwinPatch::Merge(deep),
                "invalid_patch",
                "nested deeper than 32",
            ),
            (
                "huge string",
                TwinPatch::Merge(json!({"s": "x".repeat(100_000)})),
                "invalid_patch",
                "over the limit of 65536",
            ),
            (
                "huge patch",
                TwinPatch::Merge(json!({"s": vec!["x".repeat(60_000); 20]})),
                "value_too_large",
                "over the limit",
            ),
            (
                "non-object merge patch",
                TwinPatch::Merge(json!("text")),
                "invalid_patch",
                "must be a JSON object",
            ),
            (
                "not a pointer",
                op(json!({"op": "set", "path": "a/b", "value": 1})),
                "invalid_patch",
                "not a JSON pointer",
            ),
            (
                "bad escape",
                op(json!({"op": "set", "path": "/a~7", "value": 1})),
                "invalid_patch",
                "'~'",
            ),
            (
                "through a scalar",
                op(json!({"op": "set", "path": "/n/x", "value": 1})),
                "invalid_patch",
                "\"/n\" is not an object or a list",
            ),
            (
                "delete missing",
                op(json!({"op": "delete", "path": "/a/zzz"})),
                "invalid_patch",
                "does not exist",
            ),
            (
                "index past the end",
                op(json!({"op": "insert", "path": "/list/9", "value": 1})),
                "invalid_patch",
                "past the end",
            ),
            (
                "not an index",
                op(json!({"op": "set", "path": "/list/x", "value": 1})),
                "invalid_patch",
                "not a list index",
            ),
            (
                "insert into a map",
                op(json!({"op": "insert", "path": "/a/0", "value": 1})),
                "invalid_patch",
                "needs a list",
            ),
            (
                "increment a non-counter",
                op(json!({"op": "increment", "path": "/n"})),
                "invalid_patch",
                "not a counter",
            ),
            (
                "root op",
                op(json!({"op": "delete", "path": ""})),
                "invalid_patch",
                "root",
            ),
        ];
        for (what, patch, code, needle) in cases {
            let before = fingerprint(&s).await;
            let err = s.twin_patch(KEY, patch).await.unwrap_err();
            assert_eq!(err.code(), code, "{what}: {err}");
            assert!(err.to_string().contains(needle), "{what}: {err}");
            assert_eq!(fingerprint(&s).await, before, "{what} changed the store");
        }
        // A later op failing refuses the earlier ones of the same patch too.
        let before = fingerprint(&s).await;
        let two = TwinPatch::from_json(
            KEY,
            json!({"ops": [
                {"op": "set", "path": "/ok", "value": 1},
                {"op": "delete", "path": "/missing"},
            ]}),
        )
        .unwrap();
        assert_eq!(
            s.twin_patch(KEY, two).await.unwrap_err().code(),
            "invalid_patch"
        );
        assert_eq!(fingerprint(&s).await, before);
        // Wrong kinds, unknown twins, double creation, bad keys.
        let before = fingerprint(&s).await;
        let e = s
            .twin_patch("plain", TwinPatch::Merge(json!({"a": 1})))
            .await
            .unwrap_err();
        assert_eq!(e.code(), "wrong_kind", "{e}");
        assert_eq!(
            s.twin_create("plain", None).await.unwrap_err().code(),
            "wrong_kind"
        );
        let e = s.put(KEY, &json!(1)).await.unwrap_err();
        assert_eq!(e.code(), "wrong_kind", "{e}");
        assert!(e.to_string().contains("is a twin"), "{e}");
        assert_eq!(
            s.twin_create(KEY, None).await.unwrap_err().code(),
            "twin_exists"
        );
        assert_eq!(
            s.twin_patch("nope", TwinPatch::Merge(json!({})))
                .await
                .unwrap_err()
                .code(),
            "unknown_key"
        );
        assert_eq!(
            s.twin_create("", None).await.unwrap_err().code(),
            "invalid_key"
        );
        assert_eq!(
            s.twin_create("x", Some(json!([1])))
                .await
                .unwrap_err()
                .code(),
            "invalid_patch"
        );
        assert_eq!(fingerprint(&s).await, before);
        assert!(s.twin_get("x").await.unwrap().is_none());
        assert_eq!(
            s.get("plain").await.unwrap().unwrap().winner.value,
            Some(json!({"x": 1}))
        );
        // An unchanged value stores nothing.
        let w = s
            .twin_patch(KEY, TwinPatch::Merge(json!({"n": 5})))
            .await
            .unwrap();
        assert!(w.change.is_none());
        assert_eq!(fingerprint(&s).await, before);
    });
}

#[test]
fn hostile_remote_twin_changes_are_refused() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (open(&dir, "a").await, open(&dir, "b").await);
        a.twin_create(KEY, Some(json!({"x": 1}))).await.unwrap();
        let good = a
            .changes_since(&VersionVector::new(), 1 << 20)
            .await
            .unwrap();
        let ChangeBody::Twin(t) = &good[0].body else {
            panic!("not a twin change")
        };
        let forge = |bytes: Vec<u8>, actor: ActorId| Change {
            actor,
            seq: 1,
            hlc: good[0].hlc,
            body: ChangeBody::Twin(TwinChange {
                key: KEY.into(),
                change: bytes,
            }),
            seal: None,
            pruned_rollups: Vec::new(),
        };
        let mut flipped = t.change.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        let mut compressed = t.change.clone();
        compressed[8] = 2;
        let cases = vec![
            (
                "garbage",
                forge(b"not automerge at all".to_vec(), good[0].actor),
            ),
            ("corrupted", forge(flipped, good[0].actor)),
            ("compressed chunk", forge(compressed, good[0].actor)),
            // The automerge actor must be the change's kdelta actor.
            (
                "someone else's change",
                forge(t.change.clone(), ActorId([7; 16])),
            ),
            ("empty", forge(Vec::new(), good[0].actor)),
        ];
        for (what, c) in cases {
            let before = fingerprint(&b).await;
            let e = b.apply_remote(vec![c.clone()]).await.unwrap_err();
            assert_eq!(e.code(), "decode", "{what}: {e}");
            assert!(e.to_string().contains("twin change"), "{what}: {e}");
            assert_eq!(fingerprint(&b).await, before, "{what}");
            // The same through the wire codec.
            assert!(
                Change::from_cbor(&c.to_cbor(), &Limits::default()).is_err(),
                "{what}"
            );
        }
        b.apply_remote(good).await.unwrap();
        assert_eq!(value(&b).await, Some(json!({"x": 1})));
    });
}

#[test]
fn snapshots_history_as_of_and_diff() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let s = Store::open(&path, StoreConfig::default()).await.unwrap();
        let created = s
            .twin_create(KEY, Some(json!({"reported": {}})))
            .await
            .unwrap();
        let t_created = created.change.unwrap().hlc;
        let mut mid = None;
        for i in 0..600 {
            let w = s
                .twin_patch(KEY, TwinPatch::Merge(json!({"reported": {"n": i}})))
                .await
                .unwrap();
            if i == 299 {
                mid = w.change.map(|c| c.hlc);
            }
        }
        s.twin_patch(
            KEY,
            TwinPatch::Ops {
                ops: vec![PathOp::Set {
                    path: "/desired/interval".into(),
                    value: json!("10s"),
                }],
            },
        )
        .await
        .unwrap();
        let now = s.twin_get(KEY).await.unwrap().unwrap();
        assert_eq!(now.changes, 602);
        assert_eq!(
            now.value,
            json!({"reported": {"n": 599}, "desired": {"interval": "10s"}})
        );
        let mid = mid.unwrap();
        assert_eq!(
            s.twin_get_as_of(KEY, AsOf::Hlc(mid)).await.unwrap(),
            json!({"reported": {"n": 299}})
        );
        assert_eq!(
            s.twin_get_as_of(KEY, AsOf::Hlc(t_created)).await.unwrap(),
            json!({"reported": {}})
        );
        assert_eq!(
            s.twin_get_as_of(KEY, AsOf::WallMs(1))
                .await
                .unwrap_err()
                .code(),
            "before_history"
        );
        let h = s.twin_history(KEY, 2, None).await.unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].paths, vec!["/desired"]);
        assert_eq!(h[0].actor, s.actor());
        assert_eq!(h[1].paths, vec!["/reported/n"]);
        let older = s
            .twin_history(KEY, 1000, Some(HistoryCursor::before(h[1].hlc)))
            .await
            .unwrap();
        assert_eq!(older.len(), 600);
        assert_eq!(older.last().unwrap().paths, vec!["/reported"]);
        let d = s
            .twin_diff(KEY, AsOf::Hlc(mid), AsOf::Hlc(Hlc(i64::MAX as u64)))
            .await
            .unwrap();
        let paths: Vec<(&str, &str)> = d
            .changes
            .iter()
            .map(|c| (c.path.as_str(), c.op.as_str()))
            .collect();
        assert_eq!(
            paths,
            vec![("/desired", "added"), ("/reported/n", "changed")]
        );
        let digest = s.digest();
        s.close().await;
        // Reopened: loads from the snapshot plus the tail, same value and digest.
        let s = Store::open(&path, StoreConfig::default()).await.unwrap();
        assert_eq!(s.twin_get(KEY).await.unwrap().unwrap().value, now.value);
        assert_eq!(s.digest(), digest);
        assert_eq!(s.verify_digest().await.unwrap(), digest);
        let w = s
            .twin_patch(KEY, TwinPatch::Merge(json!({"reported": {"n": 600}})))
            .await
            .unwrap();
        assert_eq!(w.value["reported"]["n"], json!(600));
        assert_eq!(s.twin_keys("device/", 10, None).await.unwrap(), vec![KEY]);
        // A plain document beside the twin keeps working.
        s.put("notes", &json!("hello")).await.unwrap();
        assert_eq!(
            s.get("notes").await.unwrap().unwrap().winner.value,
            Some(json!("hello"))
        );
        s.close().await;
    });
}

/// Patches that share a write group: the twin's JSON is computed once per group, and every
/// patch answers the twin as its group left it — which holds its own edit — on a
/// multi-threaded runtime (reads in place) as on a current-thread one.
#[test]
fn patches_sharing_a_write_group_each_answer_a_twin_holding_their_edit() {
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for runtime in [rt(), multi] {
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let s = open(&dir, "s").await;
            s.twin_create(KEY, Some(json!({"reported": {}})))
                .await
                .unwrap();
            let writes = futures::future::join_all((0..48).map(|i| {
                let s = s.clone();
                async move {
                    s.twin_patch(
                        KEY,
                        TwinPatch::Merge(json!({"reported": {format!("f{i}"): i}})),
                    )
                    .await
                    .unwrap()
                }
            }))
            .await;
            for (i, w) in writes.iter().enumerate() {
                assert!(w.change.is_some(), "patch {i} stored nothing");
                assert_eq!(w.value["reported"][format!("f{i}")], json!(i), "patch {i}");
            }
            let all = value(&s).await.unwrap();
            assert_eq!(all["reported"].as_object().unwrap().len(), 48, "{all}");
            // The stored JSON row is the merged document, also after a reopen.
            s.close().await;
            let s = open(&dir, "s").await;
            assert_eq!(value(&s).await.unwrap(), all);
            s.close().await;
        });
    }
}
