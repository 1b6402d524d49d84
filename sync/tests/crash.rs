//! Crash test: a child process appends batches and prints each acknowledged seq; it is killed
//! with SIGKILL at random moments, 20 times. After every kill the store reopens, every
//! acknowledged batch is present in full, and no batch is half present.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kdelta_sync::*;

const BATCH: i64 = 100;
const CHILD_ENV: &str = "KDELTA_CRASH_CHILD_DB";

/// The child: runs only when re-executed by the parent test with `CHILD_ENV` set.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let store = Store::open(&path, StoreConfig::default()).await.unwrap();
        let mut tasks = Vec::new();
        // Two concurrent writers so group commit is exercised too.
        for w in 0..2i64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let start = store.version_vector().get(&store.actor()) as i64;
                for i in 0.. {
                    let mut b = ReadingBatch::new();
                    let base = (start + i) * 1_000_000 + w * 100_000;
                    for j in 0..BATCH {
                        b.push(&format!("w{w}"), base + j, j as f64, None);
                    }
                    let meta = store.append(b).await.unwrap();
                    println!("ACK {} {}", w, base);
                    let _ = meta;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn acknowledged_batches_survive_sigkill() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let exe = std::env::current_exe().unwrap();
    let mut acked: Vec<(i64, i64)> = Vec::new();
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    for round in 0..20 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &db)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("ACK ") {
                    let mut it = rest.split(' ').map(|x| x.parse::<i64>().unwrap());
                    let _ = tx.send((it.next().unwrap(), it.next().unwrap()));
                }
            }
        });
        // Wait for the first acknowledgement (deadline), then kill at a random moment.
        let first = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("child acknowledged nothing");
        acked.push(first);
        let deadline = Instant::now() + Duration::from_millis(5 + seed % 150);
        while Instant::now() < deadline {
            if let Ok(a) = rx.recv_timeout(Duration::from_millis(1)) {
                acked.push(a);
            }
        }
        let killed = Command::new("kill")
            .args(["-9", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let _ = child.wait();
        reader.join().unwrap();
        acked.extend(rx.try_iter());

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = Store::open(&db, StoreConfig::default()).await.unwrap();
            for &(w, base) in &acked {
                let page = store
                    .range(&RangeQuery {
                        series: format!("w{w}"),
                        from: base,
                        to: base + BATCH,
                        limit: 1000,
                        cursor: None,
                    })
                    .await
                    .unwrap();
                assert_eq!(
                    page.readings.len() as i64,
                    BATCH,
                    "round {round}: acknowledged batch w{w}@{base} incomplete"
                );
            }
            // No half-present batch: every change in the log holds a whole batch, and the
            // rollups agree with the rows.
            let mut after = 0;
            let mut total = 0u64;
            loop {
                let log = store.log_after(after, 256).await.unwrap();
                let Some(last) = log.last() else { break };
                after = last.0;
                for (_, c) in &log {
                    let ChangeBody::Readings(b) = &c.body else {
                        panic!("unexpected change")
                    };
                    assert_eq!(b.len() as i64, BATCH);
                    total += BATCH as u64;
                }
            }
            let stats = store.stats().await.unwrap();
            assert_eq!(stats.readings, total);
            assert_eq!(store.verify_digest().await.unwrap(), store.digest());
            store.close().await;
        });
    }
    assert!(acked.len() >= 20);
}
