//! The ledger: summed as a run commits, folded once superseded, and read the same throughout.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_of_runs_long_superseded_is_folded_and_nothing_read_from_it_changes() {
    let Some((store, client)) = warehouse("fold").await else {
        return;
    };
    let stream = StreamName::new("contacts").unwrap();
    // Run 1: three batches, one record archived by the last; run 2: one batch.
    for (seq, records) in [
        vec![("1", 1, doc(1)), ("2", 1, doc(2))],
        vec![("3", 1, doc(3))],
        vec![("4", 1, doc(4))],
    ]
    .into_iter()
    .enumerate()
    {
        Sink::commit(&store, &of_run(&stream, 1, seq as u64, seq == 2, &records))
            .await
            .unwrap();
    }
    let mut archive = of_run(&stream, 2, 0, true, &[("2", 2, doc(2))]);
    archive.records[0].archived = true;
    Sink::commit(&store, &archive).await.unwrap();
    assert_eq!(ledger_rows(&client).await, 4);
    let before = (
        store.counts(&stream).await.unwrap(),
        store.runs(&stream, 10).await.unwrap(),
    );

    // Run 3 begins: run 1, committed two hours ago, is folded; run 2, just now, is not.
    client
        .batch_execute(
            "UPDATE weld.batches SET committed_at = now() - interval '2 hours' WHERE run_id = 1",
        )
        .await
        .unwrap();
    Sink::commit(&store, &of_run(&stream, 3, 0, false, &[("5", 1, doc(5))]))
        .await
        .unwrap();
    assert_eq!(
        ledger_rows(&client).await,
        2,
        "run 2's row and run 3's remain"
    );
    let counts = store.counts(&stream).await.unwrap();
    assert_eq!(
        (counts.live, counts.archived),
        (before.0.live + 1, before.0.archived)
    );
    assert_eq!((counts.live, counts.archived), (4, 1));
    let runs = store.runs(&stream, 10).await.unwrap();
    let run_1 = |runs: &[weld_pipeline::store::RunRecord]| {
        runs.iter().find(|r| r.id == RunId(1)).cloned().unwrap()
    };
    let (folded, unfolded) = (run_1(&runs), run_1(&before.1));
    assert_eq!(
        (
            folded.batches,
            folded.records,
            folded.state,
            folded.progress
        ),
        (
            unfolded.batches,
            unfolded.records,
            unfolded.state,
            unfolded.progress
        )
    );
    assert_eq!(folded.batches, 3);
    assert!(folded.finished_at.is_some());
    assert_eq!(
        store.checkpoint(&stream).await.unwrap(),
        Checkpoint::from_bytes("c0")
    );

    folding_again_adds_nothing_twice_and_deleting_takes_the_totals(&store, &client, &stream).await;
}

/// Folding again adds nothing twice; deleting the stream takes its totals.
async fn folding_again_adds_nothing_twice_and_deleting_takes_the_totals(
    store: &PostgresStore,
    client: &tokio_postgres::Client,
    stream: &StreamName,
) {
    client
        .batch_execute("UPDATE weld.batches SET committed_at = now() - interval '2 hours'")
        .await
        .unwrap();
    Sink::commit(store, &of_run(stream, 4, 0, false, &[("6", 1, doc(6))]))
        .await
        .unwrap();
    let counts = store.counts(stream).await.unwrap();
    assert_eq!((counts.live, counts.archived), (5, 1));
    assert_eq!(store.runs(stream, 10).await.unwrap().len(), 4);
    store.delete_stream(stream).await.unwrap();
    let totals: i64 = client
        .query_one("SELECT count(*) FROM weld.totals", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(totals, 0);
}

/// A document numbered `n`.
fn doc(n: i64) -> serde_json::Value {
    serde_json::json!({"properties": {"n": n}})
}

/// Batch `seq` of run `run` of `stream`, its last when `last`.
fn of_run(
    stream: &StreamName,
    run: u64,
    seq: u64,
    last: bool,
    records: &[(&str, i64, serde_json::Value)],
) -> Batch {
    Batch {
        run_id: RunId(run),
        last,
        ..batch(stream, seq, records)
    }
}

/// How many rows the ledger holds.
async fn ledger_rows(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM weld.batches", &[])
        .await
        .unwrap()
        .get::<_, i64>(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_run_is_summed_as_it_commits_and_reads_the_same_as_its_ledger() {
    let Some((store, client)) = warehouse("summed").await else {
        return;
    };
    let stream = StreamName::new("contacts").unwrap();
    // Batch 40 arrives late: the sum at batch 63 stops before it.
    for seq in (0..=63).filter(|s| *s != 40) {
        commit_numbered(&store, &stream, 1, seq, false).await;
    }
    assert_eq!(summed_seq(&client).await, Some(39));
    let gapped = read(&store, &stream).await;
    // Seqs 6, 13, .., 62 (9 of them) carry a record and its purge besides.
    assert_eq!(
        (gapped.2, gapped.3),
        (63, 63 + 2 * 9),
        "63 batches committed"
    );
    assert_eq!(gapped.5, 9, "purged");
    assert_eq!(
        (gapped.0, gapped.1),
        (57, 6),
        "seqs 0-63 but 40, every tenth archived"
    );
    assert_eq!(gapped.7, RunState::Running);
    commit_numbered(&store, &stream, 1, 40, false).await;
    for seq in 64..200 {
        commit_numbered(&store, &stream, 1, seq, seq == 199).await;
    }
    assert_eq!(summed_seq(&client).await, Some(191));
    let whole = read(&store, &stream).await;
    let repaired: u64 = (0..200).map(|s| s % 3).sum();
    let purged = (0..200).filter(|s| s % 7 == 6).count() as u64;
    assert_eq!(
        whole,
        (
            180,
            20,
            200,
            200 + 2 * purged,
            repaired,
            purged,
            Some(199),
            RunState::Succeeded
        )
    );
    let ledger: (i64, i64) = {
        let row = client
            .query_one(
                "SELECT sum(live_delta)::bigint, sum(archived_delta)::bigint FROM weld.batches",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(ledger, (180, 20), "every ledger row is still there");

    a_later_run_folds_it_and_nothing_read_changes(&store, &client, &stream, (repaired, purged))
        .await;
}

/// A later run folds it: nothing read changes, the summed rows counted once.
async fn a_later_run_folds_it_and_nothing_read_changes(
    store: &PostgresStore,
    client: &tokio_postgres::Client,
    stream: &StreamName,
    (repaired, purged): (u64, u64),
) {
    client
        .batch_execute("UPDATE weld.batches SET committed_at = now() - interval '2 hours'")
        .await
        .unwrap();
    commit_numbered(store, stream, 2, 0, false).await;
    let counts = store.counts(stream).await.unwrap();
    assert_eq!((counts.live, counts.archived), (180, 21));
    let runs = store.runs(stream, 2).await.unwrap();
    let folded = &runs[1];
    assert_eq!(
        (
            folded.batches,
            folded.records,
            folded.repaired,
            folded.purged,
            folded.progress.contiguous,
            folded.state
        ),
        (
            200,
            200 + 2 * purged,
            repaired,
            purged,
            Some(199),
            RunState::Succeeded
        )
    );
    assert_eq!(summed_seq(client).await, None, "folded");
}

/// Commits batch `seq` of run `run` of `stream`: one record, every tenth archived, `seq % 3`
/// repaired; every seventh (seq 6, 13, ..) also carries another record and its purge, which
/// leave no record and count one purged.
async fn commit_numbered(
    store: &PostgresStore,
    stream: &StreamName,
    run: u64,
    seq: u64,
    last: bool,
) {
    let id = format!("{run}-{seq}");
    let mut batch = Batch {
        run_id: RunId(run),
        last,
        repaired: seq % 3,
        ..batch(stream, seq, &[(&id, 1, serde_json::json!({"n": seq}))])
    };
    batch.records[0].archived = seq % 10 == 0;
    if seq % 7 == 6 {
        let gone = format!("gone-{run}-{seq}");
        let version = Record::new(
            gone.as_str(),
            Timestamp::from_millis(1),
            Json::parse(b"{}".to_vec()).unwrap(),
        );
        let purge = Record::purge(gone, Timestamp::from_millis(2));
        batch.records.extend([version, purge]);
    }
    Sink::commit(store, &batch).await.unwrap();
}

/// What the store reads of `stream` and its newest run: live and archived counts, batches,
/// records, repaired, purged, progress and state.
async fn read(
    store: &PostgresStore,
    stream: &StreamName,
) -> (u64, u64, u64, u64, u64, u64, Option<u64>, RunState) {
    let counts = store.counts(stream).await.unwrap();
    let run = store.runs(stream, 1).await.unwrap().remove(0);
    (
        counts.live,
        counts.archived,
        run.batches,
        run.records,
        run.repaired,
        run.purged,
        run.progress.contiguous,
        run.state,
    )
}

/// Run 1's `summed_seq`.
async fn summed_seq(client: &tokio_postgres::Client) -> Option<i64> {
    client
        .query_one("SELECT summed_seq FROM weld.runs WHERE run_id = 1", &[])
        .await
        .unwrap()
        .get::<_, Option<i64>>(0)
}
