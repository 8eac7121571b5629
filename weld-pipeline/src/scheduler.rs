//! The scheduler: runs each stream's job every interval.
//!
//! One task per stream loops: run the job, wait until `interval` after the run *started*, run
//! again. The rules, each tested on tokio's paused clock:
//!
//! - the first run starts at once;
//! - a stream never has two runs at a time, even across a stop followed at once by a start;
//! - a run slower than its interval delays the next one, which starts as soon as it ends: missed
//!   starts are not stacked up and replayed in a burst;
//! - [`Scheduler::stop`] cancels the run at its next page boundary and returns only once the run
//!   is over, so no source call starts after it returns;
//! - starting a running stream again changes its interval and job from the next run on.

use crate::sync::Locked;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::source::RunContext;
use crate::stream::StreamName;

/// One run of a stream, started by the scheduler.
///
/// An implementation must end promptly once `run.cancel` is cancelled: at the next page
/// boundary, without starting another source call. A [`PipelineJob`](crate::PipelineJob) does.
#[async_trait]
pub trait Job: Send + Sync + 'static {
    /// Runs once.
    ///
    /// # Cancel safety
    ///
    /// The scheduler never drops this future: it cancels `run.cancel` and waits for the run to
    /// end, so a job may finish what must not be interrupted (a commit) before returning.
    async fn run(&self, run: RunContext);
}

/// The shortest interval between two runs' starts. A source polled more often than once a
/// second is a stream, not a schedule; the floor also keeps a zero interval from spinning.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Clone)]
struct Plan {
    interval: Duration,
    job: Arc<dyn Job>,
}

struct Scheduled {
    plan: watch::Sender<Plan>,
    cancel: CancellationToken,
    /// Cancelled when the stream's task has ended (a latch, not a cancellation).
    ended: CancellationToken,
}

/// Runs streams' jobs on their intervals. Cheap to share behind an `Arc`; dropping it does not
/// stop the streams: call [`Scheduler::stop_all`].
#[derive(Default)]
pub struct Scheduler {
    streams: Mutex<HashMap<StreamName, Scheduled>>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let streams = self.streams.locked();
        f.debug_struct("Scheduler")
            .field("streams", &streams.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Scheduler {
    /// A scheduler with no streams.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `job` for `stream` now and then every `interval` (at least [`MIN_INTERVAL`]). If the
    /// stream is already scheduled, the new interval and job apply from its next run and the run
    /// in progress goes on. If it is being stopped, the new schedule's first run waits for the
    /// stopping run to end.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn start(&self, stream: StreamName, interval: Duration, job: Arc<dyn Job>) {
        let plan = Plan {
            interval: interval.max(MIN_INTERVAL),
            job,
        };
        let mut streams = self.streams.locked();
        if let Some(scheduled) = streams.get(&stream) {
            // A stream being stopped gets a new task below: its old one is about to exit.
            if !scheduled.cancel.is_cancelled() && !scheduled.ended.is_cancelled() {
                scheduled.plan.send_replace(plan);
                return;
            }
        }
        // A stream being stopped right now may still be finishing its run: the new task waits
        // for it, so two runs of one stream never overlap.
        let previous = streams.get(&stream).map(|s| s.ended.clone());
        let (plan_tx, plan_rx) = watch::channel(plan);
        let cancel = CancellationToken::new();
        let ended = CancellationToken::new();
        tokio::spawn(run_stream(
            stream.clone(),
            plan_rx,
            cancel.clone(),
            ended.clone(),
            previous,
        ));
        streams.insert(
            stream,
            Scheduled {
                plan: plan_tx,
                cancel,
                ended,
            },
        );
    }

    /// Stops a stream: its run in progress ends at the next page boundary, and this returns once
    /// it has, so no source call of the stream starts after it returns. Returns whether the
    /// stream was scheduled. Idempotent.
    ///
    /// # Cancel safety
    ///
    /// The stream is stopped even if this future is dropped; only the wait for the run's end is
    /// abandoned.
    pub async fn stop(&self, stream: &StreamName) -> bool {
        let ended = {
            let streams = self.streams.locked();
            let Some(scheduled) = streams.get(stream) else {
                return false;
            };
            scheduled.cancel.cancel();
            scheduled.ended.clone()
        };
        ended.cancelled().await;
        let mut streams = self.streams.locked();
        // Only forget the entry if no start replaced it meanwhile.
        if streams.get(stream).is_some_and(|s| s.ended.is_cancelled()) {
            streams.remove(stream);
        }
        true
    }

    /// Cancels a stream's schedule without waiting for its run to end (for callers that must
    /// not wait, and will not start a source call themselves). Returns whether it was scheduled.
    pub fn cancel(&self, stream: &StreamName) -> bool {
        let streams = self.streams.locked();
        streams.get(stream).is_some_and(|scheduled| {
            scheduled.cancel.cancel();
            true
        })
    }

    /// Stops every stream, as [`Scheduler::stop`] does: all are cancelled at once, then this
    /// waits for every run to end.
    ///
    /// # Cancel safety
    ///
    /// As for [`Scheduler::stop`]: every stream is stopped even if this future is dropped.
    pub async fn stop_all(&self) {
        let names: Vec<_> = {
            let streams = self.streams.locked();
            for scheduled in streams.values() {
                scheduled.cancel.cancel();
            }
            streams.keys().cloned().collect()
        };
        futures::future::join_all(names.iter().map(|name| self.stop(name))).await;
    }

    /// Whether a stream is scheduled (and not stopped).
    pub fn is_scheduled(&self, stream: &StreamName) -> bool {
        let streams = self.streams.locked();
        streams
            .get(stream)
            .is_some_and(|s| !s.cancel.is_cancelled() && !s.ended.is_cancelled())
    }
}

async fn run_stream(
    stream: StreamName,
    plan: watch::Receiver<Plan>,
    cancel: CancellationToken,
    ended: CancellationToken,
    previous: Option<CancellationToken>,
) {
    // Signals the end even if this task panics or is aborted.
    let _ended = ended.drop_guard();
    if let Some(previous) = previous {
        previous.cancelled().await;
    }
    let mut next = Instant::now();
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            () = tokio::time::sleep_until(next) => {}
        }
        let Plan { interval, job } = plan.borrow().clone();
        let started = Instant::now();
        let run = RunContext {
            stream: stream.clone(),
            run_id: crate::stream::RunId::generate(),
            epoch: 0,
            inventory: None,
            catalog: None,
            cancel: cancel.child_token(),
        };
        // A panicking job is a bug to log, not a reason to stop the stream for good.
        if std::panic::AssertUnwindSafe(job.run(run))
            .catch_unwind()
            .await
            .is_err()
        {
            tracing::error!(stream = %stream, "bug: a run panicked; the next run starts on schedule");
        }
        if cancel.is_cancelled() {
            return;
        }
        // An interval too large to add is "never again", which a far-off instant expresses.
        let due = started
            .checked_add(interval)
            .unwrap_or_else(|| started + Duration::from_secs(100 * 365 * 86_400));
        next = due.max(Instant::now());
    }
}

#[cfg(test)]
mod tests;
