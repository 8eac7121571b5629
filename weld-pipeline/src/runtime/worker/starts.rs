//! What the controller tells a worker: start a stream (from which position), stop it; and the
//! scheduled run of a stream, from its source through its transforms into the outbox.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::outbox_sink::OutboxSink;
use super::remote_store::PeerStore;
use super::{Held, Worker};
use crate::checkpoint::Checkpoint;
use crate::error::Error;
use crate::message::{Event, Hello, Request, Response, Start};
use crate::pipeline::Pipeline;
use crate::record::Timestamp;
use crate::scheduler::Job;
use crate::source::{RunContext, Source};
use crate::stream::{RunId, StreamName};
use crate::sync::Locked;
use crate::transport::{Handler, Transport};

impl<T: Transport> Worker<T> {
    /// Starts (or starts again) a stream the controller gave this worker, from its position.
    async fn start(self: &Arc<Self>, start: Start) -> Response {
        let source = match self.sources.source(&start.stream, &start.config.source) {
            Ok(source) => source,
            Err(error) => return Response::refused(&error),
        };
        // Below every run this Start begins.
        let floor = RunId::generate();
        // A stream this worker already runs keeps its own position, which is at or past the
        // controller's; a new one starts after what still waits in the outbox, or at the
        // controller's checkpoint. A start of a newer epoch (a resync), or under another lease (a
        // replica that claimed the stream anew), starts from its checkpoint, whatever is held:
        // what waits in the outbox is of the older epoch or lease, and will be refused.
        // Held until the run is scheduled: a refusal's drop of the stream comes before or after.
        let mut streams = self.streams.locked();
        let checkpoint = self.position_for(&mut streams, &start, floor);
        let job = StreamJob {
            worker: Arc::downgrade(self),
            source,
            transforms: start.config.transforms.clone(),
            checkpoint,
            epoch: start.epoch,
            lease: start.lease,
        };
        self.scheduler.start(
            start.stream,
            Duration::from_secs(start.config.interval_secs),
            Arc::new(job),
        );
        drop(streams);
        Response::Started
    }

    /// Where the runs of `start` begin: the position this worker holds of the stream, or a new
    /// one (entered in `streams`) after what waits in the outbox or at the controller's
    /// checkpoint; `floor` is below every run this Start begins.
    fn position_for(
        &self,
        streams: &mut HashMap<StreamName, Held>,
        start: &Start,
        floor: RunId,
    ) -> Arc<Mutex<Checkpoint>> {
        let held = streams
            .get(&start.stream)
            .filter(|h| h.epoch >= start.epoch && h.lease == start.lease);
        if let Some(held) = held {
            return held.checkpoint.clone();
        }
        let own = match streams.get(&start.stream) {
            None => self
                .outbox
                .position(&start.stream, start.epoch, start.lease),
            Some(_) => None,
        };
        let fresh = own.is_none().then_some(floor);
        let from = own.unwrap_or(start.checkpoint.clone());
        let checkpoint = Arc::new(Mutex::new(from));
        streams.insert(
            start.stream.clone(),
            Held {
                epoch: start.epoch,
                lease: start.lease,
                fresh,
                checkpoint: checkpoint.clone(),
            },
        );
        checkpoint
    }
}

/// The worker's side of its connection: it takes the controller's Start and Stop.
pub(super) struct WorkerHandler<T: Transport>(pub(super) Arc<Worker<T>>);

#[async_trait]
impl<T: Transport> Handler for WorkerHandler<T> {
    async fn request(&self, _from: &Hello, request: Request) -> Response {
        match request {
            Request::Start(start) => self.0.start(start).await,
            Request::Stop { stream } => {
                self.0.scheduler.stop(&stream).await;
                self.0.streams.locked().remove(&stream);
                self.0.outbox.forget_position(&stream);
                Response::Stopped
            }
            Request::Deliver(_) | Request::Inventory { .. } | Request::Describe { .. } => {
                Response::refused(&Error::Invalid(
                    "a worker takes no deliveries, inventory requests or schemas".into(),
                ))
            }
        }
    }

    async fn event(&self, _from: &Hello, _event: Event) {}
}

/// One stream's scheduled run on a worker: source, transforms, outbox.
struct StreamJob<T: Transport> {
    worker: std::sync::Weak<Worker<T>>,
    source: Arc<dyn Source>,
    transforms: Vec<crate::transform::FieldTransform>,
    checkpoint: Arc<Mutex<Checkpoint>>,
    /// The epoch of the Start that scheduled it, stamped on every batch of its runs.
    epoch: u64,
    /// The lease epoch of that Start, stamped likewise.
    lease: u64,
}

#[async_trait]
impl<T: Transport> Job for StreamJob<T> {
    async fn run(&self, run: RunContext) {
        let Some(worker) = self.worker.upgrade() else {
            return;
        };
        let store = Arc::new(PeerStore::<T> {
            peer: worker.peer.subscribe(),
        });
        let run = RunContext {
            epoch: self.epoch,
            inventory: Some(store.clone()),
            catalog: Some(store),
            ..run
        };
        // A run starts only when the previous run's batches are all acknowledged: the
        // controller's checkpoint then never has to move across two runs' batches at once.
        tokio::select! {
            () = run.cancel.cancelled() => return,
            () = worker.outbox.drained(&run.stream) => {}
        }
        worker
            .notify(Event::RunStarted {
                stream: run.stream.clone(),
                run_id: run.run_id,
                at: Timestamp::now(),
            })
            .await;
        let from = self.checkpoint.locked().clone();
        let sink = OutboxSink {
            outbox: worker.outbox.clone(),
            cancel: run.cancel.clone(),
            epoch: self.epoch,
            lease: self.lease,
        };
        let max_batch_bytes = worker
            .transport
            .max_message_bytes()
            .saturating_sub(crate::transport::MESSAGE_HEADROOM);
        let mut pipeline =
            Pipeline::new(self.source.clone(), sink).with_max_batch_bytes(max_batch_bytes);
        if !self.transforms.is_empty() {
            pipeline = pipeline.with_transform(self.transforms.clone());
        }
        let report = pipeline.run(&run, from).await;
        *self.checkpoint.locked() = report.checkpoint.clone();
        worker.notify(Event::RunFinished(report.finished())).await;
    }
}
