//! The session harness the sync tests share: real stores (temp SQLite files) over the
//! in-process memory transport, started as initiator and responder with one token.
//! Each test binary uses a part of it.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use kdelta_sync::protocol::*;
use kdelta_sync::*;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;

pub const TOKEN: &str = "correct horse battery staple";
pub const DEADLINE: Duration = Duration::from_secs(20);

pub async fn open(dir: &tempfile::TempDir, name: &str) -> Store {
    Store::open(dir.path().join(name), StoreConfig::default())
        .await
        .unwrap()
}

/// Fast timers so keepalive, idle and live paths run within a test.
pub fn config(mode: SessionMode) -> SyncConfig {
    SyncConfig {
        mode,
        keepalive: Duration::from_millis(200),
        idle_timeout: Duration::from_secs(10),
        handshake_timeout: Duration::from_secs(5),
        live_recheck: Duration::from_millis(250),
        ..SyncConfig::default()
    }
}

pub fn auth() -> Arc<dyn Authenticator> {
    Arc::new(TokenAuthenticator::new().with_token("peer", TOKEN))
}

pub type SessionResult = Result<SessionSummary, ProtocolError>;

/// A running session pair and the switch that stops it.
pub struct Running {
    pub stop: watch::Sender<bool>,
    pub initiator: JoinHandle<SessionResult>,
    pub responder: JoinHandle<SessionResult>,
    /// Counters of the initiator's side, then the responder's.
    pub stats: (Arc<SessionStats>, Arc<SessionStats>),
}

impl Running {
    /// Stops both sides (continuous sessions) and waits for them.
    pub async fn stop(self) -> (SessionResult, SessionResult) {
        let _ = self.stop.send(true);
        self.join().await
    }

    /// Waits for both sides to end by themselves (one-shot sessions, failures).
    pub async fn join(self) -> (SessionResult, SessionResult) {
        let i = timeout(DEADLINE, self.initiator).await.unwrap().unwrap();
        let r = timeout(DEADLINE, self.responder).await.unwrap().unwrap();
        (i, r)
    }
}

pub async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Starts `initiator` → `responder` over `link` (made with [`memory_link`], or a lossy link).
pub fn start(
    initiator: &Store,
    responder: &Store,
    mode: SessionMode,
    link: (MemoryEnd, MemoryEnd),
) -> Running {
    start_with(initiator, responder, config(mode), link)
}

pub fn start_with(
    initiator: &Store,
    responder: &Store,
    config: SyncConfig,
    link: (MemoryEnd, MemoryEnd),
) -> Running {
    let ((i_tx, i_rx), (r_tx, r_rx)) = link;
    let i = SyncSession::initiator(
        initiator.clone(),
        SyncConfig {
            token: Some(TOKEN.into()),
            peer_name: "initiator".into(),
            ..config.clone()
        },
    );
    let r = SyncSession::responder(responder.clone(), config, auth());
    let stats = (i.stats(), r.stats());
    let (stop, rx) = watch::channel(false);
    Running {
        initiator: tokio::spawn(i.run(i_tx, i_rx, stopped(rx.clone()))),
        responder: tokio::spawn(r.run(r_tx, r_rx, stopped(rx))),
        stop,
        stats,
    }
}

/// One one-shot session; both sides must end cleanly.
pub async fn sync_once(a: &Store, b: &Store) -> (StatsSnapshot, StatsSnapshot) {
    let run = start(a, b, SessionMode::OneShot, memory_link(8));
    let stats = run.stats.clone();
    let (i, r) = run.join().await;
    i.unwrap();
    r.unwrap();
    (stats.0.snapshot(), stats.1.snapshot())
}

pub async fn assert_same(stores: &[&Store]) {
    for s in &stores[1..] {
        assert_eq!(s.version_vector(), stores[0].version_vector());
        assert_eq!(s.digest(), stores[0].digest());
        assert_eq!(s.verify_digest().await.unwrap(), s.digest());
    }
}
