//! `[retention]`: how long raw readings (by default and per series pattern) and per-minute
//! rollups are kept, the disk budget (`max_disk`, `min_free`, `hard_limit`), and how often
//! and in what steps pruning runs. Pure data with defaults (keep everything, no budget; twin
//! history compacted after a day, which loses nothing) and `validate()`.

use std::time::Duration;

use kdelta_sync::{RetentionPolicy, SeriesRetention};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::DiskSize;
use crate::section::{InvalidValue, refuse};

/// How long something is kept: `"forever"` or a duration (`"30d"`, `"12h"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Keep {
    /// Never pruned.
    #[default]
    Forever,
    /// Pruned once older than this.
    For(Duration),
}

impl Keep {
    /// The age in ms, `None` for forever.
    pub fn as_ms(self) -> Option<u64> {
        match self {
            Keep::Forever => None,
            Keep::For(d) => Some(d.as_millis().min(u64::MAX as u128) as u64),
        }
    }
}

impl Serialize for Keep {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Keep::Forever => s.serialize_str("forever"),
            Keep::For(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Keep {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text == "forever" {
            return Ok(Keep::Forever);
        }
        humantime::parse_duration(&text)
            .map(Keep::For)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "{text:?} is neither \"forever\" nor a duration like \"30d\" ({e})"
                ))
            })
    }
}

/// One `[[retention.series]]` rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesKeep {
    /// A series name or a glob (`*` any run of characters, `?` one character).
    pub pattern: String,
    /// How long raw readings of matching series are kept.
    pub keep: Keep,
}

/// `[retention]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Raw readings are kept this long unless a `[[retention.series]]` rule matches.
    pub readings: Keep,
    /// Per-minute rollups (aggregates of 1 min and coarser) are kept this long — never
    /// while raw readings of their minute remain.
    pub rollups: Keep,
    /// Per-series rules, first match wins.
    pub series: Vec<SeriesKeep>,
    /// Document history (`[retention.docs]`).
    pub docs: super::DocsKeep,
    /// Twin history compaction (`[retention.twins]`).
    pub twins: super::TwinsKeep,
    /// How often pruning runs.
    #[serde(with = "humantime_serde")]
    pub every: Duration,
    /// Most raw readings one pruning transaction looks at (smaller steps: shorter waits
    /// for ingest; larger: faster pruning).
    pub step_rows: usize,
    /// The store (database + WAL + shm, less free pages) may use at most this much; beyond,
    /// the oldest raw readings upstream peers hold go first. Bytes or a share of the file
    /// system.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_disk: Option<DiskSize>,
    /// Keep at least this much of the file system free (free pages inside the store count as
    /// free); below, the oldest raw readings go as for `max_disk`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_free: Option<DiskSize>,
    /// Readings no upstream peer has acknowledged are kept until the store uses this much
    /// (default: `max_disk` + 25 %) or the free space falls to half of `min_free`; then the
    /// oldest go too, recorded as gap records that sync.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hard_limit: Option<DiskSize>,
    /// The disk reserve (`reserve.rs`): a file of this size in the data directory, released
    /// when the disk fills up so that pruning has room. `None`: [`DEFAULT_RESERVE_BYTES`],
    /// at most 1/[`RESERVE_SHARE_OF_FS`] of the file system; 0 disables it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reserve: Option<DiskSize>,
    /// Compact runs of changes retention pruned wholly (readings and rollups gone) to the
    /// run's last change (`kdelta_sync` `log_runs.rs`); `false` keeps one row per change.
    pub log_runs: bool,
}

/// The reserve's size unless `[retention] reserve` says otherwise.
pub const DEFAULT_RESERVE_BYTES: u64 = 8 << 20;
/// The default reserve takes at most this share of a small file system (1/32: 768 KiB of
/// a 24 MiB one).
pub const RESERVE_SHARE_OF_FS: u64 = 32;

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            readings: Keep::Forever,
            rollups: Keep::Forever,
            series: Vec::new(),
            docs: super::DocsKeep::default(),
            twins: super::TwinsKeep::default(),
            every: Duration::from_secs(60),
            // p99 ingest latency during a prune: ~25 ms at 1,000, 100-108 ms at 5,000.
            step_rows: 1000,
            max_disk: None,
            min_free: None,
            hard_limit: None,
            reserve: None,
            log_runs: true,
        }
    }
}

impl RetentionConfig {
    /// Checks what serde accepted; errors name the key (`retention.…`).
    pub fn validate(&self) -> Result<(), InvalidValue> {
        if !(Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&self.every) {
            return refuse(
                "retention.every",
                format!(
                    "{} is out of range; use 1s to 1day",
                    humantime::format_duration(self.every)
                ),
            );
        }
        if !(100..=1_000_000).contains(&self.step_rows) {
            return refuse(
                "retention.step_rows",
                format!("{} is out of range; use 100 to 1000000", self.step_rows),
            );
        }
        let minute = Duration::from_secs(60);
        for (key, keep) in std::iter::once(("retention.readings".to_owned(), self.readings))
            .chain(std::iter::once((
                "retention.rollups".to_owned(),
                self.rollups,
            )))
            .chain(
                self.series
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (format!("retention.series[{i}].keep"), s.keep)),
            )
        {
            if let Keep::For(d) = keep
                && d < minute
            {
                return refuse(
                    key,
                    format!(
                        "{} is too short; keep at least 1m (\"forever\" keeps everything)",
                        humantime::format_duration(d)
                    ),
                );
            }
        }
        if let (Keep::For(raw), Keep::For(rollups)) = (self.readings, self.rollups)
            && rollups < raw
        {
            return refuse(
                "retention.rollups",
                "must be at least retention.readings: rollups answer aggregates over the ranges whose raw readings are gone",
            );
        }
        self.validate_budget()?;
        for (i, s) in self.series.iter().enumerate() {
            if s.pattern.is_empty() || s.pattern.len() > 256 {
                return refuse(
                    format!("retention.series[{i}].pattern"),
                    "use a series name or a glob of 1 to 256 bytes",
                );
            }
        }
        self.docs.validate()?;
        self.twins.validate()
    }

    /// The disk-budget keys: sizes that make sense together.
    fn validate_budget(&self) -> Result<(), InvalidValue> {
        const MIN_BYTES: u64 = 1 << 20;
        if let Some(DiskSize::Percent(p)) = self.reserve
            && p > 10.0
        {
            return refuse(
                "retention.reserve",
                format!("{p}% would keep too much of the disk empty; use at most 10%"),
            );
        }
        if let Some(DiskSize::Bytes(b)) = self.max_disk
            && b < MIN_BYTES
        {
            return refuse(
                "retention.max_disk",
                format!("{b} bytes is too small; allow the store at least 1MiB"),
            );
        }
        if let Some(DiskSize::Percent(p)) = self.min_free
            && p > 90.0
        {
            return refuse(
                "retention.min_free",
                format!("{p}% would leave the store no room; use at most 90%"),
            );
        }
        match (self.max_disk, self.hard_limit) {
            (None, Some(_)) => refuse(
                "retention.hard_limit",
                "needs retention.max_disk (the budget it is the hard limit of)",
            ),
            (Some(DiskSize::Bytes(m)), Some(DiskSize::Bytes(h))) if h < m => refuse(
                "retention.hard_limit",
                format!("{h} bytes is below retention.max_disk ({m} bytes)"),
            ),
            (Some(DiskSize::Percent(m)), Some(DiskSize::Percent(h))) if h < m => refuse(
                "retention.hard_limit",
                format!("{h}% is below retention.max_disk ({m}%)"),
            ),
            _ => Ok(()),
        }
    }

    /// What a hub replica on PostgreSQL cannot do of this section, refused naming the key:
    /// the disk budget (the disk is the database server's: PostgreSQL's own monitoring
    /// bounds it). The readings rules (`readings`, `[[retention.series]]`, `rollups`) and
    /// document history (`[retention.docs]`) apply there.
    pub fn validate_for_postgres(&self) -> Result<(), InvalidValue> {
        const WHY: &str = "is not available on a PostgreSQL hub: the disk is the database server's \
                           (bound it with PostgreSQL's own monitoring; retention.readings and \
                           [[retention.series]] prune by age there)";
        for (key, set) in [
            ("retention.max_disk", self.max_disk.is_some()),
            ("retention.min_free", self.min_free.is_some()),
            ("retention.hard_limit", self.hard_limit.is_some()),
            ("retention.reserve", self.reserve.is_some()),
        ] {
            if set {
                return refuse(key, WHY);
            }
        }
        Ok(())
    }

    /// The reserve's size in bytes on a file system of `fs_total` bytes (0: none).
    pub fn reserve_bytes(&self, fs_total: u64) -> u64 {
        match self.reserve {
            Some(size) => size.bytes_of(fs_total),
            None => DEFAULT_RESERVE_BYTES.min(fs_total / RESERVE_SHARE_OF_FS),
        }
    }

    /// True when a disk budget (`max_disk` or `min_free`) is configured.
    pub fn has_budget(&self) -> bool {
        self.max_disk.is_some() || self.min_free.is_some()
    }

    /// The store's policy for this section.
    pub fn policy(&self) -> RetentionPolicy {
        RetentionPolicy {
            readings_max_age_ms: self.readings.as_ms(),
            series: self
                .series
                .iter()
                .map(|s| SeriesRetention {
                    pattern: s.pattern.clone(),
                    max_age_ms: s.keep.as_ms(),
                })
                .collect(),
            rollups_max_age_ms: self.rollups.as_ms(),
            docs: self.docs.policy(),
            twins: self.twins.policy(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<RetentionConfig, String> {
        #[derive(Deserialize)]
        struct Top {
            retention: RetentionConfig,
        }
        toml::from_str::<Top>(toml_text)
            .map(|t| t.retention)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn durations_forever_and_series_rules() {
        let c = parse(
            "[retention]\nreadings = \"30d\"\nrollups = \"forever\"\n[[retention.series]]\npattern = \"sim.*\"\nkeep = \"2h\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        let p = c.policy();
        assert_eq!(p.readings_max_age_ms, Some(30 * 86_400_000));
        assert_eq!(p.rollups_max_age_ms, None);
        assert_eq!(p.readings_max_age("sim.1"), Some(7_200_000));
        assert_eq!(p.readings_max_age("gh.temp"), Some(30 * 86_400_000));
        RetentionConfig::default().validate().unwrap();
    }

    #[test]
    fn the_reserve_defaults_to_8mib_scaled_down_on_small_file_systems() {
        let d = RetentionConfig::default();
        assert_eq!(d.reserve_bytes(64 << 30), DEFAULT_RESERVE_BYTES);
        assert_eq!(d.reserve_bytes(24 << 20), 768 << 10);
        let c = parse("[retention]\nreserve = \"0\"\n").unwrap();
        c.validate().unwrap();
        assert_eq!(c.reserve_bytes(64 << 30), 0, "0 disables it");
        let c = parse("[retention]\nreserve = \"1%\"\n").unwrap();
        assert_eq!(c.reserve_bytes(1000 << 20), 10 << 20);
        let c = parse("[retention]\nreserve = \"20%\"\n").unwrap();
        assert_eq!(c.validate().unwrap_err().key, "retention.reserve");
        let c = parse("[retention]\nreserve = \"2MiB\"\n").unwrap();
        assert_eq!(
            c.validate_for_postgres().unwrap_err().key,
            "retention.reserve"
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = parse("[retention]\nreadings = \"a while\"\n").unwrap_err();
        assert!(e.contains("forever"), "{e}");
        let c = parse("[retention]\nreadings = \"30d\"\nrollups = \"1d\"\n").unwrap();
        assert_eq!(c.validate().unwrap_err().key, "retention.rollups");
        let c = parse("[retention]\nreadings = \"10s\"\n").unwrap();
        assert_eq!(c.validate().unwrap_err().key, "retention.readings");
        let c = parse("[retention]\nstep_rows = 1\n").unwrap();
        assert_eq!(c.validate().unwrap_err().key, "retention.step_rows");
        let c = parse("[[retention.series]]\npattern = \"\"\nkeep = \"1h\"\n").unwrap();
        assert_eq!(c.validate().unwrap_err().key, "retention.series[0].pattern");
        let c = parse("[retention.docs]\nkeep_versions = 0\n").unwrap();
        assert_eq!(
            c.validate().unwrap_err().key,
            "retention.docs.keep_versions"
        );
        let c = parse("[[retention.docs.keys]]\npattern = \"a/*\"\nkeep = \"5s\"\n").unwrap();
        assert_eq!(c.validate().unwrap_err().key, "retention.docs.keys[0].keep");
        let c = parse("[[retention.docs.keys]]\npattern = \"\"\n").unwrap();
        assert_eq!(
            c.validate().unwrap_err().key,
            "retention.docs.keys[0].pattern"
        );
        assert!(parse("[retention.docs]\nkeep_version = 3\n").is_err());
    }

    #[test]
    fn document_rules_count_age_patterns_and_forever() {
        let c = parse(
            "[retention.docs]\nkeep_versions = 10\nkeep = \"90d\"\n\
             [[retention.docs.keys]]\npattern = \"audit/*\"\nkeep = \"forever\"\nkeep_versions = 2\n\
             [[retention.docs.keys]]\npattern = \"tmp/*\"\nkeep_versions = 1\n",
        )
        .unwrap();
        c.validate().unwrap();
        let p = c.policy();
        assert!(!p.keeps_everything());
        let d = p.docs.rule("gh/setpoint");
        assert_eq!(
            (d.keep_versions, d.max_age_ms),
            (Some(10), Some(90 * 86_400_000))
        );
        assert!(p.docs.rule("audit/x").keeps_everything(), "forever wins");
        let t = p.docs.rule("tmp/x");
        assert_eq!((t.keep_versions, t.max_age_ms), (Some(1), None));
        // Only documents configured: the policy prunes.
        let only = parse("[retention.docs]\nkeep_versions = 3\n").unwrap();
        assert!(!only.policy().keeps_everything());
    }

    #[test]
    fn twins_compact_after_a_day_by_default_and_forever_turns_it_off() {
        let d = RetentionConfig::default().policy();
        assert!(d.keeps_all_readings() && d.docs.keeps_everything());
        assert_eq!(
            d.twins,
            kdelta_sync::TwinCompaction {
                after_ms: Some(86_400_000),
                keep_raw: 0
            }
        );
        let c = parse("[retention.twins]\ncompact_after = \"forever\"\n").unwrap();
        c.validate().unwrap();
        assert!(c.policy().keeps_everything());
        let c = parse("[retention.twins]\ncompact_after = \"10s\"\nkeep_raw = 500\n").unwrap();
        c.validate().unwrap();
        assert_eq!(c.policy().twins.after_ms, Some(10_000));
        assert_eq!(c.policy().twins.keep_raw, 500);
        let c = parse("[retention.twins]\nkeep_raw = 2000000000\n").unwrap();
        assert_eq!(c.validate().unwrap_err().key, "retention.twins.keep_raw");
        let e = parse("[retention.twins]\ncompact_after = \"soon\"\n").unwrap_err();
        assert!(e.contains("forever"), "{e}");
        assert!(parse("[retention.twins]\ncompact = \"1d\"\n").is_err());
    }

    #[test]
    fn budget_keys_parse_and_bad_ones_name_the_key() {
        let c =
            parse("[retention]\nmax_disk = \"2GiB\"\nmin_free = \"10%\"\nhard_limit = \"3GiB\"\n")
                .unwrap();
        c.validate().unwrap();
        assert_eq!(c.max_disk, Some(DiskSize::Bytes(2 << 30)));
        assert_eq!(c.min_free, Some(DiskSize::Percent(10.0)));
        assert!(c.has_budget() && !RetentionConfig::default().has_budget());
        let e = parse("[retention]\nmax_disk = \"lots\"\n").unwrap_err();
        assert!(e.contains("max_disk") && e.contains("500MB"), "{e}");
        let c = parse("[retention]\nmax_disk = \"10kB\"\n").unwrap();
        assert_eq!(c.validate().unwrap_err().key, "retention.max_disk");
        let c = parse("[retention]\nhard_limit = \"1GB\"\n").unwrap();
        assert_eq!(c.validate().unwrap_err().key, "retention.hard_limit");
        let c = parse("[retention]\nmax_disk = \"2GB\"\nhard_limit = \"1GB\"\n").unwrap();
        assert_eq!(c.validate().unwrap_err().key, "retention.hard_limit");
        let c = parse("[retention]\nmin_free = \"95%\"\n").unwrap();
        assert_eq!(c.validate().unwrap_err().key, "retention.min_free");
    }
}
