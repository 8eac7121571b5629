//! A controller and a worker each in its own tokio runtime, as if in its own process, on any
//! network.

use std::sync::Arc;
use std::time::Duration;

use super::CountingSources;
use crate::error::Error;

/// Both ends of a network for the runtime tests: the transport a controller listens on and the
/// one a worker dials (for TCP: the controller's bound address, once it has listened).
pub trait Network: Send + Sync + 'static {
    /// The transport both sides use.
    type Transport: crate::Transport + Clone;

    /// The controller's side.
    fn controller(&self) -> Self::Transport;

    /// A worker's side. Called after the controller first listened.
    fn worker(&self) -> Self::Transport;
}

impl Network for crate::transport::MemoryTransport {
    type Transport = crate::transport::MemoryTransport;

    fn controller(&self) -> Self::Transport {
        self.clone()
    }

    fn worker(&self) -> Self::Transport {
        self.clone()
    }
}

/// The peer type of a network's transport.
pub type PeerOf<N> = <<N as Network>::Transport as crate::Transport>::Peer;

/// A controller in its own tokio runtime, as if in its own process: [`ControllerProcess::crash`]
/// drops the runtime and every task in it at whatever await point it was, without any shutdown,
/// like a kill (sled itself still flushes its buffers when its last handle drops: the real
/// process kills of `tests/crash_loop.rs` and `tests/failpoints.rs` cover what it cannot).
pub struct ControllerProcess<N: Network> {
    runtime: Option<tokio::runtime::Runtime>,
    /// The controller, to drive and inspect.
    pub controller: Arc<crate::runtime::Controller<PeerOf<N>>>,
    /// Its store, for reads without a runtime.
    pub store: crate::store::SledStore,
}

impl<N: Network> std::fmt::Debug for ControllerProcess<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerProcess").finish_non_exhaustive()
    }
}

fn process_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

impl<N: Network> ControllerProcess<N> {
    /// Opens a controller on a sled store in `dir`, accepting the `generator` kind of
    /// [`CountingSources`], and has it accept workers on the network.
    pub fn start(dir: &std::path::Path, network: &N) -> Self {
        use crate::transport::Transport;
        let runtime = process_runtime();
        let store = crate::store::SledStore::open(&crate::store::SledStoreConfig::new(dir))
            .expect("the store opens");
        let controller = crate::runtime::Controller::new(
            Arc::new(store.clone()),
            CountingSources::new().kinds(),
        );
        let listener = runtime
            .block_on(network.controller().listen(controller.clone()))
            .expect("it listens");
        runtime.spawn(
            controller
                .clone()
                .serve(listener, tokio_util::sync::CancellationToken::new()),
        );
        ControllerProcess {
            runtime: Some(runtime),
            controller,
            store,
        }
    }

    /// Runs a future on the controller's runtime.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.as_ref().expect("running").block_on(future)
    }

    /// Kills it: every task is dropped where it stands.
    pub fn crash(mut self) {
        let runtime = self.runtime.take().expect("running");
        let controller = self.controller.clone();
        drop(self);
        runtime.shutdown_timeout(Duration::from_secs(10));
        assert_eq!(
            Arc::strong_count(&controller),
            1,
            "something outlived the crashed controller"
        );
    }
}

/// A worker in its own tokio runtime, as if in its own process; see [`ControllerProcess`].
pub struct WorkerProcess<N: Network> {
    runtime: Option<tokio::runtime::Runtime>,
    shutdown: tokio_util::sync::CancellationToken,
    running: Option<tokio::task::JoinHandle<Result<(), Error>>>,
    /// The worker, to inspect (its outbox).
    pub worker: Arc<crate::runtime::Worker<N::Transport>>,
}

impl<N: Network> std::fmt::Debug for WorkerProcess<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerProcess").finish_non_exhaustive()
    }
}

impl<N: Network> WorkerProcess<N> {
    /// Opens a worker and has it connect over the network.
    pub fn start(
        config: crate::runtime::WorkerConfig,
        network: &N,
        sources: Arc<CountingSources>,
    ) -> Self {
        let runtime = process_runtime();
        let worker = crate::runtime::Worker::open(config, network.worker(), sources.sources())
            .expect("the worker opens");
        let shutdown = tokio_util::sync::CancellationToken::new();
        let running = runtime.spawn(worker.clone().run(shutdown.clone()));
        WorkerProcess {
            runtime: Some(runtime),
            shutdown,
            running: Some(running),
            worker,
        }
    }

    /// Kills it: every task is dropped where it stands.
    pub fn crash(mut self) {
        let runtime = self.runtime.take().expect("running");
        drop(self.running.take());
        drop(self);
        runtime.shutdown_timeout(Duration::from_secs(10));
    }

    /// Shuts it down cleanly: streams stop at their page boundary, the outbox is flushed.
    ///
    /// # Errors
    ///
    /// What the worker's run returned.
    pub fn shut_down(mut self) -> Result<(), Error> {
        let runtime = self.runtime.take().expect("running");
        self.shutdown.cancel();
        let running = self.running.take().expect("running");
        let result = runtime
            .block_on(running)
            .map_err(|e| Error::Bug(format!("the worker task failed: {e}")))?;
        drop(self);
        runtime.shutdown_timeout(Duration::from_secs(10));
        result
    }
}

/// Every record id of a stream (numeric ids, as the generated sources make), paging through
/// the store as the API does: in key order, each once.
///
/// # Panics
///
/// When the store cannot be read or an id is not a number.
pub fn stored_ids(store: &crate::store::SledStore, stream: &crate::StreamName) -> Vec<u64> {
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .records(stream, after.as_deref(), 500, crate::store::Archived::All)
            .expect("the store reads");
        ids.extend(
            page.records
                .iter()
                .map(|r| r.id.parse::<u64>().expect("a numeric id")),
        );
        match page.next {
            Some(next) => after = Some(next),
            None => return ids,
        }
    }
}
