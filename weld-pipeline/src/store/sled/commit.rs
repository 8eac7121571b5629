//! The commit: a batch's records, ledger entry, checkpoint and run written in one sled batch,
//! then made durable by the group sync before it is acknowledged.

use std::collections::HashMap;

use async_trait::async_trait;

use super::disk::{short_of_room, DISK_MARGIN};
use super::keys::{self, RecordHead, CHECKPOINT, COUNTS};
use super::runs::encode_run;
use super::{storage_error, SledStore};
use crate::batch::Batch;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, ErrorKind};
use crate::message::Commit;
use crate::record::{Record, Timestamp};
use crate::sink::Sink;
use crate::store::{upsert_counts, Counts, RunState};
use crate::stream::StreamName;

/// What a batch's records did to the store.
#[derive(Debug, Default)]
struct Upserted {
    /// Versions written (new or newer than what was stored).
    written: u64,
    /// Stored records a purge removed.
    purged: u64,
}

impl SledStore {
    /// Adds a batch's records to `write`, each unless the stored version is newer, and moves
    /// `counts` with them; a purge removes the stored record whatever its version. Returns what
    /// it did.
    fn upsert(
        &self,
        batch: &Batch,
        counts: &mut Counts,
        write: &mut sled::Batch,
    ) -> Result<Upserted, Error> {
        let stream = &batch.stream;
        // Versions written earlier in this same batch (a batch may carry one id twice), and
        // `None` for an id a purge removed earlier in it.
        let mut pending: HashMap<&str, Option<RecordHead>> = HashMap::new();
        // Whole versions written earlier in this batch, kept only when it holds amendments (one
        // may follow a version of its id).
        let amends = batch.records.iter().any(|r| r.amend);
        let mut amended: HashMap<&str, Record> = HashMap::new();
        let mut done = Upserted::default();
        for record in &batch.records {
            let key = keys::record_key(stream, &record.id);
            let stored = match pending.get(record.id.as_str()) {
                Some(head) => *head,
                None => self
                    .tree
                    .get(&key)
                    .map_err(storage_error)?
                    .map(|v| keys::decode_head(&v))
                    .transpose()?,
            };
            if record.purge {
                // Whatever its version: the source never reuses an id, so nothing stored can
                // be newer than the source's knowledge that the record is gone.
                if let Some(head) = stored {
                    if head.archived {
                        counts.archived = counts.archived.saturating_sub(1);
                    } else {
                        counts.live = counts.live.saturating_sub(1);
                    }
                    write.remove(key);
                    amended.remove(record.id.as_str());
                    done.purged += 1;
                }
                pending.insert(&record.id, None);
                continue;
            }
            let held = stored.map(|head| (head.updated_at, head.archived));
            let Some((live, archived)) = upsert_counts(held, record) else {
                continue;
            };
            counts.live = counts.live.saturating_add_signed(live);
            counts.archived = counts.archived.saturating_add_signed(archived);
            pending.insert(
                &record.id,
                Some(RecordHead {
                    updated_at: record.updated_at,
                    archived: record.archived,
                }),
            );
            if record.amend && stored.is_some() {
                let whole = match amended.remove(record.id.as_str()) {
                    Some(version) => version,
                    None => self
                        .tree
                        .get(&key)
                        .map_err(storage_error)?
                        .map(|v| keys::decode_record(record.id.clone(), v))
                        .transpose()?
                        .ok_or_else(|| Error::Bug("an amended record vanished".into()))?,
                };
                let version = whole.amended_by(record);
                write.insert(key, keys::encode_record(&version));
                amended.insert(&record.id, version);
            } else {
                write.insert(key, keys::encode_record(record));
                if amends {
                    amended.insert(&record.id, record.clone());
                }
            }
            done.written += 1;
        }
        Ok(done)
    }

    /// Writes a batch (not yet durable). Returns what a commit acknowledges.
    fn write(&self, batch: &Batch) -> Result<Commit, Error> {
        let stream = &batch.stream;
        if self.is_committed(stream, batch.run_id, batch.seq)? {
            return Ok(Commit::Replayed);
        }
        let mut write = sled::Batch::default();
        let mut counts = self.counts(stream)?;
        let Upserted { written, purged } = self.upsert(batch, &mut counts, &mut write)?;
        let now = Timestamp::now();
        let mut run = match self.load_run(stream, batch.run_id)? {
            Some(run) => run,
            None => self.open_run(stream, batch.run_id, now, &mut write)?,
        };
        run.records += batch.records.len() as u64;
        run.batches += 1;
        run.repaired += batch.repaired;
        run.purged += purged;
        let tree = &self.tree;
        let moved = run
            .progress
            .commit(batch.seq, batch.last, batch.cursor.to_bytes(), |seq| {
                // A batch that arrived early, after the gap this one may close: its ledger entry
                // holds the cursor it reached.
                let entry = tree
                    .get(keys::batch_key(stream, batch.run_id, seq))
                    .map_err(storage_error)?;
                Ok(entry.map(|e| bytes::Bytes::copy_from_slice(e.get(8..).unwrap_or_default())))
            })?;
        // A batch fetched before the stream's latest resync keeps its records, not its cursor.
        let fenced = batch.epoch < self.epoch(stream)?;
        if let (Some(cursor), false) = (moved, fenced) {
            write.insert(keys::stream_key(CHECKPOINT, stream), &cursor[..]);
        }
        if run.progress.is_complete() {
            run.state = RunState::Succeeded;
            run.finished_at = Some(now);
            run.error = None;
        }
        write.insert(keys::run_key(stream, batch.run_id), encode_run(&run)?);
        let mut ledger = written.to_be_bytes().to_vec();
        ledger.extend_from_slice(batch.cursor.as_bytes());
        write.insert(keys::batch_key(stream, batch.run_id, batch.seq), ledger);
        write.insert(
            keys::stream_key(COUNTS, stream),
            &keys::encode_counts(counts),
        );
        fail::fail_point!("store::before_write", |_| Err(Error::Unavailable(
            "failpoint: crashed before the write".into()
        )));
        self.tree.apply_batch(write).map_err(storage_error)?;
        Ok(Commit::Stored { records: written })
    }
}

#[async_trait]
impl Sink for SledStore {
    async fn commit(&self, batch: &Batch) -> Result<Commit, Error> {
        // sled must not meet a full disk (see [`DISK_MARGIN`]): refused before it is written,
        // transiently, and the healing store says why.
        let len = batch.encoded_len() as u64;
        if let Some(free) = short_of_room(&self.dir, len) {
            return Err(Error::new(
                ErrorKind::Transient,
                format!(
                    "No space left on device: {free} bytes free beside the store, a commit of \
                     {len} bytes keeps {DISK_MARGIN} more free"
                ),
            ));
        }
        let commit = {
            let writer = self.writer(&batch.stream);
            let _writing = writer.lock().await;
            // A batch's reads and writes take sled a millisecond or so: off the runtime's
            // threads, which carry the API's requests and the other deliveries meanwhile.
            let (store, batch) = (self.clone(), batch.clone());
            tokio::task::spawn_blocking(move || store.write(&batch))
                .await
                .map_err(|e| Error::from_join("a commit's write", e))??
        };
        // The writer lock is released before the sync, so the next batch's write joins this
        // sync round. A replay waits for a sync too: its first commit may still be waiting.
        fail::fail_point!("store::between_write_and_sync", |_| Err(
            Error::Unavailable("failpoint: crashed between the write and its sync".into())
        ));
        self.sync.sync().await?;
        Ok(commit)
    }

    async fn checkpoint(&self, stream: &StreamName) -> Result<Checkpoint, Error> {
        SledStore::checkpoint(self, stream)
    }
}
