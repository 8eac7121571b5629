//! A source that counts what it is asked for, and its factory.

use crate::sync::Locked;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::checkpoint::Checkpoint;
use crate::error::Error;
use crate::source::{BatchStream, Generator, GeneratorParams, Pages, RunContext, Source};

/// A [`Generator`]-backed source that counts page requests and can take time per page.
#[derive(Clone, Debug)]
pub struct CountingSource {
    pages: Pages<Generator>,
    page_delay: Duration,
    started: Arc<AtomicUsize>,
    last_start: Arc<Mutex<Option<Instant>>>,
    runs: Arc<AtomicU64>,
    /// Per run given an inventory, how many records the store held when it started.
    held: Arc<Mutex<Vec<usize>>>,
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
            held: Arc::default(),
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

    /// Per run that was given the store's inventory, how many records it held at the run's
    /// start (read through it page by page, as a reconciling source would).
    pub fn held_at_starts(&self) -> Vec<usize> {
        self.held.locked().clone()
    }

    /// When the last page request started.
    pub fn last_start(&self) -> Option<Instant> {
        *self.last_start.locked()
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
        // Count what the store holds first, when the run has its inventory.
        let (inventory, stream, held) =
            (run.inventory.clone(), run.stream.clone(), self.held.clone());
        let counted = futures::stream::once(async move {
            let inventory = inventory?;
            let (mut count, mut after) = (0, None::<String>);
            loop {
                match inventory.held(&stream, after.as_deref(), 1_000).await {
                    Ok(page) => {
                        count += page.records.len();
                        match page.next {
                            Some(next) => after = Some(next),
                            None => break,
                        }
                    }
                    Err(error) => return Some(Err(error)),
                }
            }
            held.locked().push(count);
            None
        })
        .filter_map(std::future::ready);
        // Count each page when the inner source is polled for it: that is when a real source
        // would send its request.
        let inner = counted.boxed().chain(self.pages.batches(run, from));
        futures::stream::unfold(inner, move |mut inner| {
            let started = started.clone();
            let last_start = last_start.clone();
            let cancel = cancel.clone();
            async move {
                if cancel.is_cancelled() {
                    return None;
                }
                started.fetch_add(1, Ordering::SeqCst);
                *last_start.locked() = Some(Instant::now());
                tokio::time::sleep(delay).await;
                let next = inner.next().await?;
                Some((next, inner))
            }
        })
        .boxed()
    }
}

/// A [`SourceFactory`](crate::source::SourceFactory) of [`CountingSource`]s: the kind
/// `"generator"` with the core generator's parameters (`records`, `page_size`) and
/// `page_delay_ms`, the time each page takes. Every stream built shares the factory's counters.
#[derive(Debug, Default)]
pub struct CountingSources {
    built: Mutex<Vec<CountingSource>>,
}

impl CountingSources {
    /// A factory.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Page requests started by every source it built.
    pub fn pages_started(&self) -> usize {
        let built = self.built.locked();
        built.iter().map(CountingSource::pages_started).sum()
    }

    /// What the stores held at the starts of the runs given an inventory, by every source it
    /// built.
    pub fn held_at_starts(&self) -> Vec<usize> {
        let built = self.built.locked();
        built
            .iter()
            .flat_map(CountingSource::held_at_starts)
            .collect()
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

    /// The registry of the source kinds a test controller accepts: this one.
    pub fn kinds(self: &Arc<Self>) -> crate::source::SourceKinds {
        crate::source::SourceKinds::new().with(self.clone())
    }

    /// The sources of a test worker: this factory.
    pub fn sources(self: &Arc<Self>) -> crate::source::Sources {
        crate::source::Sources::new().with(self.clone())
    }

    /// The generator's parameters and the page delay of a spec.
    fn params(spec: &crate::SourceSpec) -> Result<(GeneratorParams, Duration), Error> {
        let mut generator = spec.clone();
        let delay = match generator.params.remove("page_delay_ms") {
            None => 0,
            Some(delay) => delay.as_u64().ok_or_else(|| {
                Error::Invalid("generator source: page_delay_ms must be a whole number".into())
            })?,
        };
        Ok((
            GeneratorParams::from_spec(&generator)?,
            Duration::from_millis(delay),
        ))
    }
}

impl crate::source::SourceKind for CountingSources {
    fn kind(&self) -> &str {
        "generator"
    }

    fn check(&self, spec: &crate::SourceSpec) -> Result<crate::SourceSpec, Error> {
        Self::params(spec)?;
        Ok(spec.clone())
    }
}

impl crate::source::SourceFactory for CountingSources {
    fn source(
        &self,
        _stream: &crate::StreamName,
        spec: &crate::SourceSpec,
    ) -> Result<Arc<dyn Source>, Error> {
        let (params, delay) = Self::params(spec)?;
        let source = CountingSource::new(params.records, params.page_size, delay);
        self.built.locked().push(source.clone());
        Ok(Arc::new(source))
    }
}
