//! A link never wedges (issue 15, item 4), between real stores (temp SQLite files) over the
//! in-process transport: a change larger than the peer's frame limit is reported and the
//! rest syncs; a store that knows 150,000 actors still exchanges version vectors and pages
//! with a peer at the smallest frame limit; rollups of huge readings stay finite on two
//! replicas that then converge; a local batch that could never sync is refused up front.

use std::sync::Arc;
use std::time::Duration;

use kdelta_sync::protocol::*;
use kdelta_sync::*;
use tokio::time::timeout;

const T0: i64 = 1_764_000_000_000;
const TOKEN: &str = "correct horse battery staple";
/// Generous: the 150,000-actor test moves that many changes through 64 KiB frames in a
/// debug build on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(300);

/// The synthetic actors here send unsigned changes (these tests are about frame sizes, not
/// trust), so the stores take them as `require_signatures = false` does.
async fn open(dir: &tempfile::TempDir, name: &str) -> Store {
    let config = StoreConfig {
        require_signatures: false,
        ..StoreConfig::default()
    };
    Store::open(dir.path().join(name), config).await.unwrap()
}

fn config(max_frame_bytes: usize) -> SyncConfig {
    SyncConfig {
        mode: SessionMode::OneShot,
        max_frame_bytes,
        handshake_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(60),
        ..SyncConfig::default()
    }
}

/// One one-shot session from `initiator` to `responder`, each accepting frames up to its
/// own limit; both sides must end cleanly. Returns their counters.
async fn sync_once(
    initiator: &Store,
    initiator_max: usize,
    responder: &Store,
    responder_max: usize,
) -> (StatsSnapshot, StatsSnapshot) {
    let ((i_tx, i_rx), (r_tx, r_rx)) = memory_link(8);
    let i = SyncSession::initiator(
        initiator.clone(),
        SyncConfig {
            token: Some(TOKEN.into()),
            ..config(initiator_max)
        },
    );
    let auth = Arc::new(TokenAuthenticator::new().with_token("peer", TOKEN));
    let r = SyncSession::responder(responder.clone(), config(responder_max), auth);
    let stats = (i.stats(), r.stats());
    let never = std::future::pending::<()>;
    let both = async { tokio::join!(i.run(i_tx, i_rx, never()), r.run(r_tx, r_rx, never())) };
    let (a, b) = timeout(DEADLINE, both).await.expect("the session ends");
    a.unwrap();
    b.unwrap();
    (stats.0.snapshot(), stats.1.snapshot())
}

async fn assert_same(a: &Store, b: &Store) {
    assert_eq!(a.version_vector(), b.version_vector());
    assert_eq!(a.digest(), b.digest());
    assert_eq!(a.verify_digest().await.unwrap(), a.digest());
    assert_eq!(b.verify_digest().await.unwrap(), b.digest());
}

fn small_batch(series: &str, minute: i64) -> ReadingBatch {
    let mut b = ReadingBatch::new();
    for i in 0..5 {
        b.push(
            series,
            T0 + minute * 60_000 + i * 1000,
            i as f64,
            Some("°C"),
        );
    }
    b
}

/// `n` readings whose values do not shrink to short floats: about 12 bytes each.
fn big_batch(series: &str, n: usize) -> ReadingBatch {
    let mut b = ReadingBatch::new();
    for i in 0..n {
        let v = (i as f64 * 0.731).sin() * 1_234.567_891;
        b.push(series, T0 + 3_600_000 + i as i64 * 1000, v, Some("W"));
    }
    b
}

#[tokio::test]
async fn a_change_larger_than_the_peers_frames_is_reported_and_the_rest_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir, "a.db").await;
    let b = open(&dir, "b.db").await;
    let c = open(&dir, "c.db").await;
    for m in 0..3 {
        c.append(small_batch("c.temp", m)).await.unwrap();
    }
    // `a` relays c's changes, and holds one change of its own too large for b's frames.
    sync_once(&c, DEFAULT_MAX_FRAME_BYTES, &a, DEFAULT_MAX_FRAME_BYTES).await;
    a.append(small_batch("a.temp", 0)).await.unwrap();
    let big = a.append(big_batch("a.power", 8_000)).await.unwrap();
    a.append(small_batch("a.temp", 1)).await.unwrap();
    b.append(small_batch("b.temp", 0)).await.unwrap();
    let small = MIN_FRAME_BYTES as usize;
    let size = a
        .changes_since(&VersionVector::new(), usize::MAX)
        .await
        .unwrap()
        .iter()
        .find(|ch| ch.seq == big.seq && ch.actor == a.actor())
        .map(Change::encoded_len)
        .unwrap();
    assert!(size > small, "the change ({size} bytes) must not fit");

    let (from_a, _) = sync_once(&a, DEFAULT_MAX_FRAME_BYTES, &b, small).await;
    // Everything but a's big change and what waits behind it reached b, both ways.
    assert_eq!(b.version_vector().get(&a.actor()), 1);
    assert_eq!(b.version_vector().get(&c.actor()), 3);
    assert_eq!(a.version_vector().get(&b.actor()), 1);
    assert_eq!(from_a.changes_too_large, 1);
    let reported = from_a.last_too_large.expect("a report");
    assert_eq!(reported.code, "change_too_large");
    let named = format!("change {}:{} is {size} bytes", a.actor(), big.seq);
    assert!(reported.message.contains(&named), "{}", reported.message);

    // Once b accepts larger frames, the rest goes through.
    let (from_a, _) = sync_once(&a, DEFAULT_MAX_FRAME_BYTES, &b, DEFAULT_MAX_FRAME_BYTES).await;
    assert_eq!(from_a.changes_too_large, 0);
    assert_same(&a, &b).await;
}

/// Distinct actors, one small readings change each, as a peer that creates them would send.
fn actor_changes(from: u32, to: u32) -> Vec<Change> {
    (from..to)
        .map(|i| {
            let mut id = [0x5A; 16];
            id[..4].copy_from_slice(&i.to_be_bytes());
            let mut b = ReadingBatch::new();
            b.push("swarm", T0 + i as i64, 1.0, None);
            Change {
                actor: ActorId(id),
                seq: 1,
                hlc: Hlc::new(T0 as u64, 0),
                body: ChangeBody::Readings(b),
                seal: None,
                pruned_rollups: Vec::new(),
            }
        })
        .collect()
}

#[tokio::test]
async fn a_store_with_150000_actors_syncs_through_the_smallest_frames() {
    const ACTORS: u32 = 150_000;
    let dir = tempfile::tempdir().unwrap();
    let hub = open(&dir, "hub.db").await;
    let device = open(&dir, "device.db").await;
    for from in (0..ACTORS).step_by(25_000) {
        hub.apply_remote(actor_changes(from, from + 25_000))
            .await
            .unwrap();
    }
    hub.append(small_batch("hub.temp", 0)).await.unwrap();
    device.append(small_batch("device.temp", 0)).await.unwrap();
    let small = MIN_FRAME_BYTES as usize;
    // A vector that large does not fit one small frame: it must go in parts.
    let one_frame = FrameCodec::default().encode(
        &Frame::Vector(hub.version_vector()),
        Compression::None,
        small,
    );
    assert_eq!(one_frame.unwrap_err().code(), "frame_too_large");

    // The device (initiator) learns every actor; the hub answers in vector parts.
    sync_once(&device, small, &hub, small).await;
    assert_same(&device, &hub).await;
    assert_eq!(device.version_vector().len(), ACTORS as usize + 2);

    // Both now send a 150,000-actor vector in parts; new writes still flow both ways.
    device.append(small_batch("device.temp", 1)).await.unwrap();
    hub.append(small_batch("hub.temp", 1)).await.unwrap();
    let (d, h) = sync_once(&device, small, &hub, small).await;
    assert_eq!((d.changes_sent, h.changes_sent), (1, 1));
    assert_same(&device, &hub).await;
}

#[tokio::test]
async fn rollups_of_huge_readings_stay_finite_and_replicas_converge() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir, "a.db").await;
    let b = open(&dir, "b.db").await;
    let huge = |values: &[(i64, f64)]| {
        let mut batch = ReadingBatch::new();
        for &(t, v) in values {
            batch.push("extreme", T0 + t, v, None);
        }
        batch
    };
    // One minute on both replicas: each alone overflows; together inf + -inf would be NaN.
    a.append(huge(&[(0, 1e308), (1, 1e308), (2, f64::MAX)]))
        .await
        .unwrap();
    b.append(huge(&[(3, -1e308), (4, -1e308), (5, -f64::MAX)]))
        .await
        .unwrap();
    sync_once(&a, DEFAULT_MAX_FRAME_BYTES, &b, DEFAULT_MAX_FRAME_BYTES).await;
    assert_same(&a, &b).await;
    let query = AggregateQuery {
        series: "extreme".into(),
        from: T0 - T0 % 60_000,
        to: T0 - T0 % 60_000 + 60_000,
        bucket_ms: 60_000,
    };
    let (on_a, on_b) = (
        a.aggregate(&query).await.unwrap(),
        b.aggregate(&query).await.unwrap(),
    );
    assert_eq!(on_a, on_b, "both replicas hold the same rollup");
    let bucket = on_a[0];
    assert_eq!(bucket.count, 6);
    assert!(
        bucket.sum.is_finite() && bucket.avg.is_finite(),
        "{bucket:?}"
    );
    assert_eq!((bucket.min, bucket.max), (-f64::MAX, f64::MAX));
    // More of the same keeps flowing: the link is not stuck on a refused page.
    a.append(huge(&[(10, -f64::MAX)])).await.unwrap();
    b.append(huge(&[(11, f64::MAX)])).await.unwrap();
    sync_once(&b, DEFAULT_MAX_FRAME_BYTES, &a, DEFAULT_MAX_FRAME_BYTES).await;
    assert_same(&a, &b).await;
    assert_eq!(a.aggregate(&query).await.unwrap()[0].count, 8);
}

#[tokio::test]
async fn a_local_batch_over_max_change_bytes_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        limits: Limits {
            max_change_bytes: 64 << 10,
            max_value_bytes: 16 << 10,
            ..Limits::default()
        },
        ..StoreConfig::default()
    };
    let store = Store::open(dir.path().join("a.db"), config).await.unwrap();
    let err = store.append(big_batch("p", 8_000)).await.unwrap_err();
    assert_eq!(err.code(), "invalid_batch");
    assert!(
        err.to_string().contains("max_change_bytes (65536)"),
        "{err}"
    );
    assert_eq!(store.stats().await.unwrap().changes, 0, "nothing stored");
    // A batch that fits is stored, and its change is within the limit.
    let meta = store.append(big_batch("p", 4_000)).await.unwrap();
    let stored = store
        .changes_since(&VersionVector::new(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(stored[0].seq, meta.seq);
    assert!(stored[0].encoded_len() <= 64 << 10);

    // Ingest paths without an atomicity promise store a large batch as several changes.
    let mut several = big_batch("q", 20_000);
    several.series.extend(big_batch("r", 3).series);
    let parts = store.append_in_parts(several).await.unwrap();
    assert!(parts.len() >= 4, "{} parts", parts.len());
    let stored = store
        .changes_since(&VersionVector::new(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1 + parts.len());
    assert!(stored.iter().all(|c| c.encoded_len() <= 64 << 10));
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.readings, 4_000 + 20_000 + 3);
}
