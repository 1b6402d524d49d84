//! One MQTT client for a hub of several replicas: on a PostgreSQL hub the client runs on
//! the replica that holds the database's `mqtt` lease (`kdelta_pg::Leadership`, a
//! session advisory lock), so readings are published once, ingest and commands are stored
//! once, and the availability topic and its last will belong to one connection. The other
//! replicas wait and try for the lease every [`LEASE_RETRY`]; the holder checks its lease
//! every [`LEASE_CHECK`] and stops its client when the lease's connection is lost, so two
//! replicas never run the client (one client id) at once. The outbox cursor is in the
//! database (`cursor.rs`): the next holder resumes where the last one stopped. On the
//! SQLite store the client simply runs.

use tokio_util::sync::CancellationToken;

use super::{MqttConfig, MqttError, run};
use crate::backend::Backend;
use crate::state::Agent;

/// How often the holder checks that its lease is still held.
#[cfg(feature = "postgres")]
const LEASE_CHECK: std::time::Duration = std::time::Duration::from_secs(2);
/// How often a replica without the lease tries to take it (and how long after a failed
/// client the lease is tried again).
#[cfg(feature = "postgres")]
const LEASE_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs the MQTT client until `cancel`: at once on SQLite; on a PostgreSQL hub while this
/// replica holds the `mqtt` lease.
pub async fn run_on_backend(
    cfg: MqttConfig,
    agent: Agent,
    cancel: CancellationToken,
) -> Result<(), MqttError> {
    match &agent.backend {
        Backend::Sqlite(_) => run(cfg, agent, cancel).await,
        #[cfg(feature = "postgres")]
        Backend::Postgres(hub) => {
            let hub = hub.store.clone();
            lead(&hub, cfg, agent, cancel).await;
            Ok(())
        }
    }
}

#[cfg(feature = "postgres")]
async fn lead(hub: &kdelta_pg::PgStore, cfg: MqttConfig, agent: Agent, cancel: CancellationToken) {
    let mut waiting_logged = false;
    while !cancel.is_cancelled() {
        match hub.try_lead("mqtt").await {
            Ok(Some(mut lease)) => {
                waiting_logged = false;
                tracing::info!("this replica holds the hub's MQTT lease and runs its MQTT client");
                let client = cancel.child_token();
                let mut task = tokio::spawn(run(cfg.clone(), agent.clone(), client.clone()));
                let mut check = tokio::time::interval(LEASE_CHECK);
                check.tick().await;
                let ended = loop {
                    tokio::select! {
                        ended = &mut task => break ended,
                        _ = check.tick() => {
                            if !lease.still_held().await {
                                tracing::warn!(
                                    "the hub's MQTT lease was lost (its database connection \
                                     failed); stopping this replica's MQTT client"
                                );
                                client.cancel();
                                break (&mut task).await;
                            }
                        }
                    }
                };
                match ended {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!("the MQTT client stopped: {e}; retrying"),
                    Err(e) => tracing::error!("the MQTT client failed: {e}; retrying"),
                }
                drop(lease);
            }
            Ok(None) => {
                if !waiting_logged {
                    tracing::info!(
                        "another replica holds the hub's MQTT lease; this one stands by"
                    );
                    waiting_logged = true;
                }
            }
            Err(e) => tracing::warn!("cannot take the hub's MQTT lease: {e}"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(LEASE_RETRY) => {}
        }
    }
}
