//! The agent's configuration: one serde struct per `[section]`, their defaults, and
//! [`Config::validate`] for the values serde cannot check. Layering (defaults < files <
//! `KDELTA_*` environment < flags) and error rendering live in [`load`]; this module must not
//! read files or the environment itself (except the hostname, for the `device_name` default).
//!
//! Every struct denies unknown fields, so a typo in a key is an error that names it, never a
//! silently ignored setting. `config/kdelta.toml` documents every key; keep it in step.

mod load;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kdelta_sensors::SourceConfig;
use kdelta_sensors::system::SystemConfig;
use kdelta_sync::StoreConfig;
use serde::{Deserialize, Serialize};

pub use load::{
    ConfigArgs, ConfigError, LOCAL_CONFIG_FILE, LoadedConfig, Origin, SYSTEM_CONFIG_FILE, load,
};

/// Data directory of a user run (relative to the working directory).
pub const DEFAULT_DATA_DIR: &str = "./kdelta-data";
/// Where the HTTP API listens by default: loopback only, so a fresh install exposes nothing.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";
/// Default request-body limit of the HTTP API (16 MiB: a CBOR batch of 50,000 readings fits).
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 << 20;

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
    /// The versioned store (`kdelta_sync::StoreConfig`, keys as documented there).
    pub store: StoreConfig,
    /// The path from sources to the store: queue, batching, overflow.
    pub ingest: IngestConfig,
    /// Configured sources. Absent: one `system` source. `sources = []` records nothing.
    pub sources: Vec<SourceConfig>,
    /// The MQTT client (`[mqtt]`, off unless `enabled` or `--mqtt URL`).
    pub mqtt: crate::mqtt::MqttConfig,
    /// Sync with other agents (`[sync]`, inbound off unless `accept_tokens`).
    pub sync: crate::peers::SyncSection,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            device_name: hostname(),
            device_twin: true,
            api: ApiConfig::default(),
            log: LogConfig::default(),
            store: StoreConfig::default(),
            ingest: IngestConfig::default(),
            sources: vec![SourceConfig::System(SystemConfig::default())],
            mqtt: crate::mqtt::MqttConfig::default(),
            sync: crate::peers::SyncSection::default(),
        }
    }
}

/// `[api]`: the local HTTP API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Address and port to bind, `IP:PORT`. Port 0 picks a free port (the log says which).
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes; larger bodies get 413.
    pub max_body_bytes: usize,
    /// `[api.tls]`: serve the API and `/v1/sync` over HTTPS. Absent: plain HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ApiTlsConfig>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: DEFAULT_LISTEN.parse().expect("constant address"),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            tls: None,
        }
    }
}

/// `[api.tls]`: HTTPS on `api.listen` (rustls), optionally with client certificates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTlsConfig {
    /// PEM certificate chain of this agent, end-entity certificate first.
    pub cert: PathBuf,
    /// PEM private key of `cert` (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificate(s) that client certificates must chain to (mutual TLS). Clients
    /// without a certificate are still served (they authenticate with tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// A client that has not finished its TLS handshake within this is disconnected.
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Most TLS handshakes in progress at once; further connections wait to be accepted.
    #[serde(default = "default_max_handshakes")]
    pub max_handshakes: usize,
}

fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_handshakes() -> usize {
    64
}

/// `[log]`: what is logged and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter: a level (`info`) or directives (`info,kdelta::sources=debug`).
    /// `RUST_LOG`, when set, takes precedence. Reloaded on SIGHUP.
    pub level: String,
    /// `human` (default) or `json` lines on stderr. Under systemd, human logs go to the
    /// journal with their level as priority.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Human,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per event (for log shippers).
    Json,
}

/// `[ingest]`: how readings from sources reach the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// A batch is committed once it holds this many readings.
    pub batch_max_readings: usize,
    /// …or once its oldest reading has waited this long.
    #[serde(with = "humantime_serde")]
    pub batch_max_age: Duration,
    /// Readings held between the sources and the batcher. Bounds memory when the store is
    /// slower than the sources.
    pub queue_capacity: usize,
    /// What a source does when the queue is full.
    pub overflow: Overflow,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            batch_max_readings: 1000,
            batch_max_age: Duration::from_secs(1),
            queue_capacity: 10_000,
            overflow: Overflow::Block,
        }
    }
}

/// Policy for a full ingest queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// The source waits (backpressure): a polled source misses ticks, a serial device's
    /// bytes wait in the kernel buffer. Nothing is dropped.
    Block,
    /// The oldest queued reading is discarded (counted in
    /// `kdelta_ingest_dropped_readings_total`): fresh data wins.
    DropOldest,
}

/// A value that `validate` refused: the dotted key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidValue {
    /// Dotted key, e.g. `ingest.batch_max_readings` or `sources[1].interval`.
    pub key: String,
    /// What is wrong and what is allowed.
    pub detail: String,
}

impl Config {
    /// Checks values serde accepted but kdelta cannot use. The error names the key.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        let bad = |key: &str, detail: String| {
            Err(InvalidValue {
                key: key.to_owned(),
                detail,
            })
        };
        if self.data_dir.as_os_str().is_empty() {
            return bad("data_dir", "must not be empty".into());
        }
        if self.device_name.is_empty()
            || self.device_name.len() > 64
            || self.device_name.chars().any(|c| c.is_control() || c == '/')
        {
            return bad(
                "device_name",
                format!(
                    "{:?}: use 1 to 64 characters, no `/` or control characters",
                    self.device_name
                ),
            );
        }
        if !(1024..=(1 << 30)).contains(&self.api.max_body_bytes) {
            return bad(
                "api.max_body_bytes",
                format!(
                    "{} is out of range; use 1024 to 1073741824 (1 GiB)",
                    self.api.max_body_bytes
                ),
            );
        }
        if let Some(tls) = &self.api.tls {
            for (key, path) in [("api.tls.cert", &tls.cert), ("api.tls.key", &tls.key)] {
                if path.as_os_str().is_empty() {
                    return bad(key, "must name a PEM file".into());
                }
            }
            if tls
                .client_ca
                .as_ref()
                .is_some_and(|p| p.as_os_str().is_empty())
            {
                return bad("api.tls.client_ca", "must name a PEM file".into());
            }
            if tls.handshake_timeout < Duration::from_millis(100)
                || tls.handshake_timeout > Duration::from_secs(120)
            {
                return bad(
                    "api.tls.handshake_timeout",
                    format!(
                        "{} is out of range; use 100ms to 2m",
                        humantime::format_duration(tls.handshake_timeout)
                    ),
                );
            }
            if !(1..=4096).contains(&tls.max_handshakes) {
                return bad(
                    "api.tls.max_handshakes",
                    format!("{} is out of range; use 1 to 4096", tls.max_handshakes),
                );
            }
        }
        if !self.sync.accept_certs.is_empty()
            && self.api.tls.as_ref().is_none_or(|t| t.client_ca.is_none())
        {
            return bad(
                "sync.accept_certs",
                "client certificates are only verified with mutual TLS: set api.tls.client_ca"
                    .into(),
            );
        }
        if let Err(e) = crate::logging::parse_filter(&self.log.level) {
            return bad(
                "log.level",
                format!(
                    "{:?} is not a level or filter ({e}); use error, warn, info, debug or trace",
                    self.log.level
                ),
            );
        }
        let store_max = self.store.limits.max_batch_readings;
        if store_max == 0 {
            return bad("store.max_batch_readings", "must be at least 1".into());
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
                return bad(key, "must be at least 1".into());
            }
        }
        let ingest = &self.ingest;
        if ingest.batch_max_readings == 0 || ingest.batch_max_readings > store_max {
            return bad(
                "ingest.batch_max_readings",
                format!(
                    "{} is out of range; use 1 to store.max_batch_readings ({store_max})",
                    ingest.batch_max_readings
                ),
            );
        }
        if ingest.batch_max_age < Duration::from_millis(1)
            || ingest.batch_max_age > Duration::from_secs(3600)
        {
            return bad(
                "ingest.batch_max_age",
                format!(
                    "{} is out of range; use 1ms to 1h",
                    humantime::format_duration(ingest.batch_max_age)
                ),
            );
        }
        if ingest.queue_capacity < ingest.batch_max_readings || ingest.queue_capacity > 10_000_000 {
            return bad(
                "ingest.queue_capacity",
                format!(
                    "{} is out of range; use ingest.batch_max_readings ({}) to 10000000",
                    ingest.queue_capacity, ingest.batch_max_readings
                ),
            );
        }
        let mut names = HashSet::new();
        for (i, source) in self.sources.iter().enumerate() {
            let prefix = format!("sources[{i}]");
            if let Err(e) = source.validate_in(&prefix) {
                return match e {
                    kdelta_sensors::SourceError::Config { key, detail } => bad(&key, detail),
                    other => bad(&prefix, other.to_string()),
                };
            }
            if !names.insert(source.name()) {
                return bad(
                    &format!("{prefix}.name"),
                    format!(
                        "two sources are named {:?}; give each `{}` source its own `name`",
                        source.name(),
                        source.kind()
                    ),
                );
            }
        }
        if let Err((key, detail)) = self.sync.validate() {
            return bad(&key, detail);
        }
        match self.mqtt.validate() {
            Ok(()) => {}
            Err(crate::mqtt::MqttError::Config { key, detail }) => return bad(&key, detail),
            Err(other) => return bad("mqtt", other.to_string()),
        }
        Ok(())
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

    #[test]
    fn defaults_are_valid() {
        let config = Config::default();
        config.validate().expect("defaults valid");
        assert_eq!(config.api.listen.to_string(), DEFAULT_LISTEN);
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
        let tls = ApiTlsConfig {
            cert: "/etc/kdelta/tls/agent.pem".into(),
            key: "/etc/kdelta/tls/agent-key.pem".into(),
            client_ca: None,
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
