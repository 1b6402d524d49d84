//! The sync protocol between real stores (temp SQLite files) over in-process transports:
//! convergence, relay through a hub, a mesh, resumption after a cut link, live push, and
//! hostile peers. Frame decoding is property-tested against arbitrary and mutated bytes.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use kdelta_sync::protocol::*;
use kdelta_sync::*;
use proptest::prelude::*;
use support::session::*;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

const T0: i64 = 1_764_000_000_000;

// ---------------------------------------------------------------- harness (the sessions: `support/session.rs`)

/// Appends `changes` batches of `per_change` readings of `series`, starting at minute
/// `from` (so calls with different `from` never collide).
async fn readings(store: &Store, series: &str, from: i64, changes: usize, per_change: usize) {
    for c in 0..changes {
        let mut b = ReadingBatch::new();
        for i in 0..per_change {
            let t = T0 + (from * 60 + (c * per_change + i) as i64) * 1000;
            let v = 20.0 + ((c * per_change + i) as f64 / 60.0).sin() * 5.0;
            b.push(series, t, (v * 100.0).round() / 100.0, Some("°C"));
        }
        store.append(b).await.unwrap();
    }
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A link through a relay that cuts both directions once `budget` bytes have crossed. The
/// frame that crosses the budget is dropped, or with `truncate` delivered cut short.
fn lossy_link(budget: usize, truncate: bool) -> (MemoryEnd, MemoryEnd) {
    let (a, (mut pa_tx, mut pa_rx)) = memory_link(8);
    let ((mut pb_tx, mut pb_rx), b) = memory_link(8);
    tokio::spawn(async move {
        let mut used = 0usize;
        loop {
            let (frame, to_b) = tokio::select! {
                f = pa_rx.recv() => (f, true),
                f = pb_rx.recv() => (f, false),
            };
            let Ok(Some(frame)) = frame else { break };
            let out = if to_b { &mut pb_tx } else { &mut pa_tx };
            if used + frame.len() > budget {
                if truncate {
                    let _ = out.send(frame[..budget - used].to_vec()).await;
                }
                break; // dropping every half cuts the link both ways
            }
            used += frame.len();
            if out.send(frame).await.is_err() {
                break;
            }
        }
    });
    (a, b)
}

// ---------------------------------------------------------------- convergence

#[tokio::test]
async fn disjoint_writes_converge() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(&dir, "a.db").await, open(&dir, "b.db").await);
    readings(&a, "a.temp", 0, 20, 50).await;
    readings(&b, "b.temp", 0, 10, 50).await;
    a.put("shared/setpoint", &serde_json::json!({"temp": 21}))
        .await
        .unwrap();
    b.put("b/only", &serde_json::json!([1, 2, 3]))
        .await
        .unwrap();

    let (i, r) = sync_once(&a, &b).await;
    assert_same(&[&a, &b]).await;
    assert_eq!((i.changes_sent, i.changes_applied), (21, 11));
    assert_eq!((r.changes_sent, r.changes_applied), (11, 21));
    assert_eq!(i.changes_skipped + r.changes_skipped, 0);
    assert_eq!(i.phase, SessionPhase::Closed);
    assert!(i.last_error.is_none() && r.last_error.is_none());
    assert_eq!(r.principal.as_deref(), Some("peer"));

    // A second session finds nothing to send.
    let (i, r) = sync_once(&a, &b).await;
    assert_eq!((i.changes_sent, r.changes_sent), (0, 0));
}

#[tokio::test]
async fn a_hub_relays_between_devices() {
    let dir = tempfile::tempdir().unwrap();
    let (a, hub, b) = (
        open(&dir, "a.db").await,
        open(&dir, "hub.db").await,
        open(&dir, "b.db").await,
    );
    readings(&a, "a.temp", 0, 5, 20).await;
    readings(&b, "b.temp", 0, 5, 20).await;
    let ah = start(&a, &hub, SessionMode::Continuous, memory_link(8));
    let bh = start(&b, &hub, SessionMode::Continuous, memory_link(8));
    eventually("the star to converge", || {
        a.version_vector() == b.version_vector() && hub.version_vector() == a.version_vector()
    })
    .await;
    // Live relay: a new write on A reaches B through the hub.
    a.put("a/state", &serde_json::json!("on")).await.unwrap();
    eventually("A's write to reach B", || {
        b.version_vector() == a.version_vector()
    })
    .await;
    assert_same(&[&a, &hub, &b]).await;
    for run in [ah, bh] {
        let (i, r) = run.stop().await;
        assert!(i.is_ok() && r.is_ok(), "{i:?} {r:?}");
    }
}

#[tokio::test]
async fn a_mesh_stores_each_change_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = [
        open(&dir, "a.db").await,
        open(&dir, "b.db").await,
        open(&dir, "c.db").await,
    ];
    for (i, store) in s.iter().enumerate() {
        readings(store, &format!("s{i}"), 0, 8, 30).await;
    }
    let runs = [
        start(&s[0], &s[1], SessionMode::Continuous, memory_link(8)),
        start(&s[1], &s[2], SessionMode::Continuous, memory_link(8)),
        start(&s[0], &s[2], SessionMode::Continuous, memory_link(8)),
    ];
    // More writes while the mesh is live.
    for (i, store) in s.iter().enumerate() {
        readings(store, &format!("s{i}"), 10, 4, 30).await;
        store
            .put(&format!("doc/{i}"), &serde_json::json!(i))
            .await
            .unwrap();
    }
    eventually("the mesh to converge", || {
        s[1].version_vector() == s[0].version_vector()
            && s[2].version_vector() == s[0].version_vector()
            && s[0].version_vector().total() == 3 * 13
    })
    .await;
    assert_same(&[&s[0], &s[1], &s[2]]).await;
    // Each store's sessions stored every foreign change exactly once (the rest arrived by
    // the other path and was skipped).
    let stats: Vec<_> = runs
        .iter()
        .map(|r| (r.stats.0.snapshot(), r.stats.1.snapshot()))
        .collect();
    let applied = [
        stats[0].0.changes_applied + stats[2].0.changes_applied,
        stats[0].1.changes_applied + stats[1].0.changes_applied,
        stats[1].1.changes_applied + stats[2].1.changes_applied,
    ];
    assert_eq!(applied, [26, 26, 26]);
    for store in &s {
        assert_eq!(store.stats().await.unwrap().changes, 39);
    }
    for run in runs {
        let (i, r) = run.stop().await;
        assert!(i.is_ok() && r.is_ok());
    }
}

#[tokio::test]
async fn live_mode_pushes_new_writes_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(&dir, "a.db").await, open(&dir, "b.db").await);
    readings(&a, "a.temp", 0, 3, 10).await;
    let run = start(&a, &b, SessionMode::Continuous, memory_link(8));
    let (si, sr) = run.stats.clone();
    eventually("live mode", || {
        si.snapshot().phase == SessionPhase::Live && sr.snapshot().phase == SessionPhase::Live
    })
    .await;
    readings(&a, "a.temp", 10, 1, 10).await;
    b.put("b/cmd", &serde_json::json!({"fan": true}))
        .await
        .unwrap();
    eventually("both writes to cross", || {
        a.version_vector() == b.version_vector() && a.version_vector().total() == 5
    })
    .await;
    assert_same(&[&a, &b]).await;
    // Keepalives flow while idle, and the session stays up.
    let frames = si.snapshot().frames_in;
    eventually("a keepalive", || si.snapshot().frames_in > frames + 1).await;
    assert_eq!(si.snapshot().phase, SessionPhase::Live);
    let (i, r) = run.stop().await;
    assert!(i.is_ok() && r.is_ok(), "{i:?} {r:?}");
}

// ---------------------------------------------------------------- resumption

#[tokio::test]
async fn a_cut_link_resumes_with_only_what_is_missing() {
    for truncate in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (open(&dir, "a.db").await, open(&dir, "b.db").await);
        readings(&a, "a.temp", 0, 200, 100).await;
        let total = a.version_vector().total();

        // Session 1: small uncompressed pages (about 11 changes each), cut after roughly a
        // third of the backlog.
        let small = SyncConfig {
            page_bytes: 16 << 10,
            max_frame_bytes: 64 << 10,
            compression: vec![Compression::None],
            ..config(SessionMode::OneShot)
        };
        let run = start_with(&a, &b, small, lossy_link(100_000, truncate));
        let (s1, _) = run.stats.clone();
        let (i, r) = run.join().await;
        // With `truncate` the receiver may see the cut-short frame (malformed) or the dead
        // link first; either way nothing of it is stored.
        for e in [i.unwrap_err(), r.unwrap_err()] {
            assert!(
                ["malformed", "transport", "closed"].contains(&e.code()),
                "{e:?}"
            );
        }
        let held = b.version_vector().total();
        assert!(held > 0 && held < total, "held {held} of {total}");
        assert_eq!(
            b.stats().await.unwrap().changes,
            held,
            "no change half-stored"
        );
        let s1 = s1.snapshot();

        // Session 2 sends exactly what B lacks, nothing it already stored.
        let missing = a.version_vector().changes_ahead_of(&b.version_vector());
        let (i, r) = sync_once(&a, &b).await;
        assert_same(&[&a, &b]).await;
        assert_eq!(i.changes_sent, missing);
        assert_eq!((r.changes_applied, r.changes_skipped), (missing, 0));
        // Bytes: session 1's delivered pages plus session 2 cost no more than one full
        // sync plus the pages lost in flight at the cut.
        assert!(s1.changes_sent + i.changes_sent <= total + 4 * 12);
        let fresh = open(&dir, "fresh.db").await;
        let (full, _) = sync_once(&a, &fresh).await;
        assert!(
            i.bytes_out < full.bytes_out,
            "resumed {} bytes vs full {}",
            i.bytes_out,
            full.bytes_out
        );
    }
}

/// A sink that delivers `allowed` frames, then fails like a reset connection.
struct ResetAfter {
    inner: MemorySink,
    allowed: usize,
}

impl FrameSink for ResetAfter {
    async fn send(&mut self, frame: Vec<u8>) -> std::io::Result<()> {
        if self.allowed == 0 {
            return Err(std::io::ErrorKind::ConnectionReset.into());
        }
        self.allowed -= 1;
        self.inner.send(frame).await
    }
}

/// Regression: when the link failed on a send (an ack hitting a reset connection), the pages
/// the peer had already delivered were dropped with the session's queue and sent again by
/// the next session. Every page received whole is now applied before the session ends.
#[tokio::test]
async fn pages_received_before_a_failed_send_are_applied() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(&dir, "a.db").await, open(&dir, "b.db").await);
    readings(&a, "a.temp", 0, 12, 50).await;
    let ((r_tx, r_rx), (tx, rx)) = memory_link(32);
    let session = SyncSession::responder(b.clone(), config(SessionMode::Continuous), auth());
    // Welcome and Vector get through; the first ack fails.
    let sink = ResetAfter {
        inner: r_tx,
        allowed: 2,
    };
    let stats = session.stats();
    let handle = tokio::spawn(session.run(sink, r_rx, std::future::pending()));
    let mut raw = Raw {
        tx,
        rx,
        codec: FrameCodec::default(),
    };
    raw.handshake(TOKEN).await;
    let changes = a
        .changes_since(&VersionVector::new(), usize::MAX)
        .await
        .unwrap();
    for (i, change) in changes.into_iter().enumerate() {
        raw.send(&Frame::Page {
            page_id: i as u64 + 1,
            changes: vec![change],
            anchors: vec![],
        })
        .await;
    }
    drop(raw); // the peer's side of the link closes after the last page
    let e = session_error(handle).await;
    assert!(["transport", "closed"].contains(&e.code()), "{e:?}");
    assert_eq!(stats.snapshot().pages_received, 12);
    assert_eq!(b.version_vector(), a.version_vector());
    assert_eq!(b.digest(), a.digest());
}

// ---------------------------------------------------------------- hostile peers

/// The far end of a link that the test speaks for, frame by frame.
struct Raw {
    tx: MemorySink,
    rx: MemorySource,
    codec: FrameCodec,
}

impl Raw {
    async fn send(&mut self, frame: &Frame) {
        let bytes = self
            .codec
            .encode(frame, Compression::None, usize::MAX)
            .unwrap();
        self.send_bytes(bytes).await;
    }

    async fn send_bytes(&mut self, bytes: Vec<u8>) {
        // The session may already have hung up; that is for the test to check.
        let _ = self.tx.send(bytes).await;
    }

    /// The next frame from the session, or `None` once it closed the link.
    async fn recv(&mut self) -> Option<Frame> {
        let bytes = timeout(DEADLINE, self.rx.recv()).await.unwrap().unwrap()?;
        Some(self.codec.decode(&bytes).unwrap())
    }

    /// Skips pages, acks, live and keepalives until the session refuses; returns the code.
    async fn refusal(&mut self) -> String {
        while let Some(frame) = self.recv().await {
            if let Frame::Refuse { code, .. } = frame {
                return code;
            }
        }
        panic!("the session closed without a Refuse frame");
    }

    /// Plays the initiator's part of the handshake (empty store) with `token`, as a peer
    /// of the first release (no features).
    async fn handshake(&mut self, token: &str) {
        self.handshake_with(token, Vec::new()).await;
    }

    /// [`handshake`](Self::handshake), announcing `features`.
    async fn handshake_with(&mut self, token: &str, features: Vec<String>) {
        self.send(&Frame::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            actor: ActorId([0xAB; 16]),
            peer_name: "raw".into(),
            token: Some(token.into()),
            compression: vec!["none".into()],
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES as u64,
            clock: None,
            tip: None,
            successions: Vec::new(),
            features,
        }))
        .await;
        assert!(matches!(self.recv().await, Some(Frame::Welcome(_))));
        self.send(&Frame::Vector(VersionVector::new())).await;
        assert!(matches!(self.recv().await, Some(Frame::Vector(_))));
    }
}

/// A real responder on `store`, and the raw initiator the test controls.
fn hostile_initiator(store: &Store) -> (Raw, JoinHandle<SessionResult>) {
    let (raw, handle, _) = watched_initiator(store);
    (raw, handle)
}

/// [`hostile_initiator`], with the responder's counters.
fn watched_initiator(
    store: &Store,
) -> (Raw, JoinHandle<SessionResult>, std::sync::Arc<SessionStats>) {
    let ((r_tx, r_rx), (tx, rx)) = memory_link(8);
    let session = SyncSession::responder(store.clone(), config(SessionMode::Continuous), auth());
    let stats = session.stats();
    let handle = tokio::spawn(session.run(r_tx, r_rx, std::future::pending()));
    let raw = Raw {
        tx,
        rx,
        codec: FrameCodec::default(),
    };
    (raw, handle, stats)
}

async fn session_error(h: JoinHandle<SessionResult>) -> ProtocolError {
    timeout(DEADLINE, h).await.unwrap().unwrap().unwrap_err()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn evil_change(seq: u64, hlc_ms: u64) -> Change {
    let mut b = ReadingBatch::new();
    b.push("evil", T0 + seq as i64, 1.0, None);
    Change {
        actor: ActorId([0xEE; 16]),
        seq,
        hlc: Hlc::new(hlc_ms, 0),
        body: ChangeBody::Readings(b),
        seal: None,
        pruned_rollups: Vec::new(),
    }
}

/// `changes` sealed as their actors would sign them (one fresh key per actor, each actor's
/// changes linked in the order given from `CHAIN_START`): hostile pages must pass the
/// signature check (unsigned ones are refused by default) to reach the checks they probe.
fn signed(mut changes: Vec<Change>) -> Vec<Change> {
    use kdelta_sync::seal::{self, CHAIN_START, Seal, SigningKey};
    let mut chains: HashMap<ActorId, (SigningKey, seal::Hash)> = HashMap::new();
    for c in &mut changes {
        let (key, prev) = chains
            .entry(c.actor)
            .or_insert_with(|| (SigningKey::generate().unwrap(), CHAIN_START));
        let h = seal::change_hash(&c.actor, c.seq, c.hlc, prev, &seal::body_hash(&c.body, &[]));
        c.seal = Some(Seal {
            key: key.public(),
            prev: *prev,
            sig: key.sign(&h),
            pruned: vec![],
            body: None,
            run_from: None,
        });
        *prev = h;
    }
    changes
}

/// A store with some data, and a check that it never changes.
async fn victim(dir: &tempfile::TempDir) -> (Store, impl Fn(&Store)) {
    let store = open(dir, "victim.db").await;
    readings(&store, "own", 0, 2, 10).await;
    let (vv, digest) = (store.version_vector(), store.digest());
    (store, move |s: &Store| {
        assert_eq!(s.version_vector(), vv);
        assert_eq!(s.digest(), digest);
    })
}

#[tokio::test]
async fn a_wrong_token_is_unauthorized_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let (store, untouched) = victim(&dir).await;
    let other = open(&dir, "other.db").await;
    readings(&other, "theirs", 0, 1, 10).await;
    let ((i_tx, i_rx), (r_tx, r_rx)) = memory_link(8);
    let i = SyncSession::initiator(
        other.clone(),
        SyncConfig {
            token: Some("guess".into()),
            ..config(SessionMode::OneShot)
        },
    );
    let r = SyncSession::responder(store.clone(), config(SessionMode::OneShot), auth());
    let stats = r.stats();
    let never = std::future::pending::<()>;
    let (i, r) = tokio::join!(i.run(i_tx, i_rx, never()), r.run(r_tx, r_rx, never()));
    assert!(matches!(i, Err(ProtocolError::Unauthorized)), "{i:?}");
    assert!(matches!(r, Err(ProtocolError::Unauthorized)), "{r:?}");
    assert_eq!(stats.snapshot().last_error.unwrap().code, "unauthorized");
    untouched(&store);
    assert_eq!(other.version_vector().total(), 1);
}

#[tokio::test]
async fn unknown_protocol_versions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, untouched) = victim(&dir).await;

    // An envelope of version 2: the body is not even interpreted.
    #[derive(serde::Serialize)]
    struct Envelope {
        v: u16,
        body: ciborium::Value,
    }
    let mut bytes = vec![0u8];
    let body = ciborium::Value::Map(vec![("hello".into(), ciborium::Value::Null)]);
    ciborium::into_writer(&Envelope { v: 2, body }, &mut bytes).unwrap();
    let (mut raw, h) = hostile_initiator(&store);
    raw.send_bytes(bytes).await;
    assert_eq!(raw.refusal().await, "unsupported_version");
    let err = session_error(h).await;
    assert!(
        matches!(
            err,
            ProtocolError::UnsupportedVersion { theirs: 2, ours: 1 }
        ),
        "{err:?}"
    );

    // A version-1 envelope around a hello that asks for version 7.
    let (mut raw, h) = hostile_initiator(&store);
    raw.send(&Frame::Hello(Hello {
        protocol_version: 7,
        actor: ActorId([1; 16]),
        peer_name: "future".into(),
        token: Some(TOKEN.into()),
        compression: vec![],
        max_frame_bytes: DEFAULT_MAX_FRAME_BYTES as u64,
        clock: None,
        tip: None,
        successions: Vec::new(),
        features: Vec::new(),
    }))
    .await;
    assert_eq!(raw.refusal().await, "unsupported_version");
    assert_eq!(session_error(h).await.code(), "unsupported_version");
    untouched(&store);
}

#[tokio::test]
async fn oversized_garbage_and_truncated_frames_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, untouched) = victim(&dir).await;
    let page = FrameCodec::default()
        .encode(
            &Frame::Page {
                page_id: 1,
                changes: (1..=5).map(|s| evil_change(s, now_ms())).collect(),
                anchors: vec![],
            },
            Compression::None,
            usize::MAX,
        )
        .unwrap();
    let cases: Vec<(&str, bool, Vec<u8>)> = vec![
        (
            "frame_too_large",
            false,
            vec![0; DEFAULT_MAX_FRAME_BYTES + 1],
        ),
        (
            "frame_too_large",
            true,
            vec![0; DEFAULT_MAX_FRAME_BYTES + 1],
        ),
        // Before authentication only handshake-sized frames are accepted.
        ("frame_too_large", false, vec![0; 100_000]),
        ("malformed", true, vec![0; 100_000]),
        ("malformed", false, b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        ("malformed", true, vec![0, 0xff, 0x13, 0x37]),
        ("malformed", true, vec![]),
        ("malformed", true, vec![9, 1, 2, 3]),
        ("malformed", true, page[..page.len() / 2].to_vec()),
        ("malformed", true, vec![1, 0x28, 0xb5, 0x2f, 0xfd, 0, 0]),
    ];
    for (code, after_handshake, bytes) in cases {
        let (mut raw, h) = hostile_initiator(&store);
        if after_handshake {
            raw.handshake(TOKEN).await;
        }
        raw.send_bytes(bytes).await;
        assert_eq!(raw.refusal().await, code);
        assert_eq!(session_error(h).await.code(), code);
        untouched(&store);
    }
}

#[tokio::test]
async fn a_page_with_a_gap_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, untouched) = victim(&dir).await;
    let now = now_ms();
    // Valid changes first: the page is refused as a whole.
    let changes = signed(vec![
        evil_change(1, now),
        evil_change(2, now),
        evil_change(4, now),
    ]);
    let (mut raw, h) = hostile_initiator(&store);
    raw.handshake(TOKEN).await;
    raw.send(&Frame::Page {
        page_id: 1,
        changes,
        anchors: vec![],
    })
    .await;
    assert_eq!(raw.refusal().await, "seq_gap");
    let err = session_error(h).await;
    assert!(matches!(err, ProtocolError::Store(_)), "{err:?}");
    assert_eq!(err.code(), "seq_gap");
    untouched(&store);
}

#[tokio::test]
async fn a_future_change_is_held_back_and_the_rest_of_the_page_applies() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, "victim.db").await;
    let now = now_ms();
    let mut other = evil_change(1, now);
    other.actor = ActorId([0xDD; 16]);
    let day = 86_400_000;
    // EE:2 is a day ahead; EE:3 waits behind it; DD:1 and EE:1 apply.
    let changes = signed(vec![
        evil_change(1, now),
        evil_change(2, now + day),
        other,
        evil_change(3, now),
    ]);
    let (mut raw, handle, stats) = watched_initiator(&store);
    raw.handshake(TOKEN).await;
    raw.send(&Frame::Page {
        page_id: 1,
        changes,
        anchors: vec![],
    })
    .await;
    let ack = loop {
        match timeout(DEADLINE, raw.recv()).await.unwrap() {
            Some(Frame::Ack(ack)) => break ack,
            Some(Frame::Refuse { code, message }) => panic!("refused: {code}: {message}"),
            Some(_) => continue,
            None => panic!("the session closed"),
        }
    };
    assert_eq!((ack.applied, ack.skipped), (2, 0));
    assert_eq!(ack.vector.get(&ActorId([0xEE; 16])), 1);
    assert_eq!(ack.vector.get(&ActorId([0xDD; 16])), 1);
    let snap = stats.snapshot();
    assert_eq!(snap.changes_quarantined, 2);
    let q = snap.last_quarantine.expect("a quarantine entry");
    assert_eq!(q.code, "clock_skew");
    assert!(
        q.message.contains(&ActorId([0xEE; 16]).to_string()) && q.message.contains("seq 2"),
        "{}",
        q.message
    );
    // The link is still up: a keepalive is answered.
    raw.send(&Frame::Ping).await;
    loop {
        match timeout(DEADLINE, raw.recv()).await.unwrap() {
            Some(Frame::Pong) => break,
            Some(Frame::Refuse { code, message }) => panic!("refused: {code}: {message}"),
            Some(_) => continue,
            None => panic!("the session closed"),
        }
    }
    assert!(!handle.is_finished());
    handle.abort();
}

/// A store whose wall clock reads `wall_ms` (and stays there), trusted or not.
async fn open_at(dir: &tempfile::TempDir, name: &str, wall_ms: u64, trusted: bool) -> Store {
    let store = Store::open_with_time(
        dir.path().join(name),
        StoreConfig::default(),
        ManualTime::new(wall_ms),
    )
    .await
    .unwrap();
    store.time_reference().set_local_trusted(trusted);
    store
}

#[tokio::test]
async fn devices_with_clocks_behind_sync_both_ways_with_a_correct_hub() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    let hub = open_at(&dir, "hub.db", now, true).await;
    readings(&hub, "hub.temp", 0, 3, 10).await;
    hub.put("fleet/setpoint", &serde_json::json!(21))
        .await
        .unwrap();
    for (name, wall) in [
        ("fake-hwclock.db", now - 14 * 86_400_000),
        ("1970.db", 5_000),
    ] {
        let device = open_at(&dir, name, wall, false).await;
        readings(&device, name, 0, 2, 10).await;
        let (i, r) = sync_once(&device, &hub).await;
        assert_eq!(
            (i.changes_quarantined, r.changes_quarantined),
            (0, 0),
            "{name}"
        );
        assert!(
            device.get("fleet/setpoint").await.unwrap().is_some(),
            "{name}"
        );
        // Having seen the hub's trusted time, the device stamps new writes at or after it,
        // so they win over older writes at the hub.
        let v = device
            .put("fleet/setpoint", &serde_json::json!(name))
            .await
            .unwrap();
        assert!(v.hlc.ms() >= now, "{name}: stamped {} < {now}", v.hlc);
        sync_once(&device, &hub).await;
        let winner = hub.get("fleet/setpoint").await.unwrap().unwrap().winner;
        assert_eq!(winner.value, Some(serde_json::json!(name)));
        assert_same(&[&hub, &device]).await;
    }
}

#[tokio::test]
async fn a_device_a_year_ahead_is_quarantined_and_the_rest_flows() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    let year = 365 * 86_400_000;
    let hub = open_at(&dir, "hub.db", now, true).await;
    let good = open_at(&dir, "good.db", now, true).await;
    // The device's clock runs a year ahead and claims to be synchronised.
    let ahead = open_at(&dir, "ahead.db", now + year, true).await;
    readings(&hub, "hub.temp", 0, 2, 10).await;
    readings(&good, "good.temp", 0, 2, 10).await;
    // The ahead device first learns the good device's changes (it accepts the past).
    sync_once(&good, &ahead).await;
    readings(&ahead, "ahead.temp", 0, 3, 10).await;
    // Its pages to the hub carry the good device's changes and its own: only its own are
    // held back, and the session ends normally.
    let (i, r) = sync_once(&ahead, &hub).await;
    assert_eq!(i.changes_quarantined, 0);
    assert_eq!(r.changes_quarantined, 3);
    assert!(
        r.last_quarantine
            .unwrap()
            .message
            .contains(&ahead.actor().to_string())
    );
    assert_eq!(hub.version_vector().get(&ahead.actor()), 0);
    assert_eq!(hub.version_vector().get(&good.actor()), 2);
    // The hub's own changes still reach the ahead device.
    assert_eq!(ahead.version_vector().get(&hub.actor()), 2);
    // Another synchronised store refuses them just the same, and nothing relays them on.
    let (_, r) = sync_once(&ahead, &good).await;
    assert_eq!(r.changes_quarantined, 3);
    assert_eq!(good.version_vector().get(&ahead.actor()), 0);
    sync_once(&good, &hub).await;
    assert_eq!(hub.version_vector().get(&ahead.actor()), 0);
}

#[tokio::test]
async fn protocol_violations_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, untouched) = victim(&dir).await;

    let (mut raw, h) = hostile_initiator(&store);
    raw.send(&Frame::Live).await;
    assert_eq!(raw.refusal().await, "unexpected_frame");
    let err = session_error(h).await;
    assert!(
        matches!(
            err,
            ProtocolError::UnexpectedFrame {
                expected: "hello",
                got: "live"
            }
        ),
        "{err:?}"
    );

    let (mut raw, h) = hostile_initiator(&store);
    raw.handshake(TOKEN).await;
    raw.send(&Frame::Ack(Ack {
        page_id: 99,
        applied: 0,
        skipped: 0,
        vector: VersionVector::new(),
    }))
    .await;
    assert_eq!(raw.refusal().await, "malformed");
    assert_eq!(session_error(h).await.code(), "malformed");

    // A copy of this very store (same actor) must re-key before it may sync.
    let ((i_tx, i_rx), (r_tx, r_rx)) = memory_link(8);
    let cfg = SyncConfig {
        token: Some(TOKEN.into()),
        ..config(SessionMode::OneShot)
    };
    let i = SyncSession::initiator(store.clone(), cfg.clone());
    let r = SyncSession::responder(store.clone(), cfg, auth());
    let never = std::future::pending::<()>;
    let (i, r) = tokio::join!(i.run(i_tx, i_rx, never()), r.run(r_tx, r_rx, never()));
    assert!(matches!(r, Err(ProtocolError::SameActor(_))), "{r:?}");
    assert_eq!(i.unwrap_err().code(), "refused");
    untouched(&store);
}

/// A change retention pruned wholly travels with its body hash (`Seal::body`), which a peer
/// of an earlier release cannot check (it would hash the empty body and refuse the change
/// as forged). Such a peer announces no features: it is not sent the change, and the
/// actor's later changes wait behind it, reported naming the change, while other actors
/// keep syncing. A peer announcing `pruned_body` gets everything.
#[tokio::test]
async fn a_wholly_pruned_change_waits_for_a_peer_of_an_earlier_release() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, "pruned.db").await;
    let other = open(&dir, "other.db").await;
    readings(&store, "old", 0, 1, 10).await; // seq 1: pruned wholly below
    readings(&store, "new", 100_000, 1, 10).await; // seq 2: kept
    readings(&other, "elsewhere", 0, 2, 10).await;
    store
        .apply_remote(
            other
                .changes_since(&VersionVector::new(), usize::MAX)
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    let policy = RetentionPolicy {
        readings_max_age_ms: Some(60_000),
        series: vec![SeriesRetention {
            pattern: "elsewhere".into(),
            max_age_ms: None,
        }],
        ..RetentionPolicy::default()
    };
    let report = store.prune(&policy, T0 + 3_600_000, 100).await.unwrap();
    assert_eq!(report.units, 1, "{report:?}");

    let me = store.actor();
    let (got, held) = served_to_raw_peer(&store, &[]).await;
    assert_eq!(got.iter().filter(|c| c.actor == me).count(), 0);
    assert_eq!(
        got.iter().filter(|c| c.actor == other.actor()).count(),
        2,
        "other actors keep syncing"
    );
    assert_held_for_upgrade(&held, &format!("change {me}:1 "), "pruned_body");

    let (got, held) = served_to_raw_peer(&store, &["pruned_body"]).await;
    assert_eq!(got.iter().filter(|c| c.actor == me).count(), 2);
    assert_eq!(held.changes_held_for_upgrade, 0);
    let first = got.iter().find(|c| c.actor == me && c.seq == 1).unwrap();
    let seal = first.seal.as_ref().unwrap();
    assert!(seal.body.is_some() && seal.pruned.is_empty());
    // What the peer receives, it stores and checks.
    assert_taken_whole(&dir, &store, got).await;
}

/// What a real responder on `store` serves a raw peer announcing `features` until it goes
/// live, and the responder's counters then.
async fn served_to_raw_peer(store: &Store, features: &[&str]) -> (Vec<Change>, StatsSnapshot) {
    let (mut raw, handle, stats) = watched_initiator(store);
    let features = features.iter().map(|f| f.to_string()).collect();
    raw.handshake_with(TOKEN, features).await;
    let mut got = Vec::new();
    loop {
        match raw.recv().await.expect("the session stays up") {
            Frame::Page { changes, .. } => got.extend(changes),
            Frame::Live => break,
            _ => {}
        }
    }
    let snapshot = stats.snapshot();
    drop(raw);
    let _ = timeout(DEADLINE, handle).await;
    (got, snapshot)
}

/// The responder held one change back for want of `feature`, reported naming `change`.
fn assert_held_for_upgrade(stats: &StatsSnapshot, change: &str, feature: &str) {
    assert_eq!(stats.changes_held_for_upgrade, 1);
    let held = stats.last_held_for_upgrade.as_ref().expect("a report");
    assert_eq!(held.code, "peer_needs_upgrade");
    assert!(
        held.message.contains(change) && held.message.contains(&format!("`{feature}`")),
        "{}",
        held.message
    );
}

/// A new store in `dir` takes `got` and holds what `store` holds: same vector and digest.
async fn assert_taken_whole(dir: &tempfile::TempDir, store: &Store, got: Vec<Change>) {
    let peer = open(dir, "peer.db").await;
    peer.apply_remote(got).await.unwrap();
    assert_eq!(peer.version_vector(), store.version_vector());
    assert_eq!(peer.digest(), store.digest());
}

/// A log run (changes pruned wholly, rollups gone, compacted to the last of them) reaches a
/// peer that announces `log_runs` as its survivor, which the peer stores and checks; a peer
/// that does not is not sent it, and the actor's later changes wait, reported naming the
/// change and the feature.
#[tokio::test]
async fn a_log_run_waits_for_a_peer_that_cannot_take_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, "runs.db").await;
    readings(&store, "old", 0, 5, 10).await; // seqs 1..=5: one run below
    readings(&store, "new", 100_000, 1, 10).await; // seq 6: kept
    let policy = RetentionPolicy {
        readings_max_age_ms: Some(60_000),
        rollups_max_age_ms: Some(60_000),
        ..RetentionPolicy::default()
    };
    // The first pass prunes the readings and the rollups of their minute; the rollups it
    // kept with seq 1 for sync go in the second (a step keeps them after its rollup cut),
    // and seq 1 joins the run then.
    let mut compacted = 0;
    for _ in 0..2 {
        let report = store.prune(&policy, T0 + 3_600_000, 100).await.unwrap();
        compacted += report.changes_compacted;
    }
    assert_eq!(compacted, 4);
    let me = store.actor();
    let (got, held) = served_to_raw_peer(&store, &["pruned_body"]).await;
    assert_eq!(got.len(), 0);
    assert_held_for_upgrade(&held, &format!("change {me}:5 "), "log_runs");

    let (got, held) = served_to_raw_peer(&store, &["pruned_body", "log_runs"]).await;
    assert_eq!(got.len(), 2);
    assert_eq!(held.changes_held_for_upgrade, 0);
    assert_eq!((got[0].seq, got[0].first_seq()), (5, 1));
    assert_taken_whole(&dir, &store, got).await;
}

#[tokio::test]
async fn a_silent_peer_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let (store, untouched) = victim(&dir).await;
    let ((r_tx, r_rx), _silent) = memory_link(8);
    let cfg = SyncConfig {
        handshake_timeout: Duration::from_millis(200),
        ..config(SessionMode::Continuous)
    };
    let session = SyncSession::responder(store.clone(), cfg, auth());
    // Says nothing at all: the handshake times out.
    let err = session
        .run(r_tx, r_rx, std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(err, ProtocolError::Timeout(_)), "{err:?}");
    assert!(err.is_transient());
    untouched(&store);
}

// ---------------------------------------------------------------- decoder properties

fn change_strategy() -> impl Strategy<Value = Change> {
    let readings = proptest::collection::btree_map(
        "[a-z.]{1,12}",
        proptest::collection::btree_map(0i64..MAX_TS_MS, -1e9f64..1e9, 1..16),
        1..4,
    )
    .prop_map(|m| {
        ChangeBody::Readings(ReadingBatch {
            timing: None,
            series: m
                .into_iter()
                .map(|(name, pts)| SeriesPoints {
                    name,
                    unit: Some("V".into()),
                    meta: Default::default(),
                    ts: pts.keys().copied().collect(),
                    values: pts.values().copied().collect(),
                })
                .collect(),
        })
    });
    let doc = (
        "[a-z/]{1,16}",
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..32)),
    )
        .prop_map(|(key, value)| {
            ChangeBody::Doc(DocWrite {
                key,
                value,
                context: vec![],
                pruned: false,
            })
        });
    (
        any::<[u8; 16]>(),
        1u64..1000,
        any::<u64>(),
        prop_oneof![readings, doc],
    )
        .prop_map(|(a, seq, hlc, body)| Change {
            actor: ActorId(a),
            seq,
            hlc: Hlc(hlc),
            body,
            seal: None,
            pruned_rollups: Vec::new(),
        })
}

fn vector_strategy() -> impl Strategy<Value = VersionVector> {
    proptest::collection::vec((any::<[u8; 16]>(), 1u64..1000), 0..4)
        .prop_map(|v| v.into_iter().map(|(a, s)| (ActorId(a), s)).collect())
}

fn frame_strategy() -> impl Strategy<Value = Frame> {
    prop_oneof![
        Just(Frame::Ping),
        Just(Frame::Pong),
        Just(Frame::Live),
        "[ -~]{0,40}".prop_map(|reason| Frame::Bye { reason }),
        ("[a-z_]{1,20}", "[ -~]{0,80}").prop_map(|(code, message)| Frame::Refuse { code, message }),
        vector_strategy().prop_map(Frame::Vector),
        (
            any::<u64>(),
            proptest::collection::vec(change_strategy(), 0..6)
        )
            .prop_map(|(page_id, changes)| Frame::Page {
                page_id,
                changes,
                anchors: vec![],
            }),
        (any::<u64>(), any::<u64>(), any::<u64>(), vector_strategy()).prop_map(
            |(page_id, applied, skipped, vector)| Frame::Ack(Ack {
                page_id,
                applied,
                skipped,
                vector
            })
        ),
        (
            any::<[u8; 16]>(),
            "[a-z]{0,12}",
            proptest::option::of("[ -~]{0,40}"),
            clock_claim(),
            tip(),
            proptest::collection::vec(succession(), 0..=kdelta_sync::MAX_SUCCESSIONS),
            features(),
        )
            .prop_map(|(a, peer_name, token, clock, tip, successions, features)| {
                Frame::Hello(Hello {
                    protocol_version: PROTOCOL_VERSION,
                    actor: ActorId(a),
                    peer_name,
                    token,
                    compression: vec!["zstd".into(), "none".into()],
                    max_frame_bytes: DEFAULT_MAX_FRAME_BYTES as u64,
                    clock,
                    tip,
                    successions,
                    features,
                })
            }),
        (
            any::<[u8; 16]>(),
            any::<bool>(),
            clock_claim(),
            tip(),
            features()
        )
            .prop_map(|(a, z, clock, tip, features)| {
                Frame::Welcome(Welcome {
                    actor: ActorId(a),
                    peer_name: "hub".into(),
                    compression: if z {
                        Compression::Zstd
                    } else {
                        Compression::None
                    },
                    max_frame_bytes: MIN_FRAME_BYTES,
                    clock,
                    tip,
                    features,
                })
            }),
    ]
}

/// Feature lists: known and unknown names.
fn features() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec("pruned_body|[a-z_]{1,20}", 0..=4)
}

/// Any succession record as bytes go (signatures are the session's business, not the
/// codec's).
fn succession() -> impl Strategy<Value = kdelta_sync::Succession> {
    (
        any::<[u8; 16]>(),
        any::<[u8; 32]>(),
        any::<[u8; 16]>(),
        any::<[u8; 32]>(),
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 64),
    )
        .prop_map(
            |(old, old_key, new, new_key, made_ms, sig)| kdelta_sync::Succession {
                old: ActorId(old),
                old_key,
                new: ActorId(new),
                new_key,
                made_ms,
                sig: sig.try_into().unwrap(),
            },
        )
}

fn tip() -> impl Strategy<Value = Option<Anchor>> {
    proptest::option::of((any::<[u8; 16]>(), any::<u64>(), any::<u64>()).prop_map(
        |(a, seq, hlc)| Anchor {
            actor: ActorId(a),
            seq,
            hlc: Hlc(hlc),
        },
    ))
}

fn clock_claim() -> impl Strategy<Value = Option<ClockClaim>> {
    proptest::option::of(
        (any::<u64>(), any::<bool>())
            .prop_map(|(wall_ms, trusted)| ClockClaim { wall_ms, trusted }),
    )
}

fn compression(zstd: bool) -> Compression {
    if zstd {
        Compression::Zstd
    } else {
        Compression::None
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn frames_round_trip(frame in frame_strategy(), zstd in any::<bool>()) {
        let codec = FrameCodec::default();
        let bytes = codec.encode(&frame, compression(zstd), usize::MAX).unwrap();
        prop_assert_eq!(codec.decode(&bytes).unwrap(), frame);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(
        bytes in proptest::collection::vec(any::<u8>(), 0..1024),
        header in 0u8..3,
    ) {
        let codec = FrameCodec::default();
        let _ = codec.decode(&bytes);
        let mut framed = vec![header];
        framed.extend_from_slice(&bytes);
        let _ = codec.decode(&framed);
    }

    #[test]
    fn mutated_frames_never_panic_the_decoder(
        frame in frame_strategy(),
        zstd in any::<bool>(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let codec = FrameCodec::default();
        let mut bytes = codec.encode(&frame, compression(zstd), usize::MAX).unwrap();
        let _ = codec.decode(&bytes[..cut % bytes.len()]);
        for (i, x) in flips {
            let n = bytes.len();
            bytes[i % n] ^= x;
        }
        let _ = codec.decode(&bytes);
    }
}

// ---------------------------------------------------------------- throughput

/// 100,000 readings (200 changes of 10 series × 50 readings) from one store to an empty one
/// over the in-memory transport, without and with zstd. Prints figures; run with
/// `cargo test -p kdelta-sync --test protocol throughput -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; prints figures"]
async fn throughput_100k_readings() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir, "a.db").await;
    // Sensor-like values: a slow curve plus noise, at 0.01 resolution (so most values need a
    // full 9-byte float).
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % 1000) as f64 / 1000.0 - 0.5
    };
    for c in 0..200i64 {
        let mut b = ReadingBatch::new();
        for s in 0..10 {
            for i in 0..50i64 {
                let n = c * 50 + i;
                let v = 20.0 + (n as f64 / 300.0 + s as f64).sin() * 5.0 + noise();
                let name = format!("greenhouse.sensor{s}");
                b.push(
                    &name,
                    T0 + n * 1000,
                    (v * 100.0).round() / 100.0,
                    Some("°C"),
                );
            }
        }
        a.append(b).await.unwrap();
    }
    let all = a
        .changes_since(&VersionVector::new(), usize::MAX)
        .await
        .unwrap();
    let readings: usize = all
        .iter()
        .map(|c| match &c.body {
            ChangeBody::Readings(b) => b.len(),
            ChangeBody::Doc(_)
            | ChangeBody::DocBatch(_)
            | ChangeBody::Twin(_)
            | ChangeBody::TimeCorrection(_)
            | ChangeBody::Gap(_) => 0,
        })
        .sum();
    let cbor: usize = all.iter().map(|c| c.to_cbor().len()).sum();
    println!(
        "{readings} readings in {} changes, {cbor} bytes of change CBOR",
        all.len()
    );
    // Baseline without the protocol: read the log in 1 MiB pages, apply them to a store.
    let base = open(&dir, "baseline.db").await;
    let started = Instant::now();
    loop {
        let page = a
            .changes_since(&base.version_vector(), 1 << 20)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        base.apply_remote(page).await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "store only (changes_since + apply_remote): {secs:.2} s, {:.0} readings/s",
        readings as f64 / secs
    );
    for c in [Compression::None, Compression::Zstd] {
        let b = open(&dir, &format!("b-{}.db", c.name())).await;
        let cfg = SyncConfig {
            compression: vec![c],
            ..config(SessionMode::OneShot)
        };
        let started = Instant::now();
        let run = start_with(&a, &b, cfg, memory_link(8));
        let stats = run.stats.0.clone();
        let (i, r) = run.join().await;
        i.unwrap();
        r.unwrap();
        let secs = started.elapsed().as_secs_f64();
        let out = stats.snapshot().bytes_out;
        assert_eq!(b.digest(), a.digest());
        println!(
            "{:>4}: {:.2} s, {:.0} readings/s, {} bytes on the wire = {:.3} x CBOR",
            c.name(),
            secs,
            readings as f64 / secs,
            out,
            out as f64 / cbor as f64
        );
    }
}

// ------------------------------------------------- readings timed by an untrusted clock

async fn series_ts(store: &Store, series: &str) -> Vec<i64> {
    let page = store
        .range(&RangeQuery {
            series: series.into(),
            from: 0,
            to: i64::MAX,
            limit: 1000,
            cursor: None,
        })
        .await;
    match page {
        Ok(page) => page.readings.iter().map(|r| r.ts).collect(),
        Err(StoreError::UnknownSeries(_)) => Vec::new(),
        Err(e) => panic!("{e}"),
    }
}

/// Readings per minute of `series` in `[from, from + 1 h)`.
async fn minute_counts(store: &Store, series: &str, from: i64) -> Vec<(i64, u64)> {
    store
        .aggregate(&AggregateQuery {
            series: series.into(),
            from,
            to: from + 3_600_000,
            bucket_ms: 60_000,
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|b| (b.start, b.count))
        .collect()
}

/// A Pi booted offline in 1970 samples readings (timed: boot id, wall − monotonic), syncs
/// them to a hub as they are, then corrects them once it knows a trusted time. The
/// correction reaches the hub and, through it, a third replica that receives the original
/// readings change (rebuilt at its original times) and the correction: all three hold the
/// readings at the corrected times, in the same order, with equal digests; rollups follow;
/// readings of a trusted batch and of other series do not move; the original times stay
/// visible in the timing records.
/// A correction moving readings into a minute whose other readings retention pruned
/// recomputes the minute from the readings and the rollups kept of the pruned ones
/// (`pruned_rollups.rs`), on the device and on a replica that received them pruned.
#[tokio::test]
async fn a_correction_into_a_pruned_minute_keeps_the_rollups_of_its_pruned_readings() {
    let dir = tempfile::tempdir().unwrap();
    let day = 86_400_000i64;
    let now = now_ms() as i64;
    let minute = (now - 3 * day) / 60_000 * 60_000;
    let pi = open_at(&dir, "pi.db", 65_000, false).await;
    let boot = BootId([0x42; 16]);
    // Vouched readings of that minute (no timing record), then readings of an untrusted
    // boot whose clock read 60 s at wall time 65 s.
    let mut vouched = ReadingBatch::new();
    for i in 0..10i64 {
        vouched.push("pi.temp", minute + i * 1_000, i as f64, None);
    }
    pi.append(vouched).await.unwrap();
    let mut untrusted = ReadingBatch::new();
    for i in 0..5i64 {
        untrusted.push("pi.temp", 65_000 + i * 1_000, 100.0 + i as f64, None);
    }
    untrusted.timing = Some(ReadingTiming {
        boot_id: boot,
        offset_ms: 5_000,
    });
    pi.append(untrusted).await.unwrap();
    let keep_a_day = RetentionPolicy {
        readings_max_age_ms: Some(day as u64),
        ..RetentionPolicy::default()
    };
    let report = pi.prune(&keep_a_day, now, 1000).await.unwrap();
    assert_eq!(report.readings, 10, "the untrusted ones wait: {report:?}");
    let replica = open_at(&dir, "replica.db", now as u64, true).await;
    sync_once(&replica, &pi).await;
    // The boot clock's 60 s was 30 s into that minute: the correction moves the untrusted
    // readings there, and the minute is recomputed.
    let basis = TimeBasis::Peer(replica.actor());
    pi.correct_reading_times(boot, minute - 30_000, basis)
        .await
        .unwrap()
        .expect("a correction");
    sync_once(&replica, &pi).await;
    assert_same(&[&pi, &replica]).await;
    for s in [&pi, &replica] {
        assert_eq!(
            minute_counts(s, "pi.temp", minute).await,
            vec![(minute, 15)]
        );
    }
}

#[tokio::test]
async fn readings_sampled_in_1970_are_corrected_on_every_replica() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms() as i64;
    let hub = open_at(&dir, "hub.db", now as u64, true).await;
    let pi = open_at(&dir, "pi.db", 65_000, false).await;
    let boot = BootId([0x42; 16]);
    // The boot clock read 60 s when the wall clock read 65 s (1970-01-01T00:01:05Z).
    let timing = ReadingTiming {
        boot_id: boot,
        offset_ms: 5_000,
    };
    let mut untrusted = Vec::new();
    for c in 0..3i64 {
        let mut b = ReadingBatch::new();
        for i in 0..20i64 {
            let t = 65_000 + (c * 20 + i) * 1_000;
            b.push("pi.temp", t, (c * 20 + i) as f64, Some("°C"));
            untrusted.push(t);
        }
        b.timing = Some(timing);
        pi.append(b).await.unwrap();
        pi.put("pi/note", &serde_json::json!(c)).await.unwrap();
    }
    // A batch whose sender vouched for its times (no timing record) is never moved.
    let mut vouched = ReadingBatch::new();
    vouched.push("gps.temp", T0, 1.5, None);
    pi.append(vouched).await.unwrap();
    // Another boot's readings (that boot ended untrusted) are not this correction's.
    let mut old_boot = ReadingBatch::new();
    old_boot.push("old.temp", 1_000, 3.0, None);
    old_boot.timing = Some(ReadingTiming {
        boot_id: BootId([0x17; 16]),
        offset_ms: 900,
    });
    pi.append(old_boot).await.unwrap();

    sync_once(&pi, &hub).await;
    assert_eq!(series_ts(&hub, "pi.temp").await, untrusted, "as sampled");
    let open = hub
        .reading_timing(Some("pi.temp".into()), 0, 100)
        .await
        .unwrap();
    assert_eq!(open.len(), 3);
    assert!(
        open.iter()
            .all(|(_, r)| r.delta_ms.is_none() && r.timing == timing)
    );

    // Retention does not take 1970 for their age: uncorrected readings wait.
    let keep_a_day = RetentionPolicy {
        series: vec![SeriesRetention {
            pattern: "pi.temp".into(),
            max_age_ms: Some(86_400_000),
        }],
        ..RetentionPolicy::default()
    };
    assert_eq!(hub.prune(&keep_a_day, now, 1000).await.unwrap().readings, 0);
    assert_eq!(series_ts(&hub, "pi.temp").await, untrusted);

    // The Pi learns the true time: now, when its boot clock reads 120 s.
    let true_offset = now - 120_000;
    let basis = TimeBasis::Peer(hub.actor());
    let meta = pi
        .correct_reading_times(boot, true_offset, basis)
        .await
        .unwrap()
        .expect("a correction");
    assert_eq!(meta.seq, 9, "after 3 batches, 3 notes, 2 more batches");
    assert!(
        pi.correct_reading_times(boot, true_offset, basis)
            .await
            .unwrap()
            .is_none(),
        "nothing left to correct"
    );
    let delta = true_offset - timing.offset_ms;
    let corrected: Vec<i64> = untrusted.iter().map(|t| t + delta).collect();
    assert_eq!(series_ts(&pi, "pi.temp").await, corrected);
    assert_eq!(
        series_ts(&pi, "gps.temp").await,
        vec![T0],
        "vouched: unmoved"
    );
    assert_eq!(series_ts(&pi, "old.temp").await, vec![1_000], "other boot");

    sync_once(&pi, &hub).await;
    assert_same(&[&hub, &pi]).await;
    assert_eq!(series_ts(&hub, "pi.temp").await, corrected);
    // Aggregates (rollups) follow: nothing left in 1970, 60 readings at the true time.
    assert_eq!(minute_counts(&hub, "pi.temp", 0).await, vec![]);
    let minutes = minute_counts(&hub, "pi.temp", now - 1_800_000).await;
    assert_eq!(minutes.iter().map(|m| m.1).sum::<u64>(), 60, "{minutes:?}");
    assert_eq!(
        minute_counts(&pi, "pi.temp", now - 1_800_000).await,
        minutes
    );
    assert_eq!(minute_counts(&pi, "pi.temp", 0).await, vec![]);
    // Corrected, they are young: retention keeps them; the digest still holds.
    assert_eq!(hub.prune(&keep_a_day, now, 1000).await.unwrap().readings, 0);
    assert_eq!(series_ts(&hub, "pi.temp").await, corrected);
    // History: the originals beside the correction.
    let records = hub
        .reading_timing(Some("pi.temp".into()), 0, 100)
        .await
        .unwrap();
    assert_eq!(records.len(), 3);
    for (k, (_, r)) in records.iter().enumerate() {
        assert_eq!(r.actor, pi.actor());
        assert_eq!(r.original_from_ms, 65_000 + k as i64 * 20_000);
        assert_eq!(r.original_to_ms, 65_000 + k as i64 * 20_000 + 19_000);
        assert_eq!((r.delta_ms, r.corrected_by), (Some(delta), Some(9)));
    }
    let old = hub
        .reading_timing(Some("old.temp".into()), 0, 100)
        .await
        .unwrap();
    assert_eq!(old[0].1.delta_ms, None, "visibly uncorrected");

    // A replica that never saw the 1970 state gets the original change and the correction.
    let late = open_at(&dir, "late.db", now as u64, true).await;
    sync_once(&late, &hub).await;
    assert_same(&[&hub, &pi, &late]).await;
    assert_eq!(series_ts(&late, "pi.temp").await, corrected);
    let rebuilt = hub
        .changes_since(&VersionVector::default(), 1 << 20)
        .await
        .unwrap();
    let first = rebuilt
        .iter()
        .find(|c| c.actor == pi.actor() && c.seq == 1)
        .unwrap();
    match &first.body {
        ChangeBody::Readings(b) => {
            assert_eq!(b.series[0].ts, untrusted[..20].to_vec(), "as made");
            assert_eq!(b.timing, Some(timing));
        }
        other => panic!("{other:?}"),
    }
    // A day later they age out like any readings, found at their corrected times.
    let later = hub
        .prune(&keep_a_day, now + 2 * 86_400_000, 1000)
        .await
        .unwrap();
    assert!(later.readings >= 60, "{later:?}");
    assert!(series_ts(&hub, "pi.temp").await.is_empty());
    assert_eq!(hub.verify_digest().await.unwrap(), hub.digest());
    assert_eq!(
        minute_counts(&hub, "pi.temp", now - 1_800_000).await,
        minutes
    );
    // A replica that joins after that gets their rollups with the pruned changes (at the
    // corrected times) and keeps them through the correction that follows them.
    let after = open_at(&dir, "after.db", (now + 2 * 86_400_000) as u64, true).await;
    sync_once(&after, &hub).await;
    assert_same(&[&hub, &after]).await;
    assert_eq!(
        minute_counts(&after, "pi.temp", now - 1_800_000).await,
        minutes
    );
    assert_eq!(minute_counts(&after, "pi.temp", 0).await, vec![]);
}

/// Only the actor that sampled readings corrects them: a correction names its own actor's
/// seqs, so a change claiming to correct another actor's readings moves nothing of theirs.
#[tokio::test]
async fn a_correction_moves_only_its_own_actors_readings() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms() as i64;
    let hub = open_at(&dir, "hub.db", now as u64, true).await;
    let a = open_at(&dir, "a.db", 65_000, false).await;
    let b = open_at(&dir, "b.db", 65_000, false).await;
    let boot = BootId([1; 16]);
    for s in [&a, &b] {
        let mut batch = ReadingBatch::new();
        batch.push("t", 65_000, 1.0, None);
        batch.timing = Some(ReadingTiming {
            boot_id: boot,
            offset_ms: 0,
        });
        s.append(batch).await.unwrap();
        sync_once(s, &hub).await;
    }
    b.correct_reading_times(boot, 1_000_000, TimeBasis::LocalClock)
        .await
        .unwrap()
        .unwrap();
    sync_once(&b, &hub).await;
    let mut ts = series_ts(&hub, "t").await;
    ts.sort();
    assert_eq!(ts, vec![65_000, 1_000_000 + 65_000], "a's reading unmoved");
    sync_once(&a, &hub).await;
    assert_same(&[&hub, &a, &b]).await;
}

// ------------------------------------------------------------------- peer roles

/// One one-shot session `initiator` → `responder`, the responder treating the credential
/// as `role`.
async fn sync_as(
    initiator: &Store,
    responder: &Store,
    role: PeerRole,
) -> (SessionResult, SessionResult, StatsSnapshot) {
    sync_as_with(initiator, responder, role, config(SessionMode::OneShot)).await
}

/// [`sync_as`] with the session settings `cfg` on both sides.
async fn sync_as_with(
    initiator: &Store,
    responder: &Store,
    role: PeerRole,
    cfg: SyncConfig,
) -> (SessionResult, SessionResult, StatsSnapshot) {
    let ((i_tx, i_rx), (r_tx, r_rx)) = memory_link(8);
    let i = SyncSession::initiator(
        initiator.clone(),
        SyncConfig {
            token: Some(TOKEN.into()),
            peer_name: "initiator".into(),
            ..cfg.clone()
        },
    );
    let r = SyncSession::responder(responder.clone(), cfg, auth()).with_peer_role(role);
    let stats = r.stats();
    let (_stop, rx) = watch::channel(false);
    let ih = tokio::spawn(i.run(i_tx, i_rx, stopped(rx.clone())));
    let rh = tokio::spawn(r.run(r_tx, r_rx, stopped(rx)));
    let i = timeout(DEADLINE, ih).await.unwrap().unwrap();
    let r = timeout(DEADLINE, rh).await.unwrap().unwrap();
    (i, r, stats.snapshot())
}

/// A device credential may send only its own actor's changes: another device's changes it
/// holds (relayed, or forged) are refused and counted, nothing of them is stored, and its
/// own changes in the same pages apply. A second actor presenting the same credential (a
/// copied token) is refused at the handshake, naming both actors. A hub credential relays.
#[tokio::test]
async fn a_device_credential_sends_only_its_own_actors_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, hub) = (
        open(&dir, "a.db").await,
        open(&dir, "b.db").await,
        open(&dir, "hub.db").await,
    );
    readings(&b, "b.temp", 0, 3, 10).await;
    // A holds B's changes (they met directly), and its own.
    sync_once(&b, &a).await;
    readings(&a, "a.temp", 0, 4, 10).await;
    a.put("a/state", &serde_json::json!("on")).await.unwrap();

    let (i, r, stats) = sync_as(&a, &hub, PeerRole::Device).await;
    assert!(i.is_ok() && r.is_ok(), "{i:?} {r:?}");
    assert_eq!(
        hub.version_vector().get(&a.actor()),
        5,
        "A's own changes apply"
    );
    assert_eq!(hub.version_vector().get(&b.actor()), 0, "B's are refused");
    assert!(series_ts(&hub, "b.temp").await.is_empty());
    assert_eq!(stats.changes_refused, 3);
    assert_eq!(stats.role, Some(PeerRole::Device));
    assert_eq!(stats.bound_actor, Some(a.actor()));
    let refusal = stats.last_refusal.unwrap();
    assert_eq!(refusal.code, "foreign_actor");
    assert!(
        refusal.message.contains(&b.actor().to_string()) && refusal.message.contains("\"peer\""),
        "{}",
        refusal.message
    );
    assert_eq!(
        hub.credential_bindings().await.unwrap(),
        vec![("peer".to_owned(), a.actor())]
    );
    assert_eq!(hub.verify_digest().await.unwrap(), hub.digest());

    // B presents A's credential: refused, naming both, nothing stored.
    let before = hub.version_vector();
    let (_, r, _) = sync_as(&b, &hub, PeerRole::Device).await;
    match r {
        Err(ProtocolError::CredentialBound {
            principal,
            bound,
            presented,
        }) => {
            assert_eq!(
                (principal.as_str(), bound, presented),
                ("peer", a.actor(), b.actor())
            );
        }
        other => panic!("expected credential_bound, got {other:?}"),
    }
    assert_eq!(hub.version_vector(), before);
    // The binding survives a restart of the hub's store.
    let hub_path = dir.path().join("hub.db");
    hub.close().await;
    let hub = Store::open(&hub_path, StoreConfig::default())
        .await
        .unwrap();
    let (_, r, _) = sync_as(&b, &hub, PeerRole::Device).await;
    assert_eq!(r.unwrap_err().code(), "credential_bound");

    // As a hub credential, A relays B's changes.
    let (i, r, stats) = sync_as(&a, &hub, PeerRole::Hub).await;
    assert!(i.is_ok() && r.is_ok(), "{i:?} {r:?}");
    assert_eq!(stats.changes_refused, 0);
    assert_same(&[&a, &hub]).await;
    assert_eq!(hub.version_vector().get(&b.actor()), 3);
}

/// `device_relay = "own"`: a device credential's peer is sent only the hub's own changes
/// and its own — none of the other devices' the hub holds, at catch-up or live — while its
/// pushes apply as always, and its lag counts only what it is sent. A hub credential on the
/// same hub still receives everything.
#[tokio::test]
async fn device_relay_own_sends_a_device_only_the_hubs_changes_and_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, hub) = (
        open(&dir, "a.db").await,
        open(&dir, "b.db").await,
        open(&dir, "hub.db").await,
    );
    readings(&b, "b.temp", 0, 3, 10).await;
    sync_once(&b, &hub).await;
    hub.put("fleet/rate", &serde_json::json!(5)).await.unwrap();
    readings(&a, "a.temp", 0, 2, 10).await;
    let own = SyncConfig {
        device_relay: DeviceRelay::Own,
        ..config(SessionMode::OneShot)
    };

    let (i, r, stats) = sync_as_with(&a, &hub, PeerRole::Device, own.clone()).await;
    assert!(i.is_ok() && r.is_ok(), "{i:?} {r:?}");
    assert_eq!(hub.version_vector().get(&a.actor()), 2, "A's pushes apply");
    assert_eq!(
        a.version_vector().get(&hub.actor()),
        1,
        "the hub's own change"
    );
    assert_eq!(a.version_vector().get(&b.actor()), 0, "none of B's");
    assert!(series_ts(&a, "b.temp").await.is_empty());
    let rate = a.get("fleet/rate").await.unwrap().unwrap().winner.value;
    assert_eq!(rate, Some(serde_json::json!(5)));
    assert_eq!(stats.changes_sent, 1);
    assert_eq!(stats.relay_only, Some(vec![hub.actor(), a.actor()]));
    assert_eq!(stats.lag(&hub.version_vector()), (0, 0));

    // Live: B's new changes reach the hub and stay there; the hub's next write reaches A.
    let ((i_tx, i_rx), (r_tx, r_rx)) = memory_link(8);
    let live = SyncConfig {
        device_relay: DeviceRelay::Own,
        ..config(SessionMode::Continuous)
    };
    let initiator = SyncSession::initiator(
        a.clone(),
        SyncConfig {
            token: Some(TOKEN.into()),
            peer_name: "initiator".into(),
            ..live.clone()
        },
    );
    let responder =
        SyncSession::responder(hub.clone(), live, auth()).with_peer_role(PeerRole::Device);
    let (si, sr) = (initiator.stats(), responder.stats());
    let (stop, rx) = watch::channel(false);
    let ih = tokio::spawn(initiator.run(i_tx, i_rx, stopped(rx.clone())));
    let rh = tokio::spawn(responder.run(r_tx, r_rx, stopped(rx)));
    eventually("live mode", || {
        si.snapshot().phase == SessionPhase::Live && sr.snapshot().phase == SessionPhase::Live
    })
    .await;
    readings(&b, "b.temp", 10, 2, 10).await;
    sync_once(&b, &hub).await;
    assert_eq!(hub.version_vector().get(&b.actor()), 5);
    hub.put("fleet/rate", &serde_json::json!(7)).await.unwrap();
    readings(&a, "a.temp", 10, 1, 10).await;
    eventually(
        "the hub's write to reach A and A's to reach the hub",
        || a.version_vector().get(&hub.actor()) == 2 && hub.version_vector().get(&a.actor()) == 3,
    )
    .await;
    let _ = stop.send(true);
    let i = timeout(DEADLINE, ih).await.unwrap().unwrap();
    let r = timeout(DEADLINE, rh).await.unwrap().unwrap();
    assert!(i.is_ok() && r.is_ok(), "{i:?} {r:?}");
    assert_eq!(
        a.version_vector().get(&b.actor()),
        0,
        "B's live changes stay on the hub"
    );
    assert_eq!(sr.snapshot().changes_sent, 1);
    assert_eq!(a.verify_digest().await.unwrap(), a.digest());

    // A hub credential on the same hub is sent every actor's changes.
    let c = open(&dir, "c.db").await;
    let (i, r, stats) = sync_as_with(&c, &hub, PeerRole::Hub, own).await;
    assert!(i.is_ok() && r.is_ok(), "{i:?} {r:?}");
    assert_eq!(stats.relay_only, None);
    assert_same(&[&c, &hub]).await;
}

// ------------------------------------------------------------------- signed log

/// Opens the SQLite file of `name` behind its store's back (what a tampering relay does).
fn tamper(dir: &tempfile::TempDir, name: &str, sql: &str) {
    let conn = rusqlite::Connection::open(dir.path().join(name)).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let n = conn.execute(sql, []).unwrap();
    assert!(n > 0, "the tampering statement changed nothing: {sql}");
}

/// A hub that alters a change it relays (a reading's value, edited in its database) is
/// caught by the device it relays to: that actor's change is refused as `bad_signature`
/// naming actor and seq, its later changes wait, and everything else in the pages applies.
/// The genuine changes, fetched from their maker, then apply and the device verifies.
#[tokio::test]
async fn a_hub_altering_a_relayed_change_is_refused_and_the_rest_applies() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, hub, d) = (
        open(&dir, "a.db").await,
        open(&dir, "b.db").await,
        open(&dir, "hub.db").await,
        open(&dir, "d.db").await,
    );
    readings(&a, "a.temp", 0, 3, 10).await;
    a.put("a/state", &serde_json::json!("on")).await.unwrap();
    readings(&b, "b.temp", 0, 2, 10).await;
    sync_once(&a, &hub).await;
    sync_once(&b, &hub).await;
    // Relayed honestly first: the device verifies A's and B's signatures through the hub.
    let probe = open(&dir, "probe.db").await;
    let (_, st) = sync_once(&hub, &probe).await;
    assert_eq!((st.changes_unverified, st.changes_unsigned), (0, 0));
    assert_same(&[&hub, &probe]).await;
    assert!(
        Store::verify_file(dir.path().join("probe.db"))
            .await
            .unwrap()
            .ok()
    );

    // The hub alters A's seq 2 (a value) in its database.
    tamper(
        &dir,
        "hub.db",
        &format!(
            "UPDATE readings SET value = value + 1 WHERE change_id = \
             (SELECT c.id FROM changes c JOIN actors x ON x.idx = c.actor_idx \
              WHERE x.actor = x'{}' AND c.seq = 2)",
            a.actor()
        ),
    );
    let (_, st) = sync_once(&hub, &d).await;
    assert_eq!(d.version_vector().get(&a.actor()), 1, "A waits at seq 1");
    assert_eq!(d.version_vector().get(&b.actor()), 2, "B applies");
    assert_eq!(st.changes_unverified, 3, "A's seq 2 and the two behind it");
    let refusal = st.last_refusal.clone().unwrap();
    assert_eq!(refusal.code, "bad_signature");
    assert!(
        refusal.message.contains(&a.actor().to_string()) && refusal.message.contains("seq 2"),
        "{}",
        refusal.message
    );
    assert_eq!(d.verify_digest().await.unwrap(), d.digest());
    // From A itself, the genuine changes apply and the device's store verifies.
    let (_, st) = sync_once(&a, &d).await;
    assert_eq!(st.changes_unverified, 0);
    assert_eq!(d.version_vector().get(&a.actor()), 4);
    assert_same(&[&a, &d]).await;
    let report = Store::verify_file(dir.path().join("d.db")).await.unwrap();
    assert!(report.ok(), "{:?}", report.failures);
    assert_eq!(report.unsigned, 0);
    assert!(report.signed >= 6, "{report:?}");
}

/// Changes that do not come from their actor's key are refused at apply, naming actor and
/// seq, with nothing stored: re-signed by another key, a seq moved, a signature stripped
/// after the actor started signing. A hostile peer sends them as pages; the victim's own
/// data and the rest of the page are unaffected.
#[tokio::test]
async fn forged_reordered_and_stripped_changes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir, "a.db").await;
    readings(&a, "a.temp", 0, 3, 5).await;
    let genuine = a
        .changes_since(&VersionVector::new(), 1 << 20)
        .await
        .unwrap();
    assert!(
        genuine.iter().all(|c| c.seal.is_some()),
        "every change is signed"
    );
    let (store, _) = victim(&dir).await;
    store.apply_remote(vec![genuine[0].clone()]).await.unwrap();

    // Seq 3 renumbered as seq 2: it links to the real seq 2, not to seq 1.
    let mut moved = genuine[2].clone();
    moved.seq = 2;
    // Re-signed by a stranger's key (any key that is not A's).
    let stranger = kdelta_sync::seal::SigningKey::generate().unwrap();
    let mut resigned = genuine[1].clone();
    if let (ChangeBody::Readings(b), Some(s)) = (&mut resigned.body, &mut resigned.seal) {
        b.series[0].values[0] = 99.0;
        let body = kdelta_sync::seal::body_hash(&resigned.body, &[]);
        let h = kdelta_sync::seal::change_hash(&a.actor(), 2, resigned.hlc, &s.prev, &body);
        s.key = stranger.public();
        s.sig = stranger.sign(&h);
    }
    // The signature stripped.
    let mut stripped = genuine[1].clone();
    stripped.seal = None;
    for (forged, code) in [
        (moved, "broken_chain"),
        (resigned, "bad_signature"),
        (stripped, "broken_chain"),
    ] {
        let before = (store.version_vector(), store.digest());
        let err = store.apply_remote(vec![forged]).await.unwrap_err();
        assert_eq!(err.code(), code, "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&a.actor().to_string()) && text.contains("change 2"),
            "{text}"
        );
        assert_eq!((store.version_vector(), store.digest()), before);
    }
    // The same forgeries in a sync page: refused per actor, an honest actor's change applies.
    let honest = open(&dir, "honest.db").await;
    readings(&honest, "h.temp", 0, 1, 3).await;
    let mut page = honest
        .changes_since(&VersionVector::new(), 1 << 20)
        .await
        .unwrap();
    let mut forged = genuine[1].clone();
    if let ChangeBody::Readings(b) = &mut forged.body {
        b.series[0].values[0] += 1.0;
    }
    page.push(forged);
    page.push(genuine[2].clone());
    let (mut raw, h) = hostile_initiator(&store);
    raw.handshake(TOKEN).await;
    raw.send(&Frame::Page {
        page_id: 1,
        changes: page,
        anchors: vec![],
    })
    .await;
    loop {
        match raw.recv().await {
            Some(Frame::Ack(ack)) => {
                assert_eq!(ack.applied, 1, "the honest actor's change");
                break;
            }
            Some(_) => continue,
            None => panic!("the session closed instead of acknowledging"),
        }
    }
    assert_eq!(store.version_vector().get(&honest.actor()), 1);
    assert_eq!(store.version_vector().get(&a.actor()), 1);
    drop(raw);
    let _ = timeout(DEADLINE, h).await;
    let report = Store::verify_file(dir.path().join("victim.db"))
        .await
        .unwrap();
    assert!(report.ok(), "{:?}", report.failures);

    // A change stripped of its seal is refused by default. A store that opted out
    // (`require_signatures = false`) takes it as the unsigned past; the actor's next change
    // links to the signed original, which is exactly the copy held (a relay on an older
    // release dropped the seal): it applies and vouches for the copy. Had the copy been
    // altered, the same link proves the seal was stripped: refused, not a new chain.
    let mut unsigned = genuine[0].clone();
    unsigned.seal = None;
    let strict = open(&dir, "strict.db").await;
    let err = strict
        .apply_remote(vec![unsigned.clone()])
        .await
        .unwrap_err();
    assert_eq!(err.code(), "unsigned", "{err}");
    let config = StoreConfig {
        require_signatures: false,
        ..StoreConfig::default()
    };
    let e = Store::open(dir.path().join("e.db"), config.clone())
        .await
        .unwrap();
    e.apply_remote(vec![unsigned.clone()]).await.unwrap();
    e.apply_remote(genuine[1..].to_vec()).await.unwrap();
    let report = Store::verify_file(dir.path().join("e.db")).await.unwrap();
    assert!(report.ok(), "{:?}", report.failures);
    assert_eq!((report.unsigned, report.signed), (1, 2));
    let mut altered = unsigned;
    if let ChangeBody::Readings(b) = &mut altered.body {
        b.series[0].values[0] += 1.0;
    }
    let f = Store::open(dir.path().join("f.db"), config).await.unwrap();
    f.apply_remote(vec![altered]).await.unwrap();
    let err = f.apply_remote(genuine[1..].to_vec()).await.unwrap_err();
    assert_eq!(err.code(), "broken_chain", "{err}");
    assert!(err.to_string().contains("change 2"), "{err}");
    assert_eq!(f.version_vector().get(&a.actor()), 1);
}

/// A store whose file was edited behind the agent's back fails `verify`, naming the actor
/// and seq; a synced store passes. Retention-pruned changes still verify (their units'
/// hashes are kept) and still sync verified.
#[tokio::test]
async fn verify_catches_edits_and_accepts_pruned_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(&dir, "a.db").await, open(&dir, "b.db").await);
    // Two series in one change, one of them old enough to prune.
    let mut batch = ReadingBatch::new();
    batch.push("old", T0, 1.0, Some("°C"));
    batch.push("new", T0 + 86_400_000 * 30, 2.0, None);
    a.append(batch).await.unwrap();
    a.put("k", &serde_json::json!({"v": 1})).await.unwrap();
    let policy = RetentionPolicy {
        series: vec![SeriesRetention {
            pattern: "old".into(),
            max_age_ms: Some(1000),
        }],
        ..RetentionPolicy::default()
    };
    let pruned = a.prune(&policy, T0 + 86_400_000, 1000).await.unwrap();
    assert_eq!(pruned.units, 1);
    assert!(
        Store::verify_file(dir.path().join("a.db"))
            .await
            .unwrap()
            .ok()
    );
    let (_, st) = sync_once(&a, &b).await;
    assert_eq!(
        st.changes_unverified, 0,
        "a pruned change verifies at the receiver"
    );
    let report = Store::verify_file(dir.path().join("b.db")).await.unwrap();
    assert!(report.ok(), "{:?}", report.failures);
    assert_eq!((report.actors, report.changes, report.signed), (1, 2, 2));

    // Edit the document value behind b's back.
    tamper(
        &dir,
        "b.db",
        "UPDATE doc_versions SET value = x'a16176182a'",
    );
    let report = Store::verify_file(dir.path().join("b.db")).await.unwrap();
    assert!(!report.ok());
    let f = &report.failures[0];
    assert_eq!((f.actor, f.seq), (Some(a.actor()), Some(2)), "{f}");
    assert!(f.problem.contains("altered"), "{f}");
}

/// A pruned document version crosses a real session: the device's retention dropped the
/// values of old versions; the hub, which never had them, gets their changes with the
/// metadata (so its version vector is dense and nothing is asked for again), shows them as
/// pruned in history, and reaches the device's digest.
#[tokio::test]
async fn pruned_document_versions_cross_a_session() {
    let dir = tempfile::tempdir().unwrap();
    let device = open(&dir, "device.db").await;
    let hub = open(&dir, "hub.db").await;
    for i in 0..4 {
        device
            .put("gh/setpoint", &serde_json::json!(i))
            .await
            .unwrap();
    }
    let keep_one = RetentionPolicy {
        docs: DocRetention {
            default: DocRule {
                keep_versions: Some(1),
                max_age_ms: None,
            },
            keys: Vec::new(),
        },
        ..RetentionPolicy::default()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert_eq!(
        device
            .prune(&keep_one, now, 1000)
            .await
            .unwrap()
            .doc_versions,
        3
    );
    // The pruned versions' changes still prove their bodies: their write hashes stay in the
    // seal, so the device's own chain verifies and the hub verifies every change it receives.
    let report = Store::verify_file(dir.path().join("device.db"))
        .await
        .unwrap();
    assert!(report.ok(), "{:?}", report.failures);
    let (i, r) = sync_once(&device, &hub).await;
    assert_eq!(i.changes_sent, 4, "{i:?}");
    assert_eq!(r.changes_applied, 4, "{r:?}");
    assert_eq!((r.changes_unverified, r.changes_unsigned), (0, 0), "{r:?}");
    let report = Store::verify_file(dir.path().join("hub.db")).await.unwrap();
    assert!(report.ok(), "{:?}", report.failures);
    assert_eq!(report.signed, 4, "{report:?}");
    assert_eq!(hub.version_vector(), device.version_vector());
    assert_eq!(hub.digest(), device.digest());
    assert_eq!(hub.verify_digest().await.unwrap(), hub.digest());
    let history = hub.history("gh/setpoint", 10, None).await.unwrap();
    let pruned: Vec<bool> = history.iter().map(|v| v.pruned).collect();
    assert_eq!(pruned, [false, true, true, true]);
    assert_eq!(
        hub.get("gh/setpoint").await.unwrap().unwrap().winner.value,
        Some(serde_json::json!(3))
    );
    // A second session has nothing to send either way.
    let (i, r) = sync_once(&device, &hub).await;
    assert_eq!((i.changes_sent, r.changes_sent), (0, 0));
    device.close().await;
    hub.close().await;
}
