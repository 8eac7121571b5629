//! What vanishes from HubSpot's listings, against the fake over 127.0.0.1: records merged away,
//! deleted for good (found by a full read or the reconciliation sweep, archived or purged) or
//! lost by the store (the sweep), and archived records of a portal whose property list a list
//! URL cannot hold.

mod support;

use std::sync::Arc;
use std::time::Duration;

use tower::ServiceExt;
use weld_pipeline::source::{Inventory, PageRequest};
use weld_pipeline::{Checkpoint, MemorySink, RunOutcome};
use weld_pipeline_hubspot as hubspot;
use weld_pipeline_hubspot::fake::{FakeConfig, Mutation};
use weld_pipeline_hubspot::{HubSpotPages, OnPermanentDelete, Position, SweepStage};

use support::{
    assert_equals_the_fake, assert_gone_are_archived_and_the_rest_equals_the_fake, config, fake,
    run, run_reconciling, run_recording, stream, Ladder, Recording, DEADLINE,
};

fn contacts(mutation: Mutation) -> Mutation {
    Mutation {
        object: "contacts".into(),
        ..mutation
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_after_hard_deletes_mirrors_the_fake_with_no_sweep() {
    let fake = fake(FakeConfig {
        contacts: 700,
        custom_properties: 3,
        // Runs back to back with limits of their own: a 429 retried would count as a call.
        search_per_second: None,
        ..FakeConfig::default()
    })
    .await;
    // A sweep a day: none is due in this test.
    let config = config(&fake);
    let recording = Recording::default();
    let first = run_recording(&config, &recording, Checkpoint::start()).await;
    assert_eq!(first.outcome, RunOutcome::Succeeded);
    recording.take();
    let deleted = fake.mutate(&contacts(Mutation {
        delete: 7,
        ..Mutation::default()
    }));

    // The calls of a full read with nothing to compare with, for the figure below.
    let before = fake.stats().requests;
    let blind = run(&config, &MemorySink::new(), Checkpoint::start()).await;
    assert_eq!(blind.outcome, RunOutcome::Succeeded);
    let blind_calls = fake.stats().requests - before;

    // "Resync": a full read from the start.
    let before = fake.stats().requests;
    let resync = run_recording(&config, &recording, Checkpoint::start()).await;
    assert_eq!(resync.outcome, RunOutcome::Succeeded);
    let calls = fake.stats().requests - before;
    eprintln!(
        "a full read of 700 contacts: {blind_calls} calls alone, {calls} compared with the store"
    );
    // The comparison's one cost: the 7 no listing showed, asked for by id (archived, then
    // live: the listings are not one snapshot) before they are taken for deleted.
    assert_eq!(calls, blind_calls + 2, "the comparison costs two calls");
    let (sent, repaired) = recording.take();
    assert_eq!(repaired, 7, "the deleted, and nothing else, repaired");
    assert_eq!(sent.len(), 693 + 7);
    let gone = assert_gone_are_archived_and_the_rest_equals_the_fake(&fake, &recording.store);
    assert_eq!(gone.len(), 7);
    for id in &deleted {
        assert_eq!(gone[&id.to_string()]["deleted_permanently"], true);
    }
    assert_eq!(recording.store.live_count(&stream()), 693);

    // Its end is no sweep's due: the next run is a window, with nothing to repair.
    let next = run_recording(&config, &recording, resync.checkpoint).await;
    assert_eq!(next.outcome, RunOutcome::Succeeded);
    assert_eq!(recording.take().0.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_read_resumed_by_another_process_concludes_nothing_and_the_next_run_sweeps() {
    let fake = fake(FakeConfig {
        contacts: 700,
        custom_properties: 3,
        ..FakeConfig::default()
    })
    .await;
    let config = config(&fake);
    let recording = Recording::default();
    let first = run_recording(&config, &recording, Checkpoint::start()).await;
    assert_eq!(first.outcome, RunOutcome::Succeeded);
    recording.take();
    let deleted = fake.mutate(&contacts(Mutation {
        delete: 5,
        ..Mutation::default()
    }));

    // A full read's first two pages, by a worker that then stops: its comparison dies with it.
    let pages = HubSpotPages::new(config.account.clone(), config.object.clone()).unwrap();
    let inventory: Arc<dyn Inventory> = Arc::new(recording.store.clone());
    let mut cursor = Checkpoint::start();
    for _ in 0..2 {
        let request = PageRequest {
            stream: stream(),
            cursor,
            inventory: Some(inventory.clone()),
            catalog: None,
        };
        let page = tokio::time::timeout(DEADLINE, pages.clone().oneshot(request))
            .await
            .expect("a page in time")
            .expect("a page");
        assert!(!page.last);
        cursor = page.cursor;
    }
    let at: Option<Position> = cursor.position().unwrap();
    assert!(
        matches!(at, Some(Position::Full { last_id, .. }) if last_id > 0),
        "{at:?}"
    );

    // Another process resumes it from its checkpoint: it did not compare the ids before it, so
    // it marks nothing deleted, and asks for a sweep.
    let resumed = run_recording(&config, &recording, cursor).await;
    assert_eq!(resumed.outcome, RunOutcome::Succeeded);
    let (sent, repaired) = recording.take();
    assert_eq!(repaired, 0);
    assert!(
        sent.iter().all(|r| !r.archived),
        "nothing archived on a guess"
    );
    assert_eq!(recording.store.live_count(&stream()), 700);

    let sweep = run_recording(&config, &recording, resumed.checkpoint).await;
    assert_eq!(sweep.outcome, RunOutcome::Succeeded);
    assert_eq!(recording.take().1, 5, "the sweep finds the deleted");
    let gone = assert_gone_are_archived_and_the_rest_equals_the_fake(&fake, &recording.store);
    let mut gone: Vec<u64> = gone.keys().map(|id| id.parse().unwrap()).collect();
    gone.sort_unstable();
    let mut deleted = deleted;
    deleted.sort_unstable();
    assert_eq!(gone, deleted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_stream_purges_what_hubspot_deleted_for_good_and_nothing_merged_or_archived() {
    let fake = fake(FakeConfig {
        contacts: 700,
        custom_properties: 3,
        ..FakeConfig::default()
    })
    .await;
    let mut config = config(&fake);
    config.object.on_permanent_delete = OnPermanentDelete::Purge;
    let recording = Recording::default();
    let first = run_recording(&config, &recording, Checkpoint::start()).await;
    assert_eq!(first.outcome, RunOutcome::Succeeded);
    // Archived and merged away: a window stores both archived (`merged_into` for the merged).
    tokio::time::sleep(Duration::from_millis(50)).await;
    fake.mutate(&contacts(Mutation {
        archive: 6,
        merge: 3,
        ..Mutation::default()
    }));
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = run_recording(&config, &recording, first.checkpoint).await;
    assert_eq!(second.outcome, RunOutcome::Succeeded);
    let (sent, _) = recording.take();
    assert_eq!(sent.iter().filter(|r| r.archived).count(), 6 + 3);

    // Deleted for good: four live records, and two of the archived ones.
    let deleted = fake.mutate(&contacts(Mutation {
        delete: 4,
        delete_archived: 2,
        ..Mutation::default()
    }));
    // A record merged into one deleted for good has no survivor left to name it: it goes too.
    let orphans = fake
        .merged("contacts")
        .into_iter()
        .filter(|(_, primary)| deleted.contains(&primary.parse().unwrap()))
        .map(|(secondary, _)| secondary.parse::<u64>().unwrap());
    let mut expected: Vec<u64> = deleted.iter().copied().chain(orphans).collect();
    expected.sort_unstable();

    let resync = run_recording(&config, &recording, Checkpoint::start()).await;
    assert_eq!(resync.outcome, RunOutcome::Succeeded);
    let (purged, repaired) = recording.take_purged();
    assert_eq!(
        purged, expected,
        "the deleted, not the merged nor the archived"
    );
    assert_eq!(repaired, expected.len() as u64);

    // The sweep purges too: three more deleted for good.
    let mut more = fake.mutate(&contacts(Mutation {
        delete: 3,
        ..Mutation::default()
    }));
    more.sort_unstable();
    config.object.sweep_every = Duration::from_millis(100);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let sweep = run_recording(&config, &recording, resync.checkpoint).await;
    assert_eq!(sweep.outcome, RunOutcome::Succeeded);
    let (purged, repaired) = recording.take_purged();
    assert_eq!(purged, more);
    assert_eq!(repaired, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merged_away_record_is_archived_with_merged_into_keeping_what_was_stored() {
    let fake = fake(FakeConfig {
        contacts: 300,
        custom_properties: 3,
        ..FakeConfig::default()
    })
    .await;
    let config = config(&fake);
    let sink = MemorySink::new();
    let climbed = Ladder::new(&fake, &config, &sink)
        .waiting(Duration::from_millis(50))
        .climb(Mutation {
            object: "contacts".into(),
            merge: 4,
            ..Mutation::default()
        })
        .await;
    let second = climbed.second;
    assert_eq!(
        second.records, 8,
        "the four survivors, modified, and the four merged away"
    );
    let gone = assert_gone_are_archived_and_the_rest_equals_the_fake(&fake, &sink);
    let merged = fake.merged("contacts");
    assert_eq!(merged.len(), 4);
    assert_eq!(gone.len(), 4);
    for (secondary, primary) in merged {
        assert_eq!(gone[&secondary]["merged_into"], primary.as_str());
    }
    assert_eq!(sink.live_count(&stream()), 296);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_finds_hard_deletes_and_repairs_what_the_store_lost_behind_the_pipeline() {
    let fake = fake(FakeConfig {
        contacts: 1_000,
        custom_properties: 3,
        ..FakeConfig::default()
    })
    .await;
    let mut config = config(&fake);
    let sink = MemorySink::new();
    // A window ends before its `until`'s millisecond (the next window takes that one): a run
    // started within the archiving's millisecond leaves them to the next run.
    let climbed = Ladder::new(&fake, &config, &sink)
        .waiting(Duration::from_millis(50))
        .reconciling()
        .climb(Mutation {
            object: "contacts".into(),
            archive: 10,
            ..Mutation::default()
        })
        .await;
    let second = climbed.second;
    assert_equals_the_fake(&fake, &sink, None);

    // Deleted for good at the source: no listing shows them again, no window sees them.
    let deleted = fake.mutate(&Mutation {
        object: "contacts".into(),
        delete: 6,
        ..Mutation::default()
    });
    // Lost by the store behind the pipeline's back (what a disk that lied about its syncs
    // did): 25 live records and 2 archived ones.
    let stored = sink.records(&stream());
    let lost: Vec<String> = stored
        .iter()
        .filter(|r| !r.archived && !deleted.contains(&r.id.parse().unwrap()))
        .step_by(37)
        .take(25)
        .chain(stored.iter().filter(|r| r.archived).take(2))
        .map(|r| r.id.clone())
        .collect();
    assert_eq!(lost.len(), 27);
    for id in &lost {
        sink.forget(&stream(), id);
    }
    let quiet = run_reconciling(&config, &sink, second.checkpoint).await;
    assert_eq!(quiet.records, 0, "no window sees either");

    config.object.sweep_every = Duration::from_millis(100);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let before = fake.stats().requests;
    let sweep = run_reconciling(&config, &sink, quiet.checkpoint).await;
    let calls = fake.stats().requests - before;
    assert_eq!(sweep.outcome, RunOutcome::Succeeded, "{:?}", sweep.outcome);
    assert_eq!(sweep.records, 33, "27 read again, 6 archived as deleted");
    let gone = assert_gone_are_archived_and_the_rest_equals_the_fake(&fake, &sink);
    assert_eq!(gone.len(), 6);
    for id in &deleted {
        assert_eq!(gone[&id.to_string()]["deleted_permanently"], true);
    }
    // Cheap: the definitions, one archived page, five pages of ids and modification times
    // (200 a call), a batch read for each page that had something to read again (the lost
    // are spread over all five), the deleted asked for by id (archived, then live) and the
    // archived the store lacks.
    eprintln!(
        "a sweep of 1,000 contacts: {calls} calls, {} records repaired",
        sweep.records
    );
    assert!(calls <= 1 + 1 + 5 + 5 + 2 + 1, "{calls} calls");

    // Then incremental again, and the next sweep finds nothing to repair.
    config.object.sweep_every = hubspot::SWEEP_EVERY;
    let after = run_reconciling(&config, &sink, sweep.checkpoint.clone()).await;
    assert_eq!(after.records, 0);
    config.object.sweep_every = Duration::from_millis(1);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let again = run_reconciling(&config, &sink, after.checkpoint).await;
    assert_eq!(again.records, 0, "nothing left to repair");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_store_to_compare_with_the_sweep_is_skipped() {
    let fake = fake(FakeConfig {
        contacts: 50,
        custom_properties: 0,
        ..FakeConfig::default()
    })
    .await;
    let mut config = config(&fake);
    config.object.sweep_every = Duration::from_millis(1);
    let sink = MemorySink::new();
    let first = run(&config, &sink, Checkpoint::start()).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = run(&config, &sink, first.checkpoint).await;
    assert_eq!(second.outcome, RunOutcome::Succeeded);
    assert_eq!(second.records, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archived_records_of_a_portal_with_hundreds_of_properties_are_read_by_id_only_in_the_window(
) {
    // 300 custom properties: a list URL would be split four ways.
    let fake = fake(FakeConfig {
        contacts: 2_000,
        ..FakeConfig::default()
    })
    .await;
    let config = config(&fake);
    let sink = MemorySink::new();
    let first = run(&config, &sink, Checkpoint::start()).await;
    assert_eq!(first.outcome, RunOutcome::Succeeded);
    for archive in [500, 20] {
        tokio::time::sleep(Duration::from_millis(5)).await;
        fake.mutate(&Mutation {
            object: "contacts".into(),
            archive,
            ..Mutation::default()
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The window holds the 520 archived: every one read with every property.
    let before = fake.stats().requests;
    let second = run(&config, &sink, first.checkpoint).await;
    assert_eq!(second.outcome, RunOutcome::Succeeded);
    assert_equals_the_fake(&fake, &sink, None);
    let calls = fake.stats().requests - before;
    // The definitions, one search, the first page whole (four parts), then five pages of ids
    // and five batch reads of 100 at most.
    assert!(calls <= 1 + 1 + 4 + 5 + 5, "{calls} calls");

    // Twenty more archived: past the first page, the ids of the rest are listed, and only the
    // twenty read, by a batch read on each page of ids that holds some.
    tokio::time::sleep(Duration::from_millis(5)).await;
    fake.mutate(&Mutation {
        object: "contacts".into(),
        archive: 20,
        ..Mutation::default()
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
    let before = fake.stats().requests;
    let third = run(&config, &sink, second.checkpoint).await;
    assert_eq!(third.records, 20);
    assert_equals_the_fake(&fake, &sink, None);
    let calls = fake.stats().requests - before;
    assert!(
        calls <= 1 + 1 + 4 + 5 + 5,
        "{calls} calls, where a list split four ways takes 26"
    );
}

/// A sweep lists HubSpot's archived ids first, then its live ones: a record archived in between
/// shows in neither. Asked for by id, it is found archived, and sent as HubSpot has it; only
/// what HubSpot has nothing of is gone for good (here purged: a wrong guess would remove a
/// merely archived record from the warehouse).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_archived_between_a_sweeps_listings_is_archived_not_taken_for_deleted() {
    let fake = fake(FakeConfig {
        contacts: 500,
        custom_properties: 3,
        ..FakeConfig::default()
    })
    .await;
    let mut config = config(&fake);
    config.object.on_permanent_delete = OnPermanentDelete::Purge;
    let recording = Recording::default();
    let first = run_recording(&config, &recording, Checkpoint::start()).await;
    assert_eq!(first.outcome, RunOutcome::Succeeded);
    recording.take();

    // A sweep due: its first page lists the (no) archived ids, and the next compares live ones.
    config.object.sweep_every = Duration::from_millis(1);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let pages = HubSpotPages::new(config.account.clone(), config.object.clone()).unwrap();
    let inventory: Arc<dyn Inventory> = Arc::new(recording.store.clone());
    let page = |cursor: Checkpoint| {
        let request = PageRequest {
            stream: stream(),
            cursor,
            inventory: Some(inventory.clone()),
            catalog: None,
        };
        let pages = pages.clone();
        async move {
            tokio::time::timeout(DEADLINE, pages.oneshot(request))
                .await
                .expect("a page in time")
                .expect("a page")
        }
    };
    let listed = page(first.checkpoint).await;
    let at: Option<Position> = listed.cursor.position().unwrap();
    assert!(
        matches!(
            &at,
            Some(Position::Sweep {
                stage: SweepStage::Live { last_id: 0 },
                ..
            })
        ),
        "{at:?}"
    );
    let mut archived = fake.mutate(&contacts(Mutation {
        archive: 5,
        ..Mutation::default()
    }));
    let mut deleted = fake.mutate(&contacts(Mutation {
        delete: 3,
        ..Mutation::default()
    }));
    archived.sort_unstable();
    deleted.sort_unstable();

    let mut sent = Vec::new();
    let mut cursor = listed.cursor;
    loop {
        let page = page(cursor).await;
        sent.extend(page.records);
        if page.last {
            break;
        }
        cursor = page.cursor;
    }
    let ids = |keep: &dyn Fn(&weld_pipeline::Record) -> bool| -> Vec<u64> {
        let mut ids: Vec<u64> = sent
            .iter()
            .filter(|r| keep(r))
            .map(|r| r.id.parse().unwrap())
            .collect();
        ids.sort_unstable();
        ids
    };
    assert_eq!(
        ids(&|r| r.purge),
        deleted,
        "only what HubSpot has nothing of"
    );
    assert_eq!(
        ids(&|r| r.archived && !r.purge && !r.amend),
        archived,
        "the archived, as HubSpot has them"
    );
    let truth = fake.dump("contacts");
    for record in sent.iter().filter(|r| r.archived && !r.purge) {
        let source = truth.iter().find(|d| d.id == record.id).unwrap();
        assert_eq!(
            record.updated_at.to_string(),
            source.updated_at,
            "{}",
            record.id
        );
    }
}
