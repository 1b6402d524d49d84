//! One sync session with one peer, for either side: the initiator (the outbound peer) and
//! the responder (inbound, which authenticates). Owns the task structure — a reader that
//! decodes, a writer that sends, and the protocol driver between them over bounded queues —
//! and the handshake. The steady-state exchange (pages, acks, live mode) is in
//! `exchange.rs`. Knows nothing of sockets: a transport only moves whole frames.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

use super::exchange::Exchange;
use super::frame::{clip, vector_frames};
use super::{
    Anchor, Authenticator, Compression, DeviceOrigin, DeviceRelay, Frame, FrameCodec, FrameSink,
    FrameSource, Hello, MAX_VECTOR_ACTORS, MIN_FRAME_BYTES, PROTOCOL_VERSION, PeerCredentials,
    PeerRole, ProtocolError, SessionStats, SyncConfig, Welcome,
};
use crate::seal::Prechecked;
use crate::{ActorId, ChangeLog, ClockClaim, Limits, Store, SyncStore, VersionVector};

/// A sync session, ready to [`run`](Self::run) over a transport.
///
/// ```text
/// initiator                         responder
///   Hello{version, actor, token} ──▶  authenticate, pick compression
///                                ◀──  Welcome{actor, compression}   (or Refuse)
///   VectorPart…, Vector(mine)    ──▶  (parts only when one frame cannot hold it)
///                                ◀──  VectorPart…, Vector(mine)
///   Page{id, changes}…           ◀─▶  Page…     each applied in one transaction,
///   Ack{id, vector}…             ◀─▶  Ack…      at most `window` pages unacknowledged
///   Live                         ◀─▶  Live      backlog sent; push new commits from here
///   Ping/Pong keepalive; Bye to end; Refuse{code, message} on any error
/// ```
///
/// Runs on any [`SyncStore`]: a device's SQLite [`Store`] (the default) or a hub's
/// PostgreSQL change log.
pub struct SyncSession<S: SyncStore = Store> {
    store: S,
    config: SyncConfig,
    role: Role,
    stats: Arc<SessionStats>,
    /// What the responder's peer may send ([`with_peer_role`](Self::with_peer_role)).
    peer_role: PeerRole,
    /// Set by the handshake of a `device` peer: its credential and actors.
    origin: OnceLock<DeviceOrigin>,
}

enum Role {
    Initiator,
    Responder(Arc<dyn Authenticator>),
}

/// Who the peer turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its actor id.
    pub actor: ActorId,
    /// Its self-declared name.
    pub name: String,
    /// The principal our authenticator accepted (responder side only).
    pub principal: Option<String>,
    /// Whether the peer checks a wholly pruned change by the body hash its seal carries
    /// ([`FEATURE_PRUNED_BODY`](super::FEATURE_PRUNED_BODY)); peers of earlier releases
    /// do not, and are not sent such changes (`exchange.rs`).
    pub takes_pruned_body: bool,
    /// Whether the peer takes the survivor of a log run in place of the changes it stands
    /// for ([`FEATURE_LOG_RUNS`](super::FEATURE_LOG_RUNS)); peers of earlier releases do not.
    pub takes_log_runs: bool,
}

/// The features this side announces, as sent.
fn own_features() -> Vec<String> {
    super::FEATURES.iter().map(|f| (*f).to_owned()).collect()
}

/// Whether `features` (a peer's) include `feature`.
fn lists(features: &[String], feature: &str) -> bool {
    features.iter().any(|f| f == feature)
}

/// How a session ended without error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// [`SessionMode::OneShot`](super::SessionMode::OneShot): both directions caught up.
    Done,
    /// The peer said `Bye`, with its reason.
    PeerBye(String),
    /// The shutdown future completed; a `Bye` was sent.
    Shutdown,
}

/// The result of a session that ended without error. Figures are in its
/// [`SessionStats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    /// The peer, when the handshake completed.
    pub peer: Option<PeerInfo>,
    /// How the session ended.
    pub end: SessionEnd,
}

impl<S: SyncStore> SyncSession<S> {
    /// The outbound side: sends `Hello` with `config.token`.
    pub fn initiator(store: S, config: SyncConfig) -> SyncSession<S> {
        SyncSession {
            store,
            config,
            role: Role::Initiator,
            stats: Arc::new(SessionStats::new()),
            peer_role: PeerRole::Hub,
            origin: OnceLock::new(),
        }
    }

    /// The inbound side: checks the initiator's `Hello` with `auth`. Until the peer is
    /// authenticated, frames over [`MIN_FRAME_BYTES`] are refused, so an anonymous
    /// connection costs little memory.
    pub fn responder(store: S, config: SyncConfig, auth: Arc<dyn Authenticator>) -> SyncSession<S> {
        SyncSession {
            store,
            config,
            role: Role::Responder(auth),
            stats: Arc::new(SessionStats::new()),
            peer_role: PeerRole::Hub,
            origin: OnceLock::new(),
        }
    }

    /// The role of the responder's peer (default [`PeerRole::Hub`]: anything goes). A
    /// [`PeerRole::Device`] credential is bound to the first actor that presents it
    /// ([`SyncStore::bind_credential`]); another actor presenting it is refused with
    /// [`ProtocolError::CredentialBound`], and changes of any other actor in its pages are
    /// refused (counted in the stats) while its own apply.
    pub fn with_peer_role(mut self, role: PeerRole) -> SyncSession<S> {
        self.peer_role = role;
        self
    }

    /// Records into `stats` instead of fresh counters (one `Arc` per peer keeps cumulative
    /// figures across reconnects).
    pub fn with_stats(mut self, stats: Arc<SessionStats>) -> SyncSession<S> {
        self.stats = stats;
        self
    }

    /// The counters this session updates while it runs.
    pub fn stats(&self) -> Arc<SessionStats> {
        self.stats.clone()
    }

    /// Runs the session until the peer says `Bye`, a one-shot session is done, `shutdown`
    /// completes (a `Bye` is sent), or an error. On an error caused here (bad frame, refused
    /// page, bad credentials) the peer is sent `Refuse { code, message }` first. Whatever
    /// happens, every page the store acknowledged is durable and no page is half-applied,
    /// so the next session resumes where this one stopped.
    pub async fn run<K, R>(
        self,
        sink: K,
        source: R,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<SessionSummary, ProtocolError>
    where
        K: FrameSink,
        R: FrameSource,
    {
        self.stats.session_started();
        let codec = FrameCodec::new(self.config.max_frame_bytes, self.store.limits())
            .with_zstd_level(self.config.zstd_level);
        // Large enough for everything a conforming peer sends unprompted (its window of
        // pages, acks for ours, keepalives), so neither side's reader blocks its writer.
        let queue = 2 * self.config.window.max(1) + 16;
        let (in_tx, in_rx) = mpsc::channel(queue);
        let (out_tx, out_rx) = mpsc::channel(queue);
        // A responder accepts only handshake-sized frames until the peer is authenticated,
        // so an anonymous connection cannot make it buffer or decompress megabytes.
        let trusted = Arc::new(AtomicBool::new(matches!(self.role, Role::Initiator)));
        let link = Link {
            trusted: trusted.clone(),
            codec: codec.clone(),
            out: out_tx,
            inbound: in_rx,
            compression: Compression::None,
            peer_max: self.config.max_frame_bytes,
            last_send: Instant::now(),
            last_recv: Instant::now(),
            peer_refused: false,
        };
        let reader = read_loop(source, codec, trusted, in_tx, &self.stats);
        let writer = write_loop(sink, out_rx, &self.stats, self.config.idle_timeout);
        let main = self.main_loop(link, shutdown);
        tokio::pin!(reader, writer, main);
        let linger = self.config.handshake_timeout.min(Duration::from_secs(5));
        let mut writer_done = false;
        let result = tokio::select! {
            r = &mut main => r,
            // The writer outlives the driver unless the transport fails.
            w = &mut writer => {
                writer_done = true;
                let failed = w.err().unwrap_or(ProtocolError::Closed);
                // The driver notices at its next send; let it finish the page it may be
                // applying, so that when this returns the store is done with the session.
                // Keep reading meanwhile: pages the peer delivered whole are still applied
                // (`apply_received`). Its own error, if more telling than a closed queue, wins.
                let finish = async {
                    tokio::select! {
                        r = &mut main => r,
                        () = &mut reader => Err(ProtocolError::Closed),
                    }
                };
                match timeout(linger, finish).await {
                    Ok(Err(ProtocolError::Closed)) | Err(_) => Err(failed),
                    Ok(other) => other,
                }
            }
            () = &mut reader => Err(ProtocolError::Closed),
        };
        if !writer_done {
            // Let the last frames (acks, Bye or Refuse) go out before closing.
            let _ = timeout(linger, &mut writer).await;
        }
        match &result {
            Ok(summary) => tracing::debug!(end = ?summary.end, "sync session ended"),
            Err(e) => tracing::debug!(error = %e, code = e.code(), "sync session failed"),
        }
        self.stats.ended(result.as_ref().err());
        result
    }

    /// The driver, then the goodbye: `Bye` on shutdown, `Refuse` on a local error.
    async fn main_loop(
        &self,
        mut link: Link,
        shutdown: impl Future<Output = ()>,
    ) -> Result<SessionSummary, ProtocolError> {
        let mut peer = None;
        let result = tokio::select! {
            r = self.drive(&mut link, &mut peer) => r,
            () = shutdown => Ok(SessionEnd::Shutdown),
        };
        if let (Err(ProtocolError::Closed), Some(peer)) = (&result, &peer) {
            self.apply_received(&mut link, peer).await;
        }
        match &result {
            Ok(SessionEnd::Shutdown) => {
                let bye = Frame::Bye {
                    reason: "shutting down".into(),
                };
                let _ = link.send(&bye).await;
            }
            Ok(SessionEnd::Done) => {
                let _ = link
                    .send(&Frame::Bye {
                        reason: "done".into(),
                    })
                    .await;
            }
            Err(e) if !e.came_from_peer() && !link.peer_refused => {
                let refuse = Frame::Refuse {
                    code: e.code().to_owned(),
                    message: clip(&e.to_string(), super::MAX_TEXT_BYTES),
                };
                let _ = link.send(&refuse).await;
            }
            _ => {}
        }
        // Dropping the link closes the outbound queue: the writer flushes and stops.
        drop(link);
        result.map(|end| SessionSummary { peer, end })
    }

    /// The link failed on a send (an ack hit a reset connection, say) while pages the peer
    /// delivered whole may still wait in the inbound queue: apply them, without acks (the
    /// peer learns from our vector next session), so a cut costs at most the page it
    /// interrupted. Stops at the reader's end of the link, on an error, or after a grace
    /// period of at most 5 s (a half-open link may never report its end).
    async fn apply_received(&self, link: &mut Link, peer: &PeerInfo) {
        let grace = self.config.handshake_timeout.min(Duration::from_secs(5));
        let deadline = Instant::now() + grace;
        let mut forked = std::collections::HashSet::new();
        while let Ok(Some(Ok(Received { frame, prechecked }))) =
            tokio::time::timeout_at(deadline, link.inbound.recv()).await
        {
            if let Frame::Page {
                changes, anchors, ..
            } = frame
            {
                let changes = super::exchange::screen_page(
                    &self.store,
                    &self.stats,
                    self.origin.get(),
                    changes,
                );
                let changes = match super::exchange::screen_forks(
                    &self.store,
                    &self.stats,
                    peer,
                    &mut forked,
                    changes,
                    &anchors,
                )
                .await
                {
                    Ok(changes) => changes,
                    Err(e) => {
                        tracing::debug!(error = %e, "a page received before the link failed was not checked");
                        return;
                    }
                };
                let mut page_actors: Vec<ActorId> = changes.iter().map(|c| c.actor).collect();
                page_actors.dedup();
                match super::exchange::apply_page(&self.store, &self.stats, changes, prechecked)
                    .await
                {
                    Ok(outcome) => {
                        if outcome.applied > 0 {
                            super::exchange::note_origins(&self.store, peer, &page_actors).await;
                        }
                        self.stats.page_received(outcome.applied, outcome.skipped)
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "a page received before the link failed was refused");
                        return;
                    }
                }
            }
        }
    }

    async fn drive(
        &self,
        link: &mut Link,
        peer_out: &mut Option<PeerInfo>,
    ) -> Result<SessionEnd, ProtocolError> {
        let limit = self.config.handshake_timeout;
        let (peer, tip) = timeout(limit, self.handshake(link))
            .await
            .map_err(|_| ProtocolError::Timeout("waiting for the handshake"))??;
        *peer_out = Some(peer.clone());
        // Subscribe before the first read of the change log, so no commit falls between.
        let events = self.store.subscribe().await?;
        let mine = self.store.version_vector().await?;
        // The initiator's vector goes first, the responder's once it has the initiator's:
        // a vector of many frames is never sent by both sides at once (each blocked on a
        // full queue, neither reading). A peer of an earlier release that sends its vector
        // straight away is read afterwards all the same.
        let theirs = match self.role {
            Role::Initiator => {
                send_vector(link, &mine).await?;
                receive_vector(link, limit).await?
            }
            Role::Responder(_) => {
                let theirs = receive_vector(link, limit).await?;
                if theirs.is_ok() {
                    send_vector(link, &mine).await?;
                }
                theirs
            }
        };
        let theirs = match theirs {
            Ok(v) => v,
            Err(reason) => return Ok(SessionEnd::PeerBye(reason)),
        };
        self.stats
            .connected(peer.actor, &peer.name, peer.principal.clone());
        self.stats.their_vector(&theirs);
        tracing::debug!(peer = %peer.name, actor = %peer.actor, "sync session connected");
        // A device credential under `device_relay = "own"` is sent only this store's
        // changes and its own (see `DeviceRelay`).
        let relay_only = match (self.config.device_relay, self.origin.get()) {
            (DeviceRelay::Own, Some(origin)) => {
                let mut actors = vec![ChangeLog::actor(&self.store)];
                actors.extend(origin.actors());
                Some(actors)
            }
            _ => None,
        };
        self.stats.relay_only(relay_only.clone());
        // A tip that differs from our copy of its change: two stores write as that actor.
        let mut forked = std::collections::HashSet::new();
        if let Some(tip) = tip {
            super::exchange::screen_forks(
                &self.store,
                &self.stats,
                &peer,
                &mut forked,
                Vec::new(),
                &[tip],
            )
            .await?;
        }
        Exchange::new(&self.store, &self.config, &self.stats, link, &peer, theirs)
            .forked(forked)
            .only_from(self.origin.get().cloned())
            .relay_only(relay_only)
            .run(events)
            .await
    }

    /// Takes an authenticated peer's word on the time when it says its clock is
    /// synchronised (see `TimeReference`).
    fn observe_clock(&self, peer: ActorId, claim: Option<ClockClaim>) {
        if let Some(claim) = claim
            && self.store.time_reference().observe_peer(peer, claim)
        {
            tracing::debug!(%peer, wall_ms = claim.wall_ms, "trusted time from the peer");
        }
    }

    /// The newest change this store holds of `actor` at or below `seq` (`u64::MAX`: its
    /// newest), as an anchor for the peer to compare.
    async fn tip_of(&self, actor: ActorId, seq: u64) -> Result<Option<Anchor>, ProtocolError> {
        let held = self.store.version_vector_of(&[actor]).await?.get(&actor);
        let seq = held.min(seq);
        if seq == 0 {
            return Ok(None);
        }
        let found = self.store.hlcs_at(&[(actor, seq)]).await?;
        Ok(found
            .into_iter()
            .next()
            .map(|(actor, seq, hlc)| Anchor { actor, seq, hlc }))
    }

    /// Moves the `device` credential `principal`, bound to `bound`, along the peer's
    /// succession records: each record whose old actor is the bound one is checked against
    /// that actor's key here (or its own, trust on first use) and, if it checks, the
    /// credential moves on to its new actor. A record that does not check refuses the
    /// session and rebinds nothing. Returns the actor bound at the end.
    async fn follow_successions(
        &self,
        principal: &str,
        mut bound: ActorId,
        successions: &[crate::Succession],
    ) -> Result<ActorId, ProtocolError> {
        for _ in 0..successions.len() {
            let Some(s) = successions.iter().find(|s| s.old == bound) else {
                break;
            };
            let key = self.store.actor_key(bound).await?;
            if let Err(reason) = s.check(key) {
                let e = ProtocolError::ForgedSuccession {
                    principal: principal.to_owned(),
                    old: s.old,
                    new: s.new,
                    reason,
                };
                tracing::warn!(credential = principal, old = %s.old, new = %s.new, "sync: {e}");
                return Err(e);
            }
            let now = self
                .store
                .succeed_credential(principal, s.old, s.new)
                .await?;
            if now == s.new {
                tracing::info!(
                    credential = principal,
                    old = %s.old,
                    new = %s.new,
                    "sync: device credential moved on to the actor its store took when it rebased its clock"
                );
            }
            if now == bound {
                break;
            }
            bound = now;
        }
        Ok(bound)
    }

    /// The first actor of the peer's succession chain ending at `actor` when every record
    /// of it checks (against the keys bound here, or their own), else `actor`: what a
    /// credential used for the first time is bound to, before the chain is followed.
    async fn chain_start(
        &self,
        actor: ActorId,
        successions: &[crate::Succession],
    ) -> Result<ActorId, ProtocolError> {
        let chain = crate::chain_to(actor, successions);
        for s in &chain {
            if s.check(self.store.actor_key(s.old).await?).is_err() {
                return Ok(actor);
            }
        }
        Ok(chain.first().map_or(actor, |s| s.old))
    }

    /// Authenticates the peer and agrees on the session's terms. Returns who it is and the
    /// peer's tip to compare with our copy (see `Hello::tip`).
    async fn handshake(
        &self,
        link: &mut Link,
    ) -> Result<(PeerInfo, Option<Anchor>), ProtocolError> {
        let own = ChangeLog::actor(&self.store);
        match &self.role {
            Role::Initiator => {
                link.send(&Frame::Hello(Hello {
                    protocol_version: PROTOCOL_VERSION,
                    actor: own,
                    peer_name: self.config.peer_name.clone(),
                    token: self.config.token.clone(),
                    compression: self
                        .config
                        .compression
                        .iter()
                        .map(|c| c.name().to_owned())
                        .collect(),
                    max_frame_bytes: self.config.max_frame_bytes as u64,
                    clock: Some(self.store.clock_claim()),
                    tip: self.tip_of(own, u64::MAX).await?,
                    successions: newest_successions(self.store.own_successions().await?),
                    features: own_features(),
                }))
                .await?;
                let w: Welcome = match link.recv().await? {
                    Frame::Welcome(w) => w,
                    Frame::Bye { reason } => {
                        return Err(ProtocolError::Refused {
                            code: "bye".into(),
                            message: reason,
                        });
                    }
                    other => return Err(unexpected("welcome", &other)),
                };
                if w.actor == own {
                    return Err(ProtocolError::SameActor(own));
                }
                if w.compression != Compression::None
                    && !self.config.compression.contains(&w.compression)
                {
                    return Err(ProtocolError::Malformed(format!(
                        "the peer chose compression {:?}, which was not offered",
                        w.compression.name()
                    )));
                }
                link.negotiated(w.compression, w.max_frame_bytes);
                self.observe_clock(w.actor, w.clock);
                // Only a statement about our own actor is asked for.
                let tip = w.tip.filter(|t| t.actor == own);
                let peer = PeerInfo {
                    actor: w.actor,
                    name: w.peer_name,
                    principal: None,
                    takes_pruned_body: lists(&w.features, super::FEATURE_PRUNED_BODY),
                    takes_log_runs: lists(&w.features, super::FEATURE_LOG_RUNS),
                };
                Ok((peer, tip))
            }
            Role::Responder(auth) => {
                let hello = match link.recv().await? {
                    Frame::Hello(h) => h,
                    other => return Err(unexpected("hello", &other)),
                };
                if hello.protocol_version != PROTOCOL_VERSION {
                    return Err(ProtocolError::UnsupportedVersion {
                        theirs: hello.protocol_version,
                        ours: PROTOCOL_VERSION,
                    });
                }
                let principal = auth
                    .authenticate(&PeerCredentials {
                        actor: hello.actor,
                        peer_name: &hello.peer_name,
                        token: hello.token.as_deref(),
                    })
                    .ok_or(ProtocolError::Unauthorized)?;
                if hello.actor == own {
                    return Err(ProtocolError::SameActor(own));
                }
                let bound = match self.peer_role {
                    PeerRole::Hub => None,
                    PeerRole::Device => {
                        // First use binds the start of the peer's succession chain, so
                        // the chain is followed and its old actors stay allowed.
                        let first = self.chain_start(hello.actor, &hello.successions).await?;
                        let bound = self.store.bind_credential(&principal, first).await?;
                        let bound = self
                            .follow_successions(&principal, bound, &hello.successions)
                            .await?;
                        if bound != hello.actor {
                            self.stats
                                .admitted_as(&principal, self.peer_role, Some(bound));
                            return Err(ProtocolError::CredentialBound {
                                principal,
                                bound,
                                presented: hello.actor,
                            });
                        }
                        let predecessors = self.store.credential_predecessors(&principal).await?;
                        let _ = self.origin.set(DeviceOrigin {
                            principal: principal.clone(),
                            bound,
                            predecessors,
                        });
                        Some(bound)
                    }
                };
                self.stats.admitted_as(&principal, self.peer_role, bound);
                let compression = hello
                    .compression
                    .iter()
                    .filter_map(|name| Compression::from_name(name))
                    .find(|c| self.config.compression.contains(c))
                    .unwrap_or(Compression::None);
                link.trusted.store(true, Ordering::Release);
                // A tip only about the peer's own actor counts (it names its own history).
                let tip = hello.tip.filter(|t| t.actor == hello.actor);
                let reply = match tip {
                    Some(t) => self.tip_of(t.actor, t.seq).await?,
                    None => None,
                };
                link.send(&Frame::Welcome(Welcome {
                    actor: own,
                    peer_name: self.config.peer_name.clone(),
                    compression,
                    max_frame_bytes: self.config.max_frame_bytes as u64,
                    clock: Some(self.store.clock_claim()),
                    tip: reply,
                    features: own_features(),
                }))
                .await?;
                link.negotiated(compression, hello.max_frame_bytes);
                self.observe_clock(hello.actor, hello.clock);
                let peer = PeerInfo {
                    actor: hello.actor,
                    name: hello.peer_name,
                    principal: Some(principal),
                    takes_pruned_body: lists(&hello.features, super::FEATURE_PRUNED_BODY),
                    takes_log_runs: lists(&hello.features, super::FEATURE_LOG_RUNS),
                };
                Ok((peer, tip))
            }
        }
    }
}

/// Sends `vector` in as many frames as the peer's limit needs.
async fn send_vector(link: &mut Link, vector: &VersionVector) -> Result<(), ProtocolError> {
    for frame in vector_frames(vector, link.peer_max) {
        link.send(&frame).await?;
    }
    Ok(())
}

/// Receives the peer's vector (its `VectorPart`s, then the closing `Vector`), answering
/// keepalives; `Err(reason)` when it says `Bye`. Each frame must come within `limit`, and
/// the whole vector may name at most [`MAX_VECTOR_ACTORS`] actors.
async fn receive_vector(
    link: &mut Link,
    limit: Duration,
) -> Result<Result<VersionVector, String>, ProtocolError> {
    let mut theirs = VersionVector::new();
    loop {
        let frame = timeout(limit, link.recv())
            .await
            .map_err(|_| ProtocolError::Timeout("waiting for the peer's version vector"))??;
        let (part, last) = match frame {
            Frame::VectorPart(v) => (v, false),
            Frame::Vector(v) => (v, true),
            Frame::Ping => {
                link.send(&Frame::Pong).await?;
                continue;
            }
            Frame::Pong => continue,
            Frame::Bye { reason } => return Ok(Err(reason)),
            other => return Err(unexpected("vector", &other)),
        };
        if theirs.len().saturating_add(part.len()) > MAX_VECTOR_ACTORS {
            return Err(ProtocolError::Malformed(format!(
                "the peer's version vector names more than {MAX_VECTOR_ACTORS} actors"
            )));
        }
        if theirs.is_empty() {
            theirs = part;
        } else {
            theirs.merge(&part);
        }
        if last {
            return Ok(Ok(theirs));
        }
    }
}

pub(super) fn unexpected(expected: &'static str, got: &Frame) -> ProtocolError {
    ProtocolError::UnexpectedFrame {
        expected,
        got: got.kind(),
    }
}

/// The driver's side of the transport: encoded frames out, decoded frames in.
pub(super) struct Link {
    codec: FrameCodec,
    /// Set once the peer is authenticated (from the start on the initiator); read by the
    /// reader to choose the frame limit.
    trusted: Arc<AtomicBool>,
    out: mpsc::Sender<Vec<u8>>,
    inbound: mpsc::Receiver<Result<Received, ProtocolError>>,
    /// Negotiated in the handshake; `None` until then.
    compression: Compression,
    /// The most the peer accepts per frame.
    pub(super) peer_max: usize,
    pub(super) last_send: Instant,
    pub(super) last_recv: Instant,
    /// The peer sent `Refuse`: it is gone, do not answer.
    peer_refused: bool,
}

impl Link {
    fn negotiated(&mut self, compression: Compression, peer_max: u64) {
        self.compression = compression;
        self.peer_max = usize::try_from(peer_max).unwrap_or(usize::MAX);
    }

    /// Encodes and queues one frame; waits while the outbound queue is full.
    pub(super) async fn send(&mut self, frame: &Frame) -> Result<(), ProtocolError> {
        let bytes = self.codec.encode(frame, self.compression, self.peer_max)?;
        self.out
            .send(bytes)
            .await
            .map_err(|_| ProtocolError::Closed)?;
        self.last_send = Instant::now();
        Ok(())
    }

    /// The next frame; a `Refuse` becomes the matching error.
    pub(super) async fn recv(&mut self) -> Result<Frame, ProtocolError> {
        self.recv_checked().await.map(|r| r.frame)
    }

    /// Receives the next frame with the signatures the reader found valid in it.
    pub(super) async fn recv_checked(&mut self) -> Result<Received, ProtocolError> {
        let received = self
            .inbound
            .recv()
            .await
            .unwrap_or(Err(ProtocolError::Closed))?;
        self.last_recv = Instant::now();
        match received.frame {
            Frame::Refuse { code, message } => {
                self.peer_refused = true;
                Err(match code.as_str() {
                    "unauthorized" => ProtocolError::Unauthorized,
                    _ => ProtocolError::Refused { code, message },
                })
            }
            frame => Ok(Received { frame, ..received }),
        }
    }
}

/// A decoded frame, and for a page the signatures of its changes found valid by the reader
/// (checked while the previous page is applied, so the writer does not verify them).
pub(super) struct Received {
    pub(super) frame: Frame,
    pub(super) prechecked: Prechecked,
}

impl Received {
    /// `frame` with the signatures of its changes checked (a page's; nothing otherwise).
    fn checked(frame: Frame) -> Received {
        let prechecked = match &frame {
            Frame::Page { changes, .. } => Prechecked::check(changes),
            _ => Prechecked::none(),
        };
        Received { frame, prechecked }
    }
}

/// Receives, counts and decodes frames. The first error (or the end of the link) is passed
/// on and ends reading; then this waits forever, to be dropped with the session.
async fn read_loop<R: FrameSource>(
    mut source: R,
    codec: FrameCodec,
    trusted: Arc<AtomicBool>,
    tx: mpsc::Sender<Result<Received, ProtocolError>>,
    stats: &SessionStats,
) {
    let untrusted = FrameCodec::new(MIN_FRAME_BYTES as usize, Limits::default());
    loop {
        let item = match source.recv().await {
            Ok(Some(bytes)) => {
                stats.frame_in(bytes.len());
                let codec = if trusted.load(Ordering::Acquire) {
                    &codec
                } else {
                    &untrusted
                };
                decode_frame(codec, bytes).await
            }
            Ok(None) => Err(ProtocolError::Closed),
            Err(e) => Err(ProtocolError::Transport(e)),
        };
        let last = item.is_err();
        if tx.send(item).await.is_err() || last {
            break;
        }
    }
    drop(tx);
    std::future::pending::<()>().await
}

/// Frames at least this large are decoded (zstd, CBOR, validation of every change) on the
/// blocking pool, so a page of megabytes does not stall the async worker it arrived on.
const BLOCKING_DECODE_BYTES: usize = 64 * 1024;

/// Pages with at most this many signed changes have them checked inline (live mode sends
/// a change or two per page); larger ones on the blocking pool.
const INLINE_SIGNATURE_CHECKS: usize = 2;

/// Decodes one received frame, and checks the signatures of a page's changes: inline when
/// small, on the blocking pool when large, so a page of megabytes (or of hundreds of
/// signatures, ~50 µs each) does not stall the async worker it arrived on.
async fn decode_frame(codec: &FrameCodec, bytes: Vec<u8>) -> Result<Received, ProtocolError> {
    let blocking = |work: Box<dyn FnOnce() -> Result<Received, ProtocolError> + Send>| async {
        tokio::task::spawn_blocking(work)
            .await
            .unwrap_or_else(|e| Err(ProtocolError::Malformed(format!("decoding a frame: {e}"))))
    };
    if bytes.len() < BLOCKING_DECODE_BYTES {
        let frame = codec.decode(&bytes)?;
        if signed_changes(&frame) <= INLINE_SIGNATURE_CHECKS {
            return Ok(Received::checked(frame));
        }
        return blocking(Box::new(move || Ok(Received::checked(frame)))).await;
    }
    let codec = codec.clone();
    blocking(Box::new(move || {
        codec.decode(&bytes).map(Received::checked)
    }))
    .await
}

/// How many of a page's changes are signed (0 for any other frame).
fn signed_changes(frame: &Frame) -> usize {
    match frame {
        Frame::Page { changes, .. } => changes.iter().filter(|c| c.seal.is_some()).count(),
        _ => 0,
    }
}

/// Sends queued frames until the queue closes, then closes the sink.
async fn write_loop<S: FrameSink>(
    mut sink: S,
    mut rx: mpsc::Receiver<Vec<u8>>,
    stats: &SessionStats,
    limit: Duration,
) -> Result<(), ProtocolError> {
    while let Some(bytes) = rx.recv().await {
        let n = bytes.len();
        timeout(limit, sink.send(bytes))
            .await
            .map_err(|_| ProtocolError::Timeout("sending a frame"))?
            .map_err(ProtocolError::Transport)?;
        stats.frame_out(n);
    }
    let _ = timeout(limit, sink.close()).await;
    Ok(())
}

/// The newest [`MAX_SUCCESSIONS`](crate::MAX_SUCCESSIONS) of a store's succession records
/// (oldest first), what a `Hello` carries.
fn newest_successions(mut all: Vec<crate::Succession>) -> Vec<crate::Succession> {
    let excess = all.len().saturating_sub(crate::MAX_SUCCESSIONS);
    all.drain(..excess);
    all
}
