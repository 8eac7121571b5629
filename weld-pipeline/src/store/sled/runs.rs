//! The run history: a run opened by its first batch or its start, finished by its report or its
//! last batch, read newest first.

use super::keys::{self, RUN};
use super::{storage_error, SledStore};
use crate::error::Error;
use crate::message::RunOutcome;
use crate::record::Timestamp;
use crate::store::RunRecord;
use crate::stream::{RunId, StreamName};

impl SledStore {
    /// The stream's runs, newest first.
    ///
    /// # Errors
    ///
    /// When the store cannot be read.
    pub fn runs(&self, stream: &StreamName, limit: usize) -> Result<Vec<RunRecord>, Error> {
        self.tree
            .scan_prefix(keys::stream_prefix(RUN, stream))
            .rev()
            .take(limit)
            .map(|entry| {
                let (_, value) = entry.map_err(storage_error)?;
                serde_json::from_slice(&value)
                    .map_err(|e| Error::Bug(format!("a stored run does not decode: {e}")))
            })
            .collect()
    }

    /// Records that a run started (a worker's report), unless it is already known. Runs of the
    /// stream still marked running are older and will never finish: they are marked failed.
    ///
    /// # Errors
    ///
    /// When the store cannot be written.
    pub async fn start_run(
        &self,
        stream: &StreamName,
        run_id: RunId,
        at: Timestamp,
    ) -> Result<(), Error> {
        let writer = self.writer(stream);
        let _writing = writer.lock().await;
        let mut batch = sled::Batch::default();
        if self.load_run(stream, run_id)?.is_none() {
            self.open_run(stream, run_id, at, &mut batch)?;
        }
        self.tree.apply_batch(batch).map_err(storage_error)
    }

    /// Records how a run ended (a worker's report). A run already succeeded stays so: its last
    /// batch is committed, whatever the report says.
    ///
    /// # Errors
    ///
    /// When the store cannot be written.
    pub async fn finish_run(
        &self,
        stream: &StreamName,
        run_id: RunId,
        outcome: &RunOutcome,
    ) -> Result<(), Error> {
        let writer = self.writer(stream);
        let _writing = writer.lock().await;
        let mut run = self
            .load_run(stream, run_id)?
            .unwrap_or_else(|| RunRecord::started(run_id, Timestamp::now()));
        if !run.finish(outcome, Timestamp::now()) {
            return Ok(());
        }
        self.tree
            .insert(keys::run_key(stream, run_id), encode_run(&run)?)
            .map_err(storage_error)?;
        Ok(())
    }

    pub(super) fn load_run(
        &self,
        stream: &StreamName,
        run_id: RunId,
    ) -> Result<Option<RunRecord>, Error> {
        let value = self
            .tree
            .get(keys::run_key(stream, run_id))
            .map_err(storage_error)?;
        value
            .map(|v| {
                serde_json::from_slice(&v)
                    .map_err(|e| Error::Bug(format!("a stored run does not decode: {e}")))
            })
            .transpose()
    }

    /// Adds a new run to `batch`, closing the older runs still marked running.
    pub(super) fn open_run(
        &self,
        stream: &StreamName,
        run_id: RunId,
        at: Timestamp,
        batch: &mut sled::Batch,
    ) -> Result<RunRecord, Error> {
        for mut older in self.runs(stream, 8)? {
            if older.id < run_id && older.abandon(at) {
                batch.insert(keys::run_key(stream, older.id), encode_run(&older)?);
            }
        }
        let run = RunRecord::started(run_id, at);
        batch.insert(keys::run_key(stream, run_id), encode_run(&run)?);
        Ok(run)
    }
}

pub(super) fn encode_run(run: &RunRecord) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(run).map_err(|e| Error::Bug(format!("a run does not encode: {e}")))
}
