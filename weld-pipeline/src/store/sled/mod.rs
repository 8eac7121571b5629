//! The sled store: the registry and every stream's records, checkpoint, batch ledger and run
//! history in one embedded database, made durable before anything is acknowledged.
//!
//! # What a commit does
//!
//! [`SledStore::commit`] (the [`Sink`](crate::sink::Sink) implementation) writes, in **one** sled batch (atomic: after
//! a crash all of it or none of it is there):
//! - each record, upserted by id unless the stored version is newer, with the live and archived
//!   counts adjusted in the same write (so counting is O(1)); a purge removes the record's key
//!   whatever its version (a record's links live in its document, so they go with it; nothing
//!   else is kept by id) and leaves its count;
//! - the batch's identity `(stream, run_id, seq)` in a ledger: a batch whose identity is there is
//!   a replay, acknowledged again without a second write;
//! - the stream's checkpoint, moved by [`RunProgress`] only across contiguous `seq`s;
//! - the run's history entry (counts, and `succeeded` once the last batch and all before it are
//!   in).
//!
//! It then waits for the write to be durable and only then returns `Ok`, which is when the
//! controller acknowledges.
//!
//! # What "durable" means
//!
//! An acknowledged batch survives a process kill **and** a power loss:
//! - sled 0.34's `flush` writes its log buffers with `pwrite` and `sync_file_range(WAIT_BEFORE |
//!   WRITE | WAIT_AFTER)`. That pushes the pages to the device but flushes neither the drive's
//!   volatile cache nor the file's metadata (its size, as the log grows), so on its own it
//!   survives a process kill (the kernel has the pages) but not a power loss (sled issues 1351
//!   and 1452). sled writes items larger than a quarter of a segment to separate blob files with
//!   no sync at all.
//! - So after each flush the store calls `fdatasync` on sled's log file (`<dir>/db`), which
//!   flushes the data, the metadata needed to read it back, and the drive's cache; and on any
//!   blob files and their directory.
//! - That flush-and-sync is a **group commit**: a commit that finds a round running waits for the
//!   next one, and one round makes every write before it durable. Durability costs one sync per
//!   group, not one per batch (about 3,000 syncs/s are possible on this project's machines: one
//!   sync per batch of 100 would cap ingestion near 300k records/s).
//! - A failed sync stops the store acknowledging anything until it is reopened: after a failed
//!   `fdatasync` the kernel may have dropped the pages it could not write, and a later sync that
//!   succeeds would not bring them back. Commits then fail as transient; workers keep their
//!   outboxes and deliver again once the controller restarts.
//! - The database's directory (and its parent) is synced when the store opens, so a power loss
//!   cannot take away the files themselves.
//! - What a kill between the write and the sync loses: nothing acknowledged. The write may or may
//!   not be on disk after restart; either way the batch was not acknowledged, its worker sends it
//!   again, and the ledger makes that harmless.
//!
//! # Memory
//!
//! sled's page cache is bounded by [`SledStoreConfig::cache_bytes`] (32 MiB by default). Beyond
//! the cache, sled keeps some bookkeeping for every node of its tree in memory for as long as
//! the database is open, and a leaf holds at most 16 keys: about 15-17 MiB per million records
//! stored, whatever their size (sled alone, records of 100 B, 400 B and 1 KiB alike). A
//! controller ingesting a million records of 1 KiB holds 84-89 MiB of resident memory, three
//! million 122 MiB: past about three million records, a controller on sled needs more than 128
//! MiB, and a store whose memory does not grow with its data (a database server) is the better
//! home.
//!
//! # The registry
//!
//! The stream registry is a second tree of the same database (`registry`, one JSON entry per
//! stream name), so a registry write is made durable by the same group sync as the commits.

mod commit;
mod disk;
mod keys;
mod registry;
mod runs;
mod sync;

pub use disk::DISK_MARGIN;
pub(crate) use disk::{can_write_beside, open_db, short_of_room};

use crate::sync::Locked;
use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::records::{decode_token, encode_token};
use super::{Archived, Counts, RecordPage, Resume, RunRecord, StreamEntry, StreamStore};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, ErrorKind};
use crate::message::RunOutcome;
use crate::record::Timestamp;
use crate::stream::{RunId, StreamName};
use keys::{BATCH, CHECKPOINT, COUNTS, EPOCH, RECORD, RUN};
use sync::GroupSync;

/// How to open a [`SledStore`].
#[derive(Clone, Debug)]
pub struct SledStoreConfig {
    /// The directory of the sled database (created if missing).
    pub path: PathBuf,
    /// The most memory sled's page cache may use. Reads beyond it go to disk.
    pub cache_bytes: u64,
}

impl SledStoreConfig {
    /// A store in `path` with a 32 MiB cache.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SledStoreConfig {
            path: path.into(),
            cache_bytes: 32 * 1024 * 1024,
        }
    }
}

/// The durable store of a controller, on sled. Cheap to clone; clones share the database.
#[derive(Clone, Debug)]
pub struct SledStore {
    tree: sled::Tree,
    registry: sled::Tree,
    sync: Arc<GroupSync>,
    /// One writer per stream at a time: a commit reads stored versions before it writes.
    writers: Arc<Mutex<HashMap<StreamName, Arc<tokio::sync::Mutex<()>>>>>,
    /// The database's directory, whose disk a commit checks for room.
    dir: Arc<PathBuf>,
}

fn storage_error(error: sled::Error) -> Error {
    match error {
        sled::Error::Io(io) => Error::new(ErrorKind::Transient, io),
        other => Error::new(ErrorKind::Bug, format!("sled: {other}")),
    }
}

impl SledStore {
    /// Opens (or creates) the store in `config.path`.
    ///
    /// # Errors
    ///
    /// When the directory cannot be created or the database opened (another process holds it,
    /// or it is corrupt).
    pub fn open(config: &SledStoreConfig) -> Result<Self, Error> {
        // No periodic flush: every commit flushes and syncs in its group round, and a flusher
        // thread failing on a full disk would log twice a second for as long as it lasts.
        let db = open_db(&config.path, config.cache_bytes, None, "store")?;
        Self::from_db(db, &config.path)
    }

    /// A store in an already open database, kept in `dir`.
    ///
    /// # Errors
    ///
    /// When the database's log file cannot be opened for syncing.
    pub fn from_db(db: sled::Db, dir: &Path) -> Result<Self, Error> {
        let tree = db.open_tree("store").map_err(storage_error)?;
        let registry = db.open_tree("registry").map_err(storage_error)?;
        let sync = Arc::new(GroupSync::new(db, dir)?);
        Ok(SledStore {
            tree,
            registry,
            sync,
            writers: Arc::default(),
            dir: Arc::new(dir.to_path_buf()),
        })
    }

    fn writer(&self, stream: &StreamName) -> Arc<tokio::sync::Mutex<()>> {
        let mut writers = self.writers.locked();
        writers.entry(stream.clone()).or_default().clone()
    }

    /// The stream's committed checkpoint ([`Checkpoint::start`] if none).
    ///
    /// # Errors
    ///
    /// When the store cannot be read.
    pub fn checkpoint(&self, stream: &StreamName) -> Result<Checkpoint, Error> {
        let value = self
            .tree
            .get(keys::stream_key(CHECKPOINT, stream))
            .map_err(storage_error)?;
        Ok(value.map_or_else(Checkpoint::start, |v| Checkpoint::from_bytes(v.to_vec())))
    }

    /// The stream's epoch: 0 until its first resync or deletion.
    ///
    /// # Errors
    ///
    /// When the store cannot be read.
    pub fn epoch(&self, stream: &StreamName) -> Result<u64, Error> {
        let value = self
            .tree
            .get(keys::stream_key(EPOCH, stream))
            .map_err(storage_error)?;
        Ok(value
            .and_then(|v| <[u8; 8]>::try_from(&v[..]).ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// Raises the stream's epoch and clears its checkpoint, in one write, durable when it
    /// returns: the next run reads the source from the start, and no batch of an earlier epoch
    /// moves the checkpoint again. Records, ledger and runs stay. Returns the new epoch.
    ///
    /// # Errors
    ///
    /// When the store cannot be written or synced.
    pub async fn resync(&self, stream: &StreamName) -> Result<u64, Error> {
        let epoch = {
            let writer = self.writer(stream);
            let _writing = writer.lock().await;
            let epoch = self.epoch(stream)? + 1;
            let mut batch = sled::Batch::default();
            batch.insert(keys::stream_key(EPOCH, stream), &epoch.to_be_bytes()[..]);
            batch.remove(keys::stream_key(CHECKPOINT, stream));
            self.tree.apply_batch(batch).map_err(storage_error)?;
            epoch
        };
        self.sync.sync().await?;
        Ok(epoch)
    }

    /// The stream's live and archived record counts, in O(1).
    ///
    /// # Errors
    ///
    /// When the store cannot be read.
    pub fn counts(&self, stream: &StreamName) -> Result<Counts, Error> {
        let value = self
            .tree
            .get(keys::stream_key(COUNTS, stream))
            .map_err(storage_error)?;
        Ok(value.map_or_else(Counts::default, |v| keys::decode_counts(&v)))
    }

    /// Whether a batch identity is committed.
    ///
    /// # Errors
    ///
    /// When the store cannot be read.
    pub fn is_committed(
        &self,
        stream: &StreamName,
        run_id: RunId,
        seq: u64,
    ) -> Result<bool, Error> {
        self.tree
            .contains_key(keys::batch_key(stream, run_id, seq))
            .map_err(storage_error)
    }

    /// A page of a stream's records after `after` (a token from a previous page's `next`).
    ///
    /// Paging visits every record that exists from the first page to the last exactly once, in
    /// its latest version, also while commits go on: keys never move, a record's key is its id.
    /// Reads see a commit as soon as it is written, a few milliseconds before the sync that makes
    /// it durable and lets it be acknowledged; a crash in between takes it back, and its sender,
    /// never acknowledged, delivers it again.
    /// One call examines at most 10,000 records: with a filter that matches few of them, a page
    /// can hold fewer than `limit` records (even none) and still have a `next`.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for a token this store did not make; otherwise when the store cannot be
    /// read.
    pub fn records(
        &self,
        stream: &StreamName,
        after: Option<&str>,
        limit: usize,
        archived: Archived,
    ) -> Result<RecordPage, Error> {
        let prefix = keys::stream_prefix(RECORD, stream);
        let start = match after {
            None => Bound::Included(prefix.clone()),
            Some(token) => Bound::Excluded(keys::record_key(stream, &decode_token(token)?)),
        };
        let mut end = prefix.clone();
        // The prefix ends in 00; the next stream's records start at 01.
        *end.last_mut().expect("a prefix is never empty") = 1;
        let mut records = Vec::new();
        let mut examined: Option<sled::IVec> = None;
        for (scanned, entry) in self.tree.range((start, Bound::Excluded(end))).enumerate() {
            let (key, value) = entry.map_err(storage_error)?;
            if let (MAX_SCANNED_PER_PAGE, Some(examined)) = (scanned, &examined) {
                // A filter that matches few records must not read a whole stream in one call:
                // the page ends short, and its token resumes the scan after the last record
                // examined.
                let id = keys::id_of_record_key(examined, prefix.len())?;
                return Ok(RecordPage {
                    records,
                    next: Some(encode_token(&id)),
                });
            }
            let head = keys::decode_head(&value)?;
            examined = Some(key.clone());
            if !archived.admits(head.archived) {
                continue;
            }
            let id = keys::id_of_record_key(&key, prefix.len())?;
            records.push(keys::decode_record(id, value)?);
            if records.len() == limit.max(1) {
                let next = records.last().map(|r| encode_token(&r.id));
                return Ok(RecordPage { records, next });
            }
        }
        Ok(RecordPage {
            records,
            next: None,
        })
    }

    /// Deletes everything of a stream: records, ledger, checkpoint, counts and runs, then its
    /// registry entry. A crash half way leaves a registered stream without data, which its next
    /// run fetches again from the start; never data that a new stream of the name would resume
    /// from.
    ///
    /// # Errors
    ///
    /// When the store cannot be written or synced.
    pub async fn delete_stream(&self, stream: &StreamName) -> Result<(), Error> {
        let writer = self.writer(stream);
        let _writing = writer.lock().await;
        let mut batch = sled::Batch::default();
        for kind in [RECORD, BATCH, RUN] {
            for key in self
                .tree
                .scan_prefix(keys::stream_prefix(kind, stream))
                .keys()
            {
                batch.remove(key.map_err(storage_error)?);
            }
        }
        batch.remove(keys::stream_key(CHECKPOINT, stream));
        batch.remove(keys::stream_key(COUNTS, stream));
        // The epoch outlives the stream, raised: a batch of the deleted stream still on its way
        // cannot move the checkpoint of a new stream of the name.
        let epoch = self.epoch(stream)? + 1;
        batch.insert(keys::stream_key(EPOCH, stream), &epoch.to_be_bytes()[..]);
        self.tree.apply_batch(batch).map_err(storage_error)?;
        self.registry
            .remove(stream.as_str())
            .map_err(storage_error)?;
        self.sync.sync().await
    }

    /// Waits until everything written so far is durable.
    ///
    /// # Errors
    ///
    /// When the flush or the sync fails.
    pub async fn sync(&self) -> Result<(), Error> {
        self.sync.sync().await
    }

    /// Syncs requested since the store was opened: one per commit.
    pub fn sync_requests(&self) -> u64 {
        self.sync.requests()
    }

    /// Flush-and-sync rounds since the store was opened: fewer than commits under load.
    pub fn sync_rounds(&self) -> u64 {
        self.sync.rounds()
    }
}

/// The most records one page request examines, whatever its filter: keeps a request on a large
/// stream to milliseconds.
const MAX_SCANNED_PER_PAGE: usize = 10_000;

impl SledStore {
    /// The stream's epoch and checkpoint, read together (no commit or resync in between).
    async fn resume(&self, stream: &StreamName) -> Result<Resume, Error> {
        let writer = self.writer(stream);
        let _writing = writer.lock().await;
        Ok(Resume {
            epoch: self.epoch(stream)?,
            checkpoint: SledStore::checkpoint(self, stream)?,
        })
    }
}

#[async_trait]
impl StreamStore for SledStore {
    async fn stream(&self, name: &StreamName) -> Result<Option<StreamEntry>, Error> {
        self.entry(name)
    }

    async fn streams(&self) -> Result<Vec<StreamEntry>, Error> {
        self.entries()
    }

    async fn put_stream(&self, entry: &StreamEntry) -> Result<(), Error> {
        self.put_entry(entry)?;
        self.sync.sync().await
    }

    async fn delete_stream(&self, name: &StreamName) -> Result<(), Error> {
        SledStore::delete_stream(self, name).await
    }

    async fn resume(&self, stream: &StreamName) -> Result<Resume, Error> {
        SledStore::resume(self, stream).await
    }

    async fn resync(&self, stream: &StreamName) -> Result<u64, Error> {
        SledStore::resync(self, stream).await
    }

    async fn counts(&self, stream: &StreamName) -> Result<Counts, Error> {
        SledStore::counts(self, stream)
    }

    async fn records(
        &self,
        stream: &StreamName,
        after: Option<&str>,
        limit: usize,
        archived: Archived,
    ) -> Result<RecordPage, Error> {
        // Up to 10,000 records read from sled: off the runtime's threads, which carry the
        // workers' deliveries.
        let (store, stream, after) = (self.clone(), stream.clone(), after.map(str::to_owned));
        tokio::task::spawn_blocking(move || {
            store.records(&stream, after.as_deref(), limit, archived)
        })
        .await
        .map_err(|e| Error::from_join("a records read", e))?
    }

    async fn runs(&self, stream: &StreamName, limit: usize) -> Result<Vec<RunRecord>, Error> {
        SledStore::runs(self, stream, limit)
    }

    async fn start_run(
        &self,
        stream: &StreamName,
        run_id: RunId,
        at: Timestamp,
    ) -> Result<(), Error> {
        SledStore::start_run(self, stream, run_id, at).await
    }

    async fn finish_run(
        &self,
        stream: &StreamName,
        run_id: RunId,
        outcome: &RunOutcome,
    ) -> Result<(), Error> {
        SledStore::finish_run(self, stream, run_id, outcome).await
    }

    async fn sync(&self) -> Result<(), Error> {
        SledStore::sync(self).await
    }

    async fn probe(&self) -> Result<(), Error> {
        // A key of its own ("p" is no other entry's prefix), rewritten on every probe: the
        // flush then has something to write, and the sync something to sync.
        self.tree
            .insert(keys::PROBE, &Timestamp::now().as_millis().to_be_bytes()[..])
            .map_err(storage_error)?;
        self.sync.sync().await
    }
}

#[cfg(test)]
mod tests;
