//! [`PgStore`], the handle of the hub's change log on PostgreSQL: connecting (with errors
//! that say whether the server is unreachable, refused the credentials or holds a newer
//! schema), the shared actor and clock, and the [`ChangeLog`] interface. Applying pages is
//! in `apply.rs`, reading the log in `read.rs`.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kdelta_sync::seal::SigningKey;
use kdelta_sync::{
    ActorId, ApplyOutcome, Change, ChangeLog, Digest, Hlc, HybridClock, Limits, SystemTime,
    TimeSource, VersionVector,
};
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

use crate::error::{PgError, Result};
use crate::partitions::Partitions;

/// How a [`PgStore`] connects and what it accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PgConfig {
    /// Size limits for changes, as on the devices (`[store]` limits).
    #[serde(flatten)]
    pub limits: Limits,
    /// Remote timestamps further ahead of this replica's trusted time are refused (ms).
    pub max_clock_offset_ms: u64,
    /// Refuse remote changes that carry no signature, as `[store] require_signatures` on
    /// SQLite (on by default; an actor that has signed once is never accepted unsigned
    /// again).
    pub require_signatures: bool,
    /// Connections in this replica's pool.
    pub max_connections: u32,
    /// How long connecting (and waiting for a pooled connection) may take.
    #[serde(with = "millis")]
    pub connect_timeout: Duration,
}

impl Default for PgConfig {
    fn default() -> Self {
        PgConfig {
            limits: Limits::default(),
            max_clock_offset_ms: 300_000,
            require_signatures: true,
            max_connections: 8,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// A handle to the hub's change log in one PostgreSQL database. Cheap to clone; clones share
/// one pool. Any number of processes may open the same database at once: they share the
/// hub's actor, clock, version vector and digest, all kept in the database.
#[derive(Clone)]
pub struct PgStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub pool: PgPool,
    pub actor: ActorId,
    pub config: PgConfig,
    /// This replica's view of the hub clock: judges remote timestamps against trusted time
    /// and is seeded from the database (the shared clock is `hub_clock` + `changes`).
    pub clock: Mutex<HybridClock>,
    pub partitions: Partitions,
    /// The hub's signing key, shared by its replicas (`meta`).
    pub signing: SigningKey,
    /// Commit announcements for this replica's sync sessions (`peer.rs`).
    pub announcer: crate::peer::Announcer,
    /// Actors whose origin this replica has recorded (`origins.rs`).
    pub origins_noted: kdelta_sync::NotedActors,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("actor", &self.inner.actor)
            .finish()
    }
}

/// `user@host:port/database` of connect options, for messages (never the password).
fn target(options: &PgConnectOptions) -> String {
    format!(
        "{}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or(options.get_username())
    )
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db?sslmode=…`),
    /// migrates it and opens the store. Fails with [`PgError::InvalidUrl`],
    /// [`PgError::Unreachable`], [`PgError::Refused`] (credentials, unknown database) or
    /// [`PgError::SchemaTooNew`], each naming the server and never the password.
    pub async fn connect(url: &str, config: PgConfig) -> Result<PgStore> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            let scheme: String = url
                .split("://")
                .next()
                .unwrap_or("")
                .chars()
                .take(20)
                .collect();
            return Err(PgError::InvalidUrl(format!(
                "it must start with postgres:// or postgresql://, not {scheme:?}"
            )));
        }
        let options =
            PgConnectOptions::from_str(url).map_err(|e| PgError::InvalidUrl(e.to_string()))?;
        Self::connect_with(options, config).await
    }

    /// Like [`connect`](Self::connect) with parsed options (TLS files, `search_path`, …).
    pub async fn connect_with(options: PgConnectOptions, config: PgConfig) -> Result<PgStore> {
        let target = target(&options);
        // One plain attempt first: a pool would retry a refused connection until its
        // timeout and report only that it timed out.
        match tokio::time::timeout(config.connect_timeout, options.connect()).await {
            Err(_) => {
                return Err(PgError::Unreachable {
                    target,
                    detail: format!("no answer within {:?}", config.connect_timeout),
                });
            }
            Ok(Err(sqlx::Error::Database(e))) => {
                return Err(PgError::Refused {
                    target,
                    detail: e.message().to_owned(),
                });
            }
            Ok(Err(e)) => {
                return Err(PgError::Unreachable {
                    target,
                    detail: e.to_string(),
                });
            }
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .acquire_timeout(config.connect_timeout)
            .connect_lazy_with(options);
        Self::open(pool, config).await
    }

    /// Opens the store on an existing pool: refuses a newer schema, applies migrations,
    /// loads (or creates) the hub's actor and seeds this replica's clock.
    pub async fn open(pool: PgPool, config: PgConfig) -> Result<PgStore> {
        Self::open_with_time(pool, config, Arc::new(SystemTime)).await
    }

    /// Like [`open`](Self::open) with an injected wall clock (tests).
    pub async fn open_with_time(
        pool: PgPool,
        config: PgConfig,
        time: Arc<dyn TimeSource>,
    ) -> Result<PgStore> {
        crate::schema::migrate(&pool).await?;
        let actor = crate::schema::hub_actor(&pool).await?;
        let signing = crate::schema::hub_signing_key(&pool).await?;
        let mut clock = HybridClock::new(time, config.max_clock_offset_ms);
        clock.seed(crate::schema::clock_floor(&pool).await?);
        Ok(PgStore {
            inner: Arc::new(Inner {
                pool,
                actor,
                config,
                clock: Mutex::new(clock),
                partitions: Partitions::default(),
                signing,
                announcer: crate::peer::Announcer::default(),
                origins_noted: Default::default(),
            }),
        })
    }

    /// The hub's actor id, shared by every replica on this database.
    pub fn actor(&self) -> ActorId {
        self.inner.actor
    }

    /// The pool (for operations tooling and tests).
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &PgConfig {
        &self.inner.config
    }

    /// The highest timestamp this replica has issued or accepted.
    pub fn last_hlc(&self) -> Hlc {
        self.clock().last()
    }

    pub(crate) fn clock(&self) -> std::sync::MutexGuard<'_, HybridClock> {
        self.inner.clock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes the pool (waits for connections in use to be given back; stops the
    /// listener of this replica's sync sessions first).
    pub async fn close(&self) {
        self.inner.announcer.stop();
        self.inner.pool.close().await;
    }
}

impl ChangeLog for PgStore {
    fn actor(&self) -> ActorId {
        self.inner.actor
    }

    async fn version_vector(&self) -> kdelta_sync::Result<VersionVector> {
        Ok(PgStore::version_vector(self).await?)
    }

    async fn version_vector_of(&self, actors: &[ActorId]) -> kdelta_sync::Result<VersionVector> {
        Ok(PgStore::version_vector_of(self, actors).await?)
    }

    async fn digest(&self) -> kdelta_sync::Result<Digest> {
        Ok(PgStore::digest(self).await?)
    }

    async fn changes_since(
        &self,
        theirs: &VersionVector,
        byte_budget: usize,
    ) -> kdelta_sync::Result<Vec<Change>> {
        Ok(PgStore::changes_since(self, theirs, byte_budget).await?)
    }

    async fn changes_since_of(
        &self,
        actors: &[ActorId],
        theirs: &VersionVector,
        byte_budget: usize,
    ) -> kdelta_sync::Result<Vec<Change>> {
        Ok(PgStore::changes_since_of(self, actors, theirs, byte_budget).await?)
    }

    async fn apply_remote(&self, changes: Vec<Change>) -> kdelta_sync::Result<ApplyOutcome> {
        Ok(PgStore::apply_remote(self, changes).await?)
    }

    async fn hlcs_at(
        &self,
        dots: &[(ActorId, u64)],
    ) -> kdelta_sync::Result<Vec<(ActorId, u64, Hlc)>> {
        Ok(PgStore::hlcs_at(self, dots).await?)
    }
}
