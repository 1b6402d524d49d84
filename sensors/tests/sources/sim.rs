//! The simulator through its public API: determinism, waveform and load-test generation.

use std::time::Duration;

use kdelta_sensors::PolledSource;
use kdelta_sensors::sim::{SimConfig, SimSeries, SimSource};

use crate::harness::{assert_close, names};

#[test]
fn same_seed_same_timestamps_same_values() {
    let config = SimConfig {
        seed: 2024,
        series: vec![SimSeries {
            unit: Some("°C".into()),
            amplitude: 3.0,
            noise: 0.4,
            ..SimSeries::new("greenhouse.temp", 24.0)
        }],
        ..SimConfig::default()
    };
    let run = |config: SimConfig| {
        let mut sim = SimSource::new(config).expect("valid");
        (0..50)
            .map(|i| sim.sample_at(1_700_000_000_000 + i * 1000)[0].value)
            .collect::<Vec<f64>>()
    };
    let a = run(config.clone());
    assert_eq!(a, run(config.clone()));
    let other_seed = run(SimConfig {
        seed: 2025,
        ..config
    });
    assert_ne!(a, other_seed);
    // Noise is small next to the signal: every value stays near 24 ± 3.
    assert!(a.iter().all(|v| (18.0..30.0).contains(v)), "{a:?}");
}

#[test]
fn staircase_without_noise_is_exact() {
    let mut sim = SimSource::new(SimConfig {
        series: vec![SimSeries {
            unit: Some("L".into()),
            step_every: Some(3),
            step_size: -25.0,
            ..SimSeries::new("tank.level", 1000.0)
        }],
        ..SimConfig::default()
    })
    .expect("valid");
    let levels: Vec<f64> = (0..7).map(|i| sim.sample_at(i * 1000)[0].value).collect();
    let expected = [1000.0, 1000.0, 1000.0, 975.0, 975.0, 975.0, 950.0];
    for (got, want) in levels.iter().zip(expected) {
        assert_close(*got, want);
    }
}

#[test]
fn sine_peaks_a_quarter_period_in() {
    let mut sim = SimSource::new(SimConfig {
        series: vec![SimSeries {
            amplitude: 5.0,
            period: Duration::from_secs(60),
            ..SimSeries::new("wave", 10.0)
        }],
        ..SimConfig::default()
    })
    .expect("valid");
    assert_close(sim.sample_at(60_000 * 1000)[0].value, 10.0);
    assert_close(sim.sample_at(60_000 * 1000 + 15_000)[0].value, 15.0);
    assert_close(sim.sample_at(60_000 * 1000 + 45_000)[0].value, 5.0);
}

#[tokio::test]
async fn count_generates_load_test_series() {
    let mut sim = SimSource::new(SimConfig {
        name: Some("load".into()),
        count: Some(1000),
        ..SimConfig::default()
    })
    .expect("valid");
    assert_eq!(sim.name(), "load");
    let readings = sim.sample().await.expect("sim never fails");
    assert_eq!(readings.len(), 1000);
    assert_eq!(names(&readings)[0], "sim.0");
    assert_eq!(names(&readings)[999], "sim.999");
    assert!(readings.iter().all(|r| r.value.is_finite()));
    let ts = readings[0].ts_ms;
    assert!(
        readings.iter().all(|r| r.ts_ms == ts),
        "one round, one timestamp"
    );
}
