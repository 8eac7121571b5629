//! The outbox as a queue, in memory: what waits, in key order, its bound, each stream's
//! position; pushes that wait for room, removals on acks, deliveries read from memory (see
//! "Memory first, the disk for what waits" in the module docs).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::pieces::{join_pieces, remove_pieces, write_pieces, Stored};
use super::{Entry, Outbox};
use crate::batch::Batch;
use crate::checkpoint::Checkpoint;
use crate::encoding::{decode_batch, encode_batch};
use crate::error::Error;
use crate::stream::StreamName;

/// A batch waiting, as it was encoded.
#[derive(Debug)]
pub(super) struct Held {
    pub(super) value: Bytes,
    stream: StreamName,
    /// When it was pushed (or found on disk at opening).
    since: Instant,
}

/// What waits, in memory.
#[derive(Debug, Default)]
pub(super) struct State {
    /// Encoded bytes waiting.
    bytes: u64,
    next_key: u64,
    /// Every entry waiting, in key order.
    pub(super) entries: BTreeMap<u64, Held>,
    /// Every entry below this key is on disk: entries are written in key order.
    pub(super) written_below: u64,
    /// Per stream: entries waiting.
    waiting: HashMap<StreamName, u64>,
    /// Per stream: the epoch, lease and cursor of its newest batch pushed (kept after its
    /// removal), where this worker's next page of the stream starts.
    positions: HashMap<StreamName, (u64, u64, Checkpoint)>,
    /// Pushes waiting for room right now.
    blocked: u64,
}

impl State {
    /// What `tree` holds: its entries (all on disk), bytes, entries per stream, their
    /// positions, the next key.
    pub(super) fn load(tree: &sled::Tree) -> Result<State, Error> {
        let mut state = State::default();
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
        Ok(state)
    }

    /// Whether a batch of `len` bytes fits under `max_bytes` (any batch fits an empty queue).
    fn has_room(&self, len: u64, max_bytes: u64) -> bool {
        self.bytes == 0 || self.bytes + len <= max_bytes
    }

    /// Adds `batch`, encoded as `value`, at the end; returns its key.
    fn insert(&mut self, batch: &Batch, value: Bytes) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        self.bytes += value.len() as u64;
        self.entries.insert(
            key,
            Held {
                value,
                stream: batch.stream.clone(),
                since: Instant::now(),
            },
        );
        *self.waiting.entry(batch.stream.clone()).or_default() += 1;
        self.positions.insert(
            batch.stream.clone(),
            (batch.epoch, batch.lease, batch.cursor.clone()),
        );
        key
    }

    /// Takes the entry under `key` out, if it waits.
    fn take(&mut self, key: u64) -> Option<Held> {
        let held = self.entries.remove(&key)?;
        self.bytes -= held.value.len() as u64;
        if let Some(waiting) = self.waiting.get_mut(&held.stream) {
            *waiting -= 1;
            if *waiting == 0 {
                self.waiting.remove(&held.stream);
            }
        }
        Some(held)
    }

    /// The entries not on disk yet that have waited `write_after` by `now` (every one when
    /// `due` is `None`): the key after the last of them, and their bytes.
    pub(super) fn unwritten(&self, due: Option<(Instant, Duration)>) -> (u64, u64) {
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
    pub(super) fn next_due(&self, after: Duration) -> Option<Instant> {
        self.entries
            .range(self.written_below..)
            .next()
            .map(|(_, held)| held.since + after)
    }

    /// Writes the entries from `written_below` up to `end` in one atomic sled batch, each in
    /// its pieces.
    pub(super) fn write_until(&mut self, tree: &sled::Tree, end: u64) -> sled::Result<()> {
        let entries = self
            .entries
            .range(self.written_below..end)
            .map(|(&key, held)| (key, &held.value));
        write_pieces(tree, entries)?;
        self.written_below = end;
        Ok(())
    }

    /// Counts nothing as on disk: the database was emptied, to be written anew from memory.
    pub(super) fn forget_written(&mut self) {
        self.written_below = self.entries.keys().next().copied().unwrap_or(self.next_key);
    }
}

impl Outbox {
    /// Adds a batch at the end of the outbox, waiting while the outbox is full or cannot write.
    /// It is in memory, to be written to disk once it has waited
    /// [`OutboxConfig::write_after`](super::OutboxConfig::write_after) (at once when that is
    /// zero).
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
        let mut versions = self.inner.version.subscribe();
        loop {
            if let Some(key) = self.try_push(batch, &value, cancel)? {
                return Ok(key);
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

    /// Adds `batch` (encoded: `value`) now if the outbox can take it; `None` when it must wait
    /// (full, or it cannot write).
    fn try_push(
        &self,
        batch: &Batch,
        value: &Bytes,
        cancel: Option<&CancellationToken>,
    ) -> Result<Option<u64>, Error> {
        if self.stalled() {
            return Ok(None);
        }
        // The tree before the state: the same order as a reopen takes them.
        // Without it (being reopened) the batch waits in memory for the writer.
        let tree = if self.inner.config.write_after.is_zero() {
            self.tree().ok()
        } else {
            None
        };
        let mut state = self.lock();
        if cancel.is_some_and(CancellationToken::is_cancelled) {
            return Err(Error::Cancelled);
        }
        if !state.has_room(value.len() as u64, self.inner.config.max_bytes) {
            return Ok(None);
        }
        let key = state.insert(batch, value.clone());
        fail::fail_point!("outbox::holding_a_batch_in_memory_only");
        if let Some(tree) = tree {
            // A write that fails leaves the batch in memory, and the next pushes
            // wait until the outbox can write it.
            let _ = self.write_unwritten(&tree, &mut state, None);
        }
        drop(state);
        self.inner.version.send_modify(|v| *v += 1);
        Ok(Some(key))
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
        let Some(held) = state.take(key) else {
            return Ok(());
        };
        if key < state.written_below && !self.failing() {
            if let Some(tree) = tree {
                if let Err(error) = remove_pieces(&tree, key, held.value.len()) {
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
