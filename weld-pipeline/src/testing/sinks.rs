//! A sink that fails on demand.

use crate::sync::Locked;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::batch::Batch;
use crate::checkpoint::Checkpoint;
use crate::error::Error;
use crate::message::Commit;
use crate::sink::{MemorySink, Sink};
use crate::stream::StreamName;

/// A batch `seq` whose commits fail, and the error they fail with.
type SeqFailure = (u64, fn() -> Error);

/// A [`MemorySink`] whose commits fail on demand.
#[derive(Clone, Debug, Default)]
pub struct FailingSink {
    /// The sink that stores what is not failed.
    pub inner: MemorySink,
    fail: Arc<Mutex<VecDeque<Error>>>,
    fail_at_seq: Arc<Mutex<Option<SeqFailure>>>,
}

impl FailingSink {
    /// A sink that fails nothing until told to.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next commit fails with `error`, without writing anything.
    pub fn fail_next(&self, error: Error) {
        self.fail.locked().push_back(error);
    }

    /// Every commit of a batch with this `seq` fails with `error()`.
    pub fn fail_seq(&self, seq: u64, error: fn() -> Error) {
        *self.fail_at_seq.locked() = Some((seq, error));
    }
}

#[async_trait]
impl Sink for FailingSink {
    async fn commit(&self, batch: &Batch) -> Result<Commit, Error> {
        if let Some(error) = self.fail.locked().pop_front() {
            return Err(error);
        }
        if let Some((seq, error)) = *self.fail_at_seq.locked() {
            if batch.seq == seq {
                return Err(error());
            }
        }
        self.inner.commit(batch).await
    }

    async fn checkpoint(&self, stream: &StreamName) -> Result<Checkpoint, Error> {
        Ok(self.inner.checkpoint(stream))
    }
}
