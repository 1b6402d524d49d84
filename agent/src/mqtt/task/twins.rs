//! Twins over MQTT: `<prefix>/<device>/twin/<key>/patch` applies a patch (a JSON Merge Patch
//! object, or `{"ops": [...]}`; a merge patch on a missing twin creates it), the outcome goes
//! to `…/twin/<key>/result`, and the merged document is published retained on
//! `…/twin/<key>` after every change, local or synced (the change log drives it, like the
//! readings), and for every twin after each (re)connect.

use kdelta_sync::{StoreError, TwinPatch};
use serde_json::{Value, json};

use super::super::MqttError;
use super::{Control, Runner};

/// Most twins republished after a (re)connect.
const REPUBLISH_MAX: usize = 1000;

impl Runner {
    /// Queues the retained state of twin `key`.
    pub(super) async fn publish_twin(&mut self, key: &str) -> Result<(), MqttError> {
        let Some(t) = self.store.twin(key).await? else {
            return Ok(());
        };
        self.control.push_back(Control {
            topic: self.topics.twin(key),
            payload: serde_json::to_vec(&t.value).unwrap_or_default(),
            retain: true,
        });
        Ok(())
    }

    /// Queues the retained state of every twin (at most [`REPUBLISH_MAX`]).
    pub(super) async fn publish_all_twins(&mut self) -> Result<(), MqttError> {
        let mut after: Option<String> = None;
        let mut n = 0;
        while n < REPUBLISH_MAX {
            let keys = self.store.twin_keys("", 256, after.as_deref()).await?;
            let Some(last) = keys.last().cloned() else {
                break;
            };
            for key in keys {
                self.publish_twin(&key).await?;
                n += 1;
            }
            after = Some(last);
        }
        Ok(())
    }

    /// `twin/<key>/patch`: applies the payload; the outcome goes to `twin/<key>/result`.
    pub(super) async fn twin_command(
        &mut self,
        key: &str,
        topic: &str,
        payload: &[u8],
    ) -> Result<(), MqttError> {
        let outcome = match serde_json::from_slice::<Value>(payload) {
            Err(e) => Err((
                "malformed_body".to_owned(),
                format!("the payload is not JSON: {e}"),
            )),
            Ok(body) => match self.apply_twin_patch(key, body).await {
                Ok(w) => Ok(w),
                Err(StoreError::Closed) => return Err(MqttError::Store(StoreError::Closed)),
                Err(e) => Err((e.code().to_owned(), e.to_string())),
            },
        };
        let result = match outcome {
            Ok(w) => {
                self.deps.metrics.mqtt_command("ok");
                json!({"key": key, "ok": true, "changed": w.change.is_some(),
                       "hlc": w.change.map(|c| c.hlc.to_string())})
            }
            Err((code, message)) => {
                self.deps.metrics.mqtt_command("error");
                self.bad_payload("twin patch", topic, &message);
                json!({"key": key, "ok": false, "error": {"code": code, "message": message}})
            }
        };
        self.control.push_back(Control {
            topic: self.topics.twin_result(key),
            payload: serde_json::to_vec(&result).unwrap_or_default(),
            retain: false,
        });
        Ok(())
    }

    async fn apply_twin_patch(
        &self,
        key: &str,
        body: Value,
    ) -> Result<kdelta_sync::TwinWrite, StoreError> {
        let store = &self.store;
        match TwinPatch::from_json(key, body)? {
            TwinPatch::Merge(v) if store.twin(key).await?.is_none() => {
                match store.twin_create(key, Some(v.clone())).await {
                    // Created meanwhile (by sync or the API): patch it instead.
                    Err(StoreError::TwinExists(_)) => {
                        store.twin_patch(key, TwinPatch::Merge(v)).await
                    }
                    other => other,
                }
            }
            patch => store.twin_patch(key, patch).await,
        }
    }
}
