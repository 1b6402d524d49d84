//! Settings of one sync session. The agent maps its `[sync]` config section here; every
//! field has a safe default and [`SyncConfig::validate`] names the field that is wrong.

use std::time::Duration;

use super::{
    Compression, DEFAULT_MAX_FRAME_BYTES, DEFAULT_PAGE_BYTES, MAX_FRAME_BYTES, MIN_FRAME_BYTES,
};

/// When a session ends by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionMode {
    /// Catch up, then push new changes until the link drops or shutdown (the agent's peers).
    #[default]
    Continuous,
    /// Catch up in both directions, then end with `Bye { reason: "done" }` (`kdelta sync now`).
    OneShot,
}

/// What a responder sends a peer admitted with a `device` credential
/// ([`PeerRole::Device`](super::PeerRole::Device)); peers with a `hub` credential, and every
/// peer of an initiator, receive every actor's changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceRelay {
    /// Every actor's changes: each device ends up holding the whole fleet's data, and every
    /// store's digest is equal once all have synced (the default, as before this setting).
    #[default]
    All,
    /// Only the changes of this store's own actor (on a PostgreSQL hub, the actor its
    /// replicas share: documents and twins written on the hub) and of the device itself (so
    /// a device restored from an old backup gets its own history back). A fleet hub's send
    /// cost stays linear in the fleet instead of quadratic; devices' digests then differ
    /// from the hub's by the other devices' changes.
    Own,
}

impl DeviceRelay {
    /// `all` or `own`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceRelay::All => "all",
            DeviceRelay::Own => "own",
        }
    }
}

/// Settings of a [`SyncSession`](super::SyncSession).
#[derive(Debug, Clone, PartialEq)]
pub struct SyncConfig {
    /// The name this store announces to peers (the hostname, typically).
    pub peer_name: String,
    /// The bearer token an initiator presents; unused by a responder.
    pub token: Option<String>,
    /// Accepted compressions in preference order. The initiator offers them; the responder
    /// picks the first one it also accepts; `none` is always possible as a fallback.
    pub compression: Vec<Compression>,
    /// zstd level for outgoing frames (1–19; 3 is a good default, 1 on slow CPUs).
    pub zstd_level: i32,
    /// Largest frame accepted from the peer, in bytes, on the wire and once decompressed.
    pub max_frame_bytes: usize,
    /// Byte budget of one outgoing page (exact encoded change sizes). Capped at what the
    /// peer's `max_frame_bytes` leaves for changes; a single change larger than the budget
    /// goes alone in a page when it fits the peer's limit.
    pub page_bytes: usize,
    /// Most pages sent and not yet acknowledged (pipelining for throughput).
    pub window: usize,
    /// A `Ping` is sent after this long without sending anything.
    pub keepalive: Duration,
    /// The session ends with [`ProtocolError::Timeout`](super::ProtocolError::Timeout) after
    /// this long without receiving anything, or when a send blocks this long.
    pub idle_timeout: Duration,
    /// Limit for the handshake and the exchange of version vectors.
    pub handshake_timeout: Duration,
    /// In live mode, the change log is re-checked this often even without a change event
    /// (the event channel may lag, and then drops events).
    pub live_recheck: Duration,
    /// When the session ends by itself.
    pub mode: SessionMode,
    /// What a responder sends a peer admitted with a `device` credential.
    pub device_relay: DeviceRelay,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            peer_name: String::from("kdelta"),
            token: None,
            compression: vec![Compression::Zstd, Compression::None],
            zstd_level: 3,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            page_bytes: DEFAULT_PAGE_BYTES,
            window: 4,
            keepalive: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            live_recheck: Duration::from_secs(5),
            mode: SessionMode::Continuous,
            device_relay: DeviceRelay::All,
        }
    }
}

/// A setting of [`SyncConfig`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid sync setting `{key}`: {reason}")]
pub struct ConfigError {
    /// The field, as named in [`SyncConfig`].
    pub key: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl SyncConfig {
    /// Checks that the settings can work together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key, reason: String| Err(ConfigError { key, reason });
        if self.peer_name.len() > super::MAX_TEXT_BYTES {
            return err("peer_name", "is longer than 1024 bytes".into());
        }
        if self
            .token
            .as_ref()
            .is_some_and(|t| t.len() > super::MAX_TOKEN_BYTES)
        {
            return err("token", "is longer than 4096 bytes".into());
        }
        if !(MIN_FRAME_BYTES..=MAX_FRAME_BYTES).contains(&(self.max_frame_bytes as u64)) {
            return err(
                "max_frame_bytes",
                format!("must be between {MIN_FRAME_BYTES} and {MAX_FRAME_BYTES}"),
            );
        }
        if self.page_bytes == 0 || self.page_bytes > self.max_frame_bytes / 2 {
            return err(
                "page_bytes",
                format!(
                    "must be between 1 and half of max_frame_bytes ({})",
                    self.max_frame_bytes / 2
                ),
            );
        }
        if !(1..=64).contains(&self.window) {
            return err("window", "must be between 1 and 64".into());
        }
        if !(1..=19).contains(&self.zstd_level) {
            return err("zstd_level", "must be between 1 and 19".into());
        }
        for (key, d) in [
            ("keepalive", self.keepalive),
            ("idle_timeout", self.idle_timeout),
            ("handshake_timeout", self.handshake_timeout),
            ("live_recheck", self.live_recheck),
        ] {
            if d.is_zero() {
                return err(key, "must be longer than zero".into());
            }
        }
        if self.idle_timeout <= self.keepalive {
            return err(
                "idle_timeout",
                "must be longer than keepalive, or idle peers time out".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_the_key() {
        SyncConfig::default().validate().unwrap();
        let bad = SyncConfig {
            page_bytes: DEFAULT_MAX_FRAME_BYTES,
            ..SyncConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().key, "page_bytes");
        let bad = SyncConfig {
            window: 0,
            ..SyncConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().key, "window");
        let bad = SyncConfig {
            idle_timeout: Duration::from_secs(1),
            ..SyncConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().key, "idle_timeout");
    }
}
