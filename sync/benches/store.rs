//! Store benchmarks against a raw-SQLite baseline measured in the same run.
//!
//! Run with `cargo bench -p kdelta-sync --bench store`: about 3 minutes on a busy 2-core VM,
//! plus about 3 more the first time, to build the 10,000 keys × 100 versions document dataset
//! (cached afterwards under `<target>/release/kdelta-bench-cache`, keyed by the code that
//! writes it). Criterion prints its own estimates; at the end the bench prints (stderr) a
//! summary: medians of its samples, store/baseline ratios, per-operation latency percentiles,
//! bytes per reading on disk and the verdict on each target.
//!
//! Every ingest figure is durable: the store commits with `synchronous=FULL` in WAL mode, and
//! so does the baseline, which inserts the same rows into a `WITHOUT ROWID` table keyed
//! `(series_id, ts, change_id)` with one multi-row `INSERT` per 1,000 rows and one transaction
//! per batch.
//!
//! `KDELTA_BENCH_QUICK=1` shrinks the datasets (smoke test; figures are then not comparable
//! with the targets).

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group};
use futures::StreamExt;
use kdelta_sync::{
    ActorId, AggregateQuery, AsOf, BatchEntry, Change, ChangeBody, DocWrite, Dot, Hlc,
    ReadingBatch, Store, StoreConfig, supported_schema_version,
};
use rand::Rng;
use rusqlite::{Connection, OpenFlags, params};
use tokio::runtime::Runtime;

/// Criterion samples per benchmark.
const SAMPLES: usize = 10;
/// 2025-11-24T00:00:00Z: the day of the aggregate dataset (readings need not be near now).
const DAY0: i64 = 1_763_942_400_000;
const DAY_MS: i64 = 86_400_000;
/// Start of the timestamps used by the ingest benchmarks (one reading per second per series).
const T0: i64 = 1_700_000_000_000;
/// Rows per multi-row INSERT in the baseline (as in the store).
const INSERT_CHUNK: usize = 1000;
const WRITERS: usize = 8;
/// Batches each writer appends per iteration of the concurrent-ingest benchmark.
const BATCHES_PER_WRITER: usize = 4;
/// Puts each writer makes per iteration of the concurrent-put benchmark.
const PUTS_PER_WRITER: usize = 25;
/// Puts each writer keeps in flight in the pipelined variant.
const IN_FLIGHT: usize = 32;
/// Puts each writer makes per iteration of the pipelined variant.
const PIPELINED_PUTS_PER_WRITER: usize = 64;

fn quick() -> bool {
    std::env::var_os("KDELTA_BENCH_QUICK").is_some_and(|v| v != "0")
}

// ---------------------------------------------------------------------------------------------
// Own record of the samples, for the derived figures printed at the end.

/// Benchmark id → nanoseconds per iteration of each `iter_custom` call. Criterion calls the
/// routine during warm-up too; the last `SAMPLES` calls are the measurement.
static TIMES: Mutex<BTreeMap<String, Vec<f64>>> = Mutex::new(BTreeMap::new());
/// Benchmark id → per-operation latencies (ns), one vector per `iter_custom` call.
static LATENCIES: Mutex<BTreeMap<String, Vec<Vec<f64>>>> = Mutex::new(BTreeMap::new());
/// Figures computed outside criterion (bytes per reading, dataset build rates).
static FIGURES: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

fn record(id: &str, iters: u64, elapsed: Duration) -> Duration {
    let ns = elapsed.as_nanos() as f64 / iters.max(1) as f64;
    TIMES
        .lock()
        .unwrap()
        .entry(id.to_owned())
        .or_default()
        .push(ns);
    elapsed
}

/// Median of `v` (sorted in place); `None` when empty.
fn median(v: &mut [f64]) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// Median time per iteration (ns) over the measurement samples of `id`.
fn median_ns(id: &str) -> Option<f64> {
    let times = TIMES.lock().unwrap();
    let all = times.get(id)?;
    median(&mut all[all.len().saturating_sub(SAMPLES)..].to_vec())
}

/// Store/baseline throughput ratio of each measurement sample (the two were timed in the
/// same seconds): median, min and max. `store` and `base` are (id, elements per iteration).
fn paired_ratio(store: (&str, f64), base: (&str, f64)) -> Option<(f64, f64, f64)> {
    let times = TIMES.lock().unwrap();
    let (s, b) = (times.get(store.0)?, times.get(base.0)?);
    let n = s.len().min(b.len()).min(SAMPLES);
    let mut r: Vec<f64> = (1..=n)
        .map(|i| (store.1 / s[s.len() - i]) / (base.1 / b[b.len() - i]))
        .collect();
    let med = median(&mut r)?;
    Some((med, r[0], r[n - 1]))
}

fn record_latencies(id: &str, ops: Vec<f64>) {
    LATENCIES
        .lock()
        .unwrap()
        .entry(id.to_owned())
        .or_default()
        .push(ops);
}

/// Percentile `p` (0–100) of the per-operation latencies (ns) of the measurement samples.
fn percentile_ns(id: &str, p: f64) -> Option<f64> {
    let lat = LATENCIES.lock().unwrap();
    let calls = lat.get(id)?;
    let mut ops: Vec<f64> = calls[calls.len().saturating_sub(SAMPLES)..]
        .iter()
        .flatten()
        .copied()
        .collect();
    ops.sort_by(f64::total_cmp);
    let i = ((ops.len() as f64 - 1.0) * p / 100.0).round() as usize;
    ops.get(i).copied()
}

fn figure(name: &str, value: String) {
    eprintln!("[kdelta bench] {name}: {value}");
    FIGURES.lock().unwrap().push((name.to_owned(), value));
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn open_store(path: &Path) -> Store {
    Store::open(path, StoreConfig::default())
        .await
        .expect("opening the store")
}

/// A batch of `n` readings of one series, one per second from `*next_ts` (advanced).
fn batch(series: &str, next_ts: &AtomicI64, n: usize) -> ReadingBatch {
    let start = next_ts.fetch_add(n as i64 * 1000, Ordering::Relaxed);
    let mut b = ReadingBatch::new();
    for i in 0..n as i64 {
        b.push(
            series,
            start + i * 1000,
            20.0 + (i % 17) as f64 * 0.1,
            Some("°C"),
        );
    }
    b
}

/// Bytes of the database file plus its WAL on disk.
fn file_bytes(path: &Path) -> u64 {
    let size = |p: String| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let p = path.display().to_string();
    size(p.clone()) + size(format!("{p}-wal"))
}

/// Page figures of a closed database: `page_count * page_size`, the bytes in use (without the
/// freelist) and the bytes of each table and index (from the `dbstat` virtual table).
struct Pages {
    total: u64,
    used: u64,
    by_table: Vec<(String, i64)>,
}

fn pages(path: &Path) -> Pages {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("opening for page counts");
    let (total, used): (i64, i64) = conn
        .query_row(
            "SELECT page_count * page_size, (page_count - freelist_count) * page_size \
             FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("page counts");
    let by_table: Vec<(String, i64)> = conn
        .prepare(
            "SELECT name, SUM(pgsize) AS bytes FROM dbstat GROUP BY name HAVING bytes > 8192 ORDER BY bytes DESC",
        )
        .and_then(|mut st| {
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
        .unwrap_or_default();
    Pages {
        total: total as u64,
        used: used as u64,
        by_table,
    }
}

/// Raw SQLite through rusqlite: the same rows as the store's readings table, same durability
/// (WAL, `synchronous=FULL`), prepared multi-row INSERTs, nothing else.
struct Baseline {
    conn: Connection,
    next_change: i64,
}

/// `INSERT INTO readings … VALUES (?,?,?,?) × n`.
fn baseline_insert_sql(n: usize) -> String {
    let mut sql = String::from("INSERT INTO readings (series_id, ts, change_id, value) VALUES ");
    for i in 0..n {
        sql.push_str(if i == 0 { "(?,?,?,?)" } else { ",(?,?,?,?)" });
    }
    sql
}

impl Baseline {
    fn open(path: &Path) -> Baseline {
        let conn = Connection::open(path).expect("opening the baseline");
        conn.set_prepared_statement_cache_capacity(16);
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA temp_store = MEMORY; \
             PRAGMA cache_size = -8000; \
             CREATE TABLE IF NOT EXISTS readings (series_id INTEGER NOT NULL, ts INTEGER NOT NULL, \
             change_id INTEGER NOT NULL, value REAL NOT NULL, PRIMARY KEY (series_id, ts, change_id)) WITHOUT ROWID; \
             CREATE TABLE IF NOT EXISTS docs (id INTEGER PRIMARY KEY, key TEXT NOT NULL, value BLOB NOT NULL)",
        )
        .expect("creating the baseline tables");
        Baseline {
            conn,
            next_change: 1,
        }
    }

    /// Inserts one batch in one transaction (multi-row INSERTs of 1,000 rows), durable.
    fn insert(&mut self, series_id: i64, b: &ReadingBatch) {
        let change = self.next_change;
        self.next_change += 1;
        let s = &b.series[0];
        let rows: Vec<(i64, f64)> = s.ts.iter().copied().zip(s.values.iter().copied()).collect();
        let tx = self.conn.transaction().expect("begin");
        for chunk in rows.chunks(INSERT_CHUNK) {
            let mut st = tx
                .prepare_cached(&baseline_insert_sql(chunk.len()))
                .expect("prepare");
            let mut i = 0;
            for &(t, v) in chunk {
                st.raw_bind_parameter(i + 1, series_id).expect("bind");
                st.raw_bind_parameter(i + 2, t).expect("bind");
                st.raw_bind_parameter(i + 3, change).expect("bind");
                st.raw_bind_parameter(i + 4, v).expect("bind");
                i += 4;
            }
            st.raw_execute().expect("insert");
        }
        tx.commit().expect("commit");
    }

    /// One row in one durable transaction: the baseline of a single document put.
    fn put_one(&mut self, key: &str, value: &[u8]) {
        let tx = self.conn.transaction().expect("begin");
        tx.prepare_cached("INSERT INTO docs (key, value) VALUES (?1, ?2)")
            .and_then(|mut st| st.execute(params![key, value]))
            .expect("insert");
        tx.commit().expect("commit");
    }
}

// ---------------------------------------------------------------------------------------------
// Floors of this machine, for reading the other figures: the latency of one durable commit
// (one fsync of the WAL), one raw prepared statement, one store read round trip.

fn floor(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("floor.db");
    let baseline = Mutex::new(Baseline::open(&path));
    let store = rt.block_on(open_store(&dir.path().join("store.db")));
    let next_ts = AtomicI64::new(T0);

    let mut g = c.benchmark_group("floor");
    g.sample_size(SAMPLES)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    g.bench_function("durable_commit_1_row", |b| {
        b.iter_custom(|iters| {
            let batches: Vec<_> = (0..iters).map(|_| batch("f", &next_ts, 1)).collect();
            let mut base = baseline.lock().unwrap();
            let start = Instant::now();
            for bt in &batches {
                base.insert(1, bt);
            }
            record("floor/durable_commit_1_row", iters, start.elapsed())
        })
    });
    g.bench_function("rusqlite_select_1", |b| {
        let base = baseline.lock().unwrap();
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let one: i64 = base
                    .conn
                    .prepare_cached("SELECT 1")
                    .and_then(|mut st| st.query_row([], |r| r.get(0)))
                    .expect("select 1");
                std::hint::black_box(one);
            }
            record("floor/rusqlite_select_1", iters, start.elapsed())
        })
    });
    // One store read of a missing key: the read pool's hand-over to a blocking thread and
    // back, plus one indexed lookup.
    g.bench_function("store_read_round_trip", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let got = store.get("missing").await.expect("get");
                    std::hint::black_box(got);
                }
                record("floor/store_read_round_trip", iters, start.elapsed())
            })
        })
    });
    g.finish();
    rt.block_on(store.close());
}

// ---------------------------------------------------------------------------------------------
// Ingest: append at 100 / 1,000 / 10,000 readings per batch and 8 concurrent writers, each
// against the baseline.

fn ingest(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, baseline) = rt.block_on(async {
        (
            open_store(&dir.path().join("ingest.db")).await,
            Mutex::new(Baseline::open(&dir.path().join("baseline.db"))),
        )
    });

    let mut g = c.benchmark_group("ingest");
    g.sample_size(SAMPLES)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    // fsync latency on a shared VM swings by 10× within seconds, so the baseline is paired
    // with the store: every store append is preceded by a baseline insert of the same rows,
    // timed separately, and each sample's ratio compares the two over the same seconds.
    for (series_id, n) in [(1i64, 100usize), (2, 1000), (3, 10_000)] {
        g.throughput(Throughput::Elements(n as u64));
        let series = format!("ingest.b{n}");
        let next_ts = AtomicI64::new(T0);
        g.bench_function(BenchmarkId::new("store", n), |b| {
            b.iter_custom(|iters| {
                let batches: Vec<_> = (0..iters).map(|_| batch(&series, &next_ts, n)).collect();
                let mut base = baseline.lock().unwrap();
                rt.block_on(async {
                    let (mut t_store, mut t_base) = (Duration::ZERO, Duration::ZERO);
                    for bt in batches {
                        let start = Instant::now();
                        base.insert(series_id, &bt);
                        t_base += start.elapsed();
                        let start = Instant::now();
                        store.append(bt).await.expect("append");
                        t_store += start.elapsed();
                    }
                    record(&format!("ingest/baseline/{n}"), iters, t_base);
                    record(&format!("ingest/store/{n}"), iters, t_store)
                })
            })
        });
    }

    // 8 writers, each appending batches of 1,000 through its own clone of one store; paired
    // with 4 baseline inserts of 1,000 rows before each iteration.
    g.throughput(Throughput::Elements(
        (WRITERS * BATCHES_PER_WRITER * 1000) as u64,
    ));
    let clocks: Vec<AtomicI64> = (0..WRITERS).map(|_| AtomicI64::new(T0)).collect();
    let base_ts = AtomicI64::new(T0);
    g.bench_function(BenchmarkId::new("store_8_writers", 1000), |b| {
        b.iter_custom(|iters| {
            let work: Vec<Vec<ReadingBatch>> = (0..WRITERS)
                .map(|w| {
                    (0..iters as usize * BATCHES_PER_WRITER)
                        .map(|_| batch(&format!("ingest.w{w}"), &clocks[w], 1000))
                        .collect()
                })
                .collect();
            let paired: Vec<_> = (0..iters * 4).map(|_| batch("b", &base_ts, 1000)).collect();
            let mut base = baseline.lock().unwrap();
            rt.block_on(async {
                let mut t_store = Duration::ZERO;
                let mut t_base = Duration::ZERO;
                let mut work: Vec<std::vec::IntoIter<ReadingBatch>> =
                    work.into_iter().map(Vec::into_iter).collect();
                for round in paired.chunks(4) {
                    let start = Instant::now();
                    for bt in round {
                        base.insert(4, bt);
                    }
                    t_base += start.elapsed();
                    let start = Instant::now();
                    let tasks: Vec<_> = work
                        .iter_mut()
                        .map(|batches| {
                            let store = store.clone();
                            let mine: Vec<ReadingBatch> =
                                batches.take(BATCHES_PER_WRITER).collect();
                            tokio::spawn(async move {
                                for bt in mine {
                                    store.append(bt).await.expect("append");
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.expect("writer task");
                    }
                    t_store += start.elapsed();
                }
                record("ingest/baseline_paired_8w/1000", iters * 4, t_base);
                record("ingest/store_8_writers/1000", iters, t_store)
            })
        })
    });
    g.finish();
    rt.block_on(store.close());
}

// ---------------------------------------------------------------------------------------------
// Document puts: 8 concurrent writers (and one, for the latency of a single durable put).

fn doc_puts(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = rt.block_on(open_store(&dir.path().join("docs.db")));
    let counter = AtomicU64::new(0);

    let mut g = c.benchmark_group("docs");
    g.sample_size(SAMPLES)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(1));
    // The baseline of a single durable put: one row per transaction in raw rusqlite (WAL,
    // synchronous=FULL), the same CBOR-sized value.
    let baseline = Mutex::new(Baseline::open(&dir.path().join("docs-baseline.db")));
    g.bench_function("baseline_1_row_per_tx", |b| {
        let mut base = baseline.lock().unwrap();
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let mut value = Vec::new();
                ciborium::into_writer(
                    &serde_json::json!({"setpoint": n % 40, "mode": "auto"}),
                    &mut value,
                )
                .expect("cbor");
                base.put_one(&format!("solo/k{}", n % 1000), &value);
            }
            record("docs/baseline_1_row_per_tx", iters, start.elapsed())
        })
    });
    g.bench_function("put_1_writer", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let v = serde_json::json!({"setpoint": n % 40, "mode": "auto"});
                    store
                        .put(&format!("solo/k{}", n % 1000), &v)
                        .await
                        .expect("put");
                }
                record("docs/put_1_writer", iters, start.elapsed())
            })
        })
    });
    g.throughput(Throughput::Elements((WRITERS * PUTS_PER_WRITER) as u64));
    g.bench_function("put_8_writers", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                let tasks: Vec<_> = (0..WRITERS)
                    .map(|w| {
                        let store = store.clone();
                        let first =
                            counter.fetch_add(iters * PUTS_PER_WRITER as u64, Ordering::Relaxed);
                        tokio::spawn(async move {
                            for n in first..first + iters * PUTS_PER_WRITER as u64 {
                                let v = serde_json::json!({"setpoint": n % 40, "mode": "auto"});
                                store
                                    .put(&format!("w{w}/k{}", n % 1000), &v)
                                    .await
                                    .expect("put");
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.expect("writer task");
                }
                record("docs/put_8_writers", iters, start.elapsed())
            })
        })
    });
    // Not a target: each writer keeps 32 puts in flight, so groups are large and the figure
    // shows the writer's CPU cost per put rather than the commit latency.
    g.throughput(Throughput::Elements(
        (WRITERS * PIPELINED_PUTS_PER_WRITER) as u64,
    ));
    g.bench_function("put_8_writers_32_in_flight", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                let per_writer = iters * PIPELINED_PUTS_PER_WRITER as u64;
                let tasks: Vec<_> = (0..WRITERS)
                    .map(|w| {
                        let store = store.clone();
                        let first = counter.fetch_add(per_writer, Ordering::Relaxed);
                        tokio::spawn(async move {
                            futures::stream::iter(first..first + per_writer)
                                .map(|n| {
                                    let store = store.clone();
                                    async move {
                                        let v =
                                            serde_json::json!({"setpoint": n % 40, "mode": "auto"});
                                        store
                                            .put(&format!("p{w}/k{}", n % 1000), &v)
                                            .await
                                            .expect("put")
                                    }
                                })
                                .buffer_unordered(IN_FLIGHT)
                                .for_each(|_| async {})
                                .await
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.expect("writer task");
                }
                record("docs/put_8_writers_32_in_flight", iters, start.elapsed())
            })
        })
    });
    g.finish();
    rt.block_on(store.close());
}

// ---------------------------------------------------------------------------------------------
// Document reads: 10,000 keys × 100 versions, applied as remote changes of one actor.

struct DocData {
    store: Store,
    keys: usize,
    mid: Hlc,
    _dir: tempfile::TempDir,
}

fn doc_key(k: usize) -> String {
    format!("site/device-{k:05}/config")
}

/// Where built document datasets are kept between runs: next to the bench binary's
/// directory (`<target>/release/kdelta-bench-cache`), so `cargo clean` removes them.
fn cache_dir() -> Option<PathBuf> {
    if std::env::var_os("KDELTA_BENCH_NO_CACHE").is_some_and(|v| v != "0") {
        return None;
    }
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.join("kdelta-bench-cache"))
}

/// Name of a cached dataset: its shape plus a hash of the code that writes it (the document
/// write path, the writer, the change types, the schema), so any change there rebuilds it.
fn docs_cache_name(keys: usize, versions: usize) -> String {
    let mut h = blake3::Hasher::new();
    for src in [
        include_str!("../src/docwrite.rs"),
        include_str!("../src/writer.rs"),
        include_str!("../src/change.rs"),
        include_str!("../src/schema.rs"),
        include_str!("../migrations/0001_init.sql"),
    ] {
        h.update(src.as_bytes());
    }
    h.update(&supported_schema_version().to_le_bytes());
    format!("history-{keys}x{versions}-{}", &h.finalize().to_hex()[..16])
}

/// Checkpoints and truncates the WAL of a closed database, leaving one self-contained file.
fn checkpoint(path: &Path) {
    let conn = Connection::open(path).expect("opening for a checkpoint");
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
    conn.close().map_err(|(_, e)| e).expect("closing");
}

/// 10,000 keys × 100 versions, written by one synthetic actor and applied as remote changes.
/// The build takes minutes on a loaded 2-core VM (it is the store's apply rate for document
/// changes, printed as a figure), so the result is cached between runs, keyed by the code
/// that writes it; `KDELTA_BENCH_NO_CACHE=1` always rebuilds.
fn build_docs(rt: &Runtime) -> DocData {
    let (keys, versions) = if quick() { (1000, 20) } else { (10_000, 100) };
    let total = keys * versions;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("history.db");
    let name = docs_cache_name(keys, versions);
    let cached = cache_dir().map(|d| {
        (
            d.join(format!("{name}.db")),
            d.join(format!("{name}.base_ms")),
        )
    });

    let base_ms = match cached
        .as_ref()
        .filter(|(db, meta)| db.exists() && meta.exists())
    {
        Some((db, meta)) => {
            std::fs::copy(db, &path).expect("copying the cached dataset");
            figure(
                "docs dataset",
                format!(
                    "{total} versions of {keys} keys reused from {} (KDELTA_BENCH_NO_CACHE=1 rebuilds)",
                    db.display()
                ),
            );
            std::fs::read_to_string(meta)
                .expect("reading the cached dataset's base time")
                .trim()
                .parse()
                .expect("base time")
        }
        None => {
            let base_ms = write_docs(&path, keys, versions);
            if let Some((db, meta)) = &cached {
                let dir = db.parent().expect("cache dir");
                std::fs::create_dir_all(dir).expect("creating the cache dir");
                // Drop datasets built by older code.
                for e in std::fs::read_dir(dir).expect("cache dir").flatten() {
                    if e.file_name().to_string_lossy().starts_with("history-") {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
                let tmp = db.with_extension("tmp");
                std::fs::copy(&path, &tmp).expect("caching the dataset");
                std::fs::rename(&tmp, db).expect("caching the dataset");
                std::fs::write(meta, base_ms.to_string()).expect("caching the dataset");
            }
            base_ms
        }
    };
    DocData {
        store: rt.block_on(open_store(&path)),
        keys,
        mid: Hlc::new(base_ms + total as u64 / 2, 0),
        _dir: dir,
    }
}

/// Writes the document dataset into a fresh store at `path` through `apply_remote`; returns
/// the wall time (ms) of the first change: change `i` is stamped `Hlc::new(base + i, 0)`.
fn write_docs(path: &Path, keys: usize, versions: usize) -> u64 {
    // Built on a current-thread runtime (fewer cross-thread wake-ups per statement: about a
    // third faster here); the reads run on a multi-threaded runtime.
    let build_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let total = keys * versions;
    let actor = ActorId::random();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64;
    // One ms per change, ending a minute ago: increasing, and never in the future.
    let base_ms = now_ms - total as u64 - 60_000;
    let started = Instant::now();
    build_rt.block_on(async {
        // The synthetic actor's changes are unsigned (signing them would time Ed25519, not
        // the reads this dataset is for), so this store accepts them.
        let config = StoreConfig {
            require_signatures: false,
            ..StoreConfig::default()
        };
        let store = Store::open(path, config).await.expect("opening the store");
        let mut chunk = Vec::with_capacity(2000);
        // Change i is version i / keys of key i % keys: all keys advance together in time.
        for i in 0..total {
            let (k, v) = (i % keys, i / keys);
            let value = serde_json::json!({"setpoint": 18.0 + (v % 8) as f64 * 0.5, "mode": "auto", "rev": v});
            let mut bytes = Vec::new();
            ciborium::into_writer(&value, &mut bytes).expect("cbor");
            let context = if v == 0 {
                Vec::new()
            } else {
                vec![Dot {
                    actor,
                    seq: (i - keys + 1) as u64,
                }]
            };
            chunk.push(Change {
                actor,
                seq: i as u64 + 1,
                hlc: Hlc::new(base_ms + i as u64, 0),
                body: ChangeBody::Doc(DocWrite {
                    key: doc_key(k),
                    value: Some(bytes),
                    context,
                    pruned: false,
                }),
                seal: None,
                pruned_rollups: Vec::new(),
            });
            if chunk.len() == 2000 || i + 1 == total {
                let out = store
                    .apply_remote(std::mem::take(&mut chunk))
                    .await
                    .expect("apply_remote");
                assert_eq!(out.skipped, 0);
            }
        }
        store.close().await;
        checkpoint(path);
    });
    let secs = started.elapsed().as_secs_f64();
    figure(
        "docs dataset build (apply_remote of doc changes, chunks of 2000, current-thread runtime)",
        format!(
            "{total} versions of {keys} keys in {secs:.1} s = {:.0} changes/s",
            total as f64 / secs
        ),
    );
    base_ms
}

fn doc_reads(c: &mut Criterion) {
    let rt = runtime();

    let data: OnceCell<DocData> = OnceCell::new();

    let mut g = c.benchmark_group("docs");
    g.sample_size(SAMPLES)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("get", |b| {
        let d = data.get_or_init(|| build_docs(&rt));
        b.iter_custom(|iters| {
            let mut rng = rand::rng();
            let keys: Vec<String> = (0..iters)
                .map(|_| doc_key(rng.random_range(0..d.keys)))
                .collect();
            rt.block_on(async {
                let mut ops = Vec::with_capacity(keys.len());
                let start = Instant::now();
                for k in &keys {
                    let t = Instant::now();
                    let s = d.store.get(k).await.expect("get").expect("present");
                    ops.push(t.elapsed().as_nanos() as f64);
                    std::hint::black_box(s);
                }
                let elapsed = start.elapsed();
                record_latencies("docs/get", ops);
                record("docs/get", iters, elapsed)
            })
        })
    });
    g.bench_function("get_as_of", |b| {
        let d = data.get_or_init(|| build_docs(&rt));
        b.iter_custom(|iters| {
            let mut rng = rand::rng();
            let keys: Vec<String> = (0..iters)
                .map(|_| doc_key(rng.random_range(0..d.keys)))
                .collect();
            rt.block_on(async {
                let mut ops = Vec::with_capacity(keys.len());
                let start = Instant::now();
                for k in &keys {
                    let t = Instant::now();
                    let s = d
                        .store
                        .get_as_of(k, AsOf::Hlc(d.mid))
                        .await
                        .expect("get_as_of")
                        .expect("present");
                    ops.push(t.elapsed().as_nanos() as f64);
                    std::hint::black_box(s);
                }
                let elapsed = start.elapsed();
                record_latencies("docs/get_as_of", ops);
                record("docs/get_as_of", iters, elapsed)
            })
        })
    });
    g.bench_function("history_100", |b| {
        let d = data.get_or_init(|| build_docs(&rt));
        b.iter_custom(|iters| {
            let mut rng = rand::rng();
            let keys: Vec<String> = (0..iters)
                .map(|_| doc_key(rng.random_range(0..d.keys)))
                .collect();
            rt.block_on(async {
                let mut ops = Vec::with_capacity(keys.len());
                let start = Instant::now();
                for k in &keys {
                    let t = Instant::now();
                    let h = d.store.history(k, 100, None).await.expect("history");
                    ops.push(t.elapsed().as_nanos() as f64);
                    assert!(!h.is_empty());
                    std::hint::black_box(h);
                }
                let elapsed = start.elapsed();
                record_latencies("docs/history_100", ops);
                record("docs/history_100", iters, elapsed)
            })
        })
    });
    g.finish();
    if let Some(d) = data.get() {
        rt.block_on(d.store.close());
    }
}

// ---------------------------------------------------------------------------------------------
// One day of 1,000,000 readings of one series: ingest (sustained), bytes per reading, and the
// per-minute average over the day, each against the baseline.

struct DayData {
    store: Store,
    baseline: Baseline,
    _dir: tempfile::TempDir,
}

fn build_day(rt: &Runtime) -> DayData {
    let total: usize = if quick() { 100_000 } else { 1_000_000 };
    let dir = tempfile::tempdir().expect("tempdir");
    let store_path = dir.path().join("day.db");
    let base_path = dir.path().join("day-baseline.db");
    let batches: Vec<ReadingBatch> = (0..total / 1000)
        .map(|j| {
            let mut b = ReadingBatch::new();
            for i in j * 1000..(j + 1) * 1000 {
                let v = 20.0 + ((i as f64) / 5000.0).sin() * 3.0;
                // 86.4 ms apart: the whole day, 1,440 minutes.
                let ts = DAY0 + i as i64 * DAY_MS / total as i64;
                b.push("greenhouse.temp", ts, v, Some("°C"));
            }
            b
        })
        .collect();
    rt.block_on(async {
        let store = open_store(&store_path).await;
        let mut base = Baseline::open(&base_path);
        // Interleaved batch by batch, so both see the same disk weather.
        let (mut t_store, mut t_base) = (Duration::ZERO, Duration::ZERO);
        for b in &batches {
            let start = Instant::now();
            base.insert(1, b);
            t_base += start.elapsed();
            let start = Instant::now();
            store.append(b.clone()).await.expect("append");
            t_store += start.elapsed();
        }
        store.close().await;
        base.conn
            .close()
            .map_err(|(_, e)| e)
            .expect("closing the baseline");
        let (store_secs, base_secs) = (t_store.as_secs_f64(), t_base.as_secs_f64());
        let (store_rate, base_rate) = (total as f64 / store_secs, total as f64 / base_secs);
        figure(
            "sustained ingest of 1 day (batches of 1000, fresh db)",
            format!(
                "store {store_rate:.0} readings/s, baseline {base_rate:.0} readings/s, ratio {:.2}",
                store_rate / base_rate
            ),
        );
        let wal =
            |p: &Path| std::fs::metadata(format!("{}-wal", p.display())).map_or(0, |m| m.len());
        figure(
            "files after close",
            format!(
                "store db {} B + wal {} B, baseline db {} B + wal {} B",
                file_bytes(&store_path) - wal(&store_path),
                wal(&store_path),
                file_bytes(&base_path) - wal(&base_path),
                wal(&base_path)
            ),
        );
        let (s_file, b_file) = (file_bytes(&store_path), file_bytes(&base_path));
        let (sp, bp) = (pages(&store_path), pages(&base_path));
        let per = |b: u64| b as f64 / total as f64;
        figure(
            "on-disk bytes per reading after close (db + wal files)",
            format!(
                "store {:.1} B, baseline {:.1} B, ratio {:.2} — target ≤ 40 B: {}",
                per(s_file),
                per(b_file),
                s_file as f64 / b_file as f64,
                if per(s_file) <= 40.0 {
                    "met"
                } else {
                    "NOT met"
                }
            ),
        );
        figure(
            "bytes per reading from pages (page_count * page_size; without freelist)",
            format!(
                "store {:.1} B ({:.1} B), baseline {:.1} B ({:.1} B)",
                per(sp.total),
                per(sp.used),
                per(bp.total),
                per(bp.used)
            ),
        );
        figure(
            "store bytes per reading by table/index (dbstat)",
            sp.by_table
                .iter()
                .map(|(n, b)| format!("{n} {:.2}", *b as f64 / total as f64))
                .collect::<Vec<_>>()
                .join(", "),
        );
        DayData {
            store: open_store(&store_path).await,
            baseline: Baseline::open(&base_path),
            _dir: dir,
        }
    })
}

fn aggregate(c: &mut Criterion) {
    let rt = runtime();
    let data: OnceCell<Mutex<DayData>> = OnceCell::new();
    let q = AggregateQuery {
        series: "greenhouse.temp".into(),
        from: DAY0,
        to: DAY0 + DAY_MS,
        bucket_ms: 60_000,
    };

    let mut g = c.benchmark_group("aggregate");
    g.sample_size(SAMPLES)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("store_avg_per_minute_1day", |b| {
        let d = data
            .get_or_init(|| Mutex::new(build_day(&rt)))
            .lock()
            .unwrap();
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let buckets = d.store.aggregate(&q).await.expect("aggregate");
                    assert_eq!(buckets.len(), 1440);
                    std::hint::black_box(buckets);
                }
                record("aggregate/store", iters, start.elapsed())
            })
        })
    });
    g.bench_function("baseline_group_by_minute_1day", |b| {
        let d = data.get_or_init(|| Mutex::new(build_day(&rt))).lock().unwrap();
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let rows: Vec<(i64, f64)> = d
                    .baseline
                    .conn
                    .prepare_cached(
                        "SELECT ts / 60000, AVG(value) FROM readings WHERE series_id = ?1 AND ts >= ?2 AND ts < ?3 GROUP BY ts / 60000",
                    )
                    .and_then(|mut st| {
                        st.query_map(params![1i64, DAY0, DAY0 + DAY_MS], |r| {
                            Ok((r.get(0)?, r.get(1)?))
                        })?
                        .collect()
                    })
                    .expect("baseline aggregate");
                assert_eq!(rows.len(), 1440);
                std::hint::black_box(rows);
            }
            record("aggregate/baseline", iters, start.elapsed())
        })
    });
    g.finish();
    if let Some(d) = data.get() {
        rt.block_on(d.lock().unwrap().store.close());
    }
}

// ---------------------------------------------------------------------------------------------
// Summary.

fn summary() {
    let rate = |id: &str, per_iter: f64| median_ns(id).map(|ns| per_iter * 1e9 / ns);
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let mut lines = Vec::new();
    if let Some(ns) = median_ns("batch/distinct_series_50000") {
        lines.push(format!(
            "batch of 50,000 readings of distinct series, push + normalize: {:.1} ms — well under 1 s: {}",
            ns / 1e6,
            verdict(ns < 1e9)
        ));
    }
    if let (Some(put), Some(base)) = (
        median_ns("docs/put_1_writer"),
        median_ns("docs/baseline_1_row_per_tx"),
    ) {
        lines.push(format!(
            "sequential durable puts {:.0}/s vs raw one-row transactions {:.0}/s: {:.2}× — target ≥ 0.8×: {}",
            1e9 / put,
            1e9 / base,
            base / put,
            verdict(base / put >= 0.8)
        ));
    }
    if let Some(ns) = median_ns("floor/durable_commit_1_row") {
        lines.push(format!(
            "floor: one durable commit (raw SQLite, 1 row) {:.2} ms",
            ns / 1e6
        ));
    }
    if let (Some(mt), Some(ct)) = (
        median_ns("floor/rusqlite_select_1"),
        median_ns("floor/store_read_round_trip"),
    ) {
        lines.push(format!(
            "floor: one prepared `SELECT 1` in raw rusqlite {:.1} µs; one store read round trip (missing key) {:.1} µs",
            mt / 1e3,
            ct / 1e3
        ));
    }
    for n in [100usize, 1000, 10_000] {
        let (store_id, base_id) = (format!("ingest/store/{n}"), format!("ingest/baseline/{n}"));
        if let (Some(s), Some(b), Some((r, lo, hi))) = (
            rate(&store_id, n as f64),
            rate(&base_id, n as f64),
            paired_ratio((&store_id, n as f64), (&base_id, n as f64)),
        ) {
            let target = if n == 1000 {
                format!(
                    " — target ≥ 500000/s and ≥ 0.5× baseline: {} / {}",
                    verdict(s >= 500_000.0),
                    verdict(r >= 0.5)
                )
            } else {
                String::new()
            };
            lines.push(format!(
                "append batches of {n:>6}: store {s:>8.0} readings/s, baseline {b:>8.0} readings/s, paired ratio {r:.2} [{lo:.2}–{hi:.2}]{target}"
            ));
        }
    }
    let per_iter_8w = (WRITERS * BATCHES_PER_WRITER * 1000) as f64;
    if let (Some(s), Some(b), Some((r, lo, hi))) = (
        rate("ingest/store_8_writers/1000", per_iter_8w),
        rate("ingest/baseline_paired_8w/1000", 1000.0),
        paired_ratio(
            ("ingest/store_8_writers/1000", per_iter_8w),
            ("ingest/baseline_paired_8w/1000", 1000.0),
        ),
    ) {
        lines.push(format!(
            "append 8 writers × 1000: store {s:>8.0} readings/s, baseline (1 writer, 1000/txn) {b:>8.0} readings/s, paired ratio {r:.2} [{lo:.2}–{hi:.2}]"
        ));
    }
    if let Some(s) = rate("docs/put_1_writer", 1.0) {
        lines.push(format!("put, 1 writer: {s:.0} puts/s"));
    }
    if let Some(s) = rate("docs/put_8_writers", (WRITERS * PUTS_PER_WRITER) as f64) {
        let bound = median_ns("floor/durable_commit_1_row").map_or(String::new(), |ns| {
            format!(
                " (8 outstanding puts / one commit latency = {:.0}/s)",
                8.0 * 1e9 / ns
            )
        });
        lines.push(format!(
            "put, 8 writers: {s:.0} puts/s — target ≥ 50000/s: {}{bound}",
            verdict(s >= 50_000.0)
        ));
    }
    if let Some(s) = rate(
        "docs/put_8_writers_32_in_flight",
        (WRITERS * PIPELINED_PUTS_PER_WRITER) as f64,
    ) {
        lines.push(format!("put, 8 writers × 32 in flight: {s:.0} puts/s"));
    }
    for (id, target_us) in [
        ("docs/get", 20.0),
        ("docs/get_as_of", 50.0),
        ("docs/history_100", 300.0),
    ] {
        if let (Some(p50), Some(p99)) = (percentile_ns(id, 50.0), percentile_ns(id, 99.0)) {
            lines.push(format!(
                "{id}: p50 {:.1} µs, p99 {:.1} µs — target median ≤ {target_us} µs: {}",
                p50 / 1e3,
                p99 / 1e3,
                verdict(p50 / 1e3 <= target_us)
            ));
        }
    }
    if let (Some(s), Some(b)) = (
        median_ns("aggregate/store"),
        median_ns("aggregate/baseline"),
    ) {
        lines.push(format!(
            "aggregate avg/minute over 1 day of 1M readings: store {:.2} ms, baseline GROUP BY {:.2} ms, ratio {:.3} — target ≤ 20 ms: {}",
            s / 1e6,
            b / 1e6,
            s / b,
            verdict(s / 1e6 <= 20.0)
        ));
    }
    eprintln!("\n===== kdelta-sync bench summary (medians of the criterion samples) =====");
    for l in lines {
        eprintln!("{l}");
    }
    for (name, value) in FIGURES.lock().unwrap().iter() {
        eprintln!("{name}: {value}");
    }
}

// ---------------------------------------------------------------------------------------------
// Batch grouping: one HTTP-sized batch (50,000 readings) of distinct series, pushed row by
// row, merged and validated (`ReadingBatch::push` + `normalize`). Linear: well under a second.

fn batch_grouping(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch");
    g.sample_size(SAMPLES)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let names: Vec<String> = (0..50_000).map(|i| format!("sensor.{i}")).collect();
    g.bench_function("distinct_series_50000", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let mut batch = ReadingBatch::new();
                for (i, n) in names.iter().enumerate() {
                    batch.push(n, T0 + i as i64, i as f64, Some("°C"));
                }
                batch
                    .normalize(&kdelta_sync::Limits::default())
                    .expect("normalize");
                std::hint::black_box(batch);
            }
            record("batch/distinct_series_50000", iters, start.elapsed())
        })
    });
    g.finish();
}

/// `Store::write_batch`: 100 puts over distinct keys as one durable change, against 100
/// single durable puts in the `docs` group (per document: `docs/batch_100` ÷ 100).
fn doc_batches(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = rt.block_on(open_store(&dir.path().join("batches.db")));
    let counter = AtomicU64::new(0);
    let mut g = c.benchmark_group("docs");
    g.sample_size(SAMPLES)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(100));
    g.bench_function("batch_100", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let entries = (0..100)
                        .map(|k| {
                            BatchEntry::put(
                                format!("batch/k{k}"),
                                serde_json::json!({"setpoint": n % 40, "mode": "auto"}),
                            )
                        })
                        .collect();
                    store.write_batch(entries).await.expect("batch");
                }
                record("docs/batch_100", iters, start.elapsed())
            })
        })
    });
    g.finish();
    rt.block_on(store.close());
}

criterion_group!(
    benches,
    floor,
    batch_grouping,
    ingest,
    doc_puts,
    doc_batches,
    doc_reads,
    aggregate
);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
