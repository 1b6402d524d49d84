//! The PostgreSQL change log against a real server: `KDELTA_POSTGRES` names it (e.g.
//! `postgres://postgres@127.0.0.1:5432/test`; `scripts/ensure-postgres.sh` starts one); each
//! test works in a schema of its own, dropped at its end. Without `KDELTA_POSTGRES` the tests
//! that need a server print why and pass without running.
//!
//! What they prove: a hub on PostgreSQL and devices on SQLite exchange every change kind and
//! agree on one digest; applying is idempotent, refuses seq gaps storing nothing, and is
//! atomic and exact under two replicas applying overlapping pages at once; the hub's own
//! seqs and clock are shared by its replicas; a newer schema, an unreachable server and
//! refused credentials fail with errors that name them; the store's convergence property
//! (random delivery, duplicates, partitions) holds with a PostgreSQL hub; real sync
//! sessions run between devices and hub replicas (`pg_hub/sessions.rs`); the readings
//! rollups and queries answer as SQLite's (`pg_hub/readings.rs`); so do the document reads
//! and the hub's document writes (`pg_hub/docs.rs`), and the twin reads and the hub's
//! twin edits (`pg_hub/twins.rs`); retention prunes as SQLite's does and keeps the digest
//! equal, and the rollups of pruned readings travel with their changes both ways
//! (`pg_hub/retention.rs`), and so does document history retention
//! (`pg_hub/doc_retention.rs`); the change log is followed in commit order across
//! replicas, and one replica at a time holds a lease (`pg_hub/log.rs`); timing and gap
//! records list as on SQLite (`pg_hub/records.rs`).

use std::str::FromStr;
use std::time::Duration;

use kdelta_pg::{FeedEvent, PgConfig, PgError, PgStore};
use kdelta_sync::*;
use proptest::prelude::*;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPool};

#[path = "pg_hub/doc_retention.rs"]
mod doc_retention;
#[path = "pg_hub/docs.rs"]
mod docs;
#[path = "pg_hub/log.rs"]
mod log;
#[path = "pg_hub/readings.rs"]
mod readings;
#[path = "pg_hub/records.rs"]
mod records;
#[path = "pg_hub/retention.rs"]
mod retention;
#[path = "pg_hub/sessions.rs"]
mod sessions;
#[path = "pg_hub/twins.rs"]
mod twins;

const T0: i64 = 1_764_000_000_000;

/// One test's schema on the server named by `KDELTA_POSTGRES`.
struct TestDb {
    url: String,
    schema: String,
    admin: PgPool,
}

impl TestDb {
    /// A fresh schema, or `None` (with a message) when no server is configured.
    async fn new(test: &str) -> Option<TestDb> {
        let Ok(url) = std::env::var("KDELTA_POSTGRES") else {
            eprintln!(
                "skipping {test}: KDELTA_POSTGRES is not set (e.g. postgres://postgres@127.0.0.1:5432/test; scripts/ensure-postgres.sh starts a server)"
            );
            return None;
        };
        let schema = format!("kdelta_test_{}", hex::encode(rand::random::<[u8; 6]>()));
        let admin = PgPool::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("KDELTA_POSTGRES={url}: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await
            .unwrap();
        Some(TestDb { url, schema, admin })
    }

    fn options(&self) -> PgConnectOptions {
        PgConnectOptions::from_str(&self.url)
            .unwrap()
            .options([("search_path", self.schema.as_str())])
    }

    /// A replica: its own pool on this test's schema.
    async fn replica(&self) -> PgStore {
        PgStore::connect_with(self.options(), PgConfig::default())
            .await
            .unwrap()
    }

    async fn count(&self, sql: &str) -> i64 {
        let sql = sql.replace("{s}", &self.schema);
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&self.admin)
            .await
            .unwrap()
    }

    async fn drop(self) {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA {} CASCADE",
            self.schema
        )))
        .execute(&self.admin)
        .await
        .unwrap();
        self.admin.close().await;
    }
}

async fn device(dir: &tempfile::TempDir, name: &str) -> Store {
    Store::open(dir.path().join(name), StoreConfig::default())
        .await
        .unwrap()
}

/// Every change kind on one device: readings (with units, metadata and a timing record),
/// a time correction, puts, a delete, concurrent siblings, a document batch, twin edits.
async fn busy_device(s: &Store, tag: i64) {
    let mut b = ReadingBatch::new();
    for i in 0..50 {
        b.push(
            "greenhouse.temp",
            T0 + tag * 1000 + i * 10,
            20.0 + i as f64,
            Some("°C"),
        );
        b.push(
            "greenhouse.rh",
            T0 + tag * 1000 + i * 10,
            50.0 + i as f64,
            Some("%"),
        );
    }
    b.series[0].meta.insert("room".into(), format!("r{tag}"));
    s.append(b).await.unwrap();
    // Months apart: two partitions, and one reading far in the past (default partition).
    let mut b = ReadingBatch::new();
    b.push("greenhouse.temp", T0 + 40 * 86_400_000 + tag, 1.5, None);
    b.push("old.sensor", 65_000 + tag, 3.0, None);
    s.append(b).await.unwrap();
    let boot = BootId([tag as u8; 16]);
    let mut b = ReadingBatch::new();
    b.push("pi.temp", 70_000 + tag, 40.0, None);
    b.push("pi.temp", 80_000 + tag, 41.0, None);
    b.timing = Some(ReadingTiming {
        boot_id: boot,
        offset_ms: 0,
    });
    s.append(b).await.unwrap();
    s.correct_reading_times(boot, T0, TimeBasis::LocalClock)
        .await
        .unwrap()
        .unwrap();
    s.put("k/a", &json!({"v": tag})).await.unwrap();
    s.put("k/a", &json!({"v": tag + 1})).await.unwrap();
    s.put("k/b", &json!([1, 2, tag])).await.unwrap();
    s.delete("k/b").await.unwrap();
    s.write_batch(vec![
        BatchEntry::put("k/c", json!({"batch": tag})),
        BatchEntry::put("k/d", json!("x")),
    ])
    .await
    .unwrap();
    s.twin_create("twin/1", Some(json!({"desired": {"interval": 10}})))
        .await
        .unwrap();
    s.twin_patch(
        "twin/1",
        TwinPatch::Merge(json!({"reported": {"temp": tag}})),
    )
    .await
    .unwrap();
}

/// Everything `from` holds that `to` lacks, in pages of `budget` bytes.
async fn pages_for(from: &impl ChangeLog, to: &VersionVector, budget: usize) -> Vec<Vec<Change>> {
    let mut theirs = to.clone();
    let mut pages = Vec::new();
    loop {
        let page = from.changes_since(&theirs, budget).await.unwrap();
        if page.is_empty() {
            return pages;
        }
        for c in &page {
            theirs.set(c.actor, theirs.get(&c.actor).max(c.seq));
        }
        pages.push(page);
    }
}

async fn sync(from: &impl ChangeLog, to: &impl ChangeLog, budget: usize) {
    let theirs = to.version_vector().await.unwrap();
    for page in pages_for(from, &theirs, budget).await {
        to.apply_remote(page).await.unwrap();
    }
}

#[tokio::test]
async fn a_pg_hub_and_sqlite_devices_exchange_every_change_kind_and_agree() {
    let Some(db) = TestDb::new("exchange").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (device(&dir, "a.db").await, device(&dir, "b.db").await);
    busy_device(&a, 1).await;
    busy_device(&b, 2).await;
    let hub = db.replica().await;
    sync(&a, &hub, 2_000).await;
    sync(&b, &hub, 1 << 20).await;
    // Everything again: skipped, nothing stored twice.
    let again = a
        .changes_since(&VersionVector::new(), 1 << 20)
        .await
        .unwrap();
    let n = again.len();
    let outcome = hub.apply_remote(again).await.unwrap();
    assert_eq!((outcome.applied, outcome.skipped), (0, n));

    let mut expected = a.digest();
    expected.add_digest(&b.digest());
    assert_eq!(hub.digest().await.unwrap(), expected);
    assert_eq!(hub.verify_digest().await.unwrap(), expected);
    let mut vv = a.version_vector();
    vv.merge(&b.version_vector());
    assert_eq!(hub.version_vector().await.unwrap(), vv);
    assert_eq!(
        db.count("SELECT count(*) FROM {s}.changes").await as u64,
        vv.total()
    );
    // Readings are stored once, in month partitions and the default one.
    assert_eq!(
        db.count("SELECT count(*) FROM {s}.readings").await,
        2 * (100 + 2 + 2)
    );
    assert!(db.count("SELECT count(*) FROM {s}.readings_default").await >= 2);
    assert!(
        db.count("SELECT count(*) FROM pg_tables WHERE schemaname = '{s}' AND tablename LIKE 'readings_y%'")
            .await
            >= 2
    );
    // The corrected readings were moved on the hub as on the devices.
    assert_eq!(
        db.count("SELECT count(*) FROM {s}.readings r JOIN {s}.series s ON s.id = r.series_id WHERE s.name = 'pi.temp' AND r.ts > 1000000").await,
        4
    );

    // A third device learns everything from the hub alone, in small pages, and ends
    // byte-identical: same digest and document states as the writers.
    let c = device(&dir, "c.db").await;
    // The hub relays the devices' seals untouched: every change it serves is signed, and
    // the third device verifies each one as it applies it (a refused change fails `sync`).
    let relayed = hub
        .changes_since(&VersionVector::new(), usize::MAX)
        .await
        .unwrap();
    assert!(relayed.iter().all(|c| c.seal.is_some()), "seals relayed");
    sync(&hub, &c, 3_000).await;
    assert_eq!(c.digest(), expected);
    let report = Store::verify_file(dir.path().join("c.db")).await.unwrap();
    assert!(report.ok(), "{:?}", report.failures);
    assert_eq!(report.unsigned, 0, "{report:?}");
    assert_eq!(c.verify_digest().await.unwrap(), expected);
    sync(&b, &a, 1 << 20).await;
    for key in ["k/a", "k/b", "k/c", "k/d"] {
        assert_eq!(
            c.siblings(key).await.unwrap(),
            a.siblings(key).await.unwrap(),
            "{key}"
        );
    }
    assert_eq!(
        c.twin_get("twin/1").await.unwrap().map(|t| t.value),
        a.twin_get("twin/1").await.unwrap().map(|t| t.value)
    );
    // The anchors a page carries.
    let actor = a.actor();
    assert_eq!(
        hub.hlcs_at(&[(actor, 2), (actor, 999), (actor, 1)])
            .await
            .unwrap(),
        a.hlcs_at(&[(actor, 2), (actor, 1)]).await.unwrap()
    );
    hub.close().await;
    db.drop().await;
}

#[tokio::test]
async fn a_gap_refuses_the_whole_page_and_stores_nothing() {
    let Some(db) = TestDb::new("gap").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = device(&dir, "a.db").await;
    busy_device(&a, 1).await;
    let all = a
        .changes_since(&VersionVector::new(), 1 << 20)
        .await
        .unwrap();
    let hub = db.replica().await;
    // seqs 1, 2 and then 4: refused as a whole, naming the missing seq.
    let page = vec![all[0].clone(), all[1].clone(), all[3].clone()];
    let err = hub.apply_remote(page).await.unwrap_err();
    match &err {
        PgError::Store(StoreError::SeqGap {
            have: 2, got: 4, ..
        }) => {}
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("seq 3 is missing"), "{err}");
    assert!(hub.version_vector().await.unwrap().is_empty());
    assert_eq!(hub.digest().await.unwrap(), Digest::default());
    assert_eq!(db.count("SELECT count(*) FROM {s}.changes").await, 0);
    assert_eq!(db.count("SELECT count(*) FROM {s}.readings").await, 0);
    // Through the ChangeLog interface the error is the embedded store's own.
    let err = ChangeLog::apply_remote(&hub, vec![all[2].clone()])
        .await
        .unwrap_err();
    assert_eq!(err.code(), "seq_gap");
    // A bad change is refused before anything is looked at.
    let mut bad = all[0].clone();
    bad.seq = 0;
    assert_eq!(
        ChangeLog::apply_remote(&hub, vec![bad])
            .await
            .unwrap_err()
            .code(),
        "decode"
    );
    hub.close().await;
    db.drop().await;
}

/// Two replicas (two pools) apply overlapping pages of the same actors at the same time,
/// many times over: every change is stored exactly once, and both replicas read the same
/// vector and the digest of a SQLite store that received everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_applying_overlapping_pages_at_once_store_each_change_once() {
    let Some(db) = TestDb::new("concurrency").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let reference = device(&dir, "ref.db").await;
    let mut devices = Vec::new();
    for d in 0..3 {
        let s = device(&dir, &format!("d{d}.db")).await;
        for i in 0..40i64 {
            let mut b = ReadingBatch::new();
            for j in 0..20 {
                b.push(
                    &format!("s{}", j % 4),
                    T0 + i * 1000 + j,
                    (d * 1000 + i) as f64,
                    Some("V"),
                );
            }
            s.append(b).await.unwrap();
            if i % 7 == 0 {
                s.put(&format!("doc/{}", i % 3), &json!({"d": d, "i": i}))
                    .await
                    .unwrap();
            }
        }
        sync(&s, &reference, 1 << 20).await;
        devices.push(s);
    }
    let (r1, r2) = (db.replica().await, db.replica().await);
    let mut all: Vec<Change> = reference
        .changes_since(&VersionVector::new(), usize::MAX)
        .await
        .unwrap();
    all.sort_by_key(|c| (c.seq, c.actor));
    // Overlapping windows over the interleaved log: each replica gets pages that start where
    // the other's are, so they race on the same actors and seqs.
    let mut step = 0;
    let mut at = 0;
    let mut applied = 0;
    while at < all.len() {
        let len = 5 + step % 11;
        let end = (at + len).min(all.len());
        let overlap_end = (at + len + 3).min(all.len());
        let p1 = all[at..end].to_vec();
        let p2 = all[at..overlap_end].to_vec();
        let (o1, o2) = tokio::join!(r1.apply_remote(p1), r2.apply_remote(p2));
        let (o1, o2) = (o1.unwrap(), o2.unwrap());
        assert_eq!(o1.applied + o1.skipped, end - at);
        assert_eq!(o2.applied + o2.skipped, overlap_end - at);
        applied += o1.applied + o2.applied;
        at = end;
        step += 1;
    }
    // Each change applied by exactly one of the two.
    assert_eq!(applied, all.len());
    let vv = reference.version_vector();
    assert_eq!(r1.version_vector().await.unwrap(), vv);
    assert_eq!(r2.version_vector().await.unwrap(), vv);
    assert_eq!(
        db.count("SELECT count(*) FROM {s}.changes").await as u64,
        vv.total()
    );
    assert_eq!(
        db.count("SELECT count(*) FROM {s}.readings").await,
        3 * 40 * 20
    );
    assert_eq!(r1.digest().await.unwrap(), reference.digest());
    assert_eq!(r2.digest().await.unwrap(), reference.digest());
    assert_eq!(r2.verify_digest().await.unwrap(), reference.digest());

    // Both replicas write as the hub at once: one actor, dense seqs, increasing HLCs.
    assert_eq!(r1.actor(), r2.actor());
    let mut tasks = Vec::new();
    for r in [r1.clone(), r2.clone()] {
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..15 {
                let mut b = ReadingBatch::new();
                b.push("hub.load", T0 + i, i as f64, None);
                out.push(r.append(b).await.unwrap());
            }
            out
        }));
    }
    let mut written = Vec::new();
    for t in tasks {
        written.extend(t.await.unwrap());
    }
    let hub_actor = r1.actor();
    let vv = r1.version_vector().await.unwrap();
    assert_eq!(vv.get(&hub_actor), 30);
    let mine = pages_for(&r1, &VersionVector::new(), usize::MAX)
        .await
        .concat();
    let mine: Vec<&Change> = mine.iter().filter(|c| c.actor == hub_actor).collect();
    assert_eq!(mine.len(), 30);
    // Each caller got back the change as stored.
    written.sort_by_key(|c| c.seq);
    assert_eq!(
        written.iter().map(|c| c.seq).collect::<Vec<_>>(),
        (1..=30).collect::<Vec<u64>>()
    );
    assert!(written.iter().zip(&mine).all(|(w, m)| w == *m));
    assert!(
        mine.windows(2)
            .all(|w| w[0].seq + 1 == w[1].seq && w[0].hlc < w[1].hlc)
    );
    assert_eq!(
        r2.verify_digest().await.unwrap(),
        r1.digest().await.unwrap()
    );
    r1.close().await;
    r2.close().await;
    db.drop().await;
}

/// A commit on one replica is announced to the others (LISTEN/NOTIFY): what live sync on a
/// replica needs to push a change another replica stored. A refused page announces nothing.
#[tokio::test]
async fn a_commit_on_one_replica_is_announced_to_the_others() {
    let Some(db) = TestDb::new("feed").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = device(&dir, "a.db").await;
    busy_device(&a, 1).await;
    let all = a
        .changes_since(&VersionVector::new(), 1 << 20)
        .await
        .unwrap();
    let (r1, r2) = (db.replica().await, db.replica().await);
    let mut feed = r2.listen().await.unwrap();
    // A gap: refused, nothing committed, nothing announced.
    assert!(r1.apply_remote(vec![all[1].clone()]).await.is_err());
    r1.apply_remote(all[..3].to_vec()).await.unwrap();
    r1.apply_remote(all[3..].to_vec()).await.unwrap();
    let mut heard: Vec<FeedEvent> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while heard.last().copied()
        != Some(FeedEvent::Committed {
            actor: a.actor(),
            max_seq: all.len() as u64,
        })
    {
        match tokio::time::timeout_at(deadline, feed.next()).await {
            Ok(event) => heard.push(event.unwrap()),
            Err(_) => panic!("not announced within 10 s; heard {heard:?}"),
        }
    }
    // Other tests' schemas share the server's channel: keep this actor's announcements.
    heard.retain(|e| matches!(e, FeedEvent::Committed { actor, .. } if *actor == a.actor()));
    assert_eq!(
        heard,
        vec![
            FeedEvent::Committed {
                actor: a.actor(),
                max_seq: 3
            },
            FeedEvent::Committed {
                actor: a.actor(),
                max_seq: all.len() as u64
            },
        ]
    );
    // The feed holds one of r2's pooled connections: closing r2 waits for it.
    drop(feed);
    r1.close().await;
    r2.close().await;
    db.drop().await;
}

#[tokio::test]
async fn a_database_of_a_newer_schema_is_refused_naming_both_versions() {
    let Some(db) = TestDb::new("schema").await else {
        return;
    };
    let hub = db.replica().await;
    let actor = hub.actor();
    hub.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {}._sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99, 'from the future', TRUE, '\\x00', 0)",
        db.schema
    )))
    .execute(&db.admin)
    .await
    .unwrap();
    let err = PgStore::connect_with(db.options(), PgConfig::default())
        .await
        .unwrap_err();
    match &err {
        PgError::SchemaTooNew {
            found: 99,
            supported,
        } => {
            assert_eq!(*supported, kdelta_pg::supported_schema_version())
        }
        other => panic!("{other:?}"),
    }
    let text = err.to_string();
    let supported = format!("({})", kdelta_pg::supported_schema_version());
    assert!(text.contains("99") && text.contains(&supported), "{text}");
    // Nothing was touched: without the future row the database opens, same actor.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM {}._sqlx_migrations WHERE version = 99",
        db.schema
    )))
    .execute(&db.admin)
    .await
    .unwrap();
    let hub = db.replica().await;
    assert_eq!(hub.actor(), actor);
    hub.close().await;
    db.drop().await;
}

/// Needs no server: nothing listens on port 1.
#[tokio::test]
async fn an_unreachable_server_is_named_without_the_password() {
    let config = PgConfig {
        connect_timeout: Duration::from_secs(5),
        ..PgConfig::default()
    };
    let err = PgStore::connect("postgres://kdelta:s3cret@127.0.0.1:1/hub", config)
        .await
        .unwrap_err();
    assert!(matches!(err, PgError::Unreachable { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("127.0.0.1:1/hub"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    assert!(err.is_transient());
    let err = PgStore::connect("mysql://x@y/z", PgConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(err, PgError::InvalidUrl(_)), "{err:?}");
}

#[tokio::test]
async fn a_refused_role_or_database_is_named() {
    let Some(db) = TestDb::new("refused").await else {
        return;
    };
    let wrong_user = db
        .options()
        .username("kdelta_no_such_role")
        .password("s3cret");
    let err = PgStore::connect_with(wrong_user, PgConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(err, PgError::Refused { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("kdelta_no_such_role"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    let wrong_db = db.options().database("kdelta_no_such_database");
    let err = PgStore::connect_with(wrong_db, PgConfig::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PgError::Refused { detail, .. } if detail.contains("kdelta_no_such_database")),
        "{err:?}"
    );
    db.drop().await;
}

// ---- Convergence with a PostgreSQL hub (the property of sync/tests/convergence.rs) ----

#[derive(Debug, Clone)]
enum Op {
    Batch { series: u8, start: u16, n: u8 },
    Put { key: u8, value: i32 },
    Delete { key: u8 },
    DocBatch { keys: Vec<(u8, Option<i32>)> },
}

#[derive(Debug, Clone)]
enum Step {
    Local {
        device: usize,
        op: Op,
    },
    /// Device → hub (`up`) or hub → device, pages of `budget` bytes delivered shuffled, the
    /// first one twice when `dup`.
    Sync {
        device: usize,
        up: bool,
        budget: u16,
        shuffle: u64,
        dup: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..3, any::<u16>(), 1u8..20).prop_map(|(series, start, n)| Op::Batch {
            series,
            start,
            n
        }),
        (0u8..4, any::<i32>()).prop_map(|(key, value)| Op::Put { key, value }),
        (0u8..4).prop_map(|key| Op::Delete { key }),
        proptest::collection::btree_map(
            0u8..4,
            proptest::option::weighted(0.8, any::<i32>()),
            1..4
        )
        .prop_map(|m| Op::DocBatch {
            keys: m.into_iter().collect()
        }),
    ]
}

fn steps(devices: usize) -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(
        prop_oneof![
            3 => (0..devices, op()).prop_map(|(device, op)| Step::Local { device, op }),
            2 => (0..devices, any::<bool>(), 1u16..3000, any::<u64>(), any::<bool>())
                .prop_map(|(device, up, budget, shuffle, dup)| Step::Sync { device, up, budget, shuffle, dup }),
        ],
        1..30,
    )
}

async fn run_local(s: &Store, device: usize, op: &Op) {
    match op {
        Op::Batch { series, start, n } => {
            let mut b = ReadingBatch::new();
            for i in 0..*n as i64 {
                b.push(
                    &format!("s{series}"),
                    T0 + *start as i64 * 10 + i,
                    (device * 1000) as f64 + i as f64,
                    Some("V"),
                );
            }
            s.append(b).await.unwrap();
        }
        Op::Put { key, value } => {
            s.put(&format!("k{key}"), &json!({"v": value, "by": device}))
                .await
                .unwrap();
        }
        Op::Delete { key } => match s.delete(&format!("k{key}")).await {
            Ok(_) | Err(StoreError::UnknownKey(_)) => {}
            Err(e) => panic!("delete failed: {e}"),
        },
        Op::DocBatch { keys } => {
            let entries = keys
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => BatchEntry::put(format!("k{k}"), json!({"v": v, "batch": device})),
                    None => BatchEntry::delete(format!("k{k}")),
                })
                .collect();
            match s.write_batch(entries).await {
                Ok(_) => {}
                Err(e) if e.innermost().code() == "unknown_key" => {}
                Err(e) => panic!("batch failed: {e}"),
            }
        }
    }
}

/// Delivers shuffled pages; a page refused for a gap must leave the receiver untouched.
async fn deliver(
    from: &impl ChangeLog,
    to: &impl ChangeLog,
    budget: usize,
    mut shuffle: u64,
    dup: bool,
) {
    let mut pages = pages_for(from, &to.version_vector().await.unwrap(), budget).await;
    if dup && !pages.is_empty() {
        pages.push(pages[0].clone());
    }
    for i in (1..pages.len()).rev() {
        shuffle ^= shuffle << 13;
        shuffle ^= shuffle >> 7;
        shuffle ^= shuffle << 17;
        pages.swap(i, (shuffle % (i as u64 + 1)) as usize);
    }
    for page in pages {
        let before = (
            to.version_vector().await.unwrap(),
            to.digest().await.unwrap(),
        );
        match to.apply_remote(page).await {
            Ok(_) => {}
            Err(StoreError::SeqGap { .. }) => assert_eq!(
                before,
                (
                    to.version_vector().await.unwrap(),
                    to.digest().await.unwrap()
                ),
                "a refused page changed the receiver"
            ),
            Err(e) => panic!("apply failed: {e}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]
    #[test]
    fn sqlite_devices_and_a_pg_hub_converge_whatever_the_delivery(
        (n, steps) in (2usize..=4).prop_flat_map(|n| (Just(n), steps(n)))
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let Some(db) = TestDb::new("convergence").await else { return };
            let dir = tempfile::tempdir().unwrap();
            let mut devices = Vec::new();
            for i in 0..n {
                devices.push(device(&dir, &format!("d{i}.db")).await);
            }
            let hub = db.replica().await;
            for step in &steps {
                match step {
                    Step::Local { device, op } => run_local(&devices[*device], *device, op).await,
                    Step::Sync { device, up: true, budget, shuffle, dup } =>
                        deliver(&devices[*device], &hub, *budget as usize, *shuffle, *dup).await,
                    Step::Sync { device, up: false, budget, shuffle, dup } =>
                        deliver(&hub, &devices[*device], *budget as usize, *shuffle, *dup).await,
                }
            }
            // Heal: every device up to the hub, then the hub down to every device.
            for d in &devices {
                sync(d, &hub, 1 << 20).await;
            }
            for d in &devices {
                sync(&hub, d, 1 << 20).await;
            }
            let digest = hub.digest().await.unwrap();
            let vv = hub.version_vector().await.unwrap();
            assert_eq!(hub.verify_digest().await.unwrap(), digest);
            for d in &devices {
                assert_eq!(d.version_vector(), vv);
                assert_eq!(d.digest(), digest);
            }
            for k in 0..4 {
                let key = format!("k{k}");
                let first = devices[0].siblings(&key).await.unwrap();
                for d in &devices[1..] {
                    assert_eq!(d.siblings(&key).await.unwrap(), first, "{key}");
                }
            }
            hub.close().await;
            db.drop().await;
        });
    }
}
