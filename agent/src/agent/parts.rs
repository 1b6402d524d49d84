//! The parts of a running agent that a reload can replace without a restart — the source
//! tasks, the outbound sync peers and the MQTT client — behind one shape, [`Part`]: started
//! from a spec (built sources, a config section) and the [`Agent`] handle, stopped within a
//! budget, replaced as a whole. Replacing stops the old before starting the new, so two
//! clients never share a serial port, an MQTT client id or a peer link.
//!
//! Each part stops on its own token; the peers' and the MQTT client's are children of the
//! agent's shutdown token, so cancelling that one stops them too.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::mqtt::MqttConfig;
use crate::peers::PeerConfig;
use crate::sources::{BuiltSource, IngestQueue};
use crate::state::Agent;

/// How long a reload waits for the old sources to stop before aborting their tasks.
pub const SOURCES_RELOAD_STOP: Duration = Duration::from_secs(5);
/// How long a reload or shutdown waits for the MQTT client to hand back (it persists its
/// outbox cursor and says `offline` on the way out).
pub const MQTT_STOP: Duration = Duration::from_secs(3);
/// How long a reload or shutdown waits for the outbound sync sessions to end.
pub const PEERS_STOP: Duration = Duration::from_secs(3);
/// After a part's budget ran out and its tasks were aborted: how long to wait for the aborts.
const ABORT_GRACE: Duration = Duration::from_secs(1);

/// A replaceable part of a running agent.
pub trait Part {
    /// What the part is started from.
    type Spec;
    /// Its name in log lines ("sources", "sync peers", "MQTT client").
    const NAME: &'static str;
    /// How long a reload waits for the old part before starting the new one.
    const RELOAD_BUDGET: Duration;

    /// Stops the part; true when it stopped within `budget` (otherwise the sources' and the
    /// MQTT client's tasks are aborted; sync sessions end on their own).
    fn stop(&mut self, budget: Duration) -> impl Future<Output = bool> + Send;

    /// Starts `spec` with the same shared parts (called on a stopped part).
    fn restart(&mut self, spec: Self::Spec);

    /// Stops the running part (within [`Part::RELOAD_BUDGET`]) and starts `spec` in its place.
    fn replace(&mut self, spec: Self::Spec) -> impl Future<Output = ()> + Send
    where
        Self: Send,
        Self::Spec: Send,
    {
        async move {
            if !self.stop(Self::RELOAD_BUDGET).await {
                tracing::warn!(
                    "the old {} did not stop within {}; starting the new ones anyway",
                    Self::NAME,
                    humantime::format_duration(Self::RELOAD_BUDGET)
                );
            }
            self.restart(spec);
        }
    }
}

/// The source tasks of the running configuration. The queue and the batcher outlive them, so
/// readings already queued are still committed across a reload.
pub struct Sources {
    agent: Agent,
    queue: Arc<IngestQueue>,
    stop: CancellationToken,
    tasks: TaskTracker,
    aborts: Vec<AbortHandle>,
    count: usize,
}

impl Sources {
    /// Spawns `built`, feeding `queue` and reporting into the agent's source status list.
    pub fn start(built: Vec<BuiltSource>, agent: &Agent, queue: &Arc<IngestQueue>) -> Sources {
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let count = built.len();
        let aborts =
            crate::sources::spawn(built, queue, &agent.sources, &agent.metrics, &tasks, &stop);
        tasks.close();
        Sources {
            agent: agent.clone(),
            queue: queue.clone(),
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
}

impl Part for Sources {
    type Spec = Vec<BuiltSource>;
    const NAME: &'static str = "sources";
    const RELOAD_BUDGET: Duration = SOURCES_RELOAD_STOP;

    /// A source that does not stop within `budget` is aborted, so the old and the new never
    /// run side by side (a serial port or Modbus device opened twice).
    async fn stop(&mut self, budget: Duration) -> bool {
        self.stop.cancel();
        if tokio::time::timeout(budget, self.tasks.wait())
            .await
            .is_ok()
        {
            return true;
        }
        for a in &self.aborts {
            a.abort();
        }
        if tokio::time::timeout(ABORT_GRACE, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::error!("a source task survived its abort");
        }
        false
    }

    fn restart(&mut self, built: Vec<BuiltSource>) {
        *self = Sources::start(built, &self.agent, &self.queue);
    }
}

/// The outbound sync peers (`[[sync.peers]]`) of the running configuration.
pub struct Peers {
    agent: Agent,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Peers {
    /// Starts one task per peer (on the SQLite store: a PostgreSQL hub runs none, see
    /// `Config::for_backend`).
    pub fn start(peers: &[PeerConfig], agent: &Agent) -> Peers {
        let stop = agent.shutdown.child_token();
        let tasks = TaskTracker::new();
        if let Some(store) = agent.backend.sqlite() {
            crate::peers::spawn_peers(peers, &agent.peers, store, &agent.metrics, &tasks, &stop);
        }
        tasks.close();
        Peers {
            agent: agent.clone(),
            stop,
            tasks,
        }
    }
}

impl Part for Peers {
    type Spec = Vec<PeerConfig>;
    const NAME: &'static str = "sync sessions";
    const RELOAD_BUDGET: Duration = PEERS_STOP;

    /// Ends every session. The session tasks finish their current frame and return; they
    /// are not aborted (a late one only delays its own end).
    async fn stop(&mut self, budget: Duration) -> bool {
        self.stop.cancel();
        tokio::time::timeout(budget, self.tasks.wait())
            .await
            .is_ok()
    }

    fn restart(&mut self, peers: Vec<PeerConfig>) {
        *self = Peers::start(&peers, &self.agent);
    }
}

/// The MQTT client of the running configuration (none when `mqtt.enabled` is false).
pub struct Mqtt {
    agent: Agent,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Mqtt {
    /// Starts the client when `cfg.enabled`.
    pub fn start(cfg: &MqttConfig, agent: &Agent) -> Mqtt {
        // The previous client's ingest row goes; a new client that ingests sets its own.
        *agent
            .mqtt_ingest
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        let stop = agent.shutdown.child_token();
        let task = cfg.enabled.then(|| {
            let run = crate::mqtt::run_on_backend(cfg.clone(), agent.clone(), stop.clone());
            tokio::spawn(async move {
                if let Err(e) = run.await {
                    tracing::error!("the MQTT client stopped: {e}");
                }
            })
        });
        Mqtt {
            agent: agent.clone(),
            stop,
            task,
        }
    }

    /// True when a client runs.
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Part for Mqtt {
    type Spec = MqttConfig;
    const NAME: &'static str = "MQTT client";
    const RELOAD_BUDGET: Duration = MQTT_STOP;

    async fn stop(&mut self, budget: Duration) -> bool {
        self.stop.cancel();
        match self.task.take() {
            None => true,
            Some(mut task) => match tokio::time::timeout(budget, &mut task).await {
                Ok(_) => true,
                Err(_) => {
                    task.abort();
                    false
                }
            },
        }
    }

    fn restart(&mut self, cfg: MqttConfig) {
        *self = Mqtt::start(&cfg, &self.agent);
    }
}
