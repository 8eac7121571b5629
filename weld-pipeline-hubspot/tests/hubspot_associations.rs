//! The HubSpot source's associations against the fake over 127.0.0.1: every record carries its
//! links as they are, links changed alone arrive with the refresh, and a new association type
//! backfills.

mod support;

use std::time::Duration;

use weld_pipeline::{Checkpoint, MemorySink, RunOutcome};
use weld_pipeline_hubspot::fake::{FakeConfig, Mutation};
use weld_pipeline_hubspot::{self as hubspot, HubSpotObject};

use support::{assert_equals_the_fake, assert_links_equal_the_fake, config, fake, run, stream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn associations_equal_the_fakes_after_a_sync_and_after_links_change_alone() {
    let fake = fake(FakeConfig {
        contacts: 450,
        companies: 40,
        deals: 30,
        custom_properties: 5,
        ..FakeConfig::default()
    })
    .await;
    let mut config = config(&fake);
    config.object = HubSpotObject::new("contacts").with_associations(["companies", "deals"]);
    let sink = MemorySink::new();
    let first = run(&config, &sink, Checkpoint::start()).await;
    assert_eq!(first.outcome, RunOutcome::Succeeded);
    assert_equals_the_fake(&fake, &sink, None);
    assert_links_equal_the_fake(&fake, &sink, "contacts", &["companies", "deals"]);
    // What links cost: one batch read per type and search page of 200 (three pages here),
    // beside the definitions, the pages and the archived list.
    assert_eq!(fake.stats().requests, 1 + 3 + 3 * 2 + 1);
    let primary = sink.records(&stream())[0]
        .data
        .decode::<serde_json::Value>()
        .unwrap();
    assert_eq!(
        primary["associations"]["companies"][0]["types"][0]["label"], "Primary",
        "{primary}"
    );

    // Links change without moving a modification time; a few records are edited too.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let relinked = fake.mutate(&Mutation {
        object: "contacts".into(),
        relink: 25,
        ..Mutation::default()
    });
    assert_eq!(relinked.len(), 25);
    let edited = fake.mutate(&Mutation {
        object: "contacts".into(),
        modify: 10,
        ..Mutation::default()
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = run(&config, &sink, first.checkpoint).await;
    assert_eq!(
        second.records, 10,
        "the incremental run reads the edited records only"
    );
    // Those carry their links as they are now.
    let now = fake.associations("contacts", "companies");
    for record in sink.records(&stream()) {
        if edited.contains(&record.id.parse().unwrap()) {
            let data: serde_json::Value = record.data.decode().unwrap();
            let company = data["associations"]["companies"][0]["id"].as_str().unwrap();
            assert_eq!(Some(company), now[&record.id].first().map(String::as_str));
        }
    }

    // Once the refresh interval has passed, a run reads every record again with its links.
    config.object.refresh = Duration::from_millis(200);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let refresh = run(&config, &sink, second.checkpoint).await;
    assert_eq!(refresh.outcome, RunOutcome::Succeeded);
    assert_eq!(refresh.records, 450, "every record read again");
    assert_equals_the_fake(&fake, &sink, None);
    assert_links_equal_the_fake(&fake, &sink, "contacts", &["companies", "deals"]);
    config.object.refresh = hubspot::REFRESH;
    let quiet = run(&config, &sink, refresh.checkpoint).await;
    assert_eq!(quiet.records, 0, "then incremental until the next refresh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_with_more_links_than_an_answer_holds_gets_them_all() {
    // Each company has about eleven contacts; the fake answers four links per record at a time.
    let fake = fake(FakeConfig {
        contacts: 450,
        companies: 40,
        custom_properties: 0,
        association_page: 4,
        ..FakeConfig::default()
    })
    .await;
    let mut config = config(&fake);
    config.object = HubSpotObject::new("companies").with_associations(["contacts"]);
    let sink = MemorySink::new();
    let report = run(&config, &sink, Checkpoint::start()).await;
    assert_eq!(report.outcome, RunOutcome::Succeeded);
    assert_links_equal_the_fake(&fake, &sink, "companies", &["contacts"]);
    let most = fake
        .associations("companies", "contacts")
        .values()
        .map(Vec::len)
        .max()
        .unwrap();
    assert!(
        most > 8,
        "a company links to {most} contacts, several answers' worth"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_an_association_type_backfills_every_record() {
    let fake = fake(FakeConfig {
        contacts: 200,
        custom_properties: 0,
        ..FakeConfig::default()
    })
    .await;
    let mut config = config(&fake);
    let sink = MemorySink::new();
    let first = run(&config, &sink, Checkpoint::start()).await;
    config.object.associations = vec!["companies".into()];
    let second = run(&config, &sink, first.checkpoint).await;
    assert_eq!(
        second.records, 200,
        "every record read again, with its links"
    );
    assert_links_equal_the_fake(&fake, &sink, "contacts", &["companies"]);
}
