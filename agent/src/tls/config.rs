//! `[api.tls]`: the HTTPS listener's files and limits, their defaults and `validate()`. Pure
//! data: reading the files is [`ServerTls::load`](super::ServerTls::load)'s job.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::section::{InvalidValue, refuse};

/// `[api.tls]`: HTTPS on `api.listen` (rustls), optionally with client certificates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTlsConfig {
    /// PEM certificate chain of this agent, end-entity certificate first.
    pub cert: PathBuf,
    /// PEM private key of `cert` (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificate(s) that client certificates must chain to (mutual TLS). Clients
    /// without a certificate are still served (they authenticate with tokens) unless
    /// `require_client_cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// Refuse the TLS handshake of a client without a certificate chaining to `client_ca`:
    /// the API and `/v1/sync` are then reachable only with a client certificate.
    #[serde(default)]
    pub require_client_cert: bool,
    /// A client that has not finished its TLS handshake within this is disconnected.
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Most TLS handshakes in progress at once; at this, the one running longest is
    /// abandoned for a new connection.
    #[serde(default = "default_max_handshakes")]
    pub max_handshakes: usize,
}

fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_handshakes() -> usize {
    64
}

impl ApiTlsConfig {
    /// Checks what serde accepted; the error names the key (`api.tls.…`).
    pub fn validate(&self) -> Result<(), InvalidValue> {
        for (key, path) in [("api.tls.cert", &self.cert), ("api.tls.key", &self.key)] {
            if path.as_os_str().is_empty() {
                return refuse(key, "must name a PEM file");
            }
        }
        if self
            .client_ca
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return refuse("api.tls.client_ca", "must name a PEM file");
        }
        if self.require_client_cert && self.client_ca.is_none() {
            return refuse(
                "api.tls.require_client_cert",
                "needs api.tls.client_ca, the CA client certificates must chain to",
            );
        }
        if self.handshake_timeout < Duration::from_millis(100)
            || self.handshake_timeout > Duration::from_secs(120)
        {
            return refuse(
                "api.tls.handshake_timeout",
                format!(
                    "{} is out of range; use 100ms to 2m",
                    humantime::format_duration(self.handshake_timeout)
                ),
            );
        }
        if !(1..=4096).contains(&self.max_handshakes) {
            return refuse(
                "api.tls.max_handshakes",
                format!("{} is out of range; use 1 to 4096", self.max_handshakes),
            );
        }
        Ok(())
    }
}
