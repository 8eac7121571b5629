//! The HubSpot source against the fake over 127.0.0.1: every fact of HubSpot's API the source
//! relies on (paging, search windows, rate limits, archived records), and every fault it must
//! survive.

use std::time::{Duration, Instant};

use weld_pipeline::{
    Checkpoint, MemorySink, Pipeline, Record, RunContext, RunOutcome, RunReport, StreamName,
    Timestamp,
};
use weld_pipeline_http::hubspot::{self, HubSpotAccount, HubSpotObject, Token};
use weld_pipeline_http::hubspot_fake::{FakeConfig, FakeHubSpot, Fault, FaultPlan, Mutation};

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
    let source = hubspot::source(config.account.clone(), config.object.clone()).unwrap();
    let pipeline = Pipeline::new(source, sink.clone());
    tokio::time::timeout(
        Duration::from_secs(120),
        pipeline.run(&RunContext::new(stream()), from),
    )
    .await
    .expect("the run ends")
}

/// The stored set equals the fake's: every id, its modification time, its archived flag, and
/// the value of every property the source asked for.
fn assert_equals_the_fake(fake: &FakeHubSpot, sink: &MemorySink, properties: &[String]) {
    let stored: Vec<Record> = sink.records(&stream());
    let mut stored: Vec<&Record> = stored.iter().collect();
    stored.sort_by_key(|r| r.id.parse::<u64>().unwrap());
    let dumped = fake.dump("contacts");
    assert_eq!(stored.len(), dumped.len(), "record counts differ");
    for (record, truth) in stored.iter().zip(&dumped) {
        assert_eq!(record.id, truth.id);
        assert_eq!(
            record.updated_at,
            Timestamp::parse_rfc3339(&truth.updated_at).unwrap(),
            "record {}",
            truth.id
        );
        assert_eq!(
            record.archived, truth.archived,
            "record {} archived",
            truth.id
        );
        let data: serde_json::Value = record.data.decode().unwrap();
        for property in properties {
            let expected = truth.properties.get(property).cloned().flatten();
            let got = data["properties"]
                .get(property)
                .and_then(|v| v.as_str())
                .map(str::to_string);
            assert_eq!(got, expected, "record {} property {property}", truth.id);
        }
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
    assert_equals_the_fake(&fake, &sink, &config.object.properties());
    assert_eq!(sink.live_count(&stream()), 1_234 - 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_fetch_is_counted_as_a_call_of_the_list_service() {
    use weld_pipeline::testing::{counter_value, global_counters};
    let calls = || {
        counter_value(
            &global_counters(),
            "weld_calls_total",
            &[("service", "hubspot_list")],
        )
    };
    let before = calls();
    let fake = fake(FakeConfig {
        contacts: 1_000,
        ..FakeConfig::default()
    })
    .await;
    let sink = MemorySink::new();
    let report = run(&config(&fake), &sink, Checkpoint::start()).await;
    assert_eq!(report.outcome, RunOutcome::Succeeded);
    // Other tests of this binary count too: at least this run's pages, 100 contacts each.
    assert!(
        calls() - before >= report.batches,
        "{} calls for {} pages",
        calls() - before,
        report.batches
    );
    assert!(report.batches >= 10);
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
    tokio::time::sleep(Duration::from_millis(5)).await;
    fake.mutate(&Mutation {
        object: "contacts".into(),
        modify: 120,
        create: 30,
        archive: 25,
        tie: false,
    });
    let second = run(&config, &sink, first.checkpoint).await;
    assert_eq!(second.outcome, RunOutcome::Succeeded);
    // Only the changes travelled, not the whole set again.
    assert!(
        second.records < 400,
        "{} records in the incremental run",
        second.records
    );
    assert_equals_the_fake(&fake, &sink, &config.object.properties());
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
    assert_equals_the_fake(&fake, &sink, &config.object.properties());
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
    assert_equals_the_fake(&fake, &sink, &config.object.properties());
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
    assert_equals_the_fake(&fake, &sink, &config.object.properties());
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
    assert_equals_the_fake(&fake, &sink, &config.object.properties());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pacing_draws_zero_429s_at_a_100_per_10s_limit() {
    let fake = fake(FakeConfig {
        contacts: 14_000,
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
    assert_eq!(stats.rate_limited, 0, "the pacer drew a 429");
    // 141 list calls: past the first window, so the pacing, not a burst, did the work.
    assert!(stats.requests > 100, "{} requests", stats.requests);
    let rate = stats.requests as f64 / elapsed.as_secs_f64();
    eprintln!(
        "paced at {rate:.2} requests/s of the 10/s allowed ({} requests in {elapsed:?})",
        stats.requests
    );
    assert_equals_the_fake(&fake, &sink, &config.object.properties());
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
    // Let three pages through, then a garbage one and a truncated one.
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
        300,
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
    assert_equals_the_fake(&fake, &sink, &config.object.properties());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_property_lists_are_split_instead_of_drawing_a_414() {
    let fake = fake(FakeConfig {
        contacts: 250,
        max_url_bytes: 2_000,
        ..FakeConfig::default()
    })
    .await;
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
    assert_equals_the_fake(&fake, &sink, &properties);
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
    let sink = MemorySink::new();
    let report = run(&config, &sink, Checkpoint::start()).await;
    let RunOutcome::Failed { kind, error } = report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert_eq!(kind, weld_pipeline::ErrorKind::Permanent);
    assert!(error.contains("414"), "{error}");
    assert_eq!(fake.stats().requests, 1);
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
    assert_equals_the_fake(&fake, &sink, &config.object.properties());
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
    assert!(error.contains("404"), "{error}");
    assert_eq!(fake.stats().requests, 1);
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
