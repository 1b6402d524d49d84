//! MQTT tests against an embedded rumqttd broker (nothing to install): publish, batches,
//! Home Assistant discovery, ingest and ingest rules, document commands, broker outage and
//! cursor persistence. Run with `cargo test -p kdelta --test mqtt`.

mod durable;
mod support;

use std::time::Duration;

use kdelta::mqtt::{
    BatchEncoding, CursorFile, CursorState, IngestRule, MqttConfig, PublishFormat, TsUnit,
};
use serde_json::{Value, json};
use support::{Agent, Broker, Cutter, Sub, config};

const T0: i64 = 1_764_000_000_000;

async fn wait_readings(agent: &Agent, series: &str, n: usize) -> Vec<(i64, f64)> {
    let deadline = tokio::time::Instant::now() + support::DEADLINE;
    loop {
        let page = agent
            .store
            .range(&kdelta_sync::RangeQuery {
                series: series.into(),
                from: 0,
                to: i64::MAX,
                limit: 10_000,
                cursor: None,
            })
            .await;
        if let Ok(page) = page
            && page.readings.len() >= n
        {
            return page.readings.iter().map(|r| (r.ts, r.value)).collect();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "series {series} never got {n} readings"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_publishes_readings_status_and_offline() {
    let broker = Broker::start().await;
    let mut sub = Sub::connect(broker.addr, &["kdelta/testpi/#"]).await;
    let agent = Agent::start(config(broker.addr)).await;
    let (status, retained) = sub.next_on("kdelta/testpi/status").await;
    assert_eq!(status, b"online");
    let _ = retained;
    agent.append("greenhouse.temp", Some("°C"), T0, 3).await;
    for i in 0..3 {
        let v = sub.json_on("kdelta/testpi/greenhouse.temp").await;
        assert_eq!(v, json!({"ts": T0 + i, "value": i as f64, "unit": "°C"}));
    }
    agent
        .wait_metric("kdelta_mqtt_messages_acked_total 3")
        .await;
    agent
        .wait_metric("kdelta_mqtt_readings_acked_total 3")
        .await;
    agent.wait_metric("kdelta_mqtt_connected 1").await;
    // Documents are not published; the cursor still moves past them.
    agent.store.put("a/doc", &json!(1)).await.unwrap();
    agent
        .append("greenhouse.temp", Some("°C"), T0 + 10, 1)
        .await;
    assert_eq!(
        sub.json_on("kdelta/testpi/greenhouse.temp").await["ts"],
        T0 + 10
    );
    agent.wait_metric("kdelta_mqtt_outbox_lag_changes 0").await;
    let dir = agent.stop().await;
    let (status, _) = sub.next_on("kdelta/testpi/status").await;
    assert_eq!(status, b"offline", "a clean stop publishes offline");
    let cursor = CursorFile::in_dir(dir.path()).load().unwrap().unwrap();
    assert_eq!(
        cursor.acked, 3,
        "two appends and one document: log positions 1..3"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_batches_in_json_and_cbor() {
    let broker = Broker::start().await;
    for encoding in [BatchEncoding::Json, BatchEncoding::Cbor] {
        let mut sub = Sub::connect(broker.addr, &["kdelta/testpi/batch"]).await;
        let cfg = MqttConfig {
            publish_format: PublishFormat::Batch,
            batch_encoding: encoding,
            batch_max_readings: 100,
            ..config(broker.addr)
        };
        let agent = Agent::start(cfg).await;
        agent.wait_metric("kdelta_mqtt_connected 1").await;
        agent.append("a", Some("V"), T0, 150).await;
        agent.append("b", None, T0, 100).await;
        let mut got = Vec::new();
        for _ in 0..3 {
            let (p, _) = sub.next_on("kdelta/testpi/batch").await;
            let msg: kdelta::mqtt::payload::BatchMessage = match encoding {
                BatchEncoding::Json => serde_json::from_slice(&p).unwrap(),
                BatchEncoding::Cbor => ciborium::from_reader(&p[..]).unwrap(),
            };
            assert_eq!(msg.device, "testpi");
            let n: usize = msg.series.iter().map(|s| s.ts.len()).sum();
            got.push((msg.seq, msg.part, n, msg.series[0].name.to_string()));
        }
        assert_eq!(
            got,
            vec![
                (1, 0, 100, "a".into()),
                (1, 1, 50, "a".into()),
                (2, 0, 100, "b".into())
            ]
        );
        agent
            .wait_metric("kdelta_mqtt_readings_acked_total 250")
            .await;
        agent.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_discovery_payloads_follow_home_assistant() {
    let broker = Broker::start().await;
    let agent = Agent::start(config(broker.addr)).await;
    agent.wait_metric("kdelta_mqtt_connected 1").await;
    agent.append("greenhouse.temp", Some("°C"), T0, 1).await;
    agent.append("greenhouse.humidity", Some("%"), T0, 1).await;
    agent.append("meter.energy", Some("kWh"), T0, 1).await;
    agent.append("system.load1", None, T0, 1).await;
    agent
        .wait_metric("kdelta_mqtt_readings_acked_total 4")
        .await;

    // A subscriber that comes later gets the retained configs.
    let mut sub = Sub::connect(broker.addr, &["homeassistant/sensor/#"]).await;
    let mut configs = std::collections::BTreeMap::new();
    while configs.len() < 4 {
        let (topic, payload, _) = sub.next("4 discovery configs").await;
        configs.insert(topic, serde_json::from_slice::<Value>(&payload).unwrap());
    }
    let temp = &configs["homeassistant/sensor/testpi/greenhouse_temp/config"];
    // Field by field, as Home Assistant's MQTT sensor discovery documents them.
    assert_eq!(temp["name"], "greenhouse.temp");
    assert_eq!(temp["unique_id"], "kdelta_testpi_greenhouse_temp");
    assert_eq!(temp["state_topic"], "kdelta/testpi/greenhouse.temp");
    assert_eq!(temp["unit_of_measurement"], "°C");
    assert_eq!(temp["device_class"], "temperature");
    assert_eq!(temp["state_class"], "measurement");
    assert_eq!(temp["value_template"], "{{ value_json.value }}");
    assert_eq!(temp["availability_topic"], "kdelta/testpi/status");
    assert_eq!(temp["payload_available"], "online");
    assert_eq!(temp["payload_not_available"], "offline");
    assert_eq!(temp["device"]["identifiers"], json!(["kdelta_testpi"]));
    assert_eq!(temp["device"]["name"], "testpi");
    assert_eq!(temp["device"]["model"], "kdelta edge agent");
    assert_eq!(temp["device"]["sw_version"], env!("CARGO_PKG_VERSION"));
    let hum = &configs["homeassistant/sensor/testpi/greenhouse_humidity/config"];
    assert_eq!(
        (
            hum["device_class"].as_str(),
            hum["unit_of_measurement"].as_str()
        ),
        (Some("humidity"), Some("%"))
    );
    let energy = &configs["homeassistant/sensor/testpi/meter_energy/config"];
    assert_eq!(
        (
            energy["device_class"].as_str(),
            energy["state_class"].as_str()
        ),
        (Some("energy"), Some("total_increasing"))
    );
    let load = &configs["homeassistant/sensor/testpi/system_load1/config"];
    assert!(load.get("device_class").is_none() && load.get("unit_of_measurement").is_none());
    assert_eq!(load["state_class"], "measurement");
    let ids: std::collections::HashSet<_> = configs
        .values()
        .map(|c| c["unique_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 4, "unique ids are unique");

    // Home Assistant restarted: its birth message brings every config again.
    sub.publish("homeassistant/status", "online").await;
    let mut again = std::collections::BTreeSet::new();
    while again.len() < 4 {
        let (topic, _, _) = sub
            .next("discovery after homeassistant/status online")
            .await;
        again.insert(topic);
    }
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_ingest_topic_counts_bad_payloads() {
    let broker = Broker::start().await;
    let agent = Agent::start(config(broker.addr)).await;
    agent.wait_online(broker.addr).await;
    let sub = Sub::connect(broker.addr, &[]).await;
    let topic = "kdelta/testpi/ingest/room.temp";
    sub.publish(topic, format!(r#"{{"ts": {T0}, "value": 20.5}}"#))
        .await;
    sub.publish(topic, "not a number").await;
    sub.publish(topic, r#"{"value": "warm"}"#).await;
    sub.publish(
        topic,
        format!(
            r#"[{{"ts": {}, "value": 21}}, {{"ts": {}, "value": 22}}]"#,
            T0 + 1,
            T0 + 2
        ),
    )
    .await;
    sub.publish(topic, b"\xff\xfe".to_vec()).await;
    sub.publish(topic, "23.5").await;
    let readings = wait_readings(&agent, "room.temp", 4).await;
    assert_eq!(
        &readings[..3],
        &[(T0, 20.5), (T0 + 1, 21.0), (T0 + 2, 22.0)]
    );
    assert_eq!(
        readings[3].1, 23.5,
        "a reading without ts gets the arrival time"
    );
    agent
        .wait_metric("kdelta_mqtt_bad_payloads_total{kind=\"ingest\"} 3")
        .await;
    agent
        .wait_metric("kdelta_readings_ingested_total{source=\"mqtt\"} 4")
        .await;
    // Counted per reason, as `GET /v1/sources` shows them in MQTT ingest's row.
    agent
        .wait_metric(
            "kdelta_source_rejected_readings_total{source=\"mqtt\",reason=\"malformed\"} 2",
        )
        .await;
    let rejected = agent.metrics.rejected_readings_of("mqtt");
    assert_eq!(
        rejected.into_iter().collect::<Vec<_>>(),
        vec![("malformed".to_owned(), 2), ("not_a_number".to_owned(), 1)]
    );
    let row = agent
        .deps
        .mqtt_ingest
        .read()
        .unwrap()
        .clone()
        .expect("an mqtt row");
    assert_eq!((row.name.as_str(), row.kind.as_str()), ("mqtt", "mqtt"));
    assert_eq!(row.readings, 4, "{row:?}");
    assert!(row.last_reading_ms.is_some(), "{row:?}");
    agent.stop().await;
}

/// While the wall clock is not trusted, readings the agent stamped on arrival are committed
/// with a timing record (so the correction loop can move them once a trusted time is known);
/// a reading that brought its own, distant timestamp is not, and the two go in separate
/// batches. With a trusted clock, nothing is timed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_readings_stamped_under_an_untrusted_clock_carry_a_timing_record() {
    let broker = Broker::start().await;
    let agent = Agent::start(config(broker.addr)).await;
    agent.wait_online(broker.addr).await;
    let sub = Sub::connect(broker.addr, &[]).await;
    let topic = "kdelta/testpi/ingest/room.temp";
    sub.publish(topic, "19.5").await;
    wait_readings(&agent, "room.temp", 1).await;
    let records = agent.store.reading_timing(None, 0, 100).await.unwrap();
    assert!(records.is_empty(), "trusted clock: no timing {records:?}");

    let reference = agent.store.time_reference();
    reference.set_local_trusted(false);
    let before = kdelta::time::now_ms();
    sub.publish(
        topic,
        format!(r#"[{{"value": 20.5}}, {{"ts": {T0}, "value": 1}}]"#),
    )
    .await;
    sub.publish("kdelta/testpi/ingest/hall.temp", "21.5").await;
    let readings = wait_readings(&agent, "room.temp", 3).await;
    assert_eq!(readings[0], (T0, 1.0), "{readings:?}");
    wait_readings(&agent, "hall.temp", 1).await;
    let records = agent.store.reading_timing(None, 0, 100).await.unwrap();
    let stamped: u64 = records.iter().map(|(_, r)| r.count).sum();
    assert_eq!(
        stamped, 2,
        "the two readings stamped on arrival: {records:?}"
    );
    for (_, r) in &records {
        assert!(r.original_from_ms >= before, "{r:?}");
        assert_eq!(
            Some(r.timing.boot_id),
            kdelta::sample_timing::read_boot_id(),
            "{r:?}"
        );
        let expected = kdelta::time::now_ms() - kdelta::sample_timing::boottime_ms();
        assert!((r.timing.offset_ms - expected).abs() < 5_000, "{r:?}");
        assert_eq!(r.delta_ms, None, "not corrected yet: {r:?}");
    }
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_ingest_rules_map_wildcards_to_series() {
    let broker = Broker::start().await;
    let rule = |topic: &str, series: &str, value: &str, unit: Option<&str>| IngestRule {
        topic: topic.into(),
        series: series.into(),
        value: value.into(),
        ts: None,
        ts_unit: TsUnit::Ms,
        unit: unit.map(Into::into),
    };
    let cfg = MqttConfig {
        ingest_rules: vec![
            IngestRule {
                ts: Some("/Time".into()),
                ..rule(
                    "tele/+/SENSOR",
                    "tasmota.{1}.power",
                    "/ENERGY/Power",
                    Some("W"),
                )
            },
            rule(
                "zigbee2mqtt/+",
                "z2m.{1}.temperature",
                "/temperature",
                Some("°C"),
            ),
            rule("zigbee2mqtt/+", "z2m.{1}.humidity", "/humidity", Some("%")),
            rule(
                "shellies/+/relay/+/power",
                "shelly.{1}.relay{2}.power",
                "",
                Some("W"),
            ),
            rule("sensors/#", "multi.{1}", "/v", None),
        ],
        ..config(broker.addr)
    };
    let agent = Agent::start(cfg).await;
    agent.wait_online(broker.addr).await;
    let sub = Sub::connect(broker.addr, &[]).await;
    sub.publish(
        "tele/plug1/SENSOR",
        r#"{"Time":"2025-11-24T16:00:00","ENERGY":{"Power":42,"Voltage":230}}"#,
    )
    .await;
    sub.publish(
        "zigbee2mqtt/living_room",
        r#"{"temperature":21.3,"humidity":40,"linkquality":120}"#,
    )
    .await;
    sub.publish("zigbee2mqtt/bridge_thing", r#"{"state":"online"}"#)
        .await; // neither /temperature nor /humidity: two bad payloads
    sub.publish("shellies/shelly1pm-A1/relay/0/power", "12.5")
        .await;
    sub.publish("sensors/a/b", r#"{"v": 7}"#).await;
    sub.publish("unrelated/topic", "1").await;
    assert_eq!(
        wait_readings(&agent, "tasmota.plug1.power", 1).await,
        vec![(T0, 42.0)]
    );
    assert_eq!(
        wait_readings(&agent, "z2m.living_room.temperature", 1).await[0].1,
        21.3
    );
    assert_eq!(
        wait_readings(&agent, "z2m.living_room.humidity", 1).await[0].1,
        40.0
    );
    assert_eq!(
        wait_readings(&agent, "shelly.shelly1pm-A1.relay0.power", 1).await[0].1,
        12.5
    );
    assert_eq!(wait_readings(&agent, "multi.a/b", 1).await[0].1, 7.0);
    agent
        .wait_metric("kdelta_mqtt_bad_payloads_total{kind=\"rule\"} 2")
        .await;
    let series = agent.store.series().await.unwrap();
    let unit = |n: &str| {
        series
            .iter()
            .find(|s| s.name == n)
            .and_then(|s| s.unit.clone())
    };
    assert_eq!(unit("tasmota.plug1.power").as_deref(), Some("W"));
    assert_eq!(unit("z2m.living_room.temperature").as_deref(), Some("°C"));
    agent.stop().await;
}

/// Commands are off unless configured: with the default `[mqtt]`, a document and a twin
/// published to the command topics are not written, while a reading published after them on
/// the same connection is (so the agent had the chance).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_commands_are_off_by_default() {
    let broker = Broker::start().await;
    let agent = Agent::start(config(broker.addr)).await;
    agent.wait_online(broker.addr).await;
    let sub = Sub::connect(broker.addr, &[]).await;
    sub.publish("kdelta/testpi/docs/set/evil", r#"{"x": 1}"#)
        .await;
    sub.publish("kdelta/testpi/twin/evil/patch", r#"{"x": 1}"#)
        .await;
    sub.publish(
        "kdelta/testpi/ingest/after.commands",
        format!(r#"{{"ts": {T0}, "value": 1}}"#),
    )
    .await;
    wait_readings(&agent, "after.commands", 1).await;
    assert!(agent.store.get("evil").await.unwrap().is_none());
    assert!(agent.store.twin_get("evil").await.unwrap().is_none());
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_docs_set_command_puts_and_answers() {
    let broker = Broker::start().await;
    let agent = Agent::start(MqttConfig {
        commands: true,
        ..config(broker.addr)
    })
    .await;
    agent.wait_online(broker.addr).await;
    let mut sub = Sub::connect(broker.addr, &["kdelta/testpi/docs/result"]).await;
    sub.publish(
        "kdelta/testpi/docs/set/greenhouse/setpoint",
        r#"{"temp": 22}"#,
    )
    .await;
    let r = sub.json_on("kdelta/testpi/docs/result").await;
    assert_eq!(
        (r["key"].as_str(), r["ok"].as_bool()),
        (Some("greenhouse/setpoint"), Some(true)),
        "{r}"
    );
    assert_eq!(r["actor"], agent.store.actor().to_string());
    let doc = agent
        .store
        .get("greenhouse/setpoint")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(doc.winner.value, Some(json!({"temp": 22})));

    sub.publish("kdelta/testpi/docs/set/bad", "{not json").await;
    let r = sub.json_on("kdelta/testpi/docs/result").await;
    assert_eq!(
        (r["ok"].as_bool(), r["error"]["code"].as_str()),
        (Some(false), Some("malformed_body")),
        "{r}"
    );
    let long = format!("kdelta/testpi/docs/set/{}", "k".repeat(600));
    sub.publish(&long, "1").await;
    let r = sub.json_on("kdelta/testpi/docs/result").await;
    assert_eq!(
        (r["ok"].as_bool(), r["error"]["code"].as_str()),
        (Some(false), Some("invalid_key")),
        "{r}"
    );
    agent
        .wait_metric("kdelta_mqtt_commands_total{result=\"ok\"} 1")
        .await;
    agent
        .wait_metric("kdelta_mqtt_bad_payloads_total{kind=\"command\"} 1")
        .await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_broker_outage_resumes_all_readings_in_order() {
    let broker = Broker::start().await;
    let mut cutter = Cutter::start(broker.addr).await;
    let mut sub = Sub::connect(broker.addr, &["kdelta/testpi/outage"]).await;
    let agent = Agent::start(config(cutter.addr)).await;
    agent.wait_metric("kdelta_mqtt_connected 1").await;

    cutter.cut().await;
    agent.wait_metric("kdelta_mqtt_connected 0").await;
    for chunk in 0..10 {
        agent.append("outage", None, T0 + chunk * 1000, 1000).await;
    }
    cutter.restore().await;

    for i in 0..10_000i64 {
        let (p, _) = sub.next_on("kdelta/testpi/outage").await;
        let v: Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(v["ts"], T0 + i, "reading {i} out of order or missing");
    }
    agent
        .wait_metric("kdelta_mqtt_readings_acked_total 10000")
        .await;
    assert!(
        agent.metric("kdelta_mqtt_reconnects_total") >= 1.0,
        "{}",
        agent.metrics.encode()
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_cursor_persists_across_restarts_and_counts_duplicates() {
    let broker = Broker::start().await;
    let mut sub = Sub::connect(broker.addr, &["kdelta/testpi/c"]).await;
    let agent = Agent::start(config(broker.addr)).await;
    agent.wait_metric("kdelta_mqtt_connected 1").await;
    agent.append("c", None, T0, 5).await;
    for i in 0..5 {
        assert_eq!(sub.json_on("kdelta/testpi/c").await["ts"], T0 + i);
    }
    agent
        .wait_metric("kdelta_mqtt_readings_acked_total 5")
        .await;
    let dir = agent.stop().await;
    assert_eq!(
        CursorFile::in_dir(dir.path()).load().unwrap(),
        Some(CursorState { acked: 1, sent: 1 })
    );

    // Written while the MQTT task is down: published after the restart, and nothing older.
    let store = kdelta_sync::Store::open(dir.path().join("kdelta.db"), Default::default())
        .await
        .unwrap();
    let mut b = kdelta_sync::ReadingBatch::new();
    b.push("c", T0 + 5, 5.0, None);
    store.append(b).await.unwrap();
    store.close().await;
    let agent = Agent::start_in(config(broker.addr), dir).await;
    assert_eq!(sub.json_on("kdelta/testpi/c").await["ts"], T0 + 5);
    agent
        .wait_metric("kdelta_mqtt_readings_acked_total 1")
        .await;
    assert_eq!(
        agent.metric("kdelta_mqtt_duplicates_total{cause=\"restart\"}"),
        0.0
    );
    let dir = agent.stop().await;

    // A crash after sending change 2 but before its PUBACK: the cursor says acked 1, sent 2.
    CursorFile::in_dir(dir.path())
        .store(CursorState { acked: 1, sent: 2 })
        .unwrap();
    let agent = Agent::start_in(config(broker.addr), dir).await;
    assert_eq!(
        sub.json_on("kdelta/testpi/c").await["ts"],
        T0 + 5,
        "republished once"
    );
    agent
        .wait_metric("kdelta_mqtt_duplicates_total{cause=\"restart\"} 1")
        .await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_twin_patches_and_retained_state() {
    use kdelta_sync::{Store, StoreConfig, TwinPatch, VersionVector};
    const STATE: &str = "kdelta/testpi/twin/device/x";
    const PATCH: &str = "kdelta/testpi/twin/device/x/patch";
    const RESULT: &str = "kdelta/testpi/twin/device/x/result";
    let broker = Broker::start().await;
    let agent = Agent::start(MqttConfig {
        commands: true,
        ..config(broker.addr)
    })
    .await;
    agent.wait_metric("kdelta_mqtt_connected 1").await;
    let mut state = Sub::connect(broker.addr, &[STATE]).await;
    let mut results = Sub::connect(broker.addr, &[RESULT]).await;

    // A merge patch on a missing twin creates it.
    results
        .publish(PATCH, r#"{"desired": {"interval": "5s"}}"#)
        .await;
    let r = results.json_on(RESULT).await;
    assert_eq!(
        (r["ok"].clone(), r["changed"].clone()),
        (json!(true), json!(true)),
        "{r}"
    );
    assert_eq!(
        state.json_on(STATE).await,
        json!({"desired": {"interval": "5s"}})
    );
    // Path operations.
    results
        .publish(
            PATCH,
            r#"{"ops": [{"op": "increment", "path": "/boots", "by": 2}]}"#,
        )
        .await;
    assert_eq!(results.json_on(RESULT).await["ok"], true);
    assert_eq!(state.json_on(STATE).await["boots"], 2);
    // A local change made elsewhere (the API) is published.
    agent
        .store
        .twin_patch("device/x", TwinPatch::Merge(json!({"reported": {"t": 1}})))
        .await
        .unwrap();
    assert_eq!(state.json_on(STATE).await["reported"], json!({"t": 1}));
    // So is a change synced from another replica, which created the twin on its own.
    let other_dir = tempfile::tempdir().unwrap();
    let other = Store::open(other_dir.path().join("o.db"), StoreConfig::default())
        .await
        .unwrap();
    other
        .twin_create("device/x", Some(json!({"reported": {"remote": true}})))
        .await
        .unwrap();
    let changes = other
        .changes_since(&VersionVector::new(), 1 << 20)
        .await
        .unwrap();
    agent.store.apply_remote(changes).await.unwrap();
    let v = state.json_on(STATE).await;
    assert_eq!(v["reported"], json!({"t": 1, "remote": true}), "{v}");
    assert_eq!(v["desired"], json!({"interval": "5s"}), "{v}");
    other.close().await;

    // Bad payloads are answered with the problem and change nothing.
    let before = agent.store.twin_get("device/x").await.unwrap();
    for (payload, code) in [
        ("{nope", "malformed_body"),
        (
            r#"{"ops": [{"op": "delete", "path": "/missing"}]}"#,
            "invalid_patch",
        ),
        (r#"[1, 2]"#, "invalid_patch"),
    ] {
        results.publish(PATCH, payload).await;
        let r = results.json_on(RESULT).await;
        assert_eq!(r["ok"], false, "{r}");
        assert_eq!(r["error"]["code"], code, "{payload}: {r}");
    }
    assert_eq!(agent.store.twin_get("device/x").await.unwrap(), before);

    // The state is retained: a late subscriber gets the latest value at once.
    let mut late = Sub::connect(broker.addr, &[STATE]).await;
    let (p, retained) = late.next_on(STATE).await;
    assert!(retained, "the twin state is retained");
    let v: Value = serde_json::from_slice(&p).unwrap();
    assert_eq!(v, before.unwrap().value);
    agent.stop().await;
}

/// kill -9 of a real agent during MQTT ingest (persistent session, embedded broker): every
/// message the broker accepted ends up in the store (see `durable.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_kill9_during_ingest_keeps_every_delivered_message() {
    let broker = Broker::start().await;
    durable::kill9_during_ingest_keeps_every_delivered_message(broker.addr).await;
}
