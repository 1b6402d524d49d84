//! Tests of the writer's group commit that need one exact group: jobs are handed to
//! `run_group` directly instead of racing callers into one.

use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::{broadcast, oneshot};

use super::{Job, Shared, Writer};
use crate::{
    ActorId, Change, ChangeBody, Digest, Hlc, HybridClock, ReadingBatch, Store, StoreConfig,
    StoreError, SystemTime, VersionVector,
};

const T0: i64 = 1_764_000_000_000;

fn open_writer(path: &std::path::Path) -> Writer {
    let config = StoreConfig::default();
    let (events, _) = broadcast::channel(16);
    let shared = Arc::new(Shared {
        vv: RwLock::new(VersionVector::new()),
        digest: RwLock::new(Digest::default()),
        clock: Mutex::new(HybridClock::new(
            Arc::new(SystemTime),
            config.max_clock_offset_ms,
        )),
        events,
        counts: RwLock::new(Default::default()),
        health: Default::default(),
    });
    let (conn, actor) = crate::schema::open_writer(path, &config).unwrap();
    Writer::new(conn, shared, actor, config.limits, false).unwrap()
}

fn batch(series: &str, ts: i64, value: f64) -> ReadingBatch {
    let mut b = ReadingBatch::new();
    b.push(series, ts, value, Some("°C"));
    b
}

/// Regression (issue 15, item 7): a job failing inside a write group used to reload the
/// digest stored at the last commit, dropping the contributions of the group's earlier jobs.
#[tokio::test]
async fn a_failing_job_inside_a_group_keeps_the_digest_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let mut writer = open_writer(&path);
    let mut replies = Vec::new();
    let mut jobs = Vec::new();
    let append = |jobs: &mut Vec<Job>, b: ReadingBatch| {
        let (reply, rx) = oneshot::channel();
        jobs.push(Job::Append {
            parts: vec![b],
            reply,
        });
        rx
    };
    replies.push(append(&mut jobs, batch("before", T0, 1.0)));
    let (doc_reply, doc_rx) = oneshot::channel();
    jobs.push(Job::Doc {
        key: "k".into(),
        value: Some(vec![0x01]),
        reply: doc_reply,
    });
    // A remote change two seqs ahead of what is held: refused, rolled back alone.
    let stranger = ActorId([9; 16]);
    let (bad_reply, bad_rx) = oneshot::channel();
    jobs.push(Job::Remote {
        changes: vec![Change {
            actor: stranger,
            seq: 2,
            hlc: Hlc::new(T0 as u64, 0),
            body: ChangeBody::Readings(batch("gap", T0, 2.0)),
            seal: None,
            pruned_rollups: Vec::new(),
        }],
        partial: false,
        prechecked: crate::seal::Prechecked::none(),
        reply: bad_reply,
    });
    replies.push(append(&mut jobs, batch("after", T0 + 1, 3.0)));
    writer.run_group(jobs);

    for rx in replies {
        rx.await.unwrap().unwrap();
    }
    doc_rx.await.unwrap().unwrap();
    assert!(matches!(
        bad_rx.await.unwrap(),
        Err(StoreError::SeqGap {
            have: 0,
            got: 2,
            ..
        })
    ));
    let committed = *writer.shared.digest.read().unwrap();
    assert_ne!(committed, Digest::default());
    drop(writer);

    let store = Store::open(&path, StoreConfig::default()).await.unwrap();
    assert_eq!(
        store.digest(),
        committed,
        "the stored digest is the group's"
    );
    assert_eq!(store.verify_digest().await.unwrap(), committed);
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.changes, stats.readings), (3, 2));
    store.close().await;
}

/// A readings batch with one series and two readings at the same time: its change is sealed
/// when staged, then its rows fail the readings primary key when written, so the job fails
/// after sealing (and, in a fresh store, after binding the store's key).
fn fails_after_sealing() -> ReadingBatch {
    let mut b = ReadingBatch::new();
    b.push("dup", T0, 1.0, None);
    b.push("dup", T0, 2.0, None);
    b
}

/// A job failing after it sealed local changes (and bound the store's key) is rolled back
/// with its seals: the group's later local changes link to the last change that stays, and
/// the key is bound again (a binding cached past the rollback would leave the actor
/// without a key), so the committed chain verifies. The failing jobs took seqs the later
/// jobs take again; the second group links to the tip cached by the first.
#[tokio::test]
async fn a_failing_job_after_sealing_leaves_the_chain_valid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let mut writer = open_writer(&path);
    let mut jobs = Vec::new();
    let mut replies = Vec::new();
    let append = |jobs: &mut Vec<Job>, parts: Vec<ReadingBatch>| {
        let (reply, rx) = oneshot::channel();
        jobs.push(Job::Append { parts, reply });
        rx
    };
    // Seqs 1..=3 sealed (the key bound with seq 1), then the job fails at seq 3's rows.
    let bad = append(
        &mut jobs,
        vec![
            batch("a", T0, 1.0),
            batch("b", T0, 2.0),
            fails_after_sealing(),
        ],
    );
    replies.push(append(&mut jobs, vec![batch("c", T0, 3.0)]));
    let (doc_reply, doc_rx) = oneshot::channel();
    jobs.push(Job::Doc {
        key: "k".into(),
        value: Some(vec![0x01]),
        reply: doc_reply,
    });
    // Seqs 3 and 4: seq 3 is where the failed job's tip stood.
    replies.push(append(
        &mut jobs,
        vec![batch("d", T0, 4.0), batch("e", T0, 5.0)],
    ));
    writer.run_group(jobs);
    assert!(
        bad.await.unwrap().is_err(),
        "the duplicate reading fails its job"
    );
    for rx in replies {
        rx.await.unwrap().unwrap();
    }
    assert_eq!(doc_rx.await.unwrap().unwrap().0.seq, 2);

    // A second group: the tip cached by the first links the next change.
    let (reply, rx) = oneshot::channel();
    let mut second = vec![Job::Doc {
        key: "k".into(),
        value: Some(vec![0x02]),
        reply,
    }];
    let bad = append(&mut second, vec![fails_after_sealing()]);
    let last = append(&mut second, vec![batch("f", T0, 6.0)]);
    writer.run_group(second);
    assert_eq!(rx.await.unwrap().unwrap().0.seq, 5);
    assert!(bad.await.unwrap().is_err());
    assert_eq!(last.await.unwrap().unwrap()[0].seq, 6);
    drop(writer);

    let report = Store::verify_file(&path).await.unwrap();
    assert!(report.ok(), "{:?}", report.failures);
    assert_eq!((report.changes, report.signed, report.unsigned), (6, 6, 0));
}

/// Groups of up to `SIGN_IN_PLACE_MAX_JOBS` jobs sign on the writer thread and larger ones
/// on the signing thread; a chain made of both, with a job failing after it sealed in a
/// small group, verifies.
#[tokio::test]
async fn small_groups_sign_in_place_and_the_chain_verifies() {
    assert_eq!(crate::chain::SIGN_IN_PLACE_MAX_JOBS, 2);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let mut writer = open_writer(&path);
    let append = |jobs: &mut Vec<Job>, parts: Vec<ReadingBatch>| {
        let (reply, rx) = oneshot::channel();
        jobs.push(Job::Append { parts, reply });
        rx
    };
    // One job: seq 1, signed in place.
    let mut jobs = Vec::new();
    let one = append(&mut jobs, vec![batch("a", T0, 1.0)]);
    writer.run_group(jobs);
    assert_eq!(one.await.unwrap().unwrap()[0].seq, 1);
    assert_eq!(
        writer.signer.requested(),
        0,
        "a group of one signs in place"
    );

    // Two jobs, the first failing after it sealed seq 2: the second takes seq 2 again.
    let mut jobs = Vec::new();
    let bad = append(&mut jobs, vec![batch("b", T0, 2.0), fails_after_sealing()]);
    let (reply, doc) = oneshot::channel();
    jobs.push(Job::Doc {
        key: "k".into(),
        value: Some(vec![0x01]),
        reply,
    });
    writer.run_group(jobs);
    assert!(bad.await.unwrap().is_err());
    assert_eq!(doc.await.unwrap().unwrap().0.seq, 2);
    assert_eq!(
        writer.signer.requested(),
        0,
        "a group of two signs in place"
    );

    // Three jobs: the signing thread, linking to the tip signed in place.
    let mut jobs = Vec::new();
    let rxs: Vec<_> = ["c", "d", "e"]
        .iter()
        .map(|s| append(&mut jobs, vec![batch(s, T0, 3.0)]))
        .collect();
    writer.run_group(jobs);
    for rx in rxs {
        rx.await.unwrap().unwrap();
    }
    assert_eq!(
        writer.signer.requested(),
        3,
        "a group of three signs beside"
    );

    // And in place again after it.
    let mut jobs = Vec::new();
    let last = append(&mut jobs, vec![batch("f", T0, 4.0)]);
    writer.run_group(jobs);
    assert_eq!(last.await.unwrap().unwrap()[0].seq, 6);
    assert_eq!(writer.signer.requested(), 3);
    drop(writer);

    let report = Store::verify_file(&path).await.unwrap();
    assert!(report.ok(), "{:?}", report.failures);
    assert_eq!((report.changes, report.signed, report.unsigned), (6, 6, 0));
}
