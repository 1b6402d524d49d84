//! [`RunningAgent::shutdown`]: the documented shutdown order (see the module docs of
//! [`crate::agent`]) within [`SHUTDOWN_BUDGET`], each step under its own limit.

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::anyhow;

use super::parts::{MQTT_STOP, PEERS_STOP, Part};
use super::running::RunningAgent;
use super::{HTTP_DRAIN, SHUTDOWN_BUDGET, SOURCES_SHUTDOWN_STOP, STORE_CLOSE_RESERVE, TWIN_STOP};

/// Kept back from [`SHUTDOWN_BUDGET`] for the process to exit.
const EXIT_RESERVE: Duration = Duration::from_millis(500);
/// After the batcher was told to give up: how long it may take to return.
const BATCHER_GIVE_UP: Duration = Duration::from_millis(500);
/// The store always gets at least this long to close.
const STORE_CLOSE_MIN: Duration = Duration::from_millis(200);

impl RunningAgent {
    /// Drains and stops the agent: readings already accepted are committed, the store is
    /// closed and the data directory unlocked. Returns the fatal error that stopped the
    /// agent (see [`RunningAgent::stopped`]) or the first step that failed its budget.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + SHUTDOWN_BUDGET - EXIT_RESERVE;
        let agent = self.agent.clone();
        agent.ready.store(false, Ordering::SeqCst);
        agent.shutdown.cancel();
        self.http_stop.cancel();
        let server_done = self.server_done;
        let server = &mut self.server;
        let (http_done, sources_done) = tokio::join!(
            async { server_done || tokio::time::timeout(HTTP_DRAIN, server).await.is_ok() },
            self.sources.stop(SOURCES_SHUTDOWN_STOP),
        );
        if !http_done {
            tracing::warn!(
                "HTTP requests still running after {}; closing their connections",
                humantime::format_duration(HTTP_DRAIN)
            );
            self.server.abort();
        }
        if !sources_done {
            tracing::warn!(
                "sources did not stop within {}; their queued readings are still committed",
                humantime::format_duration(SOURCES_SHUTDOWN_STOP)
            );
        }
        self.queue.close();
        let mut result = self.fatal.take().map_or(Ok(()), Err);
        if !self.batcher_done {
            result = result.and(self.finish_batcher(deadline).await);
        }
        let (mqtt_stopped, peers_stopped) =
            tokio::join!(self.mqtt.stop(MQTT_STOP), self.peers.stop(PEERS_STOP));
        if !mqtt_stopped {
            tracing::warn!(
                "the MQTT client did not stop within {}",
                humantime::format_duration(MQTT_STOP)
            );
        }
        if !peers_stopped {
            tracing::warn!(
                "sync peers did not stop within {}",
                humantime::format_duration(PEERS_STOP)
            );
        }
        if let Some(task) = self.device_twin.take() {
            let _ = tokio::time::timeout(TWIN_STOP, task).await;
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if tokio::time::timeout(remaining.max(STORE_CLOSE_MIN), agent.backend.close())
            .await
            .is_err()
        {
            result = result.and(Err(anyhow!(
                "the store did not close within the shutdown budget"
            )));
        }
        drop(self.lock.take());
        if result.is_ok() {
            tracing::info!("stopped cleanly");
        }
        result
    }

    /// Lets the batcher commit what it holds (the queue is closed), keeping
    /// [`STORE_CLOSE_RESERVE`] of the budget for the store.
    async fn finish_batcher(&mut self, deadline: tokio::time::Instant) -> anyhow::Result<()> {
        self.batcher_done = true;
        let Some(batcher) = self.batcher.as_mut() else {
            return Ok(());
        };
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(remaining.saturating_sub(STORE_CLOSE_RESERVE), &mut *batcher)
            .await
        {
            Ok(Ok(Ok(()))) => {
                tracing::debug!("pending readings committed");
                Ok(())
            }
            Ok(Ok(Err(e))) => Err(e.context("committing pending readings")),
            Ok(Err(join)) => Err(anyhow!("the batcher task failed: {join}")),
            Err(_) => {
                self.give_up.cancel();
                if matches!(
                    tokio::time::timeout(BATCHER_GIVE_UP, &mut *batcher).await,
                    Ok(Ok(Ok(())))
                ) {
                    Ok(())
                } else {
                    batcher.abort();
                    Err(anyhow!(
                        "could not commit the pending readings within the shutdown budget"
                    ))
                }
            }
        }
    }
}
