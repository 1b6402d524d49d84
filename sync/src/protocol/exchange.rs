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

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};

use tokio::time::{Instant, MissedTickBehavior, interval};

use super::frame::vector_within;
use super::session::{Link, PeerInfo, Received, SessionEnd, unexpected};
use super::{
    Ack, Anchor, ChangeNeedsUpgrade, ChangeTooLarge, Frame, PAGE_FRAME_OVERHEAD, ProtocolError,
    SessionMode, SessionStats, SyncConfig,
};
use crate::seal::Prechecked;
use crate::sync_store::{Announcement, Announcements};
use crate::{ActorId, Change, ChangeLog, Fork, SyncStore, VersionVector};

pub(super) struct Exchange<'a, S: SyncStore> {
    store: &'a S,
    config: &'a SyncConfig,
    stats: &'a SessionStats,
    link: &'a mut Link,
    peer: &'a PeerInfo,
    /// Actors whose history from this peer contradicts ours (two stores writing as one
    /// actor): their changes from this peer are not merged for the rest of the session.
    forked: HashSet<ActorId>,
    /// Actors whose first new changes of the session went out with their anchor (the seq
    /// and HLC of the change just below, which the peer holds), so the peer can tell a
    /// forked history (see `forks.rs`) from a continued one. Once per actor and session.
    anchored: HashSet<ActorId>,
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
    /// Byte budget of one page: ours, capped at what the peer's frame limit leaves for
    /// changes.
    page_budget: usize,
    /// Actors left out of this session because their next change can never fit the
    /// peer's frame limit, or cannot be checked by it (`hold_for_upgrade`): actor → the
    /// seq of that change. Their later changes wait behind
    /// it (a store holds contiguous runs); every other actor keeps syncing.
    oversized: HashMap<ActorId, u64>,
    last_recheck: Instant,
    /// A `device` credential: only the changes of its actors are taken.
    origin: Option<super::DeviceOrigin>,
    /// The only actors whose changes the peer is sent (`device_relay = "own"`), read with
    /// [`ChangeLog::changes_since_of`]: whole actors, so the runs sent stay contiguous,
    /// and nothing of the others is read. `None`: every actor's.
    relay_only: Option<Vec<ActorId>>,
}

impl<'a, S: SyncStore> Exchange<'a, S> {
    pub(super) fn new(
        store: &'a S,
        config: &'a SyncConfig,
        stats: &'a SessionStats,
        link: &'a mut Link,
        peer: &'a PeerInfo,
        theirs: VersionVector,
    ) -> Exchange<'a, S> {
        let page_budget = config
            .page_bytes
            .min(link.peer_max.saturating_sub(PAGE_FRAME_OVERHEAD))
            .max(1);
        Exchange {
            store,
            config,
            stats,
            link,
            peer,
            forked: HashSet::new(),
            anchored: HashSet::new(),
            sent: theirs.clone(),
            known: theirs,
            in_flight: VecDeque::new(),
            next_page: 1,
            more: true,
            sent_live: false,
            peer_live: false,
            page_budget,
            oversized: HashMap::new(),
            last_recheck: Instant::now(),
            origin: None,
            relay_only: None,
        }
    }

    /// Does not merge `actors` from the peer (forks found in the handshake).
    pub(super) fn forked(mut self, actors: HashSet<ActorId>) -> Exchange<'a, S> {
        self.forked = actors;
        self
    }

    /// Takes only `origin`'s actors' changes from the peer (a `device` credential).
    pub(super) fn only_from(mut self, origin: Option<super::DeviceOrigin>) -> Exchange<'a, S> {
        self.origin = origin;
        self
    }

    /// Sends the peer only `actors`' changes, when `Some`.
    pub(super) fn relay_only(mut self, actors: Option<Vec<ActorId>>) -> Exchange<'a, S> {
        self.relay_only = actors;
        self
    }

    /// Whether the peer is sent `actor`'s changes.
    fn relays(&self, actor: &ActorId) -> bool {
        self.relay_only.as_ref().is_none_or(|s| s.contains(actor))
    }

    pub(super) async fn run(
        mut self,
        mut events: S::Announcements,
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
                received = self.link.recv_checked() => {
                    let Received { frame, prechecked } = received?;
                    if let Some(end) = self.on_frame(frame, prechecked).await? {
                        return Ok(end);
                    }
                }
                event = events.next() => match event? {
                    Announcement::Committed { actor, seq } => {
                        if seq > self.sent.get(&actor) && self.relays(&actor) {
                            self.more = true;
                        }
                    }
                    // Missed announcements: the change log, queried from `sent`, has them all.
                    Announcement::Missed => self.more = true,
                },
                _ = tick.tick() => self.on_tick().await?,
            }
        }
    }

    /// Sends pages of what the peer lacks while the window has room; the first time there is
    /// nothing left, says `Live`.
    async fn pump(&mut self) -> Result<(), ProtocolError> {
        while self.more && self.in_flight.len() < self.config.window.max(1) {
            let mut changes = match &self.relay_only {
                Some(actors) => {
                    self.store
                        .changes_since_of(actors, &self.cursor(), self.page_budget)
                        .await?
                }
                None => {
                    self.store
                        .changes_since(&self.cursor(), self.page_budget)
                        .await?
                }
            };
            // A peer of an earlier release cannot check a wholly pruned change, nor take a
            // log run: the page ends before it, and when it comes first its actor is left out.
            if let Some((at, feature)) = changes
                .iter()
                .enumerate()
                .find_map(|(i, c)| Some((i, self.needs_upgrade(c)?)))
            {
                if at == 0 {
                    self.hold_for_upgrade(&changes[0], feature);
                    continue;
                }
                changes.truncate(at);
            }
            // Only the first change of a page can be over the budget (it is taken whatever
            // its size); if it is over the peer's limit too, no page can ever carry it.
            if let Some(first) = changes.first_mut() {
                let max = self.link.peer_max.saturating_sub(PAGE_FRAME_OVERHEAD);
                let mut size = first.encoded_len();
                if size > max && !first.pruned_rollups.is_empty() {
                    // The rollups of its pruned units (one per minute) can outgrow the
                    // readings they replace: they are derived data, so the change goes
                    // without them rather than wedge its actor.
                    tracing::warn!(actor = %first.actor, seq = first.seq, size,
                        "sync: change sent without the rollups of its pruned readings: too large for the peer's frame limit");
                    first.pruned_rollups.clear();
                    size = first.encoded_len();
                }
                if size > max {
                    self.leave_out(first, size);
                    continue;
                }
            }
            if changes.is_empty() {
                self.more = false;
                if !self.sent_live {
                    self.link.send(&Frame::Live).await?;
                    self.sent_live = true;
                    self.maybe_live();
                }
                break;
            }
            let anchors = self.anchors_for(&changes).await?;
            note(&mut self.sent, &changes);
            let page_id = self.next_page;
            self.next_page += 1;
            let n = changes.len();
            self.link
                .send(&Frame::Page {
                    page_id,
                    changes,
                    anchors,
                })
                .await?;
            self.in_flight.push_back((page_id, n));
            self.stats.page_sent(n);
        }
        Ok(())
    }

    /// Anchors for the actors whose first new changes of the session are in `changes`: the
    /// seq and HLC of the change just below them, which the peer holds, so it can tell a
    /// forked history (two stores writing as one actor, see `forks.rs`) from a continued one.
    /// As many as fit the frame beside the changes; an actor left without one is anchored
    /// in a later page.
    async fn anchors_for(&mut self, changes: &[Change]) -> Result<Vec<Anchor>, ProtocolError> {
        let mut seen = HashSet::new();
        let dots: Vec<(ActorId, u64)> = changes
            .iter()
            .filter(|c| !self.anchored.contains(&c.actor) && seen.insert(c.actor))
            .map(|c| (c.actor, c.first_seq() - 1))
            .collect();
        if dots.is_empty() {
            return Ok(Vec::new());
        }
        // An actor's first change at seq 1 needs no anchor: nothing of it is held.
        for (actor, seq) in &dots {
            if *seq == 0 {
                self.anchored.insert(*actor);
            }
        }
        let wanted: Vec<(ActorId, u64)> = dots.into_iter().filter(|d| d.1 > 0).collect();
        let held = self.store.hlcs_at(&wanted).await?;
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let used: usize = changes.iter().map(Change::encoded_len).sum();
        let mut room = self
            .link
            .peer_max
            .saturating_sub(PAGE_FRAME_OVERHEAD + ANCHORS_FIELD_BYTES + used);
        let mut anchors = Vec::with_capacity(held.len());
        for (actor, seq, hlc) in held {
            let anchor = Anchor { actor, seq, hlc };
            let size = crate::change::cbor_len(&anchor);
            if size > room {
                break;
            }
            room -= size;
            self.anchored.insert(actor);
            anchors.push(anchor);
        }
        Ok(anchors)
    }

    /// Where the next page starts: above what was sent, and past every actor left out.
    fn cursor(&self) -> Cow<'_, VersionVector> {
        if self.oversized.is_empty() {
            return Cow::Borrowed(&self.sent);
        }
        let mut cursor = self.sent.clone();
        for actor in self.oversized.keys() {
            cursor.set(*actor, u64::MAX);
        }
        Cow::Owned(cursor)
    }

    /// Leaves `change`'s actor out of this session: the change is `size` bytes, more than
    /// the peer accepts in a frame. Counted and logged naming the change; the next session
    /// tries again (the peer's limit may have been raised).
    fn leave_out(&mut self, change: &Change, size: usize) {
        let too_large = ChangeTooLarge {
            actor: change.actor,
            seq: change.seq,
            size,
            max: self.link.peer_max.saturating_sub(PAGE_FRAME_OVERHEAD),
        };
        tracing::warn!(actor = %change.actor, seq = change.seq, "sync: {too_large}");
        self.stats.change_too_large(&too_large);
        self.oversized.insert(change.actor, change.seq);
    }

    /// Leaves `change`'s actor out of this session: the peer lacks `feature` to take it
    /// ([`needs_upgrade`](Self::needs_upgrade)). Counted and logged naming the change; the
    /// next session tries again (the peer may have been upgraded).
    fn hold_for_upgrade(&mut self, change: &Change, feature: &'static str) {
        let held = ChangeNeedsUpgrade {
            actor: change.actor,
            seq: change.seq,
            feature,
        };
        tracing::warn!(actor = %change.actor, seq = change.seq, "sync: {held}");
        self.stats.change_needs_upgrade(&held);
        self.oversized.insert(change.actor, change.seq);
    }

    /// The feature the peer lacks to take `c`, if any: the body hash of a wholly pruned
    /// change, or a log run (the stores serve a run only where it reaches below what the
    /// peer holds).
    fn needs_upgrade(&self, c: &Change) -> Option<&'static str> {
        if !self.peer.takes_pruned_body && needs_pruned_body(c) {
            return Some(super::FEATURE_PRUNED_BODY);
        }
        let run = c.seal.as_ref().is_some_and(|s| s.run_from.is_some());
        (!self.peer.takes_log_runs && run).then_some(super::FEATURE_LOG_RUNS)
    }

    /// Handles one frame; `Some` when the peer ended the session.
    async fn on_frame(
        &mut self,
        frame: Frame,
        prechecked: Prechecked,
    ) -> Result<Option<SessionEnd>, ProtocolError> {
        match frame {
            Frame::Page {
                page_id,
                changes,
                anchors,
            } => {
                let mut holds = VersionVector::new();
                note(&mut holds, &changes);
                // Changes stamped too far ahead are held back per actor; the rest is one
                // call, one transaction: any other bad change refuses the whole page.
                let changes = screen_page(self.store, self.stats, self.origin.as_ref(), changes);
                let changes = screen_forks(
                    self.store,
                    self.stats,
                    self.peer,
                    &mut self.forked,
                    changes,
                    &anchors,
                )
                .await?;
                let mut page_actors: Vec<ActorId> = changes.iter().map(|c| c.actor).collect();
                page_actors.dedup();
                let outcome = apply_page(self.store, self.stats, changes, prechecked).await?;
                if outcome.applied > 0 {
                    note_origins(self.store, self.peer, &page_actors).await;
                }
                self.stats.page_received(outcome.applied, outcome.skipped);
                self.known.merge(&holds);
                self.sent.merge(&holds);
                self.stats.their_vector(&self.known);
                // What we hold of the page's actors (not our whole vector, which may name
                // more actors than one frame of the peer's holds).
                let actors: Vec<ActorId> = holds.iter().map(|(a, _)| a).collect();
                let vector = vector_within(
                    self.store.version_vector_of(&actors).await?,
                    self.link.peer_max,
                );
                self.link
                    .send(&Frame::Ack(Ack {
                        page_id,
                        applied: outcome.applied as u64,
                        skipped: outcome.skipped as u64,
                        vector,
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

/// Most bytes the `anchors` key and its array header add to a page frame.
const ANCHORS_FIELD_BYTES: usize = 16;

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
pub(super) fn screen_page<S: SyncStore>(
    store: &S,
    stats: &SessionStats,
    origin: Option<&super::DeviceOrigin>,
    changes: Vec<Change>,
) -> Vec<Change> {
    let changes = match origin {
        Some(origin) => {
            let (own, foreign) = super::quarantine::screen_origin(changes, origin);
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

/// Applies a screened page: each change's signature and chain link are checked by the
/// writer; an actor whose change fails is refused (counted, logged naming actor and seq,
/// `last_refusal`) and its later changes wait, while the other actors' changes apply.
pub(super) async fn apply_page<S: SyncStore>(
    store: &S,
    stats: &SessionStats,
    changes: Vec<Change>,
    prechecked: Prechecked,
) -> Result<crate::ApplyOutcome, ProtocolError> {
    let (outcome, report) = store.apply_remote_verified(changes, prechecked).await?;
    for r in &report.refused {
        tracing::warn!(actor = %r.actor, seq = r.seq, reason = r.fault.code(), "sync: {r}");
    }
    stats.chain_checked(&report);
    Ok(outcome)
}

/// The changes of a received page that do not fork an actor's history (see
/// [`SyncStore::find_forks`]): an actor whose change from `peer` contradicts the store's copy of
/// the same `(actor, seq)` goes into `forked`, is reported (counted, logged as an error naming
/// this peer and the actor), and none of its changes from this peer are merged while the
/// session lasts — the rest of the page applies.
pub(super) async fn screen_forks<S: SyncStore>(
    store: &S,
    stats: &SessionStats,
    peer: &PeerInfo,
    forked: &mut HashSet<ActorId>,
    mut changes: Vec<Change>,
    anchors: &[Anchor],
) -> Result<Vec<Change>, ProtocolError> {
    changes.retain(|c| !forked.contains(&c.actor));
    let anchors: Vec<(ActorId, u64, crate::Hlc)> = anchors
        .iter()
        .filter(|a| !forked.contains(&a.actor))
        .map(|a| (a.actor, a.seq, a.hlc))
        .collect();
    let forks = store.find_forks(&changes, &anchors).await?;
    if forks.is_empty() {
        return Ok(changes);
    }
    for fork in &forks {
        let report = ActorFork::new(store, peer, fork).await;
        tracing::error!(actor = %fork.actor, seq = fork.seq, "sync: {report}");
        stats.forked(&report);
        forked.insert(fork.actor);
    }
    changes.retain(|c| !forked.contains(&c.actor));
    Ok(changes)
}

/// A fork found on a link, with who is involved, as reported in logs and status.
pub(crate) struct ActorFork {
    fork: Fork,
    peer_name: String,
    peer_actor: ActorId,
    own: bool,
    /// The peer this store first received the actor's changes from, when recorded.
    origin: Option<String>,
}

/// The name a peer is known by in reports and origin records: the name it was let in under
/// (its credential) when we authenticated it, else the name it gave itself.
fn peer_name(peer: &PeerInfo) -> String {
    peer.principal.clone().unwrap_or_else(|| peer.name.clone())
}

/// Records `peer` as the origin of the page's actors not recorded yet (`origins.rs`); a
/// failure costs only the record, never the session.
pub(super) async fn note_origins<S: SyncStore>(store: &S, peer: &PeerInfo, actors: &[ActorId]) {
    if let Err(e) = store.note_origins(actors, &peer_name(peer)).await {
        tracing::warn!(error = %e, "sync: cannot record where actors' changes came from");
    }
}

impl ActorFork {
    async fn new<S: SyncStore>(store: &S, peer: &PeerInfo, fork: &Fork) -> ActorFork {
        let origin = match store.origin_of(fork.actor).await {
            Ok(origin) => origin,
            Err(e) => {
                tracing::warn!(error = %e, "sync: cannot read where actor {}'s changes came from", fork.actor);
                None
            }
        };
        ActorFork {
            fork: fork.clone(),
            peer_name: peer_name(peer),
            peer_actor: peer.actor,
            own: fork.actor == ChangeLog::actor(store),
            origin,
        }
    }
}

impl std::fmt::Display for ActorFork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (actor, peer) = (self.fork.actor, &self.peer_name);
        let who = match (&self.origin, self.own) {
            (_, true) => format!(
                "this store and another one that peer {peer:?} relays both write as this store's own actor {actor}"
            ),
            (Some(origin), false) if origin == peer => format!(
                "two stores both sending as peer {peer:?} write as {actor} (the copy this store holds came from {origin:?} earlier; one credential used by two devices?)"
            ),
            (Some(origin), false) if actor == self.peer_actor => format!(
                "peer {peer:?} (actor {actor}) and peer {origin:?}, from which this store first received actor {actor}'s changes, both write as {actor}"
            ),
            (Some(origin), false) => format!(
                "the store whose actor {actor} changes reach here through peer {peer:?} and the one whose changes came first through peer {origin:?} both write as {actor}"
            ),
            (None, false) if actor == self.peer_actor => format!(
                "peer {peer:?} (actor {actor}) and the store this one first received actor {actor} from (not recorded: received before this release) both write as {actor}"
            ),
            (None, false) => format!(
                "the store that sent actor {actor}'s changes to peer {peer:?} and the one that sent them here both write as {actor}"
            ),
        };
        write!(
            f,
            "{}: {who} — a cloned SD card or a backup restored on a second device; actor {actor} \
             is no longer merged from peer {peer:?}. Stop the copy and run `kdelta rekey` on it",
            self.fork
        )
    }
}

/// Whether `c` travels with the body hash of a body retention pruned wholly.
fn needs_pruned_body(c: &Change) -> bool {
    c.seal
        .as_ref()
        .is_some_and(|s| s.needs_pruned_body(&c.body))
}
