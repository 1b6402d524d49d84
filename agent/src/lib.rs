//! # kdelta — the edge data agent
//!
//! Wires the versioned store (`kdelta-sync`) and the sensor drivers (`kdelta-sensors`) into a
//! long-running daemon: configuration, the HTTP API, metrics, scheduling of sources, and the
//! CLI that drives a running agent. `anyhow` is used only here, at the top.
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | the top-level `Config`, layering (figment) and cross-section `validate()`; each section's type lives with its owner |
//! | [`section`] | the shape every section's `validate()` returns ([`section::InvalidValue`]) |
//! | [`time`] | the one wall clock (`now_ms`) and RFC 3339 parser/formatter |
//! | [`daemon`] | `kdelta start`: startup order, signals, shutdown |
//! | [`sources`] | scheduler, ingest queue and batcher |
//! | [`access`] | who may call the API: credential table, Host allow-list, failed-auth throttle, sync session caps |
//! | [`api`] | the HTTP API (router, handlers, errors, the auth gate) |
//! | [`scope`] | the API scopes `read` < `write` < `admin` |
//! | [`server`] | the HTTP server loop: connection cap, header read timeout, graceful drain |
//! | [`cli`] | the command line (clap) and the client subcommands |
//! | [`client`] | the HTTP client the subcommands use |
//! | [`mqtt`] | MQTT: publish, durable outbox, Home Assistant discovery, ingest, commands |
//! | [`peers`] | sync with other agents: `/v1/sync` WebSocket, outbound peers, peer status, `sync now` |
//! | [`running`] | the parts SIGHUP replaces: sources, outbound peers, the MQTT client |
//! | [`tls`] | rustls (ring): the HTTPS listener, mutual TLS, client configs, PEM loading |
//! | [`device_twin`] | the agent's own twin `device/<device_name>`: `reported` state, `desired` intervals |

pub mod access;
pub mod api;
pub mod bench;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod device_twin;
pub mod lockfile;
pub mod logging;
pub mod metrics;
pub mod mqtt;
pub mod peers;
pub mod running;
pub mod scope;
pub mod section;
pub mod server;
pub mod sources;
pub mod state;
pub mod systemd;
pub mod time;
pub mod tls;

#[cfg(test)]
mod module_graph;
