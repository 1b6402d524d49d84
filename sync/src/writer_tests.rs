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
        }],
        partial: false,
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
