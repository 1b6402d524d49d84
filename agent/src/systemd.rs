//! systemd integration for `Type=notify`: `READY=1`, `STATUS=`, `RELOADING=1` (a reload,
//! or a re-execution to rebase the clock), `STOPPING=1` and the watchdog. Every call is a no-op outside systemd (no `$NOTIFY_SOCKET`), so the
//! daemon calls these unconditionally.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use kdelta_sync::Store;
use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::peers::Registry;
use crate::sources::SourceStatus;
use crate::state::Agent;

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("sd_notify failed: {e}");
    }
}

/// Startup finished: the store is open and the listener is bound.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A free-form status line (`systemctl status` shows it).
pub fn status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

/// A reload (SIGHUP) begins.
pub fn reloading() {
    reloading_with(None);
}

/// The agent stops to re-execute itself (same PID): to systemd a reload, which the new
/// process image's `READY=1` ends; `status` says why.
pub fn restarting(status: &str) {
    reloading_with(Some(status));
}

fn reloading_with(status: Option<&str>) {
    let mut states = vec![NotifyState::Reloading];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    if let Some(status) = status {
        states.push(NotifyState::Status(status));
    }
    notify(&states);
}

/// The reload finished.
pub fn reloaded(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Shutdown begins.
pub fn stopping() {
    notify(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: draining and committing"),
    ]);
}

/// Pings the watchdog every half `WatchdogSec` while the store still commits: each ping
/// follows a commit within the ping interval — one of the agent's own writes or, when there
/// was none, a [`Store::heartbeat`] (a tiny durable write). A wedged writer (a lock held,
/// a hung disk) thus stops the pings and systemd restarts the agent. A **full disk** does
/// not: restarting would not free space and would lose the readings queued in memory, so
/// the pings go on while the writer answers and the disk is its only problem. Returns at
/// once when the watchdog is not enabled. On a PostgreSQL hub (`store` is `None`) the pings
/// only show the process's event loop runs: a database outage is readiness's business
/// (`/readyz`), and a restart would not end it.
pub async fn watchdog_loop(store: Option<Store>, cancel: CancellationToken) {
    let Some(timeout) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = (timeout / 2).max(Duration::from_millis(100));
    tracing::info!(
        "systemd watchdog enabled: checking the store every {}",
        humantime::format_duration(period)
    );
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let Some(store) = &store else {
            notify(&[NotifyState::Watchdog]);
            continue;
        };
        if store.committed_within(period) {
            notify(&[NotifyState::Watchdog]);
            continue;
        }
        match tokio::time::timeout(period, store.heartbeat()).await {
            Ok(Ok(())) => notify(&[NotifyState::Watchdog]),
            Ok(Err(e)) if e.is_disk_full() => {
                tracing::debug!("the disk is full; the agent is alive, pinging the watchdog");
                notify(&[NotifyState::Watchdog]);
            }
            Ok(Err(e)) => tracing::error!("health check failed, not pinging the watchdog: {e}"),
            Err(_) => tracing::error!(
                "health check took longer than {}, not pinging the watchdog",
                humantime::format_duration(period)
            ),
        }
    }
}

/// How often the `STATUS=` line is refreshed.
pub const STATUS_EVERY: Duration = Duration::from_secs(10);

/// One status line: readings per second over `elapsed` since `before` readings, sources (and
/// how many report an error), sync peers connected, and the clock when it is not trusted.
/// Returns the line and the readings total.
pub fn status_line(
    metrics: &Metrics,
    peers: &Registry,
    sources: &RwLock<Vec<SourceStatus>>,
    clock: Option<&crate::clock::ClockMonitor>,
    before: u64,
    elapsed: Duration,
) -> (String, u64) {
    let total = metrics.readings_total();
    let rate = (total.saturating_sub(before)) as f64 / elapsed.as_secs_f64().max(0.001);
    let (n_sources, failing) = {
        let sources = sources.read().unwrap_or_else(|e| e.into_inner());
        let failing = sources.iter().filter(|s| s.last_error.is_some()).count();
        (sources.len(), failing)
    };
    let (connected, known) = peers.connected_count();
    let mut line = format!("{rate:.1} readings/s; {n_sources} sources");
    if failing > 0 {
        line.push_str(&format!(" ({failing} failing)"));
    }
    line.push_str(&format!("; peers {connected}/{known} connected"));
    if let Some(clock) = clock.map(|c| c.status())
        && !clock.trusted
    {
        line.push_str(&format!("; clock untrusted ({})", clock.state));
    }
    (line, total)
}

/// Refreshes `STATUS=` every [`STATUS_EVERY`] (`systemctl status kdelta` shows it) until
/// `cancel`. Returns at once outside systemd.
pub async fn status_loop(agent: Agent, cancel: CancellationToken) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let mut before = agent.metrics.readings_total();
    let mut at = Instant::now();
    let mut ticker = tokio::time::interval(STATUS_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let (line, total) = status_line(
            &agent.metrics,
            &agent.peers,
            &agent.sources,
            agent.clock.as_deref(),
            before,
            at.elapsed(),
        );
        status(&line);
        before = total;
        at = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::SyncSection;
    use kdelta_sync::protocol::Direction;
    use std::sync::Arc;

    #[test]
    fn the_status_line_shows_rate_sources_and_peers() {
        let metrics = Arc::new(Metrics::new());
        let peers = Arc::new(Registry::new(&SyncSection::default(), "dev"));
        peers.stats_for("hub", Direction::Outbound, None);
        let sources = Arc::new(RwLock::new(vec![
            SourceStatus {
                name: "system".into(),
                ..SourceStatus::default()
            },
            SourceStatus {
                name: "serial0".into(),
                last_error: Some("unplugged".into()),
                ..SourceStatus::default()
            },
        ]));
        metrics.readings_ingested("system", 100);
        metrics.readings_ingested("http", 50);
        let reference = Arc::new(kdelta_sync::TimeReference::default());
        let clock = crate::clock::ClockMonitor::new(&Default::default(), reference.clone());
        let (line, total) = status_line(
            &metrics,
            &peers,
            &sources,
            Some(&clock),
            0,
            Duration::from_secs(10),
        );
        assert_eq!(total, 150);
        assert_eq!(
            line,
            "15.0 readings/s; 2 sources (1 failing); peers 0/1 connected"
        );
        let (line, _) = status_line(
            &metrics,
            &peers,
            &sources,
            Some(&clock),
            total,
            Duration::from_secs(10),
        );
        assert!(line.starts_with("0.0 readings/s"), "{line}");
        reference.set_local_trusted(false);
        let (line, _) = status_line(
            &metrics,
            &peers,
            &sources,
            Some(&clock),
            total,
            Duration::from_secs(10),
        );
        assert!(line.ends_with("; clock untrusted (not_assessed)"), "{line}");
    }
}
