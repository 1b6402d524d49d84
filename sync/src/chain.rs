//! The store side of the signed change log (hashes and keys are `seal.rs`): sealing local
//! changes in the writer, checking received ones before they are stored, and re-checking a
//! whole store (`kdelta verify`). Owns the `prev_hash`/`body_hash`/`signature`/`pruned`
//! columns of `changes` and `actors.public_key` (migration 0006).
//!
//! A local change is sealed from the job's own data before its row is written, and the
//! seal goes into the same INSERT (twins: one UPDATE after the twin writer's row); the
//! previous hash comes from the writer's cached chain tip. Nothing is read back: the read-back
//! is the oracle of the tests (`sync/tests/chain.rs`) and the path of `verify_store`.
//!
//! Rules for a received change of actor A at seq n (the store holds A up to n − 1):
//! - signed: its key must be A's bound key (bound by A's first signed change stored: trust on
//!   first use); its `prev` must be the hash of the stored change n − 1 when that one is
//!   signed, and [`CHAIN_START`] when n = 1 or the stored n − 1 is unsigned (a chain starts
//!   after the unsigned past; any other link names a signed predecessor whose seal was
//!   stripped here or on the way); its signature must verify over the change hash, computed
//!   from the body received (and the hashes of pruned units).
//! - unsigned: refused once A has a signed change (a stripped signature), or when
//!   `require_signatures` is set (the default); otherwise accepted as the unsigned past of
//!   an actor that has not upgraded yet, and counted.
//!
//! A refusal names the actor and seq; the actor's later changes in the same call wait behind
//! it, other actors' changes apply.

use rusqlite::{Connection, OptionalExtension, params};

use crate::log_read;
use crate::seal::{self, CHAIN_START, Hash, Seal};
use crate::writer::Writer;
use crate::{ActorId, Change, ChangeBody, Hlc, Result, StoreError, TwinChange};

/// Why received changes were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainFault {
    /// Signed by a key that is not the actor's, or the signature does not verify (forged or
    /// altered).
    BadSignature,
    /// Does not link to the actor's previous change (re-ordered, replaced, or a signature
    /// stripped after the actor started signing).
    BrokenChain,
    /// Unsigned while `require_signatures` is set.
    Unsigned,
}

impl ChainFault {
    /// The code used in metrics, logs and `last_refusal`.
    pub fn code(self) -> &'static str {
        match self {
            ChainFault::BadSignature => "bad_signature",
            ChainFault::BrokenChain => "broken_chain",
            ChainFault::Unsigned => "unsigned",
        }
    }
}

/// Changes of one actor refused by the chain check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRefusal {
    /// The actor the changes claim.
    pub actor: ActorId,
    /// The first refused seq (later ones of the actor in the call waited behind it).
    pub seq: u64,
    /// How many of its changes were refused.
    pub changes: usize,
    /// Why.
    pub fault: ChainFault,
    /// What exactly did not hold.
    pub detail: String,
}

impl std::fmt::Display for ChainRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "refused {} change(s) of actor {} from seq {} ({}): {}",
            self.changes,
            self.actor,
            self.seq,
            self.fault.code(),
            self.detail
        )
    }
}

impl ChainRefusal {
    /// As a store error (a strict apply refuses the whole call).
    pub fn into_error(self) -> StoreError {
        StoreError::ChainRefused {
            actor: self.actor,
            seq: self.seq,
            reason: self.fault.code(),
            detail: self.detail,
        }
    }
}

/// What the chain check of one apply call decided besides the changes it stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainReport {
    /// Actors whose changes were refused, in order of the first refusal.
    pub refused: Vec<ChainRefusal>,
    /// Unsigned changes accepted (the unsigned past of actors that do not sign yet).
    pub unsigned: usize,
}

/// The last change of an actor as far as the chain is concerned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChainHead {
    /// Hash of the last change when it is signed.
    pub hash: Option<Hash>,
    /// The actor's bound public key.
    pub key: Option<[u8; 32]>,
    /// When `hash` is `None` and the changes held are the actor's unsigned past, dense from
    /// seq 1: the hash they would have had signed from seq 1 (`past.rs`), the one link
    /// besides [`CHAIN_START`] its next signed change may carry. Filled by the stores only
    /// when a call needs it ([`crate::admit::needs_past`]).
    pub past: Option<Hash>,
}

/// The stored seal of one accepted remote change, written after its row.
#[derive(Debug)]
pub(crate) struct PendingSeal {
    pub actor: ActorId,
    pub seq: u64,
    pub body_hash: Hash,
    pub seal: Seal,
    /// Bind `seal.key` to the actor (its first signed change here).
    pub bind: bool,
}

/// `hlc, prev_hash, body_hash` of a stored change.
type LinkRow = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

/// `idx, actor, max_seq, public_key` of an actor row.
type ActorRow = (i64, Vec<u8>, i64, Option<Vec<u8>>);

/// The change hash of the stored change `(actor_idx, seq)`, `None` when it is unsigned or
/// absent.
fn stored_hash(conn: &Connection, actor: &ActorId, idx: i64, seq: u64) -> Result<Option<Hash>> {
    let row: Option<LinkRow> = conn
        .prepare_cached(
            "SELECT hlc, prev_hash, body_hash FROM changes WHERE actor_idx = ?1 AND seq = ?2",
        )
        .and_then(|mut st| {
            st.query_row(params![idx, seq as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
        })
        .map_err(StoreError::db("reading a chain link"))?;
    let Some((hlc, Some(prev), Some(body))) = row else {
        return Ok(None);
    };
    let (Ok(prev), Ok(body)) = (<Hash>::try_from(prev), <Hash>::try_from(body)) else {
        return Ok(None);
    };
    Ok(Some(seal::change_hash(
        actor,
        seq,
        Hlc(hlc as u64),
        &prev,
        &body,
    )))
}

/// The seal columns of a local change stored with its row. Its signature is in it when the
/// writer signed in place (a small write group, see [`SIGN_IN_PLACE_MAX_JOBS`]); otherwise
/// the signing thread makes it and it is stored before the group commits
/// ([`Writer::store_signatures`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocalSeal {
    pub prev: Hash,
    pub body_hash: Hash,
    pub signature: Option<[u8; 64]>,
}

impl LocalSeal {
    /// The signature column as bound to a statement (`NULL` until the signing thread's).
    pub(crate) fn signature_column(&self) -> Option<&[u8]> {
        self.signature.as_ref().map(|s| s.as_slice())
    }
}

/// Write groups of at most this many jobs sign their local changes on the writer thread.
/// Handing a signature to the signing thread and back costs two thread wake-ups, each
/// ~50–100 µs when the other core is idle (a halted vCPU, docs/PERFORMANCE.md), more than
/// the ~25 µs of signing itself: the signing thread pays only when a group has many changes
/// to sign while the writer runs the rest of it.
pub(crate) const SIGN_IN_PLACE_MAX_JOBS: usize = 2;

impl Writer {
    /// Seals the local change `(seq, hlc)` whose body hashes to `body_hash`, before its row
    /// is written (the caller stores the result with the row, see
    /// [`Writer::insert_change_row`]). The body hash is computed from the job's own data,
    /// exactly as the log reader will serve the body (readings values as SQLite gives them
    /// back, contexts sorted); the chain tests compare it with a read-back for every kind.
    ///
    /// Links to the cached hash of this actor's previous change, so nothing is read back;
    /// call once per local change, in seq order. The cache (and whether the public key is
    /// bound) is reset by `Writer::reload_caches` after any rollback, and a seq it does not
    /// know reads the stored link once.
    pub(crate) fn seal_local(&mut self, seq: u64, hlc: Hlc, body_hash: Hash) -> Result<LocalSeal> {
        let actor = self.actor;
        if !self.own_key_bound {
            let idx = self.actor_slot(actor)?.idx;
            self.conn
                .prepare_cached(
                    "UPDATE actors SET public_key = ?1 WHERE idx = ?2 AND public_key IS NULL",
                )
                .and_then(|mut st| st.execute(params![self.signing.public().as_slice(), idx]))
                .map_err(StoreError::db("binding this store's public key"))?;
            self.own_key_bound = true;
        }
        let prev = match self.own_tip {
            Some((tip, hash)) if tip + 1 == seq => hash,
            _ if seq <= 1 => CHAIN_START,
            _ => {
                let idx = self.actor_slot(actor)?.idx;
                stored_hash(&self.conn, &actor, idx, seq - 1)?.unwrap_or(CHAIN_START)
            }
        };
        let hash = seal::change_hash(&actor, seq, hlc, &prev, &body_hash);
        let signature = if self.sign_in_place {
            Some(self.signing.sign(&hash))
        } else {
            let ticket = self.signer.request(hash)?;
            self.unsigned.push((seq, ticket));
            None
        };
        self.own_tip = Some((seq, hash));
        Ok(LocalSeal {
            prev,
            body_hash,
            signature,
        })
    }

    /// Stores the signatures of the open transaction's local changes (made by the signing
    /// thread while the group ran, see `signer.rs`); called before COMMIT.
    pub(crate) fn store_signatures(&mut self) -> Result<()> {
        let unsigned = std::mem::take(&mut self.unsigned);
        let tickets: Vec<u64> = unsigned.iter().map(|(_, t)| *t).collect();
        let sigs = self.signer.collect(&tickets)?;
        if unsigned.is_empty() {
            return Ok(());
        }
        let idx = self.actor_slot(self.actor)?.idx;
        let mut st = self
            .conn
            .prepare_cached("UPDATE changes SET signature = ?1 WHERE actor_idx = ?2 AND seq = ?3")
            .map_err(StoreError::db("storing a change's signature"))?;
        for ((seq, _), sig) in unsigned.iter().zip(&sigs) {
            let n = st
                .execute(params![sig.as_slice(), idx, *seq as i64])
                .map_err(StoreError::db("storing a change's signature"))?;
            if n != 1 {
                return Err(StoreError::Decode {
                    what: "change signature",
                    detail: format!("no change of this store at seq {seq} to sign"),
                });
            }
        }
        Ok(())
    }

    /// Forgets the signatures of a group that did not commit.
    pub(crate) fn drop_signatures(&mut self) {
        self.unsigned.clear();
        if let Err(e) = self.signer.collect(&[]) {
            tracing::error!(error = %e, "store writer could not drain its signing thread");
        }
    }

    /// Seals a local twin change whose row the twin writer has written already (the
    /// automerge change is made inside `twin/write.rs`): its bytes are read once by change
    /// id, then the seal is stored with one UPDATE. Twins are low volume.
    pub(crate) fn seal_written_twin(&mut self, key: &str, seq: u64, hlc: Hlc) -> Result<()> {
        let idx = self.actor_slot(self.actor)?.idx;
        let (id, bytes): (i64, Vec<u8>) = self
            .conn
            .prepare_cached(
                "SELECT c.id, t.bytes FROM changes c JOIN twin_changes t ON t.change_id = c.id \
                 WHERE c.actor_idx = ?1 AND c.seq = ?2",
            )
            .and_then(|mut st| {
                st.query_row(params![idx, seq as i64], |r| Ok((r.get(0)?, r.get(1)?)))
            })
            .map_err(StoreError::db("reading a twin change to sign"))?;
        let body = ChangeBody::Twin(TwinChange {
            key: key.to_owned(),
            change: bytes,
        });
        let s = self.seal_local(seq, hlc, seal::body_hash(&body, &[]))?;
        self.conn
            .prepare_cached(
                "UPDATE changes SET prev_hash = ?1, body_hash = ?2, signature = ?3 WHERE id = ?4",
            )
            .and_then(|mut st| {
                st.execute(params![
                    s.prev.as_slice(),
                    s.body_hash.as_slice(),
                    s.signature_column(),
                    id
                ])
            })
            .map_err(StoreError::db("storing a change's signature"))?;
        Ok(())
    }

    /// The chain head of `actor` as stored (before this call's changes).
    pub(crate) fn chain_head(&mut self, actor: ActorId) -> Result<ChainHead> {
        let Some(slot) = self.actors.get(&actor).copied() else {
            return Ok(ChainHead::default());
        };
        if let Some((seq, head)) = self.chain_heads.get(&actor)
            && *seq == slot.max_seq
        {
            return Ok(*head);
        }
        let key: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT public_key FROM actors WHERE idx = ?1")
            .and_then(|mut st| st.query_row([slot.idx], |r| r.get(0)))
            .map_err(StoreError::db("reading an actor's key"))?;
        let hash = match slot.max_seq {
            0 => None,
            seq => stored_hash(&self.conn, &actor, slot.idx, seq)?,
        };
        let head = ChainHead {
            hash,
            key: key.and_then(|k| k.try_into().ok()),
            past: None,
        };
        self.chain_heads.insert(actor, (slot.max_seq, head));
        Ok(head)
    }

    /// The implied hash of `actor`'s unsigned past as held (`past.rs`), cached per seq: a
    /// peer that keeps sending a change that does not link costs one read of the log.
    pub(crate) fn unsigned_past_hash(&mut self, actor: ActorId) -> Result<Option<Hash>> {
        let Some(slot) = self.actors.get(&actor).copied() else {
            return Ok(None);
        };
        if let Some((seq, past)) = self.past_hashes.get(&actor)
            && *seq == slot.max_seq
        {
            return Ok(*past);
        }
        let past = crate::past::unsigned_past_hash(&self.conn, actor, slot.idx)?;
        self.past_hashes.insert(actor, (slot.max_seq, past));
        Ok(past)
    }

    /// Stores the seals of the remote changes just written (their rows exist now) and binds
    /// first keys.
    pub(crate) fn store_remote_seals(&mut self, pending: Vec<PendingSeal>) -> Result<()> {
        for p in pending {
            let idx = self.actor_slot(p.actor)?.idx;
            let pruned = (!p.seal.pruned.is_empty()).then(|| p.seal.pruned.concat());
            self.conn
                .prepare_cached(
                    "UPDATE changes SET prev_hash = ?1, body_hash = ?2, signature = ?3, pruned = ?4, \
                     run_from = ?7 WHERE actor_idx = ?5 AND seq = ?6",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        p.seal.prev.as_slice(),
                        p.body_hash.as_slice(),
                        p.seal.sig.as_slice(),
                        pruned,
                        idx,
                        p.seq as i64,
                        p.seal.run_from.map(|f| f as i64)
                    ])
                })
                .map_err(StoreError::db("storing a received change's signature"))?;
            if p.bind {
                self.conn
                    .prepare_cached(
                        "UPDATE actors SET public_key = ?1 WHERE idx = ?2 AND public_key IS NULL",
                    )
                    .and_then(|mut st| st.execute(params![p.seal.key.as_slice(), idx]))
                    .map_err(StoreError::db("binding an actor's public key"))?;
            }
        }
        Ok(())
    }
}

/// Checks one received change against its actor's head; on success returns the new head and
/// the seal to store (`None` for an accepted unsigned change). `run_from`: the change is the
/// survivor of a log run (`log_runs.rs`) reaching below seq − 1, from this seq on — the
/// store does not hold its predecessor, so its link cannot be checked, only its key and
/// signature; its seal is stored with this `run_from`.
pub(crate) fn check_remote(
    head: &ChainHead,
    c: &Change,
    require_signatures: bool,
    prechecked: Option<&seal::Prechecked>,
    run_from: Option<u64>,
) -> std::result::Result<(ChainHead, Option<PendingSeal>), (ChainFault, String)> {
    let Some(s) = &c.seal else {
        if head.hash.is_some() || head.key.is_some() {
            return Err((
                ChainFault::BrokenChain,
                "unsigned, but the actor's earlier changes are signed (signature stripped?)".into(),
            ));
        }
        if require_signatures {
            return Err((
                ChainFault::Unsigned,
                "unsigned, and require_signatures is set".into(),
            ));
        }
        // The unsigned past grows by this change; its implied hash with it, when known.
        let from = if c.seq == 1 {
            Some(CHAIN_START)
        } else {
            head.past
        };
        let next = ChainHead {
            past: from.map(|p| crate::past::link_unsigned(&p, c, &[])),
            ..*head
        };
        return Ok((next, None));
    };
    if let Some(bound) = head.key
        && bound != s.key
    {
        return Err((
            ChainFault::BadSignature,
            format!(
                "signed by key {}, but the actor's key is {}",
                hex::encode(s.key),
                hex::encode(bound)
            ),
        ));
    }
    match head.hash {
        // The predecessor is inside a compacted run this store does not hold.
        _ if run_from.is_some() => {}
        Some(expected) if s.prev != expected => {
            return Err((
                ChainFault::BrokenChain,
                format!(
                    "links to {}, but the actor's previous change here is {}",
                    hex::encode(&s.prev[..8]),
                    hex::encode(&expected[..8])
                ),
            ));
        }
        // Seq 1, or after an unsigned predecessor (the actor's unsigned past): a chain
        // start fits, or the implied hash of the unsigned past held (the actor signed that
        // past when it upgraded, or a relay dropped the seals): this signature then vouches
        // for every held copy. A link to anything else names a signed predecessor that is
        // not the one held here: its seal was stripped, and maybe the change altered.
        None if s.prev != CHAIN_START && (c.seq == 1 || head.past != Some(s.prev)) => {
            return Err((
                ChainFault::BrokenChain,
                format!(
                    "links to {}, but the actor's previous change here is unsigned \
                     (a signed change after an unsigned one must start a chain): the \
                     previous change was signed and its seal stripped",
                    hex::encode(&s.prev[..8])
                ),
            ));
        }
        _ => {}
    }
    // Nothing checked ahead: both calls below hash and verify here.
    let none = seal::Prechecked::none();
    let prechecked = prechecked.unwrap_or(&none);
    let body = prechecked.body_hash(c, s);
    let hash = seal::change_hash(&c.actor, c.seq, c.hlc, &s.prev, &body);
    if !prechecked.verify(&s.key, &hash, &s.sig) {
        return Err((
            ChainFault::BadSignature,
            "the signature does not match the change (forged or altered)".into(),
        ));
    }
    Ok((
        ChainHead {
            hash: Some(hash),
            key: Some(s.key),
            past: None,
        },
        Some(PendingSeal {
            actor: c.actor,
            seq: c.seq,
            body_hash: body,
            seal: Seal {
                run_from,
                ..s.clone()
            },
            bind: head.key.is_none(),
        }),
    ))
}

/// One failure `kdelta verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyFailure {
    /// The actor (`None` for store-wide checks such as the digest).
    pub actor: Option<ActorId>,
    /// The seq, when one change is at fault.
    pub seq: Option<u64>,
    /// What did not hold.
    pub problem: String,
}

impl std::fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.actor, self.seq) {
            (Some(a), Some(s)) => write!(f, "actor {a} seq {s}: {}", self.problem),
            (Some(a), None) => write!(f, "actor {a}: {}", self.problem),
            _ => f.write_str(&self.problem),
        }
    }
}

/// What `kdelta verify` found: every chain, every signature, the digest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Actors with changes.
    pub actors: usize,
    /// Changes checked.
    pub changes: u64,
    /// Signed changes whose body, link and signature hold.
    pub signed: u64,
    /// Unsigned changes (the unsigned past before an actor's store was upgraded).
    pub unsigned: u64,
    /// Seqs held as part of a log run, whose rows were compacted away (`log_runs.rs`):
    /// their signatures and links can no longer be checked (their readings were gone).
    pub compacted: u64,
    /// The digest stored (maintained by the writer).
    pub digest_stored: String,
    /// The digest recomputed from the rows.
    pub digest_computed: String,
    /// Everything that did not hold; empty when the store verifies.
    pub failures: Vec<VerifyFailure>,
}

impl VerifyReport {
    /// True when nothing failed.
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Most failures one report lists (a store edited wholesale would list millions); the count
/// of the rest is the last entry.
const MAX_LISTED_FAILURES: usize = 1000;

/// Re-checks a whole store on `conn` inside one read transaction (a consistent snapshot
/// beside a running writer).
pub(crate) fn verify_store(conn: &mut Connection) -> Result<VerifyReport> {
    let tx = conn
        .transaction()
        .map_err(StoreError::db("starting a read"))?;
    let mut report = VerifyReport::default();
    let mut unlisted = 0usize;
    let mut fail = |report: &mut VerifyReport, actor, seq, problem: String| {
        if report.failures.len() < MAX_LISTED_FAILURES {
            report.failures.push(VerifyFailure {
                actor,
                seq,
                problem,
            });
        } else {
            unlisted += 1;
        }
    };
    let actors: Vec<ActorRow> = tx
        .prepare(
            "SELECT idx, actor, max_seq, public_key FROM actors WHERE max_seq > 0 ORDER BY actor",
        )
        .and_then(|mut st| {
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect()
        })
        .map_err(StoreError::db("reading actors"))?;
    let mut digest = crate::Digest::default();
    for (idx, actor, max_seq, key) in actors {
        let Some(actor) = ActorId::from_slice(&actor) else {
            fail(
                &mut report,
                None,
                None,
                format!("actor row {idx} is not 16 bytes"),
            );
            continue;
        };
        report.actors += 1;
        let key: Option<[u8; 32]> = key.and_then(|k| k.try_into().ok());
        let mut last_seq = 0u64;
        let mut head: Option<Hash> = None;
        // The implied hash of the unsigned past so far (`past.rs`).
        let mut past = Some(CHAIN_START);
        let mut signing = false;
        log_read::actor_pages(&tx, actor, idx, |rows| {
            let stored: Vec<(Option<Hash>, Option<Seal>, Vec<Hash>)> = rows
                .iter()
                .map(|r| (r.body_hash, r.seal.clone(), r.pruned.clone()))
                .collect();
            let changes = match log_read::load(&tx, rows) {
                Ok(c) => c,
                Err(e) => {
                    fail(
                        &mut report,
                        Some(actor),
                        Some(last_seq + 1),
                        format!("changes after this seq cannot be read: {e}"),
                    );
                    return Ok(false);
                }
            };
            for (c, (body_hash, seal, pruned)) in changes.iter().zip(stored) {
                report.changes += 1;
                digest.add_change(c);
                // The survivor of a log run stands for the compacted seqs below it.
                let run = seal
                    .as_ref()
                    .and_then(|s| s.run_from)
                    .filter(|from| *from <= last_seq + 1 && c.seq > last_seq + 1);
                if run.is_some() {
                    report.compacted += c.seq - last_seq - 1;
                } else if c.seq != last_seq + 1 {
                    fail(
                        &mut report,
                        Some(actor),
                        Some(c.seq),
                        format!("follows seq {last_seq} (a gap)"),
                    );
                }
                last_seq = c.seq;
                let Some(s) = seal else {
                    past = past.map(|p| crate::past::link_unsigned(&p, c, &pruned));
                    report.unsigned += 1;
                    if signing {
                        fail(
                            &mut report,
                            Some(actor),
                            Some(c.seq),
                            "unsigned after signed changes".into(),
                        );
                    }
                    head = None;
                    continue;
                };
                signing = true;
                let mut problems = Vec::new();
                let body = s.body_hash_of(&c.body);
                if body_hash != Some(body) {
                    problems.push("its body does not match its stored body hash (altered)");
                }
                // Link and signature over the stored body hash: a body edit is reported
                // once, not again as a broken chain at the next change.
                let body = body_hash.unwrap_or(body);
                match head {
                    // Its predecessor was compacted away: the link is taken on trust.
                    _ if run.is_some() => {}
                    Some(h) if s.prev != h => {
                        problems.push("does not link to the previous change");
                    }
                    None if s.prev != CHAIN_START && c.seq > 1 && past != Some(s.prev) => problems
                        .push(
                            "links to a signed predecessor, but the previous change is unsigned \
                         (its seal was stripped)",
                        ),
                    None if s.prev != CHAIN_START && c.seq == 1 => {
                        problems.push("the actor's first change does not start a chain");
                    }
                    _ => {}
                }
                let hash = seal::change_hash(&actor, c.seq, c.hlc, &s.prev, &body);
                match key {
                    None => problems.push("signed, but the actor has no public key"),
                    Some(k) if k != s.key => problems.push("signed by another key"),
                    Some(k) => {
                        if !seal::verify(&k, &hash, &s.sig) {
                            problems.push("the signature does not verify");
                        }
                    }
                }
                past = None;
                if problems.is_empty() {
                    report.signed += 1;
                } else {
                    fail(&mut report, Some(actor), Some(c.seq), problems.join("; "));
                }
                head = Some(hash);
            }
            Ok(true)
        })?;
        if last_seq != max_seq as u64 {
            fail(
                &mut report,
                Some(actor),
                None,
                format!("the version vector says seq {max_seq}, the log ends at {last_seq}"),
            );
        }
    }
    let stored: Option<Vec<u8>> = tx
        .query_row("SELECT value FROM meta WHERE key = 'digest'", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(StoreError::db("reading the digest"))?;
    let stored = stored
        .map(|d| crate::Digest::from_slice(&d))
        .unwrap_or_default();
    report.digest_stored = stored.to_string();
    report.digest_computed = digest.to_string();
    if stored != digest {
        fail(
            &mut report,
            None,
            None,
            format!("the stored digest {stored} is not the digest of the rows, {digest}"),
        );
    }
    if unlisted > 0 {
        report.failures.push(VerifyFailure {
            actor: None,
            seq: None,
            problem: format!("… and {unlisted} more failures"),
        });
    }
    Ok(report)
}
