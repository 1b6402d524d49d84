//! Measures how fast one and then two hub replicas apply pages of readings changes into
//! PostgreSQL. Each change is 50 series × 10 readings (a device at 1 Hz batching 10 s); pages
//! are cut at 1 MiB of encoded changes, as a sync session sends them; each device's backlog
//! is applied by its own task. Works in a schema of its own, dropped at the end.
//!
//! ```sh
//! cargo build --workspace --example apply_rate   # the workspace's features: nothing rebuilt
//! KDELTA_POSTGRES=postgres://postgres@127.0.0.1:5432/test \
//!     target/debug/examples/apply_rate [devices] [changes per device]
//! ```
//! Dependencies are optimised in the dev profile; the time goes to PostgreSQL.

use std::str::FromStr;
use std::time::Instant;

use kdelta_pg::{PgConfig, PgStore};
use kdelta_sync::{ActorId, Change, ChangeBody, Hlc, ReadingBatch};
use sqlx::postgres::{PgConnectOptions, PgPool};

const PAGE_BYTES: usize = 1 << 20;

fn backlog(device: u64, changes: u64, t0: i64) -> Vec<Change> {
    let actor = ActorId(rand::random());
    (1..=changes)
        .map(|seq| {
            let mut b = ReadingBatch::new();
            for s in 0..50 {
                for i in 0..10 {
                    let ts = t0 + (seq as i64 * 10 + i) * 1000;
                    b.push(
                        &format!("dev{device}.s{s}"),
                        ts,
                        (s * i) as f64 + 0.5,
                        Some("V"),
                    );
                }
            }
            Change {
                actor,
                seq,
                hlc: Hlc::new((t0 + seq as i64 * 10_000) as u64, 0),
                body: ChangeBody::Readings(b),
                seal: None,
                pruned_rollups: Vec::new(),
            }
        })
        .collect()
}

fn pages(changes: Vec<Change>) -> Vec<Vec<Change>> {
    let mut out = vec![Vec::new()];
    let mut used = 0;
    for c in changes {
        let n = c.encoded_len();
        if used + n > PAGE_BYTES && !out.last().unwrap().is_empty() {
            out.push(Vec::new());
            used = 0;
        }
        used += n;
        out.last_mut().unwrap().push(c);
    }
    out
}

async fn run(replicas: &[PgStore], work: Vec<Vec<Vec<Change>>>) -> f64 {
    let readings: usize = work
        .iter()
        .flatten()
        .flatten()
        .map(|c| match &c.body {
            ChangeBody::Readings(b) => b.len(),
            _ => 0,
        })
        .sum();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, device_pages) in work.into_iter().enumerate() {
        let r = replicas[i % replicas.len()].clone();
        tasks.push(tokio::spawn(async move {
            for p in device_pages {
                r.apply_remote(p).await.expect("apply");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    readings as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let url = std::env::var("KDELTA_POSTGRES").expect("set KDELTA_POSTGRES");
    let mut args = std::env::args().skip(1);
    let devices: u64 = args.next().map_or(20, |a| a.parse().expect("devices"));
    let per: u64 = args
        .next()
        .map_or(40, |a| a.parse().expect("changes per device"));
    let schema = format!("kdelta_bench_{}", hex::encode(rand::random::<[u8; 4]>()));
    let admin = PgPool::connect(&url).await.expect("connect");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .expect("schema");
    let options = PgConnectOptions::from_str(&url)
        .expect("url")
        .options([("search_path", schema.as_str())]);
    let open = || PgStore::connect_with(options.clone(), PgConfig::default());
    let (r1, r2) = (open().await.expect("open"), open().await.expect("open"));
    let t0 = 1_796_000_000_000;
    for (label, replicas) in [
        ("1 replica ", vec![r1.clone()]),
        ("2 replicas", vec![r1.clone(), r2.clone()]),
    ] {
        let work: Vec<Vec<Vec<Change>>> =
            (0..devices).map(|d| pages(backlog(d, per, t0))).collect();
        let rate = run(&replicas, work).await;
        println!(
            "{label}: {devices} devices × {per} changes × 500 readings: {rate:.0} readings/s applied"
        );
    }
    r1.close().await;
    r2.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&admin)
        .await
        .expect("drop");
}
