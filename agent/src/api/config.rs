//! `[api]`: where the HTTP API listens, how large a request may be, who may call it (tokens,
//! allowed hosts) and the limits that hold the listener under abuse (timeouts, connection
//! and session caps, failed-auth throttling), with defaults and `validate()`. Pure data: the
//! agent binds the listener; `[api.tls]` is the `tls` module's.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::access::auth::ApiToken;
use crate::section::{InvalidValue, refuse};
use crate::tls::ApiTlsConfig;

/// Where the HTTP API listens by default: loopback only, so a fresh install exposes nothing.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";
/// Default request-body limit of the HTTP API (16 MiB: a CBOR batch of 50,000 readings fits).
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 << 20;

/// `[api]`: the local HTTP API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Address and port to bind, `IP:PORT`. Port 0 picks a free port (the log says which).
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Bearer tokens the API accepts, each with scopes (`read`, `write`, `admin`). Empty
    /// (and no certificate with scopes in `[[sync.accept_certs]]`): the API is open, which
    /// is allowed on a loopback `listen` only.
    pub tokens: Vec<ApiToken>,
    /// A file whose token (first line) is accepted with scope `admin` as principal
    /// `local-admin`. The .deb creates `/etc/kdelta/token` (group `kdelta`) and sets this
    /// through `KDELTA_API__ADMIN_TOKEN_FILE` in `/etc/default/kdelta`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token_file: Option<std::path::PathBuf>,
    /// Serve `/metrics` without credentials (for a Prometheus without a token).
    pub metrics_public: bool,
    /// Host names (the `Host` header) the API answers besides IP literals, `localhost`,
    /// `*.localhost` and this machine's host name (also `.local`). `"*"` allows any name.
    pub allowed_hosts: Vec<String>,
    /// A connection that has not sent a complete request header within this is closed.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A request body not received completely within this is answered `408` and dropped.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Most open connections. At the cap a new connection is still accepted, and the one
    /// idle longest (no request in progress) is closed for it; only when all are in a
    /// request is the new one refused.
    pub max_connections: usize,
    /// Most open connections from one address (IPv6: one /64), handled like
    /// `max_connections` but shedding only that address's own idle connections. Loopback
    /// clients are exempt (a local reverse proxy, the CLI): they count only in the total.
    pub max_connections_per_address: usize,
    /// Failed authentications from one address (IPv6: one /64) within
    /// `auth_failure_window` before it is answered `429` until the window ends.
    pub max_auth_failures: u32,
    /// The window of `max_auth_failures`.
    #[serde(with = "humantime_serde")]
    pub auth_failure_window: Duration,
    /// Most inbound sync sessions at once.
    pub max_sync_sessions: usize,
    /// Most inbound sync sessions at once under one credential (token or certificate).
    pub max_sync_sessions_per_peer: usize,
    /// `[api.tls]`: serve the API and `/v1/sync` over HTTPS. Absent: plain HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ApiTlsConfig>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: DEFAULT_LISTEN.parse().expect("constant address"),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            tokens: Vec::new(),
            admin_token_file: None,
            metrics_public: false,
            allowed_hosts: Vec::new(),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(60),
            max_connections: 512,
            max_connections_per_address: 64,
            max_auth_failures: 10,
            auth_failure_window: Duration::from_secs(60),
            max_sync_sessions: 64,
            max_sync_sessions_per_peer: 4,
            tls: None,
        }
    }
}

impl ApiConfig {
    /// Checks what serde accepted; the error names the key (`api.…`).
    pub fn validate(&self) -> Result<(), InvalidValue> {
        if !(1024..=(1 << 30)).contains(&self.max_body_bytes) {
            return refuse(
                "api.max_body_bytes",
                format!(
                    "{} is out of range; use 1024 to 1073741824 (1 GiB)",
                    self.max_body_bytes
                ),
            );
        }
        let mut names = HashSet::new();
        for (i, t) in self.tokens.iter().enumerate() {
            let key = format!("api.tokens[{i}]");
            t.validate(&key)?;
            if !names.insert(t.name.as_str()) {
                return refuse(format!("{key}.name"), format!("{:?} is used twice", t.name));
            }
        }
        if self
            .admin_token_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return refuse("api.admin_token_file", "must name a file");
        }
        for (i, h) in self.allowed_hosts.iter().enumerate() {
            if h.is_empty() || h.contains(|c: char| c.is_whitespace() || c == '/' || c == ':') {
                return refuse(
                    format!("api.allowed_hosts[{i}]"),
                    format!("{h:?} is not a host name (no port, scheme or path)"),
                );
            }
        }
        for (key, d, min, max) in [
            (
                "api.header_read_timeout",
                self.header_read_timeout,
                100,
                300_000,
            ),
            (
                "api.body_read_timeout",
                self.body_read_timeout,
                100,
                3_600_000,
            ),
            (
                "api.auth_failure_window",
                self.auth_failure_window,
                1_000,
                86_400_000,
            ),
        ] {
            let ms = d.as_millis();
            if ms < min || ms > max {
                return refuse(
                    key,
                    format!(
                        "{} is out of range; use {} to {}",
                        humantime::format_duration(d),
                        humantime::format_duration(Duration::from_millis(min as u64)),
                        humantime::format_duration(Duration::from_millis(max as u64)),
                    ),
                );
            }
        }
        for (key, v, max) in [
            ("api.max_connections", self.max_connections, 65_536),
            (
                "api.max_connections_per_address",
                self.max_connections_per_address,
                65_536,
            ),
            (
                "api.max_auth_failures",
                self.max_auth_failures as usize,
                1_000_000,
            ),
            ("api.max_sync_sessions", self.max_sync_sessions, 65_536),
            (
                "api.max_sync_sessions_per_peer",
                self.max_sync_sessions_per_peer,
                65_536,
            ),
        ] {
            if !(1..=max).contains(&v) {
                return refuse(key, format!("{v} is out of range; use 1 to {max}"));
            }
        }
        match &self.tls {
            Some(tls) => tls.validate(),
            None => Ok(()),
        }
    }

    /// True when some credential can authenticate API requests: a token, or (over mutual
    /// TLS) a client certificate with scopes in `[[sync.accept_certs]]`.
    pub fn has_credentials(&self, certs: &[crate::peers::AcceptCert]) -> bool {
        let mtls = self.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        !self.tokens.is_empty()
            || self.admin_token_file.is_some()
            || (mtls && certs.iter().any(|c| !c.scopes.is_empty()))
    }
}
