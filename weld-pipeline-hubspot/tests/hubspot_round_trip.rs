//! The HubSpot source against a fake 150 ms away, what a customer's cloud sees of HubSpot. The
//! source reads ahead (the next page's calls sent while the current page is finished): what a
//! sync holds must be what it would hold paging one request at a time, with no call wasted and
//! no 429. How much of the budget it then uses is measured by `benches/hubspot_round_trip.rs`.

use std::time::Duration;

use weld_pipeline::{
    Checkpoint, MemorySink, Pipeline, RunContext, RunOutcome, StreamName, Timestamp,
};
use weld_pipeline_hubspot::fake::{FakeConfig, FakeHubSpot, Mutation};
use weld_pipeline_hubspot::{
    self as hubspot, ApiVersion, Endpoint, HubSpotAccount, HubSpotObject, HubSpotSource, Token,
};

const CONTACTS: usize = 3_000;

fn stream() -> StreamName {
    StreamName::new("contacts").unwrap()
}

/// One run of `source` (kept from run to run, as a worker keeps it): its checkpoint, and the
/// searches and other calls the fake served, with the 429s among them.
async fn sync(
    fake: &FakeHubSpot,
    source: &HubSpotSource,
    sink: &MemorySink,
    from: Checkpoint,
) -> (Checkpoint, u64, u64) {
    let pipeline = Pipeline::new(source.clone(), sink.clone());
    let before = fake.stats();
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        pipeline.run(&RunContext::new(stream()), from),
    )
    .await
    .expect("the run ends");
    assert_eq!(report.outcome, RunOutcome::Succeeded);
    let after = fake.stats();
    assert_eq!(after.rate_limited, 0, "a 429");
    (
        report.checkpoint,
        after.searches - before.searches,
        after.requests - after.searches - (before.requests - before.searches),
    )
}

/// Every record the fake holds is stored, with its modification time and archived flag.
fn assert_equals_the_fake(fake: &FakeHubSpot, sink: &MemorySink) {
    let mut stored = sink.records(&stream());
    stored.sort_by_key(|r| r.id.parse::<u64>().unwrap());
    let dumped = fake.dump("contacts");
    assert_eq!(stored.len(), dumped.len());
    for (record, truth) in stored.iter().zip(&dumped) {
        assert_eq!(record.id, truth.id);
        assert_eq!(
            record.updated_at,
            Timestamp::parse_rfc3339(&truth.updated_at).unwrap(),
            "record {}",
            truth.id
        );
        assert_eq!(record.archived, truth.archived, "record {}", truth.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_ahead_150_ms_away_stores_the_same_records_with_no_call_wasted_and_no_429() {
    let fake = FakeHubSpot::start(
        "127.0.0.1:0",
        FakeConfig {
            contacts: CONTACTS,
            per_ten_seconds: Some(190),
            latency: Duration::from_millis(150),
            ..FakeConfig::default()
        },
    )
    .await
    .unwrap();
    let mut account = HubSpotAccount::new(fake.base_url(), Token::new("fake-token"));
    account.settle_delay = Duration::ZERO;
    account.per_ten_seconds = 190;
    let object = HubSpotObject::new("contacts").with_associations(["companies", "deals"]);
    let source = hubspot::source(account, object).unwrap();
    let sink = MemorySink::new();

    let (checkpoint, searches, others) = sync(&fake, &source, &sink, Checkpoint::start()).await;
    assert_equals_the_fake(&fake, &sink);
    // The floor: a search per 200 contacts, two association reads per page, the definitions;
    // reading ahead adds at most the archived listing's first page (four parts of the property
    // list), sent as the last search page comes in.
    let pages = (CONTACTS / 200) as u64;
    assert_eq!(searches, pages, "a search per page, none wasted");
    assert!(others <= 2 * pages + 1 + 4, "{others} other calls");

    // An incremental run over a window of 2,000 changes, 30 records archived among them.
    tokio::time::sleep(Duration::from_millis(5)).await;
    fake.mutate(&Mutation {
        object: "contacts".into(),
        modify: 2_000,
        archive: 30,
        ..Mutation::default()
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (checkpoint, searches, others) = sync(&fake, &source, &sink, checkpoint).await;
    assert_equals_the_fake(&fake, &sink);
    assert!(searches <= 2_000 / 200 + 1, "{searches} searches");
    assert!(others <= 2 * searches + 1 + 4, "{others} other calls");

    // And with the properties changed since, the page read on the last run's set is read again
    // with the new one: every record gets the new property.
    tokio::time::sleep(Duration::from_millis(5)).await;
    fake.mutate(&Mutation {
        object: "contacts".into(),
        add_property: Some("favourite_colour".into()),
        ..Mutation::default()
    });
    let _ = sync(&fake, &source, &sink, checkpoint).await;
    assert_equals_the_fake(&fake, &sink);
    for record in sink.records(&stream()) {
        let data: serde_json::Value = record.data.decode().unwrap();
        assert!(
            data["properties"].get("favourite_colour").is_some(),
            "record {} lacks the new property",
            record.id
        );
    }
}

#[tokio::test]
async fn the_round_trip_is_set_at_run_time_and_delays_every_answer_by_at_least_it() {
    let fake = FakeHubSpot::start(
        "127.0.0.1:0",
        FakeConfig {
            contacts: 10,
            ..FakeConfig::default()
        },
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let set = http
        .post(format!("{}/_admin/latency", fake.base_url()))
        .json(&serde_json::json!({"ms": 120}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 204);
    let contacts = ApiVersion::default().path(Endpoint::Objects {
        object_type: "contacts",
    });
    let url = format!("{}{contacts}?limit=5", fake.base_url());
    for token in ["fake-token", "wrong-token"] {
        let started = std::time::Instant::now();
        let answer = http.get(&url).bearer_auth(token).send().await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(120), "{token}");
        let expected = if token == "fake-token" { 200 } else { 401 };
        assert_eq!(
            answer.status(),
            expected,
            "refusals take the round trip too"
        );
    }
    let refused = http
        .post(format!("{}/_admin/latency", fake.base_url()))
        .json(&serde_json::json!({"ms": "soon"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422, "a latency that is not milliseconds");
}
