//! The HTTP/1.1 listener the API and the HTTP transport serve on: hyper, with the limits an
//! exposed port needs, so that no client (authenticated or not) can hold the service.
//!
//! | limit | default | checked | on breach |
//! |---|---|---|---|
//! | [`Limits::max_connections`] | 1,024 | at accept | the connection is closed at once; the first is logged, then one line per 30 s counts the others |
//! | [`Limits::header_timeout`] | 10 s | from the first wait for a request's head to its end: a slow head (slowloris) and an idle keep-alive connection alike | the connection is closed |
//! | [`Limits::max_header_bytes`] | 16 KiB | request line and headers | 431 `headers_too_large`, closed |
//! | [`Limits::body_timeout`] | 10 s | between two frames of a request body (a length that lies, a stalled upload) | the request fails (400/408), closed |
//! | [`Limits::request_timeout`] | 120 s | a whole request, body and handler (an endless trickle of chunks) | 408 `request_timeout` |
//!
//! What the listener answers itself is in the API's error shape, `{"error":{"code","message"}}`:
//! the 408 above, and what hyper refuses before any handler runs (400 `malformed_request` for a
//! request line or header that is not HTTP/1.1, 414 `uri_too_long`, the 431).
//!
//! Every body is also bounded in size by its route (64 KiB for the API, the transport's body
//! limit for a session, 4 KiB before one), so what a client can make the service hold is at most
//! `max_connections` times that, for at most `request_timeout`.

mod refusals;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::RequestBodyTimeoutLayer;
use weld_pipeline::telemetry::Tally;

/// The limits of an HTTP listener; see the module docs for where each is checked.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections open at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// The longest a request's head may take to arrive, and the longest a keep-alive connection
    /// may wait idle for its next request.
    pub header_timeout: Duration,
    /// The largest request line and headers taken.
    pub max_header_bytes: usize,
    /// The longest a request body may go without sending anything.
    pub body_timeout: Duration,
    /// The longest a whole request may take, its body and its handler. Longer than anything
    /// the API waits for (a stop waits up to 60 s for a page boundary).
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            body_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
        }
    }
}

/// How often a count of refused connections is logged while they keep coming.
const SUMMARY_EVERY: Duration = Duration::from_secs(30);

/// Serves `router` on `listener` within `limits` until `shutdown`; then stops accepting, lets
/// each connection finish the request it is in, and returns when all have closed (the caller
/// bounds that wait: dropping this future closes what is left).
///
/// # Cancel safety
///
/// Dropping the future closes every connection it serves.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let request_timeout = limits.request_timeout;
    let router = router
        .layer(RequestBodyTimeoutLayer::new(limits.body_timeout))
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| async move {
                tokio::time::timeout(request_timeout, next.run(request))
                    .await
                    .unwrap_or_else(|_| {
                        refusals::refusal(
                            StatusCode::REQUEST_TIMEOUT,
                            "request_timeout",
                            "the request took longer than this listener allows",
                        )
                    })
            },
        ));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (refused, failed) = (Tally::default(), Tally::default());
    let mut connections = JoinSet::new();
    let mut summary = tokio::time::interval(SUMMARY_EVERY);
    summary.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
            _ = summary.tick() => {
                let more = refused.take();
                if more > 0 {
                    tracing::warn!(refused = more, limit = limits.max_connections, "more connections refused at the connection limit in the last 30 s");
                }
                let more = failed.take();
                if more > 0 {
                    tracing::warn!(failed = more, "more accepts failed in the last 30 s");
                }
                continue;
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let socket = match accepted {
            Ok((socket, _)) => socket,
            Err(error) => {
                // Out of file descriptors, say: wait a moment rather than spin; told once per
                // 30 s, however long its cause lasts.
                if failed.record() {
                    tracing::warn!(error = %error, "accept failed (out of descriptors?); retrying every 50 ms, more are counted");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if refused.record() {
                tracing::warn!(limit = limits.max_connections, "connection limit reached: connections are closed at once until one ends (more are counted)");
            }
            drop(socket);
            continue;
        };
        let (router, limits, shutdown) = (router.clone(), limits.clone(), shutdown.clone());
        connections.spawn(async move {
            let _slot = slot;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_header_size(limits.max_header_bytes);
            let connection = builder.serve_connection(
                TokioIo::new(refusals::Refusals::new(socket)),
                TowerToHyperService::new(router),
            );
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(error) = served {
                        tracing::debug!(error = %error, "HTTP connection ended");
                    }
                }
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}
