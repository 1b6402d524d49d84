//! Real `SyncSession`s between SQLite devices and PostgreSQL hub replicas over in-memory
//! links (the transport the sync crate's protocol tests use): both directions, live mode
//! across replicas, a device syncing through two replicas, the signed-log check on apply
//! (the same refusals as SQLite), and credential bindings shared by the replicas.

use std::sync::Arc;

use kdelta_sync::protocol::*;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

use super::*;

const TOKEN: &str = "correct horse battery staple";
const DEADLINE: Duration = Duration::from_secs(20);

type SessionResult = Result<SessionSummary, ProtocolError>;

/// A running session pair and the switch that stops it.
struct Running {
    stop: watch::Sender<bool>,
    initiator: JoinHandle<SessionResult>,
    responder: JoinHandle<SessionResult>,
    /// Counters of the responder's side.
    responder_stats: Arc<SessionStats>,
}

impl Running {
    async fn stop(self) -> (SessionResult, SessionResult) {
        let _ = self.stop.send(true);
        self.join().await
    }

    async fn join(self) -> (SessionResult, SessionResult) {
        let i = timeout(DEADLINE, self.initiator).await.unwrap().unwrap();
        let r = timeout(DEADLINE, self.responder).await.unwrap().unwrap();
        (i, r)
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Fast timers so keepalive and live paths run within a test.
fn config(mode: SessionMode) -> SyncConfig {
    SyncConfig {
        mode,
        keepalive: Duration::from_millis(200),
        idle_timeout: Duration::from_secs(10),
        handshake_timeout: Duration::from_secs(5),
        live_recheck: Duration::from_secs(30),
        ..SyncConfig::default()
    }
}

/// Starts `initiator` → `responder`; the responder accepts `TOKEN` as credential `name`
/// with `role`.
fn start<A: SyncStore, B: SyncStore>(
    initiator: &A,
    responder: &B,
    mode: SessionMode,
    name: &str,
    role: PeerRole,
) -> Running {
    let ((i_tx, i_rx), (r_tx, r_rx)) = memory_link(8);
    let i = SyncSession::initiator(
        initiator.clone(),
        SyncConfig {
            token: Some(TOKEN.into()),
            peer_name: "initiator".into(),
            ..config(mode)
        },
    );
    let auth = Arc::new(TokenAuthenticator::new().with_token(name, TOKEN));
    let r = SyncSession::responder(responder.clone(), config(mode), auth).with_peer_role(role);
    let responder_stats = r.stats();
    let (stop, rx) = watch::channel(false);
    Running {
        initiator: tokio::spawn(i.run(i_tx, i_rx, stopped(rx.clone()))),
        responder: tokio::spawn(r.run(r_tx, r_rx, stopped(rx))),
        stop,
        responder_stats,
    }
}

/// One one-shot session; both sides must end cleanly. Returns the responder's counters.
async fn sync_once<A: SyncStore, B: SyncStore>(a: &A, b: &B) -> StatsSnapshot {
    let run = start(a, b, SessionMode::OneShot, "peer", PeerRole::Hub);
    let stats = run.responder_stats.clone();
    let (i, r) = run.join().await;
    i.unwrap();
    r.unwrap();
    stats.snapshot()
}

async fn readings(store: &Store, series: &str, from: i64, changes: usize) {
    for c in 0..changes {
        let mut b = ReadingBatch::new();
        for i in 0..10 {
            b.push(
                series,
                T0 + (from + (c * 10 + i) as i64) * 1000,
                i as f64,
                None,
            );
        }
        store.append(b).await.unwrap();
    }
}

/// Polls until `store` holds `seq` of `actor`, or fails after the deadline.
async fn until_holds(store: &Store, actor: ActorId, seq: u64, within: Duration) {
    let end = Instant::now() + within;
    while store.version_vector().get(&actor) < seq {
        assert!(
            Instant::now() < end,
            "{actor}:{seq} did not arrive within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A device and a PostgreSQL hub sync with real sessions in both directions: the device
/// pushes every change kind to the hub (device initiates), and learns the hub's own change,
/// signed with the key the hub's replicas share, from a session the hub initiates. Both
/// agree on one vector and digest, and the device verifies every change it holds.
#[tokio::test]
async fn a_device_and_a_pg_hub_sync_both_ways_in_real_sessions() {
    let Some(db) = TestDb::new("session_both_ways").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = device(&dir, "d.db").await;
    busy_device(&d, 1).await;
    let (r1, r2) = (db.replica().await, db.replica().await);
    let st = sync_once(&d, &r1).await;
    assert_eq!(st.changes_unverified, 0, "{st:?}");
    assert_eq!(r1.version_vector().await.unwrap(), d.version_vector());

    // The hub's own changes, written through both replicas: one signed chain.
    let mut b = ReadingBatch::new();
    b.push("hub.load", T0, 0.5, None);
    let first = r1.append(b.clone()).await.unwrap();
    b.series[0].ts[0] += 1;
    let second = r2.append(b).await.unwrap();
    assert_eq!((first.seq, second.seq), (1, 2));
    assert_eq!(
        first.seal.as_ref().unwrap().key,
        second.seal.as_ref().unwrap().key,
        "replicas share the hub's key"
    );
    // The hub initiates towards the device this time.
    let st = sync_once(&r2, &d).await;
    assert_eq!(
        (st.changes_unverified, st.changes_unsigned),
        (0, 0),
        "{st:?}"
    );
    assert_eq!(d.version_vector(), r2.version_vector().await.unwrap());
    assert_eq!(d.digest(), r1.digest().await.unwrap());
    let report = Store::verify_file(dir.path().join("d.db")).await.unwrap();
    assert!(report.ok(), "{:?}", report.failures);
    assert_eq!(report.unsigned, 0, "{report:?}");
    r1.close().await;
    r2.close().await;
    db.drop().await;
}

/// Live mode across replicas: device A is in a live session with replica 2; a change
/// another device pushes through replica 1, and one the hub writes on replica 1, reach A
/// within a deadline far below the session's periodic recheck (30 s here), so the
/// announcement crossed replicas through the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_applied_through_one_replica_reaches_a_live_device_on_another() {
    let Some(db) = TestDb::new("session_live").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (device(&dir, "a.db").await, device(&dir, "b.db").await);
    readings(&a, "a.temp", 0, 2).await;
    let (r1, r2) = (db.replica().await, db.replica().await);
    let live = start(&a, &r2, SessionMode::Continuous, "peer", PeerRole::Hub);
    let end = Instant::now() + DEADLINE;
    while r2.version_vector().await.unwrap().get(&a.actor()) < 2 {
        assert!(Instant::now() < end, "A's backlog did not reach the hub");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    readings(&b, "b.temp", 100, 3).await;
    let pushed = Instant::now();
    sync_once(&b, &r1).await;
    until_holds(&a, b.actor(), 3, Duration::from_secs(10)).await;
    let took = pushed.elapsed();

    let mut batch = ReadingBatch::new();
    batch.push("hub.note", T0, 1.0, None);
    let own = r1.append(batch).await.unwrap();
    until_holds(&a, own.actor, own.seq, Duration::from_secs(10)).await;
    eprintln!("a change through replica 1 reached the device on replica 2 in {took:?}");

    // Both sides watch one stop signal: whichever sees it first says goodbye, so the
    // initiator ends either by its own shutdown or by the hub's; both are clean ends.
    let (i, r) = live.stop().await;
    let end = i.unwrap().end;
    assert!(
        matches!(end, SessionEnd::Shutdown | SessionEnd::PeerBye(_)),
        "the live session ended uncleanly: {end:?}"
    );
    r.unwrap();
    assert_eq!(a.digest(), r2.digest().await.unwrap());
    r1.close().await;
    r2.close().await;
    db.drop().await;
}

/// A device syncing half its history through replica 1 and half through replica 2 (and a
/// second device learning from each in turn) ends with the hub, both replicas and both
/// devices on one vector and one digest.
#[tokio::test]
async fn a_device_syncing_through_two_replicas_ends_with_one_digest() {
    let Some(db) = TestDb::new("session_two_replicas").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (device(&dir, "a.db").await, device(&dir, "b.db").await);
    let (r1, r2) = (db.replica().await, db.replica().await);
    busy_device(&a, 1).await;
    sync_once(&a, &r1).await;
    readings(&a, "a.temp", 0, 3).await;
    a.put("k/a", &json!({"half": 2})).await.unwrap();
    readings(&b, "b.temp", 0, 2).await;
    sync_once(&a, &r2).await;
    sync_once(&b, &r1).await;
    sync_once(&b, &r2).await;
    sync_once(&a, &r1).await;
    let digest = a.digest();
    assert_eq!(b.digest(), digest);
    assert_eq!(r1.digest().await.unwrap(), digest);
    assert_eq!(r2.verify_digest().await.unwrap(), digest);
    assert_eq!(r2.version_vector().await.unwrap(), a.version_vector());
    assert_eq!(b.version_vector(), a.version_vector());
    r1.close().await;
    r2.close().await;
    db.drop().await;
}

/// Changes that do not come from their actor's key are refused by the PostgreSQL hub with
/// the refusal SQLite gives, whichever replica receives them (the bound key and the chain
/// head are in the database): re-signed by a stranger, renumbered, stripped of their
/// signature, altered. In a page, only the forged actor is refused; the rest applies.
#[tokio::test]
async fn forged_and_broken_chain_changes_are_refused_as_on_sqlite() {
    let Some(db) = TestDb::new("session_forged").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (a, honest) = (device(&dir, "a.db").await, device(&dir, "h.db").await);
    readings(&a, "a.temp", 0, 3).await;
    readings(&honest, "h.temp", 0, 1).await;
    let genuine = a
        .changes_since(&VersionVector::new(), 1 << 20)
        .await
        .unwrap();
    let victim = device(&dir, "victim.db").await;
    let (r1, r2) = (db.replica().await, db.replica().await);
    victim.apply_remote(vec![genuine[0].clone()]).await.unwrap();
    r1.apply_remote(vec![genuine[0].clone()]).await.unwrap();

    let mut moved = genuine[2].clone();
    moved.seq = 2;
    let stranger = kdelta_sync::seal::SigningKey::generate().unwrap();
    let mut resigned = genuine[1].clone();
    if let (ChangeBody::Readings(b), Some(s)) = (&mut resigned.body, &mut resigned.seal) {
        b.series[0].values[0] = 99.0;
        let body = kdelta_sync::seal::body_hash(&resigned.body, &[]);
        let h = kdelta_sync::seal::change_hash(&a.actor(), 2, resigned.hlc, &s.prev, &body);
        s.key = stranger.public();
        s.sig = stranger.sign(&h);
    }
    let mut stripped = genuine[1].clone();
    stripped.seal = None;
    let mut altered = genuine[1].clone();
    if let ChangeBody::Readings(b) = &mut altered.body {
        b.series[0].values[0] += 1.0;
    }
    for (forged, code) in [
        (moved, "broken_chain"),
        (resigned, "bad_signature"),
        (stripped, "broken_chain"),
        (altered.clone(), "bad_signature"),
    ] {
        let on_sqlite = victim.apply_remote(vec![forged.clone()]).await.unwrap_err();
        // Replica 2 never saw A: its key and chain come from the database.
        let before = r2.digest().await.unwrap();
        let on_pg = StoreError::from(r2.apply_remote(vec![forged]).await.unwrap_err());
        assert_eq!(on_pg.code(), code, "{on_pg}");
        assert_eq!(on_pg.to_string(), on_sqlite.to_string());
        assert_eq!(r2.digest().await.unwrap(), before);
    }
    // In a page: the forged actor waits, the honest one applies; the same report as SQLite.
    let mut page = honest
        .changes_since(&VersionVector::new(), 1 << 20)
        .await
        .unwrap();
    page.push(altered);
    page.push(genuine[2].clone());
    let on_sqlite = victim.apply_remote_verified(page.clone()).await.unwrap();
    let on_pg = r2.apply_remote_verified(page).await.unwrap();
    assert_eq!(on_pg, on_sqlite);
    assert_eq!(on_pg.0.applied, 1, "the honest actor's change");
    assert_eq!(
        on_pg.1.refused[0].changes, 2,
        "A's seq 2 and the one behind it"
    );
    assert_eq!(r1.digest().await.unwrap(), victim.digest());
    // The genuine changes, through a real session from A itself, apply and chain on.
    let st = sync_once(&a, &r1).await;
    assert_eq!(st.changes_unverified, 0, "{st:?}");
    assert_eq!(r2.version_vector().await.unwrap().get(&a.actor()), 3);
    r1.close().await;
    r2.close().await;
    db.drop().await;
}

/// A `device` credential is bound to the first actor that presents it, in the database: the
/// same credential presented by another actor through the other replica is refused
/// (`CredentialBound`), and the bound device keeps syncing through either.
#[tokio::test]
async fn a_credential_bound_on_one_replica_refuses_another_actor_on_the_other() {
    let Some(db) = TestDb::new("session_credential").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (x, y) = (device(&dir, "x.db").await, device(&dir, "y.db").await);
    readings(&x, "x.temp", 0, 1).await;
    readings(&y, "y.temp", 0, 1).await;
    let (r1, r2) = (db.replica().await, db.replica().await);
    let run = start(
        &x,
        &r1,
        SessionMode::OneShot,
        "greenhouse",
        PeerRole::Device,
    );
    let (i, r) = run.join().await;
    i.unwrap();
    r.unwrap();
    assert_eq!(
        r2.credential_bindings().await.unwrap(),
        vec![("greenhouse".to_owned(), x.actor())]
    );

    let run = start(
        &y,
        &r2,
        SessionMode::OneShot,
        "greenhouse",
        PeerRole::Device,
    );
    let (i, r) = run.join().await;
    match r {
        Err(ProtocolError::CredentialBound {
            principal,
            bound,
            presented,
        }) => {
            assert_eq!(principal, "greenhouse");
            assert_eq!((bound, presented), (x.actor(), y.actor()));
        }
        other => panic!("expected CredentialBound, got {other:?}"),
    }
    assert!(i.is_err(), "the initiator is refused");
    assert_eq!(r2.version_vector().await.unwrap().get(&y.actor()), 0);

    readings(&x, "x.temp", 100, 1).await;
    let run = start(
        &x,
        &r2,
        SessionMode::OneShot,
        "greenhouse",
        PeerRole::Device,
    );
    let (i, r) = run.join().await;
    i.unwrap();
    r.unwrap();
    assert_eq!(r1.version_vector().await.unwrap().get(&x.actor()), 2);
    r1.close().await;
    r2.close().await;
    db.drop().await;
}

/// A device whose store was stamped a year ahead rebases its clock: through the other
/// replica, its succession record moves the `device` credential on to its new actor (in the
/// database, shared by the replicas, the old actor kept as a predecessor), its new changes
/// apply while the year-ahead ones stay held back. A record not signed by the bound actor's
/// key is refused and rebinds nothing.
#[tokio::test]
async fn a_rebased_device_moves_its_credential_on_at_a_pg_hub() {
    let Some(db) = TestDb::new("session_rebase").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pi.db");
    let now = SystemTime.now_ms();
    let year = 365 * 86_400_000;
    let pi = Store::open_with_time(&path, StoreConfig::default(), ManualTime::new(now + year))
        .await
        .unwrap();
    let old = pi.actor();
    readings(&pi, "pi.temp", 0, 2).await;
    let (r1, r2) = (db.replica().await, db.replica().await);
    let run = start(&pi, &r1, SessionMode::OneShot, "pi", PeerRole::Device);
    let (i, r) = run.join().await;
    i.unwrap();
    r.unwrap();
    assert_eq!(r1.version_vector().await.unwrap().get(&old), 0, "held back");
    pi.close().await;

    let record = Store::rebase_clock(&path, now).await.unwrap();
    let pi = Store::open(&path, StoreConfig::default()).await.unwrap();
    assert_eq!(pi.actor(), record.new);
    readings(&pi, "pi.temp", 100, 3).await;
    assert!(pi.last_hlc().ms() < now + year / 2, "{}", pi.last_hlc());
    let run = start(&pi, &r2, SessionMode::OneShot, "pi", PeerRole::Device);
    let (i, r) = run.join().await;
    i.unwrap();
    r.unwrap();
    assert_eq!(
        r1.credential_bindings().await.unwrap(),
        vec![("pi".to_owned(), record.new)]
    );
    assert_eq!(r1.credential_predecessors("pi").await.unwrap(), vec![old]);
    assert_eq!(r1.version_vector().await.unwrap().get(&record.new), 3);
    assert_eq!(r1.version_vector().await.unwrap().get(&old), 0);

    // A thief with a record naming the new actor's key but signed by its own.
    let thief_path = dir.path().join("thief.db");
    let thief = device(&dir, "thief.db").await;
    let thief_actor = thief.actor();
    readings(&thief, "thief.temp", 0, 1).await;
    thief.close().await;
    let key = kdelta_sync::seal::SigningKey::generate().unwrap();
    let mut forged = Succession::sign(record.new, &key, thief_actor, key.public(), now);
    forged.old_key = r1.actor_key(record.new).await.unwrap().expect("bound key");
    let conn = rusqlite::Connection::open(&thief_path).unwrap();
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)",
        rusqlite::params![format!("own_succession/{thief_actor}"), forged.to_bytes()],
    )
    .unwrap();
    drop(conn);
    let thief = device(&dir, "thief.db").await;
    let run = start(&thief, &r1, SessionMode::OneShot, "pi", PeerRole::Device);
    let (_, r) = run.join().await;
    match r {
        Err(ProtocolError::ForgedSuccession {
            principal,
            old,
            new,
            reason,
        }) => {
            assert_eq!(
                (principal.as_str(), old, new),
                ("pi", record.new, thief_actor)
            );
            assert_eq!(reason, SuccessionError::BadSignature);
        }
        other => panic!("expected ForgedSuccession, got {other:?}"),
    }
    assert_eq!(
        r2.credential_bindings().await.unwrap(),
        vec![("pi".to_owned(), record.new)]
    );
    assert_eq!(r2.credential_predecessors("pi").await.unwrap(), vec![old]);
    r1.close().await;
    r2.close().await;
    db.drop().await;
}

/// A cloned card meeting a PostgreSQL hub: the copy writes its own seq 2 and syncs through
/// the other replica after the original did. The hub reports the fork naming both stores'
/// peers — the copy's, and the one its own copy of that actor came from (`actor_origins`,
/// shared by the replicas).
#[tokio::test]
async fn a_fork_at_a_pg_hub_names_both_peers() {
    let Some(db) = TestDb::new("session_fork_origins").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = device(&dir, "a.db").await;
    readings(&a, "image", 0, 1).await;
    a.close().await;
    std::fs::copy(dir.path().join("a.db"), dir.path().join("b.db")).unwrap();
    let (a, copy) = (device(&dir, "a.db").await, device(&dir, "b.db").await);
    readings(&a, "a.only", 100, 1).await;
    // Stamped apart, so the two seq 2s differ by HLC (a deadline, not a guess).
    let end = Instant::now() + Duration::from_secs(5);
    while SystemTime.now_ms() <= a.last_hlc().ms() {
        assert!(Instant::now() < end, "the wall clock does not advance");
        tokio::task::yield_now().await;
    }
    readings(&copy, "copy.only", 200, 1).await;
    let (r1, r2) = (db.replica().await, db.replica().await);
    let run = start(&a, &r1, SessionMode::OneShot, "greenhouse-1", PeerRole::Hub);
    let (i, r) = run.join().await;
    i.unwrap();
    r.unwrap();
    let run = start(
        &copy,
        &r2,
        SessionMode::OneShot,
        "greenhouse-2",
        PeerRole::Hub,
    );
    let stats = run.responder_stats.clone();
    let (i, r) = run.join().await;
    i.unwrap();
    r.unwrap();
    let at_hub = stats.snapshot();
    assert_eq!(at_hub.actor_forks, 1, "{at_hub:?}");
    let message = at_hub.last_fork.expect("a fork report").message;
    for part in [
        "peer \"greenhouse-2\"",
        "peer \"greenhouse-1\", from which this store first received",
    ] {
        assert!(message.contains(part), "{part:?} in {message}");
    }
    // The original's seq 2 stays the hub's.
    assert_eq!(r2.version_vector().await.unwrap().get(&a.actor()), 2);
    r1.close().await;
    r2.close().await;
    db.drop().await;
}
