//! The agent's own device twin, key `device/<device_name>` (see docs/twins.md).
//!
//! The desired/reported convention: the agent owns `reported` — its version, and each
//! source's kind, interval and status — and takes from `desired` what it is allowed to:
//! `desired.sources.<name>.interval`, a humantime duration (`30s`, `5m`) between
//! [`MIN_INTERVAL`] and [`MAX_INTERVAL`], applied to the running source without a restart.
//! What it did with each desired value is recorded in `reported.applied.sources.<name>`
//! (`status` `applied` or `refused` with an `error`). Everything else in the twin belongs to
//! the application.
//!
//! The loop reconciles at start, on every change of the twin (local or synced) and every
//! [`RESYNC`]; a SIGHUP that rebuilt the sources reconciles before its reload is done.
//! Writes are merge patches, and unchanged values store nothing, so a quiet agent does not
//! grow the twin's history. Must not touch the sources' configuration files.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use kdelta_sync::{ChangeEventKind, Store, StoreError, TwinPatch};
use serde_json::{Map, Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::sources::SourceStatus;
use crate::sources::set_interval;

/// Shortest interval a desired value may set.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Longest interval a desired value may set.
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Reconcile at least this often.
pub const RESYNC: Duration = Duration::from_secs(10);

/// The key of a device's twin.
pub fn key(device_name: &str) -> String {
    format!("device/{device_name}")
}

/// Runs the reconcile loop until `cancel` or until the store closes.
pub async fn run(
    store: Store,
    device_name: String,
    sources: Arc<RwLock<Vec<SourceStatus>>>,
    cancel: CancellationToken,
) {
    let key = key(&device_name);
    let mut events = store.subscribe();
    let mut tick = tokio::time::interval(RESYNC);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        match reconcile(&store, &key, &sources).await {
            Ok(()) => {}
            Err(StoreError::Closed) => return,
            Err(e) => tracing::warn!(twin = %key, "device twin: {e}"),
        }
        // Wait for a change of our twin, the resync tick or the end.
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => break,
                ev = events.recv() => match ev {
                    Ok(ev) if matches!(&ev.kind, ChangeEventKind::Twin { key: k } if *k == key) => break,
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => return,
                },
            }
        }
    }
}

/// One pass: create the twin if missing, apply `desired`, write `reported`.
pub async fn reconcile(
    store: &Store,
    key: &str,
    sources: &RwLock<Vec<SourceStatus>>,
) -> Result<(), StoreError> {
    let current = match store.twin_get(key).await? {
        Some(t) => t.value,
        None => match store.twin_create(key, Some(json!({"reported": {}}))).await {
            Ok(w) => w.value,
            // Created meanwhile (synced from the hub, or by the API).
            Err(StoreError::TwinExists(_)) => {
                store.twin_get(key).await?.map_or(Value::Null, |t| t.value)
            }
            Err(e) => return Err(e),
        },
    };
    let mut applied = Map::new();
    if let Some(desired) = current
        .pointer("/desired/sources")
        .and_then(Value::as_object)
    {
        for (name, want) in desired {
            if let Some(interval) = want.get("interval") {
                applied.insert(name.clone(), apply_interval(sources, name, interval));
            }
        }
    }
    forget_missing(&current, "/reported/applied/sources", &mut applied);
    let mut reported = Map::new();
    for s in sources
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
    {
        let interval = (s.interval_ms > 0)
            .then(|| humantime::format_duration(Duration::from_millis(s.interval_ms)).to_string());
        reported.insert(
            s.name.clone(),
            json!({
                "kind": s.kind,
                "interval": interval,
                "status": if s.last_error.is_some() { "error" } else { "ok" },
                "error": s.last_error,
            }),
        );
    }
    forget_missing(&current, "/reported/sources", &mut reported);
    let patch = json!({"reported": {
        "agent": {"version": env!("CARGO_PKG_VERSION")},
        "sources": reported,
        "applied": {"sources": applied},
    }});
    store.twin_patch(key, TwinPatch::Merge(patch)).await?;
    Ok(())
}

/// Adds `null` (delete) for entries under `pointer` in `current` that `next` lacks.
fn forget_missing(current: &Value, pointer: &str, next: &mut Map<String, Value>) {
    if let Some(old) = current.pointer(pointer).and_then(Value::as_object) {
        for name in old.keys() {
            next.entry(name.clone()).or_insert(Value::Null);
        }
    }
}

/// Applies one desired interval; returns what to record in `reported.applied`.
fn apply_interval(sources: &RwLock<Vec<SourceStatus>>, name: &str, want: &Value) -> Value {
    let refused = |error: String| json!({"interval": want, "status": "refused", "error": error});
    let Some(text) = want.as_str() else {
        return refused("the interval must be a string such as \"30s\" or \"5m\"".into());
    };
    let interval = match humantime::parse_duration(text) {
        Ok(d) => d,
        Err(e) => return refused(format!("{text:?} is not a duration: {e}")),
    };
    if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&interval) {
        return refused(format!(
            "{text:?} is outside the allowed range {} to {}",
            humantime::format_duration(MIN_INTERVAL),
            humantime::format_duration(MAX_INTERVAL)
        ));
    }
    match set_interval(sources, name, interval) {
        Ok(changed) => {
            if changed {
                tracing::info!(
                    source = name,
                    "device twin: sampling interval set to {text}"
                );
            }
            json!({"interval": want, "status": "applied"})
        }
        Err(e) => refused(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statuses() -> RwLock<Vec<SourceStatus>> {
        RwLock::new(vec![
            SourceStatus {
                name: "sim".into(),
                kind: "simulated".into(),
                interval_ms: 1000,
                ..SourceStatus::default()
            },
            SourceStatus {
                name: "serial".into(),
                kind: "serial".into(),
                interval_ms: 0,
                ..SourceStatus::default()
            },
        ])
    }

    #[test]
    fn desired_intervals_are_applied_or_refused_with_a_reason() {
        let s = statuses();
        assert_eq!(
            apply_interval(&s, "sim", &json!("250ms"))["status"],
            "applied"
        );
        assert_eq!(s.read().unwrap()[0].interval_ms, 250);
        for (name, want, needle) in [
            ("sim", json!(5), "must be a string"),
            ("sim", json!("soon"), "not a duration"),
            ("sim", json!("1ms"), "outside the allowed range"),
            ("sim", json!("2days"), "outside the allowed range"),
            ("nope", json!("1s"), "no source named"),
            ("serial", json!("1s"), "streams readings"),
        ] {
            let r = apply_interval(&s, name, &want);
            assert_eq!(r["status"], "refused", "{r}");
            assert!(r["error"].as_str().unwrap().contains(needle), "{r}");
        }
        assert_eq!(s.read().unwrap()[0].interval_ms, 250);
    }

    #[tokio::test]
    async fn reconcile_reports_and_applies() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("k.db"), Default::default())
            .await
            .unwrap();
        let s = statuses();
        reconcile(&store, "device/t", &s).await.unwrap();
        let v = store.twin_get("device/t").await.unwrap().unwrap();
        assert_eq!(v.value["reported"]["sources"]["sim"]["interval"], "1s");
        // A quiet agent writes nothing new.
        reconcile(&store, "device/t", &s).await.unwrap();
        assert_eq!(
            store.twin_get("device/t").await.unwrap().unwrap().changes,
            v.changes
        );
        store
            .twin_patch(
                "device/t",
                TwinPatch::Merge(json!({"desired": {"sources": {"sim": {"interval": "2s"}, "ghost": {"interval": "1s"}}}})),
            )
            .await
            .unwrap();
        reconcile(&store, "device/t", &s).await.unwrap();
        let v = store.twin_get("device/t").await.unwrap().unwrap().value;
        assert_eq!(
            v["reported"]["applied"]["sources"]["sim"]["status"],
            "applied"
        );
        assert_eq!(
            v["reported"]["applied"]["sources"]["ghost"]["status"],
            "refused"
        );
        assert_eq!(v["reported"]["sources"]["sim"]["interval"], "2s");
        assert_eq!(s.read().unwrap()[0].interval_ms, 2000);
        store.close().await;
    }
}
