//! The HubSpot source against the fake over 127.0.0.1: every fact of HubSpot's API the source
//! relies on (paging, search windows, rate limits, archived records), and every fault it must
//! survive.

use std::time::{Duration, Instant};

use weld_pipeline::source::{FieldKind, Schema};
use weld_pipeline::{
    Checkpoint, MemorySink, Pipeline, Record, RunContext, RunOutcome, RunReport, StreamName,
    Timestamp,
};
use weld_pipeline_hubspot::fake::{FakeConfig, FakeHubSpot, Fault, FaultPlan, Mutation};
use weld_pipeline_hubspot::{self as hubspot, HubSpotAccount, HubSpotObject, Token};

fn stream() -> StreamName {
    StreamName::new("contacts").unwrap()
}

/// A fake on a free port of 127.0.0.1.
async fn fake(config: FakeConfig) -> FakeHubSpot {
    FakeHubSpot::start("127.0.0.1:0", config)
        .await
        .expect("the fake starts")
}

/// A source as these tests vary it: its account and its object.
#[derive(Clone, Debug)]
struct Config {
    account: HubSpotAccount,
    object: HubSpotObject,
}

fn config(fake: &FakeHubSpot) -> Config {
    let mut account = HubSpotAccount::new(fake.base_url(), Token::new("fake-token"));
    account.settle_delay = Duration::ZERO;
    Config {
        account,
        object: HubSpotObject::new("contacts"),
    }
}

async fn run(config: &Config, sink: &MemorySink, from: Checkpoint) -> RunReport {
    run_in(config, sink, from, RunContext::new(stream())).await
}

/// A run that may reconcile with what `sink` holds (its inventory), as a worker's runs do with
/// the controller's store.
async fn run_reconciling(config: &Config, sink: &MemorySink, from: Checkpoint) -> RunReport {
    let context = RunContext::new(stream()).with_inventory(std::sync::Arc::new(sink.clone()));
    run_in(config, sink, from, context).await
}

async fn run_in(
    config: &Config,
    sink: &MemorySink,
    from: Checkpoint,
    context: RunContext,
) -> RunReport {
    let source = hubspot::source(config.account.clone(), config.object.clone()).unwrap();
    let pipeline = Pipeline::new(source, sink.clone());
    tokio::time::timeout(Duration::from_secs(120), pipeline.run(&context, from))
        .await
        .expect("the run ends")
}

/// The stored set equals the fake's: every id, its modification time, its archived flag, and
/// the value of every property the source asked for: `listed`, or (`None`) every property the
/// fake's portal defines, each present in every record, `null` where the record has no value.
fn assert_equals_the_fake(fake: &FakeHubSpot, sink: &MemorySink, listed: Option<&[String]>) {
    assert_object_equals_the_fake(fake, sink, "contacts", listed);
}

/// [`assert_equals_the_fake`] for the records of `object` (the fake's name or id for it).
fn assert_object_equals_the_fake(
    fake: &FakeHubSpot,
    sink: &MemorySink,
    object: &str,
    listed: Option<&[String]>,
) {
    assert_records_equal_the_fake(fake, sink.records(&stream()), object, listed);
}

/// [`assert_object_equals_the_fake`] for the records `stored`.
fn assert_records_equal_the_fake(
    fake: &FakeHubSpot,
    stored: Vec<Record>,
    object: &str,
    listed: Option<&[String]>,
) {
    let every = fake.property_names(object);
    assert!(!every.is_empty(), "the fake has no {object}");
    let properties = listed.unwrap_or(&every);
    let mut stored: Vec<&Record> = stored.iter().collect();
    stored.sort_by_key(|r| r.id.parse::<u64>().unwrap());
    let dumped = fake.dump(object);
    assert_eq!(stored.len(), dumped.len(), "{object}: record counts differ");
    for (record, truth) in stored.iter().zip(&dumped) {
        assert_eq!(record.id, truth.id);
        assert_eq!(
            record.updated_at,
            Timestamp::parse_rfc3339(&truth.updated_at).unwrap(),
            "{object}: record {}",
            truth.id
        );
        assert_eq!(
            record.archived, truth.archived,
            "{object}: record {} archived",
            truth.id
        );
        let data: serde_json::Value = record.data.decode().unwrap();
        let got = data["properties"].as_object().expect("properties");
        for property in properties {
            let expected = truth.properties.get(property).cloned().flatten();
            let value = got
                .get(property)
                .unwrap_or_else(|| panic!("record {} has no {property}", truth.id));
            assert_eq!(
                value.as_str().map(str::to_string),
                expected,
                "record {} property {property}",
                truth.id
            );
        }
        assert_eq!(
            got.len(),
            properties.len(),
            "record {}: only what was asked",
            truth.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_sync_equals_the_fakes_set_exactly() {
    let fake = fake(FakeConfig {
        contacts: 1_234,
        ..FakeConfig::default()
    })
    .await;
    fake.mutate(&Mutation {
        object: "contacts".into(),
        archive: 40,
        ..Mutation::default()
    });
    let config = config(&fake);
    let sink = MemorySink::new();
    let report = run(&config, &sink, Checkpoint::start()).await;
    assert_eq!(report.outcome, RunOutcome::Succeeded);
    assert_equals_the_fake(&fake, &sink, None);
    assert_eq!(sink.live_count(&stream()), 1_234 - 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_counted_under_its_service() {
    use weld_pipeline::testing::{counter_value, global_counters};
    let calls = |service| {
        counter_value(
            &global_counters(),
            "weld_calls_total",
            &[("service", service)],
        )
    };
    let before = ["hubspot_properties", "hubspot_search", "hubspot_list"].map(calls);
    let fake = fake(FakeConfig {
        contacts: 1_000,
        ..FakeConfig::default()
    })
    .await;
    let sink = MemorySink::new();
    let report = run(&config(&fake), &sink, Checkpoint::start()).await;
    assert_eq!(report.outcome, RunOutcome::Succeeded);
    let after = ["hubspot_properties", "hubspot_search", "hubspot_list"].map(calls);
    // Other tests of this binary count too: at least this run's calls. One discovery, five
    // search pages of 200, one (empty) archived list page.
    assert!(after[0] - before[0] >= 1);
    assert!(
        after[1] - before[1] >= 5,
        "{} searches",
        after[1] - before[1]
    );
    assert!(after[2] - before[2] >= 1);
    assert_eq!(report.batches, 6);
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
    let first = run(&config, &sink, Checkpoint::start()).await;
    assert_eq!(first.outcome, RunOutcome::Succeeded);
    // The i-th change is stamped `now - i` ms: past 150 ms, all are after the first window.
    tokio::time::sleep(Duration::from_millis(150)).await;
    fake.mutate(&Mutation {
        object: "contacts".into(),
        modify: 120,
        create: 30,
        archive: 25,
        tie: false,
        ..Mutation::default()
    });
    // Changes older than the second run's start (its window ends before that millisecond).
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = run(&config, &sink, first.checkpoint).await;
    assert_eq!(second.outcome, RunOutcome::Succeeded);
    // Only the changes travelled, not the whole set again.
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
    let first = run(&config, &sink, Checkpoint::start()).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let changed = fake.mutate(&Mutation {
        object: "contacts".into(),
        modify: 10_600,
        tie: true,
        ..Mutation::default()
    });
    let distinct: std::collections::BTreeSet<_> = changed.iter().collect();
    let second = run(&config, &sink, first.checkpoint).await;
    assert_eq!(second.outcome, RunOutcome::Succeeded);
    assert!(
        distinct.len() > 10_000 - 1,
        "{} distinct records changed",
        distinct.len()
    );
    assert_eq!(
        second.records as usize,
        distinct.len(),
        "each changed record exactly once"
    );
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
    let first = run(&config, &sink, Checkpoint::start()).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    // 500 changes on one millisecond: 2.5 search pages of ties, in an order HubSpot does not fix.
    let changed = fake.mutate(&Mutation {
        object: "contacts".into(),
        modify: 500,
        tie: true,
        ..Mutation::default()
    });
    let distinct: std::collections::BTreeSet<_> = changed.iter().collect();
    let second = run(&config, &sink, first.checkpoint).await;
    assert_eq!(second.outcome, RunOutcome::Succeeded);
    assert_eq!(
        second.records as usize,
        distinct.len(),
        "each tied record exactly once"
    );
    assert_equals_the_fake(&fake, &sink, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_and_without_retry_after_is_survived() {
    let fake = fake(FakeConfig {
        contacts: 500,
        ..FakeConfig::default()
    })
    .await;
    fake.inject(FaultPlan {
        fault: Fault::RateLimited {
            retry_after: Some(1),
        },
        count: 1,
        only: None,
    });
    fake.inject(FaultPlan {
        fault: Fault::RateLimited { retry_after: None },
        count: 2,
        only: None,
    });
    let config = config(&fake);
    let sink = MemorySink::new();
    let started = Instant::now();
    let report = run(&config, &sink, Checkpoint::start()).await;
    assert_eq!(report.outcome, RunOutcome::Succeeded);
    assert_eq!(fake.stats().rate_limited, 3);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was honoured"
    );
    assert_equals_the_fake(&fake, &sink, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_and_lose_nothing() {
    let fake = fake(FakeConfig {
        contacts: 500,
        ..FakeConfig::default()
    })
    .await;
    for status in [502, 503, 504, 521, 523, 524] {
        fake.inject(FaultPlan {
            fault: Fault::Status { status },
            count: 1,
            only: None,
        });
    }
    let config = config(&fake);
    let sink = MemorySink::new();
    let report = run(&config, &sink, Checkpoint::start()).await;
    assert_eq!(report.outcome, RunOutcome::Succeeded);
    assert_equals_the_fake(&fake, &sink, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pacing_draws_zero_429s_at_a_100_per_10s_limit() {
    let fake = fake(FakeConfig {
        contacts: 14_000,
        per_ten_seconds: Some(100),
        custom_properties: 0,
        ..FakeConfig::default()
    })
    .await;
    // Archived records are read through the list endpoint, paced by the 10-second budget.
    fake.mutate(&Mutation {
        object: "contacts".into(),
        archive: 13_000,
        ..Mutation::default()
    });
    let config = config(&fake);
    let sink = MemorySink::new();
    let started = Instant::now();
    let report = run(&config, &sink, Checkpoint::start()).await;
    let elapsed = started.elapsed();
    assert_eq!(report.outcome, RunOutcome::Succeeded);
    let stats = fake.stats();
    assert_eq!(stats.rate_limited, 0, "the pacer drew a 429");
    // 131 list calls: past the first window, so the pacing, not a burst, did the work.
    assert!(stats.requests > 100, "{} requests", stats.requests);
    let rate = stats.requests as f64 / elapsed.as_secs_f64();
    eprintln!(
        "paced at {rate:.2} requests/s of the 10/s allowed ({} requests in {elapsed:?})",
        stats.requests
    );
    assert_equals_the_fake(&fake, &sink, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_and_forbidden_fail_the_run_without_retries() {
    let fake = fake(FakeConfig {
        contacts: 50,
        forbidden: vec!["deals".into()],
        ..FakeConfig::default()
    })
    .await;
    let mut wrong = config(&fake);
    wrong.account.token = Token::new("not-the-token");
    let sink = MemorySink::new();
    let report = run(&wrong, &sink, Checkpoint::start()).await;
    let RunOutcome::Failed { kind, error } = report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert_eq!(kind, weld_pipeline::ErrorKind::Permanent);
    assert!(
        error.contains("401") && error.contains("INVALID_AUTHENTICATION"),
        "{error}"
    );
    assert!(
        !error.contains("not-the-token"),
        "the token leaked into an error"
    );
    assert!(
        !format!("{wrong:?}").contains("not-the-token"),
        "the token leaked into Debug"
    );
    assert_eq!(fake.stats().requests, 1, "no retry");

    let mut deals = config(&fake);
    deals.object.object_type = "deals".into();
    let report = run(&deals, &sink, Checkpoint::start()).await;
    let RunOutcome::Failed { error, .. } = report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert!(
        error.contains("403") && error.contains("MISSING_SCOPES"),
        "{error}"
    );
    assert_eq!(fake.stats().requests, 2, "no retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_page_fails_the_run_clearly_and_loses_nothing() {
    let fake = fake(FakeConfig {
        contacts: 700,
        ..FakeConfig::default()
    })
    .await;
    let config = config(&fake);
    let sink = MemorySink::new();
    // Let three calls through (the property definitions and two pages of 200), then a garbage
    // one and a truncated one.
    let first = {
        fake.inject(FaultPlan {
            fault: Fault::Slow { ms: 0 },
            count: 3,
            only: None,
        });
        fake.inject(FaultPlan {
            fault: Fault::Garbage,
            count: 1,
            only: None,
        });
        run(&config, &sink, Checkpoint::start()).await
    };
    let RunOutcome::Failed { kind, error } = &first.outcome else {
        panic!("{:?}", first.outcome)
    };
    assert_eq!(*kind, weld_pipeline::ErrorKind::Permanent);
    assert!(error.contains("does not parse"), "{error}");
    assert_eq!(
        sink.live_count(&stream()),
        400,
        "the pages before it stayed committed"
    );
    fake.inject(FaultPlan {
        fault: Fault::Truncated,
        count: 1,
        only: None,
    });
    let second = run(&config, &sink, first.checkpoint.clone()).await;
    assert!(matches!(second.outcome, RunOutcome::Failed { .. }));
    assert_eq!(
        second.checkpoint, first.checkpoint,
        "a failed page does not move the checkpoint"
    );
    let third = run(&config, &sink, second.checkpoint).await;
    assert_eq!(third.outcome, RunOutcome::Succeeded);
    assert_equals_the_fake(&fake, &sink, None);
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
async fn an_unfiltered_url_past_the_limit_is_a_permanent_414() {
    let fake = fake(FakeConfig {
        contacts: 10,
        max_url_bytes: 500,
        ..FakeConfig::default()
    })
    .await;
    let mut config = config(&fake);
    config.object.properties = Some(
        (0..300)
            .map(|i| format!("custom_property_{i:03}"))
            .collect(),
    );
    config.account.max_url_bytes = 100_000; // the source does not split: HubSpot's 414 is permanent
    fake.mutate(&Mutation {
        object: "contacts".into(),
        archive: 5,
        ..Mutation::default()
    });
    let sink = MemorySink::new();
    let report = run(&config, &sink, Checkpoint::start()).await;
    let RunOutcome::Failed { kind, error } = report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert_eq!(kind, weld_pipeline::ErrorKind::Permanent);
    assert!(error.contains("414"), "{error}");
    // The live records' search (properties in its body), then the archived list: no retry.
    assert_eq!(fake.stats().requests, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_limit_stops_the_run_until_the_window_resets() {
    let fake = fake(FakeConfig {
        contacts: 300,
        ..FakeConfig::default()
    })
    .await;
    fake.inject(FaultPlan {
        fault: Fault::Daily,
        count: 1,
        only: None,
    });
    let config = config(&fake);
    let sink = MemorySink::new();
    let started = Instant::now();
    let report = run(&config, &sink, Checkpoint::start()).await;
    let RunOutcome::Failed { kind, error } = report.outcome else {
        panic!("{:?}", report.outcome)
    };
    // Not waited out inside the run (that is hours), not hammered: the run ends, recorded.
    assert_eq!(kind, weld_pipeline::ErrorKind::Transient);
    assert!(error.contains("DAILY"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(fake.stats().requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_slower_than_the_timeout_is_retried() {
    let fake = fake(FakeConfig {
        contacts: 300,
        ..FakeConfig::default()
    })
    .await;
    fake.inject(FaultPlan {
        fault: Fault::Slow { ms: 3_000 },
        count: 1,
        only: None,
    });
    let mut config = config(&fake);
    config.account.timeout = Duration::from_millis(500);
    let sink = MemorySink::new();
    let report = run(&config, &sink, Checkpoint::start()).await;
    assert_eq!(report.outcome, RunOutcome::Succeeded);
    assert!(
        fake.stats().requests >= 5,
        "the timed-out page was asked again"
    );
    assert_equals_the_fake(&fake, &sink, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_object_type_fails_the_run_without_retries() {
    let fake = fake(FakeConfig {
        contacts: 10,
        ..FakeConfig::default()
    })
    .await;
    let mut config = config(&fake);
    config.object.object_type = "unicorns".into();
    let report = run(&config, &MemorySink::new(), Checkpoint::start()).await;
    let RunOutcome::Failed { kind, error } = report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert_eq!(kind, weld_pipeline::ErrorKind::Permanent);
    assert!(
        error.contains("no object type named \"unicorns\""),
        "{error}"
    );
    assert_eq!(
        fake.stats().requests,
        1,
        "one look at the schemas, no retry"
    );
    // An id no schema has: HubSpot's 404, not retried.
    config.object.object_type = "2-999".into();
    let report = run(&config, &MemorySink::new(), Checkpoint::start()).await;
    let RunOutcome::Failed { kind, error } = report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert_eq!(kind, weld_pipeline::ErrorKind::Permanent);
    assert!(error.contains("404"), "{error}");
    assert_eq!(fake.stats().requests, 2);
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
            "{}/crm/v3/objects/contacts/search",
            fake.base_url()
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

fn kind_of(schema: &Schema, name: &str) -> Option<FieldKind> {
    schema
        .fields
        .iter()
        .find(|f| f.name == name)
        .map(|f| f.kind)
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

/// Calls a full sync of `contacts` contacts with `properties` properties makes: through search
/// (the source's live pass) and through the list endpoint (its archived pass, every record
/// archived), each counted at the fake.
async fn full_sync_calls(contacts: usize, properties: usize, archived: bool) -> (u64, u64) {
    let fake = fake(FakeConfig {
        contacts,
        // The standard properties the fake defines beside its custom ones.
        custom_properties: properties.saturating_sub(12),
        search_per_second: None,
        ..FakeConfig::default()
    })
    .await;
    if archived {
        fake.mutate(&Mutation {
            object: "contacts".into(),
            archive: contacts,
            ..Mutation::default()
        });
    }
    let mut config = config(&fake);
    config.account.searches_per_second = 1_000;
    if properties < 11 {
        let some = [
            "createdate",
            "email",
            "firstname",
            "hs_object_id",
            "lastmodifieddate",
            "lastname",
        ];
        config.object.properties = Some(some[..properties].iter().map(|p| p.to_string()).collect());
    }
    let report = run(&config, &MemorySink::new(), Checkpoint::start()).await;
    assert_eq!(report.outcome, RunOutcome::Succeeded);
    assert_eq!(report.records as usize, contacts);
    let stats = fake.stats();
    (stats.requests, stats.searches)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sync_through_search_costs_fewer_calls_per_record_than_the_list() {
    const CONTACTS: usize = 2_000;
    for properties in [6, 100, 300] {
        let (searched, _) = full_sync_calls(CONTACTS, properties, false).await;
        let (listed, _) = full_sync_calls(CONTACTS, properties, true).await;
        let per_100 = |calls: u64| calls as f64 * 100.0 / CONTACTS as f64;
        eprintln!(
            "{properties} properties, {CONTACTS} contacts: search {searched} calls ({:.2} per 100 \
             records), list {listed} calls ({:.2} per 100 records)",
            per_100(searched),
            per_100(listed)
        );
        assert!(searched < listed, "{properties}: {searched} vs {listed}");
        // The floor of search is one call per 200 records; discovery and the archived pass add
        // one call each.
        assert!(searched <= (CONTACTS / 200) as u64 + 3, "{searched}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_contacts_with_300_properties_sync_under_a_100_per_10_s_limit_without_a_429() {
    let fake = fake(FakeConfig {
        contacts: 10_000,
        custom_properties: 289,
        per_ten_seconds: Some(100),
        ..FakeConfig::default()
    })
    .await;
    let config = config(&fake);
    let sink = MemorySink::new();
    let started = Instant::now();
    let report = run(&config, &sink, Checkpoint::start()).await;
    let elapsed = started.elapsed();
    assert_eq!(report.outcome, RunOutcome::Succeeded);
    let stats = fake.stats();
    eprintln!(
        "10,000 contacts with {} properties: {elapsed:?}, {} requests ({} searches), {} 429s",
        fake.property_names("contacts").len(),
        stats.requests,
        stats.searches,
        stats.rate_limited
    );
    assert_eq!(stats.rate_limited, 0);
    assert_equals_the_fake(&fake, &sink, None);
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
        let first = run(&config, &sink, Checkpoint::start()).await;
        assert_eq!(first.outcome, RunOutcome::Succeeded, "{object}");
        // The fake stamps the i-th change `now - i` ms: past 20 ms, every stamp is after the
        // first run's window (a run of 250 records can take less than that).
        tokio::time::sleep(Duration::from_millis(50)).await;
        fake.mutate(&Mutation {
            object: object.to_string(),
            modify: 20,
            create: 5,
            archive: 5,
            ..Mutation::default()
        });
        // A window ends before its start's millisecond (the next window takes that one): the
        // changes must be older than the second run.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let second = run(&config, &sink, first.checkpoint).await;
        assert_eq!(second.outcome, RunOutcome::Succeeded, "{object}");
        assert!(second.records < 100, "{object}: {} records", second.records);
        let fakes_name = if custom.contains(object) {
            "2-1234567"
        } else {
            object
        };
        assert_object_equals_the_fake(&fake, &sink, fakes_name, None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_and_pipelines_are_read_whole_on_every_run_and_equal_the_fakes() {
    let fake = fake(FakeConfig {
        contacts: 10,
        owners: 230,
        ..FakeConfig::default()
    })
    .await;
    let by_id = |records: Vec<Record>| -> std::collections::BTreeMap<String, serde_json::Value> {
        records
            .into_iter()
            .map(|r| (r.id.clone(), r.data.decode().unwrap()))
            .collect()
    };
    let truth =
        |values: Vec<serde_json::Value>| -> std::collections::BTreeMap<String, serde_json::Value> {
            values
                .into_iter()
                .map(|v| (v["id"].as_str().unwrap().to_string(), v))
                .collect()
        };
    for (object, expected) in [
        ("owners", truth(fake.owners())),
        ("pipelines:deals", truth(fake.pipelines("deals"))),
        ("pipelines:tickets", truth(fake.pipelines("tickets"))),
    ] {
        let mut config = config(&fake);
        config.object.object_type = object.into();
        let sink = MemorySink::new();
        let mut checkpoint = Checkpoint::start();
        for run_number in 0..2 {
            let report = run(&config, &sink, checkpoint).await;
            assert_eq!(report.outcome, RunOutcome::Succeeded, "{object}");
            assert_eq!(
                report.records as usize,
                expected.len(),
                "{object}: run {run_number} reads the whole set"
            );
            checkpoint = report.checkpoint;
        }
        assert_eq!(by_id(sink.records(&stream())), expected, "{object}");
    }
    // 230 active owners and 3 archived, 100 a page: 3 pages, then 1 of the archived.
    let owners = fake.owners();
    assert_eq!(owners.iter().filter(|o| o["archived"] == true).count(), 3);
}

/// Every live stored record of `object` carries in `data.associations` exactly the links the
/// fake has to each type of `to` (an empty list where it has none); archived ones carry none.
fn assert_links_equal_the_fake(fake: &FakeHubSpot, sink: &MemorySink, object: &str, to: &[&str]) {
    let mut checked = 0;
    for record in sink.records(&stream()) {
        let data: serde_json::Value = record.data.decode().unwrap();
        if record.archived {
            assert!(data.get("associations").is_none(), "archived {}", record.id);
            continue;
        }
        let links = data["associations"].as_object().unwrap_or_else(|| {
            panic!("record {} has no associations: {data}", record.id);
        });
        assert_eq!(
            links.len(),
            to.len(),
            "record {}: every type asked",
            record.id
        );
        for to_type in to {
            let mut got: Vec<String> = links[*to_type]
                .as_array()
                .unwrap()
                .iter()
                .map(|link| {
                    assert!(link["types"][0]["typeId"].is_u64(), "{link}");
                    link["id"].as_str().unwrap().to_string()
                })
                .collect();
            got.sort_by_key(|id| id.parse::<u64>().unwrap());
            let expected = fake
                .associations(object, to_type)
                .remove(&record.id)
                .unwrap_or_default();
            assert_eq!(got, expected, "{object} {} to {to_type}", record.id);
        }
        checked += 1;
    }
    assert!(checked > 0, "no live {object} stored");
}

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
    config.object.associations_refresh = Duration::from_millis(200);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let refresh = run(&config, &sink, second.checkpoint).await;
    assert_eq!(refresh.outcome, RunOutcome::Succeeded);
    assert_eq!(refresh.records, 450, "every record read again");
    assert_equals_the_fake(&fake, &sink, None);
    assert_links_equal_the_fake(&fake, &sink, "contacts", &["companies", "deals"]);
    config.object.associations_refresh = hubspot::ASSOCIATIONS_REFRESH;
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

/// The stored records the fake no longer has at all (merged away or deleted for good): each is
/// archived, kept whole (its properties still there) and says why, `merged_into` or
/// `deleted_permanently`. Returns them by id; the rest of the stored set equals the fake's.
fn assert_gone_are_archived_and_the_rest_equals_the_fake(
    fake: &FakeHubSpot,
    sink: &MemorySink,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    let known: std::collections::HashSet<String> =
        fake.dump("contacts").into_iter().map(|d| d.id).collect();
    let (kept, gone): (Vec<Record>, Vec<Record>) = sink
        .records(&stream())
        .into_iter()
        .partition(|r| known.contains(&r.id));
    assert_records_equal_the_fake(fake, kept, "contacts", None);
    gone.into_iter()
        .map(|record| {
            let data: serde_json::Value = record.data.decode().unwrap();
            assert!(record.archived, "{} is archived: {data}", record.id);
            assert!(
                data["properties"]["email"].is_string(),
                "{}: what was stored stays: {data}",
                record.id
            );
            (record.id, data)
        })
        .collect()
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
    let first = run(&config, &sink, Checkpoint::start()).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    fake.mutate(&Mutation {
        object: "contacts".into(),
        merge: 4,
        ..Mutation::default()
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = run(&config, &sink, first.checkpoint).await;
    assert_eq!(second.outcome, RunOutcome::Succeeded);
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
    let first = run_reconciling(&config, &sink, Checkpoint::start()).await;
    assert_eq!(first.outcome, RunOutcome::Succeeded);
    tokio::time::sleep(Duration::from_millis(50)).await;
    fake.mutate(&Mutation {
        object: "contacts".into(),
        archive: 10,
        ..Mutation::default()
    });
    // A window ends before its `until`'s millisecond (the next window takes that one): a run
    // started within the archiving's millisecond leaves them to the next run.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = run_reconciling(&config, &sink, first.checkpoint).await;
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
    // (200 a call), and a batch read for each page that had something to read again (the lost
    // are spread over all five) and one for the archived.
    eprintln!(
        "a sweep of 1,000 contacts: {calls} calls, {} records repaired",
        sweep.records
    );
    assert!(calls <= 1 + 1 + 5 + 5 + 1 + 1, "{calls} calls");

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_answer_ends_the_call_at_the_body_limit_naming_it_and_loses_nothing() {
    let fake = fake(FakeConfig {
        contacts: 50,
        ..FakeConfig::default()
    })
    .await;
    let mut config = config(&fake);
    config.account.max_body_bytes = 4 * 1024 * 1024;
    let sink = MemorySink::new();
    // The run's first non-search call: the property definitions.
    fake.inject(FaultPlan {
        fault: Fault::Endless,
        count: 1,
        only: Some("list".into()),
    });
    let first = run(&config, &sink, Checkpoint::start()).await;
    let RunOutcome::Failed { kind, error } = &first.outcome else {
        panic!("{:?}", first.outcome)
    };
    assert_eq!(*kind, weld_pipeline::ErrorKind::Permanent);
    assert!(
        error.contains(
            "answer to GET /crm/v3/properties/contacts is longer than the 4194304-byte limit"
        ),
        "{error}"
    );
    let second = run(&config, &sink, first.checkpoint).await;
    assert_eq!(second.outcome, RunOutcome::Succeeded);
    assert_object_equals_the_fake(&fake, &sink, "contacts", None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_whose_length_says_it_is_past_the_limit_is_refused_unread() {
    let fake = fake(FakeConfig {
        contacts: 10,
        ..FakeConfig::default()
    })
    .await;
    let mut config = config(&fake);
    // Smaller than the definitions of 300 custom properties, which come with their length.
    config.account.max_body_bytes = 1_000;
    let report = run(&config, &MemorySink::new(), Checkpoint::start()).await;
    let RunOutcome::Failed { error, .. } = &report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert!(
        error.contains("is longer than the 1000-byte limit"),
        "{error}"
    );
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
