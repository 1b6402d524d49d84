//! A full disk recovers by itself when a disk budget is configured: a real agent on a small
//! tmpfs the test mounts (root only; skipped with a message otherwise), with `[retention]
//! max_disk` (never reached: another program fills the disk) and an 8 MiB reserve, holds a
//! store of old readings. The test fills the file system
//! with a filler file until even the agent's writes are refused (`507 disk_full`, `/readyz`
//! not ready) and frees nothing: the agent releases its reserve, prunes the oldest readings
//! at once (the budget's tick is an hour away), gives the space back to the file system,
//! holds its reserve again and takes writes — with every acknowledged reading newer than
//! the pruning horizon still there.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::disk::{Tmpfs, ingest, metric};
use crate::harness::{Agent, eventually};
use crate::{all_readings, client, code, get_json};

/// The reserve the agent is given, in bytes (`[retention] reserve = "8MiB"`): holding it
/// again needs twice as much free, more than the released reserve and the truncated WAL
/// give back, so writes cannot resume before readings are pruned.
const RESERVE: u64 = 8 << 20;
/// Readings per POST of the old series.
const CHUNK: i64 = 10_000;
/// The old readings' first timestamp (unix ms, 2026-01-01): they are sampled 1 ms apart.
const OLD_FROM: i64 = 1_767_225_600_000;

async fn status(c: &reqwest::Client, agent: &Agent) -> Value {
    let (s, v) = get_json(c, &agent.at("/v1/status")).await;
    assert_eq!(s, 200, "{v}");
    v
}

fn file_len(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_with_a_budget_prunes_the_oldest_and_writes_resume_by_themselves() {
    let Some(fs) = Tmpfs::mount("96m") else {
        return;
    };
    let config = "sources = []\ndevice_twin = false\n\
                  [retention]\nevery = \"1h\"\nmax_disk = \"80MiB\"\nreserve = \"8MiB\"\n";
    let agent = Agent::builder().dir(fs.path()).config(config).start();
    let c = client();
    let reserve_file = agent.data_dir().join("reserve");
    assert_eq!(
        file_len(&reserve_file),
        Some(RESERVE),
        "reserve created at start"
    );
    let st = status(&c, &agent).await;
    assert_eq!(
        st["store"]["write_health"]["reserve"]["state"], "held",
        "{st}"
    );
    assert_eq!(metric(&c, &agent, "kdelta_store_reserve_held ").await, 1.0);

    // A store of old readings, well over what the recovery needs to prune.
    let mut old_sent = 0i64;
    while status(&c, &agent).await["db_bytes"].as_u64().unwrap() < 32 << 20 {
        let (s, v) = ingest(&c, &agent, "old", OLD_FROM + old_sent, CHUNK).await;
        assert_eq!(s, 201, "{v}");
        old_sent += CHUNK;
        assert!(old_sent < 5_000_000, "the store never grew to 32 MiB");
    }
    eprintln!("{old_sent} old readings stored");

    // Another program fills the file system; the agent writes until it is refused.
    let filler = fs.fill(0);
    let filler_len = file_len(&filler).unwrap();
    let mut new_acked: Vec<(i64, i64)> = Vec::new();
    let mut next = OLD_FROM + old_sent + 60_000;
    const BATCH: i64 = 2000;
    let refusal = loop {
        let (s, v) = ingest(&c, &agent, "new", next, BATCH).await;
        match s {
            201 => new_acked.push((next, BATCH)),
            507 => break v,
            other => panic!("unexpected answer {other}: {v}\n{}", agent.stderr()),
        }
        next += BATCH;
        assert!(next < OLD_FROM + 100_000_000, "the disk never filled");
    };
    next += BATCH;
    let full_at = Instant::now();
    assert_eq!(code(&refusal), "disk_full", "{refusal}");
    let (s, why) = get_json(&c, &agent.at("/readyz")).await;
    assert_eq!(s, 503, "not ready while the disk is full: {why}");
    let message = why["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("disk_full:") && message.contains("pruning the oldest"),
        "{message}"
    );

    // Nothing is freed by the test: the agent recovers on its own.
    eventually(
        Duration::from_secs(60),
        "/readyz 200 without freeing anything",
        || {
            let (c, url) = (c.clone(), agent.at("/readyz"));
            async move { (get_json(&c, &url).await.0 == 200).then_some(()) }
        },
    )
    .await;
    let recovered_in = full_at.elapsed();
    eprintln!(
        "recovered {} ms after the first 507",
        recovered_in.as_millis()
    );
    assert_eq!(
        file_len(&filler),
        Some(filler_len),
        "the filler is untouched"
    );
    assert_eq!(file_len(&reserve_file), Some(RESERVE), "reserve held again");
    let st = status(&c, &agent).await;
    let health = &st["store"]["write_health"];
    assert!(health["disk_full"].is_null(), "{st}");
    assert_eq!(health["reserve"]["state"], "held", "{st}");
    let horizon_when_ready = st["store"]["horizon"]["series"]["old"].as_i64().unwrap();
    assert!(
        horizon_when_ready > OLD_FROM,
        "writes resumed only after the oldest readings were pruned: {st}"
    );
    // Writes resume as soon as the room is back; the pass records itself once it ends.
    let st = eventually(
        Duration::from_secs(60),
        "the recovery pass recorded",
        || {
            let (c, agent) = (c.clone(), &agent);
            async move {
                let st = status(&c, agent).await;
                (st["store"]["budget"]["pruned_total"].as_u64()? > 0).then_some(st)
            }
        },
    )
    .await;
    assert!(
        st["disk"]["available_bytes"].as_u64().unwrap() > RESERVE,
        "{st}"
    );
    assert_eq!(metric(&c, &agent, "kdelta_store_reserve_held ").await, 1.0);
    assert_eq!(metric(&c, &agent, "kdelta_store_disk_full ").await, 0.0);
    let log = agent.stderr();
    for line in [
        "released the disk reserve",
        "running the disk budget now",
        "disk reserve held",
        "writes resumed",
    ] {
        assert!(log.contains(line), "the log says {line:?}:\n{log}");
    }

    // Writes work again.
    let (s, v) = ingest(&c, &agent, "new", next, 100).await;
    assert_eq!(s, 201, "{v}");
    new_acked.push((next, 100));

    // The oldest readings went; every acknowledged reading after the horizon is there.
    let old = all_readings(&c, &agent, "old").await;
    let horizon = *old.keys().next().expect("not every old reading pruned");
    assert!(horizon > OLD_FROM, "the oldest were pruned");
    assert!((old.len() as i64) < old_sent);
    for t in horizon..OLD_FROM + old_sent {
        assert_eq!(
            old.get(&t),
            Some(&(t as f64 * 0.25)),
            "acknowledged reading ts {t} after the horizon {horizon} lost"
        );
    }
    let new = all_readings(&c, &agent, "new").await;
    for (from, n) in &new_acked {
        for t in *from..from + n {
            assert_eq!(
                new.get(&t),
                Some(&(t as f64 * 0.25)),
                "new reading {t} lost"
            );
        }
    }
    eprintln!(
        "pruned {} of {old_sent} old readings; horizon moved {} ms",
        old_sent - old.len() as i64,
        horizon - OLD_FROM
    );
}
