//! Sinks: where a stream's records are committed.
//!
//! A [`Sink`] commits a batch's records **and** the checkpoint the batch reached in one atomic,
//! idempotent step. That single rule is what makes the pipeline at-least-once in delivery and
//! exactly-once in effect: a batch can be delivered any number of times, and a crash between
//! any two steps leaves either the whole batch with its checkpoint, or neither.

mod memory;
mod progress;

pub use memory::MemorySink;
pub use progress::RunProgress;

use async_trait::async_trait;

use crate::batch::Batch;
use crate::checkpoint::Checkpoint;
use crate::error::Error;
use crate::message::Commit;
use crate::stream::StreamName;

/// Commits batches durably and idempotently.
///
/// # Contract
///
/// - **Atomic**: the batch's records, its identity `(stream, run_id, seq)` and the checkpoint it
///   allows are committed together or not at all. On error nothing of the batch is visible and
///   the stream's stored checkpoint is still the previous one.
/// - **The checkpoint moves only across contiguous `seq`s**: to the batch's `cursor` when every
///   earlier batch of its run is committed, and, when the batch closes a gap, on to the cursor
///   of the highest batch committed without a gap after it. Batches arrive out of order when
///   several are in flight; a checkpoint that jumped past one still in flight would lose its
///   records if that one were lost. [`RunProgress`] implements the
///   rule.
/// - **Idempotent**: a batch whose identity was already committed returns
///   [`Commit::Replayed`] and writes nothing. A replay is an acknowledgement, not an error.
/// - **Upsert by id, newest wins**: a record replaces the stored one with the same id unless the
///   stored one has a newer `updated_at`. An archived record is kept and marked.
/// - **Durable before Ok**: once `commit` returns `Ok`, the batch survives what the sink
///   promises to survive (for the memory sink, nothing; for a disk store, a process kill and a
///   power loss). The caller acknowledges only after that.
///
/// # How other sinks implement it
///
/// - **PostgreSQL** (`tokio-postgres`): one transaction that inserts the identity and the
///   batch's cursor into a ledger table (`INSERT ... ON CONFLICT DO NOTHING`; zero rows inserted
///   means [`Commit::Replayed`], and the transaction is rolled back), upserts the records with
///   `ON CONFLICT (stream, id) DO UPDATE ... WHERE stored.updated_at <= excluded.updated_at`,
///   reads the run's progress row `FOR UPDATE`, applies
///   [`RunProgress::commit`] (reading early batches' cursors
///   from the ledger) and writes the checkpoint row only when it allows; `COMMIT` is the
///   durability point.
/// - **An embedded store** (sled): one batch of writes covering records, identity and
///   checkpoint, then a flush and a sync of the log before returning.
///
/// # Examples
///
/// ```
/// use weld_pipeline::{Batch, Checkpoint, Commit, MemorySink, RunId, Sink, StreamName};
///
/// # tokio_test_block_on(async {
/// let sink = MemorySink::new();
/// let batch = Batch::new(StreamName::new("contacts")?, RunId(1), 0)
///     .with_cursor(Checkpoint::from_bytes("after-page-1"))
///     .with_last(true);
/// assert_eq!(sink.commit(&batch).await?, Commit::Stored { records: 0 });
/// assert_eq!(sink.commit(&batch).await?, Commit::Replayed);
/// assert_eq!(Sink::checkpoint(&sink, &batch.stream).await?, batch.cursor);
/// # Ok::<_, weld_pipeline::Error>(())
/// # }).unwrap();
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// Commits a batch's records and checkpoint in one atomic step.
    ///
    /// # Errors
    ///
    /// A transient error when the store is momentarily unable to commit (the caller retries the
    /// same batch), a permanent one when the batch can never be committed. Either way nothing of
    /// the batch was committed.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes leaves the batch either fully committed or not at
    /// all; the caller cannot tell which, and must deliver it again (which is harmless).
    async fn commit(&self, batch: &Batch) -> Result<Commit, Error>;

    /// The stream's committed checkpoint ([`Checkpoint::start`] for a stream with none): where
    /// its next run starts.
    ///
    /// # Errors
    ///
    /// A transient error when the sink cannot be read.
    async fn checkpoint(&self, stream: &StreamName) -> Result<Checkpoint, Error>;
}

#[async_trait]
impl<S: Sink + ?Sized> Sink for std::sync::Arc<S> {
    async fn commit(&self, batch: &Batch) -> Result<Commit, Error> {
        (**self).commit(batch).await
    }

    async fn checkpoint(&self, stream: &StreamName) -> Result<Checkpoint, Error> {
        (**self).checkpoint(stream).await
    }
}
