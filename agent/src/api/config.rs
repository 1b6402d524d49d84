//! `[api]`: where the HTTP API listens and how large a request may be, with defaults and
//! `validate()`. Pure data: the agent binds the listener; `[api.tls]` is the `tls` module's.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

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
    /// `[api.tls]`: serve the API and `/v1/sync` over HTTPS. Absent: plain HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ApiTlsConfig>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: DEFAULT_LISTEN.parse().expect("constant address"),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
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
        match &self.tls {
            Some(tls) => tls.validate(),
            None => Ok(()),
        }
    }
}
