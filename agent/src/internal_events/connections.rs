//! API connection events: a connection shed or refused at a connection cap. There can be
//! thousands a second under a flood, so the warning is throttled by the caller's
//! [`LogEvery`]; every event is counted and logged at debug.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::InternalEvent;
use crate::metrics::Metrics;

/// A connection cap was met when `newcomer` connected: an idle connection was shed for it
/// (`shed`), or, with no idle connection to shed, the newcomer was refused.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimited {
    /// The cap's metric label (`total`, `per_address`).
    pub limit: &'static str,
    /// The cap's config key, for the log line.
    pub key: &'static str,
    /// Its value.
    pub max: usize,
    /// The new connection's address.
    pub newcomer: SocketAddr,
    /// The address of the idle connection shed for it; `None`: the newcomer was refused.
    pub shed: Option<SocketAddr>,
    /// From the caller's [`LogEvery`]: warn now, with this many events since the last
    /// warning; `None`: debug only.
    pub warn: Option<u64>,
}

impl InternalEvent for ConnectionLimited {
    fn emit(self, metrics: &Metrics) {
        let ConnectionLimited {
            limit,
            key,
            max,
            newcomer,
            shed,
            warn,
        } = self;
        match shed {
            Some(shed) => {
                metrics.http_connection_shed(limit);
                match warn {
                    Some(before) => tracing::warn!(
                        %newcomer, %shed,
                        "{max} API connections open ({key}): closing the one idle longest for a new one (a slow or idle client; {before} more since the last such warning; kdelta_http_connections_shed_total counts them)"
                    ),
                    None => {
                        tracing::debug!(%newcomer, %shed, "{key} reached: idle connection shed")
                    }
                }
            }
            None => {
                metrics.http_connection_refused(limit);
                match warn {
                    Some(before) => tracing::warn!(
                        %newcomer,
                        "{max} API connections open ({key}), all in a request: new connection refused ({before} more since the last such warning; kdelta_http_connections_refused_total counts them)"
                    ),
                    None => tracing::debug!(%newcomer, "{key} reached: new connection refused"),
                }
            }
        }
    }
}

/// At most one warning per period: [`LogEvery::due`] says when, and how many were held
/// back in between.
#[derive(Debug)]
pub struct LogEvery {
    period: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl LogEvery {
    /// One warning per `period`.
    pub fn new(period: Duration) -> LogEvery {
        LogEvery {
            period,
            last: None,
            held_back: 0,
        }
    }

    /// `Some(events held back since the last warning)` when a warning is due at `now`.
    pub fn due(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.period => {
                self.held_back += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held_back))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_period_with_the_count_held_back() {
        let mut every = LogEvery::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(every.due(t0), Some(0));
        for s in 1..=5 {
            assert_eq!(every.due(t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(every.due(t0 + Duration::from_secs(60)), Some(5));
        assert_eq!(every.due(t0 + Duration::from_secs(61)), None);
    }

    #[test]
    fn shed_and_refused_are_counted() {
        let m = Metrics::new();
        let a: SocketAddr = "192.0.2.1:1000".parse().unwrap();
        let event = ConnectionLimited {
            limit: "total",
            key: "api.max_connections",
            max: 512,
            newcomer: a,
            shed: Some(a),
            warn: Some(0),
        };
        event.emit(&m);
        ConnectionLimited {
            shed: None,
            warn: None,
            ..event
        }
        .emit(&m);
        let text = m.encode();
        assert!(text.contains("kdelta_http_connections_shed_total{limit=\"total\"} 1"));
        assert!(text.contains("kdelta_http_connections_refused_total{limit=\"total\"} 1"));
    }
}
