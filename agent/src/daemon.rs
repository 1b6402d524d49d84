//! `kdelta start`: the daemon's life. Startup order: data directory and its lock → sources
//! built (config errors before anything is opened) → store opened → listener bound (so port 0
//! works and the log names the real port) → HTTP server, batcher and sources spawned →
//! ready (`READY=1`). Then it waits for SIGTERM/SIGINT (shutdown), SIGHUP (reload) or a
//! fatal error of a task.
//!
//! Shutdown (at most [`SHUTDOWN_BUDGET`]): not ready → stop accepting HTTP and finish
//! in-flight requests, and stop the sources → close the ingest queue and let the batcher
//! commit what it holds → close the store (the writer finishes queued writes) → release the
//! lock. Every step has its own time limit so one stuck part cannot hold the others.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use kdelta_sync::Store;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigArgs};
use crate::lockfile::DataDirLock;
use crate::logging::Logging;
use crate::metrics::Metrics;
use crate::running::{PeerDeps, RunningMqtt, RunningPeers, RunningSources};
use crate::sources::{BatchLimits, Batcher, IngestQueue};
use crate::state::AppState;
use crate::systemd::{self, StatusInputs};
use crate::tls::{ApiListener, ServerTls};

/// Name of the store's database file inside the data directory.
pub const DB_FILE: &str = "kdelta.db";
/// Everything after the stop signal must fit in this (systemd's `TimeoutStopSec` is 20 s; the
/// issue asks for 10 s).
pub const SHUTDOWN_BUDGET: Duration = Duration::from_secs(10);

/// Why the daemon stopped waiting.
enum Stop {
    Signal(&'static str),
    Fatal(anyhow::Error),
}

/// Runs the agent until a stop signal; returns an error for a fatal failure (the caller
/// prints the chain and exits non-zero).
pub async fn run(config: Config, args: ConfigArgs, mut logging: Logging) -> anyhow::Result<()> {
    let started = Instant::now();
    // First of all: a SIGTERM or SIGHUP during startup (a test or systemd acting on the
    // "listening on" line) is then queued for the wait loop instead of killing the process.
    let mut signals = Signals::install()?;
    let data_dir = std::path::absolute(&config.data_dir)
        .with_context(|| format!("resolving data directory {}", config.data_dir.display()))?;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let lock = DataDirLock::acquire(&data_dir)?;

    let built = crate::sources::build(&config.sources)?;
    if config.mqtt.enabled {
        crate::mqtt::preflight(&config.mqtt, &config.device_name)?;
    }
    let db_path = data_dir.join(DB_FILE);
    // TLS files are read now, so a bad path stops the start with an error naming the key.
    let server_tls = config.api.tls.as_ref().map(ServerTls::load).transpose()?;
    let guard = Arc::new(crate::api::ApiGuard::new(
        &config.api,
        &config.sync.accept_certs,
        &crate::config::hostname(),
    )?);
    config.sync.check_tls_files()?;
    let store = Store::open(&db_path, config.store.clone())
        .await
        .with_context(|| format!("cannot open the store {}", db_path.display()))?;
    let listener = bind(config.api.listen).await?;
    let addr = listener.local_addr().context("reading the bound address")?;

    let metrics = Arc::new(Metrics::new());
    let listener = ApiListener::new(listener, server_tls, metrics.clone());
    let scheme = listener.scheme();
    let shutdown = CancellationToken::new();
    let state = AppState {
        store: store.clone(),
        metrics: metrics.clone(),
        started,
        data_dir: data_dir.clone(),
        sources: Arc::new(RwLock::new(Vec::new())),
        ready: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        max_body_bytes: config.api.max_body_bytes,
        shutdown: shutdown.clone(),
        peers: Arc::new(crate::peers::Registry::new(
            &config.sync,
            &config.device_name,
        )),
        guard,
        clock: crate::clock::ClockMonitor::start(&config.clock, &store, &metrics),
    };

    let http_stop = CancellationToken::new();
    let limits = crate::server::ServerLimits::of(&config.api);
    let mut server = spawn_server(listener, state.clone(), limits, http_stop.clone());
    // Tests and scripts parse this line for the bound port: keep its text, and print it even
    // when the log filter hides info lines.
    if tracing::enabled!(tracing::Level::INFO) {
        tracing::info!("listening on {scheme}://{addr}");
    } else {
        eprintln!("listening on {scheme}://{addr}");
    }

    let queue = Arc::new(IngestQueue::new(
        config.ingest.queue_capacity,
        config.ingest.overflow,
    ));
    let give_up = CancellationToken::new();
    let limits = BatchLimits {
        max_readings: config.ingest.batch_max_readings,
        max_age: config.ingest.batch_max_age,
    };
    let mut batcher = tokio::spawn(
        Batcher::new(store.clone(), limits, metrics.clone()).run(queue.clone(), give_up.clone()),
    );
    let sources = RunningSources::start(built, &queue, &state.sources, &metrics);
    let watchdog = tokio::spawn(systemd::watchdog_loop(store.clone(), shutdown.clone()));
    tokio::spawn(crate::clock::clock_loop(
        state.clock.clone(),
        store.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    // MQTT (off unless configured) and sync peers (none unless `[[sync.peers]]`): both stop
    // on `shutdown`, before the store closes, and SIGHUP may replace them.
    let mqtt_deps = crate::mqtt::MqttDeps {
        store: store.clone(),
        metrics: metrics.clone(),
        device: config.device_name.clone(),
        data_dir: data_dir.clone(),
    };
    let mqtt = RunningMqtt::start(&config.mqtt, &mqtt_deps, &shutdown);
    let peer_deps = PeerDeps {
        registry: state.peers.clone(),
        store: store.clone(),
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
    };
    let peers = RunningPeers::start(&config.sync.peers, &peer_deps);
    let mut running = Running {
        config: config.clone(),
        sources,
        peers,
        peer_deps,
        mqtt,
        mqtt_deps,
        api: format!("API on {scheme}://{addr}"),
        args,
        data_dir: data_dir.clone(),
        shutdown: shutdown.clone(),
    };

    // The agent's own device twin (desired/reported): stops on `shutdown`, before the store.
    let device_twin = config.device_twin.then(|| {
        tokio::spawn(crate::device_twin::run(
            store.clone(),
            config.device_name.clone(),
            state.sources.clone(),
            shutdown.clone(),
        ))
    });
    state.ready.store(true, Ordering::SeqCst);
    let summary = running.summary();
    systemd::ready(&summary);
    tracing::info!(
        actor = %store.actor(),
        device = %config.device_name,
        "ready in {} ms: {summary}",
        started.elapsed().as_millis()
    );
    let status_line = tokio::spawn(systemd::status_loop(
        StatusInputs {
            metrics: metrics.clone(),
            peers: state.peers.clone(),
            sources: state.sources.clone(),
            clock: state.clock.clone(),
        },
        shutdown.clone(),
    ));

    let stop = wait_for_stop(
        &mut signals,
        &mut logging,
        &mut server,
        &mut batcher,
        &mut running,
    )
    .await?;
    let fatal = match stop {
        Stop::Signal(name) => {
            tracing::info!("{name} received: shutting down");
            None
        }
        Stop::Fatal(e) => {
            tracing::error!("fatal: {e:#}; shutting down");
            Some(e)
        }
    };

    // Shutdown.
    let deadline = tokio::time::Instant::now() + SHUTDOWN_BUDGET - Duration::from_millis(500);
    state.ready.store(false, Ordering::SeqCst);
    systemd::stopping();
    shutdown.cancel();
    http_stop.cancel();
    running.sources.stop.cancel();
    let (http_done, sources_done) = tokio::join!(
        step(Duration::from_secs(5), &mut server),
        tokio::time::timeout(Duration::from_secs(3), running.sources.tasks.wait()),
    );
    if !http_done {
        tracing::warn!("HTTP requests still running after 5 s; closing their connections");
        server.abort();
    }
    if sources_done.is_err() {
        tracing::warn!(
            "sources did not stop within 3 s; their queued readings are still committed"
        );
    }
    queue.close();
    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
    let mut result = fatal.map_or(Ok(()), Err);
    match tokio::time::timeout(
        remaining.saturating_sub(Duration::from_secs(1)),
        &mut batcher,
    )
    .await
    {
        Ok(Ok(Ok(()))) => tracing::debug!("pending readings committed"),
        Ok(Ok(Err(e))) => result = result.and(Err(e.context("committing pending readings"))),
        Ok(Err(join)) => result = result.and(Err(anyhow!("the batcher task failed: {join}"))),
        Err(_) => {
            give_up.cancel();
            if !matches!(
                tokio::time::timeout(Duration::from_millis(500), &mut batcher).await,
                Ok(Ok(Ok(())))
            ) {
                batcher.abort();
                result = result.and(Err(anyhow!(
                    "could not commit the pending readings within the shutdown budget"
                )));
            }
        }
    }
    let (mqtt_stopped, peers_stopped) = tokio::join!(running.mqtt.stop(), running.peers.stop());
    if !mqtt_stopped {
        tracing::warn!("the MQTT client did not stop within 3 s");
    }
    if !peers_stopped {
        tracing::warn!("sync peers did not stop within 3 s");
    }
    let _ = watchdog.await;
    let _ = status_line.await;
    if let Some(task) = device_twin {
        let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
    }
    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
    if tokio::time::timeout(remaining.max(Duration::from_millis(200)), store.close())
        .await
        .is_err()
    {
        result = result.and(Err(anyhow!(
            "the store did not close within the shutdown budget"
        )));
    }
    drop(lock);
    if result.is_ok() {
        tracing::info!("stopped cleanly");
    }
    result
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
    state: AppState,
    limits: crate::server::ServerLimits,
    stop: CancellationToken,
) -> JoinHandle<anyhow::Result<()>> {
    // The server loop gives every request its connection's `PeerAddr` (the verified client
    // certificate reaches the API gate and `/v1/sync`).
    let app = crate::api::router(state);
    tokio::spawn(async move {
        crate::server::serve(listener, app, limits, stop).await;
        Ok(())
    })
}

/// Waits for `task` at most `limit`; true when it finished.
async fn step<T>(limit: Duration, task: &mut JoinHandle<T>) -> bool {
    tokio::time::timeout(limit, task).await.is_ok()
}

/// The signals the daemon handles, installed when it starts.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }
}

async fn wait_for_stop(
    signals: &mut Signals,
    logging: &mut Logging,
    server: &mut JoinHandle<anyhow::Result<()>>,
    batcher: &mut JoinHandle<anyhow::Result<()>>,
    running: &mut Running,
) -> anyhow::Result<Stop> {
    loop {
        let stop = tokio::select! {
            _ = signals.term.recv() => Stop::Signal("SIGTERM"),
            _ = signals.int.recv() => Stop::Signal("SIGINT"),
            _ = signals.hup.recv() => {
                running.reload(logging).await;
                continue;
            }
            result = &mut *server => Stop::Fatal(match result {
                Ok(Ok(())) => anyhow!("the HTTP server stopped unexpectedly"),
                Ok(Err(e)) => e,
                Err(join) => anyhow!("the HTTP server task failed: {join}"),
            }),
            result = &mut *batcher => Stop::Fatal(match result {
                Ok(Ok(())) => anyhow!("the batcher stopped unexpectedly"),
                Ok(Err(e)) => e.context("committing readings from sources"),
                Err(join) => anyhow!("the batcher task failed: {join}"),
            }),
        };
        return Ok(stop);
    }
}

/// The running configuration and the parts SIGHUP can replace.
struct Running {
    /// What runs now (a failed reload of a part keeps that part's old section).
    config: Config,
    sources: RunningSources,
    peers: RunningPeers,
    peer_deps: PeerDeps,
    mqtt: RunningMqtt,
    mqtt_deps: crate::mqtt::MqttDeps,
    /// "API on …", for the status line.
    api: String,
    /// Where the configuration is read from again.
    args: ConfigArgs,
    data_dir: PathBuf,
    /// The agent's shutdown token (replaced parts stop on a child of it).
    shutdown: CancellationToken,
}

impl Running {
    /// The `STATUS=` line and log summary of what runs.
    fn summary(&self) -> String {
        let n = self.sources.count();
        let peers = self.config.sync.peers.len();
        let mut s = format!(
            "recording {n} source{} into {}; {}",
            if n == 1 { "" } else { "s" },
            self.data_dir.display(),
            self.api
        );
        if peers > 0 {
            s.push_str(&format!(
                "; {peers} sync peer{}",
                if peers == 1 { "" } else { "s" }
            ));
        }
        if self.mqtt.is_running() {
            s.push_str("; MQTT on");
        }
        s
    }

    /// SIGHUP: re-reads the configuration and applies what can change at run time — the log
    /// filter, the sources, `[sync]` (accepted tokens, outbound peers, page size,
    /// compression) and `[mqtt]`; logs each part it could not reload and the changed
    /// settings that need a restart.
    async fn reload(&mut self, logging: &mut Logging) {
        systemd::reloading();
        tracing::info!("SIGHUP received: reloading the configuration");
        match crate::config::load(&self.args) {
            Err(e) => {
                tracing::error!("reload failed, keeping the running configuration: {e}");
                tracing::info!("reload done: nothing reloaded");
            }
            Ok(loaded) => self.apply(loaded.config, logging).await,
        }
        systemd::reloaded(&self.summary());
    }

    /// New sources start at their configured intervals: apply the device twin's desired ones
    /// again before the reload counts as done, not at the twin loop's next resync.
    async fn reapply_device_twin(&self) {
        if !self.config.device_twin {
            return;
        }
        let key = crate::device_twin::key(&self.config.device_name);
        let store = &self.peer_deps.store;
        if let Err(e) = crate::device_twin::reconcile(store, &key, self.sources.statuses()).await {
            tracing::warn!(twin = %key, "device twin: cannot re-apply desired intervals: {e}");
        }
    }

    async fn apply(&mut self, new: Config, logging: &mut Logging) {
        let mut reloaded = Vec::new();
        if self.config.log.level != new.log.level {
            match logging.reload(&new.log.level) {
                Ok(()) => {
                    tracing::info!("log filter is now {}", logging.filter_text);
                    self.config.log.level = new.log.level.clone();
                    reloaded.push("log.level");
                }
                Err(e) => tracing::error!("cannot change the log filter, keeping it: {e}"),
            }
        } else {
            tracing::info!("log filter is now {}", logging.filter_text);
        }
        if self.config.sources != new.sources {
            match crate::sources::build(&new.sources) {
                Ok(built) => {
                    let n = built.len();
                    self.sources.replace(built).await;
                    self.config.sources = new.sources.clone();
                    reloaded.push("sources");
                    tracing::info!("sources reloaded: {n} running");
                    self.reapply_device_twin().await;
                }
                Err(e) => tracing::error!("cannot reload the sources, keeping them: {e:#}"),
            }
        }
        if self.config.sync != new.sync
            && let Err(e) = new.sync.check_tls_files()
        {
            tracing::error!("cannot reload [sync], keeping the running peers: {e:#}");
        } else if self.config.sync != new.sync {
            let device = &self.config.device_name;
            let tokens = self
                .peer_deps
                .registry
                .reconfigure(&self.config.sync, &new.sync, device);
            if tokens {
                tracing::info!(
                    "sync: accepted tokens changed; inbound sessions restart under the new tokens"
                );
            }
            let old = &self.config.sync;
            if old.peers != new.sync.peers
                || old.page_bytes != new.sync.page_bytes
                || old.compression != new.sync.compression
            {
                self.peers.replace(&new.sync.peers, &self.peer_deps).await;
                tracing::info!("sync peers reloaded: {} configured", new.sync.peers.len());
            }
            self.config.sync = new.sync.clone();
            reloaded.push("sync");
        }
        if self.config.mqtt != new.mqtt {
            let check = if new.mqtt.enabled {
                new.mqtt
                    .validate()
                    .map_err(crate::mqtt::MqttError::from)
                    .and_then(|()| crate::mqtt::preflight(&new.mqtt, &self.config.device_name))
            } else {
                Ok(())
            };
            match check {
                Ok(()) => {
                    self.mqtt
                        .replace(&new.mqtt, &self.mqtt_deps, &self.shutdown)
                        .await;
                    self.config.mqtt = new.mqtt.clone();
                    reloaded.push("mqtt");
                    tracing::info!(
                        "MQTT reloaded: {}",
                        if new.mqtt.enabled {
                            new.mqtt.url.as_str()
                        } else {
                            "off"
                        }
                    );
                }
                Err(e) => tracing::error!("cannot reload [mqtt], keeping the running client: {e}"),
            }
        }
        let changed = changed_sections(&self.config, &new);
        if !changed.is_empty() {
            tracing::warn!(
                "changed settings need a restart to take effect: {} (log.level, sources, sync and mqtt reload without a restart)",
                changed.join(", ")
            );
        }
        // Tests and operators look for this line: the reload is complete.
        if reloaded.is_empty() {
            tracing::info!("reload done: nothing reloaded");
        } else {
            tracing::info!("reload done: reloaded {}", reloaded.join(", "));
        }
    }
}

fn changed_sections(running: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |name, differs: bool| {
        if differs {
            changed.push(name);
        }
    };
    check("data_dir", running.data_dir != new.data_dir);
    check("device_name", running.device_name != new.device_name);
    check("device_twin", running.device_twin != new.device_twin);
    check("api", running.api != new.api);
    check("log.format", running.log.format != new.log.format);
    check("store", running.store != new.store);
    check("ingest", running.ingest != new.ingest);
    check("sources", running.sources != new.sources);
    check("sync", running.sync != new.sync);
    check("mqtt", running.mqtt != new.mqtt);
    changed
}

/// The database path of a data directory.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DB_FILE)
}
