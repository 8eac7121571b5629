//! The controller: registry, assignment of streams to workers, commits, run history.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, ErrorKind};
use crate::message::{Event, Hello, Request, Response, RunOutcome, Start, StreamConfig};
use crate::record::Timestamp;
use crate::registry::{Desired, LastError, Registry, StreamEntry};
use crate::sink::Sink;
use crate::store::{Counts, RunRecord, Store, StoreConfig};
use crate::stream::StreamName;
use crate::telemetry;
use crate::transport::{Handler, Listener, Peer};

/// How to open a [`Controller`].
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// The directory of the controller's database (store and registry).
    pub data_dir: PathBuf,
    /// sled's page cache for that database.
    pub cache_bytes: u64,
}

impl ControllerConfig {
    /// A controller keeping its data in `data_dir`, with the store's default cache.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        ControllerConfig {
            cache_bytes: StoreConfig::new(&data_dir).cache_bytes,
            data_dir,
        }
    }
}

/// Where a stream stands, as the API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamState {
    /// Assigned to a connected worker, which runs it every interval.
    Running,
    /// Should run, but no connected worker can take it yet.
    Pending,
    /// Stopped; its data stays.
    Stopped,
}

/// A stream's status.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StreamStatus {
    /// The stream.
    pub name: StreamName,
    /// Where it stands.
    pub state: StreamState,
    /// Its configuration.
    pub config: StreamConfig,
    /// The worker running it.
    pub worker: Option<String>,
    /// Records stored.
    pub counts: Counts,
    /// Its newest run.
    pub last_run: Option<RunRecord>,
    /// When its next run is due, while it runs.
    pub next_run_at: Option<Timestamp>,
    /// The latest error its runs reported.
    pub last_error: Option<LastError>,
}

/// The logic of data-streams: it keeps the registry and the store, assigns running streams to
/// connected workers (and re-assigns them when a worker goes away), commits delivered batches,
/// acknowledges them, and keeps the run history.
///
/// Embed it: [`Controller::serve`] accepts workers from any [`Listener`]; the stream operations
/// back an API.
pub struct Controller<P: Peer> {
    store: Store,
    registry: Registry,
    state: Mutex<Assignments<P>>,
    /// Per stream: deliveries hold it shared, deletion exclusively, so a delivery that passed
    /// its checks cannot commit into a stream deleted meanwhile.
    lifecycles: Mutex<HashMap<StreamName, Arc<tokio::sync::RwLock<()>>>>,
}

/// How long a worker has to answer a start or a stop. A stop waits for the run's page
/// boundary: a page fetch with its retries fits well inside this.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// How often streams waiting for a worker are offered again (a start that failed on a
/// transient error is retried this way).
const REASSIGN_EVERY: Duration = Duration::from_secs(5);

impl<P: Peer> std::fmt::Debug for Controller<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

struct Connected<P> {
    peer: P,
    /// Tells this connection from a later one of the same worker.
    serial: u64,
    streams: HashSet<StreamName>,
}

struct Assignments<P> {
    workers: HashMap<String, Connected<P>>,
    streams: HashMap<StreamName, String>,
    serial: u64,
}

impl<P: Peer> Controller<P> {
    /// Opens the controller's database.
    ///
    /// # Errors
    ///
    /// When the database cannot be opened.
    pub fn open(config: &ControllerConfig) -> Result<Arc<Self>, Error> {
        let store = Store::open(&StoreConfig {
            path: config.data_dir.clone(),
            cache_bytes: config.cache_bytes,
        })?;
        let registry = Registry::open(store.db())?;
        // Known from the start, so a scrape before the first worker shows 0, not nothing.
        metrics::gauge!("weld_workers_connected").set(0.0);
        Ok(Arc::new(Controller {
            store,
            registry,
            state: Mutex::new(Assignments {
                workers: HashMap::new(),
                streams: HashMap::new(),
                serial: 0,
            }),
            lifecycles: Mutex::default(),
        }))
    }

    /// The store, for reads.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Assignments<P>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lifecycle(&self, stream: &StreamName) -> Arc<tokio::sync::RwLock<()>> {
        let mut lifecycles = self.lifecycles.lock().unwrap_or_else(|e| e.into_inner());
        lifecycles.entry(stream.clone()).or_default().clone()
    }

    /// The number of connected workers.
    pub fn workers(&self) -> usize {
        self.lock().workers.len()
    }

    /// Accepts workers until `shutdown`; each is given the pending streams it can run, and
    /// when it goes away its streams go to others.
    ///
    /// # Errors
    ///
    /// When the listener fails.
    pub async fn serve<L: Listener<Peer = P>>(
        self: Arc<Self>,
        mut listener: L,
        shutdown: CancellationToken,
    ) -> Result<(), Error> {
        let mut reassign = tokio::time::interval(REASSIGN_EVERY);
        reassign.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                peer = listener.accept() => {
                    // Handled on its own task: a worker slow to take its streams must not hold
                    // up the next one's connection.
                    tokio::spawn(self.clone().connected(peer?));
                }
                _ = reassign.tick() => {
                    let controller = self.clone();
                    tokio::spawn(async move { controller.assign_waiting().await });
                }
            }
        }
    }

    /// Takes a connected worker: registers it, assigns it what waits, and watches it go.
    pub async fn connected(self: Arc<Self>, peer: P) {
        let worker_id = peer.hello().worker_id.clone();
        let serial = {
            let mut state = self.lock();
            state.serial += 1;
            let serial = state.serial;
            // A reconnect before the old connection was noticed gone: the new one takes over.
            if let Some(old) = state.workers.insert(
                worker_id.clone(),
                Connected {
                    peer: peer.clone(),
                    serial,
                    streams: HashSet::new(),
                },
            ) {
                old.peer.close();
                for stream in old.streams {
                    state.streams.remove(&stream);
                }
            }
            serial
        };
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
        self.assign_waiting().await;
    }

    async fn gone(&self, worker_id: &str, serial: u64) {
        let orphans = {
            let mut state = self.lock();
            match state.workers.get(worker_id) {
                Some(connected) if connected.serial == serial => {}
                _ => return,
            }
            let connected = state.workers.remove(worker_id).expect("checked above");
            for stream in &connected.streams {
                state.streams.remove(stream);
            }
            connected.streams
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
        self.assign_waiting().await;
    }

    /// Assigns every stream that should run and has no worker to a connected worker that can
    /// run its source, the least loaded first.
    async fn assign_waiting(&self) {
        let entries = match self.registry.all() {
            Ok(entries) => entries,
            Err(error) => {
                tracing::error!(error = %error, "cannot read the registry");
                return;
            }
        };
        for entry in entries {
            if entry.desired == Desired::Running && !self.lock().streams.contains_key(&entry.name) {
                self.assign(&entry).await;
            }
        }
    }

    /// Sends `Start` for a stream to a worker, choosing one if it has none.
    async fn assign(&self, entry: &StreamEntry) {
        let chosen = {
            let mut state = self.lock();
            let assigned = state.streams.get(&entry.name).cloned();
            let worker_id = assigned.or_else(|| {
                state
                    .workers
                    .iter()
                    .filter(|(_, w)| w.peer.hello().sources.contains(&entry.config.source.kind))
                    .min_by_key(|(id, w)| (w.streams.len(), (*id).clone()))
                    .map(|(id, _)| id.clone())
            });
            let Some(worker_id) = worker_id else { return };
            let Some(worker) = state.workers.get_mut(&worker_id) else {
                return;
            };
            worker.streams.insert(entry.name.clone());
            let peer = worker.peer.clone();
            state.streams.insert(entry.name.clone(), worker_id.clone());
            (worker_id, peer)
        };
        let (worker_id, peer) = chosen;
        let checkpoint = match self.store.checkpoint(&entry.name) {
            Ok(checkpoint) => checkpoint,
            Err(error) => {
                tracing::error!(stream = %entry.name, error = %error, "cannot read the checkpoint");
                self.unassign(&entry.name, &worker_id);
                return;
            }
        };
        let start = Request::Start(Start {
            stream: entry.name.clone(),
            config: entry.config.clone(),
            checkpoint,
        });
        let answer = tokio::time::timeout(COMMAND_TIMEOUT, peer.request(start))
            .await
            .unwrap_or(Err(Error::Timeout {
                operation: "start",
                after: COMMAND_TIMEOUT,
            }));
        match answer.and_then(Response::into_result) {
            Ok(_) => tracing::info!(stream = %entry.name, worker_id, "stream assigned"),
            Err(error) => {
                tracing::warn!(stream = %entry.name, worker_id, error = %error, "worker did not take the stream");
                self.unassign(&entry.name, &worker_id);
                if error.kind() == ErrorKind::Permanent {
                    self.record_error(
                        &entry.name,
                        format!("worker {worker_id} refused the stream: {error}"),
                    );
                }
            }
        }
    }

    fn unassign(&self, stream: &StreamName, worker_id: &str) {
        let mut state = self.lock();
        if state.streams.get(stream).map(String::as_str) == Some(worker_id) {
            state.streams.remove(stream);
        }
        if let Some(worker) = state.workers.get_mut(worker_id) {
            worker.streams.remove(stream);
        }
    }

    fn record_error(&self, stream: &StreamName, message: String) {
        if let Ok(Some(mut entry)) = self.registry.get(stream) {
            entry.last_error = Some(LastError {
                at: Timestamp::now(),
                message,
            });
            if let Err(error) = self.registry.put(&entry) {
                tracing::error!(stream = %stream, error = %error, "cannot record a stream's error");
            }
        }
    }

    /// Creates or updates a stream and runs it: at once if a worker can take it, else it waits
    /// in state pending. Idempotent; a changed configuration applies from the next run.
    ///
    /// # Errors
    ///
    /// When the registry cannot be written.
    pub async fn start_stream(
        &self,
        name: &StreamName,
        config: StreamConfig,
    ) -> Result<StreamStatus, Error> {
        let previous = self.registry.get(name)?;
        let entry = StreamEntry {
            name: name.clone(),
            config,
            desired: Desired::Running,
            last_error: previous.as_ref().and_then(|e| e.last_error.clone()),
        };
        let changed = previous.as_ref() != Some(&entry);
        if changed {
            self.registry.put(&entry)?;
            self.store.sync().await?;
        }
        // A stream already assigned gets the new configuration through a repeated Start.
        if changed || !self.lock().streams.contains_key(name) {
            self.assign(&entry).await;
        }
        self.status(name)?
            .ok_or_else(|| Error::Bug("a started stream has no status".into()))
    }

    /// Stops a stream: its worker stops at the next page boundary, and this returns once it
    /// has, so no source request starts after it returns. Idempotent. `None` for a stream that
    /// does not exist.
    ///
    /// # Errors
    ///
    /// When the registry cannot be written.
    pub async fn stop_stream(&self, name: &StreamName) -> Result<Option<StreamStatus>, Error> {
        let Some(mut entry) = self.registry.get(name)? else {
            return Ok(None);
        };
        if entry.desired != Desired::Stopped {
            entry.desired = Desired::Stopped;
            self.registry.put(&entry)?;
            self.store.sync().await?;
        }
        self.stop_on_worker(name).await;
        self.status(name)
    }

    async fn stop_on_worker(&self, name: &StreamName) {
        let assigned = {
            let state = self.lock();
            state
                .streams
                .get(name)
                .and_then(|id| state.workers.get(id).map(|w| (id.clone(), w.peer.clone())))
        };
        if let Some((worker_id, peer)) = assigned {
            let answer = tokio::time::timeout(
                COMMAND_TIMEOUT,
                peer.request(Request::Stop {
                    stream: name.clone(),
                }),
            )
            .await
            .unwrap_or(Err(Error::Timeout {
                operation: "stop",
                after: COMMAND_TIMEOUT,
            }));
            match answer.and_then(Response::into_result) {
                Ok(_) => tracing::info!(stream = %name, worker_id, "stream stopped"),
                // A worker that is gone runs nothing; one that comes back is not given it.
                Err(error) => {
                    tracing::warn!(stream = %name, worker_id, error = %error, "stop not confirmed")
                }
            }
            self.unassign(name, &worker_id);
        }
    }

    /// Stops a stream and deletes its configuration and data. Returns whether it existed.
    ///
    /// # Errors
    ///
    /// When the registry or store cannot be written.
    pub async fn delete_stream(&self, name: &StreamName) -> Result<bool, Error> {
        if self.stop_stream(name).await?.is_none() {
            return Ok(false);
        }
        let lifecycle = self.lifecycle(name);
        let _deleting = lifecycle.write().await;
        self.registry.remove(name)?;
        self.store.delete_stream(name).await?;
        Ok(true)
    }

    /// A stream's status, `None` if it does not exist.
    ///
    /// # Errors
    ///
    /// When the registry or store cannot be read.
    pub fn status(&self, name: &StreamName) -> Result<Option<StreamStatus>, Error> {
        let Some(entry) = self.registry.get(name)? else {
            return Ok(None);
        };
        let worker = self.lock().streams.get(name).cloned();
        let state = match (entry.desired, &worker) {
            (Desired::Stopped, _) => StreamState::Stopped,
            (Desired::Running, Some(_)) => StreamState::Running,
            (Desired::Running, None) => StreamState::Pending,
        };
        let last_run = self.store.runs(name, 1)?.into_iter().next();
        let next_run_at = match (state, &last_run) {
            (StreamState::Running, Some(run)) => {
                let interval = i64::try_from(entry.config.interval_secs.saturating_mul(1000))
                    .unwrap_or(i64::MAX);
                Some(Timestamp::from_millis(
                    run.started_at.as_millis().saturating_add(interval),
                ))
            }
            _ => None,
        };
        Ok(Some(StreamStatus {
            counts: self.store.counts(name)?,
            name: entry.name,
            state,
            config: entry.config,
            worker,
            last_run,
            next_run_at,
            last_error: entry.last_error,
        }))
    }

    /// Every stream's status, by name.
    ///
    /// # Errors
    ///
    /// When the registry or store cannot be read.
    pub fn streams(&self) -> Result<Vec<StreamStatus>, Error> {
        self.registry
            .all()?
            .iter()
            .filter_map(|entry| self.status(&entry.name).transpose())
            .collect()
    }

    async fn deliver(&self, from: &Hello, batch: crate::Batch) -> Response {
        let lifecycle = self.lifecycle(&batch.stream);
        let _delivering = lifecycle.read().await;
        // Refusals are permanent: the worker drops what it holds of the stream and stops it;
        // the controller's checkpoint did not move, so whoever runs the stream next fetches it.
        let entry = match self.registry.get(&batch.stream) {
            Ok(Some(entry)) => entry,
            Ok(None) => {
                return Response::refused(&Error::Invalid(format!(
                    "stream {} does not exist",
                    batch.stream
                )));
            }
            Err(error) => {
                return Response::refused(&Error::Unavailable(format!("registry: {error}")))
            }
        };
        if entry.desired == Desired::Stopped {
            return Response::refused(&Error::Invalid(format!(
                "stream {} is stopped",
                batch.stream
            )));
        }
        let assigned = self.lock().streams.get(&batch.stream).cloned();
        if let Some(owner) = assigned {
            if owner != from.worker_id {
                return Response::refused(&Error::Invalid(format!(
                    "stream {} is assigned to worker {owner}, not {}",
                    batch.stream, from.worker_id
                )));
            }
        }
        match self.store.commit(&batch).await {
            Ok(commit) => {
                telemetry::BatchCommitted {
                    stream: &batch.stream,
                    run_id: batch.run_id,
                    seq: batch.seq,
                    commit,
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
            Err(error) => {
                telemetry::BatchCommitFailed {
                    stream: &batch.stream,
                    run_id: batch.run_id,
                    seq: batch.seq,
                    error: &error,
                }
                .emit();
                Response::refused(&error)
            }
        }
    }
}

#[async_trait]
impl<P: Peer> Handler for Controller<P> {
    async fn request(&self, from: &Hello, request: Request) -> Response {
        match request {
            Request::Deliver(batch) => self.deliver(from, batch).await,
            other => Response::refused(&Error::Invalid(format!(
                "a controller takes deliveries, not {}",
                match other {
                    Request::Start(_) => "start",
                    Request::Stop { .. } => "stop",
                    Request::Deliver(_) => "deliver",
                }
            ))),
        }
    }

    async fn event(&self, from: &Hello, event: Event) {
        let result = match &event {
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
                    self.record_error(&finished.stream, error.clone());
                }
                self.store
                    .finish_run(&finished.stream, finished.run_id, &finished.outcome)
                    .await
            }
        };
        if let Err(error) = result {
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
