//! `kdelta bench ingest`: an end-to-end load tool. N workers post columnar reading batches
//! (JSON or CBOR) to `POST /v1/readings` back to back for a fixed time, then it prints
//! readings/s, request latency percentiles and the server's memory (and CPU with `--pid`).
//! Every request is a real durable commit, so the figure is what a client can rely on.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use super::BenchIngestArgs;
use super::{mib, proc_sample};
use crate::client::{ApiClient, api_error};

/// One series of a columnar batch (the API's compact form).
#[derive(Serialize)]
struct Columns<'a> {
    name: &'a str,
    unit: &'static str,
    ts: &'a [i64],
    values: &'a [f64],
}

#[derive(Serialize)]
struct Body<'a> {
    series: Vec<Columns<'a>>,
}

/// What one worker saw.
#[derive(Default)]
struct WorkerReport {
    ok: u64,
    failed: u64,
    readings: u64,
    latencies_us: Vec<u32>,
    first_error: Option<String>,
}

/// Runs the load test.
pub async fn ingest(args: BenchIngestArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.url)?;
    let status = client
        .get(client.url("v1/status", &[]))
        .await
        .context("the agent under test must be running")?;
    let batch = args.batch as usize;
    let series = (args.series as usize).min(batch).max(1);
    let format = if args.cbor { "CBOR" } else { "JSON" };
    println!(
        "kdelta bench ingest → {}: batches of {batch} readings ({series} series), {format}, concurrency {}, {}",
        client.base(),
        args.concurrency,
        humantime::format_duration(args.duration)
    );
    let run_id = kdelta_sensors::now_ms() / 1000;
    let before = args.pid.and_then(proc_sample);
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut workers = Vec::new();
    for worker in 0..args.concurrency {
        let client = client.clone();
        workers.push(tokio::spawn(async move {
            run_worker(&client, worker, run_id, batch, series, args.cbor, deadline).await
        }));
    }
    let mut total = WorkerReport::default();
    for w in workers {
        let r = w.await.context("a bench worker panicked")?;
        total.ok += r.ok;
        total.failed += r.failed;
        total.readings += r.readings;
        total.latencies_us.extend(r.latencies_us);
        total.first_error = total.first_error.or(r.first_error);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = args.pid.and_then(proc_sample);

    total.latencies_us.sort_unstable();
    let pct = |p: f64| -> String {
        if total.latencies_us.is_empty() {
            return "-".into();
        }
        let i = ((total.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        format!("{:.1} ms", f64::from(total.latencies_us[i]) / 1000.0)
    };
    println!("requests     {} ok, {} failed", total.ok, total.failed);
    println!("readings/s   {:.0}", total.readings as f64 / elapsed);
    println!(
        "latency      p50 {}   p99 {}   max {}",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    match (&before, &after) {
        (Some(b), Some(a)) => {
            // SAFETY: sysconf has no preconditions.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
            let cores = (a.cpu_ticks.saturating_sub(b.cpu_ticks)) as f64 / hz / elapsed;
            println!(
                "server RSS   {} (peak {})",
                mib(a.rss_bytes),
                mib(a.hwm_bytes)
            );
            println!("server CPU   {cores:.2} cores");
        }
        _ => {
            let rss = client
                .get(client.url("v1/status", &[]))
                .await
                .ok()
                .as_ref()
                .or(Some(&status))
                .and_then(find_rss);
            match rss {
                Some(bytes) => println!("server RSS   {} (from /v1/status)", mib(bytes)),
                None => println!("server RSS   unknown (pass --pid PID of the agent)"),
            }
        }
    }
    if let Some(e) = total.first_error {
        println!("first error  {e}");
    }
    if total.ok == 0 {
        anyhow::bail!("no request succeeded");
    }
    Ok(())
}

/// `rss_bytes` anywhere in the status answer (top level or one object down).
fn find_rss(status: &serde_json::Value) -> Option<u64> {
    status
        .get("rss_bytes")
        .and_then(|v| v.as_u64())
        .or_else(|| {
            status
                .as_object()?
                .values()
                .find_map(|v| v.get("rss_bytes").and_then(|r| r.as_u64()))
        })
}

async fn run_worker(
    client: &ApiClient,
    worker: u16,
    run_id: i64,
    batch: usize,
    series: usize,
    cbor: bool,
    deadline: Instant,
) -> WorkerReport {
    let names: Vec<String> = (0..series)
        .map(|s| format!("bench.{run_id}.w{worker}.s{s}"))
        .collect();
    let per_series = batch.div_ceil(series);
    let url = client.url("v1/readings", &[]);
    let content_type = if cbor {
        "application/cbor"
    } else {
        "application/json"
    };
    let mut report = WorkerReport::default();
    let mut ts: Vec<i64> = vec![0; per_series];
    let mut values: Vec<f64> = vec![0.0; per_series];
    let mut round: i64 = 0;
    let base: i64 = 1_600_000_000_000;
    while Instant::now() < deadline {
        // Each round covers the next `per_series` milliseconds of every series: no duplicates.
        let mut left = batch;
        let mut cols = Vec::with_capacity(series);
        for (i, t) in ts.iter_mut().enumerate() {
            *t = base + round * per_series as i64 + i as i64;
        }
        for (i, v) in values.iter_mut().enumerate() {
            *v = ((round as f64) * 0.01 + i as f64).sin() * 10.0 + 20.0;
        }
        for name in &names {
            let n = per_series.min(left);
            if n == 0 {
                break;
            }
            left -= n;
            cols.push(Columns {
                name,
                unit: "u",
                ts: &ts[..n],
                values: &values[..n],
            });
        }
        let sent: u64 = cols.iter().map(|c| c.ts.len() as u64).sum();
        let body = Body { series: cols };
        let bytes = if cbor {
            let mut out = Vec::with_capacity(batch * 12);
            if ciborium::into_writer(&body, &mut out).is_err() {
                break;
            }
            out
        } else {
            serde_json::to_vec(&body).unwrap_or_default()
        };
        round += 1;
        let t0 = Instant::now();
        let result = client
            .http()
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(bytes)
            .send()
            .await;
        let outcome = match result {
            Ok(response) if response.status().is_success() => {
                let _ = response.bytes().await;
                Ok(())
            }
            Ok(response) => {
                let status = response.status();
                let body = response.bytes().await.unwrap_or_default();
                Err(api_error(status, &body).to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        let micros = u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX);
        match outcome {
            Ok(()) => {
                report.ok += 1;
                report.readings += sent;
                report.latencies_us.push(micros);
            }
            Err(e) => {
                report.failed += 1;
                report.first_error.get_or_insert(e);
                // Do not spin on a dead server.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    report
}
