//! MQTT client events: a received payload dropped, a document command served or refused.

use super::InternalEvent;
use crate::metrics::Metrics;

/// A received payload that could not be used, dropped (the client keeps running).
#[derive(Debug, Clone, Copy)]
pub struct MqttBadPayload<'a> {
    /// What it was meant to be (`ingest`, `rule`, `command`, …): the metric's `kind` label.
    pub kind: &'a str,
    /// The topic it came on.
    pub topic: &'a str,
    /// What is wrong with it.
    pub why: &'a str,
    /// For readings (`ingest`, `rule`): the reason the reading is counted under as a
    /// rejected reading of the `mqtt` source (`GET /v1/sources`, `kdelta sources`); a
    /// message that cannot be read at all counts once.
    pub reason: Option<&'a str>,
}

impl InternalEvent for MqttBadPayload<'_> {
    fn emit(self, metrics: &Metrics) {
        tracing::warn!(
            topic = self.topic,
            "MQTT: dropped a bad {} payload: {}",
            self.kind,
            self.why
        );
        metrics.mqtt_bad_payload(self.kind);
        if let Some(reason) = self.reason {
            // `mqtt`: MQTT ingest's `source` label, and its row's name in `/v1/sources`.
            metrics.rejected_readings("mqtt", reason, 1);
        }
    }
}

/// A `docs/set/<key>` command served (`refused: None`) or refused by the store.
#[derive(Clone, Copy)]
pub struct MqttCommand<'a> {
    /// The topic it came on.
    pub topic: &'a str,
    /// The store's refusal, if any.
    pub refused: Option<&'a dyn std::fmt::Display>,
}

impl InternalEvent for MqttCommand<'_> {
    fn emit(self, metrics: &Metrics) {
        match self.refused {
            None => metrics.mqtt_command("ok"),
            Some(e) => {
                tracing::warn!(topic = self.topic, "MQTT: document command refused: {e}");
                metrics.mqtt_command("error");
            }
        }
    }
}
