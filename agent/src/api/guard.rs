//! The gate every API request passes before its handler ([`guard`], a middleware), in order:
//!
//! 1. **Host allow-list**: the `Host` header must be an IP literal, `localhost`,
//!    `*.localhost`, this machine's host name (or `NAME.local`) or a name in
//!    `api.allowed_hosts`, so a web page that rebinds its own DNS name to 127.0.0.1 is refused
//!    (`403 host_not_allowed`). `/healthz`, `/readyz` and `/v1/sync` are exempt.
//! 2. **Origin**: a state-changing request (anything but `GET`/`HEAD`/`OPTIONS`) whose
//!    `Origin` is not this agent's own (`scheme://` + `Host`) is `403 foreign_origin`.
//! 3. **Throttle**: an address with too many failed authentications is `429
//!    too_many_auth_failures` with `Retry-After` (see `throttle`).
//! 4. **Credentials and scope** (see `auth`): `401 unauthorized` (with `WWW-Authenticate:
//!    Bearer`) without accepted credentials, `403 forbidden` with too small a scope. The
//!    event stream also takes the token as `?access_token=` (a browser's `EventSource`
//!    cannot send headers; the request log never shows query strings).
//! 5. **Body**: a state-changing request must declare `application/json`, `application/cbor`
//!    (or `application/merge-patch+json` for a twin patch), else `415` — also with an empty
//!    body (an empty form POST must not create a twin); only `DELETE` and `POST
//!    /v1/sync/now`, which take no body, may come without a `Content-Type` (and no body).
//!    The body is read here, only once the request is authenticated, within
//!    `api.body_read_timeout` (`408 request_timeout`) and `api.max_body_bytes` (`413`).
//!
//! Routes that take no body (the open ones and `/v1/sync`) never have one read: a
//! state-changing request with a body there is answered `413` at once, without reading it,
//! and the connection is closed. So no unauthenticated client makes the agent buffer a byte
//! of body.
//!
//! A refusal happens before any handler runs, so nothing is stored.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::route_scope::{Need, required_scope};
use super::{ApiConfig, ApiError, ErrorCode};
use crate::access::auth::{AuthError, Check, Credentials, Principal};
use crate::access::sessions::SyncSlots;
use crate::access::throttle::AuthThrottle;
use crate::access::{ApiGuard, host_name};
use crate::peers::AcceptCert;
use crate::state::AppState;
use crate::tls::PeerAddr;

impl Default for ApiGuard {
    /// An open API with the default limits (for tests and tools that build an `AppState`).
    fn default() -> Self {
        let cfg = ApiConfig::default();
        ApiGuard::from_parts(Credentials::default(), &cfg, "localhost")
    }
}

impl ApiGuard {
    /// Builds the gate; reads token files (errors name the key). `own_host` is this
    /// machine's host name, answered in `Host` like `localhost`.
    pub fn new(
        cfg: &ApiConfig,
        certs: &[AcceptCert],
        own_host: &str,
    ) -> Result<ApiGuard, AuthError> {
        Ok(ApiGuard::from_parts(
            ApiGuard::load_credentials(cfg, certs, cfg)?,
            cfg,
            own_host,
        ))
    }

    /// The credential table of `cfg`'s tokens and `certs`, reading token files (errors name
    /// the key); `listening` is the `[api]` the listener runs with, whose
    /// `tls.require_client_cert` closes the API to unmapped certificates (a reload passes the
    /// running one: the listener is not rebuilt).
    pub fn load_credentials(
        cfg: &ApiConfig,
        certs: &[AcceptCert],
        listening: &ApiConfig,
    ) -> Result<Credentials, AuthError> {
        let cert_required = listening
            .tls
            .as_ref()
            .is_some_and(|t| t.require_client_cert);
        Credentials::load(
            &cfg.tokens,
            cfg.admin_token_file.as_deref(),
            certs,
            cert_required,
        )
    }

    fn from_parts(credentials: Credentials, cfg: &ApiConfig, own_host: &str) -> ApiGuard {
        ApiGuard {
            credentials: std::sync::RwLock::new(Arc::new(credentials)),
            metrics_public: cfg.metrics_public,
            allowed_hosts: cfg
                .allowed_hosts
                .iter()
                .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
                .collect(),
            own_host: own_host.to_ascii_lowercase(),
            throttle: Arc::new(AuthThrottle::new(
                cfg.max_auth_failures,
                cfg.auth_failure_window,
            )),
            body_read_timeout: cfg.body_read_timeout,
            sync_slots: Arc::new(SyncSlots::new(
                cfg.max_sync_sessions,
                cfg.max_sync_sessions_per_peer,
            )),
        }
    }
}

fn is_safe(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD || method == Method::OPTIONS
}

/// True when the request carries a body: hyper knows its length from `Content-Length`
/// (exactly 0 means none) and leaves it open for a chunked body.
fn has_body(req: &Request) -> bool {
    use axum::body::HttpBody;
    req.body().size_hint().exact() != Some(0)
}

/// The `Authorization: Bearer` token, or on the event stream `?access_token=`.
fn bearer<'a>(headers: &'a HeaderMap, path: &str, query: Option<&'a str>) -> Option<&'a str> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let (scheme, token) = v.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim());
    }
    if path != "/v1/events" {
        return None;
    }
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("access_token="))
        .filter(|t| !t.is_empty())
}

fn refuse(code: ErrorCode, message: String) -> Response {
    ApiError::new(code, message).into_response()
}

/// The middleware: see the module docs.
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let g = state.guard.clone();
    let (remote, cert) = match req.extensions().get::<ConnectInfo<PeerAddr>>() {
        Some(ConnectInfo(p)) => (p.remote.ip(), p.client_cert),
        None => (IpAddr::V4(Ipv4Addr::UNSPECIFIED), None),
    };
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let headers = req.headers();

    let exempt_host = matches!(path.as_str(), "/healthz" | "/readyz" | "/v1/sync");
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if !exempt_host && let Some(host) = host {
        if !g.host_allowed(host) {
            return refuse(
                ErrorCode::HostNotAllowed,
                format!(
                    "this agent does not answer for host {:?}; add it to api.allowed_hosts if it is really this agent",
                    host_name(host)
                ),
            );
        }
    } else if !exempt_host && headers.contains_key(header::HOST) {
        return refuse(
            ErrorCode::HostNotAllowed,
            "the Host header is not readable text".into(),
        );
    }

    if !is_safe(&method)
        && let Some(origin) = headers.get(header::ORIGIN)
    {
        let origin = origin.to_str().unwrap_or("?");
        let own = origin
            .split_once("://")
            .map(|(_, authority)| authority)
            .zip(host)
            .is_some_and(|(authority, host)| authority.eq_ignore_ascii_case(host));
        if !own {
            return refuse(
                ErrorCode::ForeignOrigin,
                format!(
                    "{method} from origin {origin:?} refused: web pages of other sites may not change this agent"
                ),
            );
        }
    }

    let need = required_scope(&method, &path, g.metrics_public);
    if !matches!(need, Need::Scope(_)) && !is_safe(&method) && has_body(&req) {
        return no_body_here(&method, &path);
    }
    if need != Need::Nothing
        && let Some(wait) = g.throttle.blocked(remote, Instant::now())
    {
        let secs = wait.as_secs().max(1);
        let mut resp = refuse(
            ErrorCode::TooManyAuthFailures,
            format!("too many failed authentications from {remote}; retry in {secs} s"),
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return resp;
    }

    if let Need::Scope(scope) = need {
        let presented = bearer(headers, &path, req.uri().query());
        match g.credentials().check(presented, cert) {
            Check::Open => {}
            Check::Principal(p) if p.scope >= scope => {}
            Check::Principal(Principal { name, scope: has }) => {
                return refuse(
                    ErrorCode::Forbidden,
                    format!(
                        "{name:?} has scope {}; {method} {path} needs {}",
                        has.as_str(),
                        scope.as_str()
                    ),
                );
            }
            Check::Missing => {
                return unauthorized(
                    "this agent requires credentials: send Authorization: Bearer TOKEN (kdelta --token, KDELTA_TOKEN or --token-file) or a client certificate",
                );
            }
            Check::BadToken => {
                failed(&g, remote, "API bearer token not accepted");
                return unauthorized("the bearer token is not accepted");
            }
            Check::UnmappedCert => {
                return refuse(
                    ErrorCode::Forbidden,
                    format!(
                        "the client certificate is verified but maps to no principal: {method} {path} needs {}; list it in [[sync.accept_certs]] with scopes, or send a bearer token",
                        match need {
                            Need::Scope(s) => s.as_str(),
                            _ => "credentials",
                        }
                    ),
                );
            }
        }
    }

    let req = if !is_safe(&method) && matches!(need, Need::Scope(_)) {
        match read_body(&g, state.max_body_bytes, req).await {
            Ok(req) => req,
            Err(e) => {
                if path == "/v1/readings" {
                    // Counted like the refusals of the ingest handler itself.
                    state.metrics.ingest_rejected("http", e.code.as_str());
                }
                return e.into_response();
            }
        }
    } else {
        req
    };

    let resp = next.run(req).await;
    if need == Need::SyncCredentials && resp.status() == axum::http::StatusCode::UNAUTHORIZED {
        // `peers::admit` counted it (metric) without logging: logged here, throttled.
        let why = resp
            .extensions()
            .get::<ApiError>()
            .map_or("sync credentials not accepted", |e| e.message.as_str());
        failed(&g, remote, &format!("inbound sync refused: {why}"));
    }
    resp
}

fn unauthorized(message: &str) -> Response {
    let mut resp = refuse(ErrorCode::Unauthorized, message.to_owned());
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"kdelta\""),
    );
    resp
}

/// Counts a failed authentication and logs it, throttled (see `throttle`).
fn failed(g: &ApiGuard, remote: IpAddr, what: &str) {
    g.throttle.failed_and_log(remote, what);
}

/// `413` for a body sent to a route that takes none; the body is not read and the
/// connection is closed after the answer (hyper gives up on an unread body).
fn no_body_here(method: &Method, path: &str) -> Response {
    let mut resp = refuse(
        ErrorCode::BodyTooLarge,
        format!("{method} {path} takes no request body (limit 0 bytes); it was not read"),
    );
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// True for the state-changing requests that take no body and may come without a
/// `Content-Type`: `DELETE` and `POST /v1/sync/now` (`kdelta sync now`, the clients).
fn bodiless_command(method: &Method, path: &str) -> bool {
    method == Method::DELETE || (method == Method::POST && path == "/v1/sync/now")
}

/// Checks the declared body type (also of an empty body), then reads the body within the
/// timeout and size limit. Called for authenticated state-changing requests only.
async fn read_body(g: &ApiGuard, limit: usize, req: Request) -> Result<Request, ApiError> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("?"));
    if ct.is_none() && !has_body(&req) && bodiless_command(req.method(), req.uri().path()) {
        return Ok(req);
    }
    let essence = ct
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let twin_patch = req.method() == Method::PATCH && req.uri().path().starts_with("/v1/twins/");
    let ok = essence == super::format::JSON
        || essence == super::format::CBOR
        || (twin_patch && essence == super::twins::MERGE_PATCH);
    if !ok {
        let also = if twin_patch {
            ", or application/merge-patch+json"
        } else {
            ""
        };
        let got = match ct {
            None => "no Content-Type".to_owned(),
            Some(t) => format!("Content-Type {t:?}"),
        };
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!(
                "{} {} with {got} is refused, also with an empty body (browsers send text/plain and form requests without asking); declare application/json or application/cbor{also}",
                req.method(),
                req.uri().path()
            ),
        ));
    }
    let (parts, body) = req.into_parts();
    let read = async {
        let mut stream = body.into_data_stream();
        let mut buf = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::malformed_body(format!("the request body could not be read: {e}"))
            })?;
            if buf.len() + chunk.len() > limit {
                return Err(ApiError::body_too_large(limit));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf)
    };
    let bytes = tokio::time::timeout(g.body_read_timeout, read)
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::RequestTimeout,
                format!(
                    "the request body did not arrive within {} (api.body_read_timeout)",
                    humantime::format_duration(g.body_read_timeout)
                ),
            )
        })??;
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// Connect info as the server loop sets it, for tests that send requests by hand.
#[cfg(test)]
pub fn connect_info(
    remote: std::net::SocketAddr,
    client_cert: Option<crate::tls::ClientCert>,
) -> ConnectInfo<PeerAddr> {
    ConnectInfo(PeerAddr {
        remote,
        client_cert,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_answered_by_the_allow_list() {
        let cfg = ApiConfig {
            allowed_hosts: vec!["hub.example.org".into()],
            ..ApiConfig::default()
        };
        let g = ApiGuard::from_parts(Credentials::default(), &cfg, "pi");
        for ok in [
            "127.0.0.1:7878",
            "localhost:7878",
            "LOCALHOST",
            "app.localhost",
            "[::1]:7878",
            "192.168.1.20:7878",
            "hub.example.org:7878",
        ] {
            assert!(g.host_allowed(ok), "{ok}");
        }
        for refused in [
            "attacker.example:7878",
            "example.org",
            "localhost.attacker.example",
        ] {
            assert!(!g.host_allowed(refused), "{refused}");
        }
    }

    #[test]
    fn bearer_comes_from_the_header_or_the_event_stream_query() {
        let mut h = HeaderMap::new();
        assert_eq!(
            bearer(&h, "/v1/events", Some("kind=doc&access_token=abc")),
            Some("abc")
        );
        assert_eq!(bearer(&h, "/v1/docs", Some("access_token=abc")), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer xyz"),
        );
        assert_eq!(bearer(&h, "/v1/docs", None), Some("xyz"));
    }
}
