//! A store stamped in the future, rebased (`docs/clock.md`, "A store stamped in the
//! future"): two real stores (temp SQLite files) with injected clocks, a `device`
//! credential bound at the hub. The device wrote a year ahead, its clock was corrected, it
//! rebased: its new changes reach the hub and the hub's reach it, its credential moves on
//! to the new actor, the year-ahead changes stay held back until their time (and then
//! apply, through the same credential) — also at a hub that first meets it after the
//! rebase. A forged succession record is refused and rebinds nothing; a plain rekey (a
//! cloned card) makes no record at all.

use std::sync::Arc;
use std::time::Duration;

use kdelta_sync::protocol::*;
use kdelta_sync::seal::SigningKey;
use kdelta_sync::*;
use tokio::sync::watch;
use tokio::time::timeout;

const TOKEN: &str = "correct horse battery staple";
const DEADLINE: Duration = Duration::from_secs(20);
const YEAR_MS: u64 = 365 * 86_400_000;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A store whose wall clock reads `wall_ms` until the test moves it, trusted.
async fn open_at(path: &std::path::Path, wall_ms: u64) -> (Store, Arc<ManualTime>) {
    let time = ManualTime::new(wall_ms);
    let store = Store::open_with_time(path, StoreConfig::default(), time.clone())
        .await
        .unwrap();
    store.time_reference().set_local_trusted(true);
    (store, time)
}

fn config() -> SyncConfig {
    SyncConfig {
        mode: SessionMode::OneShot,
        handshake_timeout: Duration::from_secs(5),
        ..SyncConfig::default()
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

type SessionResult = Result<SessionSummary, ProtocolError>;

/// One one-shot session `device` → `hub`, the hub holding the token as a `device`
/// credential named "pi"; the hub's counters.
async fn sync(device: &Store, hub: &Store) -> (SessionResult, SessionResult, StatsSnapshot) {
    let ((i_tx, i_rx), (r_tx, r_rx)) = memory_link(8);
    let i = SyncSession::initiator(
        device.clone(),
        SyncConfig {
            token: Some(TOKEN.into()),
            peer_name: "pi".into(),
            ..config()
        },
    );
    let auth: Arc<dyn Authenticator> = Arc::new(TokenAuthenticator::new().with_token("pi", TOKEN));
    let r = SyncSession::responder(hub.clone(), config(), auth).with_peer_role(PeerRole::Device);
    let stats = r.stats();
    let (_stop, rx) = watch::channel(false);
    let ih = tokio::spawn(i.run(i_tx, i_rx, stopped(rx.clone())));
    let rh = tokio::spawn(r.run(r_tx, r_rx, stopped(rx)));
    let i = timeout(DEADLINE, ih).await.unwrap().unwrap();
    let r = timeout(DEADLINE, rh).await.unwrap().unwrap();
    (i, r, stats.snapshot())
}

async fn readings(store: &Store, series: &str, at_ms: u64, changes: usize) {
    for c in 0..changes {
        let mut b = ReadingBatch::new();
        b.push(series, (at_ms + c as u64 * 1000) as i64, c as f64, None);
        store.append(b).await.unwrap();
    }
}

async fn winner(store: &Store, key: &str) -> Option<serde_json::Value> {
    store.get(key).await.unwrap()?.winner.value
}

#[tokio::test]
async fn a_device_rebased_after_a_year_ahead_syncs_both_ways_with_a_correct_hub() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    let (hub, hub_time) = open_at(&dir.path().join("hub.db"), now).await;
    let path = dir.path().join("pi.db");

    // The Pi's clock runs a year ahead: what it writes is held back by the hub, which
    // binds the credential to it all the same.
    let (pi, _) = open_at(&path, now + YEAR_MS).await;
    let old = pi.actor();
    readings(&pi, "pi.temp", now + YEAR_MS, 3).await;
    pi.put("pi/state", &serde_json::json!("ahead"))
        .await
        .unwrap();
    let (i, r, stats) = sync(&pi, &hub).await;
    assert!(i.is_ok() && r.is_ok(), "{i:?} {r:?}");
    assert_eq!(stats.changes_quarantined, 4);
    assert_eq!(hub.version_vector().get(&old), 0);
    assert_eq!(
        hub.credential_bindings().await.unwrap(),
        vec![("pi".to_owned(), old)]
    );
    pi.close().await;

    // NTP corrected the clock. Reopened, the store still stamps after its year-ahead
    // changes: that is the trouble.
    let (pi, _) = open_at(&path, now).await;
    let stuck = pi
        .put("pi/state", &serde_json::json!("stuck"))
        .await
        .unwrap();
    assert!(stuck.hlc.ms() > now + YEAR_MS - 60_000, "{}", stuck.hlc);
    pi.close().await;

    // The rebase: a new actor, seeded from the trusted time.
    let lead = Store::clock_lead(&path).await.unwrap();
    assert_eq!(lead.actor, old);
    assert!(lead.is_ahead_of(now, StoreConfig::default().max_clock_offset_ms));
    let record = Store::rebase_clock(&path, now).await.unwrap();
    assert_eq!(record.old, old);
    record.check(None).unwrap();
    let (pi, _) = open_at(&path, now).await;
    assert_eq!(pi.actor(), record.new);
    assert_eq!(pi.successions().await.unwrap(), vec![record.clone()]);
    let fresh = pi
        .put("pi/state", &serde_json::json!("rebased"))
        .await
        .unwrap();
    assert!(fresh.hlc.ms() < now + 60_000, "{}", fresh.hlc);
    readings(&pi, "pi.temp", now, 2).await;
    hub.put("fleet/setpoint", &serde_json::json!(21))
        .await
        .unwrap();

    // Both ways: the new actor's changes reach the hub, the hub's reach the Pi; the
    // credential moved on to the new actor and keeps the old one as its predecessor.
    let (i, r, stats) = sync(&pi, &hub).await;
    assert!(i.is_ok() && r.is_ok(), "{i:?} {r:?}");
    assert_eq!(hub.version_vector().get(&record.new), 3);
    assert_eq!(hub.version_vector().get(&old), 0, "still held back");
    assert_eq!(stats.changes_quarantined, 5);
    assert_eq!(stats.changes_refused, 0);
    assert_eq!(stats.bound_actor, Some(record.new));
    assert_eq!(
        hub.credential_bindings().await.unwrap(),
        vec![("pi".to_owned(), record.new)]
    );
    assert_eq!(hub.credential_predecessors("pi").await.unwrap(), vec![old]);
    assert_eq!(
        winner(&hub, "pi/state").await,
        Some(serde_json::json!("rebased"))
    );
    assert_eq!(
        winner(&pi, "fleet/setpoint").await,
        Some(serde_json::json!(21))
    );
    // The next session follows no record: the credential is bound to the new actor.
    let (i, r, _) = sync(&pi, &hub).await;
    assert!(i.is_ok() && r.is_ok(), "{i:?} {r:?}");

    // A second hub meets the Pi only after the rebase: the credential's first use binds
    // the start of the Pi's chain and follows it, so the old actor is allowed there too.
    let (hub2, hub2_time) = open_at(&dir.path().join("hub2.db"), now).await;
    let (i, r, stats) = sync(&pi, &hub2).await;
    assert!(i.is_ok() && r.is_ok(), "{i:?} {r:?}");
    // Held back: the old actor's five; refused: only the first hub's change the Pi relays
    // (a device credential sends its own actors' changes only).
    assert_eq!((stats.changes_quarantined, stats.changes_refused), (5, 1));
    let refusal = stats.last_refusal.unwrap().message;
    assert!(refusal.contains(&hub.actor().to_string()), "{refusal}");
    assert_eq!(hub2.version_vector().get(&record.new), 3);
    assert_eq!(
        hub2.credential_bindings().await.unwrap(),
        vec![("pi".to_owned(), record.new)]
    );
    assert_eq!(hub2.credential_predecessors("pi").await.unwrap(), vec![old]);

    // A year on, the old actor's changes are due: the same credential brings them, and the
    // stores converge.
    hub2_time.set(now + YEAR_MS + 120_000);
    let (i, r, stats) = sync(&pi, &hub2).await;
    assert!(i.is_ok() && r.is_ok(), "{i:?} {r:?}");
    assert_eq!((stats.changes_quarantined, stats.changes_refused), (0, 1));
    assert_eq!(hub2.version_vector().get(&old), 5);
    hub_time.set(now + YEAR_MS + 120_000);
    let (i, r, stats) = sync(&pi, &hub).await;
    assert!(i.is_ok() && r.is_ok(), "{i:?} {r:?}");
    assert_eq!((stats.changes_quarantined, stats.changes_refused), (0, 0));
    assert_eq!(hub.version_vector().get(&old), 5);
    assert_eq!(hub.version_vector(), pi.version_vector());
    assert_eq!(hub.digest(), pi.digest());
    assert_eq!(hub.verify_digest().await.unwrap(), hub.digest());
    // Causally, the rebased write superseded the year-ahead ones it had seen.
    assert_eq!(
        winner(&hub, "pi/state").await,
        Some(serde_json::json!("rebased"))
    );
}

/// Writes `record` into the closed store at `path` as its own succession record.
fn plant(path: &std::path::Path, record: &Succession) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
        rusqlite::params![format!("own_succession/{}", record.new), record.to_bytes()],
    )
    .unwrap();
}

#[tokio::test]
async fn a_forged_succession_is_refused_and_rebinds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    let (hub, _) = open_at(&dir.path().join("hub.db"), now).await;
    let (pi, _) = open_at(&dir.path().join("pi.db"), now).await;
    readings(&pi, "pi.temp", now, 2).await;
    let (i, r, _) = sync(&pi, &hub).await;
    assert!(i.is_ok() && r.is_ok(), "{i:?} {r:?}");
    let bound = pi.actor();

    // Another store claims the Pi's credential with a record signed by its own key.
    let thief_path = dir.path().join("thief.db");
    let (thief, _) = open_at(&thief_path, now).await;
    let thief_actor = thief.actor();
    thief.close().await;
    let own_key = SigningKey::generate().unwrap();
    let forged = Succession::sign(bound, &own_key, thief_actor, own_key.public(), now);
    plant(&thief_path, &forged);
    let (thief, _) = open_at(&thief_path, now).await;
    readings(&thief, "thief.temp", now, 1).await;
    let (_, r, _) = sync(&thief, &hub).await;
    match r {
        Err(ProtocolError::ForgedSuccession {
            principal,
            old,
            new,
            reason,
        }) => {
            assert_eq!((principal.as_str(), old, new), ("pi", bound, thief_actor));
            assert!(
                matches!(reason, SuccessionError::WrongOldKey { .. }),
                "{reason:?}"
            );
        }
        other => panic!("expected forged_succession, got {other:?}"),
    }
    // A record naming the right key but not signed by it: refused too.
    thief.close().await;
    let mut unsigned = forged.clone();
    unsigned.old_key = pi.actor_key(bound).await.unwrap().unwrap();
    plant(&thief_path, &unsigned);
    let (thief, _) = open_at(&thief_path, now).await;
    let (_, r, _) = sync(&thief, &hub).await;
    let err = r.unwrap_err();
    assert_eq!(err.code(), "forged_succession");
    assert!(
        err.to_string().contains("signature") && err.to_string().contains("\"pi\""),
        "{err}"
    );
    // Nothing moved: the credential is still the Pi's, which still syncs.
    assert_eq!(
        hub.credential_bindings().await.unwrap(),
        vec![("pi".to_owned(), bound)]
    );
    assert!(hub.credential_predecessors("pi").await.unwrap().is_empty());
    assert_eq!(hub.version_vector().get(&thief_actor), 0);
    let (i, r, _) = sync(&pi, &hub).await;
    assert!(i.is_ok() && r.is_ok(), "{i:?} {r:?}");

    // A plain rekey (a cloned card) makes no record: the clone cannot take the credential.
    let pi_path = dir.path().join("pi.db");
    pi.close().await;
    let clone = Store::rekey(&pi_path).await.unwrap();
    let (pi, _) = open_at(&pi_path, now).await;
    assert_eq!(pi.actor(), clone);
    assert!(pi.successions().await.unwrap().is_empty());
    let (_, r, _) = sync(&pi, &hub).await;
    assert_eq!(r.unwrap_err().code(), "credential_bound");
}

/// A rebased store that is re-keyed afterwards (a restored backup, an imaged card) keeps
/// its clock: the actors it gave up stay out of its clock's floor.
#[tokio::test]
async fn a_rebased_store_rekeyed_later_still_stamps_by_its_clock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pi.db");
    let now = now_ms();
    let (pi, _) = open_at(&path, now + YEAR_MS).await;
    readings(&pi, "pi.temp", now + YEAR_MS, 2).await;
    pi.close().await;
    Store::rebase_clock(&path, now).await.unwrap();
    let rekeyed = Store::rekey(&path).await.unwrap();
    let (pi, _) = open_at(&path, now).await;
    assert_eq!(pi.actor(), rekeyed);
    assert!(
        pi.successions().await.unwrap().is_empty(),
        "no chain to the new actor"
    );
    let v = pi.put("k", &serde_json::json!(1)).await.unwrap();
    assert!(v.hlc.ms() < now + 60_000, "{}", v.hlc);
}
