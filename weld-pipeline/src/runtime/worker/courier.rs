//! The courier: the worker's deliveries on one connection, oldest first, several in flight,
//! each removed from the outbox on its ack. A transient refusal holds them on the same
//! connection with backoff; a refusal for good drops its stream here.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::Worker;
use crate::batch::BatchId;
use crate::error::{Error, ErrorKind};
use crate::message::{Commit, Event, Request, Response};
use crate::middleware::Backoff;
use crate::outbox::Entry;
use crate::sync::Locked;
use crate::telemetry;
use crate::transport::{Peer, Transport};

/// How often a connected worker reports its outbox's depth to the controller: often enough for
/// a dashboard, rare enough to cost nothing.
const OUTBOX_REPORT_EVERY: Duration = Duration::from_secs(2);

impl<T: Transport> Worker<T> {
    /// Delivers on one connection until it closes or `shutdown`. A transient refusal (a
    /// controller whose store cannot commit now) holds the deliveries on the same connection,
    /// with backoff and jitter, and resends what was not acknowledged: the link is fine, and
    /// reconnecting would only add load where there is already too much.
    pub(super) async fn deliver_until_closed(
        &self,
        peer: &T::Peer,
        shutdown: &CancellationToken,
    ) -> Result<(), Error> {
        let mut refusals: u32 = 0;
        loop {
            let acked = self.acks.load(Ordering::Relaxed);
            let refused = self.deliver(peer, shutdown).await?;
            if refusals > 0 && self.acks.load(Ordering::Relaxed) > acked {
                tracing::info!(refusals, "deliveries go on again");
                refusals = 0;
            }
            let Some(refusal) = refused else {
                return Ok(());
            };
            if refusals == 0 {
                tracing::warn!(error = %refusal, "deliveries cannot go on now; holding them and retrying with backoff");
            } else {
                tracing::debug!(refusals, error = %refusal, "deliveries still refused");
            }
            let wait = self.config.reconnect.delay(refusals);
            refusals = refusals.saturating_add(1);
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = peer.closed() => return Ok(()),
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Sends the outbox, oldest first, with up to `in_flight` deliveries at once, until the
    /// connection fails or `shutdown`.
    /// Returns `Some(refusal)` when the controller refused a delivery transiently: the
    /// deliveries in flight are abandoned (they stay in the outbox, to be sent again).
    async fn deliver(
        &self,
        peer: &T::Peer,
        shutdown: &CancellationToken,
    ) -> Result<Option<Error>, Error> {
        let mut versions = self.outbox.watch();
        let mut next_key = 0;
        let mut in_flight = FuturesUnordered::new();
        let mut report = tokio::time::interval(OUTBOX_REPORT_EVERY);
        report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reporting: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            if in_flight.len() < self.config.in_flight {
                versions.borrow_and_update();
                let room = self.config.in_flight - in_flight.len();
                // Read from memory: an outbox healing from a disk failure still delivers.
                let entries = self.outbox.entries(next_key, room)?;
                for entry in entries {
                    next_key = entry.key + 1;
                    let timeout = self.config.delivery_timeout;
                    in_flight.push(send(peer.clone(), entry, timeout));
                }
            }
            let more_room = in_flight.len() < self.config.in_flight;
            tokio::select! {
                () = shutdown.cancelled() => return Ok(None),
                () = peer.closed() => return Ok(None),
                Some((key, id, result)) = in_flight.next() => {
                    if let Some(refusal) = self.delivered(key, id, result)? {
                        return Ok(Some(refusal));
                    }
                }
                _ = report.tick() => self.report_depth(peer, &mut reporting),
                changed = versions.changed(), if more_room => {
                    if changed.is_err() {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Reports the outbox's depth to the controller. Informative: on its own task, so a slow
    /// link never holds up deliveries, and one at a time (`reporting`), so a stalled link does
    /// not pile them up.
    fn report_depth(&self, peer: &T::Peer, reporting: &mut Option<tokio::task::JoinHandle<()>>) {
        if reporting
            .as_ref()
            .is_some_and(|report| !report.is_finished())
        {
            return;
        }
        let depth = Event::OutboxDepth {
            batches: self.outbox.len(),
            bytes: self.outbox.bytes(),
        };
        let peer = peer.clone();
        *reporting = Some(tokio::spawn(async move {
            if let Err(error) = peer.notify(depth).await {
                tracing::debug!(error = %error, "an outbox report was not sent");
            }
        }));
    }

    /// Handles one delivery's outcome: `Some(refusal)` for a transient refusal.
    fn delivered(
        &self,
        key: u64,
        id: BatchId,
        result: Result<Response, Error>,
    ) -> Result<Option<Error>, Error> {
        if let Ok(Response::Refused {
            kind: ErrorKind::Transient,
            message,
        }) = &result
        {
            return Ok(Some(Error::new(ErrorKind::Transient, message.clone())));
        }
        match result.and_then(Response::into_result) {
            Ok(Response::Ack { batch, commit }) if batch == id => {
                fail::fail_point!("worker::between_ack_and_outbox_removal", |_| Err(
                    Error::Unavailable(
                        "failpoint: crashed between the ack and the outbox removal".into()
                    )
                ));
                if commit == Commit::Replayed {
                    tracing::debug!(stream = %batch.stream, seq = batch.seq, "delivery was a replay");
                }
                self.outbox.remove(key)?;
                self.acks.fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
            Ok(other) => Err(Error::Bug(format!(
                "a delivery was answered with {other:?}"
            ))),
            Err(error) if error.kind() == ErrorKind::Transient => Err(error),
            Err(error) => {
                // The controller will never take this stream's batches from us (stopped,
                // deleted, or now another worker's): stop it here and drop what waits; the data
                // is fetched again by whoever runs it, from the controller's checkpoint. The
                // connection and the worker's other streams go on.
                self.refused(key, &id, &error)?;
                Ok(None)
            }
        }
    }

    /// Drops a stream the controller refused a batch of for good, once: later refusals of its
    /// batches still in flight find nothing left to drop.
    ///
    /// Under the lock of the worker's streams, as a Start is: a Start cannot fall between the
    /// look at the stream and its drop (it would be cancelled with the old runs, or start from
    /// a position past batches about to be dropped).
    fn refused(&self, key: u64, id: &BatchId, error: &Error) -> Result<(), Error> {
        let stream = &id.stream;
        let mut streams = self.streams.locked();
        let fresh = streams.get(stream).and_then(|held| held.fresh);
        if fresh.is_some_and(|since| id.run_id < since) {
            // A batch of a run from before the Start that placed the stream at the controller's
            // checkpoint: the runs since read its records again, so only it goes. Anywhere else
            // this worker's position may be past it, and dropping it alone would leave a gap:
            // the stream goes, and whoever runs it next starts from the controller's checkpoint.
            tracing::debug!(stream = %stream, run_id = %id.run_id, seq = id.seq, error = %error, "a refused batch of an earlier run dropped");
            return self.outbox.remove(key);
        }
        let known = streams.remove(stream).is_some();
        // The run is cancelled before its batches are dropped, so that it cannot write one more
        // after them (its sink checks the token under the outbox's lock). Stopping would wait
        // for the run's page boundary; the courier must not.
        self.scheduler.cancel(stream);
        let dropped = self.outbox.discard_stream(stream)?;
        drop(streams);
        if known || dropped > 0 {
            tracing::warn!(stream = %stream, run_id = %id.run_id, seq = id.seq, dropped, error = %error, "the controller refused a delivery; the stream stops here and its waiting batches are dropped");
        }
        Ok(())
    }
}

/// Delivers one entry on `peer`, waiting at most `timeout` for its answer: its key, its
/// identity, and the answer.
async fn send<P: Peer>(
    peer: P,
    entry: Entry,
    timeout: Duration,
) -> (u64, BatchId, Result<Response, Error>) {
    // The batch moves into the request: only its key and identity are kept for the answer.
    let Entry { key, batch } = entry;
    let id = batch.id();
    let sent = tokio::time::Instant::now();
    let delivery = peer.request(Request::Deliver(batch));
    let result = tokio::time::timeout(timeout, delivery)
        .await
        .unwrap_or(Err(Error::Timeout {
            operation: "delivery",
            after: timeout,
        }));
    telemetry::DeliveryAnswered {
        after: sent.elapsed(),
    }
    .emit();
    (key, id, result)
}
