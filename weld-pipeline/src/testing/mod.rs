//! Test seams shared by this crate's tests and by crates built on it (feature `testing`).
//!
//! - [`Scripted`]: a tower service that answers from a script and records when it was called;
//! - [`FailingSink`]: a sink that fails the commits you tell it to, around a [`MemorySink`];
//! - [`CountingSource`]: a source that counts the pages it starts and can be slowed down, to see
//!   exactly what a scheduler or runner asked for and when.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use tower::Service;

use crate::batch::Batch;
use crate::checkpoint::Checkpoint;
use crate::error::{BoxError, Error};
use crate::message::Commit;
use crate::message::Request;
use crate::sink::{MemorySink, Sink};
use crate::source::{BatchStream, Generator, PageRequest, Pages, RunContext, Source};

/// A service answering each call with the next result of a script, recording the tokio instant
/// of every call. Clones share the script.
#[derive(Clone, Debug)]
pub struct Scripted<T> {
    state: Arc<Mutex<ScriptState<T>>>,
}

#[derive(Debug)]
struct ScriptState<T> {
    script: VecDeque<Result<T, Error>>,
    /// What to answer once the script has run out.
    then: Option<T>,
    calls: Vec<Instant>,
}

impl<T: Clone + Send + 'static> Scripted<T> {
    /// Answers with `script`, in order; a call past its end is a bug error.
    pub fn new(script: impl IntoIterator<Item = Result<T, Error>>) -> Self {
        Scripted {
            state: Arc::new(Mutex::new(ScriptState {
                script: script.into_iter().collect(),
                then: None,
                calls: Vec::new(),
            })),
        }
    }

    /// Answers every call with `value`.
    pub fn always(value: T) -> Self {
        let scripted = Scripted::new([]);
        scripted.lock().then = Some(value);
        scripted
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ScriptState<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many calls were made.
    pub fn calls(&self) -> usize {
        self.lock().calls.len()
    }

    /// When each call was made.
    pub fn call_times(&self) -> Vec<Instant> {
        self.lock().calls.clone()
    }

    fn next(&self) -> Result<T, BoxError> {
        let mut state = self.lock();
        state.calls.push(Instant::now());
        match state.script.pop_front() {
            Some(result) => result.map_err(Into::into),
            None => state
                .then
                .clone()
                .ok_or_else(|| Error::Bug("the script ran out".into()).into()),
        }
    }
}

/// Implements `Service<$request>` for [`Scripted`]: one impl per request type the tests use, so
/// that calls infer their types.
macro_rules! scripted_service {
    ($($request:ty),*) => {$(
        impl<T: Clone + Send + 'static> Service<$request> for Scripted<T> {
            type Response = T;
            type Error = BoxError;
            type Future = std::future::Ready<Result<T, BoxError>>;

            fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
                Poll::Ready(Ok(()))
            }

            fn call(&mut self, _request: $request) -> Self::Future {
                std::future::ready(self.next())
            }
        }
    )*};
}

scripted_service!((), PageRequest, Request);

/// A batch `seq` whose commits fail, and the error they fail with.
type SeqFailure = (u64, fn() -> Error);

/// A [`MemorySink`] whose commits fail on demand.
#[derive(Clone, Debug, Default)]
pub struct FailingSink {
    /// The sink that stores what is not failed.
    pub inner: MemorySink,
    fail: Arc<Mutex<VecDeque<Error>>>,
    fail_at_seq: Arc<Mutex<Option<SeqFailure>>>,
}

impl FailingSink {
    /// A sink that fails nothing until told to.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next commit fails with `error`, without writing anything.
    pub fn fail_next(&self, error: Error) {
        self.fail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(error);
    }

    /// Every commit of a batch with this `seq` fails with `error()`.
    pub fn fail_seq(&self, seq: u64, error: fn() -> Error) {
        *self.fail_at_seq.lock().unwrap_or_else(|e| e.into_inner()) = Some((seq, error));
    }
}

#[async_trait]
impl Sink for FailingSink {
    async fn commit(&self, batch: &Batch) -> Result<Commit, Error> {
        if let Some(error) = self
            .fail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
        {
            return Err(error);
        }
        if let Some((seq, error)) = *self.fail_at_seq.lock().unwrap_or_else(|e| e.into_inner()) {
            if batch.seq == seq {
                return Err(error());
            }
        }
        self.inner.commit(batch).await
    }
}

/// A [`Generator`]-backed source that counts page requests and can take time per page.
#[derive(Clone, Debug)]
pub struct CountingSource {
    pages: Pages<Generator>,
    page_delay: Duration,
    started: Arc<AtomicUsize>,
    last_start: Arc<Mutex<Option<Instant>>>,
    runs: Arc<AtomicU64>,
}

impl CountingSource {
    /// `records` generated contacts, `page_size` to a page, each page taking `page_delay`
    /// (of tokio time: pause the clock in tests).
    pub fn new(records: u64, page_size: u64, page_delay: Duration) -> Self {
        CountingSource {
            pages: Pages::new(
                Generator::contacts(records)
                    .page_size(page_size)
                    .record_bytes(64),
            ),
            page_delay,
            started: Arc::new(AtomicUsize::new(0)),
            last_start: Arc::new(Mutex::new(None)),
            runs: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Page requests started so far.
    pub fn pages_started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }

    /// Runs started so far.
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::SeqCst)
    }

    /// When the last page request started.
    pub fn last_start(&self) -> Option<Instant> {
        *self.last_start.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Source for CountingSource {
    fn batches(&self, run: &RunContext, from: Checkpoint) -> BatchStream {
        use futures::StreamExt;
        self.runs.fetch_add(1, Ordering::SeqCst);
        let started = self.started.clone();
        let last_start = self.last_start.clone();
        let delay = self.page_delay;
        let cancel = run.cancel.clone();
        // Count each page when the inner source is polled for it: that is when a real source
        // would send its request.
        let inner = self.pages.batches(run, from);
        futures::stream::unfold(inner, move |mut inner| {
            let started = started.clone();
            let last_start = last_start.clone();
            let cancel = cancel.clone();
            async move {
                if cancel.is_cancelled() {
                    return None;
                }
                started.fetch_add(1, Ordering::SeqCst);
                *last_start.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                tokio::time::sleep(delay).await;
                let next = inner.next().await?;
                Some((next, inner))
            }
        })
        .boxed()
    }
}

/// A counter as recorded: name, sorted labels, value.
pub type CounterValue = (String, Vec<(String, String)>, u64);

fn counters_of(snapshot: metrics_util::debugging::Snapshot) -> Vec<CounterValue> {
    use metrics_util::debugging::DebugValue;
    snapshot
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| match value {
            DebugValue::Counter(n) => {
                let key = key.key();
                let mut labels: Vec<_> = key
                    .labels()
                    .map(|l| (l.key().to_string(), l.value().to_string()))
                    .collect();
                labels.sort();
                Some((key.name().to_string(), labels, n))
            }
            _ => None,
        })
        .collect()
}

/// Runs `future` on a paused current-thread runtime with its own metrics recorder, and returns
/// the counters it recorded.
pub fn with_metrics(future: impl std::future::Future<Output = ()>) -> Vec<CounterValue> {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime")
            .block_on(future)
    });
    counters_of(snapshotter.snapshot())
}

/// The sum of the counters with this name whose labels include all of `labels`.
pub fn counter_value(counters: &[CounterValue], name: &str, labels: &[(&str, &str)]) -> u64 {
    counters
        .iter()
        .filter(|(n, found, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| found.iter().any(|(fk, fv)| fk == k && fv == v))
        })
        .map(|(_, _, value)| value)
        .sum()
}

/// The process-wide metrics recorder for integration tests: installed on first use; read the
/// counters at any time with [`global_counters`].
pub fn global_counters() -> Vec<CounterValue> {
    static SNAPSHOTTER: std::sync::OnceLock<metrics_util::debugging::Snapshotter> =
        std::sync::OnceLock::new();
    let snapshotter = SNAPSHOTTER.get_or_init(|| {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        // Another recorder may already be installed by the embedding test; then there is
        // nothing to read from this one.
        let _ = recorder.install();
        snapshotter
    });
    counters_of(snapshotter.snapshot())
}

/// A [`SourceFactory`](crate::runtime::SourceFactory) of [`CountingSource`]s: the kind
/// `"generator"` with parameters `records`, `page_size` and `page_delay_ms`. Every stream built
/// shares the factory's counters.
#[cfg(feature = "sled")]
#[derive(Debug, Default)]
pub struct GeneratorSources {
    built: Mutex<Vec<CountingSource>>,
}

#[cfg(feature = "sled")]
impl GeneratorSources {
    /// A factory.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Page requests started by every source it built.
    pub fn pages_started(&self) -> usize {
        let built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        built.iter().map(CountingSource::pages_started).sum()
    }

    /// A stream configuration for a generator source.
    pub fn config(
        records: u64,
        page_size: u64,
        page_delay_ms: u64,
        interval_secs: u64,
    ) -> crate::StreamConfig {
        serde_json::from_value(serde_json::json!({
            "source": {"kind": "generator", "records": records, "page_size": page_size, "page_delay_ms": page_delay_ms},
            "interval_secs": interval_secs,
        }))
        .expect("a valid config")
    }
}

#[cfg(feature = "sled")]
impl crate::runtime::SourceFactory for GeneratorSources {
    fn kinds(&self) -> Vec<String> {
        vec!["generator".into()]
    }

    fn source(
        &self,
        _stream: &crate::StreamName,
        spec: &crate::SourceSpec,
    ) -> Result<Arc<dyn Source>, Error> {
        if spec.kind != "generator" {
            return Err(Error::Invalid(format!(
                "unknown source kind {:?}",
                spec.kind
            )));
        }
        let number = |name: &str, default: u64| {
            spec.params
                .get(name)
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(default)
        };
        let source = CountingSource::new(
            number("records", 1_000),
            number("page_size", 100),
            Duration::from_millis(number("page_delay_ms", 0)),
        );
        self.built
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(source.clone());
        Ok(Arc::new(source))
    }
}

#[cfg(feature = "sled")]
pub mod flows;

/// Both ends of a network for the runtime tests: the transport a controller listens on and the
/// one a worker dials (for TCP: the controller's bound address, once it has listened).
#[cfg(feature = "sled")]
pub trait Network: Send + Sync + 'static {
    /// The transport.
    type Transport: crate::Transport + Clone;

    /// The controller's side.
    fn controller(&self) -> Self::Transport;

    /// A worker's side. Called after the controller first listened.
    fn worker(&self) -> Self::Transport;
}

#[cfg(feature = "sled")]
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
#[cfg(feature = "sled")]
pub type PeerOf<N> = <<N as Network>::Transport as crate::Transport>::Peer;

/// A controller in its own tokio runtime, as if in its own process: [`ControllerProcess::crash`]
/// drops the runtime and every task in it at whatever await point it was, without any shutdown,
/// like a kill (sled itself still flushes its buffers when its last handle drops: the real
/// process kills of `tests/crash_loop.rs` and `tests/failpoints.rs` cover what it cannot).
#[cfg(feature = "sled")]
pub struct ControllerProcess<N: Network> {
    runtime: Option<tokio::runtime::Runtime>,
    /// The controller.
    pub controller: Arc<crate::runtime::Controller<PeerOf<N>>>,
}

#[cfg(feature = "sled")]
impl<N: Network> std::fmt::Debug for ControllerProcess<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerProcess").finish_non_exhaustive()
    }
}

#[cfg(feature = "sled")]
fn process_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

#[cfg(feature = "sled")]
impl<N: Network> ControllerProcess<N> {
    /// Opens a controller on `dir` and has it accept workers on the network.
    pub fn start(dir: &std::path::Path, network: &N) -> Self {
        use crate::transport::Transport;
        let runtime = process_runtime();
        let controller =
            crate::runtime::Controller::open(&crate::runtime::ControllerConfig::new(dir))
                .expect("the controller opens");
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
#[cfg(feature = "sled")]
pub struct WorkerProcess<N: Network> {
    runtime: Option<tokio::runtime::Runtime>,
    shutdown: tokio_util::sync::CancellationToken,
    running: Option<tokio::task::JoinHandle<Result<(), Error>>>,
    /// The worker.
    pub worker: Arc<crate::runtime::Worker<N::Transport>>,
}

#[cfg(feature = "sled")]
impl<N: Network> std::fmt::Debug for WorkerProcess<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerProcess").finish_non_exhaustive()
    }
}

#[cfg(feature = "sled")]
impl<N: Network> WorkerProcess<N> {
    /// Opens a worker and has it connect over the network.
    pub fn start(
        config: crate::runtime::WorkerConfig,
        network: &N,
        sources: Arc<GeneratorSources>,
    ) -> Self {
        let runtime = process_runtime();
        let worker = crate::runtime::Worker::open(config, network.worker(), sources)
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
#[cfg(feature = "sled")]
pub fn stored_ids(store: &crate::store::Store, stream: &crate::StreamName) -> Vec<u64> {
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

/// Waits, in real time, until `condition` holds, checking every 10 ms.
///
/// # Panics
///
/// When it does not hold within `deadline`, naming `what`.
pub fn wait_until(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + deadline;
    while !condition() {
        assert!(
            std::time::Instant::now() < until,
            "timed out waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
