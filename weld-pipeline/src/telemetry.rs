//! Typed telemetry events: each emits its log line and its metrics in one place.
//!
//! Names follow `<Noun><PastVerb>`. Counters end in `_total`; an error's field is `error`; a
//! failure that will be retried is not counted as a loss. Metrics go through the `metrics` facade:
//! install any exporter (Prometheus, StatsD) in the service that embeds the pipeline; without
//! one, they cost next to nothing.
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `weld_runs_started_total` | `stream` | runs begun |
//! | `weld_runs_finished_total` | `stream`, `outcome` | runs ended: `succeeded`, `failed`, `cancelled` |
//! | `weld_run_duration_seconds` | `stream` | histogram of run durations |
//! | `weld_batches_committed_total` | `stream` | new batches committed |
//! | `weld_batches_replayed_total` | `stream` | redelivered batches acknowledged without a write |
//! | `weld_records_committed_total` | `stream` | records written |
//! | `weld_commit_errors_total` | `stream`, `kind` | commits that failed |
//! | `weld_fetch_errors_total` | `stream`, `kind` | pages that failed after their retries |
//! | `weld_calls_total` | `service` | calls through a [`TelemetryLayer`](crate::middleware::TelemetryLayer) |
//! | `weld_call_errors_total` | `service`, `kind` | of which failed |
//! | `weld_call_duration_seconds` | `service` | histogram of call durations |

use std::time::Duration;

use metrics::{counter, histogram};

use crate::error::{Error, ErrorKind};
use crate::message::{Commit, RunOutcome};
use crate::stream::{RunId, StreamName};

/// The label value of an error kind.
pub fn kind_label(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Transient => "transient",
        ErrorKind::Permanent => "permanent",
        ErrorKind::Bug => "bug",
    }
}

/// A run began.
#[derive(Debug)]
pub struct RunStarted<'a> {
    /// The stream.
    pub stream: &'a StreamName,
    /// The run.
    pub run_id: RunId,
}

impl RunStarted<'_> {
    /// Logs and counts it.
    pub fn emit(self) {
        tracing::info!(stream = %self.stream, run_id = %self.run_id, "run started");
        counter!("weld_runs_started_total", "stream" => self.stream.to_string()).increment(1);
    }
}

/// A run ended.
#[derive(Debug)]
pub struct RunEnded<'a> {
    /// The stream.
    pub stream: &'a StreamName,
    /// The run.
    pub run_id: RunId,
    /// How it ended.
    pub outcome: &'a RunOutcome,
    /// Batches committed.
    pub batches: u64,
    /// Records in them.
    pub records: u64,
    /// How long it took.
    pub duration: Duration,
}

impl RunEnded<'_> {
    /// Logs and counts it.
    pub fn emit(self) {
        let outcome = match self.outcome {
            RunOutcome::Succeeded => "succeeded",
            RunOutcome::Failed { .. } => "failed",
            RunOutcome::Cancelled => "cancelled",
        };
        let duration_ms = self.duration.as_millis() as u64;
        match self.outcome {
            RunOutcome::Failed { kind, error } => tracing::warn!(
                stream = %self.stream, run_id = %self.run_id, outcome, batches = self.batches,
                records = self.records, duration_ms, kind = kind_label(*kind), error = %error,
                "run finished"
            ),
            _ => tracing::info!(
                stream = %self.stream, run_id = %self.run_id, outcome, batches = self.batches,
                records = self.records, duration_ms, "run finished"
            ),
        }
        let stream = self.stream.to_string();
        counter!("weld_runs_finished_total", "stream" => stream.clone(), "outcome" => outcome)
            .increment(1);
        histogram!("weld_run_duration_seconds", "stream" => stream)
            .record(self.duration.as_secs_f64());
    }
}

/// A batch was committed, or acknowledged as a replay.
#[derive(Debug)]
pub struct BatchCommitted<'a> {
    /// The stream.
    pub stream: &'a StreamName,
    /// The run.
    pub run_id: RunId,
    /// The batch's place in its run.
    pub seq: u64,
    /// What the sink did.
    pub commit: Commit,
}

impl BatchCommitted<'_> {
    /// Logs and counts it.
    pub fn emit(self) {
        let stream = self.stream.to_string();
        match self.commit {
            Commit::Stored { records } => {
                tracing::debug!(stream = %self.stream, run_id = %self.run_id, seq = self.seq, records, "batch committed");
                counter!("weld_batches_committed_total", "stream" => stream.clone()).increment(1);
                counter!("weld_records_committed_total", "stream" => stream).increment(records);
            }
            Commit::Replayed => {
                tracing::debug!(stream = %self.stream, run_id = %self.run_id, seq = self.seq, "batch replayed");
                counter!("weld_batches_replayed_total", "stream" => stream).increment(1);
            }
        }
    }
}

/// A batch could not be committed.
#[derive(Debug)]
pub struct BatchCommitFailed<'a> {
    /// The stream.
    pub stream: &'a StreamName,
    /// The run.
    pub run_id: RunId,
    /// The batch's place in its run.
    pub seq: u64,
    /// Why.
    pub error: &'a Error,
}

impl BatchCommitFailed<'_> {
    /// Logs and counts it.
    pub fn emit(self) {
        let kind = kind_label(self.error.kind());
        tracing::warn!(stream = %self.stream, run_id = %self.run_id, seq = self.seq, kind, error = %self.error, "batch commit failed");
        counter!("weld_commit_errors_total", "stream" => self.stream.to_string(), "kind" => kind)
            .increment(1);
    }
}

/// A page could not be fetched, after the source's own retries.
#[derive(Debug)]
pub struct PageFetchFailed<'a> {
    /// The stream.
    pub stream: &'a StreamName,
    /// The run.
    pub run_id: RunId,
    /// Why.
    pub error: &'a Error,
}

impl PageFetchFailed<'_> {
    /// Logs and counts it.
    pub fn emit(self) {
        let kind = self.error.kind();
        if kind == ErrorKind::Bug {
            tracing::error!(stream = %self.stream, run_id = %self.run_id, error = %self.error, "page fetch failed: bug");
        } else {
            tracing::warn!(stream = %self.stream, run_id = %self.run_id, kind = kind_label(kind), error = %self.error, "page fetch failed");
        }
        counter!("weld_fetch_errors_total", "stream" => self.stream.to_string(), "kind" => kind_label(kind))
            .increment(1);
    }
}
