//! The scope each API route needs ([`required_scope`]): the one table the gate
//! (`guard.rs`) and the OpenAPI description (`x-kdelta-scope`, security) read.

use crate::scope::Scope;

/// What a request needs: nothing, a scope, or the sync endpoint's own credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// `/healthz`, `/readyz`, the dashboard's files, `/v1/openapi.json` (no data in them).
    Nothing,
    /// `/v1/sync`: peers authenticate with `[sync]` tokens or certificates (`peers::admit`).
    SyncCredentials,
    /// A scope.
    Scope(Scope),
}

/// The scope `method path` needs. `/metrics` is open when `metrics_public`; unknown paths
/// need `read` (so probing them without a token learns nothing).
pub fn required_scope(method: &axum::http::Method, path: &str, metrics_public: bool) -> Need {
    use axum::http::Method;
    match path {
        "/healthz" | "/readyz" | "/v1/openapi.json" => return Need::Nothing,
        p if super::dashboard::is_asset(p) => return Need::Nothing,
        "/metrics" if metrics_public => return Need::Nothing,
        "/v1/sync" => return Need::SyncCredentials,
        "/v1/sync/now" | "/v1/backup" => return Need::Scope(Scope::Admin),
        _ => {}
    }
    if method == Method::GET || method == Method::HEAD || method == Method::OPTIONS {
        Need::Scope(Scope::Read)
    } else {
        Need::Scope(Scope::Write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_the_documented_scope() {
        use axum::http::Method;
        let need = |m: Method, p: &str| required_scope(&m, p, false);
        assert_eq!(need(Method::GET, "/healthz"), Need::Nothing);
        assert_eq!(need(Method::GET, "/"), Need::Nothing);
        assert_eq!(need(Method::GET, "/metrics"), Need::Scope(Scope::Read));
        assert_eq!(
            required_scope(&Method::GET, "/metrics", true),
            Need::Nothing
        );
        assert_eq!(need(Method::GET, "/v1/docs/a"), Need::Scope(Scope::Read));
        assert_eq!(need(Method::PUT, "/v1/docs/a"), Need::Scope(Scope::Write));
        assert_eq!(need(Method::POST, "/v1/docs"), Need::Scope(Scope::Write));
        assert_eq!(
            need(Method::PATCH, "/v1/twins/t"),
            Need::Scope(Scope::Write)
        );
        assert_eq!(
            need(Method::POST, "/v1/sync/now"),
            Need::Scope(Scope::Admin)
        );
        assert_eq!(need(Method::GET, "/v1/sync"), Need::SyncCredentials);
        assert_eq!(need(Method::GET, "/v1/backup"), Need::Scope(Scope::Admin));
    }
}
