//! `GET /v1/events`: server-sent events for changes as they become durable
//! (`Store::subscribe`), filtered by kind, series and prefix.
//!
//! Each change is an `event: change` whose data is
//! `{"local_id", "actor", "seq", "hlc", "remote", "kind": "readings", "series": [..], "count"}`
//! or `{…, "kind": "doc", "key", "deleted"}` or, for a batch of documents (`POST /v1/docs`),
//! `{…, "kind": "doc_batch", "keys": [..], "deleted": n}`; `id:` is the local log position. A subscriber
//! too slow for the broadcast buffer gets `event: lagged` with `{"missed": n}` and continues
//! with newer changes (the change log is the reliable source). The stream ends when the agent
//! drains (`Agent::shutdown`), so it never holds up a graceful shutdown.
//!
//! On a PostgreSQL hub replica the events are every replica's commits: the subscriber
//! follows the database's commit-ordered log from its end (`id:` is a position in it), woken
//! by the replicas' announcements, a page at a time — it never lags. A time correction's
//! `corrected` there counts the seqs its runs cover (`ChangeEventKind::of`).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use kdelta_sync::{ActorId, ChangeEvent, ChangeEventKind, StoreError};
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use super::ApiError;
use super::params::{list, query};
use crate::backend::{Backend, LogWakeups};
use crate::state::Agent;

/// Query string of `GET /v1/events`.
#[derive(Debug, Deserialize)]
pub struct EventParams {
    kind: Option<String>,
    series: Option<String>,
    prefix: Option<String>,
}

/// Which changes a subscriber wants. Every given condition must hold: `kind` is `readings`
/// or `doc`; `series` (a comma list) keeps reading batches holding one of them; `prefix`
/// keeps documents whose key, and reading batches with a series whose name, starts with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// `Some(true)`: readings only; `Some(false)`: documents only.
    readings: Option<bool>,
    series: Option<Vec<String>>,
    prefix: Option<String>,
}

impl EventFilter {
    /// Builds a filter from the query string, or `400 bad_request` for an unknown kind.
    pub fn parse(p: &EventParams) -> Result<EventFilter, ApiError> {
        let readings = match p.kind.as_deref().map(str::trim) {
            None | Some("") => None,
            Some("readings") => Some(true),
            Some("doc" | "docs") => Some(false),
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "`kind`: {:?} is not a kind of change; use readings or doc",
                    other.chars().take(32).collect::<String>()
                )));
            }
        };
        let series = list(&p.series);
        // Naming series implies reading batches.
        let readings = if series.is_some() && readings.is_none() {
            Some(true)
        } else {
            readings
        };
        Ok(EventFilter {
            readings,
            series,
            prefix: p.prefix.clone().filter(|s| !s.is_empty()),
        })
    }

    /// True when `ev` passes the filter.
    pub fn matches(&self, ev: &ChangeEvent) -> bool {
        match &ev.kind {
            ChangeEventKind::Readings { series, .. } => {
                self.readings != Some(false)
                    && self
                        .series
                        .as_ref()
                        .is_none_or(|want| series.iter().any(|s| want.contains(s)))
                    && self
                        .prefix
                        .as_ref()
                        .is_none_or(|p| series.iter().any(|s| s.starts_with(p.as_str())))
            }
            // Moved readings, or a gap record, of unnamed series: only for unfiltered readings
            // subscribers.
            ChangeEventKind::TimeCorrection { .. } | ChangeEventKind::Gap { .. } => {
                self.readings != Some(false) && self.series.is_none() && self.prefix.is_none()
            }
            // Twins (merge documents) are documents for this filter.
            ChangeEventKind::Doc { key, .. } | ChangeEventKind::Twin { key } => {
                self.readings != Some(true)
                    && self
                        .prefix
                        .as_ref()
                        .is_none_or(|p| key.starts_with(p.as_str()))
            }
            ChangeEventKind::DocBatch { keys, .. } => {
                self.readings != Some(true)
                    && self
                        .prefix
                        .as_ref()
                        .is_none_or(|p| keys.iter().any(|k| k.starts_with(p.as_str())))
            }
        }
    }
}

/// The JSON of a change event: the store's event with the HLC in its text form.
pub fn event_json(ev: &ChangeEvent) -> serde_json::Value {
    let mut v = serde_json::to_value(ev).unwrap_or(serde_json::Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("hlc".into(), ev.hlc.to_string().into());
    }
    v
}

/// `GET /v1/events`.
pub async fn events(
    State(state): State<Agent>,
    q: Result<Query<EventParams>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let filter = EventFilter::parse(&query(q)?)?;
    let source = EventSource::open(&state.backend).await?;
    let cancel = state.shutdown.clone();
    let stream = futures::stream::unfold(
        (source, filter, cancel),
        |(mut source, filter, cancel)| async move {
            loop {
                let next = tokio::select! {
                    _ = cancel.cancelled() => return None,
                    r = source.next() => r?,
                };
                let event = match next {
                    Ok(ev) if filter.matches(&ev) => Event::default()
                        .event("change")
                        .id(ev.local_id.to_string())
                        .data(event_json(&ev).to_string()),
                    Ok(_) => continue,
                    Err(missed) => Event::default()
                        .event("lagged")
                        .data(serde_json::json!({ "missed": missed }).to_string()),
                };
                return Some((Ok(event), (source, filter, cancel)));
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Where a subscriber's events come from.
enum EventSource {
    /// The SQLite store's broadcast of changes as they become durable.
    Sqlite(broadcast::Receiver<ChangeEvent>),
    /// A hub replica: a follower of the database's commit-ordered log from its end at
    /// subscription, woken by every replica's commit announcements (and a recheck every
    /// [`LOG_RECHECK`]); it never lags, it reads on from its position.
    Log(Box<LogFollower>),
}

/// Changes read from the log per page by a hub replica's subscriber.
const LOG_PAGE: usize = 256;
/// How often a hub replica's subscriber looks at the log without a wake-up.
const LOG_RECHECK: Duration = Duration::from_secs(1);

struct LogFollower {
    backend: Backend,
    wakeups: LogWakeups,
    at: i64,
    own: ActorId,
    ready: VecDeque<ChangeEvent>,
}

impl EventSource {
    async fn open(backend: &Backend) -> Result<EventSource, ApiError> {
        if let Some(store) = backend.sqlite() {
            return Ok(EventSource::Sqlite(store.subscribe()));
        }
        // Subscribe before reading the end, so no commit falls between the two.
        let wakeups = backend.log_wakeups().await?;
        let at = backend.log_end().await?;
        Ok(EventSource::Log(Box::new(LogFollower {
            backend: backend.clone(),
            wakeups,
            at,
            own: backend.actor(),
            ready: VecDeque::new(),
        })))
    }

    /// The next event, `Err(missed)` after a lag, `None` when the store closed.
    async fn next(&mut self) -> Option<Result<ChangeEvent, u64>> {
        match self {
            EventSource::Sqlite(rx) => match rx.recv().await {
                Ok(ev) => Some(Ok(ev)),
                Err(RecvError::Lagged(n)) => Some(Err(n)),
                Err(RecvError::Closed) => None,
            },
            EventSource::Log(f) => f.next().await.map(Ok),
        }
    }
}

impl LogFollower {
    async fn next(&mut self) -> Option<ChangeEvent> {
        loop {
            if let Some(ev) = self.ready.pop_front() {
                return Some(ev);
            }
            match self.backend.log_after(self.at, LOG_PAGE).await {
                Ok(page) if !page.is_empty() => {
                    for (position, change) in page {
                        self.at = position;
                        self.ready.push_back(ChangeEvent {
                            local_id: position,
                            actor: change.actor,
                            seq: change.seq,
                            hlc: change.hlc,
                            remote: change.actor != self.own,
                            kind: ChangeEventKind::of(&change.body),
                        });
                    }
                    continue;
                }
                Ok(_) => {}
                Err(StoreError::Closed) => return None,
                // The database is unreachable: the recheck below tries again.
                Err(e) => tracing::debug!("events: reading the change log failed: {e}"),
            }
            tokio::select! {
                woke = self.wakeups.next() => woke.ok()?,
                () = tokio::time::sleep(LOG_RECHECK) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kdelta_sync::{ActorId, Hlc};

    fn ev(kind: ChangeEventKind) -> ChangeEvent {
        ChangeEvent {
            local_id: 7,
            actor: ActorId([1; 16]),
            seq: 3,
            hlc: Hlc::new(1_764_000_000_000, 2),
            remote: false,
            kind,
        }
    }

    fn readings(names: &[&str]) -> ChangeEvent {
        ev(ChangeEventKind::Readings {
            series: names.iter().map(|s| s.to_string()).collect(),
            count: 1,
        })
    }

    fn doc(key: &str) -> ChangeEvent {
        ev(ChangeEventKind::Doc {
            key: key.into(),
            deleted: false,
        })
    }

    fn filter(
        kind: Option<&str>,
        series: Option<&str>,
        prefix: Option<&str>,
    ) -> Result<EventFilter, ApiError> {
        EventFilter::parse(&EventParams {
            kind: kind.map(Into::into),
            series: series.map(Into::into),
            prefix: prefix.map(Into::into),
        })
    }

    #[test]
    fn filters() {
        let all = filter(None, None, None).unwrap();
        assert!(all.matches(&readings(&["a"])) && all.matches(&doc("k")));
        let r = filter(Some("readings"), None, None).unwrap();
        assert!(r.matches(&readings(&["a"])) && !r.matches(&doc("k")));
        let d = filter(Some("doc"), None, Some("twin/")).unwrap();
        assert!(
            d.matches(&doc("twin/x"))
                && !d.matches(&doc("cfg"))
                && !d.matches(&readings(&["twin/t"]))
        );
        let s = filter(None, Some("a,b"), None).unwrap();
        assert!(
            s.matches(&readings(&["x", "b"]))
                && !s.matches(&readings(&["x"]))
                && !s.matches(&doc("a"))
        );
        let p = filter(None, None, Some("gh.")).unwrap();
        assert!(
            p.matches(&readings(&["gh.temp"]))
                && !p.matches(&readings(&["cpu"]))
                && p.matches(&doc("gh.cfg"))
        );
        assert_eq!(
            filter(Some("everything"), None, None).unwrap_err().code,
            "bad_request"
        );
    }

    #[test]
    fn event_json_has_text_hlc() {
        let v = event_json(&doc("k"));
        assert_eq!(v["hlc"], "1764000000000:2");
        assert_eq!(v["kind"], "doc");
        assert_eq!(v["key"], "k");
        assert_eq!(v["actor"], ActorId([1; 16]).to_string());
    }
}
