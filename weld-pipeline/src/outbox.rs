//! The worker's outbox: batches wait here, on disk, until the controller acknowledges them.
//!
//! A batch is written to the outbox before it is sent and removed only when its ack arrives, so
//! a controller outage or a worker restart costs no data: what is in the outbox is sent again,
//! in order, once a connection is back. The outbox is bounded ([`OutboxConfig::max_bytes`]):
//! when it is full, [`Outbox::push`] waits, which pauses the source at its next page instead of
//! dropping batches or growing memory.
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
    tree: sled::Tree,
    _db: sled::Db,
    max_bytes: u64,
    state: Mutex<State>,
    /// Bumped on every push and removal: waiters for space or for new entries watch it.
    version: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct State {
    bytes: u64,
    next_key: u64,
    /// Per stream: entries waiting.
    waiting: HashMap<StreamName, u64>,
    /// Per stream: the cursor of the newest batch ever pushed (kept after its removal), where
    /// this worker's next page of the stream starts.
    positions: HashMap<StreamName, Checkpoint>,
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
        let db = crate::store::open_db(&config.path, config.cache_bytes, Some(500), "outbox")?;
        let tree = db.open_tree("outbox").map_err(storage_error)?;
        let mut state = State::default();
        for entry in tree.iter() {
            let (key, value) = entry.map_err(storage_error)?;
            let batch = decode_batch(Bytes::copy_from_slice(&value))
                .map_err(|e| Error::Bug(format!("an outbox entry does not decode: {e}")))?;
            state.bytes += value.len() as u64;
            state.next_key = key_of(&key)? + 1;
            *state.waiting.entry(batch.stream.clone()).or_default() += 1;
            state.positions.insert(batch.stream, batch.cursor);
        }
        Ok(Outbox {
            inner: Arc::new(Inner {
                tree,
                _db: db,
                max_bytes: config.max_bytes,
                state: Mutex::new(state),
                version: watch::Sender::new(0),
            }),
        })
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
        let mut value = BytesMut::with_capacity(batch.encoded_len());
        encode_batch(batch, &mut value);
        let len = value.len() as u64;
        let mut versions = self.inner.version.subscribe();
        loop {
            {
                let mut state = self.lock();
                if state.bytes == 0 || state.bytes + len <= self.inner.max_bytes {
                    // Written under the lock, so keys reach the tree in order and a reader never
                    // sees key k+1 before key k.
                    let key = state.next_key;
                    fail::fail_point!("outbox::in_the_middle_of_a_write", |_| Err(
                        Error::Unavailable(
                            "failpoint: crashed in the middle of an outbox write".into()
                        )
                    ));
                    self.inner
                        .tree
                        .insert(key.to_be_bytes(), &value[..])
                        .map_err(storage_error)?;
                    state.next_key += 1;
                    state.bytes += len;
                    *state.waiting.entry(batch.stream.clone()).or_default() += 1;
                    state
                        .positions
                        .insert(batch.stream.clone(), batch.cursor.clone());
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
        let mut state = self.lock();
        let Some(value) = self
            .inner
            .tree
            .remove(key.to_be_bytes())
            .map_err(storage_error)?
        else {
            return Ok(());
        };
        state.bytes -= value.len() as u64;
        if let Ok(batch) = decode_batch(Bytes::copy_from_slice(&value)) {
            if let Some(waiting) = state.waiting.get_mut(&batch.stream) {
                *waiting -= 1;
                if *waiting == 0 {
                    state.waiting.remove(&batch.stream);
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
        self.inner
            .tree
            .range(from.to_be_bytes()..)
            .take(limit)
            .map(|entry| {
                let (key, value) = entry.map_err(storage_error)?;
                let batch = decode_batch(Bytes::copy_from_slice(&value))
                    .map_err(|e| Error::Bug(format!("an outbox entry does not decode: {e}")))?;
                Ok(Entry {
                    key: key_of(&key)?,
                    batch,
                })
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
    /// from this outbox.
    pub fn position(&self, stream: &StreamName) -> Option<Checkpoint> {
        self.lock().positions.get(stream).cloned()
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
        self.inner.tree.flush().map(drop).map_err(storage_error)
    }
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
            outbox.position(&StreamName::new("a").unwrap()),
            Some(Checkpoint::from_bytes("4"))
        );
        // New entries go after the old ones.
        let key = outbox.push(&batch("a", 5, 10)).await.unwrap();
        assert_eq!(key, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_outbox_pauses_the_writer_until_an_ack_frees_room() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = OutboxConfig::new(dir.path());
        let one = {
            let mut out = BytesMut::new();
            encode_batch(&batch("a", 0, 1_000), &mut out);
            out.len() as u64
        };
        config.max_bytes = one * 3;
        let outbox = Outbox::open(&config).unwrap();
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
