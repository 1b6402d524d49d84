//! Where this store first received each actor's changes from: the name of the peer (its
//! credential's name, else the name it gave) whose session first brought them. A fork
//! report ([`Fork`](crate::Fork)) then names *both* stores involved — the peer that just sent
//! a contradicting change and the one this store's copy came from — instead of "the store
//! this one first received actor X from".
//!
//! Kept in `meta` as `local/origin/<actor>` (not replicated, not in the digest): first
//! recorded wins. Noting is cheap in the steady state — actors already noted in this process
//! are remembered in memory — and bounded: at most [`MAX_NEW_PER_PAGE`] new actors are noted
//! per page, so a peer creating actors by the thousand costs at most that many small writes
//! per page. Actors received before this record existed are attributed to the first peer
//! that sends them again. Owns only the record; the fork decision is `forks.rs` and
//! `protocol/exchange.rs`'s.

use std::collections::HashSet;
use std::sync::Mutex;

use rusqlite::OptionalExtension;

use crate::{ActorId, Result, Store, StoreError};

/// Most actors whose origin one page may record.
pub const MAX_NEW_PER_PAGE: usize = 64;

/// Actors remembered as noted in memory; beyond, the memory is cleared (the record in
/// `meta` stays and is looked up again).
const MAX_REMEMBERED: usize = 100_000;

/// Actors whose origin a store (embedded, or a PostgreSQL hub replica) has recorded,
/// remembered in memory so a page of known actors costs no statement.
#[derive(Debug, Default)]
pub struct NotedActors(Mutex<HashSet<ActorId>>);

impl NotedActors {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<ActorId>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Those of `actors` not noted yet, never `own`, each once, at most
    /// [`MAX_NEW_PER_PAGE`] of them: the ones whose origin may still need recording.
    pub fn fresh(&self, own: ActorId, actors: &[ActorId]) -> Vec<ActorId> {
        let noted = self.lock();
        let mut seen = HashSet::new();
        actors
            .iter()
            .copied()
            .filter(|a| *a != own && !noted.contains(a) && seen.insert(*a))
            .take(MAX_NEW_PER_PAGE)
            .collect()
    }

    /// Remembers `actors` as noted (the memory is cleared first when it would grow past
    /// its bound; the records stay where they are stored).
    pub fn remember(&self, actors: Vec<ActorId>) {
        let mut noted = self.lock();
        if noted.len() + actors.len() > MAX_REMEMBERED {
            noted.clear();
        }
        noted.extend(actors);
    }
}

/// The `meta` key (under `local/`) of `actor`'s origin.
fn key(actor: ActorId) -> String {
    format!("origin/{actor}")
}

impl Store {
    /// Records `peer` as where this store first received the changes of those of `actors`
    /// with no origin recorded yet (never this store's own actor).
    pub async fn note_origins(&self, actors: &[ActorId], peer: &str) -> Result<()> {
        let candidates = self.inner.origins_noted.fresh(self.actor(), actors);
        if candidates.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = candidates
            .iter()
            .map(|a| format!("local/{}", key(*a)))
            .collect();
        let recorded: Vec<bool> = self
            .inner
            .readers
            .read(move |conn| {
                let mut st = conn
                    .prepare_cached("SELECT 1 FROM meta WHERE key = ?1")
                    .map_err(StoreError::db("reading actor origins"))?;
                keys.iter()
                    .map(|k| {
                        st.query_row([k], |_| Ok(()))
                            .optional()
                            .map(|r| r.is_some())
                            .map_err(StoreError::db("reading actor origins"))
                    })
                    .collect()
            })
            .await?;
        for (actor, known) in candidates.iter().zip(recorded) {
            if !known {
                self.set_local_meta(&key(*actor), peer.as_bytes().to_vec())
                    .await?;
            }
        }
        self.inner.origins_noted.remember(candidates);
        Ok(())
    }

    /// The peer this store first received `actor`'s changes from, when recorded.
    pub async fn origin_of(&self, actor: ActorId) -> Result<Option<String>> {
        let rows = self.local_meta(&key(actor)).await?;
        Ok(rows
            .into_iter()
            .find(|(k, _)| *k == key(actor))
            .map(|(_, v)| String::from_utf8_lossy(&v).into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreConfig;

    #[tokio::test]
    async fn the_first_peer_noted_for_an_actor_stays_its_origin() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.db"), StoreConfig::default())
            .await
            .unwrap();
        let (a, b) = (ActorId::random(), ActorId::random());
        store.note_origins(&[a, a], "hub").await.unwrap();
        store.note_origins(&[a, b], "pi-7").await.unwrap();
        assert_eq!(store.origin_of(a).await.unwrap().as_deref(), Some("hub"));
        assert_eq!(store.origin_of(b).await.unwrap().as_deref(), Some("pi-7"));
        // Its own actor has no origin; an unknown actor neither.
        store.note_origins(&[store.actor()], "hub").await.unwrap();
        assert_eq!(store.origin_of(store.actor()).await.unwrap(), None);
        assert_eq!(store.origin_of(ActorId::random()).await.unwrap(), None);
        // Across a restart (memory cleared) the record holds, first one still winning.
        store.close().await;
        let store = Store::open(dir.path().join("s.db"), StoreConfig::default())
            .await
            .unwrap();
        store.note_origins(&[a], "other").await.unwrap();
        assert_eq!(store.origin_of(a).await.unwrap().as_deref(), Some("hub"));
        // A page of many new actors notes a bounded number of them.
        let many: Vec<ActorId> = (0..200).map(|_| ActorId::random()).collect();
        store.note_origins(&many, "flood").await.unwrap();
        let mut noted = 0;
        for x in &many {
            noted += usize::from(store.origin_of(*x).await.unwrap().is_some());
        }
        assert_eq!(noted, MAX_NEW_PER_PAGE);
    }
}
