//! The steady state of a session, after the version vectors are exchanged: stream pages of
//! what the peer lacks with a bounded window of unacknowledged pages, apply the peer's pages
//! one transaction each and acknowledge them, then push new commits in live mode, with
//! keepalives. Owns the notion of what the peer holds; knows nothing of encoding or
//! transports (see `session.rs`).
//!
//! Correctness rests on the store, not on this loop: pages carry contiguous per-actor runs
//! starting above what the peer is known to hold, `apply_remote` is idempotent and atomic,
//! and refuses gaps. So a page lost with the link is simply sent again by the next session,
//! and a change that reaches a store by two paths is stored once.

use std::collections::VecDeque;

use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::{Instant, MissedTickBehavior, interval};

use super::session::{Link, SessionEnd, unexpected};
use super::{Ack, Frame, ProtocolError, SessionMode, SessionStats, SyncConfig};
use crate::{ActorId, Change, ChangeEvent, Store, StoreError, VersionVector};

pub(super) struct Exchange<'a> {
    store: &'a Store,
    config: &'a SyncConfig,
    stats: &'a SessionStats,
    link: &'a mut Link,
    /// What the peer holds: its vector, its acks, and the changes it sent us (a store only
    /// sends what it holds, and holds contiguous runs).
    known: VersionVector,
    /// `known` plus every page sent: the next page starts above this.
    sent: VersionVector,
    /// Pages sent and not yet acknowledged, oldest first: `(page_id, changes)`.
    in_flight: VecDeque<(u64, usize)>,
    next_page: u64,
    /// Our change log may hold something the peer lacks: query it when the window allows.
    more: bool,
    sent_live: bool,
    peer_live: bool,
    /// Byte budget of one page: ours, capped at half of what the peer accepts per frame.
    page_budget: usize,
    last_recheck: Instant,
    /// A `device` credential's bound actor and name: only that actor's changes are taken.
    origin: Option<(ActorId, String)>,
}

impl<'a> Exchange<'a> {
    pub(super) fn new(
        store: &'a Store,
        config: &'a SyncConfig,
        stats: &'a SessionStats,
        link: &'a mut Link,
        theirs: VersionVector,
    ) -> Exchange<'a> {
        let page_budget = config.page_bytes.min(link.peer_max / 2).max(1);
        Exchange {
            store,
            config,
            stats,
            link,
            sent: theirs.clone(),
            known: theirs,
            in_flight: VecDeque::new(),
            next_page: 1,
            more: true,
            sent_live: false,
            peer_live: false,
            page_budget,
            last_recheck: Instant::now(),
            origin: None,
        }
    }

    /// Takes only `origin`'s changes from the peer (a `device` credential bound to it).
    pub(super) fn only_from(mut self, origin: Option<(ActorId, String)>) -> Exchange<'a> {
        self.origin = origin;
        self
    }

    pub(super) async fn run(
        mut self,
        mut events: broadcast::Receiver<ChangeEvent>,
    ) -> Result<SessionEnd, ProtocolError> {
        let period = self.config.keepalive.min(self.config.live_recheck) / 2;
        let mut tick = interval(period.max(std::time::Duration::from_millis(10)));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            self.pump().await?;
            if self.config.mode == SessionMode::OneShot
                && self.sent_live
                && self.peer_live
                && self.in_flight.is_empty()
            {
                return Ok(SessionEnd::Done);
            }
            tokio::select! {
                biased;
                frame = self.link.recv() => {
                    if let Some(end) = self.on_frame(frame?).await? {
                        return Ok(end);
                    }
                }
                event = events.recv() => match event {
                    Ok(e) => {
                        if e.seq > self.sent.get(&e.actor) {
                            self.more = true;
                        }
                    }
                    // Missed events: the change log, queried from `sent`, has them all.
                    Err(RecvError::Lagged(_)) => self.more = true,
                    Err(RecvError::Closed) => return Err(StoreError::Closed.into()),
                },
                _ = tick.tick() => self.on_tick().await?,
            }
        }
    }

    /// Sends pages of what the peer lacks while the window has room; the first time there is
    /// nothing left, says `Live`.
    async fn pump(&mut self) -> Result<(), ProtocolError> {
        while self.more && self.in_flight.len() < self.config.window.max(1) {
            let changes = self
                .store
                .changes_since(&self.sent, self.page_budget)
                .await?;
            if changes.is_empty() {
                self.more = false;
                if !self.sent_live {
                    self.link.send(&Frame::Live).await?;
                    self.sent_live = true;
                    self.maybe_live();
                }
                break;
            }
            note(&mut self.sent, &changes);
            let page_id = self.next_page;
            self.next_page += 1;
            let n = changes.len();
            self.link.send(&Frame::Page { page_id, changes }).await?;
            self.in_flight.push_back((page_id, n));
            self.stats.page_sent(n);
        }
        Ok(())
    }

    /// Handles one frame; `Some` when the peer ended the session.
    async fn on_frame(&mut self, frame: Frame) -> Result<Option<SessionEnd>, ProtocolError> {
        match frame {
            Frame::Page { page_id, changes } => {
                let mut holds = VersionVector::new();
                note(&mut holds, &changes);
                // Changes stamped too far ahead are held back per actor; the rest is one
                // call, one transaction: any other bad change refuses the whole page.
                let changes = screen_page(self.store, self.stats, self.origin.as_ref(), changes);
                let outcome = self.store.apply_remote(changes).await?;
                self.stats.page_received(outcome.applied, outcome.skipped);
                self.known.merge(&holds);
                self.sent.merge(&holds);
                self.stats.their_vector(&self.known);
                self.link
                    .send(&Frame::Ack(Ack {
                        page_id,
                        applied: outcome.applied as u64,
                        skipped: outcome.skipped as u64,
                        vector: self.store.version_vector(),
                    }))
                    .await?;
            }
            Frame::Ack(ack) => {
                match self.in_flight.front() {
                    Some(&(id, _)) if id == ack.page_id => {
                        self.in_flight.pop_front();
                    }
                    front => {
                        return Err(ProtocolError::Malformed(format!(
                            "ack for page {}, expected {}",
                            ack.page_id,
                            front.map_or("none".to_owned(), |f| f.0.to_string())
                        )));
                    }
                }
                self.known.merge(&ack.vector);
                self.sent.merge(&ack.vector);
                self.stats.their_vector(&self.known);
                if self.sent_live && self.peer_live {
                    self.stats.synced();
                }
            }
            Frame::Live => {
                self.peer_live = true;
                self.maybe_live();
            }
            Frame::Ping => self.link.send(&Frame::Pong).await?,
            Frame::Pong => {}
            Frame::Bye { reason } => return Ok(Some(SessionEnd::PeerBye(reason))),
            other => return Err(unexpected("page, ack, live, ping, pong or bye", &other)),
        }
        Ok(None)
    }

    async fn on_tick(&mut self) -> Result<(), ProtocolError> {
        let now = Instant::now();
        if now.duration_since(self.link.last_recv) >= self.config.idle_timeout {
            return Err(ProtocolError::Timeout("waiting for the peer"));
        }
        if now.duration_since(self.link.last_send) >= self.config.keepalive {
            self.link.send(&Frame::Ping).await?;
        }
        if self.sent_live && now.duration_since(self.last_recheck) >= self.config.live_recheck {
            self.last_recheck = now;
            self.more = true;
        }
        Ok(())
    }

    fn maybe_live(&self) {
        if self.sent_live && self.peer_live {
            self.stats.live();
        }
    }
}

/// Raises `v` to the highest seq per actor among `changes`. Valid as a statement of what
/// the changes' holder holds, because stores hold contiguous runs per actor.
fn note(v: &mut VersionVector, changes: &[Change]) {
    for c in changes {
        if c.seq > v.get(&c.actor) {
            v.set(c.actor, c.seq);
        }
    }
}

/// The changes of a received page that may be applied: with `origin` (a `device`
/// credential), other actors' changes are refused; those held back for their timestamps are
/// counted. Both are counted in `stats` and logged (once per actor and page).
pub(super) fn screen_page(
    store: &Store,
    stats: &SessionStats,
    origin: Option<&(ActorId, String)>,
    changes: Vec<Change>,
) -> Vec<Change> {
    let changes = match origin {
        Some((bound, principal)) => {
            let (own, foreign) = super::quarantine::screen_origin(changes, *bound, principal);
            for f in &foreign {
                stats.refused_foreign(f);
                tracing::warn!(actor = %f.actor, seq = f.seq, credential = %f.principal, "sync: {f}");
            }
            own
        }
        None => changes,
    };
    let (accepted, held) = super::quarantine::screen(store, changes);
    for q in &held {
        stats.quarantined(q);
        tracing::warn!(actor = %q.actor, seq = q.seq, "sync: {q}");
    }
    accepted
}
