//! Sources: where a stream's records come from.
//!
//! A [`Source`] turns a checkpoint into a stream of [`Batch`]es, one per page, each carrying the
//! cursor reached after it. Most sources are paginated APIs; for them, write one
//! `tower::Service<PageRequest, Response = Page>` that fetches a single page, wrap it in the
//! middleware it needs (rate limit, retry, timeout, transforms), and turn it into a source with
//! [`Pages`]. The per-page service is where the layers belong: a retry retries one page, not a
//! whole run.
//!
//! ```text
//! checkpoint --> PageRequest --[layers]--> fetch one page --> Page{records, cursor, last}
//!                     ^                                            |
//!                     +----------- next cursor, unless last -------+--> Batch{seq, cursor, ...}
//! ```

mod generator;
mod inventory;
mod kinds;
mod pages;
mod schema;

pub use generator::{Generator, GeneratorParams, GeneratorSources};
pub use inventory::{Held, HeldPage, Inventory, MAX_HELD_PER_PAGE};
pub use kinds::{Registry, SourceFactory, SourceKind, SourceKinds, SourceSpec, Sources};
pub use pages::Pages;
pub use schema::{Catalog, Field, FieldKind, Schema};

use std::sync::Arc;

use futures::stream::BoxStream;
use tokio_util::sync::CancellationToken;

use crate::batch::Batch;
use crate::checkpoint::Checkpoint;
use crate::error::Error;
use crate::record::Record;
use crate::stream::{RunId, StreamName};

/// The batches of one run, in order; the stream ends after the batch marked `last`, at the first
/// error, or when the run is cancelled.
pub type BatchStream = BoxStream<'static, Result<Batch, Error>>;

/// What a source knows about the run it serves.
#[derive(Clone, Debug)]
pub struct RunContext {
    /// The stream being synced: every batch carries it.
    pub stream: StreamName,
    /// The run; batches carry it in their identity.
    pub run_id: RunId,
    /// The stream's epoch when the run started (0 until a resync): batches carry it.
    pub epoch: u64,
    /// Cancelled by a stop. A source checks it before it starts each page and starts no request
    /// once it is cancelled.
    pub cancel: CancellationToken,
    /// What the stream's store holds, for a source that reconciles with it; `None` where the
    /// runtime has no store to ask (a source then skips its reconciliation).
    pub inventory: Option<Arc<dyn Inventory>>,
    /// Where the source describes its records' fields for the store; `None` where the runtime
    /// has no store to tell.
    pub catalog: Option<Arc<dyn Catalog>>,
}

impl RunContext {
    /// A new run of `stream` with a fresh id and its own cancellation token.
    pub fn new(stream: StreamName) -> Self {
        RunContext {
            stream,
            run_id: RunId::generate(),
            epoch: 0,
            cancel: CancellationToken::new(),
            inventory: None,
            catalog: None,
        }
    }

    /// The same run, reconciling with `inventory`.
    pub fn with_inventory(mut self, inventory: Arc<dyn Inventory>) -> Self {
        self.inventory = Some(inventory);
        self
    }

    /// The same run, describing its fields to `catalog`.
    pub fn with_catalog(mut self, catalog: Arc<dyn Catalog>) -> Self {
        self.catalog = Some(catalog);
        self
    }
}

/// Pulls a stream's records from an external system, page by page, from a checkpoint.
///
/// # Contract
///
/// - The stream is lazy: no request starts until it is polled, and the next page is fetched only
///   when the previous batch was taken. A runner that stops polling stops the source at a page
///   boundary; dropping the stream abandons a page in flight.
/// - Batches are numbered from `seq` 0 without gaps, carry the run's id, and each carries the
///   cursor from which the next page would be fetched. Exactly one batch, the final one, has
///   `last` set; a run with no records still yields one empty `last` batch, so its end and its
///   cursor are committed.
/// - Once `run.cancel` is cancelled, no new request starts; the stream ends without an error.
/// - Errors are [`Error`]s with a kind: a transient one that the source's own retry layer could
///   not overcome, or a permanent one. Either ends the stream.
///
/// # Examples
///
/// A source that yields its records in one page:
///
/// ```
/// use futures::stream::{self, StreamExt};
/// use weld_pipeline::{Batch, Checkpoint, Record, RunContext, Source, BatchStream};
///
/// struct Fixed(Vec<Record>);
///
/// impl Source for Fixed {
///     fn batches(&self, run: &RunContext, _from: Checkpoint) -> BatchStream {
///         let batch = Batch::new(run.stream.clone(), run.run_id, 0)
///             .with_epoch(run.epoch)
///             .with_records(self.0.clone())
///             .with_cursor(Checkpoint::from_bytes("done"))
///             .with_last(true);
///         stream::iter([Ok(batch)]).boxed()
///     }
/// }
/// ```
pub trait Source: Send + Sync + 'static {
    /// The batches of one run, starting at `from`.
    fn batches(&self, run: &RunContext, from: Checkpoint) -> BatchStream;
}

impl<S: Source + ?Sized> Source for std::sync::Arc<S> {
    fn batches(&self, run: &RunContext, from: Checkpoint) -> BatchStream {
        (**self).batches(run, from)
    }
}

/// A request for one page: the page that starts at `cursor`.
#[derive(Clone, Debug)]
pub struct PageRequest {
    /// The stream being synced.
    pub stream: StreamName,
    /// Where the page starts.
    pub cursor: Checkpoint,
    /// What the stream's store holds ([`RunContext::inventory`]).
    pub inventory: Option<Arc<dyn Inventory>>,
    /// Where to describe the stream's fields ([`RunContext::catalog`]).
    pub catalog: Option<Arc<dyn Catalog>>,
}

/// One page of records and where the next one starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// The records on the page.
    pub records: Vec<Record>,
    /// The cursor after this page: where the next page starts, or, on the last page, where the
    /// next run starts.
    pub cursor: Checkpoint,
    /// Whether this is the last page of the run.
    pub last: bool,
    /// How many of `records` repair the store: found missing, stale or gone for good by a
    /// reconciliation (see [`Batch::repaired`](crate::Batch::repaired)).
    pub repaired: u64,
}
