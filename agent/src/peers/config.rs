//! `[sync]`: tokens and client certificates accepted from inbound peers, outbound peers
//! (with their TLS settings), page size, compression.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio_rustls::rustls::ClientConfig;

use crate::secret::{TokenFileError, TokenLength, TokenSource};
use crate::section::{InvalidValue, refuse};
use crate::tls::{ClientAuth, TlsError};

use kdelta_sync::protocol::{
    Compression, DEFAULT_MAX_FRAME_BYTES, DEFAULT_PAGE_BYTES, DeviceRelay, MAX_FRAME_BYTES,
    MIN_FRAME_BYTES, PeerRole,
};

/// `[sync]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncSection {
    /// Tokens inbound peers may present on `/v1/sync`. Empty: inbound sync is refused (403).
    pub accept_tokens: Vec<AcceptToken>,
    /// Client certificates inbound peers may present instead of a token (mutual TLS, needs
    /// `api.tls.client_ca`), pinned by SHA-256 fingerprint.
    pub accept_certs: Vec<AcceptCert>,
    /// Peers this agent connects to.
    pub peers: Vec<PeerConfig>,
    /// Byte budget of one outgoing page.
    pub page_bytes: usize,
    /// Largest sync frame accepted from a peer (and announced to it), in bytes, on the
    /// wire and once decompressed. Must hold the largest change (`store.max_change_bytes`).
    pub max_frame_bytes: usize,
    /// Accepted compressions in preference order (`zstd`, `none`).
    pub compression: Vec<String>,
    /// What inbound peers with a `device` credential receive: `all` (every actor's
    /// changes) or `own` (this agent's own changes and the device's; a fleet hub).
    pub device_relay: DeviceRelay,
}

impl Default for SyncSection {
    fn default() -> Self {
        SyncSection {
            accept_tokens: Vec::new(),
            accept_certs: Vec::new(),
            peers: Vec::new(),
            page_bytes: DEFAULT_PAGE_BYTES,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            compression: vec!["zstd".into(), "none".into()],
            device_relay: DeviceRelay::All,
        }
    }
}

/// `[[sync.accept_tokens]]` / `accept_tokens = [{ name, token | token_sha256 | token_file }]`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptToken {
    /// The name the peer is known by in status and logs.
    pub name: String,
    /// The bearer token it must present, in clear text (8 to 512 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// SHA-256 of the token, 64 hex digits (`printf %s TOKEN | sha256sum`): the config
    /// file then holds no secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_sha256: Option<String>,
    /// A file holding the token (first line, surrounding whitespace ignored), read at start
    /// and when a reload changes `[sync]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// `device` (may send only its own actor's changes; bound to the first actor that uses
    /// it) or `hub` (may relay others' changes). Unset: `hub`, as before roles existed, with
    /// a warning at start. See `docs/security.md`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<PeerRole>,
}

impl std::fmt::Debug for AcceptToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcceptToken")
            .field("name", &self.name)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field(
                "token_sha256",
                &self.token_sha256.as_ref().map(|_| "<redacted>"),
            )
            .field("token_file", &self.token_file)
            .field("role", &self.role)
            .finish()
    }
}

impl AcceptToken {
    /// An entry accepting the clear-text `token` as `name` (role unset).
    pub fn clear(name: impl Into<String>, token: impl Into<String>) -> AcceptToken {
        AcceptToken {
            name: name.into(),
            token: Some(token.into()),
            token_sha256: None,
            token_file: None,
            role: None,
        }
    }

    /// Where the token comes from (exactly one of the three fields, once validated).
    pub fn source(&self) -> TokenSource<'_> {
        TokenSource {
            token: self.token.as_deref(),
            token_sha256: self.token_sha256.as_deref(),
            token_file: self.token_file.as_deref(),
        }
    }

    /// The SHA-256 digest of the accepted token, reading `token_file`; `key` is the entry's
    /// dotted key (`sync.accept_tokens[0]`) for errors.
    pub fn digest(&self, key: &str) -> Result<[u8; 32], TokenFileError> {
        self.source().digest(key, SYNC_TOKEN_LENGTH.min_chars)
    }
}

/// How long an accepted sync token may be.
const SYNC_TOKEN_LENGTH: TokenLength = TokenLength {
    min_chars: 8,
    max_bytes: 512,
};

/// `[[sync.accept_certs]]`: a client certificate accepted for inbound sync.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptCert {
    /// The name the peer is known by in status, logs and metrics.
    pub name: String,
    /// SHA-256 fingerprint of its certificate (DER), 64 hex digits; `:` separators and
    /// either case accepted (`openssl x509 -noout -fingerprint -sha256 -in cert.pem`).
    pub fingerprint: String,
    /// API scopes this certificate also grants (`read`, `write`, `admin`), as principal
    /// `name`. Empty (the default): the certificate is accepted for `/v1/sync` only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<crate::scope::Scope>,
    /// `device` or `hub`, as for [`AcceptToken::role`] (unset: `hub`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<PeerRole>,
}

impl AcceptCert {
    /// The fingerprint as bytes, or why it is not 32 bytes of hex.
    pub fn fingerprint_bytes(&self) -> Result<[u8; 32], String> {
        let digits: String = self.fingerprint.chars().filter(|c| *c != ':').collect();
        let mut out = [0u8; 32];
        hex::decode_to_slice(digits.trim(), &mut out).map_err(|_| {
            format!(
                "{:?} is not a SHA-256 fingerprint: use 64 hex digits (`:` separators allowed)",
                self.fingerprint
            )
        })?;
        Ok(out)
    }
}

/// `[[sync.peers]]`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Name in status output.
    pub name: String,
    /// `ws://`, `http://`, `wss://` or `https://host:port` (the path `/v1/sync` is added
    /// when absent).
    pub url: String,
    /// The token the peer accepts. Optional when a client certificate is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// PEM CA certificate(s) trusted for this peer's server certificate (`wss://` only).
    /// Absent: the system's root certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// PEM client certificate chain presented to the peer (mutual TLS, `wss://` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
    /// This peer is upstream (a hub collecting this device's data): retention and the disk
    /// budget keep raw readings it has not acknowledged until `[retention]`'s hard limit
    /// (docs/storage.md).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub upstream: bool,
}

impl std::fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca", &self.ca)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .field("upstream", &self.upstream)
            .finish()
    }
}

impl PeerConfig {
    /// The WebSocket URL to connect to (`ws://…` or `wss://…`), or why the configured one
    /// cannot be used.
    pub fn ws_url(&self) -> Result<String, String> {
        let url = self.url.trim_end_matches('/');
        let (scheme, rest) = if let Some(r) = url.strip_prefix("ws://") {
            ("ws", r)
        } else if let Some(r) = url.strip_prefix("http://") {
            ("ws", r)
        } else if let Some(r) = url.strip_prefix("wss://") {
            ("wss", r)
        } else if let Some(r) = url.strip_prefix("https://") {
            ("wss", r)
        } else {
            return Err(format!(
                "{url:?}: use ws://, http://, wss:// or https://host:port"
            ));
        };
        if rest.is_empty() || rest.starts_with('/') {
            return Err(format!("{url:?}: the host is missing"));
        }
        if rest.contains('/') {
            Ok(format!("{scheme}://{rest}"))
        } else {
            Ok(format!("{scheme}://{rest}/v1/sync"))
        }
    }

    /// True for `wss://` and `https://` peers.
    pub fn is_tls(&self) -> bool {
        self.ws_url().is_ok_and(|u| u.starts_with("wss://"))
    }

    /// The TLS client config for this peer (`None` for plain peers), reading its CA and
    /// client certificate files; `key` is the entry's dotted key (`sync.peers[0]`), named in
    /// errors. Read on every connection attempt, so renewed certificates need no restart.
    pub fn tls_config(&self, key: &str) -> Result<Option<Arc<ClientConfig>>, TlsError> {
        if !self.is_tls() {
            return Ok(None);
        }
        let roots = crate::tls::roots(&format!("{key}.ca"), self.ca.as_deref())?;
        let auth = ClientAuth::load(key, self.client_cert.as_deref(), self.client_key.as_deref())?;
        crate::tls::client_config(roots, auth).map(Some)
    }
}

impl SyncSection {
    /// Reads the TLS files of every `wss://` peer once (at start), so a wrong path is an
    /// error naming its key instead of a failing peer.
    pub fn check_tls_files(&self) -> Result<(), TlsError> {
        for (i, p) in self.peers.iter().enumerate() {
            p.tls_config(&format!("sync.peers[{i}]"))?;
        }
        Ok(())
    }

    /// Reads every `accept_tokens[].token_file` (at start and before a reload applies
    /// `[sync]`); the error names the key.
    pub fn check_token_files(&self) -> Result<(), TokenFileError> {
        for (i, t) in self.accept_tokens.iter().enumerate() {
            t.digest(&format!("sync.accept_tokens[{i}]"))?;
        }
        Ok(())
    }
}

fn empty(p: &Option<PathBuf>) -> bool {
    p.as_deref()
        .is_some_and(|p: &Path| p.as_os_str().is_empty())
}

impl SyncSection {
    /// Checks what serde accepted; the error names the key (`sync.peers[0].url`).
    pub fn validate(&self) -> Result<(), InvalidValue> {
        if !(1024..=(64 << 20)).contains(&self.page_bytes) {
            return refuse(
                "sync.page_bytes",
                format!("{} is out of range; use 1024 to 67108864", self.page_bytes),
            );
        }
        if !(MIN_FRAME_BYTES..=MAX_FRAME_BYTES).contains(&(self.max_frame_bytes as u64)) {
            return refuse(
                "sync.max_frame_bytes",
                format!(
                    "{} is out of range; use {MIN_FRAME_BYTES} to {MAX_FRAME_BYTES}",
                    self.max_frame_bytes
                ),
            );
        }
        for (i, c) in self.compression.iter().enumerate() {
            if Compression::from_name(c).is_none() {
                return refuse(
                    format!("sync.compression[{i}]"),
                    format!("{c:?} is unknown; use zstd or none"),
                );
            }
        }
        for (i, t) in self.accept_tokens.iter().enumerate() {
            if t.name.is_empty() {
                return refuse(format!("sync.accept_tokens[{i}].name"), "must not be empty");
            }
            t.source()
                .validate(&format!("sync.accept_tokens[{i}]"), SYNC_TOKEN_LENGTH)?;
        }
        let mut cert_names = std::collections::HashSet::new();
        for (i, c) in self.accept_certs.iter().enumerate() {
            if c.name.is_empty() || !cert_names.insert(c.name.as_str()) {
                return refuse(
                    format!("sync.accept_certs[{i}].name"),
                    format!("{:?}: names must be non-empty and unique", c.name),
                );
            }
            if let Err(e) = c.fingerprint_bytes() {
                return refuse(format!("sync.accept_certs[{i}].fingerprint"), e);
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, p) in self.peers.iter().enumerate() {
            if p.name.is_empty() || !names.insert(p.name.as_str()) {
                return refuse(
                    format!("sync.peers[{i}].name"),
                    format!("{:?}: names must be non-empty and unique", p.name),
                );
            }
            if let Err(e) = p.ws_url() {
                return refuse(format!("sync.peers[{i}].url"), e);
            }
            let key = |k: &str| format!("sync.peers[{i}].{k}");
            for (k, v) in [
                ("ca", &p.ca),
                ("client_cert", &p.client_cert),
                ("client_key", &p.client_key),
            ] {
                if empty(v) {
                    return refuse(key(k), "must name a PEM file");
                }
                if v.is_some() && !p.is_tls() {
                    return refuse(
                        key(k),
                        format!("is only used with wss:// or https:// URLs, not {:?}", p.url),
                    );
                }
            }
            match (&p.client_cert, &p.client_key) {
                (Some(_), None) => {
                    return refuse(key("client_key"), "is required with client_cert");
                }
                (None, Some(_)) => {
                    return refuse(key("client_cert"), "is required with client_key");
                }
                _ => {}
            }
            match &p.token {
                None if p.client_cert.is_none() => {
                    return refuse(
                        key("token"),
                        "is required unless client_cert and client_key are set (mutual TLS)",
                    );
                }
                Some(t) if t.is_empty() || t.len() > 512 => {
                    return refuse(key("token"), "use 1 to 512 bytes");
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(url: &str) -> PeerConfig {
        PeerConfig {
            name: "hub".into(),
            url: url.into(),
            token: Some("t".into()),
            ca: None,
            client_cert: None,
            client_key: None,
            upstream: false,
        }
    }

    #[test]
    fn urls_and_validation() {
        assert_eq!(peer("http://h:1").ws_url().unwrap(), "ws://h:1/v1/sync");
        assert_eq!(peer("ws://h:1/").ws_url().unwrap(), "ws://h:1/v1/sync");
        assert_eq!(peer("ws://h:1/x/sync").ws_url().unwrap(), "ws://h:1/x/sync");
        assert_eq!(peer("wss://h:1").ws_url().unwrap(), "wss://h:1/v1/sync");
        assert_eq!(peer("https://h:1/").ws_url().unwrap(), "wss://h:1/v1/sync");
        assert!(peer("https://h").is_tls() && !peer("http://h").is_tls());
        assert!(peer("ftp://h").ws_url().is_err());
        let mut s = SyncSection::default();
        assert!(s.validate().is_ok());
        s.peers = vec![peer("ws://h:1"), peer("ws://h:2")];
        assert_eq!(s.validate().unwrap_err().key, "sync.peers[1].name");
        s.peers.truncate(1);
        s.compression = vec!["lz4".into()];
        assert_eq!(s.validate().unwrap_err().key, "sync.compression[0]");
    }

    /// The first error of `[sync]` with `f` applied to one TLS peer.
    fn tls_peer_error(f: impl FnOnce(&mut PeerConfig)) -> (String, String) {
        let mut p = peer("wss://hub:7878");
        f(&mut p);
        let s = SyncSection {
            peers: vec![p],
            ..SyncSection::default()
        };
        let e = s.validate().unwrap_err();
        (e.key, e.detail)
    }

    #[test]
    fn tls_peer_validation_names_the_key() {
        let pem = || Some(PathBuf::from("/etc/kdelta/x.pem"));
        let (key, detail) = tls_peer_error(|p| p.token = None);
        assert_eq!(key, "sync.peers[0].token");
        assert!(detail.contains("client_cert"), "{detail}");
        let (key, _) = tls_peer_error(|p| p.client_cert = pem());
        assert_eq!(key, "sync.peers[0].client_key");
        let (key, _) = tls_peer_error(|p| p.client_key = pem());
        assert_eq!(key, "sync.peers[0].client_cert");
        let (key, _) = tls_peer_error(|p| p.ca = Some(PathBuf::new()));
        assert_eq!(key, "sync.peers[0].ca");
        let (key, detail) = tls_peer_error(|p| {
            p.url = "ws://hub:7878".into();
            p.ca = pem();
        });
        assert_eq!(key, "sync.peers[0].ca");
        assert!(detail.contains("wss://"), "{detail}");
        // A client certificate replaces the token.
        let mut p = peer("wss://hub:7878");
        p.token = None;
        p.client_cert = pem();
        p.client_key = pem();
        let s = SyncSection {
            peers: vec![p],
            ..SyncSection::default()
        };
        s.validate().unwrap();
    }

    #[test]
    fn accept_certs_validation() {
        let cert = |name: &str, fp: &str| AcceptCert {
            role: None,
            name: name.into(),
            fingerprint: fp.into(),
            scopes: vec![],
        };
        let hex64 = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(
            cert("a", &hex64).fingerprint_bytes().unwrap(),
            cert("a", &colons).fingerprint_bytes().unwrap()
        );
        let mut s = SyncSection {
            accept_certs: vec![cert("a", &hex64), cert("b", "abcd")],
            ..SyncSection::default()
        };
        assert_eq!(
            s.validate().unwrap_err().key,
            "sync.accept_certs[1].fingerprint"
        );
        s.accept_certs[1] = cert("a", &hex64);
        assert_eq!(s.validate().unwrap_err().key, "sync.accept_certs[1].name");
        s.accept_certs.pop();
        s.validate().unwrap();
    }
}
