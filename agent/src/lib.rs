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
//! | [`agent`] | the agent as a library: `Agent::start` → `RunningAgent` (`local_addr`, `reload`, `shutdown`), `ConfigDiff`, the replaceable parts |
//! | [`backend`] | which store the agent runs on: `[store] backend`/`url`, SQLite or a PostgreSQL hub replica (feature `postgres`), `501 not_on_this_backend` |
//! | [`state`] | [`state::Agent`], the one cheap-to-clone handle on a running agent's shared parts |
//! | [`daemon`] | `kdelta start`: signals and systemd around the library's agent |
//! | [`sources`] | scheduler, ingest queue and batcher |
//! | [`access`] | who may call the API: credential table, Host allow-list, failed-auth throttle, sync session caps |
//! | [`api`] | the HTTP API (router, handlers, errors, the auth gate) |
//! | [`scope`] | the API scopes `read` < `write` < `admin` |
//! | [`secret`] | token secrets: SHA-256 digests, hex digests, token files (API and sync tokens) |
//! | [`server`] | the HTTP server loop: connection cap, header read timeout, graceful drain |
//! | [`cli`] | the command line (clap) and the client subcommands |
//! | [`client`] | the HTTP client the subcommands use |
//! | [`mqtt`] | MQTT: publish, durable outbox, Home Assistant discovery, ingest, commands |
//! | [`peers`] | sync with other agents: `/v1/sync` WebSocket, outbound peers, peer status, `sync now` |
//! | [`tls`] | rustls (ring): the HTTPS listener, mutual TLS, client configs, PEM loading |
//! | [`internal_events`] | one type per observable event (ingest commits, sync sessions, MQTT) that logs and counts it together |
//! | [`device_twin`] | the agent's own twin `device/<device_name>`: `reported` state, `desired` intervals |

pub mod access;
pub mod agent;
pub mod api;
pub mod backend;
pub mod backup;
pub mod bench;
pub mod cli;
pub mod client;
pub mod clock;
pub mod clock_rebase;
pub mod config;
pub mod daemon;
pub mod device_twin;
pub mod internal_events;
pub mod lockfile;
pub mod logging;
pub mod metrics;
pub mod mqtt;
pub mod peers;
pub mod retention;
pub mod sample_timing;
pub mod scope;
pub mod secret;
pub mod section;
pub mod server;
pub mod sources;
pub mod state;
pub mod systemd;
pub mod time;
pub mod tls;

#[cfg(test)]
mod module_graph;
