//! The HTTP/1.1 transport: the core `Transport` over axum (the controller's side) and reqwest
//! (the worker's), for networks where only HTTP gets through.
//!
//! ```text
//! worker                                              controller
//!   POST /v1/hello   {hello}              -->  version checked; with a secret:
//!                                         <--  200 {"challenge": hex, "pending": id}
//!   POST /v1/answer  {"pending", "proof"} -->  HMAC checked in constant time
//!                                         <--  200 {"session": token}
//!   POST /v1/request (x-weld-session)     -->  a Request message; the answer is its Response
//!   POST /v1/event                        -->  an Event message; 204
//!   POST /v1/poll                         -->  held up to `poll_wait`; 200 with a frame the
//!                                              controller sends (a request or an event), or 204
//!   POST /v1/reply   (x-weld-correlation) -->  the Response to a polled request; 204
//! ```
//!
//! Bodies are messages in the core's binary encoding (`application/octet-stream`), so a batch's
//! records travel as their JSON bytes, as over TCP. The worker's requests run over a pool of
//! keep-alive connections: several deliveries are in flight at once, one per connection.
//! The controller's requests to the worker (start, stop) wait in the worker's session until its
//! next poll, and the worker answers each with a reply.
//!
//! # The poll frame
//!
//! A poll's 200 body is one frame: a kind byte, the correlation id, then the message in the
//! core's encoding. The worker answers a request by posting its `Response` to `/v1/reply` with
//! that correlation id in `x-weld-correlation`; an event needs no answer.
//!
//! ```text
//! +----------+---------------------+------------------------------------+
//! | kind: u8 | correlation: u64 BE | message (core encoding)            |
//! | 6 request, 8 event | 0 for an event | a `Request` or an `Event`  |
//! +----------+---------------------+------------------------------------+
//! ```
//!
//! A stop of stream `s` with correlation 1 begins `06 00 00 00 00 00 00 00 01`, followed by the
//! encoded `Request::Stop`. A frame of another kind, or one that does not decode, ends the
//! session (the worker reconnects).
//!
//! # Limits
//!
//! | limit | default | checked | on breach |
//! |---|---|---|---|
//! | [`HttpConfig::max_body_bytes`] | 16 MiB | by the server on a session's bodies, read only once the session is known; by the client before sending | 413, the request fails (permanent); a client-side refusal is a permanent error |
//! | pre-auth body | 4 KiB | `POST /v1/hello` and `/v1/answer`, from `Content-Length` before reading | 413 |
//! | pending challenges | 128, at most 8 per client (an address, IPv6 by its /64) | at hello, with a secret; each expires after `session_timeout` | past its 8, a client's own oldest challenge is forgotten, so one flooding address cycles through its own places and never pushes out a worker's; with all 128 taken, the oldest of the client holding most goes; an answer to a forgotten challenge gets 401 (transient) and the worker says hello again at once (8 tries, then the runtime's backoff); one log line per 30 s counts them |
//! | [`HttpConfig::max_sessions`] | 1,024 | at hello | 503, transient |
//! | [`HttpConfig::poll_wait`] | 2 s | how long a poll is held | an empty 204 |
//! | [`HttpConfig::session_timeout`] | 6 s | a session with no poll for this long | closed: the worker is gone |
//! | [`HttpConfig::request_timeout`] | 60 s | each client request | the session is closed; the worker reconnects |
//!
//! The listener's own limits (connections, per client, header, idle, body and request timeouts)
//! are those of [`listener`](crate::listener); its connection cap is at most its share of the
//! descriptor limit ([`Descriptors`](crate::listener::Descriptors), which raises the process's
//! soft limit to the hard one on the first listen).
//!
//! A session ends when the worker stops polling, when either side closes it, or when a request
//! fails on the network; the worker runtime then reconnects and resends its outbox.

mod challenges;
mod client;
mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use weld_pipeline::transport::kit::ListenAddr;
use weld_pipeline::transport::{Handler, Peer, Secret, Transport};
use weld_pipeline::{Error, Event, Hello, Request, Response};

pub use server::HttpAcceptor;

/// Header carrying the session token.
const SESSION: &str = "x-weld-session";
/// Header carrying a polled request's correlation id.
const CORRELATION: &str = "x-weld-correlation";
/// Frame kinds in a poll's answer, its first byte: a request, to be answered with a reply.
const POLLED_REQUEST: u8 = 6;
/// An event: no answer.
const POLLED_EVENT: u8 = 8;

/// Limits and authentication of the HTTP transport, read by both sides.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// The shared secret workers must prove; none: any worker may connect.
    pub secret: Option<Secret>,
    /// The largest body either side takes. Default 16 MiB, as the TCP transport's frames.
    pub max_body_bytes: usize,
    /// The most sessions a controller holds; one more hello gets a 503. Default 1,024.
    pub max_sessions: usize,
    /// How long a poll waits for something to send before answering empty. Default 2 s: the
    /// worker's poll is also its heartbeat.
    pub poll_wait: Duration,
    /// A session whose worker has not polled for this long is closed. Default 6 s: three polls.
    pub session_timeout: Duration,
    /// The longest a worker's request may take before its session is given up. Default 60 s.
    pub request_timeout: Duration,
    /// The controller's HTTP listener: connection cap and timeouts (see
    /// [`listener`](crate::listener)).
    pub limits: crate::listener::Limits,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            secret: None,
            max_body_bytes: 16 * 1024 * 1024,
            max_sessions: 1024,
            poll_wait: Duration::from_secs(2),
            session_timeout: Duration::from_secs(6),
            request_timeout: Duration::from_secs(60),
            limits: crate::listener::Limits::default(),
        }
    }
}

/// The HTTP transport: [`Transport::listen`] serves its address, [`Transport::connect`] talks to
/// it.
#[derive(Clone, Debug)]
pub struct HttpTransport {
    /// Where the controller serves (the same port again after a restart) and workers post.
    addr: ListenAddr,
    config: Arc<HttpConfig>,
}

impl HttpTransport {
    /// A transport for `addr` (`host:port`) with the default limits and no secret.
    pub fn new(addr: impl Into<String>) -> Self {
        Self::with_config(addr, HttpConfig::default())
    }

    /// A transport for `addr` with `config`.
    pub fn with_config(addr: impl Into<String>, config: HttpConfig) -> Self {
        HttpTransport {
            addr: ListenAddr::new(addr),
            config: Arc::new(config),
        }
    }

    /// The address served, once it has listened (port 0 resolved).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.addr.local_addr()
    }
}

/// One side of an HTTP session: the worker's client, or the controller's view of a worker.
#[derive(Clone, Debug)]
pub enum HttpPeer {
    /// The worker's side.
    Client(client::ClientSide),
    /// The controller's side.
    Server(server::ServerSide),
}

#[async_trait]
impl Peer for HttpPeer {
    fn hello(&self) -> &Hello {
        match self {
            HttpPeer::Client(c) => c.hello(),
            HttpPeer::Server(s) => s.hello(),
        }
    }

    async fn request(&self, request: Request) -> Result<Response, Error> {
        match self {
            HttpPeer::Client(c) => c.request(request).await,
            HttpPeer::Server(s) => s.request(request).await,
        }
    }

    async fn notify(&self, event: Event) -> Result<(), Error> {
        match self {
            HttpPeer::Client(c) => c.notify(event).await,
            HttpPeer::Server(s) => s.notify(event).await,
        }
    }

    async fn closed(&self) {
        match self {
            HttpPeer::Client(c) => c.closed().await,
            HttpPeer::Server(s) => s.closed().await,
        }
    }

    fn close(&self) {
        match self {
            HttpPeer::Client(c) => c.close(),
            HttpPeer::Server(s) => s.close(),
        }
    }
}

#[async_trait]
impl Transport for HttpTransport {
    type Peer = HttpPeer;
    type Listener = HttpAcceptor;

    /// [`HttpConfig::max_body_bytes`].
    fn max_message_bytes(&self) -> usize {
        self.config.max_body_bytes
    }

    async fn listen(&self, handler: Arc<dyn Handler>) -> Result<HttpAcceptor, Error> {
        server::listen(&self.addr, handler, self.config.clone()).await
    }

    async fn connect(&self, hello: Hello, handler: Arc<dyn Handler>) -> Result<HttpPeer, Error> {
        let addr = self.addr.configured();
        let base = if addr.starts_with("http") {
            addr.to_owned()
        } else {
            format!("http://{addr}")
        };
        client::connect(base, hello, handler, self.config.clone())
            .await
            .map(HttpPeer::Client)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use weld_pipeline::encoding::{decode_message, encode_message};
    use weld_pipeline::{Message, Request, StreamName};

    /// The poll frame of the module docs, in bytes.
    #[test]
    fn the_documented_poll_frame_decodes() {
        let stop = Message::Request(Request::Stop {
            stream: StreamName::new("s").unwrap(),
        });
        let frame = super::server::poll_frame(super::POLLED_REQUEST, 1, &stop);
        assert_eq!(&frame[..9], &[6, 0, 0, 0, 0, 0, 0, 0, 1]);
        let mut body = bytes::BytesMut::new();
        encode_message(&stop, &mut body);
        assert_eq!(&frame[9..], &body[..]);
        assert_eq!(decode_message(frame.slice(9..)).unwrap(), stop);
    }
}
