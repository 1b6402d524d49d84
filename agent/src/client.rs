//! The HTTP client the CLI subcommands use to talk to a running agent. Turns transport
//! failures and the API's JSON errors (`{"error":{"code","message"}}`) into [`ClientError`]s
//! whose text tells the user what to do.

use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde_json::Value;

/// Environment variable naming a PEM CA file that `https://` agents' certificates chain to
/// (default: the system's roots).
pub const CA_ENV: &str = "KDELTA_CA";

/// The agent's URL when neither `--url` nor `KDELTA_URL` is given.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7878";

/// Why a request to the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `--url` is not an http URL.
    #[error("invalid agent URL {url:?}: {detail} (expected something like {DEFAULT_URL})")]
    BadUrl {
        /// As given.
        url: String,
        /// Why it was refused.
        detail: String,
    },
    /// Nothing answered at the URL.
    #[error("cannot reach the agent at {url} — is `kdelta start` running? ({detail})")]
    Unreachable {
        /// The agent's base URL.
        url: String,
        /// Connection refused, timed out, …
        detail: String,
    },
    /// The agent answered with an error.
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        /// HTTP status.
        status: u16,
        /// The API's error code (`unknown_key`, `invalid_batch`, …).
        code: String,
        /// The API's message.
        message: String,
    },
    /// `--token-file` (or `KDELTA_TOKEN_FILE`) cannot be read.
    #[error("cannot read the token file {path}: {detail}")]
    TokenFile {
        /// As given.
        path: String,
        /// The I/O error.
        detail: String,
    },
    /// The request failed mid-way or the answer could not be read.
    #[error("request to {url} failed: {detail}")]
    Transport {
        /// The full URL.
        url: String,
        /// What went wrong.
        detail: String,
    },
}

impl ClientError {
    /// True for a 404 from the API (unknown key or series).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Api { status: 404, .. })
    }
}

/// Where the CLI looks for a token when none is given (the .deb creates it, mode 0640,
/// group `kdelta`).
pub const DEFAULT_TOKEN_FILE: &str = "/etc/kdelta/token";

/// The token to send: `flag` (`--token` or `KDELTA_TOKEN`), else the first line of `file`
/// (`--token-file`; an error when unreadable), else [`DEFAULT_TOKEN_FILE`] when it exists
/// and is readable by this user, else none.
pub fn resolve_token(
    flag: Option<String>,
    file: Option<&std::path::Path>,
) -> Result<Option<String>, ClientError> {
    if let Some(t) = flag.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()) {
        return Ok(Some(t));
    }
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path).map(|text| {
            let t = text.lines().next().unwrap_or("").trim().to_owned();
            (!t.is_empty()).then_some(t)
        })
    };
    match file {
        Some(path) => read(path).map_err(|e| ClientError::TokenFile {
            path: path.display().to_string(),
            detail: e.to_string(),
        }),
        // Not there, or not ours to read: an open agent needs no token.
        None => Ok(read(std::path::Path::new(DEFAULT_TOKEN_FILE))
            .ok()
            .flatten()),
    }
}

/// A client bound to one agent.
#[derive(Clone)]
pub struct ApiClient {
    base: Url,
    http: reqwest::Client,
    /// Sent as `Authorization: Bearer` on every request.
    token: Option<String>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base.as_str())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl ApiClient {
    /// A client for the agent at `url` (`http://host:port` or `https://host:port`,
    /// optionally with a path prefix). For `https://`, the agent's certificate must chain to
    /// the CA file named by the environment variable [`CA_ENV`] or to a system root.
    pub fn new(url: &str) -> Result<ApiClient, ClientError> {
        let bad = |detail: String| ClientError::BadUrl {
            url: url.to_owned(),
            detail,
        };
        let mut base = Url::parse(url).map_err(|e| bad(e.to_string()))?;
        if base.scheme() != "http" && base.scheme() != "https" {
            return Err(bad("use http:// or https://".into()));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120));
        if base.scheme() == "https" {
            let ca = std::env::var_os(CA_ENV).map(std::path::PathBuf::from);
            let tls = crate::tls::roots(CA_ENV, ca.as_deref())
                .and_then(|roots| crate::tls::client_config(roots, None))
                .map_err(|e| bad(e.to_string()))?;
            builder = builder.use_preconfigured_tls(std::sync::Arc::unwrap_or_clone(tls));
        }
        let http = builder.build().map_err(|e| bad(e.to_string()))?;
        Ok(ApiClient {
            base,
            http,
            token: None,
        })
    }

    /// This client, sending `token` as `Authorization: Bearer` on every request.
    pub fn with_token(mut self, token: Option<String>) -> ApiClient {
        self.token = token;
        self
    }

    /// The agent's base URL, as shown in messages.
    pub fn base(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_owned()
    }

    /// The URL of `path` (relative to the base, e.g. `v1/status`) with query parameters.
    pub fn url(&self, path: &str, query: &[(&str, String)]) -> Url {
        let mut url = self
            .base
            .join(path.trim_start_matches('/'))
            .unwrap_or_else(|_| self.base.clone());
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    /// The URL of the path made of `segments`, each percent-encoded as one segment (a
    /// document key `a/b` is passed as its `/`-separated parts), with query parameters.
    pub fn url_of<'a>(
        &self,
        segments: impl IntoIterator<Item = &'a str>,
        query: &[(&str, String)],
    ) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    /// `GET url`, JSON answer.
    pub async fn get(&self, url: Url) -> Result<Value, ClientError> {
        self.send(self.http.get(url)).await
    }

    /// `POST url` without a body, for a request that the agent answers after waiting up to
    /// `wait` (the client waits a little longer than that).
    pub async fn post_and_wait(&self, url: Url, wait: Duration) -> Result<Value, ClientError> {
        let limit = wait + Duration::from_secs(15);
        self.send(self.http.post(url).timeout(limit)).await
    }

    /// `method url` with a JSON body, JSON answer (`null` when the answer is empty).
    pub async fn send_json<T: Serialize + ?Sized>(
        &self,
        method: Method,
        url: Url,
        body: &T,
    ) -> Result<Value, ClientError> {
        self.send(self.http.request(method, url).json(body)).await
    }

    /// `DELETE url`.
    pub async fn delete(&self, url: Url) -> Result<Value, ClientError> {
        self.send(self.http.delete(url)).await
    }

    /// `POST url` with a raw body of `content_type`.
    pub async fn post_bytes(
        &self,
        url: Url,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Value, ClientError> {
        let request = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        self.send(request).await
    }

    /// `method url` with a raw body of `content_type`, JSON answer.
    pub async fn send_bytes(
        &self,
        method: Method,
        url: Url,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Value, ClientError> {
        let request = self
            .http
            .request(method, url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        self.send(request).await
    }

    /// The underlying client (for the load tool, which measures raw requests).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `GET url` answered with a body of any length (a backup): the response once its status
    /// is a success, for the caller to read chunk by chunk. No overall time limit.
    pub async fn get_stream(&self, url: Url) -> Result<reqwest::Response, ClientError> {
        let request = self
            .http
            .get(url)
            .timeout(Duration::from_secs(7 * 24 * 3600));
        self.execute(request).await.map(|(_, response)| response)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        let (url, response) = self.execute(request).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport(&url, &e))?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Transport {
            url,
            detail: format!("the answer is not JSON: {e}"),
        })
    }

    /// Sends `request` with the token; a non-success answer becomes its API error.
    async fn execute(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(String, reqwest::Response), ClientError> {
        let request = match &self.token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        let request = request.build().map_err(|e| self.transport("?", &e))?;
        let url = request.url().to_string();
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|e| self.transport(&url, &e))?;
        let status = response.status();
        if status.is_success() {
            return Ok((url, response));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport(&url, &e))?;
        let mut e = api_error(status, &bytes);
        if let ClientError::Api {
            status: 401,
            message,
            ..
        } = &mut e
        {
            let hint = if self.token.is_some() {
                " — the token sent was not accepted"
            } else {
                " — pass --token, set KDELTA_TOKEN or use --token-file (the .deb installs /etc/kdelta/token for group kdelta)"
            };
            message.push_str(hint);
        }
        Err(e)
    }

    /// A transport error of a request to `url`, as the CLI shows it.
    pub fn transport_error(&self, url: &str, e: &reqwest::Error) -> ClientError {
        self.transport(url, e)
    }

    fn transport(&self, url: &str, e: &reqwest::Error) -> ClientError {
        if let Some(tls) = crate::tls::describe_handshake_error(e) {
            return ClientError::Transport {
                url: url.to_owned(),
                detail: format!("{tls}; set {CA_ENV} to the CA file of a private CA"),
            };
        }
        let detail = root_cause(e);
        if e.is_connect() || (e.is_timeout() && !e.is_body()) {
            ClientError::Unreachable {
                url: self.base(),
                detail,
            }
        } else {
            ClientError::Transport {
                url: url.to_owned(),
                detail,
            }
        }
    }
}

/// The API's error body, or the status line when the body is not one.
pub fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    let parsed: Option<(String, String)> =
        serde_json::from_slice::<Value>(body).ok().and_then(|v| {
            let e = v.get("error")?;
            Some((
                e.get("code")?.as_str()?.to_owned(),
                e.get("message")?.as_str()?.to_owned(),
            ))
        });
    let (code, message) = parsed.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let message = if text.is_empty() {
            status.canonical_reason().unwrap_or("error").to_owned()
        } else {
            text.chars().take(300).collect()
        };
        ("http".to_owned(), message)
    });
    ClientError::Api {
        status: status.as_u16(),
        code,
        message,
    }
}

/// The innermost cause, which is where "connection refused" lives.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    if let Some(io) = (cause as &(dyn std::error::Error + 'static)).downcast_ref::<std::io::Error>()
    {
        return match io.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
            std::io::ErrorKind::TimedOut => "timed out".into(),
            _ => io.to_string(),
        };
    }
    let text = cause.to_string();
    if text.is_empty() { e.to_string() } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_join_under_the_base() {
        let c = ApiClient::new("http://127.0.0.1:7878").unwrap();
        assert_eq!(
            c.url("v1/status", &[]).as_str(),
            "http://127.0.0.1:7878/v1/status"
        );
        let c = ApiClient::new("http://host:1/prefix").unwrap();
        assert_eq!(
            c.url_of(["v1", "docs", "a b", "c?"], &[("as_of", "now-1h".into())])
                .as_str(),
            "http://host:1/prefix/v1/docs/a%20b/c%3F?as_of=now-1h"
        );
        assert!(matches!(
            ApiClient::new("ftp://x"),
            Err(ClientError::BadUrl { .. })
        ));
        assert!(matches!(
            ApiClient::new("127.0.0.1:7878"),
            Err(ClientError::BadUrl { .. })
        ));
    }

    #[test]
    fn api_errors_are_read_from_the_body() {
        let e = api_error(
            StatusCode::NOT_FOUND,
            br#"{"error":{"code":"unknown_key","message":"document \"x\" does not exist"}}"#,
        );
        assert_eq!(
            e.to_string(),
            "document \"x\" does not exist (unknown_key, HTTP 404)"
        );
        assert!(e.is_not_found());
        let e = api_error(StatusCode::BAD_GATEWAY, b"");
        assert_eq!(e.to_string(), "Bad Gateway (http, HTTP 502)");
    }

    #[tokio::test]
    async fn refused_connection_says_what_to_do() {
        // Bind then drop: the port is (almost certainly) closed afterwards.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = ApiClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let err = c.get(c.url("v1/status", &[])).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot reach the agent at http://127.0.0.1:{port} — is `kdelta start` running? (connection refused)"
            )
        );
    }
}
