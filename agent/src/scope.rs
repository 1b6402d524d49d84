//! The API scopes (`read` < `write` < `admin`), shared by `[api] tokens` and the client
//! certificates of `[[sync.accept_certs]]`. A leaf: what each route needs is `api::auth`'s.

use serde::{Deserialize, Serialize};

/// What a principal may do. Ordered: a higher scope includes the lower ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every `GET`: status, readings, documents, twins, events, peers, metrics.
    Read,
    /// Ingest readings, put and delete documents, create and patch twins.
    Write,
    /// Control: `POST /v1/sync/now` (and future reload/backup routes).
    Admin,
}

impl Scope {
    /// The config spelling (`read`, `write`, `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
}
