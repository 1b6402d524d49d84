//! The agent's path: a `[[sources]]` TOML array → `SourceConfig` → `validate_in` →
//! `build_polled` → readings.

use kdelta_sensors::{SourceConfig, SourceError, build_polled};
use serde::Deserialize;

use crate::harness::fixture;

#[derive(Deserialize)]
struct AgentFile {
    sources: Vec<SourceConfig>,
}

fn parse(text: &str) -> Result<Vec<SourceConfig>, String> {
    toml::from_str::<AgentFile>(text)
        .map(|f| f.sources)
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn toml_sources_build_and_sample() {
    let text = format!(
        r#"
        [[sources]]
        kind = "system"
        proc_root = "{proc}"
        sysfs_root = "{sys}"
        disk_path = "{proc}"

        [[sources]]
        kind = "sysfs"
        name = "probes"
        interval = "30s"
        root = "{sys}"
        include = ["w1."]

        [[sources]]
        kind = "sim"
        interval = "250ms"
        seed = 9

        [[sources.series]]
        name = "door.open"
        step_every = 1
        step_size = 1.0
        "#,
        proc = fixture("pi/proc").display(),
        sys = fixture("pi/sys").display(),
    );
    let sources = parse(&text).expect("parses");
    let kinds: Vec<&str> = sources.iter().map(SourceConfig::kind).collect();
    assert_eq!(kinds, ["system", "sysfs", "sim"]);
    let names: Vec<&str> = sources.iter().map(SourceConfig::name).collect();
    assert_eq!(names, ["system", "probes", "sim"]);
    let intervals: Vec<u128> = sources
        .iter()
        .map(|s| s.interval().expect("polled").as_millis())
        .collect();
    assert_eq!(intervals, [10_000, 30_000, 250]);

    let mut counts = Vec::new();
    for (i, config) in sources.iter().enumerate() {
        config.validate_in(&format!("sources[{i}]")).expect("valid");
        let mut source = build_polled(config).expect("builds").expect("polled");
        counts.push(source.sample().await.expect("reads").len());
    }
    // system: 12 host metrics + 3 temperatures; sysfs: 2 probes; sim: 1 series.
    assert_eq!(counts, [15, 2, 1]);
}

#[test]
fn errors_name_the_key() {
    let unknown =
        parse("[[sources]]\nkind = \"sysfs\"\nroot_dir = \"/sys\"\n").expect_err("unknown key");
    assert!(unknown.contains("root_dir"), "{unknown}");

    let bad_series =
        parse("[[sources]]\nkind = \"sim\"\n[[sources.series]]\nname = \"a\"\nperiod = \"0s\"\n")
            .expect("parses");
    match bad_series[0].validate_in("sources[0]") {
        Err(SourceError::Config { key, .. }) => assert_eq!(key, "sources[0].series[0].period"),
        other => panic!("expected Config error, got {other:?}"),
    }

    let bad_name = parse("[[sources]]\nkind = \"system\"\nname = \"my system\"\n").expect("parses");
    match build_polled(&bad_name[0]) {
        Err(e @ SourceError::Config { .. }) => {
            assert!(!e.is_transient());
            assert!(e.to_string().contains("`name`"), "{e}");
        }
        Err(other) => panic!("expected Config error, got {other:?}"),
        Ok(_) => panic!("invalid name accepted"),
    }
}
