//! The HubSpot source's incremental windows against the fake over 127.0.0.1: after a full run,
//! only what changed travels, each changed record exactly once, however many share a timestamp
//! and however far past search's 10,000-result cap; and what changes without moving a
//! modification time (a calculated property) arrives with the refresh.

mod support;

use std::time::Duration;

use weld_pipeline::{Checkpoint, MemorySink, RunOutcome};
use weld_pipeline_hubspot::fake::{FakeConfig, Mutation};
use weld_pipeline_hubspot::Endpoint;

use support::{
    assert_equals_the_fake, assert_object_equals_the_fake, config, fake, run, stream, version,
    Ladder,
};

/// The fake's calculated custom property (`calculated: true` in its definitions).
const CALCULATED: &str = "custom_property_001";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calculated_property_changed_silently_arrives_within_one_refresh() {
    let fake = fake(FakeConfig {
        contacts: 300,
        custom_properties: 3,
        ..FakeConfig::default()
    })
    .await;
    let mut config = config(&fake);
    let sink = MemorySink::new();
    let first = run(&config, &sink, Checkpoint::start()).await;
    assert_eq!(first.outcome, RunOutcome::Succeeded);
    let recalculated = fake.mutate(&Mutation {
        object: "contacts".into(),
        recalculate: 9,
        ..Mutation::default()
    });
    assert_eq!(recalculated.len(), 9);

    // HubSpot recomputed them without moving their modification times: no window sees it.
    let quiet = run(&config, &sink, first.checkpoint).await;
    assert_eq!(quiet.records, 0);
    let value = |id: u64| {
        let stored = sink.records(&stream());
        let record = stored.iter().find(|r| r.id == id.to_string()).unwrap();
        let data: serde_json::Value = record.data.decode().unwrap();
        data["properties"][CALCULATED].as_str().map(str::to_string)
    };
    let truth = fake.dump("contacts");
    let truth_of = |id: u64| {
        let dumped = truth.iter().find(|d| d.id == id.to_string()).unwrap();
        dumped.properties[CALCULATED].clone()
    };
    assert_ne!(value(recalculated[0]), truth_of(recalculated[0]));

    // Once a refresh interval has passed since the last full read, every record is read again.
    config.object.refresh = Duration::from_millis(100);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let refreshed = run(&config, &sink, quiet.checkpoint).await;
    assert_eq!(refreshed.outcome, RunOutcome::Succeeded);
    assert_eq!(refreshed.records, 300, "every record read again");
    assert_equals_the_fake(&fake, &sink, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_stream_whose_read_set_has_a_calculated_property_refreshes() {
    // Each case: the fake's custom properties, the stream's list (none: every property), and
    // whether its set reads a calculated property.
    let cases: [(usize, Option<&[&str]>, bool); 4] = [
        (0, None, false),
        (3, None, true),
        (3, Some(&["email", "firstname"]), false),
        (3, Some(&["email", CALCULATED]), true),
    ];
    for (custom_properties, listed, refreshes) in cases {
        let fake = fake(FakeConfig {
            contacts: 120,
            custom_properties,
            ..FakeConfig::default()
        })
        .await;
        let mut config = config(&fake);
        config.object.properties = listed.map(|l| l.iter().map(|p| p.to_string()).collect());
        config.object.refresh = Duration::from_millis(100);
        let sink = MemorySink::new();
        let first = run(&config, &sink, Checkpoint::start()).await;
        assert_eq!(first.outcome, RunOutcome::Succeeded);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let second = run(&config, &sink, first.checkpoint).await;
        assert_eq!(second.outcome, RunOutcome::Succeeded);
        let expected = if refreshes { 120 } else { 0 };
        assert_eq!(
            second.records, expected,
            "{custom_properties} custom properties, listed {listed:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_sync_after_modifications_creations_and_archiving_equals_it() {
    let fake = fake(FakeConfig {
        contacts: 800,
        ..FakeConfig::default()
    })
    .await;
    let config = config(&fake);
    let sink = MemorySink::new();
    // The i-th change is stamped `now - i` ms: past 150 ms, all are after the first window.
    let climbed = Ladder::new(&fake, &config, &sink)
        .waiting(Duration::from_millis(150))
        .climb(Mutation {
            object: "contacts".into(),
            modify: 120,
            create: 30,
            archive: 25,
            tie: false,
            ..Mutation::default()
        })
        .await;
    // Only the changes travelled, not the whole set again.
    let second = climbed.second;
    assert!(
        second.records < 400,
        "{} records in the incremental run",
        second.records
    );
    assert_equals_the_fake(&fake, &sink, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_10000_changes_since_the_cursor_arrive_complete() {
    let fake = fake(FakeConfig {
        contacts: 11_000,
        search_per_second: None,
        ..FakeConfig::default()
    })
    .await;
    let mut config = config(&fake);
    config.account.searches_per_second = 1_000;
    let sink = MemorySink::new();
    let climbed = Ladder::new(&fake, &config, &sink)
        .climb(Mutation {
            object: "contacts".into(),
            modify: 10_600,
            tie: true,
            ..Mutation::default()
        })
        .await;
    let distinct = climbed.assert_each_changed_exactly_once("each changed record exactly once");
    assert!(distinct > 10_000 - 1, "{distinct} distinct records changed");
    assert_equals_the_fake(&fake, &sink, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_sharing_one_timestamp_across_page_boundaries_arrive_once_each() {
    let fake = fake(FakeConfig {
        contacts: 2_000,
        big_tie: 500,
        ..FakeConfig::default()
    })
    .await;
    let config = config(&fake);
    let sink = MemorySink::new();
    // 500 changes on one millisecond: 2.5 search pages of ties, in an order HubSpot does not fix.
    let climbed = Ladder::new(&fake, &config, &sink)
        .climb(Mutation {
            object: "contacts".into(),
            modify: 500,
            tie: true,
            ..Mutation::default()
        })
        .await;
    climbed.assert_each_changed_exactly_once("each tied record exactly once");
    assert_equals_the_fake(&fake, &sink, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_refuses_to_page_search_past_10000_results() {
    let fake = fake(FakeConfig {
        contacts: 10_500,
        search_per_second: None,
        ..FakeConfig::default()
    })
    .await;
    let http = reqwest::Client::new();
    let search = |after: u64| {
        http.post(format!(
            "{}{}",
            fake.base_url(),
            version().path(Endpoint::Search {
                object_type: "contacts"
            })
        ))
        .header("authorization", "Bearer fake-token")
        .header("content-type", "application/json")
        .body(format!(r#"{{"limit":200,"after":"{after}"}}"#))
        .send()
    };
    assert_eq!(search(9_800).await.unwrap().status(), 200);
    let refused = search(10_000).await.unwrap();
    assert_eq!(refused.status(), 400);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["category"], "VALIDATION_ERROR");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_object_type_and_a_custom_object_sync_exactly_full_then_incrementally() {
    let fake = fake(FakeConfig {
        contacts: 250,
        companies: 250,
        deals: 250,
        others: 250,
        custom_properties: 10,
        ..FakeConfig::default()
    })
    .await;
    let types = [
        "contacts",
        "companies",
        "deals",
        "tickets",
        "products",
        "line_items",
        "quotes",
        "calls",
        "emails",
        "meetings",
        "notes",
        "tasks",
    ];
    // The custom object by its objectTypeId, its name (looked up in /crm/v3/schemas) and its
    // fully qualified name.
    let custom = ["2-1234567", "cars", "p1234567_cars"];
    for object in types.iter().chain(&custom) {
        let mut config = config(&fake);
        config.object.object_type = object.to_string();
        let sink = MemorySink::new();
        // The fake stamps the i-th change `now - i` ms: past 20 ms, every stamp is after the
        // first run's window (a run of 250 records can take less than that).
        let climbed = Ladder::new(&fake, &config, &sink)
            .waiting(Duration::from_millis(50))
            .labelled(object)
            .climb(Mutation {
                object: object.to_string(),
                modify: 20,
                create: 5,
                archive: 5,
                ..Mutation::default()
            })
            .await;
        let second = climbed.second;
        assert!(second.records < 100, "{object}: {} records", second.records);
        let fakes_name = if custom.contains(object) {
            "2-1234567"
        } else {
            object
        };
        assert_object_equals_the_fake(&fake, &sink, fakes_name, None);
    }
}
