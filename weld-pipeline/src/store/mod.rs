//! Storage for data-streams: the [`StreamStore`] trait the controller and the API run on, the
//! types it speaks in, and the embedded sled implementation (feature `sled`, default).
//!
//! A controller needs one thing from storage: a place that keeps, per stream, its registry entry
//! (configuration and desired state), its records, its checkpoint, the ledger of committed batch
//! identities, and its run history, and that commits a delivered batch into all of them in one
//! atomic, durable step. [`StreamStore`] is that place. The controller holds it as
//! `Arc<dyn StreamStore>`, so the same controller and API run on sled today and on another
//! database tomorrow, and every implementation passes the same conformance suite
//! (`weld_pipeline::testing::stores`, feature `testing`).
//!
//! | implementation | where | durable against |
//! |---|---|---|
//! | [`SledStore`] | one sled database in a directory (feature `sled`) | process kill and power loss (group-commit `fdatasync`) |
//!
//! # Adding a store
//!
//! Implement [`Sink`] (`commit` with the contiguity rule below, and `checkpoint`) and
//! [`StreamStore`] for your type, then run the conformance suite against it with
//! `weld_pipeline::store_conformance!`. The controller, the API and the reference services take
//! it as it is: `Controller::new(Arc::new(your_store), kinds)`.

mod entry;
mod for_sources;
mod healing;
mod records;
mod runs;
#[cfg(feature = "sled")]
mod sled;
mod storage;

/// The contiguity rule, at its old path: it is the [`Sink`] contract's, and lives in [`crate::sink`].
pub use crate::sink::RunProgress;
pub use entry::{Desired, LastError, StreamEntry};
pub use healing::{Healing, OpenStore};
pub use records::{decode_token, encode_token, upsert_counts, Archived, Counts, RecordPage};
pub use runs::{RunRecord, RunState};
pub use storage::Storage;

#[cfg(feature = "sled")]
pub use sled::{SledStore, SledStoreConfig, DISK_MARGIN};

#[cfg(feature = "sled")]
pub(crate) use sled::{can_write_beside, open_db, short_of_room};

use async_trait::async_trait;

use crate::checkpoint::Checkpoint;
use crate::error::Error;
use crate::message::RunOutcome;
use crate::record::Timestamp;
use crate::sink::Sink;
use crate::stream::{RunId, StreamName};

/// Everything data-streams keeps: the stream registry, and per stream its records, checkpoint,
/// batch ledger and run history.
///
/// # Contract
///
/// Committing ([`Sink::commit`]) is the heart of it, and every implementation keeps these rules:
///
/// - **One atomic step**: the batch's records, its identity `(stream, run_id, seq)` in the
///   ledger, the run's counts and, when the rule below allows, the checkpoint are committed
///   together or not at all.
/// - **Replays are acknowledgements**: a batch whose identity is in the ledger returns
///   [`Commit::Replayed`](crate::Commit::Replayed) and writes nothing.
/// - **Upsert by id, newest wins**: a record replaces the stored one unless the stored one has a
///   newer `updated_at`; archived records are kept, marked, and counted apart.
/// - **A purge leaves no trace** ([`Record::purge`](crate::Record::purge), a privacy deletion):
///   it deletes the stored record whatever its version (the source never reuses an id, so no
///   stored version can be newer than its knowledge that the record is gone), with everything
///   the store derived from it (PostgreSQL: its rows in the stream's link table), in the same
///   atomic step as the rest of the batch. With nothing stored it stores nothing: no tombstone.
///   The record leaves the live or archived count it was in, and the run counts it in
///   [`RunRecord::purged`] (and, as every record of its batches, in [`RunRecord::records`]).
///   Within one batch, records of an id apply in order: a purge after a version of the id
///   removes it, and a version after a purge is stored as a new record (later at the source;
///   with ids never reused it does not happen). Having no tombstone, a store cannot refuse a
///   version committed after the purge (a batch fetched earlier, delivered later): a source
///   purges only ids it no longer sees, so none is on its way.
/// - **The checkpoint moves only across contiguous `seq`s.** A worker has many deliveries in
///   flight (16 by default), so batch 5 of a run may commit before batch 4. The checkpoint moves
///   to a batch's cursor only when every earlier batch of its run is committed; a batch that
///   closes a gap moves it to the cursor of the highest batch committed without a gap after it.
///   Were it to jump past a batch still in flight, losing that batch (a worker's outbox lost with
///   its disk) would lose its records for good; held back, they are fetched again.
///   [`RunProgress`] implements the rule; use it.
/// - **The epoch fences the checkpoint.** Every stream has an epoch (0 at first) that
///   [`StreamStore::resync`] and [`StreamStore::delete_stream`] raise. A batch whose `epoch` is
///   below the stream's commits its records, ledger entry and run counts, but never moves the
///   checkpoint: batches fetched before a resync, still in a worker's outbox, cannot undo it.
/// - **A run succeeds** when its last batch and every batch before it are committed, and only
///   then: the run is then a complete version of the stream.
/// - **Durable before `Ok`**: what `commit`, [`StreamStore::put_stream`] and
///   [`StreamStore::delete_stream`] return `Ok` for survives what the store promises to survive.
///
/// Reads may see a commit a moment before it is durable (a crash in between takes it back, and
/// its sender, never acknowledged, delivers it again). Paging with [`StreamStore::records`]
/// visits every record that exists from the first page to the last exactly once, in its latest
/// version, also while commits go on.
///
/// # Errors
///
/// Every method fails transiently ([`ErrorKind::Transient`](crate::ErrorKind::Transient)) when
/// storage is momentarily unable (an I/O error, a database away): the caller retries, and a
/// worker keeps its outbox. A stored value that does not decode is a bug.
///
/// # Cancel safety
///
/// Dropping a write's future leaves it either done or not done, never half done; the caller
/// cannot tell which and must retry (every write here is idempotent).
#[async_trait]
pub trait StreamStore: Sink + std::fmt::Debug {
    /// A stream's registry entry, `None` if it does not exist.
    async fn stream(&self, name: &StreamName) -> Result<Option<StreamEntry>, Error>;

    /// Every stream's registry entry, by name.
    async fn streams(&self) -> Result<Vec<StreamEntry>, Error>;

    /// Creates or replaces a stream's registry entry; durable when it returns.
    async fn put_stream(&self, entry: &StreamEntry) -> Result<(), Error>;

    /// Deletes a stream: its registry entry, records, ledger, checkpoint, counts and runs, durable
    /// when it returns, and raises its epoch (which outlives it). Deleting a stream that does not
    /// exist does nothing but that.
    async fn delete_stream(&self, name: &StreamName) -> Result<(), Error>;

    /// The stream's epoch and committed checkpoint, read together: what a `Start` carries.
    async fn resume(&self, stream: &StreamName) -> Result<Resume, Error>;

    /// Raises the stream's epoch and clears its checkpoint in one durable step, so that its next
    /// run reads the source from the start. Nothing stored is dropped: records, ledger and runs
    /// stay, and the full read upserts over them. Returns the new epoch.
    async fn resync(&self, stream: &StreamName) -> Result<u64, Error>;

    /// The stream's live and archived record counts.
    async fn counts(&self, stream: &StreamName) -> Result<Counts, Error>;

    /// A page of the stream's records after `after` (a previous page's `next`), at most `limit`
    /// of those `archived` admits. A page may hold fewer (even none) and still have a `next`:
    /// a store bounds how much one call examines.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for a token this store did not make.
    async fn records(
        &self,
        stream: &StreamName,
        after: Option<&str>,
        limit: usize,
        archived: Archived,
    ) -> Result<RecordPage, Error>;

    /// [`StreamStore::records`] of a stream that exists, `None` when there is no such stream:
    /// what a records page of the API asks. The default reads the registry entry, then the
    /// page; a store that can learn both from one read (PostgreSQL: one statement, not two)
    /// should. No such stream comes before an invalid token.
    async fn existing_records(
        &self,
        stream: &StreamName,
        after: Option<&str>,
        limit: usize,
        archived: Archived,
    ) -> Result<Option<RecordPage>, Error> {
        if self.stream(stream).await?.is_none() {
            return Ok(None);
        }
        self.records(stream, after, limit, archived).await.map(Some)
    }

    /// At most `limit` of the stream's records after `after`, live and archived, without their
    /// documents: what a source's reconciliation compares (see
    /// [`Inventory`](crate::source::Inventory)). The default pages with
    /// [`StreamStore::records`]; a store that can read ids and versions alone should.
    async fn held(
        &self,
        stream: &StreamName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<crate::source::HeldPage, Error> {
        let page = self.records(stream, after, limit, Archived::All).await?;
        Ok(crate::source::HeldPage {
            records: page
                .records
                .into_iter()
                .map(|r| crate::source::Held {
                    id: r.id,
                    updated_at: r.updated_at,
                    archived: r.archived,
                })
                .collect(),
            next: page.next,
        })
    }

    /// The stream's runs, newest first.
    async fn runs(&self, stream: &StreamName, limit: usize) -> Result<Vec<RunRecord>, Error>;

    /// Records that a run started (a worker's report), unless it is already known. Older runs of
    /// the stream still marked running will never finish: they are marked failed.
    async fn start_run(
        &self,
        stream: &StreamName,
        run_id: RunId,
        at: Timestamp,
    ) -> Result<(), Error>;

    /// Records how a run ended (a worker's report). A run already succeeded stays so, and a
    /// reported success changes nothing: success is decided by the commit of the last batch.
    async fn finish_run(
        &self,
        stream: &StreamName,
        run_id: RunId,
        outcome: &RunOutcome,
    ) -> Result<(), Error>;

    /// Waits until everything written so far is durable (a service's last act before it exits).
    async fn sync(&self) -> Result<(), Error>;

    /// Writes something small and makes it durable: whether the store can commit now. A
    /// [`Healing`] store probes a reopened store before it acknowledges anything again. The
    /// default syncs; a store whose sync can succeed with nothing to write should write.
    async fn probe(&self) -> Result<(), Error> {
        self.sync().await
    }

    /// Takes what a source told of `stream`'s fields (see
    /// [`Catalog`](crate::source::Catalog)). The default ignores it: the records are stored
    /// whole either way; a store that can show typed fields (PostgreSQL's typed views) uses it.
    async fn describe(
        &self,
        stream: &StreamName,
        schema: &crate::source::Schema,
    ) -> Result<(), Error> {
        let _ = (stream, schema);
        Ok(())
    }

    /// Whether the store can commit now. A plain store is always [`StoreHealth::Ok`]: it reports
    /// failures as errors; a [`Healing`] store reports the failure it is healing from.
    fn health(&self) -> StoreHealth {
        StoreHealth::Ok
    }
}

/// Where a stream's next run starts: its committed checkpoint, and the epoch it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resume {
    /// The stream's epoch.
    pub epoch: u64,
    /// The committed checkpoint ([`Checkpoint::start`] after a resync).
    pub checkpoint: Checkpoint,
}

/// Whether a store can commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreHealth {
    /// It commits.
    Ok,
    /// It cannot commit, since `since`, because of `reason` (the I/O error, e.g. `No space left on
    /// device`); it heals by itself.
    Failed {
        /// When the failure began (wall clock).
        since: Timestamp,
        /// The latest error of the store or of an attempt to heal it.
        reason: String,
    },
}
