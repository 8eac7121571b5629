//! The sink of a worker's pipelines: a batch is committed once it is in the outbox, stamped
//! with the epoch and lease of the Start that scheduled its run.

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::batch::Batch;
use crate::checkpoint::Checkpoint;
use crate::error::Error;
use crate::message::Commit;
use crate::outbox::Outbox;
use crate::sink::Sink;
use crate::stream::StreamName;

/// The worker's sink: a batch is "committed" once it is in the outbox.
pub(super) struct OutboxSink {
    /// The worker's outbox.
    pub(super) outbox: Outbox,
    /// The run's: a stop ends a wait for room in a full outbox (nothing was written yet).
    pub(super) cancel: CancellationToken,
    /// The run's epoch, stamped on a batch whose source left it out.
    pub(super) epoch: u64,
    /// The lease epoch of the Start that scheduled the run, stamped likewise.
    pub(super) lease: u64,
}

#[async_trait]
impl Sink for OutboxSink {
    async fn commit(&self, batch: &Batch) -> Result<Commit, Error> {
        let stamped;
        let batch = if batch.epoch == self.epoch && batch.lease == self.lease {
            batch
        } else {
            stamped = Batch {
                epoch: self.epoch,
                lease: self.lease,
                ..batch.clone()
            };
            &stamped
        };
        self.outbox
            .push_unless_cancelled(batch, &self.cancel)
            .await?;
        Ok(Commit::Stored {
            records: batch.records.len() as u64,
        })
    }

    /// The position after the stream's batches waiting in the outbox, if any: the pipeline
    /// itself carries its checkpoint from run to run.
    async fn checkpoint(&self, stream: &StreamName) -> Result<Checkpoint, Error> {
        Ok(self
            .outbox
            .position(stream, self.epoch, self.lease)
            .unwrap_or_else(Checkpoint::start))
    }
}
