//! Rebasing a store whose own changes are stamped in the future (`docs/clock.md`, "A store
//! stamped in the future"): the store takes a new actor and key pair, seeded from the
//! trusted time instead of its highest HLC, and keeps a [`Succession`] record signed by the
//! old key, which its sync handshakes carry so peers move the old actor's `device`
//! credential on to the new one. Owns the offline steps (the store must not be open) and
//! what the writer needs at open: which actors are this store's predecessors, and the HLC
//! floor without them.

use std::collections::HashSet;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension};

use crate::{ActorId, Hlc, Result, Store, StoreConfig, StoreError, Succession};

/// `meta` key prefix of this store's own succession records (`<prefix><new actor hex>`).
const OWN_SUCCESSION: &str = "own_succession/";

/// `meta` key prefix of the actors a `device` credential was bound to before its current
/// one (`<prefix><credential name>`: the actor ids, 16 bytes each, oldest first).
pub(crate) const CREDENTIAL_PREDECESSORS: &str = "credential_predecessors/";

/// How far the store's own newest change runs ahead of everything else it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockLead {
    /// The store's actor.
    pub actor: ActorId,
    /// Its newest change's HLC (zero when it wrote nothing).
    pub own_newest: Hlc,
    /// The newest HLC of every other actor but the store's predecessors (zero: none).
    pub others_newest: Hlc,
}

impl ClockLead {
    /// True when the own newest change is more than `max_offset_ms` ahead of `trusted_ms`:
    /// every correct peer holds it (and so every later change of this actor) back.
    pub fn is_ahead_of(&self, trusted_ms: u64, max_offset_ms: u64) -> bool {
        self.own_newest.ms() > trusted_ms.saturating_add(max_offset_ms)
    }
}

impl Store {
    /// The [`ClockLead`] of the database at `path` (which must not be open).
    pub async fn clock_lead(path: impl AsRef<Path>) -> Result<ClockLead> {
        let path = path.as_ref().to_path_buf();
        tokio::task::spawn_blocking(move || {
            let (conn, actor) = crate::schema::open_writer(&path, &StoreConfig::default())?;
            lead_of(&conn, actor)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    /// The [`ClockLead`] of this open store, as [`clock_lead`](Self::clock_lead) would read
    /// it after a close (the agent's check while running).
    pub async fn current_clock_lead(&self) -> Result<ClockLead> {
        let actor = self.actor();
        self.inner
            .readers
            .read(move |conn| lead_of(conn, actor))
            .await
    }

    /// Gives the database at `path` (which must not be open) a new actor and key pair, like
    /// [`rekey`](Self::rekey), and keeps a [`Succession`] record signed by the old key
    /// (`made_ms`: the trusted time). From the next open, the clock is seeded without the
    /// predecessors' changes, so new changes are stamped by the (trusted) wall clock; the
    /// old actor's changes stay as they are. Returns the record.
    pub async fn rebase_clock(path: impl AsRef<Path>, made_ms: u64) -> Result<Succession> {
        let path = path.as_ref().to_path_buf();
        tokio::task::spawn_blocking(move || {
            let (conn, old) = crate::schema::open_writer(&path, &StoreConfig::default())?;
            let old_key = crate::schema::load_or_create_signing_key(&conn)?;
            let new = ActorId::random();
            let new_key = crate::schema::new_signing_key(&conn)?;
            let record = Succession::sign(old, &old_key, new, new_key.public(), made_ms);
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                rusqlite::params![format!("{OWN_SUCCESSION}{new}"), record.to_bytes()],
            )
            .map_err(StoreError::db("storing a succession record"))?;
            crate::schema::set_actor(&conn, new)?;
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .map_err(StoreError::db("checkpointing after a rebase"))?;
            Ok(record)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    /// This store's succession records, oldest first, ending at its current actor (empty
    /// unless its clock was rebased); the newest [`MAX_SUCCESSIONS`](crate::MAX_SUCCESSIONS)
    /// are what a handshake carries.
    pub async fn successions(&self) -> Result<Vec<Succession>> {
        let actor = self.actor();
        self.inner
            .readers
            .read(move |conn| own_chain(conn, actor))
            .await
    }
}

impl Store {
    /// Moves the `device` credential `principal` from `old` on to `new`, when it is bound
    /// to `old` (the caller checked a [`Succession`] record saying so); `old` stays among
    /// its [`credential_predecessors`](Self::credential_predecessors). Returns the actor it
    /// is bound to afterwards (not `new`: it was bound to another actor, left unchanged).
    pub async fn succeed_credential(
        &self,
        principal: &str,
        old: ActorId,
        new: ActorId,
    ) -> Result<ActorId> {
        self.submit(|reply| crate::writer::Job::Bind {
            principal: principal.to_owned(),
            actor: new,
            from: Some(old),
            reply,
        })
        .await
    }

    /// The actors the credential `principal` was bound to before its current one, oldest
    /// first: a device's actors before it rebased its clock, whose changes it may still
    /// send.
    pub async fn credential_predecessors(&self, principal: &str) -> Result<Vec<ActorId>> {
        let key = format!("{CREDENTIAL_PREDECESSORS}{principal}");
        self.inner
            .readers
            .read(move |conn| {
                let v: Option<Vec<u8>> = conn
                    .query_row("SELECT value FROM meta WHERE key = ?1", [&key], |r| {
                        r.get(0)
                    })
                    .optional()
                    .map_err(StoreError::db("reading a credential's predecessors"))?;
                Ok(v.unwrap_or_default()
                    .chunks_exact(16)
                    .filter_map(ActorId::from_slice)
                    .collect())
            })
            .await
    }

    /// The Ed25519 public key bound here to `actor` (by its first signed change stored).
    pub async fn actor_key(&self, actor: ActorId) -> Result<Option<[u8; 32]>> {
        self.inner
            .readers
            .read(move |conn| {
                let k: Option<Option<Vec<u8>>> = conn
                    .query_row(
                        "SELECT public_key FROM actors WHERE actor = ?1",
                        [actor.as_bytes().as_slice()],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(StoreError::db("reading an actor's key"))?;
                Ok(k.flatten().and_then(|k| k.try_into().ok()))
            })
            .await
    }
}

/// How far `actor`'s newest change runs ahead of every other actor's but its predecessors'.
fn lead_of(conn: &Connection, actor: ActorId) -> Result<ClockLead> {
    let predecessors = predecessors(conn, actor)?;
    let mut lead = ClockLead {
        actor,
        own_newest: Hlc(0),
        others_newest: Hlc(0),
    };
    for (a, hlc) in newest_by_actor(conn)? {
        if a == actor {
            lead.own_newest = hlc;
        } else if !predecessors.contains(&a) {
            lead.others_newest = lead.others_newest.max(hlc);
        }
    }
    Ok(lead)
}

/// The store's succession records, chained to `actor`.
pub(crate) fn own_chain(conn: &Connection, actor: ActorId) -> Result<Vec<Succession>> {
    Ok(crate::chain_to(actor, &own_records(conn)?))
}

/// Every succession record the store made, in no particular order.
fn own_records(conn: &Connection) -> Result<Vec<Succession>> {
    let mut st = conn
        .prepare_cached("SELECT value FROM meta WHERE key LIKE 'own\\_succession/%' ESCAPE '\\'")
        .map_err(StoreError::db("reading succession records"))?;
    let all = st
        .query_map([], |r| r.get::<_, Vec<u8>>(0))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(StoreError::db("reading succession records"))?;
    Ok(all
        .iter()
        .filter_map(|b| Succession::from_bytes(b))
        .collect())
}

/// The actors this store gave up by a clock rebase (every record's old actor, whatever
/// `actor` is now: a rebased store re-keyed since still has future-stamped predecessors).
pub(crate) fn predecessors(conn: &Connection, actor: ActorId) -> Result<HashSet<ActorId>> {
    Ok(own_records(conn)?
        .iter()
        .map(|s| s.old)
        .filter(|a| *a != actor)
        .collect())
}

/// The HLC floor of the store's clock at open: the highest HLC stored, but for the changes
/// of the store's predecessors (a rebased store's old, future-stamped actor).
pub(crate) fn clock_floor(conn: &Connection, actor: ActorId) -> Result<Hlc> {
    let predecessors = predecessors(conn, actor)?;
    if predecessors.is_empty() {
        let max: Option<i64> = conn
            .query_row(HIGHEST_HLC, [], |r| r.get(0))
            .optional()
            .map_err(StoreError::db("reading the highest stored HLC"))?
            .flatten();
        return Ok(Hlc(max.unwrap_or(0) as u64));
    }
    Ok(newest_by_actor(conn)?
        .into_iter()
        .filter(|(a, _)| !predecessors.contains(a))
        .map(|(_, h)| h)
        .max()
        .unwrap_or(Hlc(0)))
}

/// The highest HLC the store holds: from the actors' rows, which the writer keeps (schema
/// 11), not from a scan of the change log.
pub(crate) const HIGHEST_HLC: &str = "SELECT MAX(max_hlc) FROM actors WHERE max_seq > 0";

/// Each actor's highest stored HLC, likewise.
pub(crate) const NEWEST_BY_ACTOR: &str = "SELECT actor, max_hlc FROM actors WHERE max_seq > 0";

/// Every actor's highest stored HLC.
fn newest_by_actor(conn: &Connection) -> Result<Vec<(ActorId, Hlc)>> {
    let ctx = "reading each actor's highest HLC";
    let mut st = conn
        .prepare_cached(NEWEST_BY_ACTOR)
        .map_err(StoreError::db(ctx))?;
    let rows = st
        .query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(StoreError::db(ctx))?;
    Ok(rows
        .into_iter()
        .filter_map(|(a, h)| Some((ActorId::from_slice(&a)?, Hlc(h as u64))))
        .collect())
}
