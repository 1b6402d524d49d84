//! Access control state of the API, shared through `AppState`: the credential table
//! (tokens as digests, certificate principals), the `Host` allow-list, the failed-auth
//! throttle and the sync session caps. Pure state and decisions, no HTTP: the middleware
//! that applies them is `api::guard`, which also builds an [`ApiGuard`] from `[api]`.
//!
//! | area | module |
//! |---|---|
//! | `[api] tokens` entries, credential table, principals | `auth` |
//! | failed-authentication throttling per address | `throttle` |
//! | caps on inbound sync sessions | `sessions` |

pub mod auth;
pub mod sessions;
pub mod throttle;

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use auth::Credentials;
use sessions::SyncSlots;
use throttle::AuthThrottle;

/// Everything the gate needs, built from `[api]` (and the certificate principals of
/// `[[sync.accept_certs]]`) at start; a reload swaps the credential table
/// ([`ApiGuard::replace_credentials`]), every other part needs a restart.
pub struct ApiGuard {
    /// Swapped whole by a reload; a request checks against the table current when it
    /// arrives.
    pub(crate) credentials: RwLock<Arc<Credentials>>,
    pub(crate) metrics_public: bool,
    /// Lower-case host names answered besides the built-in ones; `*` answers any.
    pub(crate) allowed_hosts: Vec<String>,
    /// This machine's host name, lower case.
    pub(crate) own_host: String,
    /// Shared with the TLS listener, whose refused client certificates count too.
    pub(crate) throttle: Arc<AuthThrottle>,
    pub(crate) body_read_timeout: Duration,
    /// Caps on inbound sync sessions (taken in `api/sync.rs`).
    pub sync_slots: Arc<SyncSlots>,
}

impl ApiGuard {
    /// True when the API needs no credentials (none configured).
    pub fn is_open(&self) -> bool {
        self.credentials().is_open()
    }

    /// The credential table current now.
    pub fn credentials(&self) -> Arc<Credentials> {
        self.credentials
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the credential table (a reload): requests from now on are checked against
    /// `new`; a token or certificate no longer in it is refused at its next request.
    pub fn replace_credentials(&self, new: Credentials) {
        *self.credentials.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
    }

    /// The failed-authentication throttle, for the TLS listener.
    pub fn throttle(&self) -> Arc<AuthThrottle> {
        self.throttle.clone()
    }

    /// Whether the `Host` header value `host` (with or without port) is answered.
    pub fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host).trim_end_matches('.').to_ascii_lowercase();
        if name.parse::<IpAddr>().is_ok() {
            return true;
        }
        name == "localhost"
            || name.ends_with(".localhost")
            || name == self.own_host
            || name.strip_suffix(".local") == Some(self.own_host.as_str())
            || self.allowed_hosts.iter().any(|h| h == "*" || *h == name)
    }
}

/// The host part of a `Host` header or URL authority: without port, IPv6 without brackets.
pub fn host_name(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    }
}
