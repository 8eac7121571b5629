//! The runner: drives one run from a source, through transforms, into a sink.

use crate::sync::Locked;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::watch;

use crate::batch::Batch;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, ErrorKind};
use crate::message::{RunFinished, RunOutcome};
use crate::record::Record;
use crate::scheduler::Job;
use crate::sink::Sink;
use crate::source::{RunContext, Source};
use crate::stream::{RunId, StreamName};
use crate::telemetry;
use crate::transform::Transform;

/// A source, optional transforms, and a sink: everything one run needs.
///
/// [`Pipeline::run`] pulls batches one page at a time, transforms them, commits each to the sink,
/// and advances its checkpoint only after the sink committed. A failed commit ends the run with
/// the checkpoint where the last successful commit left it; the next run starts there and fetches
/// the failed page again, which is harmless because commits are idempotent.
///
/// The sink may be a store, or a worker's outbox (whose batches the worker's courier delivers to
/// the controller): the runner cannot tell.
pub struct Pipeline<So, Si> {
    source: So,
    sink: Si,
    transform: Option<Arc<dyn Transform>>,
    /// The most bytes one committed batch may take encoded (see [`Pipeline::with_max_batch_bytes`]).
    max_batch_bytes: usize,
}

impl<So, Si> std::fmt::Debug for Pipeline<So, Si> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("transform", &self.transform.is_some())
            .finish_non_exhaustive()
    }
}

/// What one run did, as the runner returns it in-process: what its
/// [`RunFinished`] event says, plus the checkpoint the run reached, which the process keeps to
/// start its next run from (and which never travels: the controller's checkpoint is the one its
/// commits moved).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunReport {
    /// The stream that ran.
    pub stream: StreamName,
    /// The run: its batches' identities carry it.
    pub run_id: RunId,
    /// How it ended.
    pub outcome: RunOutcome,
    /// Batches committed (replays included: they are committed).
    pub batches: u64,
    /// Records in those batches.
    pub records: u64,
    /// The checkpoint after the last committed batch: where the next run starts.
    pub checkpoint: Checkpoint,
    /// How long the run took.
    pub duration: std::time::Duration,
    /// Page fetches that failed after their retries.
    pub fetch_errors: u64,
}

impl RunReport {
    /// The report as the event a worker sends.
    pub fn finished(&self) -> RunFinished {
        RunFinished {
            stream: self.stream.clone(),
            run_id: self.run_id,
            outcome: self.outcome.clone(),
            batches: self.batches,
            records: self.records,
            duration_ms: u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX),
            fetch_errors: self.fetch_errors,
        }
    }
}

impl<So: Source, Si: Sink> Pipeline<So, Si> {
    /// A pipeline from `source` to `sink`.
    pub fn new(source: So, sink: Si) -> Self {
        Pipeline {
            source,
            sink,
            transform: None,
            max_batch_bytes: usize::MAX,
        }
    }

    /// Commits no batch larger than `bytes` encoded ([`Batch::encoded_len`]): a page whose
    /// batch would be is committed as several, its records spread over them in order. A worker
    /// sets this under its transport's message limit, so that a page of any size reaches the
    /// controller (200 emails with HTML bodies of 85 KB make a page of 17 MB).
    ///
    /// Every piece but the last carries the checkpoint from before the page and is not `last`:
    /// a run that stops between them fetches the page again from there, and the records
    /// already committed are upserted again, harmlessly. Pieces are numbered on from the
    /// batch's `seq`, and the batches after them renumbered, so a run's numbers stay without
    /// gaps. A single record too large for a batch of its own ends the run with a permanent
    /// error naming it: it can never be delivered, and the stream's status says so.
    pub fn with_max_batch_bytes(mut self, bytes: usize) -> Self {
        self.max_batch_bytes = bytes;
        self
    }

    /// Applies `transform` to every batch before it is committed.
    pub fn with_transform(mut self, transform: impl Transform) -> Self {
        self.transform = Some(Arc::new(transform));
        self
    }

    /// Runs once from `from` until the source's last batch is committed, an error ends it, or
    /// `run.cancel` stops it at a page boundary.
    ///
    /// A page being fetched when the run is cancelled is abandoned (it will be fetched again from
    /// the checkpoint); a commit in progress is always finished, so a stop never leaves a batch
    /// half-committed or committed without its checkpoint.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future may abandon a commit in progress, which is then either complete or
    /// absent (see [`Sink::commit`]); prefer cancelling `run.cancel`.
    pub async fn run(&self, run: &RunContext, from: Checkpoint) -> RunReport {
        let started = tokio::time::Instant::now();
        telemetry::RunStarted {
            stream: &run.stream,
            run_id: run.run_id,
        }
        .emit();
        let mut report = RunReport {
            stream: run.stream.clone(),
            run_id: run.run_id,
            outcome: RunOutcome::Cancelled,
            batches: 0,
            records: 0,
            checkpoint: from.clone(),
            duration: std::time::Duration::ZERO,
            fetch_errors: 0,
        };
        report.outcome = self.drive(run, from, &mut report).await;
        report.duration = started.elapsed();
        telemetry::RunEnded {
            stream: &run.stream,
            run_id: run.run_id,
            outcome: &report.outcome,
            batches: report.batches,
            records: report.records,
            duration: report.duration,
        }
        .emit();
        report
    }

    async fn drive(
        &self,
        run: &RunContext,
        from: Checkpoint,
        report: &mut RunReport,
    ) -> RunOutcome {
        let failed = |error: &Error| RunOutcome::Failed {
            kind: error.kind(),
            error: error.to_string(),
        };
        let mut batches = self.source.batches(run, from);
        // How many pieces beyond one the batches so far were split into: later batches' numbers
        // move on by as many.
        let mut added_seqs = 0;
        loop {
            let next = tokio::select! {
                biased;
                () = run.cancel.cancelled() => return RunOutcome::Cancelled,
                next = batches.next() => next,
            };
            let mut batch = match next {
                Some(Ok(batch)) => batch,
                Some(Err(Error::Cancelled)) => return RunOutcome::Cancelled,
                Some(Err(error)) => {
                    telemetry::PageFetchFailed {
                        stream: &run.stream,
                        run_id: run.run_id,
                        error: &error,
                    }
                    .emit();
                    report.fetch_errors += 1;
                    return failed(&error);
                }
                None if run.cancel.is_cancelled() => return RunOutcome::Cancelled,
                None => {
                    let error = Error::Bug("the source ended without a last batch".into());
                    tracing::error!(stream = %run.stream, run_id = %run.run_id, error = %error);
                    return failed(&error);
                }
            };
            if let Some(transform) = &self.transform {
                if let Err(error) = transform.apply_all(&mut batch.records) {
                    let error = Error::new(ErrorKind::Permanent, error);
                    return failed(&error);
                }
            }
            batch.seq += added_seqs;
            let pieces = match split(batch, self.max_batch_bytes, &report.checkpoint) {
                Ok(pieces) => pieces,
                Err(error) => {
                    telemetry::PageFetchFailed {
                        stream: &run.stream,
                        run_id: run.run_id,
                        error: &error,
                    }
                    .emit();
                    return failed(&error);
                }
            };
            added_seqs += pieces.len() as u64 - 1;
            for batch in pieces {
                match self.sink.commit(&batch).await {
                    Ok(commit) => {
                        telemetry::BatchCommitted {
                            stream: &run.stream,
                            run_id: run.run_id,
                            seq: batch.seq,
                            commit,
                            repaired: batch.repaired,
                        }
                        .emit();
                        // Only now, with the batch committed, does the run's position move.
                        report.checkpoint = batch.cursor;
                        report.batches += 1;
                        report.records += batch.records.len() as u64;
                        if batch.last {
                            return RunOutcome::Succeeded;
                        }
                    }
                    Err(Error::Cancelled) => return RunOutcome::Cancelled,
                    Err(error) => {
                        telemetry::BatchCommitFailed {
                            stream: &run.stream,
                            run_id: run.run_id,
                            seq: batch.seq,
                            error: &error,
                        }
                        .emit();
                        return failed(&error);
                    }
                }
            }
        }
    }
}

/// `batch` as batches of at most `max_bytes` encoded each (see
/// [`Pipeline::with_max_batch_bytes`]): itself when it fits, else pieces numbered from its
/// `seq`, all but the last at `before` (the checkpoint before it) and not `last`; the last
/// carries its cursor, `last` flag and repair count.
fn split(batch: Batch, max_bytes: usize, before: &Checkpoint) -> Result<Vec<Batch>, Error> {
    if batch.encoded_len() <= max_bytes {
        return Ok(vec![batch]);
    }
    let empty = Batch {
        records: Vec::new(),
        ..batch.clone()
    };
    // The header of every piece: the larger of the two cursors it may carry.
    let header = empty.encoded_len() + before.as_bytes().len();
    let mut pieces: Vec<Batch> = Vec::new();
    let mut current: Vec<Record> = Vec::new();
    let mut used = header;
    for record in batch.records {
        let len = record.encoded_len();
        if header + len > max_bytes {
            return Err(Error::Invalid(format!(
                "record {} of stream {} takes {len} bytes, more than a batch may carry \
                 ({max_bytes} bytes, under the transport's message limit): it cannot be delivered",
                record.id, batch.stream
            )));
        }
        if used + len > max_bytes {
            pieces.push(Batch {
                records: std::mem::take(&mut current),
                ..empty.clone()
            });
            used = header;
        }
        used += len;
        current.push(record);
    }
    pieces.push(Batch {
        records: current,
        ..empty
    });
    let count = pieces.len();
    for (i, piece) in pieces.iter_mut().enumerate() {
        piece.seq = batch.seq + i as u64;
        if i + 1 < count {
            piece.last = false;
            piece.repaired = 0;
            piece.cursor = before.clone();
        }
    }
    Ok(pieces)
}

/// A [`Pipeline`] as a scheduled [`Job`]: each run starts where the previous one's last commit
/// left off, and every run's report is published.
pub struct PipelineJob<So, Si> {
    pipeline: Pipeline<So, Si>,
    checkpoint: Mutex<Checkpoint>,
    reports: watch::Sender<Option<RunReport>>,
}

impl<So, Si> std::fmt::Debug for PipelineJob<So, Si> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineJob")
            .field("pipeline", &self.pipeline)
            .finish_non_exhaustive()
    }
}

impl<So: Source, Si: Sink> PipelineJob<So, Si> {
    /// A job whose first run starts at `from` (the stream's committed checkpoint).
    pub fn new(pipeline: Pipeline<So, Si>, from: Checkpoint) -> Self {
        PipelineJob {
            pipeline,
            checkpoint: Mutex::new(from),
            reports: watch::Sender::new(None),
        }
    }

    /// Watches the report of the latest finished run.
    pub fn reports(&self) -> watch::Receiver<Option<RunReport>> {
        self.reports.subscribe()
    }
}

#[async_trait]
impl<So: Source, Si: Sink> Job for PipelineJob<So, Si> {
    async fn run(&self, run: RunContext) {
        let from = self.checkpoint.locked().clone();
        let report = self.pipeline.run(&run, from).await;
        *self.checkpoint.locked() = report.checkpoint.clone();
        self.reports.send_replace(Some(report));
    }
}

#[cfg(test)]
mod tests;
