//! Retention in a real agent: `[retention]` prunes raw readings older than their series' age
//! in the background (per-series rules, rollups still answering aggregates), and what it did
//! shows in `/v1/status`, `kdelta status` and `/metrics`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::harness::{Agent, eventually, run_to_end};
use crate::{all_readings, client, get_json, metrics_text, post};

const DAY: i64 = 86_400_000;

#[tokio::test]
async fn an_agent_prunes_by_age_and_shows_it() {
    let agent = Agent::builder()
        .config(
            "sources = []\ndevice_twin = false\n[retention]\nreadings = \"2d\"\nrollups = \"30d\"\nevery = \"1s\"\n\
             [[retention.series]]\npattern = \"keep.*\"\nkeep = \"forever\"\n",
        )
        .start();
    let c = client();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // Hour-aligned: the 120 readings (two minutes) fall in one 1 h aggregate bucket whatever
    // the minute the test runs in.
    let old = now / 3_600_000 * 3_600_000 - 5 * DAY;
    let ts: Vec<i64> = (0..120).map(|i| old + i * 1000).collect();
    let recent: Vec<i64> = (0..10).map(|i| now - 60_000 + i * 1000).collect();
    let body = json!({"series": [
        {"name": "gh.temp", "ts": ts, "values": vec![1.5; 120]},
        {"name": "keep.me", "ts": ts, "values": vec![2.5; 120]},
    ]});
    let (s, v) = post(
        &c,
        &agent.at("/v1/readings"),
        "application/json",
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let body = json!({"series": [{"name": "gh.temp", "ts": recent, "values": vec![3.0; 10]}]});
    let (s, v) = post(
        &c,
        &agent.at("/v1/readings"),
        "application/json",
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(s, 201, "{v}");

    eventually(
        Duration::from_secs(20),
        "old gh.temp readings pruned",
        || {
            let (c, agent) = (c.clone(), &agent);
            async move { (all_readings(&c, agent, "gh.temp").await.len() == 10).then_some(()) }
        },
    )
    .await;
    assert_eq!(all_readings(&c, &agent, "keep.me").await.len(), 120);
    // The rollups still answer for the pruned range.
    let (_, agg) = get_json(
        &c,
        &agent.at(&format!(
            "/v1/readings/aggregate?series=gh.temp&from={old}&to={}&bucket=1h",
            old + 3_600_000
        )),
    )
    .await;
    assert_eq!(agg["buckets"][0]["count"], 120, "{agg}");

    // The pass records its figures once it has also given the space back.
    let st = eventually(Duration::from_secs(20), "the pass in /v1/status", || {
        let (c, url) = (c.clone(), agent.at("/v1/status"));
        async move {
            let (_, st) = get_json(&c, &url).await;
            (st["store"]["retention"]["total"]["readings"] == 120).then_some(st)
        }
    })
    .await;
    let retention = &st["store"]["retention"];
    assert_eq!(retention["enabled"], true, "{st}");
    assert_eq!(retention["total"]["readings"], 120, "{st}");
    assert_eq!(st["store"]["horizon"]["oldest_reading_ms"], old, "{st}");
    assert_eq!(
        st["store"]["horizon"]["series"]["gh.temp"], recent[0],
        "{st}"
    );
    assert!(st["store"]["wear"]["write_bytes"].is_u64(), "{st}");
    assert_eq!(st["counts"]["readings"], 130, "{st}");

    let metrics = metrics_text(&c, &agent).await;
    assert!(
        metrics.contains("kdelta_retention_pruned_readings_total 120"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("kdelta_retention_horizon_timestamp_ms {old}")),
        "{metrics}"
    );
    assert!(metrics.contains("kdelta_store_disk_full 0"), "{metrics}");

    let (code, out) = run_to_end(
        &["status", "--url", agent.url()],
        agent.dir(),
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(0), "{out}");
}

/// The storage writes `/v1/status` reports are the agent's own. Linux adds a reaped child's
/// I/O to its parent's `/proc/<pid>/io` and `exec` keeps it, so an agent started by a shell
/// that first wrote 40 MiB (as scripts/start.sh runs `cargo build` before `exec kdelta
/// start`) would report them as its own unless it counts from its start.
#[tokio::test]
async fn storage_writes_count_from_the_agents_start() {
    let agent = Agent::builder()
        .before_exec(
            "dd if=/dev/zero of=ballast bs=1M count=40 conv=fsync status=none && rm ballast \
             && grep '^write_bytes' /proc/$$/io > io-before-exec",
        )
        .start();
    let before = std::fs::read_to_string(agent.dir().join("io-before-exec")).unwrap();
    let before: u64 = before
        .trim()
        .trim_start_matches("write_bytes:")
        .trim()
        .parse()
        .unwrap();
    if before < 40 << 20 {
        eprintln!(
            "skipped: this file system did not count the shell's 40 MiB as written \
             ({before} bytes; tmpfs counts none)"
        );
        return;
    }
    let c = client();
    let (_, st) = get_json(&c, &agent.at("/v1/status")).await;
    let written = st["store"]["wear"]["write_bytes"]
        .as_u64()
        .expect("write_bytes");
    // The agent's own: the store, its WAL and the 8 MiB disk reserve.
    assert!(
        written < 24 << 20,
        "{written} bytes reported after a shell wrote {before}: {st}"
    );
}
