//! Local changes are sealed from the writer's own data (`chain.rs`, `Writer::seal_local`),
//! not by reading them back. The oracle here is the read-back: every local change as the log
//! serves it (`changes_since`, the path peers get) must carry a signature over the hash of
//! exactly that body, linked to the change before it, and `Store::verify_file` (the path of
//! `kdelta verify`, which recomputes each body hash from the rows) must pass. Checked for
//! every local change kind, with the values SQLite does not give back bit for bit, and over
//! random mixes of writes.

use std::collections::BTreeMap;

use kdelta_sync::seal::{self, CHAIN_START, Hash};
use kdelta_sync::*;
use proptest::prelude::*;
use serde_json::json;

const T0: i64 = 1_764_000_000_000;
const MIN: i64 = 60_000;

async fn open(dir: &tempfile::TempDir, name: &str) -> Store {
    Store::open(dir.path().join(name), StoreConfig::default())
        .await
        .unwrap()
}

/// Checks every change of `store`'s own actor as served: signed by one key, linked in seq
/// order from [`CHAIN_START`], its signature over the hash of the body served. The survivor
/// of a log run (`Seal::run_from`) stands for the seqs below it down to the run's start; its
/// link is to a change compacted away. Returns how many seqs it checked (the vector's).
async fn assert_sealed_as_served(store: &Store) -> u64 {
    let me = store.actor();
    let all = store
        .changes_since(&VersionVector::new(), usize::MAX)
        .await
        .unwrap();
    let mut prev: Hash = CHAIN_START;
    let mut key = None;
    let mut checked = 0;
    for c in all.iter().filter(|c| c.actor == me) {
        assert_eq!(
            c.first_seq(),
            checked + 1,
            "the log serves own changes in seq order"
        );
        checked = c.seq;
        let s = c
            .seal
            .as_ref()
            .unwrap_or_else(|| panic!("seq {} is unsigned", c.seq));
        assert_eq!(*key.get_or_insert(s.key), s.key, "seq {}: one key", c.seq);
        if s.run_from.is_none() {
            assert_eq!(s.prev, prev, "seq {} links to seq {}", c.seq, c.seq - 1);
        } else {
            assert!(
                s.body.is_some(),
                "seq {}: only a wholly pruned change survives a run",
                c.seq
            );
        }
        // A change retention pruned wholly is served empty, with its body hash.
        if s.body.is_some() {
            assert!(
                matches!(&c.body, ChangeBody::Readings(b) if b.series.is_empty()),
                "seq {}: a body hash with a body",
                c.seq
            );
            assert!(s.pruned.is_empty(), "seq {}: and no unit hashes", c.seq);
        }
        let body = s.body_hash_of(&c.body);
        let hash = seal::change_hash(&me, c.seq, c.hlc, &s.prev, &body);
        assert!(
            seal::verify(&s.key, &hash, &s.sig),
            "seq {} ({:?}): sealed over another body than the one served",
            c.seq,
            std::mem::discriminant(&c.body)
        );
        prev = hash;
    }
    checked
}

/// Closes `store` and runs the `kdelta verify` check on its file: every change signed and
/// valid.
async fn assert_verifies(store: Store, changes: u64) {
    let path = store.path().to_owned();
    store.close().await;
    let report = Store::verify_file(&path).await.unwrap();
    assert!(report.ok(), "{:?}", report.failures);
    assert_eq!(report.unsigned, 0);
    assert!(report.signed + report.compacted >= changes, "{report:?}");
}

fn readings(series: &str, from: i64, values: &[f64], unit: Option<&str>) -> ReadingBatch {
    let mut b = ReadingBatch::new();
    for (i, v) in values.iter().enumerate() {
        b.push(series, from + i as i64 * 1000, *v, unit);
    }
    b
}

/// Every kind of local change, each in the shapes that make its served body differ from
/// the caller's input (merged and sorted readings, `-0.0`, metadata, timing records; siblings
/// resolved by a put; deletes; batches with and without explicit contexts; twins;
/// corrections; gap records and the readings changes they prune).
#[tokio::test]
async fn every_local_change_kind_is_sealed_as_it_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, "a.db").await;
    let other = open(&dir, "b.db").await;

    // Readings: unsorted input, one series given twice, -0.0 (SQLite gives back 0.0), the
    // smallest subnormal, huge and integral values, a unit, metadata, no unit.
    let mut b = ReadingBatch::new();
    b.push("t", T0 + 5000, -0.0, Some("°C"));
    b.push("t", T0, 21.5, Some("°C"));
    b.push("h", T0, 5e-324, None);
    b.push("t", T0 + 1000, 1e300, None);
    b.push("h", T0 + 1000, -7.0, None);
    b.series[1]
        .meta
        .insert("room".into(), "lab \u{2603} 1".into());
    s.append(b).await.unwrap();
    s.append(readings("z", T0, &[-0.0, 0.0, -0.0], None))
        .await
        .unwrap();
    // Parts: several changes of one job.
    let mut big = ReadingBatch::new();
    for i in 0..10 {
        big.push(
            &format!("p{}", i % 3),
            T0 + i * 10,
            i as f64 * -0.5,
            Some("V"),
        );
    }
    let parts = s.append_in_parts(big).await.unwrap();
    assert!(!parts.is_empty());
    // Readings sampled under an untrusted clock, then corrected.
    let boot = BootId([3; 16]);
    for m in 0..3 {
        let mut b = readings("boot", 65_000 + m * MIN, &[1.0, 2.0], None);
        b.timing = Some(ReadingTiming {
            boot_id: boot,
            offset_ms: m * MIN,
        });
        s.append(b).await.unwrap();
    }
    s.correct_reading_times(boot, T0 - 65_000, TimeBasis::LocalClock)
        .await
        .unwrap()
        .expect("a correction change");

    // Documents: a put, siblings from another store resolved by a put, a delete.
    s.put("doc/a", &json!({"v": 1, "s": "x"})).await.unwrap();
    other.put("doc/a", &json!({"v": "theirs"})).await.unwrap();
    other.put("doc/b", &json!([1, 2, 3])).await.unwrap();
    let theirs = other
        .changes_since(&VersionVector::new(), usize::MAX)
        .await
        .unwrap();
    s.apply_remote(theirs).await.unwrap();
    let v = s.put("doc/a", &json!({"v": 2})).await.unwrap();
    assert_eq!(v.supersedes.len(), 2, "resolves its own version and theirs");
    s.delete("doc/b").await.unwrap();
    // A batch: puts, a delete, an explicit context naming the other store's version.
    s.put("doc/c", &json!(null)).await.unwrap();
    let their_a = Dot {
        actor: other.actor(),
        seq: 1,
    };
    s.write_batch(vec![
        BatchEntry::put("doc/z", json!("last key first")),
        BatchEntry::put("doc/a", json!(3)).with_context(vec![their_a, their_a]),
        BatchEntry::delete("doc/c"),
        BatchEntry::put("doc/d", json!({"deep": {"x": [1.5, -0.0]}})),
    ])
    .await
    .unwrap();

    // Twins: created empty, created with a value, patched.
    s.twin_create("twin/a", None).await.unwrap();
    s.twin_create("twin/b", Some(json!({"desired": {"interval": 5}})))
        .await
        .unwrap();
    s.twin_patch(
        "twin/b",
        TwinPatch::Merge(json!({"reported": {"temp": 21.5}})),
    )
    .await
    .unwrap();

    // Gap records: the hard limit drops unacknowledged readings (and prunes the readings
    // changes they were in: those are served with their body hash, pruned wholly).
    for m in 0..4 {
        s.append(readings("old", T0 + m * MIN, &[1.0; 30], Some("u")))
            .await
            .unwrap();
    }
    let r = s
        .prune_before(T0 + 2 * MIN, 10, &Unacked::Drop(VersionVector::new()))
        .await
        .unwrap();
    assert!(r.gaps >= 1, "{r:?}");
    assert!(!s.gaps(None, 0, 100).await.unwrap().is_empty());

    // And local writes after all that still link.
    s.append(readings("t", T0 + 9000, &[1.0], Some("°C")))
        .await
        .unwrap();
    s.put("doc/e", &json!(1)).await.unwrap();

    let checked = assert_sealed_as_served(&s).await;
    assert_eq!(checked, s.version_vector().get(&s.actor()));
    // The changes of minutes 0 and 1 of "old" (and the readings the prunes above took) went
    // wholly: each travels with its body hash.
    let served = s
        .changes_since(&VersionVector::new(), usize::MAX)
        .await
        .unwrap();
    let wholly = served
        .iter()
        .filter(|c| c.seal.as_ref().is_some_and(|s| s.body.is_some()))
        .count();
    let emptied = served
        .iter()
        .filter(|c| matches!(&c.body, ChangeBody::Readings(b) if b.series.is_empty()))
        .count();
    assert!(wholly >= 2, "{wholly} wholly pruned changes");
    assert_eq!(
        wholly, emptied,
        "every emptied change carries its body hash"
    );
    let kinds: BTreeMap<String, usize> = s
        .changes_since(&VersionVector::new(), usize::MAX)
        .await
        .unwrap()
        .iter()
        .filter(|c| c.actor == s.actor())
        .fold(BTreeMap::new(), |mut m, c| {
            let kind = format!("{:?}", c.body);
            *m.entry(kind.split('(').next().unwrap().to_owned())
                .or_default() += 1;
            m
        });
    for kind in [
        "Readings",
        "Doc",
        "DocBatch",
        "Twin",
        "TimeCorrection",
        "Gap",
    ] {
        assert!(kinds.contains_key(kind), "no {kind} change: {kinds:?}");
    }
    other.close().await;
    assert_verifies(s, checked).await;
}

/// A store reopened seals its next change from the stored chain (no cached tip yet).
#[tokio::test]
async fn a_reopened_store_links_to_its_stored_chain() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, "a.db").await;
    s.put("k", &json!(1)).await.unwrap();
    s.append(readings("t", T0, &[1.0], None)).await.unwrap();
    s.close().await;
    let s = open(&dir, "a.db").await;
    s.put("k", &json!(2)).await.unwrap();
    s.append(readings("t", T0 + 1000, &[2.0], None))
        .await
        .unwrap();
    assert_eq!(assert_sealed_as_served(&s).await, 4);
    assert_verifies(s, 4).await;
}

/// A received readings change holding `-0.0` is refused naming it, and nothing of its page
/// is stored: SQLite would keep `0.0`, and the stored change would fail its own body hash at
/// the next hop.
#[tokio::test]
async fn a_received_negative_zero_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(&dir, "a.db").await, open(&dir, "b.db").await);
    a.append(readings("t", T0, &[1.0, 2.0], None))
        .await
        .unwrap();
    let mut changes = a
        .changes_since(&VersionVector::new(), usize::MAX)
        .await
        .unwrap();
    let ChangeBody::Readings(batch) = &mut changes[0].body else {
        panic!("a readings change")
    };
    batch.series[0].values[1] = -0.0;
    // Unsigned (a signing peer's seal would be over its -0.0 and pass; this one's would not).
    changes[0].seal = None;
    let err = b.apply_remote(changes).await.unwrap_err().to_string();
    assert!(
        err.contains("negative zero") && err.contains(&format!("{}", T0 + 1000)),
        "{err}"
    );
    assert_eq!(b.version_vector().get(&a.actor()), 0);
}

/// One local write of the random mixes below.
#[derive(Debug, Clone)]
enum Op {
    Readings(Vec<(u8, i64, f64)>, Option<String>, bool),
    Put(u8, serde_json::Value),
    Delete(u8),
    Batch(Vec<(u8, Option<i64>)>),
    Twin(u8, i64),
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(-0.0),
        Just(0.0),
        Just(5e-324),
        Just(-f64::MAX),
        Just(f64::MAX),
        -1e6f64..1e6,
        (-1000i64..1000).prop_map(|i| i as f64),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (
            proptest::collection::vec((0u8..3, 0i64..20, value()), 1..12),
            proptest::option::of("[a-zA-Z°%/]{1,4}"),
            any::<bool>(),
        )
            .prop_map(|(r, unit, timed)| Op::Readings(r, unit, timed)),
        2 => (0u8..4, any::<i64>()).prop_map(|(k, v)| Op::Put(k, json!({ "v": v }))),
        1 => (0u8..4).prop_map(Op::Delete),
        1 => proptest::collection::btree_map(0u8..4, proptest::option::of(any::<i64>()), 1..4)
            .prop_map(|m| Op::Batch(m.into_iter().collect())),
        1 => (0u8..2, any::<i64>()).prop_map(|(k, v)| Op::Twin(k, v)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, .. ProptestConfig::default() })]
    /// Random mixes of local writes (refused ones included: a delete of a missing key, a
    /// batch deleting one) are each sealed over exactly the body the log serves, linked in
    /// order, and the store verifies.
    #[test]
    fn random_local_writes_are_sealed_as_served(ops in proptest::collection::vec(op(), 1..24)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let dir = tempfile::tempdir().unwrap();
            let s = open(&dir, "p.db").await;
            let mut twins = [false; 2];
            for (i, op) in ops.iter().enumerate() {
                let base = T0 + i as i64 * MIN;
                match op {
                    Op::Readings(rows, unit, timed) => {
                        let mut b = ReadingBatch::new();
                        for (series, at, v) in rows {
                            b.push(&format!("s{series}"), base + at, *v, unit.as_deref());
                        }
                        if *timed {
                            b.timing = Some(ReadingTiming { boot_id: BootId([7; 16]), offset_ms: base });
                        }
                        // Two readings of one series at one time are refused whole.
                        let _ = s.append(b).await;
                    }
                    Op::Put(k, v) => {
                        s.put(&format!("d{k}"), v).await.unwrap();
                    }
                    Op::Delete(k) => {
                        let _ = s.delete(&format!("d{k}")).await;
                    }
                    Op::Batch(entries) => {
                        let entries = entries
                            .iter()
                            .map(|(k, v)| match v {
                                Some(v) => BatchEntry::put(format!("d{k}"), json!(v)),
                                None => BatchEntry::delete(format!("d{k}")),
                            })
                            .collect();
                        let _ = s.write_batch(entries).await;
                    }
                    Op::Twin(k, v) => {
                        let key = format!("t{k}");
                        let value = json!({ "reported": { "v": v } });
                        if twins[*k as usize] {
                            s.twin_patch(&key, TwinPatch::Merge(value)).await.unwrap();
                        } else {
                            s.twin_create(&key, Some(value)).await.unwrap();
                            twins[*k as usize] = true;
                        }
                    }
                }
            }
            let checked = assert_sealed_as_served(&s).await;
            prop_assert_eq!(checked, s.version_vector().get(&s.actor()));
            assert_verifies(s, checked).await;
            Ok(())
        })?;
    }
}

/// A store with `require_signatures` as given (the default is on; off is the opt-out for
/// fleets with peers that do not sign yet).
async fn open_requiring(dir: &tempfile::TempDir, name: &str, require: bool) -> Store {
    let config = StoreConfig {
        require_signatures: require,
        ..StoreConfig::default()
    };
    Store::open(dir.path().join(name), config).await.unwrap()
}

/// Nulls the seal columns of `actor`'s change `seq` in the store file at `path` (which must
/// not be open): what someone with the file can do behind the agent's back.
fn strip_seal(path: &std::path::Path, actor: ActorId, seq: u64) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let n = conn
        .execute(
            &format!(
                "UPDATE changes SET prev_hash = NULL, body_hash = NULL, signature = NULL, \
                 pruned = NULL WHERE seq = {seq} AND actor_idx = \
                 (SELECT idx FROM actors WHERE actor = x'{actor}')"
            ),
            [],
        )
        .unwrap();
    assert_eq!(n, 1, "stripped one change");
}

/// The audit of issue 14, in the library: a relay strips the seal of an actor's seq 1 and
/// alters it. With the defaults the receiver refuses the unsigned change. With the opt-out
/// it takes the unsigned change (counted), but the actor's genuine seq 2, which links to the
/// genuine seq 1, proves that seq 1 was signed: refused as `broken_chain` naming actor and
/// seq, nothing stored. And `verify` fails on the relay's edited file.
#[tokio::test]
async fn a_signed_change_after_a_stripped_predecessor_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir, "a.db").await;
    a.append(readings("setpoint", T0, &[22.0], None))
        .await
        .unwrap();
    a.append(readings("setpoint", T0 + MIN, &[23.0], None))
        .await
        .unwrap();
    let genuine = a
        .changes_since(&VersionVector::new(), usize::MAX)
        .await
        .unwrap();
    assert!(genuine.iter().all(|c| c.seal.is_some()));
    let mut forged = genuine[0].clone();
    forged.seal = None;
    let ChangeBody::Readings(batch) = &mut forged.body else {
        panic!("a readings change")
    };
    batch.series[0].values[0] = 99.0;

    // Defaults: the unsigned change is refused, naming actor and seq.
    let strict = open(&dir, "strict.db").await;
    let err = strict.apply_remote(vec![forged.clone()]).await.unwrap_err();
    assert_eq!(err.code(), "unsigned", "{err}");
    assert!(err.to_string().contains(&a.actor().to_string()), "{err}");
    assert_eq!(strict.version_vector().get(&a.actor()), 0);
    // The genuine changes apply.
    strict.apply_remote(genuine.clone()).await.unwrap();
    assert_eq!(strict.version_vector().get(&a.actor()), 2);

    // Opt-out: the unsigned past is taken, the genuine seq 2 exposes it.
    let lax = open_requiring(&dir, "lax.db", false).await;
    lax.apply_remote(vec![forged]).await.unwrap();
    let before = (lax.version_vector(), lax.digest());
    let err = lax
        .apply_remote(vec![genuine[1].clone()])
        .await
        .unwrap_err();
    assert_eq!(err.code(), "broken_chain", "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&a.actor().to_string()) && text.contains("change 2"),
        "{text}"
    );
    assert!(text.contains("unsigned"), "{text}");
    assert_eq!((lax.version_vector(), lax.digest()), before);

    // A relay holding both, its file edited: seq 1's seal nulled. Its content intact, seq 2
    // still vouches for it (it links to exactly what seq 1 hashes to): the store verifies.
    let hub = open(&dir, "hub.db").await;
    hub.apply_remote(genuine.clone()).await.unwrap();
    let path = hub.path().to_owned();
    hub.close().await;
    assert!(Store::verify_file(&path).await.unwrap().ok());
    strip_seal(&path, a.actor(), 1);
    let report = Store::verify_file(&path).await.unwrap();
    assert!(report.ok(), "{:?}", report.failures);
    assert_eq!((report.unsigned, report.signed), (1, 1));
    // And its value changed to 99: seq 2's link proves a stripped seal.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let n = conn
        .execute(
            &format!(
                "UPDATE readings SET value = 99 WHERE change_id = (SELECT c.id FROM changes c \
                 JOIN actors x ON x.idx = c.actor_idx WHERE x.actor = x'{}' AND c.seq = 1)",
                a.actor()
            ),
            [],
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(conn);
    let report = Store::verify_file(&path).await.unwrap();
    assert!(!report.ok());
    let failure = report
        .failures
        .iter()
        .find(|f| f.actor == Some(a.actor()) && f.seq == Some(2))
        .unwrap_or_else(|| panic!("seq 2 named: {:?}", report.failures));
    assert!(failure.problem.contains("stripped"), "{failure}");
    assert_eq!(report.unsigned, 1);
}

/// Unsigned changes are refused by default (`unsigned`, nothing stored) and accepted with
/// `require_signatures = false`, where an actor's first signed change after its unsigned
/// past starts its chain (`CHAIN_START`) and verifies.
#[tokio::test]
async fn unsigned_changes_are_refused_by_default_and_accepted_with_the_opt_out() {
    assert!(StoreConfig::default().require_signatures);
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir, "a.db").await;
    a.append(readings("t", T0, &[1.0], None)).await.unwrap();
    let mut unsigned = a
        .changes_since(&VersionVector::new(), usize::MAX)
        .await
        .unwrap();
    unsigned[0].seal = None;

    let strict = open(&dir, "strict.db").await;
    let err = strict.apply_remote(unsigned.clone()).await.unwrap_err();
    assert_eq!(err.code(), "unsigned", "{err}");
    assert_eq!(strict.version_vector().get(&a.actor()), 0);

    let lax = open_requiring(&dir, "lax.db", false).await;
    lax.apply_remote(unsigned.clone()).await.unwrap();
    assert_eq!(lax.version_vector().get(&a.actor()), 1);
    // The actor's next change, signed as the first of a chain after an unsigned past.
    let key = seal::SigningKey::generate().unwrap();
    let body = ChangeBody::Readings({
        let mut b = readings("t", T0 + MIN, &[2.0], None);
        b.normalize(&Limits::default()).unwrap();
        b
    });
    let hlc = Hlc(unsigned[0].hlc.0 + 1);
    let h = seal::change_hash(
        &a.actor(),
        2,
        hlc,
        &CHAIN_START,
        &seal::body_hash(&body, &[]),
    );
    let next = Change {
        actor: a.actor(),
        seq: 2,
        hlc,
        body,
        seal: Some(seal::Seal {
            key: key.public(),
            prev: CHAIN_START,
            sig: key.sign(&h),
            pruned: vec![],
            body: None,
            run_from: None,
        }),
        pruned_rollups: Vec::new(),
    };
    lax.apply_remote(vec![next]).await.unwrap();
    let path = lax.path().to_owned();
    lax.close().await;
    let report = Store::verify_file(&path).await.unwrap();
    assert!(report.ok(), "{:?}", report.failures);
    assert_eq!((report.unsigned, report.signed), (1, 1));
}
