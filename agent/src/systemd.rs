//! systemd integration for `Type=notify`: `READY=1`, `STATUS=`, `RELOADING=1`, `STOPPING=1`
//! and the watchdog. Every call is a no-op outside systemd (no `$NOTIFY_SOCKET`), so the
//! daemon calls these unconditionally.

use std::time::Duration;

use kdelta_sync::Store;
use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

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
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
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
/// follows a successful [`Store::heartbeat`] (a durable write through the writer) within the
/// ping interval. A wedged writer or a full disk thus stops the pings and systemd restarts
/// the agent. Returns at once when the watchdog is not enabled.
pub async fn watchdog_loop(store: Store, cancel: CancellationToken) {
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
        match tokio::time::timeout(period, store.heartbeat()).await {
            Ok(Ok(())) => notify(&[NotifyState::Watchdog]),
            Ok(Err(e)) => tracing::error!("health check failed, not pinging the watchdog: {e}"),
            Err(_) => tracing::error!(
                "health check took longer than {}, not pinging the watchdog",
                humantime::format_duration(period)
            ),
        }
    }
}
