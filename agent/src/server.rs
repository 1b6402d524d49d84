//! The HTTP server loop of the API: accepts connections from an [`ApiListener`] (plain TCP
//! or TLS) and serves each with hyper's HTTP/1 connection driver, like `axum::serve`, plus
//! the limits `axum::serve` does not offer:
//!
//! - **a connection cap** (`api.max_connections`): a semaphore permit is taken *before*
//!   accepting, so at the cap further clients wait in the kernel's backlog instead of
//!   costing a task, buffers and a file descriptor each;
//! - **a header read timeout** (`api.header_read_timeout`): a connection that has not sent a
//!   complete request head in time (slowloris, an idle keep-alive) is closed.
//!
//! Each request gets the connection's [`PeerAddr`] as axum connect info (the verified client
//! certificate travels with it). On `stop` the loop stops accepting, asks every connection
//! to finish its current request, and returns once they have (the caller bounds the wait).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::tls::ApiListener;

/// The limits of [`serve`], from `[api]`.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Longest wait for a complete request head.
    pub header_read_timeout: Duration,
}

impl ServerLimits {
    /// The limits configured in `[api]`.
    pub fn of(api: &crate::api::ApiConfig) -> ServerLimits {
        ServerLimits {
            max_connections: api.max_connections,
            header_read_timeout: api.header_read_timeout,
        }
    }
}

/// Serves `app` on `listener` until `stop` fires, then drains the open connections.
pub async fn serve(
    mut listener: ApiListener,
    app: Router,
    limits: ServerLimits,
    stop: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let mut warned_full = false;
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if !warned_full {
                    // Once per busy spell: the journal must not fill with this.
                    tracing::warn!(
                        "{} connections open (api.max_connections): new clients wait until one closes",
                        limits.max_connections
                    );
                    warned_full = true;
                }
                tokio::select! {
                    p = permits.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    _ = stop.cancelled() => break,
                }
            }
        };
        if permits.available_permits() > limits.max_connections / 2 {
            warned_full = false;
        }
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.cancelled() => break,
        };
        let app = app.clone();
        let stop = stop.clone();
        let builder = builder.clone();
        connections.spawn(async move {
            let _permit = permit;
            let remote = peer.remote;
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer.clone()));
                app.clone().oneshot(req.map(Body::new))
            });
            let conn = builder
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
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
