//! One established connection: a writer task, a reader task, heartbeats, and the peer handle.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, SinkExt, StreamExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use weld_pipeline::encoding::decode_message;
use weld_pipeline::transport::kit::{self, Pending};
use weld_pipeline::transport::{Handler, Peer};
use weld_pipeline::{Error, Event, Hello, Message, Request, Response};

use crate::config::TcpConfig;
use crate::error::TcpError;
use crate::frame::{self, Frame, FrameType};
use crate::handshake::{refusal, Wire};

/// Frames queued for the writer before senders wait: enough for a burst of pipelined requests
/// and their responses, small enough to bound memory by `max_frame_bytes` times this.
const OUTGOING_QUEUE: usize = 256;

struct Shared {
    hello: Hello,
    remote: SocketAddr,
    outgoing: mpsc::Sender<Bytes>,
    pending: Pending,
    closed: CancellationToken,
    /// The largest frame the other side takes: a larger message is refused before it is sent.
    max_frame: usize,
}

/// One side of a TCP connection. Clones share it; it closes when the last clone is dropped, when
/// either side closes it, or when its heartbeat stops.
#[derive(Clone)]
pub struct TcpPeer {
    shared: Arc<Shared>,
    _owner: Arc<CloseOnDrop>,
}

struct CloseOnDrop(CancellationToken);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl std::fmt::Debug for TcpPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpPeer")
            .field("worker_id", &self.shared.hello.worker_id)
            .field("remote", &self.shared.remote)
            .field("closed", &self.shared.closed.is_cancelled())
            .finish()
    }
}

#[async_trait]
impl Peer for TcpPeer {
    fn hello(&self) -> &Hello {
        &self.shared.hello
    }

    async fn request(&self, request: Request) -> Result<Response, Error> {
        let shared = &self.shared;
        if shared.closed.is_cancelled() {
            return Err(Error::Closed);
        }
        let waiting = shared.pending.register();
        let frame = frame::message(FrameType::Request, waiting.id(), &Message::Request(request));
        kit::check_size(frame.len(), shared.max_frame)?;
        tokio::select! {
            sent = shared.outgoing.send(frame) => sent.map_err(|_| Error::Closed)?,
            () = shared.closed.cancelled() => return Err(Error::Closed),
        }
        waiting.wait(&shared.closed).await
    }

    async fn notify(&self, event: Event) -> Result<(), Error> {
        let frame = frame::message(FrameType::Event, 0, &Message::Event(event));
        kit::check_size(frame.len(), self.shared.max_frame)?;
        tokio::select! {
            sent = self.shared.outgoing.send(frame) => sent.map_err(|_| Error::Closed),
            () = self.shared.closed.cancelled() => Err(Error::Closed),
        }
    }

    async fn closed(&self) {
        self.shared.closed.cancelled().await;
    }

    fn close(&self) {
        self.shared.closed.cancel();
    }
}

/// Starts the tasks of an established connection and returns its peer handle. `permit` (a
/// controller's connection slot) is held until the connection closes.
pub(crate) fn spawn(
    wire: Wire,
    hello: Hello,
    remote: SocketAddr,
    handler: Arc<dyn Handler>,
    config: Arc<TcpConfig>,
    permit: Option<OwnedSemaphorePermit>,
) -> TcpPeer {
    let (outgoing, queue) = mpsc::channel(OUTGOING_QUEUE);
    let closed = CancellationToken::new();
    let shared = Arc::new(Shared {
        hello,
        remote,
        outgoing,
        pending: Pending::default(),
        closed: closed.clone(),
        max_frame: config.max_frame_bytes,
    });
    let (sink, stream) = wire.split();
    tokio::spawn(write(sink, queue, closed.clone(), config.heartbeat_timeout));
    tokio::spawn(read(
        stream,
        shared.clone(),
        handler,
        config.clone(),
        permit,
    ));
    tokio::spawn(heartbeat(shared.clone(), config));
    TcpPeer {
        shared,
        _owner: Arc::new(CloseOnDrop(closed)),
    }
}

/// Writes queued frames, flushing once per burst, until the connection closes; then writes what
/// is still queued (a refusal, last responses) and shuts the socket down. A peer that stops
/// reading cannot hold it: a write that makes no progress for the heartbeat timeout closes the
/// connection, and so does `close`.
async fn write(
    mut sink: futures::stream::SplitSink<Wire, Bytes>,
    mut queue: mpsc::Receiver<Bytes>,
    closed: CancellationToken,
    stall: std::time::Duration,
) {
    let result: Result<(), std::io::Error> = async {
        let stalled =
            || std::io::Error::new(std::io::ErrorKind::TimedOut, "the peer stopped reading");
        loop {
            let frame = tokio::select! {
                frame = queue.recv() => frame,
                () = closed.cancelled() => None,
            };
            let Some(frame) = frame else { break };
            let burst = async {
                sink.feed(frame).await?;
                while let Ok(frame) = queue.try_recv() {
                    sink.feed(frame).await?;
                }
                sink.flush().await
            };
            tokio::select! {
                written = tokio::time::timeout(stall, burst) => written.map_err(|_| stalled())??,
                () = closed.cancelled() => break,
            }
        }
        queue.close();
        // The last words get a second.
        let drain = async {
            while let Ok(frame) = queue.try_recv() {
                sink.feed(frame).await?;
            }
            sink.close().await
        };
        tokio::time::timeout(std::time::Duration::from_secs(1), drain)
            .await
            .unwrap_or(Ok(()))
    }
    .await;
    if let Err(error) = result {
        tracing::debug!(error = %error, "connection write ended");
    }
    closed.cancel();
}

/// Reads frames until the connection closes, the peer goes quiet past the heartbeat timeout, or
/// it breaks the protocol (which is answered with a refusal, then the connection is closed).
async fn read(
    mut stream: futures::stream::SplitStream<Wire>,
    shared: Arc<Shared>,
    handler: Arc<dyn Handler>,
    config: Arc<TcpConfig>,
    _permit: Option<OwnedSemaphorePermit>,
) {
    let events = kit::event_pump(
        handler.clone(),
        shared.hello.clone(),
        shared.closed.clone(),
        OUTGOING_QUEUE,
    );
    let mut backlog = Backlog::new(config.max_in_flight);
    let mut progress = tokio::time::Instant::now();
    let ended = loop {
        tokio::select! {
            () = shared.closed.cancelled() => break None,
            () = tokio::time::sleep_until(progress + config.heartbeat_timeout) => {
                break Some(TcpError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("nothing moved for {:?}: the peer is presumed dead", config.heartbeat_timeout),
                )));
            }
            Some((correlation, response)) = backlog.answering.next(), if !backlog.answering.is_empty() => {
                backlog.answers.push_back(frame::message(FrameType::Response, correlation, &Message::Response(response)));
            }
            room = shared.outgoing.reserve(), if !backlog.answers.is_empty() => {
                let Ok(room) = room else { break None };
                room.send(backlog.answers.pop_front().expect("not empty"));
                progress = tokio::time::Instant::now();
            }
            room = events.reserve(), if !backlog.events.is_empty() => {
                let Ok(room) = room else { break None };
                room.send(backlog.events.pop_front().expect("not empty"));
                progress = tokio::time::Instant::now();
            }
            next = stream.next(), if !backlog.is_full() => {
                let payload = match next {
                    None => break None,
                    Some(Err(error)) if error.kind() == std::io::ErrorKind::InvalidData => {
                        break Some(TcpError::Protocol(format!("bad frame: {error}")))
                    }
                    Some(Err(error)) => break Some(TcpError::Io(error)),
                    Some(Ok(payload)) => payload,
                };
                progress = tokio::time::Instant::now();
                if let Err(error) = backlog.take(payload.freeze(), &shared, &handler) {
                    break Some(error);
                }
            }
        }
    };
    if let Some(error) = ended {
        // Bad input is the peer's problem, not this service's: a warning, not an error.
        tracing::warn!(remote = %shared.remote, worker_id = %shared.hello.worker_id, error = %error, "closing connection");
        if matches!(error, TcpError::Protocol(_) | TcpError::Version(_)) {
            let _ = shared.outgoing.try_send(refusal(&error));
        }
    }
    shared.closed.cancel();
    shared.pending.close_all();
}

/// What the reader holds between frames: the requests being answered, and the answers and
/// events waiting for room.
///
/// Requests are answered by futures driven by the reader itself: no task per request, no
/// wake-up across threads to hand an answer back. The reader never waits on a send in a branch:
/// a finished answer or an event is queued here and handed over when the writer (or the event
/// pump) has room, so a peer that stops reading cannot freeze this reader, and two peers cannot
/// deadlock on each other's full sockets. A peer that sends faster than it reads is read until
/// these queues hold `max_in_flight` frames, then it is not read until they drain, and closed if
/// nothing moves for the heartbeat timeout.
struct Backlog {
    answering: FuturesUnordered<BoxFuture<'static, (u64, Response)>>,
    answers: VecDeque<Bytes>,
    events: VecDeque<Event>,
    limit: usize,
}

impl Backlog {
    fn new(max_in_flight: usize) -> Self {
        Backlog {
            answering: FuturesUnordered::new(),
            answers: VecDeque::new(),
            events: VecDeque::new(),
            limit: max_in_flight.max(1),
        }
    }

    /// Whether the reader must stop reading until answers or events drain.
    fn is_full(&self) -> bool {
        self.answers.len() + self.events.len() >= self.limit
    }

    /// Takes one frame off the wire. A request past the in-flight limit is refused as transient
    /// and the connection goes on; a frame that breaks the protocol ends it.
    fn take(
        &mut self,
        payload: Bytes,
        shared: &Arc<Shared>,
        handler: &Arc<dyn Handler>,
    ) -> Result<(), TcpError> {
        let frame = Frame::parse(payload)?;
        let correlation = frame.correlation;
        match dispatch(frame, shared, handler)? {
            Received::Request(answer) if self.answering.len() < self.limit => {
                self.answering.push(answer);
            }
            Received::Request(_) => self.answers.push_back(frame::message(
                FrameType::Response,
                correlation,
                &Message::Response(Response::refused(&Error::Unavailable(format!(
                    "more than {} requests in flight on this connection",
                    self.limit
                )))),
            )),
            Received::Event(event) => self.events.push_back(event),
            Received::Nothing => {}
        }
        Ok(())
    }
}

/// What a frame asks of the reader.
enum Received {
    /// A request: the future that answers it.
    Request(BoxFuture<'static, (u64, Response)>),
    /// An event for the handler, in order.
    Event(Event),
    /// Nothing more (a response routed to its requester, a ping).
    Nothing,
}

/// Handles one frame without waiting on anything.
fn dispatch(
    frame: Frame,
    shared: &Arc<Shared>,
    handler: &Arc<dyn Handler>,
) -> Result<Received, TcpError> {
    let kind = frame.kind;
    let message = |body: Bytes| {
        decode_message(body)
            .map_err(|e| TcpError::Protocol(format!("a {kind:?} frame does not decode: {e}")))
    };
    match kind {
        FrameType::Request => {
            let Message::Request(request) = message(frame.body)? else {
                return Err(TcpError::Protocol(
                    "a request frame holds another message".into(),
                ));
            };
            let (handler, shared) = (handler.clone(), shared.clone());
            let correlation = frame.correlation;
            Ok(Received::Request(
                async move {
                    let response = kit::answer(&*handler, &shared.hello, request).await;
                    (correlation, response)
                }
                .boxed(),
            ))
        }
        FrameType::Response => {
            let Message::Response(response) = message(frame.body)? else {
                return Err(TcpError::Protocol(
                    "a response frame holds another message".into(),
                ));
            };
            if !shared.pending.resolve(frame.correlation, response) {
                // The requester gave up (timed out); its answer is dropped.
                tracing::debug!(
                    correlation = frame.correlation,
                    "response to no pending request"
                );
            }
            Ok(Received::Nothing)
        }
        FrameType::Event => match message(frame.body)? {
            Message::Event(event) => Ok(Received::Event(event)),
            _ => Err(TcpError::Protocol(
                "an event frame holds another message".into(),
            )),
        },
        // Each side pings on its own schedule, which is what keeps the other's reader alive: a
        // ping needs no answer, and the reader never writes to answer one.
        FrameType::Ping | FrameType::Pong => Ok(Received::Nothing),
        FrameType::Refused => Err(crate::handshake::refused(&frame.body)),
        other => Err(TcpError::Protocol(format!("{other:?} after the handshake"))),
    }
}

/// Sends a ping every interval, so that the other side's reader sees a frame even when no data
/// flows.
async fn heartbeat(shared: Arc<Shared>, config: Arc<TcpConfig>) {
    let mut tick = tokio::time::interval(config.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shared.closed.cancelled() => return,
            _ = tick.tick() => {
                // A full queue means frames are flowing anyway.
                let _ = shared.outgoing.try_send(frame::raw(FrameType::Ping, 0, &[]));
            }
        }
    }
}
