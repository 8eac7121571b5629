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
//! | `weld_workers_connected` | | gauge: workers connected to this controller |
//! | `weld_worker_outbox_batches` | `worker` | gauge: batches in a worker's outbox, as it last reported |
//! | `weld_worker_outbox_bytes` | `worker` | gauge: their size in bytes |
//! | `weld_delivery_seconds` | | on a worker: histogram of the time from sending a batch to its ack (or its failure) |
//! | `weld_calls_total` | `service` | calls through a [`TelemetryLayer`](crate::middleware::TelemetryLayer): on a worker, the HubSpot source's page fetches (`hubspot_list`, `hubspot_search`) |
//! | `weld_call_errors_total` | `service`, `kind` | of which failed |
//! | `weld_call_duration_seconds` | `service` | histogram of call durations |
//!
//! A worker emits the run and fetch metrics where they happen. A controller emits them again
//! from its workers' reports ([`RunStartReported`], [`RunReported`]), with a `worker` label, so
//! that one scrape of the controller shows every worker's runs, and a process that embeds both
//! (the quickstart) keeps the two apart.

use std::time::Duration;

use metrics::{counter, gauge, histogram};

use crate::error::{Error, ErrorKind};
use crate::message::{Commit, RunFinished, RunOutcome};
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
    /// The stream it is about: the `stream` label of its metrics.
    pub stream: &'a StreamName,
    /// The run it is about: a log field only (run ids are unbounded, no metric label).
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
    /// The stream it is about: the `stream` label of its metrics.
    pub stream: &'a StreamName,
    /// The run it is about: a log field only (run ids are unbounded, no metric label).
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
    /// The stream it is about: the `stream` label of its metrics.
    pub stream: &'a StreamName,
    /// The run it is about: a log field only (run ids are unbounded, no metric label).
    pub run_id: RunId,
    /// The batch's place in its run.
    pub seq: u64,
    /// What the sink did.
    pub commit: Commit,
    /// Records of the batch that repair the store ([`Batch::repaired`](crate::Batch::repaired)).
    pub repaired: u64,
}

impl BatchCommitted<'_> {
    /// Logs and counts it.
    pub fn emit(self) {
        let stream = self.stream.to_string();
        match self.commit {
            Commit::Stored { records } => {
                tracing::debug!(stream = %self.stream, run_id = %self.run_id, seq = self.seq, records, "batch committed");
                counter!("weld_batches_committed_total", "stream" => stream.clone()).increment(1);
                if self.repaired > 0 {
                    tracing::info!(stream = %self.stream, run_id = %self.run_id, seq = self.seq, repaired = self.repaired, "records repaired: the store lacked them, held them stale, or kept them live after the source lost them");
                    counter!("weld_records_repaired_total", "stream" => stream.clone())
                        .increment(self.repaired);
                }
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
    /// The stream it is about: the `stream` label of its metrics.
    pub stream: &'a StreamName,
    /// The run it is about: a log field only (run ids are unbounded, no metric label).
    pub run_id: RunId,
    /// The batch's place in its run.
    pub seq: u64,
    /// What failed; its kind is the `kind` label.
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
    /// The stream it is about: the `stream` label of its metrics.
    pub stream: &'a StreamName,
    /// The run it is about: a log field only (run ids are unbounded, no metric label).
    pub run_id: RunId,
    /// What failed; its kind is the `kind` label.
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

/// A controller heard that a worker began a run.
#[derive(Debug)]
pub struct RunStartReported<'a> {
    /// The worker running it.
    pub worker_id: &'a str,
    /// The stream it is about: the `stream` label of its metrics.
    pub stream: &'a StreamName,
    /// The run it is about: a log field only (run ids are unbounded, no metric label).
    pub run_id: RunId,
}

impl RunStartReported<'_> {
    /// Logs and counts it.
    pub fn emit(self) {
        tracing::info!(stream = %self.stream, run_id = %self.run_id, worker_id = self.worker_id, "run started on a worker");
        counter!("weld_runs_started_total", "stream" => self.stream.to_string(), "worker" => self.worker_id.to_string())
            .increment(1);
    }
}

/// A controller heard a worker's report of a finished run.
#[derive(Debug)]
pub struct RunReported<'a> {
    /// The worker that ran it.
    pub worker_id: &'a str,
    /// Its report.
    pub finished: &'a RunFinished,
}

impl RunReported<'_> {
    /// Logs it, and counts it as [`RunEnded`] and [`PageFetchFailed`] do, labelled by worker.
    pub fn emit(self) {
        let finished = self.finished;
        let (outcome, kind) = match &finished.outcome {
            RunOutcome::Succeeded => ("succeeded", None),
            RunOutcome::Failed { kind, .. } => ("failed", Some(*kind)),
            RunOutcome::Cancelled => ("cancelled", None),
        };
        match &finished.outcome {
            RunOutcome::Failed { kind, error } => tracing::warn!(
                stream = %finished.stream, run_id = %finished.run_id, worker_id = self.worker_id,
                outcome, batches = finished.batches, records = finished.records,
                duration_ms = finished.duration_ms, kind = kind_label(*kind), error = %error,
                "run finished on a worker"
            ),
            _ => tracing::info!(
                stream = %finished.stream, run_id = %finished.run_id, worker_id = self.worker_id,
                outcome, batches = finished.batches, records = finished.records,
                duration_ms = finished.duration_ms, "run finished on a worker"
            ),
        }
        let stream = finished.stream.to_string();
        let worker = self.worker_id.to_string();
        counter!("weld_runs_finished_total", "stream" => stream.clone(), "outcome" => outcome, "worker" => worker.clone())
            .increment(1);
        histogram!("weld_run_duration_seconds", "stream" => stream.clone(), "worker" => worker.clone())
            .record(Duration::from_millis(finished.duration_ms).as_secs_f64());
        if finished.fetch_errors > 0 {
            let kind = kind_label(kind.unwrap_or(ErrorKind::Transient));
            counter!("weld_fetch_errors_total", "stream" => stream, "kind" => kind, "worker" => worker)
                .increment(finished.fetch_errors);
        }
    }
}

/// The number of workers connected to a controller changed.
#[derive(Debug)]
pub struct WorkersChanged<'a> {
    /// The worker that came or went.
    pub worker_id: &'a str,
    /// Whether it came.
    pub connected: bool,
    /// Workers connected now.
    pub now: usize,
}

impl WorkersChanged<'_> {
    /// Logs and records it.
    pub fn emit(self) {
        if self.connected {
            tracing::info!(
                worker_id = self.worker_id,
                workers = self.now,
                "worker connected"
            );
        } else {
            tracing::warn!(
                worker_id = self.worker_id,
                workers = self.now,
                "worker gone"
            );
        }
        gauge!("weld_workers_connected").set(self.now as f64);
        if !self.connected {
            // Its last report would otherwise stand for a backlog no one holds any more.
            OutboxDepthReported {
                worker_id: self.worker_id,
                batches: 0,
                bytes: 0,
            }
            .emit();
        }
    }
}

/// A worker reported how much its outbox holds.
#[derive(Debug)]
pub struct OutboxDepthReported<'a> {
    /// The reporting worker: the `worker` label.
    pub worker_id: &'a str,
    /// Batches waiting for their ack.
    pub batches: u64,
    /// Their size in bytes.
    pub bytes: u64,
}

impl OutboxDepthReported<'_> {
    /// Records it.
    pub fn emit(self) {
        tracing::trace!(
            worker_id = self.worker_id,
            batches = self.batches,
            bytes = self.bytes,
            "outbox depth reported"
        );
        let worker = self.worker_id.to_string();
        gauge!("weld_worker_outbox_batches", "worker" => worker.clone()).set(self.batches as f64);
        gauge!("weld_worker_outbox_bytes", "worker" => worker).set(self.bytes as f64);
    }
}

/// A worker's delivery of a batch was answered (acked, refused, or failed).
#[derive(Debug)]
pub struct DeliveryAnswered {
    /// From sending the batch to its answer.
    pub after: Duration,
}

impl DeliveryAnswered {
    /// Records it.
    pub fn emit(self) {
        histogram!("weld_delivery_seconds").record(self.after.as_secs_f64());
    }
}

/// How often the counts of a [`Tally`] are summarised in the log while its events keep coming:
/// often enough to show a flood as it goes on, seldom enough that the summaries are no flood.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(30);

/// A kind of event that can come in floods (connections refused at a limit, handshakes that
/// fail): the first of a period is told in full, the others are counted and told in one
/// summary line per period, so that an attacker cannot grow the log by one line per attempt.
///
/// ```
/// use weld_pipeline::telemetry::Tally;
///
/// let refused = Tally::default();
/// assert!(refused.record()); // the first: log it in full
/// assert!(!refused.record()); // counted
/// assert!(!refused.record());
/// assert_eq!(refused.take(), 2); // every period: "2 more in the last 30 s"
/// assert_eq!(refused.take(), 0); // a quiet period says nothing
/// assert!(refused.record()); // and the next one is told in full again
/// ```
#[derive(Debug, Default)]
pub struct Tally {
    /// Events since the last [`take`](Tally::take), beyond the one told in full.
    more: std::sync::atomic::AtomicU64,
    /// Whether this period's first event was told.
    told: std::sync::atomic::AtomicBool,
}

impl Tally {
    /// Counts one event; `true` when it is the first of the period, to be told in full.
    pub fn record(&self) -> bool {
        use std::sync::atomic::Ordering;
        if self.told.swap(true, Ordering::Relaxed) {
            self.more.fetch_add(1, Ordering::Relaxed);
            false
        } else {
            true
        }
    }

    /// Ends a period: how many events came after the first one told, to be summarised when
    /// not 0. The next event is told in full again.
    pub fn take(&self) -> u64 {
        use std::sync::atomic::Ordering;
        let more = self.more.swap(0, Ordering::Relaxed);
        self.told.store(false, Ordering::Relaxed);
        more
    }
}
