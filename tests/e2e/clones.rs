//! A cloned store between whole agents (issue 15, item 6, detection): a device's data
//! directory copied to a second device — an imaged SD card — writes as the same actor. The hub
//! reports the fork (status naming the actor and the peer, a metric), does not merge that
//! actor from the copy, and keeps syncing with the original and with everyone else.

use std::path::Path;
use std::time::Duration;

use super::cluster::Node;
use super::harness::{Endpoint, eventually};
use super::sync::{converge, ingest};
use super::{client, get_json, metrics_text};

const DEADLINE: Duration = Duration::from_secs(60);
const ORIGINAL: &str = "original-token-0123456789";
const COPY: &str = "copy-token-0123456789";
const OTHER: &str = "other-token-0123456789";

fn device(hub: &Node, token: &str) -> String {
    format!(
        "sources = []\n[[sync.peers]]\nname = \"hub\"\nurl = \"{}\"\ntoken = \"{token}\"\n",
        hub.url()
    )
}

/// Copies the files of `from` (a stopped agent's data directory) into `to`, as imaging a
/// card would.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_reports_a_cloned_device_and_keeps_syncing_the_rest() {
    let c = client();
    let hub = Node::with_config(&format!(
        "sources = []\ndevice_twin = false\n[sync]\naccept_tokens = [\
         {{ name = \"original\", token = \"{ORIGINAL}\" }}, \
         {{ name = \"copy\", token = \"{COPY}\" }}, \
         {{ name = \"other\", token = \"{OTHER}\" }}]\n"
    ))
    .await;

    // The original records a little, stops, and its card is imaged.
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Node::builder().dir(dir_a.path()).start().await;
    ingest(&c, &a, "image", 0, 10).await;
    a.stop().await;
    copy_dir(&dir_a.path().join("data"), &dir_b.path().join("data"));

    // Back online, the original syncs its next change.
    let a = Node::builder()
        .dir(dir_a.path())
        .config(&device(&hub, ORIGINAL))
        .start()
        .await;
    ingest(&c, &a, "original.only", 0, 5).await;
    converge(&c, &a, &hub).await;

    // The copy writes its own changes under the same actor, then joins.
    let mut copy = Node::builder().dir(dir_b.path()).start().await;
    ingest(&c, &copy, "copy.only", 0, 5).await;
    ingest(&c, &copy, "copy.only", 5, 5).await;
    let (_, copy_status) = get_json(&c, &copy.at("/v1/status")).await;
    let (_, a_status) = get_json(&c, &a.at("/v1/status")).await;
    assert_eq!(
        copy_status["actor"], a_status["actor"],
        "a copied card keeps the actor"
    );
    copy.reload(&device(&hub, COPY)).await;

    let actor = a_status["actor"].as_str().unwrap().to_owned();
    let fork = eventually(DEADLINE, "the hub to report the fork", || async {
        let (_, peers) = get_json(&c, &hub.at("/v1/sync/peers")).await;
        peers["peers"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == "copy" && p["actor_forks"].as_u64() >= Some(1))
            .cloned()
    })
    .await;
    let message = fork["last_fork"]["message"].as_str().unwrap();
    for part in [
        format!("change {actor}:"),
        "peer \"copy\"".to_owned(),
        "kdelta rekey".to_owned(),
    ] {
        assert!(message.contains(&part), "{part:?} in {message}");
    }
    let metrics = metrics_text(&c, &hub).await;
    assert!(
        metrics.contains("kdelta_sync_actor_forks_total{peer=\"copy\",direction=\"inbound\"}"),
        "{metrics}"
    );

    // Nothing of the copy's history was merged: the hub holds the original's.
    let (_, hub_status) = get_json(&c, &hub.at("/v1/status")).await;
    let (_, a_status) = get_json(&c, &a.at("/v1/status")).await;
    assert_eq!(
        hub_status["version_vector"][&actor], a_status["version_vector"][&actor],
        "{hub_status}"
    );

    // The original and everyone else keep syncing.
    ingest(&c, &a, "original.only", 5, 5).await;
    converge(&c, &a, &hub).await;
    let other = Node::with_config(&device(&hub, OTHER)).await;
    ingest(&c, &other, "other.temp", 0, 5).await;
    converge(&c, &other, &hub).await;
    converge(&c, &a, &hub).await;

    other.stop().await;
    copy.stop().await;
    a.stop().await;
    hub.stop().await;
}
