//! `[retention.twins]`: twin history compaction — when the raw automerge chunk of a twin
//! change is dropped because its twin's snapshot holds it byte for byte. Lossless: history,
//! as-of reads, sync, the digest and `kdelta verify` answer exactly as before (the chunk is
//! rebuilt from the snapshot when read); see docs/storage.md, "Twin history". Pure data with
//! defaults (compact after a day) and `validate()`.

use std::time::Duration;

use kdelta_sync::TwinCompaction;
use serde::{Deserialize, Serialize};

use super::Keep;
use crate::section::{InvalidValue, refuse};

/// Largest `keep_raw`.
const MAX_KEEP_RAW: u64 = 1_000_000_000;

/// `[retention.twins]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TwinsKeep {
    /// Raw chunks of twin changes written longer ago than this (and held by their twin's
    /// snapshot) are dropped; `"forever"` keeps every chunk raw.
    pub compact_after: Keep,
    /// The newest this many changes of each twin keep their raw chunk whatever their age.
    pub keep_raw: u64,
}

impl Default for TwinsKeep {
    fn default() -> Self {
        TwinsKeep {
            compact_after: Keep::For(Duration::from_secs(86_400)),
            keep_raw: 0,
        }
    }
}

impl TwinsKeep {
    /// Checks what serde accepted; errors name the key (`retention.twins.…`).
    pub fn validate(&self) -> Result<(), InvalidValue> {
        if self.keep_raw > MAX_KEEP_RAW {
            return refuse(
                "retention.twins.keep_raw",
                format!("{} is out of range; use 0 to {MAX_KEEP_RAW}", self.keep_raw),
            );
        }
        Ok(())
    }

    /// The store's compaction rule for this section.
    pub fn policy(&self) -> TwinCompaction {
        TwinCompaction {
            after_ms: self.compact_after.as_ms(),
            keep_raw: self.keep_raw,
        }
    }
}
