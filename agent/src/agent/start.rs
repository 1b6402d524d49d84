//! [`Agent::start`]: setup (lock, checks, store, listener, the shared handle, the ingest
//! queue) kept apart from run (spawning the loops), as in corrosion's `setup()`/`run()`.
//! Setup fails with an error naming the problem and leaves nothing running; once run
//! begins, nothing can fail any more. One path for both backends: the store is a
//! [`Backend`]; the loops that need the SQLite store are spawned from it
//! ([`spawn_store_loops`]), and on a PostgreSQL hub the configuration has those parts off
//! (`Config::for_backend`) and the database's health check runs instead.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, anyhow};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::parts::{Mqtt, Peers, Sources};
use super::running::RunningAgent;
use super::{Agent, AgentInner, Listen, db_path};
use crate::backend::Backend;
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
    /// Errors name the problem (a locked data directory, a bad TLS file, a busy port, a
    /// PostgreSQL database that cannot be used); on error nothing is left running and the
    /// lock is released. With `[store] backend = "postgres"` the agent is a hub replica:
    /// the parts that need the SQLite store are off (`Config::for_backend`).
    pub async fn start(
        config: Config,
        listen: impl Into<Listen>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<RunningAgent> {
        let started = Instant::now();
        crate::api::mark_storage_writes_start();
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
    let config = config.for_backend(true);
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
    config.sync.check_token_files()?;
    // Every API connection and sync session is a file descriptor: make room for the caps.
    crate::server::nofile::ensure(
        (config.api.max_connections + config.api.max_sync_sessions) as u64
            + crate::server::nofile::RESERVED_FILES,
    );
    // A store stamped in the future takes a new actor before it opens (docs/clock.md).
    let rebased = match config.store.backend {
        crate::backend::BackendKind::Sqlite => {
            crate::clock_rebase::at_start(
                &config.clock,
                config.store.settings().max_clock_offset_ms,
                &db_path(&data_dir),
            )
            .await?
        }
        crate::backend::BackendKind::Postgres => None,
    };
    let backend = Backend::open(&config.store, &db_path(&data_dir)).await?;
    // The room a full disk recovers in (`[retention] reserve`), before anything writes.
    if let Some(store) = backend.sqlite() {
        crate::retention::attach_reserve(store, &data_dir, &config.retention).await;
    }
    let tcp = match listen {
        Listen::Bind(addr) => bind(addr).await,
        Listen::Bound(listener) => Ok(listener),
    };
    let tcp = match tcp {
        Ok(l) => l,
        Err(e) => {
            backend.close().await;
            return Err(e);
        }
    };
    let addr = tcp.local_addr().context("reading the bound address")?;

    let metrics = Arc::new(Metrics::new());
    // Refused client certificates count in the API gate's failed-auth throttle.
    let listener = ApiListener::new(tcp, server_tls, metrics.clone(), guard.throttle());
    let clock = backend
        .sqlite()
        .map(|store| crate::clock::ClockMonitor::start(&config.clock, store, &metrics));
    if let (Some(clock), Some(rebased)) = (&clock, rebased) {
        clock.set_rebased(rebased);
        metrics.clock_rebased();
    }
    let agent = Agent::new(AgentInner {
        backend,
        metrics,
        started,
        data_dir,
        device: config.device_name.clone(),
        sources: Default::default(),
        mqtt_ingest: Default::default(),
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
    // Before retention's first pass: what upstream peers held when the agent last ran.
    if let Some(store) = agent.backend.sqlite() {
        agent.peers.load_acked(store).await;
    }
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
    let batcher = spawn_store_loops(&agent, &config, &queue, &give_up);
    let sources = Sources::start(built, &agent, &queue);
    // MQTT (off unless configured) and sync peers (none unless `[[sync.peers]]`): both stop
    // on `shutdown`, before the store closes, and a reload may replace them.
    let mqtt = Mqtt::start(&config.mqtt, &agent);
    let peers = Peers::start(&config.sync.peers, &agent);
    // The agent's own device twin (desired/reported): stops on `shutdown`, before the store.
    let device_twin = agent
        .backend
        .sqlite()
        .filter(|_| config.device_twin)
        .map(|store| {
            tokio::spawn(crate::device_twin::run(
                store.clone(),
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
        batcher_done: batcher.is_none(),
        batcher,
        server_done: false,
        sources,
        peers,
        mqtt,
        device_twin,
        fatal: None,
    };
    tracing::info!(
        actor = %running.agent.backend.actor(),
        backend = running.agent.backend.kind().as_str(),
        device = %running.config.device_name,
        "ready in {} ms: {}",
        started.elapsed().as_millis(),
        running.summary()
    );
    running
}

/// Spawns the loops of the store: on SQLite the batcher (returned: the agent cannot run
/// without it), the correction of readings sampled under an untrusted clock, the clock's
/// re-assessment, scheduled backups and retention; on PostgreSQL the database's health
/// check, which `/readyz` reads, and retention's readings rules against the database. All stop on the agent's shutdown token (the batcher when
/// the queue closes, or on `give_up`).
// Without the `postgres` feature the backend has one variant.
#[cfg_attr(
    not(feature = "postgres"),
    allow(clippy::infallible_destructuring_match)
)]
fn spawn_store_loops(
    agent: &Agent,
    config: &Config,
    queue: &Arc<IngestQueue>,
    give_up: &CancellationToken,
) -> Option<JoinHandle<anyhow::Result<()>>> {
    let store = match &agent.backend {
        Backend::Sqlite(store) => store,
        #[cfg(feature = "postgres")]
        Backend::Postgres(hub) => {
            tokio::spawn(hub.clone().health_loop(agent.shutdown.child_token()));
            // Retention's readings rules and document history, one replica at a time
            // (returns at once when `[retention]` keeps every reading and version).
            tokio::spawn(crate::retention::hub_retention_loop(
                hub.store.clone(),
                config.retention.clone(),
                agent.retention.clone(),
                agent.metrics.clone(),
                agent.shutdown.child_token(),
            ));
            return None;
        }
    };
    let limits = BatchLimits {
        max_readings: config.ingest.batch_max_readings,
        max_age: config.ingest.batch_max_age,
    };
    let timer = crate::sample_timing::SampleTimer::new(store.time_reference());
    let batcher = tokio::spawn(
        Batcher::new(store.clone(), limits, agent.metrics.clone())
            .with_timer(timer.clone())
            .run(queue.clone(), give_up.clone()),
    );
    // Corrects readings sampled under an untrusted clock once a trusted time is known.
    tokio::spawn(crate::sample_timing::correction_loop(
        timer,
        store.clone(),
        agent.shutdown.child_token(),
    ));
    // Re-assesses the wall clock (assessed once in setup) until shutdown.
    if let Some(clock) = &agent.clock {
        tokio::spawn(crate::clock::clock_loop(
            clock.clone(),
            store.clone(),
            agent.metrics.clone(),
            agent.shutdown.child_token(),
        ));
        // A store stamped in the future while running: stop to restart and rebase.
        tokio::spawn(crate::clock_rebase::while_running(
            clock.clone(),
            store.clone(),
            agent.shutdown.clone(),
            agent.shutdown.child_token(),
        ));
    }
    // Scheduled backups (off unless `[backup] every`).
    tokio::spawn(crate::backup::backup_loop(
        agent.clone(),
        config.backup.clone(),
        agent.shutdown.child_token(),
    ));
    // What upstream peers acknowledged, stored for the next start (`peers/acked.rs`).
    tokio::spawn(crate::peers::acked_loop(
        agent.peers.clone(),
        store.clone(),
        agent.shutdown.child_token(),
    ));
    // Retention (returns at once when the policy keeps everything).
    store.set_log_runs(config.retention.log_runs);
    let peers_for_retention = agent.peers.clone();
    tokio::spawn(crate::retention::retention_loop(
        crate::retention::RetentionDeps {
            store: store.clone(),
            data_dir: agent.data_dir.clone(),
            state: agent.retention.clone(),
            metrics: agent.metrics.clone(),
            upstream_acked: Box::new(move || peers_for_retention.upstream_acked()),
        },
        config.retention.clone(),
        agent.shutdown.child_token(),
    ));
    Some(batcher)
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    crate::server::bind(addr).map_err(|e| {
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
    let metrics = agent.metrics.clone();
    let app = crate::api::router(agent);
    tokio::spawn(async move {
        crate::server::serve(listener, app, limits, metrics, stop).await;
        Ok(())
    })
}
