//! The unit of delivery and commit: the records of one page of one run.

use crate::checkpoint::Checkpoint;
use crate::record::Record;
use crate::stream::{RunId, StreamName};

/// The records of one stream from one page of one run.
///
/// Its identity `(stream, run_id, seq)` makes redelivery harmless: a sink that sees an identity
/// again acknowledges it without writing. `cursor` is the checkpoint the stream reaches once this
/// batch is committed; `last` marks the run's final batch, whose commit completes the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The stream the records belong to.
    pub stream: StreamName,
    /// The run that fetched them.
    pub run_id: RunId,
    /// Position within the run, from 0, without gaps.
    pub seq: u64,
    /// The stream's epoch when the run started (see [`Start::epoch`](crate::Start::epoch)). A
    /// source leaves it 0; the worker stamps its own. A store commits the records of a batch
    /// from an older epoch than the stream's but never moves the checkpoint to its cursor: a
    /// batch fetched before a resync cannot undo it.
    pub epoch: u64,
    /// The lease epoch of the start its run began under (see [`Start::lease`](crate::Start::lease));
    /// 0 outside replicas. A replica refuses a batch made under another lease than the one it
    /// holds, and its store checks that lease in the commit's own transaction.
    pub lease: u64,
    /// How many of its records repair the store: a source's reconciliation found them missing,
    /// stale, or gone for good at the source. Counted in the run history and a metric.
    pub repaired: u64,
    /// Whether this is the run's last batch.
    pub last: bool,
    /// The checkpoint reached once this batch is committed.
    pub cursor: Checkpoint,
    /// The records, in the order the source returned them. May be empty (a last page with
    /// nothing on it still carries the run's end and its cursor).
    pub records: Vec<Record>,
}

impl Batch {
    /// An empty batch at position `seq` of run `run_id` of `stream`: epoch and lease 0, nothing
    /// repaired, not the run's last, reaching the start checkpoint. The `with_*` methods set the
    /// rest, so a batch written in a test or a bench names only what matters to it:
    ///
    /// ```
    /// use weld_pipeline::record::{Json, Timestamp};
    /// use weld_pipeline::{Batch, Checkpoint, Record, RunId, StreamName};
    ///
    /// let record = Record::new("1", Timestamp::from_millis(1), Json::parse("{}")?);
    /// let batch = Batch::new(StreamName::new("contacts")?, RunId(1), 0)
    ///     .with_records(vec![record])
    ///     .with_cursor(Checkpoint::from_bytes("1"))
    ///     .with_last(true);
    /// assert_eq!(batch.records.len(), 1);
    /// # Ok::<_, weld_pipeline::Error>(())
    /// ```
    pub fn new(stream: StreamName, run_id: RunId, seq: u64) -> Self {
        Batch {
            stream,
            run_id,
            seq,
            epoch: 0,
            lease: 0,
            repaired: 0,
            last: false,
            cursor: Checkpoint::start(),
            records: Vec::new(),
        }
    }

    /// The same batch carrying `records`.
    #[must_use]
    pub fn with_records(mut self, records: Vec<Record>) -> Self {
        self.records = records;
        self
    }

    /// The same batch reaching `cursor` once committed.
    #[must_use]
    pub fn with_cursor(mut self, cursor: Checkpoint) -> Self {
        self.cursor = cursor;
        self
    }

    /// The same batch, the run's last or not.
    #[must_use]
    pub fn with_last(mut self, last: bool) -> Self {
        self.last = last;
        self
    }

    /// The same batch at the stream's epoch `epoch`.
    #[must_use]
    pub fn with_epoch(mut self, epoch: u64) -> Self {
        self.epoch = epoch;
        self
    }

    /// The same batch made under the lease epoch `lease`.
    #[must_use]
    pub fn with_lease(mut self, lease: u64) -> Self {
        self.lease = lease;
        self
    }

    /// The same batch, `repaired` of its records repairing the store.
    #[must_use]
    pub fn with_repaired(mut self, repaired: u64) -> Self {
        self.repaired = repaired;
        self
    }

    /// The batch's identity.
    pub fn id(&self) -> BatchId {
        BatchId {
            stream: self.stream.clone(),
            run_id: self.run_id,
            seq: self.seq,
        }
    }

    /// The most bytes its encoding takes (exact but for the epoch, lease and repair fields,
    /// counted whether they are written or not): a buffer of this capacity is never grown, and
    /// a batch of 100 KiB is not copied again near its end.
    pub fn encoded_len(&self) -> usize {
        // Stream (str8), run, seq, flags, epoch, repaired, lease, cursor (bytes32), count.
        let header = 1 + self.stream.as_str().len() + 8 + 8 + 1 + 3 * 8 + 4 + 4;
        header
            + self.cursor.as_bytes().len()
            + self.records.iter().map(Record::encoded_len).sum::<usize>()
    }
}

/// The identity of a batch: `(stream, run_id, seq)`.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct BatchId {
    /// The stream the batch belongs to.
    pub stream: StreamName,
    /// The run that fetched it: a later run's batches never replay an earlier one's.
    pub run_id: RunId,
    /// The batch's position in the run.
    pub seq: u64,
}
