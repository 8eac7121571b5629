//! The runner: drives one run from a source, through transforms, into a sink.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::watch;

use crate::checkpoint::Checkpoint;
use crate::error::{Error, ErrorKind};
use crate::message::{RunFinished, RunOutcome};
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
        }
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
        let from = self
            .checkpoint
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let report = self.pipeline.run(&run, from).await;
        *self.checkpoint.lock().unwrap_or_else(|e| e.into_inner()) = report.checkpoint.clone();
        self.reports.send_replace(Some(report));
    }
}

#[cfg(test)]
mod tests;
