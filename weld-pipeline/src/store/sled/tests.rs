use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::batch::Batch;
use crate::message::Commit;
use crate::record::{Json, Record};
use crate::sink::Sink;
use crate::store::RunState;

fn stream() -> StreamName {
    StreamName::new("contacts").unwrap()
}

fn record(id: u32, at: i64, archived: bool) -> Record {
    Record {
        id: id.to_string(),
        updated_at: Timestamp::from_millis(at),
        archived,
        amend: false,
        purge: false,
        data: Json::parse(format!(r#"{{"id":"{id}","v":{at}}}"#).into_bytes()).unwrap(),
    }
}

fn batch(run: u64, seq: u64, last: bool, records: Vec<Record>) -> Batch {
    Batch::new(stream(), RunId(run), seq)
        .with_records(records)
        .with_cursor(Checkpoint::from_bytes(format!("{run}/{seq}")))
        .with_last(last)
}

fn open(dir: &std::path::Path) -> SledStore {
    SledStore::open(&SledStoreConfig::new(dir)).unwrap()
}

fn all(store: &SledStore, archived: Archived) -> Vec<Record> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .records(&stream(), after.as_deref(), 7, archived)
            .unwrap();
        out.extend(page.records);
        match page.next {
            Some(next) => after = Some(next),
            None => return out,
        }
    }
}

#[tokio::test]
async fn redelivered_batch_is_idempotent_stored_once_and_acked_twice() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let b = batch(
        1,
        0,
        false,
        vec![record(1, 10, false), record(2, 10, false)],
    );
    assert_eq!(
        store.commit(&b).await.unwrap(),
        Commit::Stored { records: 2 }
    );
    assert_eq!(store.commit(&b).await.unwrap(), Commit::Replayed);
    assert_eq!(
        store.counts(&stream()).unwrap(),
        Counts {
            live: 2,
            archived: 0
        }
    );
    assert_eq!(store.runs(&stream(), 10).unwrap()[0].batches, 1);
}

/// A controller whose runtime is shutting down (a restart, a kill) still answers the deliveries
/// it was committing: their writes, refused by the runtime's blocking pool, must be refused
/// transiently, so that the worker holds the batches for the next controller. Called a bug, the
/// refusal was for good: the worker dropped the stream's waiting batches and cancelled its run.
#[test]
fn a_commit_cut_short_by_its_runtime_shutting_down_is_refused_transiently() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let handle = runtime.handle().clone();
    runtime.shutdown_background();
    let _in_the_runtime = handle.enter();
    let error =
        futures::executor::block_on(store.commit(&batch(1, 0, false, vec![record(1, 10, false)])))
            .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Transient, "{error}");
    assert_eq!(store.counts(&stream()).unwrap(), Counts::default());
}

#[tokio::test]
async fn checkpoint_moves_with_its_batch_and_a_newer_version_always_wins() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert_eq!(store.checkpoint(&stream()).unwrap(), Checkpoint::start());
    store
        .commit(&batch(1, 0, false, vec![record(1, 20, false)]))
        .await
        .unwrap();
    store
        .commit(&batch(
            1,
            1,
            false,
            vec![record(1, 10, false), record(2, 5, false)],
        ))
        .await
        .unwrap();
    assert_eq!(
        store.checkpoint(&stream()).unwrap(),
        Checkpoint::from_bytes("1/1")
    );
    let stored = all(&store, Archived::All);
    assert_eq!(
        stored[0],
        record(1, 20, false),
        "the older version did not replace the newer"
    );
    assert_eq!(stored.len(), 2);
}

#[tokio::test]
async fn archived_records_are_kept_marked_and_leave_the_live_count() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .commit(&batch(
            1,
            0,
            false,
            (1..=3).map(|i| record(i, 1, false)).collect(),
        ))
        .await
        .unwrap();
    store
        .commit(&batch(1, 1, true, vec![record(2, 2, true)]))
        .await
        .unwrap();
    assert_eq!(
        store.counts(&stream()).unwrap(),
        Counts {
            live: 2,
            archived: 1
        }
    );
    assert_eq!(all(&store, Archived::Live).len(), 2);
    assert_eq!(all(&store, Archived::Only), vec![record(2, 2, true)]);
    assert_eq!(all(&store, Archived::All).len(), 3);
    // Restored at the source: live again.
    store
        .commit(&batch(2, 0, true, vec![record(2, 3, false)]))
        .await
        .unwrap();
    assert_eq!(
        store.counts(&stream()).unwrap(),
        Counts {
            live: 3,
            archived: 0
        }
    );
}

#[tokio::test]
async fn paging_visits_every_record_exactly_once_while_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .commit(&batch(
            1,
            0,
            false,
            (1..=500).map(|i| record(i, 1, false)).collect(),
        ))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut seq = 1;
    loop {
        let page = store
            .records(&stream(), after.as_deref(), 37, Archived::Live)
            .unwrap();
        seen.extend(page.records.iter().map(|r| r.id.parse::<u32>().unwrap()));
        // Between pages: updates to records already seen and not yet seen, and new records.
        let changes = vec![
            record(seq * 3 % 500 + 1, 100 + i64::from(seq), false),
            record(1000 + seq, 1, false),
        ];
        store
            .commit(&batch(1, u64::from(seq), false, changes))
            .await
            .unwrap();
        seq += 1;
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let originals: Vec<u32> = seen.iter().copied().filter(|&id| id <= 500).collect();
    assert_eq!(
        originals,
        (1..=500).collect::<Vec<_>>(),
        "every original record once, in order"
    );
    let mut unique = seen.clone();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no record twice");
}

#[tokio::test]
async fn a_sparse_filter_pages_in_bounded_steps_and_still_finds_every_match() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // 25,000 live records and three archived ones spread out: 10,000 examined per call.
    let total = 25_000;
    let archived = [7, 12_345, 24_999];
    let records: Vec<Record> = (0..total)
        .map(|i| record(i, 1, archived.contains(&i)))
        .collect();
    for (seq, chunk) in records.chunks(5_000).enumerate() {
        store
            .commit(&batch(1, seq as u64, false, chunk.to_vec()))
            .await
            .unwrap();
    }
    let mut found = Vec::new();
    let mut after: Option<String> = None;
    let mut calls = 0;
    loop {
        let page = store
            .records(&stream(), after.as_deref(), 100, Archived::Only)
            .unwrap();
        calls += 1;
        found.extend(page.records.iter().map(|r| r.id.clone()));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    found.sort();
    let mut expected: Vec<String> = archived.iter().map(|i| record(*i, 1, true).id).collect();
    expected.sort();
    assert_eq!(found, expected, "every archived record, once");
    assert_eq!(calls, 3, "25,000 records examined 10,000 at a time");
}

#[tokio::test]
async fn paging_rejects_a_token_it_did_not_make() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let error = store
        .records(&stream(), Some("zz"), 10, Archived::Live)
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Permanent);
}

#[tokio::test]
async fn restart_after_a_crash_keeps_every_acked_batch_and_recognises_replays() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        for seq in 0..5 {
            let records = (seq * 10..seq * 10 + 10)
                .map(|i| record(i as u32, 1, false))
                .collect();
            store
                .commit(&batch(1, seq, seq == 4, records))
                .await
                .unwrap();
        }
        // Dropped without any shutdown.
    }
    let store = open(dir.path());
    assert_eq!(store.counts(&stream()).unwrap().live, 50);
    assert_eq!(
        store.checkpoint(&stream()).unwrap(),
        Checkpoint::from_bytes("1/4")
    );
    assert_eq!(
        store.commit(&batch(1, 2, false, vec![])).await.unwrap(),
        Commit::Replayed
    );
    let runs = store.runs(&stream(), 10).unwrap();
    assert_eq!(
        (runs[0].state, runs[0].records, runs[0].batches),
        (RunState::Succeeded, 50, 5)
    );
}

#[tokio::test]
async fn runs_are_versions_a_newer_run_closes_an_abandoned_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .start_run(&stream(), RunId(1), Timestamp::from_millis(1))
        .await
        .unwrap();
    store
        .commit(&batch(1, 0, false, vec![record(1, 1, false)]))
        .await
        .unwrap();
    store
        .commit(&batch(2, 0, true, vec![record(1, 2, false)]))
        .await
        .unwrap();
    store
        .finish_run(
            &stream(),
            RunId(2),
            &RunOutcome::Failed {
                kind: ErrorKind::Transient,
                error: "late report".into(),
            },
        )
        .await
        .unwrap();
    let runs = store.runs(&stream(), 10).unwrap();
    assert_eq!(runs[0].id, RunId(2));
    assert_eq!(
        runs[0].state,
        RunState::Succeeded,
        "a committed last batch decides"
    );
    assert_eq!(runs[1].state, RunState::Failed);
    assert!(runs[1].error.as_deref().unwrap().contains("abandoned"));
}

#[tokio::test]
async fn deleting_a_stream_removes_all_it_had() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .commit(&batch(1, 0, true, vec![record(1, 1, false)]))
        .await
        .unwrap();
    store.delete_stream(&stream()).await.unwrap();
    assert_eq!(store.counts(&stream()).unwrap(), Counts::default());
    assert_eq!(store.checkpoint(&stream()).unwrap(), Checkpoint::start());
    assert!(store.runs(&stream(), 10).unwrap().is_empty());
    assert!(all(&store, Archived::All).is_empty());
    assert_eq!(
        store.commit(&batch(1, 0, true, vec![])).await.unwrap(),
        Commit::Stored { records: 0 }
    );
}

#[derive(Clone, Debug)]
enum Op {
    /// Deliver batch `n` of the script (again, if it was delivered before).
    Deliver(usize),
    /// Drop the store without shutdown and open it again.
    Restart,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The store against a model of the source's final set (a BTreeMap upserted newest-wins,
    /// from which a purge removes its id whatever its version), whatever the interleaving of deliveries, duplicate deliveries (a lost ack is one, seen
    /// from the store) and restarts.
    #[test]
    fn store_equals_the_source_set_through_redelivery_lost_acks_and_restart(
        script in proptest::collection::vec(
            proptest::collection::vec((0u32..40, 0i64..20, 0u8..6), 0..8), 1..12),
        ops in proptest::collection::vec(
            prop_oneof![4 => (0usize..12).prop_map(Op::Deliver), 1 => Just(Op::Restart)], 1..40),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut store = open(dir.path());
            let mut model: BTreeMap<String, Record> = BTreeMap::new();
            let mut delivered = std::collections::HashSet::new();
            let mut checkpoint = Checkpoint::start();
            for op in ops {
                match op {
                    Op::Restart => {
                        drop(store);
                        store = open(dir.path());
                    }
                    Op::Deliver(n) => {
                        let n = n % script.len();
                        // Of six records, two archived and one a purge.
                        let records: Vec<Record> = script[n].iter().map(|&(id, at, kind)| match kind {
                            5 => Record::purge(id.to_string(), Timestamp::from_millis(at)),
                            _ => record(id, at, kind >= 3),
                        }).collect();
                        let b = batch(1, n as u64, false, records.clone());
                        let commit = store.commit(&b).await.unwrap();
                        if delivered.insert(n) {
                            prop_assert!(matches!(commit, Commit::Stored { .. }), "a new batch was stored");
                            for r in records {
                                if r.purge {
                                    model.remove(&r.id);
                                    continue;
                                }
                                let keep = model.get(&r.id).is_some_and(|s| s.updated_at > r.updated_at);
                                if !keep {
                                    model.insert(r.id.clone(), r);
                                }
                            }
                        } else {
                            prop_assert_eq!(commit, Commit::Replayed);
                        }
                    }
                }
            }
            let mut stored = all(&store, Archived::All);
            stored.sort_by(|a, b| a.id.cmp(&b.id));
            let expected: Vec<Record> = model.values().cloned().collect();
            prop_assert_eq!(stored, expected);
            let live = model.values().filter(|r| !r.archived).count() as u64;
            prop_assert_eq!(store.counts(&stream()).unwrap(), Counts { live, archived: model.len() as u64 - live });
            // The checkpoint is the cursor of the last batch with no gap before it.
            let contiguous = (0..script.len()).take_while(|n| delivered.contains(n)).last();
            if let Some(n) = contiguous {
                checkpoint = batch(1, n as u64, false, vec![]).cursor;
            }
            prop_assert_eq!(store.checkpoint(&stream()).unwrap(), checkpoint);
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn checkpoint_never_passes_a_batch_still_missing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .commit(&batch(1, 0, false, vec![record(1, 1, false)]))
        .await
        .unwrap();
    // Batches 2 and 3 arrive before 1 (pipelined deliveries, out of order).
    store
        .commit(&batch(1, 2, false, vec![record(3, 1, false)]))
        .await
        .unwrap();
    store
        .commit(&batch(1, 3, true, vec![record(4, 1, false)]))
        .await
        .unwrap();
    assert_eq!(
        store.checkpoint(&stream()).unwrap(),
        Checkpoint::from_bytes("1/0")
    );
    assert_eq!(
        store.runs(&stream(), 1).unwrap()[0].state,
        RunState::Running
    );
    // Batch 1 closes the gap: the checkpoint jumps to the last contiguous batch, the run is done.
    store
        .commit(&batch(1, 1, false, vec![record(2, 1, false)]))
        .await
        .unwrap();
    assert_eq!(
        store.checkpoint(&stream()).unwrap(),
        Checkpoint::from_bytes("1/3")
    );
    assert_eq!(
        store.runs(&stream(), 1).unwrap()[0].state,
        RunState::Succeeded
    );
    assert_eq!(store.counts(&stream()).unwrap().live, 4);
}
