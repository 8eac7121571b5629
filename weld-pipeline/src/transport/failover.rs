//! Dialing several controllers: a worker given the address of every data-streams replica dials
//! the one that answered last, and another when that one goes away.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use super::{Handler, Transport};
use crate::error::{Error, ErrorKind};
use crate::message::Hello;

/// A [`Transport`] over several of one kind, one per controller (`WELD_CONTROLLER_ADDR=a,b`):
/// [`connect`](Transport::connect) tries the one that connected last first, then each other in
/// turn, and fails only when none answers. A worker's reconnect loop therefore finds another
/// replica when its own dies, and resends its outbox there.
///
/// [`listen`](Transport::listen) listens on the first: a controller has one address.
///
/// ```
/// use weld_pipeline::transport::{Failover, MemoryTransport};
///
/// let replicas = Failover::new(vec![MemoryTransport::new(), MemoryTransport::new()])?;
/// assert_eq!(replicas.len(), 2);
/// # Ok::<_, weld_pipeline::Error>(())
/// ```
#[derive(Debug)]
pub struct Failover<T> {
    transports: Vec<T>,
    /// The one that connected last.
    current: Arc<AtomicUsize>,
}

impl<T> Failover<T> {
    /// Dials `transports` in turn.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for none.
    pub fn new(transports: Vec<T>) -> Result<Self, Error> {
        if transports.is_empty() {
            return Err(Error::Invalid("no controller to dial".into()));
        }
        Ok(Failover {
            transports,
            current: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// How many controllers it dials.
    pub fn len(&self) -> usize {
        self.transports.len()
    }

    /// Never: it dials at least one.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl<T: Clone> Clone for Failover<T> {
    fn clone(&self) -> Self {
        Failover {
            transports: self.transports.clone(),
            current: self.current.clone(),
        }
    }
}

#[async_trait]
impl<T: Transport> Transport for Failover<T> {
    type Peer = T::Peer;
    type Listener = T::Listener;

    async fn listen(&self, handler: Arc<dyn Handler>) -> Result<T::Listener, Error> {
        self.transports[0].listen(handler).await
    }

    /// The smallest of its transports' limits: a batch cut to it fits whichever one answers.
    fn max_message_bytes(&self) -> usize {
        self.transports
            .iter()
            .map(Transport::max_message_bytes)
            .min()
            .unwrap_or(usize::MAX)
    }

    /// # Errors
    ///
    /// When no controller answers: a permanent error (a refused hello) if one did, otherwise
    /// the last one's.
    async fn connect(&self, hello: Hello, handler: Arc<dyn Handler>) -> Result<T::Peer, Error> {
        let count = self.transports.len();
        let first = self.current.load(Ordering::Relaxed) % count;
        let mut refused = None;
        let mut last = None;
        for turn in 0..count {
            let at = (first + turn) % count;
            match self.transports[at]
                .connect(hello.clone(), handler.clone())
                .await
            {
                Ok(peer) => {
                    if at != first {
                        tracing::info!(
                            controller = at,
                            "connected to another controller than the last"
                        );
                    }
                    self.current.store(at, Ordering::Relaxed);
                    return Ok(peer);
                }
                Err(error) => {
                    tracing::debug!(controller = at, %error, "controller did not answer");
                    if error.kind() == ErrorKind::Permanent {
                        refused.get_or_insert(error);
                    } else {
                        last = Some(error);
                    }
                }
            }
        }
        Err(refused
            .or(last)
            .unwrap_or_else(|| Error::Unavailable("no controller answered".into())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Event, Request, Response};
    use crate::transport::{Listener, MemoryTransport, Peer};

    struct Nobody;

    #[async_trait]
    impl Handler for Nobody {
        async fn request(&self, _: &Hello, _: Request) -> Response {
            Response::refused(&Error::Invalid("no requests here".into()))
        }

        async fn event(&self, _: &Hello, _: Event) {}
    }

    /// A controller that can go away: its transport refuses connections while it is down.
    #[derive(Clone)]
    struct Replica {
        transport: MemoryTransport,
        up: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Replica {
        fn new() -> Self {
            Replica {
                transport: MemoryTransport::new(),
                up: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            }
        }
    }

    #[async_trait]
    impl Transport for Replica {
        type Peer = <MemoryTransport as Transport>::Peer;
        type Listener = <MemoryTransport as Transport>::Listener;

        async fn listen(&self, handler: Arc<dyn Handler>) -> Result<Self::Listener, Error> {
            self.transport.listen(handler).await
        }

        async fn connect(
            &self,
            hello: Hello,
            handler: Arc<dyn Handler>,
        ) -> Result<Self::Peer, Error> {
            if !self.up.load(Ordering::Relaxed) {
                return Err(Error::Unavailable("connection refused".into()));
            }
            self.transport.connect(hello, handler).await
        }
    }

    /// The worker id of the next worker `listener` accepts, within a second.
    async fn arrival<L: Listener>(listener: &mut L) -> String {
        let peer = tokio::time::timeout(std::time::Duration::from_secs(1), listener.accept())
            .await
            .expect("a worker arrives within a second")
            .unwrap();
        peer.hello().worker_id.clone()
    }

    #[tokio::test]
    async fn it_dials_the_controller_that_answers_and_stays_with_it_until_it_goes() {
        let (a, b) = (Replica::new(), Replica::new());
        let failover = Failover::new(vec![a.clone(), b.clone()]).unwrap();
        let hello = Hello::new("w1", vec!["generator".into()]);
        let mut on_a = a.listen(Arc::new(Nobody)).await.unwrap();
        let mut on_b = b.listen(Arc::new(Nobody)).await.unwrap();
        // a is down: the worker reaches b.
        a.up.store(false, Ordering::Relaxed);
        let _peer = failover
            .connect(hello.clone(), Arc::new(Nobody))
            .await
            .unwrap();
        assert_eq!(arrival(&mut on_b).await, "w1");
        // a is back: the next connection still goes to b, the one that answered last.
        a.up.store(true, Ordering::Relaxed);
        let _peer = failover
            .connect(hello.clone(), Arc::new(Nobody))
            .await
            .unwrap();
        assert_eq!(arrival(&mut on_b).await, "w1");
        // b goes away: a takes the worker.
        b.up.store(false, Ordering::Relaxed);
        let _peer = failover.connect(hello, Arc::new(Nobody)).await.unwrap();
        assert_eq!(arrival(&mut on_a).await, "w1");
    }

    #[tokio::test]
    async fn it_fails_only_when_none_answers() {
        let failover = Failover::new(vec![MemoryTransport::new(), MemoryTransport::new()]).unwrap();
        let error = failover
            .connect(Hello::new("w1", vec![]), Arc::new(Nobody))
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Transient, "{error}");
        assert!(Failover::<MemoryTransport>::new(vec![]).is_err());
    }
}
