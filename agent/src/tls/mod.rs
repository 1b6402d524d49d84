//! TLS with rustls and the **ring** provider, for every TLS end of the agent: the HTTPS
//! listener of the API and `/v1/sync` (`[api.tls]`, optional mutual TLS), outbound `wss://`
//! sync peers and `mqtts://` brokers.
//!
//! | area | module |
//! |---|---|
//! | reading PEM files (bounded), root stores from a CA file or the system, the provider | `pem` |
//! | client configurations and readable handshake errors | `client` |
//! | the HTTPS listener for `axum::serve` and the verified client identity | `listener` |
//!
//! Owns `[api.tls]` ([`ApiTlsConfig`], module `config`; peer keys live in `[[sync.peers]]`);
//! callers pass the dotted key of every file so errors name it. Never
//! builds a rustls config with a process-default provider: every builder gets ring
//! explicitly, so nothing depends on which provider another crate installed.

mod client;
mod config;
mod listener;
mod pem;

use std::path::PathBuf;

pub use client::{ClientAuth, client_config, describe_handshake_error};
pub use config::ApiTlsConfig;
pub use listener::{ApiListener, ClientCert, FailedAuth, PeerAddr, ServerTls, TlsPeer};
pub use pem::{load_certs, load_key, load_roots, provider, roots};

/// Why TLS material could not be loaded or used. Every variant names the config key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read (or is too large to be a PEM file).
    #[error("{key}: cannot read {}: {detail}", path.display())]
    Read {
        /// Dotted config key, e.g. `api.tls.cert`.
        key: String,
        /// The file.
        path: PathBuf,
        /// The I/O error, or the size limit.
        detail: String,
    },
    /// The file holds nothing usable of the expected kind.
    #[error("{key}: {} {detail}", path.display())]
    Content {
        /// Dotted config key.
        key: String,
        /// The file.
        path: PathBuf,
        /// What is missing or malformed.
        detail: String,
    },
    /// rustls refused the material (a key that does not match its certificate, …).
    #[error("{key}: {detail}")]
    Invalid {
        /// Dotted config key.
        key: String,
        /// rustls's reason.
        detail: String,
    },
    /// No CA file is configured and the system has no root certificates.
    #[error("no system root certificates found (install ca-certificates) and {key} is not set")]
    NoSystemRoots {
        /// The key that would name a CA file.
        key: String,
    },
}
