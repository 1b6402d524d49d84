//! Log runs on real SQLite files: once retention has pruned a run of signed readings changes
//! wholly (readings and rollups gone), the run is compacted to its last row. The version
//! vector, digest and chain are unchanged; `kdelta verify` passes and counts the compacted
//! seqs; a store holding nothing of the run, or part of it, receives the survivor and ends
//! with the same vector and digest; a relay serves what it received; a survivor that does
//! not reach what a store holds is a gap, and one altered is refused; the actor's next change
//! links to the survivor, after a reopen too.

use kdelta_sync::*;

const MIN: i64 = 60_000;
const DAY: i64 = 86_400_000;
const T0: i64 = 1_764_000_000_000 / DAY * DAY;

async fn open(dir: &tempfile::TempDir, name: &str) -> Store {
    Store::open(dir.path().join(name), StoreConfig::default())
        .await
        .unwrap()
}

/// Raw readings kept a day, rollups two.
fn policy() -> RetentionPolicy {
    RetentionPolicy {
        readings_max_age_ms: Some(DAY as u64),
        rollups_max_age_ms: Some(2 * DAY as u64),
        ..RetentionPolicy::default()
    }
}

/// One readings change: 3 readings of `series` from `at`, a second apart (too sparse for
/// retention to keep the rollups of their minute with the change). Returns its HLC.
async fn readings(s: &Store, series: &str, at: i64) -> Hlc {
    readings_n(s, series, at, 3).await
}

/// One readings change: `n` readings of `series` from `at`, a second apart.
async fn readings_n(s: &Store, series: &str, at: i64, n: i64) -> Hlc {
    let mut b = ReadingBatch::new();
    for i in 0..n {
        b.push(series, at + i * 1000, i as f64, Some("u"));
    }
    s.append(b).await.unwrap().hlc
}

/// Everything `s` serves to a store holding `theirs`.
async fn serves(s: &Store, theirs: &VersionVector) -> Vec<Change> {
    s.changes_since(theirs, usize::MAX).await.unwrap()
}

/// `to` takes everything `from` serves it.
async fn pull(to: &Store, from: &Store) {
    to.apply_remote(serves(from, &to.version_vector()).await)
        .await
        .unwrap();
}

/// Rows in the store's change log.
fn rows(path: &std::path::Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM changes", [], |r| r.get(0))
        .unwrap()
}

/// `(seq, run_from)` of each change served to a peer holding `theirs` of the store's actor.
async fn served(s: &Store, theirs: u64) -> Vec<(u64, Option<u64>)> {
    let mut vv = VersionVector::new();
    vv.set(s.actor(), theirs);
    serves(s, &vv)
        .await
        .iter()
        .map(|c| (c.seq, c.seal.as_ref().and_then(|s| s.run_from)))
        .collect()
}

/// Closes `s` and checks its file: verifies, with `compacted` seqs held in runs.
async fn verified(s: Store, compacted: u64) {
    let path = s.path().to_owned();
    s.close().await;
    let report = Store::verify_file(&path).await.unwrap();
    assert!(report.ok(), "{}: {:?}", path.display(), report.failures);
    assert_eq!(report.compacted, compacted, "{}", path.display());
}

#[tokio::test]
async fn runs_of_wholly_pruned_changes_compact_to_their_last_and_still_sync() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir, "a.db").await;
    // Seqs 1..=25 readings, 26 a document (never compacted), 27..=47 readings (all old),
    // 48..=50 readings recent enough to keep.
    for seq in 1..=50i64 {
        match seq {
            26 => {
                a.put("config/site", &serde_json::json!({"name": "shed"}))
                    .await
                    .unwrap();
            }
            48.. => {
                readings(&a, "temp", T0 + 10 * DAY - seq * MIN).await;
            }
            _ => {
                readings(&a, "temp", T0 + seq * MIN).await;
            }
        }
    }
    // B took the first ten changes before retention ran.
    let b = open(&dir, "b.db").await;
    let first_ten: Vec<Change> = serves(&a, &VersionVector::new())
        .await
        .into_iter()
        .take(10)
        .collect();
    b.apply_remote(first_ten).await.unwrap();

    let vv = a.version_vector();
    let report = a.prune(&policy(), T0 + 10 * DAY, 1000).await.unwrap();
    assert_eq!(report.readings, 46 * 3, "{report:?}");
    // 1..=25 → row 25; 27..=47 → row 47.
    assert_eq!(report.changes_compacted, 24 + 20, "{report:?}");
    assert_eq!(a.version_vector(), vv, "the vector stands for every seq");
    assert_eq!(a.stats().await.unwrap().changes, 6);
    assert_eq!(rows(a.path()), 6);
    assert_eq!(a.digest(), a.verify_digest().await.unwrap());
    // A second pass finds nothing more.
    let again = a.prune(&policy(), T0 + 10 * DAY, 1000).await.unwrap();
    assert_eq!(again.changes_compacted, 0, "{again:?}");

    // Served from what the peer lacks: the whole run, part of it, or an ordinary change.
    assert_eq!(
        served(&a, 0).await,
        vec![
            (25, Some(1)),
            (26, None),
            (47, Some(27)),
            (48, None),
            (49, None),
            (50, None)
        ]
    );
    assert_eq!(served(&a, 10).await[0], (25, Some(11)));
    assert_eq!(served(&a, 24).await[0], (25, None));
    assert_eq!(served(&a, 30).await[0], (47, Some(31)));

    // C holds nothing: it takes the runs.
    let c = open(&dir, "c.db").await;
    pull(&c, &a).await;
    assert_eq!(c.version_vector(), a.version_vector());
    assert_eq!(c.digest(), a.digest());
    assert_eq!(rows(c.path()), 6);
    // B holds 1..=10 whole: it takes the rest of the run, and once it prunes by the same
    // policy it holds what A holds.
    pull(&b, &a).await;
    assert_eq!(b.version_vector(), a.version_vector());
    b.prune(&policy(), T0 + 10 * DAY, 1000).await.unwrap();
    assert_eq!(b.digest(), a.digest());
    assert_eq!(rows(b.path()), 6, "B's own copies of 1..=10 join the run");
    // D takes everything from C, a relay that never held the compacted rows.
    let d = open(&dir, "d.db").await;
    pull(&d, &c).await;
    assert_eq!(d.version_vector(), a.version_vector());
    assert_eq!(d.digest(), a.digest());

    // A survivor whose run does not reach what a store holds is a gap; one altered fails
    // its signature. Neither stores anything.
    let e = open(&dir, "e.db").await;
    let all = serves(&a, &VersionVector::new()).await;
    let run_47 = all.iter().find(|c| c.seq == 47).unwrap().clone();
    let err = e.apply_remote(vec![run_47]).await.unwrap_err();
    assert!(matches!(err, StoreError::SeqGap { got: 27, .. }), "{err}");
    let mut forged = all[0].clone();
    forged.hlc = Hlc(forged.hlc.0 + 1);
    let err = e.apply_remote(vec![forged]).await.unwrap_err();
    assert!(err.to_string().contains("signature"), "{err}");
    assert_eq!(e.version_vector(), VersionVector::new());

    // Everything ages out: 27..=50 become one run. A's next change links to the survivor,
    // after a reopen, and reaches C (which held 50) as an ordinary change.
    let report = a.prune(&policy(), T0 + 20 * DAY, 1000).await.unwrap();
    assert_eq!(report.changes_compacted, 3, "{report:?}");
    let path = a.path().to_owned();
    a.close().await;
    let a = Store::open(&path, StoreConfig::default()).await.unwrap();
    readings(&a, "temp", T0 + 20 * DAY).await;
    let next = serves(&a, &c.version_vector()).await;
    assert_eq!(next.len(), 1);
    assert_eq!((next[0].seq, next[0].first_seq()), (51, 51));
    c.apply_remote(next).await.unwrap();
    assert_eq!(c.version_vector(), a.version_vector());
    c.prune(&policy(), T0 + 20 * DAY, 1000).await.unwrap();
    assert_eq!(
        c.digest(),
        a.digest(),
        "same changes, same policy, same clock"
    );
    assert_eq!(rows(c.path()), rows(a.path()));

    verified(a, 24 + 23).await;
    verified(b, 24 + 20).await;
    verified(c, 24 + 23).await;
    verified(d, 24 + 20).await;
}

/// Only wholly pruned changes whose rollups and timing went are compacted: a change still
/// carrying the rollups of its pruned readings (rollups kept longer) keeps its row until
/// they go.
#[tokio::test]
async fn a_change_keeps_its_row_while_its_rollups_remain() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir, "a.db").await;
    // Dense enough (10 a minute) for retention to keep their rollups with each change.
    for seq in 0..20 {
        readings_n(&a, "temp", T0 + seq * MIN, 10).await;
    }
    let keep_rollups = RetentionPolicy {
        rollups_max_age_ms: None,
        ..policy()
    };
    let report = a.prune(&keep_rollups, T0 + 10 * DAY, 1000).await.unwrap();
    assert_eq!(report.readings, 200, "{report:?}");
    // Each change carries the rollups of its own minute: none is compacted.
    assert_eq!(report.changes_compacted, 0, "{report:?}");
    assert_eq!(rows(a.path()), 20);
    // Once the rollups go, they are.
    let report = a.prune(&policy(), T0 + 10 * DAY, 1000).await.unwrap();
    assert_eq!(report.changes_compacted, 19, "{report:?}");
    assert_eq!(rows(a.path()), 1);
    verified(a, 19).await;
}

/// With log runs off (`[retention] log_runs = false`), every change keeps its row and its
/// checkable signature; turned on again, the next pass compacts what is compactable.
#[tokio::test]
async fn log_runs_off_keeps_a_row_per_change() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir, "a.db").await;
    for seq in 0..10 {
        readings(&a, "temp", T0 + seq * MIN).await;
    }
    a.set_log_runs(false);
    let report = a.prune(&policy(), T0 + 10 * DAY, 1000).await.unwrap();
    assert_eq!((report.readings, report.changes_compacted), (30, 0));
    assert_eq!(rows(a.path()), 10);
    a.set_log_runs(true);
    let report = a.prune(&policy(), T0 + 10 * DAY, 1000).await.unwrap();
    assert_eq!(report.changes_compacted, 9, "{report:?}");
    verified(a, 9).await;
}

/// Point-in-time recovery over a log run: a bound after the run's last change keeps the run
/// whole; a bound inside it cuts at its start (the changes inside have no HLC of their own
/// any more, and held nothing but pruned readings). Either way the replayed store holds the
/// as-of vector and digest, and verifies.
#[tokio::test]
async fn an_as_of_replay_keeps_a_run_whole_or_cuts_at_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir, "a.db").await;
    let mut hlcs = Vec::new();
    for seq in 1..=10i64 {
        hlcs.push(readings(&a, "temp", T0 + seq * MIN).await);
    }
    let last = readings(&a, "temp", T0 + 10 * DAY - MIN).await; // seq 11: kept
    let report = a.prune(&policy(), T0 + 10 * DAY, 1000).await.unwrap();
    assert_eq!(report.changes_compacted, 9, "{report:?}");
    let me = a.actor();
    for (i, (at, held)) in [(hlcs[9], 10), (hlcs[4], 0), (last, 11)]
        .into_iter()
        .enumerate()
    {
        let target = dir.path().join(format!("as-of-{i}.db"));
        let outcome = backup::replay_as_of(&a, &target, at, None, |_| {})
            .await
            .unwrap();
        assert_eq!(outcome.version_vector.get(&me), held, "as of {at}");
        assert_eq!(a.version_vector_as_of(at).await.unwrap().get(&me), held);
        assert_eq!(
            outcome.digest,
            a.digest_at(&outcome.version_vector).await.unwrap()
        );
        let report = Store::verify_file(&target).await.unwrap();
        assert!(report.ok(), "{:?}", report.failures);
        assert_eq!(report.compacted, if held >= 10 { 9 } else { 0 });
    }
    a.close().await;
}

/// Issue #16, "within its budget indefinitely": a store that keeps recording (15 series, a
/// change a minute) under a retention policy holds a change log that stops growing once
/// retention has reached its steady state — the rows of the last day's changes and one row
/// per run — instead of ~200 B more for every change ever made.
#[tokio::test]
async fn the_change_log_stays_flat_while_a_store_keeps_recording() {
    const PER_DAY: i64 = 1440;
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, "a.db").await;
    let log_bytes = |held: Vec<HeldSpace>| {
        held.iter()
            .find(|h| h.holder == SpaceHolder::ChangeLog)
            .map_or(0, |h| h.bytes)
    };
    let mut after_day = Vec::new();
    for day in 0..8 {
        for m in 0..PER_DAY {
            let mut b = ReadingBatch::new();
            for k in 0..15 {
                b.push(
                    &format!("sys.{k}"),
                    T0 + day * DAY + m * MIN,
                    k as f64,
                    None,
                );
            }
            s.append(b).await.unwrap();
        }
        s.prune(&policy(), T0 + (day + 1) * DAY, 1000)
            .await
            .unwrap();
        let rows = rows(s.path());
        after_day.push((rows, log_bytes(s.space_held().await.unwrap())));
    }
    eprintln!("change log rows and bytes after each day: {after_day:?}");
    // Readings are kept a day: the last day's changes keep their rows, older ones are one
    // run (their readings, and the rollups of minutes this sparse, are gone).
    for (day, (rows, _)) in after_day.iter().enumerate().skip(1) {
        assert!(*rows <= PER_DAY + 2, "day {day}: {rows} rows");
    }
    let (day2, day8) = (after_day[1].1, after_day[7].1);
    assert!(
        day8 <= day2 + day2 / 5,
        "the change log grew from {day2} B (day 2) to {day8} B (day 8)"
    );
    assert_eq!(s.version_vector().get(&s.actor()), 8 * PER_DAY as u64);
    verified(s, 7 * PER_DAY as u64 - 1).await;
}

/// A store pruned by a release of 2026-12-05/06 kept the unit hashes of the changes it
/// emptied (the form before `Seal::body`). Those rows are compacted too; a survivor in that
/// form is served in the body-hash form, and the store verifies.
#[tokio::test]
async fn changes_emptied_in_the_old_form_join_runs() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir, "a.db").await;
    for seq in 0..10 {
        readings(&a, "temp", T0 + seq * MIN).await;
    }
    let whole = serves(&a, &VersionVector::new()).await;
    a.set_log_runs(false);
    a.prune(&policy(), T0 + 10 * DAY, 1000).await.unwrap();
    let path = a.path().to_owned();
    a.close().await;
    // Back to the old form: each emptied change keeps its unit hash.
    let conn = rusqlite::Connection::open(&path).unwrap();
    for c in &whole {
        let ChangeBody::Readings(r) = &c.body else {
            unreachable!()
        };
        let units: Vec<u8> = r.series.iter().flat_map(seal::unit_hash).collect();
        conn.execute(
            "UPDATE changes SET pruned = ?1 WHERE seq = ?2",
            rusqlite::params![units, c.seq as i64],
        )
        .unwrap();
    }
    drop(conn);
    assert!(Store::verify_file(&path).await.unwrap().ok());
    let a = Store::open(&path, StoreConfig::default()).await.unwrap();
    let report = a.prune(&policy(), T0 + 10 * DAY, 1000).await.unwrap();
    assert_eq!(report.changes_compacted, 9, "{report:?}");
    let served = serves(&a, &VersionVector::new()).await;
    assert_eq!(served.len(), 1);
    let s = served[0].seal.as_ref().unwrap();
    assert_eq!((s.run_from, s.pruned.len()), (Some(1), 0));
    assert!(s.body.is_some(), "served in the body-hash form");
    let b = open(&dir, "b.db").await;
    b.apply_remote(served).await.unwrap();
    assert_eq!(b.version_vector(), a.version_vector());
    assert_eq!(b.digest(), a.digest());
    verified(a, 9).await;
    verified(b, 9).await;
}

/// SD wear: a prune pass that finds nothing to do — the zero-configuration agent's every
/// minute, whose policy keeps readings and only compacts old twin chunks — commits its steps
/// (the log-run sweep's included) without writing a page: the WAL stays empty (each
/// commit rewrites the digest and counters unchanged, which SQLite does not write).
#[tokio::test]
async fn a_pass_that_finds_nothing_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, "a.db").await;
    for seq in 0..50 {
        readings(&s, "temp", T0 + seq * MIN).await;
    }
    s.reclaim().await.unwrap(); // checkpoints and truncates the WAL
    let wal = dir.path().join("a.db-wal");
    let wal_len = || std::fs::metadata(&wal).map_or(0, |m| m.len());
    assert_eq!(wal_len(), 0);
    let keep = RetentionPolicy {
        readings_max_age_ms: Some(1000 * DAY as u64),
        ..RetentionPolicy::default()
    };
    for _ in 0..3 {
        let report = s.prune(&keep, T0 + DAY, 1000).await.unwrap();
        assert_eq!((report.readings, report.changes_compacted), (0, 0));
    }
    assert_eq!(wal_len(), 0, "a pass that pruned nothing wrote to the WAL");
    // A write still stores the digest and counters with it.
    readings(&s, "temp", T0 + 60 * MIN).await;
    assert!(wal_len() > 0);
    let (digest, changes) = (s.digest(), s.stats().await.unwrap().changes);
    let path = s.path().to_owned();
    s.close().await;
    let s = Store::open(&path, StoreConfig::default()).await.unwrap();
    assert_eq!(
        (s.digest(), s.stats().await.unwrap().changes),
        (digest, changes)
    );
    assert_eq!(s.verify_digest().await.unwrap(), digest);
}
