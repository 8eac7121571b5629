//! The transport's limits and secret, each with its default and the reason for it.

use std::time::Duration;

pub use weld_pipeline::transport::Secret;

/// Limits and authentication of a TCP connection. Both sides read the same struct; each limit
/// is checked where the docs of its field say.
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// The shared secret. On the controller: workers must prove it. On a worker: what it
    /// proves. Default: none (any worker may connect; use only on a trusted network).
    pub secret: Option<Secret>,
    /// The largest frame accepted, in bytes, checked on the length header before any of the
    /// frame is read or allocated; a larger one closes the connection. Default 16 MiB: a batch of
    /// 1,000 records of 16 KiB fits, and a peer cannot make this side allocate more than that.
    pub max_frame_bytes: usize,
    /// How long a connecting peer has to complete the handshake (hello, challenge, answer).
    /// Default 5 s: generous on a LAN, short enough that a silent or slow client is dropped.
    pub handshake_timeout: Duration,
    /// How long a dial may take on the worker's side. Default 5 s.
    pub connect_timeout: Duration,
    /// The most authenticated connections a controller holds; one more is refused as busy
    /// after its handshake. Default 1,024.
    pub max_connections: usize,
    /// The most requests from one peer handled at once; past it, a request is answered with a
    /// transient refusal. Default 64, well above the 16 deliveries a worker keeps in flight.
    pub max_in_flight: usize,
    /// How often each side sends a heartbeat. Default 2 s.
    pub heartbeat_interval: Duration,
    /// A connection on which nothing moved for this long (no complete frame read, no answer
    /// written) is dead and closed: a crashed peer, a cut cable, a peer sending one byte a second,
    /// or one that stopped reading. Default 6 s: three missed heartbeats.
    pub heartbeat_timeout: Duration,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            secret: None,
            max_frame_bytes: 16 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            max_connections: 1024,
            max_in_flight: 64,
            heartbeat_interval: Duration::from_secs(2),
            heartbeat_timeout: Duration::from_secs(6),
        }
    }
}
