//! End to end, a misbehaving source and the stream controls: 5xx, 429, refusals and
//! unparseable pages cost no data and show up as errors (a refusal with HubSpot's category and
//! correlation id, never the token); stop lets no source request start once it returned;
//! start and stop are idempotent; delete removes the stream.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::*;

const CONTACTS: usize = 2_000;

/// Five good search pages first, so the faults hit the run in the middle, after commits.
fn after_five_pages(faults: &[Value]) -> Value {
    let mut plans = vec![json!({"kind": "slow", "ms": 1, "count": 5, "only": "search"})];
    plans.extend(faults.iter().cloned());
    Value::Array(plans)
}

/// Waits until the stream shows a failure, in its status's `last_error` or as a failed run
/// with its error; returns the error's text.
async fn wait_failure_shown(api: &Api) -> String {
    wait_for(
        "the failure to show in the stream's status or runs",
        CONVERGE_WITHIN,
        || async {
            let status = api.status(STREAM).await;
            if let Some(message) = status["last_error"]["message"].as_str() {
                return Some(message.to_string());
            }
            api.runs(STREAM)
                .await
                .iter()
                .find(|run| run["state"] == "failed" && !run["error"].is_null())
                .map(|run| run["error"].to_string())
        },
    )
    .await
}

/// Starts a stream into `faults`; asserts the failure shows with one of `mentions` in its
/// text, and that everything arrives nonetheless.
async fn faults_cost_no_data_and_show(faults: Value, mentions: &[&str]) {
    let cluster = Cluster::start(CONTACTS, "tcp").await;
    cluster.fake.inject(faults).await;
    // A 1 s interval: the run after a failed one comes quickly, and resumes from the
    // checkpoint of the last committed page.
    cluster.api.start_stream(STREAM, contacts_stream(1)).await;

    let error = wait_failure_shown(&cluster.api).await.to_lowercase();
    assert!(
        mentions.iter().any(|mention| error.contains(*mention)),
        "the error says what went wrong ({mentions:?}): {error}"
    );
    wait_synced(&cluster.api, STREAM, &cluster.fake.contacts().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_past_the_retries_fail_the_run_visibly_and_the_next_run_delivers_everything()
{
    // The retry layer makes 9 attempts: 12 failures exhaust one request's and leave 3 for the
    // next run to retry through.
    let faults = after_five_pages(&[
        json!({"kind": "status", "status": 503, "count": 12, "only": "search"}),
    ]);
    faults_cost_no_data_and_show(faults, &["503", "unavailable"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_past_the_retries_fail_the_run_visibly_and_the_next_run_delivers_everything() {
    let faults = after_five_pages(&[json!({
        "kind": "rate_limited", "retry_after": 1, "count": 12, "only": "search"
    })]);
    faults_cost_no_data_and_show(faults, &["429", "rate limit", "rate_limit"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparseable_pages_fail_the_run_visibly_and_the_next_runs_deliver_everything() {
    // A page that does not parse is not retried: each fails its run at once.
    let faults = after_five_pages(&[
        json!({"kind": "garbage", "count": 1, "only": "search"}),
        json!({"kind": "truncated", "count": 1, "only": "search"}),
    ]);
    faults_cost_no_data_and_show(faults, &["parse", "json", "invalid"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_shows_hubspots_category_and_correlation_id_in_the_status_and_never_the_token() {
    let cluster = Cluster::start(CONTACTS, "tcp").await;
    // A 403 is not retried: it fails its run at once, and the next run goes on.
    let faults =
        after_five_pages(&[json!({"kind": "status", "status": 403, "count": 1, "only": "search"})]);
    cluster.fake.inject(faults).await;
    cluster.api.start_stream(STREAM, contacts_stream(1)).await;

    let error = wait_failure_shown(&cluster.api).await;
    // The fake's correlation ids read `<8 hex>-fake-<4 hex>`.
    assert!(
        error.contains("HubSpot answered 403 (INJECTED, correlation id ")
            && error.contains("-fake-"),
        "the error says HubSpot's category and correlation id: {error}"
    );
    wait_synced(&cluster.api, STREAM, &cluster.fake.contacts().await).await;
    let shown = format!(
        "{} {:?}",
        cluster.api.status(STREAM).await,
        cluster.api.runs(STREAM).await
    );
    assert!(!shown.contains("fake-token"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_lets_no_source_request_start_after_it_returns_and_is_idempotent() {
    let cluster = Cluster::start(CONTACTS, "tcp").await;
    let api = &cluster.api;
    // Every search page slow: the run is in the middle of a page when the stop comes.
    cluster
        .fake
        .inject(json!({"kind": "slow", "ms": 300, "count": 1000, "only": "search"}))
        .await;
    api.start_stream(STREAM, contacts_stream(1)).await;
    wait_until("the first records", CONVERGE_WITHIN, || async {
        api.status(STREAM).await["records"].as_u64() > Some(0)
    })
    .await;

    let stopped = api.stop_stream(STREAM).await;
    // Read right after the stop returned: the fake counts a request when it arrives, so the
    // page in flight at the stop is in this count, and any request the worker started later
    // would not be.
    let requests_at_stop = cluster.fake.requests().await;
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        cluster.fake.requests().await,
        requests_at_stop,
        "a source request started after the stop returned"
    );

    // What was committed stays, each record once.
    let status = api.status(STREAM).await;
    assert_eq!(status["state"], "stopped", "{status}");
    let stored = api.all_records(STREAM, false).await;
    assert!(
        !stored.is_empty(),
        "the records committed before the stop stay"
    );
    assert_eq!(
        status["records"].as_u64(),
        Some(stored.len() as u64),
        "{status}"
    );

    let again = api.stop_stream(STREAM).await;
    assert_eq!(
        again["state"], "stopped",
        "a second stop changes nothing: {again}"
    );
    assert_eq!(again["name"], STREAM);
    assert_eq!(again["records"], status["records"]);
    assert_eq!(cluster.fake.requests().await, requests_at_stop);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_twice_makes_one_stream_and_delete_removes_it() {
    let cluster = Cluster::start(CONTACTS, "tcp").await;
    let api = &cluster.api;

    let first = api.start_stream(STREAM, contacts_stream(300)).await;
    let second = api.start_stream(STREAM, contacts_stream(300)).await;
    assert_eq!(first["state"], "running", "{first}");
    assert_eq!(second["state"], first["state"], "{second}");
    assert_eq!(second["name"], first["name"]);
    assert_eq!(second["interval_secs"], 300);
    let streams = api.list_streams().await;
    assert_eq!(streams.len(), 1, "one stream: {streams:?}");

    // The same configuration again starts no second run.
    wait_synced(api, STREAM, &cluster.fake.contacts().await).await;
    let runs = api.runs(STREAM).await;
    assert_eq!(runs.len(), 1, "one run: {runs:?}");

    let (status, body) = api.delete_stream(STREAM).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = api.get(&format!("/streams/{STREAM}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body["error"]["code"].is_string(), "an error body: {body}");
    let (status, body) = api.get(&format!("/streams/{STREAM}/records")).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "its data went with it: {body}"
    );
    assert!(api.list_streams().await.is_empty());
}
