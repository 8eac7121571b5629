//! A sink that keeps everything in memory: for tests, demos and the in-process pipeline.

use crate::sync::Locked;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{RunProgress, Sink};
use crate::batch::Batch;
use crate::checkpoint::Checkpoint;
use crate::error::Error;
use crate::message::Commit;
use crate::record::Record;
use crate::stream::{RunId, StreamName};

/// A [`Sink`] in memory, with the same atomicity, idempotence, newest-wins, purge and
/// checkpoint contiguity rules as a durable store. It survives nothing: use it where losing everything on exit is fine. Clones share the
/// same data.
#[derive(Clone, Debug, Default)]
pub struct MemorySink {
    streams: Arc<Mutex<HashMap<StreamName, StreamData>>>,
}

#[derive(Debug, Default)]
struct StreamData {
    records: BTreeMap<String, Record>,
    live: u64,
    checkpoint: Checkpoint,
    committed: HashSet<(RunId, u64)>,
    /// Per run: how far its batches are in without a gap, and the cursors of those that came
    /// early, after a gap.
    runs: HashMap<RunId, (RunProgress, BTreeMap<u64, Checkpoint>)>,
    /// The fields the source described last.
    schema: Option<crate::source::Schema>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every stored record of a stream, live and archived, ordered by id.
    pub fn records(&self, stream: &StreamName) -> Vec<Record> {
        self.with(stream, |data| data.records.values().cloned().collect())
    }

    /// Removes a record behind the pipeline's back, as a write lost by a disk that lied about
    /// its sync would: for tests of reconciliation. Returns what it removed.
    pub fn forget(&self, stream: &StreamName, id: &str) -> Option<Record> {
        let mut streams = self.streams.locked();
        let data = streams.get_mut(stream)?;
        let removed = data.records.remove(id)?;
        if !removed.archived {
            data.live -= 1;
        }
        Some(removed)
    }

    /// The number of live (not archived) records of a stream.
    pub fn live_count(&self, stream: &StreamName) -> u64 {
        self.with(stream, |data| data.live)
    }

    /// The stream's last committed checkpoint ([`Checkpoint::start`] for a stream with none).
    pub fn checkpoint(&self, stream: &StreamName) -> Checkpoint {
        self.with(stream, |data| data.checkpoint.clone())
    }

    /// The fields a source last described for a stream (see
    /// [`Catalog`](crate::source::Catalog)), `None` when none did.
    pub fn schema(&self, stream: &StreamName) -> Option<crate::source::Schema> {
        self.with(stream, |data| data.schema.clone())
    }

    /// The number of batches committed for a stream (replays not counted).
    pub fn batches_committed(&self, stream: &StreamName) -> usize {
        self.with(stream, |data| data.committed.len())
    }

    fn with<T: Default>(&self, stream: &StreamName, f: impl FnOnce(&StreamData) -> T) -> T {
        let streams = self.streams.locked();
        streams.get(stream).map(f).unwrap_or_default()
    }
}

#[async_trait]
impl Sink for MemorySink {
    async fn commit(&self, batch: &Batch) -> Result<Commit, Error> {
        // Everything happens under one lock: the atomic step.
        let mut streams = self.streams.locked();
        let data = streams.entry(batch.stream.clone()).or_default();
        if !data.committed.insert((batch.run_id, batch.seq)) {
            return Ok(Commit::Replayed);
        }
        let mut written = 0;
        for record in &batch.records {
            if record.purge {
                // Whatever the stored version: see `Record::purge`. Nothing stays behind.
                if let Some(removed) = data.records.remove(&record.id) {
                    if !removed.archived {
                        data.live -= 1;
                    }
                }
                continue;
            }
            let was_live = match data.records.get(&record.id) {
                Some(stored) if stored.updated_at > record.updated_at => continue,
                Some(stored) => !stored.archived,
                None => false,
            };
            match (was_live, record.archived) {
                (false, false) => data.live += 1,
                (true, true) => data.live -= 1,
                _ => {}
            }
            let version = match data.records.get(&record.id) {
                Some(stored) if record.amend => stored.amended_by(record),
                _ => Record {
                    amend: false,
                    purge: false,
                    ..record.clone()
                },
            };
            data.records.insert(record.id.clone(), version);
            written += 1;
        }
        let (progress, early) = data.runs.entry(batch.run_id).or_default();
        let moved = progress.commit(batch.seq, batch.last, batch.cursor.clone(), |seq| {
            Ok(early.remove(&seq))
        })?;
        match moved {
            Some(cursor) => data.checkpoint = cursor,
            None => {
                early.insert(batch.seq, batch.cursor.clone());
            }
        }
        Ok(Commit::Stored { records: written })
    }

    async fn checkpoint(&self, stream: &StreamName) -> Result<Checkpoint, Error> {
        Ok(MemorySink::checkpoint(self, stream))
    }
}

/// Ids in the order a store keys them: numeric ids numerically (shorter first), then by bytes.
fn key_order(id: &str) -> (usize, &str) {
    (id.len(), id)
}

#[async_trait]
impl crate::source::Catalog for MemorySink {
    async fn describe(
        &self,
        stream: &StreamName,
        schema: &crate::source::Schema,
    ) -> Result<(), Error> {
        let mut streams = self.streams.locked();
        streams.entry(stream.clone()).or_default().schema = Some(schema.clone());
        Ok(())
    }
}

#[async_trait]
impl crate::source::Inventory for MemorySink {
    async fn held(
        &self,
        stream: &StreamName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<crate::source::HeldPage, Error> {
        let limit = limit.clamp(1, crate::source::MAX_HELD_PER_PAGE);
        let mut held: Vec<crate::source::Held> = self.with(stream, |data| {
            data.records
                .values()
                .filter(|r| after.is_none_or(|a| key_order(&r.id) > key_order(a)))
                .map(|r| crate::source::Held {
                    id: r.id.clone(),
                    updated_at: r.updated_at,
                    archived: r.archived,
                })
                .collect()
        });
        held.sort_by(|a, b| key_order(&a.id).cmp(&key_order(&b.id)));
        let more = held.len() > limit;
        held.truncate(limit);
        Ok(crate::source::HeldPage {
            next: more.then(|| held.last().map(|h| h.id.clone())).flatten(),
            records: held,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Json, Timestamp};

    fn record(id: &str, at: i64, archived: bool, body: &str) -> Record {
        Record {
            id: id.into(),
            updated_at: Timestamp::from_millis(at),
            archived,
            amend: false,
            purge: false,
            data: Json::parse(body.as_bytes().to_vec()).unwrap(),
        }
    }

    fn batch(seq: u64, records: Vec<Record>) -> Batch {
        Batch::new(StreamName::new("s").unwrap(), RunId(7), seq)
            .with_records(records)
            .with_cursor(Checkpoint::from_bytes(format!("c{seq}")))
    }

    #[tokio::test]
    async fn redelivered_batch_is_stored_once_and_acked_as_replay() {
        let sink = MemorySink::new();
        let b = batch(0, vec![record("1", 1, false, "1")]);
        assert_eq!(
            sink.commit(&b).await.unwrap(),
            Commit::Stored { records: 1 }
        );
        assert_eq!(sink.commit(&b).await.unwrap(), Commit::Replayed);
        assert_eq!(sink.batches_committed(&b.stream), 1);
        assert_eq!(sink.live_count(&b.stream), 1);
    }

    #[tokio::test]
    async fn an_older_version_never_replaces_a_newer_one() {
        let sink = MemorySink::new();
        sink.commit(&batch(0, vec![record("1", 10, false, "\"new\"")]))
            .await
            .unwrap();
        let older = sink
            .commit(&batch(1, vec![record("1", 5, false, "\"old\"")]))
            .await
            .unwrap();
        assert_eq!(older, Commit::Stored { records: 0 });
        let stored = sink.records(&StreamName::new("s").unwrap());
        assert_eq!(stored[0].data.as_bytes(), b"\"new\"");
    }

    #[tokio::test]
    async fn archived_records_are_kept_and_leave_the_live_count() {
        let sink = MemorySink::new();
        let stream = StreamName::new("s").unwrap();
        sink.commit(&batch(
            0,
            vec![record("1", 1, false, "1"), record("2", 1, false, "2")],
        ))
        .await
        .unwrap();
        sink.commit(&batch(1, vec![record("1", 2, true, "1")]))
            .await
            .unwrap();
        assert_eq!(sink.live_count(&stream), 1);
        assert_eq!(sink.records(&stream).len(), 2);
        assert_eq!(sink.checkpoint(&stream), Checkpoint::from_bytes("c1"));
    }

    #[tokio::test]
    async fn a_purge_removes_the_record_whatever_its_version_and_leaves_no_trace() {
        let sink = MemorySink::new();
        let stream = StreamName::new("s").unwrap();
        sink.commit(&batch(
            0,
            vec![record("1", 50, false, "1"), record("2", 1, false, "2")],
        ))
        .await
        .unwrap();
        // Learned at 10, older than the stored version 50: it removes it all the same. A purge
        // of an id never stored stores nothing.
        let purges = vec![
            Record::purge("1", Timestamp::from_millis(10)),
            Record::purge("3", Timestamp::from_millis(10)),
        ];
        sink.commit(&batch(1, purges)).await.unwrap();
        let ids: Vec<String> = sink.records(&stream).into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["2"]);
        assert_eq!(sink.live_count(&stream), 1);
    }

    #[tokio::test]
    async fn the_checkpoint_waits_for_a_batch_still_missing_then_jumps_past_the_early_ones() {
        let sink = MemorySink::new();
        let stream = StreamName::new("s").unwrap();
        sink.commit(&batch(0, vec![])).await.unwrap();
        sink.commit(&batch(2, vec![])).await.unwrap();
        sink.commit(&batch(3, vec![])).await.unwrap();
        assert_eq!(sink.checkpoint(&stream), Checkpoint::from_bytes("c0"));
        sink.commit(&batch(1, vec![])).await.unwrap();
        assert_eq!(sink.checkpoint(&stream), Checkpoint::from_bytes("c3"));
        assert_eq!(
            Sink::checkpoint(&sink, &stream).await.unwrap(),
            Checkpoint::from_bytes("c3")
        );
    }
}
