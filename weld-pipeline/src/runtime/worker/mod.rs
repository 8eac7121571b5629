//! The worker: runs the streams it is given and delivers their batches through its outbox.

use crate::sync::Locked;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::batch::{Batch, BatchId};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, ErrorKind};
use crate::message::{Commit, Event, Hello, Request, Response, Start};
use crate::middleware::{Backoff, ExponentialBackoff};
use crate::outbox::{Entry, Outbox, OutboxConfig};
use crate::pipeline::Pipeline;
use crate::record::Timestamp;
use crate::scheduler::{Job, Scheduler};
use crate::sink::Sink;
use crate::source::{Catalog, HeldPage, Inventory, RunContext, Schema, Source, Sources};
use crate::stream::{RunId, StreamName};
use crate::telemetry;
use crate::transport::{Handler, Peer, Transport};

/// How often a connected worker reports its outbox's depth to the controller: often enough for
/// a dashboard, rare enough to cost nothing.
const OUTBOX_REPORT_EVERY: Duration = Duration::from_secs(2);

/// How a [`Worker`] runs.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Its id: stable across restarts, so that the controller gives it back its streams.
    pub worker_id: String,
    /// Its outbox.
    pub outbox: OutboxConfig,
    /// Deliveries in flight at once. Round trips overlap, so this many batches move per round
    /// trip; 16 keeps a loopback link busy.
    pub in_flight: usize,
    /// Waits between reconnect attempts.
    pub reconnect: ExponentialBackoff,
    /// How long a delivery may wait for its ack before the connection is treated as broken and
    /// re-established (the batch is then sent again, which is harmless). A commit takes
    /// milliseconds; 30 s leaves room for a controller under load.
    pub delivery_timeout: Duration,
}

impl WorkerConfig {
    /// A worker with this id and its outbox in `outbox_dir`.
    pub fn new(worker_id: impl Into<String>, outbox_dir: impl Into<std::path::PathBuf>) -> Self {
        WorkerConfig {
            worker_id: worker_id.into(),
            outbox: OutboxConfig::new(outbox_dir),
            in_flight: 16,
            reconnect: ExponentialBackoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            delivery_timeout: Duration::from_secs(30),
        }
    }
}

/// The logic of a worker: it dials its controller (again after any failure, with backoff), runs
/// the streams it is told to on their schedules, writes their batches to its outbox, and
/// delivers the outbox with several batches in flight, removing each on its ack.
pub struct Worker<T: Transport> {
    config: WorkerConfig,
    transport: T,
    sources: Sources,
    outbox: Outbox,
    scheduler: Scheduler,
    /// Per stream it runs: the epoch of its latest Start, and its position.
    streams: Mutex<HashMap<StreamName, Held>>,
    peer: watch::Sender<Option<T::Peer>>,
    /// Connections made to the controller since the worker started.
    connections: AtomicU64,
    /// Deliveries acknowledged since the worker started: a connection that moved none is a
    /// failure the reconnect backs off from.
    acks: AtomicU64,
}

impl<T: Transport> std::fmt::Debug for Worker<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("worker_id", &self.config.worker_id)
            .field("outbox", &self.outbox)
            .finish_non_exhaustive()
    }
}

impl<T: Transport> Worker<T> {
    /// Opens the worker's outbox. The worker runs streams of the kinds in `sources`, and tells
    /// the controller so in its hello.
    ///
    /// # Errors
    ///
    /// When the outbox cannot be opened.
    pub fn open(config: WorkerConfig, transport: T, sources: Sources) -> Result<Arc<Self>, Error> {
        let outbox = Outbox::open(&config.outbox)?;
        Ok(Arc::new(Worker {
            config,
            transport,
            sources,
            outbox,
            scheduler: Scheduler::new(),
            streams: Mutex::default(),
            peer: watch::Sender::new(None),
            connections: AtomicU64::new(0),
            acks: AtomicU64::new(0),
        }))
    }

    /// The outbox: the batches not yet acknowledged, to watch its depth.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// How many times it has connected to the controller: once, on a healthy link; a number
    /// that keeps growing means the link or the controller keeps failing.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

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
                    self.connections.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(worker_id = %self.config.worker_id, "connected to the controller");
                    self.peer.send_replace(Some(peer.clone()));
                    let acked = self.acks.load(Ordering::Relaxed);
                    let delivered = self.deliver_until_closed(&peer, &shutdown).await;
                    self.peer.send_replace(None);
                    peer.close();
                    // Only a connection that moved batches resets the backoff: one that connects
                    // and then fails at once (a controller that cannot commit) is a failure like
                    // any other, and the next attempt waits longer, with jitter.
                    if self.acks.load(Ordering::Relaxed) > acked {
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

    /// Delivers on one connection until it closes or `shutdown`. A transient refusal (a
    /// controller whose store cannot commit now) holds the deliveries on the same connection,
    /// with backoff and jitter, and resends what was not acknowledged: the link is fine, and
    /// reconnecting would only add load where there is already too much.
    async fn deliver_until_closed(
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
                    let peer = peer.clone();
                    let timeout = self.config.delivery_timeout;
                    in_flight.push(async move {
                        // The batch moves into the request: only its key and identity are
                        // kept for the answer.
                        let Entry { key, batch } = entry;
                        let id = batch.id();
                        let sent = tokio::time::Instant::now();
                        let delivery = peer.request(Request::Deliver(batch));
                        let result = tokio::time::timeout(timeout, delivery).await.unwrap_or(Err(
                            Error::Timeout {
                                operation: "delivery",
                                after: timeout,
                            },
                        ));
                        telemetry::DeliveryAnswered {
                            after: sent.elapsed(),
                        }
                        .emit();
                        (key, id, result)
                    });
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
                _ = report.tick() => {
                    // Informative: on its own task, so a slow link never holds up deliveries,
                    // and one at a time, so a stalled link does not pile them up.
                    if reporting.as_ref().is_none_or(tokio::task::JoinHandle::is_finished) {
                        let depth = Event::OutboxDepth {
                            batches: self.outbox.len(),
                            bytes: self.outbox.bytes(),
                        };
                        let peer = peer.clone();
                        reporting = Some(tokio::spawn(async move {
                            if let Err(error) = peer.notify(depth).await {
                                tracing::debug!(error = %error, "an outbox report was not sent");
                            }
                        }));
                    }
                }
                changed = versions.changed(), if more_room => {
                    if changed.is_err() {
                        return Ok(None);
                    }
                }
            }
        }
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
        let checkpoint = {
            let held = streams
                .get(&start.stream)
                .filter(|h| h.epoch >= start.epoch && h.lease == start.lease);
            match held {
                Some(held) => held.checkpoint.clone(),
                None => {
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
        };
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

    async fn notify(&self, event: Event) {
        let peer = self.peer.borrow().clone();
        if let Some(peer) = peer {
            // Run reports are informative: the run history's truth is the committed batches.
            if let Err(error) = peer.notify(event).await {
                tracing::debug!(error = %error, "a run report was not sent");
            }
        }
    }
}

struct WorkerHandler<T: Transport>(Arc<Worker<T>>);

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

/// A stream a worker runs: the epoch and lease of its latest Start, and where its next run
/// starts.
struct Held {
    epoch: u64,
    lease: u64,
    /// Set when its position was taken from the controller's checkpoint, by the Start that
    /// began the runs from this id on: a batch of an earlier run is then behind that position.
    fresh: Option<RunId>,
    checkpoint: Arc<Mutex<Checkpoint>>,
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

/// The controller's store, asked and told over the worker's connection: what it holds, and
/// the fields of the streams this worker runs.
struct PeerStore<T: Transport> {
    peer: watch::Receiver<Option<T::Peer>>,
}

impl<T: Transport> std::fmt::Debug for PeerStore<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerStore")
    }
}

/// How long the controller has to answer a request about its store.
const STORE_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

impl<T: Transport> PeerStore<T> {
    async fn ask(&self, request: Request, operation: &'static str) -> Result<Response, Error> {
        let peer = self.peer.borrow().clone().ok_or_else(|| {
            Error::Unavailable("not connected to the controller: its store cannot be asked".into())
        })?;
        tokio::time::timeout(STORE_REQUEST_TIMEOUT, peer.request(request))
            .await
            .map_err(|_| Error::Timeout {
                operation,
                after: STORE_REQUEST_TIMEOUT,
            })??
            .into_result()
    }
}

#[async_trait]
impl<T: Transport> Inventory for PeerStore<T> {
    async fn held(
        &self,
        stream: &StreamName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<HeldPage, Error> {
        let request = Request::Inventory {
            stream: stream.clone(),
            after: after.map(str::to_owned),
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
        };
        match self.ask(request, "inventory request").await? {
            Response::Inventory(page) => Ok(page),
            other => Err(Error::Bug(format!(
                "the controller answered an inventory request with {other:?}"
            ))),
        }
    }
}

#[async_trait]
impl<T: Transport> Catalog for PeerStore<T> {
    async fn describe(&self, stream: &StreamName, schema: &Schema) -> Result<(), Error> {
        let request = Request::Describe {
            stream: stream.clone(),
            schema: schema.clone(),
        };
        match self.ask(request, "schema description").await? {
            Response::Described => Ok(()),
            other => Err(Error::Bug(format!(
                "the controller answered a schema description with {other:?}"
            ))),
        }
    }
}

/// The worker's sink: a batch is "committed" once it is in the outbox.
struct OutboxSink {
    outbox: Outbox,
    /// The run's: a stop ends a wait for room in a full outbox (nothing was written yet).
    cancel: CancellationToken,
    /// The run's epoch, stamped on a batch whose source left it out.
    epoch: u64,
    /// The lease epoch of the Start that scheduled the run, stamped likewise.
    lease: u64,
}

#[async_trait]
impl Sink for OutboxSink {
    async fn commit(&self, batch: &Batch) -> Result<Commit, Error> {
        let stamped;
        let batch = if batch.epoch == self.epoch && batch.lease == self.lease {
            batch
        } else {
            stamped = Batch {
                epoch: self.epoch,
                lease: self.lease,
                ..batch.clone()
            };
            &stamped
        };
        self.outbox
            .push_unless_cancelled(batch, &self.cancel)
            .await?;
        Ok(Commit::Stored {
            records: batch.records.len() as u64,
        })
    }

    /// The position after the stream's batches waiting in the outbox, if any: the pipeline
    /// itself carries its checkpoint from run to run.
    async fn checkpoint(&self, stream: &StreamName) -> Result<Checkpoint, Error> {
        Ok(self
            .outbox
            .position(stream, self.epoch, self.lease)
            .unwrap_or_else(Checkpoint::start))
    }
}
