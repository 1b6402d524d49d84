//! `[backup]`: the optional built-in backup schedule.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::section::{InvalidValue, refuse};

/// `[backup]`: periodic backups into a directory, oldest removed beyond `keep`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupConfig {
    /// Take a backup this often (`"6h"`, `"1d"`); absent: no scheduled backups.
    #[serde(with = "humantime_serde")]
    pub every: Option<Duration>,
    /// Where scheduled backups go. Relative paths resolve against the data directory;
    /// default `backups` there. Prefer another disk: a backup on the same card does not
    /// survive the card.
    pub dir: PathBuf,
    /// Scheduled backups kept (the oldest beyond this are deleted after a new one is
    /// complete).
    pub keep: usize,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            every: None,
            dir: PathBuf::from("backups"),
            keep: 7,
        }
    }
}

impl BackupConfig {
    /// Refuses values the schedule cannot use, naming the key.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        if let Some(every) = self.every
            && every < Duration::from_secs(60)
        {
            return refuse("backup.every", "must be at least 1m");
        }
        if self.keep == 0 {
            return refuse("backup.keep", "must be at least 1");
        }
        if self.dir.as_os_str().is_empty() {
            return refuse("backup.dir", "must not be empty");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_key() {
        BackupConfig::default().validate().unwrap();
        let short = BackupConfig {
            every: Some(Duration::from_secs(5)),
            ..BackupConfig::default()
        };
        assert_eq!(short.validate().unwrap_err().key, "backup.every");
        let none = BackupConfig {
            keep: 0,
            ..BackupConfig::default()
        };
        assert_eq!(none.validate().unwrap_err().key, "backup.keep");
    }
}
