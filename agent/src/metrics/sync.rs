//! Sync and TLS metrics: per-peer counters recorded as events happen (failed and refused
//! sessions), per-peer gauges and byte counters taken from the peers' status on each scrape
//! (a [`Collector`] over the last [`Metrics::set_sync_peers`] snapshot), and failed TLS
//! handshakes of the listener. Labels are bounded: `peer` is a configured name (or one of
//! `(unauthenticated)`, `(certificate not allowed)`), `direction` is `inbound`/`outbound`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::Metrics;
use kdelta_sync::protocol::Direction;

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

/// One peer's figures at scrape time (from `GET /v1/sync/peers`' view of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSample {
    /// Configured name (outbound) or principal (inbound).
    pub peer: String,
    /// Who opened the link.
    pub direction: Direction,
    /// A session is past its handshake.
    pub connected: bool,
    /// Changes the peer lacks of ours, as far as known.
    pub lag_to_peer: u64,
    /// Changes we lack of the peer's, as far as known.
    pub lag_from_peer: u64,
    /// Bytes received from the peer.
    pub bytes_in: u64,
    /// Bytes sent to the peer.
    pub bytes_out: u64,
    /// Changes received from the peer and held back for timestamps too far ahead.
    pub quarantined: u64,
    /// Changes received from a `device` credential on behalf of another actor: refused.
    pub refused: u64,
    /// Changes received from the peer that failed the signature or chain check: refused.
    pub unverified: u64,
    /// Unsigned changes received from the peer and accepted (peers that do not sign yet).
    pub unsigned: u64,
    /// Our changes left unsent because they are larger than the peer's frame limit.
    pub too_large: u64,
    /// Changes pruned wholly (or log runs), left unsent because the peer runs an earlier release.
    pub held_for_upgrade: u64,
    /// Actors whose history from the peer forked from ours (a cloned store).
    pub forks: u64,
}

/// Sync sessions with other agents and the listener's TLS handshakes (registered by
/// [`Metrics::new`]).
#[derive(Default)]
pub(super) struct SyncMetrics {
    failed: Family<PeerLabels, Counter>,
    refused: Family<PeerLabels, Counter>,
    tls_failed: Family<ReasonLabels, Counter>,
    peers: Arc<PeerCollector>,
}

/// The per-peer snapshot, encoded on scrape. Aggregated per label set: inbound sessions of
/// one principal are summed (connected if any is), lags take the largest.
#[derive(Debug, Default)]
struct PeerCollector {
    samples: Mutex<BTreeMap<PeerLabels, PeerSample>>,
}

impl SyncMetrics {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "sync_sessions_failed",
            "Sync sessions or connection attempts that ended with an error, by peer and direction",
            self.failed.clone(),
        );
        r.register(
            "sync_refused",
            "Sync links refused for credentials: inbound peers we refused (bad or missing token, certificate not allowed), outbound peers that refused us",
            self.refused.clone(),
        );
        r.register(
            "tls_handshakes_failed",
            "TLS handshakes of the API listener that failed, by reason (timeout, client_certificate, error, shed, throttled)",
            self.tls_failed.clone(),
        );
        r.register_collector(Box::new(self.peers.clone()));
    }
}

fn labels(peer: &str, d: Direction) -> PeerLabels {
    PeerLabels {
        peer: peer.to_owned(),
        direction: d.as_str().to_owned(),
    }
}

impl Metrics {
    /// A sync session or connection attempt with `peer` failed.
    pub fn sync_session_failed(&self, d: Direction, peer: &str) {
        self.sync.failed.get_or_create(&labels(peer, d)).inc();
    }

    /// A sync link was refused for its credentials (see `kdelta_sync_refused_total`).
    pub fn sync_refused(&self, d: Direction, peer: &str) {
        self.sync.refused.get_or_create(&labels(peer, d)).inc();
    }

    /// A TLS handshake of the listener failed for `reason` (`timeout`,
    /// `client_certificate`, `error`, `shed`, `throttled`).
    pub fn tls_handshake_failed(&self, reason: &str) {
        self.sync
            .tls_failed
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Replaces the per-peer figures encoded by the next scrapes (called right before
    /// [`Metrics::encode`]).
    pub fn set_sync_peers(&self, samples: impl IntoIterator<Item = PeerSample>) {
        let mut merged: BTreeMap<PeerLabels, PeerSample> = BTreeMap::new();
        for s in samples {
            match merged.entry(labels(&s.peer, s.direction)) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(s);
                }
                std::collections::btree_map::Entry::Occupied(mut o) => {
                    let m = o.get_mut();
                    m.connected |= s.connected;
                    m.lag_to_peer = m.lag_to_peer.max(s.lag_to_peer);
                    m.lag_from_peer = m.lag_from_peer.max(s.lag_from_peer);
                    m.bytes_in = m.bytes_in.saturating_add(s.bytes_in);
                    m.bytes_out = m.bytes_out.saturating_add(s.bytes_out);
                    m.quarantined = m.quarantined.saturating_add(s.quarantined);
                    m.refused = m.refused.saturating_add(s.refused);
                    m.too_large = m.too_large.saturating_add(s.too_large);
                    m.held_for_upgrade = m.held_for_upgrade.saturating_add(s.held_for_upgrade);
                    m.unverified = m.unverified.saturating_add(s.unverified);
                    m.unsigned = m.unsigned.saturating_add(s.unsigned);
                    m.forks = m.forks.saturating_add(s.forks);
                }
            }
        }
        *self
            .sync
            .peers
            .samples
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = merged;
    }
}

type Field = fn(&PeerSample) -> u64;

impl Collector for PeerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let samples = self
            .samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if samples.is_empty() {
            return Ok(());
        }
        let gauges: [(&str, &str, Field); 3] = [
            (
                "sync_peer_connected",
                "Whether a sync session with the peer is past its handshake (1) or not (0)",
                |s| u64::from(s.connected),
            ),
            (
                "sync_peer_lag_to_peer_changes",
                "Changes the peer lacks of ours, as far as known",
                |s| s.lag_to_peer,
            ),
            (
                "sync_peer_lag_from_peer_changes",
                "Changes we lack of the peer's, as far as known",
                |s| s.lag_from_peer,
            ),
        ];
        for (name, help, field) in gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (l, s) in &samples {
                let v = i64::try_from(field(s)).unwrap_or(i64::MAX);
                ConstGauge::new(v).encode(family.encode_family(l)?)?;
            }
        }
        let counters: [(&str, &str, Field); 9] = [
            (
                "sync_changes_unverified",
                "Changes received from the peer that failed the signature or chain check (bad_signature: forged or altered; broken_chain: re-ordered or signature stripped; unsigned: with store.require_signatures): refused, nothing stored; last_refusal on the peer names actor and seq",
                |s| s.unverified,
            ),
            (
                "sync_changes_unsigned",
                "Unsigned changes received from the peer and accepted (made before their store was upgraded to signing, or by a peer that does not sign yet; refused with store.require_signatures)",
                |s| s.unsigned,
            ),
            (
                "sync_peer_bytes_in",
                "Sync bytes received from the peer (outbound: since start; inbound: sessions still listed)",
                |s| s.bytes_in,
            ),
            (
                "sync_peer_bytes_out",
                "Sync bytes sent to the peer (outbound: since start; inbound: sessions still listed)",
                |s| s.bytes_out,
            ),
            (
                "sync_changes_quarantined",
                "Changes received from the peer and held back because their timestamps ran too far ahead of every trusted time source (offered again next session)",
                |s| s.quarantined,
            ),
            (
                "sync_changes_refused",
                "Changes a peer with a device credential sent on behalf of another actor: refused, nothing stored (see docs/security.md)",
                |s| s.refused,
            ),
            (
                "sync_changes_too_large",
                "Changes of ours left unsent because they are larger than the peer's frame limit (their actor waits; other actors keep syncing)",
                |s| s.too_large,
            ),
            (
                "sync_changes_held_for_upgrade",
                "Changes that retention pruned wholly, or log runs standing for such changes, left unsent because the peer runs an earlier release that cannot take them (their actor waits; other actors keep syncing; upgrade the peer)",
                |s| s.held_for_upgrade,
            ),
            (
                "sync_actor_forks",
                "Actors whose changes from the peer contradict this store's copy of the same actor and seq: two stores write as one actor (a cloned SD card); that actor is no longer merged from the peer",
                |s| s.forks,
            ),
        ];
        for (name, help, field) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (l, s) in &samples {
                ConstCounter::new(field(s)).encode(family.encode_family(l)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(peer: &str, d: Direction, connected: bool, bytes_in: u64) -> PeerSample {
        PeerSample {
            peer: peer.into(),
            direction: d,
            connected,
            lag_to_peer: 3,
            lag_from_peer: 0,
            bytes_in,
            bytes_out: 7,
            quarantined: 0,
            refused: 0,
            unverified: 0,
            unsigned: 0,
            too_large: 0,
            held_for_upgrade: 0,
            forks: 0,
        }
    }

    #[test]
    fn per_peer_families_follow_the_last_snapshot() {
        let m = Metrics::new();
        m.sync_session_failed(Direction::Outbound, "hub");
        m.sync_refused(Direction::Inbound, "(unauthenticated)");
        m.tls_handshake_failed("timeout");
        m.set_sync_peers([
            sample("hub", Direction::Outbound, true, 100),
            sample("dev", Direction::Inbound, false, 10),
            sample("dev", Direction::Inbound, true, 5),
        ]);
        let text = m.encode();
        for needle in [
            "kdelta_sync_sessions_failed_total{peer=\"hub\",direction=\"outbound\"} 1",
            "kdelta_sync_refused_total{peer=\"(unauthenticated)\",direction=\"inbound\"} 1",
            "kdelta_tls_handshakes_failed_total{reason=\"timeout\"} 1",
            "kdelta_sync_peer_connected{peer=\"hub\",direction=\"outbound\"} 1",
            "kdelta_sync_peer_connected{peer=\"dev\",direction=\"inbound\"} 1",
            "kdelta_sync_peer_lag_to_peer_changes{peer=\"hub\",direction=\"outbound\"} 3",
            "kdelta_sync_peer_lag_from_peer_changes{peer=\"hub\",direction=\"outbound\"} 0",
            "kdelta_sync_peer_bytes_in_total{peer=\"dev\",direction=\"inbound\"} 15",
            "kdelta_sync_peer_bytes_out_total{peer=\"hub\",direction=\"outbound\"} 7",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        m.set_sync_peers([]);
        assert!(!m.encode().contains("sync_peer_connected"));
    }
}
