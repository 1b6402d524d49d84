//! The HTTP server loop of the API: binds the listening socket, accepts connections from an
//! [`ApiListener`] (plain TCP or TLS) and serves each with hyper's HTTP/1 connection driver,
//! like `axum::serve`, plus the limits `axum::serve` does not offer, built so that a
//! slowloris flood (many connections that never finish a request head) cannot keep a real
//! client out, even from the client's own address:
//!
//! - **the loop never stops accepting**, so new clients are not left in the kernel's backlog
//!   behind slow ones; the backlog itself is [`LISTEN_BACKLOG`] (std and tokio use 128);
//! - **connection caps** (`api.max_connections`, `api.max_connections_per_address`, see
//!   [`slots`]): at a cap, the connection that has waited longest without sending a
//!   complete request head (a slow client, an idle keep-alive) is closed to make room; a
//!   connection in a request is never closed. Only when every connection under the cap is in
//!   a request is the new one refused. Loopback clients are not capped per address (a local
//!   reverse proxy or the CLI all come from `127.0.0.1`), only in total. Shed and refused
//!   connections are counted (`kdelta_http_connections_{shed,refused}_total`) and warned
//!   about at most once a minute;
//! - **a header read timeout** (`api.header_read_timeout`): a connection that has not sent a
//!   complete request head in time is closed, whether or not a cap is reached;
//! - **the open-file limit** ([`nofile`]): raised at start when the caps need it.
//!
//! Each request gets the connection's [`PeerAddr`] as axum connect info (the verified client
//! certificate travels with it). On `stop` the loop stops accepting, asks every connection
//! to finish its current request, and returns once they have (the caller bounds the wait).
//! Must not know routes or handlers: it serves whatever [`Router`] it is given.

pub mod nofile;
pub mod slots;

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::connect_info::ConnectInfo;
use axum::serve::Listener;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::internal_events::{ConnectionLimited, InternalEvent, LogEvery};
use crate::metrics::Metrics;
use crate::tls::ApiListener;
use slots::{ConnId, Limit, Slots};

/// The listening socket's backlog: connections the kernel completes before the agent
/// accepts them. The loop accepts continuously, so this only absorbs bursts; Linux caps it
/// at `net.core.somaxconn` (4096 on current kernels).
pub const LISTEN_BACKLOG: u32 = 1024;

/// How often a cap reached is warned about (the rest is counted and logged at debug).
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The limits of [`serve`], from `[api]`.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most connections open at once from one address (IPv6: one /64); loopback is exempt.
    pub max_connections_per_address: usize,
    /// Longest wait for a complete request head.
    pub header_read_timeout: Duration,
}

impl ServerLimits {
    /// The limits configured in `[api]`.
    pub fn of(api: &crate::api::ApiConfig) -> ServerLimits {
        ServerLimits {
            max_connections: api.max_connections,
            max_connections_per_address: api.max_connections_per_address,
            header_read_timeout: api.header_read_timeout,
        }
    }
}

/// Binds `addr` for the API with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as
/// `TcpListener::bind` does).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The per-address cap's key for a client: `None` (not capped) for loopback, else the
/// address (IPv6: its /64, like the failed-auth throttle).
fn address_key(ip: IpAddr) -> Option<IpAddr> {
    (!ip.to_canonical().is_loopback()).then(|| crate::access::throttle::bucket(ip))
}

/// A connection's handle in the slots: dropping it (shedding) tells the connection's task
/// to close. The address is for the log line.
struct Handle {
    _close: oneshot::Sender<()>,
    remote: SocketAddr,
}

type SharedSlots = Arc<Mutex<Slots<Handle>>>;

fn lock(slots: &SharedSlots) -> MutexGuard<'_, Slots<Handle>> {
    // The bookkeeping stays consistent even if a holder panicked: each method completes
    // its updates before anything can panic.
    slots.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serves `app` on `listener` until `stop` fires, then drains the open connections.
pub async fn serve(
    mut listener: ApiListener,
    app: Router,
    limits: ServerLimits,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let slots: SharedSlots = Arc::new(Mutex::new(Slots::new(
        limits.max_connections,
        limits.max_connections_per_address,
    )));
    let connections = TaskTracker::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let mut warn = LogEvery::new(WARN_EVERY);
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.cancelled() => break,
        };
        let remote = peer.remote;
        let (close_tx, close_rx) = oneshot::channel();
        let handle = Handle {
            _close: close_tx,
            remote,
        };
        let admitted = {
            let mut slots = lock(&slots);
            let admitted = slots.admit(address_key(remote.ip()), handle);
            metrics.set_http_connections_open(slots.len());
            admitted
        };
        let max = |limit| match limit {
            Limit::Total => limits.max_connections,
            Limit::PerAddress => limits.max_connections_per_address,
        };
        let id = match admitted {
            Ok(admitted) => {
                for (shed, limit) in admitted.shed {
                    let shed_remote = shed.remote;
                    // Dropping the handle closes the connection (its task sees the drop).
                    drop(shed);
                    ConnectionLimited {
                        limit: limit.as_str(),
                        key: limit.key(),
                        max: max(limit),
                        newcomer: remote,
                        shed: Some(shed_remote),
                        warn: warn.due(Instant::now()),
                    }
                    .emit(&metrics);
                }
                admitted.id
            }
            Err(limit) => {
                ConnectionLimited {
                    limit: limit.as_str(),
                    key: limit.key(),
                    max: max(limit),
                    newcomer: remote,
                    shed: None,
                    warn: warn.due(Instant::now()),
                }
                .emit(&metrics);
                drop(io);
                continue;
            }
        };
        let app = app.clone();
        let stop = stop.clone();
        let builder = builder.clone();
        let slots = slots.clone();
        let metrics = metrics.clone();
        connections.spawn(async move {
            let _open = Open {
                slots: slots.clone(),
                metrics,
                id,
            };
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                let request = InRequest::start(&slots, id);
                req.extensions_mut().insert(ConnectInfo(peer.clone()));
                let response = app.clone().oneshot(req.map(Body::new));
                async move {
                    let response = response.await?;
                    // The request lasts until hyper has written (and dropped) the body.
                    Ok::<_, std::convert::Infallible>(response.map(|body| Tracked {
                        body,
                        _request: request,
                    }))
                }
            });
            let conn = builder
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                // Shed while idle: no request is cut short; just close.
                _ = close_rx => return,
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                // Header timeouts, resets, malformed requests: the client's business.
                tracing::debug!(%remote, "HTTP connection ended: {e}");
            }
        });
    }
    connections.close();
    connections.wait().await;
}

/// An open connection's slot, freed when its task ends however it ends.
struct Open {
    slots: SharedSlots,
    metrics: Arc<Metrics>,
    id: ConnId,
}

impl Drop for Open {
    fn drop(&mut self) {
        let mut slots = lock(&self.slots);
        slots.close(self.id);
        self.metrics.set_http_connections_open(slots.len());
    }
}

/// A request in progress on a connection: it is not shed until this is dropped.
struct InRequest {
    slots: SharedSlots,
    id: ConnId,
}

impl InRequest {
    fn start(slots: &SharedSlots, id: ConnId) -> Option<InRequest> {
        // False only when the connection was shed the instant its head arrived: its task
        // is closing it, and the response will not be written.
        lock(slots).start_request(id).then(|| InRequest {
            slots: slots.clone(),
            id,
        })
    }
}

impl Drop for InRequest {
    fn drop(&mut self) {
        lock(&self.slots).end_request(self.id);
    }
}

/// A response body that ends its request when hyper drops it (written, or abandoned).
struct Tracked {
    body: Body,
    _request: Option<InRequest>,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_not_capped_per_address_and_ipv6_is_capped_by_its_64() {
        for ip in ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(address_key(ip.parse().unwrap()), None, "{ip}");
        }
        let a = address_key("2001:db8:1:2::5".parse().unwrap());
        let b = address_key("2001:db8:1:2:ffff::1".parse().unwrap());
        assert!(a.is_some());
        assert_eq!(a, b);
        assert_eq!(
            address_key("192.0.2.7".parse().unwrap()),
            Some("192.0.2.7".parse().unwrap())
        );
    }
}
