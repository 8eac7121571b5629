//! The worker's connect loop: it dials its controller, delivers on the connection until it
//! closes, and dials again with backoff; at shutdown it stops its streams and flushes its outbox.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::starts::WorkerHandler;
use super::Worker;
use crate::error::{Error, ErrorKind};
use crate::message::Hello;
use crate::middleware::Backoff;
use crate::transport::{Handler, Peer, Transport};

impl<T: Transport> Worker<T> {
    /// Connects and delivers until `shutdown`; then stops every stream at its page boundary
    /// and flushes the outbox, which keeps what was not acknowledged.
    ///
    /// # Errors
    ///
    /// When the outbox fails.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), Error> {
        let hello = Hello::new(self.config.worker_id.clone(), self.sources.kinds());
        let mut failures = 0;
        let result = loop {
            let handler: Arc<dyn Handler> = Arc::new(WorkerHandler(self.clone()));
            let connected = tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                connected = self.transport.connect(hello.clone(), handler) => connected,
            };
            match connected {
                Ok(peer) => {
                    let (moved, delivered) = self.on_connection(peer, &shutdown).await;
                    // Only a connection that moved batches resets the backoff: one that connects
                    // and then fails at once (a controller that cannot commit) is a failure like
                    // any other, and the next attempt waits longer, with jitter.
                    if moved {
                        failures = 0;
                    }
                    match delivered {
                        Ok(()) if shutdown.is_cancelled() => break Ok(()),
                        Ok(()) => tracing::warn!("connection to the controller lost"),
                        Err(error) if error.kind() == ErrorKind::Transient => {
                            tracing::warn!(error = %error, "delivery failed; reconnecting");
                        }
                        Err(error) => break Err(error),
                    }
                }
                Err(error) => {
                    let level_permanent = error.kind() != ErrorKind::Transient;
                    if level_permanent {
                        tracing::error!(error = %error, "the controller refused this worker; retrying later");
                    } else {
                        tracing::debug!(error = %error, "controller unreachable");
                    }
                }
            }
            let wait = self.config.reconnect.delay(failures);
            failures = failures.saturating_add(1);
            tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                () = tokio::time::sleep(wait) => {}
            }
        };
        self.scheduler.stop_all().await;
        self.outbox.flush()?;
        result
    }

    /// One connection, delivered on until it closes or `shutdown`: whether it moved batches
    /// (an ack came), and how it ended.
    async fn on_connection(
        &self,
        peer: T::Peer,
        shutdown: &CancellationToken,
    ) -> (bool, Result<(), Error>) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        tracing::info!(worker_id = %self.config.worker_id, "connected to the controller");
        self.peer.send_replace(Some(peer.clone()));
        let acked = self.acks.load(Ordering::Relaxed);
        let delivered = self.deliver_until_closed(&peer, shutdown).await;
        self.peer.send_replace(None);
        peer.close();
        (self.acks.load(Ordering::Relaxed) > acked, delivered)
    }
}
