//! Where a newest-first history page ends. Document versions and twin changes are listed by
//! `(HLC, actor)` descending; two actors' clocks can stamp the same HLC, so a cursor of the HLC
//! alone would skip (or repeat) versions at a page boundary. The cursor holds both.
//!
//! Text form (the API's `next_before`): `<ms>:<logical>~<actor hex>`; a bare HLC or instant
//! means "everything strictly before that time".

use std::fmt;

use crate::{ActorId, Hlc};

/// The position after which the next (older) history page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryCursor {
    /// Entries with an older HLC come next.
    pub hlc: Hlc,
    /// With the same HLC, entries of a smaller actor id come next; `None` skips every entry
    /// stamped `hlc`.
    pub actor: Option<ActorId>,
}

impl HistoryCursor {
    /// Everything strictly before `hlc`.
    pub fn before(hlc: Hlc) -> HistoryCursor {
        HistoryCursor { hlc, actor: None }
    }

    /// Everything listed after the entry `(hlc, actor)`.
    pub fn after_entry(hlc: Hlc, actor: ActorId) -> HistoryCursor {
        HistoryCursor {
            hlc,
            actor: Some(actor),
        }
    }

    /// SQL parameters for `hlc <= ?a AND (hlc < ?a OR actor < ?b)` (actor compared as bytes,
    /// as SQLite's BLOB and PostgreSQL's BYTEA do); no cursor gives a bound
    /// above every HLC. An empty actor blob sorts before every actor, which skips the whole
    /// millisecond tick when the cursor has no actor.
    pub fn sql_bounds(cursor: Option<HistoryCursor>) -> (i64, Vec<u8>) {
        match cursor {
            None => (i64::MAX, Vec::new()),
            Some(c) => (
                c.hlc.0 as i64,
                c.actor.map(|a| a.as_bytes().to_vec()).unwrap_or_default(),
            ),
        }
    }
}

impl fmt::Display for HistoryCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.actor {
            Some(a) => write!(f, "{}~{a}", self.hlc),
            None => write!(f, "{}", self.hlc),
        }
    }
}
