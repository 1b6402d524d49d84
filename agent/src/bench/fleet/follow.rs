//! `--follow-log`: a follower of the hub's change log in commit order during a phase — what
//! a hub's MQTT outbox and `/v1/events` read (`PgStore::log_after`, docs/hub.md "The change
//! log in commit order"). It reads every change with its body, a page of
//! [`FOLLOW_PAGE`] at a time, from the start of the phase until it has seen them all, and
//! reports when it saw the last one (against the devices' last acknowledgement: how far a
//! follower trails ingest) and how long its reads took.

use std::time::{Duration, Instant};

use anyhow::Context;
use kdelta_pg::{PgConfig, PgStore};
use kdelta_sync::ChangeBody;
use serde::Serialize;

/// Changes per read.
const FOLLOW_PAGE: usize = 1_000;
/// Pause after a read that found nothing new.
const IDLE: Duration = Duration::from_millis(5);

/// What the follower measured.
#[derive(Debug, Clone, Serialize)]
pub struct FollowReport {
    /// Changes and readings read (all of the phase's, each once: checked).
    pub changes: u64,
    pub readings: u64,
    /// Phase start → the follower read the last change.
    pub caught_up_secs: f64,
    /// Seconds spent in `log_after` (reads and body loads), over the phase.
    pub read_secs: f64,
}

/// Follows the log of the database at `url` until `changes` changes were read; started at
/// `started` (the phase's clock). Fails when a change is read twice or the log ends short.
pub async fn follow(url: String, changes: u64, started: Instant) -> anyhow::Result<FollowReport> {
    let hub = PgStore::connect(&url, PgConfig::default())
        .await
        .context("the log follower connecting")?;
    let (mut seen, mut readings, mut at) = (0u64, 0u64, 0i64);
    let mut read = Duration::ZERO;
    while seen < changes {
        let t = Instant::now();
        let page = hub.log_after(at, FOLLOW_PAGE).await?;
        read += t.elapsed();
        if page.is_empty() {
            tokio::time::sleep(IDLE).await;
            continue;
        }
        for (position, change) in page {
            anyhow::ensure!(position > at, "the log went back: {position} after {at}");
            at = position;
            seen += 1;
            if let ChangeBody::Readings(b) = &change.body {
                readings += b.len() as u64;
            }
        }
    }
    anyhow::ensure!(seen == changes, "read {seen} changes, expected {changes}");
    let report = FollowReport {
        changes: seen,
        readings,
        caught_up_secs: started.elapsed().as_secs_f64(),
        read_secs: read.as_secs_f64(),
    };
    hub.close().await;
    Ok(report)
}
