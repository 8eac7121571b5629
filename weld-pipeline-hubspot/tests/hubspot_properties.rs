//! The HubSpot source's properties against the fake over 127.0.0.1: discovery, backfills when
//! the set changes, the types told to the store, long property lists split across URLs, and the
//! bound on how many an object may define.

mod support;

use weld_pipeline::source::FieldKind;
use weld_pipeline::{Checkpoint, MemorySink, RunContext, RunOutcome};
use weld_pipeline_hubspot::fake::{FakeConfig, Mutation};

use support::{assert_equals_the_fake, config, fake, kind_of, run, run_in, stream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_custom_property_is_backfilled_into_every_record() {
    let fake = fake(FakeConfig {
        contacts: 600,
        custom_properties: 40,
        ..FakeConfig::default()
    })
    .await;
    let config = config(&fake);
    let sink = MemorySink::new();
    let first = run(&config, &sink, Checkpoint::start()).await;
    assert_eq!(first.outcome, RunOutcome::Succeeded);
    let quiet = run(&config, &sink, first.checkpoint).await;
    assert_eq!(quiet.records, 0, "nothing changed, nothing read");

    // A property filled in without touching a single modification time: no window sees it.
    fake.mutate(&Mutation {
        object: "contacts".into(),
        add_property: Some("favorite_color".into()),
        ..Mutation::default()
    });
    let backfill = run(&config, &sink, quiet.checkpoint).await;
    assert_eq!(backfill.outcome, RunOutcome::Succeeded);
    assert_eq!(backfill.records, 600, "every record read again");
    assert_equals_the_fake(&fake, &sink, None);
    for record in sink.records(&stream()) {
        let data: serde_json::Value = record.data.decode().unwrap();
        assert_eq!(
            data["properties"]["favorite_color"],
            format!("favorite_color of {}", record.id)
        );
    }
    let after = run(&config, &sink, backfill.checkpoint).await;
    assert_eq!(after.records, 0, "then incremental again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_property_list_backfills_on_the_next_run() {
    let fake = fake(FakeConfig {
        contacts: 300,
        custom_properties: 20,
        ..FakeConfig::default()
    })
    .await;
    let mut config = config(&fake);
    let listed: Vec<String> = ["email", "hs_object_id", "lastmodifieddate"]
        .map(String::from)
        .to_vec();
    config.object.properties = Some(listed.clone());
    let sink = MemorySink::new();
    let first = run(&config, &sink, Checkpoint::start()).await;
    assert_equals_the_fake(&fake, &sink, Some(&listed));
    // The list dropped: every property from now on, every record read again with them.
    config.object.properties = None;
    let second = run(&config, &sink, first.checkpoint).await;
    assert_eq!(second.records, 300);
    assert_equals_the_fake(&fake, &sink, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_describes_every_property_with_its_type_and_a_listed_set_its_own() {
    let fake = fake(FakeConfig {
        contacts: 50,
        custom_properties: 16,
        ..FakeConfig::default()
    })
    .await;
    let mut config = config(&fake);
    let sink = MemorySink::new();
    let context = RunContext::new(stream()).with_catalog(std::sync::Arc::new(sink.clone()));
    let report = run_in(&config, &sink, Checkpoint::start(), context).await;
    assert_eq!(report.outcome, RunOutcome::Succeeded);
    let schema = sink
        .schema(&stream())
        .expect("the run described its fields");
    let mut names = fake.property_names("contacts");
    names.sort();
    let described: Vec<&str> = schema.fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        described, names,
        "every property the portal defines, by name"
    );
    // Custom properties cycle through HubSpot's types: string, number, date, datetime,
    // enumeration (select), bool, phone_number, enumeration (checkbox).
    let expected = [
        ("email", FieldKind::Text),
        ("hs_object_id", FieldKind::Number),
        ("lastmodifieddate", FieldKind::DateTime),
        ("custom_property_000", FieldKind::Text),
        ("custom_property_001", FieldKind::Number),
        ("custom_property_002", FieldKind::Date),
        ("custom_property_003", FieldKind::DateTime),
        ("custom_property_004", FieldKind::Text),
        ("custom_property_005", FieldKind::Boolean),
        ("custom_property_006", FieldKind::Text),
        ("custom_property_007", FieldKind::List),
    ];
    for (name, kind) in expected {
        assert_eq!(kind_of(&schema, name), Some(kind), "{name}");
    }

    // A listed set is described with the types of its own properties, and only those.
    let listed: Vec<String> = ["email", "custom_property_001", "not_in_the_portal"]
        .map(String::from)
        .to_vec();
    config.object.properties = Some(listed);
    let sink = MemorySink::new();
    let context = RunContext::new(stream()).with_catalog(std::sync::Arc::new(sink.clone()));
    run_in(&config, &sink, Checkpoint::start(), context).await;
    let schema = sink.schema(&stream()).expect("described");
    assert_eq!(schema.fields.len(), 3);
    assert_eq!(
        kind_of(&schema, "custom_property_001"),
        Some(FieldKind::Number)
    );
    assert_eq!(kind_of(&schema, "not_in_the_portal"), Some(FieldKind::Text));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_property_lists_are_split_instead_of_drawing_a_414() {
    let fake = fake(FakeConfig {
        contacts: 250,
        max_url_bytes: 2_000,
        ..FakeConfig::default()
    })
    .await;
    // Archived records come through the list endpoint, whose URL names the properties.
    fake.mutate(&Mutation {
        object: "contacts".into(),
        archive: 250,
        ..Mutation::default()
    });
    let mut config = config(&fake);
    let mut properties: Vec<String> = (0..300)
        .map(|i| format!("custom_property_{i:03}"))
        .collect();
    properties.extend(["email", "firstname", "lastmodifieddate", "hs_object_id"].map(String::from));
    config.object.properties = Some(properties.clone());
    config.account.max_url_bytes = 1_500;
    let sink = MemorySink::new();
    let report = run(&config, &sink, Checkpoint::start()).await;
    assert_eq!(report.outcome, RunOutcome::Succeeded);
    let stats = fake.stats();
    assert_eq!(stats.by_status.get(&414), None, "no URL was too long");
    assert!(
        stats.requests > 3 * 2,
        "the pages were fetched in parts: {} requests",
        stats.requests
    );
    assert_equals_the_fake(&fake, &sink, Some(&properties));
    // Known but empty properties came back as null, and were kept.
    let data: serde_json::Value = sink.records(&stream())[0].data.decode().unwrap();
    assert!(data["properties"]
        .as_object()
        .unwrap()
        .contains_key("custom_property_299"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_defining_more_properties_than_the_bound_fails_before_any_page_clearly() {
    let fake = fake(FakeConfig {
        contacts: 20,
        custom_properties: 300,
        ..FakeConfig::default()
    })
    .await;
    let mut config = config(&fake);
    config.account.max_properties = 100;
    let sink = MemorySink::new();
    let report = run(&config, &sink, Checkpoint::start()).await;
    let RunOutcome::Failed { kind, error } = &report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert_eq!(*kind, weld_pipeline::ErrorKind::Permanent);
    assert!(
        error.contains("contacts defines") && error.contains("more than the 100 a stream reads"),
        "{error}"
    );
    assert_eq!(
        fake.stats().requests,
        1,
        "no page is read, none of the account's budget spent on one"
    );
    // A stream that lists its properties reads them whatever the portal defines.
    config.object.properties = Some(vec!["email".into(), "firstname".into()]);
    let listed = run(&config, &sink, Checkpoint::start()).await;
    assert_eq!(listed.outcome, RunOutcome::Succeeded);
    assert_eq!(sink.live_count(&stream()), 20);
}
