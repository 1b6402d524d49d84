//! The disk budget in real agents: a device on a small tmpfs the test mounts (root only;
//! skipped with a message otherwise) with `[retention] max_disk` / `hard_limit` and a hub as
//! its `upstream = true` peer, through a proxy that can cut the link.
//!
//! 1. Link up: the device fills past its budget; the oldest readings (the hub holds them) go,
//!    the store comes back within budget, and the hub keeps every reading.
//! 2. Link cut: readings the hub has not acknowledged are held over `max_disk` (status says
//!    so, nothing of them is dropped) until the hard limit; then the oldest go, counted in
//!    `kdelta_retention_budget_dropped_readings_total` and recorded in a gap record; writes
//!    keep working.
//! 3. Link back: the gap record reaches the hub, and the hub's readings plus the gap's
//!    account for every reading the device acknowledged.

use std::time::Duration;

use serde_json::{Value, json};

use crate::disk::Tmpfs;
use crate::harness::{Agent, eventually};
use crate::proxy::Proxy;
use crate::{all_readings, client, get_json, metrics_text, post, put_json};

const TOKEN: &str = "budget-test-token";
/// Readings per POST.
const CHUNK: i64 = 10_000;
const HOUR: i64 = 3_600_000;
/// Budget passes run every second; allow many.
const WAIT: Duration = Duration::from_secs(60);

/// Posts `CHUNK` readings of `series`, one a second from `from`.
async fn chunk(c: &reqwest::Client, agent: &Agent, series: &str, from: i64) {
    let ts: Vec<i64> = (0..CHUNK).map(|i| from + i * 1000).collect();
    let values: Vec<f64> = ts.iter().map(|t| (*t / 1000 % 1000) as f64).collect();
    let body = json!({"series": [{"name": series, "ts": ts, "values": values}]});
    let (s, v) = post(
        c,
        &agent.at("/v1/readings"),
        "application/json",
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(s, 201, "{v}");
}

async fn status(c: &reqwest::Client, agent: &Agent) -> Value {
    let (s, v) = get_json(c, &agent.at("/v1/status")).await;
    assert_eq!(s, 200, "{v}");
    v
}

async fn metric(c: &reqwest::Client, agent: &Agent, name: &str) -> f64 {
    let text = metrics_text(c, agent).await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Waits until the device's hub link has nothing left to send.
async fn synced(c: &reqwest::Client, device: &Agent) {
    eventually(WAIT, "the hub holds everything of the device", || {
        let (c, url) = (c.clone(), device.at("/v1/sync/peers"));
        async move {
            let (_, v) = get_json(&c, &url).await;
            let p = &v["peers"][0];
            (p["connected"] == true && p["lag_to_peer"] == 0).then_some(())
        }
    })
    .await;
}

/// Sum of the readings the hub's gap records say were dropped of `series`.
async fn gap_readings(c: &reqwest::Client, agent: &Agent, series: &str) -> u64 {
    let (s, v) = get_json(c, &agent.at(&format!("/v1/readings/gaps?series={series}"))).await;
    assert_eq!(s, 200, "{v}");
    v["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["entries"].as_array().unwrap())
        .map(|e| e["readings"].as_u64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_readings_are_held_until_the_hard_limit_and_the_gap_reaches_the_hub() {
    let Some(fs) = Tmpfs::mount("64m") else {
        return;
    };
    let c = client();
    let hub = Agent::builder()
        .config(&format!(
            "sources = []\ndevice_twin = false\n[sync]\naccept_tokens = [{{ name = \"device\", token = \"{TOKEN}\" }}]\n"
        ))
        .start();
    let proxy = Proxy::to_url(hub.url()).await;
    let device = Agent::builder()
        .dir(fs.path())
        .config(&format!(
            "sources = []\ndevice_twin = false\n\
             [retention]\nevery = \"1s\"\nstep_rows = 2000\nmax_disk = \"4MiB\"\nhard_limit = \"8MiB\"\n\
             [[sync.peers]]\nname = \"hub\"\nurl = \"{}\"\ntoken = \"{TOKEN}\"\nupstream = true\n",
            proxy.url()
        ))
        .start();
    let start = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64)
        / HOUR
        * HOUR
        - 60 * 24 * HOUR;

    // 1. Link up: fill to twice the budget, each chunk acknowledged before the next.
    let mut a_sent = 0;
    while a_sent < 20 * CHUNK {
        chunk(&c, &device, "a", start + a_sent * 1000).await;
        a_sent += CHUNK;
        synced(&c, &device).await;
    }
    let st = eventually(WAIT, "the device back within max_disk", || {
        let (c, device) = (c.clone(), &device);
        async move {
            let st = status(&c, device).await;
            let b = &st["store"]["budget"];
            let within = b["used_bytes"].as_u64()? <= b["limit_bytes"].as_u64()?;
            (within && b["pruned_total"].as_u64()? > 0).then_some(st)
        }
    })
    .await;
    let budget = &st["store"]["budget"];
    assert_eq!(budget["limit_bytes"], 4 << 20, "{budget}");
    assert_eq!(budget["hard_limit_bytes"], 8 << 20, "{budget}");
    assert_eq!(budget["dropped_unacked_total"], 0, "{budget}");
    assert!(
        st["counts"]["readings"].as_u64().unwrap() < a_sent as u64,
        "oldest pruned: {st}"
    );
    assert_eq!(all_readings(&c, &hub, "a").await.len() as i64, a_sent);
    let (_, gaps) = get_json(&c, &device.at("/v1/readings/gaps")).await;
    assert_eq!(gaps["gaps"], json!([]), "{gaps}");

    // 2. Link cut: new readings are held over max_disk…
    proxy.cut();
    let b_from = start + a_sent * 1000;
    let mut b_sent = 0;
    loop {
        chunk(&c, &device, "b", b_from + b_sent * 1000).await;
        b_sent += CHUNK;
        let st = status(&c, &device).await;
        if st["store"]["budget"]["holding_unacked"] == true {
            break;
        }
        assert!(b_sent < 60 * CHUNK, "never held over budget: {st}");
        // Let a budget pass see the new size before the next chunk.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        metric(
            &c,
            &device,
            "kdelta_retention_budget_dropped_readings_total"
        )
        .await,
        0.0
    );
    assert_eq!(
        metric(&c, &device, "kdelta_retention_budget_holding_unacked").await,
        1.0
    );
    assert_eq!(
        all_readings(&c, &device, "b").await.len() as i64,
        b_sent,
        "nothing unacknowledged dropped below the hard limit"
    );
    // …until the hard limit: then the oldest of them go, recorded.
    let mut dropped = 0.0;
    while dropped == 0.0 {
        chunk(&c, &device, "b", b_from + b_sent * 1000).await;
        b_sent += CHUNK;
        assert!(b_sent < 120 * CHUNK, "never dropped at the hard limit");
        tokio::time::sleep(Duration::from_millis(300)).await;
        dropped = metric(
            &c,
            &device,
            "kdelta_retention_budget_dropped_readings_total",
        )
        .await;
    }
    let st = eventually(WAIT, "the device back under its hard limit", || {
        let (c, device) = (c.clone(), &device);
        async move {
            let st = status(&c, device).await;
            let b = &st["store"]["budget"];
            (b["used_bytes"].as_u64()? <= b["hard_limit_bytes"].as_u64()?).then_some(st)
        }
    })
    .await;
    assert!(
        st["store"]["budget"]["gaps_total"].as_u64().unwrap() >= 1,
        "{st}"
    );
    let on_device = gap_readings(&c, &device, "b").await;
    assert!(on_device > 0);
    // Writes keep working within the budget.
    chunk(&c, &device, "b", b_from + b_sent * 1000).await;
    b_sent += CHUNK;

    // 3. Link back: the gap record reaches the hub; hub + gaps account for every reading.
    proxy.restore();
    let (s, v) = post(
        &c,
        &device.at("/v1/sync/now"),
        "application/json",
        b"{}".to_vec(),
    )
    .await;
    assert!(s < 500, "{s} {v}");
    synced(&c, &device).await;
    let hub_b = all_readings(&c, &hub, "b").await.len() as u64;
    let gap_b = gap_readings(&c, &hub, "b").await;
    assert!(gap_b >= on_device, "gap records reached the hub: {gap_b}");
    eprintln!(
        "budget e2e: a {a_sent} (hub holds all), b {b_sent}: hub {hub_b} + gap {gap_b}; device {}",
        st["store"]["budget"]
    );
    assert_eq!(
        hub_b + gap_b,
        b_sent as u64,
        "every reading of b is at the hub or in a gap record"
    );
    // Nothing the hub had acknowledged is lost there.
    assert_eq!(all_readings(&c, &hub, "a").await.len() as i64, a_sent);
    let (_, gaps) = get_json(&c, &hub.at("/v1/readings/gaps")).await;
    assert_eq!(
        gaps["gaps"][0]["actor"], st["actor"],
        "recorded by the device: {gaps}"
    );
    drop(device);
    drop(fs);
}

/// `PRAGMA auto_vacuum` of the store at `db`.
fn auto_vacuum(db: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn kdelta_compact_switches_an_old_store_and_is_refused_while_the_agent_runs() {
    let mut agent = Agent::builder()
        .config("sources = []\ndevice_twin = false\n")
        .start();
    let c = client();
    chunk(&c, &agent, "a", 1_764_000_000_000).await;
    let keep = agent.keep_dir().unwrap();
    let data = agent.data_dir();
    let db = data.join("kdelta.db");
    let arg = |d: &std::path::Path| d.to_str().unwrap().to_owned();
    let cli = |args: Vec<String>| {
        let dir = keep.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            crate::harness::run_to_end(&args, &dir, Duration::from_secs(60))
        })
    };
    let (code, err) = cli(vec!["compact".into(), "--data-dir".into(), arg(&data)])
        .await
        .unwrap();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("already running"), "{err}");
    agent.sigterm();
    assert!(agent.wait_exit(Duration::from_secs(20)).is_some());
    // Made old: what a store of a release before incremental auto-vacuum looks like.
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("PRAGMA auto_vacuum = NONE; VACUUM;")
            .unwrap();
    }
    assert_eq!(auto_vacuum(&db), 0);
    let (code, err) = cli(vec!["compact".into(), "--data-dir".into(), arg(&data)])
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(auto_vacuum(&db), 2, "incremental auto-vacuum after compact");
    // The agent starts on it with every reading.
    let again = Agent::builder()
        .dir(keep.path())
        .config("sources = []\ndevice_twin = false\n")
        .start();
    assert_eq!(all_readings(&c, &again, "a").await.len() as i64, CHUNK);
}

/// The record of what upstream peer `peer` acknowledged in the store at `db` (`null` when
/// none was stored yet): read beside the running agent, as any SQLite reader can.
fn stored_ack(db: &std::path::Path, peer: &str) -> Value {
    let conn = rusqlite::Connection::open(db).unwrap();
    let value: Option<Vec<u8>> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = ?1",
            [format!("local/upstream_acked/{peer}")],
            |r| r.get(0),
        )
        .ok();
    value.map_or(Value::Null, |v| serde_json::from_slice(&v).unwrap())
}

/// Regression (issue #16, reopened): what the hub acknowledged was held only in memory, so
/// after a restart with the hub away every reading counted as unacknowledged: at the hard
/// limit the budget dropped readings the hub already held and recorded false gap records.
/// Now the acknowledged vector is stored (every 10 s when it moved) and loaded at start:
/// after a `kill -9` and a restart with the link cut, the readings the hub holds are pruned
/// first, and only readings it never got are dropped and recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_the_hub_away_keeps_what_it_acknowledged_and_records_no_false_gap() {
    let Some(fs) = Tmpfs::mount("64m") else {
        return;
    };
    let c = client();
    let hub = Agent::builder()
        .config(&format!(
            "sources = []\ndevice_twin = false\n[sync]\naccept_tokens = [{{ name = \"device\", token = \"{TOKEN}\" }}]\n"
        ))
        .start();
    let proxy = Proxy::to_url(hub.url()).await;
    let config = format!(
        "sources = []\ndevice_twin = false\n\
         [retention]\nevery = \"1s\"\nstep_rows = 2000\nmax_disk = \"4MiB\"\nhard_limit = \"8MiB\"\n\
         [[sync.peers]]\nname = \"hub\"\nurl = \"{}\"\ntoken = \"{TOKEN}\"\nupstream = true\n",
        proxy.url()
    );
    let mut device = Agent::builder().dir(fs.path()).config(&config).start();
    let start = 1_764_000_000_000i64;

    // Link up: 8 chunks, all at the hub, within the budget.
    let mut a_sent = 0;
    while a_sent < 8 * CHUNK {
        chunk(&c, &device, "a", start + a_sent * 1000).await;
        a_sent += CHUNK;
    }
    synced(&c, &device).await;
    assert_eq!(all_readings(&c, &hub, "a").await.len() as i64, a_sent);
    // The hub's vector is stored by itself (no shutdown needed): wait for the record.
    let db = device.data_dir().join("kdelta.db");
    eventually(WAIT, "the hub's acknowledged vector stored", || {
        let (c, url, db) = (c.clone(), device.at("/v1/sync/peers"), db.clone());
        async move {
            let (_, v) = get_json(&c, &url).await;
            let live = v["peers"][0]["their_vector"].clone();
            (live != Value::Null && stored_ack(&db, "hub") == live).then_some(())
        }
    })
    .await;

    // Power cut, and the device comes back while the hub is away.
    proxy.cut();
    device.kill9();
    drop(device);
    let device = Agent::builder().dir(fs.path()).config(&config).start();
    let b_from = start + a_sent * 1000;
    let mut b_sent = 0;
    let mut dropped = 0.0;
    while dropped == 0.0 {
        chunk(&c, &device, "b", b_from + b_sent * 1000).await;
        b_sent += CHUNK;
        assert!(b_sent < 120 * CHUNK, "never dropped at the hard limit");
        tokio::time::sleep(Duration::from_millis(300)).await;
        dropped = metric(
            &c,
            &device,
            "kdelta_retention_budget_dropped_readings_total",
        )
        .await;
    }
    // What the hub held went first, and no gap record names it.
    assert_eq!(
        gap_readings(&c, &device, "a").await,
        0,
        "a false gap record"
    );
    assert!(gap_readings(&c, &device, "b").await > 0);
    assert!(
        dropped <= b_sent as f64,
        "only readings the hub never got were dropped: {dropped} of {b_sent}"
    );
    assert!(
        (all_readings(&c, &device, "a").await.len() as i64) < a_sent,
        "readings the hub holds were pruned first"
    );
    drop(device);
    drop(fs);
}

/// Bytes of the store's files as the file system sees them: database, WAL and shm.
fn store_files(agent: &Agent) -> u64 {
    let db = agent.data_dir().join("kdelta.db");
    ["", "-wal", "-shm"]
        .iter()
        .map(|s| {
            let mut p = db.clone().into_os_string();
            p.push(s);
            std::fs::metadata(p).map_or(0, |m| m.len())
        })
        .sum()
}

/// Waits for a budget pass that ended after `after_ms`, and returns `store.budget`.
async fn pass_after(c: &reqwest::Client, agent: &Agent, after_ms: i64) -> Value {
    eventually(WAIT, "a budget pass after the last write", || {
        let (c, agent) = (c.clone(), agent);
        async move {
            let b = status(&c, agent).await["store"]["budget"].clone();
            (b["last"]["at_ms"].as_i64()? > after_ms).then_some(b)
        }
    })
    .await
}

/// Waits for a budget pass after `written_ms` that leaves the store using at most
/// `max_disk`, and returns `store.budget`.
async fn back_within(c: &reqwest::Client, agent: &Agent, max_disk: u64, written_ms: i64) -> Value {
    eventually(WAIT, "the store back within max_disk", || async move {
        let b = pass_after(c, agent, written_ms).await;
        (b["used_bytes"].as_u64()? <= max_disk).then_some(b)
    })
    .await
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Regression (issue #16, audit): under `max_disk = "1MiB"` the store settled far above its
/// budget with no reading left — the budget never pruned rollups, and said nothing. Readings
/// one a minute make a rollup row each, so rollups weigh as much as the raw readings: round
/// after round the store must come back within budget (files on disk, WAL and shm included,
/// within `SLACK`), the newest round kept whole, by pruning raw readings and then rollups,
/// without ever reporting that the budget cannot be met.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_budget_holds_round_after_round_pruning_rollups_once_raw_readings_are_gone() {
    /// Readings per round (one POST), one a minute.
    const ROUND: i64 = 2_000;
    const ROUNDS: i64 = 16;
    const MAX_DISK: u64 = 1 << 20;
    /// The shm file (32 KiB) and what a pass stops above: the WAL of writes after it.
    const SLACK: u64 = 128 << 10;
    let c = client();
    let agent = Agent::builder()
        .config(
            "sources = []\ndevice_twin = false\n\
             [retention]\nevery = \"1s\"\nstep_rows = 2000\nmax_disk = \"1MiB\"\n",
        )
        .start();
    let start = 1_700_000_000_000i64 / HOUR * HOUR;
    let mut sizes = Vec::new();
    for round in 0..ROUNDS {
        let from = start + round * ROUND * 60_000;
        let ts: Vec<i64> = (0..ROUND).map(|i| from + i * 60_000).collect();
        let values: Vec<f64> = ts.iter().map(|t| (*t / 60_000 % 977) as f64).collect();
        let body = json!({"series": [{"name": "slow", "ts": ts, "values": values}]});
        let (s, v) = post(
            &c,
            &agent.at("/v1/readings"),
            "application/json",
            body.to_string().into_bytes(),
        )
        .await;
        assert_eq!(s, 201, "{v}");
        let b = back_within(&c, &agent, MAX_DISK, now_ms()).await;
        assert_eq!(b["cannot_meet"], Value::Null, "round {round}: {b}");
        let files = store_files(&agent);
        sizes.push(files);
        assert!(
            files <= MAX_DISK + SLACK,
            "round {round}: {files} bytes of files over max_disk + slack: {b}"
        );
    }
    let b = status(&c, &agent).await["store"]["budget"].clone();
    eprintln!("budget e2e (1 MiB): files after each round {sizes:?}; {b}");
    assert!(b["rollups_pruned_total"].as_u64().unwrap() > 0, "{b}");
    assert!(
        metric(&c, &agent, "kdelta_retention_budget_pruned_rollups_total").await > 0.0,
        "the rollups pruned are counted"
    );
    assert_eq!(
        metric(&c, &agent, "kdelta_retention_budget_cannot_meet").await,
        0.0
    );
    // Still recording: the newest round is all there, the oldest ones are gone.
    let kept = all_readings(&c, &agent, "slow").await;
    let last = start + (ROUNDS - 1) * ROUND * 60_000;
    assert_eq!(kept.range(last..).count() as i64, ROUND);
    assert!((kept.len() as i64) < ROUNDS * ROUND);
    // Aggregates over the oldest range no longer answer from rollups that are gone.
    let (s, agg) = get_json(
        &c,
        &agent.at(&format!(
            "/v1/readings/aggregate?series=slow&from={start}&to={}&bucket=1h",
            start + ROUND * 60_000
        )),
    )
    .await;
    assert_eq!(s, 200, "{agg}");
    assert_eq!(agg["buckets"], json!([]), "{agg}");
}

/// Issue #16, "keeps recording within its budget indefinitely": one reading per POST makes a
/// change each, and a change whose readings all went used to keep a ~200-byte row for good —
/// 10,000 of them alone are twice this 1 MiB budget, which could then never be met. With log
/// runs the budget's passes compact them: round after round the store comes back within
/// budget, never reports that it cannot, and still holds the newest readings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_small_changes_stay_within_a_tiny_budget_as_log_runs() {
    use futures::StreamExt;
    const ROUND: i64 = 2_500;
    const ROUNDS: i64 = 4;
    const MAX_DISK: u64 = 1 << 20;
    let c = client();
    let agent = Agent::builder()
        .config(
            "sources = []\ndevice_twin = false\n\
             [retention]\nevery = \"1s\"\nmax_disk = \"1MiB\"\n",
        )
        .start();
    let start = 1_700_000_000_000i64 / HOUR * HOUR;
    for round in 0..ROUNDS {
        let posts = (0..ROUND).map(|i| {
            let (c, url) = (c.clone(), agent.at("/v1/readings"));
            let ts = start + (round * ROUND + i) * 60_000;
            async move {
                let body = json!({"series": [{"name": "tick", "ts": [ts], "values": [1.0]}]});
                post(&c, &url, "application/json", body.to_string().into_bytes()).await
            }
        });
        let answers: Vec<(u16, Value)> = futures::stream::iter(posts)
            .buffer_unordered(8)
            .collect()
            .await;
        for (s, v) in &answers {
            assert_eq!(*s, 201, "{v}");
        }
        let b = back_within(&c, &agent, MAX_DISK, now_ms()).await;
        assert_eq!(b["cannot_meet"], Value::Null, "round {round}: {b}");
    }
    let st = status(&c, &agent).await;
    let compacted = st["store"]["budget"]["changes_compacted_total"]
        .as_u64()
        .unwrap_or(0);
    eprintln!(
        "log runs e2e (1 MiB): {} changes, {compacted} compacted; {}",
        ROUNDS * ROUND,
        st["store"]["budget"]
    );
    assert!(
        compacted > (ROUND * 2) as u64,
        "{compacted} compacted: {st}"
    );
    assert_eq!(
        metric(&c, &agent, "kdelta_retention_compacted_changes_total").await,
        compacted as f64
    );
    assert_eq!(
        st["counts"]["changes"].as_u64().unwrap() + compacted,
        (ROUNDS * ROUND) as u64,
        "every change is a row or in a run"
    );
    let kept = all_readings(&c, &agent, "tick").await;
    assert!(kept.contains_key(&(start + (ROUNDS * ROUND - 1) * 60_000)));
}

/// Issue #16: when nothing more may be pruned and the store is still over budget — here the
/// current values of documents, which the budget never prunes, exceed it on their own — the
/// agent says so: `store.budget.cannot_meet` naming documents as what holds the space, the
/// `kdelta_retention_budget_cannot_meet` gauge, a `kdelta status` line, and one log line for
/// the change of state (not one per pass). Writes keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_that_current_documents_alone_exceed_is_reported_as_cannot_be_met() {
    let c = client();
    let agent = Agent::builder()
        .config(
            "sources = []\ndevice_twin = false\n\
             [retention]\nevery = \"1s\"\nmax_disk = \"1MiB\"\n",
        )
        .start();
    // 1.5 MB of current document values (heads: never pruned).
    let blob: String = (0..50_000)
        .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
        .collect();
    for k in 0..30 {
        let (s, v) = put_json(
            &c,
            &agent.at(&format!("/v1/docs/config/big{k}")),
            &json!({ "k": k, "blob": blob }),
        )
        .await;
        assert!(s < 300, "{s} {v}");
    }
    let b = eventually(WAIT, "the budget reported as cannot be met", || {
        let (c, agent) = (c.clone(), &agent);
        async move {
            let b = status(&c, agent).await["store"]["budget"].clone();
            (b["cannot_meet"] != Value::Null).then_some(b)
        }
    })
    .await;
    let cm = &b["cannot_meet"];
    assert_eq!(cm["held_by"][0]["holder"], "documents", "{b}");
    assert!(cm["held_by"][0]["bytes"].as_u64().unwrap() > 1 << 20, "{b}");
    assert!(cm["over_bytes"].as_u64().unwrap() > 0, "{b}");
    assert_eq!(
        metric(&c, &agent, "kdelta_retention_budget_cannot_meet").await,
        1.0
    );
    // More passes, still one log line for the state.
    let since = b["last"]["at_ms"].as_i64().unwrap();
    let later = pass_after(&c, &agent, since + 2_000).await;
    assert_ne!(later["cannot_meet"], Value::Null, "{later}");
    assert_eq!(later["cannot_meet"]["since_ms"], cm["since_ms"], "{later}");
    let log = agent.stderr();
    assert_eq!(
        log.matches("disk budget cannot be met").count(),
        1,
        "one line per change of state: {log}"
    );
    assert!(log.contains("held by documents"), "{log}");
    let out = std::process::Command::new(crate::harness::BIN)
        .args(["status", "--url", agent.url()])
        .env("NO_COLOR", "1")
        .env_remove("KDELTA_TOKEN")
        .env_remove("KDELTA_URL")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run kdelta status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("budget"))
        .unwrap_or_default();
    assert!(
        line.contains("CANNOT BE MET") && line.contains("held by documents"),
        "{text}"
    );
    // Still recording.
    chunk(&c, &agent, "a", 1_764_000_000_000).await;
}
