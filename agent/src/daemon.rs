//! `kdelta start`: the process around the library's [`Agent`]. It installs the signal
//! handlers first (so a signal during startup is queued, not fatal), starts the agent, tells
//! systemd (`READY=1`, `STATUS=`, the watchdog, `RELOADING=1`, `STOPPING=1`) and turns
//! signals into calls on the [`RunningAgent`]: SIGTERM/SIGINT → [`RunningAgent::shutdown`],
//! SIGHUP → re-read the configuration and [`RunningAgent::reload`]. When the agent stopped
//! itself to rebase its store's clock (`crate::clock_rebase::while_running`), it shuts
//! down the same way, tells systemd `RELOADING=1` instead of `STOPPING=1`, and the caller
//! re-executes the process ([`reexec`]: same PID, argv and environment), whose start
//! rebases and says `READY=1`. The agent's life — startup order, shutdown order and
//! budgets — is documented in [`crate::agent`].

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::agent::{Agent, Listen, RunningAgent};
use crate::config::{Config, ConfigArgs};
use crate::logging::Logging;
use crate::systemd;

/// How [`run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Stopped for good (a signal, or a fatal error returned as such).
    Stopped,
    /// Stopped cleanly to rebase the store's clock: re-execute the process ([`reexec`]).
    RestartForClockRebase,
}

/// What the wait loop saw.
enum Event {
    Stop(&'static str),
    Reload,
    Stopped,
}

/// Runs the agent until a stop signal, or until it stopped itself to rebase its clock
/// ([`Exit::RestartForClockRebase`]); returns an error for a fatal failure (the caller
/// prints the chain and exits non-zero).
pub async fn run(config: Config, args: ConfigArgs, logging: Logging) -> anyhow::Result<Exit> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;

    let shutdown = CancellationToken::new();
    let listen = Listen::Bind(config.api.listen);
    let mut running = Agent::start(config, listen, shutdown.clone()).await?;
    running.set_logging(logging);
    systemd::ready(&running.summary());
    // Both stop before the agent's shutdown begins, so no health check runs on a closing
    // store.
    let loops = CancellationToken::new();
    let watchdog = tokio::spawn(systemd::watchdog_loop(
        running.agent().backend.sqlite().cloned(),
        loops.clone(),
    ));
    let status_line = tokio::spawn(systemd::status_loop(running.agent().clone(), loops.clone()));

    loop {
        let event = tokio::select! {
            _ = term.recv() => Event::Stop("SIGTERM"),
            _ = int.recv() => Event::Stop("SIGINT"),
            _ = hup.recv() => Event::Reload,
            _ = running.stopped() => Event::Stopped,
        };
        match event {
            Event::Reload => reload(&mut running, &args).await,
            Event::Stop(name) => {
                tracing::info!("{name} received: shutting down");
                break;
            }
            Event::Stopped => break,
        }
    }
    let restart = running
        .agent()
        .clock
        .as_ref()
        .and_then(|clock| clock.restart_requested());
    match restart {
        Some(_) => systemd::restarting("restarting to rebase the store's clock"),
        None => systemd::stopping(),
    }
    loops.cancel();
    let _ = watchdog.await;
    let _ = status_line.await;
    running.shutdown().await?;
    Ok(match restart {
        Some(_) => Exit::RestartForClockRebase,
        None => Exit::Stopped,
    })
}

/// Re-executes this process (`/proc/self/exe`, same argv and environment, plus
/// [`RESTARTED_ENV`](crate::clock_rebase::RESTARTED_ENV) so it never does so twice): the PID
/// stays, so systemd keeps watching it. Returns only when the exec failed.
pub fn reexec() -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let mut argv = std::env::args_os();
    let mut cmd = std::process::Command::new("/proc/self/exe");
    if let Some(arg0) = argv.next() {
        cmd.arg0(arg0);
    }
    tracing::info!("stopped cleanly: re-executing the process to rebase the store's clock");
    let e = cmd
        .args(argv)
        .env(crate::clock_rebase::RESTARTED_ENV, "1")
        .exec();
    anyhow::Error::new(e).context(
        "re-executing /proc/self/exe to rebase the store's clock failed; the agent stopped cleanly and rebases at its next start",
    )
}

/// SIGHUP: re-reads the configuration from where `start` read it and reloads the agent.
async fn reload(running: &mut RunningAgent, args: &ConfigArgs) {
    systemd::reloading();
    tracing::info!("SIGHUP received: reloading the configuration");
    match crate::config::load(args) {
        Err(e) => {
            tracing::error!("reload failed, keeping the running configuration: {e}");
            tracing::info!("reload done: nothing reloaded");
        }
        Ok(loaded) => {
            running.reload(loaded.config).await;
        }
    }
    systemd::reloaded(&running.summary());
}
