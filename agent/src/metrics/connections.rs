//! The API server's connection metrics: connections open, and those shed or refused at a
//! connection cap (`server::slots`), by the cap (`limit`: `total` or `per_address`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Metrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

/// Registered by [`Metrics::new`].
#[derive(Default)]
pub(super) struct ConnectionMetrics {
    open: Gauge,
    shed: Family<LimitLabels, Counter>,
    refused: Family<LimitLabels, Counter>,
}

impl ConnectionMetrics {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "http_connections_open",
            "Connections to the API open now (counted against api.max_connections)",
            self.open.clone(),
        );
        r.register(
            "http_connections_shed",
            "Idle API connections (no request in progress) closed to make room for a new one, by the cap reached (total: api.max_connections, per_address: api.max_connections_per_address)",
            self.shed.clone(),
        );
        r.register(
            "http_connections_refused",
            "New API connections closed unserved because every connection under the cap was in a request, by the cap",
            self.refused.clone(),
        );
    }
}

impl Metrics {
    /// An idle connection was shed at `limit` (`total` or `per_address`).
    pub fn http_connection_shed(&self, limit: &'static str) {
        self.connections
            .shed
            .get_or_create(&LimitLabels { limit })
            .inc();
    }

    /// A new connection was refused at `limit`.
    pub fn http_connection_refused(&self, limit: &'static str) {
        self.connections
            .refused
            .get_or_create(&LimitLabels { limit })
            .inc();
    }

    /// Connections open now.
    pub fn set_http_connections_open(&self, n: usize) {
        self.connections
            .open
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shed_and_refused_connections_are_counted_by_cap() {
        let m = Metrics::new();
        m.http_connection_shed("total");
        m.http_connection_shed("total");
        m.http_connection_refused("per_address");
        m.set_http_connections_open(7);
        let text = m.encode();
        for line in [
            "kdelta_http_connections_shed_total{limit=\"total\"} 2",
            "kdelta_http_connections_refused_total{limit=\"per_address\"} 1",
            "kdelta_http_connections_open 7",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
