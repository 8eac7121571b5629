//! The transport: a controller's listener and a worker's dialer.

use std::net::SocketAddr;
use std::sync::Arc;
use weld_pipeline::sync::Locked;

use async_trait::async_trait;
use bytes::Bytes;
use futures::SinkExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio_util::sync::{CancellationToken, DropGuard};
use weld_pipeline::telemetry::Tally;
use weld_pipeline::transport::kit::{Accepted, Accepts, ListenAddr};
use weld_pipeline::transport::{Handler, Listener, Transport};
use weld_pipeline::{Error, Hello};

use crate::config::TcpConfig;
use crate::connection::{self, TcpPeer};
use crate::error::TcpError;
use crate::handshake::{self, refusal, Wire};

/// Sockets in their handshake at once on one controller. A handshake takes a round trip or two:
/// 128 is plenty for workers reconnecting together, and bounds what unauthenticated clients can
/// hold (at most 4 KiB of frame each). When all are taken, the oldest is closed to make room
/// (see [`Handshakes`]).
const MAX_HANDSHAKES: usize = 128;

/// The handshakes in progress, oldest first. A new socket always gets a place: when all
/// [`MAX_HANDSHAKES`] are taken, the oldest is closed. Silent sockets, which never finish, are
/// always the oldest, so a flood of them cycles through the places, while a real worker, whose
/// handshake takes a round trip, finishes long before 128 newer sockets push it out. Dropping
/// the newest instead (what a plain semaphore does) let such a flood keep every worker out.
#[derive(Default)]
struct Handshakes {
    places: std::sync::Mutex<std::collections::VecDeque<(u64, CancellationToken)>>,
    next: std::sync::atomic::AtomicU64,
    evicted: std::sync::atomic::AtomicU64,
}

impl Handshakes {
    /// A place for a new handshake: its id and the token that closes it early.
    fn enter(&self) -> (u64, CancellationToken) {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let token = CancellationToken::new();
        let mut places = self.places.locked();
        if places.len() >= MAX_HANDSHAKES {
            if let Some((_, oldest)) = places.pop_front() {
                oldest.cancel();
                self.evicted
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        places.push_back((id, token.clone()));
        (id, token)
    }

    /// Gives a place back.
    fn leave(&self, id: u64) {
        let mut places = self.places.locked();
        places.retain(|(place, _)| *place != id);
    }
}

/// The TCP transport: [`Transport::listen`] binds its address, [`Transport::connect`] dials it.
#[derive(Clone, Debug)]
pub struct TcpTransport {
    /// Where the controller listens (the same port again after a restart) and workers dial.
    addr: ListenAddr,
    config: Arc<TcpConfig>,
}

impl TcpTransport {
    /// A transport for `addr` (`host:port`) with the default limits and no secret.
    pub fn new(addr: impl Into<String>) -> Self {
        Self::with_config(addr, TcpConfig::default())
    }

    /// A transport for `addr` with `config`.
    pub fn with_config(addr: impl Into<String>, config: TcpConfig) -> Self {
        TcpTransport {
            addr: ListenAddr::new(addr),
            config: Arc::new(config),
        }
    }

    /// The address this transport listens on, once it has.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.addr.local_addr()
    }

    /// The codec of a new connection: until the welcome, frames are limited to the handshake's
    /// small size; the welcome raises the limit to `max_frame_bytes`.
    fn codec(&self) -> LengthDelimitedCodec {
        LengthDelimitedCodec::builder()
            .length_field_type::<u32>()
            .max_frame_length(handshake::HANDSHAKE_MAX_FRAME)
            .new_codec()
    }
}

/// A controller's listening socket: [`Listener::accept`] yields workers that completed their
/// handshake. Dropping it stops listening; established connections go on.
#[derive(Debug)]
pub struct TcpAcceptor {
    local: SocketAddr,
    arrivals: mpsc::Receiver<TcpPeer>,
    _stop: DropGuard,
}

impl TcpAcceptor {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

#[async_trait]
impl Listener for TcpAcceptor {
    type Peer = TcpPeer;

    async fn accept(&mut self) -> Result<TcpPeer, Error> {
        self.arrivals.recv().await.ok_or(Error::Closed)
    }
}

#[async_trait]
impl Transport for TcpTransport {
    type Peer = TcpPeer;
    type Listener = TcpAcceptor;

    /// [`TcpConfig::max_frame_bytes`].
    fn max_message_bytes(&self) -> usize {
        self.config.max_frame_bytes
    }

    async fn listen(&self, handler: Arc<dyn Handler>) -> Result<TcpAcceptor, Error> {
        let (listener, local) = self.addr.bind().await?;
        let stop = CancellationToken::new();
        let (arrive, arrivals) = mpsc::channel(64);
        tokio::spawn(accept_loop(
            listener,
            self.clone(),
            handler,
            arrive,
            stop.clone(),
        ));
        tracing::info!(%local, "listening for workers");
        Ok(TcpAcceptor {
            local,
            arrivals,
            _stop: stop.drop_guard(),
        })
    }

    async fn connect(&self, hello: Hello, handler: Arc<dyn Handler>) -> Result<TcpPeer, Error> {
        let config = &self.config;
        let socket = tokio::time::timeout(
            config.connect_timeout,
            TcpStream::connect(self.addr.configured()),
        )
        .await
        .map_err(|_| Error::Timeout {
            operation: "connect",
            after: config.connect_timeout,
        })?
        .map_err(TcpError::Io)?;
        socket.set_nodelay(true).map_err(TcpError::Io)?;
        let remote = socket.peer_addr().map_err(TcpError::Io)?;
        let mut wire = Framed::new(socket, self.codec());
        tokio::time::timeout(
            config.handshake_timeout,
            handshake::connect(&mut wire, &hello, config),
        )
        .await
        .map_err(|_| TcpError::HandshakeTimeout(config.handshake_timeout))??;
        Ok(connection::spawn(
            wire,
            hello,
            remote,
            handler,
            config.clone(),
            None,
        ))
    }
}

async fn accept_loop(
    listener: TcpListener,
    transport: TcpTransport,
    handler: Arc<dyn Handler>,
    arrive: mpsc::Sender<TcpPeer>,
    stop: CancellationToken,
) {
    let admission = Admission {
        slots: Arc::new(Semaphore::new(transport.config.max_connections)),
        transport,
        handler,
        arrive,
        failures: Arc::new(Tally::default()),
    };
    let handshakes = Arc::new(Handshakes::default());
    let mut accepts = Accepts::new(listener);
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = accepts.next() => accepted,
        };
        let (socket, remote) = match accepted {
            Accepted::Socket(socket, remote) => (socket, remote),
            Accepted::Summary => {
                summarise(&handshakes, &admission.failures);
                continue;
            }
        };
        // Unauthenticated sockets get their own, small allowance: they cannot take the slots of
        // workers that completed the handshake.
        let (place, evicted) = handshakes.enter();
        let handshakes = handshakes.clone();
        let admission = admission.clone();
        tokio::spawn(async move {
            admission.admit(socket, remote, evicted).await;
            handshakes.leave(place);
        });
    }
}

/// Logs what was counted in the last summary period: handshakes closed to make room, and
/// handshakes that failed past the first.
fn summarise(handshakes: &Handshakes, failures: &Tally) {
    let evicted = handshakes
        .evicted
        .swap(0, std::sync::atomic::Ordering::Relaxed);
    if evicted > 0 {
        tracing::warn!(
            evicted,
            "handshakes closed to make room for newer ones in the last 30 s (silent or slow clients)"
        );
    }
    let failed = failures.take();
    if failed > 0 {
        tracing::warn!(
            failed,
            "more handshakes failed in the last 30 s; the first was logged"
        );
    }
}

/// What it takes to admit a worker: the transport's settings, the handler its connection
/// serves, where accepted peers go, and the connection slots.
#[derive(Clone)]
struct Admission {
    transport: TcpTransport,
    handler: Arc<dyn Handler>,
    arrive: mpsc::Sender<TcpPeer>,
    slots: Arc<Semaphore>,
    /// Failed handshakes: the first of every 30 s is logged, the others counted.
    failures: Arc<Tally>,
}

impl Admission {
    /// Takes one accepted socket through its handshake (holding a handshake permit meanwhile)
    /// and a connection slot, then hands the peer to the listener; or refuses it, lingering so
    /// the refusal arrives.
    async fn admit(self, socket: TcpStream, remote: SocketAddr, evicted: CancellationToken) {
        let Admission {
            transport,
            handler,
            arrive,
            slots,
            failures,
        } = self;
        let _ = socket.set_nodelay(true);
        let config = transport.config.clone();
        let mut wire: Wire = Framed::new(socket, transport.codec());
        let shaken = tokio::select! {
            shaken = tokio::time::timeout(
                config.handshake_timeout,
                handshake::accept(&mut wire, &config),
            ) => shaken.unwrap_or(Err(TcpError::HandshakeTimeout(config.handshake_timeout))),
            // Pushed out by newer handshakes: closed without a word, as a silent client expects.
            () = evicted.cancelled() => return,
        };
        let shaken = shaken.and_then(|hello| match slots.try_acquire_owned() {
            Ok(slot) => Ok((hello, slot)),
            Err(_) => Err(TcpError::Refused(format!(
                "too many connections (the limit is {})",
                config.max_connections
            ))),
        });
        let welcomed = match shaken {
            Ok((hello, slot)) => handshake::welcome(&mut wire, &config)
                .await
                .map(|()| (hello, slot)),
            Err(error) => Err(error),
        };
        match welcomed {
            Ok((hello, slot)) => {
                tracing::info!(%remote, worker_id = %hello.worker_id, "worker authenticated");
                let peer = connection::spawn(wire, hello, remote, handler, config, Some(slot));
                let _ = arrive.send(peer).await;
            }
            Err(error) => {
                if failures.record() {
                    tracing::warn!(%remote, error = %error, "handshake failed; connection closed (more in the next 30 s are counted, not logged)");
                }
                let _ = tokio::time::timeout(
                    std::time::Duration::from_secs(1),
                    refuse_and_linger(wire, &error),
                )
                .await;
            }
        }
    }
}

/// Sends the refusal and closes with a lingering read: closing a socket with unread input makes
/// the kernel send a reset, which can destroy the refusal on its way. What the client still
/// sends (64 KiB at most) is read and dropped first.
async fn refuse_and_linger(mut wire: Wire, error: &TcpError) -> std::io::Result<()> {
    wire.send(refusal(error)).await?;
    SinkExt::<Bytes>::close(&mut wire).await?;
    let mut socket = wire.into_inner();
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        if tokio::io::AsyncReadExt::read(&mut socket, &mut sink).await? == 0 {
            break;
        }
    }
    Ok(())
}
