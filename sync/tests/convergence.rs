//! Property test of the CRDT merge: 3–5 replicas make random local changes (reading batches,
//! puts, deletes, concurrent puts to the same keys, document batches over several keys —
//! some resolving only the siblings they name), prune document history at random points
//! (one policy for all: count limits, an age limit, a key kept whole) and exchange changes in
//! random order, in partial pages, with duplicates and out-of-order deliveries — so pruned
//! versions travel as pruned changes, sometimes ahead of the versions that superseded them.
//! After a full exchange and one more prune everywhere, every replica has the same version
//! vector, the same digest (incremental and recomputed) and the same document states and
//! histories, and each key's state as of every point of its history is the one its history
//! gives.

use kdelta_sync::*;
use proptest::prelude::*;
use serde_json::json;

const T0: i64 = 1_764_000_000_000;

#[derive(Debug, Clone)]
enum Op {
    Batch {
        series: u8,
        start: u16,
        n: u8,
    },
    Put {
        key: u8,
        value: i32,
    },
    Delete {
        key: u8,
    },
    /// One `write_batch` over distinct keys: `(key, value or delete, resolve only the
    /// winner instead of every sibling)`.
    DocBatch {
        writes: Vec<(u8, Option<i32>, bool)>,
    },
}

#[derive(Debug, Clone)]
enum Step {
    Local {
        replica: usize,
        op: Op,
    },
    /// Document retention on one replica, with [`doc_policy`] at [`prune_now`].
    Prune {
        replica: usize,
    },
    /// Deliver the pages `from` has for `to`, page budget in bytes, in a shuffled order with
    /// some pages duplicated.
    Sync {
        from: usize,
        to: usize,
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
            (proptest::option::weighted(0.8, any::<i32>()), any::<bool>()),
            1..4
        )
        .prop_map(|m| Op::DocBatch {
            writes: m
                .into_iter()
                .map(|(k, (v, winner_only))| (k, v, winner_only))
                .collect()
        }),
    ]
}

fn steps(replicas: usize) -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(
        prop_oneof![
            3 => (0..replicas, op()).prop_map(|(replica, op)| Step::Local { replica, op }),
            1 => (0..replicas, 0..replicas, 1u16..2000, any::<u64>(), any::<bool>())
                .prop_map(|(from, to, budget, shuffle, dup)| Step::Sync { from, to, budget, shuffle, dup }),
            1 => (0..replicas).prop_map(|replica| Step::Prune { replica }),
        ],
        1..40,
    )
}

async fn run_local(s: &Store, replica: usize, op: &Op) {
    match op {
        Op::Batch { series, start, n } => {
            let mut b = ReadingBatch::new();
            for i in 0..*n as i64 {
                // Different replicas may write the same series and even the same timestamps.
                b.push(
                    &format!("s{series}"),
                    T0 + *start as i64 * 10 + i,
                    (replica as f64) * 1000.0 + i as f64,
                    Some("V"),
                );
            }
            s.append(b).await.unwrap();
        }
        Op::Put { key, value } => {
            s.put(&format!("k{key}"), &json!({"v": value, "by": replica}))
                .await
                .unwrap();
        }
        Op::Delete { key } => match s.delete(&format!("k{key}")).await {
            Ok(_) | Err(StoreError::UnknownKey(_)) => {}
            Err(e) => panic!("delete failed: {e}"),
        },
        Op::DocBatch { writes } => {
            let mut entries = Vec::new();
            for (k, value, winner_only) in writes {
                let key = format!("k{k}");
                let mut e = match value {
                    Some(v) => BatchEntry::put(&key, json!({"v": v, "by": replica, "batch": true})),
                    None => BatchEntry::delete(&key),
                };
                if *winner_only && let Some(state) = s.get(&key).await.unwrap() {
                    e = e.with_context(vec![Dot {
                        actor: state.winner.actor,
                        seq: state.winner.seq,
                    }]);
                }
                entries.push(e);
            }
            match s.write_batch(entries).await {
                Ok(v) => assert!(v.iter().all(|x| x.seq == v[0].seq)),
                // A delete of a key without a live value refuses the whole batch.
                Err(e) if e.innermost().code() == "unknown_key" => {}
                Err(e) => panic!("batch failed: {e}"),
            }
        }
    }
}

/// Delivers what `from` has for `to` as shuffled pages; pages that arrive before their
/// predecessors are refused (seq gap) and must leave `to` untouched.
async fn deliver(from: &Store, to: &Store, budget: usize, mut shuffle: u64, dup: bool) {
    let mut theirs = to.version_vector();
    let mut pages = Vec::new();
    loop {
        let page = from.changes_since(&theirs, budget).await.unwrap();
        if page.is_empty() {
            break;
        }
        for c in &page {
            theirs.set(c.actor, theirs.get(&c.actor).max(c.seq));
        }
        pages.push(page);
        if pages.len() > 200 {
            break;
        }
    }
    if dup && !pages.is_empty() {
        let again = pages[0].clone();
        pages.push(again);
    }
    for i in (1..pages.len()).rev() {
        shuffle ^= shuffle << 13;
        shuffle ^= shuffle >> 7;
        shuffle ^= shuffle << 17;
        pages.swap(i, (shuffle % (i as u64 + 1)) as usize);
    }
    for page in pages {
        let before = (to.version_vector(), to.digest());
        match to.apply_remote(page).await {
            Ok(_) => {}
            Err(StoreError::SeqGap { .. }) => assert_eq!(
                before,
                (to.version_vector(), to.digest()),
                "a refused page changed the store"
            ),
            Err(e) => panic!("apply failed: {e}"),
        }
    }
}

/// Each key's state, siblings and whole history (pruned versions included).
type KeyState = (String, Option<DocState>, Vec<DocVersion>, Vec<DocVersion>);

async fn doc_states(s: &Store) -> Vec<KeyState> {
    let mut out = Vec::new();
    for k in 0..4 {
        let key = format!("k{k}");
        out.push((
            key.clone(),
            s.get(&key).await.unwrap(),
            s.siblings(&key).await.unwrap(),
            s.history(&key, MAX_HISTORY_PAGE, None).await.unwrap(),
        ));
    }
    out
}

/// Every key's state as of each point of its history (each version's HLC, and just before
/// the first) is what its history says: the heads among the versions stamped up to then,
/// the winner the highest (HLC, actor) — a pruned winner answered as `HistoryPruned`.
async fn assert_as_of_follows_history(s: &Store) {
    for k in 0..4 {
        let key = format!("k{k}");
        let history = s.history(&key, MAX_HISTORY_PAGE, None).await.unwrap();
        let mut points: Vec<Hlc> = history.iter().map(|v| v.hlc).collect();
        points.sort();
        points.dedup();
        if let Some(first) = points.first().copied() {
            let before = Hlc(first.0 - 1);
            assert!(matches!(
                s.get_as_of(&key, AsOf::Hlc(before)).await,
                Err(StoreError::BeforeHistory { .. })
            ));
        }
        for at in points {
            let upto: Vec<DocVersion> = history.iter().filter(|v| v.hlc <= at).cloned().collect();
            let want = doc_state(doc_heads(upto)).expect("a version at its own HLC");
            match s.get_as_of(&key, AsOf::Hlc(at)).await {
                Ok(got) => assert_eq!(got, Some(want), "{key} as of {at:?}"),
                Err(StoreError::HistoryPruned { .. }) => {
                    assert!(want.winner.pruned, "{key} as of {at:?}: {want:?}")
                }
                Err(e) => panic!("{key} as of {at:?}: {e}"),
            }
        }
    }
}

/// The document retention every replica runs: k0 and k1 keep 2 versions, k2 versions
/// older than a minute (at [`prune_now`], every non-head), k3 everything.
fn doc_policy() -> RetentionPolicy {
    let rule = |keep_versions, max_age_ms| DocRule {
        keep_versions,
        max_age_ms,
    };
    RetentionPolicy {
        docs: DocRetention {
            default: rule(Some(2), None),
            keys: vec![
                KeyRetention {
                    pattern: "k2".into(),
                    rule: rule(None, Some(60_000)),
                },
                KeyRetention {
                    pattern: "k3".into(),
                    rule: rule(None, None),
                },
            ],
        },
        ..RetentionPolicy::default()
    }
}

/// The `now` of every prune: a day after the wall clock (one value per process, so earlier
/// prunes never see a later time than the last).
fn prune_now() -> i64 {
    static NOW: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *NOW.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
            + 86_400_000
    })
}

fn scenario() -> impl Strategy<Value = (usize, Vec<Step>)> {
    (3usize..=5).prop_flat_map(|n| (Just(n), steps(n)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]
    #[test]
    fn replicas_converge_whatever_the_delivery_order((n, steps) in scenario()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let dir = tempfile::tempdir().unwrap();
            let mut stores = Vec::new();
            for i in 0..n {
                stores.push(Store::open(dir.path().join(format!("r{i}.db")), StoreConfig::default()).await.unwrap());
            }
            for step in &steps {
                match step {
                    Step::Local { replica, op } => run_local(&stores[*replica], *replica, op).await,
                    Step::Sync { from, to, budget, shuffle, dup } if from != to => {
                        deliver(&stores[*from], &stores[*to], *budget as usize, *shuffle | 1, *dup).await
                    }
                    Step::Sync { .. } => {}
                    Step::Prune { replica } => {
                        stores[*replica].prune(&doc_policy(), prune_now(), 3).await.unwrap();
                    }
                }
            }
            // Full exchange: a ring twice around reaches everyone; then every replica prunes.
            // One page per delivery (a shuffled second page would be a gap, dropped): the
            // budget holds every change with its seal.
            for _ in 0..2 {
                for i in 0..n {
                    deliver(&stores[i], &stores[(i + 1) % n], 1 << 20, 7, false).await;
                }
            }
            for s in &stores {
                s.prune(&doc_policy(), prune_now(), 1000).await.unwrap();
            }
            let vv0 = stores[0].version_vector();
            let digest0 = stores[0].digest();
            let docs0 = doc_states(&stores[0]).await;
            let series0 = stores[0].series().await.unwrap();
            for s in &stores {
                assert_eq!(s.version_vector(), vv0);
                assert_eq!(s.digest(), digest0);
                assert_eq!(s.verify_digest().await.unwrap(), digest0);
                assert_eq!(doc_states(s).await, docs0);
                assert_eq!(s.series().await.unwrap(), series0);
                assert_as_of_follows_history(s).await;
            }
            let total: u64 = steps.iter().filter(|s| matches!(s, Step::Local { .. })).count() as u64;
            assert!(vv0.total() <= total);
        });
    }
}

/// Milliseconds in a (Julian) year.
const YEAR_MS: i64 = 31_557_600_000;
/// Wall time of a replica with a correct clock: 2026-11-25.
const NOW_MS: i64 = 1_764_000_000_000;

/// A wall-clock offset from the correct time: from 55 years behind (a Pi booted in 1970) to
/// one year ahead, with the common cases (exact, minutes off, weeks behind) weighted in.
fn clock_offset() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0i64),
        -600_000i64..600_000,
        Just(-14 * 86_400_000i64),
        Just(-NOW_MS + 5_000), // 1970-01-01, five seconds after boot
        -55 * YEAR_MS..YEAR_MS,
    ]
}

#[derive(Debug, Clone)]
enum ClockStep {
    Step(Step),
    /// The replica's wall clock jumps to a new offset (NTP answering, a reboot, a bad RTC).
    Jump {
        replica: usize,
        offset_ms: i64,
    },
}

fn clocked_scenario() -> impl Strategy<Value = (Vec<i64>, Vec<ClockStep>)> {
    (3usize..=4).prop_flat_map(|n| {
        let step = prop_oneof![
            6 => steps(n).prop_map(|s| s.into_iter().map(ClockStep::Step).collect::<Vec<_>>()),
            1 => (0..n, clock_offset())
                .prop_map(|(replica, offset_ms)| vec![ClockStep::Jump { replica, offset_ms }]),
        ];
        (
            proptest::collection::vec(clock_offset(), n),
            proptest::collection::vec(step, 1..4).prop_map(|v| v.concat()),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]
    /// The same merge with every replica's wall clock wrong by its own amount (−55 years to
    /// +1 year) and jumping while it runs: replicas still converge, and no replica's HLC ever
    /// runs backwards — a change made after others were seen is stamped after them, whatever
    /// the wall clock says (far-future protection is the protocol's, judged elsewhere; the
    /// offset bound is opened here so every change is delivered).
    #[test]
    fn replicas_with_wrong_and_jumping_clocks_converge((offsets, steps) in clocked_scenario()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let dir = tempfile::tempdir().unwrap();
            let config = StoreConfig {
                max_clock_offset_ms: (60 * YEAR_MS) as u64,
                ..StoreConfig::default()
            };
            let wall = |offset: i64| (NOW_MS + offset).max(0) as u64;
            let mut clocks = Vec::new();
            let mut stores = Vec::new();
            for (i, offset) in offsets.iter().enumerate() {
                let clock = ManualTime::new(wall(*offset));
                stores.push(
                    Store::open_with_time(dir.path().join(format!("r{i}.db")), config.clone(), clock.clone())
                        .await
                        .unwrap(),
                );
                clocks.push(clock);
            }
            let n = stores.len();
            for step in &steps {
                match step {
                    ClockStep::Jump { replica, offset_ms } => clocks[*replica].set(wall(*offset_ms)),
                    ClockStep::Step(Step::Local { replica, op }) => {
                        let s = &stores[*replica];
                        let before = s.last_hlc();
                        run_local(s, *replica, op).await;
                        assert!(s.last_hlc() >= before, "replica {replica}'s HLC ran backwards");
                        if matches!(op, Op::Put { .. }) {
                            assert!(s.last_hlc() > before, "a put was not stamped after what replica {replica} had seen");
                        }
                    }
                    ClockStep::Step(Step::Sync { from, to, budget, shuffle, dup }) if from != to => {
                        let before = stores[*to].last_hlc();
                        deliver(&stores[*from], &stores[*to], *budget as usize, *shuffle | 1, *dup).await;
                        assert!(stores[*to].last_hlc() >= before);
                    }
                    ClockStep::Step(Step::Sync { .. }) => {}
                    ClockStep::Step(Step::Prune { replica }) => {
                        stores[*replica].prune(&doc_policy(), prune_now(), 3).await.unwrap();
                    }
                }
            }
            // One page per delivery (a shuffled second page would be a gap, dropped): the
            // budget holds every change with its seal.
            for _ in 0..2 {
                for i in 0..n {
                    deliver(&stores[i], &stores[(i + 1) % n], 1 << 20, 7, false).await;
                }
            }
            for s in &stores {
                s.prune(&doc_policy(), prune_now(), 1000).await.unwrap();
            }
            let vv0 = stores[0].version_vector();
            let digest0 = stores[0].digest();
            let docs0 = doc_states(&stores[0]).await;
            for s in &stores {
                assert_eq!(s.version_vector(), vv0);
                assert_eq!(s.digest(), digest0);
                assert_eq!(s.verify_digest().await.unwrap(), digest0);
                assert_eq!(doc_states(s).await, docs0);
            }
            // After the full exchange every replica has seen every change: a new put anywhere
            // is stamped after all of them and wins, even on the replica whose clock is
            // furthest behind.
            let slowest = (0..n).min_by_key(|&i| clocks[i].now_ms()).unwrap();
            let newest = stores.iter().map(|s| s.last_hlc()).max().unwrap();
            let v = stores[slowest].put("k0", &json!({"last": true})).await.unwrap();
            assert!(v.hlc > newest, "{} is not after {}", v.hlc, newest);
        });
    }
}

/// Within this of the true time a clock counts as synchronised in the trust tests (what NTP
/// gives, with room).
const SYNCED_MS: i64 = 60_000;

/// One session's worth of delivery, judged as a real session judges it: first the handshake
/// (each side records the other's clock claim, taken only when the claimant trusts its own
/// clock), then `from`'s pages for `to`, where a change stamped further ahead of `to`'s
/// trusted time than the max offset is held back with the rest of its actor's changes while
/// the others apply (`protocol/quarantine.rs`). Returns how many changes were held back.
async fn deliver_judged(from: &Store, to: &Store) -> usize {
    to.time_reference()
        .observe_peer(from.actor(), from.clock_claim());
    from.time_reference()
        .observe_peer(to.actor(), to.clock_claim());
    let mut theirs = to.version_vector();
    let mut held_actors = std::collections::HashSet::new();
    let mut held = 0;
    for _ in 0..200 {
        let page = from.changes_since(&theirs, 1 << 20).await.unwrap();
        if page.is_empty() {
            break;
        }
        for c in &page {
            theirs.set(c.actor, theirs.get(&c.actor).max(c.seq));
        }
        let mut accepted = Vec::new();
        for c in page {
            if held_actors.contains(&c.actor) || to.check_remote_time(c.actor, c.hlc).is_err() {
                held_actors.insert(c.actor);
                held += 1;
            } else {
                accepted.push(c);
            }
        }
        if !accepted.is_empty() {
            to.apply_remote(accepted).await.unwrap();
        }
    }
    held
}

/// Trust scenario: each replica's clock offset and whether its kernel would call it
/// synchronised (only a clock within [`SYNCED_MS`] can be), then steps with clock jumps.
fn trusted_scenario(
    max_ahead_ms: i64,
) -> impl Strategy<Value = (Vec<(i64, bool)>, Vec<ClockStep>)> {
    let offset = prop_oneof![
        Just(0i64),
        -SYNCED_MS..max_ahead_ms.min(SYNCED_MS),
        Just(-14 * 86_400_000i64),
        Just(-NOW_MS + 5_000),
        -55 * YEAR_MS..0,
    ];
    (3usize..=4).prop_flat_map(move |n| {
        let step = prop_oneof![
            6 => steps(n).prop_map(|s| s.into_iter().map(ClockStep::Step).collect::<Vec<_>>()),
            1 => (0..n, offset.clone())
                .prop_map(|(replica, offset_ms)| vec![ClockStep::Jump { replica, offset_ms }]),
        ];
        (
            proptest::collection::vec((offset.clone(), any::<bool>()), n),
            proptest::collection::vec(step, 1..4).prop_map(|v| v.concat()),
        )
    })
}

/// A clock at `offset` is trusted when its kernel says synchronised (`ntp`) and it really
/// is within [`SYNCED_MS`].
fn trusted(offset: i64, ntp: bool) -> bool {
    ntp && offset.abs() <= SYNCED_MS
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]
    /// The merge under the real trust rules (default max offset, each replica trusting its
    /// clock only when synchronised): replicas whose clocks are behind by any amount — two
    /// weeks, 1970, 55 years — or untrusted, jumping while they run, never have a change held
    /// back, and converge with the synchronised ones. Nothing behind can wedge a link.
    #[test]
    fn clocks_behind_by_any_amount_never_hold_a_change_back((clocks, steps) in trusted_scenario(SYNCED_MS)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let dir = tempfile::tempdir().unwrap();
            let wall = |offset: i64| (NOW_MS + offset).max(0) as u64;
            let mut stores = Vec::new();
            let mut times = Vec::new();
            for (i, (offset, ntp)) in clocks.iter().enumerate() {
                let time = ManualTime::new(wall(*offset));
                let s = Store::open_with_time(dir.path().join(format!("r{i}.db")), StoreConfig::default(), time.clone())
                    .await
                    .unwrap();
                s.time_reference().set_local_trusted(trusted(*offset, *ntp));
                stores.push(s);
                times.push(time);
            }
            let n = stores.len();
            let mut held = 0;
            for step in &steps {
                match step {
                    ClockStep::Jump { replica, offset_ms } => {
                        times[*replica].set(wall(*offset_ms));
                        let ntp = clocks[*replica].1;
                        stores[*replica].time_reference().set_local_trusted(trusted(*offset_ms, ntp));
                    }
                    ClockStep::Step(Step::Local { replica, op }) => run_local(&stores[*replica], *replica, op).await,
                    ClockStep::Step(Step::Sync { from, to, .. }) if from != to => {
                        held += deliver_judged(&stores[*from], &stores[*to]).await;
                    }
                    ClockStep::Step(Step::Sync { .. }) => {}
                    ClockStep::Step(Step::Prune { replica }) => {
                        stores[*replica].prune(&doc_policy(), prune_now(), 3).await.unwrap();
                    }
                }
            }
            for _ in 0..2 {
                for i in 0..n {
                    held += deliver_judged(&stores[i], &stores[(i + 1) % n]).await;
                }
            }
            assert_eq!(held, 0, "a change was held back although no clock ran ahead");
            for s in &stores {
                s.prune(&doc_policy(), prune_now(), 1000).await.unwrap();
            }
            let (vv0, digest0, docs0) = (stores[0].version_vector(), stores[0].digest(), doc_states(&stores[0]).await);
            for s in &stores {
                assert_eq!(s.version_vector(), vv0);
                assert_eq!(s.digest(), digest0);
                assert_eq!(s.verify_digest().await.unwrap(), digest0);
                assert_eq!(doc_states(s).await, docs0);
            }
        });
    }

    /// One replica trusts a clock a year ahead (`trust = "always"` on a wrong RTC) among
    /// synchronised ones: every change it stamps is held back by each of them — quarantined,
    /// counted — while everything else keeps flowing: they converge among themselves, and it
    /// still receives all their changes.
    #[test]
    fn a_trusted_clock_a_year_ahead_is_quarantined_and_the_rest_converges(
        (clocks, steps) in trusted_scenario(SYNCED_MS),
        rogue_changes in 1usize..4,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let dir = tempfile::tempdir().unwrap();
            let n = clocks.len();
            let mut stores = Vec::new();
            // The others: synchronised (their offsets clipped into the synchronised window).
            for (i, (offset, _)) in clocks.iter().enumerate() {
                let offset = (*offset).clamp(-SYNCED_MS, SYNCED_MS);
                let time = ManualTime::new((NOW_MS + offset) as u64);
                let s = Store::open_with_time(dir.path().join(format!("r{i}.db")), StoreConfig::default(), time)
                    .await
                    .unwrap();
                stores.push(s);
            }
            let rogue = Store::open_with_time(
                dir.path().join("rogue.db"),
                StoreConfig::default(),
                ManualTime::new((NOW_MS + YEAR_MS) as u64),
            )
            .await
            .unwrap();
            for i in 0..rogue_changes {
                rogue.put(&format!("k{i}"), &json!({"from": "the future"})).await.unwrap();
            }
            let mut held = 0;
            for (k, step) in steps.iter().enumerate() {
                match step {
                    ClockStep::Step(Step::Local { replica, op }) => run_local(&stores[*replica], *replica, op).await,
                    ClockStep::Step(Step::Sync { from, to, .. }) if from != to => {
                        deliver_judged(&stores[*from], &stores[*to]).await;
                    }
                    ClockStep::Step(Step::Prune { replica }) => {
                        stores[*replica].prune(&doc_policy(), prune_now(), 3).await.unwrap();
                    }
                    _ => {}
                }
                // The rogue meets someone now and then, both ways.
                let other = &stores[k % n];
                held += deliver_judged(&rogue, other).await;
                deliver_judged(other, &rogue).await;
            }
            for _ in 0..2 {
                for i in 0..n {
                    deliver_judged(&stores[i], &stores[(i + 1) % n]).await;
                    held += deliver_judged(&rogue, &stores[i]).await;
                    deliver_judged(&stores[i], &rogue).await;
                }
            }
            assert!(held >= rogue_changes, "the rogue's changes were not held back");
            for s in &stores {
                s.prune(&doc_policy(), prune_now(), 1000).await.unwrap();
            }
            let (vv0, digest0) = (stores[0].version_vector(), stores[0].digest());
            assert_eq!(vv0.get(&rogue.actor()), 0, "a change stamped a year ahead was merged");
            for s in &stores {
                assert_eq!(s.version_vector(), vv0);
                assert_eq!(s.digest(), digest0);
                assert_eq!(s.verify_digest().await.unwrap(), digest0);
            }
            for (actor, seq) in vv0.iter() {
                assert_eq!(rogue.version_vector().get(&actor), seq, "the rogue missed {actor}'s changes");
            }
        });
    }
}
