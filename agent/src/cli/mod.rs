//! The command line: `kdelta start` runs the daemon; the other subcommands are clients of a
//! running agent's HTTP API (`--url`, `KDELTA_URL`, default `http://127.0.0.1:7878`).
//!
//! Exit codes: 0 success, 1 error (agent unreachable, request refused, I/O), 2 usage or
//! configuration error (clap's usage errors, `ConfigError`, [`UsageError`]).

mod args;
mod backup;
mod docs;
mod export;
mod import;
mod peers;
mod put_batch;
mod readings;
mod run;
mod show;
mod twin;
mod verify;

pub use args::*;
pub use run::{main, print_error};
