//! Twin history compaction (`[retention.twins]`): what it saves and what reading compacted
//! changes costs. Prints figures (stderr); not a criterion bench — each figure is a median of
//! a few timed runs on one store.
//!
//! Run with `cargo bench -p kdelta-sync --bench twin_compaction`.
//!
//! - a twin with 10,000 device-twin-like edits (one `reported` field of a dozen per patch,
//!   64 concurrent writers, as in the `twins` bench);
//! - twin bytes (`twin_changes.bytes` + `twins.snapshot`) and the database file, before and
//!   after a compaction pass (which ends with the incremental vacuum);
//! - the compaction rate (changes/s) and the writer time per step;
//! - serving a sync page (`changes_since`, 256 KiB) of raw changes, of compacted ones with
//!   the snapshot cached, and right after a new snapshot (the first read loads it);
//! - all 10,000 changes served in 1 MiB pages, and `Store::verify_file`, before and after.

use std::time::Instant;

use kdelta_sync::{RetentionPolicy, Store, StoreConfig, TwinCompaction, TwinPatch, VersionVector};
use serde_json::json;
use tokio::runtime::Runtime;

const KEY: &str = "device/bench";
const CHANGES: usize = 10_000;
const WRITERS: usize = 64;
const PAGE: usize = 256 << 10;

fn report(i: usize) -> TwinPatch {
    TwinPatch::Merge(
        json!({"reported": {format!("f{}", i % 12): {"value": i, "ok": !i.is_multiple_of(7)}}}),
    )
}

async fn patch_concurrently(s: &Store, total: usize, from: usize) {
    let per = total.div_ceil(WRITERS);
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                s.twin_patch(KEY, report(from + w * per + i)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// (raw chunk bytes, snapshot bytes, compacted changes, database bytes) read from the file.
fn twin_bytes(path: &std::path::Path) -> (i64, i64, i64, i64) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let (raw, compacted): (i64, i64) = conn
        .query_row(
            "SELECT SUM(length(bytes)), SUM(length(bytes) = 0) FROM twin_changes",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let snapshot: i64 = conn
        .query_row("SELECT SUM(length(snapshot)) FROM twins", [], |r| r.get(0))
        .unwrap();
    let db: i64 = conn
        .query_row(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
            [],
            |r| r.get(0),
        )
        .unwrap();
    (raw, snapshot, compacted, db)
}

/// Median ms of `runs` calls serving one page from an empty vector; and the page's length.
fn page_ms(rt: &Runtime, s: &Store, runs: usize) -> (f64, usize) {
    let mut n = 0;
    let ms = median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                n = rt
                    .block_on(s.changes_since(&VersionVector::new(), PAGE))
                    .unwrap()
                    .len();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    );
    (ms, n)
}

/// Ms to serve every change in 1 MiB pages, as a fresh peer would ask for them.
fn full_sync_ms(rt: &Runtime, s: &Store) -> f64 {
    let t = Instant::now();
    let mut vv = VersionVector::new();
    loop {
        let page = rt.block_on(s.changes_since(&vv, 1 << 20)).unwrap();
        if page.is_empty() {
            break;
        }
        for c in &page {
            vv.set(c.actor, c.seq);
        }
    }
    t.elapsed().as_secs_f64() * 1e3
}

fn verify_ms(rt: &Runtime, path: &std::path::Path) -> f64 {
    let t = Instant::now();
    let r = rt.block_on(Store::verify_file(path)).unwrap();
    assert!(r.ok(), "{:?}", r.failures);
    t.elapsed().as_secs_f64() * 1e3
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists benches; nothing to list here
    }
    let rt = Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("twin.db");
    let s = rt.block_on(async {
        let s = Store::open(&path, StoreConfig::default()).await.unwrap();
        s.twin_create(KEY, Some(json!({"desired": {}, "reported": {}})))
            .await
            .unwrap();
        patch_concurrently(&s, CHANGES - 1, 0).await;
        s
    });
    let before = twin_bytes(&path);
    let (raw_page_ms, raw_page_len) = page_ms(&rt, &s, 9);
    let raw_sync_ms = full_sync_ms(&rt, &s);
    let raw_verify_ms = verify_ms(&rt, &path);

    let policy = RetentionPolicy {
        twins: TwinCompaction {
            after_ms: Some(0),
            keep_raw: 0,
        },
        ..RetentionPolicy::default()
    };
    let far = i64::MAX / 2;
    let t = Instant::now();
    let report = rt.block_on(s.prune(&policy, far, 5000)).unwrap();
    let pass_s = t.elapsed().as_secs_f64();
    let after = twin_bytes(&path);
    let (warm_page_ms, warm_page_len) = page_ms(&rt, &s, 9);
    let compacted_sync_ms = full_sync_ms(&rt, &s);
    let compacted_verify_ms = verify_ms(&rt, &path);
    let storage = rt.block_on(s.twin_storage(KEY)).unwrap();
    // A new snapshot (256 more changes): the next read misses the cache and loads it.
    rt.block_on(patch_concurrently(&s, 256, CHANGES));
    let t = Instant::now();
    let cold_len = rt
        .block_on(s.changes_since(&VersionVector::new(), PAGE))
        .unwrap()
        .len();
    let cold_page_ms = t.elapsed().as_secs_f64() * 1e3;
    rt.block_on(s.close());

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!(
        "\n== twin compaction ({CHANGES} changes, load {}) ==",
        load.trim()
    );
    eprintln!(
        "before: raw chunks {} B + snapshot {} B = {} B of twin data; database {} B",
        before.0,
        before.1,
        before.0 + before.1,
        before.3
    );
    eprintln!(
        "after:  raw chunks {} B + snapshot {} B = {} B of twin data ({} changes compacted, {} replayed on load); database {} B",
        after.0,
        after.1,
        after.0 + after.1,
        after.2,
        storage.replayed,
        after.3
    );
    eprintln!(
        "compaction: {} changes, {} B of chunks in {:.0} ms: {:.0} changes/s, {} steps, {:.2} ms per step",
        report.twin_changes_compacted,
        report.twin_bytes_compacted,
        pass_s * 1e3,
        report.twin_changes_compacted as f64 / pass_s,
        report.steps,
        pass_s * 1e3 / report.steps.max(1) as f64
    );
    eprintln!(
        "sync page of {PAGE} B: raw {raw_page_len} changes {raw_page_ms:.2} ms; compacted, snapshot cached: {warm_page_len} changes {warm_page_ms:.2} ms; right after a new snapshot: {cold_len} changes {cold_page_ms:.2} ms"
    );
    eprintln!(
        "all {CHANGES} changes in 1 MiB pages: raw {raw_sync_ms:.0} ms, compacted {compacted_sync_ms:.0} ms"
    );
    eprintln!("verify_file: raw {raw_verify_ms:.0} ms, compacted {compacted_verify_ms:.0} ms");
}
