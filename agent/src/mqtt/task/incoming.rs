//! What arrives by subscription: readings on the ingest topics and through the ingest rules
//! (buffered and committed in batches), and document commands. A payload that cannot be read
//! is counted, logged with its topic and dropped; only a closed store stops the task.
//!
//! Acknowledged means durable: a message whose readings are buffered is acknowledged (by the
//! task, `task.rs`) only after their batch is committed. A commit that fails for a transient
//! reason (busy, I/O, a full disk) is retried with backoff — the task stops reading the
//! connection meanwhile, so the broker holds further messages (backpressure) — and a batch
//! the store refuses for good is counted and logged (`IngestRejected`), never dropped
//! silently. A bad reading is counted per reason in MQTT ingest's row of `GET /v1/sources`
//! (`kdelta sources`), which also shows what was stored.
//!
//! While the wall clock is not trusted, readings the agent stamped (no `ts`, or one near the
//! local clock) are committed with a timing record, like the sources' (`sample_timing.rs`),
//! so they are corrected once a trusted time is known; a batch holds one timing only.

use std::time::{Duration, Instant};

use kdelta_sync::{ReadingTiming, StoreError};

use super::super::MqttError;
use super::super::payload::{self, BadPayload, Reading};
use super::super::topics::render;
use super::{Control, Runner, SOURCE};
use crate::internal_events::{
    IngestCommitted, IngestRejected, InternalEvent, MqttBadPayload, MqttCommand,
};
use crate::sample_timing::{SampleTimer, same_timing};
use crate::sources::SourceStatus;

/// First wait before retrying a commit that failed for a transient reason (doubling).
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// Messages waiting for their batch's commit before it is committed early: brokers deliver
/// only a few unacknowledged QoS 1 messages at a time (Mosquitto: 20), so holding more would
/// stall delivery until the batch's age runs out.
pub(super) const MAX_UNACKED_MESSAGES: usize = 16;
/// Longest wait between commit retries.
const RETRY_MAX: Duration = Duration::from_secs(5);

impl Runner {
    /// Handles one received message. `Ok(true)`: some of its readings wait in the ingest
    /// batch (acknowledge after the commit); `Ok(false)`: it is fully handled.
    pub(super) async fn on_message(
        &mut self,
        topic: &str,
        payload: &[u8],
    ) -> Result<bool, MqttError> {
        if self.cfg.discovery && topic == self.topics.ha_status() {
            if payload == b"online" {
                tracing::info!("Home Assistant is online: republishing discovery");
                self.announce_all().await?;
            }
            return Ok(false);
        }
        if let Some(series) = self.topics.ingest_series(topic) {
            if self.cfg.ingest {
                let now = crate::time::now_ms();
                match payload::decode_ingest(series, payload, now) {
                    Ok(ingested) => {
                        // Each refused element is counted; the rest of the array is kept.
                        for (i, why) in &ingested.refused {
                            self.bad_reading("ingest", topic, why, &format!("element {i}: "));
                        }
                        if !ingested.readings.is_empty() {
                            self.add_readings(ingested.readings, now).await?;
                            return Ok(true);
                        }
                    }
                    Err(e) => self.bad_reading("ingest", topic, &e, ""),
                }
            }
            return Ok(false);
        }
        if let Some(key) = self.topics.twin_patch_key(topic) {
            if self.cfg.commands {
                let key = key.to_owned();
                self.twin_command(&key, topic, payload).await?;
            }
            return Ok(false);
        }
        if let Some(key) = self.topics.docs_set_key(topic) {
            if self.cfg.commands {
                let key = key.to_owned();
                self.command(&key, topic, payload).await?;
            }
            return Ok(false);
        }
        if self.topics.is_own(topic) {
            return Ok(false);
        }
        // Every matching rule applies: one Zigbee2MQTT payload can feed several series.
        let now = crate::time::now_ms();
        let mut readings = Vec::new();
        for (filter, rule) in &self.rules {
            let Some(caps) = filter.captures(topic) else {
                continue;
            };
            let series = render(&rule.series, topic, &caps);
            match payload::decode_rule(rule, &series, payload, now) {
                Ok(r) => readings.push(r),
                Err(e) => self.bad_reading("rule", topic, &e, ""),
            }
        }
        if readings.is_empty() {
            return Ok(false);
        }
        self.add_readings(readings, now).await?;
        Ok(true)
    }

    /// A payload that is not a reading (a document or twin command): logged and counted.
    pub(super) fn bad_payload(&self, kind: &str, topic: &str, why: &str) {
        MqttBadPayload {
            kind,
            topic,
            why,
            reason: None,
        }
        .emit(&self.deps.metrics);
    }

    /// A reading (or a message of readings) that cannot be stored: logged, counted per
    /// reason, and shown as the last error of MQTT ingest's row.
    fn bad_reading(&self, kind: &str, topic: &str, why: &BadPayload, context: &str) {
        let why_text = format!("{context}{why}");
        MqttBadPayload {
            kind,
            topic,
            why: &why_text,
            reason: Some(why.reason),
        }
        .emit(&self.deps.metrics);
        self.ingest_status(|s| s.last_error = Some(format!("{topic}: {why_text}")));
    }

    /// Updates MQTT ingest's row of `GET /v1/sources`.
    pub(super) fn ingest_status(&self, update: impl FnOnce(&mut SourceStatus)) {
        let mut row = self
            .deps
            .mqtt_ingest
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(status) = row.as_mut() {
            update(status);
        }
    }

    /// Buffers `readings`, received when the wall clock read `now`. While the clock is not
    /// trusted, those it stamped get a timing record; a change of timing starts a new batch.
    async fn add_readings(&mut self, readings: Vec<Reading>, now: i64) -> Result<(), MqttError> {
        let timing = self.timer.timing_now();
        for r in readings {
            let timed: Option<ReadingTiming> =
                timing.filter(|_| SampleTimer::locally_timed(r.ts, now));
            if !self.ingest.is_empty() && !same_timing(self.ingest_timing, timed) {
                // One timing record per batch: it must describe every reading in it.
                self.flush_ingest().await?;
            }
            if self.ingest_keys.contains(&(r.series.clone(), r.ts)) {
                // Two readings of one series at one time would refuse the whole batch.
                self.flush_ingest().await?;
            }
            if self.ingest.is_empty() {
                self.ingest_timing = timed;
            }
            self.ingest
                .push(&r.series, r.ts, r.value, r.unit.as_deref());
            self.ingest_keys.insert((r.series, r.ts));
            self.ingest_since.get_or_insert_with(Instant::now);
            if self.ingest.len() >= self.cfg.ingest_batch_max_readings {
                self.flush_ingest().await?;
            }
        }
        Ok(())
    }

    /// Commits the buffered readings, then queues the acknowledgements of the messages that
    /// carried them. Transient store errors are retried with backoff until the commit
    /// succeeds or the task stops (then nothing is acknowledged: the broker redelivers).
    pub(super) async fn flush_ingest(&mut self) -> Result<(), MqttError> {
        self.ingest_since = None;
        self.ingest_keys.clear();
        let timing = self.ingest_timing.take();
        let carried = std::mem::take(&mut self.uncommitted);
        if self.ingest.is_empty() {
            self.acks.extend(carried);
            return Ok(());
        }
        let mut batch = std::mem::take(&mut self.ingest);
        batch.timing = timing;
        let n = batch.len() as u64;
        let started = Instant::now();
        let mut wait = RETRY_FIRST;
        loop {
            // Several changes when one would be too large: no reading is lost to the size limit.
            match self.store.append_in_parts(batch.clone()).await {
                Ok(_) => {
                    IngestCommitted {
                        source: SOURCE,
                        readings: n,
                        batches: 1,
                        seconds: started.elapsed().as_secs_f64(),
                    }
                    .emit(&self.deps.metrics);
                    self.ingest_status(|s| {
                        s.readings += n;
                        s.last_reading_ms = Some(crate::time::now_ms());
                        s.last_error = None;
                    });
                    self.acks.extend(carried);
                    return Ok(());
                }
                Err(StoreError::Closed) => return Err(MqttError::Store(StoreError::Closed)),
                Err(e) if e.is_transient() && !self.cancel.is_cancelled() => {
                    if wait == RETRY_FIRST {
                        tracing::warn!(
                            readings = n,
                            error = %e,
                            "MQTT: committing received readings failed; retrying (their messages stay unacknowledged)"
                        );
                    }
                    tokio::select! {
                        _ = self.cancel.cancelled() => {}
                        _ = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(RETRY_MAX);
                }
                Err(e) => {
                    IngestRejected {
                        source: SOURCE,
                        code: e.code(),
                        readings: Some(n),
                        error: Some(&e),
                    }
                    .emit(&self.deps.metrics);
                    self.ingest_status(|s| {
                        s.errors += 1;
                        s.last_error = Some(format!("{n} readings refused by the store: {e}"));
                    });
                    if !e.is_transient() {
                        // Refused for good (counted and logged above): redelivery would be
                        // refused again, so the messages are acknowledged as handled.
                        self.acks.extend(carried);
                    }
                    return Ok(());
                }
            }
        }
    }

    /// `docs/set/<key>`: puts the JSON body; the outcome goes to `docs/result`.
    async fn command(&mut self, key: &str, topic: &str, payload: &[u8]) -> Result<(), MqttError> {
        let result = match serde_json::from_slice::<serde_json::Value>(payload) {
            Err(e) => {
                self.bad_payload("command", topic, &format!("not JSON: {e}"));
                serde_json::json!({"key": key, "ok": false, "error": {"code": "malformed_body", "message": format!("the body is not JSON: {e}")}})
            }
            Ok(value) => match self.store.doc_put(key, &value).await {
                Ok(v) => {
                    MqttCommand {
                        topic,
                        refused: None,
                    }
                    .emit(&self.deps.metrics);
                    serde_json::json!({"key": key, "ok": true, "actor": v.actor.to_string(), "seq": v.seq, "hlc": v.hlc.to_string()})
                }
                Err(StoreError::Closed) => return Err(MqttError::Store(StoreError::Closed)),
                Err(e) => {
                    MqttCommand {
                        topic,
                        refused: Some(&e),
                    }
                    .emit(&self.deps.metrics);
                    serde_json::json!({"key": key, "ok": false, "error": {"code": e.code(), "message": e.to_string()}})
                }
            },
        };
        self.control.push_back(Control {
            topic: self.topics.docs_result(),
            payload: serde_json::to_vec(&result).unwrap_or_default(),
            retain: false,
        });
        Ok(())
    }
}
