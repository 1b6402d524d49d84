//! The `sim` source: deterministic synthetic series for demos, tests and load tests. Owns its
//! waveform (base + sine + Gaussian noise + staircase steps) and its tiny PRNG; it must not
//! touch any device or file.
//!
//! A value at timestamp `t` (ms) and sample number `k` (0 for the first round) is
//!
//! ```text
//! base + amplitude · sin(2π · (t mod period) / period) + noise · N(0, 1) + step_size · ⌊k / step_every⌋
//! ```
//!
//! The same seed and the same timestamps give the same values on every machine: the noise
//! comes from one SplitMix64 stream per series, so adding a series does not change the
//! others.
//!
//! ```
//! use kdelta_sensors::sim::{SimConfig, SimSource};
//!
//! let config = SimConfig { count: Some(3), ..SimConfig::default() };
//! let mut a = SimSource::new(config.clone()).expect("valid");
//! let mut b = SimSource::new(config).expect("valid");
//! let first = a.sample_at(1_700_000_000_000);
//! assert_eq!(first.len(), 3);
//! assert_eq!(first[2].series, "sim.2");
//! assert_eq!(first, b.sample_at(1_700_000_000_000));
//! ```

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{config_error, validate_interval, validate_name};
use crate::{BoxFuture, PolledSource, Reading, SourceError, now_ms};

/// Default sampling interval of the `sim` source.
pub const DEFAULT_SIM_INTERVAL: Duration = Duration::from_secs(1);

/// Most series one simulator may generate; bounds memory and per-round work.
pub const MAX_SIM_SERIES: usize = 100_000;

/// One simulated series (a `[[sources.series]]` table).
///
/// | key | default | meaning |
/// | --- | --- | --- |
/// | `name` | required | series name |
/// | `unit` | none | unit string |
/// | `base` | `0.0` | centre value |
/// | `amplitude` | `0.0` | sine amplitude |
/// | `period` | `"10m"` | sine period, phase taken from the wall-clock timestamp |
/// | `noise` | `0.0` | standard deviation of added Gaussian noise |
/// | `step_every` | none | add `step_size` to the level every N samples |
/// | `step_size` | `0.0` | size of each step |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimSeries {
    /// Series name.
    pub name: String,
    /// Unit of measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Centre value.
    #[serde(default)]
    pub base: f64,
    /// Sine amplitude.
    #[serde(default)]
    pub amplitude: f64,
    /// Sine period.
    #[serde(default = "default_period", with = "humantime_serde")]
    pub period: Duration,
    /// Standard deviation of the Gaussian noise.
    #[serde(default)]
    pub noise: f64,
    /// Step the level every this many samples (a staircase; negative `step_size` descends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_every: Option<u64>,
    /// Size of each step.
    #[serde(default)]
    pub step_size: f64,
}

fn default_period() -> Duration {
    Duration::from_secs(600)
}

impl SimSeries {
    /// A flat series `name` at `base`, to be refined with struct update syntax.
    pub fn new(name: impl Into<String>, base: f64) -> Self {
        SimSeries {
            name: name.into(),
            unit: None,
            base,
            amplitude: 0.0,
            period: default_period(),
            noise: 0.0,
            step_every: None,
            step_size: 0.0,
        }
    }

    fn validate(&self, key: &str) -> Result<(), SourceError> {
        if self.name.is_empty()
            || self.name.len() > 128
            || self
                .name
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(config_error(
                format!("{key}.name"),
                format!("{:?}: 1–128 characters, no whitespace", self.name),
            ));
        }
        if let Some(unit) = &self.unit {
            crate::config::validate_unit(&format!("{key}.unit"), unit)?;
        }
        for (field, v) in [
            ("base", self.base),
            ("amplitude", self.amplitude),
            ("step_size", self.step_size),
        ] {
            if !v.is_finite() {
                return Err(config_error(
                    format!("{key}.{field}"),
                    "must be a finite number",
                ));
            }
        }
        if !(self.noise.is_finite() && self.noise >= 0.0) {
            return Err(config_error(
                format!("{key}.noise"),
                "must be finite and ≥ 0",
            ));
        }
        if self.period.is_zero() {
            return Err(config_error(
                format!("{key}.period"),
                "must be longer than zero",
            ));
        }
        if self.step_every == Some(0) {
            return Err(config_error(
                format!("{key}.step_every"),
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// A `kind = "sim"` source.
///
/// | key | default | meaning |
/// | --- | --- | --- |
/// | `name` | `"sim"` | instance name |
/// | `interval` | `"1s"` | sampling interval |
/// | `seed` | `1` | PRNG seed; same seed + same timestamps = same values |
/// | `series` | `[]` | explicit series, see [`SimSeries`] |
/// | `count` | none | also generate `sim.0` … `sim.<count-1>` (load tests), at most 100000 |
///
/// With neither `series` nor `count`, two demo series are produced: `sim.temperature` (°C)
/// and `sim.humidity` (%).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Instance name; defaults to `sim`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Sampling interval.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// PRNG seed.
    pub seed: u64,
    /// Explicit series.
    pub series: Vec<SimSeries>,
    /// Number of generated series `sim.0…`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            name: None,
            interval: DEFAULT_SIM_INTERVAL,
            seed: 1,
            series: Vec::new(),
            count: None,
        }
    }
}

impl SimConfig {
    /// Every series this config produces: the explicit ones, then the generated `sim.<i>`,
    /// or the two demo series when both are absent.
    pub fn resolved_series(&self) -> Vec<SimSeries> {
        if self.series.is_empty() && self.count.is_none() {
            return vec![
                SimSeries {
                    unit: Some("°C".into()),
                    amplitude: 4.0,
                    noise: 0.1,
                    ..SimSeries::new("sim.temperature", 21.0)
                },
                SimSeries {
                    unit: Some("%".into()),
                    amplitude: 10.0,
                    period: Duration::from_secs(900),
                    noise: 0.5,
                    ..SimSeries::new("sim.humidity", 55.0)
                },
            ];
        }
        let mut out = self.series.clone();
        let count = self.count.unwrap_or(0).min(MAX_SIM_SERIES);
        out.extend((0..count).map(|i| SimSeries {
            amplitude: 10.0,
            // Distinct periods so generated series do not move in lockstep.
            period: Duration::from_secs(60 + (i % 600) as u64),
            noise: 0.5,
            ..SimSeries::new(format!("sim.{i}"), i as f64)
        }));
        out
    }

    /// Checks every key; errors name it (`series[1].period`, `count`).
    pub fn validate(&self) -> Result<(), SourceError> {
        validate_name(self.name.as_deref())?;
        validate_interval(self.interval)?;
        let total = self.series.len().saturating_add(self.count.unwrap_or(0));
        if self.count == Some(0) || total > MAX_SIM_SERIES {
            return Err(config_error(
                "count",
                format!("must be 1 to {MAX_SIM_SERIES} series in total"),
            ));
        }
        let mut names = HashSet::new();
        for (i, series) in self.series.iter().enumerate() {
            let key = format!("series[{i}]");
            series.validate(&key)?;
            if !names.insert(series.name.as_str()) {
                return Err(config_error(
                    format!("{key}.name"),
                    format!("{:?} is used twice", series.name),
                ));
            }
        }
        let mut generated = (0..self.count.unwrap_or(0)).map(|i| format!("sim.{i}"));
        if let Some(clash) = generated.find(|n| names.contains(n.as_str())) {
            return Err(config_error(
                "count",
                format!("generated series {clash:?} clashes with an explicit series"),
            ));
        }
        Ok(())
    }
}

/// SplitMix64 (Steele, Lea & Flood 2014): tiny, fast, and good enough for noise; kdelta does
/// not need `rand` for this.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1]: never 0, so `ln` below stays finite.
    fn next_unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal by Box–Muller.
    fn next_gaussian(&mut self) -> f64 {
        let (u1, u2) = (self.next_unit(), self.next_unit());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// The simulator. Cheap: no I/O, so it samples on the calling task.
#[derive(Debug)]
pub struct SimSource {
    name: String,
    series: Vec<SimSeries>,
    rngs: Vec<SplitMix64>,
    /// Rounds sampled so far; drives the staircase.
    samples: u64,
}

impl SimSource {
    /// Validates `config` and builds the source.
    pub fn new(config: SimConfig) -> Result<Self, SourceError> {
        config.validate()?;
        let series = config.resolved_series();
        let rngs = (0..series.len() as u64)
            .map(|i| {
                // Decorrelate streams: seed each from the seed mixed with the series index.
                let mut mix = SplitMix64(config.seed ^ i.wrapping_mul(0xD1B5_4A32_D192_ED03));
                SplitMix64(mix.next_u64())
            })
            .collect();
        Ok(SimSource {
            name: config.name.unwrap_or_else(|| "sim".into()),
            series,
            rngs,
            samples: 0,
        })
    }

    /// The series this source produces, in output order.
    pub fn series(&self) -> &[SimSeries] {
        &self.series
    }

    /// One round at `ts_ms`: one reading per series, in [`series`](Self::series) order.
    pub fn sample_at(&mut self, ts_ms: i64) -> Vec<Reading> {
        let k = self.samples;
        self.samples += 1;
        self.series
            .iter()
            .zip(self.rngs.iter_mut())
            .map(|(s, rng)| {
                let period_ms = s.period.as_millis().max(1) as f64;
                let phase = (ts_ms as f64).rem_euclid(period_ms) / period_ms;
                let wave = s.amplitude * (std::f64::consts::TAU * phase).sin();
                // Draw even when noise is 0 so the stream position depends only on `k`.
                let noise = s.noise * rng.next_gaussian();
                let steps = s.step_every.map_or(0, |n| k / n) as f64;
                let value = s.base + wave + noise + s.step_size * steps;
                // Validated inputs keep this finite; guard anyway so a reading is never NaN.
                let value = if value.is_finite() { value } else { s.base };
                Reading::new(s.name.clone(), ts_ms, value, s.unit.as_deref())
            })
            .collect()
    }
}

impl PolledSource for SimSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn sample(&mut self) -> BoxFuture<'_, Result<Vec<Reading>, SourceError>> {
        Box::pin(async move { Ok(self.sample_at(now_ms())) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_reference_vector() {
        // First outputs for seed 1234567 from the reference C implementation.
        let mut r = SplitMix64(1_234_567);
        assert_eq!(r.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(r.next_u64(), 3_203_168_211_198_807_973);
    }

    #[test]
    fn gaussian_has_unit_variance() {
        let mut r = SplitMix64(42);
        let n = 20_000;
        let xs: Vec<f64> = (0..n).map(|_| r.next_gaussian()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
    }

    #[test]
    fn sine_and_staircase_are_exact_without_noise() {
        let config = SimConfig {
            series: vec![SimSeries {
                amplitude: 2.0,
                period: Duration::from_secs(4),
                step_every: Some(2),
                step_size: 10.0,
                ..SimSeries::new("tank", 100.0)
            }],
            ..SimConfig::default()
        };
        let mut sim = SimSource::new(config).expect("valid");
        let values: Vec<f64> = [0, 1000, 2000, 3000, 4000]
            .into_iter()
            .map(|t| sim.sample_at(t)[0].value)
            .collect();
        let expected = [100.0, 102.0, 110.0, 108.0, 120.0];
        for (got, want) in values.iter().zip(expected) {
            assert!((got - want).abs() < 1e-9, "{values:?}");
        }
    }

    #[test]
    fn seeds_change_noise_and_series_streams_are_independent() {
        let noisy = |seed, n: usize| SimConfig {
            seed,
            series: (0..n)
                .map(|i| SimSeries {
                    noise: 1.0,
                    ..SimSeries::new(format!("s{i}"), 0.0)
                })
                .collect(),
            ..SimConfig::default()
        };
        let one = SimSource::new(noisy(7, 1)).expect("valid").sample_at(0);
        let two = SimSource::new(noisy(7, 2)).expect("valid").sample_at(0);
        let other = SimSource::new(noisy(8, 1)).expect("valid").sample_at(0);
        assert_eq!(
            one[0].value, two[0].value,
            "adding a series changed another"
        );
        assert_ne!(two[0].value, two[1].value);
        assert_ne!(one[0].value, other[0].value);
    }

    #[test]
    fn demo_series_when_unconfigured() {
        let mut sim = SimSource::new(SimConfig::default()).expect("valid");
        let r = sim.sample_at(0);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].series, "sim.temperature");
        assert_eq!(r[0].unit.as_deref(), Some("°C"));
        assert!((r[0].value - 21.0).abs() < 1.0, "{}", r[0].value);
        assert_eq!(r[1].series, "sim.humidity");
    }

    #[test]
    fn validation_names_keys() {
        let key_of = |c: SimConfig| match c.validate() {
            Err(SourceError::Config { key, .. }) => key,
            other => panic!("expected Config error, got {other:?}"),
        };
        let bad = |s: SimSeries| SimConfig {
            series: vec![SimSeries::new("ok", 1.0), s],
            ..SimConfig::default()
        };
        assert_eq!(
            key_of(bad(SimSeries {
                period: Duration::ZERO,
                ..SimSeries::new("p", 0.0)
            })),
            "series[1].period"
        );
        assert_eq!(
            key_of(bad(SimSeries {
                noise: -1.0,
                ..SimSeries::new("n", 0.0)
            })),
            "series[1].noise"
        );
        assert_eq!(key_of(bad(SimSeries::new("ok", 2.0))), "series[1].name");
        assert_eq!(
            key_of(bad(SimSeries::new("has space", 2.0))),
            "series[1].name"
        );
        assert_eq!(
            key_of(bad(SimSeries {
                step_every: Some(0),
                ..SimSeries::new("s", 0.0)
            })),
            "series[1].step_every"
        );
        let too_many = SimConfig {
            count: Some(MAX_SIM_SERIES + 1),
            ..SimConfig::default()
        };
        assert_eq!(key_of(too_many), "count");
        let clash = SimConfig {
            series: vec![SimSeries::new("sim.3", 0.0)],
            count: Some(10),
            ..SimConfig::default()
        };
        assert_eq!(key_of(clash), "count");
    }
}
