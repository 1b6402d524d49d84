//! Where the hub first received each actor's changes from (`actor_origins`, migration 0006),
//! as the embedded store keeps it (`kdelta_sync`'s `origins.rs`): a fork report names the
//! peer that sent a contradicting change *and* the one the hub's copy came from. First
//! recorded wins (`ON CONFLICT DO NOTHING`, so replicas racing on one actor agree); which
//! actors this replica noted is remembered, and bounded per page, by the same
//! [`NotedActors`](kdelta_sync::NotedActors) the embedded store uses.

use kdelta_sync::ActorId;

use crate::{PgError, PgStore, Result};

impl PgStore {
    /// Records `peer` as the origin of those of `actors` with none recorded yet (never the
    /// hub's own actor).
    pub async fn note_origins(&self, actors: &[ActorId], peer: &str) -> Result<()> {
        let fresh = self.inner.origins_noted.fresh(self.actor(), actors);
        if fresh.is_empty() {
            return Ok(());
        }
        let bytes: Vec<Vec<u8>> = fresh.iter().map(|a| a.as_bytes().to_vec()).collect();
        sqlx::query(
            "INSERT INTO actor_origins (actor, peer) SELECT a, $2 FROM unnest($1::bytea[]) AS a \
             ORDER BY a ON CONFLICT (actor) DO NOTHING",
        )
        .bind(&bytes)
        .bind(peer)
        .execute(&self.inner.pool)
        .await
        .map_err(PgError::db("recording actor origins"))?;
        self.inner.origins_noted.remember(fresh);
        Ok(())
    }

    /// The peer the hub first received `actor`'s changes from, when recorded.
    pub async fn origin_of(&self, actor: ActorId) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT peer FROM actor_origins WHERE actor = $1")
            .bind(actor.as_bytes().as_slice())
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(PgError::db("reading actor origins"))
    }
}
