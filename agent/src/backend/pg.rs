//! [`PgHub`]: the agent's side of a hub replica on PostgreSQL — the opened
//! [`kdelta_pg::PgStore`] and whether the database answers. Readiness must not cost a query
//! per probe (load balancers probe every replica often), so [`PgHub::health_loop`] checks
//! the database every [`HEALTH_EVERY`] and `/readyz` reads the last answer.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use kdelta_pg::{PgConfig, PgError, PgStore};
use kdelta_sync::StoreConfig;
use tokio_util::sync::CancellationToken;

/// How often a replica checks that PostgreSQL answers.
pub const HEALTH_EVERY: Duration = Duration::from_secs(2);
/// How long one check may take before the database counts as unreachable.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// A hub replica's store: the change log on PostgreSQL and the database's last known health.
/// Cheap to clone.
#[derive(Clone)]
pub struct PgHub {
    /// The change log (shared pool).
    pub store: PgStore,
    /// `None` while the last check succeeded; the failure otherwise.
    unreachable: Arc<RwLock<Option<String>>>,
}

impl PgHub {
    /// Connects to `url` and migrates the database (`PgStore::connect`); the size limits and
    /// the clock offset and `require_signatures` of `[store]` apply. Errors are `PgError`s that name the server and
    /// never the password.
    pub async fn connect(url: &str, settings: &StoreConfig) -> Result<PgHub, PgError> {
        let config = PgConfig {
            limits: settings.limits.clone(),
            max_clock_offset_ms: settings.max_clock_offset_ms,
            require_signatures: settings.require_signatures,
            ..PgConfig::default()
        };
        let store = PgStore::connect(url, config).await?;
        Ok(PgHub {
            store,
            unreachable: Arc::default(),
        })
    }

    /// Why the database did not answer the last check, or `None` when it did.
    pub fn unreachable(&self) -> Option<String> {
        self.unreachable
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Checks the database every [`HEALTH_EVERY`] until `cancel`; logs when it becomes
    /// unreachable and when it answers again.
    pub async fn health_loop(self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(HEALTH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = self.check().await;
            let mut state = self.unreachable.write().unwrap_or_else(|p| p.into_inner());
            match (&*state, &now) {
                (None, Some(why)) => {
                    tracing::error!("PostgreSQL is unreachable: {why}; this replica is not ready");
                }
                (Some(_), None) => tracing::info!("PostgreSQL answers again; ready"),
                _ => {}
            }
            *state = now;
        }
    }

    /// One check: `SELECT 1` within [`HEALTH_TIMEOUT`].
    async fn check(&self) -> Option<String> {
        let query = sqlx::query("SELECT 1").execute(self.store.pool());
        match tokio::time::timeout(HEALTH_TIMEOUT, query).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {} s", HEALTH_TIMEOUT.as_secs())),
        }
    }
}
