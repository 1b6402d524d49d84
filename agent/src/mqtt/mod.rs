//! MQTT: kdelta as a citizen of an MQTT broker (Mosquitto, EMQX, rumqttd, …).
//!
//! - **Publish**: every reading stored by this device goes to `<prefix>/<device>/<series>` as
//!   `{"ts","value","unit"}` (or batched on `<prefix>/<device>/batch`, JSON or CBOR), from a
//!   **durable outbox**: a cursor over the store's change log (`Store::log_after`), persisted
//!   in the data directory, moved only past changes whose every message got its PUBACK. A
//!   broker outage of any length resumes in order; readings are re-read from the store, never
//!   copied.
//! - **Availability**: `<prefix>/<device>/status` is `online` (retained) while connected and
//!   `offline` (retained last will) when the agent stops or dies.
//! - **Home Assistant discovery**: a retained `sensor` config per series, republished when
//!   `homeassistant/status` says `online`.
//! - **Ingest**: `<prefix>/<device>/ingest/<series>` (a number, `{"ts","value"}` or an array)
//!   and [`IngestRule`]s that map third-party topics (Tasmota, Zigbee2MQTT, Shelly) to series.
//! - **Commands**: `<prefix>/<device>/docs/set/<key>` puts a JSON document; the outcome goes
//!   to `<prefix>/<device>/docs/result`.
//!
//! | module | owns |
//! |---|---|
//! | `config` | [`MqttConfig`], broker URL parsing, `validate()` |
//! | `topics` | topic names, filters with wildcard captures, series templates |
//! | `payload` | published bodies and decoding of received ones |
//! | `discovery` | Home Assistant discovery configs, device classes |
//! | `outbox` | the cursor file and in-flight (PUBACK) accounting |
//! | `link` | the rumqttc event loop, reconnects with backoff |
//! | `task` | [`run`]: the loop that ties them to the store; `task/incoming`: ingest and commands |
//! | `cursor` | where the outbox cursor lives: a file (SQLite), a row of the hub's database (PostgreSQL) |
//! | `lease` | [`run_on_backend`]: on a PostgreSQL hub, the client runs on the replica holding the `mqtt` lease |
//!
//! This module does not touch the store's internals: it uses the agent's `Backend` (the
//! embedded SQLite store or a hub replica's PostgreSQL database: `append_in_parts`,
//! `doc_put`, the twin edits, `series`, `log_after`, `log_end`, `log_wakeups`) and starts
//! nothing by itself: the daemon calls [`run_on_backend`].
//! See `docs/mqtt.md` for topics and payloads.

mod config;
mod cursor;
pub mod discovery;
mod error;
mod lease;
mod link;
pub mod outbox;
pub mod payload;
mod task;
pub mod topics;

pub use config::{BatchEncoding, BrokerUrl, IngestRule, MqttConfig, PublishFormat, TsUnit};
pub use error::MqttError;
pub use lease::run_on_backend;
pub use outbox::{CURSOR_FILE, CursorFile, CursorState};
pub use task::run;

/// Checks at startup what [`run`] would only find when connecting: the broker URL and the
/// TLS setup (`ca_file` readable, system roots present). Config values are checked by
/// [`MqttConfig::validate`].
pub fn preflight(cfg: &MqttConfig, device: &str) -> Result<(), MqttError> {
    let topics = topics::Topics::new(&cfg.prefix, device, &cfg.discovery_prefix);
    link::LinkSettings::new(cfg, device, &topics.status()).map(|_| ())
}
