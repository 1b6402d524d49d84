//! The hub's side of a device's clock rebase (`docs/clock.md`, "A store stamped in the
//! future"): moving a `device` credential from the actor it is bound to on to the actor
//! named by a checked succession record, keeping the old one as a predecessor
//! (`credential_predecessors`, migration 0007), and the actor keys the record is checked
//! against. The check itself is the session's (`kdelta_sync::Succession::check`).

use kdelta_sync::ActorId;
use sqlx::Row;

use crate::error::{PgError, Result};
use crate::store::PgStore;

impl PgStore {
    /// Moves the `device` credential `principal` from `old` on to `new` when it is bound to
    /// `old`, in one transaction (two replicas moving it at once: the second finds it bound
    /// to `new` already), keeping `old` among its predecessors. Returns the actor bound
    /// afterwards.
    pub async fn succeed_credential(
        &self,
        principal: &str,
        old: ActorId,
        new: ActorId,
    ) -> Result<ActorId> {
        let ctx = "moving a sync credential to a successor";
        let mut tx = self.inner.pool.begin().await.map_err(PgError::db(ctx))?;
        let moved = sqlx::query(
            "UPDATE credential_bindings SET actor = $3 WHERE principal = $1 AND actor = $2",
        )
        .bind(principal)
        .bind(old.as_bytes().as_slice())
        .bind(new.as_bytes().as_slice())
        .execute(&mut *tx)
        .await
        .map_err(PgError::db(ctx))?
        .rows_affected();
        if moved == 1 {
            sqlx::query(
                "INSERT INTO credential_predecessors (principal, actor) VALUES ($1, $2) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(principal)
            .bind(old.as_bytes().as_slice())
            .execute(&mut *tx)
            .await
            .map_err(PgError::db(ctx))?;
        }
        let bound: Vec<u8> =
            sqlx::query_scalar("SELECT actor FROM credential_bindings WHERE principal = $1")
                .bind(principal)
                .fetch_one(&mut *tx)
                .await
                .map_err(PgError::db(ctx))?;
        tx.commit().await.map_err(PgError::db(ctx))?;
        ActorId::from_slice(&bound).ok_or_else(|| {
            PgError::Store(kdelta_sync::StoreError::Decode {
                what: "bound actor of a sync credential",
                detail: format!("{} bytes instead of 16", bound.len()),
            })
        })
    }

    /// The actors `principal` was bound to before its current one, oldest first.
    pub async fn credential_predecessors(&self, principal: &str) -> Result<Vec<ActorId>> {
        let rows = sqlx::query(
            "SELECT actor FROM credential_predecessors WHERE principal = $1 \
             ORDER BY succeeded_at, actor",
        )
        .bind(principal)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(PgError::db("reading a credential's predecessors"))?;
        Ok(rows
            .iter()
            .filter_map(|r| ActorId::from_slice(&r.get::<Vec<u8>, _>(0)))
            .collect())
    }

    /// The Ed25519 public key bound here to `actor` by its first signed change, if any.
    pub async fn actor_key(&self, actor: ActorId) -> Result<Option<[u8; 32]>> {
        let key: Option<Option<Vec<u8>>> =
            sqlx::query_scalar("SELECT public_key FROM actors WHERE actor = $1")
                .bind(actor.as_bytes().as_slice())
                .fetch_optional(&self.inner.pool)
                .await
                .map_err(PgError::db("reading an actor's key"))?;
        Ok(key.flatten().and_then(|k| k.try_into().ok()))
    }
}
