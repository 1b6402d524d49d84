//! `[mqtt]`: the MQTT client's settings, their defaults and [`MqttConfig::validate`]. Also
//! parses the broker URL into host, port and transport. Pure data: opens nothing.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::topics::TopicFilter;
use crate::section::InvalidValue;

/// `[mqtt]`: publish readings and availability, Home Assistant discovery, ingest and document
/// commands by subscription. Off unless `enabled = true` (or `kdelta start --mqtt URL`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// Runs the MQTT client. Set by `--mqtt URL` (with `url`).
    pub enabled: bool,
    /// Broker: `mqtt://host[:port]` (1883) or `mqtts://host[:port]` (8883, TLS with rustls).
    pub url: String,
    /// MQTT client id. Default: `kdelta-<device_name>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// User name for the broker, if it asks for one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password for the broker (only with `username`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// PEM file of the CA(s) that sign the broker's certificate (`mqtts://`). Default: the
    /// system's root certificates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain presented to the broker (`mqtts://`, for brokers that
    /// authenticate clients by certificate, e.g. Mosquitto's `require_certificate`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
    /// First topic level: topics are `<prefix>/<device_name>/…`.
    pub prefix: String,
    /// MQTT keepalive (1s to 18h).
    #[serde(with = "humantime_serde")]
    pub keepalive: Duration,
    /// QoS of published readings: 1 (the outbox advances on PUBACK) or 0 (it advances once
    /// written to the socket; a broken link may lose messages).
    pub qos: u8,
    /// `per_series`: one message per reading on `<prefix>/<device>/<series>`; `batch`: one
    /// message per part of a stored batch on `<prefix>/<device>/batch`.
    pub publish_format: PublishFormat,
    /// Encoding of `batch` messages: `json` or `cbor`.
    pub batch_encoding: BatchEncoding,
    /// Most readings in one `batch` message (a stored batch is split into parts).
    pub batch_max_readings: usize,
    /// Publish per-series readings retained, so a new subscriber sees the latest value.
    pub retain_latest: bool,
    /// Also publish readings that other replicas made (received by sync); by default only
    /// this device's own readings are published.
    pub publish_remote: bool,
    /// With no outbox cursor yet (first start with MQTT): `false` publishes only readings
    /// stored from now on; `true` publishes the whole stored history first.
    pub backfill: bool,
    /// Most published readings messages waiting for their PUBACK (1 to 65535).
    pub inflight: usize,
    /// `false`: a persistent session — the broker keeps this client's subscriptions while
    /// it is offline and delivers the QoS 1 messages published meanwhile (and any it
    /// delivered but kdelta had not acknowledged) when it returns. Needs a client id no other
    /// client uses.
    pub clean_session: bool,
    /// Largest MQTT packet sent or accepted, bytes.
    pub max_packet_bytes: usize,
    /// Longest wait between reconnection attempts (the wait doubles from 250ms up to this).
    #[serde(with = "humantime_serde")]
    pub reconnect_backoff_max: Duration,
    /// Publish Home Assistant discovery configs (retained) for every series.
    pub discovery: bool,
    /// Home Assistant's discovery prefix.
    pub discovery_prefix: String,
    /// Subscribe to `<prefix>/<device>/ingest/<series>` and store what arrives there.
    pub ingest: bool,
    /// Subscribe to `<prefix>/<device>/docs/set/<key>` and `<prefix>/<device>/twin/<key>/patch`
    /// and write documents and twins. Off unless configured: whoever may publish to those
    /// topics on the broker writes to the store without any kdelta credential.
    pub commands: bool,
    /// Readings received by subscription are committed once this many are buffered…
    pub ingest_batch_max_readings: usize,
    /// …or once the oldest has waited this long.
    #[serde(with = "humantime_serde")]
    pub ingest_batch_max_age: Duration,
    /// Mapping rules for third-party topics (Tasmota, Zigbee2MQTT, Shelly, …).
    pub ingest_rules: Vec<IngestRule>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            enabled: false,
            url: "mqtt://localhost:1883".into(),
            client_id: None,
            username: None,
            password: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            prefix: "kdelta".into(),
            keepalive: Duration::from_secs(30),
            qos: 1,
            publish_format: PublishFormat::PerSeries,
            batch_encoding: BatchEncoding::Json,
            batch_max_readings: 1000,
            retain_latest: false,
            publish_remote: false,
            backfill: false,
            inflight: 100,
            clean_session: true,
            max_packet_bytes: 1 << 20,
            reconnect_backoff_max: Duration::from_secs(10),
            discovery: true,
            discovery_prefix: "homeassistant".into(),
            ingest: true,
            commands: false,
            ingest_batch_max_readings: 1000,
            ingest_batch_max_age: Duration::from_millis(200),
            ingest_rules: Vec::new(),
        }
    }
}

/// How readings are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PublishFormat {
    /// `{"ts","value","unit"}` on `<prefix>/<device>/<series>`, one message per reading.
    PerSeries,
    /// Columnar batches on `<prefix>/<device>/batch`.
    Batch,
}

/// Encoding of batch messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchEncoding {
    /// JSON text.
    Json,
    /// CBOR (RFC 8949), same structure.
    Cbor,
}

/// Unit of numeric timestamps found by an ingest rule's `ts` pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TsUnit {
    /// Unix milliseconds.
    #[default]
    Ms,
    /// Unix seconds (Shelly's `unixtime`), fractions allowed.
    S,
}

/// `[[mqtt.ingest_rules]]`: messages on topics matching `topic` become readings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestRule {
    /// MQTT topic filter; `+` matches one level, a final `#` the rest.
    pub topic: String,
    /// Series name; `{1}`, `{2}`, … are the levels the wildcards matched (`#` as one,
    /// with its `/`), `{topic}` the whole topic.
    pub series: String,
    /// JSON pointer (RFC 6901) of the value, e.g. `/ENERGY/Power`. Empty: the payload is
    /// the value itself (a number, or `true`/`false`, or `ON`/`OFF`).
    #[serde(default)]
    pub value: String,
    /// JSON pointer of the timestamp (unix ms or s, see `ts_unit`, or RFC 3339 text; a
    /// time without offset is UTC). Absent: the time of arrival.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<String>,
    /// Unit of numeric timestamps: `ms` (default) or `s`.
    #[serde(default)]
    pub ts_unit: TsUnit,
    /// Unit of the series (`°C`, `W`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// Where the broker is and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Host name or IP address (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// TLS (`mqtts://`).
    pub tls: bool,
}

impl BrokerUrl {
    /// Parses `mqtt://host[:port]`, `mqtts://host[:port]` (also `tcp://`, `ssl://`).
    pub fn parse(url: &str) -> Result<BrokerUrl, String> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            format!("{url:?} has no scheme; use mqtt://host:1883 or mqtts://host:8883")
        })?;
        let (tls, default_port) = match scheme {
            "mqtt" | "tcp" => (false, 1883),
            "mqtts" | "ssl" => (true, 8883),
            other => {
                return Err(format!(
                    "scheme {other:?} is not supported; use mqtt:// or mqtts://"
                ));
            }
        };
        let authority = rest.trim_end_matches('/');
        if authority.contains(['/', '@', '?', '#']) {
            return Err(format!(
                "{url:?}: give only host and port (credentials go in mqtt.username and mqtt.password)"
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: unclosed `[`"))?;
            match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None if after.is_empty() => (host, None),
                None => return Err(format!("{url:?}: unexpected text after `]`")),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        let port = match port {
            None => default_port,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("{url:?}: bad port {p:?}"))?,
        };
        Ok(BrokerUrl {
            host: host.to_owned(),
            port,
            tls,
        })
    }
}

/// A config value `validate` refused, under `mqtt.`.
fn bad(key: &str, detail: impl Into<String>) -> InvalidValue {
    InvalidValue::new(format!("mqtt.{key}"), detail)
}

/// A topic level may not be empty nor hold wildcards; the prefix may hold `/` between levels.
fn check_topic_part(key: &str, value: &str) -> Result<(), InvalidValue> {
    if value.is_empty()
        || value.len() > 128
        || value.contains(['+', '#', '\0'])
        || value.starts_with('/')
        || value.ends_with('/')
        || value.contains("//")
    {
        return Err(bad(
            key,
            format!("{value:?}: use 1 to 128 characters without `+`, `#` or empty levels"),
        ));
    }
    Ok(())
}

impl MqttConfig {
    /// The TLS file keys: each names a file, only with `mqtts://`; a client certificate and
    /// its key come together.
    fn validate_tls_files(&self) -> Result<(), InvalidValue> {
        let tls = BrokerUrl::parse(&self.url).is_ok_and(|u| u.tls);
        for (key, file) in [
            ("ca_file", &self.ca_file),
            ("client_cert", &self.client_cert),
            ("client_key", &self.client_key),
        ] {
            match file {
                Some(f) if f.as_os_str().is_empty() => {
                    return Err(bad(key, "must name a PEM file"));
                }
                Some(_) if !tls => {
                    return Err(bad(
                        key,
                        format!("is only used with mqtts:// URLs, not {:?}", self.url),
                    ));
                }
                _ => {}
            }
        }
        match (&self.client_cert, &self.client_key) {
            (Some(_), None) => Err(bad("client_key", "is required with mqtt.client_cert")),
            (None, Some(_)) => Err(bad("client_cert", "is required with mqtt.client_key")),
            _ => Ok(()),
        }
    }

    /// Checks what serde cannot; the error names the key (`mqtt.qos`, `mqtt.ingest_rules[2].topic`).
    pub fn validate(&self) -> Result<(), InvalidValue> {
        BrokerUrl::parse(&self.url).map_err(|e| bad("url", e))?;
        if let Some(id) = &self.client_id
            && (id.is_empty() || id.len() > 128 || id.chars().any(char::is_control))
        {
            return Err(bad(
                "client_id",
                "use 1 to 128 characters, no control characters",
            ));
        }
        if self.password.is_some() && self.username.is_none() {
            return Err(bad("password", "a password needs mqtt.username"));
        }
        self.validate_tls_files()?;
        check_topic_part("prefix", &self.prefix)?;
        check_topic_part("discovery_prefix", &self.discovery_prefix)?;
        if self.keepalive < Duration::from_secs(1) || self.keepalive > Duration::from_secs(65_535) {
            return Err(bad("keepalive", "use 1s to 18h"));
        }
        if self.qos > 1 {
            return Err(bad(
                "qos",
                format!("{} is not supported; use 0 or 1", self.qos),
            ));
        }
        if !(1..=65_535).contains(&self.inflight) {
            return Err(bad(
                "inflight",
                format!("{} is out of range; use 1 to 65535", self.inflight),
            ));
        }
        if !(1..=50_000).contains(&self.batch_max_readings) {
            return Err(bad("batch_max_readings", "use 1 to 50000"));
        }
        if !(1..=50_000).contains(&self.ingest_batch_max_readings) {
            return Err(bad("ingest_batch_max_readings", "use 1 to 50000"));
        }
        if self.ingest_batch_max_age < Duration::from_millis(1)
            || self.ingest_batch_max_age > Duration::from_secs(60)
        {
            return Err(bad("ingest_batch_max_age", "use 1ms to 60s"));
        }
        if !(1024..=(256 << 20)).contains(&self.max_packet_bytes) {
            return Err(bad("max_packet_bytes", "use 1024 to 268435456"));
        }
        if self.reconnect_backoff_max < Duration::from_millis(100)
            || self.reconnect_backoff_max > Duration::from_secs(3600)
        {
            return Err(bad("reconnect_backoff_max", "use 100ms to 1h"));
        }
        for (i, rule) in self.ingest_rules.iter().enumerate() {
            let key = |k: &str| format!("ingest_rules[{i}].{k}");
            let filter = TopicFilter::parse(&rule.topic).map_err(|e| bad(&key("topic"), e))?;
            if let Some(n) = rule
                .placeholders()
                .into_iter()
                .find(|&n| n == 0 || n > filter.wildcards())
            {
                return Err(bad(
                    &key("series"),
                    format!(
                        "{:?} uses {{{n}}} but topic {:?} has {} wildcard(s)",
                        rule.series,
                        rule.topic,
                        filter.wildcards()
                    ),
                ));
            }
            if rule.series.is_empty() {
                return Err(bad(&key("series"), "must not be empty"));
            }
            for (k, pointer) in [("value", Some(&rule.value)), ("ts", rule.ts.as_ref())] {
                if let Some(p) = pointer
                    && !p.is_empty()
                    && !p.starts_with('/')
                {
                    return Err(bad(
                        &key(k),
                        format!("{p:?} is not a JSON pointer; start it with `/`"),
                    ));
                }
            }
            if rule.unit.as_ref().is_some_and(|u| u.len() > 32) {
                return Err(bad(&key("unit"), "use at most 32 bytes"));
            }
        }
        Ok(())
    }

    /// The client id to use: the configured one or `kdelta-<device>`.
    pub fn client_id_for(&self, device: &str) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("kdelta-{device}"))
    }
}

impl IngestRule {
    /// The numbers `n` of the `{n}` placeholders in `series`.
    pub fn placeholders(&self) -> Vec<usize> {
        let mut out = Vec::new();
        let mut rest = self.series.as_str();
        while let Some(start) = rest.find('{') {
            let after = &rest[start + 1..];
            match after.find('}') {
                Some(end) => {
                    if let Ok(n) = after[..end].parse::<usize>() {
                        out.push(n);
                    }
                    rest = &after[end + 1..];
                }
                None => break,
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = BrokerUrl::parse("mqtt://localhost").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.tls), ("localhost", 1883, false));
        let u = BrokerUrl::parse("mqtts://broker.example:8884/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.tls),
            ("broker.example", 8884, true)
        );
        let u = BrokerUrl::parse("mqtt://[::1]:1884").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 1884));
        assert!(BrokerUrl::parse("localhost:1883").is_err());
        assert!(BrokerUrl::parse("http://x").is_err());
        assert!(BrokerUrl::parse("mqtt://u:p@x").is_err());
        assert!(BrokerUrl::parse("mqtt://x:0").is_err());
        assert!(BrokerUrl::parse("mqtt://:1883").is_err());
    }

    #[test]
    fn defaults_valid_and_keys_named() {
        MqttConfig::default().validate().unwrap();
        let key = |c: MqttConfig| match c.validate() {
            Err(InvalidValue { key, .. }) => key,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            key(MqttConfig {
                qos: 2,
                ..Default::default()
            }),
            "mqtt.qos"
        );
        assert_eq!(
            key(MqttConfig {
                url: "x".into(),
                ..Default::default()
            }),
            "mqtt.url"
        );
        assert_eq!(
            key(MqttConfig {
                prefix: "a/+".into(),
                ..Default::default()
            }),
            "mqtt.prefix"
        );
        assert_eq!(
            key(MqttConfig {
                inflight: 0,
                ..Default::default()
            }),
            "mqtt.inflight"
        );
        let tls = || MqttConfig {
            url: "mqtts://broker.lan".into(),
            ..Default::default()
        };
        let pem = || Some(PathBuf::from("/etc/kdelta/mqtt-client.pem"));
        MqttConfig {
            client_cert: pem(),
            client_key: pem(),
            ..tls()
        }
        .validate()
        .unwrap();
        assert_eq!(
            key(MqttConfig {
                client_cert: pem(),
                ..tls()
            }),
            "mqtt.client_key"
        );
        assert_eq!(
            key(MqttConfig {
                client_key: pem(),
                ..tls()
            }),
            "mqtt.client_cert"
        );
        assert_eq!(
            key(MqttConfig {
                client_cert: pem(),
                client_key: pem(),
                ..Default::default()
            }),
            "mqtt.client_cert",
            "certificates need mqtts://"
        );
        assert_eq!(
            key(MqttConfig {
                ca_file: Some(PathBuf::new()),
                ..tls()
            }),
            "mqtt.ca_file"
        );
        let rule = IngestRule {
            topic: "tele/+/SENSOR".into(),
            series: "tasmota.{2}".into(),
            value: "/ENERGY/Power".into(),
            ts: None,
            ts_unit: TsUnit::Ms,
            unit: Some("W".into()),
        };
        assert_eq!(
            key(MqttConfig {
                ingest_rules: vec![rule.clone()],
                ..Default::default()
            }),
            "mqtt.ingest_rules[0].series"
        );
        let ok = IngestRule {
            series: "tasmota.{1}".into(),
            ..rule.clone()
        };
        MqttConfig {
            ingest_rules: vec![ok],
            ..Default::default()
        }
        .validate()
        .unwrap();
        let bad_ptr = IngestRule {
            series: "x".into(),
            value: "ENERGY".into(),
            ..rule
        };
        assert_eq!(
            key(MqttConfig {
                ingest_rules: vec![bad_ptr],
                ..Default::default()
            }),
            "mqtt.ingest_rules[0].value"
        );
    }
}
