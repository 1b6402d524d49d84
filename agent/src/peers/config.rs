//! `[sync]`: tokens accepted from inbound peers, outbound peers, page size, compression.

use serde::{Deserialize, Serialize};

use kdelta_sync::protocol::{Compression, DEFAULT_PAGE_BYTES};

/// `[sync]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncSection {
    /// Tokens inbound peers may present on `/v1/sync`. Empty: inbound sync is refused (403).
    pub accept_tokens: Vec<AcceptToken>,
    /// Peers this agent connects to.
    pub peers: Vec<PeerConfig>,
    /// Byte budget of one outgoing page.
    pub page_bytes: usize,
    /// Accepted compressions in preference order (`zstd`, `none`).
    pub compression: Vec<String>,
}

impl Default for SyncSection {
    fn default() -> Self {
        SyncSection {
            accept_tokens: Vec::new(),
            peers: Vec::new(),
            page_bytes: DEFAULT_PAGE_BYTES,
            compression: vec!["zstd".into(), "none".into()],
        }
    }
}

/// `[[sync.accept_tokens]]` / `accept_tokens = [{ name, token }]`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptToken {
    /// The name the peer is known by in status and logs.
    pub name: String,
    /// The bearer token it must present.
    pub token: String,
}

impl std::fmt::Debug for AcceptToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcceptToken")
            .field("name", &self.name)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// `[[sync.peers]]`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Name in status output.
    pub name: String,
    /// `ws://host:port` or `http://host:port` (the path `/v1/sync` is added when absent).
    pub url: String,
    /// The token the peer accepts.
    pub token: String,
}

impl std::fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl PeerConfig {
    /// The WebSocket URL to connect to, or why the configured one cannot be used.
    pub fn ws_url(&self) -> Result<String, String> {
        let url = self.url.trim_end_matches('/');
        let rest = if let Some(r) = url.strip_prefix("ws://") {
            r
        } else if let Some(r) = url.strip_prefix("http://") {
            r
        } else if url.starts_with("wss://") || url.starts_with("https://") {
            return Err(format!(
                "{url:?}: TLS peers (wss://, https://) are not supported yet; use ws:// or http://"
            ));
        } else {
            return Err(format!("{url:?}: use ws://host:port or http://host:port"));
        };
        if rest.is_empty() || rest.starts_with('/') {
            return Err(format!("{url:?}: the host is missing"));
        }
        if rest.contains('/') {
            Ok(format!("ws://{rest}"))
        } else {
            Ok(format!("ws://{rest}/v1/sync"))
        }
    }
}

impl SyncSection {
    /// Checks what serde accepted; the error is `(dotted key, detail)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if !(1024..=(64 << 20)).contains(&self.page_bytes) {
            return Err((
                "sync.page_bytes".into(),
                format!("{} is out of range; use 1024 to 67108864", self.page_bytes),
            ));
        }
        for (i, c) in self.compression.iter().enumerate() {
            if Compression::from_name(c).is_none() {
                return Err((
                    format!("sync.compression[{i}]"),
                    format!("{c:?} is unknown; use zstd or none"),
                ));
            }
        }
        for (i, t) in self.accept_tokens.iter().enumerate() {
            if t.name.is_empty() {
                return Err((
                    format!("sync.accept_tokens[{i}].name"),
                    "must not be empty".into(),
                ));
            }
            if t.token.len() < 8 || t.token.len() > 512 {
                return Err((
                    format!("sync.accept_tokens[{i}].token"),
                    "use 8 to 512 bytes".into(),
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, p) in self.peers.iter().enumerate() {
            if p.name.is_empty() || !names.insert(p.name.as_str()) {
                return Err((
                    format!("sync.peers[{i}].name"),
                    format!("{:?}: names must be non-empty and unique", p.name),
                ));
            }
            if let Err(e) = p.ws_url() {
                return Err((format!("sync.peers[{i}].url"), e));
            }
            if p.token.is_empty() || p.token.len() > 512 {
                return Err((
                    format!("sync.peers[{i}].token"),
                    "use 1 to 512 bytes".into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_validation() {
        let peer = |url: &str| PeerConfig {
            name: "hub".into(),
            url: url.into(),
            token: "t".into(),
        };
        assert_eq!(peer("http://h:1").ws_url().unwrap(), "ws://h:1/v1/sync");
        assert_eq!(peer("ws://h:1/").ws_url().unwrap(), "ws://h:1/v1/sync");
        assert_eq!(peer("ws://h:1/x/sync").ws_url().unwrap(), "ws://h:1/x/sync");
        assert!(peer("wss://h:1").ws_url().unwrap_err().contains("TLS"));
        assert!(peer("ftp://h").ws_url().is_err());
        let mut s = SyncSection::default();
        assert!(s.validate().is_ok());
        s.peers = vec![peer("ws://h:1"), peer("ws://h:2")];
        assert_eq!(s.validate().unwrap_err().0, "sync.peers[1].name");
        s.peers.truncate(1);
        s.compression = vec!["lz4".into()];
        assert_eq!(s.validate().unwrap_err().0, "sync.compression[0]");
    }
}
