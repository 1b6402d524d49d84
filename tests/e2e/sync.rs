//! Sync between agents over `/v1/sync`: convergence, a refused token, convergence after
//! `kill -9` of the initiator mid-sync (a real process), and — through the fault-injecting
//! [`Proxy`] — convergence without loss or duplicates under random cuts and stalls, conflict
//! siblings after a partition, and resumption after a cut mid-page without resending the
//! pages already applied. Agents run in this test process ([`Node`], port 0) except where a
//! test needs a process to kill; helpers take either through [`Endpoint`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::cluster::Node;
use super::harness::{Agent, Endpoint, eventually};
use super::proxy::{Dir, Mode, Proxy};
use super::{client, get_json, post, put_json};

pub(crate) const TOKEN: &str = "hub-token-0123456789";
const DEADLINE: Duration = Duration::from_secs(30);
/// For convergence after link faults: reconnect backoff doubles while a link is cut, and the
/// machine may be busy with other tests.
pub(crate) const HEAL_DEADLINE: Duration = Duration::from_secs(120);

/// An agent process that accepts `TOKEN` from a peer named `device` (for tests that signal
/// it).
pub(crate) fn hub() -> Agent {
    Agent::builder().config(&hub_config("")).start()
}

/// An in-process agent that accepts `TOKEN` from a peer named `device`.
async fn hub_node() -> Node {
    hub_with("").await
}

/// [`hub_node`] with more `[sync]` keys (one `key = value` per line).
async fn hub_with(sync_keys: &str) -> Node {
    Node::with_config(&hub_config(sync_keys)).await
}

fn hub_config(sync_keys: &str) -> String {
    format!(
        "sources = []\ndevice_twin = false\n[sync]\naccept_tokens = [{{ name = \"device\", token = \"{TOKEN}\" }}]\n{sync_keys}"
    )
}

pub(crate) fn device_config(hub: &impl Endpoint, token: &str) -> String {
    peer_config(hub.url(), token)
}

/// A config with one outbound peer `hub` at `url` (an agent or a [`Proxy`]).
fn peer_config(url: &str, token: &str) -> String {
    format!("sources = []\n[[sync.peers]]\nname = \"hub\"\nurl = \"{url}\"\ntoken = \"{token}\"\n")
}

pub(crate) async fn ingest(
    c: &reqwest::Client,
    agent: &impl Endpoint,
    series: &str,
    from: i64,
    n: i64,
) {
    let batch: Vec<Value> = (from..from + n)
        .map(|i| json!({"series": series, "ts": 1_764_000_000_000i64 + i, "value": i as f64}))
        .collect();
    let (s, body) = post(
        c,
        &agent.at("/v1/readings"),
        "application/json",
        serde_json::to_vec(&batch).unwrap(),
    )
    .await;
    assert_eq!(s, 201, "{body}");
}

pub(crate) async fn status(c: &reqwest::Client, agent: &impl Endpoint) -> (Value, Value) {
    let (s, v) = get_json(c, &agent.at("/v1/status")).await;
    assert_eq!(s, 200, "{v}");
    (v["version_vector"].clone(), v["digest"].clone())
}

pub(crate) async fn converge(c: &reqwest::Client, a: &impl Endpoint, b: &impl Endpoint) {
    eventually(DEADLINE, "both agents to hold the same data", || async {
        let (va, da) = status(c, a).await;
        let (vb, db) = status(c, b).await;
        (va == vb && da == db).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_converge_over_websocket() {
    let c = client();
    let b = hub_node().await;
    let a = Node::with_config(&device_config(&b, TOKEN)).await;
    ingest(&c, &a, "a.temp", 0, 500).await;
    ingest(&c, &b, "b.temp", 0, 300).await;
    let (s, _) = put_json(&c, &a.at("/v1/docs/cfg/a"), &json!({"from": "a"})).await;
    assert!(s < 300);
    let (s, _) = put_json(&c, &b.at("/v1/docs/cfg/b"), &json!({"from": "b"})).await;
    assert!(s < 300);
    converge(&c, &a, &b).await;

    // Live mode: a later write reaches the other side without a reconnect.
    ingest(&c, &b, "b.temp", 300, 10).await;
    converge(&c, &a, &b).await;
    let (_, doc) = get_json(&c, &b.at("/v1/docs/cfg/a")).await;
    assert!(doc.to_string().contains("\"from\":\"a\""), "{doc}");

    let (s, peers) = get_json(&c, &a.at("/v1/sync/peers")).await;
    assert_eq!(s, 200);
    let p = &peers["peers"][0];
    assert_eq!(p["name"], "hub", "{peers}");
    assert_eq!(p["direction"], "outbound");
    assert_eq!(p["connected"], true, "{peers}");
    assert!(p["bytes_out"].as_u64().unwrap() > 0, "{peers}");
    let (_, peers) = get_json(&c, &b.at("/v1/sync/peers")).await;
    assert_eq!(peers["peers"][0]["name"], "device", "{peers}");
    assert_eq!(peers["peers"][0]["direction"], "inbound", "{peers}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_and_the_hub_is_untouched() {
    let c = client();
    let b = hub_node().await;
    let (before, _) = status(&c, &b).await;
    let a = Node::with_config(&device_config(&b, "not-the-token")).await;
    ingest(&c, &a, "a.temp", 0, 50).await;
    let err = eventually(DEADLINE, "the device to report the refusal", || async {
        let (_, peers) = get_json(&c, &a.at("/v1/sync/peers")).await;
        let e = peers["peers"][0]["last_error"].clone();
        (!e.is_null()).then_some(e)
    })
    .await;
    assert!(!err["message"].as_str().unwrap_or("").is_empty(), "{err}");
    let (after, _) = status(&c, &b).await;
    assert_eq!(before, after, "the hub's store changed");
    let (s, _) = get_json(&c, &b.at("/v1/series")).await;
    assert_eq!(s, 200);

    // An agent without accept_tokens refuses inbound sync outright.
    let closed = Node::builder().start().await;
    let r = c.get(closed.at("/v1/sync")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "sync_disabled", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_a_peer_and_names_what_changed() {
    let c = client();
    let hub = hub_node().await;
    let mut device = Node::with_config("sources = []\n").await;
    ingest(&c, &device, "d.temp", 0, 100).await;
    let diff = device.reload(&device_config(&hub, TOKEN)).await;
    assert_eq!(diff.reloadable(), vec!["sync"], "{diff:?}");
    assert!(diff.sync_peers && diff.needs_restart.is_empty(), "{diff:?}");
    converge(&c, &device, &hub).await;
    // A restart-only change is named, and the running peer keeps syncing.
    let diff = device
        .reload(&format!(
            "{}[api]\nmax_body_bytes = 65536\n",
            device_config(&hub, TOKEN)
        ))
        .await;
    assert_eq!(diff.needs_restart, vec!["api"], "{diff:?}");
    assert!(diff.reloadable().is_empty(), "{diff:?}");
    ingest(&c, &device, "d.temp", 100, 10).await;
    converge(&c, &device, &hub).await;
    device.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_the_initiator_mid_sync_then_restart_converges() {
    let c = client();
    // The hub runs in-process; the initiator is a process, so it can be killed.
    let b = hub_node().await;
    let mut a = Agent::builder().config(&device_config(&b, TOKEN)).start();
    let dir = a.keep_dir().expect("fresh temp dir");
    for i in 0..20 {
        ingest(&c, &a, "a.bulk", i * 2000, 2000).await;
    }
    ingest(&c, &b, "b.temp", 0, 100).await;
    // Kill as soon as the hub has received something, while the backlog is in flight.
    eventually(DEADLINE, "the first page at the hub", || async {
        let (_, peers) = get_json(&c, &b.at("/v1/sync/peers")).await;
        let got = peers["peers"][0]["bytes_in"].as_u64().unwrap_or(0);
        (got > 0).then_some(())
    })
    .await;
    a.kill9();
    drop(a);
    let a = Agent::builder()
        .dir(dir.path())
        .config(&device_config(&b, TOKEN))
        .start();
    converge(&c, &a, &b).await;
    let (_, series) = get_json(&c, &b.at("/v1/series")).await;
    let bulk = series["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["series"] == "a.bulk" || s["name"] == "a.bulk")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(bulk["count"], 40_000, "{series}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_devices_and_a_hub_converge() {
    let c = client();
    let hub = hub_node().await;
    let mut devices = Vec::new();
    for _ in 0..3 {
        devices.push(Node::with_config(&device_config(&hub, TOKEN)).await);
    }
    for (i, d) in devices.iter().enumerate() {
        ingest(&c, d, &format!("dev{i}.temp"), 0, 200).await;
        let (s, _) = put_json(&c, &d.at(&format!("/v1/docs/dev{i}")), &json!({"i": i})).await;
        assert!(s < 300);
    }
    ingest(&c, &hub, "hub.temp", 0, 50).await;
    // Device 0's data reaches devices 1 and 2 through the hub (relay).
    for d in &devices {
        converge(&c, &hub, d).await;
    }
    let (_, series) = get_json(&c, &devices[2].at("/v1/series")).await;
    for name in ["dev0.temp", "dev1.temp", "hub.temp"] {
        assert!(
            series.to_string().contains(name),
            "{name} missing: {series}"
        );
    }
}

/// Polls until every agent reports the same version vector and digest.
async fn converge_all<E: Endpoint>(c: &reqwest::Client, agents: &[&E], within: Duration) {
    eventually(within, "every agent to hold the same data", || async {
        let first = status(c, agents[0]).await;
        for a in &agents[1..] {
            if status(c, a).await != first {
                return None;
            }
        }
        Some(())
    })
    .await;
}

/// The first peer in an agent's `GET /v1/sync/peers`.
async fn first_peer(c: &reqwest::Client, a: &impl Endpoint) -> Value {
    let (s, peers) = get_json(c, &a.at("/v1/sync/peers")).await;
    assert_eq!(s, 200, "{peers}");
    peers["peers"][0].clone()
}

/// `count` of every series in `GET /v1/series`.
pub(crate) async fn series_counts(c: &reqwest::Client, a: &impl Endpoint) -> BTreeMap<String, u64> {
    let (s, v) = get_json(c, &a.at("/v1/series")).await;
    assert_eq!(s, 200, "{v}");
    v["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Every version of `key` in `a`'s history, newest first (all pages).
pub(crate) async fn doc_history(c: &reqwest::Client, a: &impl Endpoint, key: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut before = String::new();
    loop {
        let url = a.at(&format!("/v1/docs/{key}/history?limit=1000{before}"));
        let (s, page) = get_json(c, &url).await;
        assert_eq!(s, 200, "{url}: {page}");
        out.extend(page["versions"].as_array().unwrap().iter().cloned());
        match page["next_before"].as_str() {
            Some(b) => before = format!("&before={b}"),
            None => return out,
        }
    }
}

/// What a writer got acknowledged (2xx) by its agent.
#[derive(Debug, Default)]
pub(crate) struct Acked {
    /// Readings per series.
    pub readings: BTreeMap<String, u64>,
    /// Per key: the number of puts and the last value put.
    pub docs: BTreeMap<String, (usize, Value)>,
}

/// Writes to one agent over HTTP until `stop`: batches of 50 readings with fresh timestamps,
/// a put to one of three own keys after each batch, and every fifth round a put to the key
/// every writer shares (concurrent versions become siblings). Panics on any refusal: the
/// test's link to its agent is not faulted.
pub(crate) async fn write_until(
    c: reqwest::Client,
    url: String,
    name: String,
    stop: Arc<AtomicBool>,
) -> Acked {
    let mut acked = Acked::default();
    let series = format!("{name}.chaos");
    let mut next_ts: i64 = 0;
    let mut round = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let ts: Vec<i64> = (next_ts..next_ts + 50)
            .map(|i| 1_764_000_000_000 + i * 10)
            .collect();
        let values: Vec<f64> = ts.iter().map(|t| (*t as f64 / 1e4).sin()).collect();
        let body = json!({"series": [{"name": series, "ts": ts, "values": values}]});
        let r = c
            .post(format!("{url}/v1/readings"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name}: POST /v1/readings: {e}"));
        assert_eq!(r.status().as_u16(), 201, "{name}: {:?}", r.text().await);
        next_ts += 50;
        *acked.readings.entry(series.clone()).or_default() += 50;

        let mut keys = vec![format!("chaos/{name}/k{}", round % 3)];
        if round.is_multiple_of(5) {
            keys.push("chaos/shared".to_owned());
        }
        for key in keys {
            let value = json!({"by": name, "round": round});
            let r = c
                .put(format!("{url}/v1/docs/{key}"))
                .header("content-type", "application/json")
                .body(value.to_string())
                .send()
                .await
                .unwrap_or_else(|e| panic!("{name}: PUT {key}: {e}"));
            assert_eq!(r.status().as_u16(), 200, "{name}: {:?}", r.text().await);
            let entry = acked.docs.entry(key).or_insert((0, Value::Null));
            entry.0 += 1;
            entry.1 = value;
        }
        round += 1;
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_devices_and_a_hub_converge_through_random_cuts_and_stalls() {
    let c = client();
    let hub = hub_node().await;
    let mut proxies = Vec::new();
    let mut devices = Vec::new();
    for _ in 0..3 {
        let p = Proxy::to_url(hub.url()).await;
        devices.push(Node::with_config(&peer_config(&p.url(), TOKEN)).await);
        proxies.push(p);
    }
    let agents: Vec<(&str, &Node)> = [("hub", &hub)]
        .into_iter()
        .chain(["dev0", "dev1", "dev2"].into_iter().zip(&devices))
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = agents
        .iter()
        .map(|(name, a)| {
            tokio::spawn(write_until(
                c.clone(),
                a.url().to_owned(),
                (*name).to_owned(),
                stop.clone(),
            ))
        })
        .collect();

    let seed = std::env::var("KDELTA_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("chaos seed {seed} (repeat with KDELTA_CHAOS_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let chaos_until = Instant::now() + Duration::from_secs(6);
    let mut faults = 0;
    while Instant::now() < chaos_until {
        let i = rng.random_range(0..proxies.len());
        let p = &proxies[i];
        let action = match rng.random_range(0..10) {
            0..=2 => {
                p.cut();
                "cut".to_owned()
            }
            3..=4 => {
                p.stall();
                "stall".to_owned()
            }
            5..=6 => {
                let dir = if rng.random_bool(0.5) {
                    Dir::Up
                } else {
                    Dir::Down
                };
                let n = rng.random_range(1..50_000);
                p.cut_after(dir, n);
                format!("cut after {n} bytes {dir:?}")
            }
            _ => {
                p.restore();
                "restore".to_owned()
            }
        };
        if action != "restore" {
            faults += 1;
        }
        println!("chaos: link {i}: {action}");
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..500))).await;
    }
    for p in &proxies {
        p.restore();
    }
    stop.store(true, Ordering::SeqCst);
    let mut acked = Vec::new();
    for w in writers {
        acked.push(w.await.expect("writer task"));
    }
    let summary: Vec<String> = acked
        .iter()
        .map(|a| {
            let puts: usize = a.docs.values().map(|d| d.0).sum();
            format!("{:?} readings, {puts} puts", a.readings)
        })
        .collect();
    println!(
        "chaos: {faults} faults; acknowledged: {}",
        summary.join("; ")
    );

    let all: Vec<&Node> = agents.iter().map(|(_, a)| *a).collect();
    converge_all(&c, &all, HEAL_DEADLINE).await;

    let want_readings: BTreeMap<String, u64> =
        acked.iter().flat_map(|a| a.readings.clone()).collect();
    let total: u64 = want_readings.values().sum();
    let mut shared_puts = 0;
    for (name, a) in &agents {
        // Every acknowledged reading everywhere, each once.
        let counts = series_counts(&c, a).await;
        assert_eq!(counts, want_readings, "series counts at {name}");
        let (_, st) = get_json(&c, &a.at("/v1/status")).await;
        assert_eq!(st["counts"]["readings"], total, "{name}: {st}");
        // Every acknowledged put everywhere, each once; the last put of a key wins.
        for w in &acked {
            for (key, (puts, last)) in &w.docs {
                if key == "chaos/shared" {
                    continue;
                }
                let history = doc_history(&c, a, key).await;
                assert_eq!(history.len(), *puts, "{name}: history of {key}");
                let (s, doc) = get_json(&c, &a.at(&format!("/v1/docs/{key}"))).await;
                assert_eq!(s, 200, "{name}: {doc}");
                assert_eq!(&doc["value"], last, "{name}: {key}");
            }
        }
        let shared = doc_history(&c, a, "chaos/shared").await;
        shared_puts = acked.iter().map(|w| w.docs["chaos/shared"].0).sum();
        assert_eq!(shared.len(), shared_puts, "{name}: history of chaos/shared");
    }
    println!("converged: {total} readings, {shared_puts} puts of the shared key");
    // The links were really faulted and really carried the data.
    assert!(faults > 0);
    assert!(
        proxies
            .iter()
            .all(|p| p.forwarded(Dir::Up) > 0 && p.mode() == Mode::Open)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_devices_put_the_same_key_and_keep_both_siblings_after_heal() {
    let c = client();
    let hub = hub_node().await;
    let pa = Proxy::to_url(hub.url()).await;
    let pb = Proxy::to_url(hub.url()).await;
    let a = Node::with_config(&peer_config(&pa.url(), TOKEN)).await;
    let b = Node::with_config(&peer_config(&pb.url(), TOKEN)).await;
    for d in [&a, &b] {
        eventually(DEADLINE, "the device's link up", || async {
            (first_peer(&c, d).await["connected"] == true).then_some(())
        })
        .await;
    }

    pa.cut();
    pb.cut();
    for d in [&a, &b] {
        eventually(DEADLINE, "the device to see the cut", || async {
            (first_peer(&c, d).await["connected"] == false).then_some(())
        })
        .await;
    }
    let key = "/v1/docs/greenhouse/setpoint";
    let (s, _) = put_json(&c, &a.at(key), &json!({"temp": 21, "by": "a"})).await;
    assert_eq!(s, 200);
    let (s, _) = put_json(&c, &b.at(key), &json!({"temp": 25, "by": "b"})).await;
    assert_eq!(s, 200);
    ingest(&c, &a, "a.temp", 0, 20).await;
    ingest(&c, &b, "b.temp", 0, 20).await;
    let (s, _) = get_json(&c, &hub.at(key)).await;
    assert_eq!(s, 404, "the partition leaked");

    pa.restore();
    pb.restore();
    converge_all(&c, &[&hub, &a, &b], HEAL_DEADLINE).await;

    let (_, reference) = get_json(&c, &hub.at(key)).await;
    assert_eq!(reference["siblings"], 2, "{reference}");
    for (name, agent) in [("hub", &hub), ("a", &a), ("b", &b)] {
        let (s, doc) = get_json(&c, &agent.at(key)).await;
        assert_eq!(s, 200, "{name}: {doc}");
        for field in ["value", "actor", "seq", "hlc", "siblings"] {
            assert_eq!(doc[field], reference[field], "{name}: {field} of {doc}");
        }
        let (s, sib) = get_json(&c, &agent.at(&format!("{key}/siblings"))).await;
        assert_eq!(s, 200, "{name}: {sib}");
        let mut by: Vec<&str> = sib["siblings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["value"]["by"].as_str().unwrap())
            .collect();
        by.sort_unstable();
        assert_eq!(by, ["a", "b"], "{name}: {sib}");
        // The winner is one of the siblings.
        assert!(
            sib["siblings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["hlc"] == reference["hlc"] && v["value"] == reference["value"]),
            "{name}: {sib}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_cut_mid_page_resumes_without_resending_applied_pages() {
    // Small pages, no compression: byte counts are predictable.
    const PAGE: u64 = 65_536;
    let paging = "page_bytes = 65536\ncompression = [\"none\"]\n";
    let c = client();
    let mut device = Node::with_config(&format!("sources = []\n[sync]\n{paging}")).await;
    let dir = device.keep_dir().expect("fresh temp dir");
    // A backlog of ~18 pages: 50 changes of 2,000 readings.
    for batch in 0..50i64 {
        let ts: Vec<i64> = (0..2000)
            .map(|i| 1_764_000_000_000 + (batch * 2000 + i) * 1000)
            .collect();
        let values: Vec<f64> = ts
            .iter()
            .map(|t| ((*t / 1000) as f64 / 300.0).sin() * 5.0 + 20.0)
            .collect();
        let body =
            json!({"series": [{"name": "backlog.temp", "unit": "°C", "ts": ts, "values": values}]});
        let (s, ack) = post(
            &c,
            &device.at("/v1/readings"),
            "application/json",
            body.to_string().into_bytes(),
        )
        .await;
        assert_eq!(s, 201, "{ack}");
    }
    device.stop().await;
    let restart = |proxy: &Proxy| {
        let config = format!(
            "sources = []\n[sync]\n{paging}[[sync.peers]]\nname = \"hub\"\nurl = \"{}\"\ntoken = \"{TOKEN}\"\n",
            proxy.url()
        );
        Node::builder().dir(dir.path()).config(&config).start()
    };

    // Baseline: the whole backlog to a fresh hub over an unfaulted link.
    let baseline_hub = hub_with(paging).await;
    let p1 = Proxy::to_url(baseline_hub.url()).await;
    let device = restart(&p1).await;
    converge(&c, &device, &baseline_hub).await;
    let full = p1.forwarded(Dir::Up);
    device.stop().await;
    assert!(
        full > 10 * PAGE,
        "the backlog is not much larger than a page: {full} bytes"
    );

    // The same backlog to another fresh hub, with the link cut halfway through.
    let hub = hub_with(paging).await;
    let p2 = Proxy::to_url(hub.url()).await;
    p2.cut_after(Dir::Up, full / 2);
    let device = restart(&p2).await;
    eventually(HEAL_DEADLINE, "the cut", || async {
        (p2.mode() == Mode::Cut).then_some(())
    })
    .await;
    let (partial, _) = status(&c, &hub).await;
    let (whole, _) = status(&c, &device).await;
    assert_ne!(partial, whole, "the hub has everything before the cut");
    p2.restore();
    converge(&c, &device, &hub).await;
    eventually(DEADLINE, "the device to report the new session", || async {
        let p = first_peer(&c, &device).await;
        (p["sessions"].as_u64() >= Some(2) && p["connected"] == true).then_some(())
    })
    .await;
    let sent = p2.forwarded(Dir::Up);
    let peer = first_peer(&c, &device).await;
    println!(
        "hub held {partial} at the cut; the device sent {} changes in {} pages over {} sessions",
        peer["changes_sent"], peer["pages_sent"], peer["sessions"]
    );
    println!(
        "device → hub: {full} bytes in one session; {sent} bytes in two sessions with a cut after {} (extra {} bytes, a page is {PAGE})",
        full / 2,
        sent as i64 - full as i64
    );
    // At most the page the cut interrupted is sent again, plus a second handshake.
    let handshake_overhead = 8 * 1024;
    assert!(
        sent < full + PAGE + handshake_overhead,
        "resent more than one page: {sent} bytes vs {full} for a full transfer"
    );
    let counts = series_counts(&c, &hub).await;
    assert_eq!(counts["backlog.temp"], 100_000, "{counts:?}");
}

#[test]
fn bench_sync_runs_on_a_tiny_input() {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(super::harness::BIN)
        .args(["bench", "sync", "--readings", "5000", "--series", "5"])
        .args([
            "--batch",
            "100",
            "--compression",
            "none",
            "--page-bytes",
            "16384",
        ])
        .args(["--timeout", "100s", "--json", "--dir"])
        .arg(dir.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kdelta bench sync");
    let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out = std::thread::spawn(move || std::io::read_to_string(out).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(err).unwrap_or_default());
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("kdelta bench sync ran past 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(status.success(), "{status}: {err}");
    let r: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(r["readings"], 5000, "{r}");
    assert_eq!(r["changes"], 50, "{r}");
    assert_eq!(r["digests_equal"], true, "{r}");
    assert!(r["pages"].as_u64().unwrap() > 1, "{r}");
    assert!(r["readings_per_sec"].as_f64().unwrap() > 0.0, "{r}");
    // Uncompressed, the wire carries the changes' CBOR plus a little framing.
    let ratio = r["wire_ratio"].as_f64().unwrap();
    assert!((1.0..1.1).contains(&ratio), "{r}");
    // The stores stay where asked.
    assert!(dir.path().join("hub.db").exists());
}
