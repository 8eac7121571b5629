//! What workers send the controller: deliveries, committed then acknowledged, and run reports.

use async_trait::async_trait;

use super::Controller;
use crate::batch::Batch;
use crate::error::Error;
use crate::message::{Commit, Event, Hello, Request, Response, RunOutcome};
use crate::source::{Catalog, Inventory, Schema, MAX_HELD_PER_PAGE};
use crate::store::{Desired, StoreHealth, StreamEntry};
use crate::stream::StreamName;
use crate::telemetry;
use crate::transport::{Handler, Peer};

impl<P: Peer> Controller<P> {
    /// Commits a delivered batch and answers with its ack, or refuses it. Refusals are
    /// permanent: the worker drops what it holds of the stream and stops it; the controller's
    /// checkpoint did not move, so whoever runs the stream next fetches it again.
    async fn deliver(&self, from: &Hello, batch: Batch) -> Response {
        // A failing store refuses at once, and quietly: the failure was logged once when it
        // began, and the worker backs off and delivers again once it heals.
        if let StoreHealth::Failed { reason, .. } = self.store.health() {
            return Response::refused(&Error::Unavailable(format!(
                "storage is failing (healing by itself): {reason}"
            )));
        }
        let lifecycle = self.lifecycle(&batch.stream);
        let _delivering = lifecycle.read().await;
        let entry = match self.admit(from, &batch).await {
            Ok(entry) => entry,
            Err(refusal) => return refusal,
        };
        match self.store.commit(&batch).await {
            Ok(commit) => self.committed(from, &batch, &entry, commit).await,
            Err(error @ Error::NotLeased(_)) => {
                // The lease moved (or its renewal is late) since this replica last looked: the
                // worker holds the batch, and the next lease period settles it.
                metrics::counter!("weld_deliveries_refused_unleased_total").increment(1);
                Response::refused(&error)
            }
            Err(error) if error.kind() != crate::ErrorKind::Transient => {
                self.refused_for_good(from, &batch, &error).await;
                Response::refused(&error)
            }
            Err(error) => {
                // A failure that failed the store was told once, by the store; the deliveries in
                // flight with it are not told again.
                if self.store.health() == StoreHealth::Ok {
                    commit_failed(&batch, &error);
                }
                Response::refused(&error)
            }
        }
    }

    /// The stream's entry, when a batch of it from `from` may be committed: the stream exists,
    /// should run, is leased here (on a replica) and is assigned to that worker.
    async fn admit(&self, from: &Hello, batch: &Batch) -> Result<StreamEntry, Response> {
        let entry = match self.store.stream(&batch.stream).await {
            Ok(Some(entry)) => entry,
            Ok(None) => {
                return Err(Response::refused(&Error::Invalid(format!(
                    "stream {} does not exist",
                    batch.stream
                ))));
            }
            Err(error) => {
                return Err(Response::refused(&Error::Unavailable(format!(
                    "registry: {error}"
                ))))
            }
        };
        if entry.desired == Desired::Stopped {
            return Err(Response::refused(&Error::Invalid(format!(
                "stream {} is stopped",
                batch.stream
            ))));
        }
        if let Some(refusal) = self.refuse_unless_leased(batch).await {
            return Err(refusal);
        }
        let assigned = self.lock().worker_of(&batch.stream).cloned();
        if let Some(owner) = assigned {
            if owner != from.worker_id {
                return Err(Response::refused(&Error::Invalid(format!(
                    "stream {} is assigned to worker {owner}, not {}",
                    batch.stream, from.worker_id
                ))));
            }
        }
        Ok(entry)
    }

    /// After a commit: a hold ended, an earlier run's error cleared, the commit told, the ack.
    async fn committed(
        &self,
        from: &Hello,
        batch: &Batch,
        entry: &StreamEntry,
        commit: Commit,
    ) -> Response {
        // Only a commit of the stream where it runs now ends a hold: batches of the refused run
        // still in flight may commit after the refusal.
        let released = self.lock().release(&batch.stream, &from.worker_id);
        if let Some(refusals) = released {
            tracing::info!(stream = %batch.stream, refusals, "the stream's batches are committed again");
        }
        // A run complete: an error of an earlier one is history (the run list keeps it).
        if batch.last && entry.last_error.is_some() {
            self.clear_error(&batch.stream).await;
        }
        telemetry::BatchCommitted {
            stream: &batch.stream,
            run_id: batch.run_id,
            seq: batch.seq,
            commit,
            repaired: batch.repaired,
        }
        .emit();
        fail::fail_point!("controller::between_commit_and_ack", |_| Response::refused(
            &Error::Unavailable("failpoint: crashed between the commit and the ack".into())
        ));
        Response::Ack {
            batch: batch.id(),
            commit,
        }
    }

    /// After the store refused a batch for good: the worker drops the stream on this refusal,
    /// so take it back, and hold it back (1 s doubling to 5 min) before it is offered again
    /// from the committed checkpoint: the same batch would be refused again at once. Said once
    /// per hold, in the log at its first and in the stream's status with the next attempt.
    async fn refused_for_good(&self, from: &Hello, batch: &Batch, error: &Error) {
        let hold = self.lock().hold_back(&batch.stream, &from.worker_id);
        let Some(hold) = hold else { return };
        if hold.refusals == 1 {
            commit_failed(batch, error);
        } else {
            tracing::debug!(stream = %batch.stream, refusals = hold.refusals, error = %error, "a batch refused again");
        }
        self.record_error(
            &batch.stream,
            format!(
                "a batch could not be committed ({} time{} in a row; next attempt at {}): {error}",
                hold.refusals,
                if hold.refusals == 1 { "" } else { "s" },
                hold.until_wall
            ),
        )
        .await;
    }

    /// On a replica: refuses a delivery of a stream whose lease it does not hold. Permanently
    /// when another replica holds it (the worker drops what it holds of the stream, and whoever
    /// runs it fetches it again from the committed checkpoint); transiently while nobody does
    /// (its replica died and the lease has not lapsed yet, or it is about to be claimed here):
    /// the worker holds the batch and delivers it again once a replica runs the stream.
    async fn refuse_unless_leased(&self, batch: &Batch) -> Option<Response> {
        let leases = self.leases.as_ref()?;
        let stream = &batch.stream;
        if let Some(epoch) = leases.epoch_of(stream) {
            if batch.lease == 0 || batch.lease == epoch {
                return None;
            }
            // Made under another lease (this replica's or another's, before the stream was
            // claimed anew): its worker was started again under this one, from the committed
            // checkpoint, and drops this batch of an earlier run.
            metrics::counter!("weld_deliveries_refused_unleased_total").increment(1);
            return Some(Response::refused(&Error::Invalid(format!(
                "a batch of stream {stream} made under lease epoch {}, which runs under epoch {epoch} now",
                batch.lease
            ))));
        }
        metrics::counter!("weld_deliveries_refused_unleased_total").increment(1);
        Some(match leases.holder(stream).await {
            Ok(Some(holder)) if holder.owner != leases.replica() => {
                Response::refused(&Error::Invalid(format!(
                    "stream {stream} is run by replica {}, not {}",
                    holder.owner,
                    leases.replica()
                )))
            }
            _ => Response::refused(&Error::Unavailable(format!(
                "no replica runs stream {stream} yet: deliver it again later"
            ))),
        })
    }

    /// Whether `stream` runs on the worker that said `from`: only that worker may ask about
    /// it or describe it.
    fn refuse_unless_assigned(&self, from: &Hello, stream: &StreamName) -> Option<Response> {
        let assigned = self.lock().worker_of(stream).cloned();
        (assigned.as_deref() != Some(from.worker_id.as_str())).then(|| {
            Response::refused(&Error::Invalid(format!(
                "stream {stream} is not assigned to worker {}",
                from.worker_id
            )))
        })
    }

    /// Hands the fields a worker's source described to the store.
    async fn describe(&self, from: &Hello, stream: &StreamName, schema: &Schema) -> Response {
        if let Some(refusal) = self.refuse_unless_assigned(from, stream) {
            return refusal;
        }
        match Catalog::describe(&self.store, stream, schema).await {
            Ok(()) => Response::Described,
            Err(error) => Response::refused(&error),
        }
    }

    /// A page of what the store holds of a stream, for the worker running it.
    async fn inventory(
        &self,
        from: &Hello,
        stream: &StreamName,
        after: Option<&str>,
        limit: u32,
    ) -> Response {
        if let Some(refusal) = self.refuse_unless_assigned(from, stream) {
            return refusal;
        }
        let limit = (limit as usize).clamp(1, MAX_HELD_PER_PAGE);
        match Inventory::held(&self.store, stream, after, limit).await {
            Ok(page) => Response::Inventory(page),
            Err(error) => Response::refused(&error),
        }
    }

    /// Records a worker's run report in the run history.
    async fn record_event(&self, from: &Hello, event: &Event) -> Result<(), Error> {
        match event {
            Event::RunStarted { stream, run_id, at } => {
                telemetry::RunStartReported {
                    worker_id: &from.worker_id,
                    stream,
                    run_id: *run_id,
                }
                .emit();
                self.store.start_run(stream, *run_id, *at).await
            }
            Event::OutboxDepth { batches, bytes } => {
                let depth = super::OutboxDepth {
                    batches: *batches,
                    bytes: *bytes,
                };
                self.lock().report_outbox(&from.worker_id, depth);
                telemetry::OutboxDepthReported {
                    worker_id: &from.worker_id,
                    batches: *batches,
                    bytes: *bytes,
                }
                .emit();
                Ok(())
            }
            Event::RunFinished(finished) => {
                telemetry::RunReported {
                    worker_id: &from.worker_id,
                    finished,
                }
                .emit();
                if let RunOutcome::Failed { error, .. } = &finished.outcome {
                    self.record_error(&finished.stream, error.clone()).await;
                }
                self.store
                    .finish_run(&finished.stream, finished.run_id, &finished.outcome)
                    .await
            }
        }
    }
}

#[async_trait]
impl<P: Peer> Handler for Controller<P> {
    async fn request(&self, from: &Hello, request: Request) -> Response {
        match request {
            Request::Deliver(batch) => self.deliver(from, batch).await,
            Request::Inventory {
                stream,
                after,
                limit,
            } => self.inventory(from, &stream, after.as_deref(), limit).await,
            Request::Describe { stream, schema } => self.describe(from, &stream, &schema).await,
            Request::Start(_) | Request::Stop { .. } => Response::refused(&Error::Invalid(
                "a controller takes deliveries, inventory requests and schemas, not starts or stops"
                    .into(),
            )),
        }
    }

    async fn event(&self, from: &Hello, event: Event) {
        if let Err(error) = self.record_event(from, &event).await {
            let (stream, run_id) = match &event {
                Event::RunStarted { stream, run_id, .. } => (Some(stream), Some(run_id)),
                Event::RunFinished(finished) => (Some(&finished.stream), Some(&finished.run_id)),
                Event::OutboxDepth { .. } => (None, None),
            };
            tracing::error!(
                worker_id = %from.worker_id,
                stream = stream.map(tracing::field::display),
                run_id = run_id.map(tracing::field::display),
                error = %error,
                "cannot record a run event"
            );
        }
    }
}

/// Tells that a batch could not be committed.
fn commit_failed(batch: &Batch, error: &Error) {
    telemetry::BatchCommitFailed {
        stream: &batch.stream,
        run_id: batch.run_id,
        seq: batch.seq,
        error,
    }
    .emit();
}
