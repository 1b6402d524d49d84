//! `[retention.docs]`: how much document history is kept — by count (`keep_versions`, the
//! newest N versions of each key) and/or age (`keep`), by default and per key pattern
//! (`[[retention.docs.keys]]`, first match wins). A version is pruned only when it exceeds
//! every limit set, and never while it is one of its key's current values (heads, siblings,
//! tombstones that are heads); see docs/storage.md. Pure data with `validate()`.

use kdelta_sync::{DocRetention, DocRule, KeyRetention};
use serde::{Deserialize, Serialize};

use super::Keep;
use crate::section::{InvalidValue, refuse};

/// Longest key pattern, in bytes (the longest document key).
const MAX_PATTERN_BYTES: usize = kdelta_sync::MAX_KEY_BYTES;
/// Largest `keep_versions`.
const MAX_KEEP_VERSIONS: u64 = 1_000_000_000;

/// `[retention.docs]`. With neither limit set (the default) all history is kept.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DocsKeep {
    /// Keep the newest this many versions of each key (at least 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_versions: Option<u64>,
    /// Keep versions younger than this; `"forever"` keeps every version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep: Option<Keep>,
    /// Per-key-pattern rules, first match wins; a key no rule matches gets the limits above.
    pub keys: Vec<DocKeyKeep>,
}

/// One `[[retention.docs.keys]]` rule: its own limits for the keys matching `pattern`
/// (limits it does not set are not inherited: a rule with none keeps everything).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocKeyKeep {
    /// A document key or a glob (`*` any run of characters, `?` one character).
    pub pattern: String,
    /// Keep the newest this many versions of each matching key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_versions: Option<u64>,
    /// Keep versions younger than this; `"forever"` keeps every version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<Keep>,
}

fn rule(keep_versions: Option<u64>, keep: Option<Keep>) -> DocRule {
    match keep {
        Some(Keep::Forever) => DocRule::default(),
        _ => DocRule {
            keep_versions,
            max_age_ms: keep.and_then(Keep::as_ms),
        },
    }
}

fn check(prefix: &str, keep_versions: Option<u64>, keep: Option<Keep>) -> Result<(), InvalidValue> {
    if let Some(n) = keep_versions
        && !(1..=MAX_KEEP_VERSIONS).contains(&n)
    {
        return refuse(
            format!("{prefix}.keep_versions"),
            format!(
                "{n} is out of range; use 1 to {MAX_KEEP_VERSIONS} (a key's current value is always kept)"
            ),
        );
    }
    if let Some(Keep::For(d)) = keep
        && d < std::time::Duration::from_secs(60)
    {
        return refuse(
            format!("{prefix}.keep"),
            format!(
                "{} is too short; keep at least 1m (\"forever\" keeps every version)",
                humantime::format_duration(d)
            ),
        );
    }
    Ok(())
}

impl DocsKeep {
    /// Checks what serde accepted; errors name the key (`retention.docs.…`).
    pub fn validate(&self) -> Result<(), InvalidValue> {
        check("retention.docs", self.keep_versions, self.keep)?;
        for (i, k) in self.keys.iter().enumerate() {
            let prefix = format!("retention.docs.keys[{i}]");
            if k.pattern.is_empty() || k.pattern.len() > MAX_PATTERN_BYTES {
                return refuse(
                    format!("{prefix}.pattern"),
                    format!("use a document key or a glob of 1 to {MAX_PATTERN_BYTES} bytes"),
                );
            }
            check(&prefix, k.keep_versions, k.keep)?;
        }
        Ok(())
    }

    /// The store's document policy for this section.
    pub fn policy(&self) -> DocRetention {
        DocRetention {
            default: rule(self.keep_versions, self.keep),
            keys: self
                .keys
                .iter()
                .map(|k| KeyRetention {
                    pattern: k.pattern.clone(),
                    rule: rule(k.keep_versions, k.keep),
                })
                .collect(),
        }
    }
}
