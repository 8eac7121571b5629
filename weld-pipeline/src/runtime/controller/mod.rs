//! The controller: the stream lifecycle (start, stop, delete, status) over a [`StreamStore`],
//! the assignment of streams to connected workers, and the commit of what they deliver.
//!
//! - `mod.rs`: the [`Controller`], serving workers and assigning them streams;
//! - `lifecycle.rs`: a stream started, stopped, resynced and deleted, its last error recorded;
//! - `status.rs`: what it tells of its streams and workers;
//! - `assignments.rs`: which connected worker runs which stream;
//! - `delivery.rs`: the transport [`Handler`](crate::transport::Handler): deliveries committed
//!   and acknowledged, run reports recorded;
//! - `replicas.rs`: several controllers on one shared store, each running the streams whose
//!   [lease](crate::lease) it holds.

mod assignments;
mod delivery;
mod lifecycle;
mod replicas;
mod status;

pub use status::{ConnectedWorker, OutboxDepth, StreamState, StreamStatus};

use crate::sync::Locked;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, ErrorKind};
use crate::lease::Leasing;
use crate::message::{Request, Response, Start, StreamConfig};
use crate::source::SourceKinds;
use crate::store::{Desired, Storage, StoreHealth, StreamEntry, StreamStore};
use crate::stream::StreamName;
use crate::telemetry;
use crate::transport::{Listener, Peer};
use assignments::Assignments;
use replicas::ReplicaState;

/// The logic of data-streams: it keeps the registry and the records in a [`StreamStore`],
/// assigns running streams to connected workers that can run their source kind (and re-assigns
/// them when a worker goes away), commits delivered batches, acknowledges them, and keeps the
/// run history.
///
/// Embed it: [`Controller::serve`] accepts workers from any [`Listener`]; the stream operations
/// back an API.
pub struct Controller<P: Peer> {
    store: Arc<dyn StreamStore>,
    sources: SourceKinds,
    state: Mutex<Assignments<P>>,
    /// Per stream: deliveries hold it shared, deletion exclusively, so a delivery that passed
    /// its checks cannot commit into a stream deleted meanwhile.
    lifecycles: Mutex<HashMap<StreamName, Arc<tokio::sync::RwLock<()>>>>,
    /// The leases of this replica, when it is one of several on a shared store.
    leases: Option<Arc<dyn Leasing>>,
    /// Per stream assigned here: what the Start it was given said, so a change made on another
    /// replica can be told from a repeat, and a lease claimed anew from the one it runs under.
    started: Mutex<HashMap<StreamName, Started>>,
    /// What a replica keeps between its lease periods (nothing is kept in it without leases).
    replica: ReplicaState,
    /// Per stream: held while a Start or a Stop is sent for it (or a change heard from another
    /// replica decided), so that two never cross on the way to one worker.
    commands: Mutex<HashMap<StreamName, Arc<tokio::sync::Mutex<()>>>>,
    /// Per stream: held across each read and write back of its registry entry (a start, a
    /// stop, an error recorded or cleared), so that none writes back what another just changed
    /// (an error recorded as a stop lands must not put `running` back).
    entries: Mutex<HashMap<StreamName, Arc<tokio::sync::Mutex<()>>>>,
}

/// What a stream's latest Start said.
#[derive(Clone, Debug)]
struct Started {
    config: StreamConfig,
    /// The stream's epoch (a resync raises it).
    epoch: u64,
    /// The lease epoch it runs under here (0 without leases).
    lease: u64,
}

/// How long a worker has to answer a start or a stop. A stop waits for the run's page
/// boundary: a page fetch with its retries fits well inside this.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// How often streams waiting for a worker are offered again (a start that failed on a
/// transient error is retried this way).
const REASSIGN_EVERY: Duration = Duration::from_secs(5);

/// How long a replica's clean shutdown waits to give its leases up; past it, they lapse.
const RELEASE_WITHIN: Duration = Duration::from_secs(5);

impl<P: Peer> std::fmt::Debug for Controller<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("store", &self.store)
            .field("sources", &self.sources)
            .finish_non_exhaustive()
    }
}

impl<P: Peer> Controller<P> {
    /// A controller over `storage` (a [`Storage`], or an `Arc` of any [`StreamStore`]),
    /// accepting streams of the source kinds in `sources` (the first is the default of a start
    /// without a source).
    ///
    /// When the storage is a [replica's](Storage::replica), the controller is one replica of
    /// several on one shared store: it runs only the streams whose lease it holds (claimed when
    /// one of its workers can run them, renewed every fifth of the lease's time-to-live, given up
    /// when it stops running them), and hears the others' registry changes.
    pub fn new(storage: impl Into<Storage>, sources: SourceKinds) -> Arc<Self> {
        let (store, leases) = storage.into().into_parts();
        Self::build(store, sources, leases)
    }

    fn build(
        store: Arc<dyn StreamStore>,
        sources: SourceKinds,
        leases: Option<Arc<dyn Leasing>>,
    ) -> Arc<Self> {
        // Known from the start, so a scrape before the first worker shows 0, not nothing.
        metrics::gauge!("weld_workers_connected").set(0.0);
        Arc::new(Controller {
            store,
            sources,
            state: Mutex::new(Assignments::new()),
            lifecycles: Mutex::default(),
            leases,
            started: Mutex::default(),
            replica: ReplicaState::default(),
            commands: Mutex::default(),
            entries: Mutex::default(),
        })
    }

    /// This replica's id, when it is one of several ([`Storage::replica`]).
    pub fn replica(&self) -> Option<&str> {
        self.leases.as_deref().map(Leasing::replica)
    }

    /// This replica's leases, when it is one of several.
    pub fn leases(&self) -> Option<&Arc<dyn Leasing>> {
        self.leases.as_ref()
    }

    fn started_as(&self, stream: &StreamName) -> Option<Started> {
        self.started.locked().get(stream).cloned()
    }

    /// The store, for reads.
    pub fn store(&self) -> &Arc<dyn StreamStore> {
        &self.store
    }

    /// The source kinds streams may name.
    pub fn sources(&self) -> &SourceKinds {
        &self.sources
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Assignments<P>> {
        self.state.locked()
    }

    fn command_lock(&self, stream: &StreamName) -> Arc<tokio::sync::Mutex<()>> {
        let mut commands = self.commands.locked();
        commands.entry(stream.clone()).or_default().clone()
    }

    fn entry_lock(&self, stream: &StreamName) -> Arc<tokio::sync::Mutex<()>> {
        let mut entries = self.entries.locked();
        entries.entry(stream.clone()).or_default().clone()
    }

    fn lifecycle(&self, stream: &StreamName) -> Arc<tokio::sync::RwLock<()>> {
        let mut lifecycles = self.lifecycles.locked();
        lifecycles.entry(stream.clone()).or_default().clone()
    }

    /// Accepts workers until `shutdown`; each is given the pending streams it can run, and
    /// when it goes away its streams go to others. A [replica](Storage::replica) also
    /// keeps its leases here, hears the other replicas' registry changes, and gives its leases
    /// up when `shutdown` comes, so that another replica takes its streams at once.
    ///
    /// # Errors
    ///
    /// When the listener fails.
    pub async fn serve<L: Listener<Peer = P>>(
        self: Arc<Self>,
        mut listener: L,
        shutdown: CancellationToken,
    ) -> Result<(), Error> {
        let every = match &self.leases {
            Some(leases) => replicas::lease_every(leases.as_ref()),
            None => REASSIGN_EVERY,
        };
        let mut reassign = tokio::time::interval(every);
        reassign.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut changes = match &self.leases {
            Some(leases) => leases.watch(),
            None => futures::stream::pending().boxed(),
        };
        // One tick at a time: a tick that outlasts the period (a slow database) is not
        // overtaken by the next.
        let mut ticking: Option<tokio::task::JoinHandle<()>> = None;
        let result = loop {
            tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                peer = listener.accept() => match peer {
                    // Handled on its own task: a worker slow to take its streams must not hold
                    // up the next one's connection.
                    Ok(peer) => { tokio::spawn(self.clone().connected(peer)); }
                    Err(error) => break Err(error),
                },
                Some(change) = changes.next() => self.changed(change),
                _ = reassign.tick() => {
                    if ticking.as_ref().is_none_or(tokio::task::JoinHandle::is_finished) {
                        let controller = self.clone();
                        ticking = Some(tokio::spawn(async move {
                            match controller.leases.clone() {
                                Some(leases) => controller.keep_leases(&leases).await,
                                None => controller.assign_waiting(true).await,
                            }
                        }));
                    }
                }
            }
        };
        if let Some(ticking) = ticking {
            ticking.abort();
        }
        if let Some(leases) = &self.leases {
            match tokio::time::timeout(RELEASE_WITHIN, leases.release_all()).await {
                Ok(Ok(released)) => {
                    tracing::info!(replica = leases.replica(), released, "leases given up")
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "leases not given up; they lapse by themselves")
                }
                Err(_) => tracing::warn!("leases not given up in time; they lapse by themselves"),
            }
        }
        result
    }

    /// Takes a connected worker: registers it, assigns it what waits, and watches it go.
    pub async fn connected(self: Arc<Self>, peer: P) {
        let worker_id = peer.hello().worker_id.clone();
        let serial = self.lock().connect(&worker_id, peer.clone());
        telemetry::WorkersChanged {
            worker_id: &worker_id,
            connected: true,
            now: self.workers(),
        }
        .emit();
        tracing::debug!(worker_id, sources = ?peer.hello().sources, "worker's sources");
        let controller = self.clone();
        tokio::spawn(async move {
            peer.closed().await;
            controller.gone(&worker_id, serial).await;
        });
        self.assign_waiting(false).await;
    }

    async fn gone(&self, worker_id: &str, serial: u64) {
        let Some(orphans) = self.lock().disconnect(worker_id, serial) else {
            return;
        };
        telemetry::WorkersChanged {
            worker_id,
            connected: false,
            now: self.workers(),
        }
        .emit();
        if !orphans.is_empty() {
            tracing::info!(
                worker_id,
                streams = orphans.len(),
                "re-assigning a gone worker's streams"
            );
        }
        self.assign_waiting(false).await;
    }

    /// Assigns every stream that should run and has no worker to a connected worker that can
    /// run its source, the least loaded first.
    ///
    /// `tick`: whether this is a lease period's pass, which may take streams past a replica's
    /// share ([`Controller::share`]).
    async fn assign_waiting(&self, tick: bool) {
        let entries = match self.store.streams().await {
            Ok(entries) => entries,
            // A failing store told its failure once; every reassignment tick need not.
            Err(_) if self.store.health() != StoreHealth::Ok => return,
            Err(error) => {
                tracing::error!(error = %error, "cannot read the registry");
                return;
            }
        };
        // A stream held back after refused batches waits out its hold unclaimed.
        let waiting: Vec<&StreamEntry> = entries
            .iter()
            .filter(|e| {
                let assignments = self.lock();
                e.desired == Desired::Running
                    && assignments.worker_of(&e.name).is_none()
                    && assignments.hold_of(&e.name).is_none()
            })
            .collect();
        let (waiting, limit) = self.share(&entries, waiting, tick).await;
        for entry in self.claim(waiting, limit).await {
            self.assign(entry).await;
        }
        if self.leases.is_some() {
            // A stop whose announcement was lost: the registry says so at every tick.
            for entry in &entries {
                if entry.desired == Desired::Stopped && self.lock().worker_of(&entry.name).is_some()
                {
                    self.stop_on_worker(&entry.name).await;
                }
            }
        }
    }

    /// Sends `Start` for a stream to a worker, choosing one if it has none; a replica only for a
    /// stream whose lease it holds.
    async fn assign(&self, entry: &StreamEntry) {
        let command = self.command_lock(&entry.name);
        let _sending = command.lock().await;
        self.assign_now(entry).await;
    }

    /// [`Controller::assign`], its stream's command lock held by the caller.
    async fn assign_now(&self, entry: &StreamEntry) {
        let lease = match &self.leases {
            Some(leases) => match leases.epoch_of(&entry.name) {
                Some(epoch) => epoch,
                // Given up or lost since it was claimed: whoever holds it runs it.
                None => return,
            },
            None => 0,
        };
        let Some((worker_id, peer)) = self.lock().assign(&entry.name, &entry.config.source.kind)
        else {
            return;
        };
        let resume = match self.store.resume(&entry.name).await {
            Ok(resume) => resume,
            Err(error) => {
                tracing::error!(stream = %entry.name, error = %error, "cannot read the checkpoint");
                self.lock().unassign(&entry.name, &worker_id);
                return;
            }
        };
        let started = Started {
            config: entry.config.clone(),
            epoch: resume.epoch,
            lease,
        };
        let start = Request::Start(Start {
            stream: entry.name.clone(),
            config: entry.config.clone(),
            checkpoint: resume.checkpoint,
            epoch: started.epoch,
            lease: started.lease,
        });
        // Known before the worker answers: a lease period meanwhile must see what was sent.
        self.started.locked().insert(entry.name.clone(), started);
        match command(&peer, start, "start").await {
            Ok(_) => {
                tracing::info!(stream = %entry.name, worker_id, replica = self.replica(), "stream assigned");
                if let Some(leases) = &self.leases {
                    if let Err(error) = leases.run_on(&entry.name, Some(&worker_id)).await {
                        tracing::debug!(%error, "the stream's worker was not recorded with its lease");
                    }
                }
            }
            Err(error) => {
                tracing::warn!(stream = %entry.name, worker_id, error = %error, "worker did not take the stream");
                self.lock().unassign(&entry.name, &worker_id);
                self.started.locked().remove(&entry.name);
                if error.kind() == ErrorKind::Permanent {
                    self.record_error(
                        &entry.name,
                        format!("worker {worker_id} refused the stream: {error}"),
                    )
                    .await;
                }
            }
        }
    }
}

/// Sends a command to a worker and waits for its answer, at most [`COMMAND_TIMEOUT`]; a refusal
/// comes back as the error it carries.
async fn command<P: Peer>(
    peer: &P,
    request: Request,
    operation: &'static str,
) -> Result<Response, Error> {
    tokio::time::timeout(COMMAND_TIMEOUT, peer.request(request))
        .await
        .unwrap_or(Err(Error::Timeout {
            operation,
            after: COMMAND_TIMEOUT,
        }))
        .and_then(Response::into_result)
}
