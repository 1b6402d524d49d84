//! Which received changes of one apply call are stored: the pure decision both backends
//! make (the SQLite writer, `writer.rs`, and the PostgreSQL change log, crate `kdelta-pg`)
//! from what they hold of the call's actors, so a page is refused or admitted the same way
//! whichever store receives it. Per change, in page order: validation against the limits,
//! duplicates skipped, a gap refuses the call ([`StoreError::SeqGap`]), a timestamp too far
//! ahead refuses the call ([`StoreError::ClockSkew`]), then the signed-log check
//! (`chain.rs`, [`check_remote`](crate::chain::check_remote)). Owns no storage: the caller
//! reads the actors' state before and writes the admitted changes after.

use std::collections::HashMap;

use crate::chain::{ChainHead, ChainRefusal, ChainReport, PendingSeal};
use crate::seal::Prechecked;
use crate::{ActorId, Change, ClockSkewError, Limits, Result, StoreError};

/// What a store holds of one actor before the call: its highest contiguous seq and the head
/// of its signed chain.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeldActor {
    /// Highest contiguous seq held (0: nothing).
    pub max_seq: u64,
    /// The chain head as stored.
    pub head: ChainHead,
}

/// How strictly a call is admitted.
#[derive(Debug, Clone, Copy)]
pub struct AdmitRules<'a> {
    /// Validate each change against these limits (`None`: the caller validated already).
    pub limits: Option<&'a Limits>,
    /// Refuse unsigned changes (`require_signatures`).
    pub require_signatures: bool,
    /// A change failing its chain check refuses only its actor's changes (listed in the
    /// report); otherwise it refuses the call with [`StoreError::ChainRefused`].
    pub partial: bool,
    /// Signatures found valid ahead of this call (see [`Prechecked`]); the rest are
    /// verified here.
    pub prechecked: Option<&'a Prechecked>,
}

/// The decision for one call.
#[derive(Debug, Default)]
pub struct Admission {
    /// Indices of the changes to store, in page order.
    pub fresh: Vec<usize>,
    /// Changes held already.
    pub skipped: usize,
    /// Actors refused by the chain check, and unsigned changes accepted.
    pub report: ChainReport,
    /// Chain heads after the admitted changes, per actor of the call.
    pub heads: HashMap<ActorId, ChainHead>,
    /// Seals of the admitted signed changes, in page order.
    pub(crate) seals: Vec<PendingSeal>,
}

impl Admission {
    /// The admitted signed changes' keys to bind to their actors (first signed change of
    /// an actor here: trust on first use), as `(actor, key)`.
    pub fn keys_to_bind(&self) -> impl Iterator<Item = (ActorId, [u8; 32])> + '_ {
        self.seals
            .iter()
            .filter(|s| s.bind)
            .map(|s| (s.actor, s.seal.key))
    }
}

/// The actors of `changes` whose [`ChainHead::past`] the store must fill in `held` before
/// [`admit_remote`]: those it holds unsigned (a head without hash, some seq held) with a
/// signed change in the call that does not start a chain. Computing it reads the actor's
/// whole held log, so it is asked for only then.
pub fn needs_past(changes: &[Change], held: &HashMap<ActorId, HeldActor>) -> Vec<ActorId> {
    let mut out: Vec<ActorId> = Vec::new();
    for c in changes {
        let Some(h) = held.get(&c.actor) else {
            continue;
        };
        let links = c
            .seal
            .as_ref()
            .is_some_and(|s| s.prev != crate::seal::CHAIN_START);
        // A log run reaching below what is held is not linked here (`log_runs.rs`).
        let skips = c.seq > h.max_seq + 1;
        if links && !skips && h.head.hash.is_none() && h.max_seq > 0 && !out.contains(&c.actor) {
            out.push(c.actor);
        }
    }
    out
}

/// Decides which of `changes` a store holding `held` (per actor of the call; actors left
/// out hold nothing) stores. `check_time` is the store's clock check of a remote change.
pub fn admit_remote(
    changes: &[Change],
    held: &HashMap<ActorId, HeldActor>,
    rules: AdmitRules<'_>,
    mut check_time: impl FnMut(&Change) -> std::result::Result<(), ClockSkewError>,
) -> Result<Admission> {
    let mut expect: HashMap<ActorId, u64> = HashMap::new();
    let mut out = Admission {
        fresh: Vec::with_capacity(changes.len()),
        heads: held.iter().map(|(a, h)| (*a, h.head)).collect(),
        ..Admission::default()
    };
    for (i, c) in changes.iter().enumerate() {
        if let Some(r) = out.report.refused.iter_mut().find(|r| r.actor == c.actor) {
            r.changes += 1;
            continue;
        }
        if let Some(limits) = rules.limits {
            c.validate(limits)?;
        }
        refuse_negative_zero(c)?;
        let have = *expect
            .entry(c.actor)
            .or_insert_with(|| held.get(&c.actor).map_or(0, |h| h.max_seq));
        if c.seq <= have {
            out.skipped += 1;
            continue;
        }
        // The survivor of a log run may reach below what is held (`log_runs.rs`).
        let run_from = crate::log_runs::run_from_held(c, have);
        if c.seq != have + 1 && run_from.is_none() {
            return Err(StoreError::SeqGap {
                actor: c.actor,
                have,
                got: c.first_seq().min(c.seq),
            });
        }
        check_time(c).map_err(|e| StoreError::ClockSkew {
            actor: c.actor,
            remote: e.remote,
            ahead_ms: e.ahead_ms,
            max_offset_ms: e.max_offset_ms,
        })?;
        let head = out.heads.get(&c.actor).copied().unwrap_or_default();
        let checked = crate::chain::check_remote(
            &head,
            c,
            rules.require_signatures,
            rules.prechecked,
            run_from,
        );
        match checked {
            Ok((next, seal)) => {
                out.heads.insert(c.actor, next);
                match seal {
                    Some(s) => out.seals.push(s),
                    None => out.report.unsigned += 1,
                }
            }
            Err((fault, detail)) => {
                let refusal = ChainRefusal {
                    actor: c.actor,
                    seq: c.seq,
                    changes: 1,
                    fault,
                    detail,
                };
                if !rules.partial {
                    return Err(refusal.into_error());
                }
                out.report.refused.push(refusal);
                continue;
            }
        }
        expect.insert(c.actor, c.seq);
        out.fresh.push(i);
    }
    Ok(out)
}

/// Refuses a received readings change holding `-0.0`: SQLite keeps it as `0.0`, so the
/// stored change would no longer match its signed body hash and every next hop would refuse
/// it as altered. Local changes are stamped as stored (`ingest.rs`, `as_stored`), so no
/// kdelta peer sends one; a peer that does is told exactly why, on either backend.
fn refuse_negative_zero(change: &Change) -> Result<()> {
    let crate::ChangeBody::Readings(batch) = &change.body else {
        return Ok(());
    };
    for s in &batch.series {
        if let Some((ts, _)) =
            s.ts.iter()
                .zip(&s.values)
                .find(|(_, v)| **v == 0.0 && v.is_sign_negative())
        {
            return Err(StoreError::InvalidBatch(format!(
                "series {:?} at {ts} of change {}:{}: the value is -0 (negative zero), which \
                 the store cannot keep bit for bit (a kdelta peer sends 0)",
                s.name, change.actor, change.seq
            )));
        }
    }
    Ok(())
}
