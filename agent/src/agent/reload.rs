//! [`RunningAgent::reload`]: applies a new configuration from its [`ConfigDiff`] with the
//! running one — the log filter, the sources, `[sync]` (accepted tokens, outbound peers,
//! page size, compression), `[mqtt]` and the API's credentials (`api.tokens`,
//! `api.admin_token_file`, the scopes of `[[sync.accept_certs]]`) change at run time; every
//! other changed setting is named as needing a restart. A part whose new section cannot be used keeps running on its
//! old section, and the error names the problem.

use super::diff::ConfigDiff;
use super::parts::Part;
use super::running::RunningAgent;
use crate::config::Config;

impl RunningAgent {
    /// Applies `new` and logs what was reloaded (the last line is always `reload done: …`).
    /// Returns the diff it acted on.
    pub async fn reload(&mut self, new: Config) -> ConfigDiff {
        let new = new.for_backend(true);
        let diff = ConfigDiff::between(&self.config, &new);
        let mut reloaded = Vec::new();
        let mut needs_restart = diff.needs_restart.clone();
        if diff.log_level {
            if self.reload_log_level(&new) {
                reloaded.push("log.level");
            } else if self.logging.is_none() {
                needs_restart.push("log.level");
            }
        } else if let Some(logging) = &self.logging {
            tracing::info!("log filter is now {}", logging.filter_text);
        }
        // A part that could not take its new section keeps the old one: its change is then
        // listed with those that need a restart, as the running configuration still differs.
        let mut outcome = |part, ok: bool| {
            if ok {
                reloaded.push(part);
            } else {
                needs_restart.push(part);
            }
        };
        if diff.sources {
            outcome("sources", self.reload_sources(&new).await);
        }
        if diff.sync {
            outcome("sync", self.reload_sync(&new, &diff).await);
        }
        if diff.mqtt {
            outcome("mqtt", self.reload_mqtt(&new).await);
        }
        if diff.api_credentials {
            outcome("api credentials", self.reload_api_credentials(&new));
        }
        if !needs_restart.is_empty() {
            tracing::warn!(
                "changed settings need a restart to take effect: {} (log.level, sources, sync, mqtt and api credentials reload without a restart)",
                needs_restart.join(", ")
            );
        }
        // Tests and operators look for this line: the reload is complete.
        if reloaded.is_empty() {
            tracing::info!("reload done: nothing reloaded");
        } else {
            tracing::info!("reload done: reloaded {}", reloaded.join(", "));
        }
        diff
    }

    fn reload_log_level(&mut self, new: &Config) -> bool {
        let Some(logging) = self.logging.as_mut() else {
            return false;
        };
        match logging.reload(&new.log.level) {
            Ok(()) => {
                tracing::info!("log filter is now {}", logging.filter_text);
                self.config.log.level = new.log.level.clone();
                true
            }
            Err(e) => {
                tracing::error!("cannot change the log filter, keeping it: {e}");
                false
            }
        }
    }

    async fn reload_sources(&mut self, new: &Config) -> bool {
        match crate::sources::build(&new.sources) {
            Ok(built) => {
                let n = built.len();
                self.sources.replace(built).await;
                self.config.sources = new.sources.clone();
                tracing::info!("sources reloaded: {n} running");
                self.reapply_device_twin().await;
                true
            }
            Err(e) => {
                tracing::error!("cannot reload the sources, keeping them: {e:#}");
                false
            }
        }
    }

    /// New sources start at their configured intervals: apply the device twin's desired ones
    /// again before the reload counts as done, not at the twin loop's next resync.
    async fn reapply_device_twin(&self) {
        if !self.config.device_twin {
            return;
        }
        let key = crate::device_twin::key(&self.config.device_name);
        let agent = &self.agent;
        let Some(store) = agent.backend.sqlite() else {
            return;
        };
        if let Err(e) = crate::device_twin::reconcile(store, &key, &agent.sources).await {
            tracing::warn!(twin = %key, "device twin: cannot re-apply desired intervals: {e}");
        }
    }

    async fn reload_sync(&mut self, new: &Config, diff: &ConfigDiff) -> bool {
        if let Err(e) = new.sync.check_tls_files() {
            tracing::error!("cannot reload [sync], keeping the running peers: {e:#}");
            return false;
        }
        if let Err(e) = new.sync.check_token_files() {
            tracing::error!("cannot reload [sync], keeping the running peers and tokens: {e}");
            return false;
        }
        let restarted =
            self.agent
                .peers
                .reconfigure(&self.config.sync, &new.sync, &self.config.device_name);
        if diff.sync_auth {
            tracing::info!(
                "sync: accepted tokens changed; inbound sessions restart under the new tokens"
            );
        } else if restarted {
            tracing::info!(
                device_relay = new.sync.device_relay.as_str(),
                "sync: device_relay changed; inbound sessions restart under it"
            );
        }
        if diff.sync_peers {
            self.peers.replace(new.sync.peers.clone()).await;
            tracing::info!("sync peers reloaded: {} configured", new.sync.peers.len());
        }
        self.config.sync = new.sync.clone();
        true
    }

    /// Swaps the API's credential table: a token or certificate removed (or whose scopes
    /// were cut) is refused from its next request on. A token file that cannot be read keeps
    /// the running table, and the error says so.
    fn reload_api_credentials(&mut self, new: &Config) -> bool {
        let table = crate::api::ApiGuard::load_credentials(
            &new.api,
            &new.sync.accept_certs,
            &self.config.api,
        );
        match table {
            Ok(table) => {
                let open = table.is_open();
                self.agent.guard.replace_credentials(table);
                self.config.api.tokens = new.api.tokens.clone();
                self.config.api.admin_token_file = new.api.admin_token_file.clone();
                tracing::info!(
                    tokens = new.api.tokens.len() + usize::from(new.api.admin_token_file.is_some()),
                    certificates = new
                        .sync
                        .accept_certs
                        .iter()
                        .filter(|c| !c.scopes.is_empty())
                        .count(),
                    "API credentials reloaded{}",
                    if open {
                        ": none configured, the API is open (loopback only)"
                    } else {
                        ""
                    }
                );
                true
            }
            Err(e) => {
                tracing::error!(
                    "cannot reload the API credentials, keeping the running ones (fix the file, or restart to apply): {e}"
                );
                false
            }
        }
    }

    async fn reload_mqtt(&mut self, new: &Config) -> bool {
        let check = if new.mqtt.enabled {
            new.mqtt
                .validate()
                .map_err(crate::mqtt::MqttError::from)
                .and_then(|()| crate::mqtt::preflight(&new.mqtt, &self.config.device_name))
        } else {
            Ok(())
        };
        match check {
            Ok(()) => {
                self.mqtt.replace(new.mqtt.clone()).await;
                self.config.mqtt = new.mqtt.clone();
                tracing::info!(
                    "MQTT reloaded: {}",
                    if new.mqtt.enabled {
                        new.mqtt.url.as_str()
                    } else {
                        "off"
                    }
                );
                true
            }
            Err(e) => {
                tracing::error!("cannot reload [mqtt], keeping the running client: {e}");
                false
            }
        }
    }
}
