//! `kdelta start`: the process around the library's [`Agent`]. It installs the signal
//! handlers first (so a signal during startup is queued, not fatal), starts the agent, tells
//! systemd (`READY=1`, `STATUS=`, the watchdog, `RELOADING=1`, `STOPPING=1`) and turns
//! signals into calls on the [`RunningAgent`]: SIGTERM/SIGINT → [`RunningAgent::shutdown`],
//! SIGHUP → re-read the configuration and [`RunningAgent::reload`]. The agent's life —
//! startup order, shutdown order and budgets — is documented in [`crate::agent`].

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::agent::{Agent, Listen, RunningAgent};
use crate::config::{Config, ConfigArgs};
use crate::logging::Logging;
use crate::systemd;

/// What the wait loop saw.
enum Event {
    Stop(&'static str),
    Reload,
    Stopped,
}

/// Runs the agent until a stop signal; returns an error for a fatal failure (the caller
/// prints the chain and exits non-zero).
pub async fn run(config: Config, args: ConfigArgs, logging: Logging) -> anyhow::Result<()> {
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
    systemd::stopping();
    loops.cancel();
    let _ = watchdog.await;
    let _ = status_line.await;
    running.shutdown().await
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
