//! [`ConfigDiff`]: what differs between the running configuration and a newly loaded one,
//! computed once, field by field, so a reload acts on the diff instead of a hand-kept list.
//! It says which reloadable parts changed (the log filter, the sources, `[sync]`, `[mqtt]`,
//! the API's credentials) and names every changed setting that only a restart applies.
//!
//! Pure: no I/O, no logging. Applying the diff is `reload.rs`'s job.

use crate::config::Config;

/// The differences between two configurations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    /// `log.level` changed (the filter reloads).
    pub log_level: bool,
    /// `[[sources]]` changed (the source tasks are rebuilt).
    pub sources: bool,
    /// Anything in `[sync]` changed (its settings are swapped in the peer registry).
    pub sync: bool,
    /// Accepted tokens or certificates changed (inbound sessions restart under the new ones).
    pub sync_auth: bool,
    /// The outbound peers or what their sessions use (`page_bytes`, `compression`) changed:
    /// the outbound sessions are replaced.
    pub sync_peers: bool,
    /// `[mqtt]` changed (the client is replaced, or started, or stopped).
    pub mqtt: bool,
    /// Who may call the API changed: `api.tokens`, `api.admin_token_file` or the
    /// `[[sync.accept_certs]]` entries (their scopes); the credential table is swapped.
    pub api_credentials: bool,
    /// Changed settings that take effect only after a restart, as dotted keys or sections.
    pub needs_restart: Vec<&'static str>,
}

impl ConfigDiff {
    /// What changed from `old` to `new`.
    pub fn between(old: &Config, new: &Config) -> ConfigDiff {
        let mut needs_restart = Vec::new();
        let mut restart_if = |name, differs: bool| {
            if differs {
                needs_restart.push(name);
            }
        };
        restart_if("data_dir", old.data_dir != new.data_dir);
        restart_if("device_name", old.device_name != new.device_name);
        restart_if("device_twin", old.device_twin != new.device_twin);
        // Tokens reload (`api_credentials`); the rest of `[api]` needs a restart.
        let without_tokens = |api: &crate::api::ApiConfig| crate::api::ApiConfig {
            tokens: Vec::new(),
            admin_token_file: None,
            ..api.clone()
        };
        restart_if("api", without_tokens(&old.api) != without_tokens(&new.api));
        restart_if("log.format", old.log.format != new.log.format);
        restart_if("store", old.store != new.store);
        restart_if("ingest", old.ingest != new.ingest);
        restart_if("retention", old.retention != new.retention);
        let (a, b) = (&old.sync, &new.sync);
        ConfigDiff {
            log_level: old.log.level != new.log.level,
            sources: old.sources != new.sources,
            sync: a != b,
            sync_auth: a.accept_tokens != b.accept_tokens || a.accept_certs != b.accept_certs,
            sync_peers: a.peers != b.peers
                || a.page_bytes != b.page_bytes
                || a.max_frame_bytes != b.max_frame_bytes
                || a.compression != b.compression,
            mqtt: old.mqtt != new.mqtt,
            api_credentials: old.api.tokens != new.api.tokens
                || old.api.admin_token_file != new.api.admin_token_file
                || a.accept_certs != b.accept_certs,
            needs_restart,
        }
    }

    /// True when nothing differs.
    pub fn is_empty(&self) -> bool {
        *self == ConfigDiff::default()
    }

    /// The reloadable parts that changed, as the log names them.
    pub fn reloadable(&self) -> Vec<&'static str> {
        [
            (self.log_level, "log.level"),
            (self.sources, "sources"),
            (self.sync, "sync"),
            (self.mqtt, "mqtt"),
            (self.api_credentials, "api credentials"),
        ]
        .into_iter()
        .filter_map(|(changed, name)| changed.then_some(name))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_toml;

    fn config(toml: &str) -> Config {
        parse_toml(&format!("device_name = \"pi\"\nsources = []\n{toml}"))
            .unwrap_or_else(|e| panic!("{e}\n{toml}"))
    }

    const PEER: &str = "[[sync.peers]]\nname = \"hub\"\nurl = \"http://127.0.0.1:7878\"\ntoken = \"t0123456789abcdef\"\n";
    const TOKEN: &str =
        "[sync]\naccept_tokens = [{ name = \"dev\", token = \"t0123456789abcdef\" }]\n";

    #[test]
    fn the_same_configuration_differs_in_nothing() {
        let a = config(PEER);
        let diff = ConfigDiff::between(&a, &a.clone());
        assert!(diff.is_empty(), "{diff:?}");
        assert!(diff.reloadable().is_empty());
    }

    #[test]
    fn reloadable_sections_are_named_and_need_no_restart() {
        let old = config("");
        let new = config(&format!(
            "[log]\nlevel = \"debug\"\n[mqtt]\nenabled = true\nurl = \"mqtt://127.0.0.1:1883\"\n{PEER}"
        ));
        let diff = ConfigDiff::between(&old, &new);
        assert_eq!(diff.reloadable(), vec!["log.level", "sync", "mqtt"]);
        assert!(diff.sync_peers && !diff.sync_auth, "{diff:?}");
        assert!(diff.needs_restart.is_empty(), "{diff:?}");
    }

    #[test]
    fn a_new_token_changes_auth_but_not_the_outbound_peers() {
        let diff = ConfigDiff::between(&config(""), &config(TOKEN));
        assert!(diff.sync && diff.sync_auth && !diff.sync_peers, "{diff:?}");
        assert_eq!(diff.reloadable(), vec!["sync"]);
    }

    #[test]
    fn a_page_size_change_replaces_the_outbound_sessions() {
        let old = config(PEER);
        let new = config(&format!("{PEER}[sync]\npage_bytes = 65536\n"));
        let diff = ConfigDiff::between(&old, &new);
        assert!(diff.sync && diff.sync_peers && !diff.sync_auth, "{diff:?}");
    }

    #[test]
    fn sources_changes_are_reloadable() {
        let old = config("");
        let new = parse_toml("device_name = \"pi\"\n").expect("default sources");
        let diff = ConfigDiff::between(&old, &new);
        assert_eq!(diff.reloadable(), vec!["sources"]);
    }

    #[test]
    fn restart_only_settings_are_listed_in_order() {
        let old = config("");
        let new = config(
            "data_dir = \"/elsewhere\"\ndevice_twin = false\n[api]\nlisten = \"127.0.0.1:9999\"\n[log]\nformat = \"json\"\n[ingest]\nqueue_capacity = 20000\n",
        );
        let diff = ConfigDiff::between(&old, &new);
        assert_eq!(
            diff.needs_restart,
            vec!["data_dir", "device_twin", "api", "log.format", "ingest"]
        );
        assert!(diff.reloadable().is_empty(), "{diff:?}");
        assert!(!diff.is_empty());
    }

    #[test]
    fn a_device_rename_needs_a_restart() {
        let old = config("");
        let new = parse_toml("device_name = \"barn\"\nsources = []\n").expect("valid");
        assert_eq!(
            ConfigDiff::between(&old, &new).needs_restart,
            vec!["device_name"]
        );
    }
}
