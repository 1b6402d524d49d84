//! Backup and restore with real agent processes: `kdelta backup` against an agent under
//! ingest, `kdelta restore` (new identity, `--same-identity`, `--as-of`, refusals), `kdelta
//! rekey`. (`GET /v1/backup` needing the admin scope: `security.rs`.)

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kdelta_sync::backup::read_header;
use kdelta_sync::{Store, StoreConfig};
use serde_json::json;

use super::harness::{Agent, run_to_end};
use super::{client, get_json};

const CLI: Duration = Duration::from_secs(120);

fn header_of(file: &Path) -> kdelta_sync::backup::BackupHeader {
    let mut f = std::fs::File::open(file).unwrap();
    read_header(&mut f, file).unwrap()
}

async fn kdelta(args: Vec<String>, dir: &Path) -> (Option<i32>, String) {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_to_end(&args, &dir, CLI)
    })
    .await
    .unwrap()
}

fn s(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| p.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_under_ingest_then_restore_as_new_identity_and_as_of() {
    let mut agent = Agent::start();
    let keep = agent.keep_dir().unwrap();
    let work = keep.path();
    let c = client();
    let r = c
        .put(agent.at("/v1/docs/cfg%2Fmode"))
        .header("content-type", "application/json")
        .body(r#"{"mode": "first"}"#)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());

    // Ingest keeps running through the backup.
    let stop = Arc::new(AtomicBool::new(false));
    let batches = Arc::new(AtomicU64::new(0));
    let writer = {
        let (url, stop, batches) = (agent.at("/v1/readings"), stop.clone(), batches.clone());
        tokio::spawn(async move {
            let c = client();
            let mut b = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let ts: Vec<i64> = (b * 500..b * 500 + 500).collect();
                let values: Vec<f64> = ts.iter().map(|t| *t as f64).collect();
                let body = json!({"series": [{"name": "load", "ts": ts, "values": values}]});
                let r = c.post(&url).json(&body).send().await.unwrap();
                assert_eq!(r.status().as_u16(), 201);
                b += 1;
                batches.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while batches.load(Ordering::Relaxed) < 50 {
        assert!(Instant::now() < deadline, "ingest too slow");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let file = work.join("one.kdbk");
    let (code, err) = kdelta(
        s(&["backup", file.to_str().unwrap(), "--url", agent.url()]),
        work,
    )
    .await;
    assert_eq!(code, Some(0), "{err}\n{}", agent.stderr());
    // The backup carries the store's private signing key: owner-only, whatever the umask.
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "backup file mode {mode:o}");
    let during = batches.load(Ordering::Relaxed);
    while batches.load(Ordering::Relaxed) < during + 20 {
        assert!(Instant::now() < deadline, "ingest stalled after the backup");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let header = header_of(&file);

    // A second document version after the backup, for the as-of restore below.
    let mid = kdelta_sync::Hlc::end_of_ms(kdelta::time::now_ms_u64());
    tokio::time::sleep(Duration::from_millis(5)).await;
    let r = c
        .put(agent.at("/v1/docs/cfg%2Fmode"))
        .header("content-type", "application/json")
        .body(r#"{"mode": "second"}"#)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let (_, status) = get_json(&c, &agent.at("/v1/status")).await;
    agent.sigterm();
    assert!(agent.wait_exit(Duration::from_secs(20)).is_some());
    let source_db = agent.data_dir().join("kdelta.db");
    drop(agent);

    // The backup holds exactly the source's state at its version vector.
    let source = Store::open(&source_db, StoreConfig::default())
        .await
        .unwrap();
    assert!(source.version_vector().dominates(&header.version_vector));
    assert_ne!(source.version_vector(), header.version_vector, "{status}");
    assert_eq!(
        source
            .digest_at(&header.version_vector)
            .await
            .unwrap()
            .to_string(),
        header.digest
    );
    let source_actor = source.actor();
    let as_of_vv = source.version_vector_as_of(mid).await.unwrap();
    let as_of_digest = source.digest_at(&as_of_vv).await.unwrap();
    let mode_then = source
        .get_as_of("cfg/mode", kdelta_sync::AsOf::Hlc(mid))
        .await
        .unwrap()
        .unwrap()
        .winner
        .value;
    source.close().await;

    // Restore into a new directory: verified, new identity.
    let restored_dir = work.join("restored");
    let (code, err) = kdelta(
        s(&[
            "restore",
            file.to_str().unwrap(),
            "--data-dir",
            restored_dir.to_str().unwrap(),
        ]),
        work,
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let restored = Store::open(restored_dir.join("kdelta.db"), StoreConfig::default())
        .await
        .unwrap();
    assert_eq!(restored.version_vector(), header.version_vector);
    assert_eq!(restored.digest().to_string(), header.digest);
    assert_eq!(
        restored.verify_digest().await.unwrap().to_string(),
        header.digest
    );
    assert_ne!(
        restored.actor(),
        source_actor,
        "restore gives a new identity"
    );
    restored.close().await;

    // The directory is no longer empty: refused without --force, nothing changed.
    let (code, err) = kdelta(
        s(&[
            "restore",
            file.to_str().unwrap(),
            "--data-dir",
            restored_dir.to_str().unwrap(),
        ]),
        work,
    )
    .await;
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("is not empty") && err.contains("--force"),
        "{err}"
    );

    // A backup of the stopped source's final state, restored as of `mid` over it (--force,
    // --same-identity): equal to the as-of view of the original.
    let full = work.join("full.kdbk");
    {
        let agent = Agent::builder().dir(work).start();
        let (code, err) = kdelta(
            s(&["backup", full.to_str().unwrap(), "--url", agent.url()]),
            work,
        )
        .await;
        assert_eq!(code, Some(0), "{err}");
    }
    let pitr_dir = work.join("pitr");
    std::fs::create_dir_all(&pitr_dir).unwrap();
    std::fs::write(pitr_dir.join("stale.txt"), "x").unwrap();
    let (code, err) = kdelta(
        s(&[
            "restore",
            full.to_str().unwrap(),
            "--data-dir",
            pitr_dir.to_str().unwrap(),
            "--force",
            "--same-identity",
            "--as-of",
            &mid.to_string(),
        ]),
        work,
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("cloned card"),
        "the cloned-card warning: {err}"
    );
    let pitr = Store::open(pitr_dir.join("kdelta.db"), StoreConfig::default())
        .await
        .unwrap();
    assert_eq!(pitr.actor(), source_actor, "--same-identity");
    assert_eq!(pitr.version_vector(), as_of_vv);
    assert_eq!(pitr.digest(), as_of_digest);
    assert_eq!(
        pitr.get("cfg/mode").await.unwrap().unwrap().winner.value,
        mode_then
    );
    assert_eq!(mode_then, Some(json!({"mode": "first"})));
    pitr.close().await;

    // rekey: a new identity for a stopped store; refused while an agent runs on it.
    let before = header_of(&full).actor;
    let (code, err) = kdelta(
        s(&["rekey", "--data-dir", pitr_dir.to_str().unwrap()]),
        work,
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let rekeyed = Store::open(pitr_dir.join("kdelta.db"), StoreConfig::default())
        .await
        .unwrap();
    assert_ne!(rekeyed.actor(), before);
    assert_eq!(rekeyed.version_vector(), as_of_vv, "history is kept");
    rekeyed.close().await;
    let running = Agent::builder().dir(work).start();
    let (code, err) = kdelta(
        s(&["rekey", "--data-dir", running.data_dir().to_str().unwrap()]),
        work,
    )
    .await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("already running"), "{err}");
    let (code, err) = kdelta(
        s(&[
            "restore",
            full.to_str().unwrap(),
            "--data-dir",
            running.data_dir().to_str().unwrap(),
            "--force",
        ]),
        work,
    )
    .await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("already running"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_truncated_and_foreign_files_and_writes_nothing() {
    let agent = Agent::start();
    let c = client();
    let body = json!({"series": [{"name": "t", "ts": (0..5000).collect::<Vec<i64>>(), "values": vec![1.5; 5000]}]});
    let r = c
        .post(agent.at("/v1/readings"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("b.kdbk");
    let (code, err) = kdelta(
        s(&["backup", file.to_str().unwrap(), "--url", agent.url()]),
        work.path(),
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    // The file exists now: a second backup to it is refused.
    let (code, err) = kdelta(
        s(&["backup", file.to_str().unwrap(), "--url", agent.url()]),
        work.path(),
    )
    .await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("exists already"), "{err}");

    let bytes = std::fs::read(&file).unwrap();
    let cut = work.path().join("cut.kdbk");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let foreign = agent.data_dir().join("kdelta.db");
    for (bad, expect) in [(&cut, "truncated"), (&foreign, "is not a kdelta backup")] {
        let target = work.path().join(format!("into-{expect}").replace(' ', "-"));
        let (code, err) = kdelta(
            s(&[
                "restore",
                bad.to_str().unwrap(),
                "--data-dir",
                target.to_str().unwrap(),
            ]),
            work.path(),
        )
        .await;
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains(expect), "{err}");
        let left: Vec<String> = std::fs::read_dir(&target)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "kdelta.lock")
            .collect();
        assert!(left.is_empty(), "nothing written: {left:?}");
    }
}
