//! The worker's outbox: batches wait here until the controller acknowledges them.
//!
//! A batch is pushed to the outbox before it is sent and removed only when its ack arrives, so
//! a controller outage or a worker restart costs no data: what is in the outbox is sent again,
//! in order, once a connection is back. The outbox is bounded ([`OutboxConfig::max_bytes`]):
//! when it is full, [`Outbox::push`] waits, which pauses the source at its next page instead of
//! dropping batches or growing memory.
//!
//! # Memory first, the disk for what waits
//!
//! What waits is held in memory, within that bound, and delivered from there. A batch is
//! written to disk (a sled database) once it has waited [`OutboxConfig::write_after`] (1 s)
//! without its ack, when the outbox is flushed (a worker's clean shutdown) and when it is
//! dropped. On a link that keeps up, a batch is acknowledged within milliseconds and never
//! touches the disk; what a controller outage or a slow commit leaves waiting is on disk a
//! second later, and a restarted worker resends it instead of fetching it again. Writing every
//! batch as it was pushed cost the worker most of its own time: in a profile of a 400k-record
//! sync through the real processes, the outbox's sled writes were 13% of the machine.
//!
//! A crash (SIGKILL, a lost machine) takes the batches not written yet with it, and loses
//! nothing: the controller's checkpoint lives with the data and never moves past a batch it has
//! not committed, so the restarted worker fetches them again from the source. The disk is only
//! there to spare that refetch. Entries reach the disk oldest first, so what a crash leaves is
//! the oldest of what waited, and the worker's position for a stream is the newest of those: it
//! never skips a batch that is gone. [`OutboxConfig::write_after`] of zero writes each batch as
//! it is pushed, for sources whose refetch is dear.
//!
//! # A failing disk
//!
//! A write that would leave less than [`DISK_MARGIN`] free on the outbox's disk is not made:
//! pushes wait for room instead (one log line when it begins, one when it ends), which pauses
//! the sources as a full outbox does. sled must not meet a full disk: after a write that failed
//! with ENOSPC, dropping its database waits forever for that write to become stable (sled
//! 0.34), so it cannot be reopened in place.
//!
//! When sled cannot write the outbox all the same (another process filled the disk between the
//! check and the write, an I/O error), it refuses every later write, also once there is room
//! again. So a write error fails the outbox once (one log line): pushes wait, which pauses the
//! sources, and the outbox reopens its database in place, with backoff (1 s doubling to 30 s),
//! once a file of 1 MiB can be written beside it. It then writes what waits in memory to the
//! reopened database anew, and takes pushes again, without a restart. Deliveries and acks go on
//! from memory throughout.
//!
//! # Large batches
//!
//! sled writes a value larger than a quarter of a segment (128 KiB) to a file of its own, and
//! memory then grows with such values far past its cache's bound: a worker syncing 9 KB
//! HubSpot contacts (a 200-record page is 1.8 MB) reached 368 MiB, most of it (a heap profile)
//! the outbox's values still held by sled after their removal. So a batch is stored in
//! pieces of at most [`PIECE_BYTES`]: the first under the entry's key (8 bytes), the others
//! under the key and the piece's number (12 bytes), which sort between it and the next entry.
//! The pieces are written and removed together, in one atomic sled batch.
//!
//! # Durability
//!
//! The outbox uses sled's ordinary flush (every 500 ms, and [`Outbox::flush`]) and adds no
//! `fdatasync`, for the reason a crash may lose batches at all: the checkpoint on the
//! controller covers them.
//!
//! # Its rooms
//!
//! - `mod.rs`: the [`Outbox`], its configuration, and how it opens;
//! - `queue.rs`: the queue in memory: pushes that wait for room, removals, deliveries, positions;
//! - `pieces.rs`: the database on disk, each entry in pieces;
//! - `writer.rs`: the task writing what waited, the flush, the write when it is dropped;
//! - `healing.rs`: a full disk waited out, a failed database reopened.

mod healing;
mod pieces;
mod queue;
#[cfg(test)]
mod tests;
mod writer;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::batch::Batch;
use crate::error::Error;
use crate::heal::Failing;
use crate::sync::Locked;
use queue::State;

pub use crate::store::DISK_MARGIN;
pub use pieces::PIECE_BYTES;

/// How to open an [`Outbox`].
#[derive(Clone, Debug)]
pub struct OutboxConfig {
    /// The directory of its sled database (created if missing).
    pub path: PathBuf,
    /// The most encoded batch bytes it holds before [`Outbox::push`] waits. A single batch larger
    /// than this is still taken when the outbox is empty, so that it never blocks for good.
    pub max_bytes: u64,
    /// sled's page cache. Batches are written once, and read only when the outbox opens.
    pub cache_bytes: u64,
    /// How long a batch waits in memory for its ack before it is written to disk. Zero writes
    /// each batch as it is pushed.
    pub write_after: Duration,
}

impl OutboxConfig {
    /// An outbox in `path` holding up to 16 MiB of batches (about 15,000 records of 1 KiB)
    /// with an 8 MiB cache, writing a batch to disk once it has waited 1 s. What it holds is in
    /// memory, so its bound is the worker's memory: measured on a 400k-record sync where the
    /// worker outran its controller, a 64 MiB outbox took the worker to 97 MiB of RSS, 16 MiB to
    /// 42 MiB, at the same throughput. A full outbox only pauses the source (nothing is lost),
    /// and 16 MiB still rides out a controller restart of a few seconds at full speed.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        OutboxConfig {
            path: path.into(),
            max_bytes: 16 * 1024 * 1024,
            cache_bytes: 8 * 1024 * 1024,
            write_after: Duration::from_secs(1),
        }
    }
}

/// A batch waiting in the outbox, and its place there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its key: entries are sent in key order.
    pub key: u64,
    /// The batch, decoded from its encoded bytes, as it will be delivered.
    pub batch: Batch,
}

/// The bounded queue of batches between a worker's pipelines and its controller, in memory,
/// and on disk for those that wait (see the module docs). Cheap to clone; clones share it.
#[derive(Clone, Debug)]
pub struct Outbox {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The database and its tree; `None` only while a reopen found nothing to open.
    handle: std::sync::RwLock<Option<(sled::Tree, sled::Db)>>,
    config: OutboxConfig,
    state: Mutex<State>,
    /// Bumped on every push and removal, and when it heals: waiters for space or for new
    /// entries watch it.
    version: watch::Sender<u64>,
    /// Why the outbox cannot write, while it heals.
    failing: Failing,
    /// Whether writes wait for room on the disk (told once when it begins and ends).
    disk_full: AtomicBool,
    /// Whether the task writing batches that waited too long runs.
    writer: AtomicBool,
}

impl Outbox {
    /// Opens (or creates) the outbox and reads what it holds.
    ///
    /// # Errors
    ///
    /// When the database cannot be opened, or holds an entry that does not decode.
    pub fn open(config: &OutboxConfig) -> Result<Self, Error> {
        let (tree, db) = pieces::open_tree(&config.path, config.cache_bytes)?;
        let state = State::load(&tree)?;
        Ok(Outbox {
            inner: Arc::new(Inner {
                handle: std::sync::RwLock::new(Some((tree, db))),
                config: config.clone(),
                state: Mutex::new(state),
                version: watch::Sender::new(0),
                failing: Failing::default(),
                disk_full: AtomicBool::new(false),
                writer: AtomicBool::new(false),
            }),
        })
    }

    /// The tree, for one operation; never waits for a reopen (which may wait on sled's file
    /// lock, or on a database that failed): callers on the runtime's threads go on without it.
    fn tree(&self) -> Result<sled::Tree, Error> {
        let reopening = || Error::Unavailable("the outbox is being reopened".into());
        let handle = match self.inner.handle.try_read() {
            Ok(handle) => handle,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Err(reopening()),
        };
        handle
            .as_ref()
            .map(|(tree, _)| tree.clone())
            .ok_or_else(reopening)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.locked()
    }
}
