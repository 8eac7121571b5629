//! End to end, crashes: `kill -9` of the worker or of data-streams in the middle of a run.
//! After a restart (of the killed process only), everything arrives and nothing twice: the
//! stored set equals the source's exactly, each id once while paging, the counts agree.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

/// Enough contacts for 15 search pages: a run long enough to be cut in the middle.
const CONTACTS: usize = 3_000;
/// Search pages made slow, and by how much: about 8 s of a run in which to kill a process. The
/// count runs out by itself, so the run after the restart finishes at full speed.
const SLOW_PAGES: u32 = 20;
const SLOW_MS: u64 = 400;
/// How long after convergence the set must stay exact: a redelivery from the killed run's
/// outbox lands in that time and must change nothing.
const AFTERMATH: Duration = Duration::from_secs(2);

async fn slow_down_search_pages(fake: &Fake) {
    fake.inject(json!({"kind": "slow", "ms": SLOW_MS, "count": SLOW_PAGES, "only": "search"}))
        .await;
}

/// Waits until the run has committed some records but not all of them; returns how many.
async fn wait_mid_run(api: &Api) -> u64 {
    wait_for("a run half done", CONVERGE_WITHIN, || async {
        let records = api.status(STREAM).await["records"].as_u64()?;
        assert!(
            records < CONTACTS as u64,
            "the run finished before it could be interrupted: make it slower"
        );
        (records > 0).then_some(records)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_killed_mid_run_resumes_after_restart_and_stores_everything_once() {
    worker_killed_mid_run_then_restarted("tcp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_killed_mid_run_over_http_resumes_after_restart_and_stores_everything_once() {
    worker_killed_mid_run_then_restarted("http").await;
}

async fn worker_killed_mid_run_then_restarted(transport: &str) {
    let mut cluster = Cluster::start(CONTACTS, transport).await;
    slow_down_search_pages(&cluster.fake).await;
    // A 300 s interval: what arrives after the restart comes from the resumed run, not from a
    // later scheduled one.
    cluster.api.start_stream(STREAM, contacts_stream(300)).await;
    let before = wait_mid_run(&cluster.api).await;

    cluster.worker.process.kill9();
    assert!(
        cluster.api.status(STREAM).await["records"].as_u64() >= Some(before),
        "committed records stay"
    );
    // Same id and outbox: whatever the killed worker had fetched but not delivered is either
    // resent from its outbox or fetched again from the checkpoint.
    cluster.restart_worker().await;

    let expected = cluster.fake.contacts().await;
    wait_synced(&cluster.api, STREAM, &expected).await;
    wait_until(
        "a run to succeed after the restart",
        CONVERGE_WITHIN,
        || async {
            cluster
                .api
                .runs(STREAM)
                .await
                .iter()
                .any(|run| run["state"] == "succeeded")
        },
    )
    .await;
    tokio::time::sleep(AFTERMATH).await;
    assert_synced(&cluster.api, STREAM, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_streams_killed_mid_run_comes_back_and_the_worker_reconnects_by_itself() {
    let mut cluster = Cluster::start(CONTACTS, "tcp").await;
    slow_down_search_pages(&cluster.fake).await;
    cluster.api.start_stream(STREAM, contacts_stream(300)).await;
    wait_mid_run(&cluster.api).await;

    cluster.data_streams.process.kill9();
    // Same addresses and data; the worker is left alone: it must dial again by itself.
    cluster.restart_data_streams().await;

    // The count before the kill may include a commit written but not yet synced (it is acked,
    // and durable, a few milliseconds later): the kill may take it, and the worker, never having
    // had its ack, sends it again. So the proof is the exact comparison below, not this count.
    let status = cluster.api.status(STREAM).await;
    assert!(
        status["state"] == "running" || status["state"] == "pending",
        "the stream still wants to run after the crash: {status}"
    );
    cluster.api.wait_workers(1).await;
    let running = cluster.api.wait_state(STREAM, "running").await;
    assert_eq!(running["worker"], "e2e-worker", "{running}");

    let expected = cluster.fake.contacts().await;
    wait_synced(&cluster.api, STREAM, &expected).await;
    tokio::time::sleep(AFTERMATH).await;
    assert_synced(&cluster.api, STREAM, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_given_several_controllers_fails_over_to_the_one_that_answers() {
    // Two addresses for one data-streams, as a worker is given every replica's: it first
    // listens on the second; killed mid-run, it comes back on the first. The worker dials the
    // list in turn, resends its outbox there, and the store ends equal to the source.
    let fake = start_fake(CONTACTS, &[]).await;
    slow_down_search_pages(&fake).await;
    let dirs = [temp_dir(), temp_dir()];
    let (first, second) = (free_addr(), free_addr());
    let mut data_streams = start_data_streams(DataStreamsOpts {
        transport_addr: second.clone(),
        ..DataStreamsOpts::new(dirs[0].path())
    })
    .await;
    let worker = start_worker(WorkerOpts::new(
        &format!("{first}, {second}"),
        &fake.url,
        dirs[1].path(),
    ))
    .await;
    let api = data_streams.api();
    api.wait_workers(1).await;
    api.start_stream(STREAM, contacts_stream(300)).await;
    wait_mid_run(&api).await;

    data_streams.process.kill9();
    let data_streams = start_data_streams(DataStreamsOpts {
        transport_addr: first,
        ..data_streams.restart_opts()
    })
    .await;
    let api = data_streams.api();
    api.wait_workers(1).await;
    let expected = fake.contacts().await;
    wait_synced(&api, STREAM, &expected).await;
    tokio::time::sleep(AFTERMATH).await;
    assert_synced(&api, STREAM, &expected).await;
    assert!(
        worker
            .process
            .logs()
            .contains("connected to another controller than the last"),
        "the worker moved from one address to the other"
    );
}
