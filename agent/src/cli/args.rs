//! The command line as clap parses it (raw). Validation beyond clap's (JSON values, time
//! forms) happens in the subcommands, which turn these into API requests.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::client::DEFAULT_URL;

/// A mistake in how a command was called (bad JSON argument, conflicting options): exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// kdelta — edge data agent: records sensors into a versioned store, serves it over HTTP.
#[derive(Debug, Parser)]
#[command(
    name = "kdelta",
    version,
    propagate_version = true,
    arg_required_else_help = true,
    after_help = "Start the agent with `kdelta start` (no configuration needed), then try `kdelta status`.\n\
                  Exit codes: 0 success, 1 error, 2 usage or configuration error."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent in the foreground: record the sources and serve the HTTP API.
    ///
    /// With no configuration it records the built-in `system` source every 10 s into
    /// ./kdelta-data (or $STATE_DIRECTORY under systemd) and listens on 127.0.0.1:7878.
    /// Stops cleanly on SIGTERM or Ctrl-C; SIGHUP reloads the log level.
    Start(StartArgs),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Show the running agent's status: store figures, sources, uptime.
    Status(Conn),
    /// List the configured sources with their last reading and last error.
    Sources(Conn),
    /// List the sync peers: connection, last sync, lag per direction, bytes, last error.
    Peers(Conn),
    /// Sync control.
    #[command(subcommand)]
    Sync(SyncCommand),
    /// List the series with their unit, count and time range.
    Series(Conn),
    /// Show the latest reading of every series (or of the series named).
    Latest(LatestArgs),
    /// Read a series: raw readings, or aggregates per time bucket with --agg.
    Query(QueryArgs),
    /// Import readings from a CSV file (`series,ts,value[,unit]` with a header line).
    Import(ImportArgs),
    /// Export a series as CSV or JSON.
    Export(ExportArgs),
    /// Write a new version of a document.
    Put(PutArgs),
    /// Read a document (its current value, or its value at a past time).
    Get(GetArgs),
    /// Delete a document (a tombstone version; history is kept).
    Delete(KeyArgs),
    /// List the versions of a document, newest first.
    History(HistoryArgs),
    /// Show what changed in a document between two points in time.
    Diff(DiffArgs),
    /// Show the concurrent versions (siblings) of a document.
    Siblings(KeyArgs),
    /// List documents by key prefix.
    Docs(DocsArgs),
    /// Twins (merge documents): create, patch, read, history, diff. See docs/twins.md.
    #[command(subcommand)]
    Twin(TwinCommand),
    /// Save a backup of the running agent's store to FILE (verified after writing).
    Backup(BackupArgs),
    /// Restore a backup into a stopped agent's data directory (optionally as of a past time).
    Restore(RestoreArgs),
    /// Give a stopped agent's store a new identity (after imaging an SD card), or with
    /// --rebase-clock a new actor for a store whose own changes are stamped in the future.
    Rekey(RekeyArgs),
    /// Re-check a store's signed history: every actor's hash chain, every signature and the
    /// digest (read-only: the agent may run). Exit status 1 on any failure.
    Verify(OfflineDir),
    /// Rewrite a stopped agent's store so pruned space goes back to the file system (stores
    /// made by releases before incremental auto-vacuum; needs about twice its size free).
    Compact(OfflineDir),
    /// Load tools.
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
}

/// `kdelta twin …`.
#[derive(Debug, Subcommand)]
pub enum TwinCommand {
    /// Create a twin, empty or with an initial JSON object.
    #[command(after_help = "Example: kdelta twin create device/pi-01 '{\"desired\": {}}'")]
    Create(TwinCreateArgs),
    /// Change a twin: a JSON Merge Patch, or path operations with --ops.
    #[command(
        after_help = "Examples:\n  kdelta twin patch device/pi-01 '{\"desired\": {\"sources\": {\"system\": {\"interval\": \"30s\"}}}}'\n  kdelta twin patch device/pi-01 --ops '[{\"op\": \"increment\", \"path\": \"/reported/boots\"}]'"
    )]
    Patch(TwinPatchArgs),
    /// Show a twin's merged value (now, or at a past time).
    Get(GetArgs),
    /// Show who changed which paths of a twin, newest first.
    History(HistoryArgs),
    /// Show what changed in a twin between two points in time.
    Diff(DiffArgs),
    /// List twins by key prefix.
    List(TwinListArgs),
}

/// `kdelta twin create`.
#[derive(Debug, Args)]
pub struct TwinCreateArgs {
    /// Twin key, e.g. `device/pi-01`.
    pub key: String,
    /// The initial value, a JSON object (`-` reads it from stdin).
    pub value: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: Conn,
}

/// `kdelta twin patch`.
#[derive(Debug, Args)]
pub struct TwinPatchArgs {
    /// Twin key.
    pub key: String,
    /// The patch: a JSON Merge Patch object, or with --ops a JSON array of operations
    /// (`-` reads it from stdin).
    pub patch: String,
    /// The patch is a list of path operations (set, delete, increment, insert).
    #[arg(long)]
    pub ops: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: Conn,
}

/// `kdelta twin list`.
#[derive(Debug, Args)]
pub struct TwinListArgs {
    /// Only keys starting with this prefix.
    #[arg(long, default_value = "")]
    pub prefix: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: Conn,
}

/// Where the configuration comes from (`start` and `config check`).
#[derive(Debug, Clone, Args)]
pub struct ConfigFlags {
    /// Configuration file, read instead of ./kdelta.toml (after /etc/kdelta/kdelta.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory holding the store [key: data_dir, env: KDELTA_DATA_DIR].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the HTTP API, IP:PORT (port 0 picks a free one) [key: api.listen, env:
    /// KDELTA_API__LISTEN].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Log filter, e.g. `debug` or `info,kdelta::sources=debug` [key: log.level].
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log JSON lines instead of human-readable ones [key: log.format = "json"].
    #[arg(long)]
    pub log_json: bool,
    /// Publish to (and ingest from) this MQTT broker, `mqtt://host[:port]` or
    /// `mqtts://host[:port]` [keys: mqtt.enabled = true, mqtt.url].
    #[arg(long, value_name = "URL")]
    pub mqtt: Option<String>,
}

/// `kdelta start`.
#[derive(Debug, Clone, Args)]
pub struct StartArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigFlags,
}

/// `kdelta config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration; print the effective values and where each came from.
    ///
    /// Exits 0 when valid, 2 when not (the error names the key and the file).
    Check(ConfigFlags),
}

/// How to reach the agent.
#[derive(Debug, Clone, Args)]
pub struct Conn {
    /// URL of the running agent.
    #[arg(long, env = "KDELTA_URL", default_value = DEFAULT_URL, value_name = "URL")]
    pub url: String,
    /// Print the agent's JSON answer as is.
    #[arg(long)]
    pub json: bool,
    /// Bearer token for an agent with `[api] tokens` (prefer KDELTA_TOKEN or --token-file:
    /// a flag shows in `ps`).
    #[arg(
        long,
        env = "KDELTA_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// File holding the bearer token (first line). Default: /etc/kdelta/token when it exists
    /// and is readable (the .deb makes it readable by group kdelta).
    #[arg(long, env = "KDELTA_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

impl Conn {
    /// A client for the agent at `--url`, authenticated as `--token`, `KDELTA_TOKEN`,
    /// `--token-file` or the default token file, in that order.
    pub fn client(&self) -> Result<crate::client::ApiClient, crate::client::ClientError> {
        let token = crate::client::resolve_token(self.token.clone(), self.token_file.as_deref())?;
        Ok(crate::client::ApiClient::new(&self.url)?.with_token(token))
    }
}

/// `kdelta sync …`.
#[derive(Debug, Subcommand)]
pub enum SyncCommand {
    /// Connect to every outbound peer now (ending any reconnect backoff) and wait until each
    /// is caught up both ways or has failed; prints one line per peer.
    ///
    /// Exits 0 when every peer synced, 1 when one failed or did not finish in time.
    Now(SyncNowArgs),
}

/// `kdelta sync now`.
#[derive(Debug, Args)]
pub struct SyncNowArgs {
    /// Only this outbound peer (its name in `[[sync.peers]]`).
    #[arg(long, value_name = "NAME")]
    pub peer: Option<String>,
    /// How long to wait for the peers, e.g. `30s` or `2m` (at most 10m).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: Conn,
}

/// `kdelta latest`.
#[derive(Debug, Args)]
pub struct LatestArgs {
    /// Series to show (all when none is given).
    pub series: Vec<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: Conn,
}

/// Aggregate functions of `query --agg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AggFn {
    /// Mean.
    Avg,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Sum.
    Sum,
    /// Number of readings.
    Count,
    /// Earliest value.
    First,
    /// Latest value.
    Last,
}

impl AggFn {
    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            AggFn::Avg => "avg",
            AggFn::Min => "min",
            AggFn::Max => "max",
            AggFn::Sum => "sum",
            AggFn::Count => "count",
            AggFn::First => "first",
            AggFn::Last => "last",
        }
    }
}

/// `kdelta query`.
#[derive(Debug, Args)]
#[command(
    after_help = "Times: unix ms, RFC 3339 (2025-11-24T16:00:00Z), `now`, `now-1h`, or `-1h` for short.\n\
                        Examples:\n  kdelta query system.cpu_usage --from -15m\n  \
                        kdelta query system.cpu_usage --from -1d --agg avg --bucket 1h"
)]
pub struct QueryArgs {
    /// Series name.
    pub series: String,
    /// Start (inclusive). Default: 1 hour ago.
    #[arg(long, allow_hyphen_values = true, value_name = "TIME")]
    pub from: Option<String>,
    /// End (exclusive). Default: now.
    #[arg(long, allow_hyphen_values = true, value_name = "TIME")]
    pub to: Option<String>,
    /// Most readings shown (raw queries).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Aggregate per bucket instead of listing raw readings.
    #[arg(long, value_enum, value_name = "FN")]
    pub agg: Option<AggFn>,
    /// Bucket width for --agg, e.g. `10s`, `1m`, `1h`.
    #[arg(long, default_value = "1m", value_name = "WIDTH")]
    pub bucket: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: Conn,
}

/// `kdelta import`.
#[derive(Debug, Args)]
#[command(
    after_help = "The file needs a header naming the columns `series`, `ts` and `value` (and optionally\n\
                        `unit`), in any order. `ts` is unix ms or RFC 3339. Progress is kept in FILE.kdelta-import\n\
                        after every acknowledged batch, so an interrupted import continues with --resume."
)]
pub struct ImportArgs {
    /// CSV file to import.
    pub file: PathBuf,
    /// Readings per request.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    pub batch: u32,
    /// Continue an interrupted import after its last acknowledged line.
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: Conn,
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// `series,ts,value,unit` with a header (re-importable with `kdelta import`).
    Csv,
    /// A JSON array of `{series, ts, value, unit}`.
    Json,
}

/// `kdelta export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Series name.
    pub series: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ExportFormat::Csv)]
    pub format: ExportFormat,
    /// Start (inclusive). Default: the first reading.
    #[arg(long, allow_hyphen_values = true, value_name = "TIME")]
    pub from: Option<String>,
    /// End (exclusive). Default: now.
    #[arg(long, allow_hyphen_values = true, value_name = "TIME")]
    pub to: Option<String>,
    /// Write to this file instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: Conn,
}

/// A command on one document key.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// Document key, e.g. `greenhouse/setpoint`.
    pub key: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: Conn,
}

/// `kdelta put`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kdelta put greenhouse/setpoint '{\"temp\": 22}'\n  kdelta put --batch docs.jsonl    # one {\"key\", \"value\"} or {\"key\", \"delete\": true} per line"
)]
pub struct PutArgs {
    /// Document key.
    #[arg(required_unless_present = "batch")]
    pub key: Option<String>,
    /// The value, as JSON (`-` reads it from stdin).
    #[arg(required_unless_present = "batch")]
    pub value: Option<String>,
    /// Write the documents of a JSON lines file (`-` for stdin): one
    /// `{"key", "value"}` or `{"key", "delete": true}` per line (optional `"context"`),
    /// sent as atomic batches (`POST /v1/docs`).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["key", "value"])]
    pub batch: Option<std::path::PathBuf>,
    /// Most documents per batch (one atomic change each; at most the agent's
    /// `[store] max_batch_docs`).
    #[arg(long, value_name = "N", default_value_t = 500, requires = "batch",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: u32,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: Conn,
}

/// `kdelta get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Document key.
    pub key: String,
    /// Read the value as it was at this time (unix ms, RFC 3339, `now-1h`, `-1h`) or HLC.
    #[arg(long, allow_hyphen_values = true, value_name = "TIME")]
    pub as_of: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: Conn,
}

/// `kdelta history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Document key.
    pub key: String,
    /// Most versions shown.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: Conn,
}

/// `kdelta diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Document key.
    pub key: String,
    /// The earlier point (time or HLC).
    #[arg(long, allow_hyphen_values = true, value_name = "TIME")]
    pub from: String,
    /// The later point (time or HLC). Default: now.
    #[arg(
        long,
        allow_hyphen_values = true,
        value_name = "TIME",
        default_value = "now"
    )]
    pub to: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: Conn,
}

/// `kdelta docs`.
#[derive(Debug, Args)]
pub struct DocsArgs {
    /// Only keys starting with this prefix.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// List the documents as they were at this time.
    #[arg(long, allow_hyphen_values = true, value_name = "TIME")]
    pub as_of: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: Conn,
}

/// `kdelta backup`.
#[derive(Debug, Args)]
#[command(
    after_help = "The agent keeps running and recording meanwhile; the backup holds exactly what was committed\n\
                  when it started. Needs the `admin` scope when the API has tokens.\n\
                  Example: kdelta backup /mnt/usb/pi-01.kdbk"
)]
pub struct BackupArgs {
    /// File to write (must not exist). Conventionally `*.kdbk`.
    pub file: PathBuf,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: Conn,
}

/// Where a stopped agent's store is: the data directory from the flag or the configuration.
#[derive(Debug, Clone, Args)]
pub struct OfflineDir {
    /// Data directory [key: data_dir, env: KDELTA_DATA_DIR]. Default: the configuration's.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Configuration file, read instead of ./kdelta.toml (after /etc/kdelta/kdelta.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `kdelta rekey`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Stop the agent first (systemctl stop kdelta).\n\
                  Plain rekey is for a copied store (an imaged SD card): the copy gets its own identity and no\n\
                  claim on the original's sync credentials.\n\
                  --rebase-clock is for a store whose own changes were stamped in the future (its clock once ran\n\
                  ahead): it takes a new actor stamped by the (now correct) wall clock, and a record signed by the\n\
                  old actor's key moves its device credential on at its hubs. The agent does this itself at start\n\
                  when it trusts its clock. Examples:\n  kdelta rekey --data-dir /var/lib/kdelta\n  \
                  kdelta rekey --rebase-clock --data-dir /var/lib/kdelta")]
pub struct RekeyArgs {
    /// The data directory.
    #[command(flatten)]
    pub dir: OfflineDir,
    /// Rebase the clock instead: only when the store's own newest change runs more than
    /// `store.max_clock_offset_ms` ahead of the wall clock, which must be right.
    #[arg(long)]
    pub rebase_clock: bool,
}

/// `kdelta restore`.
#[derive(Debug, Args)]
#[command(
    after_help = "Stop the agent first (systemctl stop kdelta). The file is verified (size, hash, digest) before\n\
                  anything in DIR changes. The restored store gets a new identity unless --same-identity.\n\
                  Examples:\n  kdelta restore pi-01.kdbk --data-dir /var/lib/kdelta\n  \
                  kdelta restore pi-01.kdbk --data-dir /var/lib/kdelta --force --as-of 2026-03-01T12:00:00Z"
)]
pub struct RestoreArgs {
    /// The backup file.
    pub file: PathBuf,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub dir: OfflineDir,
    /// Replace the store in a data directory that is not empty.
    #[arg(long)]
    pub force: bool,
    /// Keep the backed-up store's identity (actor id). Only to replace a dead device: if the
    /// original (or another copy) still runs, the two are a cloned card.
    #[arg(long)]
    pub same_identity: bool,
    /// Keep only the changes made at or before this time (RFC 3339, unix ms, `now-1h`, or an
    /// HLC `<ms>:<logical>`): documents, twins and readings as they were then.
    #[arg(long, allow_hyphen_values = true, value_name = "TIME")]
    pub as_of: Option<String>,
}
