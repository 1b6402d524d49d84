//! Twins on a PostgreSQL hub: the reads (merged value, history pages, as-of, diffs,
//! listings) answer as a SQLite store holding the same changes — concurrent edits, a twin
//! longer than one load page and than SQLite's snapshot interval included, errors message
//! for message — and the hub's own edits (create, patch) are checked and refused as
//! SQLite's, serialised between replicas (neither replica's edit lost), and reach devices
//! signed, rendering the same there.

use super::docs::same;
use super::*;

/// Every twin read of `key` on both: value, every history page of 1, 2 and 1000, the value
/// as of every change's HLC (and just before, and its millisecond), diffs between
/// consecutive points.
async fn compare_twin(r: &Store, hub: &PgStore, key: &str) {
    compare_twin_every(r, hub, key, 1, &[1, 2, 1000]).await
}

/// [`compare_twin`] for a long twin: history pages of `limits`, the points of every
/// `step`-th change (each read loads the whole twin).
async fn compare_twin_every(r: &Store, hub: &PgStore, key: &str, step: usize, limits: &[usize]) {
    same(
        &format!("twin {key}"),
        r.twin_get(key).await,
        hub.twin_get(key).await,
    );
    for &limit in limits {
        let mut before = None;
        loop {
            let a = r.twin_history(key, limit, before).await;
            let b = hub.twin_history(key, limit, before).await;
            let next = match &a {
                Ok(page) if page.len() == limit => page
                    .last()
                    .map(|e| HistoryCursor::after_entry(e.hlc, e.actor)),
                _ => None,
            };
            same(
                &format!("twin history {key} limit {limit} before {before:?}"),
                a,
                b,
            );
            match next {
                Some(n) => before = Some(n),
                None => break,
            }
        }
    }
    let all = r.twin_history(key, 1000, None).await.unwrap_or_default();
    let mut points = vec![AsOf::Hlc(Hlc(1)), AsOf::Hlc(Hlc(i64::MAX as u64))];
    for e in all.iter().step_by(step) {
        points.push(AsOf::Hlc(e.hlc));
        points.push(AsOf::Hlc(Hlc(e.hlc.0 - 1)));
        points.push(AsOf::WallMs(e.hlc.ms()));
    }
    for &at in &points {
        same(
            &format!("twin {key} as of {at}"),
            r.twin_get_as_of(key, at).await,
            hub.twin_get_as_of(key, at).await,
        );
    }
    for w in points.windows(2) {
        same(
            &format!("twin {key} diff {} .. {}", w[0], w[1]),
            r.twin_diff(key, w[0], w[1]).await,
            hub.twin_diff(key, w[0], w[1]).await,
        );
    }
}

/// Twin listings on both, page by page.
async fn compare_twin_lists(r: &Store, hub: &PgStore) {
    for prefix in ["", "t/", "t/x", "nothing/"] {
        for limit in [1, 2, 1000] {
            let mut after: Option<String> = None;
            loop {
                let a = r.twin_keys(prefix, limit, after.as_deref()).await;
                let b = hub.twin_keys(prefix, limit, after.as_deref()).await;
                let next = match &a {
                    Ok(page) if page.len() == limit => page.last().cloned(),
                    _ => None,
                };
                same(&format!("twin keys {prefix:?} limit {limit}"), a, b);
                match next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
        }
    }
}

fn merge(v: serde_json::Value) -> TwinPatch {
    TwinPatch::Merge(v)
}

fn ops(v: serde_json::Value) -> TwinPatch {
    TwinPatch::from_json("t", json!({ "ops": v })).unwrap()
}

#[tokio::test]
async fn twin_reads_answer_as_a_sqlite_store_with_the_same_changes() {
    let Some(db) = TestDb::new("twin_reads").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (device(&dir, "a.db").await, device(&dir, "b.db").await);
    let reference = device(&dir, "ref.db").await;
    let hub = db.replica().await;

    // Edits made apart on two devices: concurrent creation of one map, counters, lists,
    // deletes, keys that sort differently bytewise than in most collations.
    a.twin_create(
        "t/x",
        Some(json!({"desired": {"interval": 10}, "tags": ["a"]})),
    )
    .await
    .unwrap();
    sync(&a, &b, 1 << 20).await;
    a.twin_patch("t/x", merge(json!({"reported": {"temp": 21.5}})))
        .await
        .unwrap();
    b.twin_patch(
        "t/x",
        merge(json!({"reported": {"rh": 40}, "desired": {"interval": 20}})),
    )
    .await
    .unwrap();
    b.twin_patch(
        "t/x",
        ops(json!([
            {"op": "increment", "path": "/boots", "by": 2},
            {"op": "insert", "path": "/tags/-", "value": "b"},
        ])),
    )
    .await
    .unwrap();
    a.twin_patch("t/x", ops(json!([{"op": "increment", "path": "/boots"}])))
        .await
        .unwrap();
    a.twin_patch("t/x", merge(json!({"tags": null})))
        .await
        .unwrap();
    a.twin_create("t/Z", None).await.unwrap();
    b.twin_create("t/é", Some(json!({"e": true})))
        .await
        .unwrap();
    b.twin_create("t/xa", Some(json!({"n": 0}))).await.unwrap();
    // Longer than one load page of the hub and SQLite's snapshot interval (256).
    for i in 1..=1_030 {
        b.twin_patch(
            "t/xa",
            ops(json!([{"op": "set", "path": "/n", "value": i}])),
        )
        .await
        .unwrap();
    }
    a.put("doc", &json!(1)).await.unwrap();

    sync(&a, &reference, 1 << 20).await;
    sync(&b, &reference, 1 << 20).await;
    sync(&a, &hub, 700).await;
    sync(&b, &hub, 900).await;
    assert_eq!(hub.digest().await.unwrap(), reference.digest());
    let x = hub.twin_get("t/x").await.unwrap().unwrap();
    assert_eq!(
        x.value["reported"],
        json!({"rh": 40, "temp": 21.5}),
        "both sides' fields: {}",
        x.value
    );
    assert_eq!(hub.twin_get("t/xa").await.unwrap().unwrap().changes, 1_031);

    for key in ["t/x", "t/Z", "t/é", "doc", "missing"] {
        compare_twin(&reference, &hub, key).await;
    }
    compare_twin_every(&reference, &hub, "t/xa", 97, &[300, 1000]).await;
    compare_twin_lists(&reference, &hub).await;
    hub.close().await;
    db.drop().await;
}

#[tokio::test]
async fn hub_twin_edits_are_checked_and_refused_as_on_sqlite_and_reach_devices() {
    let Some(db) = TestDb::new("twin_writes").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let hub = db.replica().await;
    // The same edits on a SQLite store: same values, same errors.
    let s = device(&dir, "s.db").await;
    hub.put("doc", &json!({"plain": 1})).await.unwrap();
    s.put("doc", &json!({"plain": 1})).await.unwrap();
    let strip = |w: TwinWrite| (w.key, w.value, w.change.is_some());

    let c = hub
        .twin_create("dev/1", Some(json!({"desired": {"interval": 10}})))
        .await
        .unwrap();
    let cs = s
        .twin_create("dev/1", Some(json!({"desired": {"interval": 10}})))
        .await
        .unwrap();
    let meta = c.change.unwrap();
    assert_eq!((meta.actor, meta.seq), (hub.actor(), 2));
    assert_eq!(strip(c), strip(cs));

    let set = |path: &str| ops(json!([{"op": "set", "path": path, "value": 1}]));
    let edits: Vec<(&str, &str, TwinEdit)> = vec![
        ("create existing", "dev/1", TwinEdit::Create(None)),
        (
            "patch missing",
            "dev/none",
            TwinEdit::Patch(merge(json!({"a": 1}))),
        ),
        (
            "create on a document",
            "doc",
            TwinEdit::Create(Some(json!({"a": 1}))),
        ),
        (
            "patch a document",
            "doc",
            TwinEdit::Patch(merge(json!({"a": 1}))),
        ),
        ("bad key", "", TwinEdit::Create(None)),
        (
            "create with a non-object",
            "dev/2",
            TwinEdit::Create(Some(json!([1]))),
        ),
        (
            "merge patch not an object",
            "dev/1",
            TwinEdit::Patch(merge(json!(3))),
        ),
        (
            "path through a scalar",
            "dev/1",
            TwinEdit::Patch(set("/desired/interval/x")),
        ),
        (
            "delete a missing path",
            "dev/1",
            TwinEdit::Patch(ops(json!([{"op": "delete", "path": "/nope"}]))),
        ),
        (
            "increment a non-counter",
            "dev/1",
            TwinEdit::Patch(ops(
                json!([{"op": "increment", "path": "/desired/interval"}]),
            )),
        ),
        (
            "too large",
            "dev/1",
            TwinEdit::Patch(merge(
                json!({"s": "x".repeat(hub.config().limits.max_value_bytes + 1)}),
            )),
        ),
        (
            "no-op patch",
            "dev/1",
            TwinEdit::Patch(merge(json!({"desired": {"interval": 10}}))),
        ),
    ];
    let vv = hub.version_vector().await.unwrap();
    let changes = db.count("SELECT count(*) FROM {s}.changes").await;
    for (what, key, edit) in edits {
        let (a, b) = match edit {
            TwinEdit::Create(v) => (
                s.twin_create(key, v.clone()).await,
                hub.twin_create(key, v).await,
            ),
            TwinEdit::Patch(p) => (
                s.twin_patch(key, p.clone()).await,
                hub.twin_patch(key, p).await,
            ),
        };
        match what {
            "no-op patch" => assert!(b.as_ref().is_ok_and(|w| w.change.is_none()), "{b:?}"),
            _ => assert!(b.is_err(), "{what}: {b:?}"),
        }
        same(what, a.map(strip), b.map(strip));
    }
    // Nothing refused (nor the no-op) stored anything.
    assert_eq!(hub.version_vector().await.unwrap(), vv);
    assert_eq!(db.count("SELECT count(*) FROM {s}.changes").await, changes);
    assert!(hub.twin_get("dev/2").await.unwrap().is_none());

    // Good edits: merge patches and path operations, the same values as SQLite's.
    let good = [
        merge(json!({"reported": {"temp": 20}, "desired": {"mode": "eco"}})),
        ops(json!([
            {"op": "increment", "path": "/restarts", "by": 3},
            {"op": "set", "path": "/list", "value": [1, {"a": 2}]},
            {"op": "insert", "path": "/list/0", "value": 0},
        ])),
        merge(json!({"desired": {"mode": null}})),
    ];
    for p in good {
        let b = hub.twin_patch("dev/1", p.clone()).await.unwrap();
        let a = s.twin_patch("dev/1", p).await.unwrap();
        assert!(b.change.is_some());
        assert_eq!(strip(a), strip(b));
    }
    hub.twin_create("dev/2", None).await.unwrap();

    // A device syncing from the hub verifies every change and renders every twin the same.
    let reader = device(&dir, "reader.db").await;
    sync(&hub, &reader, 1 << 20).await;
    let report = Store::verify_file(dir.path().join("reader.db"))
        .await
        .unwrap();
    assert!(report.ok(), "{:?}", report.failures);
    assert_eq!(report.unsigned, 0);
    assert_eq!(
        reader.twin_get("dev/1").await.unwrap().unwrap().value,
        s.twin_get("dev/1").await.unwrap().unwrap().value
    );
    for key in ["dev/1", "dev/2", "doc"] {
        compare_twin(&reader, &hub, key).await;
    }
    compare_twin_lists(&reader, &hub).await;

    // The device edits while the hub does: both edits merge, on both.
    reader
        .twin_patch("dev/1", merge(json!({"reported": {"rh": 50}})))
        .await
        .unwrap();
    hub.twin_patch("dev/1", merge(json!({"desired": {"interval": 30}})))
        .await
        .unwrap();
    sync(&reader, &hub, 1 << 20).await;
    sync(&hub, &reader, 1 << 20).await;
    let v = hub.twin_get("dev/1").await.unwrap().unwrap().value;
    assert_eq!(v["reported"]["rh"], 50, "{v}");
    assert_eq!(v["desired"]["interval"], 30, "{v}");
    compare_twin(&reader, &hub, "dev/1").await;
    hub.close().await;
    db.drop().await;
}

#[tokio::test]
async fn two_replicas_editing_one_twin_at_once_keep_every_edit() {
    let Some(db) = TestDb::new("twin_race").await else {
        return;
    };
    let (r1, r2) = (db.replica().await, db.replica().await);
    r1.twin_create("race", None).await.unwrap();
    const EACH: usize = 15;
    let edit = |hub: PgStore, tag: &'static str| async move {
        for i in 0..EACH {
            let p = ops(json!([
                {"op": "increment", "path": "/n"},
                {"op": "set", "path": format!("/{tag}/i{i}"), "value": i},
            ]));
            let w = hub.twin_patch("race", p).await.unwrap();
            assert!(w.change.is_some(), "{w:?}");
        }
    };
    let (x, y) = tokio::join!(
        tokio::spawn(edit(r1.clone(), "r1")),
        tokio::spawn(edit(r2.clone(), "r2"))
    );
    x.unwrap();
    y.unwrap();
    // Every edit is in the twin: each was made on top of the other replica's (the hub
    // actor's lock serialises them), so automerge refused none as a reused seq.
    let t = r2.twin_get("race").await.unwrap().unwrap();
    assert_eq!(t.changes, 2 * EACH as u64 + 1);
    assert_eq!(t.value["n"], 2 * EACH, "{}", t.value);
    for tag in ["r1", "r2"] {
        let fields = t.value[tag].as_object().unwrap();
        assert_eq!(fields.len(), EACH, "{}", t.value);
    }
    assert_eq!(r1.twin_get("race").await.unwrap(), Some(t.clone()));
    // A device receives the same twin.
    let dir = tempfile::tempdir().unwrap();
    let dev = device(&dir, "dev.db").await;
    sync(&r1, &dev, 1 << 20).await;
    assert_eq!(dev.twin_get("race").await.unwrap(), Some(t));
    compare_twin(&dev, &r2, "race").await;
    r1.close().await;
    r2.close().await;
    db.drop().await;
}
