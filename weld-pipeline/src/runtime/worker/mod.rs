//! The worker: runs the streams it is given and delivers their batches through its outbox.
//!
//! - `mod.rs`: the [`Worker`], its configuration, and what it keeps per stream;
//! - `connect.rs`: the connect loop: dial the controller, deliver, dial again with backoff;
//! - `courier.rs`: the deliveries on one connection, several in flight, each removed from the
//!   outbox on its ack, a refusal for good dropping its stream;
//! - `starts.rs`: what the controller tells it (Start, Stop) and the scheduled run of a stream;
//! - `remote_store.rs`: the controller's store, asked over the connection (inventory, schemas);
//! - `outbox_sink.rs`: the sink of a worker's pipelines: a batch is committed once in the outbox.

mod connect;
mod courier;
mod outbox_sink;
mod remote_store;
mod starts;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::checkpoint::Checkpoint;
use crate::error::Error;
use crate::message::Event;
use crate::middleware::ExponentialBackoff;
use crate::outbox::{Outbox, OutboxConfig};
use crate::scheduler::Scheduler;
use crate::source::Sources;
use crate::stream::{RunId, StreamName};
use crate::transport::{Peer, Transport};

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

    /// Tells the controller of a run, if connected.
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

/// A stream a worker runs: the epoch and lease of its latest Start, and where its next run
/// starts.
struct Held {
    /// The epoch of its latest Start.
    epoch: u64,
    /// The lease epoch of its latest Start.
    lease: u64,
    /// Set when its position was taken from the controller's checkpoint, by the Start that
    /// began the runs from this id on: a batch of an earlier run is then behind that position.
    fresh: Option<RunId>,
    /// Where its next run starts: the previous run's end.
    checkpoint: Arc<Mutex<Checkpoint>>,
}
