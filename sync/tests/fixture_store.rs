//! Upgrade compatibility: `fixtures/v2-sqlx.db` is a store written by the last sqlx-based
//! release (schema version 2: readings of two series, documents with siblings and a tombstone,
//! a twin), with what that code read back recorded in `fixtures/v2-sqlx.json`. Today's code
//! must open it unchanged and see the same actor, version vector, digest and contents.
//!
//! The fixture was made by `make_fixture` below (ignored; run with
//! `KDELTA_MAKE_FIXTURE=dir cargo test -p kdelta-sync --test fixture_store -- --ignored`).

use std::path::Path;

use kdelta_sync::*;
use serde_json::{Value, json};

const T0: i64 = 1_764_000_000_000;

fn batch(series: &str, unit: &str, points: impl Iterator<Item = (i64, f64)>) -> ReadingBatch {
    let mut b = ReadingBatch::new();
    for (t, v) in points {
        b.push(series, t, v, Some(unit));
    }
    b
}

/// Everything the fixture's content checks compare, read through the public API.
async fn snapshot(s: &Store) -> Value {
    let range = |series: &str| RangeQuery {
        series: series.into(),
        from: 0,
        to: i64::MAX,
        limit: 10_000,
        cursor: None,
    };
    let temp = s.range(&range("room.temp")).await.unwrap();
    let hum = s.range(&range("room.hum")).await.unwrap();
    let mut docs = serde_json::Map::new();
    for key in ["cfg/a", "cfg/b", "cfg/gone", "cfg/conflict"] {
        let state = s.get(key).await.unwrap();
        let history = s.history(key, 100, None).await.unwrap();
        let siblings = s.siblings(key).await.unwrap();
        docs.insert(
            key.into(),
            json!({"get": state, "history": history, "siblings": siblings}),
        );
    }
    let twin = s.twin_get("twin/pump").await.unwrap();
    let mut vv: Vec<(String, u64)> = s
        .version_vector()
        .iter()
        .map(|(a, n)| (a.to_string(), n))
        .collect();
    vv.sort();
    let all = s
        .changes_since(&VersionVector::new(), usize::MAX)
        .await
        .unwrap();
    json!({
        "actor": s.actor().to_string(),
        "vv": vv,
        "digest": s.digest().to_string(),
        "changes": all.len(),
        "temp": temp.readings,
        "hum": hum.readings,
        "docs": docs,
        "twin": twin,
        "series": s.series().await.unwrap().len(),
    })
}

/// Writes the fixture with the code of the day: run once, by hand, before a storage change.
#[tokio::test]
#[ignore]
async fn make_fixture() {
    let Ok(dir) = std::env::var("KDELTA_MAKE_FIXTURE") else {
        return;
    };
    let dir = Path::new(&dir);
    let tmp = tempfile::tempdir().unwrap();
    let a = Store::open(dir.join("v2-sqlx.db"), StoreConfig::default())
        .await
        .unwrap();
    let b = Store::open(tmp.path().join("b.db"), StoreConfig::default())
        .await
        .unwrap();
    a.append(batch(
        "room.temp",
        "°C",
        (0..300).map(|i| (T0 + i * 1000, 20.0 + i as f64 / 10.0)),
    ))
    .await
    .unwrap();
    b.append(batch(
        "room.hum",
        "%",
        (0..90).map(|i| (T0 + i * 2000, 40.0 + i as f64)),
    ))
    .await
    .unwrap();
    a.put("cfg/a", &json!({"interval": 5})).await.unwrap();
    a.put("cfg/a", &json!({"interval": 10})).await.unwrap();
    a.put("cfg/b", &json!([1, 2, 3])).await.unwrap();
    a.put("cfg/gone", &json!("x")).await.unwrap();
    a.delete("cfg/gone").await.unwrap();
    // Concurrent writes on both sides: siblings after the exchange.
    a.put("cfg/conflict", &json!({"by": "a"})).await.unwrap();
    b.put("cfg/conflict", &json!({"by": "b"})).await.unwrap();
    a.twin_create("twin/pump", Some(json!({"desired": {"on": true}})))
        .await
        .unwrap();
    a.twin_patch(
        "twin/pump",
        TwinPatch::from_json("twin/pump", json!({"reported": {"rpm": 1200}})).unwrap(),
    )
    .await
    .unwrap();
    let from_b = b
        .changes_since(&a.version_vector(), usize::MAX)
        .await
        .unwrap();
    a.apply_remote(from_b).await.unwrap();
    assert_eq!(a.get("cfg/conflict").await.unwrap().unwrap().siblings, 2);
    let snap = snapshot(&a).await;
    assert_eq!(a.verify_digest().await.unwrap(), a.digest());
    a.close().await;
    b.close().await;
    let _ = std::fs::remove_file(dir.join("v2-sqlx.db-wal"));
    let _ = std::fs::remove_file(dir.join("v2-sqlx.db-shm"));
    std::fs::write(
        dir.join("v2-sqlx.json"),
        serde_json::to_string_pretty(&snap).unwrap(),
    )
    .unwrap();
}

#[tokio::test]
async fn store_written_by_the_sqlx_release_opens_unchanged() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let expected: Value =
        serde_json::from_slice(&std::fs::read(fixtures.join("v2-sqlx.json")).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kdelta.db");
    std::fs::copy(fixtures.join("v2-sqlx.db"), &path).unwrap();

    let s = Store::open(&path, StoreConfig::default()).await.unwrap();
    assert_eq!(snapshot(&s).await, expected);
    assert_eq!(s.verify_digest().await.unwrap(), s.digest());
    // Still writable, and the new write is seq 1 + the old maximum of this actor.
    let before = s.version_vector().get(&s.actor());
    let v = s.put("cfg/a", &json!({"interval": 15})).await.unwrap();
    assert_eq!(v.seq, before + 1);
    assert_eq!(v.supersedes.len(), 1);
    // A batch (schema 3) on the upgraded store: one change over old keys, siblings resolved.
    let written = s
        .write_batch(vec![
            BatchEntry::put("cfg/conflict", json!({"by": "batch"})),
            BatchEntry::delete("cfg/b"),
        ])
        .await
        .unwrap();
    assert_eq!(written[0].seq, before + 2);
    assert_eq!(written[0].supersedes.len(), 2, "both siblings resolved");
    assert_eq!(s.get("cfg/conflict").await.unwrap().unwrap().siblings, 1);
    assert!(s.get("cfg/b").await.unwrap().unwrap().winner.is_tombstone());
    assert_eq!(
        s.history("cfg/b", 100, None).await.unwrap()[0].seq,
        before + 2
    );
    s.close().await;

    // Reopening after the upgrade keeps everything (no migration re-applied).
    let s = Store::open(&path, StoreConfig::default()).await.unwrap();
    assert_eq!(s.actor().to_string(), expected["actor"].as_str().unwrap());
    assert_eq!(
        s.get("cfg/a").await.unwrap().unwrap().winner.value,
        Some(json!({"interval": 15}))
    );
    assert_eq!(s.verify_digest().await.unwrap(), s.digest());
    assert_eq!(s.version_vector().get(&s.actor()), before + 2);
    let changes: u64 = s.version_vector().iter().map(|(_, n)| n).sum();
    s.close().await;

    // Schema 11: each actor's row holds its highest stored HLC (the upgrade computed it from
    // the log, the writes since raised it), what the clock is seeded from at open.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let rows: Vec<(i64, i64)> = conn
        .prepare(
            "SELECT a.max_hlc, (SELECT MAX(c.hlc) FROM changes c WHERE c.actor_idx = a.idx) \
             FROM actors a WHERE a.max_seq > 0",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(rows.len(), 2, "both actors of the fixture");
    for (kept, scanned) in rows {
        assert_eq!(kept, scanned);
    }
    drop(conn);

    // Its own past was signed at the first open, from seq 1, and the two changes written
    // since link to it; the other actor's changes (it never signed them) stay unsigned and
    // say so; `verify` passes.
    let report = Store::verify_file(&path).await.unwrap();
    assert!(report.ok(), "{:?}", report.failures);
    let own = s_own_changes(&expected);
    assert_eq!(report.signed, own + 2);
    assert_eq!(report.unsigned, changes - own - 2);
    assert!(
        report.unsigned > 0,
        "the other actor's changes are in the fixture"
    );
}

/// How many changes of its own actor the fixture holds (its version vector, as recorded).
fn s_own_changes(expected: &Value) -> u64 {
    let me = expected["actor"].as_str().unwrap();
    expected["vv"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e[0] == me)
        .and_then(|e| e[1].as_u64())
        .unwrap()
}

/// A store of the unsigned era, upgraded, syncs with the defaults (`require_signatures`
/// on): its own history reaches a fresh store whole and verified (signed at the upgrade),
/// and a hub that holds the same changes unsigned — received before the upgrade — accepts
/// the upgraded store's next change, which links to the past it signed: the hub's copies are
/// exactly what was signed. The other actor's unsigned changes are refused by the fresh
/// store, named, and nothing else waits on them.
#[tokio::test]
async fn an_upgraded_store_syncs_with_the_defaults() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kdelta.db");
    std::fs::copy(fixtures.join("v2-sqlx.db"), &path).unwrap();
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("v2-sqlx.json")).unwrap())
            .unwrap();

    // A hub that got everything before the upgrade holds it unsigned (as the old release
    // served it: no seals). Stored with the opt-out, as the old release stored it.
    let upgraded = Store::open(&path, StoreConfig::default()).await.unwrap();
    let me = upgraded.actor();
    let mut old_copies = upgraded
        .changes_since(&VersionVector::new(), usize::MAX)
        .await
        .unwrap();
    let own = s_own_changes(&expected);
    assert_eq!(
        old_copies
            .iter()
            .filter(|c| c.actor == me && c.seal.is_some())
            .count() as u64,
        own,
        "the own past is served signed after the upgrade"
    );
    for c in &mut old_copies {
        c.seal = None;
    }
    let lax = StoreConfig {
        require_signatures: false,
        ..StoreConfig::default()
    };
    let hub_path = dir.path().join("hub.db");
    let hub = Store::open(&hub_path, lax.clone()).await.unwrap();
    hub.apply_remote(old_copies).await.unwrap();
    hub.close().await;
    // The hub upgraded too, with the defaults.
    let hub = Store::open(&hub_path, StoreConfig::default())
        .await
        .unwrap();

    // The upgraded store writes on; its next change reaches the hub and applies.
    upgraded
        .put("cfg/a", &json!({"interval": 20}))
        .await
        .unwrap();
    let next = upgraded
        .changes_since(&hub.version_vector(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
    assert_ne!(next[0].seal.as_ref().unwrap().prev, seal::CHAIN_START);
    hub.apply_remote(next.clone()).await.unwrap();
    assert_eq!(hub.version_vector().get(&me), own + 1);
    hub.close().await;
    let report = Store::verify_file(&hub_path).await.unwrap();
    assert!(report.ok(), "{:?}", report.failures);
    // The same change on top of a copy that was altered is refused.
    let altered_path = dir.path().join("altered.db");
    let altered = Store::open(&altered_path, lax).await.unwrap();
    let mut copies = upgraded
        .changes_since(&VersionVector::new(), usize::MAX)
        .await
        .unwrap();
    copies.retain(|c| c.actor == me && c.seq <= own);
    for c in &mut copies {
        c.seal = None;
    }
    let first_doc = copies
        .iter_mut()
        .find_map(|c| match &mut c.body {
            ChangeBody::Doc(d) => Some(d),
            _ => None,
        })
        .unwrap();
    first_doc.value = Some(stored_json(&json!({"interval": 99})));
    altered.apply_remote(copies).await.unwrap();
    let err = altered.apply_remote(next).await.unwrap_err();
    assert_eq!(err.code(), "broken_chain", "{err}");

    // A fresh store with the defaults: the upgraded store's whole history applies, signed;
    // the other actor's unsigned changes are refused, named.
    let fresh_path = dir.path().join("fresh.db");
    let fresh = Store::open(&fresh_path, StoreConfig::default())
        .await
        .unwrap();
    let all = upgraded
        .changes_since(&VersionVector::new(), usize::MAX)
        .await
        .unwrap();
    let (outcome, report) = fresh.apply_remote_verified(all).await.unwrap();
    assert_eq!(outcome.applied as u64, own + 1);
    assert_eq!(fresh.version_vector().get(&me), own + 1);
    assert_eq!(report.refused.len(), 1, "{report:?}");
    assert_eq!(report.refused[0].fault.code(), "unsigned");
    assert_ne!(report.refused[0].actor, me);
    assert_eq!(report.unsigned, 0);
    fresh.close().await;
    let report = Store::verify_file(&fresh_path).await.unwrap();
    assert!(report.ok(), "{:?}", report.failures);
    assert_eq!((report.signed, report.unsigned), (own + 1, 0));
    upgraded.close().await;
}

/// A JSON value as a document change carries it (CBOR).
fn stored_json(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).unwrap();
    out
}

/// The migrations table of a store made now matches what sqlx recorded (versions,
/// descriptions, checksums), so either code can open either store.
#[tokio::test]
async fn migrations_are_recorded_as_sqlx_recorded_them() {
    let rows = |path: &Path| -> Vec<(i64, String, bool, Vec<u8>)> {
        let conn = rusqlite::Connection::open(path).unwrap();
        let mut st = conn
            .prepare("SELECT version, description, success, checksum FROM _sqlx_migrations ORDER BY version")
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.db");
    std::fs::copy(fixtures.join("v2-sqlx.db"), &old).unwrap();
    let fresh = dir.path().join("fresh.db");
    Store::open(&fresh, StoreConfig::default())
        .await
        .unwrap()
        .close()
        .await;
    let (old_rows, new_rows) = (rows(&old), rows(&fresh));
    // The fixture was written at schema v2; later migrations are recorded after its rows.
    assert_eq!(old_rows.len(), 2, "the fixture is a schema 2 store");
    assert_eq!(
        new_rows.last().map(|r| r.0),
        Some(supported_schema_version())
    );
    assert_eq!(new_rows[..old_rows.len()], old_rows[..]);
    // Upgraded, the old store records the same migrations as a new one.
    Store::open(&old, StoreConfig::default())
        .await
        .unwrap()
        .close()
        .await;
    assert_eq!(rows(&old), new_rows);
}
