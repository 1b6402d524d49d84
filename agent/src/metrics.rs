//! Prometheus metrics of the agent (prometheus-client, OpenMetrics text).
//!
//! Owns the one registry and every metric family; callers record through the small methods
//! of [`Metrics`] and never touch prometheus-client types. The HTTP middleware that times
//! requests lives in `api/`, the sources pipeline calls the `source`-labelled methods, and
//! `GET /metrics` refreshes the store gauges from `Store::stats()` right before
//! [`Metrics::encode`].
//!
//! Every name is prefixed `kdelta_`; counters get the OpenMetrics `_total` suffix:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `kdelta_readings_ingested_total` | counter | `source` |
//! | `kdelta_batches_ingested_total` | counter | `source` |
//! | `kdelta_ingest_rejected_total` | counter | `source`, `code` |
//! | `kdelta_source_errors_total` | counter | `source`, `code` |
//! | `kdelta_source_missed_ticks_total` | counter | `source` |
//! | `kdelta_source_dropped_readings_total` | counter | `source` |
//! | `kdelta_source_rejected_readings_total` | counter | `source`, `reason` |
//! | `kdelta_commit_duration_seconds` | histogram | — |
//! | `kdelta_http_requests_total` | counter | `method`, `route`, `status` |
//! | `kdelta_http_request_duration_seconds` | histogram | `method`, `route` |
//! | `kdelta_http_connections_open` | gauge | — |
//! | `kdelta_http_connections_shed_total`, `kdelta_http_connections_refused_total` | counter | `limit` |
//! | `kdelta_store_bytes`, `kdelta_store_readings`, `kdelta_store_changes`, `kdelta_store_series`, `kdelta_store_doc_keys`, `kdelta_store_doc_versions` | gauge | — |
//! | `kdelta_uptime_seconds` | gauge | — |
//! | `kdelta_clock_trusted` | gauge (0/1) | — |
//! | `kdelta_clock_rebases_total` | counter | — |
//! | `kdelta_build_info` | gauge (= 1) | `version` |
//! | `kdelta_mqtt_messages_published_total`, `kdelta_mqtt_messages_acked_total`, `kdelta_mqtt_readings_acked_total` | counter | — |
//! | `kdelta_mqtt_outbox_lag_changes`, `kdelta_mqtt_connected` | gauge | — |
//! | `kdelta_mqtt_reconnects_total` | counter | — |
//! | `kdelta_mqtt_bad_payloads_total` | counter | `kind` |
//! | `kdelta_mqtt_duplicates_total` | counter | `cause` |
//! | `kdelta_mqtt_commands_total` | counter | `result` |
//! | `kdelta_sync_peer_connected`, `kdelta_sync_peer_lag_to_peer_changes`, `kdelta_sync_peer_lag_from_peer_changes` | gauge | `peer`, `direction` |
//! | `kdelta_sync_peer_bytes_in_total`, `kdelta_sync_peer_bytes_out_total`, `kdelta_sync_changes_quarantined_total`, `kdelta_sync_changes_too_large_total`, `kdelta_sync_changes_held_for_upgrade_total`, `kdelta_sync_actor_forks_total` | counter | `peer`, `direction` |
//! | `kdelta_sync_sessions_failed_total`, `kdelta_sync_refused_total` | counter | `peer`, `direction` |
//! | `kdelta_tls_handshakes_failed_total` | counter | `reason` |
//! | `kdelta_retention_pruned_readings_total`, `kdelta_retention_pruned_rollups_total`, `kdelta_retention_pruned_doc_versions_total` | counter | — |
//! | `kdelta_retention_compacted_twin_changes_total`, `kdelta_retention_compacted_twin_bytes_total` | counter | — |
//! | `kdelta_retention_budget_pruned_readings_total`, `kdelta_retention_budget_pruned_rollups_total`, `kdelta_retention_budget_dropped_readings_total`, `kdelta_retention_gap_records_total` | counter | — |
//! | `kdelta_retention_budget_used_bytes`, `kdelta_retention_budget_limit_bytes`, `kdelta_retention_budget_hard_limit_bytes`, `kdelta_retention_budget_holding_unacked`, `kdelta_retention_budget_held_readings`, `kdelta_retention_budget_cannot_meet` | gauge | — |
//! | `kdelta_retention_pass_duration_seconds` | histogram | — |
//! | `kdelta_store_disk_full` (0/1), `kdelta_store_reserve_held` (0/1), `kdelta_store_reserve_bytes`, `kdelta_process_storage_write_bytes`, `kdelta_retention_horizon_timestamp_ms` | gauge | — |
//!
//! The `sync_peer_*` families are taken from the peers' status on every scrape (see
//! `sync.rs`), so they are always current and a peer that is gone disappears.

mod connections;
mod retention;
mod sync;

use std::collections::BTreeMap;
use std::fmt;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use connections::ConnectionMetrics;
pub use retention::BudgetSample;
use retention::RetentionMetrics;
pub use sync::PeerSample;
use sync::SyncMetrics;

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceCodeLabels {
    source: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceReasonLabels {
    source: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

fn http_histogram() -> Histogram {
    // 0.25 ms … ~8 s
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// Every metric of the agent. Share it as `Arc<Metrics>`; all methods take `&self` and are
/// cheap (atomic increments, one map lookup for labelled families).
pub struct Metrics {
    registry: Registry,
    readings_ingested: Family<SourceLabels, Counter>,
    batches_ingested: Family<SourceLabels, Counter>,
    ingest_rejected: Family<SourceCodeLabels, Counter>,
    source_errors: Family<SourceCodeLabels, Counter>,
    missed_ticks: Family<SourceLabels, Counter>,
    dropped_readings: Family<SourceLabels, Counter>,
    rejected_readings: Family<SourceReasonLabels, Counter>,
    /// The same counts by source, then reason, for `GET /v1/sources` and `kdelta sources`.
    rejected_by_source: std::sync::Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
    commit_seconds: Histogram,
    http_requests: Family<HttpLabels, Counter>,
    http_seconds: HistogramFamily<RouteLabels>,
    connections: ConnectionMetrics,
    store_bytes: Gauge,
    store_readings: Gauge,
    store_changes: Gauge,
    store_series: Gauge,
    store_doc_keys: Gauge,
    store_doc_versions: Gauge,
    uptime_seconds: Gauge,
    clock_trusted: Gauge,
    clock_rebases: Counter,
    mqtt: MqttMetrics,
    sync: SyncMetrics,
    retention: RetentionMetrics,
    /// Every committed reading, all sources together (for the systemd `STATUS=` rate).
    readings_total: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn source(s: &str) -> SourceLabels {
    SourceLabels {
        source: s.to_owned(),
    }
}

impl Metrics {
    /// A registry with every metric registered and `kdelta_build_info` set.
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("kdelta");
        let m = Metrics {
            readings_ingested: Family::default(),
            batches_ingested: Family::default(),
            ingest_rejected: Family::default(),
            source_errors: Family::default(),
            missed_ticks: Family::default(),
            dropped_readings: Family::default(),
            rejected_readings: Family::default(),
            rejected_by_source: Default::default(),
            // 0.1 ms … ~3.3 s
            commit_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            http_requests: Family::default(),
            http_seconds: Family::new_with_constructor(http_histogram),
            connections: ConnectionMetrics::default(),
            store_bytes: Gauge::default(),
            store_readings: Gauge::default(),
            store_changes: Gauge::default(),
            store_series: Gauge::default(),
            store_doc_keys: Gauge::default(),
            store_doc_versions: Gauge::default(),
            uptime_seconds: Gauge::default(),
            clock_trusted: Gauge::default(),
            clock_rebases: Counter::default(),
            mqtt: MqttMetrics::default(),
            sync: SyncMetrics::default(),
            retention: RetentionMetrics::default(),
            readings_total: std::sync::atomic::AtomicU64::new(0),
            registry: Registry::default(),
        };
        r.register(
            "readings_ingested",
            "Readings committed to the store, by source (`http` for POST /v1/readings)",
            m.readings_ingested.clone(),
        );
        r.register(
            "batches_ingested",
            "Reading batches committed to the store, by source",
            m.batches_ingested.clone(),
        );
        r.register(
            "ingest_rejected",
            "Reading batches refused (nothing stored), by source and error code",
            m.ingest_rejected.clone(),
        );
        r.register(
            "source_errors",
            "Failed sampling or decoding attempts of a source, by error code",
            m.source_errors.clone(),
        );
        r.register(
            "source_missed_ticks",
            "Sampling ticks skipped because the previous sample took longer than the interval",
            m.missed_ticks.clone(),
        );
        r.register(
            "source_dropped_readings",
            "Readings a source dropped before they reached the store (backpressure, bad values)",
            m.dropped_readings.clone(),
        );
        r.register(
            "source_rejected_readings",
            "Readings refused one by one before a batch (the rest of the batch is stored), by source and reason (bad_series_name, not_finite, bad_timestamp, unit_too_long)",
            m.rejected_readings.clone(),
        );
        r.register(
            "commit_duration_seconds",
            "Time from handing a batch to the store until it is durable",
            m.commit_seconds.clone(),
        );
        r.register(
            "http_requests",
            "HTTP requests by method, route template and status",
            m.http_requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "HTTP request latency by method and route template",
            m.http_seconds.clone(),
        );
        r.register(
            "store_bytes",
            "Database size on disk (main file + WAL)",
            m.store_bytes.clone(),
        );
        r.register(
            "store_readings",
            "Readings held by the store",
            m.store_readings.clone(),
        );
        r.register(
            "store_changes",
            "Changes in the change log",
            m.store_changes.clone(),
        );
        r.register(
            "store_series",
            "Series known to the store",
            m.store_series.clone(),
        );
        r.register("store_doc_keys", "Document keys", m.store_doc_keys.clone());
        r.register(
            "store_doc_versions",
            "Document versions kept in history",
            m.store_doc_versions.clone(),
        );
        r.register(
            "uptime_seconds",
            "Seconds since the agent started",
            m.uptime_seconds.clone(),
        );
        r.register(
            "clock_trusted",
            "Whether sync judges timestamps by this device's wall clock (1) or by synchronised peers (0)",
            m.clock_trusted.clone(),
        );
        r.register(
            "clock_rebases",
            "Times this agent gave its store a new actor because the store's own changes ran ahead of the trusted time (docs/clock.md)",
            m.clock_rebases.clone(),
        );
        let build_info: Family<VersionLabels, Gauge> = Family::default();
        build_info
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        r.register("build_info", "Build of this agent (always 1)", build_info);
        m.connections.register(&mut r);
        m.mqtt.register(&mut r);
        m.sync.register(&mut r);
        m.retention.register(&mut r);
        Metrics { registry: r, ..m }
    }

    /// Readings committed since start, all sources together.
    pub fn readings_total(&self) -> u64 {
        self.readings_total
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `n` readings from `source` were committed (durable).
    pub fn readings_ingested(&self, source: &str, n: u64) {
        self.readings_total
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        self.readings_ingested
            .get_or_create(&self::source(source))
            .inc_by(n);
    }

    /// One batch from `source` was committed.
    pub fn batch_ingested(&self, source: &str) {
        self.batches_ingested
            .get_or_create(&self::source(source))
            .inc();
    }

    /// A batch from `source` was refused with error `code` (e.g. `invalid_batch`).
    pub fn ingest_rejected(&self, source: &str, code: &str) {
        self.ingest_rejected
            .get_or_create(&SourceCodeLabels {
                source: source.to_owned(),
                code: code.to_owned(),
            })
            .inc();
    }

    /// Sampling or decoding in `source` failed with error `code`.
    pub fn source_error(&self, source: &str, code: &str) {
        self.source_errors
            .get_or_create(&SourceCodeLabels {
                source: source.to_owned(),
                code: code.to_owned(),
            })
            .inc();
    }

    /// `source` skipped `n` sampling ticks.
    pub fn missed_ticks(&self, source: &str, n: u64) {
        self.missed_ticks
            .get_or_create(&self::source(source))
            .inc_by(n);
    }

    /// `source` dropped `n` readings before they reached the store.
    pub fn dropped_readings(&self, source: &str, n: u64) {
        self.dropped_readings
            .get_or_create(&self::source(source))
            .inc_by(n);
    }

    /// `n` readings of `source` were refused alone for `reason` (their batch was stored).
    pub fn rejected_readings(&self, source: &str, reason: &str, n: u64) {
        self.rejected_readings
            .get_or_create(&SourceReasonLabels {
                source: source.to_owned(),
                reason: reason.to_owned(),
            })
            .inc_by(n);
        let mut by_source = self
            .rejected_by_source
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *by_source
            .entry(source.to_owned())
            .or_default()
            .entry(reason.to_owned())
            .or_default() += n;
    }

    /// Readings of `source` committed since start.
    pub fn readings_ingested_of(&self, source: &str) -> u64 {
        self.readings_ingested
            .get(&self::source(source))
            .map_or(0, |c| c.get())
    }

    /// Readings of `source` refused alone since start, by reason.
    pub fn rejected_readings_of(&self, source: &str) -> BTreeMap<String, u64> {
        self.rejected_by_source
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(source)
            .cloned()
            .unwrap_or_default()
    }

    /// One `Store::append` took `seconds` until durable.
    pub fn observe_commit(&self, seconds: f64) {
        self.commit_seconds.observe(seconds);
    }

    /// One HTTP request finished. `route` is the matched route template (never the raw path,
    /// which would make the label set unbounded).
    pub fn observe_http(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.http_requests
            .get_or_create(&HttpLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .inc();
        self.http_seconds
            .get_or_create(&RouteLabels {
                method: method.to_owned(),
                route: route.to_owned(),
            })
            .observe(seconds);
    }

    /// Refreshes the store gauges (called on scrape).
    pub fn set_store_stats(&self, stats: &kdelta_sync::StoreStats) {
        let g = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.store_bytes.set(g(stats.db_bytes));
        self.store_readings.set(g(stats.readings));
        self.store_changes.set(g(stats.changes));
        self.store_series.set(g(stats.series));
        self.store_doc_keys.set(g(stats.doc_keys));
        self.store_doc_versions.set(g(stats.doc_versions));
    }

    /// Whether the wall clock is trusted, for `kdelta_clock_trusted`.
    pub fn set_clock_trusted(&self, trusted: bool) {
        self.clock_trusted.set(i64::from(trusted));
    }

    /// Counts a clock rebase of the store, for `kdelta_clock_rebases_total`.
    pub fn clock_rebased(&self) {
        self.clock_rebases.inc();
    }

    /// Sets the uptime gauge.
    pub fn set_uptime(&self, seconds: u64) {
        self.uptime_seconds
            .set(i64::try_from(seconds).unwrap_or(i64::MAX));
    }

    /// The OpenMetrics text exposition of every metric (content type [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

// mqtt metrics

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

/// The MQTT client's metric families (registered by [`Metrics::new`]).
#[derive(Default)]
struct MqttMetrics {
    published: Counter,
    acked: Counter,
    readings_acked: Counter,
    outbox_lag: Gauge,
    connected: Gauge,
    reconnects: Counter,
    bad_payloads: Family<KindLabels, Counter>,
    duplicates: Family<CauseLabels, Counter>,
    commands: Family<ResultLabels, Counter>,
}

impl MqttMetrics {
    fn register(&self, r: &mut Registry) {
        r.register(
            "mqtt_messages_published",
            "Readings messages handed to the MQTT connection (including republished ones)",
            self.published.clone(),
        );
        r.register(
            "mqtt_messages_acked",
            "Readings messages the broker confirmed (PUBACK; QoS 0: written)",
            self.acked.clone(),
        );
        r.register(
            "mqtt_readings_acked",
            "Readings in confirmed MQTT messages",
            self.readings_acked.clone(),
        );
        r.register(
            "mqtt_outbox_lag_changes",
            "Change-log positions not yet confirmed by the broker",
            self.outbox_lag.clone(),
        );
        r.register(
            "mqtt_connected",
            "Whether the MQTT client is connected to the broker (1) or not (0)",
            self.connected.clone(),
        );
        r.register(
            "mqtt_reconnects",
            "Connections to the MQTT broker after the first",
            self.reconnects.clone(),
        );
        r.register(
            "mqtt_bad_payloads",
            "Received MQTT messages dropped as unreadable, by kind (ingest, rule, command)",
            self.bad_payloads.clone(),
        );
        r.register(
            "mqtt_duplicates",
            "Messages republished that the broker may already have (cause: restart, reconnect)",
            self.duplicates.clone(),
        );
        r.register(
            "mqtt_commands",
            "Document commands received over MQTT, by result (ok, error)",
            self.commands.clone(),
        );
    }
}

impl Metrics {
    /// `n` readings messages were handed to the MQTT connection.
    pub fn mqtt_published(&self, n: u64) {
        self.mqtt.published.inc_by(n);
    }

    /// The broker confirmed `messages` readings messages holding `readings` readings.
    pub fn mqtt_acked(&self, messages: u64, readings: u64) {
        self.mqtt.acked.inc_by(messages);
        self.mqtt.readings_acked.inc_by(readings);
    }

    /// Change-log positions between the outbox cursor and the newest change.
    pub fn mqtt_outbox_lag(&self, changes: i64) {
        self.mqtt.outbox_lag.set(changes);
    }

    /// The MQTT connection is up (or down).
    pub fn mqtt_connected(&self, up: bool) {
        self.mqtt.connected.set(i64::from(up));
    }

    /// A connection to the broker after the first one.
    pub fn mqtt_reconnected(&self) {
        self.mqtt.reconnects.inc();
    }

    /// A received message of `kind` (`ingest`, `rule`, `command`) was dropped as unreadable.
    pub fn mqtt_bad_payload(&self, kind: &str) {
        self.mqtt
            .bad_payloads
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// `n` messages were republished for `cause` (`restart`, `reconnect`).
    pub fn mqtt_duplicates(&self, cause: &str, n: u64) {
        self.mqtt
            .duplicates
            .get_or_create(&CauseLabels {
                cause: cause.to_owned(),
            })
            .inc_by(n);
    }

    /// A document command finished with `result` (`ok`, `error`).
    pub fn mqtt_command(&self, result: &str) {
        self.mqtt
            .commands
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_in_exposition() {
        let m = Metrics::new();
        m.readings_ingested("system", 12);
        m.batch_ingested("system");
        m.ingest_rejected("http", "invalid_batch");
        m.source_error("serial0", "decode");
        m.missed_ticks("system", 2);
        m.dropped_readings("serial0", 3);
        m.observe_commit(0.002);
        m.observe_http("GET", "/v1/docs/{*key}", 200, 0.001);
        let text = m.encode();
        for needle in [
            "kdelta_readings_ingested_total{source=\"system\"} 12",
            "kdelta_batches_ingested_total{source=\"system\"} 1",
            "kdelta_ingest_rejected_total{source=\"http\",code=\"invalid_batch\"} 1",
            "kdelta_source_errors_total{source=\"serial0\",code=\"decode\"} 1",
            "kdelta_source_missed_ticks_total{source=\"system\"} 2",
            "kdelta_source_dropped_readings_total{source=\"serial0\"} 3",
            "kdelta_commit_duration_seconds_count 1",
            "kdelta_http_requests_total{method=\"GET\",route=\"/v1/docs/{*key}\",status=\"200\"} 1",
            "kdelta_http_request_duration_seconds_count{method=\"GET\",route=\"/v1/docs/{*key}\"} 1",
            "kdelta_store_bytes 0",
            "kdelta_build_info{version=\"",
            "# EOF",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }
}
