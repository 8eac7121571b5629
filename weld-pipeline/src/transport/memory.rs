//! A transport inside one process, over channels.

use crate::sync::Locked;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use futures::FutureExt;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{check_hello, Handler, Listener, Peer, Transport};
use crate::error::Error;
use crate::message::{Event, Hello, Request, Response};

/// A [`Transport`] over in-process channels: the same request, response and event flow as a
/// network transport, with nothing encoded. Clones share the same listening point; one listener
/// at a time.
///
/// A connection closes when either side calls [`Peer::close`], or drops its last [`MemoryPeer`]
/// clone. A handler that keeps a clone of its own side's peer therefore keeps the connection
/// open until it calls `close`.
#[derive(Clone, Debug, Default)]
pub struct MemoryTransport {
    listener: Arc<Mutex<Option<mpsc::UnboundedSender<Arriving>>>>,
}

/// A connection on its way to the listener: the controller's side and its inbox.
type Arriving = (MemoryPeer, mpsc::UnboundedReceiver<Envelope>);

impl MemoryTransport {
    /// A transport with nobody listening yet.
    pub fn new() -> Self {
        Self::default()
    }
}

enum Envelope {
    Request(Request, oneshot::Sender<Response>),
    Event(Event),
}

/// One side of an in-memory connection.
#[derive(Clone)]
pub struct MemoryPeer {
    inner: Arc<PeerInner>,
}

struct PeerInner {
    hello: Hello,
    to_remote: mpsc::UnboundedSender<Envelope>,
    closed: CancellationToken,
}

impl Drop for PeerInner {
    fn drop(&mut self) {
        // The last handle to this side is gone: the connection is over for both sides.
        self.closed.cancel();
    }
}

impl std::fmt::Debug for MemoryPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryPeer")
            .field("worker_id", &self.inner.hello.worker_id)
            .field("closed", &self.inner.closed.is_cancelled())
            .finish()
    }
}

#[async_trait]
impl Peer for MemoryPeer {
    fn hello(&self) -> &Hello {
        &self.inner.hello
    }

    async fn request(&self, request: Request) -> Result<Response, Error> {
        let (reply, response) = oneshot::channel();
        if self.inner.closed.is_cancelled() {
            return Err(Error::Closed);
        }
        self.inner
            .to_remote
            .send(Envelope::Request(request, reply))
            .map_err(|_| Error::Closed)?;
        tokio::select! {
            response = response => response.map_err(|_| Error::Closed),
            () = self.inner.closed.cancelled() => Err(Error::Closed),
        }
    }

    async fn notify(&self, event: Event) -> Result<(), Error> {
        if self.inner.closed.is_cancelled() {
            return Err(Error::Closed);
        }
        self.inner
            .to_remote
            .send(Envelope::Event(event))
            .map_err(|_| Error::Closed)
    }

    async fn closed(&self) {
        self.inner.closed.cancelled().await;
    }

    fn close(&self) {
        self.inner.closed.cancel();
    }
}

/// Serves one side's inbox until the connection closes: each request is answered on its own
/// task, so many are in flight at once and answers return in any order; events go, in order, to
/// one task of their own, so a slow event handler never holds up requests.
fn serve(
    mut inbox: mpsc::UnboundedReceiver<Envelope>,
    hello: Hello,
    handler: Arc<dyn Handler>,
    closed: CancellationToken,
) {
    let hello = Arc::new(hello);
    let (events, mut ordered) = mpsc::unbounded_channel::<Event>();
    {
        let (handler, hello, closed) = (handler.clone(), hello.clone(), closed.clone());
        tokio::spawn(async move {
            let _closed = closed.drop_guard();
            while let Some(event) = ordered.recv().await {
                handler.event(&hello, event).await;
            }
        });
    }
    tokio::spawn(async move {
        // However this task ends (a closed channel, a panic), the connection is then closed.
        let _closed = closed.clone().drop_guard();
        loop {
            let envelope = tokio::select! {
                envelope = inbox.recv() => envelope,
                () = closed.cancelled() => None,
            };
            match envelope {
                None => break,
                Some(Envelope::Request(request, reply)) => {
                    let (handler, hello) = (handler.clone(), hello.clone());
                    tokio::spawn(async move {
                        let answer = AssertUnwindSafe(handler.request(&hello, request))
                            .catch_unwind()
                            .await
                            .unwrap_or_else(|_| {
                                tracing::error!(worker_id = %hello.worker_id, "bug: a request handler panicked");
                                Response::refused(&Error::Bug("the request handler panicked".into()))
                            });
                        // The requester may have given up; its loss.
                        let _ = reply.send(answer);
                    });
                }
                Some(Envelope::Event(event)) => {
                    if events.send(event).is_err() {
                        break;
                    }
                }
            }
        }
    });
}

/// The accepting side of a [`MemoryTransport`].
#[derive(Debug)]
pub struct MemoryListener {
    arrivals: mpsc::UnboundedReceiver<MemoryPeer>,
}

#[async_trait]
impl Listener for MemoryListener {
    type Peer = MemoryPeer;

    async fn accept(&mut self) -> Result<MemoryPeer, Error> {
        self.arrivals.recv().await.ok_or(Error::Closed)
    }
}

#[async_trait]
impl Transport for MemoryTransport {
    type Peer = MemoryPeer;
    type Listener = MemoryListener;

    async fn listen(&self, handler: Arc<dyn Handler>) -> Result<MemoryListener, Error> {
        let (arrive, arrivals) = mpsc::unbounded_channel();
        let (accepted, mut to_accept) = mpsc::unbounded_channel::<Arriving>();
        // Each arriving connection's controller-side inbox is served with the handler before the
        // peer is handed to `accept`, so nothing the worker sends first is missed.
        tokio::spawn(async move {
            while let Some((peer, inbox)) = to_accept.recv().await {
                serve(
                    inbox,
                    peer.inner.hello.clone(),
                    handler.clone(),
                    peer.inner.closed.clone(),
                );
                if arrive.send(peer).is_err() {
                    break;
                }
            }
        });
        *self.listener.locked() = Some(accepted);
        Ok(MemoryListener { arrivals })
    }

    async fn connect(&self, hello: Hello, handler: Arc<dyn Handler>) -> Result<MemoryPeer, Error> {
        let listener = self
            .listener
            .locked()
            .clone()
            .ok_or_else(|| Error::Unavailable("nobody is listening".into()))?;
        check_hello(&hello)?;
        let closed = CancellationToken::new();
        let (to_controller, controller_inbox) = mpsc::unbounded_channel();
        let (to_worker, worker_inbox) = mpsc::unbounded_channel();
        let controller_side = MemoryPeer {
            inner: Arc::new(PeerInner {
                hello: hello.clone(),
                to_remote: to_worker,
                closed: closed.clone(),
            }),
        };
        serve(worker_inbox, hello.clone(), handler, closed.clone());
        listener
            .send((controller_side, controller_inbox))
            .map_err(|_| Error::Unavailable("the listener is gone".into()))?;
        Ok(MemoryPeer {
            inner: Arc::new(PeerInner {
                hello,
                to_remote: to_controller,
                closed,
            }),
        })
    }
}
