use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{advance, Instant};

use super::*;
use crate::pipeline::{Pipeline, PipelineJob};
use crate::sink::MemorySink;
use crate::testing::CountingSource;
use crate::Checkpoint;

/// A job that takes `duration` per run and records when each run started and ended, and the
/// most runs ever in progress at once.
#[derive(Default)]
struct Recorder {
    duration: Duration,
    /// Finish the whole duration even when cancelled, as a commit in progress does.
    ignores_cancel: bool,
    starts: Mutex<Vec<Instant>>,
    running: AtomicUsize,
    most_running: AtomicUsize,
}

impl Recorder {
    fn taking(duration: Duration) -> Arc<Self> {
        Arc::new(Recorder {
            duration,
            ..Recorder::default()
        })
    }

    fn finishing(duration: Duration) -> Arc<Self> {
        Arc::new(Recorder {
            duration,
            ignores_cancel: true,
            ..Recorder::default()
        })
    }

    fn starts_after(&self, origin: Instant) -> Vec<u64> {
        self.starts
            .lock()
            .unwrap()
            .iter()
            .map(|t| (*t - origin).as_secs())
            .collect()
    }
}

#[async_trait]
impl Job for Recorder {
    async fn run(&self, run: RunContext) {
        self.starts.lock().unwrap().push(Instant::now());
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_running.fetch_max(now, Ordering::SeqCst);
        if self.ignores_cancel {
            tokio::time::sleep(self.duration).await;
        } else {
            tokio::select! {
                () = tokio::time::sleep(self.duration) => {}
                () = run.cancel.cancelled() => {}
            }
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
    }
}

fn stream() -> StreamName {
    StreamName::new("contacts").unwrap()
}

/// Lets spawned tasks run without moving the paused clock.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn the_first_run_starts_at_once() {
    let origin = Instant::now();
    let job = Recorder::taking(Duration::from_secs(1));
    let scheduler = Scheduler::new();
    scheduler.start(stream(), Duration::from_secs(300), job.clone());
    settle().await;
    assert_eq!(job.starts_after(origin), [0]);
}

#[tokio::test(start_paused = true)]
async fn runs_repeat_every_interval_from_their_start() {
    let origin = Instant::now();
    let job = Recorder::taking(Duration::from_secs(5));
    let scheduler = Scheduler::new();
    scheduler.start(stream(), Duration::from_secs(60), job.clone());
    tokio::time::sleep(Duration::from_secs(181)).await;
    assert_eq!(job.starts_after(origin), [0, 60, 120, 180]);
}

#[tokio::test(start_paused = true)]
async fn a_slow_run_delays_the_next_instead_of_stacking() {
    let origin = Instant::now();
    let job = Recorder::taking(Duration::from_secs(25));
    let scheduler = Scheduler::new();
    scheduler.start(stream(), Duration::from_secs(10), job.clone());
    tokio::time::sleep(Duration::from_secs(101)).await;
    // Each run starts when the previous one ends: no burst of the starts missed meanwhile.
    assert_eq!(job.starts_after(origin), [0, 25, 50, 75, 100]);
    assert_eq!(job.most_running.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn stop_issues_no_source_call_after_it_returns() {
    let source = CountingSource::new(10_000, 10, Duration::from_secs(1));
    let sink = MemorySink::new();
    let job = Arc::new(PipelineJob::new(
        Pipeline::new(source.clone(), sink.clone()),
        Checkpoint::start(),
    ));
    let scheduler = Scheduler::new();
    scheduler.start(stream(), Duration::from_secs(60), job);
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    assert!(scheduler.stop(&stream()).await);
    let stopped_at = Instant::now();
    let pages = source.pages_started();
    assert!(pages >= 5, "the run was under way: {pages} pages");

    tokio::time::sleep(Duration::from_secs(3_600)).await;
    assert_eq!(
        source.pages_started(),
        pages,
        "a page started after stop returned"
    );
    assert!(source.last_start().unwrap() <= stopped_at);
    assert!(!scheduler.is_scheduled(&stream()));
    // What was committed stays, and its checkpoint with it.
    let committed = sink.live_count(&stream());
    assert_eq!(committed as usize % 10, 0);
    assert_eq!(
        sink.checkpoint(&stream()),
        Checkpoint::from_position(&committed).unwrap()
    );
}

#[tokio::test(start_paused = true)]
async fn stop_and_start_are_idempotent() {
    let job = Recorder::taking(Duration::from_secs(1));
    let scheduler = Scheduler::new();
    assert!(!scheduler.stop(&stream()).await);
    scheduler.start(stream(), Duration::from_secs(60), job.clone());
    scheduler.start(stream(), Duration::from_secs(60), job.clone());
    settle().await;
    assert_eq!(job.starts.lock().unwrap().len(), 1);
    assert!(scheduler.stop(&stream()).await);
    assert!(!scheduler.stop(&stream()).await);
}

#[tokio::test(start_paused = true)]
async fn stop_returns_only_once_the_run_in_progress_has_ended() {
    let origin = Instant::now();
    let job = Recorder::finishing(Duration::from_secs(30));
    let scheduler = Scheduler::new();
    scheduler.start(stream(), Duration::from_secs(60), job.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(scheduler.stop(&stream()).await);
    assert_eq!(
        job.running.load(Ordering::SeqCst),
        0,
        "stop returned during a run"
    );
    assert_eq!((Instant::now() - origin).as_secs(), 30);
}

#[tokio::test(start_paused = true)]
async fn a_restart_while_stopping_is_kept_and_never_overlaps_the_old_run() {
    let origin = Instant::now();
    let job = Recorder::finishing(Duration::from_secs(30));
    let scheduler = Arc::new(Scheduler::new());
    scheduler.start(stream(), Duration::from_secs(60), job.clone());
    settle().await;
    // Stop without waiting for it, and start again while the old run is still finishing.
    let stopping = {
        let scheduler = scheduler.clone();
        tokio::spawn(async move { scheduler.stop(&stream()).await })
    };
    settle().await;
    scheduler.start(stream(), Duration::from_secs(60), job.clone());
    stopping.await.unwrap();
    assert!(scheduler.is_scheduled(&stream()), "the start was lost");
    tokio::time::sleep(Duration::from_secs(100)).await;
    assert_eq!(job.most_running.load(Ordering::SeqCst), 1);
    // The new schedule's first run began when the stopped one ended.
    assert_eq!(job.starts_after(origin), [0, 30, 90]);
}

#[tokio::test(start_paused = true)]
async fn stop_all_cancels_every_stream_before_waiting() {
    let origin = Instant::now();
    let job = Recorder::finishing(Duration::from_secs(30));
    let scheduler = Scheduler::new();
    for name in ["a", "b", "c"] {
        scheduler.start(
            StreamName::new(name).unwrap(),
            Duration::from_secs(60),
            job.clone(),
        );
    }
    settle().await;
    scheduler.stop_all().await;
    // The three runs ended together, not one after the other.
    assert_eq!((Instant::now() - origin).as_secs(), 30);
    assert_eq!(job.running.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_zero_interval_is_raised_to_the_minimum() {
    let origin = Instant::now();
    let job = Recorder::taking(Duration::ZERO);
    let scheduler = Scheduler::new();
    scheduler.start(stream(), Duration::ZERO, job.clone());
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert_eq!(job.starts_after(origin), [0, 1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn a_new_interval_applies_from_the_next_run() {
    let origin = Instant::now();
    let job = Recorder::taking(Duration::from_secs(1));
    let scheduler = Scheduler::new();
    scheduler.start(stream(), Duration::from_secs(100), job.clone());
    settle().await;
    scheduler.start(stream(), Duration::from_secs(10), job.clone());
    tokio::time::sleep(Duration::from_secs(125)).await;
    // The run scheduled under the old interval keeps its time; the new one applies after it.
    assert_eq!(job.starts_after(origin), [0, 100, 110, 120]);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_run_does_not_end_the_stream() {
    struct Panics(AtomicUsize);
    #[async_trait]
    impl Job for Panics {
        async fn run(&self, _run: RunContext) {
            if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("first run breaks");
            }
        }
    }
    let job = Arc::new(Panics(AtomicUsize::new(0)));
    let scheduler = Scheduler::new();
    scheduler.start(stream(), Duration::from_secs(10), job.clone());
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_eq!(job.0.load(Ordering::SeqCst), 3);
    advance(Duration::ZERO).await;
}
