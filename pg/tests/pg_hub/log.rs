//! The change log in commit order (`PgStore::log_after`, `log_end`), the named cursors and
//! the replica lease: a follower of the log sees every change exactly once, in a position
//! order that never moves, while devices' pages commit through two replicas at once out of
//! id order; a change written after a transaction that is still open waits until that
//! transaction ends (it could commit a lower id); a lease is held by one replica at a time
//! and passes on when its holder goes.

use std::collections::{BTreeSet, HashMap};

use super::*;

/// Every `(actor, seq)` of `changes`.
fn dots(changes: &[(i64, Change)]) -> Vec<(ActorId, u64)> {
    changes.iter().map(|(_, c)| (c.actor, c.seq)).collect()
}

/// The log from `after` to its end, page by page of `page` changes.
async fn follow(hub: &PgStore, after: i64, page: usize) -> Vec<(i64, Change)> {
    let mut out = Vec::new();
    let mut at = after;
    loop {
        let got = hub.log_after(at, page).await.unwrap();
        let Some(&(last, _)) = got.last() else {
            return out;
        };
        at = last;
        out.extend(got);
    }
}

#[tokio::test]
async fn a_follower_sees_every_change_once_while_two_replicas_commit_out_of_id_order() {
    let Some(db) = TestDb::new("log_follow").await else {
        return;
    };
    let (r1, r2) = (db.replica().await, db.replica().await);
    assert_eq!(r1.log_end().await.unwrap(), 0);
    assert!(r1.log_after(0, 10).await.unwrap().is_empty());
    // Six devices, their pages applied through either replica at once, while a follower
    // reads the log: each device's page commits on its own actor's lock, so commits
    // interleave and finish out of id order.
    let dir = tempfile::tempdir().unwrap();
    let mut pages = Vec::new();
    for d in 0..6i64 {
        let dev = device(&dir, &format!("d{d}.db")).await;
        for i in 0..20i64 {
            let mut b = ReadingBatch::new();
            for j in 0..40 {
                b.push("s", T0 + i * 1_000 + j, (d * 100 + i) as f64, None);
            }
            dev.append(b).await.unwrap();
        }
        pages.push(pages_for(&dev, &VersionVector::new(), 4_000).await);
    }
    let expected: BTreeSet<(ActorId, u64)> = pages
        .iter()
        .flatten()
        .flatten()
        .map(|c| (c.actor, c.seq))
        .collect();
    let writers: Vec<_> = pages
        .into_iter()
        .enumerate()
        .map(|(d, pages)| {
            let hub = if d % 2 == 0 { r1.clone() } else { r2.clone() };
            tokio::spawn(async move {
                for page in pages {
                    hub.apply_remote(page).await.unwrap();
                }
            })
        })
        .collect();
    let mut seen = Vec::new();
    let mut at = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let done = writers.iter().all(|w| w.is_finished());
        let got = r2.log_after(at, 7).await.unwrap();
        if let Some(&(last, _)) = got.last() {
            assert!(last > at, "the log went backwards: {last} after {at}");
            at = last;
        }
        for w in got.windows(2) {
            assert!(
                w[0].0 < w[1].0,
                "positions out of order: {} then {}",
                w[0].0,
                w[1].0
            );
        }
        let empty = got.is_empty();
        seen.extend(dots(&got));
        if done && empty {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "writers did not finish"
        );
    }
    for w in writers {
        w.await.unwrap();
    }
    let unique: BTreeSet<_> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "a change was followed twice");
    assert_eq!(unique, expected, "the follower missed changes");
    // Each device's changes in seq order along the log.
    let mut last: HashMap<ActorId, u64> = HashMap::new();
    for (a, s) in &seen {
        let prev = last.insert(*a, *s).unwrap_or(0);
        assert_eq!(*s, prev + 1, "device {a} out of order along the log");
    }
    // The log read again from the start and from every position is the same sequence.
    let all = follow(&r1, 0, 1000).await;
    assert_eq!(all.len(), seen.len());
    assert_eq!(dots(&all), seen);
    assert_eq!(r1.log_end().await.unwrap(), all.last().unwrap().0);
    assert_eq!(r1.log_count_after(0).await.unwrap(), all.len() as i64);
    for cut in [0usize, 1, 13, all.len() - 1] {
        assert_eq!(
            r2.log_count_after(all[cut].0).await.unwrap(),
            (all.len() - cut - 1) as i64
        );
        let rest = follow(&r2, all[cut].0, 5).await;
        assert_eq!(
            dots(&rest),
            dots(&all[cut + 1..]),
            "from position {}",
            all[cut].0
        );
    }
    // Bodies are loaded: the readings are the device's.
    let (_, first) = &all[0];
    let ChangeBody::Readings(b) = &first.body else {
        panic!("not readings: {first:?}")
    };
    assert_eq!(b.len(), 40);
    db.drop().await;
}

/// The first `Some` of `probe`, polled for up to 30 s (the log's horizon waits for every
/// transaction on the server, other tests' included).
async fn eventually<T, F, Fut>(mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "not within 30 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_change_behind_an_open_transaction_waits_for_it() {
    let Some(db) = TestDb::new("log_horizon").await else {
        return;
    };
    let hub = db.replica().await;
    let mut b = ReadingBatch::new();
    b.push("s", T0, 1.0, None);
    hub.append(b.clone()).await.unwrap();
    // Other tests' transactions on this server hold the horizon too: poll.
    let end = eventually(|| async { Some(hub.log_end().await.unwrap()).filter(|&e| e > 0) }).await;
    // Another session's transaction takes a transaction id and stays open: it could still
    // commit a change with a lower id than the next one.
    let mut open = db.admin.begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *open)
        .await
        .unwrap();
    b.series[0].ts[0] = T0 + 1;
    let later = hub.append(b.clone()).await.unwrap();
    assert!(hub.log_after(end, 10).await.unwrap().is_empty());
    assert_eq!(hub.log_end().await.unwrap(), end);
    open.commit().await.unwrap();
    let got = eventually(|| async {
        Some(hub.log_after(end, 10).await.unwrap()).filter(|g| !g.is_empty())
    })
    .await;
    assert_eq!(dots(&got), vec![(later.actor, later.seq)]);
    assert_eq!(got[0].1, later);
    assert_eq!(hub.log_end().await.unwrap(), got[0].0);
    db.drop().await;
}

#[tokio::test]
async fn parts_of_an_oversized_batch_are_consecutive_changes_of_one_transaction() {
    let Some(db) = TestDb::new("log_parts").await else {
        return;
    };
    let config = PgConfig {
        limits: Limits {
            max_change_bytes: 4_096,
            ..Limits::default()
        },
        ..PgConfig::default()
    };
    let hub = PgStore::connect_with(db.options(), config).await.unwrap();
    let mut b = ReadingBatch::new();
    for i in 0..2_000i64 {
        b.push(&format!("s{}", i % 3), T0 + i, i as f64, Some("V"));
    }
    let err = hub.append(b.clone()).await.unwrap_err();
    assert!(err.to_string().contains("max_change_bytes"), "{err}");
    assert_eq!(
        hub.log_end().await.unwrap(),
        0,
        "a refused batch stored something"
    );
    let parts = hub.append_in_parts(b.clone()).await.unwrap();
    assert!(parts.len() >= 3, "{} parts", parts.len());
    let seqs: Vec<u64> = parts.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, (1..=parts.len() as u64).collect::<Vec<_>>());
    let logged = eventually(|| async {
        Some(follow(&hub, 0, 100).await).filter(|l| l.len() == parts.len())
    })
    .await;
    assert_eq!(
        logged.iter().map(|(_, c)| c.clone()).collect::<Vec<_>>(),
        parts
    );
    // One transaction: one commit_xid for all parts.
    let xids = db
        .count("SELECT count(DISTINCT commit_xid) FROM {s}.changes")
        .await;
    assert_eq!(xids, 1);
    let total: usize = parts
        .iter()
        .map(|c| match &c.body {
            ChangeBody::Readings(r) => r.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(total, 2_000);
    // A SQLite device verifies the hub's chained seals and agrees on the digest.
    let dir = tempfile::tempdir().unwrap();
    let dev = device(&dir, "d.db").await;
    sync(&hub, &dev, 1 << 20).await;
    assert_eq!(dev.digest(), hub.digest().await.unwrap());
    db.drop().await;
}

#[tokio::test]
async fn cursors_are_stored_and_inconsistent_ones_refused() {
    let Some(db) = TestDb::new("log_cursor").await else {
        return;
    };
    let (r1, r2) = (db.replica().await, db.replica().await);
    assert_eq!(r1.log_cursor("mqtt").await.unwrap(), None);
    r1.store_log_cursor("mqtt", 5, 9).await.unwrap();
    assert_eq!(r2.log_cursor("mqtt").await.unwrap(), Some((5, 9)));
    r2.store_log_cursor("mqtt", 9, 9).await.unwrap();
    assert_eq!(r1.log_cursor("mqtt").await.unwrap(), Some((9, 9)));
    let err = r1.store_log_cursor("mqtt", 9, 3).await.unwrap_err();
    assert!(err.to_string().contains("inconsistent"), "{err}");
    assert_eq!(r1.log_cursor("mqtt").await.unwrap(), Some((9, 9)));
    db.drop().await;
}

#[tokio::test]
async fn a_lease_is_held_by_one_replica_at_a_time_and_passes_on() {
    let Some(db) = TestDb::new("log_lease").await else {
        return;
    };
    let (r1, r2) = (db.replica().await, db.replica().await);
    let mut lead = r1.try_lead("mqtt").await.unwrap().expect("first take");
    assert_eq!(lead.role(), "mqtt");
    assert!(lead.still_held().await);
    assert!(r2.try_lead("mqtt").await.unwrap().is_none());
    assert!(
        r1.try_lead("mqtt").await.unwrap().is_none(),
        "not re-entrant"
    );
    // Another role, and the same role in another schema, are separate leases.
    let other = r2.try_lead("other").await.unwrap();
    assert!(other.is_some());
    let Some(db2) = TestDb::new("log_lease_2").await else {
        return;
    };
    assert!(
        db2.replica()
            .await
            .try_lead("mqtt")
            .await
            .unwrap()
            .is_some()
    );
    drop(lead);
    // The connection closes on drop; the server releases the lock when it sees that.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut next = loop {
        if let Some(l) = r2.try_lead("mqtt").await.unwrap() {
            break l;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lease was not released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(next.still_held().await);
    // Killed from the server side: the holder finds out, and the lease is free again.
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_locks \
         WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid() \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         AND objid = (hashtextextended($1 || '/kdelta/lead/mqtt', 0) & 4294967295)::oid",
    )
    .bind(&db.schema)
    .execute(&db.admin)
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while next.still_held().await {
        assert!(
            std::time::Instant::now() < deadline,
            "the holder did not notice"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The client sees the FATAL message before the dying backend has released its locks
    // (PostgreSQL sends it first, then exits): poll with a deadline for the lease to free.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while r1.try_lead("mqtt").await.unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the lease of a terminated holder was not released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    db2.drop().await;
    db.drop().await;
}
