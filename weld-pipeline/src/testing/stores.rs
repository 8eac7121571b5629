//! The conformance suite of [`StreamStore`]: what every store must do, run against each
//! implementation by [`store_conformance!`](crate::store_conformance) (the sled store in this
//! crate's tests; a database-backed store in its own crate's).
//!
//! Each case takes a [`StoreUnderTest`], which opens the store, and opens it again on the same
//! data to play a restart. A case drops every handle of a store before it reopens it.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::batch::Batch;
use crate::checkpoint::Checkpoint;
use crate::message::{Commit, RunOutcome, StreamConfig};
use crate::record::{Json, Record, Timestamp};
use crate::store::{
    encode_token, Archived, Desired, LastError, RunState, StreamEntry, StreamStore,
};
use crate::stream::{RunId, StreamName};
use crate::ErrorKind;

/// A store for the suite: each [`open`](StoreUnderTest::open) opens the same data, empty the
/// first time.
#[async_trait]
pub trait StoreUnderTest: Send + Sync {
    /// Whether the store can run here (a database store skips, saying why, where its database
    /// is not installed).
    fn available(&self) -> bool {
        true
    }

    /// Opens the store (again, after the previous handles were dropped: a restart).
    async fn open(&self) -> Arc<dyn StreamStore>;
}

/// The sled store in a temporary directory.
#[cfg(feature = "sled")]
#[derive(Debug)]
pub struct SledUnderTest {
    dir: tempfile::TempDir,
}

#[cfg(feature = "sled")]
impl SledUnderTest {
    /// A sled store in a new temporary directory.
    ///
    /// # Panics
    ///
    /// When no temporary directory can be made.
    pub fn new() -> Self {
        SledUnderTest {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }
}

#[cfg(feature = "sled")]
impl Default for SledUnderTest {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "sled")]
#[async_trait]
impl StoreUnderTest for SledUnderTest {
    async fn open(&self) -> Arc<dyn StreamStore> {
        let config = crate::store::SledStoreConfig::new(self.dir.path());
        Arc::new(crate::store::SledStore::open(&config).expect("the sled store opens"))
    }
}

/// Every case of the suite as a `#[tokio::test]`, over the stores `$store` builds (an expression
/// of a type implementing [`StoreUnderTest`], evaluated once per case).
///
/// ```ignore
/// weld_pipeline::store_conformance!(weld_pipeline::testing::stores::SledUnderTest::new());
/// ```
#[macro_export]
macro_rules! store_conformance {
    ($store:expr) => {
        $crate::store_conformance!(@each $store;
            a_redelivered_batch_is_a_replay_and_stored_once,
            the_newest_version_of_a_record_wins_in_any_order,
            out_of_order_batches_hold_the_checkpoint_until_the_gap_closes,
            archived_records_are_kept_counted_apart_and_filtered,
            paging_visits_every_record_once_while_commits_go_on,
            a_paging_token_the_store_did_not_make_is_invalid,
            a_restart_keeps_every_acknowledged_batch_and_knows_its_replays,
            runs_are_recorded_and_a_newer_run_closes_an_abandoned_one,
            deleting_a_stream_removes_its_entry_and_all_its_data,
            a_resync_clears_the_checkpoint_and_fences_batches_of_earlier_epochs,
            an_amendment_keeps_the_stored_document_and_writes_what_it_names,
            commits_in_flight_at_once_keep_the_newest_versions_and_count_exactly,
            the_inventory_lists_every_record_once_in_key_order_without_documents,
            the_registry_keeps_its_entries_across_a_restart,
            a_page_tells_no_stream_from_a_stream_without_records,
            a_purge_removes_the_record_and_its_links_and_counts_it,
            a_purge_wins_over_a_newer_stored_version_and_applies_in_batch_order,
            a_purge_of_an_id_never_stored_stores_nothing,
            a_purge_commits_with_its_checkpoint_survives_a_restart_and_is_replayed_once,
        );
    };
    (@each $store:expr; $($case:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $case() {
            let store = $store;
            if $crate::testing::stores::StoreUnderTest::available(&store) {
                $crate::testing::stores::$case(&store).await;
            }
        }
    )*};
}

fn stream() -> StreamName {
    StreamName::new("contacts").expect("a valid name")
}

fn record(id: u64, at: i64, archived: bool) -> Record {
    Record {
        id: id.to_string(),
        updated_at: Timestamp::from_millis(at),
        archived,
        amend: false,
        purge: false,
        data: Json::parse(format!(r#"{{"id":"{id}","v":{at}}}"#).into_bytes()).expect("JSON"),
    }
}

fn batch(run: u64, seq: u64, last: bool, records: Vec<Record>) -> Batch {
    Batch::new(stream(), RunId(run), seq)
        .with_records(records)
        .with_cursor(Checkpoint::from_bytes(format!("{run}/{seq}")))
        .with_last(last)
}

fn entry(desired: Desired) -> StreamEntry {
    StreamEntry {
        name: stream(),
        config: serde_json::from_value::<StreamConfig>(serde_json::json!({
            "source": {"kind": "generator", "records": 10},
            "interval_secs": 60,
        }))
        .expect("a valid config"),
        desired,
        last_error: None,
    }
}

/// Every stored record of the stream, paging 7 at a time.
async fn all(store: &dyn StreamStore, archived: Archived) -> Vec<Record> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .records(&stream(), after.as_deref(), 7, archived)
            .await
            .expect("the store reads");
        out.extend(page.records);
        match page.next {
            Some(next) => after = Some(next),
            None => return out,
        }
    }
}

/// The value `v` of every stored record, by id.
async fn versions(store: &dyn StreamStore) -> BTreeMap<String, i64> {
    all(store, Archived::All)
        .await
        .into_iter()
        .map(|r| (r.id, r.updated_at.as_millis()))
        .collect()
}

/// How many records the API's first page of the stream holds, `None` for no such stream.
async fn page(store: &dyn StreamStore) -> Option<usize> {
    let page = store
        .existing_records(&stream(), None, 10, Archived::All)
        .await;
    page.unwrap().map(|page| page.records.len())
}

async fn commit(store: &dyn StreamStore, batch: &Batch) -> Commit {
    store.commit(batch).await.expect("the commit succeeds")
}

/// A batch delivered twice is written once and acknowledged both times.
pub async fn a_redelivered_batch_is_a_replay_and_stored_once(under: &impl StoreUnderTest) {
    let store = under.open().await;
    let b = batch(
        1,
        0,
        false,
        vec![record(1, 10, false), record(2, 10, false)],
    );
    assert_eq!(commit(&*store, &b).await, Commit::Stored { records: 2 });
    assert_eq!(commit(&*store, &b).await, Commit::Replayed);
    assert_eq!(store.counts(&stream()).await.unwrap().live, 2);
    assert_eq!(store.checkpoint(&stream()).await.unwrap(), b.cursor);
    assert_eq!(store.runs(&stream(), 10).await.unwrap()[0].batches, 1);
}

/// An older version never replaces a newer one, in one batch or across batches; an equal one
/// does.
pub async fn the_newest_version_of_a_record_wins_in_any_order(under: &impl StoreUnderTest) {
    let store = under.open().await;
    commit(&*store, &batch(1, 0, false, vec![record(1, 20, false)])).await;
    let older = commit(&*store, &batch(1, 1, false, vec![record(1, 10, false)])).await;
    assert_eq!(older, Commit::Stored { records: 0 });
    // One id twice in a batch: the newer of the two stays, whatever their order.
    commit(
        &*store,
        &batch(
            1,
            2,
            false,
            vec![record(2, 30, false), record(2, 25, false)],
        ),
    )
    .await;
    commit(&*store, &batch(1, 3, false, vec![record(1, 40, false)])).await;
    let stored = versions(&*store).await;
    assert_eq!(stored, BTreeMap::from([("1".into(), 40), ("2".into(), 30)]));
    assert_eq!(store.counts(&stream()).await.unwrap().live, 2);
    // An equal version replaces the stored one: a source reads a record again when something
    // changed that does not move its modification time (HubSpot's associations).
    let mut again = record(1, 40, false);
    again.data = Json::parse(br#"{"id":"1","v":40,"again":true}"#.to_vec()).expect("JSON");
    let replaced = commit(&*store, &batch(1, 4, false, vec![again])).await;
    assert_eq!(replaced, Commit::Stored { records: 1 });
    let page = store
        .records(&stream(), None, 10, Archived::Live)
        .await
        .unwrap();
    let first = page.records.iter().find(|r| r.id == "1").expect("record 1");
    let doc: serde_json::Value = first.data.decode().expect("JSON");
    assert_eq!(
        doc["again"], true,
        "the equal version replaced the stored one: {doc}"
    );
    assert_eq!(store.counts(&stream()).await.unwrap().live, 2);
}

/// With several deliveries in flight, batch 2 may commit before batch 1: the checkpoint stays at
/// batch 0 until batch 1 is in, then jumps to the highest batch without a gap; the run succeeds
/// only when its last batch and every one before it are in.
pub async fn out_of_order_batches_hold_the_checkpoint_until_the_gap_closes(
    under: &impl StoreUnderTest,
) {
    let store = under.open().await;
    commit(&*store, &batch(1, 0, false, vec![record(1, 1, false)])).await;
    commit(&*store, &batch(1, 2, false, vec![record(3, 1, false)])).await;
    commit(&*store, &batch(1, 3, true, vec![record(4, 1, false)])).await;
    assert_eq!(
        store.checkpoint(&stream()).await.unwrap(),
        Checkpoint::from_bytes("1/0")
    );
    let run = store.runs(&stream(), 1).await.unwrap().remove(0);
    assert_eq!(run.state, RunState::Running, "batch 1 is still missing");

    commit(&*store, &batch(1, 1, false, vec![record(2, 1, false)])).await;
    assert_eq!(
        store.checkpoint(&stream()).await.unwrap(),
        Checkpoint::from_bytes("1/3")
    );
    let run = store.runs(&stream(), 1).await.unwrap().remove(0);
    assert_eq!(run.state, RunState::Succeeded);
    assert_eq!((run.records, run.batches), (4, 4));
}

/// A record archived at the source is kept, marked, counted apart, and listed only when asked.
pub async fn archived_records_are_kept_counted_apart_and_filtered(under: &impl StoreUnderTest) {
    let store = under.open().await;
    let live: Vec<Record> = (1..=5).map(|i| record(i, 1, false)).collect();
    commit(&*store, &batch(1, 0, false, live)).await;
    commit(
        &*store,
        &batch(1, 1, false, vec![record(2, 2, true), record(4, 2, true)]),
    )
    .await;
    let counts = store.counts(&stream()).await.unwrap();
    assert_eq!((counts.live, counts.archived), (3, 2));
    let ids = |records: Vec<Record>| records.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(all(&*store, Archived::Live).await), ["1", "3", "5"]);
    assert_eq!(ids(all(&*store, Archived::Only).await), ["2", "4"]);
    assert_eq!(all(&*store, Archived::All).await.len(), 5);
    // Back to life at the source: live again.
    commit(&*store, &batch(1, 2, false, vec![record(2, 3, false)])).await;
    let counts = store.counts(&stream()).await.unwrap();
    assert_eq!((counts.live, counts.archived), (4, 1));
}

/// Paging while commits go on visits every record that existed from the first page to the last
/// exactly once, in numeric id order, and sees its latest version.
pub async fn paging_visits_every_record_once_while_commits_go_on(under: &impl StoreUnderTest) {
    let store = under.open().await;
    let first: Vec<Record> = (1..=50).map(|i| record(i * 2, 1, false)).collect();
    commit(&*store, &batch(1, 0, false, first)).await;
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut seq = 1;
    loop {
        let page = store
            .records(&stream(), after.as_deref(), 9, Archived::Live)
            .await
            .unwrap();
        seen.extend(page.records.iter().map(|r| r.id.parse::<u64>().unwrap()));
        // Between pages: new versions of every record, and new records between the old ones.
        let changes: Vec<Record> = (1..=50)
            .flat_map(|i| {
                [
                    record(i * 2, 1 + seq as i64, false),
                    record(i * 2 + 1, 1, false),
                ]
            })
            .collect();
        commit(&*store, &batch(1, seq, false, changes)).await;
        seq += 1;
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(seen, sorted, "in order, each once");
    for i in 1..=50 {
        assert!(seen.contains(&(i * 2)), "record {} was missed", i * 2);
    }
}

/// A token the store did not make is refused as invalid (a 422 at the API), not a failure.
pub async fn a_paging_token_the_store_did_not_make_is_invalid(under: &impl StoreUnderTest) {
    let store = under.open().await;
    commit(&*store, &batch(1, 0, false, vec![record(1, 1, false)])).await;
    let error = store
        .records(&stream(), Some("not a token!"), 10, Archived::Live)
        .await
        .unwrap_err();
    assert!(
        matches!(error, crate::Error::Invalid(_)),
        "an invalid token, not {error:?}"
    );
    assert_eq!(error.kind(), ErrorKind::Permanent);
}

/// After a restart every acknowledged batch is there and a redelivery of one is a replay.
pub async fn a_restart_keeps_every_acknowledged_batch_and_knows_its_replays(
    under: &impl StoreUnderTest,
) {
    let batches: Vec<Batch> = (0..5)
        .map(|seq| batch(1, seq, seq == 4, vec![record(seq + 1, 1, false)]))
        .collect();
    {
        let store = under.open().await;
        for b in &batches[..4] {
            commit(&*store, b).await;
        }
    }
    let store = under.open().await;
    assert_eq!(store.counts(&stream()).await.unwrap().live, 4);
    assert_eq!(
        store.checkpoint(&stream()).await.unwrap(),
        Checkpoint::from_bytes("1/3")
    );
    for b in &batches[..4] {
        assert_eq!(commit(&*store, b).await, Commit::Replayed);
    }
    assert_eq!(
        commit(&*store, &batches[4]).await,
        Commit::Stored { records: 1 }
    );
    let run = store.runs(&stream(), 1).await.unwrap().remove(0);
    assert_eq!(run.state, RunState::Succeeded);
}

/// A run is recorded when it starts, ends as the worker reports (a reported success changes
/// nothing: the last batch decides), and a newer run closes an older one still marked running.
pub async fn runs_are_recorded_and_a_newer_run_closes_an_abandoned_one(
    under: &impl StoreUnderTest,
) {
    let store = under.open().await;
    let s = stream();
    store
        .start_run(&s, RunId(1), Timestamp::from_millis(1_000))
        .await
        .unwrap();
    store
        .start_run(&s, RunId(1), Timestamp::from_millis(5_000))
        .await
        .unwrap();
    let runs = store.runs(&s, 10).await.unwrap();
    assert_eq!(runs.len(), 1, "a repeated report is the same run");
    assert_eq!(runs[0].started_at, Timestamp::from_millis(1_000));

    store
        .finish_run(&s, RunId(1), &RunOutcome::Succeeded)
        .await
        .unwrap();
    assert_eq!(store.runs(&s, 1).await.unwrap()[0].state, RunState::Running);

    store
        .start_run(&s, RunId(2), Timestamp::from_millis(9_000))
        .await
        .unwrap();
    let runs = store.runs(&s, 10).await.unwrap();
    assert_eq!(runs[0].id, RunId(2), "newest first");
    assert_eq!(
        runs[1].state,
        RunState::Failed,
        "the abandoned run is closed"
    );

    let failed = RunOutcome::Failed {
        kind: ErrorKind::Permanent,
        error: "401 from the source".into(),
    };
    store.finish_run(&s, RunId(2), &failed).await.unwrap();
    let run = store.runs(&s, 1).await.unwrap().remove(0);
    assert_eq!(run.state, RunState::Failed);
    assert_eq!(run.error.as_deref(), Some("401 from the source"));
    assert!(run.finished_at.is_some());

    commit(&*store, &batch(3, 0, true, vec![record(1, 1, false)])).await;
    store
        .finish_run(&s, RunId(3), &RunOutcome::Cancelled)
        .await
        .unwrap();
    let run = store.runs(&s, 1).await.unwrap().remove(0);
    assert_eq!(run.state, RunState::Succeeded, "a complete run stays so");
}

/// Deleting a stream removes its registry entry, records, counts, checkpoint, ledger and runs:
/// a new stream of the name starts from nothing, and its first batch is no replay.
pub async fn deleting_a_stream_removes_its_entry_and_all_its_data(under: &impl StoreUnderTest) {
    let store = under.open().await;
    store.put_stream(&entry(Desired::Running)).await.unwrap();
    let b = batch(1, 0, true, vec![record(1, 1, false), record(2, 1, true)]);
    commit(&*store, &b).await;
    let other = StreamName::new("companies").unwrap();
    let mut kept = batch(1, 0, true, vec![record(1, 1, false)]);
    kept.stream = other.clone();
    commit(&*store, &kept).await;

    assert_eq!(
        page(&*store).await,
        Some(2),
        "the API's page of an existing stream"
    );
    store.delete_stream(&stream()).await.unwrap();
    assert_eq!(store.stream(&stream()).await.unwrap(), None);
    assert_eq!(page(&*store).await, None, "no such stream");
    assert_eq!(
        store.counts(&stream()).await.unwrap(),
        crate::store::Counts::default()
    );
    assert!(all(&*store, Archived::All).await.is_empty());
    assert!(store.checkpoint(&stream()).await.unwrap().is_start());
    assert!(store.runs(&stream(), 10).await.unwrap().is_empty());
    // A batch of the deleted stream, still on its way, stores its records into a new stream of
    // the name but cannot move its checkpoint: the delete raised the epoch.
    assert_eq!(commit(&*store, &b).await, Commit::Stored { records: 2 });
    assert_eq!(page(&*store).await, None, "records are no stream");
    let resume = store.resume(&stream()).await.unwrap();
    assert_eq!(resume.epoch, 1);
    assert!(resume.checkpoint.is_start());
    store.put_stream(&entry(Desired::Running)).await.unwrap();
    assert_eq!(page(&*store).await, Some(2));
    assert_eq!(
        store.counts(&other).await.unwrap().live,
        1,
        "another stream keeps its data"
    );
    // Deleting what does not exist does nothing.
    store
        .delete_stream(&StreamName::new("never").unwrap())
        .await
        .unwrap();
}

/// A resync raises the epoch and clears the checkpoint, durably, and keeps every record. A batch
/// of the earlier epoch (fetched before the resync, delivered after) stores its records but
/// leaves the checkpoint alone; the new epoch's batches move it.
pub async fn a_resync_clears_the_checkpoint_and_fences_batches_of_earlier_epochs(
    under: &impl StoreUnderTest,
) {
    let store = under.open().await;
    commit(&*store, &batch(1, 0, false, vec![record(1, 1, false)])).await;
    let resume = store.resume(&stream()).await.unwrap();
    assert_eq!(resume.epoch, 0);
    assert_eq!(resume.checkpoint, Checkpoint::from_bytes("1/0"));

    assert_eq!(store.resync(&stream()).await.unwrap(), 1);
    let resume = store.resume(&stream()).await.unwrap();
    assert_eq!(resume.epoch, 1);
    assert!(resume.checkpoint.is_start());
    assert_eq!(
        store.counts(&stream()).await.unwrap().live,
        1,
        "nothing dropped"
    );

    let stale = batch(1, 1, true, vec![record(2, 1, false)]);
    assert_eq!(commit(&*store, &stale).await, Commit::Stored { records: 1 });
    assert!(store.checkpoint(&stream()).await.unwrap().is_start());
    assert_eq!(store.counts(&stream()).await.unwrap().live, 2);

    let mut fresh = batch(2, 0, true, vec![record(1, 2, false)]);
    fresh.epoch = 1;
    commit(&*store, &fresh).await;
    assert_eq!(
        store.checkpoint(&stream()).await.unwrap(),
        Checkpoint::from_bytes("2/0")
    );

    drop(store);
    let store = under.open().await;
    let resume = store.resume(&stream()).await.unwrap();
    assert_eq!(resume.epoch, 1);
    assert_eq!(resume.checkpoint, Checkpoint::from_bytes("2/0"));
    assert_eq!(store.resync(&stream()).await.unwrap(), 2);
}

/// An amendment (a record merged away or deleted for good at the source, whose contents the
/// source no longer has) keeps the stored document and writes its own members over it, with its
/// archived flag and time; never over a newer version; with nothing stored, it is stored as is;
/// after a whole version in the same batch, it amends that one.
pub async fn an_amendment_keeps_the_stored_document_and_writes_what_it_names(
    under: &impl StoreUnderTest,
) {
    let store = under.open().await;
    let whole = |id: u64, at: i64| Record {
        data: Json::parse(
            format!(r#"{{"id":"{id}","properties":{{"email":"e{id}"}}}}"#).into_bytes(),
        )
        .expect("JSON"),
        ..record(id, at, false)
    };
    let amendment = |id: u64, at: i64| Record {
        amend: true,
        purge: false,
        data: Json::parse(br#"{"archived":true,"merged_into":"9"}"#.to_vec()).expect("JSON"),
        ..record(id, at, true)
    };
    commit(&*store, &batch(1, 0, false, vec![whole(1, 10)])).await;
    commit(
        &*store,
        &batch(1, 1, false, vec![amendment(1, 20), amendment(2, 20)]),
    )
    .await;
    // Older than what is stored: nothing changes.
    let older = Record {
        data: Json::parse(br#"{"merged_into":"8"}"#.to_vec()).expect("JSON"),
        ..amendment(1, 5)
    };
    commit(&*store, &batch(1, 2, false, vec![older])).await;
    commit(
        &*store,
        &batch(1, 3, true, vec![whole(3, 1), amendment(3, 2)]),
    )
    .await;

    let stored = all(&*store, Archived::All).await;
    let doc = |id: &str| -> serde_json::Value {
        let record = stored.iter().find(|r| r.id == id).expect("stored");
        assert!(record.archived, "record {id} is archived");
        record.data.decode().expect("JSON")
    };
    let first = doc("1");
    assert_eq!(
        first["properties"]["email"], "e1",
        "the stored document stays: {first}"
    );
    assert_eq!(first["merged_into"], "9", "{first}");
    assert_eq!(
        doc("2"),
        serde_json::json!({"archived": true, "merged_into": "9"})
    );
    assert_eq!(doc("3")["properties"]["email"], "e3");
    assert_eq!(doc("3")["merged_into"], "9");
    let first = stored.iter().find(|r| r.id == "1").expect("stored");
    assert_eq!(first.updated_at, Timestamp::from_millis(20));
    assert!(!first.amend, "what is stored is a whole version");
    let counts = store.counts(&stream()).await.unwrap();
    assert_eq!((counts.live, counts.archived), (0, 3));
}

/// Sixteen batches of one run committed at once, their ids overlapping (each shares half its
/// ids with the next, in new and stored records alike): each id ends at its newest version,
/// the counts equal the distinct ids, and the checkpoint is the last batch's.
pub async fn commits_in_flight_at_once_keep_the_newest_versions_and_count_exactly(
    under: &impl StoreUnderTest,
) {
    let store = under.open().await;
    let batches: Vec<Batch> = (0..16u64)
        .map(|seq| {
            let records = (seq * 25..seq * 25 + 50)
                .map(|id| record(id + 1, seq as i64 + 1, id % 7 == 0))
                .collect();
            batch(1, seq, seq == 15, records)
        })
        .collect();
    let commits = batches.iter().map(|b| store.commit(b));
    for result in futures::future::join_all(commits).await {
        assert!(matches!(result, Ok(Commit::Stored { .. })), "{result:?}");
    }
    let stored = versions(&*store).await;
    let ids = 15 * 25 + 50;
    assert_eq!(stored.len(), ids as usize);
    for (id, version) in &stored {
        let id: u64 = id.parse().expect("numeric");
        // The newest batch holding id `id` (1-based ids: batch s holds s*25+1 ..= s*25+50).
        let newest = ((id - 1) / 25).min(15);
        assert_eq!(*version, newest as i64 + 1, "record {id}");
    }
    let archived = (0..ids).filter(|id| id % 7 == 0).count() as u64;
    let counts = store.counts(&stream()).await.unwrap();
    assert_eq!((counts.live, counts.archived), (ids - archived, archived));
    assert_eq!(
        store.checkpoint(&stream()).await.unwrap(),
        Checkpoint::from_bytes("1/15")
    );
}

/// The inventory a reconciliation reads: every record once, live and archived, with its
/// version, in key order (numeric ids numerically), page after page.
pub async fn the_inventory_lists_every_record_once_in_key_order_without_documents(
    under: &impl StoreUnderTest,
) {
    let store = under.open().await;
    let ids = [1u64, 2, 9, 10, 11, 100, 1_000];
    let records = ids
        .iter()
        .map(|id| record(*id, *id as i64, id % 2 == 0))
        .collect();
    commit(&*store, &batch(1, 0, true, records)).await;
    let (mut held, mut after) = (Vec::new(), None::<String>);
    loop {
        let page = store.held(&stream(), after.as_deref(), 3).await.unwrap();
        assert!(page.records.len() <= 3);
        held.extend(page.records);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let listed: Vec<(String, i64, bool)> = held
        .into_iter()
        .map(|h| (h.id, h.updated_at.as_millis(), h.archived))
        .collect();
    let expected: Vec<(String, i64, bool)> = ids
        .iter()
        .map(|id| (id.to_string(), *id as i64, id % 2 == 0))
        .collect();
    assert_eq!(listed, expected);
}

/// Registry entries (configuration, desired state, last error) survive a restart, listed by name.
pub async fn the_registry_keeps_its_entries_across_a_restart(under: &impl StoreUnderTest) {
    let mut running = entry(Desired::Running);
    running.name = StreamName::new("zeta").unwrap();
    let mut stopped = entry(Desired::Stopped);
    stopped.last_error = Some(LastError {
        at: Timestamp::from_millis(7),
        message: "HubSpot answered 401".into(),
    });
    {
        let store = under.open().await;
        store.put_stream(&running).await.unwrap();
        store.put_stream(&entry(Desired::Running)).await.unwrap();
        store.put_stream(&stopped).await.unwrap();
    }
    let store = under.open().await;
    assert_eq!(
        store.stream(&stream()).await.unwrap(),
        Some(stopped.clone())
    );
    assert_eq!(store.streams().await.unwrap(), vec![stopped, running]);
    assert_eq!(
        store
            .stream(&StreamName::new("none").unwrap())
            .await
            .unwrap(),
        None
    );
}

/// The API's page of a stream: `None` for no such stream (whatever its token), an empty page
/// for a stream without records or without those asked for, its records otherwise, also from a
/// store opened anew.
pub async fn a_page_tells_no_stream_from_a_stream_without_records(under: &impl StoreUnderTest) {
    let unknown = StreamName::new("unknown").unwrap();
    {
        let store = under.open().await;
        let store = &*store;
        assert_eq!(
            ids(store, &unknown, None, Archived::All).await.unwrap(),
            None
        );
        let bad = Some("not a token");
        assert_eq!(
            ids(store, &unknown, bad, Archived::All).await.unwrap(),
            None
        );
        store.put_stream(&entry(Desired::Running)).await.unwrap();
        assert_eq!(
            ids(store, &stream(), None, Archived::All).await.unwrap(),
            Some(vec![]),
            "a stream never written"
        );
        assert!(matches!(
            ids(store, &stream(), bad, Archived::All).await,
            Err(crate::Error::Invalid(_))
        ));
        commit(
            store,
            &batch(1, 0, true, vec![record(1, 1, true), record(2, 1, false)]),
        )
        .await;
        let live = ids(store, &stream(), None, Archived::Live).await.unwrap();
        assert_eq!(live, Some(vec!["2".to_string()]));
        let archived = ids(store, &stream(), None, Archived::Only).await.unwrap();
        assert_eq!(archived, Some(vec!["1".to_string()]));
        let past = ids(store, &stream(), Some(&encode_token("2")), Archived::All).await;
        assert_eq!(past.unwrap(), Some(vec![]), "a page past the last record");
    }
    let store = under.open().await;
    let all = ids(&*store, &stream(), None, Archived::All).await.unwrap();
    assert_eq!(all, Some(vec!["1".to_string(), "2".to_string()]));
}

/// The ids of the API's first page of `stream` after `after`, `None` for no such stream.
async fn ids(
    store: &dyn StreamStore,
    stream: &StreamName,
    after: Option<&str>,
    archived: Archived,
) -> Result<Option<Vec<String>>, crate::Error> {
    let page = store.existing_records(stream, after, 10, archived).await?;
    Ok(page.map(|page| page.records.into_iter().map(|r| r.id).collect()))
}

/// A record whose document links it to two companies (PostgreSQL keeps them in the stream's
/// link table).
fn linked(id: u64, at: i64, archived: bool) -> Record {
    let data = format!(
        r#"{{"id":"{id}","v":{at},"associations":{{"companies":[{{"id":"7{id}","types":[{{"category":"HUBSPOT_DEFINED","typeId":279,"label":null}}]}},{{"id":"8{id}","types":[]}}]}}}}"#
    );
    Record {
        data: Json::parse(data.into_bytes()).expect("JSON"),
        ..record(id, at, archived)
    }
}

/// The ids of every stored record, live and archived, as the API lists them and as the
/// inventory a reconciliation reads does.
async fn stored_ids(store: &dyn StreamStore) -> Vec<String> {
    let listed: Vec<String> = all(store, Archived::All)
        .await
        .into_iter()
        .map(|r| r.id)
        .collect();
    let held = store
        .held(&stream(), None, 1_000)
        .await
        .expect("the store reads");
    let inventory: Vec<String> = held.records.into_iter().map(|h| h.id).collect();
    assert_eq!(listed, inventory, "the listing and the inventory agree");
    listed
}

/// A purge (a privacy deletion at the source) removes the stored record, live or archived, with
/// its links: it is neither listed nor in the inventory, it leaves the count it was in, and the
/// run counts it as purged (and, as every record of its batches, in `records`).
pub async fn a_purge_removes_the_record_and_its_links_and_counts_it(under: &impl StoreUnderTest) {
    let store = under.open().await;
    let first = vec![
        linked(1, 10, false),
        linked(2, 10, true),
        linked(3, 10, false),
    ];
    commit(&*store, &batch(1, 0, false, first)).await;
    let at = Timestamp::from_millis(20);
    let purges = vec![Record::purge("1", at), Record::purge("2", at)];
    let purged = commit(&*store, &batch(1, 1, true, purges)).await;
    assert_eq!(
        purged,
        Commit::Stored { records: 0 },
        "a purge writes no version"
    );
    assert_eq!(stored_ids(&*store).await, ["3"]);
    let counts = store.counts(&stream()).await.unwrap();
    assert_eq!((counts.live, counts.archived), (1, 0));
    let run = store.runs(&stream(), 1).await.unwrap().remove(0);
    assert_eq!((run.records, run.purged, run.batches), (5, 2, 2));
    assert_eq!(run.state, RunState::Succeeded);
}

/// A purge wins over any stored version, even one newer than itself (the source never reuses
/// an id). Within one batch an id's records apply in order: a purge after a version removes
/// it; a version after a purge is stored anew.
pub async fn a_purge_wins_over_a_newer_stored_version_and_applies_in_batch_order(
    under: &impl StoreUnderTest,
) {
    let store = under.open().await;
    commit(&*store, &batch(1, 0, false, vec![linked(1, 100, false)])).await;
    let older = Record::purge("1", Timestamp::from_millis(5));
    commit(&*store, &batch(1, 1, false, vec![older])).await;
    assert!(
        stored_ids(&*store).await.is_empty(),
        "the newer stored version is gone"
    );

    let at = Timestamp::from_millis(50);
    let then_purged = vec![linked(2, 40, false), Record::purge("2", at)];
    commit(&*store, &batch(1, 2, false, then_purged)).await;
    assert!(
        stored_ids(&*store).await.is_empty(),
        "purged in its own batch"
    );

    commit(&*store, &batch(1, 3, false, vec![record(4, 10, false)])).await;
    let then_stored = vec![Record::purge("4", at), linked(4, 60, true)];
    commit(&*store, &batch(1, 4, true, then_stored)).await;
    let stored = all(&*store, Archived::All).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(
        (stored[0].id.as_str(), stored[0].updated_at),
        ("4", Timestamp::from_millis(60))
    );
    assert!(stored[0].archived && !stored[0].purge);
    let counts = store.counts(&stream()).await.unwrap();
    assert_eq!((counts.live, counts.archived), (0, 1));
    // Record 1, record 2 (written then removed in one batch) and record 4's first version.
    assert_eq!(store.runs(&stream(), 1).await.unwrap()[0].purged, 3);
}

/// A purge of an id the store does not hold stores nothing (no tombstone: no trace), moves no
/// count, and counts in the run's records but not as purged.
pub async fn a_purge_of_an_id_never_stored_stores_nothing(under: &impl StoreUnderTest) {
    let store = under.open().await;
    let purge = Record::purge("42", Timestamp::from_millis(1));
    let stored = commit(&*store, &batch(1, 0, true, vec![purge])).await;
    assert_eq!(stored, Commit::Stored { records: 0 });
    assert!(stored_ids(&*store).await.is_empty());
    assert_eq!(
        store.counts(&stream()).await.unwrap(),
        crate::store::Counts::default()
    );
    let run = store.runs(&stream(), 1).await.unwrap().remove(0);
    assert_eq!(
        (run.records, run.purged, run.state),
        (1, 0, RunState::Succeeded)
    );
    assert_eq!(
        store.checkpoint(&stream()).await.unwrap(),
        Checkpoint::from_bytes("1/0")
    );
}

/// A purge is committed in the batch's one atomic step: with its checkpoint and its ledger
/// entry. After a restart the record is still gone and the checkpoint past it; the batch
/// delivered again (its ack lost to a kill) is a replay that removes nothing, even a version
/// of the id stored since, and counts nothing twice.
pub async fn a_purge_commits_with_its_checkpoint_survives_a_restart_and_is_replayed_once(
    under: &impl StoreUnderTest,
) {
    let purge = batch(
        1,
        1,
        true,
        vec![Record::purge("1", Timestamp::from_millis(9))],
    );
    {
        let store = under.open().await;
        let first = vec![linked(1, 1, false), linked(2, 1, false)];
        commit(&*store, &batch(1, 0, false, first)).await;
        commit(&*store, &purge).await;
    }
    let store = under.open().await;
    assert_eq!(stored_ids(&*store).await, ["2"]);
    assert_eq!(store.counts(&stream()).await.unwrap().live, 1);
    assert_eq!(
        store.checkpoint(&stream()).await.unwrap(),
        Checkpoint::from_bytes("1/1")
    );
    // A later run stores a version of the id (it cannot happen at HubSpot, which never reuses
    // an id; here it shows what the replay does not touch).
    commit(&*store, &batch(2, 0, false, vec![linked(1, 20, false)])).await;
    assert_eq!(commit(&*store, &purge).await, Commit::Replayed);
    assert_eq!(stored_ids(&*store).await, ["1", "2"]);
    assert_eq!(store.counts(&stream()).await.unwrap().live, 2);
    let runs = store.runs(&stream(), 10).await.unwrap();
    let first = runs.iter().find(|r| r.id == RunId(1)).expect("run 1");
    assert_eq!((first.records, first.purged, first.batches), (3, 1, 2));
}
