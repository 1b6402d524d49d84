//! Detecting two stores that write as one actor — an imaged SD card, a backup restored on a
//! second device. Each writes its own changes under the same `(actor, seq)`, so when their
//! histories meet (directly, or through a hub that relays one to the other) some received
//! change names an `(actor, seq)` this store already holds with other content: a fork of that
//! actor's history. Merging it would silently keep one version and drop the other, so the
//! sync protocol holds that actor back from that peer instead and reports the fork.
//!
//! Content is compared by what the change log row keeps without loading bodies: the HLC, the
//! kind, and for readings the manifest (series, units, time range, counts; a copy may lack
//! series that retention pruned on one side). A sync page also
//! carries anchors — the seq and HLC of the change just below an actor's first new changes of
//! the session — which are compared by HLC: that is how a hub sees a clone whose first change
//! above what the hub holds continues a history the hub never saw. Two clones that wrote
//! different changes stamp them at different HLCs in practice. Owns only the lookups; the
//! decision and the report live in the protocol (`protocol/exchange.rs`).

use rusqlite::{OptionalExtension, params};

use crate::ingest::{decode_manifest, encode_manifest};

/// The HLC of one stored change.
const HLC_AT: &str = "SELECT c.hlc FROM changes c JOIN actors a ON a.idx = c.actor_idx \
                      WHERE a.actor = ?1 AND c.seq = ?2";
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

/// What the change log keeps of a change to compare it by: actor, seq, HLC, kind, and the
/// manifest of a readings change.
type Fingerprint = (ActorId, u64, Hlc, i64, Option<Vec<u8>>);

/// What a store's change log holds of one `(actor, seq)`: its HLC, its kind
/// ([`change_kind`]) and, for a readings change, its manifest ([`encode_manifest`]).
pub type HeldChange = (Hlc, i64, Option<Vec<u8>>);

/// Whether two manifests of one readings change can describe the same change: equal, or one
/// the other less some series — retention drops a pruned series from a change's manifest
/// (`retention.rs`), and replicas may prune differently.
fn same_readings(held: Option<Vec<u8>>, received: Option<Vec<u8>>) -> bool {
    if held == received {
        return true;
    }
    let decode = |m: Option<Vec<u8>>| m.and_then(|b| decode_manifest(&b).ok());
    let (Some(held), Some(received)) = (decode(held), decode(received)) else {
        return false;
    };
    let (small, large) = if held.len() <= received.len() {
        (&held, &received)
    } else {
        (&received, &held)
    };
    small.iter().all(|e| large.contains(e))
}

/// The change-log kind of a body (`changes.kind` on every backend): 1 readings, 2 document
/// write, 3 twin change, 4 time correction, 5 document batch, 6 gap record.
pub fn change_kind(body: &ChangeBody) -> i64 {
    match body {
        ChangeBody::Readings(_) => 1,
        ChangeBody::Doc(_) => 2,
        ChangeBody::Twin(_) => 3,
        ChangeBody::TimeCorrection(_) => crate::correct::KIND_TIME_CORRECTION,
        ChangeBody::Gap(_) => crate::gap::KIND_GAP,
        ChangeBody::DocBatch(_) => crate::docwrite::KIND_DOC_BATCH,
    }
}

/// The comparison of a received page with a store's copy (see the module docs), apart from
/// how the store looks its changes up: [`new`](Self::new) picks what can be compared,
/// [`dots`](Self::dots) says what to look up, [`compare`](Self::compare) decides.
#[derive(Debug, Clone)]
pub struct ForkCheck {
    anchors: Vec<(ActorId, u64, Hlc)>,
    held: Vec<Fingerprint>,
}

impl ForkCheck {
    /// The changes and anchors at or below `held_seq(actor)` (what the store holds of the
    /// actor; a store may answer `u64::MAX` and let the lookup find nothing): those above
    /// have nothing to be compared with.
    pub fn new(
        changes: &[Change],
        anchors: &[(ActorId, u64, Hlc)],
        held_seq: impl Fn(&ActorId) -> u64,
    ) -> ForkCheck {
        let anchors = anchors
            .iter()
            .copied()
            .filter(|(actor, seq, _)| *seq > 0 && *seq <= held_seq(actor))
            .collect();
        let held = changes
            .iter()
            .filter(|c| c.seq <= held_seq(&c.actor))
            .map(|c| {
                let manifest = match &c.body {
                    ChangeBody::Readings(b) => Some(encode_manifest(b)),
                    _ => None,
                };
                (c.actor, c.seq, c.hlc, change_kind(&c.body), manifest)
            })
            .collect();
        ForkCheck { anchors, held }
    }

    /// True when nothing can be compared.
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty() && self.held.is_empty()
    }

    /// Every `(actor, seq)` whose held copy [`compare`](Self::compare) may look up.
    pub fn dots(&self) -> Vec<(ActorId, u64)> {
        let anchors = self.anchors.iter().map(|(a, s, _)| (*a, *s));
        anchors
            .chain(self.held.iter().map(|(a, s, ..)| (*a, *s)))
            .collect()
    }

    /// The forks, at most one per actor: anchors first (compared by HLC), then changes
    /// (HLC, kind, and a readings change's manifest). `lookup` gives the store's copy of a
    /// dot, `None` when it holds none (retention): nothing to compare.
    pub fn compare(
        self,
        mut lookup: impl FnMut(ActorId, u64) -> Result<Option<HeldChange>>,
    ) -> Result<Vec<Fork>> {
        let mut forks: Vec<Fork> = Vec::new();
        for (actor, seq, hlc) in self.anchors {
            let held = lookup(actor, seq)?.map(|(h, ..)| h);
            if let Some(held) = held.filter(|h| *h != hlc)
                && !forks.iter().any(|f| f.actor == actor)
            {
                forks.push(Fork {
                    actor,
                    seq,
                    held,
                    received: hlc,
                });
            }
        }
        for (actor, seq, hlc, kind, manifest) in self.held {
            if forks.iter().any(|f| f.actor == actor) {
                continue;
            }
            // A row gone (retention) leaves nothing to compare.
            let Some((held_hlc, held_kind, held_manifest)) = lookup(actor, seq)? else {
                continue;
            };
            let same = held_hlc == hlc
                && held_kind == kind
                && (kind != 1 || same_readings(held_manifest, manifest));
            if !same {
                forks.push(Fork {
                    actor,
                    seq,
                    held: held_hlc,
                    received: hlc,
                });
            }
        }
        Ok(forks)
    }
}

impl Store {
    /// The HLCs of the changes this store holds at the given `(actor, seq)`s (those it
    /// lacks are left out), in the order asked: the anchors a sync session sends with an
    /// actor's first new changes, so the peer can compare its copy of the change below.
    pub async fn hlcs_at(&self, dots: &[(ActorId, u64)]) -> Result<Vec<(ActorId, u64, Hlc)>> {
        if dots.is_empty() {
            return Ok(Vec::new());
        }
        let dots = dots.to_vec();
        self.inner
            .readers
            .read(move |conn| {
                let mut st = conn
                    .prepare_cached(HLC_AT)
                    .map_err(StoreError::db("reading the change log"))?;
                let mut out = Vec::with_capacity(dots.len());
                for (actor, seq) in dots {
                    let hlc: Option<i64> = st
                        .query_row(params![actor.as_bytes().as_slice(), seq as i64], |r| {
                            r.get(0)
                        })
                        .optional()
                        .map_err(StoreError::db("reading the change log"))?;
                    if let Some(hlc) = hlc {
                        out.push((actor, seq, Hlc(hlc as u64)));
                    }
                }
                Ok(out)
            })
            .await
    }

    /// The changes among `changes` whose `(actor, seq)` this store already holds with other
    /// content (see the module docs), and the `anchors` (`(actor, seq, hlc)` of changes the
    /// sender says precede its changes) whose HLC differs from the one held here: at most one
    /// fork per actor. Changes and anchors above what the store holds are not looked at:
    /// there is nothing to compare them with.
    pub async fn find_forks(
        &self,
        changes: &[Change],
        anchors: &[(ActorId, u64, Hlc)],
    ) -> Result<Vec<Fork>> {
        let vv = self.version_vector();
        let check = ForkCheck::new(changes, anchors, |a| vv.get(a));
        if check.is_empty() {
            return Ok(Vec::new());
        }
        self.inner
            .readers
            .read(move |conn| {
                let mut st = conn
                    .prepare_cached(
                        "SELECT c.hlc, c.kind, c.manifest FROM changes c JOIN actors a ON a.idx = c.actor_idx \
                         WHERE a.actor = ?1 AND c.seq = ?2",
                    )
                    .map_err(StoreError::db("comparing received changes"))?;
                check.compare(|actor, seq| {
                    let row: Option<(i64, i64, Option<Vec<u8>>)> = st
                        .query_row(params![actor.as_bytes().as_slice(), seq as i64], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                        })
                        .optional()
                        .map_err(StoreError::db("comparing received changes"))?;
                    Ok(row.map(|(hlc, kind, manifest)| (Hlc(hlc as u64), kind, manifest)))
                })
            })
            .await
    }
}
