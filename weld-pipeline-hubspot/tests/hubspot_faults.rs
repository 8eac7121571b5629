//! Every fault the HubSpot source must survive or refuse, against the fake over 127.0.0.1: rate
//! limits and pacing, server errors, timeouts, refusals, garbage and endless answers. A
//! transient fault loses nothing; a permanent one fails the run clearly, without retries.

mod support;

use std::time::{Duration, Instant};

use weld_pipeline::{Checkpoint, MemorySink, RunOutcome};
use weld_pipeline_hubspot::fake::{FakeConfig, Fault, FaultPlan, Mutation};
use weld_pipeline_hubspot::{Endpoint, Token};

use support::{
    assert_equals_the_fake, assert_object_equals_the_fake, config, fake, run, stream, version,
};

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
    // The definitions (read once per source, for which listed properties are calculated), the
    // live records' search (properties in its body), then the archived list: no retry.
    assert_eq!(fake.stats().requests, 3);
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
        error.contains(&format!(
            "answer to GET {} is longer than the 4194304-byte limit",
            version().path(Endpoint::Properties {
                object_type: "contacts"
            })
        )),
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
