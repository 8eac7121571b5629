//! The HTTP/1.1 listener the API and the HTTP transport serve on: hyper, with the limits an
//! exposed port needs, so that no client (authenticated or not) can hold the service.
//!
//! | limit | default | checked | on breach |
//! |---|---|---|---|
//! | [`Limits::max_connections`] | 1,024, and at most the listener's share of the descriptor limit where the data-streams service or the HTTP transport sizes it ([`Descriptors`]: the soft limit raised to the hard one, less those open and a reserve of 192, halved between the API and the transport, less an eighth for connections still closing: 363 each at a limit of 1,024 with 14 open, 90 of them per client) | at accept | the client holding the most places gives up its oldest idle connection to make room; with none idle anywhere, the new connection is closed at once; the first of each is logged, then one line per 30 s counts the others |
//! | connections closed and not gone yet | an eighth of the cap beyond it (a connection closed to make room holds its socket until its task lets it go) | at accept | while open and closing ones reach the cap and its eighth, a new connection is closed at once: a flood cannot pile up sockets faster than closed ones let go of theirs |
//! | a failed accept (out of descriptors) | retried after 50 ms ([`RETRY_AFTER`](weld_pipeline::transport::kit::RETRY_AFTER)) | at accept | the first of each 30 s is logged, the others counted in one line; the listener keeps going |
//! | [`Limits::max_per_client`] | 256 (a quarter of the cap) | at accept, per client IP address | the client gives up its own oldest idle connection; with none idle, its new connection is closed at once: one address cannot hold the places of the others |
//! | [`Limits::trusted_proxies`] | none | at accept and per request | a trusted proxy's connections are held to no per-client share, and each request it forwards counts against the client its `X-Forwarded-For` names (the rightmost address not itself a trusted proxy) |
//! | idle under pressure | [`Limits::header_timeout`] up to half the places taken, then shorter as they fill, linearly, down to 1 s at the cap | every 250 ms | idle connections (no request in progress) past it are closed |
//! | [`Limits::header_timeout`] | 10 s | from the first wait for a request's head to its end: a slow head (slowloris) and an idle keep-alive connection alike | the connection is closed |
//! | [`Limits::max_header_bytes`] | 16 KiB | request line and headers | 431 `headers_too_large`, closed |
//! | [`Limits::body_timeout`] | 10 s | between two frames of a request body (a length that lies, a stalled upload) | the request fails (400/408), closed |
//! | [`Limits::request_timeout`] | 120 s | a whole request, body and handler (an endless trickle of chunks) | 408 `request_timeout` |
//!
//! What the listener answers itself is in the API's error shape, `{"error":{"code","message"}}`:
//! the 408 above, and what hyper refuses before any handler runs (400 `malformed_request` for a
//! request line or header that is not HTTP/1.1, 414 `uri_too_long`, the 431).
//!
//! Idle means no request in progress: a held poll or a stop waiting for its page boundary is
//! never cut to make room. See `places.rs` for the reasoning.
//!
//! Every body is also bounded in size by its route (64 KiB for the API, the transport's body
//! limit for a session, 4 KiB before one), so what a client can make the service hold is at most
//! `max_connections` times that, for at most `request_timeout`.

mod descriptors;
mod places;
mod refusals;

pub use descriptors::{Descriptors, RESERVE};

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::RequestBodyTimeoutLayer;
use weld_pipeline::telemetry::Tally;
use weld_pipeline::transport::kit::{Accepted, Accepts};

use places::{NoPlace, Places, Ticket};

/// The limits of an HTTP listener; see the module docs for where each is checked.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections open at once. One more takes the place of the oldest idle connection of the
    /// client holding the most, or is closed as soon as it is accepted when none is idle. Keep
    /// it well under the process's descriptor limit (`ulimit -n`): each is a descriptor.
    pub max_connections: usize,
    /// Connections one client IP address may hold at once (at most `max_connections`). One
    /// more takes the place of that client's own oldest idle connection, or is closed when all
    /// of its connections have a request in progress. Many clients behind one NAT share it.
    pub max_per_client: usize,
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
    /// The addresses of reverse proxies in front of the listener (empty: none). A request from
    /// one counts against the client its `X-Forwarded-For` names (the rightmost address there
    /// that is not itself a trusted proxy), for what is counted per client (token guesses); its
    /// connections, made on behalf of many clients, are held to no per-client share. Without
    /// this, every client behind a proxy is one client: one guesser shuts all of them out.
    pub trusted_proxies: Vec<IpAddr>,
}

impl Limits {
    /// These limits with at most `max_connections` connections, and a quarter of them per
    /// client at most: how the data-streams service fits its listeners under the descriptor
    /// limit.
    pub fn capped_at(self, max_connections: usize) -> Self {
        let max_connections = self.max_connections.min(max_connections).max(1);
        Limits {
            max_per_client: self.max_per_client.min((max_connections / 4).max(1)),
            max_connections,
            ..self
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_per_client: 256,
            header_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            body_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
            trusted_proxies: Vec::new(),
        }
    }
}

/// How often idle connections are checked against the idle limit under pressure.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// The client a peer address counts as, wherever something is counted per client (the
/// listener's places, the API's token guesses): an IPv4 address as it is (an IPv4-mapped IPv6
/// one too), an IPv6 address by its /64, the block one host is given.
pub(crate) fn client_of(ip: std::net::IpAddr) -> std::net::IpAddr {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !0u128 << 64).into()),
        },
    }
}

/// The client a trusted proxy forwards for: the rightmost address of `X-Forwarded-For` (every
/// such header, in order) that is not itself one of the `trusted` proxies. The addresses left of
/// it were written by the client, and prove nothing.
fn forwarded_client(headers: &axum::http::HeaderMap, trusted: &[IpAddr]) -> Option<IpAddr> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|entry| entry.trim().parse::<IpAddr>())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .map_while(Result::ok)
        .find(|ip| !trusted.contains(ip))
}

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
    tracing::info!(
        max_connections = limits.max_connections,
        max_per_client = limits.max_per_client.min(limits.max_connections),
        "HTTP listener's connection places"
    );
    let places = Places::new(
        limits.max_connections,
        limits.max_per_client,
        limits.header_timeout,
    );
    let served = Served {
        router: with_time_limits(router, &limits),
        limits,
        shutdown,
    };
    let counts = Counts::default();
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut connections = JoinSet::new();
    let mut accepts = Accepts::new(listener);
    loop {
        let accepted = tokio::select! {
            () = served.shutdown.cancelled() => break,
            accepted = accepts.next() => accepted,
            _ = sweep.tick() => {
                counts.room_made(places.sweep(), &served.limits);
                continue;
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (socket, remote) = match accepted {
            Accepted::Socket(socket, remote) => (socket, remote),
            Accepted::Summary => {
                counts.summarise(&places, &served.limits);
                continue;
            }
        };
        let proxied = served.limits.trusted_proxies.contains(&remote.ip());
        let Some(ticket) = counts.enter(&places, remote, proxied, &served.limits) else {
            drop(socket);
            continue;
        };
        connections.spawn(served.clone().connection(socket, remote, proxied, ticket));
    }
    drop(accepts);
    while connections.join_next().await.is_some() {}
}

/// `router` with the listener's time limits: on each body's frames, and on each whole request
/// (answered 408 in the API's shape).
fn with_time_limits(router: Router, limits: &Limits) -> Router {
    let request_timeout = limits.request_timeout;
    router
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
        ))
}

/// What the listener counts between two summaries: the first of each kind in a period is
/// logged in full, the others counted and logged in one line when the period ends.
#[derive(Default)]
struct Counts {
    /// Connections closed at once: every place taken, every connection busy.
    refused: Tally,
    /// Connections closed at once: the client holds its share, every one busy.
    shared: Tally,
    /// Idle connections closed to make room.
    made_room: Tally,
}

impl Counts {
    /// A place for a connection from `remote`, or `None` when it is to be closed at once.
    fn enter(
        &self,
        places: &Arc<Places>,
        remote: SocketAddr,
        proxied: bool,
        limits: &Limits,
    ) -> Option<Arc<Ticket>> {
        match places.enter(client_of(remote.ip()), proxied) {
            Ok((ticket, made_room)) => {
                self.room_made(usize::from(made_room), limits);
                Some(Arc::new(ticket))
            }
            Err(NoPlace::Full) => {
                if self.refused.record() {
                    tracing::warn!(limit = limits.max_connections, "connection limit reached with every connection busy: new ones are closed at once until one ends (more are counted)");
                }
                None
            }
            Err(NoPlace::Closing) => {
                if self.refused.record() {
                    tracing::warn!(limit = limits.max_connections, "connections closed to make room still hold their sockets: new ones are closed at once until they are gone (more are counted)");
                }
                None
            }
            Err(NoPlace::ClientShare) => {
                if self.shared.record() {
                    tracing::warn!(client = %remote.ip(), limit = limits.max_per_client, "a client holds its share of connections, every one busy: its new ones are closed at once (more are counted)");
                }
                None
            }
        }
    }

    /// Counts `closed` idle connections closed to make room.
    fn room_made(&self, closed: usize, limits: &Limits) {
        for _ in 0..closed {
            if self.made_room.record() {
                tracing::warn!(limit = limits.max_connections, per_client = limits.max_per_client, "idle connections are closed to make room (a client past its share, or the places near the cap); more are counted");
            }
        }
    }

    /// Logs what was counted in the period that ended.
    fn summarise(&self, places: &Places, limits: &Limits) {
        let more = self.refused.take();
        if more > 0 {
            tracing::warn!(
                refused = more,
                limit = limits.max_connections,
                "more connections refused at the connection limit in the last 30 s"
            );
        }
        let more = self.shared.take();
        if more > 0 {
            tracing::warn!(
                refused = more,
                limit = limits.max_per_client,
                "more connections refused at a client's share in the last 30 s"
            );
        }
        let closed = self.made_room.take();
        if closed > 0 {
            tracing::warn!(
                closed,
                taken = places.taken(),
                limit = limits.max_connections,
                "more idle connections closed to make room in the last 30 s"
            );
        }
    }
}

/// What every connection of one listener shares.
#[derive(Clone)]
struct Served {
    /// The router, with the listener's time limits.
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
}

impl Served {
    /// Serves one connection from `remote` in its place (`ticket`) until it closes, the
    /// listener shuts down, or its place is taken back while it is idle.
    async fn connection(
        self,
        socket: TcpStream,
        remote: SocketAddr,
        proxied: bool,
        ticket: Arc<Ticket>,
    ) {
        let Served {
            router,
            limits,
            shutdown,
        } = self;
        let trusted = limits.trusted_proxies.clone();
        // A request in progress marks its connection busy: only idle ones make room.
        let service = {
            let ticket = ticket.clone();
            tower::service_fn(
                move |mut request: axum::extract::Request<hyper::body::Incoming>| {
                    // Who the client is, for what is counted per client (token guesses).
                    let client = if proxied {
                        forwarded_client(request.headers(), &trusted)
                            .map_or(remote, |ip| SocketAddr::new(ip, 0))
                    } else {
                        remote
                    };
                    request
                        .extensions_mut()
                        .insert(axum::extract::ConnectInfo(client));
                    let busy = ticket.busy();
                    let answered = tower::ServiceExt::oneshot(router.clone(), request);
                    async move {
                        let answer = answered.await;
                        drop(busy);
                        answer
                    }
                },
            )
        };
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_header_size(limits.max_header_bytes);
        let connection = builder.serve_connection(
            TokioIo::new(refusals::Refusals::new(socket)),
            TowerToHyperService::new(service),
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
            // Idle, and its place was taken back to make room: closed now, by dropping it
            // (hyper's graceful shutdown waits for a first request that an idle socket
            // never sends). A request that raced in is still answered first.
            () = ticket.closed() => {
                if ticket.is_busy() {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(limits.request_timeout, connection).await;
                }
            }
        }
    }
}
