//! The worker's outbox: batches wait here, on disk, until the controller acknowledges them.
//!
//! A batch is written to the outbox before it is sent and removed only when its ack arrives, so
//! a controller outage or a worker restart costs no data: what is in the outbox is sent again,
//! in order, once a connection is back. The outbox is bounded ([`OutboxConfig::max_bytes`]):
//! when it is full, [`Outbox::push`] waits, which pauses the source at its next page instead of
//! dropping batches or growing memory.
//!
//! # A failing disk
//!
//! A push that would leave less than [`DISK_MARGIN`] free on the outbox's disk waits for room
//! instead of writing (one log line when it begins, one when it ends), which pauses the sources
//! as a full outbox does. sled must not meet a full disk: after a write that failed with
//! ENOSPC, dropping its database waits forever for that write to become stable (sled 0.34), so
//! it cannot be reopened in place.
//!
//! When sled cannot write the outbox all the same (another process filled the disk between the
//! check and the write, an I/O error), it refuses every later write, also once there is room
//! again. So a write error fails the outbox once (one log line): pushes wait,
//! which pauses the sources as a full outbox does, and the outbox reopens its database in place,
//! with backoff (1 s doubling to 30 s), once a file of 1 MiB can be written beside it, and
//! counts again what it holds. Then it takes pushes and deliveries again, without a restart.
//!
//! # Large batches
//!
//! sled writes a value larger than a quarter of a segment (128 KiB) to a file of its own, and
//! memory then grows with such values far past its cache's bound: a worker syncing 9 KB
//! HubSpot contacts (a 200-record page is 1.8 MB) reached 368 MiB, most of it (a heap profile)
//! the outbox's values still held by sled after their removal. So a batch is stored in
//! pieces of at most [`PIECE_BYTES`]: the first under the entry's key (8 bytes, as an entry of
//! one piece always was), the others under the key and the piece's number (12 bytes), which
//! sort between it and the next entry. The pieces are written and removed together, in one
//! atomic sled batch.
//!
//! # Durability
//!
//! The outbox uses sled's ordinary flush and adds no `fdatasync`: the checkpoint lives with the
//! data on the controller and never moves past a batch it has not committed, so a batch that a
//! crash takes out of the outbox is fetched again from the source. The outbox only spares that
//! refetch, and keeps the worker's hot path free of syncs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::batch::Batch;
use crate::checkpoint::Checkpoint;
use crate::encoding::{batch_stream, decode_batch, encode_batch};
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
    /// sled's page cache. Batches are written once and read once: a small cache is enough.
    pub cache_bytes: u64,
}

impl OutboxConfig {
    /// An outbox in `path` holding up to 16 MiB of batches (about 15,000 records of 1 KiB)
    /// with an 8 MiB cache. What it holds stays in sled's memory as well as on disk, so its bound
    /// is the worker's memory: measured on a 400k-record sync where the worker outran its
    /// controller, a 64 MiB outbox took the worker to 97 MiB of RSS, 16 MiB to 42 MiB, at the same
    /// throughput. A full outbox only pauses the source (nothing is lost), and 16 MiB still rides
    /// out a controller restart of a few seconds at full speed.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        OutboxConfig {
            path: path.into(),
            max_bytes: 16 * 1024 * 1024,
            cache_bytes: 8 * 1024 * 1024,
        }
    }
}

/// A batch waiting in the outbox, and its place there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its key: entries are sent in key order.
    pub key: u64,
    /// The batch, decoded from its stored bytes, as it will be delivered.
    pub batch: Batch,
}

/// The durable queue of batches between a worker's pipelines and its controller. Cheap to
/// clone; clones share it.
#[derive(Clone, Debug)]
pub struct Outbox {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The database and its tree; `None` only while a reopen found nothing to open.
    handle: std::sync::RwLock<Option<(sled::Tree, sled::Db)>>,
    config: OutboxConfig,
    max_bytes: u64,
    state: Mutex<State>,
    /// Bumped on every push and removal, and when it heals: waiters for space or for new
    /// entries watch it.
    version: watch::Sender<u64>,
    /// Why the outbox cannot write, while it heals.
    failure: Mutex<Option<String>>,
    /// Whether pushes wait for room on the disk (told once when it begins and ends).
    disk_full: std::sync::atomic::AtomicBool,
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

/// An entry read from its pieces: its key, and its bytes, whole.
struct Stored {
    key: u64,
    value: Bytes,
}

/// The entries of `pieces` (a tree's items in key order, from an entry's first piece on), up to
/// `limit` of them, each joined from its pieces. An entry of one piece is sled's own buffer,
/// not copied.
fn join_pieces(
    pieces: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
    limit: usize,
) -> Result<Vec<Stored>, Error> {
    let mut entries: Vec<(u64, Vec<sled::IVec>)> = Vec::new();
    for piece in pieces {
        let (key, value) = piece.map_err(storage_error)?;
        match key.len() {
            8 => {
                if entries.len() == limit {
                    break;
                }
                entries.push((key_of(&key)?, vec![value]));
            }
            12 => match entries.last_mut() {
                Some((at, values)) if key_of(&key[..8])? == *at => values.push(value),
                // The rest of an entry whose first piece is before the range read.
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

#[derive(Debug, Default)]
struct State {
    bytes: u64,
    next_key: u64,
    /// Per stream: entries waiting.
    waiting: HashMap<StreamName, u64>,
    /// Per stream: the cursor of the newest batch ever pushed (kept after its removal), where
    /// this worker's next page of the stream starts.
    /// Per stream, the epoch and cursor of its newest batch.
    /// Per stream: the epoch, lease and cursor of its newest batch.
    positions: HashMap<StreamName, (u64, u64, Checkpoint)>,
    /// Pushes waiting for room right now.
    blocked: u64,
}

fn storage_error(error: sled::Error) -> Error {
    match error {
        sled::Error::Io(io) => Error::new(ErrorKind::Transient, io),
        other => Error::new(ErrorKind::Bug, format!("sled: {other}")),
    }
}

impl Outbox {
    /// Opens (or creates) the outbox and counts what it holds.
    ///
    /// # Errors
    ///
    /// When the database cannot be opened, or holds an entry that does not decode.
    pub fn open(config: &OutboxConfig) -> Result<Self, Error> {
        let (tree, db) = open_tree(config)?;
        let mut state = State::default();
        count(&tree, &mut state)?;
        Ok(Outbox {
            inner: Arc::new(Inner {
                handle: std::sync::RwLock::new(Some((tree, db))),
                config: config.clone(),
                max_bytes: config.max_bytes,
                state: Mutex::new(state),
                version: watch::Sender::new(0),
                failure: Mutex::new(None),
                disk_full: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// The tree, for one operation.
    fn tree(&self) -> Result<sled::Tree, Error> {
        let handle = self.inner.handle.read().unwrap_or_else(|e| e.into_inner());
        handle
            .as_ref()
            .map(|(tree, _)| tree.clone())
            .ok_or_else(|| Error::Unavailable("the outbox is being reopened".into()))
    }

    /// Whether the disk has room for `len` more bytes and the margin. An error reading the
    /// free space says yes: the write then tells.
    fn room_for(&self, len: u64) -> bool {
        let room = crate::store::short_of_room(&self.inner.config.path, len).is_none();
        let was_full = self
            .inner
            .disk_full
            .swap(!room, std::sync::atomic::Ordering::Relaxed);
        match (was_full, room) {
            (false, false) => tracing::error!(
                path = %self.inner.config.path.display(),
                "the outbox cannot write: its disk is full; sources wait until there is room"
            ),
            (true, true) => tracing::info!("the outbox writes again: its disk has room"),
            _ => {}
        }
        room
    }

    fn failing(&self) -> bool {
        self.inner
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Takes a sled error: an I/O error fails the outbox, once, and starts its healing.
    fn failed(&self, error: sled::Error) -> Error {
        let error = storage_error(error);
        if error.kind() == ErrorKind::Transient {
            let mut failure = self.inner.failure.lock().unwrap_or_else(|e| e.into_inner());
            if failure.is_none() {
                *failure = Some(error.to_string());
                tracing::error!(error = %error, "the outbox cannot write: sources wait; reopening it by itself");
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(self.clone().heal());
                }
            }
        }
        error
    }

    /// Reopens the database until it opens and a file can be written beside it, then counts
    /// what it holds again and lets pushes go on.
    async fn heal(self) {
        let started = std::time::Instant::now();
        let mut wait = std::time::Duration::from_secs(1);
        let mut attempts: u64 = 0;
        loop {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(std::time::Duration::from_secs(30));
            attempts += 1;
            let outbox = self.clone();
            let reopened = tokio::task::spawn_blocking(move || outbox.reopen())
                .await
                .unwrap_or_else(|e| Err(Error::Bug(format!("reopening the outbox panicked: {e}"))));
            match reopened {
                Ok(()) => {
                    *self.inner.failure.lock().unwrap_or_else(|e| e.into_inner()) = None;
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
    /// with it), the database opened again and its entries counted.
    fn reopen(&self) -> Result<(), Error> {
        crate::store::can_write_beside(&self.inner.config.path)?;
        let mut handle = self.inner.handle.write().unwrap_or_else(|e| e.into_inner());
        drop(handle.take());
        let (tree, db) = open_tree(&self.inner.config)?;
        // A batch written just before the failure may or may not be there: count what is.
        let mut state = self.lock();
        let (next_key, positions, blocked) = (
            state.next_key,
            std::mem::take(&mut state.positions),
            state.blocked,
        );
        *state = State {
            positions,
            blocked,
            ..State::default()
        };
        count(&tree, &mut state)?;
        state.next_key = state.next_key.max(next_key);
        drop(state);
        *handle = Some((tree, db));
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes a batch at the end of the outbox, waiting while the outbox is full.
    ///
    /// # Errors
    ///
    /// When the write fails; the batch is then not in the outbox.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe while it waits for space; the write itself is not interrupted.
    pub async fn push(&self, batch: &Batch) -> Result<u64, Error> {
        self.write_unless(batch, None).await
    }

    /// Writes a batch as [`Outbox::push`] does, unless `cancel` is cancelled: the token is
    /// checked under the outbox's lock, just before the write, and waits for room end with it.
    /// So a run whose token was cancelled before [`Outbox::discard_stream`] began can leave
    /// nothing behind that discard: a batch written after it would stand, alone, past the
    /// batches it dropped.
    ///
    /// # Errors
    ///
    /// [`Error::Cancelled`] when `cancel` is (the batch is not in the outbox), or when the
    /// write fails.
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
        let mut value = BytesMut::with_capacity(batch.encoded_len());
        encode_batch(batch, &mut value);
        let len = value.len() as u64;
        let mut versions = self.inner.version.subscribe();
        loop {
            if !self.failing() && !self.room_for(len) {
                // Checked again each second, and at every removal.
                self.lock().blocked += 1;
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), versions.changed())
                    .await;
                self.lock().blocked -= 1;
                continue;
            }
            if !self.failing() {
                // The tree before the state: the same order as a reopen takes them.
                let tree = self.tree()?;
                let mut state = self.lock();
                if cancel.is_some_and(CancellationToken::is_cancelled) {
                    return Err(Error::Cancelled);
                }
                if state.bytes == 0 || state.bytes + len <= self.inner.max_bytes {
                    // Written under the lock, so keys reach the tree in order and a reader never
                    // sees key k+1 before key k.
                    let key = state.next_key;
                    fail::fail_point!("outbox::in_the_middle_of_a_write", |_| Err(
                        Error::Unavailable(
                            "failpoint: crashed in the middle of an outbox write".into()
                        )
                    ));
                    let mut pieces = sled::Batch::default();
                    for (piece, bytes) in value.chunks(PIECE_BYTES).enumerate() {
                        let piece = u32::try_from(piece).unwrap_or(u32::MAX);
                        pieces.insert(piece_key(key, piece), bytes);
                    }
                    if let Err(error) = tree.apply_batch(pieces) {
                        drop(state);
                        // The source waits while the outbox heals, then this batch is written.
                        let error = self.failed(error);
                        if error.kind() != ErrorKind::Transient {
                            return Err(error);
                        }
                        continue;
                    }
                    state.next_key += 1;
                    state.bytes += len;
                    *state.waiting.entry(batch.stream.clone()).or_default() += 1;
                    state.positions.insert(
                        batch.stream.clone(),
                        (batch.epoch, batch.lease, batch.cursor.clone()),
                    );
                    drop(state);
                    self.inner.version.send_modify(|v| *v += 1);
                    return Ok(key);
                }
            }
            tracing::debug!(stream = %batch.stream, "outbox full: the source waits");
            self.lock().blocked += 1;
            let changed = versions.changed().await;
            self.lock().blocked -= 1;
            changed.map_err(|_| Error::Bug("the outbox is gone".into()))?;
        }
    }

    /// Removes an acknowledged entry. Removing one that is gone is harmless (an ack that came
    /// twice).
    ///
    /// # Errors
    ///
    /// When the removal cannot be written.
    pub fn remove(&self, key: u64) -> Result<(), Error> {
        let tree = self.tree()?;
        let mut state = self.lock();
        // The entry's pieces: its key, and the 12-byte keys before the next entry's.
        let end = key.checked_add(1).map(u64::to_be_bytes);
        let range = match &end {
            Some(end) => tree.range(key.to_be_bytes()..*end),
            None => tree.range(key.to_be_bytes()..),
        };
        let (mut first, mut len, mut gone) = (None, 0u64, sled::Batch::default());
        for piece in range {
            let (piece_key, value) = piece.map_err(|e| self.failed(e))?;
            len += value.len() as u64;
            if piece_key.len() == 8 {
                first = Some(value);
            }
            gone.remove(piece_key);
        }
        let Some(first) = first else {
            return Ok(());
        };
        tree.apply_batch(gone).map_err(|e| self.failed(e))?;
        state.bytes -= len;
        // Only the stream is read, from the first piece: decoding the whole batch would copy it.
        if let Ok(stream) = batch_stream(&first) {
            if let Some(waiting) = state.waiting.get_mut(&stream) {
                *waiting -= 1;
                if *waiting == 0 {
                    state.waiting.remove(&stream);
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
    /// When the outbox cannot be read.
    pub fn entries(&self, from: u64, limit: usize) -> Result<Vec<Entry>, Error> {
        join_pieces(self.tree()?.range(from.to_be_bytes()..), limit)?
            .into_iter()
            .map(|Stored { key, value }| {
                // The records' JSON is sliced out of the entry's bytes, not copied again.
                let batch = decode_batch(value)
                    .map_err(|e| Error::Bug(format!("an outbox entry does not decode: {e}")))?;
                Ok(Entry { key, batch })
            })
            .collect()
    }

    /// The number of entries waiting.
    pub fn len(&self) -> u64 {
        self.lock().waiting.values().sum()
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
    /// When the outbox cannot be read or written.
    pub fn discard_stream(&self, stream: &StreamName) -> Result<u64, Error> {
        let mut dropped = 0;
        self.forget_position(stream);
        for entry in self.entries(0, usize::MAX)? {
            if entry.batch.stream == *stream {
                self.remove(entry.key)?;
                dropped += 1;
            }
        }
        Ok(dropped)
    }

    /// Writes what is buffered to disk (sled's flush; no `fdatasync`, see the module docs).
    ///
    /// # Errors
    ///
    /// When the flush fails.
    pub fn flush(&self) -> Result<(), Error> {
        self.tree()?.flush().map(drop).map_err(|e| self.failed(e))
    }
}

fn open_tree(config: &OutboxConfig) -> Result<(sled::Tree, sled::Db), Error> {
    let db = crate::store::open_db(&config.path, config.cache_bytes, Some(500), "outbox")?;
    let tree = db.open_tree("outbox").map_err(storage_error)?;
    Ok((tree, db))
}

/// Adds what `tree` holds to `state`: bytes, entries per stream, their positions, the next key.
fn count(tree: &sled::Tree, state: &mut State) -> Result<(), Error> {
    for Stored { key, value } in join_pieces(tree.iter(), usize::MAX)? {
        state.bytes += value.len() as u64;
        // Copied: the position kept of it must not hold sled's buffer.
        let batch = decode_batch(Bytes::copy_from_slice(&value))
            .map_err(|e| Error::Bug(format!("an outbox entry does not decode: {e}")))?;
        state.next_key = key + 1;
        *state.waiting.entry(batch.stream.clone()).or_default() += 1;
        state
            .positions
            .insert(batch.stream, (batch.epoch, batch.lease, batch.cursor));
    }
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
        let seqs: Vec<u64> = outbox
            .entries(0, 10)
            .unwrap()
            .iter()
            .map(|e| e.batch.seq)
            .collect();
        assert_eq!(seqs, [0, 2]);
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
            outbox.flush().unwrap();
        }
        let outbox = Outbox::open(&config).unwrap();
        let seqs: Vec<u64> = outbox
            .entries(0, 100)
            .unwrap()
            .iter()
            .map(|e| e.batch.seq)
            .collect();
        assert_eq!(seqs, [1, 2, 3, 4]);
        assert_eq!(
            outbox.position(&StreamName::new("a").unwrap(), 0, 0),
            Some(Checkpoint::from_bytes("4"))
        );
        // New entries go after the old ones.
        let key = outbox.push(&batch("a", 5, 10)).await.unwrap();
        assert_eq!(key, 5);
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
        let blocked = {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.push(&batch("a", 3, 1_000)).await })
        };
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!blocked.is_finished(), "a full outbox took another batch");
        assert_eq!(outbox.len(), 3);
        outbox.remove(0).unwrap();
        let key = tokio::time::timeout(Duration::from_secs(5), blocked)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(key, 3);
        assert_eq!(outbox.len(), 3);
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
