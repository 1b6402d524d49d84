//! Detecting two stores that write as one actor — an imaged SD card, a backup restored on a
//! second device. Each writes its own changes under the same `(actor, seq)`, so when their
//! histories meet (directly, or through a hub that relays one to the other) some received
//! change names an `(actor, seq)` this store already holds with other content: a fork of that
//! actor's history. Merging it would silently keep one version and drop the other, so the
//! sync protocol holds that actor back from that peer instead and reports the fork.
//!
//! Content is compared by what the change log row keeps without loading bodies: the HLC, the
//! kind, and for readings the manifest (series, units, time range, counts). Two clones that
//! wrote different changes stamp them at different HLCs in practice. Owns only the lookup; the
//! decision and the report live in the protocol (`protocol/exchange.rs`).

use rusqlite::{OptionalExtension, params};

use crate::ingest::encode_manifest;
use crate::log_read::{self, LOG_COLUMNS, LogRow};
use crate::{ActorId, Change, ChangeBody, Hlc, Result, Store, StoreError};

/// A received change that contradicts this store's copy of the same `(actor, seq)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fork {
    /// The actor two stores write as.
    pub actor: ActorId,
    /// The first seq of the page where the two histories differ.
    pub seq: u64,
    /// The HLC of the change this store holds.
    pub held: Hlc,
    /// The HLC of the change received.
    pub received: Hlc,
}

impl std::fmt::Display for Fork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "change {}:{} differs from the one this store holds (stamped {} here, {} received): \
             two stores write as actor {}",
            self.actor, self.seq, self.held, self.received, self.actor
        )
    }
}

/// Change-log kind of a body (as stored in `changes.kind`).
fn kind_of(body: &ChangeBody) -> i64 {
    match body {
        ChangeBody::Readings(_) => 1,
        ChangeBody::Doc(_) => 2,
        ChangeBody::Twin(_) => 3,
    }
}

impl Store {
    /// The changes this store holds at the given `(actor, seq)`s (those it lacks are left
    /// out), in the order asked: the anchors a sync session sends before an actor's first
    /// new changes, so the peer can compare its copy of the change just before them.
    pub async fn changes_at(&self, dots: &[(ActorId, u64)]) -> Result<Vec<Change>> {
        if dots.is_empty() {
            return Ok(Vec::new());
        }
        let dots = dots.to_vec();
        self.inner
            .readers
            .read(move |conn| {
                let mut rows = Vec::with_capacity(dots.len());
                {
                    // Built from constants only.
                    let sql = format!(
                        "SELECT {LOG_COLUMNS} FROM changes c JOIN actors a ON a.idx = c.actor_idx \
                         WHERE a.actor = ?1 AND c.seq = ?2"
                    );
                    let mut st = conn
                        .prepare_cached(&sql)
                        .map_err(StoreError::db("reading the change log"))?;
                    for (actor, seq) in dots {
                        let mut found = st
                            .query(params![actor.as_bytes().as_slice(), seq as i64])
                            .map_err(StoreError::db("reading the change log"))?;
                        if let Some(r) = found
                            .next()
                            .map_err(StoreError::db("reading the change log"))?
                        {
                            rows.push(LogRow::from_row(r, actor)?);
                        }
                    }
                }
                log_read::load(conn, rows)
            })
            .await
    }

    /// The changes among `changes` whose `(actor, seq)` this store already holds with other
    /// content (see the module docs), at most one per actor (its lowest such seq). Changes
    /// above what the store holds are not looked at: there is nothing to compare them with.
    pub async fn find_forks(&self, changes: &[Change]) -> Result<Vec<Fork>> {
        let vv = self.version_vector();
        // (actor, seq, hlc, kind, manifest of a readings change)
        let held: Vec<(ActorId, u64, Hlc, i64, Option<Vec<u8>>)> = changes
            .iter()
            .filter(|c| c.seq <= vv.get(&c.actor))
            .map(|c| {
                let manifest = match &c.body {
                    ChangeBody::Readings(b) => Some(encode_manifest(b)),
                    _ => None,
                };
                (c.actor, c.seq, c.hlc, kind_of(&c.body), manifest)
            })
            .collect();
        if held.is_empty() {
            return Ok(Vec::new());
        }
        self.inner
            .readers
            .read(move |conn| {
                let mut forks: Vec<Fork> = Vec::new();
                let mut st = conn
                    .prepare_cached(
                        "SELECT c.hlc, c.kind, c.manifest FROM changes c JOIN actors a ON a.idx = c.actor_idx \
                         WHERE a.actor = ?1 AND c.seq = ?2",
                    )
                    .map_err(StoreError::db("comparing received changes"))?;
                for (actor, seq, hlc, kind, manifest) in held {
                    if forks.iter().any(|f| f.actor == actor) {
                        continue;
                    }
                    let row: Option<(i64, i64, Option<Vec<u8>>)> = st
                        .query_row(params![actor.as_bytes().as_slice(), seq as i64], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                        })
                        .optional()
                        .map_err(StoreError::db("comparing received changes"))?;
                    // A row gone (retention) leaves nothing to compare.
                    let Some((held_hlc, held_kind, held_manifest)) = row else {
                        continue;
                    };
                    let same = held_hlc as u64 == hlc.0
                        && held_kind == kind
                        && (kind != 1 || held_manifest == manifest);
                    if !same {
                        forks.push(Fork {
                            actor,
                            seq,
                            held: Hlc(held_hlc as u64),
                            received: hlc,
                        });
                    }
                }
                Ok(forks)
            })
            .await
    }
}
