//! The command line of `kdelta bench` (clap): each tool's arguments live with the tool.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::client::DEFAULT_URL;

/// `kdelta bench …`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Post reading batches as fast as the agent takes them; print throughput and latency.
    Ingest(BenchIngestArgs),
    /// Sync a device's backlog to a hub over a loopback WebSocket (two in-process stores and
    /// the real peer code); print readings/s, bytes on the wire and memory.
    Sync(BenchSyncArgs),
    /// Fill a store, then prune its older half while a steady ingest runs; print the prune
    /// rate and the ingest latency with and without the prune.
    Prune(super::BenchPruneArgs),
    /// Many simulated devices replay their backlogs into one, then two hub replicas on
    /// PostgreSQL (real `kdelta start` processes); print readings/s applied, sync lag and
    /// the CPU of PostgreSQL and the replicas.
    #[cfg(feature = "postgres")]
    Fleet(super::BenchFleetArgs),
}

/// `kdelta bench sync`.
#[derive(Debug, Args)]
pub struct BenchSyncArgs {
    /// Readings the device holds when the link comes up.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub readings: u64,
    /// Series they belong to: one reading per series per second, like sensors sampled at 1 Hz.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub series: u32,
    /// Readings per change, as the device's batcher committed them (50 series at 1 Hz with
    /// the default `batch_max_age` of 1 s make changes of 50).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    pub batch: u32,
    /// Compression the device offers: `zstd` or `none`.
    #[arg(long, default_value = "zstd", value_parser = ["zstd", "none"])]
    pub compression: String,
    /// Byte budget of one page (`[sync] page_bytes`).
    #[arg(long, default_value_t = kdelta_sync::protocol::DEFAULT_PAGE_BYTES, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1024..=(32 << 20)))]
    pub page_bytes: usize,
    /// Directory for the two stores (default: a new temporary directory, removed at the end).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Give up when the hub has not caught up after this long.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// Print the figures as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `kdelta bench ingest`.
#[derive(Debug, Args)]
pub struct BenchIngestArgs {
    /// URL of the agent under test.
    #[arg(long, env = "KDELTA_URL", default_value = DEFAULT_URL, value_name = "URL")]
    pub url: String,
    /// Readings per request.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    pub batch: u32,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// How long to run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: std::time::Duration,
    /// Distinct series per request.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub series: u32,
    /// Send CBOR bodies instead of JSON.
    #[arg(long)]
    pub cbor: bool,
    /// Read the server's RSS from /proc/PID/status (default: `rss_bytes` of GET /v1/status).
    #[arg(long)]
    pub pid: Option<u32>,
}
