//! The bad input every network transport must survive, generic over the transport, so that
//! each one passes the same cases ([`transport_bad_input!`](crate::transport_bad_input) is the
//! one list a transport's test file names). Real sockets on 127.0.0.1, port 0.
//!
//! Each case proves the same two things: the bad input is refused as what it is (permanently,
//! where resending could never work), and a worker connected beside it keeps flowing. What only
//! one transport can be sent (a frame that lies about its length, a request head past 4 KiB)
//! stays in that transport's own tests.
//!
//! | case | the bad input | what must happen |
//! |---|---|---|
//! | [`a_wrong_secret_is_refused_permanently_and_the_server_stays_up`] | a worker with the wrong secret | a permanent authentication error; the secret is never printed |
//! | [`a_missing_secret_is_refused_permanently`] | a worker with no secret, to a controller that has one | a permanent error |
//! | [`an_unknown_protocol_version_is_refused_permanently`] | a hello of protocol version 99 | a permanent error naming the version |
//! | [`a_message_over_the_limit_is_refused_before_it_is_sent`] | a batch past the message limit | a permanent error, and its connection stays up |
//! | [`garbage_is_refused_and_the_server_stays_up`] | each piece of the transport's [`Wire::garbage`] | refused as the transport refuses it, then closed |
//! | [`a_client_that_says_nothing_is_closed_at_its_timeout`] | a connection that never sends a byte | closed by the server, well before the test's deadline |

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::batch::Batch;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, ErrorKind};
use crate::message::{Hello, Request};
use crate::stream::{RunId, StreamName};
use crate::transport::{Listener, Peer, Secret, Transport};

use super::Answering;

/// Every wait of the suite ends by this.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A transport as the suite drives it: how to build each side with a case's [`Settings`], and
/// what bad input its listener must refuse.
pub trait Wire: Send + Sync + 'static {
    /// The transport under test.
    type Transport: Transport;

    /// A transport for `addr` (`host:port`, `127.0.0.1:0` for a controller) with short timeouts
    /// (a silent connection closed within a few seconds) and `settings`.
    fn transport(&self, addr: &str, settings: &Settings) -> Self::Transport;

    /// Where `transport` listens, once it has.
    fn local_addr(transport: &Self::Transport) -> Option<SocketAddr>;

    /// Input this transport's listener must refuse, each piece sent on a fresh connection.
    fn garbage(&self) -> Vec<Garbage>;
}

/// What a case sets on both sides.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// The shared secret, if any.
    pub secret: Option<Secret>,
    /// The largest message either side takes, where the case sets one (the transport's default
    /// otherwise).
    pub max_message_bytes: Option<usize>,
}

impl Settings {
    /// The defaults, with `secret`.
    pub fn with_secret(secret: &str) -> Self {
        Settings {
            secret: Some(Secret::new(secret)),
            ..Settings::default()
        }
    }
}

/// One piece of bad input, and how its refusal reads in what the server wrote back before it
/// closed the connection.
#[derive(Debug)]
pub struct Garbage {
    /// What it is, for the failure message.
    pub what: &'static str,
    /// The bytes sent.
    pub bytes: Vec<u8>,
    /// Whether what came back is this transport's refusal of it.
    pub refused: fn(&[u8]) -> bool,
}

type ListenerOf<W> = <<W as Wire>::Transport as Transport>::Listener;
type PeerOf<W> = <<W as Wire>::Transport as Transport>::Peer;

/// A controller listening on a free port with `settings`: its listener and its address.
async fn listen<W: Wire>(wire: &W, settings: &Settings) -> (ListenerOf<W>, SocketAddr) {
    let transport = wire.transport("127.0.0.1:0", settings);
    let listener = transport
        .listen(Arc::new(Answering::default()))
        .await
        .unwrap();
    let addr = W::local_addr(&transport).expect("it listens");
    (listener, addr)
}

/// A worker `id` with `settings` connected to `addr`, and the controller's side of it.
///
/// # Errors
///
/// What the worker's connect answered.
async fn join<W: Wire>(
    wire: &W,
    listener: &mut ListenerOf<W>,
    addr: SocketAddr,
    settings: &Settings,
    id: &str,
) -> Result<(PeerOf<W>, PeerOf<W>), Error> {
    let transport = wire.transport(&addr.to_string(), settings);
    let peer = transport
        .connect(Hello::new(id, vec![]), Arc::new(Answering::default()))
        .await?;
    let accepted = tokio::time::timeout(DEADLINE, listener.accept())
        .await
        .expect("the controller accepts the worker")?;
    Ok((peer, accepted))
}

/// The error of a worker `id` with `settings` that must not get in.
///
/// # Panics
///
/// When it got in.
async fn refused<W: Wire>(
    wire: &W,
    listener: &mut ListenerOf<W>,
    addr: SocketAddr,
    settings: &Settings,
    id: &str,
) -> Error {
    match join(wire, listener, addr, settings, id).await {
        Ok(_) => panic!("{id} got in"),
        Err(error) => error,
    }
}

/// Asserts that `peer`'s connection still answers, by the suite's deadline.
async fn still_flowing(peer: &impl Peer) {
    super::still_flowing(peer, DEADLINE).await;
}

/// Reads from a raw socket until the other side closes it (or resets it), with the suite's
/// deadline; returns what came.
///
/// # Panics
///
/// When the server has not closed the connection by [`DEADLINE`].
pub async fn read_until_closed(socket: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(DEADLINE, async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server closes the connection");
    got
}

/// See the table in the module docs.
pub async fn a_wrong_secret_is_refused_permanently_and_the_server_stays_up<W: Wire>(wire: &W) {
    let right = Settings::with_secret("right");
    let (mut listener, addr) = listen(wire, &right).await;
    let (good, _accepted) = join(wire, &mut listener, addr, &right, "good")
        .await
        .unwrap();
    let wrong = Settings::with_secret("wrong");
    let error = refused(wire, &mut listener, addr, &wrong, "intruder").await;
    assert_eq!(error.kind(), ErrorKind::Permanent);
    assert!(error.to_string().contains("authentication"), "{error}");
    assert!(!format!("{:?}", Secret::new("right")).contains("right"));
    still_flowing(&good).await;
}

/// See the table in the module docs.
pub async fn a_missing_secret_is_refused_permanently<W: Wire>(wire: &W) {
    let right = Settings::with_secret("right");
    let (mut listener, addr) = listen(wire, &right).await;
    let error = refused(wire, &mut listener, addr, &Settings::default(), "no-secret").await;
    assert_eq!(error.kind(), ErrorKind::Permanent);
    let (good, _accepted) = join(wire, &mut listener, addr, &right, "good")
        .await
        .unwrap();
    still_flowing(&good).await;
}

/// See the table in the module docs.
pub async fn an_unknown_protocol_version_is_refused_permanently<W: Wire>(wire: &W) {
    let settings = Settings::default();
    let (mut listener, addr) = listen(wire, &settings).await;
    let mut hello = Hello::new("w", vec![]);
    hello.protocol_version = 99;
    let connected = wire
        .transport(&addr.to_string(), &settings)
        .connect(hello, Arc::new(Answering::default()))
        .await;
    let Err(error) = connected else {
        panic!("a hello of version 99 got in")
    };
    assert_eq!(error.kind(), ErrorKind::Permanent);
    assert!(error.to_string().contains("99"), "{error}");
    let (good, _accepted) = join(wire, &mut listener, addr, &settings, "good")
        .await
        .unwrap();
    still_flowing(&good).await;
}

/// See the table in the module docs.
pub async fn a_message_over_the_limit_is_refused_before_it_is_sent<W: Wire>(wire: &W) {
    let small = Settings {
        max_message_bytes: Some(4096),
        ..Settings::default()
    };
    let (mut listener, addr) = listen(wire, &small).await;
    let (peer, _accepted) = join(wire, &mut listener, addr, &small, "w").await.unwrap();
    let batch = Batch::new(StreamName::new("s0").unwrap(), RunId(1), 0)
        .with_cursor(Checkpoint::from_bytes(vec![b'x'; 10_000]))
        .with_last(true);
    // Permanent: sending it again can never work, and it must not cost the connection.
    let error = peer.request(Request::Deliver(batch)).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Permanent, "{error}");
    still_flowing(&peer).await;
}

/// See the table in the module docs.
pub async fn garbage_is_refused_and_the_server_stays_up<W: Wire>(wire: &W) {
    let settings = Settings::default();
    let (mut listener, addr) = listen(wire, &settings).await;
    let (good, _accepted) = join(wire, &mut listener, addr, &settings, "good")
        .await
        .unwrap();
    for garbage in wire.garbage() {
        let mut socket = TcpStream::connect(addr).await.unwrap();
        let _ = socket.write_all(&garbage.bytes).await;
        let answer = read_until_closed(&mut socket).await;
        assert!(
            (garbage.refused)(&answer),
            "{}: {:?}",
            garbage.what,
            String::from_utf8_lossy(&answer)
        );
        still_flowing(&good).await;
    }
}

/// See the table in the module docs.
pub async fn a_client_that_says_nothing_is_closed_at_its_timeout<W: Wire>(wire: &W) {
    let settings = Settings::default();
    let (mut listener, addr) = listen(wire, &settings).await;
    let (good, _accepted) = join(wire, &mut listener, addr, &settings, "good")
        .await
        .unwrap();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    read_until_closed(&mut silent).await;
    still_flowing(&good).await;
}

/// Every bad-input case above as a `#[tokio::test]` over the [`Wire`] `$wire` builds: the one
/// list a transport's test file names, so a new case runs on every transport at once.
///
/// ```ignore
/// weld_pipeline::transport_bad_input!(TcpWire);
/// ```
#[macro_export]
macro_rules! transport_bad_input {
    ($wire:expr) => {
        $crate::transport_bad_input!(@each $wire;
            a_wrong_secret_is_refused_permanently_and_the_server_stays_up,
            a_missing_secret_is_refused_permanently,
            an_unknown_protocol_version_is_refused_permanently,
            a_message_over_the_limit_is_refused_before_it_is_sent,
            garbage_is_refused_and_the_server_stays_up,
            a_client_that_says_nothing_is_closed_at_its_timeout,
        );
    };
    (@each $wire:expr; $($case:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $case() {
            $crate::testing::bad_input::$case(&$wire).await;
        }
    )*};
}
