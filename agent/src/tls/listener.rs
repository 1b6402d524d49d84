//! The API's listener for `axum::serve`: plain TCP, or HTTPS when `[api.tls]` is set.
//!
//! TLS handshakes run in their own tasks, off the accept path, each bounded by
//! `handshake_timeout`; at most `max_handshakes` run at once, so one slow or silent client
//! cannot block the others and a flood cannot grow memory without bound. Connections are
//! accepted continuously: at `max_handshakes`, the handshake running longest is abandoned for
//! the new one (`reason="shed"`) — a real client's handshake takes milliseconds, a slowloris'
//! never ends — so silent connections cannot keep real clients in the kernel's backlog.
//! Failed handshakes are counted in
//! `kdelta_tls_handshakes_failed_total` and logged at debug; a refused client certificate is a
//! failed authentication: it counts against its address in the API's failed-auth throttle
//! (`access::throttle`, which logs it at warn, throttled), and an address the throttle blocks
//! is disconnected before any handshake work (`reason="throttled"`).
//!
//! With `client_ca`, a client certificate is optional but, when presented, must chain to
//! that CA or the handshake fails. The verified certificate's SHA-256 fingerprint travels
//! with the connection ([`PeerAddr`], via axum's connect info) to the handlers
//! ([`TlsPeer`]), where `/v1/sync` matches it against `[[sync.accept_certs]]`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::http::request::Parts;
use axum::serve::{IncomingStream, Listener};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;

use super::ApiTlsConfig;
use super::{TlsError, load_certs, load_key, load_roots, provider};
use crate::metrics::Metrics;

/// Where the listener reports a handshake refused for its client certificate, and asks
/// whether an address may still try: the API's failed-auth throttle (`access::throttle`
/// implements it), so TLS and token failures share one per-address budget.
pub trait FailedAuth: Send + Sync {
    /// True when `addr` is refused for now.
    fn blocked(&self, addr: std::net::IpAddr) -> bool;
    /// Records (and, throttled, logs) a failed authentication of `addr`.
    fn failed(&self, addr: std::net::IpAddr, what: &str);
}

/// The server side of `[api.tls]`, loaded and checked.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    handshake_timeout: Duration,
    max_handshakes: usize,
}

impl ServerTls {
    /// Reads the certificate, key and client CA named by `cfg`; errors name the key.
    pub fn load(cfg: &ApiTlsConfig) -> Result<ServerTls, TlsError> {
        let certs = load_certs("api.tls.cert", &cfg.cert)?;
        let key = load_key("api.tls.key", &cfg.key)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Invalid {
                key: "api.tls".into(),
                detail: e.to_string(),
            })?;
        let builder = match &cfg.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let roots = load_roots("api.tls.client_ca", path)?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
                // Token-authenticated clients keep working on the same port, unless a
                // certificate is required.
                let verifier = if cfg.require_client_cert {
                    verifier
                } else {
                    verifier.allow_unauthenticated()
                };
                let verifier = verifier.build().map_err(|e| TlsError::Invalid {
                    key: "api.tls.client_ca".into(),
                    detail: e.to_string(),
                })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::Invalid {
                key: "api.tls.key".into(),
                detail: format!("does not match api.tls.cert or is unusable: {e}"),
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            config: Arc::new(config),
            handshake_timeout: cfg.handshake_timeout,
            max_handshakes: cfg.max_handshakes,
        })
    }
}

/// A client certificate that passed verification against `api.tls.client_ca`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientCert {
    /// SHA-256 of the end-entity certificate (DER).
    pub fingerprint: [u8; 32],
}

impl ClientCert {
    fn of(der: &[u8]) -> ClientCert {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut fingerprint = [0u8; 32];
        fingerprint.copy_from_slice(digest.as_ref());
        ClientCert { fingerprint }
    }
}

/// Who is on the other end of a connection: its address and, over mutual TLS, its verified
/// certificate. axum's connect info for the API router.
#[derive(Debug, Clone)]
pub struct PeerAddr {
    /// The remote socket address.
    pub remote: SocketAddr,
    /// The verified client certificate, if one was presented.
    pub client_cert: Option<ClientCert>,
}

impl Connected<IncomingStream<'_, ApiListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, ApiListener>) -> PeerAddr {
        stream.remote_addr().clone()
    }
}

/// Extractor: the verified client certificate of the request's connection, if any. Never
/// fails (a router served without connect info, as in unit tests, has no certificate).
pub struct TlsPeer(pub Option<ClientCert>);

impl<S: Send + Sync> FromRequestParts<S> for TlsPeer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<TlsPeer, Self::Rejection> {
        Ok(TlsPeer(
            parts
                .extensions
                .get::<ConnectInfo<PeerAddr>>()
                .and_then(|c| c.0.client_cert),
        ))
    }
}

/// The API's listener: plain TCP, or TLS with handshakes off the accept path.
pub struct ApiListener {
    tcp: TcpListener,
    tls: Option<Handshakes>,
}

struct Handshakes {
    acceptor: TlsAcceptor,
    timeout: Duration,
    max: usize,
    metrics: Arc<Metrics>,
    /// The API's failed-auth throttle: refused client certificates count in it.
    throttle: Arc<dyn FailedAuth>,
    running: JoinSet<Option<(TlsStream<TcpStream>, PeerAddr)>>,
    /// The running handshakes' abort handles in the order they started (finished ones are
    /// dropped lazily), to abandon the oldest at `max`.
    started: VecDeque<AbortHandle>,
}

impl ApiListener {
    /// Serves plain HTTP on `tcp`, or HTTPS with `tls`; refused client certificates count
    /// against their address in `throttle` (the API gate's).
    pub fn new(
        tcp: TcpListener,
        tls: Option<ServerTls>,
        metrics: Arc<Metrics>,
        throttle: Arc<dyn FailedAuth>,
    ) -> ApiListener {
        let tls = tls.map(|t| Handshakes {
            acceptor: TlsAcceptor::from(t.config),
            timeout: t.handshake_timeout,
            max: t.max_handshakes.max(1),
            metrics,
            throttle,
            running: JoinSet::new(),
            started: VecDeque::new(),
        });
        ApiListener { tcp, tls }
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

impl Listener for ApiListener {
    type Io = Either<TcpStream, TlsStream<TcpStream>>;
    type Addr = PeerAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let ApiListener { tcp, tls } = self;
        let Some(tls) = tls else {
            let (stream, remote) = accept_tcp(tcp).await;
            let peer = PeerAddr {
                remote,
                client_cert: None,
            };
            return (Either::Left(stream), peer);
        };
        loop {
            tokio::select! {
                (stream, remote) = accept_tcp(tcp) => {
                    if tls.throttle.blocked(remote.ip()) {
                        // Blocked for failed authentications: no handshake work for it.
                        tls.metrics.tls_handshake_failed("throttled");
                        tracing::debug!(%remote, "TLS connection closed: too many failed authentications from this address");
                        drop(stream);
                        continue;
                    }
                    tls.shed_oldest_at_max();
                    let started = tls.running.spawn(handshake(
                        tls.acceptor.clone(),
                        stream,
                        remote,
                        tls.timeout,
                        tls.metrics.clone(),
                        tls.throttle.clone(),
                    ));
                    tls.started.push_back(started);
                }
                Some(done) = tls.running.join_next(), if !tls.running.is_empty() => {
                    if let Ok(Some((stream, peer))) = done {
                        return (Either::Right(stream), peer);
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<PeerAddr> {
        Ok(PeerAddr {
            remote: self.tcp.local_addr()?,
            client_cert: None,
        })
    }
}

impl Handshakes {
    /// At `max` running handshakes, abandons the one running longest (its connection is
    /// closed), so a new connection can start its own.
    fn shed_oldest_at_max(&mut self) {
        while self.started.front().is_some_and(|h| h.is_finished()) {
            self.started.pop_front();
        }
        if self.running.len() >= self.max
            && let Some(oldest) = self.started.pop_front()
        {
            oldest.abort();
            self.metrics.tls_handshake_failed("shed");
            tracing::debug!(
                "{} TLS handshakes running (api.tls.max_handshakes): the oldest abandoned for a new connection",
                self.max
            );
        }
        // Finished handshakes behind a long-running one: keep the queue near `max`.
        if self.started.len() > 2 * self.max {
            self.started.retain(|h| !h.is_finished());
        }
    }
}

async fn accept_tcp(tcp: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match tcp.accept().await {
            Ok((stream, remote)) => {
                // Sync acks are small: do not let Nagle hold them back.
                let _ = stream.set_nodelay(true);
                return (stream, remote);
            }
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::error!("accepting a connection failed: {e}; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::ConnectionRefused | K::ConnectionAborted | K::ConnectionReset
    )
}

async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    remote: SocketAddr,
    timeout: Duration,
    metrics: Arc<Metrics>,
    throttle: Arc<dyn FailedAuth>,
) -> Option<(TlsStream<TcpStream>, PeerAddr)> {
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            let client_cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|der| ClientCert::of(der));
            Some((
                tls,
                PeerAddr {
                    remote,
                    client_cert,
                },
            ))
        }
        Ok(Err(e)) => {
            let refused_cert = e
                .get_ref()
                .and_then(|i| i.downcast_ref::<rustls::Error>())
                .is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_)));
            if refused_cert {
                metrics.tls_handshake_failed("client_certificate");
                throttle.failed(
                    remote.ip(),
                    &format!("TLS handshake failed: client certificate refused: {e}"),
                );
            } else {
                metrics.tls_handshake_failed("error");
                tracing::debug!(%remote, "TLS handshake failed: {e}");
            }
            None
        }
        Err(_) => {
            metrics.tls_handshake_failed("timeout");
            tracing::debug!(%remote, "TLS handshake timed out after {timeout:?}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Instant;

    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    use tokio_rustls::TlsConnector;
    use tokio_rustls::rustls::pki_types::ServerName;

    use super::*;
    use crate::tls::{client_config, load_roots};

    /// A listener test does not throttle.
    struct NoThrottle;

    impl FailedAuth for NoThrottle {
        fn blocked(&self, _: std::net::IpAddr) -> bool {
            false
        }
        fn failed(&self, _: std::net::IpAddr, _: &str) {}
    }

    /// Writes a CA and a server certificate for `localhost` into `dir`; returns the config.
    fn files(dir: &Path, timeout: Duration, max: usize) -> ApiTlsConfig {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        ApiTlsConfig {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            client_ca: None,
            require_client_cert: false,
            handshake_timeout: timeout,
            max_handshakes: max,
        }
    }

    #[tokio::test]
    async fn a_silent_client_neither_blocks_others_nor_stays_forever() {
        let dir = tempfile::tempdir().unwrap();
        let timeout = Duration::from_millis(500);
        let tls = ServerTls::load(&files(dir.path(), timeout, 4)).unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let metrics = Arc::new(Metrics::new());
        let mut listener = ApiListener::new(tcp, Some(tls), metrics.clone(), Arc::new(NoThrottle));
        assert_eq!(listener.scheme(), "https");

        // Connects and never says anything.
        let _silent = TcpStream::connect(addr).await.unwrap();
        let roots = load_roots("ca", &dir.path().join("ca.pem")).unwrap();
        let connector = TlsConnector::from(client_config(roots, None).unwrap());
        let started = Instant::now();
        let client = tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            connector.connect(name, tcp).await
        });
        let (io, peer) = listener.accept().await;
        assert!(
            started.elapsed() < timeout,
            "the real client waited for the silent one"
        );
        assert!(matches!(io, Either::Right(_)));
        assert!(peer.client_cert.is_none());
        client.await.unwrap().expect("client handshake");

        // The silent connection is dropped after the timeout and counted.
        let deadline = Instant::now() + Duration::from_secs(10);
        let counted = "kdelta_tls_handshakes_failed_total{reason=\"timeout\"} 1";
        while !metrics.encode().contains(counted) {
            assert!(Instant::now() < deadline, "{}", metrics.encode());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn at_max_handshakes_a_silent_client_gives_way_to_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        // One handshake at a time, and a timeout the test would notice.
        let timeout = Duration::from_secs(60);
        let tls = ServerTls::load(&files(dir.path(), timeout, 1)).unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let metrics = Arc::new(Metrics::new());
        let mut listener = ApiListener::new(tcp, Some(tls), metrics.clone(), Arc::new(NoThrottle));

        let mut silent = TcpStream::connect(addr).await.unwrap();
        let roots = load_roots("ca", &dir.path().join("ca.pem")).unwrap();
        let connector = TlsConnector::from(client_config(roots, None).unwrap());
        let client = tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            connector.connect(name, tcp).await
        });
        let (io, _) = tokio::time::timeout(Duration::from_secs(20), listener.accept())
            .await
            .expect("the real client is not held behind the silent one");
        assert!(matches!(io, Either::Right(_)));
        client.await.unwrap().expect("client handshake");
        assert!(
            metrics
                .encode()
                .contains("kdelta_tls_handshakes_failed_total{reason=\"shed\"} 1"),
            "{}",
            metrics.encode()
        );
        // The silent connection was closed.
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::io::AsyncReadExt::read(&mut silent, &mut buf),
        )
        .await
        .expect("closed, not left hanging");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }

    #[test]
    fn a_key_that_does_not_match_is_an_error_naming_the_key() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let mut cfg = files(a.path(), Duration::from_secs(1), 1);
        cfg.key = files(b.path(), Duration::from_secs(1), 1).key;
        let e = ServerTls::load(&cfg)
            .err()
            .expect("mismatch refused")
            .to_string();
        assert!(e.starts_with("api.tls.key:"), "{e}");
    }
}
