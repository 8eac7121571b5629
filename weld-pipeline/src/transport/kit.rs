//! The plumbing every network transport needs, written once: requests waiting for their
//! responses by correlation id, the panic-safe handler call, the in-order event pump, the size
//! check before sending, the listening socket that binds the same port again after a restart,
//! and the accept loop's common part. The TCP and HTTP transports are built on it; a new transport (RabbitMQ, say) only
//! writes its framing and its connection handling.
//!
//! | piece | what it guarantees |
//! |---|---|
//! | [`Pending`] | one response per request id; a request that gives up (timeout, drop) leaves nothing behind; a closed connection fails every waiting request with [`Error::Closed`] |
//! | [`answer`] | a handler that panics answers [`Response::Refused`] with kind [`ErrorKind::Bug`], and the connection stays up |
//! | [`event_pump`] | [`Handler::event`] is called one event at a time, in the order received, as its contract promises, however the events arrived |
//! | [`check_size`] | a message the other side would refuse is refused here, permanently, before it is sent: sent, it would close the connection, and its resend close it again |
//! | [`ListenAddr`] | a listener restarted on port 0 binds the port it had, so workers that knew it reconnect |
//! | [`Accepts`] | an accept loop that rides out a lack of descriptors (a retry every [`RETRY_AFTER`], one log line a period) and marks each period for the listener's own summaries |

use crate::sync::Locked;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use super::accept::{Accepted, Accepts, RETRY_AFTER};

use super::Handler;
use crate::error::{Error, ErrorKind};
use crate::message::{Event, Hello, Request, Response};

/// Requests sent on one connection and waiting for their responses, by correlation id.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use tokio_util::sync::CancellationToken;
/// use weld_pipeline::transport::kit::Pending;
/// use weld_pipeline::Response;
///
/// let pending = Pending::default();
/// let closed = CancellationToken::new();
/// let waiting = pending.register();
/// let id = waiting.id(); // sent with the request; the response carries it back
/// assert!(pending.resolve(id, Response::Started));
/// assert_eq!(waiting.wait(&closed).await?, Response::Started);
/// assert!(!pending.resolve(id, Response::Started), "one response per request");
/// # Ok::<_, weld_pipeline::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Default)]
pub struct Pending {
    table: Mutex<HashMap<u64, oneshot::Sender<Response>>>,
    next: AtomicU64,
}

impl Pending {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Response>>> {
        self.table.locked()
    }

    /// Registers a request under a fresh id (never 0, which stands for "no request").
    pub fn register(&self) -> Waiting<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (reply, response) = oneshot::channel();
        self.table().insert(id, reply);
        Waiting {
            pending: self,
            id,
            response: Some(response),
        }
    }

    /// Hands a response to the request waiting for it. `false` when none waits: it gave up (a
    /// timeout), and its answer is dropped.
    pub fn resolve(&self, id: u64, response: Response) -> bool {
        match self.table().remove(&id) {
            Some(reply) => reply.send(response).is_ok(),
            None => false,
        }
    }

    /// Fails every waiting request with [`Error::Closed`]: the connection is gone.
    pub fn close_all(&self) {
        self.table().clear();
    }
}

/// One request's wait for its response. Dropping it forgets the request.
#[derive(Debug)]
pub struct Waiting<'a> {
    pending: &'a Pending,
    id: u64,
    response: Option<oneshot::Receiver<Response>>,
}

impl Waiting<'_> {
    /// The correlation id to send with the request.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Waits for the response, or for `closed`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the connection closes first (the request may or may not have been
    /// handled).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future forgets the request; its response, should it come, is dropped.
    pub async fn wait(mut self, closed: &CancellationToken) -> Result<Response, Error> {
        let response = self.response.take().ok_or(Error::Closed)?;
        tokio::select! {
            response = response => response.map_err(|_| Error::Closed),
            () = closed.cancelled() => Err(Error::Closed),
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.pending.table().remove(&self.id);
    }
}

/// Answers one request with `handler`, turning a panic into a refusal of kind
/// [`ErrorKind::Bug`]: one bad request must not take the connection, and
/// every other request on it, down.
pub async fn answer(handler: &dyn Handler, from: &Hello, request: Request) -> Response {
    AssertUnwindSafe(handler.request(from, request))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| {
            tracing::error!(worker_id = %from.worker_id, "bug: a request handler panicked");
            Response::refused(&Error::Bug("the request handler panicked".into()))
        })
}

/// Starts the task that hands one connection's events to `handler`, one at a time and in the
/// order they are sent on the returned channel, until `closed`. The channel holds `capacity`
/// events: a sender waits when the handler falls that far behind.
pub fn event_pump(
    handler: Arc<dyn Handler>,
    hello: Hello,
    closed: CancellationToken,
    capacity: usize,
) -> mpsc::Sender<Event> {
    let (events, mut ordered) = mpsc::channel::<Event>(capacity.max(1));
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                event = ordered.recv() => event,
                () = closed.cancelled() => None,
            };
            let Some(event) = event else { return };
            let handled = AssertUnwindSafe(handler.event(&hello, event)).catch_unwind();
            tokio::select! {
                handled = handled => if handled.is_err() {
                    tracing::error!(worker_id = %hello.worker_id, "bug: an event handler panicked");
                },
                () = closed.cancelled() => return,
            }
        }
    });
    events
}

/// Refuses a message of `len` bytes that is over the other side's `limit`, before it is sent.
///
/// # Errors
///
/// [`Error::Invalid`] (permanent): resending the same message would be refused again.
pub fn check_size(len: usize, limit: usize) -> Result<(), Error> {
    if len > limit {
        return Err(Error::Invalid(format!(
            "a message of {len} bytes is over the {limit}-byte limit of the other side"
        )));
    }
    Ok(())
}

/// Where a controller's transport listens: the configured address until it first bound, then
/// the address it bound (port 0 resolved), so that listening again after a restart takes the same
/// port. Clones share it.
#[derive(Clone, Debug)]
pub struct ListenAddr {
    configured: String,
    bound: Arc<Mutex<Option<SocketAddr>>>,
}

impl ListenAddr {
    /// Listens on `configured` (`host:port`) the first time.
    pub fn new(configured: impl Into<String>) -> Self {
        ListenAddr {
            configured: configured.into(),
            bound: Arc::default(),
        }
    }

    /// The address as configured: what a client dials.
    pub fn configured(&self) -> &str {
        &self.configured
    }

    /// The address bound, once it has been.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        *self.bound.locked()
    }

    /// Binds a listening socket there and remembers the address.
    ///
    /// # Errors
    ///
    /// A permanent error naming the address when it cannot be bound (in use, not this host's).
    pub async fn bind(&self) -> Result<(tokio::net::TcpListener, SocketAddr), Error> {
        let addr = self
            .local_addr()
            .map_or_else(|| self.configured.clone(), |a| a.to_string());
        let permanent = |e: std::io::Error| {
            Error::new(
                ErrorKind::Permanent,
                format!("cannot listen on {addr}: {e}"),
            )
        };
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(permanent)?;
        let local = listener.local_addr().map_err(permanent)?;
        *self.bound.locked() = Some(local);
        Ok((listener, local))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[tokio::test]
    async fn a_request_that_gives_up_leaves_nothing_and_a_close_fails_the_rest() {
        let pending = Pending::default();
        let closed = CancellationToken::new();
        let gave_up = pending.register();
        let id = gave_up.id();
        drop(gave_up);
        assert!(!pending.resolve(id, Response::Started));
        let waiting = pending.register();
        pending.close_all();
        assert!(matches!(waiting.wait(&closed).await, Err(Error::Closed)));
        let waiting = pending.register();
        closed.cancel();
        assert!(matches!(waiting.wait(&closed).await, Err(Error::Closed)));
    }

    struct Slow {
        running: AtomicUsize,
        most: AtomicUsize,
        seen: Mutex<Vec<u64>>,
    }

    #[async_trait]
    impl Handler for Slow {
        async fn request(&self, _from: &Hello, _request: Request) -> Response {
            panic!("a handler bug")
        }
        async fn event(&self, _from: &Hello, event: Event) {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            if let Event::OutboxDepth { batches, .. } = event {
                self.seen.lock().unwrap().push(batches);
            }
            self.running.fetch_sub(1, Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn events_are_handled_one_at_a_time_in_order_and_a_panic_is_an_answer() {
        let handler = Arc::new(Slow {
            running: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
            seen: Mutex::default(),
        });
        let hello = Hello::new("w", vec![]);
        let closed = CancellationToken::new();
        let events = event_pump(handler.clone(), hello.clone(), closed.clone(), 4);
        for batches in 0..20 {
            events
                .send(Event::OutboxDepth { batches, bytes: 0 })
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(*handler.seen.lock().unwrap(), (0..20).collect::<Vec<_>>());
        assert_eq!(handler.most.load(Ordering::SeqCst), 1);

        let response = answer(
            &*handler,
            &hello,
            Request::Stop {
                stream: crate::stream::StreamName::new("s").unwrap(),
            },
        )
        .await;
        assert!(matches!(
            response,
            Response::Refused {
                kind: ErrorKind::Bug,
                ..
            }
        ));
    }

    #[test]
    fn a_message_over_the_limit_is_refused_permanently() {
        assert!(check_size(10, 10).is_ok());
        let error = check_size(11, 10).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Permanent);
    }

    #[tokio::test]
    async fn a_listener_bound_on_port_0_binds_the_same_port_again() {
        let addr = ListenAddr::new("127.0.0.1:0");
        let (first, port) = addr.bind().await.unwrap();
        drop(first);
        let (_second, again) = addr.bind().await.unwrap();
        assert_eq!(port, again);
        let error = addr.bind().await.unwrap_err();
        assert!(error.to_string().contains(&port.to_string()), "{error}");
    }
}
