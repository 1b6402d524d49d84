//! [`Agent::start`]: setup (lock, checks, store, listener, the shared handle, the ingest
//! queue) kept apart from run (spawning the loops), as in corrosion's `setup()`/`run()`.
//! Setup fails with an error naming the problem and leaves nothing running; once run
//! begins, nothing can fail any more.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, anyhow};
use kdelta_sync::Store;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::parts::{Mqtt, Peers, Sources};
use super::running::RunningAgent;
use super::{Agent, AgentInner, Listen, db_path};
use crate::config::Config;
use crate::lockfile::DataDirLock;
use crate::metrics::Metrics;
use crate::sources::{BatchLimits, Batcher, BuiltSource, IngestQueue};
use crate::tls::{ApiListener, ServerTls};

/// Everything setup opened, before any loop runs.
struct Setup {
    config: Config,
    lock: DataDirLock,
    built: Vec<BuiltSource>,
    listener: ApiListener,
    addr: SocketAddr,
    agent: Agent,
    queue: Arc<IngestQueue>,
}

impl Agent {
    /// Starts an agent: opens (and locks) the data directory and the store, listens on
    /// `listen` and spawns every loop; returns once the agent is ready. `shutdown` is the
    /// agent's root token: cancelling it stops the long-running loops and makes
    /// [`RunningAgent::stopped`] return; call [`RunningAgent::shutdown`] to drain and close.
    ///
    /// Errors name the problem (a locked data directory, a bad TLS file, a busy port); on
    /// error nothing is left running and the lock is released.
    pub async fn start(
        config: Config,
        listen: impl Into<Listen>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<RunningAgent> {
        let started = Instant::now();
        let setup = setup(config, listen.into(), shutdown, started).await?;
        Ok(run(setup, started))
    }
}

async fn setup(
    config: Config,
    listen: Listen,
    shutdown: CancellationToken,
    started: Instant,
) -> anyhow::Result<Setup> {
    let data_dir = std::path::absolute(&config.data_dir)
        .with_context(|| format!("resolving data directory {}", config.data_dir.display()))?;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let lock = DataDirLock::acquire(&data_dir)?;

    let built = crate::sources::build(&config.sources)?;
    if config.mqtt.enabled {
        crate::mqtt::preflight(&config.mqtt, &config.device_name)?;
    }
    // TLS files are read now, so a bad path stops the start with an error naming the key.
    let server_tls = config.api.tls.as_ref().map(ServerTls::load).transpose()?;
    let guard = Arc::new(crate::api::ApiGuard::new(
        &config.api,
        &config.sync.accept_certs,
        &crate::config::hostname(),
    )?);
    config.sync.check_tls_files()?;
    let db_path = db_path(&data_dir);
    let store = Store::open(&db_path, config.store.clone())
        .await
        .with_context(|| format!("cannot open the store {}", db_path.display()))?;
    let tcp = match listen {
        Listen::Bind(addr) => bind(addr).await,
        Listen::Bound(listener) => Ok(listener),
    };
    let tcp = match tcp {
        Ok(l) => l,
        Err(e) => {
            store.close().await;
            return Err(e);
        }
    };
    let addr = tcp.local_addr().context("reading the bound address")?;

    let metrics = Arc::new(Metrics::new());
    let listener = ApiListener::new(tcp, server_tls, metrics.clone());
    let clock = crate::clock::ClockMonitor::start(&config.clock, &store, &metrics);
    let agent = Agent::new(AgentInner {
        store,
        metrics,
        started,
        data_dir,
        device: config.device_name.clone(),
        sources: Default::default(),
        ready: AtomicBool::new(false),
        max_body_bytes: config.api.max_body_bytes,
        shutdown,
        peers: Arc::new(crate::peers::Registry::new(
            &config.sync,
            &config.device_name,
        )),
        guard,
        clock,
        retention: Default::default(),
    });
    let queue = Arc::new(IngestQueue::new(
        config.ingest.queue_capacity,
        config.ingest.overflow,
    ));
    Ok(Setup {
        config,
        lock,
        built,
        listener,
        addr,
        agent,
        queue,
    })
}

/// Spawns every loop of a set-up agent and marks it ready.
fn run(setup: Setup, started: Instant) -> RunningAgent {
    let Setup {
        config,
        lock,
        built,
        listener,
        addr,
        agent,
        queue,
    } = setup;
    let scheme = listener.scheme();
    let http_stop = CancellationToken::new();
    let limits = crate::server::ServerLimits::of(&config.api);
    let server = spawn_server(listener, agent.clone(), limits, http_stop.clone());
    // For users (and the subprocess test harness, which reads the log like a user): the
    // address actually bound, which differs from the configured one for port 0.
    tracing::info!("listening on {scheme}://{addr}");

    let give_up = CancellationToken::new();
    let limits = BatchLimits {
        max_readings: config.ingest.batch_max_readings,
        max_age: config.ingest.batch_max_age,
    };
    let timer = crate::sample_timing::SampleTimer::new(agent.store.time_reference());
    let batcher = tokio::spawn(
        Batcher::new(agent.store.clone(), limits, agent.metrics.clone())
            .with_timer(timer.clone())
            .run(queue.clone(), give_up.clone()),
    );
    // Corrects readings sampled under an untrusted clock once a trusted time is known.
    tokio::spawn(crate::sample_timing::correction_loop(
        timer,
        agent.store.clone(),
        agent.shutdown.child_token(),
    ));
    let sources = Sources::start(built, &agent, &queue);
    // Re-assesses the wall clock (assessed once in setup) until shutdown.
    tokio::spawn(crate::clock::clock_loop(
        agent.clock.clone(),
        agent.store.clone(),
        agent.metrics.clone(),
        agent.shutdown.child_token(),
    ));
    // Scheduled backups (off unless `[backup] every`).
    tokio::spawn(crate::backup::backup_loop(
        agent.clone(),
        config.backup.clone(),
        agent.shutdown.child_token(),
    ));
    // MQTT (off unless configured) and sync peers (none unless `[[sync.peers]]`): both stop
    // on `shutdown`, before the store closes, and a reload may replace them.
    let mqtt = Mqtt::start(&config.mqtt, &agent);
    let peers = Peers::start(&config.sync.peers, &agent);
    // The agent's own device twin (desired/reported): stops on `shutdown`, before the store.
    // Retention (returns at once when the policy keeps everything): stops on `shutdown`.
    let peers_for_retention = agent.peers.clone();
    tokio::spawn(crate::retention::retention_loop(
        crate::retention::RetentionDeps {
            store: agent.store.clone(),
            data_dir: agent.data_dir.clone(),
            state: agent.retention.clone(),
            metrics: agent.metrics.clone(),
            upstream_acked: Box::new(move || peers_for_retention.upstream_acked()),
        },
        config.retention.clone(),
        agent.shutdown.child_token(),
    ));
    let device_twin = config.device_twin.then(|| {
        tokio::spawn(crate::device_twin::run(
            agent.store.clone(),
            config.device_name.clone(),
            agent.sources.clone(),
            agent.shutdown.child_token(),
        ))
    });
    agent.ready.store(true, Ordering::SeqCst);
    let running = RunningAgent {
        agent,
        config,
        addr,
        api: format!("API on {scheme}://{addr}"),
        lock: Some(lock),
        logging: None,
        queue,
        give_up,
        http_stop,
        server,
        batcher,
        server_done: false,
        batcher_done: false,
        sources,
        peers,
        mqtt,
        device_twin,
        fatal: None,
    };
    tracing::info!(
        actor = %running.agent.store.actor(),
        device = %running.config.device_name,
        "ready in {} ms: {}",
        started.elapsed().as_millis(),
        running.summary()
    );
    running
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                " — another program (or another kdelta) uses this port; choose another with --listen or api.listen"
            }
            std::io::ErrorKind::PermissionDenied => " — ports below 1024 need privileges; use a higher port",
            _ => "",
        };
        anyhow!("cannot listen on {addr}: {e}{hint}")
    })
}

fn spawn_server(
    listener: ApiListener,
    agent: Agent,
    limits: crate::server::ServerLimits,
    stop: CancellationToken,
) -> JoinHandle<anyhow::Result<()>> {
    // The server loop gives every request its connection's `PeerAddr` (the verified client
    // certificate reaches the API gate and `/v1/sync`).
    let app = crate::api::router(agent);
    tokio::spawn(async move {
        crate::server::serve(listener, app, limits, stop).await;
        Ok(())
    })
}
