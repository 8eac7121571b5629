//! The TCP transport of weld-pipeline: a controller and many workers on other machines, talking
//! over one connection each, authenticated, multiplexed, and hard to break.
//!
//! [`TcpTransport`] implements [`weld_pipeline::Transport`]: a controller
//! [`listen`](weld_pipeline::Transport::listen)s, a worker
//! [`connect`](weld_pipeline::Transport::connect)s. Non-goals: encryption (run it on a private
//! network, or behind a TLS tunnel: the transport has no TLS of its own yet), cross-version negotiation
//! (both sides must speak the same protocol version), and mutual authentication (the controller
//! checks the worker's proof of the secret; the worker does not check the controller's).
//!
//! # The wire protocol
//!
//! Every frame is length-delimited (tokio-util's `LengthDelimitedCodec`): a 4-byte big-endian
//! length, then that many bytes of payload. The payload starts with a 10-byte header:
//!
//! ```text
//! +----------------+---------+------+--------------------+-------------------------------+
//! | length: u32 BE | version | type | correlation: u64 BE| body                          |
//! |  (of the rest) |  u8 = 1 |  u8  |                    | (length - 10 bytes)           |
//! +----------------+---------+------+--------------------+-------------------------------+
//! ```
//!
//! | type | name | body | sent by |
//! |---|---|---|---|
//! | 1 | hello | a `Hello` message (core encoding) | worker, first |
//! | 2 | challenge | 32 random bytes | controller, when it has a secret |
//! | 3 | answer | HMAC-SHA256(secret, challenge ‖ len(worker id) as u64 BE ‖ worker id), 32 bytes | worker |
//! | 4 | welcome | empty | controller: the handshake is done |
//! | 5 | refused | code u8 (1 protocol, 2 version, 3 authentication: permanent; 4 busy, at the connection limit: transient) + reason (UTF-8) | either; the connection closes after it |
//! | 6 | request | a `Request` message | either |
//! | 7 | response | a `Response` message; same correlation id as its request | either |
//! | 8 | event | an `Event` message; correlation 0 | either |
//! | 9 | ping | empty | either, every heartbeat interval; it needs no answer: each side's own pings keep the other's reader alive |
//! | 10 | pong | empty | reserved; accepted and ignored |
//!
//! Bodies are messages in the core's [binary encoding](weld_pipeline::encoding): a delivered
//! batch's records travel as their JSON bytes, never parsed by the transport. Requests,
//! responses and events share the connection; any number of requests (up to the peer's
//! in-flight limit) are outstanding at once, and responses come back in whatever order they
//! finish, matched by correlation id.
//!
//! A heartbeat, worked in bytes (length 10, version 1, type 9 ping, correlation 0, no body):
//!
//! ```text
//! 00 00 00 0a  01  09  00 00 00 00 00 00 00 00
//! ```
//!
//! # The handshake
//!
//! ```text
//! worker                                 controller
//!   hello{id, protocol version, sources} -->   version checked (else refused: version)
//!                                        <--   challenge{32 random bytes}      (only with a secret)
//!   answer{HMAC(secret, challenge ‖ len ‖ id)} -->   checked in constant time (else refused: authentication)
//!                                        <--   welcome
//! ```
//!
//! The secret never crosses the wire. Nothing but these frames is accepted before the welcome;
//! any other frame, a wrong answer, a missing one or a hello of another version gets a `refused`
//! frame and the connection is closed.
//!
//! # Limits
//!
//! | limit | default | checked | on breach |
//! |---|---|---|---|
//! | frame size before the welcome | 4 KiB | on the length header | `refused: protocol`, closed: an unauthenticated client cannot make the controller allocate more |
//! | [`TcpConfig::max_frame_bytes`] | 16 MiB | after the welcome, on the length header, before the frame is read | `refused: protocol`, closed (framing is lost) |
//! | the same, outgoing | 16 MiB | before a request or event is sent | a permanent error to the sender; the connection goes on |
//! | [`TcpConfig::handshake_timeout`] | 5 s | from accept (or dial) to welcome | `refused: protocol` (handshake timed out), closed |
//! | handshakes at once | 128 | on accept | the oldest handshake still in progress is closed to make room: silent sockets cycle through the places, a real worker (a round trip) gets in; one log line per 30 s counts them |
//! | a failed accept (out of descriptors) | retried after 50 ms (`weld_pipeline::transport::kit::RETRY_AFTER`) | at accept | the first of each 30 s is logged, the others counted in one line; the listener keeps going |
//! | [`TcpConfig::max_connections`] | 1,024 | after a successful handshake, before the welcome | `refused: busy` (transient), closed |
//! | [`TcpConfig::max_in_flight`] | 64 | per connection, on each incoming request | the request is answered `Refused` (transient); the connection goes on |
//! | [`TcpConfig::heartbeat_interval`] | 2 s | each side pings | - |
//! | [`TcpConfig::heartbeat_timeout`] | 6 s | nothing read or written for this long | closed (a dead peer, one trickling bytes, or one that stopped reading) |
//!
//! Bad input (garbage, an HTTP request, a lying length, a truncated or unknown frame, a slowloris)
//! closes that one connection with a reason; the others keep flowing. A failed handshake is
//! logged with its reason when it is the first in 30 s; the others of those 30 s are counted
//! in one summary line, so a flood of them cannot grow the log (failed accepts, out of
//! descriptors, alike). Reconnecting is the
//! worker runtime's job: it dials again with backoff and jitter, and its outbox resends what was
//! not acknowledged.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use weld_pipeline::{Event, Handler, Hello, Listener, Peer, Request, Response, Transport};
//! use weld_pipeline_tcp::{Secret, TcpConfig, TcpTransport};
//!
//! struct Echo;
//!
//! #[async_trait::async_trait]
//! impl Handler for Echo {
//!     async fn request(&self, _from: &Hello, _request: Request) -> Response {
//!         Response::Stopped
//!     }
//!     async fn event(&self, _from: &Hello, _event: Event) {}
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let config = TcpConfig { secret: Some(Secret::new("s3cret")), ..TcpConfig::default() };
//! let controller = TcpTransport::with_config("127.0.0.1:0", config.clone());
//! let mut listener = controller.listen(Arc::new(Echo)).await?;
//!
//! let worker = TcpTransport::with_config(listener.local_addr().to_string(), config);
//! let peer = worker.connect(Hello::new("worker-1", vec![]), Arc::new(Echo)).await?;
//! let accepted = listener.accept().await?;
//! assert_eq!(accepted.hello().worker_id, "worker-1");
//! let stream = weld_pipeline::StreamName::new("contacts")?;
//! assert_eq!(peer.request(Request::Stop { stream }).await?, Response::Stopped);
//! # Ok::<_, weld_pipeline::Error>(())
//! # }).unwrap();
//! ```

mod config;
mod connection;
mod error;
mod frame;
mod handshake;
mod transport;

pub use config::{Secret, TcpConfig};
pub use connection::TcpPeer;
pub use error::TcpError;
pub use frame::{FrameType, FRAME_VERSION};
pub use transport::{TcpAcceptor, TcpTransport};
