//! Batch documents on real SQLite files: `Store::write_batch` is one change (one seq, one
//! HLC) with a version per key, all or nothing; siblings, deletes and explicit contexts work
//! as for single writes; replication, history, as-of, diff and the digest treat the batch's
//! versions like any other.

use kdelta_sync::*;
use serde_json::json;

async fn open(dir: &tempfile::TempDir, name: &str) -> Store {
    Store::open(dir.path().join(name), StoreConfig::default())
        .await
        .unwrap()
}

/// Everything a refused batch must leave untouched.
async fn fingerprint(s: &Store) -> (VersionVector, Digest, u64, u64, u64) {
    let st = s.stats().await.unwrap();
    (
        s.version_vector(),
        s.digest(),
        st.changes,
        st.doc_versions,
        st.doc_keys,
    )
}

fn dot(v: &DocVersion) -> Dot {
    Dot {
        actor: v.actor,
        seq: v.seq,
    }
}

#[tokio::test]
async fn a_batch_is_one_change_with_a_version_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, "a.db").await;
    let mut events = s.subscribe();
    let old = s.put("cfg/old", &json!(1)).await.unwrap();
    let before = s.version_vector().get(&s.actor());

    let written = s
        .write_batch(vec![
            BatchEntry::put("cfg/a", json!({"x": 1})),
            BatchEntry::put("cfg/b", json!([1, 2])),
            BatchEntry::delete("cfg/old"),
        ])
        .await
        .unwrap();
    assert_eq!(written.len(), 3);
    assert!(
        written
            .iter()
            .all(|v| v.seq == before + 1 && v.hlc == written[0].hlc)
    );
    assert_eq!(written[2].supersedes, vec![dot(&old)]);
    assert_eq!(s.version_vector().get(&s.actor()), before + 1);

    // One change in the log, carrying every write in order.
    let log = s.log_after(0, 100).await.unwrap();
    assert_eq!(log.len(), 2);
    let ChangeBody::DocBatch(b) = &log[1].1.body else {
        panic!("not a batch: {:?}", log[1].1.body)
    };
    let keys: Vec<&str> = b.writes.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(keys, ["cfg/a", "cfg/b", "cfg/old"]);
    assert!(b.writes[2].value.is_none());

    // Reads see each key's version of the batch.
    let a = s.get("cfg/a").await.unwrap().unwrap();
    assert_eq!(
        (a.winner.value, a.winner.seq),
        (Some(json!({"x": 1})), before + 1)
    );
    assert!(
        s.get("cfg/old")
            .await
            .unwrap()
            .unwrap()
            .winner
            .is_tombstone()
    );
    let h = s.history("cfg/old", 10, None).await.unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!((h[0].seq, h[0].value.clone()), (before + 1, None));
    let listed = s.list("cfg/", None, 10, None).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|d| d.winner.key.as_str())
            .collect::<Vec<_>>(),
        ["cfg/a", "cfg/b"]
    );
    let at_old = s
        .get_as_of("cfg/old", AsOf::Hlc(old.hlc))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(at_old.winner.value, Some(json!(1)));
    let d = s
        .diff("cfg/old", AsOf::Hlc(old.hlc), AsOf::Hlc(written[0].hlc))
        .await
        .unwrap();
    assert_eq!((d.from, d.to), (Some(json!(1)), None));

    // One event for the change, naming its keys.
    let _single = events.recv().await.unwrap();
    let ev = events.recv().await.unwrap();
    assert_eq!(
        ev.kind,
        ChangeEventKind::DocBatch {
            keys: vec!["cfg/a".into(), "cfg/b".into(), "cfg/old".into()],
            deleted: 1
        }
    );
    assert_eq!(s.verify_digest().await.unwrap(), s.digest());
    let st = s.stats().await.unwrap();
    assert_eq!((st.changes, st.doc_versions, st.doc_keys), (2, 4, 3));
    s.close().await;
}

#[tokio::test]
async fn a_bad_entry_refuses_the_whole_batch_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, "a.db").await;
    let live = s.put("live", &json!(1)).await.unwrap();
    s.put("gone", &json!(1)).await.unwrap();
    s.delete("gone").await.unwrap();
    s.twin_create("twin", Some(json!({"a": 1}))).await.unwrap();
    let other = Dot {
        actor: ActorId([9; 16]),
        seq: 1,
    };
    let good = || BatchEntry::put("new/key", json!("fresh"));
    let cases: Vec<(Vec<BatchEntry>, Option<usize>, &str)> = vec![
        (vec![], None, "no documents"),
        (
            vec![good(), BatchEntry::put("bad\u{0}key", json!(1))],
            Some(1),
            "control characters",
        ),
        (
            vec![good(), BatchEntry::put("live", json!(2)), good()],
            Some(2),
            "written twice",
        ),
        (
            vec![good(), BatchEntry::delete("never")],
            Some(1),
            "does not exist",
        ),
        (
            vec![good(), BatchEntry::delete("gone")],
            Some(1),
            "does not exist",
        ),
        (
            vec![BatchEntry::put("twin", json!(1)), good()],
            Some(0),
            "is a twin",
        ),
        (
            vec![
                good(),
                BatchEntry::put("live", json!(2)).with_context(vec![other]),
            ],
            Some(1),
            "not a version of",
        ),
        (
            // A dot of another key is not a version of this one.
            vec![BatchEntry::put("new/key", json!(2)).with_context(vec![dot(&live)])],
            Some(0),
            "not a version of",
        ),
        (
            vec![good(), BatchEntry::put("big", json!("x".repeat(2 << 20)))],
            Some(1),
            "over the limit",
        ),
        (
            (0..1001)
                .map(|i| BatchEntry::put(format!("k{i}"), json!(i)))
                .collect(),
            None,
            "over the maximum of 1000",
        ),
        (
            // Each value fits, the change does not.
            (0..6)
                .map(|i| BatchEntry::put(format!("k{i}"), json!("y".repeat(900_000))))
                .collect(),
            None,
            "split it",
        ),
    ];
    let before = fingerprint(&s).await;
    for (entries, index, problem) in cases {
        let err = s.write_batch(entries).await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(problem), "{msg:?} should say {problem:?}");
        match index {
            Some(i) => {
                assert!(
                    matches!(&err, StoreError::BatchEntry { index, .. } if *index == i),
                    "{err:?}"
                );
                assert!(msg.starts_with(&format!("entry {i}: ")), "{msg}");
            }
            None => assert!(!matches!(err, StoreError::BatchEntry { .. }), "{err:?}"),
        }
        assert!(err.is_client_error(), "{err:?}");
        assert_eq!(fingerprint(&s).await, before, "after {msg}");
        assert_eq!(s.get("new/key").await.unwrap(), None);
        assert_eq!(
            s.get("live").await.unwrap().unwrap().winner.value,
            Some(json!(1))
        );
    }
    // The store still writes, at the next seq (no seq was burnt by the refusals).
    let v = s.write_batch(vec![good()]).await.unwrap();
    assert_eq!(v[0].seq, before.0.get(&s.actor()) + 1);
    s.close().await;
}

#[tokio::test]
async fn batches_resolve_siblings_or_exactly_the_context_given() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(&dir, "a.db").await, open(&dir, "b.db").await);
    let va = a.put("k", &json!("a")).await.unwrap();
    let vb = b.put("k", &json!("b")).await.unwrap();
    let exchange = || async {
        a.apply_remote(
            b.changes_since(&a.version_vector(), usize::MAX)
                .await
                .unwrap(),
        )
        .await
        .unwrap();
        b.apply_remote(
            a.changes_since(&b.version_vector(), usize::MAX)
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    };
    exchange().await;
    assert_eq!(a.siblings("k").await.unwrap().len(), 2);

    // Naming only b's version: a's stays a sibling beside the batch's.
    let w = a
        .write_batch(vec![
            BatchEntry::put("k", json!("a2")).with_context(vec![dot(&vb)]),
            BatchEntry::put("other", json!(0)),
        ])
        .await
        .unwrap();
    assert_eq!(w[0].supersedes, vec![dot(&vb)]);
    assert!(w[1].supersedes.is_empty());
    let sib: Vec<Dot> = a.siblings("k").await.unwrap().iter().map(dot).collect();
    assert_eq!(sib.len(), 2);
    assert!(sib.contains(&dot(&va)) && sib.contains(&dot(&w[0])));

    // Concurrently on b: a batch over the same keys.
    let wb = b
        .write_batch(vec![
            BatchEntry::put("other", json!("b")),
            BatchEntry::delete("k"),
        ])
        .await
        .unwrap();
    assert_eq!(wb[1].supersedes.len(), 2);
    exchange().await;
    for s in [&a, &b] {
        // k: a's old version (b's delete resolved it, but a's batch version is concurrent
        // with b's delete) — the heads are a's batch version and b's tombstone.
        let heads: Vec<Dot> = s.siblings("k").await.unwrap().iter().map(dot).collect();
        assert_eq!(heads.len(), 2, "{heads:?}");
        assert!(heads.contains(&dot(&w[0])) && heads.contains(&dot(&wb[1])));
        assert_eq!(s.siblings("other").await.unwrap().len(), 2);
    }
    assert_eq!(a.digest(), b.digest());

    // A batch without context resolves every sibling, on both sides after sync.
    let last = a
        .write_batch(vec![
            BatchEntry::delete("k"),
            BatchEntry::put("other", json!("merged")),
        ])
        .await
        .unwrap();
    assert_eq!(last[0].supersedes.len(), 2);
    exchange().await;
    for s in [&a, &b] {
        assert_eq!(s.siblings("k").await.unwrap().len(), 1);
        assert!(s.get("k").await.unwrap().unwrap().winner.is_tombstone());
        assert_eq!(
            s.get("other").await.unwrap().unwrap().winner.value,
            Some(json!("merged"))
        );
        assert_eq!(s.verify_digest().await.unwrap(), s.digest());
    }
    assert_eq!(a.digest(), b.digest());
    assert_eq!(a.version_vector(), b.version_vector());
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn batches_replicate_in_small_pages_and_keep_history_on_the_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(&dir, "a.db").await, open(&dir, "b.db").await);
    let mut points = Vec::new();
    for round in 0..5 {
        let v = a
            .write_batch(
                (0..20)
                    .map(|i| BatchEntry::put(format!("dev/{i:02}"), json!({"round": round})))
                    .collect(),
            )
            .await
            .unwrap();
        points.push(v[0].hlc);
    }
    // A page budget smaller than one batch: still one whole change per page.
    let mut pages = 0;
    loop {
        let page = a.changes_since(&b.version_vector(), 100).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert_eq!(page.len(), 1);
        let back = Change::from_cbor(&page[0].to_cbor(), &Limits::default()).unwrap();
        assert_eq!(back, page[0]);
        b.apply_remote(page).await.unwrap();
        pages += 1;
    }
    assert_eq!(pages, 5);
    assert_eq!(b.digest(), a.digest());
    assert_eq!(b.verify_digest().await.unwrap(), a.digest());
    let h = b.history("dev/07", 100, None).await.unwrap();
    assert_eq!(h.len(), 5);
    assert!(h.iter().all(|v| v.actor == a.actor()));
    assert_eq!(h.iter().map(|v| v.seq).collect::<Vec<_>>(), [5, 4, 3, 2, 1]);
    let at = b
        .get_as_of("dev/07", AsOf::Hlc(points[2]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(at.winner.value, Some(json!({"round": 2})));
    assert_eq!(b.list("dev/", None, 100, None).await.unwrap().len(), 20);

    // A hostile batch from a peer (a key twice) is refused whole.
    let mut bad = a
        .changes_since(&VersionVector::new(), usize::MAX)
        .await
        .unwrap()[0]
        .clone();
    bad.actor = ActorId([3; 16]);
    if let ChangeBody::DocBatch(batch) = &mut bad.body {
        let first = batch.writes[0].clone();
        batch.writes.push(first);
    }
    let before = fingerprint(&b).await;
    let err = b.apply_remote(vec![bad]).await.unwrap_err();
    assert!(err.to_string().contains("written twice"), "{err}");
    assert_eq!(fingerprint(&b).await, before);
    a.close().await;
    b.close().await;
}
