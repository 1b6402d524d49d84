//! # kdelta — the edge data agent
//!
//! Wires the versioned store (`kdelta-sync`) and the sensor drivers (`kdelta-sensors`) into a
//! long-running daemon: configuration, the HTTP API, metrics, scheduling of sources, and the
//! CLI that drives a running agent. `anyhow` is used only here, at the top.

pub mod api;
pub mod metrics;
pub mod state;
