//! Entry point of the binary: parses the command line, runs the subcommand, prints errors
//! with their cause chain and maps them to exit codes (0 ok, 1 error, 2 usage/config).

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use figment::value::Value;

use super::args::{Cli, Command, ConfigCommand, ConfigFlags, SyncCommand, UsageError};
use crate::bench::BenchCommand;
use crate::config::{self, ConfigArgs, ConfigError};

/// Runs the command line of this process and returns its exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse(); // exits 2 itself on a usage error, 0 for --help/--version
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            print_error(&e);
            exit_code(&e)
        }
    }
}

/// Prints `error: …` and one `caused by:` line per cause.
pub fn print_error(e: &anyhow::Error) {
    eprintln!("error: {e}");
    for cause in e.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
}

fn exit_code(e: &anyhow::Error) -> ExitCode {
    let usage = e.chain().any(|c| {
        c.downcast_ref::<ConfigError>().is_some()
            || c.downcast_ref::<UsageError>().is_some()
            || crate::backend::is_refused_start(c)
    });
    ExitCode::from(if usage { 2 } else { 1 })
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Start(args) => start(&args.config),
        Command::Config(ConfigCommand::Check(flags)) => config_check(&flags),
        Command::Bench(BenchCommand::Ingest(args)) => {
            multi_thread()?.block_on(crate::bench::ingest(args))
        }
        Command::Bench(BenchCommand::Sync(args)) => {
            multi_thread()?.block_on(crate::bench::sync(args))
        }
        Command::Restore(args) => multi_thread()?.block_on(super::backup::restore(args)),
        Command::Rekey(dir) => multi_thread()?.block_on(super::backup::rekey(dir)),
        Command::Verify(dir) => multi_thread()?.block_on(super::verify::verify(dir)),
        Command::Compact(dir) => multi_thread()?.block_on(super::backup::compact(dir)),
        Command::Bench(BenchCommand::Prune(args)) => {
            multi_thread()?.block_on(crate::bench::prune(args))
        }
        #[cfg(feature = "postgres")]
        Command::Bench(BenchCommand::Fleet(args)) => {
            multi_thread()?.block_on(crate::bench::fleet(args))
        }
        other => current_thread()?.block_on(client_command(other)),
    }
}

async fn client_command(command: Command) -> anyhow::Result<()> {
    use super::{docs, export, import, readings};
    match command {
        Command::Status(conn) => readings::status(conn).await,
        Command::Sources(conn) => readings::sources(conn).await,
        Command::Peers(conn) => super::peers::peers(conn).await,
        Command::Sync(SyncCommand::Now(args)) => super::peers::sync_now(args).await,
        Command::Series(conn) => readings::series(conn).await,
        Command::Latest(args) => readings::latest(args).await,
        Command::Query(args) => readings::query(args).await,
        Command::Import(args) => import::import(args).await,
        Command::Export(args) => export::export(args).await,
        Command::Put(args) => docs::put(args).await,
        Command::Get(args) => docs::get(args).await,
        Command::Delete(args) => docs::delete(args).await,
        Command::History(args) => docs::history(args).await,
        Command::Diff(args) => docs::diff(args).await,
        Command::Siblings(args) => docs::siblings(args).await,
        Command::Docs(args) => docs::list(args).await,
        Command::Twin(cmd) => super::twin::run(cmd).await,
        Command::Backup(args) => super::backup::backup(args).await,
        Command::Start(_)
        | Command::Config(_)
        | Command::Bench(_)
        | Command::Restore(_)
        | Command::Rekey(_)
        | Command::Verify(_)
        | Command::Compact(_) => {
            unreachable!("handled by run()")
        }
    }
}

fn multi_thread() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kdelta")
        .build()
        .context("starting the async runtime")
}

fn current_thread() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

impl ConfigFlags {
    /// The configuration sources these flags describe.
    pub fn to_config_args(&self) -> ConfigArgs {
        let mut flags: Vec<(&'static str, &'static str, Value)> = Vec::new();
        if let Some(dir) = &self.data_dir {
            flags.push((
                "data_dir",
                "--data-dir",
                Value::from(dir.display().to_string()),
            ));
        }
        if let Some(listen) = &self.listen {
            flags.push(("api.listen", "--listen", Value::from(listen.clone())));
        }
        if let Some(level) = &self.log_level {
            flags.push(("log.level", "--log-level", Value::from(level.clone())));
        }
        if self.log_json {
            flags.push(("log.format", "--log-json", Value::from("json")));
        }
        if let Some(url) = &self.mqtt {
            flags.push(("mqtt.enabled", "--mqtt", Value::from(true)));
            flags.push(("mqtt.url", "--mqtt", Value::from(url.clone())));
        }
        ConfigArgs {
            file: self.config.clone(),
            flags,
            ..ConfigArgs::default()
        }
    }
}

fn start(flags: &ConfigFlags) -> anyhow::Result<()> {
    let args = flags.to_config_args();
    let loaded = config::load(&args)?;
    let logging = crate::logging::init(&loaded.config.log).context("setting up logging")?;
    let runtime = multi_thread()?;
    let result = runtime.block_on(crate::daemon::run(loaded.config, args, logging));
    // Blocking threads (a sensor read) must not hold the exit past the shutdown budget.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result? {
        crate::daemon::Exit::Stopped => Ok(()),
        // Returns only when the exec failed: exit non-zero, systemd restarts the agent.
        crate::daemon::Exit::RestartForClockRebase => Err(crate::daemon::reexec()),
    }
}

fn config_check(flags: &ConfigFlags) -> anyhow::Result<()> {
    let args = flags.to_config_args();
    let loaded = config::load(&args)?;
    let mut out = String::new();
    out.push_str("# kdelta configuration: valid\n");
    let file = |path: &std::path::Path| {
        let state = if path.is_file() { "" } else { " (not found)" };
        format!("{}{state}", path.display())
    };
    let local = args
        .file
        .clone()
        .unwrap_or_else(|| format!("./{}", config::LOCAL_CONFIG_FILE).into());
    out.push_str(&format!(
        "# layers, lowest first: defaults < {} < {} < KDELTA_* environment < flags\n\n",
        file(&args.system_file),
        file(&local),
    ));
    out.push_str(&loaded.to_toml());
    out.push_str("\n# where each value came from\n");
    let rows = loaded.origins();
    let width = rows
        .iter()
        .map(|(k, v, _)| k.len() + v.len() + 3)
        .max()
        .unwrap_or(0)
        .min(72);
    for (key, value, origin) in rows {
        let assignment = format!("{key} = {value}");
        out.push_str(&format!("# {assignment:<width$}  <- {origin}\n"));
    }
    print!("{out}");
    Ok(())
}
