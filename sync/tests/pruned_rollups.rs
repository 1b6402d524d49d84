//! Sync with retention, on real SQLite files over real sessions: a change retention pruned
//! still carries the rollups of its pruned readings, so a peer that receives it later (a new
//! replica, or one behind a relay) answers aggregates over the pruned range as the device
//! does, with the same digest, and nothing is requested twice. Also: a replica that held
//! the raw readings and pruned them ends with the same rollups as one that received the
//! change pruned; so do the units the disk budget's hard limit drops; one-reading changes
//! travel as one rollup per series, minute and actor (a sparse series' go without); a peer
//! interrupted in the middle of a minute misses at most that minute; malformed rollups are
//! refused whole; the rollups go with their minute's rollups when those age out.

mod support;

use kdelta_sync::*;
use support::session::{open, sync_once};

const MIN: i64 = 60_000;
const DAY: i64 = 86_400_000;
const T0: i64 = 1_764_000_000_000 / DAY * DAY;

/// Raw readings for 3 days, rollups for 30; `keep.*` raw forever.
fn policy() -> RetentionPolicy {
    RetentionPolicy {
        readings_max_age_ms: Some((3 * DAY) as u64),
        series: vec![SeriesRetention {
            pattern: "keep.*".into(),
            max_age_ms: None,
        }],
        rollups_max_age_ms: Some((30 * DAY) as u64),
        ..RetentionPolicy::default()
    }
}

/// Day 0 and day 5 of a device: changes spanning several minutes, two changes sharing
/// minutes, and changes holding a pruned and a kept series together (one unit of them is
/// pruned, the other stays). Values are multiples of 1/4, so every sum is exact in any order.
async fn ingest(s: &Store) {
    for (day, changes) in [(0, 4), (5, 2)] {
        for c in 0..changes {
            let mut b = ReadingBatch::new();
            let from = T0 + day * DAY + c * 90_000;
            for i in 0..150 {
                let v = ((c * 150 + i) % 37) as f64 / 4.0 - 3.0;
                b.push("gh.temp", from + i * 1000, v, Some("°C"));
                if i % 10 == 0 {
                    b.push("keep.door", from + i * 1000, v * 2.0, None);
                }
            }
            s.append(b).await.unwrap();
        }
    }
}

/// Per-minute aggregates of `series` over days 0–6.
async fn minutes(s: &Store, series: &str) -> Vec<Bucket> {
    s.aggregate(&AggregateQuery {
        series: series.into(),
        from: T0,
        to: T0 + 7 * DAY,
        bucket_ms: MIN,
    })
    .await
    .unwrap()
}

/// Same version vector, digest (checked against the stored units) and readings count,
/// and the same per-minute aggregates of every series.
async fn assert_same_data(a: &Store, b: &Store) {
    assert_eq!(b.version_vector(), a.version_vector());
    assert_eq!(b.digest(), a.digest());
    assert_eq!(b.verify_digest().await.unwrap(), b.digest());
    assert_eq!(
        b.stats().await.unwrap().readings,
        a.stats().await.unwrap().readings
    );
    for series in ["gh.temp", "keep.door"] {
        let (ma, mb) = (minutes(a, series).await, minutes(b, series).await);
        assert!(!ma.is_empty());
        assert_eq!(mb, ma, "{series}");
    }
}

#[tokio::test]
async fn a_fresh_peer_gets_the_rollups_of_pruned_readings() {
    let dir = tempfile::tempdir().unwrap();
    let device = open(&dir, "device.db").await;
    ingest(&device).await;
    // A replica that takes the raw readings before the device prunes.
    let early = open(&dir, "early.db").await;
    sync_once(&early, &device).await;
    let before = minutes(&device, "gh.temp").await;

    let now = T0 + 6 * DAY;
    let report = device.prune(&policy(), now, 100).await.unwrap();
    assert_eq!((report.units, report.readings), (4, 600), "{report:?}");
    assert_eq!(
        minutes(&device, "gh.temp").await,
        before,
        "pruning moves no rollup"
    );

    let fresh = open(&dir, "fresh.db").await;
    let (sent, _) = sync_once(&fresh, &device).await;
    assert!(sent.changes_applied > 0, "{sent:?}");
    assert_same_data(&device, &fresh).await;
    assert_eq!(fresh.stats().await.unwrap().readings, 2 * 150 + 6 * 15);

    // The replica that held them raw prunes them itself: same digest, same rollups.
    early.prune(&policy(), now, 100).await.unwrap();
    assert_same_data(&device, &early).await;
    // And the fresh replica, pruning under the same policy, has nothing to prune.
    let again = fresh.prune(&policy(), now, 100).await.unwrap();
    assert_eq!(again.readings, 0, "{again:?}");
    assert_same_data(&device, &fresh).await;

    // Nothing is requested twice.
    let (i, r) = sync_once(&fresh, &device).await;
    assert_eq!((i.changes_sent, r.changes_sent), (0, 0));

    // A reopen keeps counters and rollups.
    fresh.close().await;
    let fresh = open(&dir, "fresh.db").await;
    assert_same_data(&device, &fresh).await;

    // Past the rollup age the device prunes the day-0 rollups, and the rollups of its
    // pruned units with them: a replica that joins now gets none for day 0 either.
    let later = T0 + 31 * DAY;
    device.prune(&policy(), later, 100).await.unwrap();
    fresh.prune(&policy(), later, 100).await.unwrap();
    let late = open(&dir, "late.db").await;
    sync_once(&late, &device).await;
    late.prune(&policy(), later, 100).await.unwrap();
    for s in [&device, &fresh, &late] {
        let day0: u64 = minutes(s, "gh.temp")
            .await
            .iter()
            .filter(|b| b.start < T0 + DAY)
            .map(|b| b.count)
            .sum();
        assert_eq!(day0, 0);
    }
    assert_same_data(&device, &fresh).await;
    assert_same_data(&device, &late).await;
    for s in [device, early, fresh, late] {
        s.close().await;
    }
}

#[tokio::test]
async fn the_disk_budgets_hard_limit_keeps_the_rollups_of_what_it_drops() {
    let dir = tempfile::tempdir().unwrap();
    let device = open(&dir, "device.db").await;
    ingest(&device).await;
    // Nothing acknowledged upstream: the hard limit drops day 0 anyway and records a gap.
    let unacked = Unacked::Drop(VersionVector::new());
    let report = device
        .prune_before(T0 + 3 * DAY, 100, &unacked)
        .await
        .unwrap();
    assert_eq!(report.dropped_unacked, 4 * 165, "{report:?}");
    assert!(report.gaps > 0, "{report:?}");
    let fresh = open(&dir, "fresh.db").await;
    sync_once(&fresh, &device).await;
    assert_same_data(&device, &fresh).await;
    let day0: u64 = minutes(&fresh, "gh.temp")
        .await
        .iter()
        .filter(|b| b.start < T0 + DAY)
        .map(|b| b.count)
        .sum();
    assert_eq!(
        day0,
        4 * 150,
        "the dropped readings still count in the rollups"
    );
    for s in [device, fresh] {
        s.close().await;
    }
}

/// One-reading changes, as the agent's one-second batching makes them: `seconds` changes
/// of `gh.temp`, one a second from `from`, values multiples of 1/4 (exact sums in any
/// order), and every 150 s one reading of `gh.sparse` in a change of its own.
async fn ingest_one_a_second(s: &Store, from: i64, seconds: i64) {
    for i in 0..seconds {
        let mut b = ReadingBatch::new();
        b.push("gh.temp", from + i * 1000, (i % 29) as f64 / 4.0, None);
        s.append(b).await.unwrap();
        if i % 150 == 0 {
            let mut b = ReadingBatch::new();
            b.push("gh.sparse", from + i * 1000 + 1, i as f64, None);
            s.append(b).await.unwrap();
        }
    }
}

/// The count of `series`'s readings in each minute of days 0–6.
async fn counts(s: &Store, series: &str) -> Vec<(i64, u64)> {
    let buckets = minutes(s, series).await;
    buckets.iter().map(|b| (b.start, b.count)).collect()
}

#[tokio::test]
async fn one_reading_changes_travel_as_one_rollup_per_minute() {
    let dir = tempfile::tempdir().unwrap();
    let device = open(&dir, "device.db").await;
    ingest_one_a_second(&device, T0 + 30_000, 300).await;
    let before = minutes(&device, "gh.temp").await;
    // Steps of 44 readings: some minutes are pruned over two or three steps, one step
    // taking only their last 2 readings (kept too: the series is dense).
    let report = device.prune(&policy(), T0 + 6 * DAY, 44).await.unwrap();
    assert_eq!(report.units, 302, "{report:?}");
    assert_eq!(minutes(&device, "gh.temp").await, before);
    let served = device
        .changes_since(&VersionVector::new(), 1 << 20)
        .await
        .unwrap();
    let carriers: Vec<&Change> = served
        .iter()
        .filter(|c| !c.pruned_rollups.is_empty())
        .collect();
    // Six minutes touched, each split by at most one step boundary: a few rows, not 300.
    assert!(
        (6..=14).contains(&carriers.len()),
        "{} carriers",
        carriers.len()
    );
    for c in &carriers {
        assert!(c.pruned_rollups.iter().all(|r| r.series == "gh.temp"));
    }

    let fresh = open(&dir, "fresh.db").await;
    sync_once(&fresh, &device).await;
    assert_eq!(fresh.digest(), device.digest());
    assert_eq!(fresh.stats().await.unwrap().readings, 0);
    assert_eq!(
        minutes(&fresh, "gh.temp").await,
        before,
        "the fresh peer answers the device's aggregates"
    );
    // A series with one reading in 150 s: a row per reading would outweigh the readings.
    assert_eq!(counts(&device, "gh.sparse").await.len(), 2);
    let sparse = fresh
        .aggregate(&AggregateQuery {
            series: "gh.sparse".into(),
            from: T0,
            to: T0 + DAY,
            bucket_ms: MIN,
        })
        .await;
    assert!(
        matches!(&sparse, Err(StoreError::UnknownSeries(_))),
        "{sparse:?}"
    );
    for s in [device, fresh] {
        s.close().await;
    }
}

#[tokio::test]
async fn a_hub_prunes_two_devices_minutes_and_a_fresh_peer_gets_both() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(&dir, "a.db").await, open(&dir, "b.db").await);
    // Both devices write the same series into the same minutes.
    ingest_one_a_second(&a, T0, 200).await;
    ingest_one_a_second(&b, T0 + 500, 200).await;
    let hub = open(&dir, "hub.db").await;
    sync_once(&hub, &a).await;
    sync_once(&hub, &b).await;
    let before = minutes(&hub, "gh.temp").await;
    assert_eq!(before.iter().map(|m| m.count).sum::<u64>(), 400);
    hub.prune(&policy(), T0 + 6 * DAY, 70).await.unwrap();
    let fresh = open(&dir, "fresh.db").await;
    sync_once(&fresh, &hub).await;
    assert_eq!(fresh.digest(), hub.digest());
    assert_eq!(minutes(&fresh, "gh.temp").await, before);
    // Each device's share is carried by one of its own changes.
    let served = hub
        .changes_since(&VersionVector::new(), 1 << 20)
        .await
        .unwrap();
    for actor in [a.actor(), b.actor()] {
        assert!(
            served
                .iter()
                .any(|c| c.actor == actor && !c.pruned_rollups.is_empty())
        );
    }
    for s in [a, b, hub, fresh] {
        s.close().await;
    }
}

#[tokio::test]
async fn a_peer_that_stopped_mid_minute_misses_at_most_that_minute() {
    let dir = tempfile::tempdir().unwrap();
    let device = open(&dir, "device.db").await;
    let peer = open(&dir, "peer.db").await;
    // Minute 0's first 30 readings reach the peer raw; the rest of minute 0 and minutes 1
    // and 2 are written after, and the device prunes all of them before the peer returns.
    ingest_one_a_second(&device, T0, 30).await;
    sync_once(&peer, &device).await;
    for i in 30..180 {
        let mut b = ReadingBatch::new();
        b.push("gh.temp", T0 + i * 1000, (i % 29) as f64 / 4.0, None);
        device.append(b).await.unwrap();
    }
    let before = counts(&device, "gh.temp").await;
    device.prune(&policy(), T0 + 6 * DAY, 1000).await.unwrap();
    sync_once(&peer, &device).await;
    peer.prune(&policy(), T0 + 6 * DAY, 1000).await.unwrap();
    assert_eq!(peer.digest(), device.digest());
    let got = counts(&peer, "gh.temp").await;
    // Minute 0's rollups ride with its first change, which the peer held raw: it keeps
    // the 30 it had and misses the other 30. Minutes 1 and 2 arrive whole.
    assert_eq!(before, vec![(T0, 60), (T0 + MIN, 60), (T0 + 2 * MIN, 60)]);
    assert_eq!(got, vec![(T0, 30), (T0 + MIN, 60), (T0 + 2 * MIN, 60)]);
    for s in [device, peer] {
        s.close().await;
    }
}

#[tokio::test]
async fn rollups_of_pruned_readings_cross_a_relay() {
    let dir = tempfile::tempdir().unwrap();
    let device = open(&dir, "device.db").await;
    let hub = open(&dir, "hub.db").await;
    let other = open(&dir, "other.db").await;
    ingest(&device).await;
    device.prune(&policy(), T0 + 6 * DAY, 1000).await.unwrap();
    // The hub receives the pruned changes with their rollups and relays them: the other
    // device never talks to the first.
    sync_once(&hub, &device).await;
    sync_once(&other, &hub).await;
    assert_same_data(&device, &hub).await;
    assert_same_data(&device, &other).await;
    let relayed = hub
        .changes_since(&VersionVector::new(), 1 << 20)
        .await
        .unwrap();
    let served = device
        .changes_since(&VersionVector::new(), 1 << 20)
        .await
        .unwrap();
    assert!(served.iter().any(|c| !c.pruned_rollups.is_empty()));
    assert_eq!(
        relayed, served,
        "the hub serves what it received, rollups included"
    );
    for s in [device, hub, other] {
        s.close().await;
    }
}

#[tokio::test]
async fn malformed_rollups_of_pruned_readings_are_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let device = open(&dir, "device.db").await;
    ingest(&device).await;
    device.prune(&policy(), T0 + 6 * DAY, 1000).await.unwrap();
    let served = device
        .changes_since(&VersionVector::new(), 1 << 20)
        .await
        .unwrap();
    let at = served
        .iter()
        .position(|c| !c.pruned_rollups.is_empty())
        .unwrap();
    type Tamper = fn(&mut Change);
    let tampers: [(&str, Tamper); 5] = [
        ("no readings", |c| c.pruned_rollups[0].minutes[0].n = 0),
        ("min above max", |c| {
            c.pruned_rollups[0].minutes[0].min = f64::MAX;
        }),
        ("not finite", |c| {
            c.pruned_rollups[0].minutes[0].sum = f64::INFINITY;
        }),
        ("both held and summarised", |c| {
            c.pruned_rollups[0].series = "keep.door".into();
        }),
        ("units pruned", |c| {
            let mut extra = c.pruned_rollups[0].clone();
            extra.series = "gh.other".into();
            c.pruned_rollups.push(extra);
        }),
    ];
    let victim = open(&dir, "victim.db").await;
    let digest = victim.digest();
    for (why, tamper) in tampers {
        let mut changes = served[..=at].to_vec();
        tamper(&mut changes[at]);
        let err = victim.apply_remote(changes).await.unwrap_err();
        let text = err.to_string();
        assert_eq!(err.code(), "invalid_pruned_rollups", "{why}: {text}");
        assert!(text.contains(why), "{why}: {text}");
        let c = &served[at];
        assert!(text.contains(&format!("{}:{}", c.actor, c.seq)), "{text}");
        assert!(victim.version_vector().is_empty(), "nothing stored");
        assert_eq!(victim.digest(), digest);
        let stats = victim.stats().await.unwrap();
        assert_eq!((stats.changes, stats.series, stats.readings), (0, 0, 0));
    }
    // The same changes untampered are taken.
    victim.apply_remote(served).await.unwrap();
    assert_same_data(&device, &victim).await;
    for s in [device, victim] {
        s.close().await;
    }
}
