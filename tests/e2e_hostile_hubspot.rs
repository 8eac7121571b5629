//! End to end, HubSpot answers no worker should have to take, through the real binaries: an
//! answer that never ends, pages too big for one message of the transport, and a record too big
//! for any. The worker's memory stays bounded (from `/proc/<pid>/status`), every record that can
//! be delivered is, and what cannot is said in the stream's status.

mod support;

use serde_json::json;
use support::*;

/// The worker's peak memory must stay under this: its answers are bounded at 64 MiB, held
/// once, and a page of records is a small multiple of its answer.
const WORKER_PEAK_KIB: u64 = 400 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_answer_fails_its_call_clearly_with_the_worker_memory_bounded() {
    let cluster = Cluster::start(200, "tcp").await;
    // The run's first call that is not a search: the property definitions.
    cluster
        .fake
        .inject(json!({"kind": "endless", "count": 1, "only": "list"}))
        .await;
    cluster.api.start_stream(STREAM, contacts_stream(1)).await;
    let worker = &cluster.worker.process;
    let error = wait_for(
        "the endless answer's failure in the stream's status",
        CONVERGE_WITHIN,
        || async {
            let peak = worker.memory_kib("VmHWM");
            assert!(
                peak < WORKER_PEAK_KIB,
                "the worker's peak memory reached {} MiB reading an endless answer",
                peak / 1024
            );
            let status = cluster.api.status(STREAM).await;
            status["last_error"]["message"].as_str().map(str::to_owned)
        },
    )
    .await;
    assert!(
        error.contains(
            "answer to GET /crm/properties/2026-03/contacts is longer than the 67108864-byte limit"
        ),
        "{error}"
    );
    eprintln!(
        "worker peak memory after an endless answer: {} MiB",
        worker.memory_kib("VmHWM") / 1024
    );
    // The next run reads everything, and its success clears the error.
    wait_synced(&cluster.api, STREAM, &cluster.fake.contacts().await).await;
    wait_until(
        "the error cleared by a successful run",
        CONVERGE_WITHIN,
        || async { cluster.api.status(STREAM).await["last_error"].is_null() },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_too_big_for_one_transport_message_are_delivered_whole_in_several_batches() {
    let cluster = Cluster::start(300, "tcp").await;
    // 200 of 300 contacts with a first name of 200 KB: each search page of 200 is about 26 MB,
    // past the transport's 16 MiB message limit.
    cluster
        .fake
        .mutate(json!({"object": "contacts", "modify": 200, "value": "x".repeat(200_000)}))
        .await;
    cluster
        .api
        .start_stream(STREAM, contacts_stream(3600))
        .await;
    wait_synced(&cluster.api, STREAM, &cluster.fake.contacts().await).await;
    let status = cluster.api.status(STREAM).await;
    assert!(status["last_error"].is_null(), "{status}");
    assert_eq!(status["state"], "running", "{status}");
    let runs = cluster.api.runs(STREAM).await;
    assert_eq!(runs[0]["state"], "succeeded", "{runs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_too_big_for_any_message_fails_its_run_visibly_naming_it() {
    let cluster = Cluster::start(50, "tcp").await;
    let touched = cluster
        .fake
        .mutate(json!({"object": "contacts", "modify": 1, "value": "y".repeat(20_000_000)}))
        .await;
    cluster.api.start_stream(STREAM, contacts_stream(1)).await;
    let error = wait_for(
        "the oversized record's failure in the stream's status",
        CONVERGE_WITHIN,
        || async {
            let status = cluster.api.status(STREAM).await;
            status["last_error"]["message"].as_str().map(str::to_owned)
        },
    )
    .await;
    let id = touched[0].as_u64().map(|id| id.to_string());
    assert!(
        error.contains("cannot be delivered") && id.is_none_or(|id| error.contains(&id)),
        "{error} ({touched})"
    );
    let status = cluster.api.status(STREAM).await;
    assert_eq!(
        status["state"], "running",
        "it keeps trying, visibly: {status}"
    );
    let runs = cluster.api.runs(STREAM).await;
    assert!(
        runs.iter().any(|run| run["state"] == "failed"
            && run["error"].to_string().contains("cannot be delivered")),
        "{runs:?}"
    );
}
