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

use crate::sync::Locked;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::batch::Batch;
use crate::checkpoint::Checkpoint;
use crate::encoding::{decode_batch, encode_batch};
use crate::error::{Error, ErrorKind};
use crate::stream::StreamName;

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
    failure: Mutex<Option<String>>,
    /// Whether writes wait for room on the disk (told once when it begins and ends).
    disk_full: AtomicBool,
    /// Whether the task writing batches that waited too long runs.
    writer: AtomicBool,
}

pub use crate::store::DISK_MARGIN;

/// The most bytes of a batch stored under one key: well under sled's blob threshold.
pub const PIECE_BYTES: usize = 64 * 1024;

/// A piece's key: the entry's, then (past the first) the piece's number.
fn piece_key(key: u64, piece: u32) -> Vec<u8> {
    let mut bytes = key.to_be_bytes().to_vec();
    if piece > 0 {
        bytes.extend_from_slice(&piece.to_be_bytes());
    }
    bytes
}

/// The keys of an entry of `len` bytes' pieces.
fn piece_keys(key: u64, len: usize) -> impl Iterator<Item = Vec<u8>> {
    let pieces = len.div_ceil(PIECE_BYTES).max(1);
    (0..u32::try_from(pieces).unwrap_or(u32::MAX)).map(move |piece| piece_key(key, piece))
}

/// An entry read from its pieces: its key, and its bytes, whole.
struct Stored {
    key: u64,
    value: Bytes,
}

/// The entries of `pieces` (a tree's items in key order), each joined from its pieces. An entry
/// of one piece is sled's own buffer, not copied.
fn join_pieces(
    pieces: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
) -> Result<Vec<Stored>, Error> {
    let mut entries: Vec<(u64, Vec<sled::IVec>)> = Vec::new();
    for piece in pieces {
        let (key, value) = piece.map_err(storage_error)?;
        match key.len() {
            8 => entries.push((key_of(&key)?, vec![value])),
            12 => match entries.last_mut() {
                Some((at, values)) if key_of(&key[..8])? == *at => values.push(value),
                // A piece whose entry's first piece is missing: not an entry.
                _ => continue,
            },
            _ => return Err(Error::Bug("an outbox key is neither 8 nor 12 bytes".into())),
        }
    }
    Ok(entries
        .into_iter()
        .map(|(key, mut values)| {
            let value = if values.len() == 1 {
                Bytes::from_owner(values.pop().expect("one piece"))
            } else {
                let mut whole = BytesMut::with_capacity(values.iter().map(|v| v.len()).sum());
                for value in &values {
                    whole.extend_from_slice(value);
                }
                whole.freeze()
            };
            Stored { key, value }
        })
        .collect())
}

/// A batch waiting, as it was encoded.
#[derive(Debug)]
struct Held {
    value: Bytes,
    stream: StreamName,
    /// When it was pushed (or found on disk at opening).
    since: Instant,
}

#[derive(Debug, Default)]
struct State {
    /// Encoded bytes waiting.
    bytes: u64,
    next_key: u64,
    /// Every entry waiting, in key order.
    entries: BTreeMap<u64, Held>,
    /// Every entry below this key is on disk: entries are written in key order.
    written_below: u64,
    /// Per stream: entries waiting.
    waiting: HashMap<StreamName, u64>,
    /// Per stream: the epoch, lease and cursor of its newest batch pushed (kept after its
    /// removal), where this worker's next page of the stream starts.
    positions: HashMap<StreamName, (u64, u64, Checkpoint)>,
    /// Pushes waiting for room right now.
    blocked: u64,
}

impl State {
    /// The entries not on disk yet that have waited `write_after` by `now` (every one when
    /// `now` is `None`): the key after the last of them, and their bytes.
    fn unwritten(&self, due: Option<(Instant, Duration)>) -> (u64, u64) {
        let (mut end, mut bytes) = (self.written_below, 0);
        for (key, held) in self.entries.range(self.written_below..) {
            if due.is_some_and(|(now, after)| held.since + after > now) {
                break;
            }
            end = key + 1;
            bytes += held.value.len() as u64;
        }
        (end, bytes)
    }

    /// When the oldest entry not on disk yet is due.
    fn next_due(&self, after: Duration) -> Option<Instant> {
        self.entries
            .range(self.written_below..)
            .next()
            .map(|(_, held)| held.since + after)
    }
}

/// Writes the entries from `state.written_below` up to `end` in one atomic sled batch, each in
/// its pieces.
fn write_to(tree: &sled::Tree, state: &mut State, end: u64) -> sled::Result<()> {
    fail::fail_point!("outbox::in_the_middle_of_a_write");
    let mut pieces = sled::Batch::default();
    for (&key, held) in state.entries.range(state.written_below..end) {
        for (piece, bytes) in held.value.chunks(PIECE_BYTES).enumerate() {
            let piece = u32::try_from(piece).unwrap_or(u32::MAX);
            pieces.insert(piece_key(key, piece), bytes);
        }
    }
    tree.apply_batch(pieces)?;
    state.written_below = end;
    Ok(())
}

fn storage_error(error: sled::Error) -> Error {
    match error {
        sled::Error::Io(io) => Error::new(ErrorKind::Transient, io),
        other => Error::new(ErrorKind::Bug, format!("sled: {other}")),
    }
}

impl Outbox {
    /// Opens (or creates) the outbox and reads what it holds.
    ///
    /// # Errors
    ///
    /// When the database cannot be opened, or holds an entry that does not decode.
    pub fn open(config: &OutboxConfig) -> Result<Self, Error> {
        let (tree, db) = open_tree(config)?;
        let mut state = State::default();
        load(&tree, &mut state)?;
        Ok(Outbox {
            inner: Arc::new(Inner {
                handle: std::sync::RwLock::new(Some((tree, db))),
                config: config.clone(),
                state: Mutex::new(state),
                version: watch::Sender::new(0),
                failure: Mutex::new(None),
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

    /// Whether the disk has room for `len` more bytes and the margin. An error reading the
    /// free space says yes: the write then tells.
    fn room_for(&self, len: u64) -> bool {
        let room = crate::store::short_of_room(&self.inner.config.path, len).is_none();
        let was_full = self.inner.disk_full.swap(!room, Ordering::Relaxed);
        match (was_full, room) {
            (false, false) => tracing::error!(
                path = %self.inner.config.path.display(),
                "the outbox cannot write: its disk is full; sources wait until there is room"
            ),
            (true, true) => {
                tracing::info!("the outbox writes again: its disk has room");
                self.inner.version.send_modify(|v| *v += 1);
            }
            _ => {}
        }
        room
    }

    fn failing(&self) -> bool {
        self.inner.failure.locked().is_some()
    }

    /// Whether pushes wait: the outbox cannot write what waits.
    fn stalled(&self) -> bool {
        self.inner.disk_full.load(Ordering::Relaxed) || self.failing()
    }

    /// Takes a sled error: it fails the outbox, once, and starts its healing (an I/O error, or
    /// one sled does not say more of: reopening the database is the cure for both, and a write
    /// retried in place would fail alike).
    fn failed(&self, error: sled::Error) -> Error {
        let error = storage_error(error);
        let mut failure = self.inner.failure.locked();
        if failure.is_none() {
            *failure = Some(error.to_string());
            tracing::error!(error = %error, "the outbox cannot write: sources wait; reopening it by itself");
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(self.clone().heal());
            }
        }
        error
    }

    /// Reopens the database until it opens and a file can be written beside it, then lets
    /// writes and pushes go on.
    async fn heal(self) {
        let started = std::time::Instant::now();
        let mut wait = Duration::from_secs(1);
        let mut attempts: u64 = 0;
        loop {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(30));
            attempts += 1;
            let outbox = self.clone();
            let reopened = tokio::task::spawn_blocking(move || outbox.reopen())
                .await
                .unwrap_or_else(|e| Err(Error::Bug(format!("reopening the outbox panicked: {e}"))));
            match reopened {
                Ok(()) => {
                    *self.inner.failure.locked() = None;
                    self.inner.version.send_modify(|v| *v += 1);
                    tracing::info!(attempts, after = ?started.elapsed(), "the outbox writes again");
                    return;
                }
                Err(error) => {
                    tracing::debug!(attempts, error = %error, "the outbox still cannot write")
                }
            }
        }
    }

    /// One attempt: a file written beside the database, the old handle dropped (its file lock
    /// with it), the database opened again and emptied: what waits is in memory, and is
    /// written to it anew.
    fn reopen(&self) -> Result<(), Error> {
        crate::store::can_write_beside(&self.inner.config.path)?;
        let mut handle = self.inner.handle.write().unwrap_or_else(|e| e.into_inner());
        drop(handle.take());
        let (tree, db) = open_tree(&self.inner.config)?;
        // A write or removal just before the failure may or may not be there: memory says
        // what waits. Every key goes in one atomic batch (sled's `clear` removes them one at a
        // time, and a crash in the middle could leave newer entries without the older ones,
        // and a position past a batch that is gone).
        let mut every = sled::Batch::default();
        for key in tree.iter().keys() {
            every.remove(key.map_err(storage_error)?);
        }
        tree.apply_batch(every).map_err(storage_error)?;
        let mut state = self.lock();
        state.written_below = state
            .entries
            .keys()
            .next()
            .copied()
            .unwrap_or(state.next_key);
        drop(state);
        *handle = Some((tree, db));
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.locked()
    }

    /// Writes the entries not on disk yet that are due by `due` (all when `None`), if the disk
    /// has room for them.
    fn write_unwritten(
        &self,
        tree: &sled::Tree,
        state: &mut State,
        due: Option<(Instant, Duration)>,
    ) -> Result<(), Error> {
        let (end, bytes) = state.unwritten(due);
        // Asked also with nothing to write, so that a full disk found with room again says so.
        if !self.room_for(bytes) {
            return Err(Error::Unavailable(format!(
                "the outbox's disk has no room for {bytes} bytes"
            )));
        }
        if end > state.written_below {
            write_to(tree, state, end).map_err(|e| self.failed(e))?;
        }
        Ok(())
    }

    /// Writes what has waited [`OutboxConfig::write_after`]; says when to look again.
    fn write_due(&self) -> Option<Instant> {
        let after = self.inner.config.write_after;
        if !self.failing() {
            if let Ok(tree) = self.tree() {
                let mut state = self.lock();
                // Its failure is told once, by the room check or the failed write.
                let _ = self.write_unwritten(&tree, &mut state, Some((Instant::now(), after)));
            }
        }
        if self.stalled() {
            // A full disk or a failed database is looked at again each second.
            return Some(Instant::now() + Duration::from_secs(1));
        }
        self.lock().next_due(after)
    }

    /// Starts the task that writes what waited too long, once, from a push (on its runtime).
    /// With `write_after` zero it writes what a push could not (a full disk, a failure), once
    /// the outbox can write again.
    fn start_writer(&self) {
        if self.inner.writer.swap(true, Ordering::Relaxed) {
            return;
        }
        let running = WriterRunning(Arc::downgrade(&self.inner));
        let versions = self.inner.version.subscribe();
        tokio::spawn(write_when_due(running, versions));
    }

    /// Adds a batch at the end of the outbox, waiting while the outbox is full or cannot write.
    /// It is in memory, to be written to disk once it has waited
    /// [`OutboxConfig::write_after`] (at once when that is zero).
    ///
    /// # Errors
    ///
    /// Only when the outbox is gone; the batch is then not in the outbox.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe while it waits for space; the push itself is not interrupted.
    pub async fn push(&self, batch: &Batch) -> Result<u64, Error> {
        self.write_unless(batch, None).await
    }

    /// Adds a batch as [`Outbox::push`] does, unless `cancel` is cancelled: the token is
    /// checked under the outbox's lock, just before the batch is added, and waits for room end
    /// with it. So a run whose token was cancelled before [`Outbox::discard_stream`] began can
    /// leave nothing behind that discard: a batch added after it would stand, alone, past the
    /// batches it dropped.
    ///
    /// # Errors
    ///
    /// [`Error::Cancelled`] when `cancel` is (the batch is not in the outbox).
    ///
    /// # Cancel safety
    ///
    /// As [`Outbox::push`].
    pub async fn push_unless_cancelled(
        &self,
        batch: &Batch,
        cancel: &CancellationToken,
    ) -> Result<u64, Error> {
        tokio::select! {
            pushed = self.write_unless(batch, Some(cancel)) => pushed,
            () = cancel.cancelled() => Err(Error::Cancelled),
        }
    }

    async fn write_unless(
        &self,
        batch: &Batch,
        cancel: Option<&CancellationToken>,
    ) -> Result<u64, Error> {
        self.start_writer();
        let mut value = BytesMut::with_capacity(batch.encoded_len());
        encode_batch(batch, &mut value);
        let value = value.freeze();
        let len = value.len() as u64;
        let write_through = self.inner.config.write_after.is_zero();
        let mut versions = self.inner.version.subscribe();
        loop {
            if !self.stalled() {
                // The tree before the state: the same order as a reopen takes them.
                // Without it (being reopened) the batch waits in memory for the writer.
                let tree = if write_through {
                    self.tree().ok()
                } else {
                    None
                };
                let mut state = self.lock();
                if cancel.is_some_and(CancellationToken::is_cancelled) {
                    return Err(Error::Cancelled);
                }
                if state.bytes == 0 || state.bytes + len <= self.inner.config.max_bytes {
                    let key = state.next_key;
                    state.next_key += 1;
                    state.bytes += len;
                    state.entries.insert(
                        key,
                        Held {
                            value,
                            stream: batch.stream.clone(),
                            since: Instant::now(),
                        },
                    );
                    *state.waiting.entry(batch.stream.clone()).or_default() += 1;
                    state.positions.insert(
                        batch.stream.clone(),
                        (batch.epoch, batch.lease, batch.cursor.clone()),
                    );
                    fail::fail_point!("outbox::holding_a_batch_in_memory_only");
                    if let Some(tree) = tree {
                        // A write that fails leaves the batch in memory, and the next pushes
                        // wait until the outbox can write it.
                        let _ = self.write_unwritten(&tree, &mut state, None);
                    }
                    drop(state);
                    self.inner.version.send_modify(|v| *v += 1);
                    return Ok(key);
                }
            }
            tracing::debug!(stream = %batch.stream, "outbox full or cannot write: the source waits");
            let blocked = Blocked::new(self);
            // Room comes with a removal or a healed disk, each of which bumps the version; a
            // stalled outbox is also looked at again each second.
            let changed = tokio::time::timeout(Duration::from_secs(1), versions.changed()).await;
            drop(blocked);
            if let Ok(changed) = changed {
                changed.map_err(|_| Error::Bug("the outbox is gone".into()))?;
            }
        }
    }

    /// Removes an acknowledged entry. Removing one that is gone is harmless (an ack that came
    /// twice).
    ///
    /// # Errors
    ///
    /// None today: the entry leaves memory at once, and a removal from disk that fails fails
    /// the outbox, whose healing writes the disk anew from memory (a crash before that only
    /// sends the batch again, to be acknowledged as a replay).
    pub fn remove(&self, key: u64) -> Result<(), Error> {
        // Taken without waiting (see `tree`): when it is being reopened, the reopened database
        // is written anew from memory, without this entry.
        let tree = if self.failing() {
            None
        } else {
            self.tree().ok()
        };
        let mut state = self.lock();
        let Some(held) = state.entries.remove(&key) else {
            return Ok(());
        };
        state.bytes -= held.value.len() as u64;
        if let Some(waiting) = state.waiting.get_mut(&held.stream) {
            *waiting -= 1;
            if *waiting == 0 {
                state.waiting.remove(&held.stream);
            }
        }
        if key < state.written_below && !self.failing() {
            if let Some(tree) = tree {
                let mut gone = sled::Batch::default();
                for piece in piece_keys(key, held.value.len()) {
                    gone.remove(piece);
                }
                if let Err(error) = tree.apply_batch(gone) {
                    self.failed(error);
                }
            }
        }
        drop(state);
        self.inner.version.send_modify(|v| *v += 1);
        Ok(())
    }

    /// Up to `limit` entries from `from` on, in order.
    ///
    /// # Errors
    ///
    /// When an entry does not decode (a bug: the outbox encoded it).
    pub fn entries(&self, from: u64, limit: usize) -> Result<Vec<Entry>, Error> {
        let values: Vec<(u64, Bytes)> = self
            .lock()
            .entries
            .range(from..)
            .take(limit)
            .map(|(&key, held)| (key, held.value.clone()))
            .collect();
        values
            .into_iter()
            .map(|(key, value)| {
                // The records' JSON is sliced out of the entry's bytes, not copied again.
                let batch = decode_batch(value)
                    .map_err(|e| Error::Bug(format!("an outbox entry does not decode: {e}")))?;
                Ok(Entry { key, batch })
            })
            .collect()
    }

    /// The number of entries waiting.
    pub fn len(&self) -> u64 {
        self.lock().entries.len() as u64
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pushes waiting for room right now: a source paused by backpressure.
    pub fn blocked_pushes(&self) -> u64 {
        self.lock().blocked
    }

    /// Encoded bytes waiting.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Entries waiting that are written to disk: what a crash now would leave to resend.
    pub fn written(&self) -> u64 {
        let state = self.lock();
        state.entries.range(..state.written_below).count() as u64
    }

    /// Whether any batch of a stream waits.
    pub fn holds(&self, stream: &StreamName) -> bool {
        self.lock().waiting.contains_key(stream)
    }

    /// The cursor of the newest batch of a stream pushed since the outbox was opened, or waiting
    /// in it: where this worker's next page of the stream starts. Acknowledged batches leave the
    /// outbox but not this position, so it never falls behind what the controller committed
    /// from this outbox. `None` too when that batch is of an epoch below `epoch` (a resync
    /// since made its position void) or of another `lease` than the controller's (its replica
    /// will refuse it, so the position past it is not one).
    pub fn position(&self, stream: &StreamName, epoch: u64, lease: u64) -> Option<Checkpoint> {
        self.lock()
            .positions
            .get(stream)
            .filter(|(at, under, _)| *at >= epoch && *under == lease)
            .map(|(_, _, cursor)| cursor.clone())
    }

    /// Forgets a stream's position (the stream left this worker: if it comes back, it starts
    /// from the controller's checkpoint).
    pub fn forget_position(&self, stream: &StreamName) {
        self.lock().positions.remove(stream);
    }

    /// Watches pushes and removals: the value changes on each.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.inner.version.subscribe()
    }

    /// Waits until no batch of `stream` waits in the outbox.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn drained(&self, stream: &StreamName) {
        let mut versions = self.watch();
        while self.holds(stream) {
            if versions.changed().await.is_err() {
                return;
            }
        }
    }

    /// Drops every waiting batch of a stream (the controller refused them for good).
    ///
    /// # Errors
    ///
    /// As [`Outbox::remove`].
    pub fn discard_stream(&self, stream: &StreamName) -> Result<u64, Error> {
        self.forget_position(stream);
        let keys: Vec<u64> = self
            .lock()
            .entries
            .iter()
            .filter(|(_, held)| held.stream == *stream)
            .map(|(&key, _)| key)
            .collect();
        for &key in &keys {
            self.remove(key)?;
        }
        Ok(keys.len() as u64)
    }

    /// Writes every batch waiting to disk, then sled's buffers (no `fdatasync`, see the module
    /// docs): a worker's clean shutdown loses no refetch.
    ///
    /// # Errors
    ///
    /// When the outbox cannot write (its disk is full, or it is healing from a failure): the
    /// batches not written are fetched again after a restart.
    pub fn flush(&self) -> Result<(), Error> {
        let tree = self.tree()?;
        {
            let mut state = self.lock();
            if state.unwritten(None).0 > state.written_below && self.failing() {
                return Err(Error::Unavailable(
                    "the outbox cannot write now: batches waiting only in memory are fetched again after a restart".into(),
                ));
            }
            self.write_unwritten(&tree, &mut state, None)?;
        }
        tree.flush().map(drop).map_err(|e| self.failed(e))
    }
}

impl Drop for Inner {
    /// Writes what waits in memory, so that a dropped outbox (a clean exit) keeps it all.
    fn drop(&mut self) {
        let failing = self
            .failure
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        let (end, bytes) = state.unwritten(None);
        if end == state.written_below {
            return;
        }
        let handle = self.handle.get_mut().unwrap_or_else(|e| e.into_inner());
        let Some((tree, _)) = handle.as_ref() else {
            return;
        };
        let written = if failing {
            Err("it is healing from a failure".to_owned())
        } else if crate::store::short_of_room(&self.config.path, bytes).is_some() {
            Err("its disk is full".to_owned())
        } else {
            write_to(tree, state, end).map_err(|e| e.to_string())
        };
        if let Err(why) = written {
            tracing::warn!(
                why,
                "the outbox was dropped with batches it could not write: they are fetched again"
            );
        }
    }
}

/// The task writing batches that waited too long: it sleeps until the oldest batch not on disk
/// is due, or until a push when none waits, and ends with the outbox.
async fn write_when_due(running: WriterRunning, mut versions: watch::Receiver<u64>) {
    loop {
        versions.borrow_and_update();
        let next = match running.0.upgrade() {
            Some(inner) => Outbox { inner }.write_due(),
            None => return,
        };
        match next {
            // Not sooner than 10 ms: entries pushed a moment apart are written together.
            Some(at) => {
                tokio::time::sleep_until(at.max(Instant::now() + Duration::from_millis(10))).await
            }
            None => {
                if versions.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A push waiting for room, counted while it waits (also when the wait is cancelled).
struct Blocked<'a>(&'a Outbox);

impl<'a> Blocked<'a> {
    fn new(outbox: &'a Outbox) -> Self {
        outbox.lock().blocked += 1;
        Blocked(outbox)
    }
}

impl Drop for Blocked<'_> {
    fn drop(&mut self) {
        self.0.lock().blocked -= 1;
    }
}

/// Marks the writer gone when its task ends, or is dropped with its runtime (also before it
/// first ran): the next push starts another.
struct WriterRunning(Weak<Inner>);

impl Drop for WriterRunning {
    fn drop(&mut self) {
        if let Some(inner) = self.0.upgrade() {
            inner.writer.store(false, Ordering::Relaxed);
        }
    }
}

fn open_tree(config: &OutboxConfig) -> Result<(sled::Tree, sled::Db), Error> {
    let db = crate::store::open_db(&config.path, config.cache_bytes, Some(500), "outbox")?;
    let tree = db.open_tree("outbox").map_err(storage_error)?;
    Ok((tree, db))
}

/// Reads what `tree` holds into `state`: its entries (all on disk), bytes, entries per stream,
/// their positions, the next key.
fn load(tree: &sled::Tree, state: &mut State) -> Result<(), Error> {
    let now = Instant::now();
    for Stored { key, value } in join_pieces(tree.iter())? {
        state.bytes += value.len() as u64;
        // Copied: the position kept of it must not hold the entry's buffer.
        let batch = decode_batch(Bytes::copy_from_slice(&value))
            .map_err(|e| Error::Bug(format!("an outbox entry does not decode: {e}")))?;
        state.next_key = key + 1;
        *state.waiting.entry(batch.stream.clone()).or_default() += 1;
        state.entries.insert(
            key,
            Held {
                value,
                stream: batch.stream.clone(),
                since: now,
            },
        );
        state
            .positions
            .insert(batch.stream, (batch.epoch, batch.lease, batch.cursor));
    }
    state.written_below = state.next_key;
    Ok(())
}

fn key_of(key: &[u8]) -> Result<u64, Error> {
    <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| Error::Bug("an outbox key is not 8 bytes".into()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::record::{Json, Record, Timestamp};
    use crate::stream::RunId;

    fn batch(stream: &str, seq: u64, payload: usize) -> Batch {
        Batch {
            stream: StreamName::new(stream).unwrap(),
            run_id: RunId(1),
            seq,
            epoch: 0,
            lease: 0,
            repaired: 0,
            last: false,
            cursor: Checkpoint::from_bytes(format!("{seq}")),
            records: vec![Record::new(
                seq.to_string(),
                Timestamp::EPOCH,
                Json::from_serialize(&"x".repeat(payload)).unwrap(),
            )],
        }
    }

    #[tokio::test]
    async fn a_batch_larger_than_a_piece_is_stored_in_pieces_read_whole_and_removed_whole() {
        let dir = tempfile::tempdir().unwrap();
        let config = OutboxConfig::new(dir.path());
        let big = batch("a", 1, 5 * PIECE_BYTES / 2);
        let stream = StreamName::new("a").unwrap();
        {
            let outbox = Outbox::open(&config).unwrap();
            outbox.push(&batch("a", 0, 10)).await.unwrap();
            let key = outbox.push(&big).await.unwrap();
            outbox.push(&batch("a", 2, 10)).await.unwrap();
            outbox.flush().unwrap();
            // Three pieces under the big one's key, between its neighbours.
            assert_eq!(outbox.tree().unwrap().len(), 1 + 3 + 1);
            let entries = outbox.entries(key, 2).unwrap();
            assert_eq!(entries[0].batch, big);
            assert_eq!(entries[1].batch.seq, 2);
            outbox.flush().unwrap();
        }
        let outbox = Outbox::open(&config).unwrap();
        let mut encoded = BytesMut::new();
        encode_batch(&big, &mut encoded);
        assert!(
            outbox.bytes() > encoded.len() as u64,
            "counted whole after a restart"
        );
        assert_eq!(outbox.len(), 3);
        outbox.remove(1).unwrap();
        assert_eq!(outbox.tree().unwrap().len(), 2, "every piece removed");
        assert_eq!(waiting(&outbox), [0, 2]);
        outbox.remove(0).unwrap();
        outbox.remove(2).unwrap();
        assert_eq!(outbox.bytes(), 0);
        assert!(!outbox.holds(&stream));
    }

    #[tokio::test]
    async fn outbox_keeps_order_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let config = OutboxConfig::new(dir.path());
        {
            let outbox = Outbox::open(&config).unwrap();
            for seq in 0..5 {
                outbox.push(&batch("a", seq, 10)).await.unwrap();
            }
            outbox.remove(0).unwrap();
            assert_eq!(outbox.written(), 0, "nothing waited a second yet");
            // Dropped without a flush: a clean exit writes what waits.
        }
        let outbox = Outbox::open(&config).unwrap();
        assert_eq!(waiting(&outbox), [1, 2, 3, 4]);
        assert_eq!(
            outbox.position(&StreamName::new("a").unwrap(), 0, 0),
            Some(Checkpoint::from_bytes("4"))
        );
        // New entries go after the old ones.
        let key = outbox.push(&batch("a", 5, 10)).await.unwrap();
        assert_eq!(key, 5);
    }

    /// What the outbox's tree holds, joined: keys and sequence numbers.
    /// The seqs of the batches the outbox holds, in order.
    fn waiting(outbox: &Outbox) -> Vec<u64> {
        outbox
            .entries(0, 100)
            .unwrap()
            .iter()
            .map(|e| e.batch.seq)
            .collect()
    }

    fn on_disk(outbox: &Outbox) -> Vec<(u64, u64)> {
        join_pieces(outbox.tree().unwrap().iter())
            .unwrap()
            .into_iter()
            .map(|Stored { key, value }| (key, decode_batch(value).unwrap().seq))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn only_batches_waiting_longer_than_write_after_reach_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&OutboxConfig::new(dir.path())).unwrap();
        let acked = outbox.push(&batch("a", 0, 10)).await.unwrap();
        let waits = outbox.push(&batch("a", 1, 10)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        outbox.remove(acked).unwrap();
        let later = outbox.push(&batch("a", 2, 10)).await.unwrap();
        assert!(on_disk(&outbox).is_empty(), "nothing waited a second yet");

        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(
            on_disk(&outbox),
            [(waits, 1)],
            "the one that waited is written"
        );
        assert_eq!(outbox.written(), 1);
        outbox.remove(later).unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            on_disk(&outbox),
            [(waits, 1)],
            "the acknowledged one never is"
        );

        // A written batch's ack removes it from the disk too.
        outbox.remove(waits).unwrap();
        assert!(on_disk(&outbox).is_empty());
        assert!(outbox.is_empty());
    }

    #[tokio::test]
    async fn write_after_zero_writes_each_batch_as_it_is_pushed() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = OutboxConfig::new(dir.path());
        config.write_after = Duration::ZERO;
        let outbox = Outbox::open(&config).unwrap();
        let key = outbox.push(&batch("a", 7, 10)).await.unwrap();
        assert_eq!(on_disk(&outbox), [(key, 7)]);
        assert_eq!(outbox.written(), 1);
    }

    /// Polls `done` every 10 ms until it holds, for 30 s at most.
    async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_failed_outbox_stalls_pushes_delivers_from_memory_and_heals_by_writing_memory_anew() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = OutboxConfig::new(dir.path());
        config.write_after = Duration::from_millis(50);
        let outbox = Outbox::open(&config).unwrap();
        let acked = outbox.push(&batch("a", 0, 10)).await.unwrap();
        let waits = outbox.push(&batch("a", 1, 10)).await.unwrap();
        outbox.flush().unwrap();
        assert_eq!(on_disk(&outbox).len(), 2);

        outbox.failed(sled::Error::Io(std::io::Error::other("the disk went away")));
        // Acks and deliveries go on from memory; the removal reaches the disk once it heals.
        outbox.remove(acked).unwrap();
        assert_eq!(outbox.entries(0, 10).unwrap().len(), 1);
        let pushed = push_in_background(&outbox, batch("a", 2, 10));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!pushed.is_finished(), "a failed outbox took a push");
        assert_eq!(outbox.blocked_pushes(), 1);

        // It reopens by itself (after 1 s), writes what waits anew, and takes the push.
        let newest = tokio::time::timeout(Duration::from_secs(30), pushed)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        eventually("what waits is on disk again", || {
            on_disk(&outbox) == [(waits, 1), (newest, 2)]
        })
        .await;
        assert_eq!(outbox.written(), 2);
    }

    /// Pushes `batch` on a task of its own, which waits while the outbox is full or stalled.
    fn push_in_background(
        outbox: &Outbox,
        batch: Batch,
    ) -> tokio::task::JoinHandle<Result<u64, Error>> {
        let outbox = outbox.clone();
        tokio::spawn(async move { outbox.push(&batch).await })
    }

    /// An outbox in `dir` with room for `batches` batches of 1,000 bytes of payload.
    fn holding(dir: &std::path::Path, batches: u64) -> Outbox {
        let mut out = BytesMut::new();
        encode_batch(&batch("a", 0, 1_000), &mut out);
        let mut config = OutboxConfig::new(dir);
        config.max_bytes = out.len() as u64 * batches;
        Outbox::open(&config).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_outbox_pauses_the_writer_until_an_ack_frees_room() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = holding(dir.path(), 3);
        for seq in 0..3 {
            outbox.push(&batch("a", seq, 1_000)).await.unwrap();
        }
        let blocked = push_in_background(&outbox, batch("a", 3, 1_000));
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!blocked.is_finished(), "a full outbox took another batch");
        assert_eq!(outbox.len(), 3);
        // What waits (a controller away) is on disk, and still delivered from memory.
        assert_eq!(on_disk(&outbox).len(), 3);
        assert_eq!(waiting(&outbox), [0, 1, 2]);
        outbox.remove(0).unwrap();
        let key = tokio::time::timeout(Duration::from_secs(5), blocked)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(key, 3);
        assert_eq!(outbox.len(), 3);
        assert_eq!(
            on_disk(&outbox).len(),
            2,
            "the acknowledged one left the disk; the one just pushed is not due yet"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_run_writes_nothing_whether_it_was_about_to_write_or_waiting_for_room() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = holding(dir.path(), 1);
        let cancel = CancellationToken::new();
        outbox
            .push_unless_cancelled(&batch("a", 0, 1_000), &cancel)
            .await
            .unwrap();
        let waiting = {
            let (outbox, cancel) = (outbox.clone(), cancel.clone());
            tokio::spawn(async move {
                outbox
                    .push_unless_cancelled(&batch("a", 1, 1_000), &cancel)
                    .await
            })
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiting.is_finished(), "a full outbox took another batch");
        cancel.cancel();
        let waited = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(waited, Err(Error::Cancelled)), "{waited:?}");
        assert_eq!(
            outbox.blocked_pushes(),
            0,
            "a cancelled wait is not counted"
        );
        // Room again, and the token already cancelled: still nothing is written.
        outbox.remove(0).unwrap();
        let pushed = outbox
            .push_unless_cancelled(&batch("a", 2, 1_000), &cancel)
            .await;
        assert!(matches!(pushed, Err(Error::Cancelled)), "{pushed:?}");
        assert_eq!(outbox.len(), 0);
        assert_eq!(
            outbox.position(&StreamName::new("a").unwrap(), 0, 0),
            Some(Checkpoint::from_bytes("0"))
        );
    }

    #[tokio::test]
    async fn an_oversized_batch_is_taken_by_an_empty_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = OutboxConfig::new(dir.path());
        config.max_bytes = 10;
        let outbox = Outbox::open(&config).unwrap();
        outbox.push(&batch("a", 0, 1_000)).await.unwrap();
        assert_eq!(outbox.len(), 1);
    }

    #[tokio::test]
    async fn drained_waits_for_the_last_entry_of_its_stream_only() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&OutboxConfig::new(dir.path())).unwrap();
        let a = outbox.push(&batch("a", 0, 10)).await.unwrap();
        outbox.push(&batch("b", 0, 10)).await.unwrap();
        let waiting = {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.drained(&StreamName::new("a").unwrap()).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        outbox.remove(a).unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(outbox.len(), 1);
        assert_eq!(
            outbox
                .discard_stream(&StreamName::new("b").unwrap())
                .unwrap(),
            1
        );
        assert!(outbox.is_empty());
    }
}
