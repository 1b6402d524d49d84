//! The agent's configuration: the top-level [`Config`] that assembles every section, the
//! three top-level keys it owns (`data_dir`, `device_name`, `device_twin`), and
//! [`Config::validate`], which runs each section's own `validate()` and the checks that span
//! sections. Each section's type lives with its owner: `[api]` [`ApiConfig`] (api), `[api.tls]`
//! (tls), `[log]` [`LogConfig`] (logging), `[ingest]` [`IngestConfig`] (sources), `[mqtt]`
//! (mqtt), `[sync]` (peers), `[clock]` (clock), `[backup]` (backup), `[store]` and `[[sources]]` (the sync and sensors crates).
//! Layering (defaults < files < `KDELTA_*` environment < flags) and error rendering live in
//! [`load`]; this module must not read files or the environment itself (except the hostname,
//! for the `device_name` default).
//!
//! Every struct denies unknown fields, so a typo in a key is an error that names it, never a
//! silently ignored setting. `config/kdelta.toml` documents every key; keep it in step.

mod load;
mod redact;

use std::collections::HashSet;
use std::path::PathBuf;

use kdelta_sensors::SourceConfig;
use kdelta_sensors::system::SystemConfig;
use serde::{Deserialize, Serialize};

pub use crate::api::ApiConfig;
pub use crate::logging::LogConfig;
pub use crate::section::InvalidValue;
pub use crate::sources::IngestConfig;
pub use load::{
    ConfigArgs, ConfigError, LOCAL_CONFIG_FILE, LoadedConfig, Origin, SYSTEM_CONFIG_FILE, load,
    parse_toml,
};
pub use redact::{REDACTED, redacted};

use crate::section::refuse;

/// Data directory of a user run (relative to the working directory).
pub const DEFAULT_DATA_DIR: &str = "./kdelta-data";

/// The whole configuration (the TOML file's top level).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Directory holding the store (`kdelta.db`) and the lock file. Relative paths resolve
    /// against the working directory at start.
    pub data_dir: PathBuf,
    /// Name of this device in status output (and later in MQTT topics). Defaults to the
    /// hostname.
    pub device_name: String,
    /// Keep this device's own twin `device/<device_name>`: report state into `reported`,
    /// apply allowed `desired` values (docs/twins.md). On by default.
    pub device_twin: bool,
    /// The HTTP API.
    pub api: ApiConfig,
    /// Logging.
    pub log: LogConfig,
    /// Which store (`backend`, `url`: `crate::backend`) and the embedded store's settings
    /// (`kdelta_sync::StoreConfig`, keys as documented there).
    pub store: crate::backend::StoreSection,
    /// The path from sources to the store: queue, batching, overflow.
    pub ingest: IngestConfig,
    /// Configured sources. Absent: one `system` source. `sources = []` records nothing.
    pub sources: Vec<SourceConfig>,
    /// The MQTT client (`[mqtt]`, off unless `enabled` or `--mqtt URL`).
    pub mqtt: crate::mqtt::MqttConfig,
    /// Sync with other agents (`[sync]`, inbound off unless `accept_tokens`).
    pub sync: crate::peers::SyncSection,
    /// Whether to trust the wall clock (`[clock]`).
    pub clock: crate::clock::ClockConfig,
    /// Scheduled backups (`[backup]`, off unless `every`).
    pub backup: crate::backup::BackupConfig,
    /// What the store keeps and for how long (`[retention]`; keeps everything by default).
    pub retention: crate::retention::RetentionConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            device_name: hostname(),
            device_twin: true,
            api: ApiConfig::default(),
            log: LogConfig::default(),
            store: crate::backend::StoreSection::default(),
            ingest: IngestConfig::default(),
            sources: vec![SourceConfig::System(SystemConfig::default())],
            mqtt: crate::mqtt::MqttConfig::default(),
            sync: crate::peers::SyncSection::default(),
            clock: crate::clock::ClockConfig::default(),
            backup: crate::backup::BackupConfig::default(),
            retention: crate::retention::RetentionConfig::default(),
        }
    }
}

impl Config {
    /// Checks values serde accepted but kdelta cannot use: each section's `validate()`, then
    /// the checks that span sections. The error names the key.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        if self.data_dir.as_os_str().is_empty() {
            return refuse("data_dir", "must not be empty");
        }
        if self.device_name.is_empty()
            || self.device_name.len() > 64
            || self.device_name.chars().any(|c| c.is_control() || c == '/')
        {
            return refuse(
                "device_name",
                format!(
                    "{:?}: use 1 to 64 characters, no `/` or control characters",
                    self.device_name
                ),
            );
        }
        self.api.validate()?;
        if !self.api.listen.ip().is_loopback() && !self.api.has_credentials(&self.sync.accept_certs)
        {
            return refuse(
                "api.listen",
                format!(
                    "{} is reachable from other hosts but the API has no credentials: add [api] tokens \
                     (or client certificates with scopes in [[sync.accept_certs]] and api.tls.client_ca), \
                     or listen on 127.0.0.1 (see docs/security.md)",
                    self.api.listen
                ),
            );
        }
        if !self.sync.accept_certs.is_empty()
            && self.api.tls.as_ref().is_none_or(|t| t.client_ca.is_none())
        {
            return refuse(
                "sync.accept_certs",
                "client certificates are only verified with mutual TLS: set api.tls.client_ca",
            );
        }
        self.log.validate()?;
        self.backup.validate()?;
        self.store.validate()?;
        let store_max = self.store.limits.max_batch_readings;
        if store_max == 0 {
            return refuse("store.max_batch_readings", "must be at least 1");
        }
        if let Err((key, reason)) = self.store.limits.validate() {
            return refuse(format!("store.{key}"), reason);
        }
        let change_max = self.store.limits.max_change_bytes;
        let frame_needs = change_max.saturating_add(kdelta_sync::protocol::PAGE_FRAME_OVERHEAD);
        if self.sync.max_frame_bytes < frame_needs {
            return refuse(
                "sync.max_frame_bytes",
                format!(
                    "{} cannot carry a change of store.max_change_bytes ({change_max}); use at \
                     least {frame_needs}, or lower store.max_change_bytes",
                    self.sync.max_frame_bytes
                ),
            );
        }
        for (key, value) in [
            (
                "store.read_connections",
                self.store.read_connections as usize,
            ),
            ("store.max_group_jobs", self.store.max_group_jobs),
            ("store.write_queue", self.store.write_queue),
        ] {
            if value == 0 {
                return refuse(key, "must be at least 1");
            }
        }
        self.ingest.validate(store_max)?;
        let mut names = HashSet::new();
        for (i, source) in self.sources.iter().enumerate() {
            let prefix = format!("sources[{i}]");
            if let Err(e) = source.validate_in(&prefix) {
                return match e {
                    kdelta_sensors::SourceError::Config { key, detail } => refuse(key, detail),
                    other => refuse(prefix, other.to_string()),
                };
            }
            if !names.insert(source.name()) {
                return refuse(
                    format!("{prefix}.name"),
                    format!(
                        "two sources are named {:?}; give each `{}` source its own `name`",
                        source.name(),
                        source.kind()
                    ),
                );
            }
        }
        self.sync.validate()?;
        self.retention.validate()?;
        if self.store.backend == crate::backend::BackendKind::Postgres {
            self.retention.validate_for_postgres()?;
        }
        self.mqtt.validate()
    }
}

impl Config {
    /// This configuration as the agent runs it on its `[store] backend`. On PostgreSQL (a hub
    /// replica, which stores only what devices sync to it) the parts that need the SQLite
    /// store are off — sources, twin compaction, scheduled backups, the device twin and
    /// outbound peers — each that was configured named in one log line when `log` is true.
    /// Retention's readings rules stay (they run against the database).
    /// On SQLite: unchanged.
    pub fn for_backend(mut self, log: bool) -> Config {
        if self.store.backend == crate::backend::BackendKind::Sqlite {
            return self;
        }
        let mut off = Vec::new();
        if !self.sources.is_empty() {
            off.push("sources");
            self.sources.clear();
        }
        // The readings rules of `[retention]` run on PostgreSQL too (`retention/hub.rs`);
        // the disk budget and document history are refused by `validate`. Twin history is
        // stored as received there, with no snapshot to compact into.
        if self.retention.twins != crate::retention::TwinsKeep::default() {
            off.push("retention.twins (twin compaction)");
        }
        if self.backup.every.is_some() {
            off.push("scheduled backups");
            self.backup.every = None;
        }
        if self.device_twin {
            off.push("the device twin");
            self.device_twin = false;
        }
        if !self.sync.peers.is_empty() {
            off.push("outbound sync peers");
            self.sync.peers.clear();
        }
        if log {
            for part in off {
                tracing::info!(
                    "{part} off: not run by a PostgreSQL hub replica, which stores what devices sync to it (issue 17)"
                );
            }
        }
        self
    }
}

/// The host name, or `kdelta` when it cannot be read.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success
    // (truncation is handled by searching for the NUL within the buffer).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "kdelta".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if !name.is_empty() => name.to_owned(),
        _ => "kdelta".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A hub replica's config with `retention` (TOML) added.
    fn pg_hub(retention: &str) -> Result<Config, InvalidValue> {
        let text =
            format!("[store]\nbackend = \"postgres\"\nurl = \"postgres://db/hub\"\n{retention}");
        let config: Config = toml::from_str(&text).expect("parses");
        config.validate().map(|()| config)
    }

    #[test]
    fn a_postgres_hub_prunes_readings_and_refuses_what_it_cannot_apply_naming_the_key() {
        if !cfg!(feature = "postgres") {
            return;
        }
        let rules = "[retention]\nreadings = \"90d\"\nrollups = \"2y\"\nevery = \"5m\"\n\
                     [[retention.series]]\npattern = \"sim.*\"\nkeep = \"7d\"\n";
        let config = pg_hub(rules).expect("readings rules apply on PostgreSQL");
        let before = config.retention.clone();
        let run = config.for_backend(false);
        assert_eq!(run.retention, before, "kept as configured");
        assert!(!run.retention.policy().keeps_all_readings());

        for (extra, key) in [
            ("max_disk = \"2GiB\"\n", "retention.max_disk"),
            ("min_free = \"5%\"\n", "retention.min_free"),
            (
                "max_disk = \"2GiB\"\nhard_limit = \"3GiB\"\n",
                "retention.max_disk",
            ),
        ] {
            let err = pg_hub(&format!("[retention]\nreadings = \"90d\"\n{extra}")).unwrap_err();
            assert_eq!(err.key, key, "{extra}");
            assert!(err.detail.contains("PostgreSQL"), "{}", err.detail);
            // The same keys are fine on SQLite.
            let sqlite: Config =
                toml::from_str(&format!("[retention]\nreadings = \"90d\"\n{extra}")).unwrap();
            sqlite.validate().expect("accepted on SQLite");
        }
        // Document history retention applies there too, as configured.
        let docs = pg_hub(
            "[retention.docs]\nkeep_versions = 10\n[[retention.docs.keys]]\npattern = \"a/*\"\nkeep = \"7d\"\n",
        )
        .expect("document history retention applies on PostgreSQL");
        let policy = docs.for_backend(false).retention.policy();
        assert!(policy.keeps_all_readings());
        assert_eq!(policy.docs.rule("b").keep_versions, Some(10));
        assert_eq!(policy.docs.rule("a/x").max_age_ms, Some(7 * 86_400_000));
        // Twin compaction does not apply there: left as configured, logged as off.
        let twins = pg_hub("[retention.twins]\ncompact_after = \"forever\"\n").unwrap();
        assert!(
            twins.for_backend(false).retention.twins.compact_after
                == crate::retention::Keep::Forever
        );
    }

    #[test]
    fn defaults_are_valid() {
        let config = Config::default();
        config.validate().expect("defaults valid");
        assert_eq!(config.api.listen.to_string(), crate::api::DEFAULT_LISTEN);
        assert_eq!(config.sources.len(), 1);
        assert_eq!(config.sources[0].kind(), "system");
        assert!(!config.device_name.is_empty());
    }

    /// `config/kdelta.toml` with its setting lines (`#key = …`, `#[section]`) uncommented.
    fn documented(part: &str) -> String {
        part.lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if rest.starts_with(|c: char| !c.is_whitespace() && c != '#') => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn documented_file_shows_every_default() {
        let text = include_str!("../../../config/kdelta.toml");
        let (settings, _) = text
            .split_once("# ---- sources ----")
            .expect("sources marker");
        let parsed: Config =
            toml::from_str(&documented(settings)).expect("uncommented settings parse");
        let expected = Config {
            device_name: "raspberrypi".into(),
            ..Config::default()
        };
        assert_eq!(
            parsed, expected,
            "config/kdelta.toml and the built-in defaults differ"
        );

        // Every key of the defaults is documented.
        let defaults = toml::to_string(&Config {
            sources: vec![],
            ..Config::default()
        })
        .unwrap();
        for line in defaults
            .lines()
            .filter(|l| l.contains(" = ") && !l.starts_with("sources"))
        {
            let key = line.split(" = ").next().unwrap();
            assert!(
                settings.contains(&format!("#{key} = ")),
                "key `{key}` is not documented"
            );
        }
    }

    #[test]
    fn documented_source_examples_are_valid() {
        let text = include_str!("../../../config/kdelta.toml");
        let (_, sources) = text
            .split_once("# ---- sources ----")
            .expect("sources marker");
        let parsed: Config =
            toml::from_str(&documented(sources)).expect("uncommented examples parse");
        let kinds: Vec<&str> = parsed.sources.iter().map(|s| s.kind()).collect();
        assert_eq!(
            kinds,
            [
                "system",
                "sysfs",
                "sim",
                "serial",
                "modbus_tcp",
                "modbus_rtu"
            ]
        );
        parsed.validate().expect("the examples are valid");
        assert_eq!(
            parsed.sources[0],
            SourceConfig::System(SystemConfig {
                name: Some("system".into()),
                ..SystemConfig::default()
            }),
            "the system example shows the defaults"
        );
    }

    #[test]
    fn tls_settings_are_validated() {
        let tls = crate::tls::ApiTlsConfig {
            cert: "/etc/kdelta/tls/agent.pem".into(),
            key: "/etc/kdelta/tls/agent-key.pem".into(),
            client_ca: None,
            require_client_cert: false,
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: 64,
        };
        let with = |f: &dyn Fn(&mut Config)| {
            let mut c = Config::default();
            c.api.tls = Some(tls.clone());
            f(&mut c);
            c.validate().err().map(|e| e.key)
        };
        assert_eq!(with(&|_| {}), None);
        let key = |c: &mut Config| c.api.tls.as_mut().unwrap().key = PathBuf::new();
        assert_eq!(with(&key).as_deref(), Some("api.tls.key"));
        let slow = |c: &mut Config| {
            c.api.tls.as_mut().unwrap().handshake_timeout = Duration::from_secs(600);
        };
        assert_eq!(with(&slow).as_deref(), Some("api.tls.handshake_timeout"));
        let none = |c: &mut Config| c.api.tls.as_mut().unwrap().max_handshakes = 0;
        assert_eq!(with(&none).as_deref(), Some("api.tls.max_handshakes"));
        // Client certificates are only accepted when they are verified (mutual TLS).
        let certs = |c: &mut Config| {
            c.sync.accept_certs = vec![crate::peers::AcceptCert {
                name: "dev".into(),
                fingerprint: "ab".repeat(32),
                scopes: vec![],
                role: Default::default(),
            }];
        };
        assert_eq!(with(&certs).as_deref(), Some("sync.accept_certs"));
        let mtls = |c: &mut Config| {
            certs(c);
            c.api.tls.as_mut().unwrap().client_ca = Some("/etc/kdelta/tls/ca.pem".into());
        };
        assert_eq!(with(&mtls), None);
        // `[api.tls]` in TOML: defaults fill the optional keys.
        let parsed: Config =
            toml::from_str("[api.tls]\ncert = \"a.pem\"\nkey = \"k.pem\"\n").unwrap();
        let t = parsed.api.tls.unwrap();
        assert_eq!(
            (t.handshake_timeout, t.max_handshakes),
            (Duration::from_secs(10), 64)
        );
        assert!(toml::from_str::<Config>("[api.tls]\ncert = \"a.pem\"\n").is_err());
    }

    #[test]
    fn validate_names_the_key() {
        let mut config = Config::default();
        config.ingest.batch_max_readings = 0;
        assert_eq!(
            config.validate().unwrap_err().key,
            "ingest.batch_max_readings"
        );

        let mut config = Config::default();
        config.ingest.batch_max_readings = config.store.limits.max_batch_readings + 1;
        assert_eq!(
            config.validate().unwrap_err().key,
            "ingest.batch_max_readings"
        );

        let mut config = Config::default();
        config.log.level = "info,kdelta=loud".into();
        assert_eq!(config.validate().unwrap_err().key, "log.level");

        // Frames must hold the largest change; limits must hold the largest document.
        let mut config = Config::default();
        config.sync.max_frame_bytes = config.store.limits.max_change_bytes;
        let err = config.validate().unwrap_err();
        assert_eq!(err.key, "sync.max_frame_bytes");
        assert!(
            err.detail.contains("store.max_change_bytes"),
            "{}",
            err.detail
        );
        let mut config = Config::default();
        config.sync.max_frame_bytes = 1 << 30;
        assert_eq!(config.validate().unwrap_err().key, "sync.max_frame_bytes");
        let mut config = Config::default();
        config.store.limits.max_change_bytes = config.store.limits.max_value_bytes;
        assert_eq!(config.validate().unwrap_err().key, "store.max_change_bytes");

        let mut config = Config::default();
        config
            .sources
            .push(SourceConfig::System(SystemConfig::default()));
        let err = config.validate().unwrap_err();
        assert_eq!(err.key, "sources[1].name");
        assert!(err.detail.contains("system"), "{}", err.detail);

        let config = Config {
            sources: vec![SourceConfig::System(SystemConfig {
                interval: Duration::from_millis(1),
                ..SystemConfig::default()
            })],
            ..Config::default()
        };
        assert_eq!(config.validate().unwrap_err().key, "sources[0].interval");
    }
}
