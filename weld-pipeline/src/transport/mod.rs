//! Transports: how the controller and its workers talk.
//!
//! A [`Transport`] has two sides. The controller [`listen`](Transport::listen)s and accepts
//! workers; a worker [`connect`](Transport::connect)s and introduces itself with a [`Hello`].
//! Once connected the two sides are symmetric: each holds a [`Peer`] to send requests (answered
//! by exactly one response, matched by a correlation id) and one-way events, and each gives the
//! transport a [`Handler`] that answers what the other side sends. Many requests may be in flight
//! on one connection at once, and their responses may come back in any order.
//!
//! ```text
//!   worker                                              controller
//!   Peer::request(Deliver(batch)) ---- correlation 7 --->  Handler::request -> commit
//!   Peer::request(Deliver(batch)) ---- correlation 8 --->  Handler::request -> commit
//!                                 <--- Ack for 8 ---------
//!                                 <--- Ack for 7 ---------
//!   Handler::request(Stop)        <--- correlation 1 ----  Peer::request(Stop)
//! ```
//!
//! # How each transport implements it
//!
//! - **In memory** ([`MemoryTransport`]): channels inside one process; the correlation id is the
//!   response channel itself. For tests and single-process pipelines.
//! - **TCP** (`weld-pipeline-tcp`): length-delimited frames carrying a frame type (request,
//!   response, event), a correlation id and a message in this crate's
//!   [encoding](crate::encoding). A connection task writes frames and routes each response to the
//!   waiting request by correlation id; the handshake carries the [`Hello`] and, with a shared
//!   secret, an HMAC challenge. [`Peer::closed`] resolves when the socket or its heartbeat dies.
//! - **HTTP/1.1** (`weld-pipeline-http`): the worker `POST`s requests and events to the
//!   controller over keep-alive connections (several in flight, one per connection); requests
//!   from the controller to the worker (start, stop) are held by the controller and handed out
//!   on a long-polled `GET`, answered by a `POST` carrying the correlation id. A worker whose
//!   poll lapses past the heartbeat is closed.
//! - **RabbitMQ** (`lapin`, later): each side consumes its own quorum queue with manual acks and
//!   publishes to the other's with publisher confirms; a request carries `correlation_id` and
//!   `reply_to`, and [`Peer::request`] completes when the reply arrives. A delivery is acked to
//!   the broker only after the [`Handler`] answered, so a crash redelivers it, and the batch
//!   identity makes that harmless. Connection loss closes the peer; the worker's outbox resends.

mod accept;
mod auth;
mod failover;
pub mod kit;
mod memory;

pub use auth::{random_bytes, Secret, CHALLENGE_LEN};
pub use failover::Failover;
pub use memory::{MemoryListener, MemoryPeer, MemoryTransport};

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::Error;
use crate::message::{Event, Hello, Request, Response, PROTOCOL_VERSION};

/// Answers what a peer sends. The transport calls it concurrently, once per request in flight.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Answers one request. A failure is answered with [`Response::Refused`], not an error: the
    /// connection stays up.
    ///
    /// # Cancel safety
    ///
    /// A transport may drop this future when the connection closes; whatever it had committed
    /// stays committed, and the requester, having no answer, asks again (which must be harmless,
    /// as a batch delivery is).
    async fn request(&self, from: &Hello, request: Request) -> Response;

    /// Takes one event. Events of one connection are handed over one at a time, in order.
    ///
    /// # Cancel safety
    ///
    /// As for [`Handler::request`]: it may be dropped when the connection closes.
    async fn event(&self, from: &Hello, event: Event);
}

/// The sending half of one connection. Clones share the connection.
#[async_trait]
pub trait Peer: Clone + Send + Sync + 'static {
    /// The worker's introduction (on both sides: the controller's peer is its worker's hello,
    /// the worker's peer echoes its own).
    fn hello(&self) -> &Hello;

    /// Sends a request and waits for its response. Several may be in flight at once.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the connection is gone before the response arrives (transient:
    /// the request may or may not have been handled), a transport's limit errors otherwise. A
    /// [`Response::Refused`] is a response, not an error.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the wait; the request may still be handled by the peer.
    async fn request(&self, request: Request) -> Result<Response, Error>;

    /// Sends a one-way event.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the connection is gone.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future may or may not have sent the event; events carry no guarantee beyond
    /// the connection's.
    async fn notify(&self, event: Event) -> Result<(), Error>;

    /// Resolves once the connection is closed, by either side or by failure.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    async fn closed(&self);

    /// Closes the connection. Requests in flight fail with [`Error::Closed`].
    fn close(&self);
}

/// Both sides of one kind of connection.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// A connected peer.
    type Peer: Peer;
    /// The controller's side: where workers arrive.
    type Listener: Listener<Peer = Self::Peer>;

    /// Starts accepting workers; each connection's incoming messages go to `handler`.
    ///
    /// # Errors
    ///
    /// When the transport cannot listen (an address in use).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes leaves nothing listening.
    async fn listen(&self, handler: Arc<dyn Handler>) -> Result<Self::Listener, Error>;

    /// Connects to the controller as the worker described by `hello`; the controller's requests
    /// go to `handler`.
    ///
    /// # Errors
    ///
    /// Transient when the controller is unreachable (reconnect later), permanent when it refused
    /// the hello (a wrong secret or protocol version).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the connection attempt; a half-made connection is closed.
    async fn connect(&self, hello: Hello, handler: Arc<dyn Handler>) -> Result<Self::Peer, Error>;

    /// The largest message it carries, in bytes (its frame or body limit): a worker cuts its
    /// batches to fit, [`MESSAGE_HEADROOM`] under it, so a page of any size is delivered
    /// ([`Pipeline::with_max_batch_bytes`](crate::Pipeline::with_max_batch_bytes)). Unbounded
    /// unless the transport says otherwise.
    fn max_message_bytes(&self) -> usize {
        usize::MAX
    }
}

/// The most bytes a message adds around the batch it delivers (its version, tag and framing:
/// a few dozen), with room to spare: a batch this much under a transport's
/// [`max_message_bytes`](Transport::max_message_bytes) always fits it.
pub const MESSAGE_HEADROOM: usize = 4 * 1024;

/// Accepts workers.
#[async_trait]
pub trait Listener: Send + 'static {
    /// A connected peer.
    type Peer: Peer;

    /// Waits for the next worker to complete its handshake.
    ///
    /// # Errors
    ///
    /// When the listener itself failed; a single worker's failed handshake is not an error here.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a worker whose handshake completed is not lost if the future is dropped.
    async fn accept(&mut self) -> Result<Self::Peer, Error>;
}

/// Checks a worker's hello on the accepting side: the version must be this build's.
///
/// # Errors
///
/// [`Error::Invalid`] naming both versions.
pub fn check_hello(hello: &Hello) -> Result<(), Error> {
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(Error::Invalid(format!(
            "protocol version {} is not supported; this controller speaks {PROTOCOL_VERSION}",
            hello.protocol_version
        )));
    }
    if hello.worker_id.is_empty() {
        return Err(Error::Invalid("a worker id must not be empty".into()));
    }
    Ok(())
}
