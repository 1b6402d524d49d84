//! Where the hub first received each actor's changes from (`actor_origins`, migration 0006),
//! as the embedded store keeps it (`kdelta_sync`'s `origins.rs`): a fork report names the
//! peer that sent a contradicting change *and* the one the hub's copy came from. First
//! recorded wins (`ON CONFLICT DO NOTHING`, so replicas racing on one actor agree); actors
//! noted by this replica are remembered in memory, so a page of known actors costs no
//! statement, and at most [`MAX_NEW_PER_PAGE`] new ones are noted per page.

use std::collections::HashSet;

use kdelta_sync::ActorId;

use crate::{PgError, PgStore, Result};

/// Most actors whose origin one page may record.
pub const MAX_NEW_PER_PAGE: usize = 64;

/// Actors remembered as noted; beyond, the memory is cleared.
const MAX_REMEMBERED: usize = 100_000;

impl PgStore {
    /// Records `peer` as the origin of those of `actors` with none recorded yet (never the
    /// hub's own actor).
    pub async fn note_origins(&self, actors: &[ActorId], peer: &str) -> Result<()> {
        let own = self.actor();
        let fresh: Vec<ActorId> = {
            let noted = self
                .inner
                .origins_noted
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let mut seen = HashSet::new();
            actors
                .iter()
                .copied()
                .filter(|a| *a != own && !noted.contains(a) && seen.insert(*a))
                .take(MAX_NEW_PER_PAGE)
                .collect()
        };
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
        let mut noted = self
            .inner
            .origins_noted
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if noted.len() + fresh.len() > MAX_REMEMBERED {
            noted.clear();
        }
        noted.extend(fresh);
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
