//! The unsigned past: changes stored before their actor signed (made by a store before it
//! was upgraded to the signed change log, or relayed by a peer on an older release, which
//! drops seals). Owns two things, and no other part of the chain (`chain.rs`):
//!
//! - [`sign_own_past`]: when this release first opens a store whose own actor has changes
//!   and not one of them signed, it signs them all, from seq 1 ([`CHAIN_START`]), in one
//!   transaction. The store then serves a chain complete from seq 1, which receivers that
//!   require signatures (the default) accept. A store whose own actor signed already (an
//!   earlier signing build started the chain after the unsigned past) is left as it is:
//!   re-signing its past would break the link of its first signed change, held by peers.
//! - the *implied hash* of an unsigned prefix ([`link_unsigned`], [`unsigned_past_hash`]):
//!   the change hash the held changes 1..n of an actor would have, had they been signed from
//!   seq 1. A receiver holding an actor's changes unsigned (copies from before that actor
//!   signed its past, or stripped by an older relay) accepts the actor's next signed change
//!   when it links to exactly that: its signature then vouches for every held copy. Any other
//!   link (but [`CHAIN_START`]) proves the held copies are not what the actor signed.

use rusqlite::{Connection, OptionalExtension, params};

use crate::log_read::{self, LogRow};
use crate::seal::{self, CHAIN_START, Hash, SigningKey};
use crate::{ActorId, Change, Result, StoreError};

/// The hash `c` has when signed after `prev` (its pruned units' hashes: `pruned`).
pub fn link_unsigned(prev: &Hash, c: &Change, pruned: &[Hash]) -> Hash {
    let body = seal::body_hash(&c.body, pruned);
    seal::change_hash(&c.actor, c.seq, c.hlc, prev, &body)
}

/// Calls `each` with every change of actor row `idx`, in seq order, with its log row (seal
/// and pruned hashes), a page at a time. Stops at the first `false`.
fn walk(
    conn: &Connection,
    actor: ActorId,
    idx: i64,
    mut each: impl FnMut(&LogRow, &Change) -> Result<bool>,
) -> Result<()> {
    log_read::actor_pages(conn, actor, idx, |rows| {
        // `load` consumes its rows; the seals and pruned hashes are still needed here.
        let changes = log_read::load(conn, rows.clone())?;
        for (row, c) in rows.iter().zip(&changes) {
            if !each(row, c)? {
                return Ok(false);
            }
        }
        Ok(true)
    })
}

/// The implied hash of the changes of `actor` (row `idx`) held here, all unsigned and dense
/// from seq 1: `None` when one of them is signed or a seq is missing.
pub(crate) fn unsigned_past_hash(
    conn: &Connection,
    actor: ActorId,
    idx: i64,
) -> Result<Option<Hash>> {
    let mut hash = Some(CHAIN_START);
    let mut expect = 1u64;
    walk(conn, actor, idx, |row, c| {
        let Some(prev) = hash.filter(|_| row.seal.is_none() && c.seq == expect) else {
            hash = None;
            return Ok(false);
        };
        hash = Some(link_unsigned(&prev, c, &row.pruned));
        expect += 1;
        Ok(true)
    })?;
    Ok(hash)
}

/// Signs the own actor's unsigned past (see the module header); returns how many changes it
/// signed (0: nothing to do). Runs once, at the first open by a signing release, inside its
/// own transaction.
pub(crate) fn sign_own_past(conn: &Connection, actor: ActorId, key: &SigningKey) -> Result<u64> {
    let idx: Option<i64> = conn
        .query_row(
            "SELECT idx FROM actors WHERE actor = ?1",
            [actor.as_bytes().as_slice()],
            |r| r.get(0),
        )
        .optional()
        .map_err(StoreError::db("reading this store's actor"))?;
    let Some(idx) = idx else { return Ok(0) };
    // Every open asks, so it must not read the whole own log: the newest own change answers
    // (a signing release signs every change it makes, so once one is signed every later one
    // is); only when it is unsigned is the log searched for a signed one (a store an
    // unsigned release wrote to after a signing one), which the signing walk reads anyway.
    let newest_signed: Option<bool> = conn
        .query_row(
            "SELECT signature IS NOT NULL FROM changes WHERE actor_idx = ?1 \
             ORDER BY seq DESC LIMIT 1",
            [idx],
            |r| r.get(0),
        )
        .optional()
        .map_err(StoreError::db("reading this store's newest change"))?;
    let any_signed = || {
        conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM changes WHERE actor_idx = ?1 AND signature IS NOT NULL)",
            [idx],
            |r| r.get::<_, bool>(0),
        )
        .map_err(StoreError::db("looking for a signed own change"))
    };
    match newest_signed {
        None | Some(true) => return Ok(0),
        Some(false) if any_signed()? => return Ok(0),
        Some(false) => {}
    }
    let tx = conn
        .unchecked_transaction()
        .map_err(StoreError::db("starting to sign the unsigned past"))?;
    let mut prev = CHAIN_START;
    let mut expect = 1u64;
    let mut done = 0u64;
    let mut gap = None;
    walk(&tx, actor, idx, |row, c| {
        if c.seq != expect {
            gap = Some((expect, c.seq));
            return Ok(false);
        }
        let body = seal::body_hash(&c.body, &row.pruned);
        let hash = seal::change_hash(&actor, c.seq, c.hlc, &prev, &body);
        tx.prepare_cached(
            "UPDATE changes SET prev_hash = ?1, body_hash = ?2, signature = ?3 WHERE id = ?4",
        )
        .and_then(|mut st| {
            st.execute(params![
                prev.as_slice(),
                body.as_slice(),
                key.sign(&hash).as_slice(),
                row.id
            ])
        })
        .map_err(StoreError::db("signing a change of the unsigned past"))?;
        prev = hash;
        expect += 1;
        done += 1;
        Ok(true)
    })?;
    if let Some((want, got)) = gap {
        // A hole in the own log cannot be chained over: leave the past unsigned (it still
        // syncs to peers that opt out of require_signatures) and say why.
        tracing::warn!(
            actor = %actor,
            "the unsigned past is not signed: own change {want} is missing (the log goes on at {got})"
        );
        return Ok(0);
    }
    tx.execute(
        "UPDATE actors SET public_key = ?1 WHERE idx = ?2 AND public_key IS NULL",
        params![key.public().as_slice(), idx],
    )
    .map_err(StoreError::db("binding this store's public key"))?;
    tx.commit()
        .map_err(StoreError::db("committing the signed past"))?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Store, StoreConfig};

    /// A store with `n` own changes, signed (made by this release), closed.
    async fn store_with_changes(path: &std::path::Path, n: usize) {
        let s = Store::open(path, StoreConfig::default()).await.unwrap();
        for i in 0..n {
            s.put("k", &serde_json::json!(i)).await.unwrap();
        }
        s.close().await;
    }

    fn unsigned(conn: &Connection) -> i64 {
        conn.query_row(
            "SELECT COUNT(*) FROM changes WHERE signature IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap()
    }

    /// Which stores get their past signed at open: only one whose own actor signed nothing.
    /// The check reads the newest own change first, so an open never reads the whole log.
    #[tokio::test]
    async fn only_a_wholly_unsigned_own_past_is_signed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        store_with_changes(&path, 5).await;
        let (conn, actor) = crate::schema::open_writer(&path, &StoreConfig::default()).unwrap();
        let key = crate::schema::load_or_create_signing_key(&conn).unwrap();

        // Signed by this release: nothing to do.
        assert_eq!(sign_own_past(&conn, actor, &key).unwrap(), 0);
        assert_eq!(unsigned(&conn), 0);

        // Written to by an unsigned release after a signing one: the newest is unsigned but
        // the past was signed, so it is left as it is (re-signing would break held links).
        conn.execute(
            "UPDATE changes SET signature = NULL WHERE id = (SELECT MAX(id) FROM changes)",
            [],
        )
        .unwrap();
        assert_eq!(sign_own_past(&conn, actor, &key).unwrap(), 0);
        assert_eq!(unsigned(&conn), 1);

        // Nothing signed (the unsigned era): all five are signed, from seq 1.
        conn.execute(
            "UPDATE changes SET signature = NULL, prev_hash = NULL, body_hash = NULL",
            [],
        )
        .unwrap();
        assert_eq!(sign_own_past(&conn, actor, &key).unwrap(), 5);
        assert_eq!(unsigned(&conn), 0);
    }
}
