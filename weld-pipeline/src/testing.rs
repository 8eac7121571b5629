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
#[cfg(test)]
pub(crate) type CounterValue = (String, Vec<(String, String)>, u64);

/// Runs `future` on a paused current-thread runtime with its own metrics recorder, and returns
/// the counters it recorded: `(name, sorted labels, value)`.
#[cfg(test)]
pub(crate) fn with_metrics(future: impl std::future::Future<Output = ()>) -> Vec<CounterValue> {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime")
            .block_on(future)
    });
    snapshotter
        .snapshot()
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

/// The value of the counter with this name and exactly these labels, 0 if absent.
#[cfg(test)]
pub(crate) fn counter_value(counters: &[CounterValue], name: &str, labels: &[(&str, &str)]) -> u64 {
    let mut wanted: Vec<_> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    wanted.sort();
    counters
        .iter()
        .find(|(n, l, _)| n == name && *l == wanted)
        .map_or(0, |(_, _, value)| *value)
}
