use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;

use super::*;
use crate::message::Commit;
use crate::record::Record;
use crate::sink::MemorySink;
use crate::source::{Generator, Pages};
use crate::testing::{counter_value, with_metrics, CountingSource, FailingSink, Scripted};
use crate::transform::Filter;
use crate::Page;

fn stream() -> StreamName {
    StreamName::new("contacts").unwrap()
}

fn run() -> RunContext {
    RunContext::new(stream())
}

fn generated(records: u64) -> Pages<Generator> {
    Pages::new(Generator::contacts(records).page_size(10).record_bytes(64))
}

#[tokio::test]
async fn a_run_commits_every_batch_and_succeeds_at_the_last() {
    let sink = MemorySink::new();
    let pipeline = Pipeline::new(generated(95), sink.clone());
    let report = pipeline.run(&run(), Checkpoint::start()).await;
    assert_eq!(report.outcome, RunOutcome::Succeeded);
    assert_eq!((report.batches, report.records), (10, 95));
    assert_eq!(sink.live_count(&stream()), 95);
    assert_eq!(
        report.checkpoint,
        Checkpoint::from_position(&95u64).unwrap()
    );
    assert_eq!(sink.checkpoint(&stream()), report.checkpoint);
}

#[tokio::test]
async fn a_failed_sink_commit_leaves_the_checkpoint_where_it_was() {
    let sink = FailingSink::new();
    sink.fail_seq(3, || Error::Unavailable("disk busy".into()));
    let pipeline = Pipeline::new(generated(95), sink.clone());
    let report = pipeline.run(&run(), Checkpoint::start()).await;

    assert!(matches!(
        report.outcome,
        RunOutcome::Failed {
            kind: ErrorKind::Transient,
            ..
        }
    ));
    // Three batches (seq 0..=2) were committed; the fourth was not, nor was its cursor.
    let after_three = Checkpoint::from_position(&30u64).unwrap();
    assert_eq!(report.checkpoint, after_three);
    assert_eq!(sink.inner.checkpoint(&stream()), after_three);
    assert_eq!(sink.inner.live_count(&stream()), 30);

    // The next run resumes there and completes the set, each record once.
    sink.fail_seq(u64::MAX, || Error::Closed);
    let report = pipeline.run(&run(), report.checkpoint).await;
    assert_eq!(report.outcome, RunOutcome::Succeeded);
    assert_eq!(report.records, 65);
    let ids: Vec<_> = sink
        .inner
        .records(&stream())
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids.len(), 95);
}

#[tokio::test]
async fn a_source_error_fails_the_run_with_its_kind_and_keeps_the_checkpoint() {
    let page = Page {
        records: vec![Generator::contacts(1).record(1)],
        cursor: Checkpoint::from_bytes("p1"),
        last: false,
        repaired: 0,
    };
    let fetch = Scripted::new([Ok(page), Err(Error::Invalid("401 unauthorized".into()))]);
    let sink = MemorySink::new();
    let report = Pipeline::new(Pages::new(fetch), sink.clone())
        .run(&run(), Checkpoint::start())
        .await;
    assert_eq!(
        report.outcome,
        RunOutcome::Failed {
            kind: ErrorKind::Permanent,
            error: "invalid: 401 unauthorized".into()
        }
    );
    assert_eq!(report.checkpoint, Checkpoint::from_bytes("p1"));
    assert_eq!(sink.checkpoint(&stream()), Checkpoint::from_bytes("p1"));
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_run_stops_at_a_page_boundary_with_a_consistent_checkpoint() {
    let source = CountingSource::new(1_000, 10, Duration::from_secs(1));
    let sink = MemorySink::new();
    let pipeline = Pipeline::new(source.clone(), sink.clone());
    let run = run();
    let cancel = run.cancel.clone();
    let running = tokio::spawn(async move { pipeline.run(&run, Checkpoint::start()).await });
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    cancel.cancel();
    let report = running.await.unwrap();
    assert_eq!(report.outcome, RunOutcome::Cancelled);
    let stored = sink.live_count(&stream());
    assert_eq!(stored, 30, "three whole pages, the fourth abandoned");
    assert_eq!(
        report.checkpoint,
        Checkpoint::from_position(&stored).unwrap()
    );
    assert_eq!(sink.checkpoint(&stream()), report.checkpoint);
}

#[tokio::test]
async fn the_same_run_delivered_again_is_acknowledged_without_a_write() {
    let sink = MemorySink::new();
    let pipeline = Pipeline::new(generated(30), sink.clone());
    let run = run();
    pipeline.run(&run, Checkpoint::start()).await;
    let mut batches = generated(30).batches(&run, Checkpoint::start());
    while let Some(batch) = batches.next().await {
        assert_eq!(
            sink.commit(&batch.unwrap()).await.unwrap(),
            Commit::Replayed
        );
    }
    assert_eq!(sink.batches_committed(&stream()), 3);
}

#[tokio::test]
async fn transforms_apply_before_the_commit() {
    let sink = MemorySink::new();
    let pipeline = Pipeline::new(generated(50), sink.clone())
        .with_transform(Filter(|r: &Record| r.id.ends_with('0')));
    let report = pipeline.run(&run(), Checkpoint::start()).await;
    assert_eq!(report.outcome, RunOutcome::Succeeded);
    assert_eq!(sink.live_count(&stream()), 5);
}

#[tokio::test]
async fn a_failing_transform_fails_the_run_permanently_and_commits_nothing_of_its_batch() {
    let sink = MemorySink::new();
    let pipeline = Pipeline::new(generated(50), sink.clone())
        .with_transform(vec![crate::transform::FieldTransform::Drop("bad".into())]);
    let report = pipeline.run(&run(), Checkpoint::start()).await;
    assert!(
        matches!(
            report.outcome,
            RunOutcome::Failed {
                kind: crate::ErrorKind::Permanent,
                ..
            }
        ),
        "{:?}",
        report.outcome
    );
    assert_eq!(sink.batches_committed(&stream()), 0);
    assert!(report.checkpoint.is_start());
}

#[tokio::test]
async fn a_source_that_ends_without_a_last_batch_is_a_bug() {
    let fetch = Scripted::new([Ok(Page::default())]);
    struct NoLast<S>(Pages<S>);
    impl<S> Source for NoLast<S>
    where
        Pages<S>: Source,
    {
        fn batches(&self, run: &RunContext, from: Checkpoint) -> crate::BatchStream {
            self.0
                .batches(run, from)
                .take(1)
                .map(|b| b.map(|b| crate::Batch { last: false, ..b }))
                .boxed()
        }
    }
    let report = Pipeline::new(NoLast(Pages::new(fetch)), MemorySink::new())
        .run(&run(), Checkpoint::start())
        .await;
    assert!(matches!(
        report.outcome,
        RunOutcome::Failed {
            kind: ErrorKind::Bug,
            ..
        }
    ));
}

#[test]
fn runs_and_commits_are_counted() {
    let counters = with_metrics(async {
        Pipeline::new(generated(25), MemorySink::new())
            .run(&run(), Checkpoint::start())
            .await;
    });
    let labels = [("stream", "contacts")];
    assert_eq!(
        counter_value(&counters, "weld_runs_started_total", &labels),
        1
    );
    assert_eq!(
        counter_value(&counters, "weld_batches_committed_total", &labels),
        3
    );
    assert_eq!(
        counter_value(&counters, "weld_records_committed_total", &labels),
        25
    );
    assert_eq!(
        counter_value(
            &counters,
            "weld_runs_finished_total",
            &[("stream", "contacts"), ("outcome", "succeeded")]
        ),
        1
    );
}

/// What a committed batch looked like: `(seq, encoded_len, records, last, cursor)`.
type Committed = (u64, usize, usize, bool, Checkpoint);

/// A memory sink that also keeps what each committed batch looked like.
#[derive(Clone, Default)]
struct Recording {
    inner: MemorySink,
    /// Each commit, in order.
    batches: Arc<Mutex<Vec<Committed>>>,
}

#[async_trait]
impl Sink for Recording {
    async fn commit(&self, batch: &Batch) -> Result<Commit, Error> {
        self.batches.lock().unwrap().push((
            batch.seq,
            batch.encoded_len(),
            batch.records.len(),
            batch.last,
            batch.cursor.clone(),
        ));
        self.inner.commit(batch).await
    }

    async fn checkpoint(&self, stream: &StreamName) -> Result<Checkpoint, Error> {
        Sink::checkpoint(&self.inner, stream).await
    }
}

/// The encoded size of one generated page of ten records.
async fn one_page_bytes() -> usize {
    let mut batches = generated(10).batches(&run(), Checkpoint::start());
    batches.next().await.unwrap().unwrap().encoded_len()
}

#[tokio::test]
async fn a_page_over_the_batch_byte_limit_is_committed_in_pieces_that_fit_and_loses_nothing() {
    let limit = one_page_bytes().await / 3;
    let sink = Recording::default();
    let pipeline = Pipeline::new(generated(95), sink.clone()).with_max_batch_bytes(limit);
    let report = pipeline.run(&run(), Checkpoint::start()).await;

    assert_eq!(report.outcome, RunOutcome::Succeeded);
    assert_eq!(report.records, 95);
    assert_eq!(sink.inner.live_count(&stream()), 95);
    let end = Checkpoint::from_position(&95u64).unwrap();
    assert_eq!(sink.inner.checkpoint(&stream()), end);
    let batches = sink.batches.lock().unwrap().clone();
    assert!(
        batches.len() >= 30,
        "ten pages in three pieces or more each"
    );
    assert_eq!(report.batches, batches.len() as u64);
    // Numbered without gaps; each fits; only the very last is last.
    for (i, (seq, bytes, records, last, _)) in batches.iter().enumerate() {
        assert_eq!(*seq, i as u64);
        assert!(*bytes <= limit, "batch {seq}: {bytes} > {limit}");
        assert!(*records > 0);
        assert_eq!(*last, i + 1 == batches.len());
    }
    // A piece before a page's last carries the position from before the page: a run stopped
    // there fetches the page again. The first pieces of the first page are at the start.
    assert_eq!(batches[0].4, Checkpoint::start());
    assert_eq!(batches.last().unwrap().4, end);
    let cursors: Vec<&Checkpoint> = batches.iter().map(|b| &b.4).collect();
    let distinct: std::collections::BTreeSet<Vec<u8>> =
        cursors.iter().map(|c| c.as_bytes().to_vec()).collect();
    assert_eq!(distinct.len(), 11, "the start and the ten pages' cursors");
}

#[tokio::test]
async fn a_batch_that_fits_is_committed_whole() {
    let sink = Recording::default();
    // Later pages have longer ids than the first: twice its size fits every one.
    let limit = 2 * one_page_bytes().await;
    let pipeline = Pipeline::new(generated(95), sink.clone()).with_max_batch_bytes(limit);
    let report = pipeline.run(&run(), Checkpoint::start()).await;
    assert_eq!(report.outcome, RunOutcome::Succeeded);
    assert_eq!(report.batches, 10);
}

#[tokio::test]
async fn a_record_too_large_for_any_batch_fails_the_run_permanently_naming_it() {
    let sink = Recording::default();
    let pipeline = Pipeline::new(generated(95), sink.clone()).with_max_batch_bytes(120);
    let report = pipeline.run(&run(), Checkpoint::start()).await;
    let RunOutcome::Failed { kind, error } = &report.outcome else {
        panic!("{:?}", report.outcome);
    };
    assert_eq!(*kind, ErrorKind::Permanent);
    assert!(
        error.contains("record 1 of stream contacts takes")
            && error.contains("cannot be delivered"),
        "{error}"
    );
    assert_eq!(report.checkpoint, Checkpoint::start());
    assert!(
        sink.batches.lock().unwrap().is_empty(),
        "nothing of the page committed"
    );
}
