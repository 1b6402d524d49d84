//! The parts of a running agent that SIGHUP can replace without a restart: the source tasks,
//! the outbound sync peers and the MQTT client. Each is started from its config section,
//! stopped with its own cancellation token (a child of the agent's shutdown token, so a
//! shutdown stops them too) and replaced as a whole: stop the old, then start the new, so two
//! clients never share a serial port, an MQTT client id or a peer link.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;
use crate::mqtt::{MqttConfig, MqttDeps};
use crate::peers::{PeerConfig, Registry};
use crate::sources::SourceStatus;
use crate::sources::{BuiltSource, IngestQueue};

/// How long a reload waits for the old sources to stop before aborting their tasks.
pub const SOURCE_STOP: Duration = Duration::from_secs(5);
/// How long a reload or shutdown waits for the MQTT client to hand back (it persists its
/// outbox cursor and says `offline` on the way out).
pub const MQTT_STOP: Duration = Duration::from_secs(3);
/// How long a reload or shutdown waits for the outbound sync sessions to end.
pub const PEERS_STOP: Duration = Duration::from_secs(3);

/// The source tasks of the running configuration. The queue and the batcher outlive them, so
/// readings already queued are still committed across a reload.
pub struct RunningSources {
    queue: Arc<IngestQueue>,
    statuses: Arc<RwLock<Vec<SourceStatus>>>,
    metrics: Arc<Metrics>,
    /// Stops these sources (not the agent).
    pub stop: CancellationToken,
    /// Waits for these sources.
    pub tasks: TaskTracker,
    aborts: Vec<AbortHandle>,
    count: usize,
}

impl RunningSources {
    /// The status list the running sources report into (and the device twin tunes).
    pub fn statuses(&self) -> &Arc<RwLock<Vec<SourceStatus>>> {
        &self.statuses
    }

    /// Spawns `built`.
    pub fn start(
        built: Vec<BuiltSource>,
        queue: &Arc<IngestQueue>,
        statuses: &Arc<RwLock<Vec<SourceStatus>>>,
        metrics: &Arc<Metrics>,
    ) -> RunningSources {
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let count = built.len();
        let aborts = crate::sources::spawn(built, queue, statuses, metrics, &tasks, &stop);
        tasks.close();
        RunningSources {
            queue: queue.clone(),
            statuses: statuses.clone(),
            metrics: metrics.clone(),
            stop,
            tasks,
            aborts,
            count,
        }
    }

    /// How many sources run.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Stops the running sources and starts `built` in their place. A source that does not
    /// stop within [`SOURCE_STOP`] is aborted first, so the old and the new never run side by
    /// side (a serial port or Modbus device opened twice).
    pub async fn replace(&mut self, built: Vec<BuiltSource>) {
        self.stop.cancel();
        if tokio::time::timeout(SOURCE_STOP, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "the old sources did not stop within {}; aborting them",
                humantime::format_duration(SOURCE_STOP)
            );
            for a in &self.aborts {
                a.abort();
            }
            if tokio::time::timeout(Duration::from_secs(1), self.tasks.wait())
                .await
                .is_err()
            {
                tracing::error!("an old source task survived its abort; starting the new ones");
            }
        }
        *self = RunningSources::start(built, &self.queue, &self.statuses, &self.metrics);
    }
}

/// The outbound sync peers (`[[sync.peers]]`) of the running configuration.
pub struct RunningPeers {
    stop: CancellationToken,
    tasks: TaskTracker,
}

/// What the peer tasks share with the rest of the agent.
pub struct PeerDeps {
    /// Status and settings.
    pub registry: Arc<Registry>,
    /// The open store.
    pub store: kdelta_sync::Store,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The agent's shutdown token (the peers' stop token is its child).
    pub shutdown: CancellationToken,
}

impl RunningPeers {
    /// Starts one task per peer.
    pub fn start(peers: &[PeerConfig], deps: &PeerDeps) -> RunningPeers {
        let stop = deps.shutdown.child_token();
        let tasks = TaskTracker::new();
        crate::peers::spawn_peers(
            peers,
            &deps.registry,
            &deps.store,
            &deps.metrics,
            &tasks,
            &stop,
        );
        tasks.close();
        RunningPeers { stop, tasks }
    }

    /// Ends every session (within [`PEERS_STOP`]); false when some did not end in time.
    pub async fn stop(&self) -> bool {
        self.stop.cancel();
        tokio::time::timeout(PEERS_STOP, self.tasks.wait())
            .await
            .is_ok()
    }

    /// Ends the sessions of the old peers and starts `peers`.
    pub async fn replace(&mut self, peers: &[PeerConfig], deps: &PeerDeps) {
        if !self.stop().await {
            tracing::warn!(
                "old sync sessions did not end within {}; starting the new peers anyway",
                humantime::format_duration(PEERS_STOP)
            );
        }
        *self = RunningPeers::start(peers, deps);
    }
}

/// The MQTT client of the running configuration (none when `mqtt.enabled` is false).
pub struct RunningMqtt {
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl RunningMqtt {
    /// Starts the client when `cfg.enabled`.
    pub fn start(cfg: &MqttConfig, deps: &MqttDeps, shutdown: &CancellationToken) -> RunningMqtt {
        let stop = shutdown.child_token();
        let task = cfg.enabled.then(|| {
            let run = crate::mqtt::run(cfg.clone(), deps.clone(), stop.clone());
            tokio::spawn(async move {
                if let Err(e) = run.await {
                    tracing::error!("the MQTT client stopped: {e}");
                }
            })
        });
        RunningMqtt { stop, task }
    }

    /// True when a client runs.
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the client (within [`MQTT_STOP`]); false when it did not stop in time.
    pub async fn stop(&mut self) -> bool {
        self.stop.cancel();
        match self.task.take() {
            None => true,
            Some(mut task) => match tokio::time::timeout(MQTT_STOP, &mut task).await {
                Ok(_) => true,
                Err(_) => {
                    task.abort();
                    false
                }
            },
        }
    }

    /// Stops the running client and starts one with `cfg`.
    pub async fn replace(
        &mut self,
        cfg: &MqttConfig,
        deps: &MqttDeps,
        shutdown: &CancellationToken,
    ) {
        if !self.stop().await {
            tracing::warn!(
                "the old MQTT client did not stop within {}; aborted it",
                humantime::format_duration(MQTT_STOP)
            );
        }
        *self = RunningMqtt::start(cfg, deps, shutdown);
    }
}
