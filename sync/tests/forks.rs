//! Cloned stores (issue 15, item 6, detection): two stores with the same actor — a copied
//! database file, as an imaged SD card or a backup restored on a second device leaves — write
//! different changes under the same `(actor, seq)`. Detected between the two stores directly,
//! and through a hub: the fork is reported naming the actor and the peer, counted, and that
//! actor is not merged from that peer while everything else keeps syncing.

use std::sync::Arc;
use std::time::Duration;

use kdelta_sync::protocol::*;
use kdelta_sync::*;
use tokio::time::timeout;

const T0: i64 = 1_764_000_000_000;
const TOKEN: &str = "correct horse battery staple";
const DEADLINE: Duration = Duration::from_secs(60);

async fn open(dir: &tempfile::TempDir, name: &str) -> Store {
    Store::open(dir.path().join(name), StoreConfig::default())
        .await
        .unwrap()
}

fn batch(series: &str, minute: i64) -> ReadingBatch {
    let mut b = ReadingBatch::new();
    for i in 0..3 {
        b.push(
            series,
            T0 + minute * 60_000 + i * 1000,
            i as f64,
            Some("°C"),
        );
    }
    b
}

/// A store and its clone: `a.db` after one write, copied byte for byte to `b.db`.
async fn store_and_clone(dir: &tempfile::TempDir) -> (Store, Store) {
    let a = open(dir, "a.db").await;
    a.append(batch("image", 0)).await.unwrap();
    a.close().await;
    std::fs::copy(dir.path().join("a.db"), dir.path().join("b.db")).unwrap();
    let (a, b) = (open(dir, "a.db").await, open(dir, "b.db").await);
    assert_eq!(a.actor(), b.actor(), "a copied database keeps its actor");
    (a, b)
}

/// Both seq 2s descend from one HLC: made in the same millisecond they would be stamped
/// alike and an anchor (compared by HLC) could not tell them apart. Waits until the wall
/// clock has passed `store`'s last stamp (a deadline, not a guess).
async fn wall_clock_passes(store: &Store) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while SystemTime.now_ms() <= store.last_hlc().ms() {
        assert!(
            std::time::Instant::now() < deadline,
            "the wall clock does not advance"
        );
        tokio::task::yield_now().await;
    }
}

/// One one-shot session from `initiator` (announcing `name`) to `responder`; both sides
/// must end cleanly. Returns the responder's counters.
async fn sync_once(initiator: &Store, name: &str, responder: &Store) -> StatsSnapshot {
    let ((i_tx, i_rx), (r_tx, r_rx)) = memory_link(8);
    let config = SyncConfig {
        mode: SessionMode::OneShot,
        ..SyncConfig::default()
    };
    let i = SyncSession::initiator(
        initiator.clone(),
        SyncConfig {
            token: Some(TOKEN.into()),
            peer_name: name.into(),
            ..config.clone()
        },
    );
    let auth = Arc::new(TokenAuthenticator::new().with_token(name, TOKEN));
    let r = SyncSession::responder(responder.clone(), config, auth);
    let stats = r.stats();
    let never = std::future::pending::<()>;
    let both = async { tokio::join!(i.run(i_tx, i_rx, never()), r.run(r_tx, r_rx, never())) };
    let (a, b) = timeout(DEADLINE, both).await.expect("the session ends");
    a.unwrap();
    b.unwrap();
    stats.snapshot()
}

#[tokio::test]
async fn two_stores_with_one_actor_show_as_a_fork_of_its_history() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = store_and_clone(&dir).await;
    // Both write their own seq 2.
    a.append(batch("a.only", 1)).await.unwrap();
    wall_clock_passes(&a).await;
    b.append(batch("b.only", 1)).await.unwrap();
    let from_b = b
        .changes_since(&VersionVector::new(), usize::MAX)
        .await
        .unwrap();
    let forks = a.find_forks(&from_b, &[]).await.unwrap();
    assert_eq!(forks.len(), 1, "{forks:?}");
    assert_eq!((forks[0].actor, forks[0].seq), (a.actor(), 2));
    assert!(forks[0].to_string().contains(&format!("{}:2", a.actor())));
    // The shared change (seq 1, from the image) is no fork, and neither is a's own log.
    let own = a
        .changes_since(&VersionVector::new(), usize::MAX)
        .await
        .unwrap();
    assert!(a.find_forks(&own, &[]).await.unwrap().is_empty());
    assert!(a.find_forks(&from_b[..1], &[]).await.unwrap().is_empty());
    // Changes differing only in content (same HLC, another series) are a fork too.
    let mut same_time = own[1].clone();
    if let ChangeBody::Readings(r) = &mut same_time.body {
        r.series[0].name = "renamed".into();
    }
    assert_eq!(a.find_forks(&[same_time], &[]).await.unwrap().len(), 1);
    // A copy that lacks some series of the change (pruned by retention on one side) is the
    // same change.
    let mut two = batch("a.first", 2);
    two.series.extend(batch("a.second", 2).series);
    a.append(two).await.unwrap();
    let own = a
        .changes_since(&VersionVector::new(), usize::MAX)
        .await
        .unwrap();
    let mut pruned = own[2].clone();
    if let ChangeBody::Readings(r) = &mut pruned.body {
        r.series.truncate(1);
    }
    assert!(a.find_forks(&[pruned], &[]).await.unwrap().is_empty());
    // An anchor names a held change by seq and HLC: b's seq 2 is not a's.
    let b_anchor = (b.actor(), 2, from_b[1].hlc);
    let forks = a.find_forks(&[], &[b_anchor]).await.unwrap();
    assert_eq!((forks.len(), forks[0].seq), (1, 2));
    let a_anchor = (a.actor(), 2, own[1].hlc);
    assert!(a.find_forks(&[], &[a_anchor]).await.unwrap().is_empty());
    assert_eq!(
        a.hlcs_at(&[(a.actor(), 2), (a.actor(), 9)]).await.unwrap(),
        vec![a_anchor],
        "held changes only"
    );

    // Meeting directly, the two refuse each other in the handshake.
    let ((i_tx, i_rx), (r_tx, r_rx)) = memory_link(8);
    let i = SyncSession::initiator(
        b.clone(),
        SyncConfig {
            token: Some(TOKEN.into()),
            ..SyncConfig::default()
        },
    );
    let auth = Arc::new(TokenAuthenticator::new().with_token("b", TOKEN));
    let r = SyncSession::responder(a.clone(), SyncConfig::default(), auth);
    let never = std::future::pending::<()>;
    let (i, r) = tokio::join!(i.run(i_tx, i_rx, never()), r.run(r_tx, r_rx, never()));
    assert!(matches!(r, Err(ProtocolError::SameActor(x)) if x == a.actor()));
    assert!(i.is_err());
}

#[tokio::test]
async fn a_hub_detects_a_cloned_device_and_keeps_syncing_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (a, clone) = store_and_clone(&dir).await;
    let hub = open(&dir, "hub.db").await;
    let other = open(&dir, "other.db").await;
    a.append(batch("a.only", 1)).await.unwrap();
    wall_clock_passes(&a).await;
    // The clone writes its own seq 2 and goes on to seq 3: only seq 3 is above what the hub
    // holds, so only the page's anchor (the clone's seq 2, by HLC) shows the fork.
    clone.append(batch("clone.only", 1)).await.unwrap();
    clone.append(batch("clone.only", 2)).await.unwrap();
    hub.append(batch("hub.temp", 0)).await.unwrap();
    other.append(batch("other.temp", 0)).await.unwrap();

    let at_hub = sync_once(&a, "greenhouse-1", &hub).await;
    assert_eq!(at_hub.actor_forks, 0);
    sync_once(&other, "greenhouse-3", &hub).await;
    let hub_before = hub.version_vector();

    let at_hub = sync_once(&clone, "greenhouse-2", &hub).await;
    assert_eq!(at_hub.actor_forks, 1);
    let fork = at_hub.last_fork.expect("a fork report");
    assert_eq!(fork.code, "actor_fork");
    for part in [
        format!("change {}:2 differs", a.actor()),
        "peer \"greenhouse-2\"".to_owned(),
        "kdelta rekey".to_owned(),
    ] {
        assert!(fork.message.contains(&part), "{part:?} in {}", fork.message);
    }
    // Nothing of the clone's actor merged at the hub; the rest flowed to the clone.
    assert_eq!(hub.version_vector(), hub_before);
    assert_eq!(hub.version_vector().get(&a.actor()), 2);
    assert_eq!(clone.version_vector().get(&hub.actor()), 1);
    assert_eq!(clone.version_vector().get(&other.actor()), 1);
    assert_eq!(hub.verify_digest().await.unwrap(), hub.digest());

    // The original keeps syncing with the hub, without a fork; so does everyone else.
    a.append(batch("a.only", 2)).await.unwrap();
    let at_hub = sync_once(&a, "greenhouse-1", &hub).await;
    assert_eq!(at_hub.actor_forks, 0);
    assert_eq!(hub.version_vector().get(&a.actor()), 3);
    sync_once(&other, "greenhouse-3", &hub).await;
    assert_eq!(other.version_vector(), hub.version_vector());
    assert_eq!(other.digest(), hub.digest());
}

#[tokio::test]
async fn clones_standing_at_the_same_seq_are_detected_by_their_tips() {
    let dir = tempfile::tempdir().unwrap();
    let (a, clone) = store_and_clone(&dir).await;
    let hub = open(&dir, "hub.db").await;
    // Each writes its own seq 2, and neither goes further: the hub, once it holds a's, has
    // no change of that actor to receive from the clone, nor to send it.
    a.append(batch("a.only", 1)).await.unwrap();
    wall_clock_passes(&a).await;
    clone.append(batch("clone.only", 1)).await.unwrap();
    let at_hub = sync_once(&a, "greenhouse-1", &hub).await;
    assert_eq!(at_hub.actor_forks, 0, "the original is no fork");
    assert_eq!(hub.version_vector().get(&a.actor()), 2);

    // The clone's session: the hub sees the clone's tip (its seq 2) differ from its own
    // copy of that seq, and the clone sees the hub's copy of its own actor differ.
    let ((i_tx, i_rx), (r_tx, r_rx)) = memory_link(8);
    let config = SyncConfig {
        mode: SessionMode::OneShot,
        ..SyncConfig::default()
    };
    let i = SyncSession::initiator(
        clone.clone(),
        SyncConfig {
            token: Some(TOKEN.into()),
            peer_name: "greenhouse-2".into(),
            ..config.clone()
        },
    );
    let clone_stats = i.stats();
    let auth = Arc::new(TokenAuthenticator::new().with_token("greenhouse-2", TOKEN));
    let r = SyncSession::responder(hub.clone(), config, auth);
    let hub_stats = r.stats();
    let never = std::future::pending::<()>;
    let both = async { tokio::join!(i.run(i_tx, i_rx, never()), r.run(r_tx, r_rx, never())) };
    let (i, r) = timeout(DEADLINE, both).await.expect("the session ends");
    i.unwrap();
    r.unwrap();
    let (at_hub, at_clone) = (hub_stats.snapshot(), clone_stats.snapshot());
    assert_eq!(at_hub.actor_forks, 1, "the hub reports the clone");
    let fork = at_hub.last_fork.expect("a fork report at the hub");
    // Both stores are named: the clone's peer, and the one the hub's copy came from.
    for part in [
        format!("change {}:2 differs", a.actor()),
        "peer \"greenhouse-2\"".to_owned(),
        "peer \"greenhouse-1\", from which this store first received".to_owned(),
    ] {
        assert!(fork.message.contains(&part), "{part:?} in {}", fork.message);
    }
    assert_eq!(at_clone.actor_forks, 1, "the clone learns it too");
    let fork = at_clone.last_fork.expect("a fork report at the clone");
    assert!(
        fork.message.contains("this store's own actor"),
        "{}",
        fork.message
    );
    // Neither side's copy of seq 2 was replaced.
    assert_ne!(a.last_hlc(), clone.last_hlc());
    assert_eq!(hub.verify_digest().await.unwrap(), hub.digest());

    // Two stores that agree exchange tips without a report.
    let again = sync_once(&a, "greenhouse-1", &hub).await;
    assert_eq!(again.actor_forks, 0);
}
