//! The accept loop: each TCP connection is served by hyper's HTTP/1 server with the limits that
//! axum's own `serve` does not set. A client has `SWITCHYARD_HANDSHAKE_TIMEOUT_MS` to send a
//! whole request head, from the moment it connects (or its previous response): one that
//! dribbles its headers, or connects and says nothing (slow loris), is dropped (and counted as
//! a refused handshake); a keep-alive connection idle that long after a request is closed
//! (and not counted). Upgraded
//! WebSockets leave this loop's care; their own heartbeat closes silent peers.

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Pause after a failed `accept` (out of file descriptors, say), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `router` on `listener` until `stop` is cancelled; then stops accepting, lets
/// requests in flight finish, closes idle connections, and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_timeout: Duration,
    stop: CancellationToken,
) {
    let connections = TaskTracker::new();
    loop {
        let (stream, remote) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            // Whether a request came: a timeout after one is an idle keep-alive connection
            // closing, not a refused handshake.
            let served = Arc::new(AtomicBool::new(false));
            let seen = served.clone();
            let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                seen.store(true, Ordering::Relaxed);
                let mut request = request.map(Body::new);
                request.extensions_mut().insert(ConnectInfo(remote));
                router.clone().oneshot(request)
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let mut connection = pin!(connection);
            tokio::select! {
                result = connection.as_mut() => match result {
                    Err(e) if e.is_timeout() && served.load(Ordering::Relaxed) => {
                        tracing::debug!(%remote, "idle keep-alive connection closed");
                    }
                    Err(e) if e.is_timeout() => {
                        crate::metrics::connection_refused("handshake_timeout");
                        tracing::debug!(%remote, "no complete request head in time; dropped");
                    }
                    Err(e) => tracing::debug!(%remote, error = %e, "HTTP connection ended"),
                    Ok(()) => {}
                },
                _ = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    connections.close();
    connections.wait().await;
}
