//! The MQTT task: publishes the outbox, keeps availability and discovery up to date, and
//! handles what arrives (ingest, ingest rules, document commands). It owns no socket: the
//! connection lives in [`link`](super::link) and reports through a bounded channel; this task
//! submits with non-blocking `try_*` calls only and waits for the next event when rumqttc's
//! queue is full (backpressure, never an unbounded buffer).
//!
//! Memory stays flat during a broker outage of any length: while disconnected nothing is read
//! from the store; after the reconnect the log is re-read from the cursor a few changes at a
//! time.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kdelta_sync::{Change, ChangeBody, ReadingBatch, ReadingTiming};
use rumqttc::{AsyncClient, ClientError, QoS, Request};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::config::{MqttConfig, PublishFormat};
use super::cursor::OutboxCursor;
use super::link::{LinkEvent, LinkSettings, link_loop};
use super::outbox::{Acked, CursorState, Outbox};
use super::payload::{self, BatchMessage, BatchSeries};
use super::topics::{TopicFilter, Topics};
use super::{MqttError, discovery};

mod incoming;
mod twins;
use crate::backend::{Backend, LogWakeups};
use crate::sample_timing::SampleTimer;
use crate::sources::SourceStatus;
use crate::state::Agent;

/// Changes read from the log per page.
const PAGE_CHANGES: usize = 16;
/// How often the cursor is written while it moves (and at shutdown).
const PERSIST_EVERY: Duration = Duration::from_secs(1);
/// Label of MQTT ingest in the `source` metric label.
const SOURCE: &str = "mqtt";

/// One message the outbox will publish (`readings == 0`: a change with nothing to publish).
struct OutMsg {
    log_id: i64,
    last_of_change: bool,
    topic: String,
    payload: Vec<u8>,
    readings: u32,
}

/// A publish that is not part of the outbox (status, discovery, command results).
struct Control {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
}

struct Runner {
    cfg: MqttConfig,
    deps: Agent,
    /// The agent's store: SQLite, or a hub replica's PostgreSQL database (where one replica
    /// at a time runs this task: `mqtt/lease.rs`).
    store: Backend,
    topics: Topics,
    qos: QoS,
    rules: Vec<(TopicFilter, super::IngestRule)>,
    link: Option<(u64, AsyncClient)>,
    ever_connected: bool,
    outbox: Outbox,
    cursor: OutboxCursor,
    persisted: CursorState,
    persisted_at: Instant,
    /// `sent` of the cursor file at start: messages up to here may be duplicates.
    resend_through: i64,
    /// Messages of changes up to here are built (in `pending` or submitted).
    fetched: i64,
    pending: VecDeque<OutMsg>,
    log_drained: bool,
    control: VecDeque<Control>,
    announced: HashSet<String>,
    ingest: ReadingBatch,
    /// How the readings in `ingest` were timed (one timing per batch; `None`: by a trusted
    /// clock, or by their sender).
    ingest_timing: Option<ReadingTiming>,
    /// Times readings received while the wall clock is not trusted.
    timer: Arc<SampleTimer>,
    ingest_keys: HashSet<(String, i64)>,
    ingest_since: Option<Instant>,
    /// Received messages (with their connection generation) whose readings wait in `ingest`:
    /// acknowledged once that batch is committed.
    uncommitted: Vec<(u64, rumqttc::Publish)>,
    /// Handled messages whose PUBACK is still to be submitted.
    acks: VecDeque<(u64, rumqttc::Publish)>,
    /// The task's stop signal (a commit retry waits on it).
    cancel: CancellationToken,
}

/// Runs the MQTT client until `cancel`: connects (and reconnects) to the broker, publishes
/// every new reading from the durable outbox, and serves ingest and commands. Returns an
/// error for a bad configuration, an unusable cursor file or a closed store.
pub async fn run(cfg: MqttConfig, deps: Agent, cancel: CancellationToken) -> Result<(), MqttError> {
    cfg.validate()?;
    let topics = Topics::new(&cfg.prefix, &deps.device, &cfg.discovery_prefix);
    let settings = LinkSettings::new(&cfg, &deps.device, &topics.status())?;
    let store = deps.backend.clone();
    let cursor = OutboxCursor::of(&store, &deps.data_dir);
    // Subscribe before reading the log's end so no change falls between the two.
    let changes = store.log_wakeups().await?;
    let state = match cursor.load().await? {
        Some(s) => {
            let end = log_end(&store).await?;
            match s.beyond(end) {
                Some(reset) => {
                    tracing::warn!(
                        cursor = s.acked,
                        log_end = end,
                        cursor_at = %cursor.describe(),
                        "MQTT outbox cursor is beyond the end of the change log (restored or \
                         replaced store); reset to the end so no new change is skipped"
                    );
                    cursor.store(reset).await?;
                    reset
                }
                None => s,
            }
        }
        None => {
            let start = if cfg.backfill {
                0
            } else {
                log_end(&store).await?
            };
            let s = CursorState {
                acked: start,
                sent: start,
            };
            cursor.store(s).await?;
            s
        }
    };
    let rules: Vec<(TopicFilter, super::IngestRule)> = cfg
        .ingest_rules
        .iter()
        .filter_map(|r| TopicFilter::parse(&r.topic).ok().map(|f| (f, r.clone())))
        .collect();
    let qos = if cfg.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    tracing::info!(
        url = %cfg.url,
        topics = %topics.base,
        cursor = state.acked,
        "MQTT enabled; publishing readings after log position {}",
        state.acked
    );
    // MQTT ingest's row in `GET /v1/sources`, counted from zero by this client.
    let ingests = cfg.ingest || !rules.is_empty();
    *deps
        .mqtt_ingest
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = ingests.then(|| SourceStatus {
        name: SOURCE.into(),
        kind: SOURCE.into(),
        ..SourceStatus::default()
    });
    let mut runner = Runner {
        qos,
        rules,
        link: None,
        ever_connected: false,
        outbox: Outbox::new(state.acked),
        cursor,
        persisted: state,
        persisted_at: Instant::now(),
        resend_through: state.sent,
        fetched: state.acked,
        pending: VecDeque::new(),
        log_drained: false,
        control: VecDeque::new(),
        announced: HashSet::new(),
        ingest: ReadingBatch::new(),
        ingest_timing: None,
        timer: SampleTimer::new(store.time_reference()),
        ingest_keys: HashSet::new(),
        ingest_since: None,
        uncommitted: Vec::new(),
        acks: VecDeque::new(),
        cancel: cancel.clone(),
        topics,
        cfg,
        deps,
        store,
    };
    let (tx, rx) = mpsc::channel(1024);
    let stop = CancellationToken::new();
    let link = tokio::spawn(link_loop(settings, tx, stop.clone()));
    let result = runner.main_loop(rx, changes, &cancel, &stop).await;
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(1), link).await;
    runner.persist(true).await;
    result
}

/// The log position of the newest change (0 for an empty store).
async fn log_end(store: &Backend) -> Result<i64, MqttError> {
    Ok(store.log_end().await?)
}

impl Runner {
    async fn main_loop(
        &mut self,
        mut events: mpsc::Receiver<LinkEvent>,
        mut changes: LogWakeups,
        cancel: &CancellationToken,
        stop: &CancellationToken,
    ) -> Result<(), MqttError> {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u64;
        loop {
            self.pump().await?;
            tokio::select! {
                _ = cancel.cancelled() => break,
                ev = events.recv() => match ev {
                    Some(ev) => self.on_event(ev).await?,
                    None => return Ok(()),
                },
                ev = changes.next() => {
                    ev?;
                    self.log_drained = false;
                }
                _ = tick.tick() => {
                    ticks += 1;
                    let second = ticks.is_multiple_of(10);
                    if second {
                        // A safety net: re-check the log even without a wake-up.
                        self.log_drained = false;
                    }
                    self.on_tick(second).await?;
                }
            }
        }
        self.shutdown(&mut events, stop).await
    }

    /// Submits control messages, then outbox messages up to the in-flight window, while
    /// connected and rumqttc accepts requests.
    async fn pump(&mut self) -> Result<(), MqttError> {
        loop {
            if !self.send_acks() {
                return Ok(());
            }
            let Some((_, client)) = &self.link else {
                return Ok(());
            };
            while let Some(c) = self.control.pop_front() {
                match client.try_publish(c.topic, QoS::AtLeastOnce, c.retain, c.payload) {
                    Ok(()) => self.outbox.submit_other(),
                    Err(e) => {
                        if let Some(p) = requeue(e) {
                            self.control.push_front(Control {
                                topic: p.topic,
                                payload: p.payload.to_vec(),
                                retain: p.retain,
                            });
                        }
                        return Ok(());
                    }
                }
            }
            if self.outbox.in_flight() >= self.cfg.inflight {
                return Ok(());
            }
            let Some(msg) = self.pending.pop_front() else {
                if self.log_drained {
                    return Ok(());
                }
                self.fetch().await?;
                if self.pending.is_empty() {
                    self.log_drained = true;
                    return Ok(());
                }
                continue;
            };
            if msg.readings == 0 {
                self.outbox.skip(msg.log_id);
                continue;
            }
            let retain =
                self.cfg.retain_latest && self.cfg.publish_format == PublishFormat::PerSeries;
            match client.try_publish(msg.topic, self.qos, retain, msg.payload) {
                Ok(()) => {
                    self.outbox
                        .submit(msg.log_id, msg.last_of_change, msg.readings);
                    self.deps.metrics.mqtt_published(1);
                    if msg.log_id <= self.resend_through {
                        self.deps.metrics.mqtt_duplicates("restart", 1);
                    }
                }
                Err(e) => {
                    if let Some(p) = requeue(e) {
                        self.pending.push_front(OutMsg {
                            topic: p.topic,
                            payload: p.payload.to_vec(),
                            ..msg
                        });
                    } else {
                        tracing::error!("MQTT: dropped a message with an invalid topic");
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Submits the acknowledgements of handled messages on the current connection. `false`
    /// when not connected or rumqttc's request queue is full (the next event makes room).
    fn send_acks(&mut self) -> bool {
        let Some((generation, client)) = &self.link else {
            return false;
        };
        while let Some((acked_on, publish)) = self.acks.front() {
            // A message of an earlier connection cannot be acknowledged any more: the broker
            // redelivers it (persistent session) or dropped it with the session (clean).
            if acked_on == generation && client.try_ack(publish).is_err() {
                return false;
            }
            self.acks.pop_front();
        }
        true
    }

    /// Reads the next page of the change log into `pending` (and discovery into `control`).
    async fn fetch(&mut self) -> Result<(), MqttError> {
        let page = self.store.log_after(self.fetched, PAGE_CHANGES).await?;
        let Some(&(last, _)) = page.last() else {
            return Ok(());
        };
        if last > self.persisted.sent {
            // Recorded before sending, so a crash later counts these as possible duplicates.
            self.persisted.sent = last;
            self.persist(true).await;
        }
        let mut twins = Vec::new();
        for (id, change) in page {
            self.fetched = id;
            self.build(id, &change);
            if let ChangeBody::Twin(t) = change.body
                && !twins.contains(&t.key)
            {
                twins.push(t.key);
            }
        }
        for key in twins {
            self.publish_twin(&key).await?;
        }
        Ok(())
    }

    fn build(&mut self, log_id: i64, change: &Change) {
        let before = self.pending.len();
        let own = change.actor == self.store.actor();
        if let ChangeBody::Readings(batch) = &change.body
            && (own || self.cfg.publish_remote)
        {
            match self.cfg.publish_format {
                PublishFormat::PerSeries => {
                    for s in &batch.series {
                        self.announce(&s.name, s.unit.as_deref());
                        let topic = self.topics.series(&s.name);
                        for (ts, v) in s.ts.iter().zip(&s.values) {
                            self.pending.push_back(OutMsg {
                                log_id,
                                last_of_change: false,
                                topic: topic.clone(),
                                payload: payload::reading_json(*ts, *v, s.unit.as_deref()),
                                readings: 1,
                            });
                        }
                    }
                }
                PublishFormat::Batch => self.build_batches(log_id, change, batch),
            }
        }
        let added = self.pending.len() > before;
        match self.pending.back_mut() {
            Some(m) if added => m.last_of_change = true,
            _ => self.pending.push_back(OutMsg {
                log_id,
                last_of_change: true,
                topic: String::new(),
                payload: Vec::new(),
                readings: 0,
            }),
        }
    }

    fn build_batches(&mut self, log_id: i64, change: &Change, batch: &ReadingBatch) {
        let max = self.cfg.batch_max_readings;
        let mut part = 0u32;
        let mut series: Vec<BatchSeries<'_>> = Vec::new();
        let mut n = 0usize;
        let topic = self.topics.batch();
        let emit =
            |series: Vec<BatchSeries<'_>>, n: usize, part: u32, pending: &mut VecDeque<OutMsg>| {
                let msg = BatchMessage {
                    device: self.deps.device.as_str().into(),
                    actor: change.actor.to_string(),
                    seq: change.seq,
                    part,
                    series,
                };
                pending.push_back(OutMsg {
                    log_id,
                    last_of_change: false,
                    topic: topic.clone(),
                    payload: payload::encode_batch(&msg, self.cfg.batch_encoding),
                    readings: n as u32,
                });
            };
        for s in &batch.series {
            let mut from = 0;
            while from < s.ts.len() {
                let take = (max - n).min(s.ts.len() - from);
                series.push(BatchSeries {
                    name: s.name.as_str().into(),
                    unit: s.unit.as_deref().map(Into::into),
                    ts: s.ts[from..from + take].into(),
                    values: s.values[from..from + take].into(),
                });
                n += take;
                from += take;
                if n == max {
                    emit(std::mem::take(&mut series), n, part, &mut self.pending);
                    part += 1;
                    n = 0;
                }
            }
        }
        if n > 0 {
            emit(series, n, part, &mut self.pending);
        }
    }

    /// Queues the discovery config of a series not yet announced on this connection.
    fn announce(&mut self, series: &str, unit: Option<&str>) {
        if !self.cfg.discovery
            || self.cfg.publish_format != PublishFormat::PerSeries
            || self.announced.contains(series)
        {
            return;
        }
        self.announced.insert(series.to_owned());
        let cfg = discovery::config(&self.topics, &self.deps.device, series, unit);
        self.control.push_back(Control {
            topic: self.topics.discovery(series),
            payload: serde_json::to_vec(&cfg).unwrap_or_default(),
            retain: true,
        });
    }

    async fn announce_all(&mut self) -> Result<(), MqttError> {
        self.announced.clear();
        for s in self.store.series().await? {
            self.announce(&s.name, s.unit.as_deref());
        }
        Ok(())
    }

    async fn on_event(&mut self, ev: LinkEvent) -> Result<(), MqttError> {
        let current = self.link.as_ref().map(|(g, _)| *g);
        match ev {
            LinkEvent::Connected { generation, client } => {
                self.restart_outbox();
                if self.ever_connected {
                    self.deps.metrics.mqtt_reconnected();
                }
                self.ever_connected = true;
                self.deps.metrics.mqtt_connected(true);
                tracing::info!("MQTT connected to {}", self.cfg.url);
                self.subscribe(&client);
                self.link = Some((generation, client));
                self.control.clear();
                self.control.push_back(Control {
                    topic: self.topics.status(),
                    payload: b"online".to_vec(),
                    retain: true,
                });
                self.announce_all().await?;
                self.publish_all_twins().await?;
            }
            LinkEvent::Disconnected { generation, error } if Some(generation) == current => {
                tracing::warn!(
                    "MQTT connection to {} lost: {error}; reconnecting",
                    self.cfg.url
                );
                self.link = None;
                self.deps.metrics.mqtt_connected(false);
                self.restart_outbox();
            }
            LinkEvent::Published { generation, pkid } if Some(generation) == current => {
                let acked = self.outbox.on_outgoing(pkid);
                self.count(acked);
            }
            LinkEvent::PubAck { generation, pkid } if Some(generation) == current => {
                let acked = self.outbox.on_puback(pkid);
                self.count(acked);
            }
            LinkEvent::Message {
                generation,
                publish,
            } => {
                let buffered = self.on_message(&publish.topic, &publish.payload).await?;
                if buffered && !self.ingest.is_empty() {
                    self.uncommitted.push((generation, publish));
                    if self.uncommitted.len() >= incoming::MAX_UNACKED_MESSAGES {
                        self.flush_ingest().await?;
                    }
                } else {
                    // Handled (committed, answered, or refused and counted): acknowledge.
                    self.acks.push_back((generation, publish));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Forgets what was in flight; the log is re-read from the cursor.
    fn restart_outbox(&mut self) {
        let resent = self.outbox.reset();
        if resent > 0 {
            self.deps.metrics.mqtt_duplicates("reconnect", resent);
        }
        self.pending.clear();
        self.fetched = self.outbox.acked();
        self.log_drained = false;
    }

    fn subscribe(&self, client: &AsyncClient) {
        let mut filters = Vec::new();
        if self.cfg.ingest {
            filters.push(self.topics.ingest_filter());
        }
        if self.cfg.commands {
            filters.push(self.topics.docs_set_filter());
            filters.push(self.topics.twin_filter());
        }
        if self.cfg.discovery {
            filters.push(self.topics.ha_status());
        }
        filters.extend(self.rules.iter().map(|(f, _)| f.as_string()));
        if filters.is_empty() {
            return;
        }
        let subs = filters
            .into_iter()
            .map(|f| rumqttc::SubscribeFilter::new(f, QoS::AtLeastOnce));
        if let Err(e) = client.try_subscribe_many(subs) {
            tracing::error!("MQTT: cannot subscribe: {e}");
        }
    }

    fn count(&mut self, acked: Acked) {
        if acked.messages > 0 {
            self.deps.metrics.mqtt_acked(acked.messages, acked.readings);
        }
    }

    /// Flushes ingest that waited long enough, persists the cursor; every `second`, the
    /// outbox lag gauge (changes after the cursor).
    async fn on_tick(&mut self, second: bool) -> Result<(), MqttError> {
        if self
            .ingest_since
            .is_some_and(|t| t.elapsed() >= self.cfg.ingest_batch_max_age)
        {
            self.flush_ingest().await?;
        }
        self.persist(false).await;
        if second {
            // A gauge: a failed count (the database briefly away) keeps its last value
            // rather than stopping the client; publishing reports such errors itself.
            match self.store.log_count_after(self.outbox.acked()).await {
                Ok(lag) => self.deps.metrics.mqtt_outbox_lag(lag),
                Err(e) => tracing::debug!("MQTT: counting the outbox lag failed: {e}"),
            }
        }
        Ok(())
    }

    /// Writes the cursor when it moved (at most every [`PERSIST_EVERY`] unless `now`).
    async fn persist(&mut self, now: bool) {
        let state = CursorState {
            acked: self.outbox.acked(),
            sent: self.persisted.sent.max(self.outbox.acked()),
        };
        let due = now || self.persisted_at.elapsed() >= PERSIST_EVERY;
        if (state == self.persisted && !now) || !due {
            return;
        }
        match self.cursor.store(state).await {
            Ok(()) => {
                self.persisted = state;
                self.persisted_at = Instant::now();
            }
            Err(e) => tracing::error!("MQTT: {e}"),
        }
    }

    async fn shutdown(
        &mut self,
        events: &mut mpsc::Receiver<LinkEvent>,
        stop: &CancellationToken,
    ) -> Result<(), MqttError> {
        self.flush_ingest().await?;
        self.send_acks();
        // Give in-flight messages a moment to be confirmed; the rest is republished next time.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while self.link.is_some() && self.outbox.in_flight() > 0 {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(ev)) => self.on_event(ev).await?,
                _ => break,
            }
        }
        if let Some((_, client)) = self.link.take() {
            let _ = client.try_publish(self.topics.status(), QoS::AtLeastOnce, true, "offline");
            let _ = client.try_disconnect();
            let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
            while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, events.recv()).await {
                if matches!(ev, LinkEvent::Closed) {
                    break;
                }
            }
        }
        stop.cancel();
        self.deps.metrics.mqtt_connected(false);
        Ok(())
    }
}

/// The publish a full (or closed) request channel handed back; `None` for an invalid topic,
/// which no retry can fix.
fn requeue(e: ClientError) -> Option<rumqttc::Publish> {
    match e {
        ClientError::TryRequest(Request::Publish(p))
        | ClientError::Request(Request::Publish(p))
            if rumqttc::valid_topic(&p.topic) =>
        {
            Some(p)
        }
        _ => None,
    }
}
