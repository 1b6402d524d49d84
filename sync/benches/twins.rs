//! Twin (merge document) benchmarks: patch apply rate on one twin, load of a twin with
//! 10,000 changes, and memory per loaded twin.
//!
//! Run with `cargo bench -p kdelta-sync --bench twins`. Targets (issue #8): ≥ 5,000 patches/s
//! on one twin; load of a 10,000-change twin ≤ 50 ms; memory per loaded twin reported. At
//! the end the bench prints (stderr) a summary with the verdict on each target.
//!
//! - `patch/durable_x64`: 64 tasks patch one twin concurrently through the store; every
//!   patch is durable when answered (group commit: one fsync covers a group).
//! - `patch/sequential`: one patch at a time, each its own fsync'd commit.
//! - `patch/in_memory`: the automerge part alone (transaction + merged JSON), no SQLite.
//! - `load/store_10k`: `Store::twin_storage` — snapshot plus the changes after it, as the
//!   writer and the history reads load a twin.
//! - `load/replay_10k`: rebuilding the document from all 10,000 changes (no snapshot), for
//!   comparison.
//!
//! Memory is measured with a counting global allocator: live heap bytes held by one loaded
//! document.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use automerge::Automerge;
use criterion::{Criterion, Throughput, criterion_group};
use kdelta_sync::{ChangeBody, Store, StoreConfig, TwinPatch, VersionVector};
use serde_json::json;
use tokio::runtime::Runtime;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const KEY: &str = "device/bench";
const CHANGES: usize = 10_000;
const WRITERS: usize = 64;

/// A realistic device-twin edit: one reported field of a dozen, like a periodic report.
fn report(i: usize) -> TwinPatch {
    TwinPatch::Merge(
        json!({"reported": {format!("f{}", i % 12): {"value": i, "ok": !i.is_multiple_of(7)}}}),
    )
}

async fn fresh(dir: &tempfile::TempDir, name: &str) -> Store {
    let s = Store::open(dir.path().join(name), StoreConfig::default())
        .await
        .unwrap();
    s.twin_create(KEY, Some(json!({"desired": {}, "reported": {}})))
        .await
        .unwrap();
    s
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

struct Figures {
    durable_per_s: f64,
    sequential_per_s: f64,
    in_memory_per_s: f64,
    load_ms: f64,
    replay_ms: f64,
    snapshot_bytes: u64,
    replayed: u64,
    mem_loaded: isize,
    mem_replayed: isize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn benches(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("patch");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    let store = rt.block_on(fresh(&dir, "patch.db"));
    let mut n = 0usize;
    g.throughput(Throughput::Elements(WRITERS as u64 * 8));
    g.bench_function("durable_x64", |b| {
        b.to_async(&rt).iter(|| {
            n += WRITERS * 8;
            patch_concurrently(&store, WRITERS * 8, n)
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("sequential", |b| {
        b.to_async(&rt).iter(|| {
            n += 1;
            store.twin_patch(KEY, report(n))
        })
    });
    let mut doc = Automerge::new();
    let mut i = 0usize;
    g.bench_function("in_memory", |b| {
        b.iter(|| {
            i += 1;
            let v = json!({"reported": {format!("f{}", i % 12): {"value": i}}});
            doc.transact::<_, _, automerge::AutomergeError>(|tx| {
                use automerge::transaction::Transactable;
                let r = match automerge::ReadDoc::get(tx, automerge::ROOT, "reported")? {
                    Some((_, id)) => id,
                    None => tx.put_object(automerge::ROOT, "reported", automerge::ObjType::Map)?,
                };
                let f = tx.put_object(&r, format!("f{}", i % 12), automerge::ObjType::Map)?;
                tx.put(&f, "value", i as i64)?;
                Ok(())
            })
            .unwrap();
            std::hint::black_box(serde_json::to_vec(&v).unwrap());
        })
    });
    g.finish();
    rt.block_on(store.close());

    // Manual timings for the summary (criterion keeps its own).
    let (durable_per_s, sequential_per_s) = rt.block_on(async {
        let s = fresh(&dir, "rate.db").await;
        let t = Instant::now();
        patch_concurrently(&s, 5_120, 0).await;
        let durable = 5_120.0 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        for i in 0..200 {
            s.twin_patch(KEY, report(i)).await.unwrap();
        }
        let seq = 200.0 / t.elapsed().as_secs_f64();
        s.close().await;
        (durable, seq)
    });
    let in_memory_per_s = {
        let mut doc = Automerge::new();
        let t = Instant::now();
        for i in 0..20_000usize {
            doc.transact::<_, _, automerge::AutomergeError>(|tx| {
                use automerge::transaction::Transactable;
                tx.put(automerge::ROOT, format!("f{}", i % 12), i as i64)?;
                Ok(())
            })
            .unwrap();
        }
        20_000.0 / t.elapsed().as_secs_f64()
    };

    // A twin with 10,000 changes.
    let big = rt.block_on(async {
        let s = fresh(&dir, "big.db").await;
        patch_concurrently(&s, CHANGES - 1, 0).await;
        s
    });
    let info = rt.block_on(big.twin_storage(KEY)).unwrap();
    assert!(info.changes >= CHANGES as u64, "{info:?}");
    let changes: Vec<automerge::Change> = rt
        .block_on(big.changes_since(&VersionVector::new(), usize::MAX))
        .unwrap()
        .into_iter()
        .filter_map(|c| match c.body {
            ChangeBody::Twin(t) => automerge::Change::try_from(&t.change[..]).ok(),
            _ => None,
        })
        .collect();
    let mut g = c.benchmark_group("load");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("store_10k", |b| {
        b.to_async(&rt).iter(|| big.twin_storage(KEY))
    });
    g.bench_function("replay_10k", |b| {
        b.iter(|| {
            let mut d = Automerge::new();
            d.apply_changes(changes.clone()).unwrap();
            d
        })
    });
    g.finish();
    let load_ms = median(
        (0..15)
            .map(|_| {
                let t = Instant::now();
                rt.block_on(big.twin_storage(KEY)).unwrap();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    );
    let replay_ms = median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                let mut d = Automerge::new();
                d.apply_changes(changes.clone()).unwrap();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    );
    // Memory held by one loaded document: from the snapshot (as the store loads) and from
    // a full replay.
    let mut full = Automerge::new();
    let before = LIVE.load(Ordering::Relaxed);
    full.apply_changes(changes.clone()).unwrap();
    let mem_replayed = LIVE.load(Ordering::Relaxed) - before;
    let snapshot = full.save();
    let before = LIVE.load(Ordering::Relaxed);
    let loaded = Automerge::load(&snapshot).unwrap();
    let mem_loaded = LIVE.load(Ordering::Relaxed) - before;
    drop(loaded);
    drop(full);
    rt.block_on(big.close());

    let f = Figures {
        durable_per_s,
        sequential_per_s,
        in_memory_per_s,
        load_ms,
        replay_ms,
        snapshot_bytes: info.snapshot_bytes,
        replayed: info.replayed,
        mem_loaded,
        mem_replayed,
    };
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    eprintln!("\n== twins summary ==");
    eprintln!(
        "patch apply, durable, 64 concurrent writers: {:.0}/s (target ≥ 5,000/s: {})",
        f.durable_per_s,
        verdict(f.durable_per_s >= 5000.0)
    );
    eprintln!(
        "patch apply, durable, one at a time: {:.0}/s",
        f.sequential_per_s
    );
    eprintln!("patch apply, automerge alone: {:.0}/s", f.in_memory_per_s);
    eprintln!(
        "load of a twin with {} changes (snapshot {} bytes + {} replayed): {:.1} ms median (target ≤ 50 ms: {})",
        info.changes,
        f.snapshot_bytes,
        f.replayed,
        f.load_ms,
        verdict(f.load_ms <= 50.0)
    );
    eprintln!(
        "rebuild from all {} changes without a snapshot: {:.1} ms median",
        changes.len(),
        f.replay_ms
    );
    eprintln!(
        "memory per loaded twin: {} bytes loaded from the snapshot, {} bytes after a full replay",
        f.mem_loaded, f.mem_replayed
    );
}

criterion_group!(twins, benches);

fn main() {
    twins();
    Criterion::default().configure_from_args().final_summary();
}
